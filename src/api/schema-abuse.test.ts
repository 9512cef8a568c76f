// test-database: embedded, schema workers live in the node
/**
 * Issue 10, item 1: tenant JSON Schemas are untrusted code. Each attack runs through the real
 * server (tool mode, code mode and its bridge, create time); each proves that /healthz answered
 * while the check ran (so it ran off the main thread) and after it, and that the meter is right.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { MAX_CHECKED_DEPTH, MAX_CHECKED_VALUES, MAX_SCHEMA_DEPTH } from '../core/limits.js';
import { BODY_MAX_DEPTH } from './mcp-endpoint.js';
import { applyTierOverrides } from '../core/tiers.js';
import {
  callError,
  callOk,
  connect,
  createAccount,
  errorOf,
  parseResult,
  startTestServer,
  type McpTestClient,
  type TestServer,
} from '../test-support/harness.js';
import { sharedFairShare } from '../run/fair-share.js';

let server: TestServer;
const ATTACK_DEADLINE_MS = 500;
before(async () => {
  // A wait for a schema worker long enough for a loaded machine: the wait deadline is the subject
  // of a server of its own below. The workers at the server's own priority (nice: 0, on every
  // server of this file): their lower priority is checked in src/run/schema-guard.test.ts, and here,
  // beside the other test files, it only starved them until the wall-clock cap (10 times the CPU
  // deadline) stopped each attack instead of the CPU deadline.
  //
  // Each attack is stopped after half a second of CPU time, not the default second (the deadline's
  // default is checked in src/run/schema-guard.test.ts): what is tested is that it is stopped, typed
  // and metered, and that others are answered meanwhile; the dozen attacks cost half as much.
  server = await startTestServer({ schemas: { maxWaitMs: 120_000, nice: 0, deadlineMs: ATTACK_DEADLINE_MS } });
});
after(async () => {
  await server?.stop();
});

/** `$defs` recursion through an `anyOf` of two array branches: exponential in the input's depth. */
const RECURSIVE = {
  type: 'object',
  properties: { a: { $ref: '#/$defs/n' } },
  $defs: {
    n: {
      anyOf: [
        { type: 'array', items: { $ref: '#/$defs/n' } },
        { type: 'array', items: { $ref: '#/$defs/n' } },
      ],
    },
  },
};
const nested = (levels: number): unknown => JSON.parse(`${'['.repeat(levels)}1${']'.repeat(levels)}`);
/** 60 bytes of JSON: inline, this exhausted the server's heap and killed it. */
const HEAP_BOMB = { a: nested(26) };
// Every attack below costs at least ten times the deadline that stops it on a 2-core EPYC guest
// (figures beside each), so a faster host still sees it stopped: the issue's own sizes (19 deep,
// 40,000 and 20,000 items) cost 1.0-1.6 s there, too close to a 0.5-1 s deadline.
/** 50 bytes: inline, this froze every tenant for seconds (about 9 s of CPU time; 19 deep, 1.4 s). */
const FREEZE = { a: nested(21) };
/** Quadratic: ajv compares every pair of 120,000 items (about 20 s of CPU time). */
const UNIQUE_INPUT_SCHEMA = { type: 'object', properties: { items: { type: 'array', uniqueItems: true } } };
const UNIQUE_ITEMS = 120_000;
const UNIQUE_INPUT = { items: Array.from({ length: UNIQUE_ITEMS }, (_, i) => i) };
const UNIQUE_OUTPUT_SCHEMA = { type: 'array', uniqueItems: true };
/** A result of 40,000 one-item arrays: about 6.7 s of pairwise comparisons. */
const UNIQUE_RESULT_ITEMS = 40_000;
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

interface Space {
  create: McpTestClient;
  key: string;
  email: string;
  accountId: string;
  ns: string;
  run(mode: 'tools' | 'code'): Promise<McpTestClient>;
  usage(): Promise<{ executions: number; executions_per_minute: { used: number } }>;
}

async function space(functions: Array<Record<string, unknown>>, on: TestServer = server): Promise<Space> {
  const account = await createAccount(on.url);
  const ns = `sch-${Math.random().toString(36).slice(2, 10)}`;
  const create = await connect(`${on.url}/mcp/create/${ns}`, account.key);
  await callOk(create, 'make_namespace', { name: ns });
  await callOk(create, 'make_service', { name: 'utils' });
  for (const fn of functions) await callOk(create, 'make_function', { service: 'utils', ...fn });
  return {
    create,
    key: account.key,
    email: account.email,
    accountId: account.accountId,
    ns,
    run: (mode) => connect(`${on.url}/mcp/run/${ns}?mode=${mode}`, account.key, 'v1'),
    usage: async () => (await fetch(`${on.url}/api/usage`, { headers: { authorization: `Bearer ${account.key}` } })).json() as never,
  };
}

describe('tenant schemas run in workers with a deadline and a heap limit', () => {
  test('tool mode input: heap bomb, freeze, uniqueItems and the value caps fail closed, uncounted but recorded', async () => {
    const attacker = await space([
      { name: 'deep', code: 'def main(input_data):\n    return "ran"\n', input_schema: RECURSIVE },
      { name: 'deep-ts', language: 'typescript', code: 'export default () => "ran";\n', input_schema: RECURSIVE },
      { name: 'uniq', code: 'def main(input_data):\n    return "ran"\n', input_schema: UNIQUE_INPUT_SCHEMA },
      { name: 'uniq-ts', language: 'typescript', code: 'export default () => "ran";\n', input_schema: UNIQUE_INPUT_SCHEMA },
    ]);
    const bystander = await space([
      { name: 'typed', code: 'result = 1', input_schema: { type: 'object', properties: { n: { type: 'integer' } } } },
    ]);
    const run = await attacker.run('tools');
    const other = await bystander.run('tools');
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

    // The caps are checked before admission: cheap, iterative, typed, not metered (not even per minute).
    const tooDeep = parseResult(await minute.track(() => run.callTool('utils__deep', { a: nested(MAX_CHECKED_DEPTH) }), 0));
    assert.equal(tooDeep.error_type, 'validation_error');
    assert.match(tooDeep.error, new RegExp(`the input is nested deeper than ${MAX_CHECKED_DEPTH} levels`));
    const tooMany = parseResult(
      await minute.track(() => run.callTool('utils__uniq-ts', { items: new Array(MAX_CHECKED_VALUES).fill(0) }), 0),
    );
    assert.equal(tooMany.error_type, 'validation_error');
    assert.match(tooMany.error, new RegExp(`the input holds more than ${MAX_CHECKED_VALUES} JSON values`));

    // Fresh workers took over: ordinary checks pass and fail as before.
    assert.equal(parseResult(await minute.track(() => run.callTool('utils__deep', { a: [[], [[]]] }))), 'ran');
    assert.equal(parseResult(await minute.track(() => run.callTool('utils__uniq-ts', { items: [1, 1] }))).error_type, 'SchemaError');

    // Meter: the monthly quota counts only the call whose code ran; the per-minute rate counts
    // every admitted call (refusals cost the server); every call is in the history.
    const usage = await attacker.usage();
    assert.equal(usage.executions, 1);
    minute.assertUsed(usage.executions_per_minute.used);
    const history = await callOk(attacker.create, 'list_executions', {});
    assert.equal(history.length, 6);
    const types = history.map((e: { error_type: string | null }) => e.error_type);
    assert.equal(types.filter((t: string | null) => t === 'SchemaLimitError').length, 4);
    assert.equal(types.filter((t: string | null) => t === 'SchemaError').length, 1);
    assert.equal(history.filter((e: { status: string }) => e.status === 'success').length, 1);
    const bomb = history.find(
      (e: { function: string; error_type: string }) => e.function === 'deep' && e.error_type === 'SchemaLimitError',
    );
    assert.match(
      (await callOk(attacker.create, 'describe_execution', { id: bomb.id })).error_message,
      /input_schema check of utils\.deep was stopped/,
    );
  });

  test('large inputs against a slow schema: the value is prepared in slices, so /healthz and a clean tenant are answered meanwhile', async () => {
    const attacker = await space([{ name: 'uniq', code: 'def main(input_data):\n    return "ran"\n', input_schema: UNIQUE_INPUT_SCHEMA }]);
    const bystander = await space([
      { name: 'typed', code: 'result = 1', input_schema: { type: 'object', properties: { n: { type: 'integer' } } } },
    ]);
    const [run, other] = await Promise.all([attacker.run('tools'), bystander.run('tools')]);
    const schemas = server.server.services.schemas;
    const minute = new MinuteMeter();
    // Near the value cap: 249,000 distinct objects, 498,002 JSON values.
    const big = { items: Array.from({ length: 249_000 }, (_, i) => ({ a: i })) };
    let attackDone = false;
    const attack = minute.track(() => run.callTool('utils__uniq', big)).finally(() => (attackDone = true));

    // Measured and serialised in one go, the value would never be seen in preparation by a timer,
    // and nothing else would be answered until it was in a worker.
    await until(() => schemas.stats().preparing > 0 || attackDone);
    assert.ok(schemas.stats().preparing > 0, 'the value is prepared over several turns of the event loop');
    let answeredWhilePreparing = 0;
    for (let i = 0; i < 50 && schemas.stats().preparing > 0; i++) {
      assert.equal(await healthz(), 200);
      if (schemas.stats().preparing > 0) answeredWhilePreparing++;
    }
    assert.ok(answeredWhilePreparing >= 1, '/healthz was answered while a large input was being prepared');

    // The checks themselves run in the workers; a clean tenant's check is answered before they end.
    await until(() => schemas.stats().busy > 0 || attackDone);
    const theirs = parseResult(await other.callTool('utils__typed', { n: 'x' }));
    assert.equal(theirs.error_type, 'SchemaError', JSON.stringify(theirs));
    assert.equal(attackDone, false, "the clean tenant's call was answered while the attack still ran");
    const refused = parseResult(await attack);
    assert.equal(refused.error_type, 'SchemaLimitError', JSON.stringify(refused));
    assert.match(refused.error, new RegExp(`the input_schema check of utils\\.uniq ${STOPPED.source}`));
    assert.equal(await healthz(), 200);

    // Meter: refused before any sandbox: no monthly quota, a unit of the rate, recorded.
    const usage = await attacker.usage();
    assert.equal(usage.executions, 0);
    minute.assertUsed(usage.executions_per_minute.used);
    const history = await callOk(attacker.create, 'list_executions', {});
    assert.deepEqual(
      history.map((e: { error_type: string | null }) => e.error_type),
      ['SchemaLimitError'],
    );
  });

  test("a flood of large calls shares the main thread fairly: another tenant's large call waits for at most one slice of it per step", async () => {
    // maxItems: the checks themselves are quick refusals; what is measured is the main thread's share.
    const schema = { type: 'object', properties: { items: { type: 'array', maxItems: 1 } } };
    const attacker = await space([{ name: 'flood', code: 'def main(input_data):\n    return "ran"\n', input_schema: schema }]);
    const bystander = await space([{ name: 'large', code: 'def main(input_data):\n    return "ran"\n', input_schema: schema }]);
    const [run, other] = await Promise.all([attacker.run('tools'), bystander.run('tools')]);
    const turns: Array<{ waited: number; othersPending: number }> = [];
    sharedFairShare.onFirstTurn = ({ tenant, waited, othersPending }) => {
      if (tenant === bystander.accountId) turns.push({ waited, othersPending });
    };
    try {
      // Each call's input is parsed, walked, measured and serialised on the main thread: dozens of slices.
      const flood = Array.from({ length: 3 }, (_, n) =>
        run.callTool('utils__flood', { items: Array.from({ length: 60_000 }, (_, i) => ({ a: i + n })) }),
      );
      await until(() => sharedFairShare.stats().pending >= 2);
      const theirs = parseResult(await other.callTool('utils__large', { items: Array.from({ length: 30_000 }, (_, i) => ({ a: i })) }));
      assert.equal(theirs.error_type, 'SchemaError', JSON.stringify(theirs));
      for (const answer of await Promise.all(flood)) assert.equal(parseResult(answer).error_type, 'SchemaError');
    } finally {
      sharedFairShare.onFirstTurn = undefined;
    }
    // The bystander's call took several turns (its body, its input's walk, its value for the check),
    // some while the flood's work was pending; none of them waited for more than one of its slices.
    assert.ok(turns.length >= 3, JSON.stringify(turns));
    assert.ok(
      turns.some((turn) => turn.othersPending > 0),
      `the flood was pending when the bystander's work came: ${JSON.stringify(turns)}`,
    );
    assert.ok(
      turns.every((turn) => turn.waited <= 1),
      `waited at most one slice per step: ${JSON.stringify(turns)}`,
    );
  });

  test('tool mode output: uniqueItems on a 40,000-item result fails closed in both languages; the run counts', async () => {
    const attacker = await space([
      {
        name: 'out',
        code: `def main(input_data):\n    return [[i] for i in range(${UNIQUE_RESULT_ITEMS})]\n`,
        output_schema: UNIQUE_OUTPUT_SCHEMA,
      },
      {
        name: 'out-ts',
        language: 'typescript',
        code: `export default () => Array.from({ length: ${UNIQUE_RESULT_ITEMS} }, (_, i) => [i]);\n`,
        output_schema: UNIQUE_OUTPUT_SCHEMA,
      },
      { name: 'small', code: 'def main(input_data):\n    return [1, 2]\n', output_schema: UNIQUE_OUTPUT_SCHEMA },
    ]);
    const run = await attacker.run('tools');
    const minute = new MinuteMeter();
    const schemas = server.server.services.schemas;
    for (const tool of ['utils__out', 'utils__out-ts']) {
      const raw = schemas.stats().raw;
      const pending = minute.track(() => run.callTool(tool));
      await healthyWhileChecking(pending);
      // The result (310 KB of JSON) reached the worker as its bytes: never parsed on the main thread.
      assert.equal(schemas.stats().raw, raw + 1, `${tool}: the large result went to the worker unparsed`);
      const refused = parseResult(await pending);
      assert.equal(refused.error_type, 'SchemaLimitError', tool);
      assert.match(refused.error, new RegExp(`the output_schema check ${STOPPED.source}`));
      assert.equal(await healthz(), 200);
    }
    assert.deepEqual(parseResult(await minute.track(() => run.callTool('utils__small'))), [1, 2]);

    const usage = await attacker.usage();
    assert.equal(usage.executions, 3, 'the code ran each time: each call counts');
    minute.assertUsed(usage.executions_per_minute.used);
    const history = await callOk(attacker.create, 'list_executions', { status: 'error' });
    assert.deepEqual(
      history.map((e: { error_type: string }) => e.error_type),
      ['SchemaLimitError', 'SchemaLimitError'],
    );
  });

  test('tool mode output: a large result is measured and checked in the worker (depth cap, mismatch, match), never parsed on the main thread', async () => {
    const pad = '"x" * 40000';
    const attacker = await space([
      // 200 levels: within the answer channel's depth limit, past the schema check's cap.
      {
        name: 'deep',
        code: `import json
def main(input_data):
    v = 1
    for _ in range(200):
        v = [v]
    return {"pad": ${pad}, "v": v}
`,
        output_schema: { type: 'object' },
      },
      {
        name: 'wrong',
        code: `def main(input_data):
    return {"pad": ${pad}, "n": "é" * 20000}
`,
        output_schema: { type: 'object', properties: { n: { type: 'integer' } } },
      },
      {
        name: 'right',
        code: `def main(input_data):
    return {"pad": ${pad}, "n": 7}
`,
        output_schema: { type: 'object', properties: { n: { type: 'integer' }, pad: { type: 'string', minLength: 40000 } } },
      },
    ]);
    const run = await attacker.run('tools');
    const schemas = server.server.services.schemas;
    const raw = schemas.stats().raw;
    const deep = parseResult(await run.callTool('utils__deep'));
    assert.equal(deep.error_type, 'SchemaLimitError');
    assert.match(deep.error, new RegExp(`the result is nested deeper than ${MAX_CHECKED_DEPTH} levels`));
    const wrong = parseResult(await run.callTool('utils__wrong'));
    assert.equal(wrong.error_type, 'SchemaError');
    assert.match(wrong.error, /\/n must be integer/);
    const right = await run.callTool('utils__right');
    assert.equal(right.isError, undefined);
    assert.equal(parseResult(right).n, 7);
    assert.equal(schemas.stats().raw, raw + 3, 'each result went to the worker as bytes');
    assert.equal(await healthz(), 200);
    const usage = await attacker.usage();
    assert.equal(usage.executions, 3, 'the code ran each time: each call counts');
    const history = await callOk(attacker.create, 'list_executions', { status: 'error' });
    assert.deepEqual(history.map((e: { error_type: string }) => e.error_type).sort(), ['SchemaError', 'SchemaLimitError']);
  });

  test('code mode: bridge input checks and cross-language output checks fail closed, in both languages', async () => {
    const attacker = await space([
      { name: 'deep', code: 'def main(input_data):\n    return "ran"\n', input_schema: RECURSIVE },
      { name: 'uniq-ts', language: 'typescript', code: 'export default () => "ran";\n', input_schema: UNIQUE_INPUT_SCHEMA },
      {
        name: 'out',
        code: `def main(input_data):\n    return [[i] for i in range(${UNIQUE_RESULT_ITEMS})]\n`,
        output_schema: UNIQUE_OUTPUT_SCHEMA,
      },
      {
        name: 'out-ts',
        language: 'typescript',
        code: `export default () => Array.from({ length: ${UNIQUE_RESULT_ITEMS} }, (_, i) => [i]);\n`,
        output_schema: UNIQUE_OUTPUT_SCHEMA,
      },
    ]);
    const run = await attacker.run('code');
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
    // Each execute: one unit, one for its call to a function with an input_schema (checked in the
    // schema workers) and one for its call to a function of the other language.
    const fromPython = minute.track(() => run.callTool('execute', { code: python }), 3);
    await healthyWhileChecking(fromPython);
    const py = parseResult(await fromPython);
    assert.equal(py.input[0], 'SchemaLimitError');
    assert.match(py.input[1], new RegExp(`the input_schema check of utils\\.deep ${STOPPED.source}`));
    assert.equal(py.output[0], 'SchemaLimitError');
    assert.match(py.output[1], new RegExp(`the output_schema check ${STOPPED.source}`));
    assert.equal(await healthz(), 200);

    // TypeScript: a same-language callee's input (120,000 items), then a Python callee's result.
    const typescript = [
      'import { uniq_ts, out } from "functions";',
      'const outcome: Record<string, unknown> = {};',
      `for (const [name, call] of [["input", () => uniq_ts({ items: Array.from({ length: ${UNIQUE_ITEMS} }, (_, i) => i) })], ["output", () => out({})]] as const) {`,
      '  try { await call(); outcome[name] = "passed"; } catch (error: any) { outcome[name] = [error.errorType, error.message]; }',
      '}',
      'result = outcome;',
    ].join('\n');
    const fromTypescript = minute.track(() => run.callTool('execute', { code: typescript, language: 'typescript' }), 3);
    await healthyWhileChecking(fromTypescript);
    const ts = parseResult(await fromTypescript);
    assert.equal(ts.input[0], 'SchemaLimitError');
    assert.match(ts.input[1], new RegExp(`the input_schema check of utils\\.uniq-ts ${STOPPED.source}`));
    assert.equal(ts.output[0], 'SchemaLimitError');
    assert.match(ts.output[1], new RegExp(`the output_schema check ${STOPPED.source}`));
    assert.equal(await healthz(), 200);

    const usage = await attacker.usage();
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
    // ajv compares enum members while generating code: 2.5 s for 20,000 small arrays, about 6 s for
    // these 30,000 (238 KB, under the 256 KB schema cap).
    const slow = { enum: Array.from({ length: 30_000 }, (_, i) => [i]) };
    const pending = owner.create.callTool('make_function', { service: 'utils', name: 'slow', code: 'result = 1', input_schema: slow });
    await healthyWhileChecking(pending);
    const refused = errorOf(parseResult(await pending));
    assert.equal(refused.type, 'invalid_schema');
    assert.equal(refused.message, `compiling input_schema was stopped: it needed more than ${ATTACK_DEADLINE_MS} ms of CPU time`);
    assert.equal(await healthz(), 200);

    const update = owner.create.callTool('update_function', { service: 'utils', name: 'keep', output_schema: slow });
    await healthyWhileChecking(update);
    assert.match(parseResult(await update).error, /compiling output_schema was stopped/);

    let deep: Record<string, unknown> = { type: 'string' };
    for (let i = 0; i < MAX_SCHEMA_DEPTH; i++) deep = { items: deep };
    const tooDeep = await callError(owner.create, 'make_function', {
      service: 'utils',
      name: 'deep',
      code: 'result = 1',
      input_schema: deep,
    });
    assert.equal(tooDeep.type, 'invalid_schema');
    assert.match(tooDeep.message, new RegExp(`input_schema is nested deeper than ${MAX_SCHEMA_DEPTH} levels`));
    const invalid = await callError(owner.create, 'make_function', {
      service: 'utils',
      name: 'bad',
      code: 'result = 1',
      input_schema: { type: 'nonsense' },
    });
    assert.equal(invalid.type, 'invalid_schema');
    assert.match(invalid.message, /input_schema is not a valid JSON Schema: schema is invalid/);

    // Deeper than any stack, sent as raw JSON (no client can serialise it): typed errors, not a
    // RangeError. 10,000 levels fit a body of 64 KB, which is parsed and checked field by field.
    const abyss = `${'{"a":'.repeat(10_000)}{}${'}'.repeat(10_000)}`;
    const post = (args: string) =>
      fetch(`${server.url}/mcp/create/${owner.ns}`, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          accept: 'application/json, text/event-stream',
          'mcp-protocol-version': '2025-06-18',
          authorization: `Bearer ${owner.key}`,
        },
        body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"make_function","arguments":${args}}}`,
      });
    const raw = async (args: string) => {
      const text = await (await post(args)).text();
      return JSON.parse(JSON.parse(text.split('data:').pop()!.trim()).result.content[0].text);
    };
    // A larger body that deep is refused before it is parsed (one JSON.parse of 8 MB of nesting
    // takes seconds): the depth allowance of a body over 64 KB.
    const chasm = await post(
      `{"service":"utils","name":"abyss","code":"result = 1","input_schema":${'{"a":'.repeat(50_000)}{}${'}'.repeat(50_000)}}`,
    );
    assert.equal(chasm.status, 400);
    assert.match(
      ((await chasm.json()) as { error: { message: string } }).error.message,
      new RegExp(`request body is nested deeper than ${BODY_MAX_DEPTH} levels`),
    );
    assert.deepEqual(await raw(`{"service":"utils","name":"abyss","code":"result = 1","input_schema":${abyss}}`), {
      error: `input_schema is nested deeper than ${MAX_SCHEMA_DEPTH} levels`,
      error_type: 'invalid_schema',
      field: 'input_schema',
    });
    assert.deepEqual(await raw(`{"service":"utils","name":"abyss","code":"result = 1","config":${abyss}}`), {
      error: `config is nested deeper than ${MAX_SCHEMA_DEPTH} levels`,
      error_type: 'validation_error',
      field: 'config',
    });

    // Nothing was written: no new function, no new version.
    assert.deepEqual(
      (await callOk(owner.create, 'list_functions', { service: 'utils' })).map((f: { name: string }) => f.name),
      ['keep'],
    );
    const keep = await callOk(owner.create, 'describe_function', { service: 'utils', name: 'keep' });
    assert.equal(keep.active_version, 1);
    assert.equal(keep.output_schema, null);
    // A valid schema still compiles (in a fresh worker) and is stored.
    await callOk(owner.create, 'update_function', { service: 'utils', name: 'keep', output_schema: { type: 'integer' } });
    const usage = await owner.usage();
    assert.equal(usage.executions, 0);
    assert.equal(usage.executions_per_minute.used, 0, 'the create endpoint is not metered');
  });
});

/** Waits (bounded) until `ready` holds. */
async function until(ready: () => boolean): Promise<void> {
  for (let i = 0; i < 6000 && !ready(); i++) await sleep(5);
}

describe('the schema workers are shared fairly (issue 10, item 1)', () => {
  describe('a flood of checks', () => {
    let fair: TestServer;
    before(async () => {
      // Each flooding check is stopped after 250 ms of CPU time (the order, not the deadline, is the
      // subject); a wait for a worker long enough for a loaded machine.
      fair = await startTestServer({
        schemas: { deadlineMs: 250, maxWaitMs: 120_000, nice: 0 },
        tiers: applyTierOverrides(JSON.stringify({ rate3: { monthly_executions: -1, executions_per_minute: 3, concurrency: -1 } })),
      });
    });
    after(async () => {
      await fair?.stop();
    });

    test('queues behind its own tenant (tool calls and code-mode bridge calls): another tenant is served in turn, the meter is right', async () => {
      const schemas = fair.server.services.schemas;
      // The attacker holds two accounts, as in the issue; the first also runs code mode.
      const functions = [
        { name: 'uniq', code: 'def main(input_data):\n    return "ran"\n', input_schema: UNIQUE_INPUT_SCHEMA },
        { name: 'uniq-ts', language: 'typescript', code: 'export default () => "ran";\n', input_schema: UNIQUE_INPUT_SCHEMA },
      ];
      const [first, second, bystander] = await Promise.all([
        space(functions, fair),
        space(functions, fair),
        space([{ name: 'typed', code: 'result = 1', input_schema: { type: 'object', properties: { n: { type: 'integer' } } } }], fair),
      ]);
      const [code, tools1, tools2, other] = await Promise.all([
        first.run('code'),
        first.run('tools'),
        second.run('tools'),
        bystander.run('tools'),
      ]);
      const meters = { first: new MinuteMeter(), second: new MinuteMeter(), bystander: new MinuteMeter() };
      const fairHealthz = async () => (await fetch(`${fair.url}/healthz`)).status;

      // Same-language calls one after another, each checked in the workers: one unit for the
      // execute and one per call (the input_schema check costs the server).
      const program = [
        'import { uniq_ts } from "functions";',
        `const items = Array.from({ length: ${UNIQUE_ITEMS} }, (_, i) => i);`,
        'const outcome: string[] = [];',
        'for (let i = 0; i < 3; i++) {',
        '  try { await uniq_ts({ items }); outcome.push("passed"); } catch (error: any) { outcome.push(error.errorType); }',
        '}',
        'result = outcome;',
      ].join('\n');
      const execute = meters.first.track(() => code.callTool('execute', { code: program, language: 'typescript' }), 4);
      await until(() => schemas.waitingOf(first.accountId) + schemas.stats().busy >= 1);
      const answered = { first: 0, second: 0 };
      const flood = (client: McpTestClient, who: 'first' | 'second') =>
        [1, 2, 3, 4].map(() => meters[who].track(() => client.callTool('utils__uniq', UNIQUE_INPUT)).finally(() => answered[who]++));
      const calls = [...flood(tools1, 'first'), ...flood(tools2, 'second')];
      await until(() => schemas.waitingOf(first.accountId) >= 3 && schemas.waitingOf(second.accountId) >= 3);
      assert.ok(schemas.waitingOf(first.accountId) >= 3 && schemas.waitingOf(second.accountId) >= 3, 'both floods wait for the workers');

      const theirs = parseResult(await meters.bystander.track(() => other.callTool('utils__typed', { n: 'x' })));
      assert.equal(theirs.error_type, 'SchemaError', JSON.stringify(theirs));
      // Served in its turn: when a worker came free, before either flood's queue drained (served
      // in arrival order, each account's queue would have drained first).
      assert.ok(answered.first <= 2 && answered.second <= 2, `tool calls answered before the bystander: ${JSON.stringify(answered)}`);
      assert.equal(await fairHealthz(), 200);

      for (const refused of await Promise.all(calls)) assert.equal(parseResult(refused).error_type, 'SchemaLimitError');
      assert.deepEqual(parseResult(await execute), Array(3).fill('SchemaLimitError'));
      assert.equal(await fairHealthz(), 200);

      // Meter: refused calls cost no monthly quota; the execute ran code and counts once; every
      // admitted call and every checked bridge call took a unit of the per-minute rate.
      const [firstUsage, secondUsage, bystanderUsage] = await Promise.all([first.usage(), second.usage(), bystander.usage()]);
      assert.equal(firstUsage.executions, 1);
      meters.first.assertUsed(firstUsage.executions_per_minute.used);
      assert.equal(secondUsage.executions, 0);
      meters.second.assertUsed(secondUsage.executions_per_minute.used);
      assert.equal(bystanderUsage.executions, 0);
      meters.bystander.assertUsed(bystanderUsage.executions_per_minute.used);
      const kinds = async (s: Space) =>
        (await callOk(s.create, 'list_executions', {}))
          .map((e: { mode: string; error_type: string | null }) => `${e.mode} ${e.error_type}`)
          .sort();
      assert.deepEqual(await kinds(first), ['code null', ...Array(4).fill('tools SchemaLimitError')]);
      assert.deepEqual(await kinds(second), Array(4).fill('tools SchemaLimitError'));
      assert.deepEqual(await kinds(bystander), ['tools SchemaError']);
    });

    test('a same-language bridge call takes a unit of the per-minute rate when its input is checked, none otherwise', async () => {
      const s = await space(
        [
          {
            name: 'checked',
            code: 'def main(input_data):\n    return "c"\n',
            input_schema: { type: 'object', properties: { n: { type: 'integer' } } },
          },
          { name: 'plain', code: 'def main(input_data):\n    return "p"\n' },
        ],
        fair,
      );
      await fair.server.services.accounts.setTier(s.email, 'rate3');
      // All units in one minute: the window is the subject.
      const left = 60_000 - (Date.now() % 60_000);
      if (left < 20_000) await sleep(left + 100);
      const code = await s.run('code');
      const program = [
        'import functions',
        'out = [functions.plain() for _ in range(5)]',
        'for i in range(4):',
        '    try:',
        '        out.append(functions.checked(n=i))',
        '    except functions.FunctionError as error:',
        '        out.append(error.error_type)',
        'result = out',
      ].join('\n');
      // The execute takes one unit, the first two checked calls the other two.
      assert.deepEqual(parseResult(await code.callTool('execute', { code: program })), [
        'p',
        'p',
        'p',
        'p',
        'p',
        'c',
        'c',
        'EXECUTION_RATE_EXCEEDED',
        'EXECUTION_RATE_EXCEEDED',
      ]);
      const usage = await s.usage();
      assert.equal(usage.executions, 1, 'the monthly quota counts the execute once');
      assert.equal(usage.executions_per_minute.used, 3);
      assert.equal((await fetch(`${fair.url}/healthz`)).status, 200);
    });
  });

  describe('a check that waits too long for a worker', () => {
    let small: TestServer;
    before(async () => {
      // One worker, held for at least 4 s of CPU time by a slow check; others may wait 300 ms.
      small = await startTestServer({ schemas: { workers: 1, maxWaitMs: 300, deadlineMs: 4000, nice: 0 } });
    });
    after(async () => {
      await small?.stop();
    });

    test('fails closed with SchemaLimitError (busy) in tool mode and through the bridge; uncounted unless code ran', async () => {
      const schemas = small.server.services.schemas;
      // Starting a worker counts as waiting for one: start it before anything else waits 300 ms.
      await schemas.compile({ type: 'object' }, 'warm-up');
      await until(() => schemas.stats().ready === 1);
      const attacker = await space(
        [{ name: 'uniq', code: 'def main(input_data):\n    return "ran"\n', input_schema: UNIQUE_INPUT_SCHEMA }],
        small,
      );
      const bystander = await space(
        [
          {
            name: 'typed',
            code: 'def main(input_data):\n    return "ran"\n',
            input_schema: { type: 'object', properties: { n: { type: 'integer' } } },
          },
        ],
        small,
      );
      const [slowRun, tools, code] = await Promise.all([attacker.run('tools'), bystander.run('tools'), bystander.run('code')]);
      await until(() => schemas.stats().ready === 1);
      const minute = new MinuteMeter();
      let slowDone = false;
      // 60,000 distinct objects: about 40 s of pairwise comparisons, ten times the 4 s deadline.
      const slow = slowRun
        .callTool('utils__uniq', { items: Array.from({ length: 60_000 }, (_, i) => ({ a: i })) })
        .finally(() => (slowDone = true));
      await until(() => schemas.stats().busy === 1);

      const refused = parseResult(await minute.track(() => tools.callTool('utils__typed', { n: 1 })));
      assert.equal(refused.error_type, 'SchemaLimitError', JSON.stringify(refused));
      assert.equal(
        refused.error,
        'the input_schema check of utils.typed was stopped: no schema checker was free within 300 ms (the server is busy); try again shortly',
      );
      const program =
        'import functions\ntry:\n    result = functions.typed(n=1)\nexcept functions.FunctionError as error:\n    result = [error.error_type, str(error)]\n';
      const inRun = parseResult(await minute.track(() => code.callTool('execute', { code: program }), 2));
      assert.equal(inRun[0], 'SchemaLimitError');
      assert.match(inRun[1], /no schema checker was free within 300 ms/);
      assert.equal(slowDone, false, 'both waited behind the slow check');
      assert.equal((await fetch(`${small.url}/healthz`)).status, 200);

      const slowAnswer = parseResult(await slow);
      assert.equal(slowAnswer.error_type, 'SchemaLimitError', JSON.stringify(slowAnswer));
      const usage = await bystander.usage();
      assert.equal(usage.executions, 1, 'only the execute ran code');
      minute.assertUsed(usage.executions_per_minute.used);
      const history = await callOk(bystander.create, 'list_executions', {});
      assert.deepEqual(
        history.map((e: { mode: string; status: string; error_type: string | null }) => [e.mode, e.status, e.error_type]).sort(),
        [
          ['code', 'success', null],
          ['tools', 'error', 'SchemaLimitError'],
        ],
      );
      assert.equal((await attacker.usage()).executions, 0);
    });
  });
});
