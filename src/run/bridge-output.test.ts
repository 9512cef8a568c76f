// The code-mode bridge checks a cross-language callee's output_schema (Python calling TypeScript and the reverse), as tool mode does.
// Through the real server and the official SDK clients; each test then checks /healthz and the
// meter. scripts/mutation/mutants.json names the enforcing lines this file must catch.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { DEFAULT_TIERS } from '../core/tiers.js';
import { parseResult } from '../test-support/harness.js';
import { startRuleServer, type RuleServer, execute } from '../test-support/spaces.js';

let t: RuleServer;
before(async () => {
  t = await startRuleServer(DEFAULT_TIERS);
});
after(async () => {
  await t?.stop();
});

describe('code mode bridge', () => {
  const schema = { type: 'object', properties: { n: { type: 'integer' } }, required: ['n'] };
  const functions = [
    { name: 'py-shape', code: 'def main(input_data):\n    return {"n": input_data["n"]}\n', output_schema: schema },
    { name: 'ts-shape', language: 'typescript', code: 'export default function main(input: { n: unknown }) { return { n: input.n }; }', output_schema: schema },
  ];

  test("checks a cross-language callee's output_schema (Python calling TypeScript and the reverse)", async () => {
    const s = await t.space(functions);
    const code = await s.run('code');
    const fromPython = await execute(
      code,
      'from functions import ts_shape\ngood = ts_shape(n=1)\ntry:\n    ts_shape(n="x")\n    bad = None\nexcept Exception as error:\n    bad = [error.error_type, str(error)]\nresult = {"good": good, "bad": bad}',
      'python',
    );
    assert.deepEqual(fromPython.value.good, { n: 1 });
    assert.equal(fromPython.value.bad?.[0], 'SchemaError', JSON.stringify(fromPython.value));
    assert.match(fromPython.value.bad[1], /does not match output_schema/);
    const fromTypescript = await execute(
      code,
      'import { py_shape } from "functions";\nconst good = await py_shape({ n: 1 });\nlet bad = null;\ntry { await py_shape({ n: "x" }); } catch (error: any) { bad = [error.errorType, error.message]; }\nresult = { good, bad };',
      'typescript',
    );
    assert.deepEqual(fromTypescript.value.good, { n: 1 });
    assert.equal(fromTypescript.value.bad?.[0], 'SchemaError', JSON.stringify(fromTypescript.value));
    assert.match(fromTypescript.value.bad[1], /does not match output_schema/);
    // And in tool mode, both languages.
    const tools = await s.run('tools');
    for (const tool of ['utils__py-shape', 'utils__ts-shape']) {
      const wrong = parseResult(await tools.callTool(tool, { n: 'x' }));
      assert.equal(wrong.error_type, 'SchemaError', tool);
    }
    await t.assertHealthy();
    assert.deepEqual(await t.usage(s.account), { executions: 4, active: 0 });
  });
});
