// test-database: embedded, one trigger at a time: the record and the meter, not races
// The agent runtime's spine through the real server and real sandboxes: start/stop write replicas
// with names for life; every trigger run goes through src/run as the agent (metered, recorded with
// its trigger) and is recorded in agent_runs with how it ended; the runs tools page and filter;
// another account's agent is not found; a run a dead server left running is ended at start.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { REPLICA_NAME_PATTERN } from '../core/agents.js';
import { applyTierOverrides } from '../core/tiers.js';
import { callError, callOk, connect, createKey, errorOf, type TestServer } from '../test-support/harness.js';
import { startRuleServer, type RuleServer, type Space } from '../test-support/spaces.js';
import type { Db } from '../store/database.js';

let rules: RuleServer;
let server: TestServer;
before(async () => {
  rules = await startRuleServer(applyTierOverrides(JSON.stringify({ one: { monthly_executions: 1 } })));
  server = rules.server;
});
after(async () => {
  await rules?.stop();
});

const FUNCTIONS = [
  { name: 'double', code: 'def main(input_data):\n    return {"twice": input_data["n"] * 2}\n' },
  { name: 'boom', code: 'class Kaboom(Exception):\n    pass\n\ndef main(input_data):\n    raise Kaboom("it went off")\n' },
  { name: 'nap', code: 'import time\n\ndef main(input_data):\n    time.sleep(input_data["s"])\n    return {"slept": input_data["s"]}\n' },
  { name: 'nul', code: 'def main(input_data):\n    raise ValueError("before\\x00after")\n' },
  {
    name: 'ts-hello',
    language: 'typescript',
    code: 'export default function main(input: { who: string }) {\n  return { hi: input.who };\n}\n',
  },
];

const runtime = () => server.server.services.agentRuntime;

/** The test's view of the database, as src/api/agents.test.ts reads it (through the accounts store). */
const database = (): Db => (server.server.services.accountsStore as unknown as { db: Db }).db;

/** The agent's id (triggers name agents by id). */
async function agentId(s: Space, name: string): Promise<string> {
  const row = await database()
    .selectFrom('agents')
    .innerJoin('namespaces', 'namespaces.id', 'agents.namespace_id')
    .select('agents.id')
    .where('namespaces.name', '=', s.ns)
    .where('agents.name', '=', name)
    .executeTakeFirstOrThrow();
  return row.id;
}

describe('start and stop', () => {
  test('start makes one named replica per desired replica, running; stop stops them; names are kept', async () => {
    const s = await rules.space(FUNCTIONS);
    await callOk(s.create, 'make_agent', { name: 'keeper' });
    const started = await callOk(s.create, 'start_agent', { name: 'keeper' });
    assert.equal(started.status, 'running');
    assert.equal(started.replicas.length, 1);
    const [replica] = started.replicas;
    assert.match(replica.name, REPLICA_NAME_PATTERN);
    assert.equal(replica.status, 'running');
    const stopped = await callOk(s.create, 'stop_agent', { agent_name: 'keeper' });
    assert.equal(stopped.status, 'stopped');
    assert.deepEqual(
      stopped.replicas.map((r: { name: string; status: string }) => [r.name, r.status]),
      [[replica.name, 'stopped']],
    );
    const again = await callOk(s.create, 'start_agent', { name: 'keeper' });
    assert.equal(again.replicas[0].name, replica.name, 'a replica keeps its name for life');
    const described = await callOk(s.create, 'describe_agent', { name: 'keeper' });
    assert.equal(described.status, 'running');
    assert.equal(described.replicas[0].name, replica.name);
    assert.deepEqual(described.recent_runs, []);
    // One replica by name; an unknown one is not found and changes nothing.
    const one = await callOk(s.create, 'stop_agent', { name: 'keeper', replica: replica.name });
    assert.equal(one.replicas[0].status, 'stopped');
    const unknown = errorOf(await callError(s.create, 'start_agent', { name: 'keeper', replica: 'lazy-yak' }));
    assert.equal(unknown.type, 'not_found');
    const bad = errorOf(await callError(s.create, 'start_agent', { name: 'keeper', replica: 'Not A Name' }));
    assert.equal(bad.type, 'validation_error');
  });

  test('start_agent needs the execute scope (its functions then run); stop and the runs tools do not', async () => {
    const s = await rules.space(FUNCTIONS);
    await callOk(s.create, 'make_agent', { name: 'scoped' });
    const key = await createKey(server.url, s.account, { name: 'no-exec', scopes: ['read', 'write'] });
    const writer = await connect(`${server.url}/mcp/create/${s.ns}`, key);
    const refused = errorOf(await callError(writer, 'start_agent', { name: 'scoped' }));
    assert.equal(refused.type, 'forbidden');
    assert.match(refused.message, /execute/);
    assert.equal((await callOk(s.create, 'describe_agent', { name: 'scoped' })).status, 'stopped', 'nothing started');
    // Each trigger that runs functions as the agent needs it too.
    const hook = errorOf(await callError(writer, 'add_webhook', { name: 'scoped', path: 'in', handler_function_name: 'utils.double' }));
    assert.equal(hook.type, 'forbidden');
    assert.deepEqual((await callOk(s.create, 'list_webhooks', { name: 'scoped' })).webhooks ?? [], []);
    const schedule = errorOf(
      await callError(writer, 'add_schedule', { name: 'scoped', function_name: 'utils.double', cron_expression: '*/5 * * * *' }),
    );
    assert.equal(schedule.type, 'forbidden');
    assert.deepEqual(await callOk(s.create, 'list_schedules', { name: 'scoped' }), []);
    assert.equal((await callOk(writer, 'stop_agent', { name: 'scoped' })).status, 'stopped');
    assert.deepEqual((await callOk(writer, 'list_agent_runs', { name: 'scoped' })).runs, []);
    const long = errorOf(await callError(writer, 'describe_agent_run', { name: 'scoped', run_id: 'x'.repeat(5000) }));
    assert.equal(long.type, 'validation_error');
    assert.ok(long.message.length < 500, 'a long id is not echoed back');
  });

  test("another account's agent is not found by start, stop or the runs tools", async () => {
    const owner = await rules.space(FUNCTIONS);
    await callOk(owner.create, 'make_agent', { name: 'private' });
    const other = await rules.space(FUNCTIONS);
    for (const tool of ['start_agent', 'stop_agent', 'list_agent_runs']) {
      const error = errorOf(await callError(other.create, tool, { name: 'private' }));
      assert.equal(error.type, 'not_found', tool);
    }
    const owned = await callOk(owner.create, 'describe_agent', { name: 'private' });
    assert.equal(owned.status, 'stopped', 'nothing was started by the other account');
  });
});

describe('the dispatcher: every trigger run goes through src/run as the agent', () => {
  test('success, a user exception, an unknown function and both languages: each recorded, metered as a run', async () => {
    const s = await rules.space(FUNCTIONS);
    await callOk(s.create, 'make_agent', { name: 'worker' });
    const started = await callOk(s.create, 'start_agent', { name: 'worker' });
    const replica = started.replicas[0].name as string;
    const id = await agentId(s, 'worker');
    const job = (functionName: string, input: unknown) => ({
      agentId: id,
      replica,
      trigger: 'webhook' as const,
      triggerName: 'test-hook',
      functionName,
      input,
      orchestrationMode: 'direct' as const,
    });
    const before = (await rules.usage(s.account)).executions;
    const ok = await runtime().dispatcher.dispatch(job('utils.double', { n: 21 }));
    assert.equal(ok.status, 'succeeded');
    assert.deepEqual(ok.result, { twice: 42 });
    assert.equal(ok.replica, replica);
    const ts = await runtime().dispatcher.dispatch(job('utils.ts-hello', { who: 'agent' }));
    assert.deepEqual(ts.result, { hi: 'agent' });
    const failed = await runtime().dispatcher.dispatch(job('utils.boom', {}));
    assert.equal(failed.status, 'failed');
    assert.equal(failed.error?.type, 'Kaboom');
    // A NUL in a user's message (PostgreSQL text holds none) is stored replaced; the run still ends.
    const nul = await runtime().dispatcher.dispatch(job('utils.nul', {}));
    assert.equal(nul.status, 'failed');
    assert.equal(nul.error?.type, 'ValueError');
    const nulRecord = await callOk(s.create, 'describe_agent_run', { name: 'worker', run_id: nul.runId });
    assert.equal(nulRecord.status, 'failed');
    assert.match(nulRecord.error, /before\uFFFDafter/);
    await database().deleteFrom('agent_runs').where('id', '=', nul.runId).execute();
    // A bad function name is this run's recorded failure, not a refusal before any record.
    const nameless = await runtime().dispatcher.dispatch(job('nodot', {}));
    assert.equal(nameless.status, 'failed');
    assert.equal(nameless.error?.type, 'validation_error');
    assert.equal((await callOk(s.create, 'describe_agent_run', { name: 'worker', run_id: nameless.runId })).status, 'failed');
    await database().deleteFrom('agent_runs').where('id', '=', nameless.runId).execute();
    // A run id already taken is a typed conflict (no table or constraint named).
    const taken = await runtime()
      .dispatcher.dispatch({ ...job('utils.double', { n: 1 }), runId: ok.runId })
      .then(
        () => assert.fail('a taken run id must be refused'),
        (error: unknown) => error as { type?: string; message: string },
      );
    assert.equal(taken.type, 'conflict');
    assert.doesNotMatch(taken.message, /agent_runs|constraint|duplicate key/);
    const unknown = await runtime().dispatcher.dispatch(job('utils.nope', {}));
    assert.equal(unknown.status, 'failed');
    assert.equal(unknown.error?.type, 'not_found');
    // Four runs reached a sandbox and count, as run-endpoint calls do (the failed ones too: their code ran).
    assert.equal((await rules.usage(s.account)).executions, before + 4);

    const listed = await callOk(s.create, 'list_agent_runs', { name: 'worker' });
    assert.deepEqual(
      listed.runs.map((r: { run_id: string }) => r.run_id),
      [unknown.runId, failed.runId, ts.runId, ok.runId],
    );
    const first = listed.runs[3];
    assert.equal(first.trigger, 'webhook');
    assert.equal(first.trigger_name, 'test-hook');
    assert.equal(first.replica, replica);
    assert.equal(first.function_name, 'utils.double');
    assert.equal(first.status, 'succeeded');
    assert.ok(first.finished_at && typeof first.duration_ms === 'number');
    const described = await callOk(s.create, 'describe_agent_run', { name: 'worker', run_id: failed.runId });
    assert.equal(described.status, 'failed');
    assert.equal(described.error_type, 'Kaboom');
    assert.equal(described.calls.length, 1);
    const executionId = described.calls[0].execution_id as string;
    // The execution the run made is the account's record, started by the agent's trigger.
    const execution = await callOk(s.create, 'describe_execution', { id: executionId });
    assert.equal(execution.id ?? execution.execution_id ?? executionId, executionId);
    assert.equal(execution.trigger, 'webhook');

    // Filters and pages.
    const failures = await callOk(s.create, 'list_agent_runs', { name: 'worker', status: 'failed' });
    assert.deepEqual(
      failures.runs.map((r: { run_id: string }) => r.run_id),
      [unknown.runId, failed.runId],
    );
    const page1 = await callOk(s.create, 'list_agent_runs', { name: 'worker', limit: 3 });
    assert.equal(page1.runs.length, 3);
    const page2 = await callOk(s.create, 'list_agent_runs', { name: 'worker', limit: 3, before: page1.next_before });
    assert.deepEqual(
      page2.runs.map((r: { run_id: string }) => r.run_id),
      [ok.runId],
    );
    assert.equal(page2.next_before, undefined);
    const badCursor = errorOf(await callError(s.create, 'list_agent_runs', { name: 'worker', before: 'not-a-cursor' }));
    assert.equal(badCursor.type, 'validation_error');
    const missing = errorOf(await callError(s.create, 'describe_agent_run', { name: 'worker', run_id: 'no-such-run' }));
    assert.equal(missing.type, 'not_found');
    const recent = await callOk(s.create, 'describe_agent', { name: 'worker' });
    assert.equal(recent.recent_runs[0].run_id, unknown.runId);
  });

  test("a run refused by the account's quota is recorded as rejected and not counted", async () => {
    const s = await rules.space(FUNCTIONS, 'one');
    await callOk(s.create, 'make_agent', { name: 'thrifty' });
    const replica = (await callOk(s.create, 'start_agent', { name: 'thrifty' })).replicas[0].name as string;
    const id = await agentId(s, 'thrifty');
    const job = {
      agentId: id,
      replica,
      trigger: 'schedule' as const,
      triggerName: 'tick',
      functionName: 'utils.double',
      input: { n: 1 },
      orchestrationMode: 'direct' as const,
    };
    assert.equal((await runtime().dispatcher.dispatch(job)).status, 'succeeded');
    const refused = await runtime().dispatcher.dispatch(job);
    assert.equal(refused.status, 'rejected');
    assert.equal(refused.error?.type, 'QUOTA_EXCEEDED');
    assert.equal((await rules.usage(s.account)).executions, 1);
    const listed = await callOk(s.create, 'list_agent_runs', { name: 'thrifty', trigger: 'schedule' });
    assert.deepEqual(
      listed.runs.map((r: { status: string }) => r.status),
      ['rejected', 'succeeded'],
    );
  });

  test('a replica process killed during a run: the run ends failed with ReplicaCrashed; the replica comes back with its name', async () => {
    const s = await rules.space(FUNCTIONS);
    await callOk(s.create, 'make_agent', { name: 'fragile' });
    const replica = (await callOk(s.create, 'start_agent', { name: 'fragile' })).replicas[0].name as string;
    const id = await agentId(s, 'fragile');
    const supervisor = server.server.services.replicas;
    const pid = supervisor.pidOf(id, replica)!;
    assert.ok(pid > 0, 'the replica runs as its own process');
    const { runId, done } = runtime().dispatcher.start({
      agentId: id,
      replica,
      trigger: 'schedule',
      triggerName: 'tick',
      functionName: 'utils.nap',
      input: { s: 3 },
      orchestrationMode: 'direct',
    });
    // Once the run is recorded running, its replica's process dies.
    for (let i = 0; i < 600; i++) {
      const runs = (await callOk(s.create, 'list_agent_runs', { name: 'fragile' })).runs;
      if (runs.some((r: { run_id: string; status: string }) => r.run_id === runId && r.status === 'running')) break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    process.kill(pid, 'SIGKILL');
    const outcome = await done;
    assert.equal(outcome.status, 'failed');
    assert.equal(outcome.error?.type, 'ReplicaCrashed');
    const described = await callOk(s.create, 'describe_agent_run', { name: 'fragile', run_id: runId });
    assert.equal(described.error_type, 'ReplicaCrashed');
    assert.equal(described.replica, replica);
    let back: { name: string; status: string; restarts: number } | undefined;
    for (let i = 0; i < 600 && !(back?.restarts === 1 && back.status === 'running'); i++) {
      back = (await callOk(s.create, 'describe_agent', { name: 'fragile' })).replicas[0];
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    assert.deepEqual([back?.name, back?.status, back?.restarts], [replica, 'running', 1]);
    assert.notEqual(supervisor.pidOf(id, replica), pid);
  });

  test('start answers the run id before the run ends; a run left running by a dead server is ended at start', async () => {
    const s = await rules.space(FUNCTIONS);
    await callOk(s.create, 'make_agent', { name: 'async' });
    const replica = (await callOk(s.create, 'start_agent', { name: 'async' })).replicas[0].name as string;
    const id = await agentId(s, 'async');
    const { runId, done } = runtime().dispatcher.start({
      agentId: id,
      replica,
      trigger: 'webhook',
      triggerName: 'h',
      functionName: 'utils.double',
      input: { n: 2 },
      orchestrationMode: 'direct',
      runId: 'preassigned-run-id',
    });
    assert.equal(runId, 'preassigned-run-id');
    assert.equal((await done).runId, runId);
    // A row a killed node left `running` (its node is no live server instance) is ended as interrupted;
    // one of this live node's running runs is not.
    const live = await database().selectFrom('server_instances').select('id').executeTakeFirstOrThrow();
    const row = (id: string, node: string) => ({
      id,
      agent_id: agentIdOf,
      account_id: s.account.accountId,
      replica,
      node_id: node,
      trigger: 'schedule',
      trigger_name: 'tick',
      trigger_ref: null,
      orchestration_mode: 'direct',
      function_name: 'utils.double',
      calls: '[]',
      status: 'running',
      error_type: null,
      error_message: null,
      started_at: new Date(Date.now() - 5000),
      finished_at: null,
      duration_ms: null,
    });
    const agentIdOf = id;
    await database()
      .insertInto('agent_runs')
      .values([row('orphan-run', 'a-node-that-died'), row('live-run', live.id)])
      .execute();
    await runtime().endOrphans();
    const orphan = await callOk(s.create, 'describe_agent_run', { name: 'async', run_id: 'orphan-run' });
    assert.equal(orphan.status, 'failed');
    assert.equal(orphan.error_type, 'interrupted');
    const running = await callOk(s.create, 'describe_agent_run', { name: 'async', run_id: 'live-run' });
    assert.equal(running.status, 'running', "a live node's running run is untouched");
  });

  test("ended runs past the plan's retention are pruned (every batch; an unknown plan by the default's), running and recent ones kept", async () => {
    const s = await rules.space(FUNCTIONS);
    await callOk(s.create, 'make_agent', { name: 'old' });
    const id = await agentId(s, 'old');
    const at = (daysAgo: number) => new Date(Date.now() - daysAgo * 86_400_000);
    const row = (runId: string, status: string, started: Date) => ({
      id: runId,
      agent_id: id,
      account_id: s.account.accountId,
      replica: null,
      node_id: null,
      trigger: 'schedule',
      trigger_name: 'tick',
      trigger_ref: null,
      orchestration_mode: 'direct',
      function_name: 'utils.double',
      calls: '[]',
      status,
      error_type: null,
      error_message: null,
      started_at: started,
      finished_at: status === 'running' ? null : started,
      duration_ms: null,
    });
    await database()
      .insertInto('agent_runs')
      .values([row('old-1', 'succeeded', at(40)), row('old-2', 'failed', at(31)), row('young', 'succeeded', at(29))])
      .execute();
    const ids = async () =>
      (await database().selectFrom('agent_runs').select('id').where('agent_id', '=', id).orderBy('id').execute()).map((r) => r.id);
    // pro_trial keeps 30 days: the two older ones go.
    await runtime().prune();
    assert.deepEqual(await ids(), ['young']);
    // A plan the operator removed from the table is pruned by the default plan's retention.
    await database().updateTable('accounts').set({ tier: 'gone-plan' }).where('id', '=', s.account.accountId).execute();
    await database()
      .insertInto('agent_runs')
      .values(row('old-3', 'succeeded', at(45)))
      .execute();
    await runtime().prune();
    assert.deepEqual(await ids(), ['young']);
  });
});
