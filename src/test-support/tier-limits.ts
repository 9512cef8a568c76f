/**
 * One tier limit (timeout, memory, result size) attacked on every path: tool mode, code mode, and a
 * cross-language bridge call, in both languages; then /healthz and the meter. Used by
 * src/run/tier-*.test.ts, one file per limit so each can run on its own.
 */
import assert from 'node:assert/strict';
import { parseResult } from './harness.js';
import { execute, failureType, type RuleServer } from './spaces.js';
import type { ZygoteStats } from '../sandbox/zygote/pool.js';

export type LimitAttack = 'sleep' | 'hog' | 'big';

const FUNCTIONS: Record<LimitAttack, { python: string; typescript: string }> = {
  sleep: {
    python: 'import time\ndef main(input_data):\n    time.sleep(6)\n    return "slept"\n',
    typescript: 'export default async function main() { await new Promise((r) => setTimeout(r, 6000)); return "slept"; }',
  },
  hog: {
    python: 'def main(input_data):\n    block = b"x" * (300 * 1024 * 1024)\n    return len(block)\n',
    typescript: 'export default function main() { return Buffer.alloc(300 * 1024 * 1024, 1).length; }',
  },
  big: {
    python: 'def main(input_data):\n    return "x" * 100000\n',
    typescript: 'export default function main() { return "x".repeat(100000); }',
  },
};

const INLINE: Record<LimitAttack, { python: string; typescript: string }> = {
  sleep: {
    python: 'import time\ntime.sleep(6)\nresult = "slept"',
    typescript: 'await new Promise((r) => setTimeout(r, 6000));\nresult = "slept";',
  },
  hog: {
    python: 'block = b"x" * (300 * 1024 * 1024)\nresult = len(block)',
    typescript: 'result = Buffer.alloc(300 * 1024 * 1024, 1).length;',
  },
  big: { python: 'result = "x" * 100000', typescript: 'result = "x".repeat(100000);' },
};

// The caller keeps only whether the callee returned: a callee's oversized result must be refused
// at the callee, not only later by the caller's own limit.
const CATCHING = {
  python: (fn: string) =>
    `from functions import ${fn}\ntry:\n    ${fn}()\n    result = {"value": "returned"}\nexcept Exception as error:\n    result = {"caught": error.error_type}`,
  typescript: (fn: string) =>
    `import { ${fn} } from "functions";\ntry { await ${fn}(); result = { value: "returned" }; } catch (error: any) { result = { caught: error.errorType }; }`,
};

/** Runs `attack` on every path for an account on `tier`; each run must fail with `expectedType`. */
export async function limitHoldsOnEveryPath(t: RuleServer, attack: LimitAttack, tier: string, expectedType: string): Promise<void> {
  const s = await t.space(
    [
      { name: `py-${attack}`, code: FUNCTIONS[attack].python },
      { name: `ts-${attack}`, language: 'typescript', code: FUNCTIONS[attack].typescript },
    ],
    tier,
  );
  const tools = await s.run('tools');
  const code = await s.run('code');
  for (const language of ['python', 'typescript'] as const) {
    const short = language === 'python' ? 'py' : 'ts';
    const other = language === 'python' ? 'ts' : 'py';
    assert.equal(parseResult(await tools.callTool(`utils__${short}-${attack}`)).error_type, expectedType, `tool mode ${short}-${attack}`);
    assert.equal(failureType(await execute(code, INLINE[attack][language], language)), expectedType, `code mode ${language}`);
    // The other language's function runs in a sandbox of its own, under the same tier.
    assert.equal(
      failureType(await execute(code, CATCHING[language](`${other}_${attack}`), language)),
      expectedType,
      `bridge ${language} → ${other}-${attack}`,
    );
  }
  // Python again in a child of the namespace's zygote, once it is ready: the runs above may take the
  // ordinary path while it starts, and a zygote child has a timer and limits of its own.
  const zygotes = (t.server.server.services.sandbox as { zygoteStats?(): ZygoteStats | null }).zygoteStats?.bind(
    t.server.server.services.sandbox,
  );
  let zygoteRuns = 0;
  if (zygotes?.()) {
    const ready = () => zygotes()!.zygotes.some((zygote) => zygote.state === 'ready' && zygote.spares > 0);
    for (let waited = 0; waited < 30_000 && !ready(); waited += 50) await new Promise((resolve) => setTimeout(resolve, 50));
    assert.ok(ready(), "the namespace's zygote is ready");
    const before = zygotes()!.runs;
    assert.equal(parseResult(await tools.callTool(`utils__py-${attack}`)).error_type, expectedType, `zygote: tool mode py-${attack}`);
    assert.equal(failureType(await execute(code, INLINE[attack].python, 'python')), expectedType, 'zygote: code mode python');
    assert.equal(zygotes()!.runs, before + 2, 'both ran in zygote children');
    zygoteRuns = 2;
  }
  await t.assertHealthy();
  assert.deepEqual(await t.usage(s.account), { executions: 6 + zygoteRuns, active: 0 }, 'every run counted, every slot freed');
}
