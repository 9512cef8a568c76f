/**
 * Jobs for a replica another node runs (issue 19): a chat turn or webhook delivery may land on any
 * node behind a load balancer, but only the replica's home node runs its process. A job for a local
 * replica goes straight to the dispatcher (no database round trip); any other is handed over through
 * the database (store/handoff-store.ts): the home node claims the row, runs the job through its own
 * dispatcher and writes the outcome back, which the receiving node returns as if it had run it.
 */
import { randomUUID } from 'node:crypto';
import { DomainError, isDomainError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { HANDOFF_CHANNEL, type ClaimedHandoff, type HandoffStore } from '../store/handoff-store.js';
import type { NotifyListener } from '../store/notify-listener.js';
import type { ChatSealer } from '../store/chat-store.js';
import { notRunRefusal, type AgentRunOutcome, type TriggerJob } from './dispatcher.js';

export interface Dispatch {
  runId: string;
  began: Promise<void>;
  done: Promise<AgentRunOutcome>;
}

/** What a trigger hands its job to: `claimMs` bounds how long a job for another node's replica waits to be taken. */
export interface TriggerDispatch {
  start(job: TriggerJob, options?: { claimMs?: number }): Dispatch;
}

/** How long a handed-over job waits to be claimed unless told (a replica being re-placed after its node died takes about a lease). */
export const HANDOFF_CLAIM_MS = 30_000;
/** A row is deleted this long after it was written whatever happened (its sender died before reading it). */
const HANDOFF_KEEP_MS = 6 * 60 * 60_000;
/** Both sides look at their rows this often when no notification came (a lost NOTIFY only delays). */
const POLL_MS = 1000;
const SWEEP_EVERY_MS = 10 * 60_000;
const CLAIM_BATCH = 16;

/** What a finished row carries back: the outcome, or the dispatcher's refusal (nothing ran). */
type Result = { outcome: AgentRunOutcome } | { refusal: { type: DomainError['type']; message: string; details?: Record<string, unknown> } };

const jobContext = (id: string) => ['replica-handoff', id] as const;
const resultContext = (id: string) => ['replica-handoff-result', id] as const;
const messageOf = (error: unknown) => (error instanceof Error ? error.message : String(error));

export class ReplicaRouter implements TriggerDispatch {
  /** Sender side: the jobs this node handed over, by id, and how to wake their wait. */
  private readonly waiting = new Map<string, () => void>();
  /** Home side: the handed-over jobs this node runs, by id. */
  private readonly serving = new Map<string, AbortController>();
  private readonly inFlight = new Set<Promise<unknown>>();
  private readonly closing = new AbortController();
  private claiming: Promise<void> | undefined;
  private claimAgain = false;
  private timer: NodeJS.Timeout | undefined;
  private lastSweep = 0;

  constructor(
    private readonly deps: {
      store: HandoffStore;
      dispatcher: () => TriggerDispatch;
      /** The replicas this node runs with their process up (the supervisor). */
      local: {
        localReplicas(agentId: string): string[];
        processes(): Array<{ agentId: string; replica: string; phase: string }>;
      };
      /** Seals a job and its outcome at rest (a chat's message and history, a webhook's body and result). */
      sealer: ChatSealer;
      /**
       * Told each outcome of a job handed over to this node, before it is handed back, and each refusal
       * of one (`rejected` when nothing ran): what the trigger keeps of it (a keyed webhook delivery's
       * outcome, or its key let go) is then kept even when its sender stopped following it.
       */
      servedHere?: (job: TriggerJob, outcome: AgentRunOutcome, notRun?: boolean) => Promise<void>;
      nodeId: string;
      logger: Logger;
      /** A claim lives this long past its node's last renewal: a dead home node is noticed within it. */
      aliveMs: number;
      pollMs?: number;
      /**
       * No other node can share the database (the embedded one): a handed-over job is then only for
       * this node's own replica still coming up, so there is no idle claim poll; the job's own wait
       * asks for a claim round as it polls its row (listen()).
       */
      soleNode?: boolean;
    },
  ) {}

  private get pollMs(): number {
    return this.deps.pollMs ?? POLL_MS;
  }

  start(job: TriggerJob, options: { claimMs?: number } = {}): Dispatch {
    // The replica runs here: straight to the dispatcher, as on a single node.
    if (this.deps.local.localReplicas(job.agentId).includes(job.replica)) return this.deps.dispatcher().start(job);
    return this.handOver(job, options.claimMs ?? HANDOFF_CLAIM_MS);
  }

  /**
   * LISTENs for jobs, cancels and outcomes, and polls as the fallback. On a sole node the claim poll
   * is only the sweep's: a job that waits unclaimed asks for a claim round at each read of its row.
   */
  async listen(listener: NotifyListener | undefined): Promise<void> {
    if (this.timer || this.closing.signal.aborted) return;
    await listener?.listen(HANDOFF_CHANNEL, {
      notify: (payload) => this.notified(payload),
      resync: () => {
        this.claimSoon();
        for (const wake of this.waiting.values()) wake();
      },
    });
    this.timer = setInterval(() => this.claimSoon(), this.deps.soleNode ? SWEEP_EVERY_MS : this.pollMs);
    this.timer.unref();
  }

  /**
   * Stops claiming, withdraws what no node took yet, stops following what its home node runs (it
   * finishes there; the sweep removes the row) and waits for what this node runs for others.
   */
  async close(): Promise<void> {
    clearInterval(this.timer);
    this.closing.abort();
    for (const wake of this.waiting.values()) wake();
    await this.claiming;
    await Promise.allSettled([...this.inFlight]);
  }

  private notified(payload: string): void {
    const [kind, a, b] = payload.split(' ');
    if (kind === 'job' && a && b && this.deps.local.localReplicas(a).includes(b)) this.claimSoon();
    else if (kind === 'state' && a) this.waiting.get(a)?.();
    else if (kind === 'cancel' && a) this.serving.get(a)?.abort(new DomainError('unavailable', 'the run was cancelled'));
  }

  private track<T>(work: Promise<T>): Promise<T> {
    this.inFlight.add(work);
    void work.then(
      () => this.inFlight.delete(work),
      () => this.inFlight.delete(work),
    );
    return work;
  }

  // ---- the receiving node ----

  private handOver(job: TriggerJob, claimMs: number): Dispatch {
    const runId = job.runId ?? randomUUID();
    let markBegan!: () => void;
    const began = new Promise<void>((resolve) => (markBegan = resolve));
    const done = this.track(this.await(runId, job, claimMs, markBegan));
    const beganOrRefused = Promise.race([began, done.then(() => undefined)]);
    beganOrRefused.catch(() => undefined);
    return { runId, began: beganOrRefused, done };
  }

  private async await(runId: string, job: TriggerJob, claimMs: number, began: () => void): Promise<AgentRunOutcome> {
    const { store } = this.deps;
    const { signal, ...wire } = job;
    const replica = job.replica;
    if (this.closing.signal.aborted) throw new DomainError('unavailable', 'the server is stopping; the trigger was not run');
    const startedAt = Date.now();
    try {
      await store.offer({
        id: runId,
        agentId: job.agentId,
        replica,
        job: this.deps.sealer.seal(jobContext(runId), JSON.stringify({ ...wire, runId })),
        claimMs,
        keepMs: HANDOFF_KEEP_MS,
      });
    } catch (error) {
      this.deps.logger.warn({ err: messageOf(error), run_id: runId }, 'could not hand a job to its replica’s node');
      throw new DomainError('unavailable', `the job could not be handed to the node of replica '${replica}'; nothing ran: retry`, {
        replica,
      });
    }
    // A notification that comes while the row is being read is kept for the next wait (not lost until the poll).
    let poked = false;
    let wake: () => void = () => (poked = true);
    this.waiting.set(runId, () => wake());
    let cancelSent = false;
    const stop = signal ? AbortSignal.any([signal, this.closing.signal]) : this.closing.signal;
    const onStop = () => wake();
    stop.addEventListener('abort', onStop);
    const claimBy = Date.now() + claimMs;
    // Whether the row was last seen unclaimed, and when it was last read: how long failed reads may go on.
    let lastPending = true;
    let lastRead = Date.now();
    try {
      for (;;) {
        poked = false;
        let row: Awaited<ReturnType<HandoffStore['state']>>;
        try {
          row = await store.state(runId);
          lastRead = Date.now();
        } catch (error) {
          // One failed read is a missed poll; the wait stays bounded by the time to claim and a claim's lease.
          this.deps.logger.warn({ err: messageOf(error), run_id: runId }, 'could not read a handed-over job');
          const waitUntil = lastPending ? claimBy : lastRead + this.deps.aliveMs;
          if (!stop.aborted && Date.now() < waitUntil) {
            await this.pause(
              () => poked,
              (w) => (wake = w),
            );
            wake = () => (poked = true);
            continue;
          }
          return await this.giveUp(runId, replica, startedAt);
        }
        lastPending = row?.status === 'pending';
        if (!row)
          throw new DomainError('unavailable', `the job handed to replica '${replica}' is gone (its agent was destroyed?)`, { replica });
        if (row.status === 'done') {
          await store.remove(runId).catch(() => undefined);
          const result = JSON.parse(this.deps.sealer.open(resultContext(runId), row.result ?? '')) as Result;
          if ('refusal' in result) throw new DomainError(result.refusal.type, result.refusal.message, result.refusal.details);
          return result.outcome;
        }
        if (row.status === 'pending') {
          // This node is the only one: its replica coming up (or a claim that failed) is found by this wait's poll.
          if (this.deps.soleNode) this.claimSoon();
          // Not taken yet: a cancel or the time to claim it withdraws it (then it never runs); lost to a claim, the wait goes on.
          const late = Date.now() >= claimBy;
          if ((stop.aborted || late) && (await store.withdraw(runId).catch(() => false))) {
            if (stop.aborted) throw new DomainError('unavailable', 'the request was cancelled before the replica took it; nothing ran');
            throw new DomainError(
              'unavailable',
              `replica '${replica}' did not take the job within ${Math.round(claimMs / 1000)} s (its node may be gone: a replica is re-placed within a lease); nothing ran: retry`,
              { replica, reason: 'replica_unreachable' },
            );
          }
        } else {
          if (row.status === 'began') began();
          // Only its caller's own cancel is passed on: this server stopping (a rolling restart) does not end a run already answered 202.
          if (signal?.aborted && !cancelSent) {
            cancelSent = true;
            await store
              .cancel(runId)
              .catch((error: unknown) => this.deps.logger.warn({ err: messageOf(error), run_id: runId }, 'could not pass a cancel on'));
          }
          if (this.closing.signal.aborted)
            return {
              ...unfollowed(
                runId,
                replica,
                startedAt,
                `this server stopped following the run, which goes on on the node of replica '${replica}' (the run's record has its outcome)`,
              ),
              goesOnElsewhere: true,
            };
          if (!row.alive) {
            // Its home node stopped renewing the claim (killed): the run's record is ended by the nodes' orphan sweep.
            await store.remove(runId).catch(() => undefined);
            return unfollowed(
              runId,
              replica,
              startedAt,
              `the server node running replica '${replica}' stopped during the run; whether it finished is unknown`,
            );
          }
        }
        await this.pause(
          () => poked,
          (w) => (wake = w),
        );
        wake = () => (poked = true);
      }
    } finally {
      stop.removeEventListener('abort', onStop);
      this.waiting.delete(runId);
    }
  }

  /** Waits one poll, or less when woken (`poked`: woken while the row was being read). */
  private pause(poked: () => boolean, setWake: (wake: () => void) => void): Promise<void> {
    return new Promise<void>((resolve) => {
      if (poked()) return resolve();
      const timer = setTimeout(() => resolve(), this.pollMs);
      setWake(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  /**
   * The row could not be read for longer than it may wait: withdrawn when still unclaimed (then it
   * never runs: retry), else its node is asked to cancel and the run counts as failed, not as never
   * run, so that a retry (a webhook's key let go) does not run the job twice.
   */
  private async giveUp(runId: string, replica: string, startedAt: number): Promise<AgentRunOutcome> {
    const { store, logger } = this.deps;
    const withdrawn = await store.withdraw(runId).catch(() => false);
    if (withdrawn)
      throw new DomainError(
        'unavailable',
        `the job for replica '${replica}' could not be followed (database unreachable); nothing ran: retry`,
        {
          replica,
        },
      );
    await store
      .cancel(runId)
      .catch((error: unknown) => logger.warn({ err: messageOf(error), run_id: runId }, 'could not pass a cancel on'));
    return unfollowed(
      runId,
      replica,
      startedAt,
      `the run on replica '${replica}' could not be followed (database unreachable); it was asked to stop`,
    );
  }

  // ---- the home node ----

  private claimSoon(): void {
    if (this.closing.signal.aborted) return;
    if (this.claiming) {
      this.claimAgain = true;
      return;
    }
    this.claiming = (async () => {
      do {
        this.claimAgain = false;
        await this.claimRound().catch((error: unknown) =>
          this.deps.logger.warn({ err: messageOf(error) }, 'could not claim handed-over jobs'),
        );
      } while (this.claimAgain && !this.closing.signal.aborted);
    })().finally(() => (this.claiming = undefined));
  }

  private async claimRound(): Promise<void> {
    const { store, nodeId } = this.deps;
    if (Date.now() - this.lastSweep > SWEEP_EVERY_MS) {
      this.lastSweep = Date.now();
      await store.sweep();
    }
    const held = this.deps.local
      .processes()
      .filter((p) => p.phase === 'up')
      .map((p) => ({ agentId: p.agentId, replica: p.replica }));
    if (held.length === 0) return;
    const rows = await store.claim(nodeId, held, this.deps.aliveMs, CLAIM_BATCH);
    for (const row of rows) void this.track(this.serve(row));
    if (rows.length === CLAIM_BATCH) this.claimAgain = true;
  }

  private async serve(row: ClaimedHandoff): Promise<void> {
    const { store, nodeId, aliveMs } = this.deps;
    const controller = new AbortController();
    this.serving.set(row.id, controller);
    if (row.cancel_requested) controller.abort(new DomainError('unavailable', 'the run was cancelled'));
    const keepAlive = setInterval(
      () =>
        void store.renew(row.id, nodeId, aliveMs).then(
          (cancelled) => {
            // undefined: the row is gone (its sender gave up and withdrew it): nobody would receive the outcome.
            if (cancelled !== false) controller.abort(new DomainError('unavailable', 'the run was cancelled'));
          },
          () => undefined,
        ),
      Math.max(100, Math.floor(aliveMs / 3)),
    );
    keepAlive.unref();
    let result: Result;
    let job: TriggerJob | undefined;
    try {
      job = JSON.parse(this.deps.sealer.open(jobContext(row.id), row.job)) as TriggerJob;
      // The seal binds the run id only: a row moved to another agent or replica (written to the database directly) is refused.
      if (job.agentId !== row.agent_id || job.replica !== row.replica)
        throw new DomainError('forbidden', 'the handed-over job does not belong to the agent or replica its row names; nothing ran');
      const started = this.deps
        .dispatcher()
        .start({ ...job, agentId: row.agent_id, replica: row.replica, runId: row.id, signal: controller.signal });
      void started.began.then(
        () => store.began(row.id, nodeId).catch(() => undefined),
        () => undefined,
      );
      result = { outcome: await started.done };
      await this.deps
        .servedHere?.(job, result.outcome)
        .catch((error: unknown) =>
          this.deps.logger.warn({ err: messageOf(error), run_id: row.id }, 'could not keep a handed-over run’s outcome for its trigger'),
        );
    } catch (error) {
      if (!isDomainError(error)) this.deps.logger.error({ err: messageOf(error), run_id: row.id }, 'a handed-over job failed unexpectedly');
      result = {
        refusal: isDomainError(error)
          ? { type: error.type, message: error.message, ...(error.details ? { details: error.details } : {}) }
          : { type: 'internal_error', message: 'the job could not be run; the operator can find details in the server log' },
      };
      // Refused here: told to its trigger as its sender would see it (nothing ran: `rejected`), for the
      // sender that stopped following it (a keyed delivery's key is then let go, or its end kept).
      if (job)
        await this.deps
          .servedHere?.(
            job,
            {
              runId: row.id,
              replica: row.replica,
              status: notRunRefusal(error) ? 'rejected' : 'failed',
              error: { type: result.refusal.type, message: result.refusal.message },
              durationMs: 0,
            },
            notRunRefusal(error),
          )
          .catch((e: unknown) =>
            this.deps.logger.warn({ err: messageOf(e), run_id: row.id }, 'could not tell a handed-over job’s trigger it was refused'),
          );
    } finally {
      clearInterval(keepAlive);
      this.serving.delete(row.id);
    }
    await store.finish(row.id, nodeId, this.deps.sealer.seal(resultContext(row.id), JSON.stringify(result))).catch((error: unknown) => {
      // Its sender then sees the claim lapse: the run's outcome is lost to it, not the run's record.
      this.deps.logger.warn({ err: messageOf(error), run_id: row.id }, 'could not hand a run’s outcome back');
    });
  }
}

/** A handed-over run this node stopped following: failed as `unavailable` here, its record on the home node has its real end. */
function unfollowed(runId: string, replica: string, startedAt: number, message: string): AgentRunOutcome {
  return { runId, replica, status: 'failed', error: { type: 'unavailable', message }, durationMs: Date.now() - startedAt };
}
