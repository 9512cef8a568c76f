// test-database: embedded, tool mode one call at a time (its race runs in guard-metering)
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { applyTierOverrides } from '../core/tiers.js';
import { callOk, connect, errorOf, parseResult, type McpTestClient, type TestServer } from '../test-support/harness.js';
import { startRuleServer, type RuleServer, type Space } from '../test-support/spaces.js';
import { until } from '../test-support/processes.js';
import type { RunContext } from '../run/run-service.js';

let rules: RuleServer;
let server: TestServer;
before(async () => {
  // Tiers: small, distinct limits per plan so each gate can be hit quickly.
  rules = await startRuleServer(
    applyTierOverrides(
      JSON.stringify({
        quota3: { monthly_executions: 3, executions_per_minute: -1, concurrency: -1 },
        rate2: { monthly_executions: -1, executions_per_minute: 2, concurrency: -1 },
        solo: { monthly_executions: -1, executions_per_minute: -1, concurrency: 1, timeout_s: 20 },
        conc2: { monthly_executions: -1, executions_per_minute: -1, concurrency: 2 },
      }),
    ),
  );
  server = rules.server;
});
after(async () => {
  await rules?.stop();
});

/** A run context of the space's account as an agent's (RunService called directly). */
const directContext = (space: Space, tier: string): RunContext => ({
  principal: {
    accountId: space.account.accountId,
    tier,
    namespace: null,
    scopes: ['read', 'write', 'execute'],
    actor: { kind: 'agent', agentId: 'agent-precheck-test' },
  },
  namespace: space.ns,
  env: {},
});

/** Tool mode through the 2025-era SDK client (v1). */
const toolClient = (space: Space, env?: Record<string, string>) => space.run('tools', env, 'v1');
const rawCall = (space: Space, tool: string, args: Record<string, unknown>, headers: Record<string, string> = {}) =>
  rules.rawCall(space, 'tools', tool, args, headers);

describe('tool mode', () => {
  test('one tool per function with its schemas; the list follows creates, updates and deletes', async () => {
    const space = await rules.space([{ name: 'hello', template: 'hello-world' }]);
    const run = await toolClient(space);
    const { tools } = await run.listTools();
    assert.deepEqual(
      tools.map((t) => t.name),
      ['utils__hello', '_env_status'],
    );
    const hello = tools[0]!;
    assert.match(hello.name, /^[a-zA-Z0-9_-]{1,64}$/);
    assert.deepEqual(hello.inputSchema.properties.name.type, 'string');
    assert.ok((hello as { outputSchema?: { properties: object } }).outputSchema?.properties);

    await callOk(space.create, 'make_function', {
      service: 'utils',
      name: 'two',
      code: 'def main(input_data):\n    return 2\n',
      description: 'returns two',
    });
    assert.deepEqual(
      (await run.listTools()).tools.map((t) => t.name),
      ['utils__hello', 'utils__two', '_env_status'],
    );
    await callOk(space.create, 'update_function', { service: 'utils', name: 'two', code: 'def main(input_data):\n    return 22\n' });
    assert.equal(parseResult(await run.callTool('utils__two')), 22, 'the new version runs without a restart');
    await callOk(space.create, 'delete_function', { service: 'utils', name: 'two' });
    assert.deepEqual(
      (await run.listTools()).tools.map((t) => t.name),
      ['utils__hello', '_env_status'],
    );
  });

  test('tool names keep within the 40-character budget: make_function refuses a longer one and says what fits; older ones are listed cut', async () => {
    const space = await rules.space([]);
    const long = 's'.repeat(31);
    const made = await callOk(space.create, 'make_service', { name: long });
    assert.equal(made.max_function_name, 7, "make_service says how long its functions' names may be");
    const refused = await space.create.callTool('make_function', {
      service: long,
      name: 'f'.repeat(8),
      code: 'def main(input_data):\n    return 1\n',
    });
    assert.equal(refused.isError, true);
    const error = errorOf(parseResult(refused));
    assert.equal(error.type, 'validation_error');
    assert.match(error.message, /would be 41 characters.*limited to 40.*mcp__\{server\}__.*at most 7 characters/);
    await callOk(space.create, 'make_function', { service: long, name: 'f'.repeat(7), code: 'def main(input_data):\n    return 7\n' });
    // A function made before the budget existed (its name written as it was then).
    await callOk(space.create, 'make_function', { service: long, name: 'old', code: 'def main(input_data):\n    return "old"\n' });
    const db = (server.server.services.accountsStore as unknown as { db: { updateTable(t: string): any } }).db;
    await db
      .updateTable('functions')
      .set({ name: `old-${'x'.repeat(27)}` })
      .where('name', '=', 'old')
      .execute();
    const run = await toolClient(space);
    const names = (await run.listTools()).tools.map((t) => t.name);
    assert.ok(
      names.every((n) => n.length <= 40 && /^[a-zA-Z0-9_-]+$/.test(n)),
      names.join(' '),
    );
    const cut = names.find((n) => n.includes('old'))!;
    assert.match(cut ?? '', new RegExp(`^s{14}__old-x+_+[0-9a-f]{8}$`), names.join(' '));
    assert.equal(parseResult(await run.callTool(cut)), 'old', 'the cut name calls the function');
    assert.equal(parseResult(await run.callTool(`${long}__${'f'.repeat(7)}`)), 7);
    // A new legal name cannot take a cut name: not the one listed, nor one cut with a single `_`
    // before the hash (legal: 14 + 2 + 24 = 40 characters), which would shadow the old function.
    const hash = cut.slice(-8);
    await callOk(space.create, 'make_service', { name: 's'.repeat(14) });
    const lookalike = `old-${'x'.repeat(11)}_${hash}`;
    await callOk(space.create, 'make_function', {
      service: 's'.repeat(14),
      name: lookalike,
      code: 'def main(input_data):\n    return "new"\n',
    });
    const after = (await run.listTools()).tools.map((t) => t.name);
    assert.equal(new Set(after).size, after.length, `no two tools share a name: ${after.join(' ')}`);
    assert.equal(parseResult(await run.callTool(`${'s'.repeat(14)}__${lookalike}`)), 'new');
    assert.equal(parseResult(await run.callTool(cut)), 'old', 'the old function keeps its name');
    const taken = await space.create.callTool('make_function', {
      service: 's'.repeat(14),
      name: cut.slice(16),
      code: 'def main(input_data):\n    return "new"\n',
    });
    assert.equal(errorOf(parseResult(taken)).type, 'validation_error', 'the cut name is not a legal name');
  });

  test('results come back structured, with stdout; failures are typed tool errors', async () => {
    const space = await rules.space([
      { name: 'hello', template: 'hello-world' },
      { name: 'chatty', code: 'def main(input_data):\n    print("working")\n    return [1, 2]\n' },
      { name: 'broken', code: 'def main(input_data):\n    raise ValueError("bad input " + str(input_data.get("n")))\n' },
      {
        name: 'typed',
        code: 'def main(input_data):\n    return {"n": input_data["n"]}\n',
        input_schema: { type: 'object', properties: { n: { type: 'integer' } }, required: ['n'] },
      },
      {
        name: 'ts-double',
        language: 'typescript',
        code: 'export default async function main(input: { n: number }) { return { double: input.n * 2 }; }',
      },
      {
        name: 'shaped',
        code: 'result = {"code": "abc"}',
        output_schema: { type: 'object', properties: { code: { type: 'string', pattern: '^[A-Z]+$' } } },
      },
    ]);
    const run = await toolClient(space);
    const hello = await run.callTool('utils__hello', { name: 'Ann' });
    assert.equal(hello.isError, undefined);
    assert.deepEqual((hello as { structuredContent?: unknown }).structuredContent, {
      greeting: 'Hello, Ann!',
      message: 'MCPWorks is up: this function ran in a sandbox.',
    });

    const chatty = await run.callTool('utils__chatty');
    assert.deepEqual(parseResult(chatty), [1, 2]);
    assert.equal(chatty.content[1]?.text, 'stdout:\nworking\n');

    const broken = await run.callTool('utils__broken', { n: 7 });
    assert.equal(broken.isError, true);
    const error = parseResult(broken);
    assert.equal(error.error_type, 'ValueError');
    assert.equal(error.error, 'bad input 7');
    assert.match(error.stderr, /line 2/);
    assert.doesNotMatch(error.stderr, /\/tmp|\/work|\/usr\/lib/, 'no host paths');

    const wrongShape = parseResult(await run.callTool('utils__shaped'));
    assert.equal(wrongShape.error_type, 'SchemaError');
    assert.match(wrongShape.error, /the result does not match output_schema: \/code must match pattern/);
    const mismatch = parseResult(await run.callTool('utils__typed', { n: 'seven' }));
    assert.equal(mismatch.error_type, 'SchemaError');
    assert.match(mismatch.error, /\/n must be integer/);
    assert.deepEqual(parseResult(await run.callTool('utils__ts-double', { n: 21 })), { double: 42 });
  });

  test('env: only declared variables reach the function; missing required ones fail before the sandbox', async () => {
    const space = await rules.space([
      {
        name: 'env',
        code: 'import os\n\ndef main(input_data):\n    return sorted(k for k in os.environ if k.startswith("APP_") or k == "UNDECLARED")\n',
        required_env: ['APP_TOKEN'],
        optional_env: ['APP_REGION'],
      },
      { name: 'plain', code: 'result = 1\n' },
    ]);
    const without = await toolClient(space);
    const missing = parseResult(await without.callTool('utils__env'));
    assert.equal(missing.error_type, 'missing_env');
    assert.deepEqual(missing.missing, ['APP_TOKEN']);
    const status = parseResult(await without.callTool('_env_status'));
    assert.deepEqual(status.functions[0], {
      tool: 'utils__env',
      required: ['APP_TOKEN'],
      optional: ['APP_REGION'],
      configured: [],
      missing: ['APP_TOKEN'],
    });
    assert.equal(status.ready, false);

    const withEnv = await toolClient(space, { APP_TOKEN: 'token-value-1', UNDECLARED: 'nope-nope-nope' });
    assert.deepEqual(parseResult(await withEnv.callTool('utils__env')), ['APP_TOKEN']);
    const ready = parseResult(await withEnv.callTool('_env_status'));
    assert.deepEqual(ready.functions[0].configured, ['APP_TOKEN']);
    assert.equal(ready.ready, true);
    // Only the function that declares env is listed; the header's undeclared variable is named.
    assert.deepEqual(
      ready.functions.map((f: { tool: string }) => f.tool),
      ['utils__env'],
    );
    assert.deepEqual(ready.dropped, ['UNDECLARED']);
    assert.match(ready.hint, /declared by no function/);
    assert.doesNotMatch(JSON.stringify(ready), /nope-nope-nope|token-value-1/, 'never a value');
    assert.deepEqual(status.dropped, []);
  });

  test('input patterns are checked off the main thread; a catastrophic one fails closed', async () => {
    const space = await rules.space([
      {
        name: 'code',
        code: 'def main(d):\n    return d["code"]\n',
        input_schema: { type: 'object', properties: { code: { type: 'string', pattern: '^[A-Z]{3}-[0-9]{2}$' } }, required: ['code'] },
      },
      { name: 'evil', code: 'result = 1', input_schema: { type: 'object', properties: { s: { type: 'string', pattern: '^(a+)+$' } } } },
    ]);
    const run = await toolClient(space);
    assert.equal(parseResult(await run.callTool('utils__code', { code: 'ABC-12' })), 'ABC-12');
    assert.match(parseResult(await run.callTool('utils__code', { code: 'abc' })).error, /must match pattern/);
    const pending = run.callTool('utils__evil', { s: `${'a'.repeat(40)}!` });
    const health = await fetch(`${server.url}/healthz`);
    assert.equal(health.status, 200, 'the server answers while the pattern runs');
    const stuck = parseResult(await pending);
    assert.equal(stuck.error_type, 'SchemaLimitError');
    assert.match(stuck.error, /the input_schema check of utils\.evil was stopped: it needed more than 1000 ms of CPU time/);
    assert.equal(parseResult(await run.callTool('utils__code', { code: 'XYZ-99' })), 'XYZ-99', 'a fresh worker takes over');
  });

  test('a malformed X-MCPWorks-Env header: connecting and listing work, a call is a tool error saying what is wrong (an unexpanded ${…} too), unmetered, echoing no value', async () => {
    const space = await rules.space([{ name: 'hello', template: 'hello-world' }]);
    const bad = [
      '%%%',
      Buffer.from('{"PATH":"/secret-path-value"}').toString('base64'),
      Buffer.from('[1]').toString('base64'),
      '${MCPWORKS_ENV_B64}',
    ];
    for (const [i, header] of bad.entries()) {
      const mode = i % 2 === 0 ? 'tools' : 'code';
      const run = await connect(`${server.url}/mcp/run/${space.ns}?mode=${mode}`, space.account.key, i < 2 ? 'v1' : 'v2', {
        'x-mcpworks-env': header,
      });
      try {
        const names = (await run.listTools()).tools.map((t) => t.name);
        assert.deepEqual(names, mode === 'tools' ? ['utils__hello', '_env_status'] : ['execute'], header);
        const calls =
          mode === 'tools'
            ? [run.callTool('utils__hello', { name: 'A' }), run.callTool('_env_status')]
            : [run.callTool('execute', { code: 'result = 1' })];
        for (const result of await Promise.all(calls)) {
          assert.equal(result.isError, true, header);
          const error = parseResult(result);
          assert.equal(error.error_type, 'validation_error');
          assert.match(error.error, /invalid X-MCPWorks-Env header/);
          assert.doesNotMatch(JSON.stringify(result), /secret-path-value/);
        }
      } finally {
        await run.close();
      }
    }
    const unexpanded = parseResult(
      await rawCall(space, 'utils__hello', {}, { 'x-mcpworks-env': '${MCPWORKS_ENV_B64}' }).then((r) => r.body.result),
    ).error;
    assert.match(unexpanded, /unexpanded placeholder \$\{MCPWORKS_ENV_B64\}/);
    assert.match(unexpanded, /\$\{MCPWORKS_ENV_B64:-\}/, 'it says how to send an empty header instead');
    assert.equal((await rules.usageOf(space.account)).executions, 0, 'no refused call is metered');
  });

  test('secrets in results, logs and errors are redacted and recorded as security events', async () => {
    const stripe = ['sk', 'live', '51H8xYzAbCdEfGhIjKlMnOp'].join('_');
    const space = await rules.space([
      {
        name: 'leaky',
        code: `import os\n\ndef main(input_data):\n    token = os.environ["APP_TOKEN"]\n    print("stripe", "${stripe}")\n    return {"token": token, "nested": [token.encode().hex()], "APP_TOKEN": "name stays"}\n`,
        required_env: ['APP_TOKEN'],
      },
      { name: 'leaky-error', code: `def main(input_data):\n    raise RuntimeError("db at postgres://admin:hunter22@db.internal/app")\n` },
    ]);
    const run = await toolClient(space, { APP_TOKEN: 'super-secret-token-42' });
    const result = await run.callTool('utils__leaky');
    const text = JSON.stringify(result);
    assert.doesNotMatch(text, /super-secret-token-42/);
    assert.doesNotMatch(text, new RegExp(Buffer.from('super-secret-token-42').toString('hex')));
    assert.doesNotMatch(text, /51H8xYzAbCdEfGhIjKlMnOp/);
    assert.deepEqual(parseResult(result), { token: '[REDACTED_ENV_VALUE]', nested: ['[REDACTED_ENV_VALUE]'], APP_TOKEN: 'name stays' });
    assert.match(result.content[1]!.text!, /\[REDACTED_STRIPE_KEY\]/);
    const failed = parseResult(await run.callTool('utils__leaky-error'));
    assert.match(failed.error, /\[REDACTED_CONNECTION_URI\]/);
    assert.doesNotMatch(JSON.stringify(failed), /hunter22/);

    const events = await callOk(space.create, 'list_security_events');
    assert.deepEqual(events.map((e: { detection: string }) => e.detection).sort(), ['CONNECTION_URI', 'ENV_VALUE', 'STRIPE_KEY']);
    assert.ok(events.every((e: { function: string }) => e.function === 'leaky' || e.function === 'leaky-error'));
    assert.doesNotMatch(JSON.stringify(events), /super-secret|hunter22|51H8x/);
    // Stored history holds the redacted logs too.
    const executions = await callOk(space.create, 'list_executions', { function: 'utils.leaky' });
    const stored = await callOk(space.create, 'describe_execution', { id: executions[0].id });
    assert.match(stored.stdout, /\[REDACTED_STRIPE_KEY\]/);
  });
});

describe('TypeScript requirements', () => {
  test('npm packages install when the version is made and are importable when it runs; a failed install changes nothing', async () => {
    const space = await rules.space([
      {
        name: 'check',
        language: 'typescript',
        requirements: ['is-number@7.0.0'],
        code: "import isNumber from 'is-number';\nexport default function main(input: { value: unknown }) { return { number: isNumber(input.value) }; }",
      },
    ]);
    const run = await toolClient(space);
    assert.deepEqual(parseResult(await run.callTool('utils__check', { value: '42' })), { number: true });
    assert.deepEqual(parseResult(await run.callTool('utils__check', { value: 'forty-two' })), { number: false });

    const failed = await space.create.callTool('update_function', {
      service: 'utils',
      name: 'check',
      requirements: ['mcpworks-no-such-package-xyz@1.0.0'],
    });
    assert.equal(failed.isError, true);
    const error = errorOf(parseResult(failed));
    assert.equal(error.type, 'dependency_error');
    assert.match(error.message, /npm install failed/);
    assert.match(error.message + JSON.stringify(error.npm ?? ''), /404|not found|E404/i);
    const described = await callOk(space.create, 'describe_function', { service: 'utils', name: 'check' });
    assert.equal(described.active_version, 1);
    assert.deepEqual(described.requirements, ['is-number@7.0.0']);
  });
});

describe('metering', () => {
  test('each call whose code ran counts (errors too); calls refused before any sandbox and create calls do not', async () => {
    const space = await rules.space([
      { name: 'hello', template: 'hello-world' },
      { name: 'broken', code: 'def main(input_data):\n    raise KeyError("x")\n' },
      { name: 'needs-env', code: 'result = 1', required_env: ['APP_TOKEN'] },
    ]);
    const usage = () => rules.usageOf(space.account);
    assert.equal((await usage()).executions, 0);
    const run = await toolClient(space);
    await run.callTool('utils__hello');
    await run.callTool('utils__hello', { name: 'B' });
    await run.callTool('utils__broken');
    assert.equal(parseResult(await run.callTool('utils__needs-env')).error_type, 'missing_env');
    assert.equal(parseResult(await run.callTool('utils__hello', { name: 5 })).error_type, 'SchemaError');
    await run.callTool('_env_status');
    await callOk(space.create, 'list_services');
    const now = await usage();
    assert.equal(now.executions, 3, 'two successes and one raised error; not the refused calls');
    assert.equal(now.tier, 'pro_trial');
    assert.equal(now.limit, 125000);
    assert.equal(now.concurrency.active, 0, 'every slot was freed');
    const services = await callOk(space.create, 'list_services');
    assert.equal(services[0].call_count, 5, 'call_count counts every recorded execution');
    const errors = await callOk(space.create, 'list_executions', { status: 'error' });
    assert.equal(errors.length, 3);
    assert.deepEqual(errors.map((e: { error_type: string }) => e.error_type).sort(), ['KeyError', 'SchemaError', 'missing_env']);
    const broken = errors.find((e: { function: string }) => e.function === 'broken');
    assert.equal((await callOk(space.create, 'list_executions', { function: 'hello' })).length, 3);
    assert.equal((await callOk(space.create, 'list_executions', { since: new Date(Date.now() + 60_000).toISOString() })).length, 0);
    const one = await callOk(space.create, 'describe_execution', { id: broken.id });
    assert.equal(one.error_type, 'KeyError');
    assert.equal((await parseError(space.create, 'describe_execution', { id: 'nope' })).type, 'not_found');
  });

  test("a function's checks begun beside its admission (precheck) decide only for the very value that runs", async () => {
    const space = await rules.space([{ name: 'hello', template: 'hello-world' }]);
    const runs = server.server.services.runs;
    const ctx = directContext(space, 'pro_trial');
    const snapshot = await runs.snapshot(ctx);
    const fn = snapshot.functions.find((f) => f.name === 'hello')!;
    const runWith = async (checked: unknown, ran: unknown) => {
      const admission = await runs.admit(ctx.principal, { namespace: snapshot, mode: 'tools', fn, trigger: 'schedule' });
      assert.ok('ticket' in admission);
      try {
        const target = { kind: 'function', service: 'utils', name: 'hello' } as const;
        const prechecked = runs.precheck(ctx, fn, checked);
        assert.ok(prechecked, 'an account admitted so far has its checks begun beside the admission');
        return await runs.runAdmitted(ctx, admission.ticket, snapshot, target, ran, 'schedule', prechecked);
      } finally {
        await runs.settle(admission.ticket, false);
      }
    };
    const good = { name: 'Ann' };
    const bad = { name: 5 };
    const passed = await runWith(bad, good);
    assert.ok(passed.ok, `another value's refusal refuses nothing: ${JSON.stringify(passed)}`);
    const refused = await runWith(good, bad);
    assert.ok(!refused.ok && refused.error_type === 'SchemaError', `another value's pass lets nothing through: ${JSON.stringify(refused)}`);
    const same = await runWith(bad, bad);
    assert.ok(!same.ok && same.error_type === 'SchemaError', JSON.stringify(same));
    const usage = await rules.usageOf(space.account);
    assert.equal(usage.executions, 1, 'only the run whose code ran counts');
    assert.equal(usage.concurrency.active, 0);
  });

  test('checks begun beside admissions: no more at once than the account may run calls', async () => {
    const space = await rules.space([{ name: 'hello', template: 'hello-world' }], 'solo');
    const runs = server.server.services.runs;
    const ctx = directContext(space, 'solo');
    const fn = (await runs.snapshot(ctx)).functions[0]!;
    const first = runs.precheck(ctx, fn, { name: 'a' });
    assert.ok(first);
    assert.equal(runs.precheck(ctx, fn, { name: 'b' }), undefined, 'concurrency 1: one check at a time');
    assert.equal(await first.refusal, undefined);
    assert.ok(runs.precheck(ctx, fn, { name: 'c' }), 'the next one once the first is done');
  });

  test("checks begun beside admissions: none while the account's calls on this node fill its concurrency", async () => {
    const space = await rules.space([{ name: 'hello', template: 'hello-world' }], 'conc2');
    const runs = server.server.services.runs;
    const ctx = directContext(space, 'conc2');
    const snapshot = await runs.snapshot(ctx);
    const fn = snapshot.functions[0]!;
    const hold = async () => {
      const admission = await runs.admit(ctx.principal, { namespace: snapshot, mode: 'tools', fn, trigger: 'schedule' });
      assert.ok('ticket' in admission);
      return admission.ticket;
    };
    const held = [await hold(), await hold()];
    try {
      // Each freed slot is taken again (an admission that succeeds): a call meanwhile is refused for
      // concurrency, so a check begun for it would be work no rate unit paid for, again each round.
      for (let round = 0; round < 3; round++) {
        assert.equal(runs.precheck(ctx, fn, { name: 'x' }), undefined, `round ${round}: its admission will be refused`);
        const refused = await rawCall(space, 'utils__hello', { name: 5 });
        assert.equal(refused.status, 429);
        assert.equal((refused.body as { code?: string }).code, 'CONCURRENCY_LIMIT_EXCEEDED');
        await runs.settle(held.shift()!, false);
        held.push(await hold());
      }
    } finally {
      for (const ticket of held) await runs.settle(ticket, false);
    }
    const again = runs.precheck(ctx, fn, { name: 'y' });
    assert.ok(again, 'with its slots free again, checks begin beside admissions');
    assert.equal(await again.refusal, undefined);
    assert.equal((await rules.usageOf(space.account)).executions, 0);
  });

  test('a call the MCP layer refuses, or a notification, keeps no quota unit and no slot', async () => {
    const space = await rules.space([{ name: 'hello', template: 'hello-world' }]);
    const message = { jsonrpc: '2.0', id: 9, method: 'tools/call', params: { name: 'utils__hello', arguments: {} } };
    const refused = await fetch(`${server.url}/mcp/run/${space.ns}?mode=tools`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        accept: 'text/plain',
        'mcp-protocol-version': '2025-06-18',
        authorization: `Bearer ${space.account.key}`,
      },
      body: JSON.stringify(message),
    });
    assert.ok(refused.status >= 400, String(refused.status));
    const { id: _id, ...notification } = message;
    await rawCall(space, 'utils__hello', {}).then(() => undefined);
    const note = await fetch(`${server.url}/mcp/run/${space.ns}?mode=tools`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        accept: 'application/json, text/event-stream',
        'mcp-protocol-version': '2025-06-18',
        authorization: `Bearer ${space.account.key}`,
      },
      body: JSON.stringify(notification),
    });
    assert.ok(note.status < 500);
    const usage = await rules.usageOf(space.account);
    assert.equal(usage.executions, 1, 'only the one real call');
    assert.equal(usage.concurrency.active, 0);
  });

  test('past the monthly quota: HTTP 429 with exactly the spec body', async () => {
    const space = await rules.space([{ name: 'hello', template: 'hello-world' }], 'quota3');
    for (let i = 0; i < 3; i++) assert.equal((await rawCall(space, 'utils__hello', {})).status, 200);
    const over = await rawCall(space, 'utils__hello', {});
    assert.equal(over.status, 429);
    assert.deepEqual(over.body, {
      code: 'QUOTA_EXCEEDED',
      message: 'Monthly execution limit (3) exceeded',
      usage: 3,
      limit: 3,
      tier: 'quota3',
    });
    // The call's input_schema check runs beside its admission: the admission's refusal is the answer.
    const refusedBoth = await rawCall(space, 'utils__hello', { name: 5 });
    assert.equal(refusedBoth.status, 429);
    assert.equal((refusedBoth.body as { code?: string }).code, 'QUOTA_EXCEEDED');
    assert.equal((await rules.usageOf(space.account)).executions, 3);
    // Refused calls cannot have inputs checked for nothing: none is begun early after a refusal.
    const runs = server.server.services.runs;
    const ctx = directContext(space, 'quota3');
    const fn = (await runs.snapshot(ctx)).functions[0]!;
    assert.equal(runs.precheck(ctx, fn, { name: 'x' }), undefined);
    const env = await rawCall(space, '_env_status', {});
    assert.equal(env.status, 200, 'unmetered tools still work');
  });

  test('executions per minute: 429 EXECUTION_RATE_EXCEEDED with Retry-After', async () => {
    let limited;
    // Calls that straddle a minute window's end prove nothing: made again with a fresh account.
    for (let attempt = 1; attempt <= 3; attempt++) {
      const space = await rules.space([{ name: 'hello', template: 'hello-world' }], 'rate2');
      const minute = Math.floor(Date.now() / 60_000);
      for (let i = 0; i < 3; i++) limited = await rawCall(space, 'utils__hello', {});
      if (Math.floor(Date.now() / 60_000) === minute) break;
    }
    assert.equal(limited!.status, 429);
    assert.equal(limited!.body.code, 'EXECUTION_RATE_EXCEEDED');
    assert.ok(limited!.body.retry_after >= 1 && limited!.body.retry_after <= 60);
    assert.equal(limited!.headers.get('retry-after'), String(limited!.body.retry_after));
  });

  test('concurrent executions: 429 CONCURRENCY_LIMIT_EXCEEDED while a run holds the only slot', async () => {
    // 4 s: the slot must still be held when the second call arrives, after the wait below sees it taken.
    const space = await rules.space(
      [{ name: 'slow', code: 'import time\n\ndef main(input_data):\n    time.sleep(4)\n    return "done"\n' }],
      'solo',
    );
    const first = rawCall(space, 'utils__slow', {});
    // Until the first holds the slot (a fixed wait, or one of 5 s, was too short on a loaded machine).
    await until(
      'the first run holds the slot',
      () => rules.usageOf(space.account),
      (usage) => usage.concurrency.active > 0,
    );
    const second = await rawCall(space, 'utils__slow', {});
    assert.equal(second.status, 429);
    assert.equal(second.body.code, 'CONCURRENCY_LIMIT_EXCEEDED');
    // Truthful: until the run in the slot reaches its 20 s limit (plus 2 s to settle), not 1.
    const retryAfter = Number(second.headers.get('retry-after'));
    assert.equal(second.body.retry_after, retryAfter);
    assert.ok(retryAfter > 10 && retryAfter <= 22, `retry_after ${retryAfter}`);
    assert.equal((await first).status, 200);
    assert.equal((await rawCall(space, 'utils__slow', {})).status, 200, 'the slot is free again');
  });
});

async function parseError(client: McpTestClient, tool: string, args: Record<string, unknown>) {
  const result = await client.callTool(tool, args);
  assert.equal(result.isError, true);
  return errorOf(parseResult(result));
}
