// test-database: embedded, scope checks live in the services
// Scopes on the create endpoint: every write tool refused without `write`, every read tool without
// `read`, through the real server with the official SDK clients, then /healthz and the meter checked.
// scripts/mutation/mutants.json names the enforcing lines these tests must catch.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { callError, callOk, connect, createKey, startTestServer, type TestServer } from '../test-support/harness.js';
import { HELLO, tenantsOf } from '../test-support/tenants.js';

let server: TestServer;
before(async () => {
  server = await startTestServer();
});
after(async () => {
  await server?.stop();
});

const { tenant, usage, assertHealthy } = tenantsOf(() => server);

describe('scopes on the create endpoint', () => {
  const WRITES: ReadonlyArray<readonly [string, Record<string, unknown>]> = [
    ['make_namespace', { name: 'scope-probe-ns' }],
    ['make_service', { name: 'extra' }],
    ['delete_service', { name: 'utils' }],
    ['make_function', { service: 'utils', name: 'extra', code: 'result = 1' }],
    ['update_function', { service: 'utils', name: 'hello', code: 'result = 2' }],
    ['update_function', { service: 'utils', name: 'hello', description: 'metadata only' }],
    ['update_function', { service: 'utils', name: 'hello', restore_version: 1 }],
    ['delete_function', { service: 'utils', name: 'hello' }],
    ['lock_function', { service: 'utils', name: 'hello' }],
    ['unlock_function', { service: 'utils', name: 'hello' }],
  ];
  const READS: ReadonlyArray<readonly [string, Record<string, unknown>]> = [
    ['list_namespaces', {}],
    ['list_services', {}],
    ['list_functions', { service: 'utils' }],
    ['describe_function', { service: 'utils', name: 'hello' }],
    ['list_executions', {}],
    ['describe_execution', { id: '00000000-0000-0000-0000-000000000000' }],
    ['list_security_events', {}],
  ];

  test('a key without write changes nothing through any write tool; one without read reads nothing', async () => {
    const owner = await tenant();
    await callOk(owner.create, 'update_function', { service: 'utils', name: 'hello', code: HELLO.replace('secret', 'v2') });
    const before = await callOk(owner.create, 'describe_function', { service: 'utils', name: 'hello' });
    for (const scopes of [['read'], ['read', 'execute']]) {
      const reader = await connect(`${server.url}/mcp/create/${owner.ns}`, await createKey(server.url, owner.account, { scopes }));
      for (const [tool, args] of WRITES) {
        const error = await callError(reader, tool, args);
        assert.equal(error.type, 'forbidden', `${scopes}: ${tool} ${JSON.stringify(args)}`);
        assert.match(error.message, /'write' scope/);
      }
      assert.equal((await callOk(reader, 'list_services')).length, 1, 'the key can read');
    }
    for (const scopes of [['write'], ['execute'], ['write', 'execute']]) {
      const writer = await connect(`${server.url}/mcp/create/${owner.ns}`, await createKey(server.url, owner.account, { scopes }));
      for (const [tool, args] of READS) {
        const error = await callError(writer, tool, args);
        assert.equal(error.type, 'forbidden', `${scopes}: ${tool}`);
        assert.match(error.message, /'read' scope/);
      }
    }
    const after = await callOk(owner.create, 'describe_function', { service: 'utils', name: 'hello' });
    assert.deepEqual(after, before, 'nothing changed');
    assert.deepEqual(
      (await callOk(owner.create, 'list_namespaces')).map((n: { name: string }) => n.name),
      [owner.ns],
    );
    assert.deepEqual(
      (await callOk(owner.create, 'list_functions', { service: 'utils' })).map((f: { name: string }) => f.name),
      ['hello', 'ts-hello'],
    );
    await assertHealthy();
    assert.deepEqual(await usage(owner.account), { executions: 0, active: 0 });
  });
});
