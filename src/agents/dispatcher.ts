// Every agent trigger (schedule fire, webhook delivery, chat turn, heartbeat) ends here: the run is
// recorded, its function runs through src/run's single entry as the agent (admission, metering,
// scanning, the execution record), and how it ended is recorded. No other path reaches a sandbox.
import { randomUUID } from 'node:crypto';
import { DomainError } from '../core/errors.js';
import { storableText } from '../core/storable-text.js';
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
import {
  ANSWER_MAX_CHARS,
  capText,
  FUNCTION_REJECTED,
  TOOL_RESULT_MAX_CHARS,
  TOOLS_OFFERED_MAX,
  triggerInputText,
  type SkipReason,
} from '../core/agent-orchestration.js';
import type { OrchestrationLimits } from '../core/agent-ai.js';
import type { AgentRow, AgentToolCall } from '../store/schema.js';
import type { ChatMessage } from './providers/provider.js';
import type { CallAnswer, LoopOutcome } from './orchestration/loop.js';
import { runAiJob } from './orchestration/job.js';
import type { Toolbox, ToolSession } from './orchestration/toolbox.js';
import type { AiJob } from './worker/protocol.js';
import type { OutboundPolicyWire } from './outbound-guard.js';

export const ORCHESTRATION_MODES = ['direct', 'run_then_reason', 'reason_first'] as const;
export type OrchestrationMode = (typeof ORCHESTRATION_MODES)[number];

export interface TriggerJob {
  agentId: string;
  /** The replica that runs it (the trigger chose it among the agent's running replicas). */
  replica: string;
  trigger: AgentTrigger;
  /** The schedule's or webhook's name (a chat: its conversation id). */
  triggerName: string;
  /** The fire's or delivery's id. */
  triggerRef?: string;
  /** 'service.function': required for direct and run_then_reason; absent for a chat or heartbeat. */
  functionName?: string;
  input: unknown;
  /** Without an AI configured the AI modes run `direct` (a job with a function) and the record says so. */
  orchestrationMode: OrchestrationMode;
  /** What the model is told first: the chat message, heartbeat instructions; for a webhook or schedule the loop renders the trigger from input. */
  message?: string;
  /** chat: the conversation so far, oldest first (a summary arrives as the first user message). */
  history?: ChatMessage[];
  conversationId?: string;
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
  /** AI runs: the final answer (scanned, capped), what it cost, why it stopped. */
  answer?: string;
  usage?: { input_tokens: number; output_tokens: number; estimated?: boolean };
  iterations?: number;
  stopReason?: string;
  /**
   * Set when this node stopped following a run another node goes on with (a rolling restart of the
   * receiving node): the outcome here is not the run's; the node running it records the real one.
   */
  goesOnElsewhere?: true;
  /** The messages this run added after `history` (the user message, assistant turns with tool calls, tool results as the model saw them): chat persists them. */
  transcript?: ChatMessage[];
}

/** A job as its runner gets it: an AI job carries the model's settings and its deadline. */
export type RunnerJob = TriggerJob & { ai?: AiJob | undefined; deadline?: number | undefined };

/** What a job may ask the host for. */
export interface JobHost {
  /** The trigger's function (direct, run_then_reason), run through src/run as the agent. */
  invoke(input: unknown, signal?: AbortSignal): Promise<FunctionOutcome>;
  /** AI jobs: one tool call of the loop. */
  tool?(name: string, args: Record<string, unknown>, signal: AbortSignal): Promise<CallAnswer>;
  /** AI jobs: a turn's tool calls the loop never sent, for the run's record. */
  skipped?(calls: Array<{ name: string; reason: SkipReason }>, more: number, moreForbidden: number): void;
}

/** How a job ended: its function's outcome (direct, run_then_reason), the loop's (AI), or the replica's failure (AI). */
export interface JobResult {
  function?: FunctionOutcome;
  loop?: Omit<LoopOutcome, 'stopReason'> & { stopReason: string };
  failure?: { type: string; message: string };
  /** An AI job's running totals as last reported (kept when its process dies before its outcome). */
  progress?: { iterations: number; usage: { input_tokens: number; output_tokens: number; estimated?: boolean } };
}

/**
 * How a job runs: in this process (the default) or on the replica's worker process. `host` runs what
 * the job asks for, with the runner's own abort signal (a drain deadline, a lost lease). A runner that
 * refuses the job before anything ran rejects with DomainError('unavailable'): the run is then
 * recorded `rejected` and the dispatch rejects, so its trigger knows nothing ran. `accepted` tells
 * the dispatcher the runner took the job (queued on its replica).
 */
export type JobRunner = (job: RunnerJob, host: JobHost, accepted?: () => void) => Promise<JobResult>;

/** The AI side of the dispatcher: the agent's settings (key opened) and limits, and the run's tools. */
export interface Orchestration {
  open(agent: AgentRow): { provider: string; model: string; apiKey: string; baseUrl?: string; systemPrompt?: string } | undefined;
  limits(agent: AgentRow, tier: string): OrchestrationLimits;
  toolbox: Toolbox;
  /** Where the model may be reached; without it, nowhere in a refused range (the operator's list empty). */
  outbound?: () => OutboundPolicyWire;
}

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
  /** AI runs: the outcome as the model reads it (JSON text, scanned and capped by the host). */
  forModel?: string;
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
      /** Where jobs execute (replaced by the replica supervisor's worker hop). */
      runner?: JobRunner;
      /** AI runs (run_then_reason, reason_first, chat): without it every job runs `direct`. */
      orchestration?: Orchestration;
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
    this.closing.abort(new DomainError('unavailable', 'the server is stopping'));
    await Promise.allSettled([...this.inFlight]);
  }

  private async execute(runId: string, job: TriggerJob, began: () => void = () => undefined): Promise<AgentRunOutcome> {
    const started = Date.now();
    const found = await this.deps.agents.agentContext(job.agentId);
    if (!found) throw new DomainError('not_found', 'the agent no longer exists; the trigger was not run');
    // The AI modes need the agent's AI; without it a job with a function runs `direct`, and its record says so.
    let ai: ReturnType<Orchestration['open']>;
    let openError: unknown;
    if (job.orchestrationMode !== 'direct' && this.deps.orchestration) {
      try {
        ai = this.deps.orchestration.open(found.agent);
      } catch (error) {
        openError = error;
      }
    }
    const fallback = job.orchestrationMode !== 'direct' && !ai && openError === undefined && job.functionName !== undefined;
    const mode: OrchestrationMode = fallback ? 'direct' : job.orchestrationMode;
    await this.record(runId, { ...job, orchestrationMode: mode }, found.accountId);
    const signal = job.signal ? AbortSignal.any([job.signal, this.closing.signal]) : this.closing.signal;
    const principal = agentPrincipal({ accountId: found.accountId, tier: found.tier, namespace: found.namespace, agentId: job.agentId });
    let invoked = false;
    let session: ToolSession | undefined;
    const functionName = job.functionName ?? '';
    const invoke = async (input: unknown, runnerSignal?: AbortSignal): Promise<FunctionOutcome> => {
      invoked = true;
      began();
      const t0 = Date.now();
      let outcome: FunctionOutcome;
      try {
        // A bad name is recorded as this run's failure (the run row exists already).
        const { service, name } = parseFunctionName(functionName);
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
        outcome = functionOutcome(functionName, answer, Date.now() - t0);
      } catch (error) {
        outcome = failedCall(functionName, this.typed(error, runId), Date.now() - t0);
      }
      // An AI run's model reads the outcome only as the host scanned and capped it.
      if (session)
        outcome.forModel = session.scan(
          JSON.stringify(
            outcome.error ? { status: outcome.status, error: outcome.error } : { status: outcome.status, result: outcome.result ?? null },
          ),
        );
      return outcome;
    };
    const rejectNotRun = (error: DomainError): never => {
      // Refused before anything ran (the replica stopped, crashed or lost its lease; the server
      // stopping): recorded as not run, and the trigger told so (it lets the delivery or fire go).
      this.finish(runId, {
        status: 'rejected',
        errorType: 'unavailable',
        errorMessage: storableText(error.message),
        calls: [],
        durationMs: Date.now() - started,
      });
      throw new DomainError('unavailable', `${error.message}; the trigger was not run`, { not_run: true });
    };

    if (mode !== 'direct') {
      if (!ai || !this.deps.orchestration) {
        const why = openError
          ? { type: 'ai_unavailable', message: "the agent's AI settings could not be opened; configure_agent_ai again" }
          : {
              type: 'no_ai',
              message: 'this agent has no AI configured (configure_agent_ai); this trigger has no function to run directly',
            };
        if (openError) this.typed(openError, runId);
        return this.end(runId, job, started, { status: 'failed', error: why, calls: [] });
      }
      return this.executeAi(
        runId,
        job,
        mode,
        found,
        ai,
        signal,
        began,
        invoke,
        (s) => (session = s),
        rejectNotRun,
        () => invoked,
      );
    }

    let outcome: FunctionOutcome;
    try {
      if (this.deps.runner) {
        const result = await this.deps.runner({ ...job, orchestrationMode: 'direct', signal }, { invoke }, began);
        outcome =
          result.function ??
          failedCall(functionName, result.failure ?? { type: 'ReplicaCrashed', message: 'the job ended without an outcome' }, 0);
      } else outcome = await invoke(job.input);
    } catch (error) {
      if (!invoked && notRunRefusal(error)) rejectNotRun(error);
      // The replica's own failure (its process died, a protocol fault): typed; details only in the log.
      outcome = failedCall(functionName, this.typed(error, runId), 0);
    }
    return this.end(runId, job, started, {
      status: outcome.status,
      ...(outcome.result !== undefined ? { result: outcome.result } : {}),
      ...(outcome.error ? { error: outcome.error } : {}),
      calls: [outcome.call],
      ...(fallback
        ? { ai: { iterations: null, inputTokens: null, outputTokens: null, stopReason: 'fallback_direct', toolCalls: [], answer: null } }
        : {}),
    });
  }

  /** An AI run: its tools opened on this host, the loop on the replica (or here), its record from both. */
  private async executeAi(
    runId: string,
    job: TriggerJob,
    mode: 'run_then_reason' | 'reason_first',
    found: { agent: AgentRow; namespace: string; accountId: string; tier: string },
    ai: NonNullable<ReturnType<Orchestration['open']>>,
    signal: AbortSignal,
    began: () => void,
    invoke: (input: unknown, runnerSignal?: AbortSignal) => Promise<FunctionOutcome>,
    setSession: (s: ToolSession) => void,
    rejectNotRun: (error: DomainError) => never,
    invoked: () => boolean,
  ): Promise<AgentRunOutcome> {
    const orchestration = this.deps.orchestration!;
    const started = Date.now();
    let session: ToolSession;
    let limits: OrchestrationLimits;
    try {
      limits = orchestration.limits(found.agent, found.tier);
      session = await orchestration.toolbox.open(
        {
          runId,
          agentId: job.agentId,
          agentName: found.agent.name,
          accountId: found.accountId,
          namespaceId: found.agent.namespace_id,
          namespace: found.namespace,
          tier: found.tier,
          trigger: job.trigger,
          limits,
          secrets: [ai.apiKey],
        },
        // The run's deadline holds while its tools are opened (an attached server that never answers).
        AbortSignal.any([signal, AbortSignal.timeout(Math.max(1, started + limits.max_execution_seconds * 1000 - Date.now()))]),
      );
    } catch (error) {
      return this.end(runId, job, started, { status: 'failed', error: this.typed(error, runId), calls: [] });
    }
    setSession(session);
    const { leftOut } = session;
    // The model is told what it was not given (too many tools, or schemas too large), by name.
    const system = capText(
      [
        ai.systemPrompt ?? '',
        leftOut.length
          ? `[${leftOut.length} tools of this agent were left out of this run (at most ${TOOLS_OFFERED_MAX}, schemas bounded): ${leftOut.slice(0, 20).join(', ')}${leftOut.length > 20 ? ', …' : ''}]`
          : '',
      ]
        .filter(Boolean)
        .join('\n\n'),
      32_000,
    );
    const aiJob: AiJob = {
      provider: ai.provider,
      model: ai.model,
      apiKey: ai.apiKey,
      ...(ai.baseUrl ? { baseUrl: ai.baseUrl } : {}),
      ...(system ? { system } : {}),
      ...(job.message !== undefined
        ? { message: job.message }
        : { inputText: session.scan(triggerInputText(job.input), TOOL_RESULT_MAX_CHARS) }),
      ...(job.history ? { history: job.history } : {}),
      tools: session.offered,
      limits,
      startedAt: started,
      outbound: orchestration.outbound?.() ?? { allow: [], own: null },
    };
    const host: JobHost = {
      invoke,
      tool: (name, args, s) => session.call(name, args, s),
      skipped: (calls, more, moreForbidden) => session.skipped(calls, more, moreForbidden),
    };
    let result: JobResult;
    try {
      if (this.deps.runner) {
        result = await this.deps.runner(
          { ...job, orchestrationMode: mode, signal, ai: aiJob, deadline: started + limits.max_execution_seconds * 1000 },
          host,
          began,
        );
      } else {
        began();
        result = await runAiJob(
          { mode, trigger: job.trigger, triggerName: job.triggerName, function: job.functionName, input: job.input, ai: aiJob },
          { invoke: async (_fn, input) => forModelOf(await invoke(input)), tool: host.tool!, skipped: host.skipped! },
          signal,
        );
      }
    } catch (error) {
      if (!invoked() && session.calls.length === 0 && notRunRefusal(error)) rejectNotRun(error);
      result = { failure: this.typed(error, runId) };
    }
    await session.settled();
    await session.finish();
    const fn = result.function;
    const loop = result.loop;
    const toolCalls: AgentToolCall[] = session.calls;
    if (!loop) {
      const error = result.failure ?? { type: 'internal_error', message: 'the run ended without an outcome' };
      return this.end(runId, job, started, {
        status: error.type === 'cancelled' ? 'cancelled' : 'failed',
        error,
        calls: fn ? [fn.call] : [],
        ai: {
          iterations: result.progress?.iterations ?? null,
          inputTokens: result.progress?.usage.input_tokens ?? null,
          outputTokens: result.progress?.usage.output_tokens ?? null,
          // Tokens estimated by a turn before the process died stay marked so.
          ...(result.progress?.usage.estimated === true ? { usageEstimated: true } : {}),
          stopReason: error.type === 'cancelled' ? 'cancelled' : 'failed',
          toolCalls,
          answer: null,
        },
        ...(result.progress ? { usage: progressUsage(result.progress.usage), iterations: result.progress.iterations } : {}),
      });
    }
    const answer = session.scan(loop.answer, ANSWER_MAX_CHARS);
    // What chat keeps: the model's own words scanned as its answer is (tool results were scanned before it read them).
    const transcript: ChatMessage[] = loop.transcript.map((m) =>
      m.role === 'assistant' ? { ...m, content: session.scan(m.content, ANSWER_MAX_CHARS) } : m,
    );
    // Its function refused before it ran (the host's own outcome says so): recorded as that refusal, the model never called.
    const refused = loop.stopReason === FUNCTION_REJECTED && fn?.status === 'rejected' ? fn : undefined;
    const status: AgentRunStatus =
      loop.stopReason === 'answered' ? 'succeeded' : loop.stopReason === 'cancelled' ? 'cancelled' : refused ? 'rejected' : 'failed';
    const error = refused?.error
      ? {
          type: refused.error.type,
          message: `${refused.error.message}: the trigger's function ${refused.call.function} was refused before it ran, so the model was not called`,
        }
      : loop.error;
    return this.end(runId, job, started, {
      status,
      ...(error && status !== 'succeeded' ? { error } : {}),
      calls: fn ? [fn.call] : [],
      ai: {
        iterations: loop.iterations,
        inputTokens: loop.usage.input_tokens,
        outputTokens: loop.usage.output_tokens,
        ...(loop.usageEstimated ? { usageEstimated: true } : {}),
        stopReason: loop.stopReason,
        toolCalls,
        answer,
      },
      answer,
      usage: loop.usageEstimated ? { ...loop.usage, estimated: true } : loop.usage,
      iterations: loop.iterations,
      stopReason: loop.stopReason,
      transcript,
    });
  }

  /** Records how the run ended and answers its outcome. */
  private end(
    runId: string,
    job: TriggerJob,
    started: number,
    out: {
      status: AgentRunStatus;
      result?: unknown;
      error?: { type: string; message: string };
      calls: AgentRunCall[];
      ai?: AgentRunEnd['ai'];
      answer?: string;
      usage?: { input_tokens: number; output_tokens: number; estimated?: boolean };
      iterations?: number;
      stopReason?: string;
      transcript?: ChatMessage[];
    },
  ): AgentRunOutcome {
    const durationMs = Date.now() - started;
    this.finish(runId, {
      status: out.status,
      errorType: out.error ? storableText(out.error.type) : null,
      errorMessage: out.error ? storableText(out.error.message) : null,
      calls: out.calls.map((c) => ({ ...c, error_type: c.error_type === null ? null : storableText(c.error_type) })),
      durationMs,
      ...(out.ai ? { ai: { ...out.ai, answer: out.ai.answer === null ? null : storableText(out.ai.answer) } } : {}),
    });
    return {
      runId,
      replica: job.replica,
      status: out.status,
      ...(out.result !== undefined ? { result: out.result } : {}),
      ...(out.error ? { error: out.error } : {}),
      durationMs,
      ...(out.answer !== undefined ? { answer: out.answer } : {}),
      ...(out.usage ? { usage: out.usage } : {}),
      ...(out.iterations !== undefined ? { iterations: out.iterations } : {}),
      ...(out.ai?.stopReason ? { stopReason: out.ai.stopReason } : {}),
      ...(out.transcript ? { transcript: out.transcript } : {}),
    };
  }

  /** The run's row, status running; a taken id or an agent destroyed meanwhile is a typed refusal. */
  private async record(runId: string, job: TriggerJob, accountId: string): Promise<void> {
    try {
      await this.deps.runs.insertRun({
        id: runId,
        agentId: job.agentId,
        accountId,
        replica: job.replica,
        nodeId: this.deps.nodeId,
        trigger: job.trigger,
        triggerName: storableText(job.triggerName),
        triggerRef: job.triggerRef === undefined ? null : storableText(job.triggerRef),
        orchestrationMode: job.orchestrationMode,
        functionName: job.functionName === undefined ? null : storableText(job.functionName),
        conversationId: job.conversationId === undefined ? null : storableText(job.conversationId),
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

/**
 * run_then_reason: what the replica's model reads of the trigger's function (scanned and capped by
 * the host), or, when the function was refused before it ran (quota, rate, concurrency), a typed
 * refusal: the run stops there, since the model would have nothing to reason about.
 */
export function forModelOf(outcome: FunctionOutcome): string | null {
  if (outcome.status === 'rejected')
    throw Object.assign(
      new Error(
        `the trigger's function ${outcome.call.function} was refused (${outcome.error?.type ?? 'rejected'}): ${outcome.error?.message ?? ''}`,
      ),
      { type: FUNCTION_REJECTED },
    );
  return outcome.forModel ?? null;
}

function failedCall(functionName: string, err: { type: string; message: string }, durationMs: number): FunctionOutcome {
  return {
    status: 'failed',
    error: err,
    call: { function: functionName, execution_id: null, status: 'failed', duration_ms: durationMs, error_type: err.type },
  };
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

/** An AI job's last reported totals as its outcome says them: `estimated` only when true. */
function progressUsage(usage: { input_tokens: number; output_tokens: number; estimated?: boolean }): {
  input_tokens: number;
  output_tokens: number;
  estimated?: boolean;
} {
  return { input_tokens: usage.input_tokens, output_tokens: usage.output_tokens, ...(usage.estimated === true ? { estimated: true } : {}) };
}
