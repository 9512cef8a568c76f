/**
 * What the helper's hold on the sandbox's pipes costs per answered run: median wall time of a
 * hello-world run, pooled and cold, Python and TypeScript, with the helper given as the baseline
 * (a build from before it pointed fds 0-3 at /dev/null after its fork) beside the current one,
 * alternating run by run in the same process. Indicative on a loaded machine.
 *
 *   node --import tsx bench/helper-fds.ts BASELINE_HELPER [--runs N]
 */
import { parseArgs } from 'node:util';
import { sandboxLimitsFor } from '../src/core/sandbox.js';
import { limitsFor } from '../src/core/tiers.js';
import { createBubblewrapSandbox, type BubblewrapSandbox } from '../src/sandbox/bubblewrap.js';

const { values, positionals } = parseArgs({ allowPositionals: true, options: { runs: { type: 'string', default: '21' } } });
const baseline = positionals[0];
if (!baseline) throw new Error('usage: bench/helper-fds.ts BASELINE_HELPER [--runs N]');
const runs = Number(values.runs);
const limits = sandboxLimitsFor(limitsFor('pro'));
const code = {
  python: 'def main(input_data):\n    return {"greeting": "Hello"}\n',
  typescript: 'export default function main() {\n  return { greeting: "Hello" };\n}\n',
};
const median = (samples: number[]) => [...samples].sort((a, b) => a - b)[Math.floor(samples.length / 2)]!;

async function timed(sandbox: BubblewrapSandbox, language: 'python' | 'typescript'): Promise<number> {
  const started = performance.now();
  const outcome = await sandbox.run({ language, code: code[language], input: {}, limits });
  if (!outcome.ok) throw new Error(`${language} run failed: ${JSON.stringify(outcome.error)}`);
  return performance.now() - started;
}

for (const route of ['pooled', 'cold'] as const) {
  const pool = route === 'pooled' ? { warmLimits: [limits] } : false;
  const before = createBubblewrapSandbox({ network: false, pool, zygote: false, paths: { helper: baseline } });
  const after = createBubblewrapSandbox({ network: false, pool, zygote: false });
  try {
    for (const language of ['python', 'typescript'] as const) {
      for (let i = 0; i < 3; i++) await Promise.all([timed(before, language), timed(after, language)]);
      const samples = { before: [] as number[], after: [] as number[] };
      for (let i = 0; i < runs; i++) {
        samples.before.push(await timed(before, language));
        samples.after.push(await timed(after, language));
        // Pooled: give both pools the same time to refill.
        await new Promise((resolve) => setTimeout(resolve, 150));
      }
      const [b, a] = [median(samples.before), median(samples.after)];
      console.log(
        `${route} ${language}: median ${b.toFixed(1)} ms with the baseline helper, ${a.toFixed(1)} ms now (ratio ${(a / b).toFixed(2)})`,
      );
    }
  } finally {
    await Promise.all([before.close(), after.close()]);
  }
}
