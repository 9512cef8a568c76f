// test-database: embedded, one call at a time
// The function contract is one rule in both languages, on every path (tool mode, code mode, calls
// made from code mode): non-finite numbers, exit(0), unsettled awaits, cut logs, output_schema.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { MAX_CHECKED_DEPTH } from '../core/limits.js';
import {
  callOk,
  connect,
  createAccount,
  parseResult,
  startTestServer,
  type McpTestClient,
  type TestServer,
} from '../test-support/harness.js';

let server: TestServer;
before(async () => {
  server = await startTestServer();
});
after(async () => {
  await server?.stop();
});

interface Space {
  create: McpTestClient;
  code: McpTestClient;
  tools: McpTestClient;
  key: string;
  ns: string;
  usage(): Promise<number>;
}

async function space(
  functions: Array<{ name: string; code: string; language?: 'python' | 'typescript'; output_schema?: unknown }> = [],
): Promise<Space> {
  const account = await createAccount(server.url);
  const ns = `fc-${Math.random().toString(36).slice(2, 10)}`;
  const create = await connect(`${server.url}/mcp/create/${ns}`, account.key);
  await callOk(create, 'make_namespace', { name: ns });
  await callOk(create, 'make_service', { name: 'c' });
  for (const fn of functions) await callOk(create, 'make_function', { service: 'c', language: 'python', ...fn });
  return {
    create,
    key: account.key,
    ns,
    usage: async () =>
      (await (await fetch(`${server.url}/api/usage`, { headers: { authorization: `Bearer ${account.key}` } })).json()).executions,
    code: await connect(`${server.url}/mcp/run/${ns}`, account.key),
    tools: await connect(`${server.url}/mcp/run/${ns}?mode=tools`, account.key),
  };
}

type Answer = { isError: boolean; value: any; texts: string[] };

async function call(client: McpTestClient, tool: string, args: Record<string, unknown> = {}): Promise<Answer> {
  const response = (await client.callTool(tool, args)) as { isError?: boolean; content: Array<{ type: string; text?: string }> };
  return { isError: response.isError === true, value: parseResult(response), texts: response.content.map((c) => c.text ?? '') };
}

const execute = (s: Space, code: string, language: 'python' | 'typescript' = 'python') => call(s.code, 'execute', { code, language });

function failedWith(answer: Answer, type: string): { error: string; error_type: string; stdout?: string; stderr: string } {
  assert.equal(answer.isError, true, `expected ${type}, got ${JSON.stringify(answer.value)}`);
  assert.equal(answer.value.error_type, type, JSON.stringify(answer.value));
  return answer.value;
}

function succeeded(answer: Answer): unknown {
  assert.equal(answer.isError, false, `expected success, got ${JSON.stringify(answer.value)}`);
  return answer.value;
}

describe('one function contract in both languages', () => {
  test('NaN and Infinity are refused as SerializationError in both languages, both modes', async () => {
    const s = await space([
      { name: 'py-nan', code: 'def main(input_data):\n    return {"x": float("nan")}\n' },
      { name: 'ts-nan', language: 'typescript', code: 'export default () => ({ x: NaN });\n' },
      { name: 'ts-inf', language: 'typescript', code: 'export default () => [1, -Infinity];\n' },
    ]);
    for (const tool of ['c__py-nan', 'c__ts-nan', 'c__ts-inf']) {
      assert.match(failedWith(await call(s.tools, tool), 'SerializationError').error, /not JSON/i);
    }
    failedWith(await execute(s, 'result = float("inf")'), 'SerializationError');
    failedWith(await execute(s, 'result = { x: NaN };', 'typescript'), 'SerializationError');
    failedWith(await execute(s, 'result = Infinity;', 'typescript'), 'SerializationError');
    // A null the code meant is still null.
    assert.deepEqual(succeeded(await execute(s, 'result = { x: null, y: [null] };', 'typescript')), { x: null, y: [null] });
    // NaN as the input of a function called from code mode: the same SerializationError in both
    // languages, to either language (the callee does not run).
    for (const callee of ['py_nan', 'ts_nan']) {
      const py = succeeded(
        await execute(
          s,
          `import functions\ntry:\n    functions.${callee}(x=float("nan"))\nexcept functions.FunctionError as e:\n    result = [e.error_type, str(e)]`,
        ),
      );
      const ts = succeeded(
        await execute(
          s,
          `import { ${callee}, FunctionError } from "functions";\ntry { await ${callee}({ x: NaN }); } catch (e: any) { result = [e instanceof FunctionError ? e.errorType : e.name, e.message]; }`,
          'typescript',
        ),
      );
      for (const [type, message] of [py, ts] as Array<[string, string]>) {
        assert.equal(type, 'SerializationError', `${callee}: ${message}`);
        assert.match(message, new RegExp(`the input of c\\.${callee.replace('_', '-')} is not JSON-serialisable`));
      }
    }
  });

  test('exit with status 0 after setting result succeeds in both languages; another status fails', async () => {
    const s = await space([
      {
        name: 'ts-exit',
        language: 'typescript',
        code: 'export default () => { (globalThis as any).result = "set before exit"; process.exit(0); };\n',
      },
      { name: 'py-exit', code: 'import os\n\ndef main(input_data):\n    global result\n    result = "set before exit"\n    os._exit(0)\n' },
      { name: 'py-exit3', code: 'import sys\n\ndef main(input_data):\n    sys.exit(3)\n' },
      { name: 'ts-exit3', language: 'typescript', code: 'export default () => { process.exit(3); };\n' },
    ]);
    assert.equal(succeeded(await execute(s, 'import sys\nresult = "py"\nsys.exit(0)\nresult = "never"')), 'py');
    assert.equal(succeeded(await execute(s, 'import os\nresult = "py"\nos._exit(0)\nresult = "never"')), 'py');
    assert.equal(succeeded(await call(s.tools, 'c__py-exit')), 'set before exit');
    // Any other status: ProcessExitError naming it, in both languages and both modes.
    for (const [code, language] of [
      ['import sys\nresult = 1\nsys.exit(3)', 'python'],
      ['import os\nresult = 1\nos._exit(3)', 'python'],
      ['result = 1;\nprocess.exit(3);', 'typescript'],
    ] as const) {
      assert.match(failedWith(await execute(s, code, language), 'ProcessExitError').error, /exited with status 3/, code);
    }
    assert.match(
      failedWith(await execute(s, 'import sys\nsys.exit("no input file")'), 'ProcessExitError').error,
      /status 1 .*no input file/,
    );
    for (const tool of ['c__py-exit3', 'c__ts-exit3'])
      assert.match(failedWith(await call(s.tools, tool), 'ProcessExitError').error, /exited with status 3/, tool);
    assert.equal(succeeded(await execute(s, 'result = "ts";\nprocess.exit(0);\nresult = "never";', 'typescript')), 'ts');
    assert.equal(succeeded(await execute(s, 'let result = "declared";\nprocess.exit();\nresult = "never";', 'typescript')), 'declared');
    assert.equal(succeeded(await call(s.tools, 'c__ts-exit')), 'set before exit');
  });

  test('an await that can never settle is reported as such, not as "exited with status 0"', async () => {
    const s = await space([
      {
        name: 'ts-hang',
        language: 'typescript',
        code: 'export default async function main() {\n  await new Promise(() => {});\n  return 1;\n}\n',
      },
    ]);
    const scripted = failedWith(await execute(s, 'await new Promise(() => {});\nresult = 1;', 'typescript'), 'UnsettledAwaitError');
    assert.match(scripted.error, /never settled/);
    assert.doesNotMatch(scripted.error, /status 0/);
    assert.match(failedWith(await call(s.tools, 'c__ts-hang'), 'UnsettledAwaitError').error, /never settled/);
  });

  test('stdout and stderr cut at 64 KB end on a whole character, in both languages', async () => {
    // One ASCII byte, then two-byte characters: the 65,536th byte is the first half of one.
    const s = await space();
    const outputs = [
      failedWith(
        await execute(
          s,
          'import sys\ntext = "x" + "é" * 40000\nprint(text, end="")\nprint(text, end="", file=sys.stderr)\nraise ValueError("after the logs")',
        ),
        'ValueError',
      ),
      failedWith(
        await execute(
          s,
          'const text = "x" + "é".repeat(40000);\nprocess.stdout.write(text);\nprocess.stderr.write(text);\nthrow new RangeError("after the logs");',
          'typescript',
        ),
        'RangeError',
      ),
    ];
    for (const failure of outputs) {
      for (const log of [failure.stdout ?? '', failure.stderr]) {
        assert.match(log, /\[output cut: \d+ more bytes not shown\]/);
        assert.ok(!log.includes('\uFFFD'), 'no character is split by the cut');
        assert.ok(log.startsWith('x' + 'é'.repeat(32000)));
      }
    }
  });

  test('a same-language call from code mode checks the output_schema, as tool mode does', async () => {
    const shape = { type: 'object', properties: { n: { type: 'integer' } }, required: ['n'] };
    const s = await space([
      { name: 'py-shape', code: 'def main(input_data):\n    return {"n": input_data.get("n", "oops")}\n', output_schema: shape },
      {
        name: 'ts-shape',
        language: 'typescript',
        code: 'export default (input: { n?: unknown }) => ({ n: input.n ?? "oops" });\n',
        output_schema: shape,
      },
    ]);
    failedWith(await call(s.tools, 'c__py-shape'), 'SchemaError');
    failedWith(await call(s.tools, 'c__ts-shape'), 'SchemaError');
    const py =
      'from functions import py_shape, FunctionError\ntry:\n    py_shape()\n    result = "unchecked"\nexcept FunctionError as error:\n    result = [type(error).__name__, error.error_type]\n';
    assert.deepEqual(succeeded(await execute(s, py)), ['FunctionError', 'SchemaError']);
    const ts =
      'import { ts_shape } from "functions";\ntry {\n  await ts_shape({});\n  result = "unchecked";\n} catch (error: any) {\n  result = [error.name, error.errorType];\n}\n';
    assert.deepEqual(succeeded(await execute(s, ts, 'typescript')), ['FunctionError', 'SchemaError']);
    // Results that match pass unchanged (other-language calls were checked already).
    assert.deepEqual(succeeded(await execute(s, 'from functions import py_shape, ts_shape\nresult = [py_shape(n=1), ts_shape(n=2)]')), [
      { n: 1 },
      { n: 2 },
    ]);
    assert.deepEqual(
      succeeded(
        await execute(
          s,
          'import { py_shape, ts_shape } from "functions";\nresult = [await py_shape({ n: 1 }), await ts_shape({ n: 2 })];',
          'typescript',
        ),
      ),
      [{ n: 1 }, { n: 2 }],
    );
    // Other-language calls keep their check.
    assert.deepEqual(
      succeeded(
        await execute(
          s,
          'from functions import ts_shape, FunctionError\ntry:\n    ts_shape()\nexcept FunctionError as error:\n    result = error.error_type\n',
        ),
      ),
      'SchemaError',
    );
    // A result over 32 KB goes back for its check as a large bridge line, read in a scan worker:
    // checked as the value it is (a valid one passes, an invalid one is refused), in both languages.
    const echo = await space([
      { name: 'py-echo', code: 'def main(input_data):\n    return input_data\n', output_schema: shape },
      { name: 'ts-echo', language: 'typescript', code: 'export default (input: unknown) => input;\n', output_schema: shape },
    ]);
    const bigPy =
      'from functions import py_echo, FunctionError\nok = py_echo(n=1, pad="x" * 40000)\ntry:\n    py_echo(n="x" * 40000)\n    bad = "unchecked"\nexcept FunctionError as error:\n    bad = error.error_type\nresult = [ok["n"], len(ok["pad"]), bad]\n';
    assert.deepEqual(succeeded(await execute(echo, bigPy)), [1, 40000, 'SchemaError']);
    const bigTs =
      'import { ts_echo } from "functions";\nconst ok: any = await ts_echo({ n: 1, pad: "x".repeat(40000) });\nlet bad = "unchecked";\ntry {\n  await ts_echo({ n: "x".repeat(40000) });\n} catch (error: any) {\n  bad = error.errorType;\n}\nresult = [ok.n, ok.pad.length, bad];\n';
    assert.deepEqual(succeeded(await execute(echo, bigTs, 'typescript')), [1, 40000, 'SchemaError']);
    // A large call's input is checked as a value too: a 600 KB string is one value (not 600,000),
    // and an inexact integer in a large input is refused, as in a small one.
    const bigInput =
      'from functions import ts_echo, FunctionError\nok = ts_echo(n=2, pad="y" * 600000)\ntry:\n    ts_echo(n=2**63 + 1, pad="y" * 40000)\n    bad = "unchecked"\nexcept FunctionError as error:\n    bad = error.error_type\nresult = [ok["n"], len(ok["pad"]), bad]\n';
    assert.deepEqual(succeeded(await execute(echo, bigInput)), [2, 600000, 'validation_error']);
  });
});

/** An array nested `levels` deep, built without recursion. */
function nested(levels: number): unknown {
  let value: unknown = 1;
  for (let i = 0; i < levels; i++) value = [value];
  return value;
}

describe('call inputs are checked before admission', () => {
  test('deeply nested input is a validation_error, not metered, in both modes and both languages', async () => {
    const s = await space([
      { name: 'py-echo', code: 'def main(input_data):\n    return "ran"\n' },
      { name: 'ts-echo', language: 'typescript', code: 'export default () => "ran";\n' },
    ]);
    for (const levels of [MAX_CHECKED_DEPTH, 1_200]) {
      for (const tool of ['c__py-echo', 'c__ts-echo']) {
        const refused = await call(s.tools, tool, { a: nested(levels) });
        assert.equal(refused.isError, true);
        assert.equal(refused.value.error_type, 'validation_error', JSON.stringify(refused.value).slice(0, 300));
        assert.match(refused.value.error, new RegExp(`nested deeper than ${MAX_CHECKED_DEPTH} levels`));
      }
      const execute = await call(s.code, 'execute', { code: 'result = 1', extra: nested(levels) });
      assert.equal(execute.value.error_type, 'validation_error');
    }
    // 20,000 levels: deeper than the SDK client can serialise, so sent as text.
    const abyss = `${'['.repeat(20_000)}1${']'.repeat(20_000)}`;
    for (const [mode, tool, extra] of [
      ['?mode=tools', 'c__py-echo', ''],
      ['?mode=tools', 'c__ts-echo', ''],
      ['', 'execute', '"code":"result = 1",'],
    ]) {
      const response = await fetch(`${server.url}/mcp/run/${s.ns}${mode}`, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          accept: 'application/json, text/event-stream',
          'mcp-protocol-version': '2025-06-18',
          authorization: `Bearer ${s.key}`,
        },
        body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"${tool}","arguments":{${extra}"a":${abyss}}}}`,
      });
      const text = await response.text();
      const message = JSON.parse(text.includes('data:') ? text.split('data:').pop()!.trim() : text);
      assert.equal(JSON.parse(message.result.content[0].text).error_type, 'validation_error', text.slice(0, 300));
    }
    assert.equal((await fetch(`${server.url}/healthz`)).status, 200);
    assert.equal(await s.usage(), 0, 'nothing refused before admission is metered');
    // Just inside the cap, the functions run (and count).
    assert.equal(succeeded(await call(s.tools, 'c__py-echo', { a: nested(MAX_CHECKED_DEPTH - 2) })), 'ran');
    assert.equal(await s.usage(), 1);

    // Through the bridge (same and other language, from both languages): the callee is not run.
    const py = `import functions\nv = 1\nfor _ in range(${MAX_CHECKED_DEPTH + 10}):\n    v = [v]\nresult = []\nfor f in (functions.py_echo, functions.ts_echo):\n    try:\n        f(a=v)\n        result.append("ran")\n    except functions.FunctionError as error:\n        result.append(error.error_type)\n`;
    assert.deepEqual(succeeded(await execute(s, py)), ['validation_error', 'validation_error']);
    const ts = `import { py_echo, ts_echo, FunctionError } from "functions";\nlet v: unknown = 1;\nfor (let i = 0; i < ${MAX_CHECKED_DEPTH + 10}; i++) v = [v];\nresult = [];\nfor (const f of [py_echo, ts_echo]) {\n  try { await f({ a: v }); result.push("ran"); } catch (error: any) { result.push(error.errorType); }\n}\n`;
    assert.deepEqual(succeeded(await execute(s, ts, 'typescript')), ['validation_error', 'validation_error']);
  });
});

describe('logs of a successful run', () => {
  test('stderr comes back beside stdout, in both modes and both languages', async () => {
    const s = await space([
      {
        name: 'py-logs',
        code: 'import sys\ndef main(input_data):\n    print("to stdout")\n    print("to stderr", file=sys.stderr)\n    return 1\n',
      },
      {
        name: 'ts-logs',
        language: 'typescript',
        code: 'export default () => { console.log("to stdout"); console.error("to stderr"); return 1; };\n',
      },
      { name: 'ts-quiet', language: 'typescript', code: 'export default () => { console.error("only stderr"); return 2; };\n' },
    ]);
    const answers = [
      await call(s.tools, 'c__py-logs'),
      await call(s.tools, 'c__ts-logs'),
      await execute(s, 'import sys\nprint("to stdout")\nprint("to stderr", file=sys.stderr)\nresult = 1'),
      await execute(s, 'console.log("to stdout");\nconsole.error("to stderr");\nresult = 1;', 'typescript'),
    ];
    for (const answer of answers) {
      assert.equal(succeeded(answer), 1);
      assert.deepEqual(answer.texts.slice(1), ['stdout:\nto stdout\n', 'stderr:\nto stderr\n']);
    }
    const quiet = await call(s.tools, 'c__ts-quiet');
    assert.deepEqual(quiet.texts, ['2', 'stderr:\nonly stderr\n']);
  });
});

/** One tools/call sent as text, so the numbers in it are exactly as written. */
async function rawCall(s: Space, mode: string, argumentsJson: string, tool: string): Promise<any> {
  const response = await fetch(`${server.url}/mcp/run/${s.ns}${mode}`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
      'mcp-protocol-version': '2025-06-18',
      authorization: `Bearer ${s.key}`,
    },
    body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"${tool}","arguments":${argumentsJson}}}`,
  });
  const text = await response.text();
  return JSON.parse(JSON.parse(text.includes('data:') ? text.split('data:').pop()!.trim() : text).result.content[0].text);
}

describe('integers are exact end to end, or refused', () => {
  test('inputs beyond 2^53 - 1 are refused before admission; results beyond it are SerializationError; exact ones pass', async () => {
    const idShape = { type: 'object', properties: { id: { type: 'integer' } } };
    const s = await space([
      { name: 'py-id', code: 'def main(input_data):\n    return {"id": input_data.get("n", 2**63 + 1)}\n', output_schema: idShape },
      {
        name: 'ts-id',
        language: 'typescript',
        code: 'export default (input: { n?: number }) => ({ id: input.n ?? 2 ** 60 });\n',
        output_schema: idShape,
      },
      { name: 'py-float', code: 'result = {"avogadro": 6.02e23, "big": 1e300, "max": 2**53 - 1, "min": -(2**53 - 1)}\n' },
    ]);
    // Inputs: as text (exactly as a client wrote them) and through the SDK client.
    for (const tool of ['c__py-id', 'c__ts-id']) {
      const refused = await rawCall(s, '?mode=tools', '{"n":9007199254740993}', tool);
      assert.equal(refused.error_type, 'validation_error');
      assert.match(refused.error, /beyond ±9007199254740991.*send it as a string/);
      assert.equal((await call(s.tools, tool, { n: 2 ** 60 })).value.error_type, 'validation_error');
    }
    assert.equal(await s.usage(), 0, 'refused inputs are not metered');
    // Exact integers pass unchanged, to Python and back.
    assert.deepEqual(succeeded(await call(s.tools, 'c__py-id', { n: 9007199254740991 })), { id: 9007199254740991 });
    assert.deepEqual(succeeded(await call(s.tools, 'c__py-id', { n: -9007199254740991 })), { id: -9007199254740991 });
    // Results: a Python int beyond 2^53 - 1 (and a TypeScript number printed as one) is refused, never rounded.
    const py = failedWith(await call(s.tools, 'c__py-id'), 'SerializationError');
    assert.match(py.error, /9223372036854775809/);
    failedWith(await call(s.tools, 'c__ts-id'), 'SerializationError');
    failedWith(await execute(s, 'result = {"id": 2**63 + 1}'), 'SerializationError');
    failedWith(await execute(s, 'result = [2 ** 60];', 'typescript'), 'SerializationError');
    // An answer over 32 KB is read in a scan worker, not on the main thread: the same rule holds there.
    assert.match(
      failedWith(await execute(s, 'result = {"pad": "x" * 40000, "id": 2**63 + 1}'), 'SerializationError').error,
      /9223372036854775809/,
    );
    failedWith(await execute(s, 'result = { pad: "x".repeat(40000), id: 2 ** 60 };', 'typescript'), 'SerializationError');
    // Floats stay floats (even large ones), and the largest exact integers pass.
    assert.deepEqual(succeeded(await call(s.tools, 'c__py-float')), {
      avogadro: 6.02e23,
      big: 1e300,
      max: 9007199254740991,
      min: -9007199254740991,
    });
    // Strings carry any integer.
    assert.deepEqual(succeeded(await execute(s, 'result = {"id": str(2**63 + 1)}')), { id: '9223372036854775809' });

    // Bridge calls: an inexact input is refused to the caller; an inexact result is the callee's SerializationError.
    const bridged =
      'import functions\nresult = []\nfor call in (lambda: functions.ts_id(n=2**63), lambda: functions.py_id(n=2**63), lambda: functions.ts_id(), lambda: functions.py_id(n=5)):\n    try:\n        result.append(call())\n    except functions.FunctionError as error:\n        result.append(error.error_type)\n';
    assert.deepEqual(succeeded(await execute(s, bridged)), ['validation_error', 'validation_error', 'SerializationError', { id: 5 }]);
    const fromTs =
      'import { py_id, FunctionError } from "functions";\ntry { await py_id(); result = "changed"; } catch (error: any) { result = error.errorType; }\n';
    assert.equal(succeeded(await execute(s, fromTs, 'typescript')), 'SerializationError');
  });
});
