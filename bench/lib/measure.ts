/**
 * Shared by the benches: nearest-rank quantiles, bare-interpreter baselines, CPU accounting and a
 * plain-text table.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';

/** Nearest rank: the smallest sample with at least q of the samples at or below it. */
export function quantile(samples: readonly number[], q: number): number {
  if (samples.length === 0) return Number.NaN;
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}
export const median = (samples: readonly number[]) => quantile(samples, 0.5);
export const p99 = (samples: readonly number[]) => quantile(samples, 0.99);

/**
 * Wall time of one bare process start to exit, in ms, through the same spawn path the server
 * uses. A clean environment, as the sandbox gets (under tsx, NODE_OPTIONS could otherwise load
 * tsx into `node -e 0`).
 */
export function bare(command: string, args: string[]): Promise<number> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { PATH: '/usr/local/bin:/usr/bin:/bin', HOME: '/tmp', LANG: 'C.UTF-8' },
    });
    child.stdout.resume();
    child.stderr.resume();
    child.on('error', reject);
    child.on('close', (code) =>
      code === 0 ? resolve(performance.now() - started) : reject(new Error(`${command} ${args.join(' ')} exited ${code}`)),
    );
  });
}
/** `/usr/bin/python3 -c pass`: the interpreter the sandbox runs. */
export const barePython = () => bare('/usr/bin/python3', ['-c', 'pass']);
/** `node -e 0` with this Node (the sandbox runs TypeScript on process.execPath). */
export const bareNode = () => bare(process.execPath, ['-e', '0']);

/** CPU of this process and of its reaped children (sandboxes, baselines), in ms. */
export function cpuNow(): { self: number; children: number } {
  const usage = process.cpuUsage();
  // /proc/self/stat fields 16 and 17: cutime and cstime in clock ticks (USER_HZ = 100 on Linux).
  const fields = readFileSync('/proc/self/stat', 'utf8').split(') ')[1]!.split(' ');
  return { self: (usage.user + usage.system) / 1000, children: (Number(fields[13]) + Number(fields[14])) * 10 };
}

export const ms = (value: number | undefined) => (value === undefined || Number.isNaN(value) ? '—' : `${value.toFixed(1)} ms`);

/** Prints rows as a table: the first row is the header, the first column left-aligned, the rest right-aligned. */
export function printTable(rows: ReadonlyArray<ReadonlyArray<string>>, leftAligned: ReadonlySet<number> = new Set([0])): void {
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => (row[column] ?? '').length)));
  const line = (row: ReadonlyArray<string>) =>
    row
      .map((cell, column) => (leftAligned.has(column) ? cell.padEnd(widths[column]!) : cell.padStart(widths[column]!)))
      .join('  ')
      .trimEnd();
  console.log(line(rows[0]!));
  console.log(widths.map((width) => '-'.repeat(width)).join('  '));
  for (const row of rows.slice(1)) console.log(line(row));
}

/** Samples of the bare-interpreter baselines, taken round-robin. */
export interface Baselines {
  python: number[];
  node: number[];
  /** `python3 -c "import pandas"`: what a cold interpreter pays for the pandas function. */
  pandas: number[];
}

/**
 * The bare baselines measured on their own (before a server starts or after it stopped, so that no
 * pool refill or zygote start competes with them): `warmup` unrecorded rounds (page cache), then
 * `runs` rounds of python and node, of which the first `pandasRuns` also time `import pandas`.
 */
export async function measureBaselines(runs: number, pandasRuns: number, warmup = 2): Promise<Baselines> {
  const samples: Baselines = { python: [], node: [], pandas: [] };
  for (let i = -warmup; i < runs; i++) {
    const python = await barePython();
    const node = await bareNode();
    const pandas = i < pandasRuns ? await bare('/usr/bin/python3', ['-c', 'import pandas']) : undefined;
    if (i < 0) continue;
    samples.python.push(python);
    samples.node.push(node);
    if (pandas !== undefined) samples.pandas.push(pandas);
  }
  return samples;
}
