// test-database: embedded, bridge rules live in the run service
// What the code-mode bridge checks, as tool mode does: a cross-language callee's output_schema
// (Python calling TypeScript and the reverse), every callee's input_schema and required env, and
// which env variables each sandbox gets. Through the real server and the official SDK clients;
// each test then checks /healthz and the meter. scripts/mutation/mutants.json names the enforcing lines this file must catch.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { DEFAULT_TIERS } from '../core/tiers.js';
import { parseResult } from '../test-support/harness.js';
import { execute, startRuleServer, type RuleServer } from '../test-support/spaces.js';

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
    {
      name: 'ts-shape',
      language: 'typescript',
      code: 'export default function main(input: { n: unknown }) { return { n: input.n }; }',
      output_schema: schema,
    },
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

  test("checks every callee's input_schema and required env, in both directions and in tool mode", async () => {
    const typed = { type: 'object', properties: { n: { type: 'integer' } }, required: ['n'] };
    const s = await t.space([
      { name: 'py-typed', code: 'def main(input_data):\n    return input_data["n"]\n', input_schema: typed },
      {
        name: 'ts-typed',
        language: 'typescript',
        code: 'export default function main(input: { n: number }) { return input.n; }',
        input_schema: typed,
      },
      { name: 'py-needs', code: 'result = 1', required_env: ['APP_TOKEN'] },
      { name: 'ts-needs', language: 'typescript', code: 'export default function main() { return 1; }', required_env: ['APP_TOKEN'] },
    ]);
    const code = await s.run('code');
    const probe = {
      python: (fn: string, args: string) =>
        `from functions import ${fn}\ntry:\n    result = {"value": ${fn}(${args})}\nexcept Exception as error:\n    result = {"caught": [type(error).__name__, error.error_type]}`,
      typescript: (fn: string, args: string) =>
        `import { ${fn} } from "functions";\ntry { result = { value: await ${fn}(${args}) }; } catch (error: any) { result = { caught: [error.name, error.errorType] }; }`,
    };
    for (const language of ['python', 'typescript'] as const) {
      // Same language (checked by the bridge before the call runs in the caller's sandbox) and the other one.
      for (const fn of ['py_typed', 'ts_typed']) {
        const args = language === 'python' ? 'n="x"' : '{ n: "x" }';
        assert.deepEqual(
          (await execute(code, probe[language](fn, args), language)).value,
          { caught: ['InputValidationError', 'SchemaError'] },
          `${language} → ${fn}`,
        );
        const good = language === 'python' ? 'n=5' : '{ n: 5 }';
        assert.deepEqual((await execute(code, probe[language](fn, good), language)).value, { value: 5 }, `${language} → ${fn}`);
      }
      for (const fn of ['py_needs', 'ts_needs']) {
        assert.deepEqual(
          (await execute(code, probe[language](fn, ''), language)).value,
          { caught: ['FunctionError', 'missing_env'] },
          `${language} → ${fn}`,
        );
      }
    }
    const tools = await s.run('tools');
    for (const tool of ['utils__py-typed', 'utils__ts-typed'])
      assert.equal(parseResult(await tools.callTool(tool, { n: 'x' })).error_type, 'SchemaError', tool);
    for (const tool of ['utils__py-needs', 'utils__ts-needs'])
      assert.equal(parseResult(await tools.callTool(tool)).error_type, 'missing_env', tool);
    await t.assertHealthy();
    // Refused before any sandbox: the tool-mode calls count nothing; each execute counts one.
    assert.deepEqual(await t.usage(s.account), { executions: 12, active: 0 });
  });

  test('each sandbox gets only the env variables its code may see (tool mode, code mode, bridge)', async () => {
    const listEnvPy = 'import os\ndef main(input_data):\n    return sorted(k for k in os.environ if k.startswith("APP_"))\n';
    const listEnvTs = 'export default function main() { return Object.keys(process.env).filter((k) => k.startsWith("APP_")).sort(); }';
    const s = await t.space([
      { name: 'py-a', code: listEnvPy, optional_env: ['APP_A'] },
      { name: 'ts-b', language: 'typescript', code: listEnvTs, optional_env: ['APP_B'] },
    ]);
    const env = { APP_A: 'value-a-123456', APP_B: 'value-b-123456', APP_UNDECLARED: 'value-u-123456' };
    const tools = await s.run('tools', env);
    assert.deepEqual(parseResult(await tools.callTool('utils__py-a')), ['APP_A']);
    assert.deepEqual(parseResult(await tools.callTool('utils__ts-b')), ['APP_B']);
    const code = await s.run('code', env);
    // The execute sandbox: what some function declared, never an undeclared variable.
    assert.deepEqual((await execute(code, 'import os\nresult = sorted(k for k in os.environ if k.startswith("APP_"))', 'python')).value, [
      'APP_A',
      'APP_B',
    ]);
    assert.deepEqual(
      (await execute(code, 'result = Object.keys(process.env).filter((k) => k.startsWith("APP_")).sort();', 'typescript')).value,
      ['APP_A', 'APP_B'],
    );
    // A cross-language callee's own sandbox: only what it declared.
    assert.deepEqual((await execute(code, 'from functions import ts_b\nresult = ts_b()', 'python')).value, ['APP_B']);
    assert.deepEqual((await execute(code, 'import { py_a } from "functions";\nresult = await py_a();', 'typescript')).value, ['APP_A']);
    await t.assertHealthy();
    assert.deepEqual(await t.usage(s.account), { executions: 6, active: 0 });
  });
});
