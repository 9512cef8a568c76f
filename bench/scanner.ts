/**
 * Output secret scanner cost (issue 10, item 3): what scanning one call's output costs, beside a
 * same-run baseline that reads the same output once (JSON.stringify + JSON.parse, which the server
 * does to every answer anyway), and beside the regex alternation of env-value forms the scanner
 * used before (a literal alternation re-reads up to a value's length at every position).
 *
 * The server scans large answers in a scan worker thread (src/run/scan-pool.ts); the "main thread
 * with the pool" column is what its main thread still spends on one such scan (the event loop's
 * active time while the scan is awaited: one JSON.stringify, the message copy, and one JSON.parse
 * when something was redacted), with the worker's scanner cached as in the server's steady state;
 * "main thread before the pool" is what it spent scanning in place (cached scanner, then the byte
 * count of the redacted JSON).
 *
 * Cases: two 6 KB env values with a 1 MB result that keeps almost matching them (the reported
 * attack), 1 MB of random text, 1 MB of non-ASCII text, 50,000 short strings, and the largest
 * X-MCPWorks-Env header (32 KB of values). Prints medians over N runs and ratios; asserts nothing.
 *
 *   bench/scanner [--runs N]
 */
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import { envValueForms, SecretScanner } from '../src/core/secret-scanner.js';
import { ScanPool } from '../src/run/scan-pool.js';
import { median, ms, printTable } from './lib/measure.js';

const { values } = parseArgs({ options: { runs: { type: 'string', default: '5' } } });
const runs = Number(values.runs);

let seed = 1;
function text(length: number, alphabet = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789'): string {
  let out = '';
  for (let i = 0; i < length; i++) {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    out += alphabet[seed % alphabet.length];
  }
  return out;
}

const cases: Array<{ name: string; env: string[]; output: unknown }> = [
  { name: '2 × 6 KB values, 1 MB near-miss result', env: ['a'.repeat(5999) + 'b', 'a'.repeat(5998) + 'c'], output: 'a'.repeat(1_000_000) },
  { name: '2 × 6 KB values, 1 MB random result', env: [text(6000), text(6000)], output: text(1_000_000) },
  { name: '2 × 6 KB values, 1 MB non-ASCII result', env: [text(3000, 'äöü€😀xy'), text(6000)], output: text(500_000, 'äöü€😀xy') },
  { name: '2 × 6 KB values, 50,000 short strings', env: [text(6000), text(6000)], output: Array.from({ length: 50_000 }, () => ({ k: text(12) })) },
  { name: '32 KB of values (header limit), 100 KB result', env: Array.from({ length: 4 }, () => text(8000)), output: text(100_000) },
];

/** The scanner before item 3: one regex alternation of every form, longest first. */
function alternation(env: string[]): RegExp {
  const forms = [...new Set(env.flatMap(envValueForms))].sort((a, b) => b.length - a.length);
  return new RegExp(forms.map((form) => form.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('|'), 'g');
}

function time(fn: () => void): number {
  const started = performance.now();
  fn();
  return performance.now() - started;
}

/** Main-thread time of one pooled scan: the event loop's active time while it is awaited. */
async function mainThread(pool: ScanPool, env: string[], output: unknown): Promise<number> {
  const before = performance.eventLoopUtilization();
  await pool.scan(env, { ok: true, result: output, stdout: '', stderr: '' });
  return performance.eventLoopUtilization(before).active;
}

const pool = new ScanPool({ workers: 1, inlineChars: 0, inlineEnvChars: -1 });
const rows = [['case', 'baseline (stringify+parse)', 'scanner', 'ratio', 'main thread before the pool', 'ratio', 'main thread with the pool', 'ratio', 'regex alternation (env only)', 'ratio']];
for (const { name, env, output } of cases) {
  const baseline: number[] = [];
  const scanner: number[] = [];
  const cached: number[] = [];
  const built = new SecretScanner(env);
  const pooled: number[] = [];
  const regex: number[] = [];
  await mainThread(pool, env, output); // the worker builds and caches this env's scanner
  for (let run = 0; run < runs; run++) {
    baseline.push(time(() => JSON.parse(JSON.stringify(output))));
    scanner.push(time(() => new SecretScanner(env).scanValue(output, [])));
    // What the main thread paid per answer before the pool: the scan with the cached scanner, and
    // the byte count of the redacted answer's JSON.
    cached.push(time(() => Buffer.byteLength(JSON.stringify(built.scanValue(output, [])))));
    pooled.push(await mainThread(pool, env, output));
    // Strings only: the old scanner ran its alternation on each string of the output.
    if (typeof output === 'string' && output.length <= 1_000_000 && run === 0) {
      const pattern = alternation(env);
      try {
        regex.push(time(() => output.replace(pattern, '[REDACTED_ENV_VALUE]')));
      } catch {
        // V8 refuses to compile an alternation this large (the forms grew with the byte lists).
      }
    }
  }
  const base = median(baseline);
  const ours = median(scanner);
  const main = median(pooled);
  const warm = median(cached);
  const old = regex.length ? median(regex) : Number.NaN;
  rows.push([name, ms(base), ms(ours), `${(ours / base).toFixed(1)}×`, ms(warm), `${(warm / base).toFixed(1)}×`, ms(main), `${(main / base).toFixed(1)}×`, ms(old), Number.isNaN(old) ? '—' : `${(old / base).toFixed(1)}×`]);
}
printTable(rows);
await pool.close();
