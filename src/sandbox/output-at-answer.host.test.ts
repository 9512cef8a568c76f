// A run ends at its answer (execute.ts, wire/drain.ts): what it printed before answering is all in
// its output, exactly, with no wait for its pipes' end; and nothing the run's code writes on stdout,
// stderr or the answer channel makes the host cut its output short, add to it, or take a wrong result.
// Pooled and cold sandboxes, zygotes off so Python takes the same path.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { LOG_CAP_BYTES, sandboxLimitsFor, type SandboxOutcome, type SandboxRequest } from '../core/sandbox.js';
import { limitsFor } from '../core/tiers.js';
import { createBubblewrapSandbox, type BubblewrapSandbox } from './bubblewrap.js';

const pro = sandboxLimitsFor(limitsFor('pro'));
const sandboxes: Record<'pooled' | 'cold', BubblewrapSandbox | null> = { pooled: null, cold: null };

before(() => {
  sandboxes.pooled = createBubblewrapSandbox({ network: false, zygote: false, pool: { minSize: 2 } });
  sandboxes.cold = createBubblewrapSandbox({ network: false, zygote: false, pool: false });
});
after(async () => {
  await Promise.all(Object.values(sandboxes).map((sandbox) => sandbox?.close()));
});

function expectOk(outcome: SandboxOutcome): Extract<SandboxOutcome, { ok: true }> {
  assert.equal(outcome.ok, true, `expected success, got ${JSON.stringify(outcome).slice(0, 2000)}`);
  return outcome as Extract<SandboxOutcome, { ok: true }>;
}

/** What the host keeps of `bytes` characters printed: all up to the cap, then the count of the rest. */
function kept(char: string, bytes: number): string {
  const shown = char.repeat(Math.min(bytes, LOG_CAP_BYTES));
  return bytes > LOG_CAP_BYTES ? `${shown}\n[output cut: ${bytes - LOG_CAP_BYTES} more bytes not shown]\n` : shown;
}

const SIZES = [LOG_CAP_BYTES, LOG_CAP_BYTES + 1, 3_000_000];

for (const where of ['pooled', 'cold'] as const) {
  describe(`a ${where} run's output at its answer`, () => {
    const run = (language: SandboxRequest['language'], code: string, input: unknown = {}) =>
      sandboxes[where]!.run({ language, code, input, limits: pro });

    it('everything printed right before the answer is there, exactly: at the cap, one byte over, 3 MB', async () => {
      // process.stdout/stderr (Node queues a write once the socket is full) and fs.writeSync on fds 1 and 2.
      const typescript = `import { writeSync } from "node:fs";
export default function main(input: { n: number; how: string }) {
  if (input.how === "stream") { process.stdout.write("o".repeat(input.n)); process.stderr.write("e".repeat(input.n)); }
  else { writeSync(1, "o".repeat(input.n)); writeSync(2, "e".repeat(input.n)); }
  return input.n;
}
`;
      const python =
        'import sys\ndef main(input_data):\n    sys.stdout.write("o" * input_data["n"])\n    sys.stderr.write("e" * input_data["n"])\n    return input_data["n"]\n';
      for (const n of SIZES) {
        for (const how of ['stream', 'fd']) {
          const outcome = expectOk(await run('typescript', typescript, { n, how }));
          assert.equal(outcome.result, n);
          assert.equal(outcome.stdout, kept('o', n), `typescript ${how} stdout, ${n} bytes`);
          assert.equal(outcome.stderr, kept('e', n), `typescript ${how} stderr, ${n} bytes`);
        }
        const outcome = expectOk(await run('python', python, { n }));
        assert.equal(outcome.stdout, kept('o', n), `python stdout, ${n} bytes`);
        assert.equal(outcome.stderr, kept('e', n), `python stderr, ${n} bytes`);
      }
    });

    it('a child that left stdout and stderr non-blocking (a Node child killed): what is printed after is all there', async () => {
      // Node sets its stdio sockets non-blocking and restores them only on an orderly exit; the flag
      // belongs to the open file the runner shares with it.
      const n = 3_000_000;
      const typescript = `import { spawn } from "node:child_process";
export default async function main() {
  // It says on its fd 3 once it has printed (its stdout and stderr set up), then waits to be killed.
  const script = "process.stdout.write('c'); process.stderr.write('c'); require('fs').writeSync(3, 'up'); setInterval(() => {}, 1000)";
  const child = spawn(process.execPath, ["-e", script], { stdio: ["ignore", "inherit", "inherit", "pipe"] });
  await new Promise((resolve) => child.stdio[3]!.once("data", resolve));
  child.kill("SIGKILL");
  await new Promise((resolve) => child.once("exit", resolve));
  process.stdout.write("o".repeat(${n}));
  process.stderr.write("e".repeat(${n}));
  return "after the child";
}
`;
      const outcome = expectOk(await run('typescript', typescript));
      assert.equal(outcome.result, 'after the child');
      const shown = (char: string) => `c${char.repeat(LOG_CAP_BYTES - 1)}\n[output cut: ${n + 1 - LOG_CAP_BYTES} more bytes not shown]\n`;
      assert.equal(outcome.stdout, shown('o'));
      assert.equal(outcome.stderr, shown('e'));
    });

    it('an answer, a ready line or an end printed on stdout or stderr is output like any other', async () => {
      const lines = ['{"ready":true}', '{"ok":true,"result":"forged"}', '{"end":true}'];
      const outcome = expectOk(
        await run(
          'typescript',
          `export default () => {\n  for (const line of ${JSON.stringify(lines)}) { console.log(line); console.error(line); }\n  console.log("after");\n  return "real";\n};\n`,
        ),
      );
      assert.equal(outcome.result, 'real');
      assert.equal(outcome.stdout, `${lines.join('\n')}\nafter\n`);
      assert.equal(outcome.stderr, `${lines.join('\n')}\n`);
      const python = expectOk(
        await run(
          'python',
          `import sys\nfor line in ${JSON.stringify(lines)}:\n    print(line)\n    print(line, file=sys.stderr)\nresult = "real"\n`,
        ),
      );
      assert.equal(python.result, 'real');
      assert.equal(python.stdout, `${lines.join('\n')}\n`);
    });

    it("the code's own answer line, split across writes with output between: the host waits for its end and keeps that output", async () => {
      const outcome = expectOk(
        await run(
          'typescript',
          `import { writeSync } from "node:fs";
export default () => {
  writeSync(3, '{"ok":true,"res');
  process.stdout.write("x".repeat(100000));
  writeSync(3, 'ult":"its own"}\\n');
  return "the runner's";
};
`,
        ),
      );
      // The first line on the answer channel is the answer: the code's, as before.
      assert.equal(outcome.result, 'its own');
      assert.equal(outcome.stdout, kept('x', 100000));
    });

    it('a stdout that throws, or stdout and stderr closed by the code: the answer still comes, with what was printed', async () => {
      const thrown = await run(
        'typescript',
        'export default () => {\n  console.log("printed");\n  process.stdout.write = () => { throw new Error("stdout refuses"); };\n  process.stdout.write("lost");\n  return "never";\n};\n',
      );
      assert.equal(thrown.ok, false);
      const { error, stdout } = thrown as Extract<SandboxOutcome, { ok: false }>;
      assert.deepEqual([error.type, error.message, stdout], ['Error', 'stdout refuses', 'printed\n']);
      const closed = expectOk(
        await run(
          'typescript',
          'import { closeSync } from "node:fs";\nexport default () => {\n  console.log("before");\n  console.error("said");\n  closeSync(1);\n  closeSync(2);\n  return "closed";\n};\n',
        ),
      );
      assert.deepEqual([closed.result, closed.stdout, closed.stderr], ['closed', 'before\n', 'said\n']);
    });

    it("Python code that closes, replaces or blocks its own streams gets its own answer, never the runner's traceback", async () => {
      // Each way the runner reaches its answer: a result, main()'s return, sys.exit(0), os._exit(0),
      // an exception, after sys.stdout closed, set to None, or left non-blocking behind a full pipe.
      const tamper = [
        'import sys\nprint("before")\nsys.stdout.close()',
        'import sys\nprint("before")\nsys.stdout = None\nsys.stderr = None',
        'import os, sys\nprint("before")\nos.set_blocking(1, False)\ntry:\n    sys.stdout.write("x" * 3_000_000)\nexcept BlockingIOError:\n    pass',
      ];
      const endings: [string, (outcome: SandboxOutcome) => void][] = [
        ['result = "kept"', (outcome) => assert.equal(expectOk(outcome).result, 'kept')],
        ['def main(input_data):\n    return "kept"', (outcome) => assert.equal(expectOk(outcome).result, 'kept')],
        ['result = "kept"\nraise SystemExit(0)', (outcome) => assert.equal(expectOk(outcome).result, 'kept')],
        ['import os\nresult = "kept"\nos._exit(0)', (outcome) => assert.equal(expectOk(outcome).result, 'kept')],
        [
          'raise ValueError("mine")',
          (outcome) => {
            assert.equal(outcome.ok, false, JSON.stringify(outcome).slice(0, 2000));
            const { error } = outcome as Extract<SandboxOutcome, { ok: false }>;
            assert.deepEqual([error.type, error.message], ['ValueError', 'mine']);
          },
        ],
      ];
      for (const first of tamper) {
        for (const [ending, check] of endings) {
          const outcome = await run('python', `${first}\n${ending}\n`);
          check(outcome);
          assert.doesNotMatch(JSON.stringify(outcome), /runner\.py/);
        }
      }
    });
  });
}
