/**
 * Queries for agent replicas (agent_replicas): their rows as start/stop/scale leave them, and the
 * leases by which exactly one server process (node) holds each running replica. Leases are set and
 * compared on the database's clock; claims take rows with FOR UPDATE SKIP LOCKED, so two nodes
 * claiming at once never take the same replica.
 */
import { randomUUID } from 'node:crypto';
import { sql, type Kysely } from 'kysely';
import type { Db } from './database.js';
import type { Database } from './schema.js';

type Exec = Kysely<Database>;

export interface ReplicaRow {
  id: string;
  agent_id: string;
  name: string;
  seq: number;
  status: string;
  node_id: string | null;
  lease_expires_at: Date | null;
  started_at: Date | null;
  restarts: number;
  last_exit: string | null;
  created_at: Date;
  /** list(): held under a lease that is live on the database's clock (false: unplaced, or its node stopped renewing). */
  leased?: boolean;
}

/** A replica this node holds, with what its process needs: the agent's name and the account's tier (its memory). */
export interface HeldReplica {
  id: string;
  agent_id: string;
  agent_name: string;
  name: string;
  seq: number;
  status: string;
  agent_status: string;
  restarts: number;
  /** The account's tier (claim only): the process's memory and the drain deadline follow it. */
  tier?: string;
}

const leaseFromNow = (leaseMs: number) => sql`now() + make_interval(secs => ${leaseMs / 1000}::float8)`;

const toRow = (r: Record<string, unknown>): ReplicaRow => ({
  ...(r as unknown as ReplicaRow),
  seq: Number(r.seq),
  restarts: Number(r.restarts),
});

export class ReplicasStore {
  constructor(private readonly db: Db) {}

  /** The agent's replicas, oldest first. */
  async list(agentId: string, exec: Exec = this.db): Promise<ReplicaRow[]> {
    const rows = await sql<
      Record<string, unknown>
    >`SELECT *, coalesce(lease_expires_at > now(), false) AS leased FROM agent_replicas WHERE agent_id = ${agentId} ORDER BY seq`.execute(
      exec,
    );
    return rows.rows.map(toRow);
  }

  /** The agent's row, locked for update in `trx` (undefined when it is gone). */
  async lockAgent(
    agentId: string,
    exec: Exec,
  ): Promise<{ id: string; name: string; status: string; desired_replicas: number } | undefined> {
    const rows = await sql<{ id: string; name: string; status: string; desired_replicas: number }>`
      SELECT id, name, status, desired_replicas FROM agents WHERE id = ${agentId} FOR UPDATE`.execute(exec);
    return rows.rows[0];
  }

  /** Sets the agent's status and/or desired replicas (call holding its row lock). */
  async setAgent(agentId: string, change: { status?: string; desired?: number }, exec: Exec): Promise<void> {
    const sets = [
      ...(change.status !== undefined ? [sql`status = ${change.status}`] : []),
      ...(change.desired !== undefined ? [sql`desired_replicas = ${change.desired}`] : []),
      sql`updated_at = now()`,
    ];
    await sql`UPDATE agents SET ${sql.join(sets)} WHERE id = ${agentId}`.execute(exec);
  }

  /** Adds `names` as the agent's newest replicas (call holding the agent's row lock), in that order. */
  async add(agentId: string, names: readonly string[], status: string, exec: Exec): Promise<void> {
    if (names.length === 0) return;
    const top = await sql<{ seq: string | number | null }>`SELECT max(seq) AS seq FROM agent_replicas WHERE agent_id = ${agentId}`.execute(
      exec,
    );
    const first = Number(top.rows[0]?.seq ?? 0) + 1;
    for (const [i, name] of names.entries()) {
      await sql`INSERT INTO agent_replicas (id, agent_id, name, seq, status) VALUES (${randomUUID()}, ${agentId}, ${name}, ${first + i}, ${status})`.execute(
        exec,
      );
    }
  }

  /**
   * Ends the named replicas (all when `names` is undefined) that are not ended already: those no
   * node holds now at once ('stopped', or deleted when `to` is 'removed'); held ones are marked
   * 'stopping' / 'draining' for their node to finish their run and end them.
   */
  async end(agentId: string, names: readonly string[] | undefined, to: 'stopped' | 'removed', exec: Exec): Promise<void> {
    const only = names === undefined ? sql`TRUE` : names.length === 0 ? sql`FALSE` : sql`name IN (${sql.join(names)})`;
    const unheld = sql`(node_id IS NULL OR lease_expires_at IS NULL OR lease_expires_at < now())`;
    if (to === 'removed') {
      await sql`DELETE FROM agent_replicas WHERE agent_id = ${agentId} AND ${only} AND ${unheld}`.execute(exec);
      await sql`UPDATE agent_replicas SET status = 'draining' WHERE agent_id = ${agentId} AND ${only}`.execute(exec);
    } else {
      await sql`UPDATE agent_replicas SET status = 'stopped', node_id = NULL, lease_expires_at = NULL
        WHERE agent_id = ${agentId} AND ${only} AND status NOT IN ('stopped', 'draining') AND ${unheld}`.execute(exec);
      await sql`UPDATE agent_replicas SET status = 'stopping'
        WHERE agent_id = ${agentId} AND ${only} AND status NOT IN ('stopped', 'draining')`.execute(exec);
    }
  }

  /** Wants the named (or all) stopped or stopping replicas running again; returns how many. */
  async wake(agentId: string, names: readonly string[] | undefined, exec: Exec): Promise<number> {
    const only = names === undefined ? sql`TRUE` : names.length === 0 ? sql`FALSE` : sql`name IN (${sql.join(names)})`;
    // One still stopping keeps its process (its node sees it wanted again); a stopped one waits for a node.
    const result = await sql`UPDATE agent_replicas SET status = CASE WHEN status = 'stopping' THEN 'running' ELSE 'pending' END
      WHERE agent_id = ${agentId} AND ${only} AND status IN ('stopped', 'stopping')`.execute(exec);
    return Number(result.numAffectedRows ?? 0);
  }

  /**
   * Claims up to `limit` replicas of running agents that no node holds (never placed, released, or
   * their lease lapsed) for `nodeId`; skips rows another node is claiming at this moment.
   */
  async claim(nodeId: string, leaseMs: number, limit: number): Promise<HeldReplica[]> {
    const result = await sql<Record<string, unknown>>`
      WITH free AS (
        SELECT r.id FROM agent_replicas r JOIN agents a ON a.id = r.agent_id
        WHERE a.status = 'running' AND r.status IN ('pending', 'running', 'crashed')
          AND (r.node_id IS NULL OR r.lease_expires_at IS NULL OR r.lease_expires_at < now())
        ORDER BY r.created_at, r.seq
        LIMIT ${limit}
        FOR UPDATE OF r SKIP LOCKED
      )
      UPDATE agent_replicas r SET node_id = ${nodeId}, lease_expires_at = ${leaseFromNow(leaseMs)}, status = 'pending'
      FROM free, agents a
      WHERE r.id = free.id AND a.id = r.agent_id
      RETURNING r.id, r.agent_id, a.name AS agent_name, r.name, r.seq, r.status, a.status AS agent_status, r.restarts,
        (SELECT ac.tier FROM namespaces n JOIN accounts ac ON ac.id = n.account_id WHERE n.id = a.namespace_id) AS tier`.execute(this.db);
    return result.rows.map((r) => ({ ...(r as unknown as HeldReplica), seq: Number(r.seq), restarts: Number(r.restarts) }));
  }

  /**
   * Renews every lease `nodeId` holds; the rows it still holds, with their agent's status (a row
   * missing from the answer was destroyed or taken over: its process must end).
   */
  async renew(nodeId: string, leaseMs: number): Promise<HeldReplica[]> {
    const result = await sql<Record<string, unknown>>`
      UPDATE agent_replicas r SET lease_expires_at = ${leaseFromNow(leaseMs)}
      FROM agents a
      WHERE a.id = r.agent_id AND r.node_id = ${nodeId}
      RETURNING r.id, r.agent_id, a.name AS agent_name, r.name, r.seq, r.status, a.status AS agent_status, r.restarts`.execute(this.db);
    return result.rows.map((r) => ({ ...(r as unknown as HeldReplica), seq: Number(r.seq), restarts: Number(r.restarts) }));
  }

  /** The process of a replica this node holds is up. False when the node no longer holds it. */
  async markRunning(id: string, nodeId: string): Promise<boolean> {
    const result = await sql`UPDATE agent_replicas SET status = 'running', started_at = now()
      WHERE id = ${id} AND node_id = ${nodeId} AND status IN ('pending', 'crashed')`.execute(this.db);
    return Number(result.numAffectedRows ?? 0) > 0;
  }

  /** Its process crashed: one more restart, why, and 'crashed' while it waits to come back. */
  async recordCrash(id: string, nodeId: string, lastExit: string): Promise<void> {
    await sql`UPDATE agent_replicas SET restarts = restarts + 1, last_exit = ${lastExit},
        status = CASE WHEN status IN ('pending', 'running') THEN 'crashed' ELSE status END
      WHERE id = ${id} AND node_id = ${nodeId}`.execute(this.db);
  }

  /**
   * Its process ended as asked: a 'draining' replica is removed, a 'stopping' one is 'stopped' (no
   * node). Any other status (it was wanted again meanwhile) is handed back to be placed anew.
   */
  async finishEnding(id: string, nodeId: string, lastExit: string): Promise<void> {
    await sql`DELETE FROM agent_replicas WHERE id = ${id} AND node_id = ${nodeId} AND status = 'draining'`.execute(this.db);
    await sql`UPDATE agent_replicas SET node_id = NULL, lease_expires_at = NULL, last_exit = ${lastExit},
        status = CASE WHEN status = 'stopping' THEN 'stopped' ELSE 'pending' END
      WHERE id = ${id} AND node_id = ${nodeId}`.execute(this.db);
  }

  /**
   * Ends what dead nodes left ending: 'stopping' / 'draining' replicas whose lease lapsed (their
   * process ended with their node) become stopped / are removed; so do those of stopped agents.
   */
  async settleOrphans(): Promise<void> {
    const lapsed = sql`(node_id IS NULL OR lease_expires_at IS NULL OR lease_expires_at < now())`;
    await sql`DELETE FROM agent_replicas WHERE status = 'draining' AND ${lapsed}`.execute(this.db);
    await sql`UPDATE agent_replicas SET status = 'stopped', node_id = NULL, lease_expires_at = NULL
      WHERE status = 'stopping' AND ${lapsed}`.execute(this.db);
    await sql`UPDATE agent_replicas r SET status = 'stopped', node_id = NULL, lease_expires_at = NULL
      FROM agents a WHERE a.id = r.agent_id AND a.status <> 'running' AND r.status IN ('pending', 'running', 'crashed') AND ${lapsed}`.execute(
      this.db,
    );
  }

  /** Shutdown: this node lets go of everything it holds, so other nodes take the running ones at once. */
  async releaseAll(nodeId: string): Promise<void> {
    await sql`DELETE FROM agent_replicas WHERE node_id = ${nodeId} AND status = 'draining'`.execute(this.db);
    await sql`UPDATE agent_replicas SET node_id = NULL, lease_expires_at = NULL,
        status = CASE WHEN status = 'stopping' THEN 'stopped' ELSE 'pending' END
      WHERE node_id = ${nodeId}`.execute(this.db);
  }
}
