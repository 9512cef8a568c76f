// Code mode's needs from the sandbox: script entry, read-only mounts under /opt, library paths and the
// blocking bridge to the host, in both languages, through the real sandbox.
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { sandboxLimitsFor, type Sandbox, type SandboxOutcome, type SandboxRequest } from '../core/sandbox.js';
import { limitsFor } from '../core/tiers.js';
import { createBubblewrapSandbox } from './bubblewrap.js';

const pro = sandboxLimitsFor(limitsFor('pro'));
let sandbox: Sandbox;
let library: string;

// A stand-in for the generated `functions` package: every call goes through the bridge.
const PYTHON_PACKAGE =
  'import _mcpworks_bridge\n\ndef hello(**kwargs):\n    answer = _mcpworks_bridge.call({"op": "call", "function": "hello", "input": kwargs})\n    if not answer["ok"]:\n        raise RuntimeError(answer["error"])\n    return answer["result"]\n';
const NODE_PACKAGE =
  "'use strict';\nexports.hello = async (input) => {\n  const answer = globalThis.__mcpworksBridge({ op: 'call', function: 'hello', input });\n  if (!answer.ok) throw new Error(answer.error);\n  return answer.result;\n};\n";

before(() => {
  library = mkdtempSync(join(tmpdir(), 'mcpworks-code-mode-'));
  mkdirSync(join(library, 'python', 'functions'), { recursive: true });
  mkdirSync(join(library, 'node', 'node_modules', 'functions'), { recursive: true });
  writeFileSync(join(library, 'python', 'functions', '__init__.py'), PYTHON_PACKAGE);
  writeFileSync(join(library, 'node', 'node_modules', 'functions', 'index.js'), NODE_PACKAGE);
  for (const dir of [
    library,
    join(library, 'python'),
    join(library, 'python', 'functions'),
    join(library, 'node'),
    join(library, 'node', 'node_modules'),
    join(library, 'node', 'node_modules', 'functions'),
  ]) {
    chmodSync(dir, 0o755);
  }
  sandbox = createBubblewrapSandbox({ network: false });
});
after(async () => {
  rmSync(library, { recursive: true, force: true });
  await sandbox.close();
});

function script(language: SandboxRequest['language'], code: string, bridge?: SandboxRequest['bridge']): Promise<SandboxOutcome> {
  return sandbox.run({
    language,
    code,
    input: {},
    limits: pro,
    entry: 'script',
    mounts: [{ source: library, target: '/opt/mcpworks' }],
    libraryPaths: [language === 'python' ? '/opt/mcpworks/python' : '/opt/mcpworks/node/node_modules'],
    ...(bridge ? { bridge } : {}),
  });
}

function resultOf(outcome: SandboxOutcome): unknown {
  assert.equal(outcome.ok, true, JSON.stringify(outcome));
  return (outcome as { result: unknown }).result;
}

const greeter = (seen: unknown[]) => async (message: unknown) => {
  seen.push(message);
  const input = (message as { input: { name: string } }).input;
  return { ok: true, result: { greeting: `Hello, ${input.name}!` } };
};

describe('code mode', () => {
  it('Python script: imports the mounted package, calls the host through the bridge, returns result', async () => {
    const seen: unknown[] = [];
    const code = 'from functions import hello\nfirst = hello(name="Ada")\nresult = [first, hello(name="Bob")]\n';
    assert.deepEqual(resultOf(await script('python', code, greeter(seen))), [{ greeting: 'Hello, Ada!' }, { greeting: 'Hello, Bob!' }]);
    assert.deepEqual(seen, [
      { op: 'call', function: 'hello', input: { name: 'Ada' } },
      { op: 'call', function: 'hello', input: { name: 'Bob' } },
    ]);
  });

  it('Python script: main is not called, output is the fallback', async () => {
    assert.equal(resultOf(await script('python', 'def main(input_data):\n    return "main"\noutput = "script"\n')), 'script');
  });

  it('TypeScript script: an ES module with top-level await and an undeclared `result`', async () => {
    const seen: unknown[] = [];
    const code =
      'import { hello } from "functions";\nconst names: string[] = ["Ada", "Bob"];\nresult = [];\nfor (const name of names) result.push(await hello({ name }));\n';
    assert.deepEqual(resultOf(await script('typescript', code, greeter(seen))), [{ greeting: 'Hello, Ada!' }, { greeting: 'Hello, Bob!' }]);
    assert.equal(seen.length, 2);
  });

  it('TypeScript script: a declared `const result` counts too, and errors keep script line numbers', async () => {
    assert.deepEqual(resultOf(await script('typescript', 'const result: number[] = [1, 2].map((n) => n * 2);\n')), [2, 4]);
    const failed = await script('typescript', 'const n: number = 1;\n\nthrow new RangeError("line three");\n');
    assert.equal(failed.ok, false);
    const error = (failed as { error: { type: string; stderr: string } }).error;
    assert.equal(error.type, 'RangeError');
    assert.match(error.stderr, /main\.ts:3:/);
  });

  it('a bridge answer the host refuses becomes the function error; without a bridge the module is absent', async () => {
    const refusing = async () => ({ ok: false, error_type: 'NotFound', error: 'function x.y not found' });
    const outcome = await script('python', 'from functions import hello\nresult = hello(name="x")\n', refusing);
    assert.equal(outcome.ok, false);
    assert.match((outcome as { error: { message: string } }).error.message, /not found/);
    const unbridged = await script('python', 'import _mcpworks_bridge\n');
    assert.equal(unbridged.ok, false);
    assert.equal((unbridged as { error: { type: string } }).error.type, 'ModuleNotFoundError');
  });

  it('a bridge that throws answers a BridgeError instead of breaking the run', async () => {
    const broken = async () => {
      throw new Error('database down');
    };
    const outcome = await script('typescript', 'import { hello } from "functions";\nresult = await hello({ name: "x" });\n', broken);
    assert.equal(outcome.ok, false);
    assert.match((outcome as { error: { message: string } }).error.message, /could not answer/);
    assert.ok(!JSON.stringify(outcome).includes('database down'));
  });

  it('mounts are read-only and only under /opt', async () => {
    const write = await script(
      'python',
      'import errno\ntry:\n    open("/opt/mcpworks/python/functions/evil.py", "w")\n    result = "written"\nexcept OSError as error:\n    result = errno.errorcode[error.errno]\n',
    );
    assert.equal(resultOf(write), 'EROFS');
    for (const target of ['/usr/lib/python3', '/etc', '/opt/../etc', '/opt', '/tmp/x', 'opt/x']) {
      await assert.rejects(
        sandbox.run({ language: 'python', code: 'result = 1', input: {}, limits: pro, mounts: [{ source: library, target }] }),
        (error: Error & { type?: string }) => error.type === 'validation_error',
        target,
      );
    }
  });
});
