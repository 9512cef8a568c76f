import { randomUUID } from 'node:crypto';
import { sql, type Kysely } from 'kysely';
import type { Db } from './database.js';
import type { AgentReplicaRow, Database } from './schema.js';

type Exec = Kysely<Database>;

/** Replica rows of agents (migration 18): names for life, creation order, which node holds each. */
export class ReplicasStore {
  constructor(private readonly db: Db) {}

  list(agentId: string, exec: Exec = this.db): Promise<AgentReplicaRow[]> {
    return exec.selectFrom('agent_replicas').selectAll().where('agent_id', '=', agentId).orderBy('seq').execute();
  }

  /** Adds replica rows `names` after the agent's newest (seq continues from the newest row's: LIFO order). */
  async add(
    exec: Exec,
    agentId: string,
    names: readonly string[],
    fields: { status: string; nodeId: string | null; now: Date },
  ): Promise<void> {
    if (names.length === 0) return;
    const top = await exec
      .selectFrom('agent_replicas')
      .select(sql<string | number | null>`max(seq)`.as('seq'))
      .where('agent_id', '=', agentId)
      .executeTakeFirst();
    const base = Number(top?.seq ?? 0);
    await exec
      .insertInto('agent_replicas')
      .values(
        names.map((name, i) => ({
          id: randomUUID(),
          agent_id: agentId,
          name,
          seq: base + i + 1,
          status: fields.status,
          node_id: fields.nodeId,
          lease_expires_at: null,
          started_at: fields.status === 'running' ? fields.now : null,
          restarts: 0,
          last_exit: null,
        })),
      )
      .execute();
  }

  async setStatus(
    exec: Exec,
    agentId: string,
    names: readonly string[] | null,
    fields: { status: string; nodeId: string | null; now: Date },
  ): Promise<void> {
    let query = exec
      .updateTable('agent_replicas')
      .set({
        status: fields.status,
        node_id: fields.nodeId,
        started_at: fields.status === 'running' ? fields.now : null,
      })
      .where('agent_id', '=', agentId);
    if (names) query = query.where('name', 'in', names.length > 0 ? names : ['']);
    await query.execute();
  }

  async remove(exec: Exec, agentId: string, names: readonly string[]): Promise<void> {
    if (names.length === 0) return;
    await exec.deleteFrom('agent_replicas').where('agent_id', '=', agentId).where('name', 'in', names).execute();
  }

  /** Names of the agent's running replicas that `nodeId` holds, oldest first. */
  async localRunning(agentId: string, nodeId: string): Promise<string[]> {
    const rows = await this.db
      .selectFrom('agent_replicas')
      .select('name')
      .where('agent_id', '=', agentId)
      .where('status', '=', 'running')
      .where('node_id', '=', nodeId)
      .orderBy('seq')
      .execute();
    return rows.map((r) => r.name);
  }
}
