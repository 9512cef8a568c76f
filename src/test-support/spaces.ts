/**
 * Shared by the rule tests (src/run/*-rules.test.ts, src/api/guard-*.test.ts): a real server with
 * its own tier table, namespaces with functions, the meter as an account sees it, and raw run calls
 * whose HTTP status can be read.
 */
import assert from 'node:assert/strict';
import { encodeEnvHeader } from '../core/env-header.js';
import type { TierLimits } from '../core/tiers.js';
import {
  callOk,
  connect,
  createAccount,
  parseResult,
  startTestServer,
  type ClientEra,
  type McpTestClient,
  type TestAccount,
  type TestServer,
} from './harness.js';

export interface Space {
  account: TestAccount;
  ns: string;
  create: McpTestClient;
  run(mode: 'code' | 'tools', env?: Record<string, string>, era?: ClientEra): Promise<McpTestClient>;
}

export interface RuleServer {
  server: TestServer;
  /** A new account (on `tier`) with a namespace holding service `utils` and these functions. */
  space(functions: Array<Record<string, unknown>>, tier?: string): Promise<Space>;
  /** The month's count and the held concurrency slots, read with the account's login session. */
  usage(account: TestAccount): Promise<{ executions: number; active: number }>;
  /** The whole /api/usage body, read with the account's API key. */
  usageOf(account: TestAccount): Promise<any>;
  assertHealthy(): Promise<void>;
  /** One tools/call over plain HTTP (2025-06-18), so 4xx answers can be read. */
  rawCall(
    s: Space,
    mode: 'code' | 'tools',
    tool: string,
    args: Record<string, unknown>,
    headers?: Record<string, string>,
  ): Promise<{ status: number; body: any; headers: Headers }>;
  stop(): Promise<void>;
}

const runUrl = (server: TestServer, ns: string, mode: 'code' | 'tools') =>
  `${server.url}/mcp/run/${ns}${mode === 'tools' ? '?mode=tools' : ''}`;

/** On `server`: a new account (on `tier`) with a namespace (named `prefix` and a random tail) holding service `utils` and these functions. */
export async function makeSpace(
  server: TestServer,
  functions: Array<Record<string, unknown>>,
  options: { tier?: string | undefined; prefix?: string } = {},
): Promise<Space> {
  const account = await createAccount(server.url);
  if (options.tier) await server.server.services.accounts.setTier(account.email, options.tier);
  const ns = `${options.prefix ?? 'r'}-${Math.random().toString(36).slice(2, 10)}`;
  const create = await connect(`${server.url}/mcp/create/${ns}`, account.key);
  await callOk(create, 'make_namespace', { name: ns });
  await callOk(create, 'make_service', { name: 'utils' });
  for (const fn of functions) await callOk(create, 'make_function', { service: 'utils', ...fn });
  return {
    account,
    ns,
    create,
    run: (mode, env, era = 'v2') =>
      connect(runUrl(server, ns, mode), account.key, era, env ? { 'x-mcpworks-env': encodeEnvHeader(env) } : {}),
  };
}

/** The whole /api/usage body, read with the account's API key. */
export async function usageWithKey(server: TestServer, account: TestAccount): Promise<any> {
  const response = await fetch(`${server.url}/api/usage`, { headers: { authorization: `Bearer ${account.key}` } });
  assert.equal(response.status, 200);
  return response.json();
}

export async function startRuleServer(tiers: Readonly<Record<string, TierLimits>>): Promise<RuleServer> {
  const server = await startTestServer({ tiers });
  return {
    server,
    space: (functions, tier) => makeSpace(server, functions, { tier }),
    async usage(account) {
      const response = await fetch(`${server.url}/api/usage`, { headers: { authorization: `Bearer ${account.token}` } });
      assert.equal(response.status, 200);
      const body = await response.json();
      return { executions: body.executions, active: body.concurrency.active };
    },
    usageOf: (account) => usageWithKey(server, account),
    async assertHealthy() {
      const response = await fetch(`${server.url}/healthz`);
      assert.equal(response.status, 200);
      assert.equal((await response.json()).status, 'ok');
    },
    async rawCall(s, mode, tool, args, headers = {}) {
      const response = await fetch(runUrl(server, s.ns, mode), {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          accept: 'application/json, text/event-stream',
          'mcp-protocol-version': '2025-06-18',
          authorization: `Bearer ${s.account.key}`,
          ...headers,
        },
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: tool, arguments: args } }),
      });
      const text = await response.text();
      const body = text.includes('data:') ? JSON.parse(text.split('data:').pop()!.trim()) : text ? JSON.parse(text) : null;
      return { status: response.status, body, headers: response.headers };
    },
    stop: () => server.stop(),
  };
}

export async function execute(
  client: McpTestClient,
  code: string,
  language: 'python' | 'typescript',
): Promise<{ isError: boolean; value: any }> {
  const response = await client.callTool('execute', { code, language });
  return { isError: response.isError === true, value: parseResult(response) };
}

/** The error type an execute ended with, or the one its code caught from a bridge call (`result.caught`). */
export function failureType(outcome: { isError: boolean; value: any }): string | undefined {
  return outcome.isError ? outcome.value.error_type : outcome.value?.caught;
}
