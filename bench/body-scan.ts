/**
 * What one large MCP request body costs the main thread (review s10, item 3): the longest single
 * block for an 8 MB body, before (one JSON.parse) and now (the value/depth pre-scan in fair slices,
 * src/core/json-scan.ts, then, for a body within the caps, the sliced parse of json-sliced-parse.ts). Beside them, what handing the
 * parsed body back from a worker thread would cost the main thread (a structured-clone decode,
 * v8.deserialize, the step a worker parse cannot avoid). Cases: 8 MB of small values
 * ([0,0,...], 4M values: now refused by the scan), 8 MB of 500,000 short strings (the most values a
 * body within the caps parses) and 8 MB of one long string (make_function with large code). Main-thread CPU time, medians over N runs; indicative on a loaded machine.
 *
 *   bench/body-scan [--runs N]
 */
import { parseArgs } from 'node:util';
import { readFileSync } from 'node:fs';
import { deserialize, serialize } from 'node:v8';
import { MAX_CHECKED_DEPTH, MAX_CHECKED_VALUES } from '../src/core/limits.js';
import { textShapeExcessSlices } from '../src/core/json-scan.js';
import { parseJsonSlices } from '../src/core/json-sliced-parse.js';
import { median } from './lib/measure.js';

const { values } = parseArgs({ options: { runs: { type: 'string', default: '5' } } });
const runs = Number(values.runs);
const SLICE = 64 * 1024;
const caps = { maxDepth: MAX_CHECKED_DEPTH + 8, maxValues: MAX_CHECKED_VALUES + 1000 };
const envelope = (args: string) => `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"execute","arguments":${args}}}`;
const size = 8 * 1024 * 1024 - 200;
const bodies: Record<string, string> = {
  '8 MB of small values': envelope(`{"code":"","input":[${'0,'.repeat(size / 2 - 1)}0]}`),
  // The most that is still parsed: just within the value cap, each value a 14-character string.
  '8 MB, 500,000 strings (within the caps)': envelope(`{"code":"","input":[${'"abcdefghijklm",'.repeat(MAX_CHECKED_VALUES - 1)}"z"]}`),
  '8 MB, one long string': envelope(JSON.stringify({ code: 'x = "[{,\\"}]"  # é\n'.repeat(size / 24) })),
};
// Flat strings, as request.text() gives (a repeated string is a rope V8 flattens on first read).
for (const name of Object.keys(bodies)) bodies[name] = Buffer.from(bodies[name]!).toString('utf8');

// The main thread's own CPU time (ms): a loaded machine preempting it does not count; the kernel
// updates it at scheduler ticks, so short slices read as 0 and long ones to within a few ms.
const now = (): number => Number(readFileSync('/proc/thread-self/schedstat', 'utf8').split(' ')[0]) / 1e6;
const performance = { now };
const time = (work: () => void): number => {
  const start = performance.now();
  work();
  return performance.now() - start;
};

/** The longest and the median slice of the scan (or sliced parse), and whether the scan refused the body. */
function scanSlices(text: string, parse = false): { longest: number; typical: number; refused: boolean } {
  const slices: Generator<void, unknown, void> = parse ? parseJsonSlices(text, SLICE) : textShapeExcessSlices(text, caps, SLICE);
  const times: number[] = [];
  for (;;) {
    const start = performance.now();
    const step = slices.next();
    times.push(performance.now() - start);
    if (step.done) return { longest: Math.max(...times), typical: median(times), refused: step.value !== null };
  }
}

for (const [name, text] of Object.entries(bodies)) {
  const parse: number[] = [];
  const scan: number[] = [];
  const clone: number[] = [];
  const typical: number[] = [];
  const sliced: number[] = [];
  const slicedTypical: number[] = [];
  let refused = false;
  for (let run = 0; run < runs; run++) {
    let parsed: unknown;
    parse.push(time(() => (parsed = JSON.parse(text))));
    const scanned = scanSlices(text);
    refused = scanned.refused;
    scan.push(scanned.longest);
    typical.push(scanned.typical);
    if (!refused) {
      const parsedSliced = scanSlices(text, true);
      sliced.push(parsedSliced.longest);
      slicedTypical.push(parsedSliced.typical);
    }
    const wire = serialize(parsed);
    clone.push(time(() => deserialize(wire)));
  }
  const before = median(parse);
  const longest = refused ? median(scan) : Math.max(median(scan), median(sliced));
  console.log(
    `${name} (${(text.length / 1024 / 1024).toFixed(1)} M chars): ${refused ? 'refused by the scan' : 'within the caps, parsed'}`,
  );
  console.log(`  before, one JSON.parse:               ${before.toFixed(1)} ms`);
  console.log(`  now, scan slice (64K chars):          longest ${median(scan).toFixed(1)} ms`);
  if (!refused) console.log(`  now, sliced parse (64K chars):        longest ${median(sliced).toFixed(1)} ms`);
  console.log(`  now, longest main-thread block:       ${longest.toFixed(1)} ms  (ratio ${(longest / before).toFixed(3)})`);
  console.log(`  worker parse, decode on main thread:  ${median(clone).toFixed(1)} ms  (ratio ${(median(clone) / before).toFixed(3)})`);
}
