import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isDomainError } from './errors.js';
import { buildDefinition, buildMetadata, canonicalJson, definitionChanged, definitionHash } from './functions.js';
import { MAX_CODE_BYTES, MAX_SCHEMA_BYTES, MAX_SCHEMA_DEPTH } from './limits.js';
import { shapeExcess } from './json-schema.js';

const base = buildDefinition({ code: 'def main(input_data):\n    return 1\n' }, null);

const failsWith = (type: string, pattern?: RegExp) => (e: unknown) =>
  isDomainError(e) && e.type === type && (!pattern || pattern.test(e.message));

test('defaults: python on code_sandbox, no schemas, no requirements', () => {
  assert.equal(base.language, 'python');
  assert.equal(base.backend, 'code_sandbox');
  assert.deepEqual(base.requirements, []);
  assert.equal(base.inputSchema, null);
});

test('code is required on make, at most 1 MB, and never empty', () => {
  assert.throws(() => buildDefinition({}, null), failsWith('validation_error', /code is required/));
  assert.throws(() => buildDefinition({ code: '   ' }, null), failsWith('validation_error'));
  assert.throws(() => buildDefinition({ code: 'x'.repeat(MAX_CODE_BYTES + 1) }, null), failsWith('code_too_large', /1 MB/));
  assert.doesNotThrow(() => buildDefinition({ code: 'x'.repeat(MAX_CODE_BYTES) }, null));
  // Bytes, not characters: 2-byte characters count double.
  assert.throws(() => buildDefinition({ code: 'é'.repeat(MAX_CODE_BYTES / 2 + 1) }, null), failsWith('code_too_large'));
});

test('languages and backends are closed lists', () => {
  assert.throws(() => buildDefinition({ code: 'x', language: 'ruby' }, null), failsWith('validation_error', /python, typescript/));
  assert.throws(() => buildDefinition({ code: 'x', backend: 'docker' }, null), failsWith('validation_error', /code_sandbox/));
  assert.equal(buildDefinition({ code: 'x', language: 'typescript' }, null).language, 'typescript');
});

test('schemas must be JSON objects, bounded in depth and size (ajv itself runs only in the schema workers)', () => {
  assert.throws(() => buildDefinition({ code: 'x', outputSchema: 'string' }, null), failsWith('invalid_schema', /output_schema/));
  assert.throws(
    () => buildDefinition({ code: 'x', inputSchema: [] }, null),
    failsWith('invalid_schema', /input_schema must be a JSON Schema object/),
  );
  let deep: Record<string, unknown> = { type: 'string' };
  for (let i = 0; i < MAX_SCHEMA_DEPTH; i++) deep = { items: deep };
  assert.throws(
    () => buildDefinition({ code: 'x', inputSchema: deep }, null),
    failsWith('invalid_schema', new RegExp(`input_schema is nested deeper than ${MAX_SCHEMA_DEPTH} levels`)),
  );
  // Far deeper than the stack: refused by the iterative walk, never a RangeError.
  let abyss: Record<string, unknown> = {};
  for (let i = 0; i < 200_000; i++) abyss = { a: abyss };
  assert.throws(() => buildDefinition({ code: 'x', inputSchema: abyss }, null), failsWith('invalid_schema', /nested deeper/));
  assert.throws(
    () => buildDefinition({ code: 'x', inputSchema: { enum: ['x'.repeat(MAX_SCHEMA_BYTES)] } }, null),
    failsWith('invalid_schema', /larger than/),
  );
  const ok = buildDefinition({ code: 'x', inputSchema: { type: 'object', properties: { n: { type: 'integer' } }, required: ['n'] } }, null);
  assert.deepEqual(ok.inputSchema?.required, ['n']);
});

test('config is bounded in depth before anything serialises it', () => {
  let abyss: Record<string, unknown> = {};
  for (let i = 0; i < 200_000; i++) abyss = { a: abyss };
  assert.throws(
    () => buildDefinition({ code: 'x', config: abyss }, null),
    failsWith('validation_error', new RegExp(`config is nested deeper than ${MAX_SCHEMA_DEPTH} levels`)),
  );
});

test('the value caps are iterative and exact', () => {
  const nested = (levels: number): unknown => {
    let value: unknown = 1;
    for (let i = 0; i < levels; i++) value = [value];
    return value;
  };
  assert.equal(shapeExcess(nested(10), { maxDepth: 10, maxValues: 100 }), null);
  assert.deepEqual(shapeExcess(nested(11), { maxDepth: 10, maxValues: 100 }), { limit: 'depth', max: 10 });
  assert.deepEqual(shapeExcess(nested(200_000), { maxDepth: 128, maxValues: 10_000_000 }), { limit: 'depth', max: 128 });
  assert.equal(shapeExcess({ a: [1, 2], b: 'x' }, { maxDepth: 5, maxValues: 5 }), null, 'root, a, 1, 2, b');
  assert.deepEqual(shapeExcess({ a: [1, 2, 3], b: 'x' }, { maxDepth: 5, maxValues: 5 }), { limit: 'values', max: 5 });
  assert.equal(shapeExcess('scalar', { maxDepth: 0, maxValues: 1 }), null);
});

test('python requirements resolve through the allow-list and its aliases', () => {
  const d = buildDefinition({ code: 'x', requirements: ['bs4', 'yaml', 'sklearn', 'PIL', 'httpx>=0.23', 'numpy'] }, null);
  assert.deepEqual(d.requirements, ['beautifulsoup4', 'httpx', 'numpy', 'pillow', 'pyyaml', 'scikit-learn']);
  assert.throws(
    () => buildDefinition({ code: 'x', requirements: ['pandaz'] }, null),
    failsWith('unknown_package', /pandaz.*nearest allowed: pandas/),
  );
  assert.throws(
    () => buildDefinition({ code: 'x', requirements: ['orjson'] }, null),
    failsWith('unknown_package', /not installed on this server/),
  );
});

test('typescript requirements are npm specs', () => {
  const d = buildDefinition({ code: 'x', language: 'typescript', requirements: ['lodash', '@scope/pkg@^1.2.0', 'zod@4'] }, null);
  assert.deepEqual(d.requirements, ['@scope/pkg@^1.2.0', 'lodash', 'zod@4']);
  assert.throws(
    () => buildDefinition({ code: 'x', language: 'typescript', requirements: ['../evil'] }, null),
    failsWith('validation_error'),
  );
  assert.throws(
    () => buildDefinition({ code: 'x', language: 'typescript', requirements: ['a; rm -rf /'] }, null),
    failsWith('validation_error'),
  );
});

test('env declarations: valid names, none reserved, none both required and optional', () => {
  const d = buildDefinition({ code: 'x', requiredEnv: ['API_KEY', 'API_KEY'], optionalEnv: ['REGION'] }, null);
  assert.deepEqual(d.requiredEnv, ['API_KEY']);
  assert.throws(() => buildDefinition({ code: 'x', requiredEnv: ['lower'] }, null), failsWith('validation_error'));
  for (const reserved of ['PATH', 'LD_PRELOAD', 'PYTHONPATH', 'NODE_OPTIONS', 'MCPWORKS_SECRET', 'HOME']) {
    assert.throws(
      () => buildDefinition({ code: 'x', requiredEnv: [reserved] }, null),
      failsWith('validation_error', /not allowed/),
      reserved,
    );
  }
  assert.throws(() => buildDefinition({ code: 'x', requiredEnv: ['A'], optionalEnv: ['A'] }, null), failsWith('validation_error', /both/));
});

test('versioning: a definition change is a new version, metadata is not', () => {
  const same = buildDefinition({ code: base.code }, base);
  assert.equal(definitionChanged(base, same), false);
  assert.equal(definitionChanged(base, buildDefinition({ code: 'def main(d):\n    return 2\n' }, base)), true);
  assert.equal(definitionChanged(base, buildDefinition({ requirements: ['numpy'] }, base)), true);
  assert.equal(definitionChanged(base, buildDefinition({ inputSchema: { type: 'object' } }, base)), true);
  assert.equal(definitionChanged(base, buildDefinition({ config: { a: 1 } }, base)), true);
  assert.equal(definitionChanged(base, buildDefinition({ requiredEnv: ['TOKEN'] }, base)), true);
  // Compared by value, field by field: the same schema given again (keys in another order) is no
  // change; a change deep inside one is.
  const withSchema = buildDefinition({ inputSchema: { type: 'object', properties: { a: { type: 'string', minLength: 1 } } } }, base);
  assert.equal(
    definitionChanged(
      withSchema,
      buildDefinition({ inputSchema: { properties: { a: { minLength: 1, type: 'string' } }, type: 'object' } }, withSchema),
    ),
    false,
  );
  assert.equal(
    definitionChanged(
      withSchema,
      buildDefinition({ inputSchema: { type: 'object', properties: { a: { type: 'string', minLength: 2 } } } }, withSchema),
    ),
    true,
  );
  assert.equal(definitionChanged(withSchema, { ...withSchema, code: `${withSchema.code} ` }), true);
  const meta = buildMetadata({ description: 'new', tags: ['a', 'a', 'b'] }, { description: 'old', tags: [] });
  assert.deepEqual(meta, { description: 'new', tags: ['a', 'b'] });
});

test('canonical JSON ignores key order, so equal definitions hash equal', () => {
  assert.equal(canonicalJson({ b: 1, a: [2, { d: 1, c: 2 }] }), canonicalJson({ a: [2, { c: 2, d: 1 }], b: 1 }));
  const a = buildDefinition({ code: 'x', config: { p: 1, q: 2 } }, null);
  const b = buildDefinition({ code: 'x', config: { q: 2, p: 1 } }, null);
  assert.equal(definitionHash(a), definitionHash(b));
});
