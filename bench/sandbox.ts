/**
 * Sandbox start-up latency: median wall time of a hello-world run through the real sandbox in
 * Python and TypeScript, beside bare `/usr/bin/python3 -c pass` and `node -e 0` measured in the
 * same run with the same spawn path. Target (issue 4, a fresh sandbox per run): ≤ 1.8× bare.
 *
 *   bench/sandbox [--runs N] [--launcher-pool N]   (--launcher-pool 0: no pre-started launchers)
 */
import { spawn } from 'node:child_process';
import { parseArgs } from 'node:util';
import { sandboxLimitsFor } from '../src/core/sandbox.js';
import { limitsFor } from '../src/core/tiers.js';
import { createBubblewrapSandbox } from '../src/sandbox/bubblewrap.js';

const TARGET_RATIO = 1.8;
const { values } = parseArgs({ options: { runs: { type: 'string', default: '41' }, 'launcher-pool': { type: 'string', default: '2' } } });
const runs = Number(values.runs);
const launcherPool = Number(values['launcher-pool']);

const pythonHello = 'def main(input_data):\n    name = input_data.get("name", "World")\n    return {"greeting": f"Hello, {name}!", "message": "MCPWorks is working"}\n';
const typescriptHello = 'export default function main(input: { name?: string }) {\n  const name = input.name ?? "World";\n  return { greeting: `Hello, ${name}!`, message: "MCPWorks is working" };\n}\n';

function bare(command: string, args: string[]): Promise<number> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    // A clean environment, as the sandbox gets: under tsx, NODE_OPTIONS would load tsx into `node -e 0`.
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: '/usr/local/bin:/usr/bin:/bin', HOME: '/tmp', LANG: 'C.UTF-8' } });
    child.stdout.resume();
    child.stderr.resume();
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(performance.now() - started) : reject(new Error(`${command} exited ${code}`))));
  });
}

const median = (samples: number[]) => {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
};

const sandbox = createBubblewrapSandbox({ network: false, launcherPool });
const limits = sandboxLimitsFor(limitsFor('pro'));
async function throughSandbox(language: 'python' | 'typescript', code: string): Promise<number> {
  const started = performance.now();
  const outcome = await sandbox.run({ language, code, input: { name: 'bench' }, limits });
  if (!outcome.ok) throw new Error(`${language} hello-world failed: ${JSON.stringify(outcome.error)}`);
  return performance.now() - started;
}

const samples = { python: [] as number[], pythonBare: [] as number[], pythonFlags: [] as number[], typescript: [] as number[], nodeBare: [] as number[] };
// Warm caches (page cache, esbuild's service, the transpile cache) outside the measurement.
for (let i = 0; i < 3; i++) {
  await bare('/usr/bin/python3', ['-c', 'pass']);
  await bare(process.execPath, ['-e', '0']);
  await throughSandbox('python', pythonHello);
  await throughSandbox('typescript', typescriptHello);
}
// Each sandboxed series alternates with its own baseline, so drift in machine load touches both
// alike; the two languages run in separate phases so a 60 ms Node start does not skew Python's pair.
for (let i = 0; i < runs; i++) {
  samples.pythonBare.push(await bare('/usr/bin/python3', ['-c', 'pass']));
  samples.python.push(await throughSandbox('python', pythonHello));
  // For reference: the interpreter with the runner's own flags (no site.py), outside any sandbox.
  samples.pythonFlags.push(await bare('/usr/bin/python3', ['-I', '-S', '-B', '-c', 'pass']));
}
for (let i = 0; i < runs; i++) {
  samples.nodeBare.push(await bare(process.execPath, ['-e', '0']));
  samples.typescript.push(await throughSandbox('typescript', typescriptHello));
}
await sandbox.close();

const rows = [
  ['Python hello-world (sandbox)', median(samples.python), median(samples.pythonBare), '/usr/bin/python3 -c pass'],
  ['TypeScript hello-world (sandbox)', median(samples.typescript), median(samples.nodeBare), 'node -e 0'],
] as const;
console.log(`sandbox bench: ${runs} runs each, medians, fresh sandbox per run, ${launcherPool} pre-started launchers (${new Date().toISOString()})`);
console.log(`bare /usr/bin/python3 -c pass   ${median(samples.pythonBare).toFixed(1)} ms`);
console.log(`bare node -e 0                  ${median(samples.nodeBare).toFixed(1)} ms`);
console.log(`(reference: python3 -I -S -B -c pass, the runner's flags, ${median(samples.pythonFlags).toFixed(1)} ms)`);
for (const [name, sandboxed, baseline, against] of rows) {
  const ratio = sandboxed / baseline;
  console.log(`${name.padEnd(32)} ${sandboxed.toFixed(1)} ms  = ${ratio.toFixed(2)}× ${against}  (target ≤ ${TARGET_RATIO}×: ${ratio <= TARGET_RATIO ? 'met' : 'MISSED'})`);
}
