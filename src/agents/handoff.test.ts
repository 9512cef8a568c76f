// test-database: postgres, the handed-over job's row is written, sealed and withdrawn on a shared database
/**
 * The replica router (agents/handoff.ts) on a real server, on what no node takes: a job for a
 * replica no node runs is written sealed, withdrawn once its time to be claimed is over (or at once
 * when its caller cancels), and answered `unavailable` with nothing run and no row left. The home
 * node's side (two real nodes) is tested in handoff-home.test.ts, three nodes in src/cli/cluster.test.ts.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { sql } from 'kysely';
import { callOk, startTestServer, type TestServer } from '../test-support/harness.js';
import { newOwner } from '../test-support/owners.js';
import type { Db } from '../store/database.js';
import { WebhooksStore } from '../store/webhooks-store.js';
import { DomainError } from '../core/errors.js';
import type { TriggerJob } from './dispatcher.js';

let server: TestServer;
let db: Db;
let agentId: string;
before(async () => {
  server = await startTestServer();
  db = (server.server.services.accountsStore as unknown as { db: Db }).db;
  const owner = await newOwner(server, 'handoff');
  await callOk(owner.create, 'make_agent', { name: 'faraway' });
  await owner.create.close();
  const rows = await sql<{ id: string }>`SELECT a.id FROM agents a JOIN namespaces n ON n.id = a.namespace_id
    WHERE n.name = ${owner.ns} AND a.name = 'faraway'`.execute(db);
  agentId = rows.rows[0]!.id;
});
after(async () => {
  await server?.stop();
});

// No node runs a replica named ghost-gnu: nothing ever claims its jobs.
const job = (runId: string, message: string, replica = 'ghost-gnu'): TriggerJob => ({
  agentId,
  replica,
  trigger: 'chat',
  triggerName: randomUUID(),
  input: null,
  orchestrationMode: 'reason_first',
  message,
  history: [],
  runId,
});

const rowOf = async (id: string) =>
  (await sql<{ job: string; status: string }>`SELECT job, status FROM replica_handoffs WHERE id = ${id}`.execute(db)).rows[0];
const runsOf = async (id: string) => (await sql`SELECT id FROM agent_runs WHERE id = ${id}`.execute(db)).rows.length;
const unavailable = (pattern: RegExp) => (e: unknown) => e instanceof DomainError && e.type === 'unavailable' && pattern.test(e.message);

describe('jobs for a replica no node takes', () => {
  // Bounded: a job that is never withdrawn would wait forever.
  test(
    'written sealed while they wait; withdrawn once their claim time is over: unavailable (replica_unreachable), nothing ran, no row left',
    { timeout: 30_000 },
    async () => {
      const runId = randomUUID();
      const started = server.server.services.agentRuntime.router.start(job(runId, 'the words of a private chat'), { claimMs: 400 });
      started.done.catch(() => undefined);
      let seen = await rowOf(runId);
      while (!seen) {
        await new Promise((resolve) => setTimeout(resolve, 10));
        seen = await rowOf(runId);
      }
      assert.equal(seen.status, 'pending');
      assert.ok(!seen.job.includes('private chat'), 'the job is sealed at rest');
      await assert.rejects(started.began, unavailable(/replica 'ghost-gnu' did not take the job/));
      await assert.rejects(
        started.done,
        (e: unknown) => unavailable(/nothing ran/)(e) && (e as DomainError).details?.reason === 'replica_unreachable',
      );
      assert.equal(await rowOf(runId), undefined, 'withdrawn');
      assert.equal(await runsOf(runId), 0, 'no run recorded');
    },
  );

  test("its caller's cancel withdraws it at once (long before its claim time)", { timeout: 30_000 }, async () => {
    const runId = randomUUID();
    const abort = new AbortController();
    const started = server.server.services.agentRuntime.router.start(
      { ...job(runId, 'cancel me'), signal: abort.signal },
      { claimMs: 600_000 },
    );
    started.done.catch(() => undefined);
    while (!(await rowOf(runId))) await new Promise((resolve) => setTimeout(resolve, 10));
    abort.abort();
    await assert.rejects(started.done, unavailable(/cancelled before the replica took it; nothing ran/));
    assert.equal(await rowOf(runId), undefined, 'withdrawn');
    assert.equal(await runsOf(runId), 0, 'no run recorded');
  });
});

describe("a keyed webhook delivery refused on its replica's node, its receiving node no longer following", () => {
  test('nothing ran: its key and signature let go there (the retry runs); refused as not its own: its end kept under the key', async () => {
    const owner = await newOwner(server, 'handoff-keyed');
    const create = owner.create;
    await callOk(create, 'make_service', { name: 'hooks' });
    await callOk(create, 'make_function', { service: 'hooks', name: 'echo', code: 'def main(input_data):\n    return input_data\n' });
    for (const name of ['keyed', 'decoy']) await callOk(create, 'make_agent', { name });
    await callOk(create, 'add_webhook', { name: 'keyed', path: 'inbox', handler_function_name: 'hooks.echo' });
    const idOf = async (name: string) =>
      (
        await sql<{ id: string }>`SELECT a.id FROM agents a JOIN namespaces n ON n.id = a.namespace_id
          WHERE n.name = ${owner.ns} AND a.name = ${name}`.execute(db)
      ).rows[0]!.id;
    const [keyedId, decoyId] = [await idOf('keyed'), await idOf('decoy')];
    const replicaOf = async (name: string) => (await callOk(create, 'describe_agent', { name })).replicas[0].name as string;
    // keyed's replica known but not up here (its jobs are handed over); decoy's up here.
    await callOk(create, 'start_agent', { name: 'keyed' });
    await callOk(create, 'stop_agent', { name: 'keyed' });
    await callOk(create, 'start_agent', { name: 'decoy' });
    const [keyedReplica, decoyReplica] = [await replicaOf('keyed'), await replicaOf('decoy')];
    const hooks = new WebhooksStore(db);
    const webhookId = (await hooks.idOf(keyedId, 'inbox'))!;
    const router = server.server.services.agentRuntime.router;
    const supervisor = server.server.services.replicas;
    // What the receiving node wrote before it handed the delivery over and stopped following it
    // (`unkeyed`: a signed delivery without an Idempotency-Key; its name stands in for the signature).
    const deliver = async (key: string, unkeyed = false) => {
      const runId = randomUUID();
      if (!unkeyed) assert.deepEqual(await hooks.claimKey(webhookId, key, runId, 24), { claimed: true });
      const seen = await hooks.rememberSignature(
        webhookId,
        `sha256=${key}`,
        Math.floor(Date.now() / 1000) + 600,
        0,
        runId,
        unkeyed ? undefined : key,
      );
      assert.equal(seen, true);
      const started = router.start(
        {
          agentId: keyedId,
          replica: keyedReplica,
          trigger: 'webhook',
          triggerName: 'inbox',
          triggerRef: unkeyed ? runId : `idempotency:${key}`,
          functionName: 'hooks.echo',
          input: { body: { key } },
          orchestrationMode: 'direct',
          runId,
        },
        { claimMs: 30_000 },
      );
      started.done.catch(() => undefined);
      while (!(await rowOf(runId))) await new Promise((resolve) => setTimeout(resolve, 10));
      return { runId, done: started.done };
    };
    const keyRow = async (key: string) =>
      (
        await sql<{ status: string; outcome_sealed: string | null }>`SELECT status, outcome_sealed FROM agent_webhook_deliveries
          WHERE webhook_id = ${webhookId} AND idempotency_key = ${key}`.execute(db)
      ).rows[0];
    /** The delivery's seen signature: absent, `used`, or `released` (to a delivery with its key only). */
    const signatureOf = async (key: string) =>
      (
        await sql<{ released: boolean }>`SELECT released FROM agent_webhook_signatures WHERE signature = ${`sha256=${key}`}`.execute(db)
      ).rows.map((r) => (r.released ? 'released' : 'used'))[0];

    // Refused before anything ran (the replica went between the claim and the run).
    const realRun = supervisor.run.bind(supervisor);
    supervisor.run = (agentId, replica) =>
      Promise.reject(new DomainError('unavailable', `replica '${replica}' is not running on this server`, { agentId }));
    try {
      const notRun = await deliver('not-run');
      const notRunUnkeyed = await deliver('not-run-unkeyed', true);
      await callOk(create, 'start_agent', { name: 'keyed' });
      await assert.rejects(notRun.done, unavailable(/not running on this server/));
      await assert.rejects(notRunUnkeyed.done, unavailable(/not running on this server/));
    } finally {
      supervisor.run = realRun;
    }
    assert.equal(await keyRow('not-run'), undefined, 'the key let go');
    assert.equal(await signatureOf('not-run'), 'released', 'the signature let go, to a delivery with its key only');
    // The sender's retry with that key takes it (the very same request); a copy without the key does not.
    const expiry = Math.floor(Date.now() / 1000) + 600;
    assert.equal(await hooks.rememberSignature(webhookId, 'sha256=not-run', expiry, 0, randomUUID()), false, 'without its key: a replay');
    assert.equal(
      await hooks.rememberSignature(webhookId, 'sha256=not-run', expiry, 0, randomUUID(), 'other'),
      false,
      'another key: a replay',
    );
    assert.equal(await hooks.rememberSignature(webhookId, 'sha256=not-run', expiry, 0, randomUUID(), 'not-run'), true, 'its key: taken');
    assert.equal(await signatureOf('not-run'), 'used');
    assert.equal(await signatureOf('not-run-unkeyed'), undefined, 'an unkeyed delivery: its signature forgotten');
    await callOk(create, 'stop_agent', { name: 'keyed' });

    // Its row pointed at another agent of the account (written to the database directly): refused there, its end kept.
    const moved = await deliver('moved');
    await sql`UPDATE replica_handoffs SET agent_id = ${decoyId}, replica = ${decoyReplica} WHERE id = ${moved.runId}`.execute(db);
    await assert.rejects(moved.done, (e: unknown) => e instanceof DomainError && e.type === 'forbidden');
    const kept = await keyRow('moved');
    assert.equal(kept?.status, 'failed', JSON.stringify(kept));
    assert.ok(kept?.outcome_sealed, 'the outcome kept (sealed) under the key');
    assert.equal(await signatureOf('moved'), 'used', 'its signature stays used');
    await create.close();
  });
});

describe('the sender when the database fails while it waits', () => {
  test(
    'a failed read is a missed poll; giving up withdraws the unclaimed job: unavailable, nothing ran, no row left',
    { timeout: 30_000 },
    async () => {
      const runId = randomUUID();
      const started = server.server.services.agentRuntime.router.start(job(runId, 'read fails'), { claimMs: 300 });
      started.done.catch(() => undefined);
      while (!(await rowOf(runId))) await new Promise((resolve) => setTimeout(resolve, 10));
      // The sender's read of the row fails (a column it reads is gone); withdrawing it still works.
      await sql`ALTER TABLE replica_handoffs RENAME COLUMN result TO result_away`.execute(db);
      try {
        await assert.rejects(started.done, unavailable(/could not be followed \(database unreachable\); nothing ran/));
      } finally {
        await sql`ALTER TABLE replica_handoffs RENAME COLUMN result_away TO result`.execute(db);
      }
      assert.equal(await rowOf(runId), undefined, 'withdrawn: the home node can no longer claim it');
    },
  );
});

describe('where a job for a replica elsewhere goes', () => {
  test('a running replica under a live lease before an older one whose lease lapsed (its node dead)', async () => {
    const other = await newOwner(server, 'handoff-where');
    await callOk(other.create, 'make_agent', { name: 'spread' });
    await other.create.close();
    const id = (
      await sql<{ id: string }>`SELECT a.id FROM agents a JOIN namespaces n ON n.id = a.namespace_id
        WHERE n.name = ${other.ns} AND a.name = 'spread'`.execute(db)
    ).rows[0]!.id;
    const row = (name: string, seq: number, lease: string) =>
      sql`INSERT INTO agent_replicas (id, agent_id, name, seq, status, node_id, lease_expires_at)
        VALUES (${randomUUID()}, ${id}, ${name}, ${seq}, 'running', 'elsewhere', now() + ${lease}::interval)`.execute(db);
    // Not claimable by this server's own supervisor (which re-places lapsed replicas of running agents only).
    await sql`UPDATE agents SET status = 'stopped' WHERE id = ${id}`.execute(db);
    await row('dead-dodo', 1001, '-1 minute');
    await row('live-lark', 1002, '10 minutes');
    // The server's supervisor settles lapsed replicas of stopped agents on its tick: should it have
    // stopped dead-dodo before the read, the read is made again on the rows as set.
    for (let attempt = 1; ; attempt++) {
      const names = await server.server.services.agentRuntime.replicas.runningElsewhere(id);
      const settled = await sql`SELECT 1 FROM agent_replicas WHERE agent_id = ${id} AND name = 'dead-dodo' AND status <> 'running'`.execute(
        db,
      );
      if (settled.rows.length > 0 && attempt < 5) {
        await sql`UPDATE agent_replicas SET status = 'running', node_id = 'elsewhere', lease_expires_at = now() - interval '1 minute'
          WHERE agent_id = ${id} AND name = 'dead-dodo'`.execute(db);
        continue;
      }
      assert.deepEqual(
        names.filter((n) => n === 'dead-dodo' || n === 'live-lark'),
        ['live-lark', 'dead-dodo'],
      );
      break;
    }
  });
});

describe("this node's own replica", () => {
  test('a job handed over while the replica was still coming up is claimed and run here once it is up (on the embedded database, with no idle claim poll)', async () => {
    const owner = await newOwner(server, 'handoff-own');
    await callOk(owner.create, 'make_agent', { name: 'waking' });
    const id = (
      await sql<{ id: string }>`SELECT a.id FROM agents a JOIN namespaces n ON n.id = a.namespace_id
        WHERE n.name = ${owner.ns} AND a.name = 'waking'`.execute(db)
    ).rows[0]!.id;
    // Started and stopped once: its replica's name is known, and it is not up here.
    await callOk(owner.create, 'start_agent', { name: 'waking' });
    await callOk(owner.create, 'stop_agent', { name: 'waking' });
    const replica = (await callOk(owner.create, 'describe_agent', { name: 'waking' })).replicas[0].name as string;
    const runId = randomUUID();
    const started = server.server.services.agentRuntime.router.start(
      { ...job(runId, 'wake up', replica), agentId: id },
      { claimMs: 30_000 },
    );
    started.done.catch(() => undefined);
    while (!(await rowOf(runId))) await new Promise((resolve) => setTimeout(resolve, 10));
    await callOk(owner.create, 'start_agent', { name: 'waking' });
    // Run by this node's dispatcher (the agent has no AI: its answer), not refused as never taken.
    const outcome = await started.done;
    assert.equal(outcome.status, 'failed', JSON.stringify(outcome));
    assert.equal(outcome.error?.type, 'no_ai', JSON.stringify(outcome));
    assert.equal(await rowOf(runId), undefined, 'its row is gone');
    await owner.create.close();
  });
});
