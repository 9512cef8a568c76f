/**
 * Queries for jobs handed to a replica's home node (migration 27): a node that received a chat turn
 * or a webhook delivery for a replica another node runs writes a row; the node running the replica
 * claims it (FOR UPDATE SKIP LOCKED: one node takes it), renews it while the run goes and writes the
 * outcome. Every change the other side waits for is NOTIFYed on HANDOFF_CHANNEL in the same statement;
 * both sides also poll, so a lost notification only delays. Times are on the database's clock.
 */
import { sql } from 'kysely';
import type { Db } from './database.js';

/** Payloads: `job <agent id> <replica>` (a row to claim), `state <id>` (claimed, began, done), `cancel <id>`. */
export const HANDOFF_CHANNEL = 'mcpworks_handoff';

const fromNow = (ms: number) => sql`now() + make_interval(secs => ${ms / 1000}::float8)`;

export interface HandoffState {
  status: 'pending' | 'claimed' | 'began' | 'done';
  /** Claimed or began: whether its node renewed it within its lease (false: the node is gone). */
  alive: boolean;
  result: string | null;
}

export interface ClaimedHandoff {
  id: string;
  agent_id: string;
  replica: string;
  job: string;
  cancel_requested: boolean;
}

export class HandoffStore {
  constructor(private readonly db: Db) {}

  /**
   * Writes the job for `replica`'s node to claim within `claimMs`, and tells every node. The row goes
   * after `keepMs` whatever happens (a receiving node that died leaves it behind).
   */
  async offer(row: { id: string; agentId: string; replica: string; job: string; claimMs: number; keepMs: number }): Promise<void> {
    await sql`WITH offered AS (
        INSERT INTO replica_handoffs (id, agent_id, replica, job, claim_until, expires_at)
        VALUES (${row.id}, ${row.agentId}, ${row.replica}, ${row.job}, ${fromNow(row.claimMs)}, ${fromNow(row.keepMs)})
        RETURNING agent_id, replica)
      SELECT pg_notify(${HANDOFF_CHANNEL}, 'job ' || agent_id || ' ' || replica) FROM offered`.execute(this.db);
  }

  /**
   * Claims up to `limit` unclaimed jobs for the replicas this node runs (`held`: agent id and
   * replica name pairs whose lease row this node holds, live and running), skipping rows another
   * node is claiming now; their senders are told.
   */
  async claim(nodeId: string, held: ReadonlyArray<{ agentId: string; replica: string }>, aliveMs: number, limit: number) {
    if (held.length === 0) return [];
    const pairs = sql.join(held.map((h) => sql`(${h.agentId}, ${h.replica})`));
    const result = await sql<ClaimedHandoff>`WITH free AS (
        SELECT h.id FROM replica_handoffs h
        WHERE h.status = 'pending' AND h.claim_until > now()
          AND (h.agent_id, h.replica) IN (${pairs})
          -- The lease row decides, not the node's process list: a replica moved or stopping elsewhere is not claimed here.
          AND EXISTS (SELECT 1 FROM agent_replicas r WHERE r.agent_id = h.agent_id AND r.name = h.replica
            AND r.node_id = ${nodeId} AND r.lease_expires_at > now() AND r.status = 'running')
        ORDER BY h.created_at
        LIMIT ${limit}
        FOR UPDATE SKIP LOCKED
      ), taken AS (
        UPDATE replica_handoffs h SET status = 'claimed', node_id = ${nodeId}, alive_until = ${fromNow(aliveMs)}
        FROM free WHERE h.id = free.id
        RETURNING h.id, h.agent_id, h.replica, h.job, h.cancel_requested
      )
      SELECT taken.*, pg_notify(${HANDOFF_CHANNEL}, 'state ' || taken.id) FROM taken`.execute(this.db);
    return result.rows.map(({ id, agent_id, replica, job, cancel_requested }) => ({ id, agent_id, replica, job, cancel_requested }));
  }

  /** The claiming node's replica took the job (its run began); its sender is told. */
  async began(id: string, nodeId: string): Promise<void> {
    await sql`WITH b AS (UPDATE replica_handoffs SET status = 'began' WHERE id = ${id} AND node_id = ${nodeId} AND status = 'claimed' RETURNING id)
      SELECT pg_notify(${HANDOFF_CHANNEL}, 'state ' || id) FROM b`.execute(this.db);
  }

  /** Keeps the claim alive while the run goes; answers whether its sender asked for a cancel (undefined: the row is gone). */
  async renew(id: string, nodeId: string, aliveMs: number): Promise<boolean | undefined> {
    const rows = await sql<{ cancel_requested: boolean }>`UPDATE replica_handoffs SET alive_until = ${fromNow(aliveMs)}
      WHERE id = ${id} AND node_id = ${nodeId} AND status IN ('claimed', 'began') RETURNING cancel_requested`.execute(this.db);
    return rows.rows[0]?.cancel_requested;
  }

  /** The run ended: its sealed outcome (or refusal) for the sender, who is told. */
  async finish(id: string, nodeId: string, result: string): Promise<void> {
    await sql`WITH f AS (UPDATE replica_handoffs SET status = 'done', result = ${result}
        WHERE id = ${id} AND node_id = ${nodeId} AND status IN ('claimed', 'began') RETURNING id)
      SELECT pg_notify(${HANDOFF_CHANNEL}, 'state ' || id) FROM f`.execute(this.db);
  }

  /** The row as its sender reads it (undefined: gone, with its agent or past its keep). */
  async state(id: string): Promise<HandoffState | undefined> {
    const rows = await sql<{ status: HandoffState['status']; alive: boolean | null; result: string | null }>`
      SELECT status, alive_until > now() AS alive, result FROM replica_handoffs WHERE id = ${id}`.execute(this.db);
    const row = rows.rows[0];
    return row ? { status: row.status, alive: row.alive === true, result: row.result } : undefined;
  }

  /** The sender gives up on a job no node claimed yet: true when it was still unclaimed (now gone, never to run). */
  async withdraw(id: string): Promise<boolean> {
    const result = await sql`DELETE FROM replica_handoffs WHERE id = ${id} AND status = 'pending'`.execute(this.db);
    return Number(result.numAffectedRows ?? 0) > 0;
  }

  /** The sender's caller cancelled: the claiming node is told (and reads the mark as it renews). */
  async cancel(id: string): Promise<void> {
    await sql`WITH c AS (UPDATE replica_handoffs SET cancel_requested = true WHERE id = ${id} RETURNING id)
      SELECT pg_notify(${HANDOFF_CHANNEL}, 'cancel ' || id) FROM c`.execute(this.db);
  }

  /** The sender read the outcome (or gave up on a lost node): the row goes. */
  async remove(id: string): Promise<void> {
    await sql`DELETE FROM replica_handoffs WHERE id = ${id}`.execute(this.db);
  }

  /** Rows past their keep (their sender died before reading them). */
  async sweep(): Promise<number> {
    const result = await sql`DELETE FROM replica_handoffs WHERE expires_at < now()`.execute(this.db);
    return Number(result.numAffectedRows ?? 0);
  }
}
