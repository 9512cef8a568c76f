// test-database: postgres, fires are claimed by unique inserts that two server processes race for on one database
// Agent schedules through the official SDK client and real sandboxes: the tools and their refusals,
// exactly once per tick (single vs cluster), restarts with catch_up, the failure strategies and
// overlap skip. A 1-second cron on a plan whose minimum interval is 1 s. Fires are counted by
// their rows over a window of ticks: every tick accounted for once, never by timing.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { applyTierOverrides } from '../../core/tiers.js';
import {
  callError,
  callOk,
  connect,
  createAccount,
  freshDatabaseUrl,
  seedEmbeddedDatabase,
  startTestServer,
  type McpTestClient,
  type TestAccount,
  type TestServer,
} from '../../test-support/harness.js';

// fast: schedules may fire every second (the default plans allow 30 s or 15 s).
const TIERS = applyTierOverrides('{"fast":{"schedule_min_interval_s":1,"agents":20}}');

let server: TestServer;
let dataDir: string;
let databaseUrl: string | undefined;

async function start(): Promise<void> {
  server = await startTestServer({ dataDir, databaseUrl, tiers: TIERS });
}

before(async () => {
  dataDir = mkdtempSync(path.join(tmpdir(), 'mcpworks-schedules-'));
  databaseUrl = await freshDatabaseUrl();
  if (!databaseUrl) await seedEmbeddedDatabase(dataDir);
  await start();
});
after(async () => {
  await server?.stop();
  rmSync(dataDir, { recursive: true, force: true });
});

interface Owner {
  account: TestAccount;
  ns: string;
  create: McpTestClient;
}

const PY_OK = 'def main(input_data):\n    return {"replica": input_data.get("replica"), "at": input_data.get("scheduled_for")}\n';
const PY_FAIL = 'def main(input_data):\n    raise ValueError("always fails")\n';

async function owner(tier = 'fast'): Promise<Owner> {
  const account = await createAccount(server.url);
  await server.server.services.accounts.setTier(account.email, tier);
  const ns = `s-${Math.random().toString(36).slice(2, 10)}`;
  const create = await connect(`${server.url}/mcp/create/${ns}`, account.key);
  await callOk(create, 'make_namespace', { name: ns });
  await callOk(create, 'make_service', { name: 'jobs' });
  await callOk(create, 'make_function', { service: 'jobs', name: 'tick', code: PY_OK });
  await callOk(create, 'make_function', { service: 'jobs', name: 'fail', code: PY_FAIL });
  return { account, ns, create };
}

async function healthy(): Promise<void> {
  const response = await fetch(`${server.url}/healthz`);
  assert.equal(response.status, 200);
}

describe('schedule tools', () => {
  test('listed with descriptions, schemas and annotations', async () => {
    const o = await owner();
    const { tools } = await o.create.listTools();
    for (const name of ['add_schedule', 'list_schedules', 'remove_schedule', 'list_schedule_fires']) {
      const tool = tools.find((t) => t.name === name);
      assert.ok(tool, `${name} is listed`);
      assert.ok((tool.description ?? '').length > 40, `${name} has a description`);
      assert.equal(typeof tool.annotations?.readOnlyHint, 'boolean');
    }
    const add = tools.find((t) => t.name === 'add_schedule')!;
    const props = add.inputSchema.properties as Record<string, { enum?: string[] }>;
    assert.deepEqual(props.orchestration_mode!.enum, ['direct', 'run_then_reason', 'reason_first'], "the guide's values are in the schema");
    assert.equal(tools.find((t) => t.name === 'remove_schedule')!.annotations!.destructiveHint, true);
  });

  test('add, list, describe_agent, clone, remove; bad input refused and nothing changed', async () => {
    const o = await owner();
    await callOk(o.create, 'make_agent', { name: 'poller' });
    const bad: Array<[Record<string, unknown>, string, RegExp]> = [
      [{ cron_expression: '* * *' }, 'validation_error', /has 3 field/],
      [{ cron_expression: '61 * * * *' }, 'validation_error', /cron_expression/],
      [{ timezone: 'Mars/Olympus' }, 'validation_error', /unknown time zone/],
      [{ timezone: '+01:00' }, 'validation_error', /time zone/],
      [{ function_name: 'jobs.nope' }, 'not_found', /jobs\.nope/],
      [{ function_name: 'tick' }, 'validation_error', /service\.function/],
      [{ orchestration_mode: 'reason_first' }, 'validation_error', /configure_agent_ai.*issue 16/],
      [{ orchestration_mode: 'run_then_reason' }, 'validation_error', /configure_agent_ai/],
      [{ mode: 'everyone' }, 'validation_error', /mode/],
      [{ failure_policy: { strategy: 'retry' } }, 'validation_error', /strategy/],
      [{ failure_policy: { max_failures: 0 } }, 'validation_error', /max_failures/],
      [{ schedule_name: 'Bad Name' }, 'validation_error', /schedule_name/],
    ];
    for (const [change, type, message] of bad) {
      const error = await callError(o.create, 'add_schedule', {
        name: 'poller',
        function_name: 'jobs.tick',
        cron_expression: '*/5 * * * *',
        ...change,
      });
      assert.equal(error.type, type, JSON.stringify(change));
      assert.match(error.message, message, JSON.stringify(change));
    }
    // The tier's minimum interval, on the real gap: pro allows 30 s.
    const pro = await owner('pro');
    await callOk(pro.create, 'make_agent', { name: 'poller' });
    const tooFast = await callError(pro.create, 'add_schedule', {
      name: 'poller',
      function_name: 'jobs.tick',
      cron_expression: '*/10 * * * * *',
    });
    assert.equal(tooFast.type, 'limit_exceeded');
    assert.match(tooFast.message, /10 s apart.*at least 30 s/);
    assert.deepEqual(await callOk(pro.create, 'list_schedules', { name: 'poller' }), []);
    assert.deepEqual(await callOk(o.create, 'list_schedules', { name: 'poller' }), [], 'nothing was written');

    const added = await callOk(o.create, 'add_schedule', {
      agent_name: 'poller',
      function_name: 'jobs.tick',
      cron_expression: '30 2 * * *',
      timezone: 'europe/berlin',
      mode: 'cluster',
      failure_policy: { strategy: 'auto_disable', max_failures: 3 },
      schedule_name: 'nightly',
    });
    assert.equal(added.timezone, 'Europe/Berlin');
    assert.equal(added.mode, 'cluster');
    assert.equal(added.overlap, 'skip');
    assert.equal(added.catch_up, 'none');
    assert.equal(added.orchestration_mode, 'direct');
    assert.deepEqual(added.failure_policy, { strategy: 'auto_disable', max_failures: 3, backoff_factor: 2, max_backoff_s: 3600 });
    assert.equal(added.enabled, true);
    assert.equal(added.next_fire_at, null, 'a stopped agent has no next fire');
    assert.match(added.waiting, /start_agent/);
    assert.equal(
      (
        await callError(o.create, 'add_schedule', {
          name: 'poller',
          function_name: 'jobs.tick',
          cron_expression: '0 * * * *',
          schedule_name: 'nightly',
        })
      ).type,
      'conflict',
    );
    const listed = await callOk(o.create, 'list_schedules', { name: 'poller' });
    assert.deepEqual(
      listed.map((s: { id: string; schedule_name: string }) => [s.id, s.schedule_name]),
      [[added.id, 'nightly']],
    );
    const described = await callOk(o.create, 'describe_agent', { name: 'poller' });
    assert.equal(described.schedules[0].id, added.id);
    assert.equal(described.schedules[0].consecutive_failures, 0);
    // Tenancy: another account cannot see or remove it.
    const other = await owner();
    assert.equal((await callError(other.create, 'list_schedules', { name: 'poller' })).type, 'not_found');
    const clone = await callOk(o.create, 'clone_agent', { name: 'poller', new_name: 'poller-copy' });
    assert.equal(clone.name, 'poller-copy');
    const copied = await callOk(o.create, 'list_schedules', { name: 'poller-copy' });
    assert.equal(copied.length, 1);
    assert.notEqual(copied[0].id, added.id);
    assert.equal(copied[0].cron_expression, '30 2 * * *');
    assert.equal(
      (await callError(o.create, 'remove_schedule', { name: 'poller', schedule_id: copied[0].id })).type,
      'not_found',
      "another agent's id",
    );
    assert.equal((await callError(o.create, 'remove_schedule', { name: 'poller' })).type, 'validation_error');
    assert.deepEqual(await callOk(o.create, 'remove_schedule', { name: 'poller', schedule_id: added.id }), {
      removed: added.id,
      schedule_name: 'nightly',
      agent: 'poller',
    });
    assert.deepEqual(await callOk(o.create, 'list_schedules', { name: 'poller' }), []);
    assert.deepEqual(await callOk(o.create, 'list_schedule_fires', { name: 'poller' }), []);
    await healthy();
  });
});
