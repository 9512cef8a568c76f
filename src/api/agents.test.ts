// test-database: postgres, compare-and-swap and agent slots under parallel calls (the agent and account row locks)
// Agents on the create endpoint through the official SDK client: lifecycle, aliases, tenancy,
// scopes, tier slots (unlimited too), state round trip across a restart, compare-and-swap,
// caps, encryption at rest, and bad input that changes nothing. One server for the file,
// restarted once on the same data (dir or database).
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { applyTierOverrides } from '../core/tiers.js';
import { CLONE_PAGE_BYTES } from '../services/agents.js';
import type { Db } from '../store/database.js';
import {
  callError,
  callOk,
  connect,
  createKey,
  errorOf,
  parseResult,
  type McpTestClient,
  type TestServer,
  embeddedRunOnly,
} from '../test-support/harness.js';
import { fileServer, newOwner, type Owner } from '../test-support/owners.js';

// tiny: 2 slots and 3,000 bytes of state per agent; open: -1 (unlimited) for both, as MCPWORKS_TIERS says it.
const TIERS = applyTierOverrides('{"tiny":{"agents":2,"agent_state_bytes":3000},"open":{"agents":-1,"agent_state_bytes":-1}}');
const AGENT_TOOLS = [
  'make_agent',
  'list_agents',
  'describe_agent',
  'destroy_agent',
  'clone_agent',
  'get_agent_state',
  'set_agent_state',
  'delete_agent_state',
  'list_agent_state_keys',
  'start_agent',
  'stop_agent',
  'list_agent_runs',
  'describe_agent_run',
];

const files = fileServer('agents', { tiers: TIERS });
let server: TestServer;

before(async () => {
  server = await files.start();
});
after(() => files.stop());

const owner = (tier?: string): Promise<Owner> => newOwner(server, 'a', tier);

const names = async (client: McpTestClient): Promise<string[]> =>
  (await callOk(client, 'list_agents')).map((a: { name: string }) => a.name);

async function healthy(): Promise<void> {
  const response = await fetch(`${server.url}/healthz`);
  assert.equal(response.status, 200);
}

describe('agents on the create endpoint', () => {
  test('tools are listed with descriptions, schemas and annotations', async (t) => {
    if (embeddedRunOnly(t)) return;
    const o = await owner();
    const { tools } = await o.create.listTools();
    for (const name of AGENT_TOOLS) {
      const tool = tools.find((t) => t.name === name);
      assert.ok(tool, `${name} is listed`);
      assert.ok((tool.description ?? '').length > 40, `${name} has a description`);
      assert.equal(tool.inputSchema.type, 'object');
      assert.equal(typeof tool.annotations?.readOnlyHint, 'boolean', `${name} annotations`);
    }
    assert.ok(tools.find((t) => t.name === 'make_agent')!.inputSchema.properties.agent_name, 'the alias is published');
    assert.equal(tools.find((t) => t.name === 'destroy_agent')!.annotations!.destructiveHint, true);
    assert.equal(tools.find((t) => t.name === 'get_agent_state')!.annotations!.readOnlyHint, true);
  });

  test('make, list, describe, clone (with and without state), destroy; aliases agent_name and display_name', async (t) => {
    if (embeddedRunOnly(t)) return;
    const o = await owner();
    const made = await callOk(o.create, 'make_agent', { name: 'social-scraper', description: 'reads feeds' });
    assert.equal(made.name, 'social-scraper');
    assert.equal(made.status, 'stopped');
    assert.equal(made.desired_replicas, 1);
    assert.deepEqual(made.agent_slots, { used: 1, limit: 5 });
    const aliased = await callOk(o.create, 'make_agent', { agent_name: 'poster', display_name: 'posts summaries' });
    assert.equal(aliased.name, 'poster');
    assert.equal(aliased.description, 'posts summaries');
    assert.deepEqual(await names(o.create), ['poster', 'social-scraper']);
    assert.equal((await callError(o.create, 'make_agent', { name: 'poster' })).type, 'conflict');
    assert.equal((await callError(o.create, 'make_agent', { name: 'a', agent_name: 'b' })).type, 'validation_error');

    await callOk(o.create, 'set_agent_state', { agent_name: 'social-scraper', key: 'feeds', value: ['hn', 'lobsters'] });
    const described = await callOk(o.create, 'describe_agent', { agent_name: 'social-scraper' });
    assert.equal(described.description, 'reads feeds');
    assert.deepEqual(described.config, {});
    assert.equal(described.state.keys, 1);
    assert.equal(described.state.bytes, Buffer.byteLength('["hn","lobsters"]'));
    assert.deepEqual(described.limits.agent_slots, { used: 2, limit: 5, this_agent: 1 });
    assert.equal(described.limits.state_bytes_per_agent, 100 * 1024 * 1024);
    assert.equal(described.limits.schedule_min_interval_s, 30);

    const bare = await callOk(o.create, 'clone_agent', { name: 'social-scraper', new_name: 'scraper-two' });
    assert.equal(bare.description, 'reads feeds');
    assert.equal(bare.state_keys_copied, 0);
    assert.equal((await callError(o.create, 'get_agent_state', { name: 'scraper-two', key: 'feeds' })).type, 'not_found');
    const full = await callOk(o.create, 'clone_agent', { name: 'social-scraper', new_name: 'scraper-three', include_state: true });
    assert.equal(full.state_keys_copied, 1);
    assert.deepEqual((await callOk(o.create, 'get_agent_state', { name: 'scraper-three', key: 'feeds' })).value, ['hn', 'lobsters']);
    // The copy is its own: writing it leaves the original alone.
    await callOk(o.create, 'set_agent_state', { name: 'scraper-three', key: 'feeds', value: [] });
    assert.deepEqual((await callOk(o.create, 'get_agent_state', { name: 'social-scraper', key: 'feeds' })).value, ['hn', 'lobsters']);
    assert.equal((await callError(o.create, 'clone_agent', { name: 'social-scraper', new_name: 'poster' })).type, 'conflict');
    assert.equal((await callError(o.create, 'clone_agent', { name: 'nobody', new_name: 'x' })).type, 'not_found');

    const destroyed = await callOk(o.create, 'destroy_agent', { name: 'scraper-three' });
    assert.deepEqual(destroyed, { destroyed: 'scraper-three', state_keys_deleted: 1 });
    assert.equal((await callError(o.create, 'describe_agent', { name: 'scraper-three' })).type, 'not_found');
    assert.deepEqual(await names(o.create), ['poster', 'scraper-two', 'social-scraper']);
    const missing = await callError(o.create, 'describe_agent', { name: 'social-scrapr' });
    assert.equal(missing.type, 'not_found');
    assert.match(missing.message, /social-scraper/, 'suggests the close name');
  });

  test('every agent tool answers alike through each protocol era (v1 SDK, v2 on the older protocol, v2 modern)', async (t) => {
    if (embeddedRunOnly(t)) return;
    const o = await owner();
    await callOk(o.create, 'make_service', { name: 'jobs' });
    await callOk(o.create, 'make_function', { service: 'jobs', name: 'tick', code: 'def main(input_data):\n    return 1\n' });
    const modern = (await o.create.listTools()).tools.map((t) => t.name).sort();
    for (const era of ['v1', 'v2-legacy', 'v2'] as const) {
      const client = await connect(`${server.url}/mcp/create/${o.ns}`, o.account.key, era);
      try {
        assert.deepEqual((await client.listTools()).tools.map((t) => t.name).sort(), modern, `${era}: the same tools`);
        const name = `era-${era}`;
        const made = await callOk(client, 'make_agent', { name, description: era });
        assert.equal(made.name, name);
        assert.ok(
          (await callOk(client, 'list_agents')).some((a: { name: string }) => a.name === name),
          era,
        );
        await callOk(client, 'set_agent_state', { agent_name: name, key: 'k', value: { era } });
        assert.deepEqual((await callOk(client, 'get_agent_state', { name, key: 'k' })).value, { era }, era);
        assert.deepEqual(
          (await callOk(client, 'list_agent_state_keys', { name })).keys.map((k: { key: string }) => k.key),
          ['k'],
          era,
        );
        await callOk(client, 'delete_agent_state', { name, key: 'k' });
        const schedule = await callOk(client, 'add_schedule', { name, function_name: 'jobs.tick', cron_expression: '0 3 * * *' });
        assert.equal((await callOk(client, 'list_schedules', { name })).length, 1, era);
        assert.deepEqual(await callOk(client, 'list_schedule_fires', { name }), [], era);
        const hook = await callOk(client, 'add_webhook', { name, path: 'in', handler_function_name: 'jobs.tick' });
        assert.match(hook.url, new RegExp(`/mcp/agent/${o.ns}/${name}/webhook/in$`), era);
        assert.equal((await callOk(client, 'list_webhooks', { name })).webhooks.length, 1, era);
        await callOk(client, 'configure_agent_ai', { name, engine: 'openai', model: 'gpt-4o', api_key: `sk-era-${era}-0123456789` });
        await callOk(client, 'configure_orchestration_limits', { name, max_execution_seconds: 60 });
        const described = await callOk(client, 'describe_agent', { name });
        assert.equal(described.config.ai.provider, 'openai', era);
        assert.doesNotMatch(JSON.stringify(described), /sk-era/, `${era}: the key is never shown`);
        await callOk(client, 'remove_agent_ai', { name });
        await callOk(client, 'scale_agent', { name, replicas: 2 });
        assert.deepEqual((await callOk(client, 'list_agent_runs', { name })).runs, [], era);
        await callOk(client, 'clone_agent', { name, new_name: `${name}-copy` });
        await callOk(client, 'remove_webhook', { name, path: 'in' });
        await callOk(client, 'remove_schedule', { name, schedule_id: schedule.id });
        // Errors have one shape in every era.
        const missing = await callError(client, 'describe_agent', { name: 'nobody-here' });
        assert.equal(missing.type, 'not_found', era);
        const bad = await callError(client, 'make_agent', { name: 'Bad Name' });
        assert.equal(bad.type, 'validation_error', era);
        await callOk(client, 'destroy_agent', { name: `${name}-copy` });
        await callOk(client, 'destroy_agent', { name });
      } finally {
        await client.close();
      }
    }
    assert.deepEqual(await names(o.create), []);
  });

  test('tenancy: another account, and a key limited to another namespace, find no agent', async (t) => {
    if (embeddedRunOnly(t)) return;
    const a = await owner();
    await callOk(a.create, 'make_agent', { name: 'private-bot' });
    await callOk(a.create, 'set_agent_state', { name: 'private-bot', key: 'k', value: 'tenant-a-value' });
    const b = await owner();
    // b on a's namespace URL: the namespace is not b's, so nothing in it exists.
    const intruder = await connect(`${server.url}/mcp/create/${a.ns}`, b.account.key);
    const probes: Array<[string, Record<string, unknown>]> = [
      ['list_agents', {}],
      ['describe_agent', { name: 'private-bot' }],
      ['get_agent_state', { name: 'private-bot', key: 'k' }],
      ['list_agent_state_keys', { name: 'private-bot' }],
      ['set_agent_state', { name: 'private-bot', key: 'k', value: 'overwritten' }],
      ['delete_agent_state', { name: 'private-bot', key: 'k' }],
      ['clone_agent', { name: 'private-bot', new_name: 'stolen', include_state: true }],
      ['destroy_agent', { name: 'private-bot' }],
      ['make_agent', { name: 'squatter' }],
    ];
    for (const [tool, args] of probes) assert.equal((await callError(intruder, tool, args)).type, 'not_found', tool);
    // In b's own namespace the same name is simply absent.
    assert.equal((await callError(b.create, 'describe_agent', { name: 'private-bot' })).type, 'not_found');
    // a's own key limited to another namespace of a reaches nothing in the first.
    await callOk(a.create, 'make_namespace', { name: `${a.ns}-2` });
    const limited = await connect(`${server.url}/mcp/create/${a.ns}`, await createKey(server.url, a.account, { namespace: `${a.ns}-2` }));
    assert.equal((await callError(limited, 'get_agent_state', { name: 'private-bot', key: 'k' })).type, 'not_found');
    assert.equal((await callOk(a.create, 'get_agent_state', { name: 'private-bot', key: 'k' })).value, 'tenant-a-value');
    assert.deepEqual(await names(a.create), ['private-bot']);
    await healthy();
  });

  test('scopes: a read-only key writes nothing, a write-only key reads nothing', async (t) => {
    if (embeddedRunOnly(t)) return;
    const o = await owner();
    await callOk(o.create, 'make_agent', { name: 'bot' });
    await callOk(o.create, 'set_agent_state', { name: 'bot', key: 'k', value: 1 });
    const reader = await connect(`${server.url}/mcp/create/${o.ns}`, await createKey(server.url, o.account, { scopes: ['read'] }));
    for (const [tool, args] of [
      ['make_agent', { name: 'other' }],
      ['clone_agent', { name: 'bot', new_name: 'other' }],
      ['destroy_agent', { name: 'bot' }],
      ['set_agent_state', { name: 'bot', key: 'k', value: 2 }],
      ['delete_agent_state', { name: 'bot', key: 'k' }],
    ] as const) {
      const error = await callError(reader, tool, args);
      assert.equal(error.type, 'forbidden', tool);
      assert.match(error.message, /'write' scope/);
    }
    assert.equal((await callOk(reader, 'get_agent_state', { name: 'bot', key: 'k' })).value, 1, 'the key can read');
    const writer = await connect(`${server.url}/mcp/create/${o.ns}`, await createKey(server.url, o.account, { scopes: ['write'] }));
    for (const [tool, args] of [
      ['list_agents', {}],
      ['describe_agent', { name: 'bot' }],
      ['get_agent_state', { name: 'bot', key: 'k' }],
      ['list_agent_state_keys', { name: 'bot' }],
    ] as const) {
      assert.equal((await callError(writer, tool, args)).type, 'forbidden', tool);
    }
    assert.deepEqual(await names(o.create), ['bot']);
    assert.equal((await callOk(o.create, 'get_agent_state', { name: 'bot', key: 'k' })).version, 1);
  });

  test('tier slots: Pro 5, each clone takes slots too, a full plan changes nothing; unlimited (-1 and Dedicated) is unlimited', async (t) => {
    if (embeddedRunOnly(t)) return;
    const pro = await owner('pro');
    for (let i = 1; i <= 5; i++) await callOk(pro.create, 'make_agent', { name: `bot-${i}` });
    const refused = await callError(pro.create, 'make_agent', { name: 'bot-6' });
    assert.equal(refused.type, 'limit_exceeded');
    assert.deepEqual([refused.resource, refused.limit, refused.usage], ['agents', 5, 5]);
    assert.equal((await callError(pro.create, 'clone_agent', { name: 'bot-1', new_name: 'bot-7' })).type, 'limit_exceeded');
    assert.equal((await names(pro.create)).length, 5, 'nothing was made');
    // Slots are per account, across its namespaces.
    await callOk(pro.create, 'make_namespace', { name: `${pro.ns}-b` });
    const second = await connect(`${server.url}/mcp/create/${pro.ns}-b`, pro.account.key);
    assert.equal((await callError(second, 'make_agent', { name: 'elsewhere' })).type, 'limit_exceeded');
    // Destroying one frees its slot.
    await callOk(pro.create, 'destroy_agent', { name: 'bot-5' });
    await callOk(second, 'make_agent', { name: 'elsewhere' });

    for (const tier of ['open', 'dedicated']) {
      const big = await owner(tier);
      for (let i = 1; i <= 8; i++) await callOk(big.create, 'make_agent', { name: `bot-${i}` });
      const cloned = await callOk(big.create, 'clone_agent', { name: 'bot-1', new_name: 'bot-9' });
      assert.deepEqual(cloned.agent_slots, { used: 9, limit: null }, tier);
      assert.equal((await names(big.create)).length, 9, tier);
    }
  });

  test('parallel makes cannot pass the slot limit together', async () => {
    const o = await owner('tiny');
    const clients = await Promise.all(Array.from({ length: 6 }, () => connect(`${server.url}/mcp/create/${o.ns}`, o.account.key)));
    const results = await Promise.all(clients.map((c, i) => c.callTool('make_agent', { name: `racer-${i}` })));
    assert.equal(results.filter((r) => !r.isError).length, 2, "exactly the plan's 2 slots were taken");
    assert.equal((await names(o.create)).length, 2);
    await Promise.all(clients.map((c) => c.close()));
    // In the service itself the transactions overlap for certain (the pool holds 10 connections):
    // only the account's row lock keeps the count and the insert together.
    const other = await owner('tiny');
    const principal = (await server.server.services.accounts.authenticateKey(other.account.key))!;
    const made = await Promise.allSettled(
      Array.from({ length: 20 }, (_, i) => server.server.services.agents.makeAgent(principal, other.ns, { name: `direct-${i}` })),
    );
    assert.equal(made.filter((r) => r.status === 'fulfilled').length, 2);
    for (const r of made)
      if (r.status === 'rejected') assert.equal((r.reason as { type?: string }).type, 'limit_exceeded', String(r.reason));
    assert.equal((await names(other.create)).length, 2);
  });

  test('state: compare-and-swap, conflicts change nothing, parallel swaps have one winner', async () => {
    const o = await owner();
    await callOk(o.create, 'make_agent', { name: 'counter' });
    const first = await callOk(o.create, 'set_agent_state', { name: 'counter', key: 'n', value: 1, if_version: 0 });
    assert.equal(first.version, 1);
    const stale = await callError(o.create, 'set_agent_state', { name: 'counter', key: 'n', value: 99, if_version: 0 });
    assert.equal(stale.type, 'conflict');
    assert.equal(stale.current_version, 1);
    assert.equal((await callOk(o.create, 'set_agent_state', { name: 'counter', key: 'n', value: 2, if_version: 1 })).version, 2);
    assert.equal((await callError(o.create, 'delete_agent_state', { name: 'counter', key: 'n', if_version: 1 })).type, 'conflict');
    const now = await callOk(o.create, 'get_agent_state', { name: 'counter', key: 'n' });
    assert.deepEqual([now.value, now.version], [2, 2]);

    const clients = await Promise.all(Array.from({ length: 8 }, () => connect(`${server.url}/mcp/create/${o.ns}`, o.account.key)));
    const results = await Promise.all(
      clients.map((c, i) => c.callTool('set_agent_state', { name: 'counter', key: 'n', value: 100 + i, if_version: 2 })),
    );
    assert.equal(results.filter((r) => !r.isError).length, 1, 'one swap won');
    for (const loser of results.filter((r) => r.isError)) assert.equal(errorOf(parseResult(loser)).type, 'conflict');
    const after = await callOk(o.create, 'get_agent_state', { name: 'counter', key: 'n' });
    assert.equal(after.version, 3);
    assert.equal(after.value, 100 + results.findIndex((r) => !r.isError), "the winner's value");
    await Promise.all(clients.map((c) => c.close()));

    await callOk(o.create, 'delete_agent_state', { name: 'counter', key: 'n', if_version: 3 });
    assert.equal((await callError(o.create, 'get_agent_state', { name: 'counter', key: 'n' })).type, 'not_found');
    assert.equal((await callOk(o.create, 'describe_agent', { name: 'counter' })).state.bytes, 0);
    // Prefixes are literal (no LIKE wildcards) and count characters, not UTF-16 units.
    for (const key of ['😀/a', '😀/b', '%/c', 'x']) await callOk(o.create, 'set_agent_state', { name: 'counter', key, value: 0 });
    const listed = async (prefix: string) =>
      (await callOk(o.create, 'list_agent_state_keys', { name: 'counter', prefix })).keys.map((k: { key: string }) => k.key);
    assert.deepEqual(await listed('😀/'), ['😀/a', '😀/b']);
    assert.deepEqual(await listed('%'), ['%/c']);
  });

  test('state caps: per value on every plan, per agent by plan (a replaced value counts once)', async (t) => {
    if (embeddedRunOnly(t)) return;
    const o = await owner('tiny');
    await callOk(o.create, 'make_agent', { name: 'hoarder' });
    const huge = await callError(o.create, 'set_agent_state', { name: 'hoarder', key: 'big', value: 'x'.repeat(1024 * 1024) });
    assert.equal(huge.type, 'limit_exceeded');
    assert.equal(huge.resource, 'state_value_bytes');
    await callOk(o.create, 'set_agent_state', { name: 'hoarder', key: 'a', value: 'x'.repeat(1400) });
    await callOk(o.create, 'set_agent_state', { name: 'hoarder', key: 'b', value: 'x'.repeat(1400) });
    const full = await callError(o.create, 'set_agent_state', { name: 'hoarder', key: 'c', value: 'x'.repeat(400) });
    assert.equal(full.type, 'limit_exceeded');
    assert.deepEqual([full.resource, full.limit], ['agent_state_bytes', 3000]);
    // Replacing a value needs room only for the difference.
    await callOk(o.create, 'set_agent_state', { name: 'hoarder', key: 'a', value: 'y'.repeat(1500) });
    const keys = await callOk(o.create, 'list_agent_state_keys', { name: 'hoarder' });
    assert.deepEqual(
      keys.keys.map((k: { key: string }) => k.key),
      ['a', 'b'],
    );
    assert.equal(keys.state_bytes, 1502 + 1402);
    const paged = await callOk(o.create, 'list_agent_state_keys', { name: 'hoarder', limit: 1 });
    assert.equal(paged.next_after, 'a');
    assert.deepEqual(
      (await callOk(o.create, 'list_agent_state_keys', { name: 'hoarder', after: 'a' })).keys.map((k: { key: string }) => k.key),
      ['b'],
    );
    // Cloning with state counts the copy against the plan's cap per agent too (the copy fits: 2,904 ≤ 3,000).
    assert.equal(
      (await callOk(o.create, 'clone_agent', { name: 'hoarder', new_name: 'hoarder-2', include_state: true })).state_keys_copied,
      2,
    );
  });

  test('bad input gets a structured error and changes nothing', async (t) => {
    if (embeddedRunOnly(t)) return;
    const o = await owner();
    await callOk(o.create, 'make_agent', { name: 'steady' });
    await callOk(o.create, 'set_agent_state', { name: 'steady', key: 'k', value: { a: 1 } });
    const bad: Array<[string, Record<string, unknown>]> = [
      ['make_agent', {}],
      ['make_agent', { name: 'Bad_Name' }],
      ['make_agent', { name: 'x'.repeat(40) }],
      ['make_agent', { name: 'ok-name', description: 'x'.repeat(5000) }],
      ['make_agent', { name: 42 }],
      ['clone_agent', { name: 'steady', new_name: 'No Good' }],
      ['clone_agent', { name: 'steady', new_name: 'fine', include_state: 'yes' }],
      ['set_agent_state', { name: 'steady', key: '', value: 1 }],
      ['set_agent_state', { name: 'steady', key: 'k' }],
      ['set_agent_state', { name: 'steady', key: 'k', value: 1, if_version: -1 }],
      ['set_agent_state', { name: 'steady', key: 'line\nbreak', value: 1 }],
      ['get_agent_state', { name: 'steady' }],
      ['list_agent_state_keys', { name: 'steady', limit: 0 }],
      ['delete_agent_state', { name: 'steady', key: 'k', if_version: 1.5 }],
    ];
    for (const [tool, args] of bad) {
      const error = await callError(o.create, tool, args);
      assert.equal(error.type, 'validation_error', `${tool} ${JSON.stringify(args).slice(0, 80)}: ${error.message}`);
      assert.doesNotMatch(error.message, /\n\s+at /, 'no stack trace');
    }
    assert.deepEqual(await names(o.create), ['steady']);
    const state = await callOk(o.create, 'get_agent_state', { name: 'steady', key: 'k' });
    assert.deepEqual([state.value, state.version], [{ a: 1 }, 1]);
    await healthy();
  });

  test('clone_agent with state copies in pages of at most 1 MB, each its own transaction: the server, the account and the source stay usable meanwhile', async () => {
    const o = await owner();
    const agents = server.server.services.agents;
    await callOk(o.create, 'make_agent', { name: 'big' });
    const value = (i: number) => `${i}`.repeat(700_000);
    for (let i = 0; i < 6; i++) await callOk(o.create, 'set_agent_state', { name: 'big', key: `k${i}`, value: value(i) });
    const pages: Array<{ keys: number; bytes: number }> = [];
    let healthzDuringClone = 0;
    agents.onClonePage = async (page) => {
      pages.push(page);
      if (pages.length !== 2) return;
      // Between two pages, while clone_agent has not answered yet: /healthz answers, the clone is
      // visible as 'cloning' and refuses the state tools, and neither the account's lock (make_agent)
      // nor the source's (set_agent_state) is held.
      const response = await fetch(`${server.url}/healthz`);
      if (response.status === 200) healthzDuringClone++;
      const described = await callOk(o.create, 'describe_agent', { name: 'big-copy' });
      assert.equal(described.status, 'cloning');
      assert.equal((await callOk(o.create, 'list_agents')).find((a: { name: string }) => a.name === 'big-copy').status, 'cloning');
      const refused = await callError(o.create, 'get_agent_state', { name: 'big-copy', key: 'k0' });
      assert.equal(refused.type, 'conflict');
      assert.match(refused.message, /being cloned/);
      assert.equal((await callError(o.create, 'set_agent_state', { name: 'big-copy', key: 'x', value: 1 })).type, 'conflict');
      assert.equal((await callError(o.create, 'clone_agent', { name: 'big-copy', new_name: 'copy-of-copy' })).type, 'conflict');
      await callOk(o.create, 'make_agent', { name: 'made-meanwhile' });
      // k0 was copied in the first page: the clone keeps the value it had then.
      await callOk(o.create, 'set_agent_state', { name: 'big', key: 'k0', value: 'changed' });
    };
    let cloned;
    try {
      cloned = await callOk(o.create, 'clone_agent', { name: 'big', new_name: 'big-copy', include_state: true });
    } finally {
      agents.onClonePage = undefined;
    }
    assert.equal(cloned.state_keys_copied, 6);
    assert.equal(cloned.status, 'stopped');
    assert.equal(healthzDuringClone, 1, '/healthz answered between two pages');
    assert.equal(pages.length, 6, 'one 700 KB value per page');
    for (const page of pages) assert.ok(page.bytes <= CLONE_PAGE_BYTES && page.keys === 1, JSON.stringify(page));
    assert.equal((await callOk(o.create, 'get_agent_state', { name: 'big-copy', key: 'k0' })).value, value(0));
    assert.equal((await callOk(o.create, 'get_agent_state', { name: 'big-copy', key: 'k5' })).value, value(5));
    const described = await callOk(o.create, 'describe_agent', { name: 'big-copy' });
    assert.deepEqual([described.status, described.state.keys, described.state.bytes], ['stopped', 6, 6 * 700_002]);
    assert.deepEqual(await names(o.create), ['big', 'big-copy', 'made-meanwhile']);
    await healthy();
  });

  test('a clone that fails (copy or source destroyed mid-copy, or past the state cap) leaves no agent and frees its slot', async () => {
    const agents = server.server.services.agents;
    const o = await owner('open');
    await callOk(o.create, 'make_agent', { name: 'src' });
    // Two pages (one 700 KB value each): the source destroyed after the first, so half its state is in.
    for (const key of ['a', 'b']) await callOk(o.create, 'set_agent_state', { name: 'src', key, value: 'x'.repeat(700_000) });
    // destroy_agent on the copy while it is 'cloning' cancels the clone.
    agents.onClonePage = async () => {
      agents.onClonePage = undefined;
      await callOk(o.create, 'destroy_agent', { name: 'cancelled' });
    };
    try {
      const cancelled = await callError(o.create, 'clone_agent', { name: 'src', new_name: 'cancelled', include_state: true });
      assert.equal(cancelled.type, 'conflict');
      assert.match(cancelled.message, /destroyed/);
    } finally {
      agents.onClonePage = undefined;
    }
    assert.deepEqual(await names(o.create), ['src']);
    let destroyed = false;
    agents.onClonePage = async () => {
      if (destroyed) return;
      destroyed = true;
      await callOk(o.create, 'destroy_agent', { name: 'src' });
    };
    let failed;
    try {
      failed = await callError(o.create, 'clone_agent', { name: 'src', new_name: 'half', include_state: true });
    } finally {
      agents.onClonePage = undefined;
    }
    assert.ok(destroyed, 'the source was destroyed between pages');
    assert.equal(failed.type, 'not_found');
    assert.deepEqual(await names(o.create), []);

    // Past the per-agent cap: filled on an unlimited plan, then cloned on tiny (3,000 bytes per agent).
    await callOk(o.create, 'make_agent', { name: 'fat' });
    for (const key of ['a', 'b', 'c']) await callOk(o.create, 'set_agent_state', { name: 'fat', key, value: 'x'.repeat(1400) });
    await server.server.services.accounts.setTier(o.account.email, 'tiny');
    const capped = await callError(o.create, 'clone_agent', { name: 'fat', new_name: 'fat-copy', include_state: true });
    assert.equal(capped.type, 'limit_exceeded');
    assert.equal(capped.resource, 'agent_state_bytes');
    assert.deepEqual(await names(o.create), ['fat']);
    // Its slot is free again: tiny's second slot is there to take.
    assert.deepEqual((await callOk(o.create, 'make_agent', { name: 'second' })).agent_slots, { used: 2, limit: 2 });
  });

  test('a state value rolled back to an older ciphertext in the database does not decrypt, and leaks nothing', async (t) => {
    if (embeddedRunOnly(t)) return;
    const o = await owner();
    const db = (server.server.services.accountsStore as unknown as { db: Db }).db;
    const marker = `old-value-${Math.random().toString(36).slice(2, 10)}`;
    await callOk(o.create, 'make_agent', { name: 'ledger' });
    await callOk(o.create, 'set_agent_state', { name: 'ledger', key: 'balance', value: marker });
    const row = () =>
      db
        .selectFrom('agent_state as s')
        .innerJoin('agents as a', 'a.id', 's.agent_id')
        .innerJoin('namespaces as n', 'n.id', 'a.namespace_id')
        .select(['s.agent_id', 's.value', 's.version'])
        .where('n.name', '=', o.ns)
        .where('a.name', '=', 'ledger')
        .where('s.key', '=', 'balance')
        .executeTakeFirstOrThrow();
    const old = await row();
    await callOk(o.create, 'set_agent_state', { name: 'ledger', key: 'balance', value: 'spent' });
    const current = await row();
    assert.equal(current.version, 2);
    await db
      .updateTable('agent_state')
      .set({ value: old.value })
      .where('agent_id', '=', old.agent_id)
      .where('key', '=', 'balance')
      .execute();
    const error = await callError(o.create, 'get_agent_state', { name: 'ledger', key: 'balance' });
    assert.equal(error.type, 'internal_error');
    assert.match(error.message, /does not decrypt/);
    assert.doesNotMatch(JSON.stringify(error), new RegExp(marker));
    // Put back, the current ciphertext opens again.
    await db
      .updateTable('agent_state')
      .set({ value: current.value })
      .where('agent_id', '=', old.agent_id)
      .where('key', '=', 'balance')
      .execute();
    assert.equal((await callOk(o.create, 'get_agent_state', { name: 'ledger', key: 'balance' })).value, 'spent');
  });

  test('state survives a restart and is never stored in plain text', async () => {
    const o = await owner();
    const marker = `plain-state-marker-${Math.random().toString(36).slice(2, 12)}`;
    await callOk(o.create, 'make_agent', { name: 'keeper' });
    await callOk(o.create, 'set_agent_state', { name: 'keeper', key: 'secret-note', value: { note: marker, n: [1, 2, 3] } });
    await callOk(o.create, 'set_agent_state', { name: 'keeper', key: 'secret-note', value: { note: marker, n: [1, 2, 3, 4] } });
    await o.create.close();
    server = await files.restart(async () => {
      await files.assertNotAtRest(marker);
      if (files.databaseUrl) {
        const client = new pg.Client({ connectionString: files.databaseUrl });
        await client.connect();
        try {
          const rows = (await client.query('SELECT value FROM agent_state')).rows as Array<{ value: string }>;
          assert.ok(rows.length > 0);
          for (const row of rows) assert.ok(row.value.startsWith('v1:'), 'sealed');
        } finally {
          await client.end();
        }
      }
    });
    const again = await connect(`${server.url}/mcp/create/${o.ns}`, o.account.key);
    const value = await callOk(again, 'get_agent_state', { name: 'keeper', key: 'secret-note' });
    assert.deepEqual(value.value, { note: marker, n: [1, 2, 3, 4] });
    assert.equal(value.version, 2);
    assert.deepEqual(
      (await callOk(again, 'list_agents')).map((a: { name: string }) => a.name),
      ['keeper'],
    );
  });
});
