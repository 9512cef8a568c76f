// Every agent trigger (schedule fire, webhook delivery, chat turn, heartbeat) ends here: the run is
// recorded, its function runs through src/run's single entry as the agent (admission, metering,
// scanning, the execution record), and how it ended is recorded. No other path reaches a sandbox.
import { randomUUID } from 'node:crypto';
import { DomainError } from '../core/errors.js';
import { agentPrincipal, type AgentTrigger } from '../core/principal.js';
import type { Logger } from '../core/logger.js';
import type { AgentRunEnd, AgentRunsStore } from '../store/agent-runs-store.js';
import { isRetryableStoreError } from '../store/db-health.js';
import type { PendingWrites } from '../store/pending-writes.js';
import type { AgentsStore } from '../store/agents-store.js';
import type { AgentRunCall } from '../store/schema.js';
import { CANCELLED, INTERRUPTED, type RunResult, type RunService } from '../run/run-service.js';
import { parseFunctionName } from '../core/agents.js';
import type { AgentStateAccess } from '../core/agent-state-access.js';

export const ORCHESTRATION_MODES = ['direct', 'run_then_reason', 'reason_first'] as const;
export type OrchestrationMode = (typeof ORCHESTRATION_MODES)[number];

export interface TriggerJob {
  agentId: string;
  /** The replica that runs it (the trigger chose it among the agent's running replicas). */
  replica: string;
  trigger: AgentTrigger;
  /** The schedule's or webhook's name. */
  triggerName: string;
  /** The fire's or delivery's id. */
  triggerRef?: string;
  /** 'service.function' */
  functionName: string;
  input: unknown;
  orchestrationMode: 'direct';
  /** Preassigned run id (a webhook answers 202 {run_id} before the run ends). */
  runId?: string;
  signal?: AbortSignal;
}

export type AgentRunStatus = 'succeeded' | 'failed' | 'cancelled' | 'rejected';

export interface AgentRunOutcome {
  runId: string;
  replica: string;
  /** rejected: refused by the account's quota, rate or concurrency (not counted). */
  status: AgentRunStatus;
  result?: unknown;
  error?: { type: string; message: string };
  durationMs: number;
}

/**
 * How a job's function is run: in this process (the default) or in the replica's worker process.
 * `run` takes the runner's own abort signal too (a drain deadline, a lost lease). A runner that
 * refuses the job before `run` was called rejects with DomainError('unavailable'): the run is then
 * recorded `rejected` and the dispatch rejects, so its trigger knows the function never ran.
 * `accepted` tells the dispatcher the runner took the job (queued on its replica).
 */
export type JobRunner = (
  job: TriggerJob,
  run: (input: unknown, signal?: AbortSignal) => Promise<FunctionOutcome>,
  accepted?: () => void,
) => Promise<FunctionOutcome>;

/** Whether a dispatch's rejection means its function never ran (the trigger may offer it again). */
export function notRunRefusal(error: unknown): error is DomainError {
  return error instanceof DomainError && error.type === 'unavailable';
}

/** One function execution's outcome as a trigger run sees it. */
export interface FunctionOutcome {
  status: AgentRunStatus;
  result?: unknown;
  error?: { type: string; message: string };
  call: AgentRunCall;
}

export class AgentDispatcher {
  /** Aborted when the server stops: runs in flight are stopped and recorded as cancelled. */
  private readonly closing = new AbortController();
  private readonly inFlight = new Set<Promise<unknown>>();

  constructor(
    private readonly deps: {
      agents: AgentsStore;
      runs: AgentRunsStore;
      run: Pick<RunService, 'invoke'>;
      nodeId: string;
      logger: Logger;
      /** Holds a run's last write while the database is away (the run endpoint's outbox). */
      pending?: Pick<PendingWrites, 'add'>;
      /** Where `direct` jobs execute (replaced by the replica supervisor's worker hop). */
      runner?: JobRunner;
      /** The agent's state for its runs' `mcpworks.state` (AgentService.stateAccess). */
      state?: (agentId: string, tier: string) => AgentStateAccess;
    },
  ) {}

  /**
   * Records the run, runs it, records how it ended, and answers the outcome: a run's own failure is
   * an outcome, never a rejection. Rejects only with a DomainError: the agent is gone (not_found),
   * the run id is taken (conflict), the server is stopping or its database away (unavailable).
   */
  dispatch(job: TriggerJob): Promise<AgentRunOutcome> {
    return this.start(job).done;
  }

  /**
   * The run id at once; `began` when the job was taken (its runner accepted it, or its function
   * started), rejecting like `done` when it was refused before; the outcome when the run has ended
   * and been recorded.
   */
  start(job: TriggerJob): { runId: string; began: Promise<void>; done: Promise<AgentRunOutcome> } {
    const runId = job.runId ?? randomUUID();
    if (this.closing.signal.aborted) {
      const refused = Promise.reject(new DomainError('unavailable', 'the server is stopping; the trigger was not run'));
      refused.catch(() => undefined);
      return { runId, began: refused, done: refused };
    }
    let markBegan!: () => void;
    const began = new Promise<void>((resolve) => (markBegan = resolve));
    const done = this.execute(runId, job, () => markBegan());
    const beganOrRefused = Promise.race([began, done.then(() => undefined)]);
    beganOrRefused.catch(() => undefined);
    this.inFlight.add(done);
    void done.then(
      () => this.inFlight.delete(done),
      () => this.inFlight.delete(done),
    );
    return { runId, began: beganOrRefused, done };
  }

  /** Stops taking jobs, stops the runs in flight (recorded as cancelled) and waits for their records. */
  async close(): Promise<void> {
    this.closing.abort();
    await Promise.allSettled([...this.inFlight]);
  }

  private async execute(runId: string, job: TriggerJob, began: () => void = () => undefined): Promise<AgentRunOutcome> {
    const started = Date.now();
    const found = await this.deps.agents.agentContext(job.agentId);
    if (!found) throw new DomainError('not_found', 'the agent no longer exists; the trigger was not run');
    await this.record(runId, job, found.accountId, new Date(started));
    const signal = job.signal ? AbortSignal.any([job.signal, this.closing.signal]) : this.closing.signal;
    const principal = agentPrincipal({ accountId: found.accountId, tier: found.tier, namespace: found.namespace, agentId: job.agentId });
    let invoked = false;
    const invoke = async (input: unknown, runnerSignal?: AbortSignal): Promise<FunctionOutcome> => {
      invoked = true;
      began();
      const t0 = Date.now();
      try {
        // A bad name is recorded as this run's failure (the run row exists already).
        const { service, name } = parseFunctionName(job.functionName);
        const answer = await this.deps.run.invoke(
          {
            principal,
            namespace: found.namespace,
            env: {},
            ...(this.deps.state ? { agentState: this.deps.state(job.agentId, found.tier) } : {}),
          },
          { kind: 'function', service, name },
          input,
          job.trigger,
          { signal: runnerSignal ? AbortSignal.any([signal, runnerSignal]) : signal },
        );
        return functionOutcome(job.functionName, answer, Date.now() - t0);
      } catch (error) {
        return failedCall(job.functionName, this.typed(error, runId), Date.now() - t0);
      }
    };
    let outcome: FunctionOutcome;
    try {
      outcome = this.deps.runner ? await this.deps.runner({ ...job, signal }, invoke, began) : await invoke(job.input);
    } catch (error) {
      if (!invoked && notRunRefusal(error)) {
        // Refused before its function ran (the replica stopped, crashed or lost its lease; the server
        // stopping): recorded as not run, and the trigger told so (it lets the delivery or fire go).
        this.finish(runId, {
          status: 'rejected',
          errorType: 'unavailable',
          errorMessage: storable(error.message),
          calls: [],
          finishedAt: new Date(),
        });
        throw new DomainError('unavailable', `${error.message}; the trigger was not run`, { not_run: true });
      }
      // The replica's own failure (its process died, a protocol fault): typed; details only in the log.
      outcome = failedCall(job.functionName, this.typed(error, runId), 0);
    }
    const finished = new Date();
    this.finish(runId, {
      status: outcome.status,
      errorType: outcome.error ? storable(outcome.error.type) : null,
      errorMessage: outcome.error ? storable(outcome.error.message) : null,
      calls: [{ ...outcome.call, error_type: outcome.call.error_type === null ? null : storable(outcome.call.error_type) }],
      finishedAt: finished,
    });
    return {
      runId,
      replica: job.replica,
      status: outcome.status,
      ...(outcome.result !== undefined ? { result: outcome.result } : {}),
      ...(outcome.error ? { error: outcome.error } : {}),
      durationMs: finished.getTime() - started,
    };
  }

  /** The run's row, status running; a taken id or an agent destroyed meanwhile is a typed refusal. */
  private async record(runId: string, job: TriggerJob, accountId: string, startedAt: Date): Promise<void> {
    try {
      await this.deps.runs.insertRun({
        id: runId,
        agentId: job.agentId,
        accountId,
        replica: job.replica,
        nodeId: this.deps.nodeId,
        trigger: job.trigger,
        triggerName: storable(job.triggerName),
        triggerRef: job.triggerRef === undefined ? null : storable(job.triggerRef),
        orchestrationMode: job.orchestrationMode,
        functionName: storable(job.functionName),
        startedAt,
      });
    } catch (error) {
      const code = (error as { code?: unknown } | null)?.code;
      if (code === '23505') throw new DomainError('conflict', `run id '${runId.slice(0, 64)}' is already taken; the trigger was not run`);
      if (code === '23503') throw new DomainError('not_found', 'the agent no longer exists; the trigger was not run');
      if (error instanceof DomainError) throw error;
      this.deps.logger.error(
        { err: error instanceof Error ? error.message : String(error), run_id: runId },
        'could not record an agent run',
      );
      throw new DomainError('unavailable', 'the run could not be recorded; the trigger was not run');
    }
  }

  /** Records how the run ended; a database that is away gets the write later (the outbox), never an unhandled rejection. */
  private finish(runId: string, end: AgentRunEnd): void {
    const write = () => this.deps.runs.finishRun(runId, end);
    const held = write().catch((error: unknown) => {
      if (isRetryableStoreError(error) && this.deps.pending?.add({ what: `end of agent run ${runId}`, bytes: 512, run: write })) return;
      this.deps.logger.error(
        { err: error instanceof Error ? error.message : String(error), run_id: runId },
        'could not record the end of an agent run; it is ended as interrupted by the next orphan sweep',
      );
    });
    this.inFlight.add(held);
    void held.then(() => this.inFlight.delete(held));
  }

  /** Any error as a run's error: a DomainError's type and message; anything else internal_error (details logged only). */
  private typed(error: unknown, runId: string): { type: string; message: string } {
    if (error instanceof DomainError) return { type: error.type, message: error.message };
    this.deps.logger.error({ err: error instanceof Error ? error.message : String(error), run_id: runId }, 'agent run failed');
    return { type: 'internal_error', message: 'the run failed inside the server; see its log' };
  }
}

function failedCall(functionName: string, err: { type: string; message: string }, durationMs: number): FunctionOutcome {
  return {
    status: 'failed',
    error: err,
    call: { function: functionName, execution_id: null, status: 'failed', duration_ms: durationMs, error_type: err.type },
  };
}

/** PostgreSQL text holds no NUL: a user's error message with one is stored with U+FFFD in its place. */
function storable(text: string): string {
  return text.includes('\u0000') ? text.replace(/\u0000/g, '\uFFFD') : text;
}

/** An invoke answer (refusal or run result) as the trigger run's outcome. */
export function functionOutcome(
  functionName: string,
  answer: Awaited<ReturnType<RunService['invoke']>>,
  durationMs: number,
): FunctionOutcome {
  if ('rejected' in answer) {
    const { rejected } = answer;
    const message =
      rejected.code === 'QUOTA_EXCEEDED'
        ? `Monthly execution limit (${rejected.limit}) exceeded`
        : rejected.code === 'EXECUTION_RATE_EXCEEDED'
          ? `execution rate limit (${rejected.limit}/min) reached; retry in ${rejected.retryAfter} s`
          : `concurrency limit (${rejected.limit}) reached; retry in ${rejected.retryAfter} s`;
    return {
      status: 'rejected',
      error: { type: rejected.code, message },
      call: { function: functionName, execution_id: null, status: 'rejected', duration_ms: durationMs, error_type: rejected.code },
    };
  }
  const executionId = answer.executionId ?? null;
  if (answer.ok) {
    return {
      status: 'succeeded',
      result: resultOf(answer),
      call: { function: functionName, execution_id: executionId, status: 'succeeded', duration_ms: durationMs, error_type: null },
    };
  }
  const status: AgentRunStatus = answer.error_type === CANCELLED || answer.error_type === INTERRUPTED ? 'cancelled' : 'failed';
  return {
    status,
    error: { type: answer.error_type, message: answer.error },
    call: { function: functionName, execution_id: executionId, status, duration_ms: durationMs, error_type: answer.error_type },
  };
}

/** A successful run's result; a large one arrives rendered (JSON text of the tool result's text content). */
function resultOf(answer: Extract<RunResult, { ok: true }>): unknown {
  if (!answer.rendered) return answer.result;
  const text = answer.rendered.texts[0];
  if (!text) return null;
  return JSON.parse(JSON.parse(text.toString('utf8')) as string) as unknown;
}
