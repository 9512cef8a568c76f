/**
 * Run-endpoint latency and throughput over MCP Streamable HTTP (issue 5).
 *
 * Starts the real server in-process (embedded PGlite; tier limits lifted so nothing is throttled),
 * makes a namespace with `utils.hello` (the hello-world template) and measures, in one run:
 *   - bare `/usr/bin/python3 -c pass` and `node -e 0` (same spawn path), the baselines;
 *   - `execute` in code mode, Python calling one function, from one connected SDK client:
 *     median and p99 (nearest rank) over N sequential calls, and the ratio to bare Python;
 *   - the same execute from a v1 SDK client (2025 protocol, session id checked in the database),
 *     the function called in tool mode (`utils__hello`), and `_env_status` (no sandbox, not
 *     metered: the HTTP + MCP floor);
 *   - executions/s with C concurrent clients (each its own SDK client and session, in a separate
 *     client process: bench/lib/load.ts) for S seconds,
 *     then whether `GET /api/usage` counted exactly the successful calls.
 * Then profiles a few sequential executes by wrapping prototypes (spans: auth, catalog, metering,
 * sandbox, database statements, the synchronous part of child_process.spawn) to show where time
 * goes. Set MCPWORKS_TEST_DATABASE_URL to bench on PostgreSQL instead of PGlite.
 * Prints a table; no targets are asserted. Exits non-zero only if the bench cannot run, a call
 * fails, or the usage count is off.
 *
 *   bench/run [--runs N] [--clients C] [--seconds S]
 */
import childProcess from 'node:child_process';
import http from 'node:http';
import { syncBuiltinESMExports } from 'node:module';
import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { RunService } from '../src/run/run-service.js';
import { FunctionsPackageBuilder } from '../src/run/functions-package.js';
import { CatalogService } from '../src/services/catalog.js';
import { AccountService } from '../src/services/accounts.js';
import { ExecutionsStore } from '../src/store/executions-store.js';
import { PGlitePool } from '../src/store/pglite-pool.js';
import { connect } from '../src/test-support/harness.js';
import { startLoadClients } from './lib/load.js';
import { barePython, bareNode, cpuNow, median, ms, p99, printTable } from './lib/measure.js';
import { treeCpu } from './lib/tree.js';
import { call, makeNamespace, startBenchServer, usageExecutions, type CallSpec } from './lib/server.js';

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '41' },
    clients: { type: 'string', default: '15' },
    seconds: { type: 'string', default: '10' },
  },
});
const runs = Number(values.runs);
const clients = Number(values.clients);
const seconds = Number(values.seconds);
for (const [name, value] of Object.entries({ runs, clients, seconds })) {
  if (!Number.isFinite(value) || value < 1) throw new Error(`--${name} must be a positive number`);
}

const GREETING = { greeting: 'Hello, bench!' };
const EXECUTE: CallSpec = {
  tool: 'execute',
  args: { code: 'from functions import hello\nresult = hello(name="bench")', language: 'python' },
  expect: GREETING,
};
const TOOL_CALL: CallSpec = { tool: 'utils__hello', args: { name: 'bench' }, expect: GREETING };
const ENV_STATUS: CallSpec = { tool: '_env_status', args: {}, expect: { ready: true } };

// ---------------------------------------------------------------------------------------------
// Calls: every successful metered call is counted, to compare with /api/usage at the end.

let successfulCalls = 0;
const failures: string[] = [];

async function timed(fn: () => Promise<void>, metered = true): Promise<number | undefined> {
  const started = performance.now();
  try {
    await fn();
    if (metered) successfulCalls++;
    return performance.now() - started;
  } catch (error) {
    failures.push((error as Error).message);
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// Where time goes: spans timed by wrapping prototypes, switched on only for the last phase, so
// the series above run unpatched. Calls in that phase are sequential, so totals divide cleanly.

let profiling = false;
const spans = new Map<string, { ms: number; count: number }>();
let sqlOfCall: string[] = [];
function addSpan(label: string, ms: number): void {
  const span = spans.get(label) ?? { ms: 0, count: 0 };
  span.ms += ms;
  span.count++;
  spans.set(label, span);
}
function spy(proto: object, method: string, label: string): void {
  const target = proto as Record<string, (...args: unknown[]) => unknown>;
  const original = target[method]!;
  target[method] = async function (this: unknown, ...args: unknown[]) {
    if (!profiling) return original.apply(this, args);
    const started = performance.now();
    try {
      return await original.apply(this, args);
    } finally {
      addSpan(label, performance.now() - started);
    }
  };
}
spy(AccountService.prototype, 'authenticateKey', 'auth');
spy(RunService.prototype, 'snapshot', 'functions');
spy(RunService.prototype, 'admit', 'admit');
spy(RunService.prototype, 'execute', 'execute');
spy(CatalogService.prototype, 'namespace', 'namespace');
spy(FunctionsPackageBuilder.prototype, 'build', 'package');
spy(ExecutionsStore.prototype, 'finish', 'finish');
// The sandbox is a closure object; wrap the running server's instance on its first execute.
const wrappedSandboxes = new WeakSet<object>();
const originalExecute = RunService.prototype.execute;
RunService.prototype.execute = function (this: RunService, ...args: Parameters<RunService['execute']>) {
  const sandbox = (this as unknown as { deps: { sandbox: { run: (...a: unknown[]) => Promise<unknown> } } }).deps.sandbox;
  if (!wrappedSandboxes.has(sandbox)) {
    wrappedSandboxes.add(sandbox);
    const run = sandbox.run.bind(sandbox);
    sandbox.run = async (...a: unknown[]) => {
      if (!profiling) return run(...a);
      const started = performance.now();
      try {
        return await run(...a);
      } finally {
        addSpan('sandbox', performance.now() - started);
      }
    };
  }
  return originalExecute.apply(this, args);
};
// Every database round trip: PGlite is one connection behind a mutex, on a thread of its own.
const originalConnect = PGlitePool.prototype.connect;
PGlitePool.prototype.connect = async function (this: PGlitePool) {
  const asked = performance.now();
  const client = await originalConnect.call(this);
  if (!profiling) return client;
  addSpan('db wait', performance.now() - asked);
  const query = client.query.bind(client) as (sql: string, parameters: ReadonlyArray<unknown>) => Promise<unknown>;
  (client as unknown as { query: typeof query }).query = async (sql, parameters) => {
    const started = performance.now();
    try {
      return await query(sql, parameters);
    } finally {
      addSpan('db', performance.now() - started);
      sqlOfCall.push(sql.replace(/\s+/g, ' ').slice(0, 96));
    }
  };
  return client;
};

// The same on PostgreSQL (node-postgres; Kysely calls query(text, values) and awaits a promise).
const originalPgQuery = pg.Client.prototype.query as (...args: unknown[]) => unknown;
(pg.Client.prototype as unknown as { query: (...args: unknown[]) => unknown }).query = function (this: pg.Client, ...args: unknown[]) {
  const result = originalPgQuery.apply(this, args);
  if (!profiling || typeof args[0] !== 'string' || !(result instanceof Promise)) return result;
  const started = performance.now();
  const text = args[0];
  return result.finally(() => {
    addSpan('db', performance.now() - started);
    sqlOfCall.push(text.replace(/\s+/g, ' ').slice(0, 96));
  });
};

// Server side of each HTTP request: from Node's 'request' event until the response is flushed.
const originalEmit = http.Server.prototype.emit;
http.Server.prototype.emit = function (this: http.Server, event: string | symbol, ...args: unknown[]) {
  if (profiling && event === 'request') {
    const started = performance.now();
    (args[1] as http.ServerResponse).once('finish', () => addSpan('http', performance.now() - started));
  }
  return (originalEmit as (this: http.Server, event: string | symbol, ...rest: unknown[]) => boolean).call(this, event, ...args);
} as typeof http.Server.prototype.emit;

// child_process.spawn is synchronous up to the fork/exec: its cost grows with this process's
// memory (page tables), and it blocks the event loop. Rebinding the builtin reaches the server's
// named import of it too.
const originalSpawn = childProcess.spawn;
childProcess.spawn = function (this: unknown, ...args: unknown[]) {
  if (!profiling) return (originalSpawn as (...a: unknown[]) => unknown).apply(this, args);
  const started = performance.now();
  try {
    return (originalSpawn as (...a: unknown[]) => unknown).apply(this, args);
  } finally {
    addSpan('spawn', performance.now() - started);
  }
} as typeof childProcess.spawn;
syncBuiltinESMExports();

// ---------------------------------------------------------------------------------------------
// Setup

const server = await startBenchServer();
let exitCode = 0;
try {
  const ns = 'bench';
  const account = await makeNamespace(server, ns, 'utils', [{ name: 'hello', template: 'hello-world' }]);

  const codeClient = await connect(`${server.url}/mcp/run/${ns}`, account.key);
  const legacyClient = await connect(`${server.url}/mcp/run/${ns}`, account.key, 'v1');
  const toolClient = await connect(`${server.url}/mcp/run/${ns}?mode=tools`, account.key);

  // The series, measured round-robin (one sample of each per round) so that drift in machine
  // load touches them all alike. `metered: false` calls do not count towards /api/usage.
  const series: Array<{ label: string; call: () => Promise<void>; metered: boolean; samples: number[] }> = [
    { label: 'execute (Python → hello), code mode', call: () => call(codeClient, EXECUTE), metered: true, samples: [] },
    { label: 'execute, v1 SDK (2025 protocol, session)', call: () => call(legacyClient, EXECUTE), metered: true, samples: [] },
    { label: 'utils__hello (Python), tool mode', call: () => call(toolClient, TOOL_CALL), metered: true, samples: [] },
    { label: '_env_status (no sandbox, not metered)', call: () => call(toolClient, ENV_STATUS), metered: false, samples: [] },
  ];
  const baselines = { python: [] as number[], node: [] as number[] };
  const push = (into: number[], ms: number | undefined) => ms !== undefined && into.push(ms);
  const round = async (record: boolean) => {
    const python = await barePython();
    const node = await bareNode();
    if (record) {
      baselines.python.push(python);
      baselines.node.push(node);
    }
    for (const s of series) {
      const ms = await timed(s.call, s.metered);
      if (record) push(s.samples, ms);
    }
  };
  // Warm-up: page cache, the generated functions package, JIT, pooled connections.
  for (let i = 0; i < 5; i++) await round(false);
  if (failures.length > 0) throw new Error(`warm-up failed: ${failures[0]}`);
  for (let i = 0; i < runs; i++) await round(true);
  await Promise.all([codeClient.close(), legacyClient.close(), toolClient.close()]);

  // CPU of the baseline itself, to compare with the sandboxes' CPU per execution below.
  const bareCpuBefore = cpuNow();
  for (let i = 0; i < 20; i++) await barePython();
  const barePythonCpu = (cpuNow().children - bareCpuBefore.children) / 20;

  // Throughput: C clients (each its own SDK client and session, in a separate client process)
  // calling execute back to back for S seconds.
  const load = await startLoadClients({ url: `${server.url}/mcp/run/${ns}`, key: account.key, era: 'v2', clients, seconds, call: EXECUTE });
  // From /proc: the server is this process; the sandboxes are every process under it (the runs a
  // zygote forks and reaps included), the client process left out (sampled while it is alive).
  const cpuBefore = await treeCpu(process.pid, [load.pid]);
  const loadResult = await load.go();
  const cpuAfter = await treeCpu(process.pid, [load.pid]);
  await load.exited();
  const loadLatencies = loadResult.latencies;
  const loadElapsed = loadResult.elapsedMs;
  const loadErrors = loadResult.errors;
  successfulCalls += loadLatencies.length;

  const usage = await usageExecutions(server, account.key);
  const countedCalls = successfulCalls;
  const quotaExact = usage.ok && usage.executions === countedCalls;

  // Profile: sequential executes with the spans switched on (after the usage check, so these
  // calls are not part of it).
  const profileRuns = 10;
  const profileClient = await connect(`${server.url}/mcp/run/${ns}`, account.key);
  await timed(() => call(profileClient, EXECUTE));
  profiling = true;
  const profileCpuBefore = await treeCpu(process.pid);
  const profileWall: number[] = [];
  for (let i = 0; i < profileRuns; i++) {
    sqlOfCall = [];
    push(profileWall, await timed(() => call(profileClient, EXECUTE)));
  }
  profiling = false;
  const profileCpuAfter = await treeCpu(process.pid);
  await profileClient.close();

  // -------------------------------------------------------------------------------------------
  const pythonBare = median(baselines.python);
  const ratio = (value: number) => `${(value / pythonBare).toFixed(2)}×`;
  const rows: Array<[string, string, string, string, string]> = [
    ['series', 'n', 'median', 'p99', 'ratio to bare python3'],
    ['bare /usr/bin/python3 -c pass', String(baselines.python.length), ms(pythonBare), ms(p99(baselines.python)), ratio(pythonBare)],
    ['bare node -e 0', String(baselines.node.length), ms(median(baselines.node)), ms(p99(baselines.node)), ratio(median(baselines.node))],
  ];
  for (const s of series)
    if (s.samples.length > 0)
      rows.push([s.label, String(s.samples.length), ms(median(s.samples)), ms(p99(s.samples)), ratio(median(s.samples))]);
  if (loadLatencies.length > 0)
    rows.push([
      `execute under ${clients} concurrent clients`,
      String(loadLatencies.length),
      ms(median(loadLatencies)),
      ms(p99(loadLatencies)),
      ratio(median(loadLatencies)),
    ]);

  console.log(
    `run bench: MCP Streamable HTTP, one server in-process (${server.databaseUrl ? 'PostgreSQL' : 'embedded PGlite'}), ${runs} calls per series, round-robin, after warm-up (${new Date().toISOString()})`,
  );
  printTable(rows);
  console.log('p99 is nearest-rank: with fewer than 100 samples it is the slowest one.');
  console.log('');
  console.log(
    `throughput: ${clients} concurrent clients (separate process), ${(loadElapsed / 1000).toFixed(1)} s: ${loadLatencies.length} executions = ${((loadLatencies.length * 1000) / loadElapsed).toFixed(1)} executions/s, errors: ${loadErrors}`,
  );
  console.log(
    `quota count exact: ${quotaExact ? 'yes' : 'no'} (GET /api/usage executions = ${usage.executions ?? `HTTP ${usage.status}`}, successful calls until then = ${countedCalls})`,
  );
  const errorCount = failures.length + loadErrors;
  if (errorCount > 0) {
    console.log(`errors: ${errorCount}; first: ${failures[0] ?? loadResult.firstError}`);
    exitCode = 1;
  }
  const perExecution = (value: number) => (loadLatencies.length > 0 ? value / loadLatencies.length : 0);
  const serverCpu = cpuAfter.rootMs - cpuBefore.rootMs;
  const sandboxCpu = cpuAfter.restMs - cpuBefore.restMs;
  console.log(
    `cpu per execution under load: server process ${perExecution(serverCpu).toFixed(1)} ms (HTTP, MCP, ${server.databaseUrl ? 'pg client' : 'PGlite'}, spawning), sandboxes ${perExecution(sandboxCpu).toFixed(1)} ms, ` +
      `client process ${perExecution(loadResult.cpuMs).toFixed(1)} ms (bare python3 -c pass: ${barePythonCpu.toFixed(1)} ms); busy: server ${((serverCpu / loadElapsed) * 100).toFixed(0)}%, ` +
      `sandboxes ${((sandboxCpu / loadElapsed) * 100).toFixed(0)}%, clients ${((loadResult.cpuMs / loadElapsed) * 100).toFixed(0)}% of one core (${availableParallelism()} cores)`,
  );
  console.log('');
  const wallMean = profileWall.reduce((a, b) => a + b, 0) / Math.max(1, profileWall.length);
  console.log(
    `where time goes: ${profileWall.length} sequential executes, mean per call (client wall ${ms(wallMean)}, median ${ms(median(profileWall))})`,
  );
  const per = (label: string) => (spans.get(label)?.ms ?? 0) / Math.max(1, profileWall.length);
  const times = (label: string) => `${((spans.get(label)?.count ?? 0) / Math.max(1, profileWall.length)).toFixed(0)}×`;
  const inside = ['package', 'sandbox', 'finish'].reduce((sum, label) => sum + per(label), 0);
  const serverSpans = ['auth', 'functions', 'admit', 'execute'].reduce((sum, label) => sum + per(label), 0);
  const profileRows: Array<[string, number, string]> = [
    ['authenticate key (cached verification, 1 query)', per('auth'), times('auth')],
    ['namespace + active functions (cached by catalog version)', per('functions'), times('functions')],
    ['admit (metering transaction)', per('admit'), times('admit')],
    ['RunService.execute, in all', per('execute'), times('execute')],
    ['  functions package (content-addressed cache)', per('package'), times('package')],
    ['  sandbox.run (Python; the bridge call inside)', per('sandbox'), times('sandbox')],
    ['  settle + record (one transaction)', per('finish'), times('finish')],
    ['  rest: namespace lookup, secret scan, glue', per('execute') - inside, ''],
    ['server, outside these: HTTP, MCP SDK server, JSON', per('http') - serverSpans, ''],
    ['client: SDK, fetch; shared loop busy after reply', wallMean - per('http'), ''],
    ['(server-side HTTP requests per execute, in all)', per('http'), times('http')],
    ['namespace lookups (in catalog and execute above)', per('namespace'), times('namespace')],
    [
      server.databaseUrl ? 'database statements (PostgreSQL round trips)' : 'database statements (PGlite: on the event loop)',
      per('db'),
      times('db'),
    ],
    ...(server.databaseUrl
      ? []
      : [['waiting for the PGlite connection mutex', per('db wait'), times('db wait')] as [string, number, string]]),
    [
      'CPU: this process (server and the one client)',
      (profileCpuAfter.rootMs - profileCpuBefore.rootMs) / Math.max(1, profileWall.length),
      '',
    ],
    [
      'CPU: sandbox processes (every process under the server)',
      (profileCpuAfter.restMs - profileCpuBefore.restMs) / Math.max(1, profileWall.length),
      '',
    ],
    [`spawn(), synchronous part (server RSS ${(process.memoryUsage().rss / 2 ** 20).toFixed(0)} MiB)`, per('spawn'), times('spawn')],
  ];
  for (const [label, value, count] of profileRows) console.log(`  ${label.padEnd(50)} ${ms(value).padStart(9)}  ${count}`);
  console.log(`  database statements of one execute (${sqlOfCall.length}):`);
  for (const statement of sqlOfCall) console.log(`    ${statement}`);
  if (!quotaExact) exitCode = 1;
} catch (error) {
  console.error(`bench failed: ${(error as Error).stack ?? error}`);
  exitCode = 1;
} finally {
  await server.stop();
}
process.exit(exitCode);
