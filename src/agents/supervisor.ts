/**
 * Agent replicas as real worker processes. Each server process (node) runs one ReplicaSupervisor:
 * it claims replicas of running agents that no node holds (agent_replicas rows, FOR UPDATE SKIP
 * LOCKED), renews its leases on a timer, and runs each replica it holds as its own worker process
 * (./worker/host.ts). A crashed process is restarted with the same name after a back-off; a replica
 * being stopped or removed finishes its current run first (up to a deadline), then ends. On shutdown
 * the node lets go of its leases so other nodes take its replicas at once. A node that cannot renew
 * its leases for a lease's length ends its processes itself: by then another node may hold them.
 *
 * Its surface for the triggers: `localReplicas(agentId)` (running replicas this node holds) and
 * `run(...)` (one job on a named local replica, through its process).
 */
import type { SkipReason } from '../core/agent-orchestration.js';
import { DomainError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { exitReason, nextStreak, replicaHeapMb, restartDelayMs } from '../core/replicas.js';
import { DEFAULT_TIER, limitsFor, type TierLimits } from '../core/tiers.js';
import type { HeldReplica, ReplicasStore } from '../store/replicas-store.js';
import { forModelOf, type JobHost, type JobResult, type RunnerJob } from './dispatcher.js';
import type { CallAnswer } from './orchestration/loop.js';
import { ReplicaCrashedError, ReplicaProcess, type ExitInfo, type JobError } from './worker/host.js';
import { LoopResultShape, type AiJob, type CallOp } from './worker/protocol.js';

export { ReplicaCrashedError } from './worker/host.js';

export interface ReplicaJob {
  runId: string;
  trigger: 'schedule' | 'webhook' | 'chat' | 'heartbeat';
  triggerName: string;
  /** direct (the default): the function once; run_then_reason: the function, then the model; reason_first: the model. */
  mode?: 'direct' | 'run_then_reason' | 'reason_first';
  /** 'service.function' (absent for a chat or heartbeat) */
  functionName?: string | undefined;
  input: unknown;
  /** AI jobs: the model, tools and limits (the key opened for this job only). */
  ai?: AiJob | undefined;
  /** AI jobs: epoch ms when the run's time is up; its host calls are stopped then, and a worker still on it a little later is killed. */
  deadline?: number | undefined;
  signal?: AbortSignal;
  /** Called once the replica took the job (queued behind its earlier jobs); not called when refused. */
  onQueued?: () => void;
}

/** What the host does for a job's calls: run a function through the run path (and, when given, state operations). */
export interface ReplicaHostCalls {
  /** `signal` fires when the run is cancelled or its replica's drain deadline passes. */
  invoke(functionName: string, input: unknown, signal: AbortSignal): Promise<unknown>;
  state?(request: Exclude<CallOp, { op: 'invoke' | 'tool' | 'progress' | 'skipped' }>): Promise<unknown>;
  /** AI jobs: one tool call of the loop (the host refuses what it does not offer). */
  tool?(name: string, args: Record<string, unknown>, signal: AbortSignal): Promise<CallAnswer>;
  /** AI jobs: the loop's running totals after each model turn. */
  progress?(totals: { iterations: number; usage: { input_tokens: number; output_tokens: number; estimated?: boolean } }): void;
  /** AI jobs: a turn's tool calls the loop never sent (kept in the run's record, even after the run stopped). */
  skipped?(calls: Array<{ name: string; reason: SkipReason }>, more: number, moreForbidden: number): void;
}

export type ReplicaJobOutcome = { ok: true; result: unknown } | { ok: false; error: JobError };

interface Held {
  id: string;
  agentId: string;
  agentName: string;
  name: string;
  seq: number;
  tier: string;
  process: ReplicaProcess | undefined;
  /** starting: its process is being started; up: it runs; backoff: waiting to restart after a crash; ending: being stopped or removed. */
  phase: 'starting' | 'up' | 'backoff' | 'ending';
  streak: number;
  restartTimer: NodeJS.Timeout | undefined;
  /** Jobs run one at a time: the tail of this replica's queue. */
  queue: Promise<unknown>;
  /** The job running now (aborted when a drain's deadline passes). */
  current: AbortController | undefined;
  waiting: number;
  /** Its process is up but its row was not marked running for this node (a round tries again). */
  unmarked?: boolean;
  /** Set when it is being stopped or removed: resolves once its process has ended and its row says so. */
  ended?: Promise<void>;
}

export interface ReplicaSupervisorOptions {
  store: ReplicasStore;
  /** This server process's id (services/instance-lease.ts): what node_id names. */
  nodeId: string;
  leaseMs: number;
  logger: Logger;
  tiers?: Readonly<Record<string, TierLimits>>;
  /** How often leases are renewed and free replicas claimed (default a third of the lease, at most 1 s). */
  tickMs?: number;
  /** Most replicas one node claims per tick (others may claim the rest meanwhile). */
  claimBatch?: number;
  /** Most replicas (worker processes) this node holds at once (MCPWORKS_MAX_REPLICAS_PER_NODE); the rest stay unplaced for another node. */
  maxReplicas?: number;
}

export const DEFAULT_MAX_REPLICAS_PER_NODE = 64;

/** How many function runs a worker may ask for in one `direct` job: the trigger's function, once. */
const DIRECT_INVOKES_PER_JOB = 1;

/** A worker that has not ended an AI job this long after it was stopped (deadline, cancel) is killed. */
const AI_JOB_KILL_GRACE_MS = 10_000;
/** How long a drain waits for a job it stopped to end by itself before the process is ended. */
const JOB_STOP_GRACE_MS = 3_000;

/** A stopped or removed replica may finish its current run for the tier's run timeout and this much more. */
const DRAIN_SLACK_MS = 30_000;

export class ReplicaSupervisor {
  private readonly held = new Map<string, Held>();
  private timer: NodeJS.Timeout | undefined;
  private ticking: Promise<void> | undefined;
  private lastRenewed = Date.now();
  private stopped = false;
  private readonly endings = new Set<Promise<void>>();

  constructor(private readonly options: ReplicaSupervisorOptions) {}

  get nodeId(): string {
    return this.options.nodeId;
  }

  private get tickMs(): number {
    return this.options.tickMs ?? Math.max(50, Math.min(1000, Math.floor(this.options.leaseMs / 3)));
  }

  start(): void {
    this.lastRenewed = Date.now();
    this.timer = setInterval(() => {
      this.watchdog();
      void this.tick();
    }, this.tickMs);
    this.timer.unref();
    void this.tick();
  }

  /**
   * Self-fencing apart from the rounds: past 0.8 of the lease since the last renewal (a round hung on a
   * half-open connection or a lock, or failing), every local replica is ended, before another node may
   * take them once the lease lapses. Runs on the timer whatever the round does.
   */
  watchdog(): void {
    if (this.stopped || this.held.size === 0) return;
    if (Date.now() - this.lastRenewed <= this.options.leaseMs * 0.8) return;
    for (const held of [...this.held.values()]) {
      if (held.phase !== 'ending') this.forget(held, 'its lease was not renewed in time');
    }
  }

  /** One round: renew, act on what the rows say, settle what dead nodes left, claim free replicas. Rounds never overlap. */
  tick(): Promise<void> {
    if (this.stopped) return Promise.resolve();
    this.ticking ??= this.round()
      .catch((error: unknown) =>
        this.options.logger.warn(
          { err: error instanceof Error ? error.message : String(error) },
          'agent replicas: a supervisor round failed',
        ),
      )
      .finally(() => (this.ticking = undefined));
    return this.ticking;
  }

  private async round(): Promise<void> {
    const { store, nodeId, leaseMs } = this.options;
    let rows: HeldReplica[];
    try {
      // Bounded: a renewal hung past half the lease counts as failed (the watchdog fences at 0.8).
      let timer: NodeJS.Timeout | undefined;
      rows = await Promise.race([
        store.renew(nodeId, leaseMs),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error('renewing the replica leases timed out')), Math.max(1, Math.floor(leaseMs / 2)));
          timer.unref();
        }),
      ]).finally(() => clearTimeout(timer));
    } catch (error) {
      // Without renewals another node takes these replicas once the lease lapses: end them first.
      if (Date.now() - this.lastRenewed > leaseMs * 0.8) {
        for (const held of [...this.held.values()]) this.forget(held, 'its lease could not be renewed (database unreachable)');
      }
      throw error;
    }
    this.lastRenewed = Date.now();
    const seen = new Set<string>();
    for (const row of rows) {
      seen.add(row.id);
      const held = this.held.get(row.id);
      const ending = row.status === 'stopping' || row.status === 'draining' || row.agent_status !== 'running';
      if (!held) {
        // Held in the database but not here (a round that claimed it failed half-way): let it go.
        if (!ending) this.adopt(row);
        else void store.finishEnding(row.id, nodeId, 'ended before its process started').catch(() => undefined);
        continue;
      }
      if (ending && held.phase !== 'ending') this.end(held, row.status === 'draining' ? 'removed' : 'stopped');
      else if (!ending && held.unmarked && held.phase === 'starting') await this.markAgain(held, row.status);
    }
    for (const held of [...this.held.values()]) {
      // Destroyed, or taken over by another node after this one's lease lapsed.
      if (!seen.has(held.id) && held.phase !== 'ending') this.forget(held, 'no longer held by this node');
    }
    if (this.stopped) return;
    await store.settleOrphans();
    // Up to this node's process cap: replicas past it stay unplaced (pending) until a node with room claims them.
    const room = (this.options.maxReplicas ?? DEFAULT_MAX_REPLICAS_PER_NODE) - this.held.size;
    if (room <= 0) return;
    for (const row of await store.claim(nodeId, leaseMs, Math.min(this.options.claimBatch ?? 16, room))) this.adopt(row);
  }

  /** A replica whose process is up but whose row was not marked: offered once the row says running for this node. */
  private async markAgain(held: Held, status: string): Promise<void> {
    const marked = status === 'running' || (await this.options.store.markRunning(held.id, this.options.nodeId).catch(() => false));
    if (!marked || held.phase !== 'starting' || !held.unmarked) return;
    held.unmarked = false;
    held.phase = 'up';
    this.options.logger.info({ agent: held.agentName, replica: held.name, pid: held.process?.pid }, 'agent replica started');
  }

  private limits(tier: string): TierLimits {
    try {
      return limitsFor(tier, this.options.tiers);
    } catch {
      return limitsFor(DEFAULT_TIER);
    }
  }

  private adopt(row: HeldReplica): void {
    const held: Held = {
      id: row.id,
      agentId: row.agent_id,
      agentName: row.agent_name,
      name: row.name,
      seq: row.seq,
      tier: row.tier ?? DEFAULT_TIER,
      process: undefined,
      phase: 'starting',
      streak: 0,
      restartTimer: undefined,
      queue: Promise.resolve(),
      current: undefined,
      waiting: 0,
    };
    this.held.set(row.id, held);
    void this.launch(held);
  }

  /** Starts the replica's process and records it running; a start that fails counts as a crash. */
  private async launch(held: Held): Promise<void> {
    if (held.phase === 'ending' || this.stopped) return;
    held.phase = 'starting';
    const child = new ReplicaProcess(held.agentName, held.name, replicaHeapMb(this.limits(held.tier).memoryMb));
    held.process = child;
    void child.exited.then((exit) => this.onExit(held, child, exit));
    try {
      await child.start();
    } catch {
      // Its exit (or the kill after a silent start) is handled by onExit as a crash.
      return;
    }
    const phase = (): Held['phase'] => held.phase;
    if (held.process !== child || phase() === 'ending') return;
    if (!(await this.options.store.markRunning(held.id, this.options.nodeId).catch(() => false))) {
      // Not ours any more (destroyed, stopped meanwhile) or the database away: not offered to triggers
      // until its row says running for this node; the next round settles it or marks it again.
      held.unmarked = true;
      return;
    }
    if (phase() === 'ending') return;
    held.unmarked = false;
    held.phase = 'up';
    this.options.logger.info({ agent: held.agentName, replica: held.name, pid: child.pid }, 'agent replica started');
  }

  private onExit(held: Held, child: ReplicaProcess, exit: ExitInfo): void {
    if (exit.expected || held.process !== child || held.phase === 'ending' || this.held.get(held.id) !== held) return;
    held.process = undefined;
    held.phase = 'backoff';
    held.streak = nextStreak(held.streak, exit.upMs);
    const reason = exitReason(exit.code, exit.signal, exit.outOfMemory);
    const delay = restartDelayMs(held.streak);
    this.options.logger.warn(
      { agent: held.agentName, replica: held.name, last_exit: reason, restart_in_ms: delay },
      'agent replica crashed: restarting it',
    );
    void this.options.store.recordCrash(held.id, this.options.nodeId, reason).catch(() => undefined);
    held.restartTimer = setTimeout(() => {
      held.restartTimer = undefined;
      if (held.phase === 'backoff' && this.held.get(held.id) === held) void this.launch(held);
    }, delay);
    held.restartTimer.unref();
  }

  /** Lets the replica finish its current run (up to the deadline), ends its process, then records it stopped or removed. */
  private end(held: Held, to: 'stopped' | 'removed'): void {
    held.phase = 'ending';
    if (held.restartTimer) clearTimeout(held.restartTimer);
    const deadline = (this.limits(held.tier).timeoutSeconds * 1000 + DRAIN_SLACK_MS) as number;
    const ending = (async () => {
      await this.drain(held, deadline);
      const exit = held.process ? await held.process.stop() : undefined;
      const why = to === 'removed' ? 'removed (scaled down or destroyed)' : 'stopped';
      await this.options.store
        .finishEnding(held.id, this.options.nodeId, exit ? `${why}; ${exitReason(exit.code, exit.signal)}` : why)
        .catch(() => undefined);
      // Only now: until its row says stopped, a settle (stop_agent's answer) must find it here and wait.
      if (this.held.get(held.id) === held) this.held.delete(held.id);
      this.options.logger.info({ agent: held.agentName, replica: held.name }, `agent replica ${why}`);
    })();
    held.ended = ending;
    this.endings.add(ending);
    void ending.finally(() => this.endings.delete(ending));
  }

  /** Waits for the replica's queued and current jobs, up to `ms`; then aborts the one still running. */
  private async drain(held: Held, ms: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'late'>((resolve) => {
      timer = setTimeout(() => resolve('late'), ms);
      timer.unref();
    });
    const done = await Promise.race([held.queue.then(() => 'done' as const), late]);
    clearTimeout(timer);
    if (done !== 'late' || !held.current) return;
    held.current.abort(new DomainError('unavailable', `replica '${held.name}' was stopped: its drain deadline passed`));
    // Told to stop, the worker ends its job itself (an AI run as cancelled, with its tokens): its
    // `done` is waited for a moment before its process is ended (that would record a crash).
    const stopping = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, JOB_STOP_GRACE_MS);
      timer.unref();
    });
    await Promise.race([held.queue, stopping]);
    clearTimeout(timer);
  }

  /** Ends a replica's process at once (lost lease, destroyed agent); no row is written: it is not ours. */
  private forget(held: Held, why: string): void {
    held.phase = 'ending';
    if (held.restartTimer) clearTimeout(held.restartTimer);
    this.held.delete(held.id);
    held.current?.abort(new DomainError('unavailable', `replica '${held.name}' ended: ${why}`));
    void held.process?.stop('SIGKILL');
    this.options.logger.warn({ agent: held.agentName, replica: held.name, why }, 'agent replica ended');
  }

  /** Names of the agent's replicas this node holds with their process up (not being stopped or removed). */
  localReplicas(agentId: string): string[] {
    return [...this.held.values()]
      .filter((h) => h.agentId === agentId && h.phase === 'up')
      .sort((a, b) => a.seq - b.seq)
      .map((h) => h.name);
  }

  /**
   * After a start, stop or scale: one round now (claims what no node holds, sees what ends), then
   * waits, up to `ms`, until the agent's replicas here have their process up and its idle ending
   * ones have ended (a replica finishing a run is not waited for). Tools answer with settled rows.
   */
  async settle(agentId: string, ms = 30_000): Promise<void> {
    if (this.stopped) return;
    await this.freshRound();
    const until = Date.now() + ms;
    const mine = () => [...this.held.values()].filter((h) => h.agentId === agentId);
    // Idle ones being stopped or removed end at once; one finishing a run is not waited for.
    const idleEndings = mine()
      .filter((h) => h.phase === 'ending' && h.current === undefined && h.waiting === 0 && h.ended)
      .map((h) => h.ended!);
    while (mine().some((h) => h.phase === 'starting') && Date.now() < until) await new Promise((resolve) => setTimeout(resolve, 20));
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.all(idleEndings),
      new Promise((resolve) => {
        timer = setTimeout(resolve, Math.max(0, until - Date.now()));
        timer.unref();
      }),
    ]);
    clearTimeout(timer);
  }

  /**
   * A round that begins after this call: one already in flight may have looked for free replicas
   * before the caller's change committed (a start answered with its replicas unclaimed), so it is
   * waited for, then another is run.
   */
  private async freshRound(): Promise<void> {
    if (this.ticking) await this.ticking;
    await this.tick();
  }

  /**
   * The agent's replicas up here (only `replica` if named), waiting up to `ms` while one is on its
   * way: its process starting, or restarting after a crash, here; or no node holding it yet (one
   * fresh round claims it). Empty at once when none is coming here (stopped, held by another node).
   * Chats and webhook deliveries sent right after start_agent or scale_agent, or during a restart, wait here.
   */
  async upReplicas(agentId: string, ms: number, options: { replica?: string; signal?: AbortSignal } = {}): Promise<string[]> {
    const { replica, signal } = options;
    const until = Date.now() + ms;
    let rounded = false;
    let pause = 20;
    for (;;) {
      const up = this.localReplicas(agentId).filter((name) => replica === undefined || name === replica);
      if (up.length > 0 || this.stopped || signal?.aborted) return up;
      const coming = [...this.held.values()].some(
        (h) => h.agentId === agentId && (replica === undefined || h.name === replica) && (h.phase === 'starting' || h.phase === 'backoff'),
      );
      if (!coming) {
        if (rounded) return [];
        rounded = true;
        await this.freshRound();
        continue;
      }
      if (Date.now() >= until) return [];
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          signal?.removeEventListener('abort', done);
          resolve();
        };
        const timer = setTimeout(done, Math.min(pause, Math.max(1, until - Date.now())));
        signal?.addEventListener('abort', done, { once: true });
      });
      pause = Math.min(250, pause * 2);
    }
  }

  /** Whether this node runs any replica of the agent. */
  isRunning(agentId: string): boolean {
    return this.localReplicas(agentId).length > 0;
  }

  /** Jobs waiting or running on each local replica of the agent (callers pick the least busy). */
  load(agentId: string): Map<string, number> {
    return new Map([...this.held.values()].filter((h) => h.agentId === agentId && h.phase === 'up').map((h) => [h.name, h.waiting]));
  }

  /** This node's replicas and their processes (diagnostics and tests). */
  processes(): Array<{ agentId: string; agent: string; replica: string; phase: string; pid: number | undefined }> {
    return [...this.held.values()].map((h) => ({
      agentId: h.agentId,
      agent: h.agentName,
      replica: h.name,
      phase: h.phase,
      pid: h.process?.pid,
    }));
  }

  /** The pid of a local replica's process (diagnostics and tests). */
  pidOf(agentId: string, replica: string): number | undefined {
    return this.find(agentId, replica)?.process?.pid;
  }

  private find(agentId: string, replica: string): Held | undefined {
    return [...this.held.values()].find((h) => h.agentId === agentId && h.name === replica);
  }

  /**
   * Runs one job on a local replica's process, after the jobs already queued on it. In `direct`
   * mode the worker asks for exactly the job's function, which `calls.invoke` runs; anything else
   * it asks for is refused. Rejects with ReplicaCrashedError when the process dies during the job,
   * and with an `unavailable` DomainError when this node does not run that replica.
   */
  run(agentId: string, replica: string, job: ReplicaJob, calls: ReplicaHostCalls): Promise<ReplicaJobOutcome> {
    const held = this.find(agentId, replica);
    if (!held || held.phase !== 'up' || this.stopped)
      return Promise.reject(new DomainError('unavailable', `replica '${replica}' is not running on this server`, { replica }));
    held.waiting++;
    job.onQueued?.();
    const turn = held.queue.then(() => this.runNow(held, job, calls));
    held.queue = turn.catch(() => undefined).finally(() => held.waiting--);
    return turn;
  }

  private async runNow(held: Held, job: ReplicaJob, calls: ReplicaHostCalls): Promise<ReplicaJobOutcome> {
    const child = held.process;
    if (!child || (held.phase !== 'up' && held.phase !== 'ending'))
      throw new DomainError('unavailable', `replica '${held.name}' was not running when the run's turn came`, { replica: held.name });
    const controller = new AbortController();
    const onAbort = () => controller.abort(job.signal?.reason ?? new DomainError('unavailable', 'the run was cancelled'));
    job.signal?.addEventListener('abort', onAbort, { once: true });
    if (job.signal?.aborted) onAbort();
    held.current = controller;
    let invocations = 0;
    const mode = job.mode ?? 'direct';
    const ai = mode !== 'direct' && job.ai !== undefined;
    // AI jobs: at the deadline the host's calls stop (the worker stops its loop by its own clock); a
    // cancel is passed on to the worker; a worker still on the job a little later is killed (a crash).
    let deadlineHit = false;
    let deadlineTimer: NodeJS.Timeout | undefined;
    let killTimer: NodeJS.Timeout | undefined;
    const onStop = () => {
      if (!ai) return;
      if (!deadlineHit) child.cancel(job.runId);
      killTimer ??= setTimeout(() => child.terminate(), AI_JOB_KILL_GRACE_MS);
      killTimer.unref();
    };
    controller.signal.addEventListener('abort', onStop, { once: true });
    if (ai && job.deadline !== undefined) {
      deadlineTimer = setTimeout(
        () => {
          deadlineHit = true;
          controller.abort(new DomainError('limit_exceeded', 'the run reached its time limit (max_execution_time)'));
        },
        Math.max(0, job.deadline - Date.now()),
      );
      deadlineTimer.unref();
    }
    try {
      return await child.run(
        {
          job: job.runId,
          mode,
          trigger: job.trigger,
          triggerName: job.triggerName,
          ...(job.functionName !== undefined ? { function: job.functionName } : {}),
          input: job.input,
          ...(ai ? { ai: job.ai } : {}),
        },
        async (request) => {
          if (request.op === 'progress') {
            if (ai) calls.progress?.({ iterations: request.iterations, usage: request.usage });
            return null;
          }
          if (request.op === 'skipped') {
            if (ai) calls.skipped?.(request.calls, request.more, Math.min(request.moreForbidden ?? 0, request.more));
            return null;
          }
          if (controller.signal.aborted) throw controller.signal.reason ?? new DomainError('unavailable', 'the run was cancelled');
          if (request.op === 'invoke') {
            // The trigger's function and nothing else (a reason_first or chat job has none)...
            if (job.functionName === undefined || request.function !== job.functionName)
              throw new DomainError('forbidden', `this run may not call ${request.function} directly`);
            // ...once: a worker asking again (a compromised or faulty one) is refused, never a second run.
            if (invocations++ >= DIRECT_INVOKES_PER_JOB)
              throw new DomainError('forbidden', `a run calls its trigger's function ${job.functionName} once; this job already did`);
            return abortable(calls.invoke(request.function, request.input, controller.signal), controller.signal);
          }
          if (request.op === 'tool') {
            if (!ai || !calls.tool) throw new DomainError('forbidden', 'this run has no tools: it is not an AI run');
            return abortable(calls.tool(request.name, request.arguments, controller.signal), controller.signal);
          }
          if (!calls.state) throw new DomainError('unavailable', 'state operations are not available to this run');
          return calls.state(request);
        },
      );
    } finally {
      held.current = undefined;
      controller.signal.removeEventListener('abort', onStop);
      // A job that has ended leaves nothing running: a call still in flight (the worker stopped at
      // its deadline a moment before this host's timer fired) is stopped now.
      if (!controller.signal.aborted) controller.abort(new DomainError('unavailable', 'the job has ended'));
      clearTimeout(deadlineTimer);
      clearTimeout(killTimer);
      job.signal?.removeEventListener('abort', onAbort);
    }
  }

  /**
   * Shutdown: no new claims or jobs; the replicas' current runs finish (up to `graceMs`), their
   * processes end, and the node lets go of every lease so other nodes take them at once.
   */
  async stop(graceMs = 10_000): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    await this.ticking;
    const all = [...this.held.values()];
    await Promise.all(
      all.map(async (held) => {
        if (held.restartTimer) clearTimeout(held.restartTimer);
        await this.drain(held, graceMs);
        await held.process?.stop();
      }),
    );
    await Promise.all([...this.endings]);
    this.held.clear();
    await this.options.store
      .releaseAll(this.options.nodeId)
      .catch((error: unknown) =>
        this.options.logger.warn(
          { err: error instanceof Error ? error.message : String(error) },
          'agent replicas: could not release the leases',
        ),
      );
  }
}

/**
 * The dispatcher's JobRunner: a trigger job on its replica's worker process. A `direct` job's worker
 * asks for the job's function, which `host.invoke` runs through src/run; an AI job's worker runs the
 * loop and asks for each tool call (`host.tool`) and, in run_then_reason, for the function first. A
 * process that dies during the job ends it `failed` with ReplicaCrashed; a replica this node does not
 * run is an `unavailable` refusal; an AI job's outcome is checked against the protocol.
 */
export function replicaRunner(supervisor: () => ReplicaSupervisor) {
  return async (job: RunnerJob, host: JobHost, accepted?: () => void): Promise<JobResult> => {
    let outcome: JobResult['function'];
    let progress: JobResult['progress'];
    const direct = job.orchestrationMode === 'direct';
    const failure = (type: string, message: string): JobResult => {
      if (!direct) return { ...(outcome ? { function: outcome } : {}), ...(progress ? { progress } : {}), failure: { type, message } };
      return {
        function: {
          status: 'failed',
          error: { type, message },
          call: outcome?.call ?? {
            function: job.functionName ?? '',
            execution_id: null,
            status: 'failed',
            duration_ms: 0,
            error_type: type,
          },
        },
      };
    };
    try {
      const done = await supervisor().run(
        job.agentId,
        job.replica,
        {
          runId: job.runId ?? 'run',
          trigger: job.trigger,
          triggerName: job.triggerName,
          mode: job.orchestrationMode,
          functionName: job.functionName,
          input: job.input,
          ai: job.ai,
          deadline: job.deadline,
          ...(job.signal ? { signal: job.signal } : {}),
          ...(accepted ? { onQueued: accepted } : {}),
        },
        {
          invoke: async (_fn, input, signal) => {
            outcome = await host.invoke(input, signal);
            // An AI job's model reads the outcome as the host scanned and capped it, failed or not.
            if (!direct) return forModelOf(outcome);
            if (outcome.status === 'succeeded') return outcome.result ?? null;
            throw Object.assign(new Error(outcome.error?.message ?? 'the run failed'), { type: outcome.error?.type ?? outcome.status });
          },
          ...(host.tool ? { tool: host.tool } : {}),
          ...(host.skipped ? { skipped: host.skipped } : {}),
          progress: (totals) => (progress = totals),
        },
      );
      if (direct) {
        if (outcome) return { function: outcome };
        // The worker ended the job without running its function.
        return failure(
          'ReplicaCrashed',
          done.ok ? 'the replica ended the job without running its function' : `${done.error.type}: ${done.error.message}`,
        );
      }
      if (!done.ok) return failure(done.error.type === 'cancelled' ? 'cancelled' : 'ReplicaError', done.error.message);
      const parsed = LoopResultShape.safeParse(done.result);
      if (!parsed.success) return failure('ReplicaProtocolError', "the replica's outcome did not fit the protocol");
      return { ...(outcome ? { function: outcome } : {}), loop: parsed.data.loop };
    } catch (error) {
      if (error instanceof ReplicaCrashedError) return failure('ReplicaCrashed', error.message);
      throw error;
    }
  };
}

/** The invoke's answer, or the abort's reason as soon as the signal fires (the run itself is cancelled by its own signal). */
function abortable<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    work.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(error);
      },
    );
  });
}
