/**
 * Heartbeats (configure_heartbeat): a periodic reason_first run of a running agent with an AI. Every
 * node looks, once a second, at the agents it holds replicas of; a heartbeat that is due is taken by
 * one UPDATE that moves its next_at on (so of several nodes one runs it), and runs on the least busy
 * local replica through the dispatcher (recorded like every run). A heartbeat still running here is
 * not started again; a missed one runs once, not once per interval missed. Only agents with a replica
 * whose lease row this node holds are taken, and only such a replica runs it: the in-memory list lags
 * a replica's move to another node by up to a supervisor round (as for schedules).
 */
import { sql } from 'kysely';
import { DEFAULT_HEARTBEAT_INSTRUCTIONS } from '../../core/agent-orchestration.js';
import type { Logger } from '../../core/logger.js';
import type { Db } from '../../store/database.js';
import type { AgentDispatcher } from '../dispatcher.js';

export interface HeartbeatDeps {
  db: Db;
  /** This node: a heartbeat is taken only for an agent with a replica whose live lease it holds. */
  nodeId: string;
  dispatcher: Pick<AgentDispatcher, 'start'>;
  /** Agents this node runs replicas of, each with its up replicas' load (jobs waiting or running). */
  local: () => Map<string, Map<string, number>>;
  logger: Logger;
  tickMs?: number;
}

export class HeartbeatLoop {
  private timer: NodeJS.Timeout | undefined;
  private ticking: Promise<void> | undefined;
  private readonly running = new Set<string>();

  constructor(private readonly deps: HeartbeatDeps) {}

  start(): void {
    this.timer ??= setInterval(() => {
      this.ticking ??= this.tick()
        .catch((error: unknown) =>
          this.deps.logger.warn({ err: error instanceof Error ? error.message : String(error) }, 'heartbeats: a round failed'),
        )
        .finally(() => (this.ticking = undefined));
    }, this.deps.tickMs ?? 1000);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.ticking;
  }

  /** Takes the due heartbeats of local agents (moving next_at an interval past now) and starts them. */
  async tick(): Promise<void> {
    const local = this.deps.local();
    const ids = [...local.keys()].filter((id) => !this.running.has(id));
    if (ids.length === 0) return;
    const held = sql`r.agent_id = agents.id AND r.node_id = ${this.deps.nodeId} AND r.lease_expires_at > now() AND r.status = 'running'`;
    const due = await sql<{ id: string; instructions: string | null; held: string[] | null }>`
      UPDATE agents SET config = jsonb_set(config, '{heartbeat,next_at}',
          to_jsonb(to_char((now() + make_interval(secs => (config->'heartbeat'->>'interval_seconds')::int)) AT TIME ZONE 'UTC',
                           'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')))
      WHERE id IN (${sql.join(ids)}) AND status = 'running' AND config ? 'ai'
        AND (config->'heartbeat'->>'enabled')::boolean
        AND (config->'heartbeat'->>'interval_seconds')::int > 0
        AND (config->'heartbeat'->>'next_at') IS NOT NULL
        AND (config->'heartbeat'->>'next_at')::timestamptz <= now()
        AND EXISTS (SELECT 1 FROM agent_replicas r WHERE ${held})
      RETURNING id, config->'heartbeat'->>'instructions' AS instructions,
        (SELECT array_agg(r.name) FROM agent_replicas r WHERE ${held}) AS held`.execute(this.deps.db);
    for (const row of due.rows) {
      const mine = new Set(row.held ?? []);
      const load = [...(local.get(row.id) ?? new Map<string, number>()).entries()].filter(([name]) => mine.has(name));
      if (load.length === 0) continue;
      const replica = load.sort((a, b) => a[1] - b[1])[0]![0];
      this.running.add(row.id);
      try {
        const started = this.deps.dispatcher.start({
          agentId: row.id,
          replica,
          trigger: 'heartbeat',
          triggerName: 'heartbeat',
          input: null,
          orchestrationMode: 'reason_first',
          message: row.instructions ?? DEFAULT_HEARTBEAT_INSTRUCTIONS,
        });
        void started.done
          .catch((error: unknown) =>
            this.deps.logger.warn(
              { err: error instanceof Error ? error.message : String(error), agent_id: row.id },
              'a heartbeat did not run',
            ),
          )
          .finally(() => this.running.delete(row.id));
      } catch (error) {
        this.running.delete(row.id);
        throw error;
      }
    }
  }
}
