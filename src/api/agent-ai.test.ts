// test-database: embedded, AI settings are one agent row's config edited under its row lock; the data-dir scan reads the embedded files
// configure_agent_ai / remove_agent_ai / configure_orchestration_limits through the official MCP
// client: the key sealed (in no answer, not in plain text in the data dir, opened only for the
// model call, which reaches the fake LLM through the SDK), the engine alias, base_url rules,
// scopes, clone, remove, and tier caps on the limits. One server for the file.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { modelProvider } from '../agents/providers/index.js';
import { applyTierOverrides } from '../core/tiers.js';
import { fakeLlmAllow, startFakeLlm, type FakeLlm } from '../test-support/fake-llm.js';
import { callError, callOk, connect, createKey, startTestServer, type TestServer } from '../test-support/harness.js';
import { assertNotInFiles, newOwner, type Owner } from '../test-support/owners.js';

const KEY = `sk-ant-test-${Math.random().toString(36).slice(2, 14)}-never-shown`;
// open: a plan with unlimited function calls per run (-1), as Dedicated has.
const TIERS = applyTierOverrides('{"open":{"agent_max_functions_called":-1,"agent_max_iterations":50}}');

let server: TestServer;
let llm: FakeLlm;
before(async () => {
  llm = await startFakeLlm();
  server = await startTestServer({ tiers: TIERS, agentMcpAllow: fakeLlmAllow() });
});
after(async () => {
  await server?.stop();
  await llm?.close();
});

const owner = (tier?: string): Promise<Owner> => newOwner(server, 'ai', tier);

/** The agent's row, as the orchestration loop will read it. */
async function row(o: Owner, name: string) {
  const principal = { accountId: o.account.accountId, keyId: 'test', tier: 'pro_trial', namespace: null, scopes: ['read' as const] };
  return server.server.services.agents.resolve(principal, o.ns, { name }, 'read');
}

const noKey = (value: unknown, where: string) => {
  const text = JSON.stringify(value);
  assert.ok(!text.includes(KEY) && !text.includes(KEY.slice(0, 16)), `the key in ${where}`);
  assert.ok(!/"v1:[A-Za-z0-9+/=]{20,}/.test(text), `the sealed key in ${where}`);
};

describe('agent AI on the create endpoint', () => {
  let o: Owner;
  before(async () => {
    o = await owner();
    await callOk(o.create, 'make_agent', { name: 'thinker' });
  });

  test('tools are listed; configure with the engine alias answers and describes no key; the sealed key opens for the model call', async () => {
    const { tools } = await o.create.listTools();
    for (const name of ['configure_agent_ai', 'remove_agent_ai', 'configure_orchestration_limits'])
      assert.ok((tools.find((t) => t.name === name)?.description ?? '').length > 40, name);
    const answer = await callOk(o.create, 'configure_agent_ai', {
      name: 'thinker',
      engine: 'anthropic',
      model: 'claude-test',
      api_key: KEY,
      system_prompt: 'You are careful.',
      base_url: llm.anthropicUrl,
    });
    noKey(answer, 'the answer');
    assert.equal(answer.ai.provider, 'anthropic');
    const described = await callOk(o.create, 'describe_agent', { name: 'thinker' });
    noKey(described, 'describe_agent');
    assert.deepEqual(
      { ...described.config.ai, configured_at: undefined },
      {
        provider: 'anthropic',
        model: 'claude-test',
        base_url: llm.anthropicUrl,
        system_prompt_set: true,
        system_prompt_chars: 'You are careful.'.length,
        api_key: 'set (encrypted; never shown)',
        configured_at: undefined,
      },
    );
    noKey(await callOk(o.create, 'list_agents'), 'list_agents');

    // What the loop will do: open the settings, make the adapter, call the model. The fake LLM got the key.
    const settings = server.server.services.agents.ai.open(await row(o, 'thinker'));
    assert.ok(settings);
    assert.equal(settings.apiKey, KEY);
    llm.script([{ text: 'hello', usage: { input: 5, output: 1 } }]);
    const turn = await modelProvider(settings).turn({
      system: settings.systemPrompt,
      messages: [{ role: 'user', content: 'hi' }],
      tools: [],
      maxOutputTokens: 16,
      deadline: Date.now() + 30_000,
    });
    assert.equal(turn.text, 'hello');
    assert.equal(llm.requests[0]!.body.system, 'You are careful.');
    assert.ok(
      [llm.requests[0]!.headers['x-api-key'], llm.requests[0]!.headers.authorization].some((h) => h === KEY || h === `Bearer ${KEY}`),
    );
  });

  test('bad settings are refused and change nothing', async () => {
    const base = { name: 'thinker', model: 'gpt-4o', api_key: 'sk-other' };
    const refusals: Array<[Record<string, unknown>, string]> = [
      [{ ...base, provider: 'openai', engine: 'anthropic' }, 'provider'],
      [{ ...base, provider: 'skynet' }, 'provider'],
      [{ ...base }, 'provider'],
      [{ ...base, provider: 'openai', model: '' }, 'model'],
      [{ ...base, provider: 'openai', api_key: '' }, 'api_key'],
      [{ ...base, provider: 'openai', base_url: 'file:///etc/passwd' }, 'base_url'],
      [{ ...base, provider: 'openai', base_url: `${server.url}/mcp/create/${o.ns}` }, 'base_url'],
      [{ ...base, provider: 'openai', base_url: 'http://u:p@example.com/v1' }, 'base_url'],
      [{ ...base, provider: 'openai-compatible' }, 'base_url'],
    ];
    for (const [args, field] of refusals) {
      const error = await callError(o.create, 'configure_agent_ai', args);
      assert.equal(error.type, 'validation_error', JSON.stringify(args));
      assert.equal(error.field, field, JSON.stringify(args));
      assert.ok(!error.message.includes('sk-other'));
    }
    const described = await callOk(o.create, 'describe_agent', { name: 'thinker' });
    assert.equal(described.config.ai.provider, 'anthropic');
    assert.equal(described.config.ai.model, 'claude-test');
  });

  test("base_url where agents may not reach is refused with its reason, nothing stored; ollama's default address too", async () => {
    // Its own agent, on the allowed fake LLM first (the operator lists 127.0.0.3): accepted.
    await callOk(o.create, 'make_agent', { name: 'guarded' });
    await callOk(o.create, 'configure_agent_ai', {
      name: 'guarded',
      provider: 'anthropic',
      model: 'claude-test',
      api_key: KEY,
      base_url: llm.anthropicUrl,
    });
    const base = { name: 'guarded', provider: 'openai', model: 'gpt-4o', api_key: 'sk-other' };
    const port = new URL(server.url).port;
    const refused: Array<[string, RegExp]> = [
      ['http://169.254.169.254/v1', /169\.254\.169\.254 is a metadata address/],
      ['http://[fd00:ec2::254]/v1', /metadata address/],
      ['http://127.0.0.1:11434/v1', /127\.0\.0\.1 is a loopback address/],
      ['http://[::1]:11434/v1', /::1 is a loopback address/],
      ['http://[::ffff:127.0.0.1]:11434/v1', /loopback address/],
      ['http://[::127.0.0.1]:11434/v1', /reserved address/],
      ['http://2130706433:11434/v1', /127\.0\.0\.1 is a loopback address/],
      ['http://localhost:11434/v1', /localhost resolves to (127\.0\.0\.1|::1), a loopback address/],
      ['http://10.1.2.3/v1', /10\.1\.2\.3 is a private address/],
      ['http://192.168.1.20:8080/v1', /private address/],
      ['http://100.64.0.1/v1', /CGNAT address/],
      ['http://0.0.0.0:11434/v1', /unspecified address/],
      ['http://224.0.0.1/v1', /multicast address/],
      [`${server.url}/v1`, new RegExp(`127\\.0\\.0\\.1:${port} is this server's own address`)],
      [`http://localhost:${port}/v1`, /this server's own address/],
      [`http://127.0.0.3:${port}/v1`, /this server's own address/],
    ];
    for (const [url, why] of refused) {
      const error = await callError(o.create, 'configure_agent_ai', { ...base, base_url: url });
      assert.equal(error.type, 'validation_error', url);
      assert.equal(error.field, 'base_url', url);
      assert.match(error.message, /^base_url refused: /, url);
      assert.match(error.message, why, url);
      assert.match(error.message, /MCPWORKS_AGENT_MCP_ALLOW|own address/, url);
      assert.ok(!error.message.includes('sk-other'));
    }
    // Ollama without base_url: its default address is loopback, refused unless the operator allows it.
    const ollama = await callError(o.create, 'configure_agent_ai', { ...base, provider: 'ollama', model: 'llama3', api_key: 'ollama' });
    assert.equal(ollama.type, 'validation_error');
    assert.equal(ollama.field, 'base_url');
    assert.match(ollama.message, /ollama's default address http:\/\/127\.0\.0\.1:11434\/v1.*loopback address.*MCPWORKS_AGENT_MCP_ALLOW/);
    const described = await callOk(o.create, 'describe_agent', { name: 'guarded' });
    assert.deepEqual(
      [described.config.ai.provider, described.config.ai.model, described.config.ai.base_url],
      ['anthropic', 'claude-test', llm.anthropicUrl],
      'nothing stored',
    );
    assert.equal(server.server.services.agents.ai.open(await row(o, 'guarded'))?.apiKey, KEY);
    await callOk(o.create, 'destroy_agent', { name: 'guarded' });
  });

  test('scopes: configuring needs write and execute; removing needs write', async () => {
    const writer = await connect(`${server.url}/mcp/create/${o.ns}`, await createKey(server.url, o.account, { scopes: ['read', 'write'] }));
    const args = { name: 'thinker', provider: 'ollama', model: 'llama3', api_key: 'ollama' };
    assert.equal((await callError(writer, 'configure_agent_ai', args)).type, 'forbidden');
    const reader = await connect(`${server.url}/mcp/create/${o.ns}`, await createKey(server.url, o.account, { scopes: ['read'] }));
    assert.equal((await callError(reader, 'remove_agent_ai', { name: 'thinker' })).type, 'forbidden');
    assert.equal((await callError(reader, 'configure_orchestration_limits', { name: 'thinker', max_iterations: 2 })).type, 'forbidden');
    await writer.close();
    await reader.close();
    assert.equal((await callOk(o.create, 'describe_agent', { name: 'thinker' })).config.ai.provider, 'anthropic');
    // Another account's agent is not found.
    const other = await owner();
    const error = await callError(other.create, 'configure_agent_ai', { ...args, name: 'thinker' });
    assert.equal(error.type, 'not_found');
    await other.create.close();
  });

  test('a clone gets the AI with the key sealed again for it; remove drops settings and key', async () => {
    await callOk(o.create, 'clone_agent', { name: 'thinker', new_name: 'twin' });
    const twin = await row(o, 'twin');
    assert.equal(server.server.services.agents.ai.open(twin)?.apiKey, KEY);
    // The twin's sealed key is not the source's: each is bound to its agent.
    assert.notEqual(
      (twin.config.ai as { api_key_sealed: string }).api_key_sealed,
      ((await row(o, 'thinker')).config.ai as { api_key_sealed: string }).api_key_sealed,
    );
    const removed = await callOk(o.create, 'remove_agent_ai', { name: 'twin' });
    assert.deepEqual(removed, { agent: 'twin', removed: true, ai: null });
    assert.equal((await callOk(o.create, 'describe_agent', { name: 'twin' })).config.ai, undefined);
    assert.equal(server.server.services.agents.ai.open(await row(o, 'twin')), undefined);
    assert.equal((await callOk(o.create, 'remove_agent_ai', { name: 'twin' })).removed, false);
  });

  test('orchestration limits: tier defaults, the alias, values above the plan refused', async () => {
    const described = await callOk(o.create, 'describe_agent', { name: 'thinker' });
    assert.deepEqual(described.orchestration_limits, {
      max_iterations: 10,
      max_ai_tokens: 200_000,
      max_execution_seconds: 120,
      max_functions_called: 10,
    });
    const set = await callOk(o.create, 'configure_orchestration_limits', { name: 'thinker', max_iterations: 4, max_execution_seconds: 60 });
    assert.deepEqual(set.orchestration_limits, {
      max_iterations: 4,
      max_ai_tokens: 200_000,
      max_execution_seconds: 60,
      max_functions_called: 10,
    });
    const again = await callOk(o.create, 'configure_orchestration_limits', {
      name: 'thinker',
      max_execution_time: 90,
      max_ai_tokens: 1000,
    });
    assert.deepEqual(again.orchestration_limits, {
      max_iterations: 4,
      max_ai_tokens: 1000,
      max_execution_seconds: 90,
      max_functions_called: 10,
    });
    for (const [args, field] of [
      [{ max_iterations: 11 }, 'max_iterations'],
      [{ max_ai_tokens: 200_001 }, 'max_ai_tokens'],
      [{ max_execution_seconds: 121 }, 'max_execution_seconds'],
      [{ max_functions_called: 11 }, 'max_functions_called'],
      [{ max_iterations: 0 }, 'max_iterations'],
      [{ max_execution_time: 30, max_execution_seconds: 40 }, 'max_execution_time'],
      [{}, 'max_iterations'],
    ] as const) {
      const error = await callError(o.create, 'configure_orchestration_limits', { name: 'thinker', ...args });
      assert.equal(error.type, 'validation_error', JSON.stringify(args));
      assert.equal(error.field, field, JSON.stringify(args));
    }
    assert.deepEqual((await callOk(o.create, 'describe_agent', { name: 'thinker' })).orchestration_limits, again.orchestration_limits);
    // A plan with unlimited function calls: any count is allowed, and unset is unlimited.
    const big = await owner('open');
    await callOk(big.create, 'make_agent', { name: 'worker' });
    assert.equal((await callOk(big.create, 'describe_agent', { name: 'worker' })).orchestration_limits.max_functions_called, null);
    const many = await callOk(big.create, 'configure_orchestration_limits', {
      name: 'worker',
      max_functions_called: 10_000,
      max_iterations: 50,
    });
    assert.equal(many.orchestration_limits.max_functions_called, 10_000);
    await big.create.close();
  });

  test('the key is never stored in plain text', async () => {
    await o.create.close();
    if (server.databaseUrl) {
      const client = new pg.Client({ connectionString: server.databaseUrl });
      await client.connect();
      try {
        const rows = (await client.query('SELECT config::text AS config FROM agents')).rows as Array<{ config: string }>;
        assert.ok(rows.some((r) => r.config.includes('api_key_sealed')));
        for (const r of rows) assert.ok(!r.config.includes(KEY), 'sealed');
      } finally {
        await client.end();
      }
      return;
    }
    const dataDir = server.dataDir;
    const stopped = server;
    // Keep the directory for the scan: stop the server without removing it, then remove it after.
    await stopped.server.close();
    assertNotInFiles(dataDir, [KEY]);
    server = undefined as never;
    await stopped.stop().catch(() => undefined);
  });
});
