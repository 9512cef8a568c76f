/**
 * What held a server's event loop, from a V8 CPU profile (`node --cpu-prof`; bench/abuse --cpu-prof
 * DIR writes one for the server):
 *
 *   npx tsx bench/loop-holds.ts PROFILE.cpuprofile [--min-ms 10] [--from S] [--to S] [--top 8] [--phase LABEL]
 *
 * A hold is a run of consecutive samples that are not `(idle)`: the loop was busy (JavaScript,
 * native code, GC) for that long without a turn for anything else, such as a /healthz answer. For
 * each hold of at least --min-ms it prints the start (seconds from the profile's start), the length,
 * and the functions that took most of it by self time, each with the innermost frame of our own code
 * (dist/ or src/) that led to it. At the end, the same by self time summed over all those holds.
 * --phase LABEL keeps the holds that start in the phase of that label (`scanner attack`, `scanner
 * idle`), read from the phases.json bench/abuse --cpu-prof writes beside the profile.
 * A profile only samples: on a loaded machine a hold includes time the OS did not run the thread
 * (and a GC pause waits for GC threads), so each hold also says how many samples it had: at the
 * default 1 ms interval about the ms the thread actually ran.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  parent?: number;
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
}

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    'min-ms': { type: 'string', default: '10' },
    from: { type: 'string', default: '0' },
    to: { type: 'string', default: 'Infinity' },
    top: { type: 'string', default: '8' },
    phase: { type: 'string' },
  },
});
if (positionals.length !== 1) throw new Error('usage: bench/loop-holds.ts PROFILE.cpuprofile [--min-ms N] [--from S] [--to S]');
const minMs = Number(values['min-ms']);
const top = Number(values.top);
const profile = JSON.parse(readFileSync(positionals[0]!, 'utf8')) as Profile;
let from = Number(values.from) * 1000;
let to = Number(values.to) * 1000;
if (values.phase) {
  const phases = JSON.parse(readFileSync(path.join(path.dirname(positionals[0]!), 'phases.json'), 'utf8')) as Array<{
    label: string;
    startUs: number;
    endUs: number;
  }>;
  const phase = phases.find((candidate) => candidate.label === values.phase);
  if (!phase) throw new Error(`no phase '${values.phase}' (known: ${phases.map((candidate) => candidate.label).join(', ')})`);
  from = (phase.startUs - profile.startTime) / 1000;
  to = (phase.endUs - profile.startTime) / 1000;
  console.log(`phase '${phase.label}': ${(from / 1000).toFixed(3)} s to ${(to / 1000).toFixed(3)} s of the profile`);
}

const byId = new Map(profile.nodes.map((node) => [node.id, node]));
for (const node of profile.nodes) for (const child of node.children ?? []) byId.get(child)!.parent = node.id;

const short = (frame: CallFrame) => {
  const file = frame.url.replace(/^file:\/\//, '').replace(/^.*\/(dist|src|node_modules)\//, '$1/');
  return `${frame.functionName || '(anonymous)'}${file ? ` ${file}:${frame.lineNumber + 1}` : ''}`;
};
const ours = (frame: CallFrame) => /\/(dist|src)\//.test(frame.url) && !frame.url.includes('node_modules');

/** `self frame ← innermost frame of ours`, the label a sample's time is counted under. */
const labels = new Map<number, string>();
function label(id: number): string {
  let cached = labels.get(id);
  if (cached !== undefined) return cached;
  const node = byId.get(id)!;
  let owner: ProfileNode | undefined = node;
  while (owner && !ours(owner.callFrame)) owner = owner.parent === undefined ? undefined : byId.get(owner.parent);
  cached = owner && owner !== node ? `${short(node.callFrame)}  ← ${short(owner.callFrame)}` : short(node.callFrame);
  labels.set(id, cached);
  return cached;
}

interface Hold {
  start: number;
  length: number;
  /** Samples taken in it: with the default 1 ms interval, about the ms the thread was on a CPU. */
  samples: number;
  self: Map<string, number>;
}
const holds: Hold[] = [];
let current: Hold | undefined;
let at = 0;
for (let index = 0; index < profile.samples.length; index++) {
  at += profile.timeDeltas[index]! / 1000;
  // A sample stands for the time until the next one.
  const length = (profile.timeDeltas[index + 1] ?? 0) / 1000;
  const node = byId.get(profile.samples[index]!)!;
  if (node.callFrame.functionName === '(idle)') {
    if (current) holds.push(current);
    current = undefined;
    continue;
  }
  current ??= { start: at, length: 0, samples: 0, self: new Map() };
  current.length += length;
  current.samples++;
  const key = label(node.id);
  current.self.set(key, (current.self.get(key) ?? 0) + length);
}
if (current) holds.push(current);

const chosen = holds.filter((hold) => hold.length >= minMs && hold.start >= from && hold.start <= to);
const total = new Map<string, number>();
const topOf = (self: Map<string, number>, count: number) => [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, count);
for (const hold of chosen) {
  console.log(`${(hold.start / 1000).toFixed(3)} s  hold ${hold.length.toFixed(1)} ms (${hold.samples} samples)`);
  for (const [key, spent] of topOf(hold.self, top)) console.log(`    ${spent.toFixed(1).padStart(7)} ms  ${key}`);
  for (const [key, spent] of hold.self) total.set(key, (total.get(key) ?? 0) + spent);
}
const held = chosen.reduce((sum, hold) => sum + hold.length, 0);
const sampled = chosen.reduce((sum, hold) => sum + hold.samples, 0);
console.log(
  `\n${chosen.length} holds of ≥ ${minMs} ms, ${held.toFixed(0)} ms in all (${sampled} samples)` +
    (chosen.length ? `, longest ${Math.max(...chosen.map((hold) => hold.length)).toFixed(1)} ms` : '') +
    '; by self time over them:',
);
for (const [key, spent] of topOf(total, top * 3)) console.log(`  ${spent.toFixed(1).padStart(8)} ms  ${key}`);
