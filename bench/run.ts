/**
 * Run-endpoint latency and throughput over MCP Streamable HTTP (issue 5).
 *
 * Starts the real server in-process (embedded PGlite, tier limits lifted so nothing is throttled),
 * makes a namespace with `utils.hello` (the hello-world template) and measures, in one run:
 *   - bare `/usr/bin/python3 -c pass` and `node -e 0` (same spawn path), the baselines;
 *   - `execute` in code mode, Python calling one function, from one connected SDK client:
 *     median and p99 (nearest rank) over N sequential calls, and the ratio to bare Python;
 *   - the same function called in tool mode (`utils__hello`);
 *   - executions/s with C concurrent clients (each its own SDK client and session) for S seconds,
 *     then whether `GET /api/usage` counted exactly the successful calls.
 * Prints a table; no targets are asserted. Exits non-zero only if the bench cannot run, a call
 * fails, or the usage count is off.
 *
 *   bench/run [--runs N] [--clients C] [--seconds S]
 */
import { spawn } from 'node:child_process';
import { parseArgs } from 'node:util';
import { applyTierOverrides } from '../src/core/tiers.js';
import { connect, createAccount, parseResult, startTestServer, type McpTestClient } from '../src/test-support/harness.js';

process.env.TEST_LOG_LEVEL ??= 'silent';

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

async function timed(call: () => Promise<void>): Promise<number | undefined> {
  const started = performance.now();
  try {
    await call();
    successfulCalls++;
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
  const toolClient = await connect(`${server.url}/mcp/run/${ns}?mode=tools`, account.key);

  // Warm-up: page cache, the generated functions package, JIT, pooled connections.
  for (let i = 0; i < 5; i++) {
    await barePython();
    await bareNode();
    await timed(() => execute(codeClient));
    await timed(() => toolCall(toolClient));
  }
  if (failures.length > 0) throw new Error(`warm-up failed: ${failures[0]}`);

  // Sequential series; each alternates with its baseline so load drift touches both alike.
  const samples = { python: [] as number[], node: [] as number[], execute: [] as number[], tool: [] as number[] };
  const push = (into: number[], ms: number | undefined) => ms !== undefined && into.push(ms);
  for (let i = 0; i < runs; i++) {
    samples.python.push(await barePython());
    push(samples.execute, await timed(() => execute(codeClient)));
  }
  for (let i = 0; i < runs; i++) {
    samples.node.push(await bareNode());
    push(samples.tool, await timed(() => toolCall(toolClient)));
  }
  await codeClient.close();
  await toolClient.close();

  // Throughput: C clients, each its own session, calling execute back to back for S seconds.
  const loadClients = await Promise.all(Array.from({ length: clients }, () => connect(`${server.url}/mcp/run/${ns}`, account.key)));
  const failuresBefore = failures.length;
  const loadLatencies: number[] = [];
  const loadStarted = performance.now();
  const deadline = loadStarted + seconds * 1000;
  await Promise.all(
    loadClients.map(async (client) => {
      while (performance.now() < deadline) push(loadLatencies, await timed(() => execute(client)));
    }),
  );
  const loadElapsed = performance.now() - loadStarted;
  const loadErrors = failures.length - failuresBefore;
  await Promise.all(loadClients.map((client) => client.close()));

  const usageResponse = await fetch(`${server.url}/api/usage`, { headers: { authorization: `Bearer ${account.key}` } });
  const usage = (await usageResponse.json()) as { executions?: number };
  const quotaExact = usageResponse.ok && usage.executions === successfulCalls;

  // -------------------------------------------------------------------------------------------
  const ms = (value: number) => `${value.toFixed(1)} ms`;
  const pythonBare = median(samples.python);
  const rows: Array<[string, string, string, string, string]> = [
    ['series', 'n', 'median', 'p99', 'ratio to bare python3'],
    ['bare /usr/bin/python3 -c pass', String(samples.python.length), ms(pythonBare), ms(p99(samples.python)), '1.00×'],
    ['bare node -e 0', String(samples.node.length), ms(median(samples.node)), ms(p99(samples.node)), `${(median(samples.node) / pythonBare).toFixed(2)}×`],
  ];
  if (samples.execute.length > 0) rows.push(['execute (Python → hello), code mode', String(samples.execute.length), ms(median(samples.execute)), ms(p99(samples.execute)), `${(median(samples.execute) / pythonBare).toFixed(2)}×`]);
  if (samples.tool.length > 0) rows.push(['utils__hello (Python), tool mode', String(samples.tool.length), ms(median(samples.tool)), ms(p99(samples.tool)), `${(median(samples.tool) / pythonBare).toFixed(2)}×`]);
  if (loadLatencies.length > 0) rows.push([`execute under ${clients} concurrent clients`, String(loadLatencies.length), ms(median(loadLatencies)), ms(p99(loadLatencies)), `${(median(loadLatencies) / pythonBare).toFixed(2)}×`]);
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => row[column]!.length)));
  const line = (row: string[]) => row.map((cell, column) => (column === 0 ? cell.padEnd(widths[column]!) : cell.padStart(widths[column]!))).join('  ');

  console.log(`run bench: MCP Streamable HTTP, one server in-process (PGlite), ${runs} sequential calls per series after warm-up (${new Date().toISOString()})`);
  console.log(line(rows[0]!));
  console.log(widths.map((width) => '-'.repeat(width)).join('  '));
  for (const row of rows.slice(1)) console.log(line(row));
  console.log('');
  console.log(`throughput: ${clients} concurrent clients, ${(loadElapsed / 1000).toFixed(1)} s: ${loadLatencies.length} executions = ${((loadLatencies.length * 1000) / loadElapsed).toFixed(1)} executions/s, errors: ${loadErrors}`);
  console.log(`quota count exact: ${quotaExact ? 'yes' : 'no'} (GET /api/usage executions = ${usage.executions ?? `HTTP ${usageResponse.status}`}, successful calls in this run = ${successfulCalls})`);
  if (failures.length > 0) {
    console.log(`errors: ${failures.length}; first: ${failures[0]}`);
    exitCode = 1;
  }
  if (!quotaExact) exitCode = 1;
} catch (error) {
  console.error(`bench failed: ${(error as Error).stack ?? error}`);
  exitCode = 1;
} finally {
  await server.stop();
}
process.exit(exitCode);
