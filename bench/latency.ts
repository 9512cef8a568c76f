/**
 * End-to-end latency over MCP Streamable HTTP with the official client (issue 6, "Measure").
 *
 *   bench/latency [--runs N] [--warmup W]        (defaults: 41 rounds after 5 warm-up rounds)
 *
 * Starts the real server in-process (embedded PGlite, or PostgreSQL when MCPWORKS_TEST_DATABASE_URL
 * is set; the trial tier's execution limits lifted), makes a namespace through /mcp/create with
 * three functions in service `utils`: `hello` (Python, the hello-world template), `hello_ts` (the
 * same in TypeScript) and `pandas_sum` (Python, requirements ["pandas"], builds a small DataFrame
 * and returns a sum), then measures round-robin (one sample of each series per round, so drift in
 * machine load touches them all alike), median and p99 (nearest rank) of:
 *   - bare `/usr/bin/python3 -c pass` and `node -e 0` (the baselines, measured in the same run);
 *   - `utils__hello` in tool mode, `execute` (code mode) calling one Python function,
 *     `utils__hello_ts` in tool mode, and `utils__pandas_sum` in tool mode, each with the ratio of
 *     its median to the baseline's median, beside the issue's target and whether it is met;
 *   - for information: `_env_status` (no sandbox, not metered: the HTTP + MCP floor) and bare
 *     `python3 -c "import pandas"` (what the pandas function would cost a cold interpreter).
 * The sandbox configuration comes from the environment (e.g. MCPWORKS_SANDBOX_POOL, MCPWORKS_ZYGOTE,
 * when the server has them), echoed in the header. Targets are information, never the exit code:
 * exits non-zero only if the bench cannot run or a call fails.
 */
import { parseArgs } from 'node:util';
import { availableParallelism, cpus } from 'node:os';
import { connect, type McpTestClient } from '../src/test-support/harness.js';
import { bare, bareNode, barePython, median, ms, p99, printTable } from './lib/measure.js';
import { call, makeNamespace, startBenchServer, watchSandboxPool, type CallSpec } from './lib/server.js';

const { values } = parseArgs({ options: { runs: { type: 'string', default: '41' }, warmup: { type: 'string', default: '5' } } });
const runs = Number(values.runs);
const warmup = Number(values.warmup);
if (!Number.isInteger(runs) || runs < 1) throw new Error('--runs must be a positive integer');
if (!Number.isInteger(warmup) || warmup < 0) throw new Error('--warmup must be a non-negative integer');

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
  target?: number;
  samples: number[];
}

const sandboxStats = watchSandboxPool();
const server = await startBenchServer();
let exitCode = 0;
const failures: string[] = [];
try {
  const ns = 'bench';
  const account = await makeNamespace(server, ns, 'utils', [
    { name: 'hello', template: 'hello-world' },
    { name: 'hello_ts', language: 'typescript', code: TYPESCRIPT_HELLO },
    { name: 'pandas_sum', language: 'python', requirements: ['pandas'], code: PANDAS_SUM },
  ]);
  const toolClient = await connect(`${server.url}/mcp/run/${ns}?mode=tools`, account.key);
  const codeClient = await connect(`${server.url}/mcp/run/${ns}`, account.key);

  const series: Series[] = [
    {
      label: 'Python hello, tool mode (utils__hello)',
      client: () => toolClient,
      spec: { tool: 'utils__hello', args: { name: 'bench' }, expect: GREETING },
      baseline: 'python',
      target: 0.5,
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
      target: 0.7,
      samples: [],
    },
    {
      label: 'TS hello, tool mode (utils__hello_ts)',
      client: () => toolClient,
      spec: { tool: 'utils__hello_ts', args: { name: 'bench' }, expect: GREETING },
      baseline: 'node',
      target: 0.5,
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
      samples: [],
    },
  ];
  const baselines: Record<Baseline | 'pandas', number[]> = { python: [], node: [], pandas: [] };
  const bareImportPandas = () => bare('/usr/bin/python3', ['-c', 'import pandas']);

  const round = async (record: boolean) => {
    const python = await barePython();
    const node = await bareNode();
    const pandas = await bareImportPandas();
    if (record) {
      baselines.python.push(python);
      baselines.node.push(node);
      baselines.pandas.push(pandas);
    }
    for (const s of series) {
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
  const elapsed = (performance.now() - started) / 1000;
  await Promise.all([toolClient.close(), codeClient.close()]);

  const baseMedian = { python: median(baselines.python), node: median(baselines.node) };
  const baseName = { python: 'python3 -c pass', node: 'node -e 0' };
  const rows: string[][] = [['series', 'n', 'median', 'p99', 'ratio', 'of', 'target', 'met']];
  rows.push([
    'bare /usr/bin/python3 -c pass',
    String(baselines.python.length),
    ms(baseMedian.python),
    ms(p99(baselines.python)),
    '1.00×',
    baseName.python,
    '',
    '',
  ]);
  rows.push([
    'bare node -e 0',
    String(baselines.node.length),
    ms(baseMedian.node),
    ms(p99(baselines.node)),
    '1.00×',
    baseName.node,
    '',
    '',
  ]);
  for (const s of series) {
    const m = median(s.samples);
    const ratio = s.baseline ? m / baseMedian[s.baseline] : Number.NaN;
    rows.push([
      s.label,
      String(s.samples.length),
      ms(m),
      ms(p99(s.samples)),
      s.baseline ? `${ratio.toFixed(2)}×` : '',
      s.baseline ? baseName[s.baseline] : '',
      s.target !== undefined ? `≤ ${s.target.toFixed(1)}×` : '',
      s.target !== undefined && s.samples.length > 0 ? (ratio <= s.target ? 'met' : 'not met') : '',
    ]);
  }
  const pandasImport = median(baselines.pandas);
  rows.push([
    'bare python3 -c "import pandas" (cold)',
    String(baselines.pandas.length),
    ms(pandasImport),
    ms(p99(baselines.pandas)),
    `${(pandasImport / baseMedian.python).toFixed(2)}×`,
    baseName.python,
    '',
    '',
  ]);

  const sandboxEnv = Object.entries(process.env)
    .filter(([name]) => /^MCPWORKS_(SANDBOX|ZYGOTE)/.test(name))
    .map(([name, value]) => `${name}=${value}`);
  console.log(
    `latency bench: MCP Streamable HTTP, official SDK client, one server in-process (${server.databaseUrl ? 'PostgreSQL' : 'embedded PGlite'}); ` +
      `${runs} rounds round-robin after ${warmup} warm-up, ${elapsed.toFixed(0)} s; ${availableParallelism()} cores (${cpus()[0]?.model.trim() ?? 'unknown CPU'}); ` +
      `sandbox env: ${sandboxEnv.length > 0 ? sandboxEnv.join(' ') : 'defaults'}; ${new Date().toISOString()}`,
  );
  printTable(rows, new Set([0, 5]));
  console.log("ratio = median / the baseline's median in this run; targets (issue 6) are information, not the exit code.");
  console.log('p99 is nearest-rank: with fewer than 100 samples it is the slowest one.');
  const pool = sandboxStats.pool();
  const zygotes = sandboxStats.zygotes();
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
} catch (error) {
  console.error(`bench failed: ${(error as Error).stack ?? error}`);
  exitCode = 1;
} finally {
  await server.stop();
}
process.exit(exitCode);
