// The function contracts of both languages and every typed failure, through the real bubblewrap sandbox.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { sandboxLimitsFor, type Sandbox, type SandboxOutcome, type SandboxRequest } from '../core/sandbox.js';
import { PYTHON_PACKAGES } from '../core/python-packages.js';
import { limitsFor } from '../core/tiers.js';
import { createBubblewrapSandbox } from './bubblewrap.js';

const pro = sandboxLimitsFor(limitsFor('pro'));
let sandbox: Sandbox;

before(() => {
  sandbox = createBubblewrapSandbox({ network: false });
});
after(async () => {
  await sandbox.close();
});

function run(
  language: SandboxRequest['language'],
  code: string,
  input: unknown = {},
  extra: Partial<SandboxRequest> = {},
): Promise<SandboxOutcome> {
  return sandbox.run({ language, code, input, limits: pro, ...extra });
}

function expectOk(outcome: SandboxOutcome): Extract<SandboxOutcome, { ok: true }> {
  assert.equal(outcome.ok, true, `expected success, got ${JSON.stringify(outcome)}`);
  return outcome as Extract<SandboxOutcome, { ok: true }>;
}

function expectError(outcome: SandboxOutcome, type: string): Extract<SandboxOutcome, { ok: false }>['error'] {
  assert.equal(outcome.ok, false, `expected ${type}, got success ${JSON.stringify(outcome)}`);
  const failure = outcome as Extract<SandboxOutcome, { ok: false }>;
  assert.equal(failure.error.type, type, `expected ${type}, got ${JSON.stringify(failure.error)}`);
  return failure.error;
}

function assertNoHostPaths(text: string): void {
  for (const hostPath of ['/work/', '/tmp/mcpworks-sandbox-', '/sandbox/runner', 'node:internal', '/usr/lib/python3']) {
    assert.ok(!text.includes(hostPath), `${JSON.stringify(text)} mentions ${hostPath}`);
  }
}

describe('Python contract', () => {
  it('returns main(input_data) and captures stdout and stderr as logs', async () => {
    const outcome = expectOk(
      await run(
        'python',
        'import sys\ndef main(input_data):\n    print("working")\n    print("careful", file=sys.stderr)\n    return {"greeting": "Hello, " + input_data.get("name", "World") + "!"}\n',
        { name: 'Ada' },
      ),
    );
    assert.deepEqual(outcome.result, { greeting: 'Hello, Ada!' });
    assert.equal(outcome.stdout, 'working\n');
    assert.equal(outcome.stderr, 'careful\n');
    assert.ok(outcome.durationMs > 0);
  });

  it('prefers main over result over output, in the guide order', async () => {
    assert.deepEqual(expectOk(await run('python', 'output = 3\nresult = 2\ndef main(input_data):\n    return 1\n')).result, 1);
    assert.deepEqual(expectOk(await run('python', 'output = 3\nresult = 2\n')).result, 2);
    assert.deepEqual(expectOk(await run('python', 'output = {"n": input_data["n"]}\n', { n: 7 })).result, { n: 7 });
    assert.equal(expectOk(await run('python', 'x = 1\n')).result, null);
  });

  it('awaits an async main and sees input_data as a global', async () => {
    const code = 'import asyncio\nasync def main(input_data):\n    await asyncio.sleep(0)\n    return sorted(input_data)\n';
    assert.deepEqual(expectOk(await run('python', code, { b: 1, a: 2 })).result, ['a', 'b']);
  });

  it('imports allow-listed packages installed from Debian', async () => {
    const code = 'import requests, yaml, jinja2, dateutil\nresult = yaml.safe_load("a: [1, 2]")\n';
    assert.deepEqual(expectOk(await run('python', code)).result, { a: [1, 2] });
  });

  it('imports every allow-listed package marked available', async () => {
    const names = PYTHON_PACKAGES.filter((pkg) => pkg.available).map((pkg) => pkg.importName);
    const code =
      'import importlib\nfailed = []\nfor name in input_data["names"]:\n    try:\n        importlib.import_module(name)\n    except Exception as error:\n        failed.append(f"{name}: {error}")\nresult = failed\n';
    const outcome = await run('python', code, { names }, { limits: sandboxLimitsFor(limitsFor('enterprise')) });
    assert.deepEqual(expectOk(outcome).result, []);
  });

  it('starts pandas and numpy inside the pro memory limit', async () => {
    const code = 'import pandas as pd\ndef main(input_data):\n    return int(pd.DataFrame({"x": [1, 2, 3]})["x"].sum())\n';
    assert.equal(expectOk(await run('python', code)).result, 6);
  });
});

describe('TypeScript contract', () => {
  it('runs export default function main with typed input and captures logs', async () => {
    const code =
      'export default function main(input: { name?: string }) {\n  console.log("working");\n  console.error("careful");\n  return { greeting: `Hello, ${input.name ?? "World"}!` };\n}\n';
    const outcome = expectOk(await run('typescript', code, { name: 'Ada' }));
    assert.deepEqual(outcome.result, { greeting: 'Hello, Ada!' });
    assert.equal(outcome.stdout, 'working\n');
    assert.equal(outcome.stderr, 'careful\n');
  });

  it('runs a named export main', async () => {
    const code = 'interface In { n: number }\nexport function main(input: In): number {\n  return input.n * 2;\n}\n';
    assert.equal(expectOk(await run('typescript', code, { n: 21 })).result, 42);
  });

  it('runs module.exports.main and awaits async main', async () => {
    const code =
      'module.exports.main = async function (input) {\n  await new Promise((r) => setTimeout(r, 5));\n  return { echoed: input };\n};\n';
    assert.deepEqual(expectOk(await run('typescript', code, [1, 'two'])).result, { echoed: [1, 'two'] });
  });

  it('does not wait for timers the function leaves behind', async () => {
    const code = 'export default function main() {\n  setInterval(() => {}, 1000);\n  return "done";\n}\n';
    assert.equal(expectOk(await run('typescript', code)).result, 'done');
  });

  it('says so when there is no main', async () => {
    const error = expectError(await run('typescript', 'export const x = 1;\n'), 'TypeError');
    assert.match(error.message, /no main function/);
  });
});

describe('typed failures', () => {
  it('Python syntax error → SyntaxError with the user line', async () => {
    const error = expectError(await run('python', 'x = 1\ndef main(input_data)\n    return 1\n'), 'SyntaxError');
    assert.match(error.message, /line 2/);
    assert.match(error.stderr, /main\.py", line 2/);
    assertNoHostPaths(error.stderr);
  });

  it('TypeScript syntax error → TranspileError with the user line', async () => {
    const error = expectError(await run('typescript', 'export default function main() {\n  const x: number = ;\n}\n'), 'TranspileError');
    assert.match(error.message, /line 2/);
    assert.match(error.stderr, /main\.ts:2:/);
  });

  it('Python exception → its class name and a traceback of user lines only', async () => {
    const code =
      'import json\n\ndef helper(d):\n    return json.loads(d["text"])\n\ndef main(input_data):\n    return helper(input_data)\n';
    const error = expectError(await run('python', code, { text: 'not json' }), 'JSONDecodeError');
    assert.match(error.message, /Expecting value/);
    assert.match(error.stderr, /main\.py", line 7, in main/);
    assert.match(error.stderr, /main\.py", line 4, in helper/);
    assertNoHostPaths(error.stderr);
  });

  it('Python custom exception class keeps its name', async () => {
    const code = 'class QuotaProblem(Exception):\n    pass\n\ndef main(input_data):\n    raise QuotaProblem("too many")\n';
    const error = expectError(await run('python', code), 'QuotaProblem');
    assert.equal(error.message, 'too many');
  });

  it('TypeScript exception → its class name and a stack with the original .ts lines', async () => {
    const code =
      'type T = { n: number };\n\nfunction check(t: T): number {\n  if (t.n < 0) throw new RangeError("negative");\n  return t.n;\n}\n\nexport default function main(input: T) {\n  return check(input);\n}\n';
    const error = expectError(await run('typescript', code, { n: -1 }), 'RangeError');
    assert.equal(error.message, 'negative');
    assert.match(error.stderr, /main\.ts:4:/);
    assert.match(error.stderr, /main\.ts:9:/);
    assertNoHostPaths(error.stderr);
  });

  it('TypeScript custom error class and non-Error throws', async () => {
    const custom = 'class PaymentDeclined extends Error {}\nexport default function main() {\n  throw new PaymentDeclined("card");\n}\n';
    assert.equal(expectError(await run('typescript', custom), 'PaymentDeclined').message, 'card');
    const rejected = 'export default async function main() {\n  throw "plain string";\n}\n';
    assert.equal(expectError(await run('typescript', rejected), 'Error').message, 'plain string');
  });

  it('non-JSON results → SerializationError in both languages', async () => {
    expectError(await run('python', 'import datetime\nresult = datetime.datetime(2024, 1, 1)\n'), 'SerializationError');
    expectError(await run('python', 'result = float("nan")\n'), 'SerializationError');
    expectError(await run('typescript', 'export default () => 10n;\n'), 'SerializationError');
    expectError(await run('typescript', 'export default () => { const a: any = {}; a.self = a; return a; };\n'), 'SerializationError');
  });

  it('a result over the tier cap → OutputSizeError', async () => {
    const small = { ...pro, maxResultBytes: 1000 };
    expectError(await run('python', 'result = "x" * 5000\n', {}, { limits: small }), 'OutputSizeError');
    expectError(await run('typescript', 'export default () => "x".repeat(5000);\n', {}, { limits: small }), 'OutputSizeError');
  });

  it('`while True: pass` → TimeoutError, and the platform keeps serving', async () => {
    const short = { ...pro, timeoutSeconds: 1 };
    const started = Date.now();
    const error = expectError(await run('python', 'while True:\n    pass\n', {}, { limits: short }), 'TimeoutError');
    assert.match(error.message, /longer than 1 s/);
    // Stopped at its 1 s, not at the tier's 90 s: a bound far from both (5 s left a loaded host, its
    // sandboxes at a quarter of the CPU weight, too little for the cold start and the kill).
    assert.ok(Date.now() - started < 30_000);
    expectError(await run('typescript', 'export default () => { for (;;) {} };\n', {}, { limits: short }), 'TimeoutError');
    assert.equal(expectOk(await run('python', 'result = "still serving"\n')).result, 'still serving');
  });

  it('the CPU-time limit stops a busy process even before the wall clock → TimeoutError', async () => {
    // A wall clock far above the CPU time: a sandbox gets a quarter of a default group's CPU weight,
    // so on a loaded host 1 s of CPU time can take many seconds (with 20 s, the wall clock could
    // come first there).
    const cpuBound = { ...pro, timeoutSeconds: 120, cpuSeconds: 1 };
    const started = Date.now();
    const error = expectError(await run('python', 'while True:\n    pass\n', {}, { limits: cpuBound }), 'TimeoutError');
    assert.match(error.message, /CPU time/);
    assert.ok(Date.now() - started < 60_000, 'well before the wall clock');
  });

  it('allocating 4 GB → MemoryError in both languages', async () => {
    const error = expectError(await run('python', 'blob = bytearray(4 * 1024 ** 3)\nresult = len(blob)\n'), 'MemoryError');
    assert.match(error.message, /512 MB/);
    const js =
      'export default function main() {\n  const keep: string[] = [];\n  for (;;) keep.push("x".repeat(1 << 20) + keep.length);\n}\n';
    expectError(await run('typescript', js), 'MemoryError');
    const buffers =
      'export default function main() {\n  const keep: Buffer[] = [];\n  for (let i = 0; i < 4096; i++) keep.push(Buffer.alloc(1 << 20, 1));\n  return keep.length;\n}\n';
    expectError(await run('typescript', buffers), 'MemoryError');
  });

  it('sys.exit() ends a Python function early but successfully; sys.exit(3) is a ProcessExitError', async () => {
    assert.equal(
      expectOk(await run('python', 'import sys\nresult = "set before exit"\nsys.exit()\nresult = "never"\n')).result,
      'set before exit',
    );
    assert.match(expectError(await run('python', 'import sys\nsys.exit(3)\n'), 'ProcessExitError').message, /exited with status 3/);
    // A child the code forks exits on its own terms: its os._exit(0) answers nothing for the run.
    const forked = 'import os\npid = os.fork()\nif pid == 0:\n    os._exit(0)\nos.waitpid(pid, 0)\nresult = "parent"\n';
    assert.equal(expectOk(await run('python', forked)).result, 'parent');
  });

  it('os._exit and process.exit without a result → ProcessExitError', async () => {
    const error = expectError(await run('python', 'import os\nprint("bye")\nos._exit(3)\n'), 'ProcessExitError');
    assert.match(error.message, /status 3/);
    expectError(await run('typescript', 'export default () => { process.exit(4); };\n'), 'ProcessExitError');
  });

  it('10 MB to stdout is cut at the log cap with a marker, and the result still arrives', async () => {
    const outcome = expectOk(
      await run('python', 'import sys\nfor _ in range(10 * 1024):\n    sys.stdout.write("y" * 1024)\nresult = "finished"\n'),
    );
    assert.equal(outcome.result, 'finished');
    assert.ok(outcome.stdout.length < pro.maxLogBytes + 200);
    assert.match(outcome.stdout, /\[output cut: \d+ more bytes not shown\]/);
    const js = expectOk(
      await run(
        'typescript',
        'export default () => { const line = "z".repeat(1023) + "\\n"; for (let i = 0; i < 10240; i++) process.stdout.write(line); return "finished"; };\n',
      ),
    );
    assert.equal(js.result, 'finished');
    assert.match(js.stdout, /\[output cut: \d+ more bytes not shown\]/);
  });

  it('deep recursion → RecursionError / RangeError, contained', async () => {
    expectError(await run('python', 'def f(n):\n    return f(n + 1)\n\ndef main(input_data):\n    return f(0)\n'), 'RecursionError');
    expectError(
      await run('typescript', 'function f(n: number): number { return f(n + 1) + 1; }\nexport default () => f(0);\n'),
      'RangeError',
    );
  });
});
