import { randomUUID } from 'node:crypto';
import { sql, type Kysely, type Transaction } from 'kysely';
import type { Db } from './database.js';
import type { AgentRow, Database } from './schema.js';

export type Trx = Transaction<Database>;
type Exec = Kysely<Database>;

export interface AgentSummary {
  name: string;
  description: string;
  status: string;
  desired_replicas: number;
  state_keys: number;
  state_bytes: number;
  created_at: Date;
}

export interface StateRow {
  key: string;
  value: string;
  version: number;
  size_bytes: number;
  updated_at: Date;
}

export interface NewAgent {
  namespaceId: string;
  name: string;
  description: string;
  desiredReplicas: number;
  config: Record<string, unknown>;
  /** 'stopped', or 'cloning' while clone_agent copies its state in. */
  status?: string;
}

/** Queries for agents and their state. State values arrive and leave sealed (services/state-cipher.ts). */
export class AgentsStore {
  constructor(private readonly db: Db) {}

  /**
   * Runs `work` holding the account row, the lock admission and the catalog's storage limits take
   * first too: agent slots are counted and taken under it, so two parallel makes cannot both pass.
   */
  withAccountLock<T>(accountId: string, work: (trx: Trx) => Promise<T>): Promise<T> {
    return this.db.transaction().execute(async (trx) => {
      await trx.selectFrom('accounts').select('id').where('id', '=', accountId).forUpdate().executeTakeFirst();
      return work(trx);
    });
  }

  /**
   * Runs `work` holding the agent's row (undefined when it is gone): every state change of one
   * agent goes through it, so compare-and-swap and the per-agent cap see each other's writes.
   */
  withAgentLock<T>(agentId: string, work: (trx: Trx, agent: AgentRow | undefined) => Promise<T>): Promise<T> {
    return this.db.transaction().execute(async (trx) => {
      const agent = await trx.selectFrom('agents').selectAll().where('id', '=', agentId).forUpdate().executeTakeFirst();
      return work(trx, agent);
    });
  }

  /** What running one of the agent's triggers needs: the agent, its namespace's name, its account and plan. */
  async agentContext(agentId: string): Promise<{ agent: AgentRow; namespace: string; accountId: string; tier: string } | undefined> {
    const agent = await this.db.selectFrom('agents').selectAll().where('id', '=', agentId).executeTakeFirst();
    if (!agent) return undefined;
    const owner = await this.db
      .selectFrom('namespaces as n')
      .innerJoin('accounts as a', 'a.id', 'n.account_id')
      .select(['n.name as namespace', 'a.id as accountId', 'a.tier as tier'])
      .where('n.id', '=', agent.namespace_id)
      .executeTakeFirst();
    return owner ? { agent, ...owner } : undefined;
  }

  /** Agent slots the account uses: one per desired replica; an agent scaled to 0 takes none (core/agents.ts agentSlots). */
  async slotsInUse(accountId: string, exec: Exec = this.db): Promise<number> {
    const row = await sql<{ slots: string | number }>`
      SELECT coalesce(sum(a.desired_replicas), 0) AS slots
      FROM agents a JOIN namespaces n ON n.id = a.namespace_id WHERE n.account_id = ${accountId}`.execute(exec);
    return Number(row.rows[0]?.slots ?? 0);
  }

  /** The new agent, or undefined when the namespace already has one of that name. */
  createAgent(agent: NewAgent, exec: Exec, stateBytes = 0): Promise<AgentRow | undefined> {
    return exec
      .insertInto('agents')
      .values({
        id: randomUUID(),
        namespace_id: agent.namespaceId,
        name: agent.name,
        description: agent.description,
        desired_replicas: agent.desiredReplicas,
        status: agent.status ?? 'stopped',
        config: JSON.stringify(agent.config),
        state_bytes: stateBytes,
      })
      .onConflict((oc) => oc.doNothing())
      .returningAll()
      .executeTakeFirst();
  }

  findAgent(namespaceId: string, name: string, exec: Exec = this.db): Promise<AgentRow | undefined> {
    return exec.selectFrom('agents').selectAll().where('namespace_id', '=', namespaceId).where('name', '=', name).executeTakeFirst();
  }

  async agentNames(namespaceId: string): Promise<string[]> {
    return (await this.db.selectFrom('agents').select('name').where('namespace_id', '=', namespaceId).orderBy('name').execute()).map(
      (r) => r.name,
    );
  }

  async listAgents(namespaceId: string): Promise<AgentSummary[]> {
    const rows = await this.summaries().where('a.namespace_id', '=', namespaceId).orderBy('a.name').execute();
    return rows.map(summaryOf);
  }

  /** Every agent of an account's namespaces, each naming its namespace, in one query (the dashboard's list). */
  async listAccountAgents(accountId: string): Promise<Array<AgentSummary & { namespace: string }>> {
    const rows = await this.summaries()
      .innerJoin('namespaces as n', 'n.id', 'a.namespace_id')
      .select('n.name as namespace')
      .where('n.account_id', '=', accountId)
      .orderBy('n.name')
      .orderBy('a.name')
      .execute();
    return rows.map((r) => ({ ...summaryOf(r), namespace: r.namespace }));
  }

  /** An agent's summary columns with its state key count. */
  private summaries() {
    return this.db
      .selectFrom('agents as a')
      .select(['a.name', 'a.description', 'a.status', 'a.desired_replicas', 'a.state_bytes', 'a.created_at'])
      .select((eb) =>
        eb
          .selectFrom('agent_state as s')
          .select(sql<number>`count(*)::int`.as('n'))
          .whereRef('s.agent_id', '=', 'a.id')
          .as('state_keys'),
      );
  }

  async stateKeyCount(agentId: string): Promise<number> {
    const row = await this.db
      .selectFrom('agent_state')
      .select(sql<number>`count(*)::int`.as('n'))
      .where('agent_id', '=', agentId)
      .executeTakeFirstOrThrow();
    return Number(row.n);
  }

  /** Deletes the agent (its state goes with it); the number of state keys it had. */
  async deleteAgent(agentId: string): Promise<number | undefined> {
    return this.db.transaction().execute(async (trx) => {
      const agent = await trx.selectFrom('agents').select('id').where('id', '=', agentId).forUpdate().executeTakeFirst();
      if (!agent) return undefined;
      const keys = await trx
        .selectFrom('agent_state')
        .select(sql<number>`count(*)::int`.as('n'))
        .where('agent_id', '=', agentId)
        .executeTakeFirstOrThrow();
      await trx.deleteFrom('agents').where('id', '=', agentId).execute();
      return Number(keys.n);
    });
  }

  getState(agentId: string, key: string, exec: Exec = this.db): Promise<StateRow | undefined> {
    return exec
      .selectFrom('agent_state')
      .select(['key', 'value', 'version', 'size_bytes', 'updated_at'])
      .where('agent_id', '=', agentId)
      .where('key', '=', key)
      .executeTakeFirst();
  }

  /** Keys in order, after `after`, at most `limit` (values stay sealed and unread). */
  listStateKeys(agentId: string, options: { after?: string; prefix?: string; limit: number }): Promise<Array<Omit<StateRow, 'value'>>> {
    let query = this.db.selectFrom('agent_state').select(['key', 'version', 'size_bytes', 'updated_at']).where('agent_id', '=', agentId);
    if (options.after !== undefined) query = query.where('key', '>', options.after);
    // A prefix is matched as a prefix, never as a LIKE pattern; left() counts characters (code points).
    if (options.prefix) query = query.where(sql<boolean>`left(key, ${[...options.prefix].length}) = ${options.prefix}`);
    return query.orderBy('key').limit(options.limit).execute();
  }

  /** Writes one key (call holding the agent's lock) and moves the agent's state total by the difference. */
  async putState(
    trx: Trx,
    agentId: string,
    row: { key: string; value: string; version: number; size: number },
    previousSize: number,
  ): Promise<number> {
    await trx
      .insertInto('agent_state')
      .values({ agent_id: agentId, key: row.key, value: row.value, version: row.version, size_bytes: row.size })
      .onConflict((oc) =>
        oc
          .columns(['agent_id', 'key'])
          .doUpdateSet({ value: row.value, version: row.version, size_bytes: row.size, updated_at: sql`now()` }),
      )
      .execute();
    return this.addStateBytes(trx, agentId, row.size - previousSize);
  }

  /** Deletes one key (call holding the agent's lock); the agent's new state total. */
  async removeState(trx: Trx, agentId: string, key: string, size: number): Promise<number> {
    await trx.deleteFrom('agent_state').where('agent_id', '=', agentId).where('key', '=', key).execute();
    return this.addStateBytes(trx, agentId, -size);
  }

  private async addStateBytes(trx: Trx, agentId: string, delta: number): Promise<number> {
    const row = await trx
      .updateTable('agents')
      .set({ state_bytes: sql`state_bytes + ${delta}`, updated_at: sql`now()` })
      .where('id', '=', agentId)
      .returning('state_bytes')
      .executeTakeFirstOrThrow();
    return Number(row.state_bytes);
  }

  /** The agent's row by its id (no lock): what a run of the agent reads its state through. */
  agentById(agentId: string): Promise<AgentRow | undefined> {
    return this.db.selectFrom('agents').selectAll().where('id', '=', agentId).executeTakeFirst();
  }

  /** The agent's row under a share lock (writes to its state wait; readers and other sharers do not). */
  agentForShare(agentId: string, trx: Trx): Promise<AgentRow | undefined> {
    return trx.selectFrom('agents').selectAll().where('id', '=', agentId).forShare().executeTakeFirst();
  }

  /** Keys and sizes (no values) in key order after `after`, at most `limit`: clone_agent sizes its pages with them. */
  stateSizes(agentId: string, after: string | undefined, limit: number, exec: Exec): Promise<Array<{ key: string; size_bytes: number }>> {
    let query = exec.selectFrom('agent_state').select(['key', 'size_bytes']).where('agent_id', '=', agentId);
    if (after !== undefined) query = query.where('key', '>', after);
    return query.orderBy('key').limit(limit).execute();
  }

  /** The rows with `after` < key ≤ `last`, in key order, values sealed. */
  stateRange(agentId: string, after: string | undefined, last: string, exec: Exec): Promise<StateRow[]> {
    let query = exec
      .selectFrom('agent_state')
      .select(['key', 'value', 'version', 'size_bytes', 'updated_at'])
      .where('agent_id', '=', agentId)
      .where('key', '<=', last);
    if (after !== undefined) query = query.where('key', '>', after);
    return query.orderBy('key').execute();
  }

  /** Adds new keys (call holding the agent's lock); the agent's new state total. */
  async insertStateRows(
    trx: Trx,
    agentId: string,
    rows: Array<{ key: string; value: string; version: number; size: number }>,
  ): Promise<number> {
    await trx
      .insertInto('agent_state')
      .values(rows.map((r) => ({ agent_id: agentId, key: r.key, value: r.value, version: r.version, size_bytes: r.size })))
      .execute();
    return this.addStateBytes(
      trx,
      agentId,
      rows.reduce((sum, r) => sum + r.size, 0),
    );
  }

  async setStatus(trx: Trx, agentId: string, status: string): Promise<void> {
    await trx
      .updateTable('agents')
      .set({ status, updated_at: sql`now()` })
      .where('id', '=', agentId)
      .execute();
  }

  /** Replaces the agent's config (AI settings, orchestration limits): under its row lock, so two edits do not lose one another. */
  async setConfig(trx: Trx, agentId: string, config: Record<string, unknown>): Promise<void> {
    await trx
      .updateTable('agents')
      .set({ config: JSON.stringify(config), updated_at: sql`now()` })
      .where('id', '=', agentId)
      .execute();
  }
}

function summaryOf<R extends { state_keys: number | null; state_bytes: number | string | bigint }>(r: R) {
  return { ...r, state_keys: Number(r.state_keys ?? 0), state_bytes: Number(r.state_bytes) };
}
