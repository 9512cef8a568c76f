import { randomUUID } from 'node:crypto';
import { sql, type Kysely, type RawBuilder } from 'kysely';
import type { Db } from './database.js';
import type { AgentScheduleFireRow, AgentScheduleRow, Database } from './schema.js';

type Exec = Kysely<Database>;

export interface NewSchedule {
  agentId: string;
  label: string | null;
  functionName: string;
  cronExpression: string;
  timezone: string;
  config: Record<string, unknown>;
  enabled: boolean;
  nextFireAt: Date | null;
  /** Planning starts after this instant (the schedule's creation). */
  plannedFrom: Date;
}

/** A schedule the loop may plan: enabled, of a running agent. */
export interface ActiveSchedule extends AgentScheduleRow {
  agent_name: string;
}

export interface FireEnd {
  status: 'succeeded' | 'failed';
  reason: string | null;
  runId: string | null;
  runReplica: string | null;
}

export interface StreakUpdate {
  failureStreak: number;
  lastFailedTick: Date | null;
  /** Set: the schedule is turned off with this reason. */
  disabledReason: string | null;
}

/** `r` (agent_replicas) is held by `node` under a live lease and running (of `agent`, named `name`, when given). */
function heldBy(node: string, agent?: RawBuilder<unknown>, name?: string): RawBuilder<unknown> {
  return sql`r.node_id = ${node} AND r.lease_expires_at > now() AND r.status = 'running'${
    agent ? sql` AND r.agent_id = ${agent} AND r.name = ${name}` : sql``
  }`;
}

export const FIRE_INTERRUPTED = 'interrupted: the server running it stopped before the run ended';

/** Queries for agent schedules (migration 19) and their fire rows. */
export class SchedulesStore {
  constructor(private readonly db: Db) {}

  /** The new schedule, or undefined when the agent already has one with that label. */
  createSchedule(s: NewSchedule, exec: Exec = this.db): Promise<AgentScheduleRow | undefined> {
    return exec
      .insertInto('agent_schedules')
      .values({
        id: randomUUID(),
        agent_id: s.agentId,
        label: s.label,
        function_name: s.functionName,
        cron_expression: s.cronExpression,
        timezone: s.timezone,
        config: JSON.stringify(s.config),
        enabled: s.enabled,
        disabled_reason: s.enabled ? null : 'the agent is not started yet',
        next_fire_at: s.nextFireAt,
        last_planned_tick: s.plannedFrom,
      })
      .onConflict((oc) => oc.doNothing())
      .returningAll()
      .executeTakeFirst();
  }

  async countSchedules(agentId: string, exec: Exec = this.db): Promise<number> {
    const row = await exec
      .selectFrom('agent_schedules')
      .select(sql<number>`count(*)::int`.as('n'))
      .where('agent_id', '=', agentId)
      .executeTakeFirstOrThrow();
    return Number(row.n);
  }

  listSchedules(agentId: string): Promise<AgentScheduleRow[]> {
    return this.db.selectFrom('agent_schedules').selectAll().where('agent_id', '=', agentId).orderBy('created_at').orderBy('id').execute();
  }

  findSchedule(agentId: string, id: string): Promise<AgentScheduleRow | undefined> {
    return this.db.selectFrom('agent_schedules').selectAll().where('agent_id', '=', agentId).where('id', '=', id).executeTakeFirst();
  }

  async deleteSchedule(agentId: string, id: string): Promise<boolean> {
    const result = await this.db.deleteFrom('agent_schedules').where('agent_id', '=', agentId).where('id', '=', id).executeTakeFirst();
    return Number(result.numDeletedRows) > 0;
  }

  /** Whether `service.function` exists in the namespace. */
  async functionExists(namespaceId: string, service: string, fn: string): Promise<boolean> {
    const row = await this.db
      .selectFrom('functions as f')
      .innerJoin('services as s', 's.id', 'f.service_id')
      .select('f.id')
      .where('s.namespace_id', '=', namespaceId)
      .where('s.name', '=', service)
      .where('f.name', '=', fn)
      .executeTakeFirst();
    return row !== undefined;
  }

  /** The agent's recent fires, newest first (of one schedule when given). */
  listFires(
    agentId: string,
    options: { scheduleId?: string; limit: number },
  ): Promise<Array<AgentScheduleFireRow & { label: string | null }>> {
    let query = this.db
      .selectFrom('agent_schedule_fires as f')
      .innerJoin('agent_schedules as s', 's.id', 'f.schedule_id')
      .selectAll('f')
      .select('s.label')
      .where('s.agent_id', '=', agentId);
    if (options.scheduleId !== undefined) query = query.where('f.schedule_id', '=', options.scheduleId);
    return query.orderBy('f.scheduled_for', 'desc').orderBy('f.replica').limit(options.limit).execute();
  }

  // ---------------------------------------------------------------------------------------------
  // The loop (agents/triggers/schedule.ts)

  /** Enabled schedules of running agents, at most `limit`, in id order after `after`. */
  activeSchedules(limit: number, after?: string): Promise<ActiveSchedule[]> {
    let query = this.db
      .selectFrom('agent_schedules as s')
      .innerJoin('agents as a', 'a.id', 's.agent_id')
      .selectAll('s')
      .select('a.name as agent_name')
      .where('s.enabled', '=', true)
      .where('a.status', '=', 'running');
    if (after !== undefined) query = query.where('s.id', '>', after);
    return query.orderBy('s.id').limit(limit).execute();
  }

  /**
   * Moves the start of planning to `now` for schedules that are off or whose agent is not
   * running: their ticks meanwhile are neither run nor missed (a start does not catch them up).
   */
  async advanceIdle(now: Date): Promise<void> {
    await sql`
      UPDATE agent_schedules s SET last_planned_tick = ${now}
      WHERE s.last_planned_tick < ${new Date(now.getTime() - 1000)}
        AND (NOT s.enabled OR NOT EXISTS (SELECT 1 FROM agents a WHERE a.id = s.agent_id AND a.status = 'running'))`.execute(this.db);
  }

  /**
   * Where planning of each (schedule, replica) resumes, read in one statement before the pass
   * inserts anything: the replica's newest fire row, else (a replica new to a cluster schedule) the
   * schedule's newest row, never before the schedule's last_planned_tick; with the schedule's
   * failure streak as it is now. Undefined when the schedule is gone or off.
   */
  async planningState(
    scheduleId: string,
    replicas: readonly string[],
  ): Promise<{ cursors: Map<string, Date>; failureStreak: number; lastFailedTick: Date | null } | undefined> {
    const keys = sql.join(replicas.map((r) => sql`(${r})`));
    const rows = await sql<{ replica: string; at: Date | string; failure_streak: number; last_failed_tick: Date | string | null }>`
      SELECT k.replica,
        greatest(
          s.last_planned_tick,
          coalesce(
            (SELECT max(f.scheduled_for) FROM agent_schedule_fires f WHERE f.schedule_id = s.id AND f.replica = k.replica),
            (SELECT max(f.scheduled_for) FROM agent_schedule_fires f WHERE f.schedule_id = s.id))) AS at,
        s.failure_streak, s.last_failed_tick
      FROM agent_schedules s CROSS JOIN (VALUES ${keys}) AS k(replica)
      WHERE s.id = ${scheduleId} AND s.enabled`.execute(this.db);
    const first = rows.rows[0];
    if (!first) return undefined;
    return {
      cursors: new Map(rows.rows.map((r) => [r.replica, new Date(r.at)])),
      failureStreak: Number(first.failure_streak),
      lastFailedTick: first.last_failed_tick === null ? null : new Date(first.last_failed_tick),
    };
  }

  /** Records ticks as skipped (a tick already recorded keeps its row). */
  async insertSkips(scheduleId: string, replica: string, skips: Array<{ at: Date; reason: string }>, node: string): Promise<number> {
    if (skips.length === 0) return 0;
    const rows = await this.db
      .insertInto('agent_schedule_fires')
      .values(
        skips.map((s) => ({
          id: randomUUID(),
          schedule_id: scheduleId,
          scheduled_for: s.at,
          replica,
          status: 'skipped',
          reason: s.reason,
          node,
          // The database's clock, as every other end of a fire (nodes' clocks may be off).
          finished_at: sql<Date>`now()`,
        })),
      )
      .onConflict((oc) => oc.columns(['schedule_id', 'replica', 'scheduled_for']).doNothing())
      .returning('id')
      .execute();
    return rows.length;
  }

  /**
   * The replicas each agent has on `node` by the lease rows: held under a live lease (the database's
   * clock) with their process marked up. A replica that moved to another node is gone from here at
   * once, before this node's supervisor has noticed.
   */
  async heldReplicas(node: string): Promise<Map<string, Set<string>>> {
    const rows = await sql<{ agent_id: string; name: string }>`
      SELECT r.agent_id, r.name FROM agent_replicas r WHERE ${heldBy(node)}`.execute(this.db);
    const held = new Map<string, Set<string>>();
    for (const r of rows.rows) held.set(r.agent_id, (held.get(r.agent_id) ?? new Set()).add(r.name));
    return held;
  }

  /**
   * Claims a tick: the fire row, or undefined when another node (or an earlier pass) has it or
   * the schedule was turned off or its failure streak changed meanwhile. A cluster schedule's tick
   * of a replica is claimed only by the node holding that replica's lease, checked in the insert.
   * With `overlapSkip`, the row is recorded skipped when an earlier fire of the schedule (of the
   * same replica, for a cluster schedule) is still running on a live node.
   */
  async claimFire(options: {
    scheduleId: string;
    replica: string;
    tick: Date;
    node: string;
    overlapSkip: boolean;
    overlapReason: string;
    /** The failure streak the plan was made with: when a fire's end changed it meanwhile, nothing is claimed (plan again). */
    failureStreak: number;
  }): Promise<{ id: string; status: 'fired' | 'skipped' } | undefined> {
    const { scheduleId, replica, tick, node } = options;
    const running = sql<boolean>`${options.overlapSkip} AND EXISTS (
      SELECT 1 FROM agent_schedule_fires f
      WHERE f.schedule_id = ${scheduleId} AND f.status = 'fired' AND f.replica = ${replica} AND f.scheduled_for < ${tick}
        AND EXISTS (SELECT 1 FROM server_instances i WHERE i.id = f.node AND i.lease_until >= now()))`;
    const row = await sql<{ id: string; status: 'fired' | 'skipped' }>`
      INSERT INTO agent_schedule_fires (id, schedule_id, scheduled_for, replica, status, reason, node, finished_at)
      SELECT ${randomUUID()}, ${scheduleId}, ${tick}, ${replica},
        CASE WHEN o.running THEN 'skipped' ELSE 'fired' END,
        CASE WHEN o.running THEN ${options.overlapReason} ELSE NULL END,
        ${node},
        CASE WHEN o.running THEN now() ELSE NULL END
      FROM (SELECT ${running} AS running) o
      WHERE EXISTS (SELECT 1 FROM agent_schedules s WHERE s.id = ${scheduleId} AND s.enabled AND s.failure_streak = ${options.failureStreak}
        AND (${replica} = '' OR EXISTS (SELECT 1 FROM agent_replicas r WHERE ${heldBy(node, sql`s.agent_id`, replica)})))
      ON CONFLICT (schedule_id, replica, scheduled_for) DO NOTHING
      RETURNING id, status`.execute(this.db);
    return row.rows[0];
  }

  /** The run a fire started (and, for single mode, the replica it chose). */
  async setFireRun(fireId: string, runId: string, runReplica: string): Promise<void> {
    await this.db.updateTable('agent_schedule_fires').set({ run_id: runId, run_replica: runReplica }).where('id', '=', fireId).execute();
  }

  /**
   * Records a fire's end and, in the same transaction under the schedule's row lock, its failure
   * streak (and auto-disable) as `decide` computes it from the streak before. A fire already ended
   * (marked interrupted meanwhile) changes nothing.
   */
  async finishFire(
    fireId: string,
    scheduleId: string,
    end: FireEnd,
    decide: ((before: { failureStreak: number; lastFailedTick: Date | null }) => StreakUpdate) | null,
  ): Promise<StreakUpdate | undefined> {
    return this.db.transaction().execute(async (trx) => {
      const schedule = await trx
        .selectFrom('agent_schedules')
        .select(['failure_streak', 'last_failed_tick', 'enabled'])
        .where('id', '=', scheduleId)
        .forUpdate()
        .executeTakeFirst();
      const ended = await trx
        .updateTable('agent_schedule_fires')
        .set({ status: end.status, reason: end.reason, run_id: end.runId, run_replica: end.runReplica, finished_at: sql`now()` })
        .where('id', '=', fireId)
        .where('status', '=', 'fired')
        .executeTakeFirst();
      if (!schedule || Number(ended.numUpdatedRows) === 0 || !decide) return undefined;
      const update = decide({
        failureStreak: schedule.failure_streak,
        lastFailedTick: schedule.last_failed_tick ? new Date(schedule.last_failed_tick) : null,
      });
      await trx
        .updateTable('agent_schedules')
        .set({
          failure_streak: update.failureStreak,
          last_failed_tick: update.lastFailedTick,
          ...(update.disabledReason && schedule.enabled
            ? { enabled: false, disabled_reason: update.disabledReason, next_fire_at: null }
            : {}),
        })
        .where('id', '=', scheduleId)
        .execute();
      return update;
    });
  }

  /** Fires left running by a server that is gone are recorded failed (interrupted); their streak is left as it is. */
  async interruptOrphans(): Promise<number> {
    const result = await sql`
      UPDATE agent_schedule_fires f SET status = 'failed', reason = ${FIRE_INTERRUPTED}, finished_at = now()
      WHERE f.status = 'fired'
        AND NOT EXISTS (SELECT 1 FROM server_instances i WHERE i.id = f.node AND i.lease_until >= now())`.execute(this.db);
    return Number(result.numAffectedRows ?? 0);
  }

  /**
   * Deletes ended fire records scheduled before `before`, at most `limit`. Planning never needs
   * them: a schedule's newest rows are recent while it fires, and its last_planned_tick moves on while it does not.
   */
  async pruneFires(before: Date, limit: number): Promise<number> {
    const result = await sql`
      DELETE FROM agent_schedule_fires WHERE id IN (
        SELECT id FROM agent_schedule_fires WHERE scheduled_for < ${before} AND status <> 'fired' LIMIT ${limit})`.execute(this.db);
    return Number(result.numAffectedRows ?? 0);
  }

  async setNextFire(scheduleId: string, at: Date | null): Promise<void> {
    await this.db.updateTable('agent_schedules').set({ next_fire_at: at }).where('id', '=', scheduleId).execute();
  }
}

/**
 * An agent started: planning of its schedules resumes at this instant (the database's clock), so
 * a tick between the loop's last pass over the stopped agent and the start is neither run nor
 * missed. Call in the start's transaction.
 */
export async function resumePlanning(exec: Exec, agentId: string): Promise<void> {
  await sql`UPDATE agent_schedules SET last_planned_tick = greatest(last_planned_tick, now()) WHERE agent_id = ${agentId}`.execute(exec);
}

/**
 * clone_agent: copies an agent's schedules to its clone (call in the clone's transaction). The
 * copies start with no fires and no failures; they run once the clone is started.
 */
export async function copySchedules(exec: Exec, fromAgentId: string, toAgentId: string, now: Date): Promise<number> {
  const result = await sql`
    INSERT INTO agent_schedules (id, agent_id, label, function_name, cron_expression, timezone, config, enabled, disabled_reason,
        next_fire_at, failure_streak, last_failed_tick, last_planned_tick)
      SELECT gen_random_uuid()::text, ${toAgentId}, label, function_name, cron_expression, timezone, config, enabled, disabled_reason,
        NULL, 0, NULL, ${now}
      FROM agent_schedules WHERE agent_id = ${fromAgentId}`.execute(exec);
  return Number(result.numAffectedRows ?? 0);
}
