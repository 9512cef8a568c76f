// TypeScript requirements: a real npm install at build time, then a real sandbox run that imports it.
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { sandboxLimitsFor, type Sandbox } from '../core/sandbox.js';
import { limitsFor } from '../core/tiers.js';
import { createBubblewrapSandbox } from './bubblewrap.js';
import { DependencyInstallError, dependencyKey, prepareTypescriptDependencies } from './npm-build.js';

let cacheRoot: string;
let sandbox: Sandbox;

before(() => {
  cacheRoot = mkdtempSync(join(tmpdir(), 'mcpworks-npm-test-'));
  chmodSync(cacheRoot, 0o755);
  sandbox = createBubblewrapSandbox({ network: false });
});
after(async () => {
  rmSync(cacheRoot, { recursive: true, force: true });
  await sandbox.close();
});

async function expectInstallError(promise: Promise<unknown>, reason: string): Promise<DependencyInstallError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof DependencyInstallError, String(error));
    assert.equal(error.reason, reason);
    return error;
  }
  assert.fail('expected a DependencyInstallError');
}

describe('TypeScript requirements', () => {
  it('installs at build time, and a run imports the package from its read-only node_modules', async () => {
    const prepared = await prepareTypescriptDependencies(['is-odd@3.0.1'], cacheRoot);
    assert.ok(prepared.dir && existsSync(join(prepared.dir, 'is-odd', 'package.json')));
    // is-odd's own dependency came along.
    assert.ok(existsSync(join(prepared.dir, 'is-number')));
    const code = 'import isOdd from "is-odd";\nimport { writeFileSync } from "node:fs";\nexport default function main(input: { n: number }) {\n  let write = "allowed";\n  try { writeFileSync("/function/node_modules/is-odd/index.js", ""); } catch (e: any) { write = e.code; }\n  return { odd: isOdd(input.n), write };\n}\n';
    const outcome = await sandbox.run({ language: 'typescript', code, input: { n: 7 }, limits: sandboxLimitsFor(limitsFor('pro')), nodeModulesDir: prepared.dir });
    assert.equal(outcome.ok, true, JSON.stringify(outcome));
    assert.deepEqual((outcome as { result: unknown }).result, { odd: true, write: 'EROFS' });
  });

  it('is content-addressed: the same list in any order reuses one install without npm', async () => {
    const first = await prepareTypescriptDependencies(['is-odd@3.0.1', 'is-number@6.0.0'], cacheRoot);
    const started = Date.now();
    const second = await prepareTypescriptDependencies(['is-number@6.0.0', ' is-odd@3.0.1 '], cacheRoot, { npm: '/nonexistent/npm' });
    assert.equal(second.dir, first.dir);
    assert.equal(second.key, dependencyKey(['is-number@6.0.0', 'is-odd@3.0.1']));
    assert.ok(Date.now() - started < 100);
    assert.notEqual(first.key, dependencyKey(['is-odd@3.0.0']));
  });

  it("a server with umask 077 still installs packages the sandbox user can read", async () => {
    const previous = process.umask(0o077);
    let prepared;
    try {
      prepared = await prepareTypescriptDependencies(['is-number@7.0.0'], cacheRoot);
    } finally {
      process.umask(previous);
    }
    const code = 'import isNumber from "is-number";\nexport default () => isNumber(5);\n';
    const outcome = await sandbox.run({ language: 'typescript', code, input: {}, limits: sandboxLimitsFor(limitsFor('pro')), nodeModulesDir: prepared.dir! });
    assert.deepEqual(outcome.ok && outcome.result, true, JSON.stringify(outcome));
  });

  it('no requirements → no directory', async () => {
    assert.equal((await prepareTypescriptDependencies([], cacheRoot)).dir, null);
  });

  it("an unknown package fails with npm's reason and leaves nothing behind", async () => {
    const before = readdirSync(join(cacheRoot, 'ts-deps')).sort();
    const error = await expectInstallError(prepareTypescriptDependencies(['mcpworks-no-such-package-7f3a9c'], cacheRoot), 'install_failed');
    assert.match(error.message, /E404/);
    assert.match(error.detail, /404 Not Found/);
    assert.ok(!error.detail.includes(cacheRoot), 'npm output must not name host paths');
    assert.deepEqual(readdirSync(join(cacheRoot, 'ts-deps')).sort(), before);
  });

  it('a version that does not exist fails with ETARGET', async () => {
    const error = await expectInstallError(prepareTypescriptDependencies(['is-odd@99.99.99'], cacheRoot), 'install_failed');
    assert.match(error.message, /ETARGET|No matching version/);
  });

  it('refuses git, file, URL and alias specs before running npm', async () => {
    for (const spec of ['git+https://github.com/a/b.git', 'file:../evil', 'x@file:../evil', 'x@https://evil.example/x.tgz', 'x@npm:lodash', '../escape', 'UPPER']) {
      await expectInstallError(prepareTypescriptDependencies([spec], cacheRoot), 'invalid_requirement');
    }
  });

  it('refuses a cache the sandbox user could not read', async () => {
    const hidden = mkdtempSync(join(tmpdir(), 'mcpworks-npm-hidden-'));
    try {
      await expectInstallError(prepareTypescriptDependencies(['is-odd@3.0.1'], join(hidden, 'cache')), 'cache_unreadable');
    } finally {
      rmSync(hidden, { recursive: true, force: true });
    }
  });
});
