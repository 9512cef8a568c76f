// test-database: embedded, one call at a time
// The function contract is one rule in both languages, on every path (tool mode, code mode, calls
// made from code mode): non-finite numbers, exit(0), unsettled awaits, cut logs, output_schema.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { callOk, connect, createAccount, parseResult, startTestServer, type McpTestClient, type TestServer } from '../test-support/harness.js';

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
}

async function space(functions: Array<{ name: string; code: string; language?: 'python' | 'typescript'; output_schema?: unknown }> = []): Promise<Space> {
  const account = await createAccount(server.url);
  const ns = `fc-${Math.random().toString(36).slice(2, 10)}`;
  const create = await connect(`${server.url}/mcp/create/${ns}`, account.key);
  await callOk(create, 'make_namespace', { name: ns });
  await callOk(create, 'make_service', { name: 'c' });
  for (const fn of functions) await callOk(create, 'make_function', { service: 'c', language: 'python', ...fn });
  return {
    create,
    key: account.key,
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
  });

  test('exit with status 0 after setting result succeeds in both languages; another status fails', async () => {
    const s = await space([{ name: 'ts-exit', language: 'typescript', code: 'export default () => { (globalThis as any).result = "set before exit"; process.exit(0); };\n' }]);
    assert.equal(succeeded(await execute(s, 'import sys\nresult = "py"\nsys.exit(0)\nresult = "never"')), 'py');
    assert.equal(succeeded(await execute(s, 'result = "ts";\nprocess.exit(0);\nresult = "never";', 'typescript')), 'ts');
    assert.equal(succeeded(await execute(s, 'let result = "declared";\nprocess.exit();\nresult = "never";', 'typescript')), 'declared');
    assert.equal(succeeded(await call(s.tools, 'c__ts-exit')), 'set before exit');
    assert.match(failedWith(await execute(s, 'result = 1;\nprocess.exit(3);', 'typescript'), 'ProcessExitError').error, /status 3/);
    assert.equal(failedWith(await execute(s, 'import sys\nresult = 1\nsys.exit(3)'), 'SystemExit').error, '3');
  });

  test('an await that can never settle is reported as such, not as "exited with status 0"', async () => {
    const s = await space([{ name: 'ts-hang', language: 'typescript', code: 'export default async function main() {\n  await new Promise(() => {});\n  return 1;\n}\n' }]);
    const scripted = failedWith(await execute(s, 'await new Promise(() => {});\nresult = 1;', 'typescript'), 'UnsettledAwaitError');
    assert.match(scripted.error, /never settled/);
    assert.doesNotMatch(scripted.error, /status 0/);
    assert.match(failedWith(await call(s.tools, 'c__ts-hang'), 'UnsettledAwaitError').error, /never settled/);
  });

  test('stdout and stderr cut at 64 KB end on a whole character, in both languages', async () => {
    // One ASCII byte, then two-byte characters: the 65,536th byte is the first half of one.
    const s = await space();
    const outputs = [
      failedWith(await execute(s, 'import sys\ntext = "x" + "é" * 40000\nprint(text, end="")\nprint(text, end="", file=sys.stderr)\nraise ValueError("after the logs")'), 'ValueError'),
      failedWith(await execute(s, 'const text = "x" + "é".repeat(40000);\nprocess.stdout.write(text);\nprocess.stderr.write(text);\nthrow new RangeError("after the logs");', 'typescript'), 'RangeError'),
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
      { name: 'ts-shape', language: 'typescript', code: 'export default (input: { n?: unknown }) => ({ n: input.n ?? "oops" });\n', output_schema: shape },
    ]);
    failedWith(await call(s.tools, 'c__py-shape'), 'SchemaError');
    failedWith(await call(s.tools, 'c__ts-shape'), 'SchemaError');
    const py = 'from functions import py_shape, FunctionError\ntry:\n    py_shape()\n    result = "unchecked"\nexcept FunctionError as error:\n    result = [type(error).__name__, error.error_type]\n';
    assert.deepEqual(succeeded(await execute(s, py)), ['FunctionError', 'SchemaError']);
    const ts = 'import { ts_shape } from "functions";\ntry {\n  await ts_shape({});\n  result = "unchecked";\n} catch (error: any) {\n  result = [error.name, error.errorType];\n}\n';
    assert.deepEqual(succeeded(await execute(s, ts, 'typescript')), ['FunctionError', 'SchemaError']);
    // Results that match pass unchanged (other-language calls were checked already).
    assert.deepEqual(succeeded(await execute(s, 'from functions import py_shape, ts_shape\nresult = [py_shape(n=1), ts_shape(n=2)]')), [{ n: 1 }, { n: 2 }]);
    assert.deepEqual(succeeded(await execute(s, 'import { py_shape, ts_shape } from "functions";\nresult = [await py_shape({ n: 1 }), await ts_shape({ n: 2 })];', 'typescript')), [{ n: 1 }, { n: 2 }]);
    // Other-language calls keep their check.
    assert.deepEqual(succeeded(await execute(s, 'from functions import ts_shape, FunctionError\ntry:\n    ts_shape()\nexcept FunctionError as error:\n    result = error.error_type\n')), 'SchemaError');
  });
});
