import { sql, type Kysely } from 'kysely';
import type { Db } from './database.js';
import { storableJson, storableText } from '../core/storable-text.js';
import { randomUUID } from 'node:crypto';
import type { AgentRunCall, AgentRunRow, AgentToolCall, Database } from './schema.js';

type Exec = Kysely<Database>;

export interface NewAgentRun {
  id: string;
  agentId: string;
  accountId: string;
  replica: string | null;
  nodeId: string;
  trigger: string;
  triggerName: string | null;
  triggerRef: string | null;
  orchestrationMode: string;
  functionName: string | null;
  /** A chat run's conversation. */
  conversationId?: string | null;
}

export interface AgentRunEnd {
  status: 'succeeded' | 'failed' | 'cancelled' | 'rejected';
  errorType: string | null;
  errorMessage: string | null;
  calls: AgentRunCall[];
  /** How long it ran, by the clock of the node that ran it (its end is this past its start on the database's clock). */
  durationMs: number;
  /** An AI run's record (or a fallback's stop reason). */
  ai?: {
    iterations: number | null;
    inputTokens: number | null;
    outputTokens: number | null;
    /** Some model answer did not say what it cost: its tokens were estimated. */
    usageEstimated?: boolean;
    stopReason: string;
    toolCalls: AgentToolCall[];
    answer: string | null;
  };
}

/** A management tool an orchestration asked for (refused): where it happened and what was asked, never the arguments. */
export interface ForbiddenToolEvent {
  accountId: string;
  namespaceId: string;
  agent: string;
  tool: string;
  trigger: string;
  runId: string;
  /** A run's summary past the per-run cap: every attempt counted (the first ones have their own events). */
  attempts?: number;
}

export interface RunFilter {
  limit: number;
  /** Runs started before this run (its id, for paging newest first). */
  before?: { startedAt: Date; id: string };
  status?: string;
  trigger?: string;
}

/** Trigger runs of agents: written when a run starts (status running) and again when it ends. */
export class AgentRunsStore {
  constructor(private readonly db: Db) {}

  async insertRun(run: NewAgentRun, exec: Exec = this.db): Promise<void> {
    await exec
      .insertInto('agent_runs')
      .values({
        id: run.id,
        agent_id: run.agentId,
        account_id: run.accountId,
        replica: run.replica,
        node_id: run.nodeId,
        trigger: run.trigger,
        trigger_name: run.triggerName,
        trigger_ref: run.triggerRef,
        orchestration_mode: run.orchestrationMode,
        function_name: run.functionName,
        calls: '[]',
        status: 'running',
        error_type: null,
        error_message: null,
        // The database's clock: runs of every node are listed, paged and kept by it (a node's clock may be off).
        started_at: sql<Date>`now()`,
        finished_at: null,
        duration_ms: null,
        conversation_id: run.conversationId ?? null,
      })
      .execute();
  }

  /** Ends a running run (a run already ended keeps its first ending). */
  async finishRun(id: string, end: AgentRunEnd): Promise<void> {
    await this.db
      .updateTable('agent_runs')
      .set({
        status: end.status,
        // Text of users, functions and models: what PostgreSQL cannot hold must not lose the record.
        error_type: end.errorType === null ? null : storableText(end.errorType),
        error_message: end.errorMessage === null ? null : storableText(end.errorMessage),
        calls: storableJson(end.calls),
        // Written late when the database was away (the outbox): its end still is when it ended.
        finished_at: sql<Date>`started_at + make_interval(secs => ${Math.max(0, end.durationMs) / 1000}::float8)`,
        duration_ms: Math.max(0, Math.round(end.durationMs)),
        ...(end.ai
          ? {
              iterations: end.ai.iterations,
              input_tokens: end.ai.inputTokens,
              output_tokens: end.ai.outputTokens,
              usage_estimated: end.ai.usageEstimated === true,
              stop_reason: end.ai.stopReason,
              tool_calls: storableJson(end.ai.toolCalls),
              answer: end.ai.answer === null ? null : storableText(end.ai.answer),
            }
          : {}),
      })
      .where('id', '=', id)
      .where('status', '=', 'running')
      .execute();
  }

  listRuns(agentId: string, filter: RunFilter): Promise<AgentRunRow[]> {
    let query = this.db.selectFrom('agent_runs').selectAll().where('agent_id', '=', agentId);
    if (filter.status) query = query.where('status', '=', filter.status);
    if (filter.trigger) query = query.where('trigger', '=', filter.trigger);
    const before = filter.before;
    if (before)
      query = query.where((eb) =>
        eb.or([eb('started_at', '<', before.startedAt), eb.and([eb('started_at', '=', before.startedAt), eb('id', '<', before.id)])]),
      );
    return query.orderBy('started_at', 'desc').orderBy('id', 'desc').limit(filter.limit).execute();
  }

  /** A security event of the agent's namespace (list_security_events shows it). */
  async recordForbiddenTool(event: ForbiddenToolEvent): Promise<void> {
    const detail = JSON.stringify({
      detection: event.attempts === undefined ? 'forbidden_tool' : 'forbidden_tool_repeated',
      agent: event.agent,
      tool: event.tool,
      trigger: event.trigger,
      run_id: event.runId,
      ...(event.attempts === undefined ? {} : { attempts: event.attempts }),
    });
    await sql`
      INSERT INTO security_events (id, account_id, namespace_id, event_type, detail)
      VALUES (${randomUUID()}, ${event.accountId}, ${event.namespaceId}, 'agent_forbidden_tool', ${detail}::jsonb)`.execute(this.db);
  }

  getRun(agentId: string, runId: string): Promise<AgentRunRow | undefined> {
    return this.db.selectFrom('agent_runs').selectAll().where('agent_id', '=', agentId).where('id', '=', runId).executeTakeFirst();
  }

  /**
   * Runs left `running` by a node that is gone (killed before it recorded their end: no live
   * server_instances row, by the database's clock as the leases are): ended as failed,
   * `interrupted`. Any node may call it; a live node's runs are never touched.
   */
  async failOrphans(): Promise<number> {
    const result = await sql`
      UPDATE agent_runs SET status = 'failed', error_type = 'interrupted',
        error_message = 'the server running it stopped before the run ended', finished_at = now(),
        duration_ms = greatest(0, floor(extract(epoch FROM (now() - started_at)) * 1000))::int
      WHERE status = 'running'
        AND (node_id IS NULL OR node_id NOT IN (SELECT id FROM server_instances WHERE lease_until > now()))`.execute(this.db);
    return Number(result.numAffectedRows ?? 0);
  }

  /**
   * Deletes ended runs older than their account's retention (days by tier; `fallback` for an account
   * whose plan the table no longer has), in batches until none is left. Answers how many went.
   */
  async pruneEnded(
    retentionDaysByTier: ReadonlyMap<string, number | null>,
    fallbackDays: number | null,
    now: Date,
    batch = 5000,
  ): Promise<number> {
    let removed = 0;
    const known = [...retentionDaysByTier.keys()];
    const rules: Array<{ days: number; tier: string | null }> = [];
    for (const [tier, days] of retentionDaysByTier) if (days !== null) rules.push({ tier, days });
    if (fallbackDays !== null) rules.push({ tier: null, days: fallbackDays });
    for (const rule of rules) {
      const cutoff = new Date(now.getTime() - rule.days * 86_400_000);
      const tierMatch =
        rule.tier !== null ? sql`a.tier = ${rule.tier}` : known.length > 0 ? sql`a.tier NOT IN (${sql.join(known)})` : sql`true`;
      for (;;) {
        const result = await sql`
          DELETE FROM agent_runs WHERE id IN (
            SELECT r.id FROM agent_runs r JOIN accounts a ON a.id = r.account_id
            WHERE ${tierMatch} AND r.status <> 'running' AND r.started_at < ${cutoff}
            LIMIT ${batch})`.execute(this.db);
        const count = Number(result.numAffectedRows ?? 0);
        removed += count;
        if (count < batch) break;
      }
    }
    return removed;
  }
}
