// test-database: postgres, the hand-over's guards are row-level SQL on the shared database every node uses
/**
 * The hand-over's store guards (store/handoff-store.ts) on their own: only the node holding a
 * replica's lease row (live, running) claims its jobs, a claimed job is no longer withdrawn, the
 * time to claim bounds a claim, and only the claiming node renews or finishes it.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { sql } from 'kysely';
import { freshDatabaseUrl, seedEmbeddedDatabase, testDataRoot } from '../test-support/harness.js';
import { AccountsStore } from './accounts-store.js';
import { AgentsStore } from './agents-store.js';
import { CatalogStore } from './catalog-store.js';
import { openDatabase, type OpenDatabase } from './database.js';
import { HandoffStore } from './handoff-store.js';

let database: OpenDatabase;
let dataDir: string;
let store: HandoffStore;
let agentId: string;
const HOME = 'node-home';
const OTHER = 'node-other';

before(async () => {
  dataDir = mkdtempSync(path.join(testDataRoot(), 'mcpworks-handoff-'));
  const databaseUrl = await freshDatabaseUrl();
  if (!databaseUrl) await seedEmbeddedDatabase(dataDir);
  database = await openDatabase({ databaseUrl, dataDir });
  store = new HandoffStore(database.db);
  const account = await new AccountsStore(database.db).createAccount({
    email: `h-${randomUUID()}@example.com`,
    passwordHash: 'x',
    tier: 'pro',
    trialEndsAt: null,
  });
  assert.ok(account);
  const ns = await new CatalogStore(database.db).createNamespace(account.id, `ns-${randomUUID().slice(0, 8)}`, '');
  assert.ok(ns);
  const agent = await new AgentsStore(database.db).createAgent(
    { namespaceId: ns.id, name: 'homed', description: '', desiredReplicas: 1, config: {} },
    database.db,
  );
  assert.ok(agent);
  agentId = agent.id;
});

after(async () => {
  await database?.close();
  rmSync(dataDir, { recursive: true, force: true });
});

let seq = 0;
/** A replica's lease row: held by `node` for `leaseMs` from now (negative: lapsed), in `status`. */
async function replica(node: string, leaseMs: number, status = 'running'): Promise<string> {
  const name = `r-${randomUUID().slice(0, 8)}`;
  await sql`INSERT INTO agent_replicas (id, agent_id, name, seq, status, node_id, lease_expires_at)
    VALUES (${randomUUID()}, ${agentId}, ${name}, ${++seq}, ${status}, ${node},
      now() + make_interval(secs => ${leaseMs / 1000}::float8))`.execute(database.db);
  return name;
}

async function offer(name: string, claimMs = 60_000): Promise<string> {
  const id = randomUUID();
  await store.offer({ id, agentId, replica: name, job: 'sealed', claimMs, keepMs: 600_000 });
  return id;
}

const claim = async (node: string, name: string) => (await store.claim(node, [{ agentId, replica: name }], 5_000, 16)).map((r) => r.id);
const rowOf = async (id: string) =>
  (
    await sql<{
      status: string;
      node_id: string | null;
      result: string | null;
    }>`SELECT status, node_id, result FROM replica_handoffs WHERE id = ${id}`.execute(database.db)
  ).rows[0];

test('only the node holding the replica’s lease row (live, running) claims its jobs', async () => {
  const held = await replica(HOME, 60_000);
  const id = await offer(held);
  assert.deepEqual(await claim(OTHER, held), [], 'another node that believes it runs the replica');
  const lapsed = await replica(HOME, -1_000);
  const lapsedJob = await offer(lapsed);
  assert.deepEqual(await claim(HOME, lapsed), [], 'a lapsed lease');
  const stopping = await replica(HOME, 60_000, 'draining');
  const stoppingJob = await offer(stopping);
  assert.deepEqual(await claim(HOME, stopping), [], 'a replica not running');
  assert.deepEqual(await claim(HOME, held), [id], 'the lease holder');
  assert.equal((await rowOf(lapsedJob))?.status, 'pending');
  assert.equal((await rowOf(stoppingJob))?.status, 'pending');
});

test('a claimed job is no longer withdrawn; an unclaimed one is', async () => {
  const name = await replica(HOME, 60_000);
  const id = await offer(name);
  assert.deepEqual(await claim(HOME, name), [id]);
  assert.equal(await store.withdraw(id), false);
  assert.equal((await rowOf(id))?.status, 'claimed');
  const waiting = await offer(name);
  assert.equal(await store.withdraw(waiting), true);
  assert.equal(await rowOf(waiting), undefined);
});

test('a job past its time to claim is not claimed', async () => {
  const name = await replica(HOME, 60_000);
  const id = await offer(name, 1);
  await sql`UPDATE replica_handoffs SET claim_until = now() - interval '1 second' WHERE id = ${id}`.execute(database.db);
  assert.deepEqual(await claim(HOME, name), []);
  assert.equal((await rowOf(id))?.status, 'pending');
});

test('only the claiming node renews or finishes a claimed job', async () => {
  const name = await replica(HOME, 60_000);
  const id = await offer(name);
  assert.deepEqual(await claim(HOME, name), [id]);
  const aliveUntil = async () =>
    (await sql<{ t: string }>`SELECT alive_until::text AS t FROM replica_handoffs WHERE id = ${id}`.execute(database.db)).rows[0]?.t;
  const before = await aliveUntil();
  assert.equal(await store.renew(id, OTHER, 600_000), undefined, 'another node: as if gone');
  assert.equal(await aliveUntil(), before, 'not renewed');
  await store.finish(id, OTHER, 'forged');
  assert.deepEqual(await rowOf(id), { status: 'claimed', node_id: HOME, result: null }, 'not finished');
  assert.equal(await store.renew(id, HOME, 600_000), false);
  await store.finish(id, HOME, 'sealed outcome');
  assert.deepEqual(await rowOf(id), { status: 'done', node_id: HOME, result: 'sealed outcome' });
  assert.equal(await store.renew(id, HOME, 600_000), undefined, 'a finished job is not renewed');
});
