// test-database: embedded, the order of checks before installs does not depend on the database
/**
 * npm installs of TypeScript requirements are bounded: a catalog change the account's limits (or a
 * lock) refuse installs nothing (make_function, update_function and restore are checked before any
 * schema is compiled or package installed), installs no stored version asks for are collected, and
 * the store's bytes are capped. The fake registry records every package npm asks for.
 */
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { isDomainError } from '../core/errors.js';
import { applyTierOverrides } from '../core/tiers.js';
import { TypescriptDependencies } from '../run/typescript-dependencies.js';
import { dependencyKey } from '../sandbox/index.js';
import { startFakeRegistry, type FakeRegistry } from '../test-support/fake-npm-registry.js';
import {
  callError,
  callOk,
  connect,
  createAccount,
  startTestServer,
  type McpTestClient,
  type TestServer,
} from '../test-support/harness.js';

const TIERS = applyTierOverrides(JSON.stringify({ pro_trial: { functions: 2, versions_per_function: 2, stored_bytes: 20_000 } }));
const TS = { language: 'typescript', code: 'export default () => 1;\n' };

let server: TestServer;
let registry: FakeRegistry;
let cacheDir: string;
before(async () => {
  registry = await startFakeRegistry();
  cacheDir = mkdtempSync(path.join(tmpdir(), 'mcpworks-limits-npm-'));
  chmodSync(cacheDir, 0o755);
  server = await startTestServer({ tiers: TIERS, cacheDir, npm: { registry: registry.url } });
});
after(async () => {
  await server?.stop();
  await registry?.close();
  rmSync(cacheDir, { recursive: true, force: true });
});

async function namespace(): Promise<McpTestClient> {
  const account = await createAccount(server.url);
  const ns = `lim-${Math.random().toString(36).slice(2, 9)}`;
  const create = await connect(`${server.url}/mcp/create/${ns}`, account.key);
  await callOk(create, 'make_namespace', { name: ns });
  await callOk(create, 'make_service', { name: 'deps' });
  return create;
}

const asked = (name: string) => registry.requested.includes(name);

describe('limits are checked before packages are installed', () => {
  test(
    'make_function over the functions limit, update_function over the versions and stored-bytes limits, and a locked function install nothing',
    { timeout: 300_000 },
    async () => {
      const create = await namespace();
      try {
        // The control: a change within the limits does reach the registry.
        await callOk(create, 'make_function', { service: 'deps', name: 'one', ...TS, requirements: ['pkg-control@1.0.0'] });
        assert.ok(asked('pkg-control'), 'an allowed make_function installs its packages');
        await callOk(create, 'make_function', { service: 'deps', name: 'two', ...TS });

        const tooMany = await callError(create, 'make_function', {
          service: 'deps',
          name: 'three',
          ...TS,
          requirements: ['pkg-over-functions@1.0.0'],
        });
        assert.equal(tooMany.type, 'limit_exceeded');
        assert.equal(tooMany.resource, 'functions');

        const tooLarge = await callError(create, 'update_function', {
          service: 'deps',
          name: 'two',
          code: `export default () => 1;\n// ${'x'.repeat(25_000)}\n`,
          requirements: ['pkg-over-bytes@1.0.0'],
        });
        assert.equal(tooLarge.type, 'limit_exceeded');
        assert.equal(tooLarge.resource, 'stored_bytes');

        await callOk(create, 'update_function', { service: 'deps', name: 'two', requirements: ['pkg-second-version@1.0.0'] });
        assert.ok(asked('pkg-second-version'));
        const tooManyVersions = await callError(create, 'update_function', {
          service: 'deps',
          name: 'two',
          requirements: ['pkg-over-versions@1.0.0'],
        });
        assert.equal(tooManyVersions.type, 'limit_exceeded');
        assert.equal(tooManyVersions.resource, 'versions_per_function');
        const restoreOver = await callError(create, 'update_function', { service: 'deps', name: 'two', restore_version: 1 });
        assert.equal(restoreOver.type, 'limit_exceeded', 'a restore is refused by the same limit');

        await callOk(create, 'lock_function', { service: 'deps', name: 'one' });
        const locked = await callError(create, 'update_function', { service: 'deps', name: 'one', requirements: ['pkg-locked@1.0.0'] });
        assert.equal(locked.type, 'locked');

        for (const name of ['pkg-over-functions', 'pkg-over-bytes', 'pkg-over-versions', 'pkg-locked']) {
          assert.ok(!asked(name), `a refused change made npm ask the registry for ${name}`);
        }
        const listed = await callOk(create, 'list_functions', { service: 'deps' });
        assert.deepEqual(
          listed.map((f: { name: string; active_version: number }) => [f.name, f.active_version]),
          [
            ['one', 1],
            ['two', 2],
          ],
          'nothing was written',
        );
      } finally {
        await create.close();
      }
      assert.equal((await fetch(`${server.url}/healthz`)).status, 200);
    },
  );
});

describe('npm installs are collected and capped', () => {
  const installed = (requirement: string) => existsSync(path.join(cacheDir, 'ts-deps', dependencyKey([requirement]), 'node_modules'));

  test(
    'an install no stored version asks for is removed after the grace; one that a version (history included) asks for stays',
    { timeout: 300_000 },
    async () => {
      const create = await namespace();
      try {
        await callOk(create, 'make_function', { service: 'deps', name: 'keep', ...TS, requirements: ['pkg-gc-keep@1.0.0'] });
        await callOk(create, 'make_function', { service: 'deps', name: 'gone', ...TS, requirements: ['pkg-gc-old@1.0.0'] });
        await callOk(create, 'update_function', { service: 'deps', name: 'gone', requirements: ['pkg-gc-new@1.0.0'] });
        const later = Date.now() + 24 * 3600_000;
        await server.server.services.housekeeping.sweep(later);
        for (const requirement of ['pkg-gc-keep@1.0.0', 'pkg-gc-old@1.0.0', 'pkg-gc-new@1.0.0'])
          assert.ok(installed(requirement), `${requirement} is still asked for (version 1 of gone too)`);

        await callOk(create, 'delete_function', { service: 'deps', name: 'gone' });
        await server.server.services.housekeeping.sweep();
        assert.ok(installed('pkg-gc-old@1.0.0') && installed('pkg-gc-new@1.0.0'), 'within the grace (a run may still use them) they stay');
        const swept = await server.server.services.housekeeping.sweep(later);
        assert.ok(swept.installs >= 2, JSON.stringify(swept));
        assert.ok(!installed('pkg-gc-old@1.0.0') && !installed('pkg-gc-new@1.0.0'), 'unreferenced installs were removed');
        assert.ok(installed('pkg-gc-keep@1.0.0'));
      } finally {
        await create.close();
      }
      assert.equal((await fetch(`${server.url}/healthz`)).status, 200);
    },
  );

  test('past the store cap new installs are refused with a typed error until collection frees room', { timeout: 300_000 }, async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'mcpworks-npm-cap-'));
    chmodSync(dir, 0o755);
    try {
      // A cap of one byte: the first install fits (the store was empty), the next does not.
      const dependencies = new TypescriptDependencies(dir, { registry: registry.url, cacheMb: 1 / (1024 * 1024) });
      const ts = (requirement: string) => ({ language: 'typescript' as const, requirements: [requirement] });
      assert.ok(await dependencies.nodeModulesFor(ts('pkg-cap-a@1.0.0'), 'acct'));
      await assert.rejects(dependencies.nodeModulesFor(ts('pkg-cap-b@1.0.0'), 'acct'), (error: unknown) => {
        assert.ok(isDomainError(error));
        assert.equal(error.type, 'dependency_error');
        assert.equal((error.details as { limit?: string }).limit, 'cache');
        return true;
      });
      assert.ok(!registry.requested.includes('pkg-cap-b'), 'a refused install never reaches the registry');
      assert.ok(await dependencies.nodeModulesFor(ts('pkg-cap-a@1.0.0'), 'acct'), 'what is installed still serves');
      const collected = dependencies.collectGarbage(new Set(), 0);
      assert.deepEqual(collected, { removed: 1, bytes: 0 });
      assert.ok(await dependencies.nodeModulesFor(ts('pkg-cap-b@1.0.0'), 'acct'), 'collection made room');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
