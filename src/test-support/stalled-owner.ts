/**
 * A process that owns a sandbox and starts one run in it, for tests that stall it (SIGSTOP) while
 * the run sleeps: `tsx stalled-owner.ts cold|pooled|zygote python|typescript MARKER`. It prints
 * `{"running":true}` once the run is handed over (its code then starts `/bin/sleep MARKER`), and
 * the run's outcome as one JSON line when it ends. The run's limits: 5 s of wall and CPU time (a cold start on a loaded machine can take 2 s before its code runs).
 */
import { sandboxLimitsFor, type SandboxLimits, type SandboxRequest } from '../core/sandbox.js';
import { DEFAULT_TIER, limitsFor } from '../core/tiers.js';
import { createBubblewrapSandbox } from '../sandbox/bubblewrap.js';

const [path, language, marker] = process.argv.slice(2) as ['cold' | 'pooled' | 'zygote', 'python' | 'typescript', string];
const limits: SandboxLimits = { ...sandboxLimitsFor(limitsFor(DEFAULT_TIER)), timeoutSeconds: 5, cpuSeconds: 5 };
const warm = path === 'zygote' ? { group: 'stalled-owner', imports: [] } : undefined;
const sandbox = createBubblewrapSandbox({
  network: false,
  pool: path === 'pooled' ? { minSize: 1, warmLimits: [limits] } : false,
  zygote: path === 'zygote',
});
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const request = (code: string, entry: SandboxRequest['entry'] = 'main'): SandboxRequest => ({
  language,
  code,
  input: {},
  limits,
  warm,
  entry,
});

if (path === 'pooled') {
  const ready = () => (sandbox.poolStats()?.keys ?? []).some((key) => key.ready > 0 && key.label.startsWith(language));
  for (let waited = 0; !ready() && waited < 30_000; waited += 50) await sleep(50);
  if (!ready()) throw new Error('no pooled sandbox became ready');
}
if (path === 'zygote') {
  for (let waited = 0; ; waited += 100) {
    const before = sandbox.zygoteStats()!.runs;
    await sandbox.run(request('result = 1', 'script'));
    if (sandbox.zygoteStats()!.runs > before) break;
    if (waited > 60_000) throw new Error('the zygote never became ready');
    await sleep(100);
  }
}
const code =
  language === 'python'
    ? `import subprocess\n\ndef main(input_data):\n    subprocess.run(["/bin/sleep", "${marker}"])\n    return 1\n`
    : `import { execFileSync } from "node:child_process";\nexport default function main() {\n  execFileSync("/bin/sleep", ["${marker}"]);\n  return 1;\n}\n`;
const hits = { pool: sandbox.poolStats()?.hits ?? 0, zygote: sandbox.zygoteStats()?.runs ?? 0 };
const running = sandbox.run(request(code));
process.stdout.write(`${JSON.stringify({ running: true })}\n`);
const outcome = await running;
const served =
  path === 'pooled' ? sandbox.poolStats()!.hits > hits.pool : path === 'zygote' ? sandbox.zygoteStats()!.runs > hits.zygote : true;
process.stdout.write(`${JSON.stringify({ outcome, served })}\n`);
await sandbox.close();
