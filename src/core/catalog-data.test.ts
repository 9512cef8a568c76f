import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { buildDefinition } from './functions.js';
import { validateJsonSchema } from './json-schema.js';
import { SchemaGuard } from '../run/schema-guard.js';
import { nearestPackageNames, packagesByCategory, PYTHON_PACKAGES } from './python-packages.js';
import { TEMPLATES } from './templates.js';
import { DEFAULT_TIERS, limitsFor } from './tiers.js';

test('the allow-list matches shared/python-packages.tsv when it is present', (t) => {
  let tsv: string;
  try {
    tsv = readFileSync(new URL('../../../shared/python-packages.tsv', import.meta.url), 'utf8');
  } catch {
    t.skip('shared/ is not beside this checkout');
    return;
  }
  const rows = tsv
    .trim()
    .split('\n')
    .slice(1)
    .map((line) => line.split('\t'));
  assert.equal(PYTHON_PACKAGES.length, rows.length);
  for (const [category, name, importName, debian, , available] of rows) {
    const pkg = PYTHON_PACKAGES.find((p) => p.name === name);
    assert.ok(pkg, name);
    assert.equal(pkg.category, category);
    assert.equal(pkg.importName, importName);
    assert.equal(pkg.debianPackage, debian === '-' ? null : debian);
    assert.equal(pkg.available, available === 'yes');
  }
});

test("packages are grouped into the guide's 13 categories", () => {
  const categories = packagesByCategory();
  assert.equal(categories.length, 13);
  assert.ok(categories.find((c) => c.category === 'Data science')?.packages.some((p) => p.name === 'pandas'));
});

test('nearest names help with typos', () => {
  assert.equal(nearestPackageNames('reqests')[0], 'requests');
  assert.equal(nearestPackageNames('beautifulsoup')[0], 'beautifulsoup4');
});

test('the five templates are valid definitions with valid schemas', async () => {
  assert.deepEqual(
    TEMPLATES.map((t) => t.name),
    ['hello-world', 'csv-analyzer', 'api-connector', 'slack-notifier', 'scheduled-report'],
  );
  const guard = new SchemaGuard();
  try {
    for (const template of TEMPLATES) {
      for (const schema of [template.inputSchema, template.outputSchema]) {
        validateJsonSchema(schema, 'schema');
        assert.deepEqual(await guard.compile(schema, 'templates'), { ok: true }, template.name);
      }
    }
  } finally {
    await guard.close();
  }
  for (const template of TEMPLATES) {
    const d = buildDefinition({ code: template.code, requirements: template.requirements, inputSchema: template.inputSchema }, null);
    assert.deepEqual(d.requirements, template.requirements);
  }
});

test("tiers carry the spec's limits, with unlimited as null", () => {
  assert.equal(limitsFor('pro_trial').monthlyExecutions, 125_000);
  assert.equal(limitsFor('pro').monthlyExecutions, 250_000);
  assert.equal(limitsFor('enterprise').executionsPerMinute, 300);
  assert.equal(limitsFor('dedicated').monthlyExecutions, null);
  assert.equal(limitsFor('dedicated').agents, null);
  assert.equal(limitsFor('enterprise').memoryMb, 2048);
  assert.equal(limitsFor('pro').timeoutSeconds, 90);
  assert.deepEqual(Object.keys(DEFAULT_TIERS), ['pro_trial', 'pro', 'enterprise', 'dedicated']);
  assert.throws(() => limitsFor('gold'));
});
