/**
 * End-to-end latency over MCP Streamable HTTP with the official client, beside idle baselines and
 * issue 18's peers measured in the same run.
 *
 *   bench/latency [--runs N] [--warmup W] [--quick] [--era 2026|2025] [--peers noop,spawn,pyodide|none]
 *                 [--order shuffled|fixed] [--seed N]
 *   (defaults: 200 rounds after 5 warm-up rounds, as issue 18's own measurement; --quick: 11 after 2;
 *   each round in an order of its own, shuffled from a seed that is printed, so --seed repeats a run's orders)
 *
 * In order:
 *   1. the baselines, bare `/usr/bin/python3 -c pass`, `node -e 0` and `python3 -c "import
 *      pandas"`, on their own before anything else starts (a server's pool refills and zygote
 *      starts slow them 15-30 %);
 *   2. the real server in-process (embedded PGlite, or PostgreSQL when MCPWORKS_TEST_DATABASE_URL
 *      is set; the trial tier's execution limits lifted) with namespace `bench`, service `utils`:
 *      `hello` (Python, the hello-world template), `hello_ts` (the same in TypeScript),
 *      `pandas_sum` (Python, requirements ["pandas"]); and the peers, each in a process of its own
 *      (bench/lib/peers.ts): (a) the official SDK's server with a no-op tool, (b) the same spawning
 *      `python3 -c` per call, (c) the same running the function in a warm Pyodide;
 *   3. rounds, round-robin (one sample of each series per round, so drift in machine load touches
 *      them all alike), each round's order shuffled (bench/lib/order.ts: a call pays for what the
 *      call before it left running, so no series always follows the same one; `--order fixed`:
 *      the order below, every round), every call through the official client of the chosen protocol era:
 *      `utils__hello` in tool mode, `execute` calling one Python function, `utils__hello_ts`,
 *      `utils__pandas_sum`, `_env_status` (no sandbox, not metered), and each peer's tool;
 *   4. the server and peers stopped, the baselines again.
 * Each ratio divides a series' median by the lower of the baseline's two medians (before, after);
 * both are printed, with the absolute times. Beside each median, the median of the series' first
 * FIRST_ROUNDS samples: a fresh server's JIT is still cold then (bench/call-cost warms it with 1000
 * calls), so the cold cost stays visible beside the long-running server's. Targets (issue 18) are information, never the exit
 * code: exits non-zero only if the bench cannot run or a call fails. The machine's load over the
 * run is printed last, and a run on a busy machine is marked as such.
 */
import { parseArgs } from 'node:util';
import { connect, type ClientEra, type McpTestClient } from '../src/test-support/harness.js';
import { openCgroupCpu } from './lib/cgroup-cpu.js';
import { watchMachineLoad } from './lib/machine.js';
import { measureBaselines, median, ms, p99, printTable, type Baselines } from './lib/measure.js';
import { seededRandom, shuffled } from './lib/order.js';
import { PEER_KINDS, PEER_LABEL, startPeer, type Peer, type PeerKind } from './lib/peers.js';
import { call, makeNamespace, startBenchServer, watchSandboxPool, type CallSpec } from './lib/server.js';

const { values } = parseArgs({
  options: {
    runs: { type: 'string' },
    warmup: { type: 'string' },
    quick: { type: 'boolean', default: false },
    era: { type: 'string', default: '2026' },
    peers: { type: 'string', default: PEER_KINDS.join(',') },
    order: { type: 'string', default: 'shuffled' },
    seed: { type: 'string' },
  },
});
const runs = Number(values.runs ?? (values.quick ? 11 : 200));
const warmup = Number(values.warmup ?? (values.quick ? 2 : 5));
if (!Number.isInteger(runs) || runs < 1) throw new Error('--runs must be a positive integer');
if (!Number.isInteger(warmup) || warmup < 0) throw new Error('--warmup must be a non-negative integer');
if (values.era !== '2026' && values.era !== '2025') throw new Error('--era must be 2026 or 2025');
if (values.order !== 'shuffled' && values.order !== 'fixed') throw new Error('--order must be shuffled or fixed');
const seed = values.seed === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(values.seed);
if (!Number.isInteger(seed) || seed < 0) throw new Error('--seed must be a non-negative integer');
const random = seededRandom(seed);
// 2025: the v1 SDK client, as Claude Code speaks it; 2026: the v2 SDK pinned to 2026-07-28.
const era: ClientEra = values.era === '2025' ? 'v1' : 'v2';
const peerKinds = values.peers === 'none' ? [] : (values.peers.split(',').map((kind) => kind.trim()) as PeerKind[]);
for (const kind of peerKinds)
  if (!PEER_KINDS.includes(kind)) throw new Error(`unknown peer '${kind}' (known: ${PEER_KINDS.join(', ')}, or none)`);
// `import pandas` costs ~0.4 s a sample (minutes under emulation, as in scripts/vm-test.sh): a
// quarter of the rounds, 3 to 11, is enough for a figure given for information.
const pandasRuns = Math.min(runs, 11, Math.max(3, Math.ceil(runs / 4)));
/** The rounds whose median is printed beside the whole run's: a fresh server's. */
const FIRST_ROUNDS = 20;
const firstMedian = (samples: readonly number[]) => ms(median(samples.slice(0, FIRST_ROUNDS)));

const TYPESCRIPT_HELLO =
  'export default function main(input: { name?: string }) {\n  return { greeting: `Hello, ${input.name ?? "World"}!` };\n}\n';
const PANDAS_SUM = [
  'import pandas as pd',
  '',
  '',
  'def main(input_data):',
  '    n = int(input_data.get("n", 100))',
  '    frame = pd.DataFrame({"x": range(n), "y": [2 * i for i in range(n)]})',
  '    return {"sum": int(frame["x"].sum() + frame["y"].sum())}',
  '',
].join('\n');
const GREETING = { greeting: 'Hello, bench!' };

type Baseline = 'python' | 'node';
interface Series {
  label: string;
  client: () => McpTestClient;
  spec: CallSpec;
  baseline?: Baseline;
  /** Target: median ≤ target × the baseline. */
  target?: number;
  /** Compared with a peer's median: at most `peerTarget` × (strictly less when 1). */
  peer?: { kind: PeerKind; target: number };
  samples: number[];
}

// The bench's own processes counted whole (runs' killed workers too) for the load line: bench/lib/cgroup-cpu.ts.
const cgroup = openCgroupCpu();
const group = 'unavailable' in cgroup ? undefined : cgroup;
const loadWatch = await watchMachineLoad([], group);
const before = await measureBaselines(runs, pandasRuns);

const sandboxStats = watchSandboxPool();
const peerStarts = peerKinds.map((kind) => startPeer(kind));
const server = await startBenchServer();
const peers = new Map<PeerKind, Peer>();
const unavailable: string[] = [];
for (const [i, started] of (await Promise.allSettled(peerStarts)).entries()) {
  if (started.status === 'fulfilled') peers.set(peerKinds[i]!, started.value);
  else unavailable.push(`${PEER_LABEL[peerKinds[i]!]}: unavailable (${(started.reason as Error).message})`);
}
let exitCode = 0;
const failures: string[] = [];
const clients: McpTestClient[] = [];
let after: Baselines | undefined;
let elapsed = 0;
const series: Series[] = [];
// Read before the server stops (its sandbox drops its zygotes and pool on stop).
let pool: ReturnType<typeof sandboxStats.pool>;
let zygotes: ReturnType<typeof sandboxStats.zygotes>;
try {
  const ns = 'bench';
  const account = await makeNamespace(server, ns, 'utils', [
    { name: 'hello', template: 'hello-world' },
    { name: 'hello_ts', language: 'typescript', code: TYPESCRIPT_HELLO },
    { name: 'pandas_sum', language: 'python', requirements: ['pandas'], code: PANDAS_SUM },
  ]);
  const toolClient = await connect(`${server.url}/mcp/run/${ns}?mode=tools`, account.key, era);
  const codeClient = await connect(`${server.url}/mcp/run/${ns}`, account.key, era);
  clients.push(toolClient, codeClient);
  const peerClients = new Map<PeerKind, McpTestClient>();
  for (const [kind, peer] of peers) {
    const client = await connect(peer.url, undefined, era);
    clients.push(client);
    peerClients.set(kind, client);
  }

  series.push(
    {
      label: 'Python hello, tool mode (utils__hello)',
      client: () => toolClient,
      spec: { tool: 'utils__hello', args: { name: 'bench' }, expect: GREETING },
      baseline: 'python',
      target: 0.5,
      peer: { kind: 'pyodide', target: 1 },
      samples: [],
    },
    {
      label: 'execute: Python calling one function',
      client: () => codeClient,
      spec: {
        tool: 'execute',
        args: { language: 'python', code: 'from functions import hello\nresult = hello(name="bench")' },
        expect: GREETING,
      },
      baseline: 'python',
      target: 0.6,
      samples: [],
    },
    {
      label: 'TS hello, tool mode (utils__hello_ts)',
      client: () => toolClient,
      spec: { tool: 'utils__hello_ts', args: { name: 'bench' }, expect: GREETING },
      baseline: 'node',
      target: 0.4,
      samples: [],
    },
    {
      label: 'pandas sum, tool mode (utils__pandas_sum)',
      client: () => toolClient,
      spec: { tool: 'utils__pandas_sum', args: { n: 100 }, expect: { sum: 14850 } },
      baseline: 'python',
      target: 0.6,
      samples: [],
    },
    {
      label: '_env_status (no sandbox: HTTP + MCP floor)',
      client: () => toolClient,
      spec: { tool: '_env_status', args: {}, expect: { ready: true } },
      peer: { kind: 'noop', target: 1.2 },
      samples: [],
    },
  );
  for (const [kind, client] of peerClients) {
    series.push({
      label: PEER_LABEL[kind],
      client: () => client,
      spec:
        kind === 'noop' ? { tool: 'noop', args: {}, expect: { ok: true } } : { tool: 'hello', args: { name: 'bench' }, expect: GREETING },
      ...(kind === 'noop' ? {} : { baseline: 'python' as const }),
      samples: [],
    });
  }

  const round = async (record: boolean) => {
    for (const s of values.order === 'fixed' ? series : shuffled(series, random)) {
      const started = performance.now();
      try {
        await call(s.client(), s.spec);
        if (record) s.samples.push(performance.now() - started);
      } catch (error) {
        failures.push(`${s.label}: ${(error as Error).message}`);
      }
    }
  };
  // Warm-up: page cache, transpile and package caches, JIT, pooled connections, warm sandboxes.
  const started = performance.now();
  for (let i = 0; i < warmup; i++) await round(false);
  if (failures.length > 0) throw new Error(`warm-up failed: ${failures[0]}`);
  for (let i = 0; i < runs; i++) await round(true);
  elapsed = (performance.now() - started) / 1000;
  pool = sandboxStats.pool();
  zygotes = sandboxStats.zygotes();
} catch (error) {
  console.error(`bench failed: ${(error as Error).stack ?? error}`);
  exitCode = 1;
} finally {
  await Promise.allSettled(clients.map((client) => client.close()));
  await server.stop();
  await Promise.allSettled([...peers.values()].map((peer) => peer.stop()));
}
if (exitCode === 0) {
  after = await measureBaselines(runs, pandasRuns);
  report(before, after);
}
const load = await loadWatch.finish();
await group?.close();
for (const line of load.lines) console.log(line);
process.exit(exitCode);

function report(before: Baselines, after: Baselines): void {
  const base = {
    python: Math.min(median(before.python), median(after.python)),
    node: Math.min(median(before.node), median(after.node)),
    pandas: Math.min(median(before.pandas), median(after.pandas)),
  };
  const baseName = { python: 'python3 -c pass', node: 'node -e 0' };
  const peerMedian = (kind: PeerKind) => {
    const peer = series.find((s) => s.label === PEER_LABEL[kind]);
    return peer && peer.samples.length > 0 ? median(peer.samples) : undefined;
  };
  const rows: string[][] = [['series', 'n', 'median', `median, first ${FIRST_ROUNDS}`, 'p99', 'ratio', 'of', 'vs peer', 'target', 'met']];
  for (const [label, samples] of [
    ['bare /usr/bin/python3 -c pass, before', before.python],
    ['bare /usr/bin/python3 -c pass, after', after.python],
    ['bare node -e 0, before', before.node],
    ['bare node -e 0, after', after.node],
    ['bare python3 -c "import pandas", before', before.pandas],
    ['bare python3 -c "import pandas", after', after.pandas],
  ] as const)
    rows.push([label, String(samples.length), ms(median(samples)), firstMedian(samples), ms(p99(samples)), '', '', '', '', '']);
  for (const s of series) {
    const m = median(s.samples);
    const ratio = s.baseline ? m / base[s.baseline] : Number.NaN;
    const peerM = s.peer ? peerMedian(s.peer.kind) : undefined;
    const versus = s.peer && peerM !== undefined ? m / peerM : Number.NaN;
    const peerName = s.peer ? `(${s.peer.kind === 'noop' ? 'a' : s.peer.kind === 'spawn' ? 'b' : 'c'})` : '';
    const targets: string[] = [];
    const met: boolean[] = [];
    if (s.target !== undefined) {
      targets.push(`≤ ${s.target.toFixed(1)}×`);
      met.push(ratio <= s.target);
    }
    if (s.peer) {
      targets.push(s.peer.target === 1 ? `< ${peerName}` : `≤ ${s.peer.target.toFixed(1)}× ${peerName}`);
      met.push(peerM === undefined ? false : s.peer.target === 1 ? versus < 1 : versus <= s.peer.target);
    }
    rows.push([
      s.label,
      String(s.samples.length),
      ms(m),
      firstMedian(s.samples),
      ms(p99(s.samples)),
      s.baseline ? `${ratio.toFixed(2)}×` : '',
      s.baseline ? baseName[s.baseline] : '',
      s.peer ? (peerM === undefined ? `no peer ${peerName}` : `${versus.toFixed(2)}× ${peerName}`) : '',
      targets.join(', '),
      targets.length === 0 || s.samples.length === 0 ? '' : met.every(Boolean) ? 'met' : 'not met',
    ]);
  }
  rows.push([
    'bare python3 -c "import pandas" (cold)',
    '',
    ms(base.pandas),
    '',
    '',
    `${(base.pandas / base.python).toFixed(2)}×`,
    baseName.python,
    '',
    '',
    '',
  ]);

  const sandboxEnv = Object.entries(process.env)
    .filter(([name]) => /^MCPWORKS_(SANDBOX|ZYGOTE)/.test(name))
    .map(([name, value]) => `${name}=${value}`);
  console.log(
    `latency bench: MCP Streamable HTTP, official SDK client (protocol ${values.era}), our server in-process (${server.databaseUrl ? 'PostgreSQL' : 'embedded PGlite'}), ` +
      `peers each in a process of their own; ${runs} rounds round-robin after ${warmup} warm-up, ` +
      `${values.order === 'fixed' ? 'every round in the same order' : `each round's order shuffled (seed ${seed})`}, ${elapsed.toFixed(0)} s; ` +
      `baselines alone before the servers start and after they stop; sandbox env: ${sandboxEnv.length > 0 ? sandboxEnv.join(' ') : 'defaults'}; ${new Date().toISOString()}`,
  );
  printTable(rows, new Set([0, 6, 7, 8]));
  console.log(
    `ratio = median / the lower of the baseline's medians before and after (python3 -c pass ${ms(base.python)}, node -e 0 ${ms(base.node)}); ` +
      `vs peer = median / the peer's median in this run; "first ${FIRST_ROUNDS}": the median of a series' first ${FIRST_ROUNDS} rounds (a fresh server's, JIT still cold); ` +
      "ratios and targets are read from the whole run's medians; targets (issue 18) are information, not the exit code.",
  );
  console.log('p99 is nearest-rank: with fewer than 100 samples it is the slowest one.');
  for (const line of unavailable) console.log(line);
  if (peers.has('pyodide'))
    console.log(
      'peer (c) runs the hello function only: Pyodide loads pandas from its CDN (not in the npm package), so offline it has no pandas.',
    );
  if (zygotes === null) console.log('python zygotes: off');
  else if (zygotes)
    console.log(
      `python zygotes: ${zygotes.runs} runs in zygote children (warm-up included); ${zygotes.zygotes.map((z) => `${z.label} ${z.state} ${z.runs} runs`).join('; ') || 'none'}`,
    );
  if (pool === null) console.log('sandbox pool: off');
  else if (pool) {
    const shapes = pool.keys.filter((k) => k.claims > 0).map((k) => `${k.label} ${k.hits}/${k.claims}`);
    console.log(
      `sandbox pool: ${pool.hits} of ${pool.claims} sandboxes pre-started (warm-up included); by shape, hits/claims: ${shapes.join('; ') || 'none'}`,
    );
  }
  if (failures.length > 0) {
    console.log(`errors: ${failures.length}; first: ${failures[0]}`);
    exitCode = 1;
  }
}
