// test-database: embedded, the answer path is the server's, not the database's
// Large answers (lines over 32 KB) on every route take the worker path (decoded, scanned and
// rendered in a scan worker, spliced into the MCP answer) and give the client exactly what the
// main-thread path gives: the same JSON, redaction markers, structuredContent, error bodies,
// SerializationError for deep answers; the bridge carries a callee's large result; history and
// the meter are right. Both languages; both protocol eras.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { DEFAULT_TIERS } from '../core/tiers.js';
import { callOk, parseResult } from '../test-support/harness.js';
import { execute, startRuleServer, type RuleServer } from '../test-support/spaces.js';
import { sharedScanPool } from './scan-pool.js';

let t: RuleServer;
before(async () => {
  t = await startRuleServer(DEFAULT_TIERS);
});
after(async () => {
  await t?.stop();
});

const TOKEN = 'large-answer-secret-Qm7vX2pL9';
const BIG = 200_000;
/** What the functions return: a large object with the secret at its end, in a nested value. */
const expected = { text: `${'a"\\é'.repeat(BIG / 4)}-[REDACTED_ENV_VALUE]`, list: [1, 2.5, null, true, 'z'], nested: { k: 'v' } };

/** Worker paths taken (decoded lines, rendered answers) by `body`. */
async function paths<T>(body: () => Promise<T>): Promise<{ value: T; decoded: number; rendered: number }> {
  const before = { ...sharedScanPool.counts };
  const value = await body();
  return { value, decoded: sharedScanPool.counts.decoded - before.decoded, rendered: sharedScanPool.counts.rendered - before.rendered };
}

describe('large answers', () => {
  test('tool mode, both languages and eras: same result, redaction and structuredContent, through the worker path', async () => {
    const objectSchema = { type: 'object', properties: { text: { type: 'string' } }, required: ['text'] };
    const py = `import os\ndef main(input_data):\n    return {"text": 'a"\\\\é' * ${BIG / 4} + "-" + os.environ["APP_TOKEN"], "list": [1, 2.5, None, True, "z"], "nested": {"k": "v"}}\n`;
    const ts = `export default function main() {\n  return { text: 'a"\\\\é'.repeat(${BIG / 4}) + "-" + process.env.APP_TOKEN, list: [1, 2.5, null, true, "z"], nested: { k: "v" } };\n}\n`;
    const s = await t.space([
      { name: 'py-big', required_env: ['APP_TOKEN'], code: py, output_schema: objectSchema },
      { name: 'ts-big', language: 'typescript', required_env: ['APP_TOKEN'], code: ts },
    ]);
    for (const era of ['v2', 'v1'] as const) {
      const tools = await s.run('tools', { APP_TOKEN: TOKEN }, era);
      for (const [tool, structured] of [
        ['utils__py-big', true],
        ['utils__ts-big', false],
      ] as const) {
        const { value: answer, decoded, rendered } = await paths(() => tools.callTool(tool));
        assert.equal(answer.isError, undefined, `${era} ${tool}`);
        assert.deepEqual(answer.content, [{ type: 'text', text: JSON.stringify(expected) }], `${era} ${tool}`);
        if (structured) assert.deepEqual(answer.structuredContent, expected, `${era} ${tool}`);
        else assert.equal(answer.structuredContent, undefined, `${era} ${tool}`);
        assert.deepEqual([decoded, rendered], [1, 1], `${era} ${tool}: decoded and rendered in a worker`);
      }
    }
    const listed = await callOk(s.create, 'list_executions');
    assert.equal(listed.length, 4);
    for (const { id } of listed) {
      const stored = await callOk(s.create, 'describe_execution', { id });
      assert.equal(stored.status, 'success');
      assert.ok(stored.bytes_out > BIG, `bytes_out ${stored.bytes_out}`);
    }
    await t.assertHealthy();
    assert.deepEqual(await t.usage(s.account), { executions: 4, active: 0 });
  });

  test('code mode, both languages, with a large result from another language over the bridge; large errors and deep answers', async () => {
    const s = await t.space([
      {
        name: 'py-part',
        required_env: ['APP_TOKEN'],
        code: `import os\ndef main(input_data):\n    return {"part": "p" * ${BIG} + os.environ["APP_TOKEN"]}\n`,
      },
      {
        name: 'ts-part',
        language: 'typescript',
        required_env: ['APP_TOKEN'],
        code: `export default function main() {\n  return { part: "q".repeat(${BIG}) + process.env.APP_TOKEN };\n}\n`,
      },
    ]);
    const code = await s.run('code', { APP_TOKEN: TOKEN });
    // TypeScript calls the Python function (a sandbox of its own, its answer decoded in a worker and
    // passed back as bytes), and returns more than it got.
    const fromTs = await paths(() =>
      execute(
        code,
        'import { py_part } from "functions";\nconst r: any = await py_part({});\nconsole.log("got " + r.part.length);\nresult = { got: r.part, more: "m".repeat(50000) };\n',
        'typescript',
      ),
    );
    assert.equal(fromTs.value.isError, false);
    assert.deepEqual(fromTs.value.value, { got: `${'p'.repeat(BIG)}[REDACTED_ENV_VALUE]`, more: 'm'.repeat(50000) });
    assert.deepEqual([fromTs.decoded, fromTs.rendered], [2, 1], 'the callee and the caller decoded in a worker, the answer rendered there');
    const fromPy = await paths(() =>
      execute(code, 'from functions import ts_part\nr = ts_part()\nprint("got", len(r["part"]))\nresult = r\n', 'python'),
    );
    assert.deepEqual(fromPy.value, { isError: false, value: { part: `${'q'.repeat(BIG)}[REDACTED_ENV_VALUE]` } });
    assert.deepEqual([fromPy.decoded, fromPy.rendered], [2, 1]);
    const answer = await code.callTool('execute', { code: 'print("hello")\nresult = "r" * 100000', language: 'python' });
    assert.deepEqual(answer.content, [
      { type: 'text', text: JSON.stringify('r'.repeat(100000)) },
      { type: 'text', text: 'stdout:\nhello\n' },
    ]);

    // A large error: its message is read in a worker, redacted and rendered as the error body.
    for (const [language, raise] of [
      ['python', 'import os\nraise ValueError("e" * 100000 + os.environ["APP_TOKEN"])'],
      ['typescript', 'throw new RangeError("e".repeat(100000) + process.env.APP_TOKEN);'],
    ] as const) {
      const failed = await paths(() => code.callTool('execute', { code: raise, language }));
      assert.equal(failed.value.isError, true, language);
      const body = parseResult(failed.value);
      assert.equal(body.error_type, language === 'python' ? 'ValueError' : 'RangeError');
      assert.ok(body.error.endsWith(`${'e'.repeat(1000)}[REDACTED_ENV_VALUE]`), `${language}: ${body.error.slice(-60)}`);
      assert.doesNotMatch(JSON.stringify(failed.value), new RegExp(TOKEN));
      assert.deepEqual([failed.decoded, failed.rendered], [1, 1], language);
    }
    // Nested past the depth limit in a large line: SerializationError, decided in the worker.
    const deep = await paths(() =>
      execute(code, 'import os\nos.write(3, b\'{"ok":true,"result":\' + b"[" * 40000 + b"]" * 40000 + b"}\\n")\nos._exit(0)\n', 'python'),
    );
    assert.equal(deep.value.isError, true);
    assert.equal(deep.value.value.error_type, 'SerializationError');
    assert.equal(deep.decoded, 1);

    for (const { id } of await callOk(s.create, 'list_executions')) {
      const stored = await callOk(s.create, 'describe_execution', { id });
      assert.doesNotMatch(JSON.stringify(stored), new RegExp(TOKEN));
    }
    await t.assertHealthy();
    assert.deepEqual(await t.usage(s.account), { executions: 6, active: 0 });
  });
  test('a large bridge call is parsed in a worker and its input reaches the callee as sent (with and without input_schema)', async () => {
    const schema = { type: 'object', properties: { blob: { type: 'string' } }, required: ['blob'] };
    const echo =
      'def main(input_data):\n    b = input_data["blob"]\n    return {"n": len(b), "ends": b[-12:], "same": b == "\\u00e9\\"" * 60000 + "end-of-blob"}\n';
    const s = await t.space([
      { name: 'py-echo', code: echo },
      { name: 'py-checked', code: echo, input_schema: schema },
      {
        name: 'ts-echo',
        language: 'typescript',
        code: 'export default function main(input: any) {\n  return { n: input.blob.length, same: input.blob === "é\\"".repeat(60000) + "end-of-blob" };\n}\n',
      },
    ]);
    const code = await s.run('code');
    const schemas = t.server.server.services.schemas;
    const raw = schemas.stats().raw;
    const fromTs = await paths(() =>
      execute(
        code,
        'import { py_echo, py_checked } from "functions";\nconst blob = "é\\"".repeat(60000) + "end-of-blob";\nresult = [await py_echo({ blob }), await py_checked({ blob })];\n',
        'typescript',
      ),
    );
    assert.deepEqual(fromTs.value, {
      isError: false,
      value: [
        { n: 120011, ends: 'é"é"end-of-blob'.slice(-12), same: true },
        { n: 120011, ends: 'é"é"end-of-blob'.slice(-12), same: true },
      ],
    });
    assert.ok(fromTs.decoded >= 2, `the two calls' lines were parsed in a worker (${fromTs.decoded})`);
    const fromPy = await paths(() =>
      execute(code, 'from functions import ts_echo\nresult = ts_echo(blob="\\u00e9\\"" * 60000 + "end-of-blob")\n', 'python'),
    );
    assert.deepEqual(fromPy.value, { isError: false, value: { n: 120011, same: true } });
    assert.ok(fromPy.decoded >= 1, `the call's line was parsed in a worker (${fromPy.decoded})`);
    // A large call past the input_schema: refused as a small one is.
    const refused = await execute(
      code,
      'from functions import py_checked\ntry:\n    py_checked(blob=["x" * 50000])\n    result = "ran"\nexcept Exception as e:\n    result = type(e).__name__\n',
      'python',
    );
    assert.deepEqual(refused, { isError: false, value: 'InputValidationError' });
    // Both large inputs to py-checked reached the schema worker as their bytes, never parsed on the main thread.
    assert.equal(schemas.stats().raw, raw + 2, 'the large bridge inputs went to the schema worker unparsed');
    await t.assertHealthy();
    assert.deepEqual(await t.usage(s.account), { executions: 3, active: 0 });
  });
});
