// test-database: postgres, the handed-over job's row is written, sealed and withdrawn on a shared database
/**
 * The replica router (agents/handoff.ts) on a real server, on what no node takes: a job for a
 * replica no node runs is written sealed, withdrawn once its time to be claimed is over (or at once
 * when its caller cancels), and answered `unavailable` with nothing run and no row left. The
 * hand-over between nodes itself is tested with three nodes in src/cli/cluster.test.ts.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { sql } from 'kysely';
import { callOk, startTestServer, type TestServer } from '../test-support/harness.js';
import { newOwner } from '../test-support/owners.js';
import type { Db } from '../store/database.js';
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

const job = (runId: string, message: string): TriggerJob => ({
  agentId,
  // No node runs a replica of this name: nothing ever claims the job.
  replica: 'ghost-gnu',
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
