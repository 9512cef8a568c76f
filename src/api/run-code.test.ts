// test-database: embedded, code mode one call at a time
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { encodeEnvHeader } from '../core/env-header.js';
import {
  callError,
  callOk,
  connect,
  createAccount,
  parseResult,
  startTestServer,
  type McpTestClient,
  type TestServer,
} from '../test-support/harness.js';
import { until } from '../test-support/processes.js';

let server: TestServer;
before(async () => {
  server = await startTestServer();
});
after(async () => {
  await server?.stop();
});

interface Space {
  create: McpTestClient;
  key: string;
  ns: string;
  run(env?: Record<string, string>, era?: 'v1' | 'v2'): Promise<McpTestClient>;
}

async function space(): Promise<Space> {
  const account = await createAccount(server.url);
  const ns = `code-${Math.random().toString(36).slice(2, 10)}`;
  const create = await connect(`${server.url}/mcp/create/${ns}`, account.key);
  await callOk(create, 'make_namespace', { name: ns });
  return {
    create,
    key: account.key,
    ns,
    run: (env, era = 'v1') =>
      connect(`${server.url}/mcp/run/${ns}`, account.key, era, env ? { 'x-mcpworks-env': encodeEnvHeader(env) } : {}),
  };
}

async function execute(client: McpTestClient, code: string, language: 'python' | 'typescript' = 'python') {
  const response = await client.callTool('execute', { code, language });
  return { response, value: parseResult(response), stdout: response.content[1]?.text?.replace(/^stdout:\n/, '') ?? '' };
}

const IS_PRIME = `def main(input_data):
    n = input_data["number"]
    if n < 2:
        return {"number": n, "prime": False}
    factors = [d for d in range(2, n) if n % d == 0]
    return {"number": n, "prime": not factors}
`;

describe('code mode', () => {
  test('one execute tool whose description teaches discovery; other ?mode values are refused', async () => {
    const s = await space();
    await callOk(s.create, 'make_service', { name: 'math' });
    await callOk(s.create, 'make_function', { service: 'math', name: 'is-prime', code: IS_PRIME });
    for (const url of [`${server.url}/mcp/run/${s.ns}`, `${server.url}/mcp/run/${s.ns}?mode=code`]) {
      const client = await connect(url, s.key, 'v2');
      const { tools } = await client.listTools();
      assert.deepEqual(
        tools.map((t) => t.name),
        ['execute'],
      );
      assert.match(tools[0]!.description!, /functions\.__doc__/);
      assert.match(tools[0]!.description!, /math\.is-prime/);
      assert.deepEqual(tools[0]!.inputSchema.required, ['code']);
    }
    const bad = await fetch(`${server.url}/mcp/run/${s.ns}?mode=bogus`, {
      method: 'POST',
      headers: { authorization: `Bearer ${s.key}`, 'content-type': 'application/json' },
      body: '{}',
    });
    assert.equal(bad.status, 400);
  });

  test('seed example 1: create is-prime, call it from code mode (Python and TypeScript)', async () => {
    const s = await space();
    await callOk(s.create, 'make_service', { name: 'math' });
    await callOk(s.create, 'make_function', {
      service: 'math',
      name: 'is-prime',
      code: IS_PRIME,
      input_schema: { type: 'object', properties: { number: { type: 'integer' } }, required: ['number'] },
      description: 'Checks if a number is prime',
    });
    const run = await s.run();
    assert.deepEqual((await execute(run, 'from functions import is_prime\nresult = is_prime(number=17)')).value, {
      number: 17,
      prime: true,
    });
    assert.deepEqual((await execute(run, 'from functions.math import is_prime\nresult = is_prime(number=12)["prime"]')).value, false);
    assert.deepEqual((await execute(run, 'import functions\nresult = functions.math.is_prime(number=2)')).value, {
      number: 2,
      prime: true,
    });
    const ts = await execute(run, 'import { is_prime } from "functions";\nresult = await is_prime({ number: 17 });', 'typescript');
    assert.deepEqual(ts.value, { number: 17, prime: true });
    const sub = await execute(
      run,
      'import { is_prime } from "functions/math";\nconst f = require("functions");\nresult = [await is_prime({ number: 4 }), typeof f.is_prime];',
      'typescript',
    );
    assert.deepEqual(sub.value, [{ number: 4, prime: false }, 'function']);
  });

  test('the Python loader comes compiled: its .pyc is hash-checked against the source beside it, so the import reads it', async () => {
    const s = await space();
    const run = await s.run();
    const code = [
      'import functions, importlib.util',
      'data = open(functions.__spec__.cached, "rb").read()',
      'source = open(functions.__file__, "rb").read()',
      'result = [data[:4] == importlib.util.MAGIC_NUMBER, int.from_bytes(data[4:8], "little"), data[8:16] == importlib.util.source_hash(source)]',
    ].join('\n');
    // Flags 3: a hash-based .pyc whose hash Python checks (a stale one would be compiled over, never run).
    assert.deepEqual((await execute(run, code)).value, [true, 3, true]);
  });

  test('functions.__doc__ lists every function with its service, signature and description', async () => {
    const s = await space();
    await callOk(s.create, 'make_service', { name: 'text-tools' });
    await callOk(s.create, 'make_function', {
      service: 'text-tools',
      name: 'word-count',
      code: 'def main(input_data):\n    return len(input_data["text"].split())\n',
      input_schema: { type: 'object', properties: { text: { type: 'string' }, lang: { type: 'string' } }, required: ['text'] },
      description: 'Counts words',
    });
    const run = await s.run();
    const py = await execute(run, 'import functions\nprint(functions.__doc__)\nresult = functions.word_count(text="a b c")');
    assert.equal(py.value, 3);
    assert.match(py.stdout, /service text_tools \("text-tools"\):/);
    assert.match(py.stdout, /word_count\(\*, text: str, lang: str = None\) -> Any/);
    assert.match(py.stdout, /Counts words/);
    const ts = await execute(
      run,
      'import * as functions from "functions";\nconsole.log(functions.__doc__);\nresult = await functions.word_count({ text: "x y" });',
      'typescript',
    );
    assert.equal(ts.value, 2);
    assert.match(ts.stdout, /word_count\(input: \{ text: string; lang\?: string \}\)/);
  });

  test('signatures show schema defaults; inspect.signature and help() show the real parameters', async () => {
    const s = await space();
    await callOk(s.create, 'make_service', { name: 'greet' });
    await callOk(s.create, 'make_function', {
      service: 'greet',
      name: 'hello',
      code: 'def main(input_data):\n    return input_data.get("name", "World")\n',
      input_schema: {
        type: 'object',
        properties: {
          times: { type: 'integer' },
          name: { type: 'string', default: 'dflt' },
          loud: { type: 'boolean', default: false },
          'odd-name': { type: 'string' },
        },
        required: ['times'],
      },
      description: 'Greets',
    });
    const run = await s.run();
    const py = await execute(
      run,
      'import contextlib, inspect, io, functions\nshown = io.StringIO()\nwith contextlib.redirect_stdout(shown):\n    help(functions.hello)\nresult = {"signature": str(inspect.signature(functions.hello)), "help": shown.getvalue(), "doc": functions.__doc__, "call": functions.hello(times=1)}',
    );
    // A property that cannot be a keyword name (odd-name) is taken through **kwargs.
    assert.equal(py.value.signature, "(*, times: int, name: str = 'dflt', loud: bool = False, **kwargs) -> 'Any'");
    assert.match(py.value.help, /hello\(\*, times: int, name: str = 'dflt', loud: bool = False, \*\*kwargs\)/);
    assert.match(py.value.help, /Greets/);
    assert.match(py.value.doc, /hello\(\*, times: int, name: str = "dflt", loud: bool = False, odd-name: str = None\) -> Any/);
    assert.equal(py.value.call, 'World', 'a default is shown, not sent: the function applies its own');
    const ts = await execute(run, 'import * as functions from "functions";\nresult = functions.__doc__;', 'typescript');
    assert.match(ts.value, /name\?: string \/\* default "dflt" \*\/; loud\?: boolean \/\* default false \*\//);
  });

  test('seed example 3: analyze_csv + format_report, intermediate data stays in the sandbox', async () => {
    const s = await space();
    await callOk(s.create, 'make_service', { name: 'data' });
    await callOk(s.create, 'make_function', { service: 'data', name: 'analyze-csv', template: 'csv-analyzer' });
    await callOk(s.create, 'make_function', { service: 'data', name: 'format-report', template: 'scheduled-report' });
    const run = await s.run();
    const { value } = await execute(
      run,
      `from functions import analyze_csv, format_report

data = analyze_csv(csv_data="name,age\\nAlice,30\\nBob,25")
result = format_report(
    title="Analysis",
    sections=[{"heading": "Data", "content": str(data)}]
)`,
    );
    assert.equal(value.format, 'markdown');
    assert.match(value.report, /^# Analysis/);
    assert.match(value.report, /'row_count': 2/);
    assert.match(value.report, /'median': 27.5/);
  });

  test('seed example 4: update, then restore_version; code mode runs the active version', async () => {
    const s = await space();
    await callOk(s.create, 'make_service', { name: 'math' });
    await callOk(s.create, 'make_function', { service: 'math', name: 'is-prime', code: IS_PRIME });
    const run = await s.run();
    const v2 = IS_PRIME.replace(
      'return {"number": n, "prime": not factors}',
      'return {"number": n, "prime": not factors, "factors": factors}',
    );
    assert.equal((await callOk(s.create, 'update_function', { service: 'math', name: 'is-prime', code: v2 })).version, 2);
    assert.deepEqual((await execute(run, 'from functions import is_prime\nresult = is_prime(number=6)')).value, {
      number: 6,
      prime: false,
      factors: [2, 3],
    });
    assert.equal((await callOk(s.create, 'update_function', { service: 'math', name: 'is-prime', restore_version: 1 })).version, 3);
    assert.deepEqual((await execute(run, 'from functions import is_prime\nresult = is_prime(number=6)')).value, {
      number: 6,
      prime: false,
    });
  });

  test("cross-language calls go through the bridge both ways, with the callee's npm packages", async () => {
    const s = await space();
    await callOk(s.create, 'make_service', { name: 'mix' });
    await callOk(s.create, 'make_function', {
      service: 'mix',
      name: 'py-upper',
      code: 'def main(input_data):\n    return input_data["s"].upper()\n',
    });
    await callOk(s.create, 'make_function', {
      service: 'mix',
      name: 'ts-check',
      language: 'typescript',
      requirements: ['is-number@7.0.0'],
      code: "import isNumber from 'is-number';\nexport default async function main(input: { v: unknown }) { return { number: isNumber(input.v) }; }",
    });
    const run = await s.run();
    assert.deepEqual(
      (await execute(run, 'from functions import ts_check, py_upper\nresult = [ts_check(v="5"), py_upper(s="abc")]')).value,
      [{ number: true }, 'ABC'],
    );
    assert.deepEqual(
      (
        await execute(
          run,
          'import { ts_check, py_upper } from "functions";\nresult = [await ts_check({ v: "x" }), await py_upper({ s: "def" })];',
          'typescript',
        )
      ).value,
      [{ number: false }, 'DEF'],
    );
  });

  test("arguments are checked against input_schema and fail in the caller's language", async () => {
    const s = await space();
    await callOk(s.create, 'make_service', { name: 'm' });
    const schema = { type: 'object', properties: { n: { type: 'integer' } }, required: ['n'] };
    await callOk(s.create, 'make_function', {
      service: 'm',
      name: 'py-n',
      code: 'def main(d):\n    return d["n"]\n',
      input_schema: schema,
    });
    await callOk(s.create, 'make_function', {
      service: 'm',
      name: 'ts-n',
      language: 'typescript',
      code: 'export default (i: { n: number }) => i.n;',
      input_schema: schema,
    });
    const run = await s.run();
    const caught = await execute(
      run,
      'import functions\ntry:\n    functions.py_n(n="seven")\nexcept ValueError as error:\n    result = [type(error).__name__, error.error_type, str(error)]',
    );
    assert.equal(caught.value[0], 'InputValidationError');
    assert.equal(caught.value[1], 'SchemaError');
    assert.match(caught.value[2], /\/n must be integer/);
    const ts = await execute(
      run,
      'import { ts_n } from "functions";\ntry { await ts_n({}); } catch (e) { result = [e.name, e.message]; }',
      'typescript',
    );
    assert.equal(ts.value[0], 'InputValidationError');
    assert.match(ts.value[1], /must have required property 'n'/);
    const uncaught = await execute(run, 'from functions import ts_n\nresult = ts_n(n=1.5)');
    assert.equal(uncaught.response.isError, true);
    assert.equal(uncaught.value.error_type, 'InputValidationError');
  });

  test('names, descriptions and schemas with quotes, newlines and ${...} stay data', async () => {
    const s = await space();
    await callOk(s.create, 'make_service', { name: 'evil' });
    const description = 'He said """hi""" and \'bye\'\n`${process.exit(1)}` "); import os; os._exit(1) #';
    await callOk(s.create, 'make_function', {
      service: 'evil',
      name: 'quote-me',
      description,
      code: 'def main(input_data):\n    return "\\"\\"\\" still fine ${x}"\n',
      input_schema: { type: 'object', properties: { 'we"ird': { type: 'string', description: '${1+1}' } } },
    });
    await callOk(s.create, 'make_function', {
      service: 'evil',
      name: 'ts-tpl',
      language: 'typescript',
      description: '`${globalThis.x = 1}`',
      code: 'export default () => "`${1}`";',
    });
    const run = await s.run();
    const py = await execute(run, 'import functions\nprint(functions.__doc__)\nresult = [functions.quote_me(), functions.ts_tpl()]');
    assert.deepEqual(py.value, ['""" still fine ${x}', '`${1}`']);
    assert.ok(py.stdout.includes('He said """hi""" and \'bye\''));
    const ts = await execute(
      run,
      'import { quote_me, ts_tpl, __doc__ } from "functions";\nresult = [await quote_me(), await ts_tpl(), __doc__.includes("${process.exit(1)}")];',
      'typescript',
    );
    assert.deepEqual(ts.value, ['""" still fine ${x}', '`${1}`', true]);
  });

  test('names that would collide in the functions package are refused at make time', async () => {
    const s = await space();
    await callOk(s.create, 'make_service', { name: 'utils' });
    await callOk(s.create, 'make_function', { service: 'utils', name: 'my-func', code: 'result = 1' });
    assert.match(
      (await callError(s.create, 'make_function', { service: 'utils', name: 'my_func', code: 'result = 2' })).message,
      /same identifier/,
    );
    assert.match(
      (await callError(s.create, 'make_function', { service: 'utils', name: 'utils', code: 'result = 2' })).message,
      /code mode/,
    );
    assert.match((await callError(s.create, 'make_service', { name: 'my-func' })).message, /code mode/);
    // The same function name in two services is fine: reachable through its service.
    await callOk(s.create, 'make_service', { name: 'other' });
    await callOk(s.create, 'make_function', { service: 'other', name: 'my-func', code: 'result = 3' });
    const run = await s.run();
    assert.deepEqual(
      (await execute(run, 'import functions\nresult = [functions.utils.my_func(), functions.other.my_func()]')).value,
      [1, 3],
    );
    const ambiguous = await execute(run, 'from functions import my_func');
    assert.equal(ambiguous.value.error_type, 'ImportError');
    assert.match(ambiguous.value.error, /several services/);
  });

  test('functions run inside execute follow the same contract as a run of their own', async () => {
    const s = await space();
    await callOk(s.create, 'make_service', { name: 'c' });
    await callOk(s.create, 'make_function', {
      service: 'c',
      name: 'early-exit',
      code: 'import sys\nresult = "set before exit"\nsys.exit(0)\nresult = "never"',
    });
    // Module state is the call's own: a second call in the same run starts from a fresh module.
    await callOk(s.create, 'make_function', { service: 'c', name: 'counter', code: 'calls = []\ncalls.append(1)\nresult = len(calls)' });
    await callOk(s.create, 'make_function', {
      service: 'c',
      name: 'named-main',
      language: 'typescript',
      code: 'export function main(input: { n: number }) { return input.n + 1; }',
    });
    const run = await s.run();
    assert.deepEqual(
      (await execute(run, 'from functions import early_exit, counter\nresult = [early_exit(), counter(), counter()]')).value,
      ['set before exit', 1, 1],
    );
    assert.equal(
      (await execute(run, 'import { named_main } from "functions";\nresult = await named_main({ n: 1 });', 'typescript')).value,
      2,
    );
  });

  test('a run that started on version N finishes on version N', async () => {
    const s = await space();
    await callOk(s.create, 'make_service', { name: 'v' });
    await callOk(s.create, 'make_function', { service: 'v', name: 'py-which', code: 'result = "v1"' });
    await callOk(s.create, 'make_function', { service: 'v', name: 'ts-which', language: 'typescript', code: 'export default () => "v1";' });
    const run = await s.run();
    const pending = execute(run, 'import time, functions\ntime.sleep(1.5)\nresult = [functions.py_which(), functions.ts_which()]');
    // Admitted means its namespace snapshot is taken (a fixed wait could end before that on a loaded machine).
    await until(
      'the run is admitted',
      async () =>
        ((await (await fetch(`${server.url}/api/usage`, { headers: { authorization: `Bearer ${s.key}` } })).json()) as any).concurrency
          .active,
      (active) => active > 0,
    );
    await callOk(s.create, 'update_function', { service: 'v', name: 'py-which', code: 'result = "v2"' });
    await callOk(s.create, 'update_function', { service: 'v', name: 'ts-which', code: 'export default () => "v2";' });
    assert.deepEqual((await pending).value, ['v1', 'v1']);
    assert.deepEqual((await execute(run, 'import functions\nresult = [functions.py_which(), functions.ts_which()]')).value, ['v2', 'v2']);
  });

  test('env: the execute sandbox gets only header variables some function declared', async () => {
    const s = await space();
    await callOk(s.create, 'make_service', { name: 'e' });
    await callOk(s.create, 'make_function', {
      service: 'e',
      name: 'needs-token',
      code: 'import os\n\ndef main(d):\n    return len(os.environ["APP_TOKEN"])\n',
      required_env: ['APP_TOKEN'],
    });
    const bare = await s.run();
    const missing = await execute(bare, 'from functions import needs_token\nresult = needs_token()');
    assert.equal(missing.value.error_type, 'FunctionError');
    assert.match(missing.value.error, /APP_TOKEN/);
    const withEnv = await s.run({ APP_TOKEN: 'abcdefghij', OTHER_SECRET: 'zzzzzzzzzz' });
    const seen = await execute(
      withEnv,
      'import os\nfrom functions import needs_token\nresult = [needs_token(), "APP_TOKEN" in os.environ, "OTHER_SECRET" in os.environ]',
    );
    assert.deepEqual(seen.value, [10, true, false]);
    const leaked = await execute(withEnv, 'import os\nprint(os.environ["APP_TOKEN"])\nresult = os.environ["APP_TOKEN"]');
    assert.equal(leaked.value, '[REDACTED_ENV_VALUE]');
    assert.equal(leaked.stdout.trim(), '[REDACTED_ENV_VALUE]');
  });

  test('an execute counts one execution (failed code too) and records the functions it called', async () => {
    const s = await space();
    await callOk(s.create, 'make_service', { name: 'm' });
    await callOk(s.create, 'make_function', { service: 'm', name: 'one', code: 'result = 1' });
    await callOk(s.create, 'make_function', { service: 'm', name: 'two', language: 'typescript', code: 'export default () => 2;' });
    const run = await s.run();
    assert.deepEqual((await execute(run, 'from functions import one, two\nresult = one() + two() + one()')).value, 4);
    const usage = await (await fetch(`${server.url}/api/usage`, { headers: { authorization: `Bearer ${s.key}` } })).json();
    assert.equal(usage.executions, 1);
    const [record] = await callOk(s.create, 'list_executions');
    assert.equal(record.mode, 'code');
    assert.equal(record.language, 'python');
    assert.deepEqual(record.functions, ['m.one@1', 'm.two@1', 'm.one@1']);
    assert.equal((await callOk(s.create, 'list_services'))[0].call_count, 1, 'a code-mode run counts for the services it called');
    const syntax = await execute(run, 'def broken(:\n    pass');
    assert.equal(syntax.value.error_type, 'SyntaxError');
    const usageAfter = await (await fetch(`${server.url}/api/usage`, { headers: { authorization: `Bearer ${s.key}` } })).json();
    assert.equal(usageAfter.executions, 2, 'code that ran counts, even when it failed');
    const refused = await execute(run, 'result = 1', 'ruby' as never);
    assert.equal(refused.response.isError, true);
    const usageRefused = await (await fetch(`${server.url}/api/usage`, { headers: { authorization: `Bearer ${s.key}` } })).json();
    assert.equal(usageRefused.executions, 2, 'refused before any sandbox: not counted');
    assert.equal((await callError(s.create, 'describe_execution', { id: 'x' })).type, 'not_found');
  });
});
