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
 *   - executions/s with C concurrent clients (each its own SDK client and session) for S seconds,
 *     then whether `GET /api/usage` counted exactly the successful calls.
 * Then profiles a few sequential executes by wrapping prototypes (spans: auth, catalog, metering,
 * sandbox, database statements, the synchronous part of child_process.spawn) to show where time
 * goes. Set MCPWORKS_TEST_DATABASE_URL to bench on PostgreSQL instead of PGlite.
 * Prints a table; no targets are asserted. Exits non-zero only if the bench cannot run, a call
 * fails, or the usage count is off.
 *
 *   bench/run [--runs N] [--clients C] [--seconds S]
 */
import childProcess, { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { syncBuiltinESMExports } from 'node:module';
import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { applyTierOverrides } from '../src/core/tiers.js';
import { RunService } from '../src/run/run-service.js';
import { FunctionsPackageBuilder } from '../src/run/functions-package.js';
import { CatalogService } from '../src/services/catalog.js';
import { AccountService } from '../src/services/accounts.js';
import { ExecutionsStore } from '../src/store/executions-store.js';
import { PGlitePool } from '../src/store/pglite-pool.js';
import { connect, createAccount, parseResult, startTestServer, type McpTestClient } from '../src/test-support/harness.js';

process.env.TEST_LOG_LEVEL ??= 'silent';

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '41' },
    clients: { type: 'string', default: '15' },
    seconds: { type: 'string', default: '10' },
    // Internal: this file run as the throughput phase's client process (see loadClientProcess).
    'load-clients': { type: 'string' },
  },
});
const runs = Number(values.runs);
const clients = Number(values.clients);
const seconds = Number(values.seconds);
for (const [name, value] of Object.entries({ runs, clients, seconds })) {
  if (!Number.isFinite(value) || value < 1) throw new Error(`--${name} must be a positive number`);
}

const EXECUTE_CODE = 'from functions import hello\nresult = hello(name="bench")';
const EXPECTED_GREETING = 'Hello, bench!';

// ---------------------------------------------------------------------------------------------
// Statistics and baselines

function quantile(samples: number[], q: number): number {
  const sorted = [...samples].sort((a, b) => a - b);
  // Nearest rank: the smallest sample with at least q of the samples at or below it.
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}
const median = (samples: number[]) => quantile(samples, 0.5);
const p99 = (samples: number[]) => quantile(samples, 0.99);

function bare(command: string, args: string[]): Promise<number> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.resume();
    child.stderr.resume();
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(performance.now() - started) : reject(new Error(`${command} exited ${code}`))));
  });
}
const barePython = () => bare('/usr/bin/python3', ['-c', 'pass']);
const bareNode = () => bare(process.execPath, ['-e', '0']);

// ---------------------------------------------------------------------------------------------
// Calls: every successful metered call is counted, to compare with /api/usage at the end.

let successfulCalls = 0;
const failures: string[] = [];

function checkHello(value: any, via: string): void {
  if (value?.greeting !== EXPECTED_GREETING) throw new Error(`${via} returned ${JSON.stringify(value)}`);
}

async function timed(call: () => Promise<void>, metered = true): Promise<number | undefined> {
  const started = performance.now();
  try {
    await call();
    if (metered) successfulCalls++;
    return performance.now() - started;
  } catch (error) {
    failures.push((error as Error).message);
    return undefined;
  }
}

async function execute(client: McpTestClient): Promise<void> {
  const response = await client.callTool('execute', { code: EXECUTE_CODE, language: 'python' });
  if (response.isError) throw new Error(`execute failed: ${JSON.stringify(parseResult(response))}`);
  checkHello(parseResult(response), 'execute');
}

async function toolCall(client: McpTestClient): Promise<void> {
  const response = await client.callTool('utils__hello', { name: 'bench' });
  if (response.isError) throw new Error(`utils__hello failed: ${JSON.stringify(parseResult(response))}`);
  checkHello(parseResult(response), 'utils__hello');
}

async function envStatus(client: McpTestClient): Promise<void> {
  const response = await client.callTool('_env_status', {});
  if (response.isError || parseResult(response)?.ready !== true) throw new Error(`_env_status failed: ${JSON.stringify(parseResult(response))}`);
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
// Every database round trip: PGlite is one connection behind a mutex, and runs on this thread.
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

/** CPU of this process (server and clients) and of reaped children (sandboxes), in ms. */
function cpuNow(): { self: number; children: number } {
  const usage = process.cpuUsage();
  // /proc/self/stat fields 16 and 17: cutime and cstime in clock ticks (USER_HZ = 100 on Linux).
  const fields = readFileSync('/proc/self/stat', 'utf8').split(') ')[1]!.split(' ');
  return { self: (usage.user + usage.system) / 1000, children: (Number(fields[13]) + Number(fields[14])) * 10 };
}

// ---------------------------------------------------------------------------------------------
// Throughput clients live in a child process of their own, so that their SDK work does not share
// (and inflate) the server's event loop, as with real remote clients. Protocol on stdio: the child
// connects its clients and prints `ready`; on `go` it calls execute back to back for the given
// seconds, then prints one JSON line of results. The key travels in the environment, not argv.

interface LoadResult {
  latencies: number[];
  errors: number;
  firstError?: string;
  cpuMs: number;
  elapsedMs: number;
}

async function loadClientMain(url: string): Promise<never> {
  const key = process.env.MCPWORKS_BENCH_KEY ?? '';
  const loadClients = await Promise.all(Array.from({ length: clients }, () => connect(url, key)));
  process.stdout.write('ready\n');
  await new Promise<void>((resolve) => process.stdin.once('data', () => resolve()));
  const latencies: number[] = [];
  let errors = 0;
  let firstError: string | undefined;
  const cpuBefore = process.cpuUsage();
  const started = performance.now();
  const deadline = started + seconds * 1000;
  await Promise.all(
    loadClients.map(async (client) => {
      while (performance.now() < deadline) {
        const callStarted = performance.now();
        try {
          await execute(client);
          latencies.push(performance.now() - callStarted);
        } catch (error) {
          errors++;
          firstError ??= (error as Error).message;
        }
      }
    }),
  );
  const elapsedMs = performance.now() - started;
  const cpu = process.cpuUsage(cpuBefore);
  const result: LoadResult = { latencies, errors, cpuMs: (cpu.user + cpu.system) / 1000, elapsedMs, ...(firstError ? { firstError } : {}) };
  process.stdout.write(`${JSON.stringify(result)}\n`);
  await Promise.all(loadClients.map((client) => client.close()));
  process.exit(0);
}

/** Starts the client process and resolves once its clients are connected; `go()` runs the load. */
async function loadClientProcess(url: string, key: string): Promise<{ go(): Promise<LoadResult> }> {
  const child = spawn(process.execPath, [...process.execArgv, process.argv[1]!, '--load-clients', url, '--clients', String(clients), '--seconds', String(seconds)], {
    env: { ...process.env, MCPWORKS_BENCH_KEY: key },
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const lines: string[] = [];
  let buffered = '';
  let waiting: (() => void) | undefined;
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    buffered += chunk;
    for (let newline = buffered.indexOf('\n'); newline >= 0; newline = buffered.indexOf('\n')) {
      lines.push(buffered.slice(0, newline));
      buffered = buffered.slice(newline + 1);
    }
    waiting?.();
  });
  const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
  const nextLine = async (): Promise<string> => {
    while (lines.length === 0) {
      const more = new Promise<void>((resolve) => (waiting = resolve));
      const code = await Promise.race([more.then(() => undefined), exited]);
      if (code !== undefined && lines.length === 0) throw new Error(`load client process exited (${code}) early`);
    }
    return lines.shift()!;
  };
  if ((await nextLine()) !== 'ready') throw new Error('load client process did not get ready');
  return {
    async go() {
      child.stdin.end('go\n');
      const result = JSON.parse(await nextLine()) as LoadResult;
      await exited;
      return result;
    },
  };
}

if (values['load-clients']) await loadClientMain(values['load-clients']);

// ---------------------------------------------------------------------------------------------
// Setup

const server = await startTestServer({
  tiers: applyTierOverrides('{"pro_trial":{"monthly_executions":-1,"executions_per_minute":-1,"concurrency":-1}}'),
});
let exitCode = 0;
try {
  const account = await createAccount(server.url);
  const ns = 'bench';
  const create = await connect(`${server.url}/mcp/create/${ns}`, account.key);
  for (const [tool, args] of [
    ['make_namespace', { name: ns }],
    ['make_service', { name: 'utils' }],
    ['make_function', { service: 'utils', name: 'hello', template: 'hello-world' }],
  ] as const) {
    const response = await create.callTool(tool, args);
    if (response.isError) throw new Error(`${tool} failed: ${JSON.stringify(parseResult(response))}`);
  }
  await create.close();

  const codeClient = await connect(`${server.url}/mcp/run/${ns}`, account.key);
  const legacyClient = await connect(`${server.url}/mcp/run/${ns}`, account.key, 'v1');
  const toolClient = await connect(`${server.url}/mcp/run/${ns}?mode=tools`, account.key);

  // The series, measured round-robin (one sample of each per round) so that drift in machine
  // load touches them all alike. `metered: false` calls do not count towards /api/usage.
  const series: Array<{ label: string; call: () => Promise<void>; metered: boolean; samples: number[] }> = [
    { label: 'execute (Python → hello), code mode', call: () => execute(codeClient), metered: true, samples: [] },
    { label: 'execute, v1 SDK (2025 protocol, session)', call: () => execute(legacyClient), metered: true, samples: [] },
    { label: 'utils__hello (Python), tool mode', call: () => toolCall(toolClient), metered: true, samples: [] },
    { label: '_env_status (no sandbox, not metered)', call: () => envStatus(toolClient), metered: false, samples: [] },
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
  const load = await loadClientProcess(`${server.url}/mcp/run/${ns}`, account.key);
  const cpuBefore = cpuNow();
  const loadResult = await load.go();
  const cpuAfter = cpuNow();
  const loadLatencies = loadResult.latencies;
  const loadElapsed = loadResult.elapsedMs;
  const loadErrors = loadResult.errors;
  successfulCalls += loadLatencies.length;

  const usageResponse = await fetch(`${server.url}/api/usage`, { headers: { authorization: `Bearer ${account.key}` } });
  const usage = (await usageResponse.json()) as { executions?: number };
  const countedCalls = successfulCalls;
  const quotaExact = usageResponse.ok && usage.executions === countedCalls;

  // Profile: sequential executes with the spans switched on (after the usage check, so these
  // calls are not part of it).
  const profileRuns = 10;
  const profileClient = await connect(`${server.url}/mcp/run/${ns}`, account.key);
  await timed(() => execute(profileClient));
  profiling = true;
  const profileCpuBefore = cpuNow();
  const profileWall: number[] = [];
  for (let i = 0; i < profileRuns; i++) {
    sqlOfCall = [];
    push(profileWall, await timed(() => execute(profileClient)));
  }
  profiling = false;
  const profileCpuAfter = cpuNow();
  await profileClient.close();

  // -------------------------------------------------------------------------------------------
  const ms = (value: number | undefined) => (value === undefined || Number.isNaN(value) ? '—' : `${value.toFixed(1)} ms`);
  const pythonBare = median(baselines.python);
  const ratio = (value: number) => `${(value / pythonBare).toFixed(2)}×`;
  const rows: Array<[string, string, string, string, string]> = [
    ['series', 'n', 'median', 'p99', 'ratio to bare python3'],
    ['bare /usr/bin/python3 -c pass', String(baselines.python.length), ms(pythonBare), ms(p99(baselines.python)), ratio(pythonBare)],
    ['bare node -e 0', String(baselines.node.length), ms(median(baselines.node)), ms(p99(baselines.node)), ratio(median(baselines.node))],
  ];
  for (const s of series) if (s.samples.length > 0) rows.push([s.label, String(s.samples.length), ms(median(s.samples)), ms(p99(s.samples)), ratio(median(s.samples))]);
  if (loadLatencies.length > 0) rows.push([`execute under ${clients} concurrent clients`, String(loadLatencies.length), ms(median(loadLatencies)), ms(p99(loadLatencies)), ratio(median(loadLatencies))]);
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => row[column]!.length)));
  const line = (row: string[]) => row.map((cell, column) => (column === 0 ? cell.padEnd(widths[column]!) : cell.padStart(widths[column]!))).join('  ');

  console.log(`run bench: MCP Streamable HTTP, one server in-process (${server.databaseUrl ? 'PostgreSQL' : 'embedded PGlite'}), ${runs} calls per series, round-robin, after warm-up (${new Date().toISOString()})`);
  console.log(line(rows[0]!));
  console.log(widths.map((width) => '-'.repeat(width)).join('  '));
  for (const row of rows.slice(1)) console.log(line(row));
  console.log('p99 is nearest-rank: with fewer than 100 samples it is the slowest one.');
  console.log('');
  console.log(`throughput: ${clients} concurrent clients (separate process), ${(loadElapsed / 1000).toFixed(1)} s: ${loadLatencies.length} executions = ${((loadLatencies.length * 1000) / loadElapsed).toFixed(1)} executions/s, errors: ${loadErrors}`);
  console.log(`quota count exact: ${quotaExact ? 'yes' : 'no'} (GET /api/usage executions = ${usage.executions ?? `HTTP ${usageResponse.status}`}, successful calls until then = ${countedCalls})`);
  const errorCount = failures.length + loadErrors;
  if (errorCount > 0) {
    console.log(`errors: ${errorCount}; first: ${failures[0] ?? loadResult.firstError}`);
    exitCode = 1;
  }
  const perExecution = (value: number) => (loadLatencies.length > 0 ? value / loadLatencies.length : 0);
  const serverCpu = cpuAfter.self - cpuBefore.self;
  const sandboxCpu = cpuAfter.children - cpuBefore.children;
  console.log(
    `cpu per execution under load: server process ${perExecution(serverCpu).toFixed(1)} ms (HTTP, MCP, ${server.databaseUrl ? 'pg client' : 'PGlite'}, spawning), sandboxes ${perExecution(sandboxCpu).toFixed(1)} ms, ` +
      `client process ${perExecution(loadResult.cpuMs).toFixed(1)} ms (bare python3 -c pass: ${barePythonCpu.toFixed(1)} ms); busy: server ${((serverCpu / loadElapsed) * 100).toFixed(0)}%, ` +
      `sandboxes ${((sandboxCpu / loadElapsed) * 100).toFixed(0)}%, clients ${((loadResult.cpuMs / loadElapsed) * 100).toFixed(0)}% of one core (${availableParallelism()} cores)`,
  );
  console.log('');
  const wallMean = profileWall.reduce((a, b) => a + b, 0) / Math.max(1, profileWall.length);
  console.log(`where time goes: ${profileWall.length} sequential executes, mean per call (client wall ${ms(wallMean)}, median ${ms(median(profileWall))})`);
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
    [server.databaseUrl ? 'database statements (PostgreSQL round trips)' : 'database statements (PGlite: on the event loop)', per('db'), times('db')],
    ...(server.databaseUrl ? [] : [['waiting for the PGlite connection mutex', per('db wait'), times('db wait')] as [string, number, string]]),
    ['CPU: this process (server and the one client)', (profileCpuAfter.self - profileCpuBefore.self) / Math.max(1, profileWall.length), ''],
    ['CPU: sandbox processes (helper, bwrap, python3)', (profileCpuAfter.children - profileCpuBefore.children) / Math.max(1, profileWall.length), ''],
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
