/**
 * One node against three on one PostgreSQL, in one run (issue 19): executions/s and latency with
 * 15 clients through the round-robin proxy and straight to the nodes (the proxy's cost), the
 * database round trips each metered call costs, and the CPU of every process, PostgreSQL's apart.
 *
 *   bench/cluster [--clients C] [--seconds S] [--warmup W] [--idle I] [--quick]
 *   (defaults: 15 clients, 20 s a phase, 10 warm-up calls per node, 5 s idle; --quick: 5 s a phase, 3 warm-up calls, 3 s idle)
 *
 * Starts PostgreSQL from Debian's package (scripts/postgres-test.sh, with pg_stat_statements
 * loaded), then `mcpworks cluster --nodes 1` on it (the launcher: its nodes as separate `serve`
 * processes, its round-robin proxy in its own process), measures, stops it, and does the same with
 * `--nodes 3` on the same database. The trial tier's execution limits are lifted (every call is
 * still metered: admitted, counted in its month, settled). Per configuration: the cluster idle for
 * I seconds (what the nodes' background loops cost PostgreSQL), then four phases of S seconds with
 * C clients (each its own official-SDK client) in a client process of its own calling the Python
 * hello function back to back: through the proxy and straight to the nodes (client i to node
 * i mod N), each in both protocol eras (2025: the v1 SDK client with sessions, which the proxy
 * moves between nodes on every request; 2026: the v2 client, stateless).
 *
 * Round trips: pg_stat_statements `calls` summed over the nodes' database (top-level statements:
 * each a round trip from a node; BEGIN and COMMIT count as their own), its delta over a phase
 * divided by the phase's calls. The bench reads it from a database of its own, so its reads are
 * not counted. It includes the nodes' background loops (leases, schedules, session holds) over the
 * phase; the idle rate says how much of it that is.
 *
 * CPU (utime + stime from /proc, reaped children included, bench/lib/tree.ts): the nodes (each
 * `serve` process and everything under it: sandboxes, spawner, zygotes), the proxy (the launcher
 * process), PostgreSQL (the postmaster and its backends), the client process, the whole machine.
 * Afterwards GET /api/usage `executions` must equal the successful calls of both configurations.
 * Exits non-zero only if the bench cannot run.
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { freePort } from '../src/cli/cluster-command.js';
import { cliCommand } from '../src/test-support/cli-command.js';
import { connect, type ClientEra } from '../src/test-support/harness.js';
import { startLoadClients, type LoadResult } from './lib/load.js';
import { machineBusyMs, watchMachineLoad } from './lib/machine.js';
import { median, ms, p99, printTable } from './lib/measure.js';
import { call, makeNamespace, usageExecutions, type CallSpec } from './lib/server.js';
import { treeCpu } from './lib/tree.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const POSTGRES_SCRIPT = path.join(REPO, 'scripts', 'postgres-test.sh');

const { values } = parseArgs({
  options: {
    clients: { type: 'string', default: '15' },
    seconds: { type: 'string' },
    warmup: { type: 'string' },
    idle: { type: 'string' },
    quick: { type: 'boolean', default: false },
  },
});
const clients = Number(values.clients);
const seconds = Number(values.seconds ?? (values.quick ? 5 : 20));
const warmup = Number(values.warmup ?? (values.quick ? 3 : 10));
const idleSeconds = Number(values.idle ?? (values.quick ? 3 : 5));
if (!Number.isInteger(clients) || clients < 1) throw new Error('--clients must be a positive integer');
if (!Number.isFinite(seconds) || seconds <= 0) throw new Error('--seconds must be a positive number');
if (!Number.isInteger(warmup) || warmup < 0) throw new Error('--warmup must be a non-negative integer');
if (!Number.isFinite(idleSeconds) || idleSeconds <= 0) throw new Error('--idle must be a positive number');

const HELLO: CallSpec = { tool: 'utils__hello', args: { name: 'bench' }, expect: { greeting: 'Hello, bench!' } };
const NS = 'bench';
const SECRET_KEY = randomBytes(32).toString('hex');
/** The database the nodes use (scripts/postgres-test.sh's URL) and the bench's own, where it reads the counters from. */
const MONITOR_DB = 'bench_monitor';

interface Cluster {
  nodes: number;
  launcher: ChildProcess;
  proxyUrl: string;
  nodeUrls: string[];
  nodePids: number[];
  exited: Promise<void>;
  output: () => string;
}

interface Sample {
  at: number;
  nodesMs: number;
  /** The `serve` processes' own CPU, their sandboxes' left out. */
  serveMs: number;
  proxyMs: number;
  postgresMs: number;
  machineMs: number;
  statements: number;
}

interface Phase {
  nodes: number;
  path: 'proxy' | 'direct';
  era: ClientEra;
  result: LoadResult;
  nodesMs: number;
  /** The `serve` processes' own CPU, their sandboxes' left out. */
  serveMs: number;
  proxyMs: number;
  postgresMs: number;
  machineMs: number;
  statements: number;
  top: Array<{ query: string; calls: number }>;
}

interface Idle {
  nodes: number;
  elapsedMs: number;
  statements: number;
  postgresMs: number;
  nodesMs: number;
}

function run(file: string, args: string[], env: NodeJS.ProcessEnv): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { env, encoding: 'utf8' }, (error, stdout, stderr) => {
      if (error) reject(new Error(`${args.join(' ')}: ${stderr.trim() || error.message}`));
      else resolve(stdout);
    });
  });
}

/** PostgreSQL from Debian's package with pg_stat_statements loaded; its URL, dir and postmaster pid. */
async function startPostgres(): Promise<{ url: string; dir: string; postmaster: number }> {
  const exports = await run('bash', [POSTGRES_SCRIPT, 'start'], {
    ...process.env,
    MCPWORKS_TEST_PG_OWNER: String(process.pid),
    MCPWORKS_TEST_PG_SETTINGS: '-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.max=1000',
  });
  const value = (name: string) => new RegExp(`${name}='([^']*)'`).exec(exports)?.[1];
  const url = value('MCPWORKS_TEST_DATABASE_URL');
  const dir = value('MCPWORKS_TEST_PG_DIR');
  if (!url || !dir) throw new Error('scripts/postgres-test.sh start printed no database URL');
  const postmaster = Number(readFileSync(path.join(dir, 'data', 'postmaster.pid'), 'utf8').split('\n', 1)[0]);
  return { url, dir, postmaster };
}

/** `mcpworks cluster --nodes N` on the bench's database; resolves once it printed its proxy's URL. */
async function startCluster(nodes: number, databaseUrl: string): Promise<Cluster> {
  // The build when current, else the source; V8's full optimisation, as in production (the tests' --liftoff-only is theirs).
  const cli = cliCommand().filter((arg) => arg !== '--liftoff-only');
  const launcher = spawn(
    process.execPath,
    [...cli, 'cluster', '--nodes', String(nodes), '--port', String(await freePort()), '--database-url', databaseUrl],
    {
      cwd: REPO,
      env: {
        ...process.env,
        LOG_LEVEL: 'warn',
        // One secret for both clusters: the API key made on the first must verify on the second.
        MCPWORKS_SECRET_KEY: SECRET_KEY,
        // Every call metered, none refused: the limits lifted, as bench/throughput does.
        MCPWORKS_TIERS: JSON.stringify({ pro_trial: { monthly_executions: -1, executions_per_minute: -1, concurrency: -1 } }),
        // All load clients come from one address (the proxy names it), where users each have their own.
        MCPWORKS_REQUESTS_PER_SECOND_PER_IP: '1000000',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let stdout = '';
  let tail = '';
  launcher.stderr!.setEncoding('utf8').on('data', (chunk: string) => (tail = (tail + chunk).slice(-6000)));
  const exited = new Promise<void>((resolve) => launcher.once('exit', () => resolve()));
  const ready = new Promise<void>((resolve, reject) => {
    launcher.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk;
      if (/mcpworks cluster: proxy \S+/.test(stdout)) resolve();
    });
    void exited.then(() => reject(new Error(`mcpworks cluster exited at start:\n${stdout}\n${tail}`)));
  });
  await ready;
  const nodeLines = [...stdout.matchAll(/mcpworks cluster: node \d+ (\S+) \(pid (\d+)/g)];
  return {
    nodes,
    launcher,
    proxyUrl: /mcpworks cluster: proxy (\S+)/.exec(stdout)![1]!,
    nodeUrls: nodeLines.map((m) => m[1]!),
    nodePids: nodeLines.map((m) => Number(m[2])),
    exited,
    output: () => tail,
  };
}

async function stopCluster(cluster: Cluster): Promise<void> {
  if (cluster.launcher.exitCode === null) cluster.launcher.kill('SIGTERM');
  await cluster.exited;
}

const database = await startPostgres();
const loadWatch = await watchMachineLoad([database.postmaster]);
const admin = new pg.Client({ connectionString: database.url });
await admin.connect();
await admin.query(`CREATE DATABASE ${MONITOR_DB}`);
await admin.end();
const monitorUrl = new URL(database.url);
monitorUrl.pathname = `/${MONITOR_DB}`;
const monitor = new pg.Client({ connectionString: monitorUrl.toString() });
await monitor.connect();
await monitor.query('CREATE EXTENSION pg_stat_statements');
const nodesDb = new URL(database.url).pathname.slice(1);

/** Top-level statements the nodes sent so far, by statement. */
async function statements(): Promise<Map<string, number>> {
  const { rows } = await monitor.query<{ query: string; calls: string }>(
    `SELECT s.query, sum(s.calls)::text AS calls FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
      WHERE d.datname = $1 GROUP BY s.query`,
    [nodesDb],
  );
  return new Map(rows.map((row) => [row.query, Number(row.calls)]));
}
const sum = (counts: Map<string, number>) => [...counts.values()].reduce((a, b) => a + b, 0);

async function sample(cluster: Cluster): Promise<Sample & { counts: Map<string, number> }> {
  const at = performance.now();
  let nodesMs = 0;
  let serveMs = 0;
  for (const pid of cluster.nodePids) {
    const tree = await treeCpu(pid);
    nodesMs += tree.totalMs;
    serveMs += tree.rootMs;
  }
  const proxyMs = (await treeCpu(cluster.launcher.pid!)).rootMs;
  const postgresMs = (await treeCpu(database.postmaster)).totalMs;
  const counts = await statements();
  return { at, nodesMs, serveMs, proxyMs, postgresMs, machineMs: machineBusyMs(), statements: sum(counts), counts };
}

const phases: Phase[] = [];
const idles: Idle[] = [];
let successfulCalls = 0;
let key = '';
let usageLine = '';
let exitCode = 0;
let cluster: Cluster | undefined;
try {
  for (const nodes of [1, 3]) {
    cluster = await startCluster(nodes, database.url);
    // Through the proxy, as a user would; the account lives in the database the next cluster shares.
    key ||= (await makeNamespace({ url: cluster.proxyUrl }, NS, 'utils', [{ name: 'hello', template: 'hello-world' }])).key;
    // Each node's snapshot, pool and JIT warm; these calls are metered too.
    for (const url of cluster.nodeUrls) {
      const client = await connect(`${url}/mcp/run/${NS}?mode=tools`, key, 'v2');
      for (let i = 0; i < warmup; i++) {
        await call(client, HELLO);
        successfulCalls++;
      }
      await client.close();
    }
    const idleStart = await sample(cluster);
    await new Promise((resolve) => setTimeout(resolve, idleSeconds * 1000));
    const idleEnd = await sample(cluster);
    idles.push({
      nodes,
      elapsedMs: idleEnd.at - idleStart.at,
      statements: idleEnd.statements - idleStart.statements,
      postgresMs: idleEnd.postgresMs - idleStart.postgresMs,
      nodesMs: idleEnd.nodesMs - idleStart.nodesMs,
    });
    for (const via of ['proxy', 'direct'] as const) {
      for (const era of ['v1', 'v2'] as const) {
        const urls = via === 'proxy' ? [cluster.proxyUrl] : cluster.nodeUrls;
        const load = await startLoadClients({
          url: urls.map((u) => `${u}/mcp/run/${NS}?mode=tools`),
          key,
          era,
          clients,
          seconds,
          call: HELLO,
        });
        const before = await sample(cluster);
        const result = await load.go();
        const after = await sample(cluster);
        await load.exited();
        successfulCalls += result.latencies.length;
        const top = [...after.counts]
          .map(([query, calls]) => ({ query, calls: calls - (before.counts.get(query) ?? 0) }))
          .filter((entry) => entry.calls > 0)
          .sort((a, b) => b.calls - a.calls)
          .slice(0, 8);
        phases.push({
          nodes,
          path: via,
          era,
          result,
          nodesMs: after.nodesMs - before.nodesMs,
          serveMs: after.serveMs - before.serveMs,
          proxyMs: after.proxyMs - before.proxyMs,
          postgresMs: after.postgresMs - before.postgresMs,
          machineMs: after.machineMs - before.machineMs,
          statements: after.statements - before.statements,
          top,
        });
      }
    }
    if (nodes === 3) {
      // Every call of both configurations, counted once whichever node admitted it.
      const usage = await usageExecutions({ url: cluster.proxyUrl }, key);
      const exact = usage.ok && usage.executions === successfulCalls;
      usageLine = `quota: ${successfulCalls} successful calls (warm-up and every phase, both configurations), GET /api/usage executions ${usage.executions ?? `HTTP ${usage.status}`}: ${exact ? 'exact' : 'NOT exact'}`;
    }
    await stopCluster(cluster);
    cluster = undefined;
  }
} catch (error) {
  console.error(`bench failed: ${(error as Error).stack ?? error}`);
  if (cluster) {
    console.error(cluster.output());
    await stopCluster(cluster);
  }
  exitCode = 1;
}

if (phases.length > 0) {
  const calls = (phase: Phase) => phase.result.latencies.length;
  const perCall = (phase: Phase, value: number) => (calls(phase) > 0 ? value / calls(phase) : Number.NaN);
  const perSecond = (phase: Phase) => (calls(phase) * 1000) / phase.result.elapsedMs;
  const cores = (phase: Phase, value: number) => (value / phase.result.elapsedMs).toFixed(2);
  const cpu = (phase: Phase, value: number) => `${ms(perCall(phase, value))} (${cores(phase, value)})`;
  const eraName = (era: ClientEra) => (era === 'v1' ? '2025' : '2026');
  console.log(
    `cluster bench: the Python hello function (utils__hello, tool mode) over MCP Streamable HTTP on \`mcpworks cluster\` (1 node, then 3, one PostgreSQL ${readFileSync(path.join(database.dir, 'bindir'), 'utf8').trim().split('/').at(-2)} from Debian's package, fsync=off); ` +
      `${clients} concurrent clients in a client process of their own, ${seconds} s a phase; 2025 = v1 SDK client with sessions (as Claude Code), 2026 = v2 SDK client, stateless; ${new Date().toISOString()}`,
  );
  // What the nodes' background loops (leases, schedules, replica placement, session holds) send
  // over a phase, at the rate measured idle: it is there whether or not calls are served.
  const background = (phase: Phase, what: 'statements' | 'postgresMs') => {
    const idle = idles.find((entry) => entry.nodes === phase.nodes);
    return idle ? (idle[what] * phase.result.elapsedMs) / idle.elapsedMs : 0;
  };
  printTable(
    [
      [
        'nodes',
        'path',
        'protocol',
        'executions/s',
        'errors',
        'p50',
        'p99',
        'CPU/call: nodes',
        'proxy',
        'PostgreSQL',
        'client',
        'machine',
        'DB round trips/call',
        'less idle loops',
      ],
      ...phases.map((phase) => [
        String(phase.nodes),
        phase.path,
        eraName(phase.era),
        perSecond(phase).toFixed(1),
        String(phase.result.errors),
        ms(median(phase.result.latencies)),
        ms(p99(phase.result.latencies)),
        cpu(phase, phase.nodesMs),
        phase.path === 'proxy' ? cpu(phase, phase.proxyMs) : '—',
        cpu(phase, phase.postgresMs),
        cpu(phase, phase.result.cpuMs),
        cpu(phase, phase.machineMs),
        perCall(phase, phase.statements).toFixed(2),
        perCall(phase, phase.statements - background(phase, 'statements')).toFixed(2),
      ]),
    ],
    new Set([0, 1, 2]),
  );
  console.log(
    "CPU/call: ms per successful call (cores used on average over the phase). DB round trips: the nodes' top-level statements (pg_stat_statements) per call; " +
      'less idle loops: less what the background loops send at their idle rate.',
  );
  for (const idle of idles) {
    const perSecondValue = (value: number) => ((value * 1000) / idle.elapsedMs).toFixed(1);
    console.log(
      `idle, ${idle.nodes} node${idle.nodes > 1 ? 's' : ''}: ${perSecondValue(idle.statements)} statements/s from the nodes' background loops, ` +
        `PostgreSQL ${perSecondValue(idle.postgresMs)} ms CPU/s, the nodes ${perSecondValue(idle.nodesMs)} ms CPU/s`,
    );
  }
  const find = (nodes: number, via: string, era: ClientEra) => phases.find((p) => p.nodes === nodes && p.path === via && p.era === era);
  for (const era of ['v1', 'v2'] as const) {
    const one = find(1, 'proxy', era);
    const three = find(3, 'proxy', era);
    const direct = find(3, 'direct', era);
    if (one && three)
      console.log(
        `${eraName(era)} protocol: 3 nodes ÷ 1 node through the proxy ${(perSecond(three) / perSecond(one)).toFixed(2)}×` +
          (direct
            ? `; 3 nodes, proxy ÷ direct ${(perSecond(three) / perSecond(direct)).toFixed(2)}× (p50 ${ms(median(three.result.latencies))} vs ${ms(median(direct.result.latencies))})`
            : ''),
      );
  }
  console.log(
    'On 2 cores this is a correctness demo, not a speed-up: three nodes, their sandboxes, the proxy, PostgreSQL and the clients share the same two cores, ' +
      'so a second and third node add CPU contention, not capacity (a ratio above 1× on a machine shared with other work means the bench took a larger share of it: ' +
      "see the nodes' cores). What it shows: sessions moved between nodes on every request, no errors, every call counted once.",
  );
  // Capacity: what one PostgreSQL core and one node core each serve, from the CPU per call of the 3-node phases.
  const threeNode = phases.filter((p) => p.nodes === 3 && calls(p) > 0);
  const totals = threeNode.reduce(
    (acc, p) => ({
      calls: acc.calls + calls(p),
      pg: acc.pg + p.postgresMs - background(p, 'postgresMs'),
      nodes: acc.nodes + p.nodesMs,
      serve: acc.serve + p.serveMs,
      statements: acc.statements + p.statements - background(p, 'statements'),
    }),
    { calls: 0, pg: 0, nodes: 0, serve: 0, statements: 0 },
  );
  if (totals.calls > 0) {
    const pgPerCall = totals.pg / totals.calls;
    const nodePerCall = totals.nodes / totals.calls;
    console.log(
      `capacity (3-node phases together, the idle loops' share taken out): PostgreSQL ${pgPerCall.toFixed(2)} ms CPU and ${(totals.statements / totals.calls).toFixed(2)} round trips per call → ~${Math.round(1000 / pgPerCall)} calls/s per PostgreSQL core; ` +
        `the nodes ${nodePerCall.toFixed(2)} ms CPU per call (the serve processes ${(totals.serve / totals.calls).toFixed(2)} ms of it, the sandboxes' processes the rest) → ~${Math.round(1000 / nodePerCall)} calls/s per node core; ` +
        `one PostgreSQL core keeps up with ~${(nodePerCall / pgPerCall).toFixed(1)} node cores before PostgreSQL becomes the limit.`,
    );
  }
  const sample3 = find(3, 'proxy', 'v2') ?? phases.at(-1)!;
  console.log(
    `statements per call, ${sample3.nodes} node(s), ${sample3.path}, ${eraName(sample3.era)} protocol (pg_stat_statements, top-level):`,
  );
  for (const entry of sample3.top)
    console.log(`  ${perCall(sample3, entry.calls).toFixed(2)}  ${entry.query.replace(/\s+/g, ' ').slice(0, 110)}`);
  if (usageLine) console.log(usageLine);
  for (const phase of phases)
    if (phase.result.errors > 0)
      console.log(
        `${phase.nodes} node(s), ${phase.path}, ${eraName(phase.era)}: ${phase.result.errors} errors; first: ${phase.result.firstError}`,
      );
}
const load = await loadWatch.finish();
for (const line of load.lines) console.log(line);
await monitor.end().catch(() => undefined);
await run('bash', [POSTGRES_SCRIPT, 'stop', database.dir], process.env).catch((error) => console.error(String(error)));
process.exit(exitCode);
