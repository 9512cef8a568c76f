// The tier table's sandbox limits (timeout, memory, result size) in tool mode, code mode and through the bridge, in both languages.
// Through the real server and the official SDK clients; each test then checks /healthz and the
// meter. scripts/mutation/mutants.json names the enforcing lines this file must catch.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { DEFAULT_TIERS, type TierLimits } from '../core/tiers.js';
import { parseResult } from '../test-support/harness.js';
import { startRuleServer, type RuleServer, execute, failureType } from '../test-support/spaces.js';

const pro = DEFAULT_TIERS.pro!;
const unlimited = { monthlyExecutions: null, executionsPerMinute: null, concurrency: null };
const TIERS: Record<string, TierLimits> = {
  ...DEFAULT_TIERS,
  // Out of memory takes the kernel a few seconds on a busy machine: the memory tier's timeout is long.
  tight: { ...pro, ...unlimited, timeoutSeconds: 60, memoryMb: 128, maxResultBytes: 64 * 1024 },
  brief: { ...pro, ...unlimited, timeoutSeconds: 2 },
};

let t: RuleServer;
before(async () => {
  t = await startRuleServer(TIERS);
});
after(async () => {
  await t?.stop();
});

describe('tier limits on every path', () => {
  // The `brief` tier: 2 s; the `tight` tier: 128 MB, 64 KB results.
  const SLEEP_PY = 'import time\ndef main(input_data):\n    time.sleep(6)\n    return "slept"\n';
  const SLEEP_TS = 'export default async function main() { await new Promise((r) => setTimeout(r, 6000)); return "slept"; }';
  const HOG_PY = 'def main(input_data):\n    block = b"x" * (300 * 1024 * 1024)\n    return len(block)\n';
  const HOG_TS = 'export default function main() { return Buffer.alloc(300 * 1024 * 1024, 1).length; }';
  const BIG_PY = 'def main(input_data):\n    return "x" * 100000\n';
  const BIG_TS = 'export default function main() { return "x".repeat(100000); }';
  const functions = [
    { name: 'py-sleep', code: SLEEP_PY },
    { name: 'ts-sleep', language: 'typescript', code: SLEEP_TS },
    { name: 'py-hog', code: HOG_PY },
    { name: 'ts-hog', language: 'typescript', code: HOG_TS },
    { name: 'py-big', code: BIG_PY },
    { name: 'ts-big', language: 'typescript', code: BIG_TS },
  ];
  const CASES = [
    ['sleep', 'TimeoutError', 'brief'],
    ['hog', 'MemoryError', 'tight'],
    ['big', 'OutputSizeError', 'tight'],
  ] as const;
  const catching = {
    python: (fn: string) => `from functions import ${fn}\ntry:\n    result = {"value": ${fn}()}\nexcept Exception as error:\n    result = {"caught": error.error_type}`,
    typescript: (fn: string) => `import { ${fn} } from "functions";\ntry { result = { value: await ${fn}() }; } catch (error: any) { result = { caught: error.errorType }; }`,
  };
  const inline = {
    python: { sleep: 'import time\ntime.sleep(6)\nresult = "slept"', hog: 'block = b"x" * (300 * 1024 * 1024)\nresult = len(block)', big: 'result = "x" * 100000' },
    typescript: {
      sleep: 'await new Promise((r) => setTimeout(r, 6000));\nresult = "slept";',
      hog: 'result = Buffer.alloc(300 * 1024 * 1024, 1).length;',
      big: 'result = "x".repeat(100000);',
    },
  };

  test('timeout, memory and result size hold in tool mode, code mode and through the bridge, in both languages', async () => {
    const spaces = { brief: await t.space(functions, 'brief'), tight: await t.space(functions, 'tight') };
    let runs = 0;
    for (const [what, type, tier] of CASES) {
      const tools = await spaces[tier].run('tools');
      const code = await spaces[tier].run('code');
      for (const language of ['python', 'typescript'] as const) {
        const short = language === 'python' ? 'py' : 'ts';
        const other = language === 'python' ? 'ts' : 'py';
        assert.equal(parseResult(await tools.callTool(`utils__${short}-${what}`)).error_type, type, `tool mode ${short}-${what}`);
        assert.equal(failureType(await execute(code, inline[language][what], language)), type, `code mode ${language} ${what}`);
        // The other language's function runs in a sandbox of its own, under the same tier.
        assert.equal(failureType(await execute(code, catching[language](`${other}_${what}`), language)), type, `bridge ${language} → ${other}-${what}`);
        runs += 3;
      }
    }
    await t.assertHealthy();
    const counted = (await t.usage(spaces.brief.account)).executions + (await t.usage(spaces.tight.account)).executions;
    assert.equal(counted, runs, 'every run counted');
    assert.equal((await t.usage(spaces.tight.account)).active + (await t.usage(spaces.brief.account)).active, 0);
  });
});
