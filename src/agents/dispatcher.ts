// Every agent trigger (schedule fire, webhook delivery, chat turn, heartbeat) ends here: the run is
// recorded, its function runs through src/run's single entry as the agent (admission, metering,
// scanning, the execution record), and how it ended is recorded. No other path reaches a sandbox.
import { randomUUID } from 'node:crypto';
import { DomainError } from '../core/errors.js';
import { agentPrincipal, type AgentTrigger } from '../core/principal.js';
import type { Logger } from '../core/logger.js';
import type { AgentRunsStore } from '../store/agent-runs-store.js';
import type { AgentsStore } from '../store/agents-store.js';
import type { AgentRunCall } from '../store/schema.js';
import { CANCELLED, INTERRUPTED, type RunResult, type RunService } from '../run/run-service.js';
import { parseFunctionName } from '../core/agents.js';

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

/** How a job's function is run: in this process (the default) or in the replica's worker process. */
export type JobRunner = (job: TriggerJob, run: (input: unknown) => Promise<FunctionOutcome>) => Promise<FunctionOutcome>;

/** One function execution's outcome as a trigger run sees it. */
export interface FunctionOutcome {
  status: AgentRunStatus;
  result?: unknown;
  error?: { type: string; message: string };
  call: AgentRunCall;
}

export class AgentDispatcher {
  constructor(
    private readonly deps: {
      agents: AgentsStore;
      runs: AgentRunsStore;
      run: Pick<RunService, 'invoke'>;
      nodeId: string;
      logger: Logger;
      /** Where `direct` jobs execute (replaced by the replica supervisor's worker hop). */
      runner?: JobRunner;
    },
  ) {}

  /** Records the run, runs it, records how it ended. Answers the outcome (never throws for a run's own failure). */
  dispatch(job: TriggerJob): Promise<AgentRunOutcome> {
    return this.start(job).done;
  }

  /** The run id at once; the outcome when the run has ended and been recorded. */
  start(job: TriggerJob): { runId: string; done: Promise<AgentRunOutcome> } {
    const runId = job.runId ?? randomUUID();
    return { runId, done: this.execute(runId, job) };
  }

  private async execute(runId: string, job: TriggerJob): Promise<AgentRunOutcome> {
    const started = Date.now();
    const found = await this.deps.agents.agentContext(job.agentId);
    if (!found) throw new DomainError('not_found', 'the agent no longer exists');
    const { service, name } = parseFunctionName(job.functionName);
    await this.deps.runs.insertRun({
      id: runId,
      agentId: job.agentId,
      accountId: found.accountId,
      replica: job.replica,
      nodeId: this.deps.nodeId,
      trigger: job.trigger,
      triggerName: job.triggerName,
      triggerRef: job.triggerRef ?? null,
      orchestrationMode: job.orchestrationMode,
      functionName: job.functionName,
      startedAt: new Date(started),
    });
    const principal = agentPrincipal({ accountId: found.accountId, tier: found.tier, namespace: found.namespace, agentId: job.agentId });
    const invoke = async (input: unknown): Promise<FunctionOutcome> => {
      const began = Date.now();
      try {
        const answer = await this.deps.run.invoke(
          { principal, namespace: found.namespace, env: {} },
          { kind: 'function', service, name },
          input,
          job.trigger,
          job.signal ? { signal: job.signal } : {},
        );
        return functionOutcome(job.functionName, answer, Date.now() - began);
      } catch (error) {
        // Refused before any sandbox (unknown function, bad input): typed, never a stack.
        const typed = error instanceof DomainError ? { type: error.type, message: error.message } : undefined;
        if (!typed)
          this.deps.logger.error({ err: error instanceof Error ? error.message : String(error), run_id: runId }, 'agent run failed');
        const err = typed ?? { type: 'internal_error', message: 'the run failed inside the server; see its log' };
        return {
          status: 'failed',
          error: err,
          call: { function: job.functionName, execution_id: null, status: 'failed', duration_ms: Date.now() - began, error_type: err.type },
        };
      }
    };
    let outcome: FunctionOutcome;
    try {
      outcome = this.deps.runner ? await this.deps.runner(job, invoke) : await invoke(job.input);
    } catch (error) {
      // The replica's own failure (its process died, a protocol fault): typed; details only in the log.
      if (!(error instanceof DomainError))
        this.deps.logger.error({ err: error instanceof Error ? error.message : String(error), run_id: runId }, 'agent run failed');
      const err =
        error instanceof DomainError
          ? { type: error.type, message: error.message }
          : { type: 'internal_error', message: 'the run failed inside the server; see its log' };
      outcome = {
        status: 'failed',
        error: err,
        call: { function: job.functionName, execution_id: null, status: 'failed', duration_ms: 0, error_type: err.type },
      };
    }
    const finished = new Date();
    await this.deps.runs.finishRun(runId, {
      status: outcome.status,
      errorType: outcome.error?.type ?? null,
      errorMessage: outcome.error?.message ?? null,
      calls: [outcome.call],
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
