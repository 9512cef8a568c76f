/**
 * Shared by the benches: the real server in-process (embedded PGlite, or PostgreSQL when
 * MCPWORKS_TEST_DATABASE_URL is set) with the trial tier's execution limits lifted so nothing is
 * throttled; a namespace made through the create endpoint; and tool calls described as plain data
 * (so a load-client process can be handed the same call).
 */
import { sandboxFromEnv } from '../../src/app/config.js';
import { applyTierOverrides } from '../../src/core/tiers.js';
import { RunService } from '../../src/run/run-service.js';
import {
  connect,
  createAccount,
  parseResult,
  startTestServer,
  type McpTestClient,
  type TestAccount,
  type TestServer,
} from '../../src/test-support/harness.js';

process.env.TEST_LOG_LEVEL ??= 'silent';

export async function startBenchServer(): Promise<TestServer> {
  return startTestServer({
    tiers: applyTierOverrides('{"pro_trial":{"monthly_executions":-1,"executions_per_minute":-1,"concurrency":-1}}'),
    // Every load client shares one loopback address, where users each have their own: the
    // per-client request pacing (a per-address policy, tested in connection-limits) would cap the
    // whole bench at one client's share.
    http: { requestsPerSecondPerIp: 1_000_000 },
    // The sandbox's switches as `serve` reads them (MCPWORKS_SANDBOX_POOL, MCPWORKS_ZYGOTE, …): the
    // test harness starts with the defaults, whatever the environment says.
    sandbox: sandboxFromEnv(process.env),
  });
}

/** Arguments of make_function, less `service`. */
export interface FunctionSpec {
  name: string;
  code?: string;
  language?: 'python' | 'typescript';
  requirements?: string[];
  template?: string;
}

/** Registers an account and makes namespace `ns` with `service` holding `functions`, over /mcp/create. */
export async function makeNamespace(
  server: Pick<TestServer, 'url'>,
  ns: string,
  service: string,
  functions: FunctionSpec[],
): Promise<TestAccount> {
  const account = await createAccount(server.url);
  const create = await connect(`${server.url}/mcp/create/${ns}`, account.key);
  try {
    const steps: Array<[string, Record<string, unknown>]> = [
      ['make_namespace', { name: ns }],
      ['make_service', { name: service }],
      ...functions.map((fn): [string, Record<string, unknown>] => ['make_function', { service, ...fn }]),
    ];
    for (const [tool, args] of steps) {
      const response = await create.callTool(tool, args);
      if (response.isError)
        throw new Error(`${tool} ${JSON.stringify(args).slice(0, 80)} failed: ${JSON.stringify(parseResult(response))}`);
    }
  } finally {
    await create.close();
  }
  return account;
}

/** One tool call and what its result must contain (each key deep-equal), as plain JSON. */
export interface CallSpec {
  tool: string;
  args: Record<string, unknown>;
  expect: Record<string, unknown>;
}

/** Calls and checks; throws on a tool error or an unexpected result. */
export async function call(client: McpTestClient, spec: CallSpec): Promise<void> {
  const response = await client.callTool(spec.tool, spec.args);
  const value = parseResult(response);
  if (response.isError) throw new Error(`${spec.tool} failed: ${JSON.stringify(value).slice(0, 300)}`);
  for (const [key, expected] of Object.entries(spec.expect)) {
    if (JSON.stringify(value?.[key]) !== JSON.stringify(expected))
      throw new Error(`${spec.tool} returned ${JSON.stringify(value).slice(0, 300)}`);
  }
}

/** GET /api/usage → the executions counted this month. */
export async function usageExecutions(
  server: Pick<TestServer, 'url'>,
  key: string,
): Promise<{ ok: boolean; executions?: number; status: number }> {
  const response = await fetch(`${server.url}/api/usage`, { headers: { authorization: `Bearer ${key}` } });
  const body = (await response.json().catch(() => ({}))) as { executions?: number };
  return { ok: response.ok, status: response.status, ...(typeof body.executions === 'number' ? { executions: body.executions } : {}) };
}

/** What the sandbox's warm pool reports (BubblewrapSandbox.poolStats), as far as the benches use it. */
export interface PoolStatsView {
  claims: number;
  hits: number;
  keys: Array<{ label: string; claims: number; hits: number; ready: number; target: number }>;
}

/** What the sandbox's Python zygotes report (BubblewrapSandbox.zygoteStats). */
export interface ZygoteStatsView {
  runs: number;
  zygotes: Array<{ label: string; state: string; spares: number; runs: number }>;
}

/** The sandbox the run service holds, remembered at its first request. */
function watchSandbox(): () => { poolStats?: () => PoolStatsView | null; zygoteStats?: () => ZygoteStatsView | null } | undefined {
  let sandbox: { poolStats?: () => PoolStatsView | null; zygoteStats?: () => ZygoteStatsView | null } | undefined;
  const original = RunService.prototype.snapshot;
  RunService.prototype.snapshot = function (this: RunService, ...args: Parameters<RunService['snapshot']>) {
    sandbox ??= (this as unknown as { deps?: { sandbox?: typeof sandbox } }).deps?.sandbox;
    return original.apply(this, args);
  };
  return () => sandbox;
}

/**
 * Lets a bench read the running server's sandbox counters. `pool()` gives the warm pool's stats,
 * null when the pool is off, or undefined when this sandbox has no pool view (or no request has run
 * yet); `zygotes()` the same for the Python zygotes.
 */
export function watchSandboxPool(): { pool: () => PoolStatsView | null | undefined; zygotes: () => ZygoteStatsView | null | undefined } {
  const sandbox = watchSandbox();
  return {
    pool: () => {
      const current = sandbox();
      return typeof current?.poolStats === 'function' ? current.poolStats() : undefined;
    },
    zygotes: () => {
      const current = sandbox();
      return typeof current?.zygoteStats === 'function' ? current.zygoteStats() : undefined;
    },
  };
}
