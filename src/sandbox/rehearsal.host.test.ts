// The rehearsal a pre-started worker runs before its request exists (issue 18: its page faults off
// the run's critical path): fixed platform code through the runner's own path, answered to a sink.
// Real bubblewrap sandboxes; each test is a guarantee that the real run sees none of it.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { sandboxLimitsFor, type SandboxOutcome, type SandboxRequest } from '../core/sandbox.js';
import { DEFAULT_TIER, limitsFor } from '../core/tiers.js';
import { createBubblewrapSandbox, type BubblewrapSandbox } from './bubblewrap.js';
import { sandboxEnvironment } from './plan/environment.js';

const limits = sandboxLimitsFor(limitsFor(DEFAULT_TIER));
// numpy: the worker's rehearsal runs its package warm-up too (zygote.py, REHEARSE).
const WARM = { group: 'rehearsal-test', imports: ['numpy'] };
let zygote: BubblewrapSandbox;

function resultOf(outcome: SandboxOutcome): any {
  assert.equal(outcome.ok, true, `expected success, got ${JSON.stringify(outcome)}`);
  return (outcome as { result: unknown }).result;
}

// Put before each test's code. A claimed child gone before its run began hands the run to the
// ordinary path, a cold runner with no rehearsal, where most checks here would pass vacuously.
const IN_WORKER = [
  'import sys as _in_worker_sys',
  'if "/sandbox/zygote.py" not in _in_worker_sys.orig_argv:',
  '    raise SystemExit("not run by a zygote worker")',
  'del _in_worker_sys',
  '',
].join('\n');

function py(code: string, extra: Partial<SandboxRequest> = {}): Promise<SandboxOutcome> {
  return zygote.run({ language: 'python', code: IN_WORKER + code, input: { name: 'real' }, limits, warm: WARM, ...extra });
}

/** A run forked from the zygote (not the cold path the first run of a group takes), with its outcome; one claimed but run cold fails (IN_WORKER). */
async function forked(code: string, extra: Partial<SandboxRequest> = {}): Promise<SandboxOutcome> {
  for (let waited = 0; waited < 30_000; waited += 50) {
    const before = zygote.zygoteStats()!.runs;
    const outcome = await py(code, extra);
    if (zygote.zygoteStats()!.runs > before) return outcome;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error('no run was forked from the zygote');
}

before(() => {
  zygote = createBubblewrapSandbox({ network: false, pool: false, zygote: true });
});

after(async () => {
  await zygote.close();
});

describe('python worker rehearsal', () => {
  it("the run's answer, stdout and stderr are its own: the rehearsal's went to its sink", async () => {
    const outcome = await forked(
      'import sys\ndef main(input_data):\n    print("out")\n    print("err", file=sys.stderr)\n    return {"got": input_data}\n',
    );
    assert.deepEqual(resultOf(outcome), { got: { name: 'real' } });
    assert.equal(outcome.stdout, 'out\n');
    assert.equal(outcome.ok && outcome.stderr, 'err\n');
  });

  it('sys.path and os.environ are as in a worker that never rehearsed', async () => {
    const code = 'import os, sys\nresult = {"path": sys.path[:2], "count": sys.path.count("/sandbox/python"), "env": dict(os.environ)}\n';
    const seen = resultOf(await forked(code, { entry: 'script' }));
    assert.deepEqual(seen.path[0], '/sandbox/python');
    assert.equal(seen.count, 1, `the runner's own path entry once: ${JSON.stringify(seen.path)}`);
    // The sandbox's whole environment (PWD: bubblewrap's, with its --chdir), nothing added by the rehearsal.
    const environment = { ...sandboxEnvironment(), PWD: '/tmp' };
    assert.deepEqual(seen.env, environment);
    // A declared env is the run's own, and the only thing added.
    const declared = resultOf(await forked(code, { entry: 'script', env: { TOKEN: 'x' } }));
    assert.deepEqual(declared.env, { ...environment, TOKEN: 'x' });
  });

  it("__main__ is the run's own, and no object of the rehearsal's module, function or input is left", async () => {
    // Looked for without a collection of its own: the runner must have left nothing to collect.
    const code = [
      'import builtins, gc, sys, types',
      'def main(input_data):',
      '    mine = globals()',
      '    functions = [f for f in gc.get_objects() if type(f) is types.FunctionType and f.__code__.co_filename == "main.py" and f.__globals__ is not mine]',
      '    namespaces = [d for d in gc.get_objects() if type(d) is dict and "input_data" in d and d is not mine]',
      '    modules = [m for m in gc.get_objects() if type(m) is types.ModuleType and m.__name__ == "__main__" and m is not sys.modules["__main__"]]',
      '    return {"main": sys.modules["__main__"].__dict__ is mine, "file": mine["__file__"], "input": mine["input_data"],',
      '        "functions": len(functions), "namespaces": len(namespaces), "modules": len(modules),',
      '        "builtins": [n for n in ("result", "output", "input_data", "main") if hasattr(builtins, n)]}',
    ].join('\n');
    assert.deepEqual(resultOf(await forked(code)), {
      main: true,
      file: 'main.py',
      input: { name: 'real' },
      functions: 0,
      namespaces: 0,
      modules: 0,
      builtins: [],
    });
  });

  it("no text writer over memory in the run's reach holds a byte of the rehearsal's lines or print", async () => {
    // The sink is a local of the worker's frame, below the run's own: reachable, so it must be empty.
    const code = [
      'import io, sys',
      'def main(input_data):',
      '    found = []',
      '    frame = sys._getframe()',
      '    while frame is not None:',
      '        for value in list(frame.f_locals.values()):',
      '            if isinstance(value, io.TextIOWrapper) and isinstance(value.buffer, io.BytesIO):',
      '                value.flush()',
      '                found.append(value.buffer.getvalue().decode())',
      '        frame = frame.f_back',
      '    return found',
    ].join('\n');
    const found = resultOf(await forked(code));
    assert.ok(found.length > 0, 'the sink is among the frames (else this test looks at nothing)');
    assert.deepEqual(
      found,
      found.map(() => ''),
    );
  });

  it('a script sees no `result` or `output` of the rehearsal', async () => {
    const code = 'result = {"result": "result" in globals(), "output": "output" in globals(), "input": input_data}\n';
    assert.deepEqual(resultOf(await forked(code, { entry: 'script' })), { result: false, output: false, input: { name: 'real' } });
  });
});
