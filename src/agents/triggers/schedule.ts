/**
 * The schedule trigger: one loop per server process. It plans the schedules of running agents for
 * the replicas this node holds by their lease rows (and has up), claims each due tick with a fire row (INSERT ... ON CONFLICT DO
 * NOTHING: the node whose insert made the row runs it, so a tick runs once however many nodes
 * plan it, across restarts too), and runs the fire through the agent dispatcher. In-process state
 * is a cache (when each schedule is next due here); the rows are the truth.
 */
import { DomainError } from '../../core/errors.js';
import type { Logger } from '../../core/logger.js';
import { afterOutcome, OVERLAP_REASON, planTicks } from '../../core/schedule-plan.js';
import { scheduleOptionsOf } from '../../services/schedules.js';
import type { ActiveSchedule, FireEnd, SchedulesStore } from '../../store/schedules-store.js';
import type { AgentDispatcher } from '../dispatcher.js';

/** The replicas of an agent with their process up on this node (names): the one seam to the replica runtime. */
export type LocalReplicas = (agentId: string) => Promise<readonly string[]> | readonly string[];

type Dispatch = Pick<AgentDispatcher, 'start'>;

export interface ScheduleLoopOptions {
  store: SchedulesStore;
  dispatcher: Dispatch;
  localReplicas: LocalReplicas;
  /** This server instance's id (InstanceLease.id): fire rows name it, so a dead node's fires are told apart. */
  node: string;
  logger: Logger;
  /** Schedules read per page, and at most this many pages a pass. */
  pageSize?: number;
  maxPages?: number;
  /** The longest sleep between passes: new schedules, started agents and other nodes' changes are seen this often. */
  refreshMs?: number;
  now?: () => Date;
}

const DEFAULT_PAGE = 200;
const DEFAULT_PAGES = 10;
const DEFAULT_REFRESH_MS = 1000;
/** Fire records older than this are deleted (at most PRUNE_BATCH a pass, once per PRUNE_EVERY_MS). */
export const FIRE_RETENTION_DAYS = 30;
const PRUNE_EVERY_MS = 10 * 60_000;
const PRUNE_BATCH = 5000;
/** How long stop() waits for the ends of fires in progress to be recorded. */
const SETTLE_MS = 15_000;

export class ScheduleLoop {
  private readonly store: SchedulesStore;
  private readonly logger: Logger;
  private readonly now: () => Date;
  private runningSince: Date | undefined;
  private timer: NodeJS.Timeout | undefined;
  private passing: Promise<void> | undefined;
  private stopped = false;
  /** When each (schedule, replica key) is next due on this node: a cache, dropped when a fire of it ends. */
  private readonly nextDue = new Map<string, number>();
  /** Round robin over local replicas for single-mode fires, per schedule. */
  private readonly turn = new Map<string, number>();
  private readonly inFlight = new Set<Promise<void>>();
  private prunedAt = 0;

  constructor(private readonly options: ScheduleLoopOptions) {
    this.store = options.store;
    this.logger = options.logger;
    this.now = options.now ?? (() => new Date());
  }

  /** Starts planning: ticks before now that no node planned were missed while no node ran (catch_up). */
  start(): void {
    if (this.runningSince) return;
    this.runningSince = this.now();
    this.schedule(0);
  }

  /** No further passes or fires; waits for the pass in progress, then (bounded) for the ends of fires in progress to be recorded. */
  async stop(settleMs = SETTLE_MS): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.passing;
    await this.settled(settleMs);
  }

  /** Resolves when the fires in progress have recorded their ends, or after `ms`. */
  async settled(ms: number): Promise<void> {
    if (this.inFlight.size === 0) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.allSettled([...this.inFlight]),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, ms);
        timer.unref();
      }),
    ]);
    clearTimeout(timer);
  }

  get firesInProgress(): number {
    return this.inFlight.size;
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.passing = this.pass()
        .catch((error: unknown) => {
          this.logger.warn({ err: error instanceof Error ? error.message : String(error) }, 'schedule pass failed; trying again');
          return this.options.refreshMs ?? DEFAULT_REFRESH_MS;
        })
        .then((next) => {
          this.passing = undefined;
          this.schedule(typeof next === 'number' ? next : (this.options.refreshMs ?? DEFAULT_REFRESH_MS));
        });
    }, delayMs);
    this.timer.unref();
  }

  /** One pass over the active schedules; the delay until the next one (aligned to the next fire due here). */
  async pass(): Promise<number> {
    const refresh = this.options.refreshMs ?? DEFAULT_REFRESH_MS;
    const now = this.now();
    this.runningSince ??= now;
    await this.store.interruptOrphans();
    await this.store.advanceIdle(now);
    if (now.getTime() - this.prunedAt >= PRUNE_EVERY_MS) {
      this.prunedAt = now.getTime();
      await this.store.pruneFires(new Date(now.getTime() - FIRE_RETENTION_DAYS * 86_400_000), PRUNE_BATCH);
    }
    let soonest = now.getTime() + refresh;
    // Which replicas are this node's comes from the lease rows: the supervisor's list lags a move by up to a round.
    const held = await this.store.heldReplicas(this.options.node);
    const replicas = new Map<string, readonly string[]>();
    let after: string | undefined;
    for (let page = 0; page < (this.options.maxPages ?? DEFAULT_PAGES) && !this.stopped; page++) {
      const rows = await this.store.activeSchedules(this.options.pageSize ?? DEFAULT_PAGE, after);
      for (const row of rows) {
        if (this.stopped) break;
        let local = replicas.get(row.agent_id);
        if (!local) {
          const mine = held.get(row.agent_id);
          local = mine ? (await this.options.localReplicas(row.agent_id)).filter((name) => mine.has(name)) : [];
          replicas.set(row.agent_id, local);
        }
        if (local.length === 0) continue;
        const due = await this.planSchedule(row, local, now);
        if (due !== null) soonest = Math.min(soonest, due);
      }
      if (rows.length < (this.options.pageSize ?? DEFAULT_PAGE)) break;
      after = rows[rows.length - 1]!.id;
    }
    // A few ms late rather than early: croner's tick is due at its instant.
    return Math.max(5, soonest - this.now().getTime() + 5);
  }

  /** Plans one schedule for this node's replicas; when it is next due here (ms), or null. */
  private async planSchedule(row: ActiveSchedule, local: readonly string[], now: Date): Promise<number | null> {
    const options = scheduleOptionsOf(row);
    const keys = options.mode === 'single' ? [''] : local;
    let soonest: number | null = null;
    const memo = (key: string) => `${row.id}\u0000${key}`;
    const due: string[] = [];
    for (const key of keys) {
      const known = this.nextDue.get(memo(key));
      if (known !== undefined && known > now.getTime()) soonest = Math.min(soonest ?? known, known);
      else due.push(key);
    }
    if (due.length === 0) return soonest;
    // Every due replica's cursor as it was before this pass wrote anything (a new replica starts with the others).
    const state = await this.store.planningState(row.id, due);
    if (!state) return soonest;
    for (const key of due) {
      const plan = planTicks({
        cron: row.cron_expression,
        timezone: row.timezone,
        catchUp: options.catchUp,
        failurePolicy: options.failurePolicy,
        streak: { count: state.failureStreak, lastFailedTick: state.lastFailedTick },
        cursor: state.cursors.get(key)!,
        now,
        runningSince: this.runningSince!,
      });
      await this.store.insertSkips(row.id, key, plan.skip, this.options.node);
      let unclaimed = false;
      for (const tick of plan.fire) {
        if (this.stopped) return soonest;
        const claimed = await this.store.claimFire({
          scheduleId: row.id,
          replica: key,
          tick,
          node: this.options.node,
          overlapSkip: options.overlap === 'skip',
          overlapReason: OVERLAP_REASON,
          failureStreak: state.failureStreak,
        });
        if (!claimed) unclaimed = true;
        if (claimed?.status !== 'fired') continue;
        const replica = key === '' ? this.pickReplica(row.id, local) : key;
        this.launch(row, claimed.id, tick, replica, key);
      }
      // A tick not claimed (another node has it, or the streak changed under the plan): plan again next pass.
      if (plan.nextFireAt && !unclaimed) {
        this.nextDue.set(memo(key), plan.nextFireAt.getTime());
        soonest = Math.min(soonest ?? plan.nextFireAt.getTime(), plan.nextFireAt.getTime());
      } else this.nextDue.delete(memo(key));
      if (key === due[0] && (row.next_fire_at?.getTime() ?? null) !== (plan.nextFireAt?.getTime() ?? null))
        await this.store.setNextFire(row.id, plan.nextFireAt);
    }
    return soonest;
  }

  private pickReplica(scheduleId: string, local: readonly string[]): string {
    const n = this.turn.get(scheduleId) ?? 0;
    this.turn.set(scheduleId, n + 1);
    return local[n % local.length]!;
  }

  /** Runs a claimed fire and records its end (with the schedule's failure streak, in one transaction). */
  private launch(row: ActiveSchedule, fireId: string, tick: Date, replica: string, key: string): void {
    const options = scheduleOptionsOf(row);
    const run = (async () => {
      let end: FireEnd;
      // Once the dispatcher has taken the fire, its run exists (even if refused before running): the fire names it.
      let runId: string | null = null;
      let outcomeStatus: 'succeeded' | 'failed' | 'cancelled';
      let error: { type: string; message: string } | undefined;
      try {
        const started = this.options.dispatcher.start({
          agentId: row.agent_id,
          replica,
          trigger: 'schedule',
          triggerName: row.label ?? row.id,
          triggerRef: fireId,
          functionName: row.function_name,
          input: {
            trigger: 'schedule',
            schedule_id: row.id,
            schedule_name: row.label,
            scheduled_for: tick.toISOString(),
            replica,
            fire_id: fireId,
          },
          orchestrationMode: options.orchestrationMode,
        });
        runId = started.runId;
        await this.store.setFireRun(fireId, started.runId, replica).catch(() => undefined);
        const outcome = await started.done;
        error = outcome.error;
        outcomeStatus = outcome.status === 'succeeded' ? 'succeeded' : outcome.status === 'cancelled' ? 'cancelled' : 'failed';
        const why = outcome.error ? `${outcome.error.type}: ${outcome.error.message}`.slice(0, 500) : null;
        end = {
          status: outcomeStatus === 'succeeded' ? 'succeeded' : 'failed',
          reason:
            outcome.status === 'cancelled'
              ? `cancelled${why ? ` (${why})` : ''}`
              : outcome.status === 'rejected'
                ? `rejected: ${why ?? ''}`
                : why,
          runId: outcome.runId,
          runReplica: outcome.replica || replica,
        };
      } catch (caught) {
        const message = caught instanceof Error ? caught.message : String(caught);
        // Not run because the server is stopping or its database is away: not the function's failure.
        const unavailable = caught instanceof DomainError && caught.type === 'unavailable';
        error = { type: caught instanceof DomainError ? caught.type : 'dispatch_error', message };
        outcomeStatus = unavailable ? 'cancelled' : 'failed';
        end = { status: 'failed', reason: `${error.type}: ${message}`.slice(0, 500), runId, runReplica: replica };
      }
      const status = outcomeStatus;
      await this.store.finishFire(fireId, row.id, end, (before) => {
        const next = afterOutcome(
          options.failurePolicy,
          { count: before.failureStreak, lastFailedTick: before.lastFailedTick },
          { status, tick, ...(error ? { error } : {}) },
        );
        return { failureStreak: next.streak.count, lastFailedTick: next.streak.lastFailedTick, disabledReason: next.disabledReason };
      });
      // The streak changed: the next due time is planned again (back-off ends or starts).
      this.nextDue.delete(`${row.id}\u0000${key}`);
    })().catch((caught: unknown) =>
      this.logger.warn(
        { err: caught instanceof Error ? caught.message : String(caught), fire: fireId },
        'could not record the end of a schedule fire',
      ),
    );
    this.inFlight.add(run);
    void run.finally(() => this.inFlight.delete(run));
  }
}
