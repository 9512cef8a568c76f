/**
 * Output secret scanner cost (issue 10, item 3): what scanning one call's output costs, beside a
 * same-run baseline that reads the same output once (JSON.stringify + JSON.parse, which the server
 * does to every answer anyway), and beside the regex alternation of env-value forms the scanner
 * used before (a literal alternation re-reads up to a value's length at every position).
 *
 * The server decodes, scans and renders large answers in a scan worker thread (src/run/scan-pool.ts).
 * "main thread, answer path now" is the main thread's CPU time (its own, from /proc/thread-self, so
 * a loaded machine does not inflate it) for one answer line of that output: handing its bytes to the
 * worker and taking the rendered tool result back. "answer path before" is what the main thread did
 * before (the scan already pooled): decode, depth check, parse, serialise for the worker, serialise
 * the tool text, the SDK's serialisation. "scanning in place" is the scan with a cached scanner on
 * the main thread, as before the pool. The worker's scanner is cached as in the steady state.
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
import { readFileSync } from 'node:fs';
import { RawJson } from '../src/core/raw-json.js';
import { ScanPool } from '../src/run/scan-pool.js';
import { MAX_MESSAGE_DEPTH, nestedDeeperThan } from '../src/sandbox/wire/channel.js';
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
  {
    name: '2 × 6 KB values, 50,000 short strings',
    env: [text(6000), text(6000)],
    output: Array.from({ length: 50_000 }, () => ({ k: text(12) })),
  },
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

/** CPU time this thread (the main thread) has had, in ms: unlike the clock, not inflated by a loaded machine. */
function threadCpu(): number {
  return Number(readFileSync('/proc/thread-self/schedstat', 'utf8').split(' ')[0]) / 1e6;
}

/**
 * Main-thread CPU of one large answer as the server handles it now: the answer line's bytes go to
 * a worker that checks and parses them (decode), then scans and renders the tool result (scan);
 * the main thread moves buffers. The rendered bytes are spliced into the MCP answer as it streams.
 */
async function answerNow(pool: ScanPool, env: string[], line: Buffer): Promise<number> {
  const bytes = Buffer.from(line); // the channel's Buffer.concat of the line (moved to the worker)
  const started = threadCpu();
  const decoded = await pool.decode(bytes);
  if (decoded === true || !decoded.ok) throw new Error('not a result');
  await pool.scan(env, { ok: true, result: decoded.result, stdout: '', stderr: '' });
  return threadCpu() - started;
}

/**
 * The same answer as the main thread handled it before (the scan itself pooled): decode the line,
 * check its depth, parse it, serialise it for the scan worker (and parse the reply when something
 * was redacted), serialise the result for the tool text, and the SDK's serialisation of the message.
 */
async function answerBefore(pool: ScanPool, env: string[], line: Buffer): Promise<number> {
  const started = threadCpu();
  const text = line.toString('utf8');
  nestedDeeperThan(text, MAX_MESSAGE_DEPTH);
  const value = JSON.parse(text) as { result: unknown };
  const run = { ok: true, result: value.result, stdout: '', stderr: '' };
  const scanned = JSON.stringify(run);
  let cpu = threadCpu() - started;
  await pool.scan(env, { ok: true, result: new RawJson(Buffer.from(JSON.stringify(value.result))), stdout: '', stderr: '' }); // the worker's part (not counted)
  const resumed = threadCpu();
  const result = scanned.includes('[REDACTED_') ? (JSON.parse(scanned) as typeof run).result : run.result;
  const toolText = JSON.stringify(result);
  Buffer.from(JSON.stringify({ jsonrpc: '2.0', id: 1, result: { content: [{ type: 'text', text: toolText }] } }));
  cpu += threadCpu() - resumed;
  return cpu;
}

const pool = new ScanPool({ workers: 1, inlineChars: 0, inlineEnvChars: -1 });
const rows = [
  [
    'case',
    'baseline (stringify+parse)',
    'scanner',
    'ratio',
    'main thread, scanning in place',
    'ratio',
    'main thread, answer path before',
    'main thread, answer path now',
    'ratio now/before',
    'regex alternation (env only)',
    'ratio',
  ],
];
for (const { name, env, output } of cases) {
  const baseline: number[] = [];
  const scanner: number[] = [];
  const cached: number[] = [];
  const built = new SecretScanner(env);
  const before: number[] = [];
  const now: number[] = [];
  const regex: number[] = [];
  const line = Buffer.from(JSON.stringify({ ok: true, result: output }));
  await answerNow(pool, env, line); // the worker builds and caches this env's scanner
  for (let run = 0; run < runs; run++) {
    baseline.push(time(() => JSON.parse(JSON.stringify(output))));
    scanner.push(time(() => new SecretScanner(env).scanValue(output, [])));
    // What the main thread paid per answer before the pool: the scan with the cached scanner, and
    // the byte count of the redacted answer's JSON.
    cached.push(time(() => Buffer.byteLength(JSON.stringify(built.scanValue(output, [])))));
    before.push(await answerBefore(pool, env, line));
    now.push(await answerNow(pool, env, line));
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
  const warm = median(cached);
  const old = regex.length ? median(regex) : Number.NaN;
  const was = median(before);
  const is = median(now);
  rows.push([
    name,
    ms(base),
    ms(ours),
    `${(ours / base).toFixed(1)}×`,
    ms(warm),
    `${(warm / base).toFixed(1)}×`,
    ms(was),
    ms(is),
    `${(is / was).toFixed(2)}×`,
    ms(old),
    Number.isNaN(old) ? '—' : `${(old / base).toFixed(1)}×`,
  ]);
}
printTable(rows);
await pool.close();
