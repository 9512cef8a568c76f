/**
 * Sandbox start-up latency: median wall time of a hello-world run through the real sandbox in
 * Python and TypeScript, pooled (a pre-started sandbox claimed by the run) and cold (the sandbox
 * started on the request path), beside bare `/usr/bin/python3 -c pass` and `node -e 0` measured in
 * the same run with the same spawn path. Target for a cold sandbox (issue 4): ≤ 1.8× bare.
 *
 *   bench/sandbox [--runs N] [--launcher-pool N] [--spawner on|off]
 *   (--launcher-pool 0: no pre-started launchers; --spawner off: helpers spawned by this process)
 */
import { parseArgs } from 'node:util';
import { sandboxLimitsFor } from '../src/core/sandbox.js';
import { limitsFor } from '../src/core/tiers.js';
import { createBubblewrapSandbox, type BubblewrapSandbox } from '../src/sandbox/bubblewrap.js';
import { bare } from './lib/measure.js';

const COLD_TARGET_RATIO = 1.8;
const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '41' },
    'launcher-pool': { type: 'string', default: '2' },
    spawner: { type: 'string', default: 'on' },
  },
});
const runs = Number(values.runs);
const launcherPool = Number(values['launcher-pool']);
const spawner = values.spawner !== 'off';

const pythonHello =
  'def main(input_data):\n    name = input_data.get("name", "World")\n    return {"greeting": f"Hello, {name}!", "message": "MCPWorks is working"}\n';
const typescriptHello =
  'export default function main(input: { name?: string }) {\n  const name = input.name ?? "World";\n  return { greeting: `Hello, ${name}!`, message: "MCPWorks is working" };\n}\n';

const median = (samples: number[]) => {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
};

const limits = sandboxLimitsFor(limitsFor('pro'));
const pooled = createBubblewrapSandbox({ network: false, launcherPool, spawner, pool: { warmLimits: [limits] } });
const cold = createBubblewrapSandbox({ network: false, launcherPool, spawner, pool: false });

async function through(sandbox: BubblewrapSandbox, language: 'python' | 'typescript', code: string): Promise<number> {
  const started = performance.now();
  const outcome = await sandbox.run({ language, code, input: { name: 'bench' }, limits });
  if (!outcome.ok) throw new Error(`${language} hello-world failed: ${JSON.stringify(outcome.error)}`);
  return performance.now() - started;
}

/**
 * Waits until the pool has refilled, so the background start of the next pooled sandbox never
 * overlaps a measurement (on 2 cores it would slow whichever series it landed in).
 */
async function settled(): Promise<void> {
  const deadline = Date.now() + 5000;
  while (pooled.poolStats()!.keys.some((key) => key.starting > 0 || key.ready < key.target)) {
    if (Date.now() > deadline) throw new Error(`the pool did not refill: ${JSON.stringify(pooled.poolStats())}`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

const samples = {
  pythonBare: [] as number[],
  pythonFlags: [] as number[],
  pythonPooled: [] as number[],
  pythonCold: [] as number[],
  nodeBare: [] as number[],
  typescriptPooled: [] as number[],
  typescriptCold: [] as number[],
};
// Warm caches (page cache, esbuild's service, the transpile cache) outside the measurement.
for (let i = 0; i < 3; i++) {
  await bare('/usr/bin/python3', ['-c', 'pass']);
  await bare(process.execPath, ['-e', '0']);
  for (const sandbox of [pooled, cold]) {
    await through(sandbox, 'python', pythonHello);
    await through(sandbox, 'typescript', typescriptHello);
  }
}
// Each sandboxed series alternates with its own baseline, so drift in machine load touches all of
// them alike; the two languages run in separate phases so a slow Node start does not skew Python's.
for (let i = 0; i < runs; i++) {
  await settled();
  samples.pythonBare.push(await bare('/usr/bin/python3', ['-c', 'pass']));
  await settled();
  samples.pythonPooled.push(await through(pooled, 'python', pythonHello));
  await settled();
  samples.pythonCold.push(await through(cold, 'python', pythonHello));
  // For reference: the interpreter with the runner's own flags (no site.py), outside any sandbox.
  samples.pythonFlags.push(await bare('/usr/bin/python3', ['-I', '-S', '-B', '-c', 'pass']));
}
for (let i = 0; i < runs; i++) {
  await settled();
  samples.nodeBare.push(await bare(process.execPath, ['-e', '0']));
  await settled();
  samples.typescriptPooled.push(await through(pooled, 'typescript', typescriptHello));
  await settled();
  samples.typescriptCold.push(await through(cold, 'typescript', typescriptHello));
}
const stats = pooled.poolStats()!;
await pooled.close();
await cold.close();

const pythonBare = median(samples.pythonBare);
const nodeBare = median(samples.nodeBare);
const rows = [
  ['Python hello-world, pooled', samples.pythonPooled, pythonBare, 'python3 -c pass', null],
  ['Python hello-world, cold', samples.pythonCold, pythonBare, 'python3 -c pass', COLD_TARGET_RATIO],
  ['TypeScript hello-world, pooled', samples.typescriptPooled, nodeBare, 'node -e 0', null],
  ['TypeScript hello-world, cold', samples.typescriptCold, nodeBare, 'node -e 0', COLD_TARGET_RATIO],
] as const;
console.log(
  `sandbox bench: ${runs} runs each, medians, ${launcherPool} pre-started launchers, spawner ${spawner ? 'on' : 'off'} (${new Date().toISOString()})`,
);
console.log(`bare /usr/bin/python3 -c pass     ${pythonBare.toFixed(1)} ms`);
console.log(`bare node -e 0                    ${nodeBare.toFixed(1)} ms`);
console.log(`(reference: python3 -I -S -B -c pass, the runner's flags, ${median(samples.pythonFlags).toFixed(1)} ms)`);
for (const [name, series, baseline, against, target] of rows) {
  const value = median(series);
  const ratio = value / baseline;
  const verdict = target === null ? '' : `  (target ≤ ${target}×: ${ratio <= target ? 'met' : 'MISSED'})`;
  console.log(`${name.padEnd(32)} ${value.toFixed(1).padStart(5)} ms  = ${ratio.toFixed(2)}× ${against}${verdict}`);
}
console.log(`pool: ${stats.hits} of ${stats.claims} pooled-series runs took a pre-started sandbox`);
