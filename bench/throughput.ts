/**
 * Executions per second under concurrent clients over MCP Streamable HTTP (issue 6, "Measure").
 *
 *   bench/throughput [--clients C] [--seconds S] [--warmup W]   (defaults: 15 clients, 20 s, 30 calls)
 *
 * Starts the real server in-process (embedded PGlite, or PostgreSQL when MCPWORKS_TEST_DATABASE_URL
 * is set; the trial tier's execution limits lifted, so nothing is throttled), makes a namespace
 * through /mcp/create with `utils.hello` (Python, the hello-world template), warms up with W
 * sequential calls, then has C clients (each its own official-SDK client and session, all in a
 * separate client process so their SDK work does not load the server's event loop) call
 * `utils__hello` in tool mode back to back for S seconds. Prints executions/s beside the issue's
 * target (≥ 150/s on 2 cores), errors (target: none), latency under load, CPU per execution
 * (server process, sandboxes, client process), and whether GET /api/usage `executions` equals the
 * successful calls exactly. The sandbox configuration comes from the environment (e.g.
 * MCPWORKS_SANDBOX_POOL, when the server has it), echoed in the header. Targets are information,
 * never the exit code: exits non-zero only if the bench cannot run.
 */
import { parseArgs } from 'node:util';
import { availableParallelism, cpus } from 'node:os';
import { connect } from '../src/test-support/harness.js';
import { startLoadClients } from './lib/load.js';
import { cpuNow, median, ms, p99, printTable } from './lib/measure.js';
import { call, makeNamespace, startBenchServer, usageExecutions, watchSandboxPool, type CallSpec } from './lib/server.js';

const { values } = parseArgs({
  options: {
    clients: { type: 'string', default: '15' },
    seconds: { type: 'string', default: '20' },
    warmup: { type: 'string', default: '30' },
  },
});
const clients = Number(values.clients);
const seconds = Number(values.seconds);
const warmup = Number(values.warmup);
if (!Number.isInteger(clients) || clients < 1) throw new Error('--clients must be a positive integer');
if (!Number.isFinite(seconds) || seconds <= 0) throw new Error('--seconds must be a positive number');
if (!Number.isInteger(warmup) || warmup < 0) throw new Error('--warmup must be a non-negative integer');

const TARGET_PER_SECOND = 150;
const HELLO: CallSpec = { tool: 'utils__hello', args: { name: 'bench' }, expect: { greeting: 'Hello, bench!' } };

const sandboxStats = watchSandboxPool();
const server = await startBenchServer();
let exitCode = 0;
try {
  const ns = 'bench';
  const account = await makeNamespace(server, ns, 'utils', [{ name: 'hello', template: 'hello-world' }]);
  const url = `${server.url}/mcp/run/${ns}?mode=tools`;

  // Warm-up: page cache, the namespace snapshot, JIT, pooled connections. These calls are metered
  // too, so they count towards the usage check.
  let successfulCalls = 0;
  const warmClient = await connect(url, account.key);
  for (let i = 0; i < warmup; i++) {
    await call(warmClient, HELLO);
    successfulCalls++;
  }
  await warmClient.close();

  const load = await startLoadClients({ url, key: account.key, clients, seconds, call: HELLO });
  const poolBefore = sandboxStats.pool();
  const zygotesBefore = sandboxStats.zygotes();
  const cpuBefore = cpuNow();
  const result = await load.go();
  const cpuAfter = cpuNow();
  const poolAfter = sandboxStats.pool();
  const zygotesAfter = sandboxStats.zygotes();
  successfulCalls += result.latencies.length;
  const usage = await usageExecutions(server, account.key);
  const quotaExact = usage.ok && usage.executions === successfulCalls;

  const executions = result.latencies.length;
  const perSecond = (executions * 1000) / result.elapsedMs;
  const perExecution = (value: number) => (executions > 0 ? value / executions : Number.NaN);
  const busy = (value: number) => `${((value / result.elapsedMs) * 100).toFixed(0)}% of a core`;
  const serverCpu = cpuAfter.self - cpuBefore.self;
  const sandboxCpu = cpuAfter.children - cpuBefore.children;

  const sandboxEnv = Object.entries(process.env)
    .filter(([name]) => /^MCPWORKS_(SANDBOX|ZYGOTE)/.test(name))
    .map(([name, value]) => `${name}=${value}`);
  console.log(
    `throughput bench: utils__hello (Python, tool mode) over MCP Streamable HTTP, one server in-process (${server.databaseUrl ? 'PostgreSQL' : 'embedded PGlite'}); ` +
      `${clients} concurrent clients in a separate process for ${(result.elapsedMs / 1000).toFixed(1)} s after ${warmup} warm-up calls; ` +
      `${availableParallelism()} cores (${cpus()[0]?.model.trim() ?? 'unknown CPU'}); sandbox env: ${sandboxEnv.length > 0 ? sandboxEnv.join(' ') : 'defaults'}; ${new Date().toISOString()}`,
  );
  printTable(
    [
      ['measure', 'value', 'target', 'met'],
      ['executions/s', perSecond.toFixed(1), `≥ ${TARGET_PER_SECOND}/s on 2 cores`, perSecond >= TARGET_PER_SECOND ? 'met' : 'not met'],
      ['executions under load', String(executions), '', ''],
      ['errors', String(result.errors), '0', result.errors === 0 ? 'met' : 'not met'],
      ['successful calls (warm-up + load)', String(successfulCalls), '', ''],
      ['GET /api/usage executions', String(usage.executions ?? `HTTP ${usage.status}`), '= successful calls', ''],
      ['quota count exact', quotaExact ? 'yes' : 'no', 'yes', quotaExact ? 'met' : 'not met'],
      ...(poolAfter === null
        ? [['sandboxes pre-started (pool)', 'pool off', '', '']]
        : poolAfter && poolBefore
          ? [['sandboxes pre-started (pool)', `${poolAfter.hits - poolBefore.hits} of ${poolAfter.claims - poolBefore.claims}`, '', '']]
          : []),
      ...(zygotesAfter === null
        ? [['runs in zygote children', 'zygote off', '', '']]
        : zygotesAfter && zygotesBefore
          ? [['runs in zygote children', `${zygotesAfter.runs - zygotesBefore.runs} of ${executions}`, '', '']]
          : []),
      ['latency under load, median', ms(median(result.latencies)), '', ''],
      ['latency under load, p99', ms(p99(result.latencies)), '', ''],
      ['CPU per execution: server process', `${ms(perExecution(serverCpu))} (${busy(serverCpu)})`, '', ''],
      ['CPU per execution: sandboxes', `${ms(perExecution(sandboxCpu))} (${busy(sandboxCpu)})`, '', ''],
      ['CPU per execution: client process', `${ms(perExecution(result.cpuMs))} (${busy(result.cpuMs)})`, '', ''],
    ],
    new Set([0, 2, 3]),
  );
  console.log('targets (issue 6) are information, not the exit code.');
  if (result.errors > 0) console.log(`first error: ${result.firstError}`);
} catch (error) {
  console.error(`bench failed: ${(error as Error).stack ?? error}`);
  exitCode = 1;
} finally {
  await server.stop();
}
process.exit(exitCode);
