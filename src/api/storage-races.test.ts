// test-database: postgres, storage limits under parallel creates (the account lock)
// The storage limits of the tier table under races: parallel creates of one account. scripts/test.sh
// runs this file again on PostgreSQL, where the creates go over parallel connections and only the
// account's lock keeps them within the limit (src/api/storage-limits.test.ts: the limits one by one).
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { applyTierOverrides } from '../core/tiers.js';
import {
  callOk,
  connect,
  createAccount,
  parseResult,
  startTestServer,
  type TestAccount,
  type TestServer,
} from '../test-support/harness.js';
import { fetchWithin } from '../test-support/processes.js';

const TIERS = applyTierOverrides(
  JSON.stringify({
    pro_trial: {
      namespaces: 2,
      services: 2,
      functions: 3,
      versions_per_function: 3,
      stored_bytes: 40_000,
      schema_bytes_per_namespace: 2_000,
      mcp_sessions: 2,
    },
  }),
);

let server: TestServer;
before(async () => {
  server = await startTestServer({ tiers: TIERS });
});
after(async () => {
  await server?.stop();
});

/** The server still answers /healthz (within 2 s) and nothing was metered. */
async function healthyAndMetered(account: TestAccount): Promise<void> {
  const health = await fetchWithin(2_000, `${server.url}/healthz`);
  assert.equal(health.status, 200);
  const usage = await fetch(`${server.url}/api/usage`, { headers: { authorization: `Bearer ${account.key}` } });
  assert.equal((await usage.json()).executions, 0);
}

const uniq = (prefix: string) => `${prefix}-${Math.random().toString(36).slice(2, 9)}`;
const PY = { language: 'python', code: 'def main(input):\n    return {"v": 1}  # é\n' };
const TS = { language: 'typescript', code: 'export function main(input: any) { return { v: 1 }; }\n' };

describe('limits hold under parallel creates (run on PostgreSQL, where races can happen)', () => {
  test('12 parallel make_namespace, make_function and initialize: exactly the limit succeeds', async () => {
    const account = await createAccount(server.url);
    const names = Array.from({ length: 12 }, () => uniq('race'));
    const clients = await Promise.all(names.map((n) => connect(`${server.url}/mcp/create/${n}`, account.key, 'v2')));
    const made = await Promise.all(clients.map((c, i) => c.callTool('make_namespace', { name: names[i] })));
    assert.equal(made.filter((r) => !r.isError).length, 2);
    for (const r of made.filter((r) => r.isError)) assert.equal(parseResult(r).error_type, 'limit_exceeded');
    const both = (await callOk(clients[0]!, 'list_namespaces')).map((n: { name: string }) => n.name) as string[];
    const creates = await Promise.all(both.map((n) => connect(`${server.url}/mcp/create/${n}`, account.key, 'v2')));
    for (const c of creates) await callOk(c, 'make_service', { name: 'utils' });
    const ns = both[0]!;
    // Functions of one account in two namespaces: only the account's lock orders them.
    const fnClients = await Promise.all(names.map((_, i) => connect(`${server.url}/mcp/create/${both[i % 2]}`, account.key, 'v2')));
    const fns = await Promise.all(
      fnClients.map((c, i) => c.callTool('make_function', { service: 'utils', name: `f${i}`, ...(i % 2 ? TS : PY) })),
    );
    assert.equal(fns.filter((r) => !r.isError).length, 3);
    let total = 0;
    for (const c of creates) total += (await callOk(c, 'list_functions', { service: 'utils' })).length;
    assert.equal(total, 3);
    const sessions = await Promise.allSettled(names.map(() => connect(`${server.url}/mcp/create/${ns}`, account.key, 'v1')));
    assert.equal(sessions.filter((s) => s.status === 'fulfilled').length, 2);
    await healthyAndMetered(account);
    for (const s of sessions) if (s.status === 'fulfilled') await s.value.close();
    for (const c of [...clients, ...fnClients, ...creates]) await c.close();
  });

  test('make_namespace called 20 times at once in the service itself: exactly the limit succeeds', async () => {
    // Without the transport in between, the transactions overlap for certain (the pool holds 10
    // connections): only the account's row lock keeps the count and the insert together.
    const account = await createAccount(server.url);
    const principal = (await server.server.services.accounts.authenticateKey(account.key))!;
    const names = Array.from({ length: 20 }, () => uniq('direct'));
    const made = await Promise.allSettled(names.map((name) => server.server.services.catalog.makeNamespace(principal, name, undefined)));
    assert.equal(made.filter((r) => r.status === 'fulfilled').length, 2);
    for (const r of made)
      if (r.status === 'rejected') assert.equal((r.reason as { type?: string }).type, 'limit_exceeded', String(r.reason));
    await healthyAndMetered(account);
  });
});
