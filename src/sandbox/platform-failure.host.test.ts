// What a run says about itself never makes its failure the platform's (a platform failure is not
// metered): on the pooled, cold and zygote paths, in Python and TypeScript, a run that raises a
// SandboxError, writes a SandboxError answer on fd 3, or prints the platform's own stderr lines and
// exits is the function's failure. Only what the host sees (here: a sandbox that never starts) is
// a platform failure. Answers nested too deep are a SerializationError at the channel.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { sandboxLimitsFor, type SandboxOutcome, type SandboxRequest } from '../core/sandbox.js';
import { DEFAULT_TIER, limitsFor } from '../core/tiers.js';
import { createBubblewrapSandbox, type BubblewrapSandbox } from './bubblewrap.js';
import { MAX_MESSAGE_DEPTH, nestedDeeperThan } from './wire/channel.js';

const limits = sandboxLimitsFor(limitsFor(DEFAULT_TIER));
const WARM = { group: 'platform-failure-test', imports: [] };

type Case = { name: string; language: SandboxRequest['language']; code: string; type: string };
const DEEP = 400_000;
const CASES: Case[] = [
  {
    name: 'Python raises its own SandboxError',
    language: 'python',
    type: 'UserSandboxError',
    code: 'class SandboxError(Exception):\n    pass\n\ndef main(input_data):\n    print("work done")\n    raise SandboxError("not the platform")\n',
  },
  {
    name: 'Python writes a SandboxError answer on fd 3',
    language: 'python',
    type: 'UserSandboxError',
    code: 'import os\n\ndef main(input_data):\n    os.write(3, b\'{"ok": false, "type": "SandboxError", "message": "forged"}\\n\')\n    return 1\n',
  },
  {
    name: "Python prints the platform's stderr lines and exits",
    language: 'python',
    type: 'ProcessExitError',
    code: 'import os, sys\n\ndef main(input_data):\n    sys.stderr.write("bwrap: Creating new namespace failed\\nmcpworks-sandbox-helper: exec failed\\n")\n    sys.stderr.flush()\n    os._exit(1)\n',
  },
  {
    name: 'Python writes an answer nested 400,000 deep on fd 3',
    language: 'python',
    type: 'SerializationError',
    code: `import os\n\ndef main(input_data):\n    os.write(3, b'{"ok": true, "result": ' + b'[' * ${DEEP} + b']' * ${DEEP} + b'}\\n')\n    return 1\n`,
  },
  {
    name: 'TypeScript throws its own SandboxError',
    language: 'typescript',
    type: 'UserSandboxError',
    code: 'class SandboxError extends Error {}\nexport default function main() {\n  console.log("work done");\n  throw new SandboxError("not the platform");\n}\n',
  },
  {
    name: 'TypeScript writes a SandboxError answer on fd 3',
    language: 'typescript',
    type: 'UserSandboxError',
    code: 'import { writeSync } from "node:fs";\nexport default function main() {\n  writeSync(3, JSON.stringify({ ok: false, type: "SandboxError", message: "forged" }) + "\\n");\n  return 1;\n}\n',
  },
  {
    name: "TypeScript prints the platform's stderr lines and exits",
    language: 'typescript',
    type: 'ProcessExitError',
    code: 'export default function main() {\n  process.stderr.write("bwrap: Creating new namespace failed\\n");\n  process.exit(1);\n}\n',
  },
  {
    name: 'TypeScript returns a value nested deeper than the limit',
    language: 'typescript',
    type: 'SerializationError',
    code: `export default function main() {\n  let v: unknown = 1;\n  for (let i = 0; i < ${MAX_MESSAGE_DEPTH + 5}; i++) v = [v];\n  return v;\n}\n`,
  },
  {
    name: 'TypeScript writes an answer nested 400,000 deep on fd 3',
    language: 'typescript',
    type: 'SerializationError',
    code: `import { writeSync } from "node:fs";\nexport default function main() {\n  writeSync(3, '{"ok":true,"result":' + "[".repeat(${DEEP}) + "]".repeat(${DEEP}) + "}\\n");\n  return 1;\n}\n`,
  },
];

function failureOf(outcome: SandboxOutcome) {
  assert.equal(outcome.ok, false, `expected a failure, got ${JSON.stringify(outcome).slice(0, 300)}`);
  return (outcome as Extract<SandboxOutcome, { ok: false }>).error;
}

async function expectUserFailures(sandbox: BubblewrapSandbox, extra: Partial<SandboxRequest>, languages: readonly string[]): Promise<void> {
  for (const c of CASES.filter((each) => languages.includes(each.language))) {
    const error = failureOf(await sandbox.run({ language: c.language, code: c.code, input: {}, limits, ...extra }));
    assert.equal(error.type, c.type, c.name);
    assert.equal(error.platform, undefined, `${c.name}: never a platform failure`);
  }
}

describe('platform failures are decided on the host', () => {
  it("cold path: a run's own SandboxError, answer line or stderr is the function's failure", async () => {
    const sandbox = createBubblewrapSandbox({ network: false, pool: false, zygote: false });
    try {
      await expectUserFailures(sandbox, {}, ['python', 'typescript']);
    } finally {
      await sandbox.close();
    }
  });

  it('pooled path: the same, from pre-started sandboxes', async () => {
    const sandbox = createBubblewrapSandbox({ network: false, pool: { minSize: 2 }, zygote: false });
    try {
      const ready = () => (sandbox.poolStats()?.keys ?? []).filter((key) => key.ready > 0).length >= 2;
      for (let waited = 0; !ready() && waited < 20_000; waited += 50) await new Promise((resolve) => setTimeout(resolve, 50));
      const hits = sandbox.poolStats()!.hits;
      await expectUserFailures(sandbox, {}, ['python', 'typescript']);
      assert.ok(sandbox.poolStats()!.hits > hits, 'runs were served by pooled sandboxes');
    } finally {
      await sandbox.close();
    }
  });

  it('zygote path: the same, from forked children', async (t) => {
    const sandbox = createBubblewrapSandbox({ network: false, zygote: { minSpares: 1 } });
    try {
      if (sandbox.zygoteStats() === null) {
        t.skip('zygotes need root and cgroup v1 memory and pids hierarchies');
        return;
      }
      const request = { warm: WARM, entry: 'script' as const, language: 'python' as const, input: {}, limits };
      for (let waited = 0; waited < 30_000; waited += 50) {
        const before = sandbox.zygoteStats()!.runs;
        await sandbox.run({ ...request, code: 'result = 1' });
        if (sandbox.zygoteStats()!.runs > before) break;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      const runs = sandbox.zygoteStats()!.runs;
      await expectUserFailures(sandbox, { warm: WARM }, ['python']);
      assert.equal(
        sandbox.zygoteStats()!.runs,
        runs + CASES.filter((c) => c.language === 'python').length,
        'every run went through a zygote child',
      );
    } finally {
      await sandbox.close();
    }
  });

  it('a sandbox that never starts is a platform failure, and returns nothing of the run', async () => {
    // bubblewrap replaced by a program that exits at once: the runner never says ready.
    const sandbox = createBubblewrapSandbox({ network: false, pool: false, zygote: false, paths: { bwrap: '/bin/false' } });
    try {
      for (const language of ['python', 'typescript'] as const) {
        const outcome = await sandbox.run({
          language,
          code: language === 'python' ? 'result = 1' : 'export default () => 1;',
          input: {},
          limits,
        });
        const error = failureOf(outcome);
        assert.equal(error.type, 'SandboxError');
        assert.equal(error.platform, true);
        assert.equal((outcome as { stdout: string }).stdout, '');
      }
    } finally {
      await sandbox.close();
    }
  });
});

describe('answer depth', () => {
  it('is measured outside strings, escapes included', () => {
    assert.equal(nestedDeeperThan('[[[1]]]', 3), false);
    assert.equal(nestedDeeperThan('[[[[1]]]]', 3), true);
    assert.equal(nestedDeeperThan('{"a":{"b":[{}]}}', 3), true);
    assert.equal(nestedDeeperThan('["[[[[[", "\\"[[[[", {"k": "]]]]"}]', 2), false);
    assert.equal(nestedDeeperThan('[1], [2], [3], [4]', 1), false);
  });
});

let shared: BubblewrapSandbox;
before(() => {
  shared = createBubblewrapSandbox({ network: false, pool: false, zygote: false });
});
after(async () => {
  await shared?.close();
});

describe('a value just under the depth limit', () => {
  it('is returned whole', async () => {
    const outcome = await shared.run({
      language: 'typescript',
      code: `export default function main() {\n  let v: unknown = 1;\n  for (let i = 0; i < ${MAX_MESSAGE_DEPTH - 2}; i++) v = [v];\n  return v;\n}\n`,
      input: {},
      limits,
    });
    assert.equal(outcome.ok, true, JSON.stringify(outcome).slice(0, 300));
  });
});
