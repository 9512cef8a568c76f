// Hosts without usable cgroups: memory and process limits fall back to rlimits, and runs still work.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { sandboxLimitsFor, type Sandbox, type SandboxOutcome } from '../core/sandbox.js';
import { limitsFor } from '../core/tiers.js';
import { createBubblewrapSandbox } from './bubblewrap.js';

const pro = sandboxLimitsFor(limitsFor('pro'));
let sandbox: Sandbox;

before(() => {
  sandbox = createBubblewrapSandbox({ network: false, cgroups: false });
});
after(async () => {
  await sandbox.close();
});

function errorType(outcome: SandboxOutcome): string {
  assert.equal(outcome.ok, false, JSON.stringify(outcome));
  return (outcome as { error: { type: string } }).error.type;
}

describe('without cgroups (rlimits only)', () => {
  it('pandas and Node still start within the pro memory', async () => {
    const python = await sandbox.run({
      language: 'python',
      code: 'import pandas\nresult = int(pandas.Series([1, 2, 3]).sum())\n',
      input: {},
      limits: pro,
    });
    assert.deepEqual(python.ok && python.result, 6);
    const node = await sandbox.run({
      language: 'typescript',
      code: 'export default () => [1, 2, 3].reduce((a, b) => a + b);\n',
      input: {},
      limits: pro,
    });
    assert.deepEqual(node.ok && node.result, 6);
  });

  it('allocating 4 GB → MemoryError in both languages', async () => {
    assert.equal(
      errorType(await sandbox.run({ language: 'python', code: 'blob = bytearray(4 * 1024 ** 3)\n', input: {}, limits: pro })),
      'MemoryError',
    );
    const js =
      'export default function main() {\n  const keep: string[] = [];\n  for (;;) keep.push("x".repeat(1 << 20) + keep.length);\n}\n';
    assert.equal(errorType(await sandbox.run({ language: 'typescript', code: js, input: {}, limits: pro })), 'MemoryError');
  });

  it('a fork bomb is stopped by the process rlimit and the timeout', async () => {
    const bomb = 'import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n';
    assert.equal(
      errorType(await sandbox.run({ language: 'python', code: bomb, input: {}, limits: { ...pro, timeoutSeconds: 2 } })),
      'TimeoutError',
    );
    const after = await sandbox.run({ language: 'python', code: 'result = "still serving"\n', input: {}, limits: pro });
    assert.equal(after.ok && after.result, 'still serving');
  });
});
