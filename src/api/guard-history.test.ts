// test-database: embedded, history conditions are the same SQL on both databases
// History per namespace (list_executions, describe_execution, list_security_events) and locked
// functions, through the real server with the official SDK clients, then /healthz and the meter.
// scripts/mutation/mutants.json names the enforcing lines these tests must catch.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { encodeEnvHeader } from '../core/env-header.js';
import { callError, callOk, connect, createAccount, parseResult, startTestServer, type TestServer } from '../test-support/harness.js';
import { MARKER, HELLO, tenantsOf } from '../test-support/tenants.js';

let server: TestServer;
before(async () => {
  server = await startTestServer();
});
after(async () => {
  await server?.stop();
});

const { tenant, runUrl, usage, assertHealthy } = tenantsOf(() => server);

describe('history is per namespace', () => {
  test('list_executions, describe_execution and list_security_events show only their own namespace', async () => {
    const account = await createAccount(server.url);
    const secret = 'history-secret-value-0042';
    const leak = {
      service: 'utils',
      name: 'leak',
      code: 'import os\ndef main(input_data):\n    return os.environ["APP_TOKEN"]\n',
      required_env: ['APP_TOKEN'],
    };
    const a = await tenant(undefined, account);
    const b = await tenant(undefined, account);
    const intruder = await tenant();
    for (const space of [a, b, intruder]) {
      await callOk(space.create, 'make_function', leak);
      const run = await connect(runUrl(space.ns, 'tools'), space.account.key, 'v2', {
        'x-mcpworks-env': encodeEnvHeader({ APP_TOKEN: secret }),
      });
      assert.equal(parseResult(await run.callTool('utils__leak')), '[REDACTED_ENV_VALUE]');
      await run.callTool('utils__hello');
    }
    const listA = await callOk(a.create, 'list_executions');
    const listB = await callOk(b.create, 'list_executions');
    assert.equal(listA.length, 2);
    assert.equal(listB.length, 2);
    const idsA = new Set(listA.map((e: { id: string }) => e.id));
    assert.ok(
      listB.every((e: { id: string }) => !idsA.has(e.id)),
      'no execution of A is listed in B',
    );
    for (const filter of [{ function: 'utils.hello' }, { function: 'hello' }, { status: 'success' }]) {
      assert.ok(
        (await callOk(a.create, 'list_executions', filter)).every((e: { id: string }) => idsA.has(e.id)),
        JSON.stringify(filter),
      );
    }
    // Each id is found in its own namespace only: the other namespace and the other account answer not found.
    const idB = listB[0].id;
    assert.equal((await callOk(b.create, 'describe_execution', { id: idB })).id, idB);
    assert.equal((await callError(a.create, 'describe_execution', { id: idB })).type, 'not_found');
    assert.equal((await callError(intruder.create, 'describe_execution', { id: idB })).type, 'not_found');
    assert.equal((await callError(intruder.create, 'describe_execution', { id: listA[0].id })).type, 'not_found');

    const eventsA = await callOk(a.create, 'list_security_events');
    assert.equal(eventsA.length, 1);
    const eventIds = (await callOk(b.create, 'list_security_events')).map((e: { id: string }) => e.id);
    assert.equal(eventIds.length, 1);
    assert.notEqual(eventsA[0].id, eventIds[0]);
    assert.ok(idsA.has(eventsA[0].execution_id));
    assert.equal((await callOk(intruder.create, 'list_security_events')).length, 1);
    await assertHealthy();
    assert.deepEqual(await usage(account), { executions: 4, active: 0 });
  });
});

describe('locked functions', () => {
  test('a locked function refuses update (code, metadata, restore_version), delete and deleting its service', async () => {
    const owner = await tenant();
    await callOk(owner.create, 'update_function', { service: 'utils', name: 'hello', code: HELLO.replace('secret', 'second') });
    await callOk(owner.create, 'lock_function', { service: 'utils', name: 'hello' });
    const before = await callOk(owner.create, 'describe_function', { service: 'utils', name: 'hello' });
    for (const [tool, args] of [
      ['update_function', { service: 'utils', name: 'hello', restore_version: 1 }],
      ['update_function', { service: 'utils', name: 'hello', code: 'result = 3' }],
      ['update_function', { service: 'utils', name: 'hello', description: 'only metadata' }],
      ['delete_function', { service: 'utils', name: 'hello' }],
      ['delete_service', { name: 'utils' }],
    ] as const) {
      const error = await callError(owner.create, tool, args);
      assert.equal(error.type, 'locked', `${tool} ${JSON.stringify(args)}`);
    }
    assert.deepEqual(await callOk(owner.create, 'describe_function', { service: 'utils', name: 'hello' }), before, 'nothing changed');
    assert.equal(before.active_version, 2);
    // The run endpoint still runs the active version, v2.
    const run = await connect(runUrl(owner.ns, 'tools'), owner.account.key);
    assert.deepEqual(parseResult(await run.callTool('utils__hello')), { second: MARKER });
    await callOk(owner.create, 'unlock_function', { service: 'utils', name: 'hello' });
    assert.deepEqual(await callOk(owner.create, 'update_function', { service: 'utils', name: 'hello', restore_version: 1 }), {
      service: 'utils',
      name: 'hello',
      version: 3,
      new_version: true,
      restored_from: 1,
    });
    await assertHealthy();
    assert.deepEqual(await usage(owner.account), { executions: 1, active: 0 });
  });
});
