/**
 * Tenants for the rule tests (guard-*.test.ts): an account's namespace with one Python and one
 * TypeScript function whose results carry a marker, so a test can tell when another tenant's
 * function answered; plus the usage and health reads every such test ends with.
 */
import assert from 'node:assert/strict';
import { callOk, connect, createAccount, type McpTestClient, type TestAccount, type TestServer } from './harness.js';

export const MARKER = 'tenant-private-result-7f3a';
export const HELLO = `def main(input_data):\n    return {"secret": "${MARKER}"}\n`;
export const TS_HELLO = `export default function main() { return { secret: "${MARKER}" }; }`;

export interface Tenant {
  account: TestAccount;
  ns: string;
  create: McpTestClient;
}

/** Helpers bound to the test file's server (started in its `before`, hence the getter). */
export function tenantsOf(server: () => TestServer) {
  return {
    /** A namespace (new account unless given) with utils.hello (Python) and utils.ts-hello (TypeScript). */
    async tenant(ns = `g-${Math.random().toString(36).slice(2, 10)}`, account?: TestAccount): Promise<Tenant> {
      account ??= await createAccount(server().url);
      const create = await connect(`${server().url}/mcp/create/${ns}`, account.key);
      await callOk(create, 'make_namespace', { name: ns });
      await callOk(create, 'make_service', { name: 'utils' });
      await callOk(create, 'make_function', { service: 'utils', name: 'hello', code: HELLO });
      await callOk(create, 'make_function', { service: 'utils', name: 'ts-hello', language: 'typescript', code: TS_HELLO });
      return { account, ns, create };
    },
    runUrl: (ns: string, mode: 'code' | 'tools') => `${server().url}/mcp/run/${ns}${mode === 'tools' ? '?mode=tools' : ''}`,
    /** The month's count and the active slots of an account, read with its login session. */
    async usage(account: TestAccount): Promise<{ executions: number; active: number }> {
      const response = await fetch(`${server().url}/api/usage`, { headers: { authorization: `Bearer ${account.token}` } });
      assert.equal(response.status, 200);
      const body = await response.json();
      return { executions: body.executions, active: body.concurrency.active };
    },
    async assertHealthy(): Promise<void> {
      const response = await fetch(`${server().url}/healthz`);
      assert.equal(response.status, 200);
      assert.equal((await response.json()).status, 'ok');
    },
  };
}
