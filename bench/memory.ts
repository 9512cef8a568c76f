/**
 * The idle server's memory (issue 18): right after it created a fresh data dir, and started again
 * on that existing data dir.
 *
 *   bench/memory [--settle S] [--quick]      (defaults: 20 s of idling before each sample; --quick: 5 s)
 *
 * The server is `node dist/cli/main.js serve` (build first: `npm run build`) in a process of its
 * own, on the embedded database (PGlite) in a new temporary data dir, or on DATABASE_URL when that
 * is set. Each phase starts it, waits for /healthz, lets it idle S seconds (its warm sandboxes and
 * zygotes start meanwhile), then reads: the main process's RSS and peak RSS (VmHWM), where that
 * RSS goes (bench/lib/smaps.ts: WebAssembly memories such as PGlite's PostgreSQL, JS and native
 * heaps, mapped files), and the PSS and RSS summed over its whole process tree (bench/lib/tree.ts:
 * workers' processes, spawner, zygotes, pre-started sandboxes). Then it stops the server (SIGTERM).
 * Targets are information, never the exit code.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { watchMachineLoad } from './lib/machine.js';
import { printTable } from './lib/measure.js';
import { breakdown, type MemoryBreakdown } from './lib/smaps.js';
import { sampleTree, type TreeSample } from './lib/tree.js';

const { values } = parseArgs({ options: { settle: { type: 'string' }, quick: { type: 'boolean', default: false } } });
const settleSeconds = Number(values.settle ?? (values.quick ? 5 : 20));
if (!Number.isFinite(settleSeconds) || settleSeconds < 0) throw new Error('--settle must be a non-negative number');
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const main = path.join(root, 'dist', 'cli', 'main.js');
if (!existsSync(main)) throw new Error(`${main} is missing: build first (npm run build)`);
const TARGET_MAIN_RSS_MB = 250;
const database = process.env.DATABASE_URL ? 'PostgreSQL (DATABASE_URL)' : 'embedded PGlite';
const sleep = (milliseconds: number) => new Promise((resolve) => setTimeout(resolve, milliseconds));

async function freePort(): Promise<number> {
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const port = (probe.address() as { port: number }).port;
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

interface Sample {
  readyMs: number;
  rssMb: number;
  peakMb: number;
  parts: MemoryBreakdown;
  tree: TreeSample;
}

const kbOf = (status: string, field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? Number.NaN);

/** Starts the server on `dataDir`, idles, samples, stops. */
async function phase(dataDir: string): Promise<Sample> {
  const port = await freePort();
  const started = performance.now();
  const child: ChildProcess = spawn(process.execPath, [main, 'serve', '--port', String(port), '--data-dir', dataDir], {
    env: { ...process.env, LOG_LEVEL: process.env.LOG_LEVEL ?? 'error' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr = (stderr + chunk).slice(-2000)));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let ended = false;
  void exited.then(() => (ended = true));
  try {
    // A loaded machine can take long to start the server (PGlite, migrations, warm sandboxes).
    const deadline = Date.now() + 180_000;
    for (;;) {
      if (ended) throw new Error(`the server exited at start: ${stderr.slice(-500)}`);
      if (Date.now() > deadline) throw new Error('the server did not answer /healthz within 180 s');
      const up = await fetch(`http://127.0.0.1:${port}/healthz`).then(
        (r) => r.ok,
        () => false,
      );
      if (up) break;
      await sleep(100);
    }
    const readyMs = performance.now() - started;
    await sleep(settleSeconds * 1000);
    const pid = child.pid!;
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const parts = breakdown(readFileSync(`/proc/${pid}/smaps`, 'utf8'));
    const tree = await sampleTree(pid);
    if (!tree) throw new Error('the server ended while idle');
    return { readyMs, rssMb: kbOf(status, 'VmRSS') / 1024, peakMb: kbOf(status, 'VmHWM') / 1024, parts, tree };
  } finally {
    if (!ended) child.kill('SIGTERM');
    const killAt = setTimeout(() => child.kill('SIGKILL'), 20_000);
    await exited;
    clearTimeout(killAt);
  }
}

const loadWatch = await watchMachineLoad();
const dataDir = mkdtempSync(path.join(tmpdir(), 'mcpworks-memory-'));
let exitCode = 0;
try {
  const fresh = await phase(dataDir);
  const existing = await phase(dataDir);
  const mb = (value: number) => `${value.toFixed(0)} MB`;
  const both = (f: (sample: Sample) => string) => [f(fresh), f(existing)];
  const met = (sample: Sample) => sample.rssMb <= TARGET_MAIN_RSS_MB;
  console.log(
    `memory bench: node dist/cli/main.js serve in a process of its own (${database}), sampled after ${settleSeconds} s idle; ` +
      `first on a fresh data dir (it creates it), then started again on it; ${new Date().toISOString()}`,
  );
  printTable(
    [
      ['measure', 'fresh data dir', 'existing data dir', 'target', 'met'],
      ['ready (/healthz) after', ...both((s) => `${(s.readyMs / 1000).toFixed(1)} s`), '', ''],
      [
        'main process RSS',
        ...both((s) => mb(s.rssMb)),
        `≤ ${TARGET_MAIN_RSS_MB} MB`,
        `${met(fresh) ? 'met' : 'not met'} / ${met(existing) ? 'met' : 'not met'}`,
      ],
      ['  of it: WebAssembly memories (PGlite)', ...both((s) => `${mb(s.parts.wasmMb)} (${s.parts.wasmMemories})`), '', ''],
      ['  of it: JS heaps, native heap, stacks', ...both((s) => mb(s.parts.anonymousMb)), '', ''],
      ['  of it: mapped files (node, libraries)', ...both((s) => mb(s.parts.filesMb)), '', ''],
      ['main process peak RSS (VmHWM)', ...both((s) => mb(s.peakMb)), '', ''],
      ['whole tree: processes', ...both((s) => String(s.tree.processes)), '', ''],
      ['whole tree: PSS', ...both((s) => mb(s.tree.memoryMb)), '', ''],
      ['whole tree: RSS (shared pages counted per process)', ...both((s) => mb(s.tree.rssMb)), '', ''],
    ],
    new Set([0, 3, 4]),
  );
  const fallbacks = fresh.tree.rssFallbacks + existing.tree.rssFallbacks;
  if (fallbacks > 0) console.log(`(${fallbacks} processes counted with RSS: their smaps_rollup could not be read)`);
  console.log('Targets (issue 18) are information, not the exit code.');
} catch (error) {
  console.error(`bench failed: ${(error as Error).stack ?? error}`);
  exitCode = 1;
} finally {
  rmSync(dataDir, { recursive: true, force: true });
}
const load = await loadWatch.finish();
for (const line of load.lines) console.log(line);
process.exit(exitCode);
