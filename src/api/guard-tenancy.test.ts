// test-database: embedded, account conditions are the same SQL on both databases
// Tenancy, scopes, namespace limits, history and locks: each rule attacked through the real server
// with the official SDK clients, then /healthz and the meter checked. scripts/mutation/mutants.json
// names the enforcing lines these tests must catch when one is broken.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  callError,
  callOk,
  connect,
  createAccount,
  createKey,
  parseResult,
  startTestServer,
  type ClientEra,
  type McpTestClient,
  type TestServer,
} from '../test-support/harness.js';
import { MARKER, tenantsOf } from '../test-support/tenants.js';

let server: TestServer;
before(async () => {
  server = await startTestServer();
});
after(async () => {
  await server?.stop();
});

const ERAS: readonly ClientEra[] = ['v1', 'v2', 'v2-legacy'];
const { tenant, runUrl, usage, assertHealthy } = tenantsOf(() => server);

/** A call that must not run: a tool error or a protocol error, never the tenant's result. */
async function refused(client: McpTestClient, tool: string, args: Record<string, unknown> = {}): Promise<string> {
  let text: string;
  try {
    const result = await client.callTool(tool, args);
    assert.equal(result.isError, true, `${tool} must fail: ${JSON.stringify(result)}`);
    text = JSON.stringify(result);
  } catch (error) {
    text = String((error as Error).message);
  }
  assert.doesNotMatch(text, new RegExp(MARKER), `${tool} leaked the tenant's result`);
  return text;
}

/** What an `execute` that imports the tenant's functions gets, in both languages. */
const IMPORT_PY = 'from functions import hello, ts_hello\nresult = [hello(), ts_hello()]';
const IMPORT_TS = 'import { hello, ts_hello } from "functions";\nresult = [await hello(), await ts_hello()];';

/** Everything a key that must not reach `ns`'s functions tries on the run endpoint, in one era. */
async function attackRunEndpoint(ns: string, key: string, era: ClientEra, expectedType: string): Promise<void> {
  const tools = await connect(runUrl(ns, 'tools'), key, era);
  assert.deepEqual(
    (await tools.listTools()).tools.map((t) => t.name),
    ['_env_status'],
    `${era}: no function tool is listed`,
  );
  await refused(tools, 'utils__hello');
  await refused(tools, 'utils__ts-hello');
  assert.equal(parseResult(await tools.callTool('_env_status')).error_type, expectedType, `${era}: _env_status`);
  await tools.close();

  const code = await connect(runUrl(ns, 'code'), key, era);
  const [execute] = (await code.listTools()).tools;
  assert.doesNotMatch(execute!.description!, /utils\.hello/, `${era}: the execute description lists no function`);
  for (const [source, language] of [
    [IMPORT_PY, 'python'],
    [IMPORT_TS, 'typescript'],
  ] as const) {
    const text = await refused(code, 'execute', { code: source, language });
    assert.match(text, new RegExp(expectedType), `${era} ${language}: ${text}`);
  }
  await code.close();
}

describe("the run endpoint serves only the key's own account and namespaces", () => {
  test("another account's key cannot list or run a tenant's functions (tool mode, code mode and its bridge), in every era", async () => {
    const owner = await tenant();
    const intruder = await createAccount(server.url);
    // The intruder even owns a namespace of its own, with functions of the same names.
    await tenant(undefined, intruder);
    for (const era of ERAS) await attackRunEndpoint(owner.ns, intruder.key, era, 'not_found');
    // Exactly what a namespace that does not exist answers.
    const missing = await connect(runUrl('no-such-namespace-anywhere', 'code'), intruder.key);
    const absent = await refused(missing, 'execute', { code: IMPORT_PY });
    const seen = await refused(await connect(runUrl(owner.ns, 'code'), intruder.key), 'execute', { code: IMPORT_PY });
    assert.equal(seen.replaceAll(owner.ns, 'NS'), absent.replaceAll('no-such-namespace-anywhere', 'NS'));

    // The create endpoint of the tenant's namespace, too: not found, and list_namespaces shows only its own.
    const create = await connect(`${server.url}/mcp/create/${owner.ns}`, intruder.key);
    assert.equal((await callError(create, 'list_services')).type, 'not_found');
    assert.equal((await callError(create, 'describe_function', { service: 'utils', name: 'hello' })).type, 'not_found');
    assert.equal((await callOk(create, 'list_namespaces')).length, 1);
    assert.notEqual((await callOk(create, 'list_namespaces'))[0].name, owner.ns);

    await assertHealthy();
    assert.deepEqual(await usage(intruder), { executions: 0, active: 0 });
    assert.deepEqual(await usage(owner.account), { executions: 0, active: 0 });
    assert.deepEqual(await callOk(owner.create, 'list_executions'), [], "nothing ran in the tenant's namespace");

    // The owner's own key does run them (the attack above failed for the right reason).
    const own = await connect(runUrl(owner.ns, 'code'), owner.account.key);
    assert.deepEqual(parseResult(await own.callTool('execute', { code: IMPORT_PY })), [{ secret: MARKER }, { secret: MARKER }]);
    assert.deepEqual(await usage(owner.account), { executions: 1, active: 0 });
  });

  test('a key without the execute scope runs nothing (tool mode, code mode), in every era', async () => {
    const owner = await tenant();
    const manager = await createKey(server.url, owner.account, { scopes: ['read', 'write'] });
    for (const era of ERAS) await attackRunEndpoint(owner.ns, manager, era, 'forbidden');
    const text = await refused(await connect(runUrl(owner.ns, 'code'), manager), 'execute', { code: 'result = 1' });
    assert.match(text, /'execute' scope/);
    await assertHealthy();
    assert.deepEqual(await usage(owner.account), { executions: 0, active: 0 });
    assert.deepEqual(await callOk(owner.create, 'list_executions'), []);
  });

  test('a key limited to one namespace reaches no other, on the run and the create endpoint', async () => {
    const account = await createAccount(server.url);
    const home = await tenant(undefined, account);
    const other = await tenant(undefined, account);
    const limited = await createKey(server.url, account, { namespace: home.ns });
    for (const era of ERAS) await attackRunEndpoint(other.ns, limited, era, 'not_found');

    const create = await connect(`${server.url}/mcp/create/${other.ns}`, limited);
    for (const [tool, args] of [
      ['list_services', {}],
      ['list_functions', { service: 'utils' }],
      ['describe_function', { service: 'utils', name: 'hello' }],
      ['update_function', { service: 'utils', name: 'hello', code: 'result = 2' }],
      ['delete_function', { service: 'utils', name: 'hello' }],
      ['delete_service', { name: 'utils' }],
      ['make_service', { name: 'extra' }],
      ['lock_function', { service: 'utils', name: 'hello' }],
      ['list_executions', {}],
      ['list_security_events', {}],
    ] as const) {
      assert.equal((await callError(create, tool, args)).type, 'not_found', tool);
    }
    assert.equal((await callError(create, 'make_namespace', { name: 'limited-key-new-ns' })).type, 'forbidden');
    assert.deepEqual(
      (await callOk(create, 'list_namespaces')).map((n: { name: string }) => n.name),
      [home.ns],
    );

    // In its own namespace the key works.
    const own = await connect(runUrl(home.ns, 'tools'), limited);
    assert.deepEqual(parseResult(await own.callTool('utils__hello')), { secret: MARKER });
    await assertHealthy();
    assert.deepEqual(await usage(account), { executions: 1, active: 0 });
    assert.deepEqual(await callOk(other.create, 'list_executions'), []);
    assert.equal((await callOk(other.create, 'describe_function', { service: 'utils', name: 'hello' })).active_version, 1);
  });
});
