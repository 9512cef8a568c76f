// test-database: embedded, schema workers live in the node
/**
 * Issue 10, item 1: tenant JSON Schemas are untrusted code. Each attack runs through the real
 * server (tool mode, code mode and its bridge, create time); each proves that /healthz answered
 * while the check ran (so it ran off the main thread) and after it, and that the meter is right.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { MAX_CHECKED_DEPTH, MAX_CHECKED_VALUES, MAX_SCHEMA_DEPTH, SCHEMA_CHECK_DEADLINE_MS } from '../core/limits.js';
import { DEFAULT_TIERS } from '../core/tiers.js';
import { callError, callOk, parseResult, type TestServer } from '../test-support/harness.js';
import { startRuleServer, type RuleServer, type Space } from '../test-support/spaces.js';

let rules: RuleServer;
let server: TestServer;
before(async () => {
  rules = await startRuleServer(DEFAULT_TIERS);
  server = rules.server;
});
after(async () => {
  await rules?.stop();
});

/** `$defs` recursion through an `anyOf` of two array branches: exponential in the input's depth. */
const RECURSIVE = {
  type: 'object',
  properties: { a: { $ref: '#/$defs/n' } },
  $defs: { n: { anyOf: [{ type: 'array', items: { $ref: '#/$defs/n' } }, { type: 'array', items: { $ref: '#/$defs/n' } }] } },
};
const nested = (levels: number): unknown => JSON.parse(`${'['.repeat(levels)}1${']'.repeat(levels)}`);
/** 60 bytes of JSON: inline, this exhausted the server's heap and killed it. */
const HEAP_BOMB = { a: nested(26) };
/** 46 bytes: inline, this froze every tenant for seconds. */
const FREEZE = { a: nested(19) };
/** Quadratic: ajv compares every pair of 40,000 items (several seconds inline). */
const UNIQUE_INPUT_SCHEMA = { type: 'object', properties: { items: { type: 'array', uniqueItems: true } } };
const UNIQUE_INPUT = { items: Array.from({ length: 40_000 }, (_, i) => i) };
const UNIQUE_OUTPUT_SCHEMA = { type: 'array', uniqueItems: true };
const STOPPED = /was stopped: it (needed more than \d+ ms of CPU time|took longer than \d+ ms|needed more than \d+ MB of memory)/;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const healthz = async () => (await fetch(`${server.url}/healthz`)).status;

/**
 * Waits until a schema worker holds a job, then asks /healthz: it must answer while `pending` (the
 * attack) is still running. Inline on the main thread the check would hold this very event loop, so
 * no worker would ever be busy and nothing could answer before the check ended.
 */
async function healthyWhileChecking(pending: Promise<unknown>): Promise<void> {
  let settled = false;
  pending.then(
    () => (settled = true),
    () => (settled = true),
  );
  const schemas = server.server.services.schemas;
  for (let i = 0; i < 6000 && schemas.stats().busy === 0 && !settled; i++) await sleep(5);
  assert.ok(schemas.stats().busy > 0, 'the check runs in a schema worker');
  assert.equal(await healthz(), 200);
  assert.equal(settled, false, '/healthz answered while the check was still running');
}

/**
 * The per-minute counter of the current minute must count exactly the admitted calls made in it:
 * each call is bracketed by clock readings, so one that straddles a minute boundary is allowed
 * either way instead of making the test flaky.
 */
class MinuteMeter {
  private readonly calls: Array<{ before: number; after: number; units: number }> = [];
  /** `units`: what the call takes of the rate (an execute's cross-language calls take one each). */
  async track<T>(call: () => Promise<T>, units = 1): Promise<T> {
    const before = Math.floor(Date.now() / 60_000);
    try {
      return await call();
    } finally {
      this.calls.push({ before, after: Math.floor(Date.now() / 60_000), units });
    }
  }
  assertUsed(used: number): void {
    const minute = Math.floor(Date.now() / 60_000);
    const total = (calls: Array<{ units: number }>) => calls.reduce((sum, c) => sum + c.units, 0);
    const surely = total(this.calls.filter((c) => c.before === minute));
    const maybe = total(this.calls.filter((c) => c.after === minute));
    assert.ok(used >= surely && used <= maybe, `executions this minute: ${used}, expected ${surely}..${maybe}`);
  }
}

const space = (functions: Array<Record<string, unknown>>) => rules.space(functions);
/** Both modes through the 2025-era SDK client (v1). */
const runAs = (s: Space, mode: 'tools' | 'code') => s.run(mode, undefined, 'v1');
const meterOf = (s: Space): Promise<{ executions: number; executions_per_minute: { used: number } }> => rules.usageOf(s.account);

describe('tenant schemas run in workers with a deadline and a heap limit', () => {
  test('tool mode input: heap bomb, freeze, uniqueItems and the value caps fail closed, uncounted but recorded', async () => {
    const attacker = await space([
      { name: 'deep', code: 'def main(input_data):\n    return "ran"\n', input_schema: RECURSIVE },
      { name: 'deep-ts', language: 'typescript', code: 'export default () => "ran";\n', input_schema: RECURSIVE },
      { name: 'uniq', code: 'def main(input_data):\n    return "ran"\n', input_schema: UNIQUE_INPUT_SCHEMA },
      { name: 'uniq-ts', language: 'typescript', code: 'export default () => "ran";\n', input_schema: UNIQUE_INPUT_SCHEMA },
    ]);
    const bystander = await space([{ name: 'typed', code: 'result = 1', input_schema: { type: 'object', properties: { n: { type: 'integer' } } } }]);
    const run = await runAs(attacker, 'tools');
    const other = await runAs(bystander, 'tools');
    const minute = new MinuteMeter();

    const attacks: Array<[string, Record<string, unknown>]> = [
      ['utils__deep', HEAP_BOMB],
      ['utils__deep-ts', FREEZE],
      ['utils__uniq-ts', UNIQUE_INPUT],
      ['utils__uniq', UNIQUE_INPUT],
    ];
    for (const [tool, input] of attacks) {
      if (tool === 'utils__uniq-ts') {
        // Fairness is about the workers there are: let the ones replaced after the last kills start.
        for (let i = 0; i < 6000 && server.server.services.schemas.stats().ready < 2; i++) await sleep(5);
      }
      const pending = minute.track(() => run.callTool(tool, input));
      await healthyWhileChecking(pending);
      if (tool === 'utils__uniq-ts') {
        // Another tenant's check does not queue behind the attacker's: it is answered meanwhile.
        let attackDone = false;
        void pending.then(() => (attackDone = true));
        const theirs = parseResult(await other.callTool('utils__typed', { n: 'x' }));
        assert.equal(theirs.error_type, 'SchemaError', JSON.stringify(theirs));
        assert.equal(attackDone, false, "the bystander's check finished while the attacker's still ran");
      }
      const refused = parseResult(await pending);
      assert.equal(refused.error_type, 'SchemaLimitError', tool);
      assert.match(refused.error, new RegExp(`the input_schema check of utils\\.${tool.slice(7)} ${STOPPED.source}`));
      assert.equal(await healthz(), 200);
    }

    // The caps are checked before any worker: cheap, iterative, typed.
    const tooDeep = parseResult(await minute.track(() => run.callTool('utils__deep', { a: nested(MAX_CHECKED_DEPTH) })));
    assert.equal(tooDeep.error_type, 'SchemaLimitError');
    assert.match(tooDeep.error, new RegExp(`the input is nested deeper than ${MAX_CHECKED_DEPTH} levels`));
    const tooMany = parseResult(await minute.track(() => run.callTool('utils__uniq-ts', { items: new Array(MAX_CHECKED_VALUES).fill(0) })));
    assert.equal(tooMany.error_type, 'SchemaLimitError');
    assert.match(tooMany.error, new RegExp(`the input holds more than ${MAX_CHECKED_VALUES} JSON values`));

    // Fresh workers took over: ordinary checks pass and fail as before.
    assert.equal(parseResult(await minute.track(() => run.callTool('utils__deep', { a: [[], [[]]] }))), 'ran');
    assert.equal(parseResult(await minute.track(() => run.callTool('utils__uniq-ts', { items: [1, 1] }))).error_type, 'SchemaError');

    // Meter: the monthly quota counts only the call whose code ran; the per-minute rate counts
    // every admitted call (refusals cost the server); every call is in the history.
    const usage = await meterOf(attacker);
    assert.equal(usage.executions, 1);
    minute.assertUsed(usage.executions_per_minute.used);
    const history = await callOk(attacker.create, 'list_executions', {});
    assert.equal(history.length, 8);
    const types = history.map((e: { error_type: string | null }) => e.error_type);
    assert.equal(types.filter((t: string | null) => t === 'SchemaLimitError').length, 6);
    assert.equal(types.filter((t: string | null) => t === 'SchemaError').length, 1);
    assert.equal(history.filter((e: { status: string }) => e.status === 'success').length, 1);
    const bomb = history.find((e: { function: string; error_type: string }) => e.function === 'deep' && e.error_type === 'SchemaLimitError');
    assert.match((await callOk(attacker.create, 'describe_execution', { id: bomb.id })).error_message, /input_schema check of utils\.deep was stopped/);
  });

  test('tool mode output: uniqueItems on a 20,000-item result fails closed in both languages; the run counts', async () => {
    const attacker = await space([
      { name: 'out', code: 'def main(input_data):\n    return [[i] for i in range(20000)]\n', output_schema: UNIQUE_OUTPUT_SCHEMA },
      { name: 'out-ts', language: 'typescript', code: 'export default () => Array.from({ length: 20000 }, (_, i) => [i]);\n', output_schema: UNIQUE_OUTPUT_SCHEMA },
      { name: 'small', code: 'def main(input_data):\n    return [1, 2]\n', output_schema: UNIQUE_OUTPUT_SCHEMA },
    ]);
    const run = await runAs(attacker, 'tools');
    const minute = new MinuteMeter();
    for (const tool of ['utils__out', 'utils__out-ts']) {
      const pending = minute.track(() => run.callTool(tool));
      await healthyWhileChecking(pending);
      const refused = parseResult(await pending);
      assert.equal(refused.error_type, 'SchemaLimitError', tool);
      assert.match(refused.error, new RegExp(`the output_schema check ${STOPPED.source}`));
      assert.equal(await healthz(), 200);
    }
    assert.deepEqual(parseResult(await minute.track(() => run.callTool('utils__small'))), [1, 2]);

    const usage = await meterOf(attacker);
    assert.equal(usage.executions, 3, 'the code ran each time: each call counts');
    minute.assertUsed(usage.executions_per_minute.used);
    const history = await callOk(attacker.create, 'list_executions', { status: 'error' });
    assert.deepEqual(history.map((e: { error_type: string }) => e.error_type), ['SchemaLimitError', 'SchemaLimitError']);
  });

  test('code mode: bridge input checks and cross-language output checks fail closed, in both languages', async () => {
    const attacker = await space([
      { name: 'deep', code: 'def main(input_data):\n    return "ran"\n', input_schema: RECURSIVE },
      { name: 'uniq-ts', language: 'typescript', code: 'export default () => "ran";\n', input_schema: UNIQUE_INPUT_SCHEMA },
      { name: 'out', code: 'def main(input_data):\n    return [[i] for i in range(20000)]\n', output_schema: UNIQUE_OUTPUT_SCHEMA },
      { name: 'out-ts', language: 'typescript', code: 'export default () => Array.from({ length: 20000 }, (_, i) => [i]);\n', output_schema: UNIQUE_OUTPUT_SCHEMA },
    ]);
    const run = await runAs(attacker, 'code');
    const minute = new MinuteMeter();

    // Python: a same-language callee's input (26 deep), then a TypeScript callee's result.
    const python = [
      'import functions',
      'v = 1',
      'for _ in range(26):',
      '    v = [v]',
      'result = {}',
      'for name, call in (("input", lambda: functions.deep(a=v)), ("output", lambda: functions.out_ts())):',
      '    try:',
      '        call()',
      '        result[name] = "passed"',
      '    except functions.FunctionError as error:',
      '        result[name] = [error.error_type, str(error)]',
    ].join('\n');
    // Each execute: one unit, and one for its call to a function of the other language.
    const fromPython = minute.track(() => run.callTool('execute', { code: python }), 2);
    await healthyWhileChecking(fromPython);
    const py = parseResult(await fromPython);
    assert.equal(py.input[0], 'SchemaLimitError');
    assert.match(py.input[1], new RegExp(`the input_schema check of utils\\.deep ${STOPPED.source}`));
    assert.equal(py.output[0], 'SchemaLimitError');
    assert.match(py.output[1], new RegExp(`the output_schema check ${STOPPED.source}`));
    assert.equal(await healthz(), 200);

    // TypeScript: a same-language callee's input (40,000 items), then a Python callee's result.
    const typescript = [
      'import { uniq_ts, out } from "functions";',
      'const outcome: Record<string, unknown> = {};',
      'for (const [name, call] of [["input", () => uniq_ts({ items: Array.from({ length: 40000 }, (_, i) => i) })], ["output", () => out({})]] as const) {',
      '  try { await call(); outcome[name] = "passed"; } catch (error: any) { outcome[name] = [error.errorType, error.message]; }',
      '}',
      'result = outcome;',
    ].join('\n');
    const fromTypescript = minute.track(() => run.callTool('execute', { code: typescript, language: 'typescript' }), 2);
    await healthyWhileChecking(fromTypescript);
    const ts = parseResult(await fromTypescript);
    assert.equal(ts.input[0], 'SchemaLimitError');
    assert.match(ts.input[1], new RegExp(`the input_schema check of utils\\.uniq-ts ${STOPPED.source}`));
    assert.equal(ts.output[0], 'SchemaLimitError');
    assert.match(ts.output[1], new RegExp(`the output_schema check ${STOPPED.source}`));
    assert.equal(await healthz(), 200);

    const usage = await meterOf(attacker);
    assert.equal(usage.executions, 2, 'each execute ran code: one each, whatever its calls met');
    minute.assertUsed(usage.executions_per_minute.used);
    const history = await callOk(attacker.create, 'list_executions', {});
    assert.equal(history.length, 2);
    assert.ok(history.every((e: { mode: string; status: string }) => e.mode === 'code' && e.status === 'success'));
    assert.deepEqual(history.map((e: { functions: string[] }) => e.functions.map((f) => f.replace(/@\d+$/, '')).sort()).reverse(), [
      ['utils.deep', 'utils.out-ts'],
      ['utils.out', 'utils.uniq-ts'],
    ]);
  });

  test('create time: a schema that is slow to compile or too deep is refused, nothing is written, nothing metered', async () => {
    const owner = await space([{ name: 'keep', code: 'result = 1', input_schema: { type: 'object' } }]);
    // ajv compares enum members while generating code: seconds for 20,000 small arrays (149 KB).
    const slow = { enum: Array.from({ length: 20_000 }, (_, i) => [i]) };
    const pending = owner.create.callTool('make_function', { service: 'utils', name: 'slow', code: 'result = 1', input_schema: slow });
    await healthyWhileChecking(pending);
    const refused = parseResult(await pending).error;
    assert.equal(refused.type, 'invalid_schema');
    assert.equal(refused.message, `compiling input_schema was stopped: it needed more than ${SCHEMA_CHECK_DEADLINE_MS} ms of CPU time`);
    assert.equal(await healthz(), 200);

    const update = owner.create.callTool('update_function', { service: 'utils', name: 'keep', output_schema: slow });
    await healthyWhileChecking(update);
    assert.match(parseResult(await update).error.message, /compiling output_schema was stopped/);

    let deep: Record<string, unknown> = { type: 'string' };
    for (let i = 0; i < MAX_SCHEMA_DEPTH; i++) deep = { items: deep };
    const tooDeep = await callError(owner.create, 'make_function', { service: 'utils', name: 'deep', code: 'result = 1', input_schema: deep });
    assert.equal(tooDeep.type, 'invalid_schema');
    assert.match(tooDeep.message, new RegExp(`input_schema is nested deeper than ${MAX_SCHEMA_DEPTH} levels`));
    const invalid = await callError(owner.create, 'make_function', { service: 'utils', name: 'bad', code: 'result = 1', input_schema: { type: 'nonsense' } });
    assert.equal(invalid.type, 'invalid_schema');
    assert.match(invalid.message, /input_schema is not a valid JSON Schema: schema is invalid/);

    // Deeper than any stack, sent as raw JSON (no client can serialise it): typed errors, not a RangeError.
    const abyss = `${'{"a":'.repeat(50_000)}{}${'}'.repeat(50_000)}`;
    const raw = async (args: string) => {
      const response = await fetch(`${server.url}/mcp/create/${owner.ns}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'mcp-protocol-version': '2025-06-18', authorization: `Bearer ${owner.account.key}` },
        body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"make_function","arguments":${args}}}`,
      });
      const text = await response.text();
      return JSON.parse(JSON.parse(text.split('data:').pop()!.trim()).result.content[0].text).error;
    };
    assert.deepEqual(await raw(`{"service":"utils","name":"abyss","code":"result = 1","input_schema":${abyss}}`), {
      type: 'invalid_schema',
      message: `input_schema is nested deeper than ${MAX_SCHEMA_DEPTH} levels`,
      field: 'input_schema',
    });
    assert.deepEqual(await raw(`{"service":"utils","name":"abyss","code":"result = 1","config":${abyss}}`), {
      type: 'validation_error',
      message: `config is nested deeper than ${MAX_SCHEMA_DEPTH} levels`,
      field: 'config',
    });

    // Nothing was written: no new function, no new version.
    assert.deepEqual((await callOk(owner.create, 'list_functions', { service: 'utils' })).map((f: { name: string }) => f.name), ['keep']);
    const keep = await callOk(owner.create, 'describe_function', { service: 'utils', name: 'keep' });
    assert.equal(keep.active_version, 1);
    assert.equal(keep.output_schema, null);
    // A valid schema still compiles (in a fresh worker) and is stored.
    await callOk(owner.create, 'update_function', { service: 'utils', name: 'keep', output_schema: { type: 'integer' } });
    const usage = await meterOf(owner);
    assert.equal(usage.executions, 0);
    assert.equal(usage.executions_per_minute.used, 0, 'the create endpoint is not metered');
  });
});
