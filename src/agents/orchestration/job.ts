/**
 * One AI job as a replica runs it (its worker process, or in-process when the dispatcher has no
 * runner): run_then_reason first asks the host for the trigger's function, then the loop runs with
 * the model the job names; every tool call goes to the host.
 */
import { FUNCTION_REJECTED, LIMIT_MESSAGES, triggerMessage, type SkipReason } from '../../core/agent-orchestration.js';
import { loadModelProvider } from '../providers/load.js';
import { modelGuard } from '../outbound-guard.js';
import type { AiJob, LoopResult } from '../worker/protocol.js';
import { runLoop, type CallAnswer } from './loop.js';

export interface AiJobRequest {
  mode: 'run_then_reason' | 'reason_first';
  trigger: string;
  triggerName: string;
  function?: string | undefined;
  input: unknown;
  ai: AiJob;
}

export interface AiJobHost {
  /** run_then_reason: the trigger's function run by the host; answers its outcome as the model may read it (JSON text). */
  invoke(functionName: string, input: unknown): Promise<unknown>;
  tool(name: string, args: Record<string, unknown>, signal: AbortSignal): Promise<CallAnswer>;
  progress?(iterations: number, usage: { input_tokens: number; output_tokens: number; estimated?: boolean }): void;
  /** Tool calls of a turn never sent to `tool` (for the run's record). */
  skipped?(calls: Array<{ name: string; reason: SkipReason }>, more: number, moreForbidden: number): void;
}

export async function runAiJob(job: AiJobRequest, host: AiJobHost, signal: AbortSignal): Promise<LoopResult> {
  const { ai } = job;
  let message = ai.message;
  if (message === undefined) {
    let outcome: string | undefined;
    if (job.mode === 'run_then_reason' && job.function) {
      let answer: unknown;
      try {
        answer = await host.invoke(job.function, job.input);
      } catch (error) {
        // Refused before it ran (quota, rate, concurrency): nothing to reason about, so no model call and no tokens.
        const refused = functionRefused(error);
        if (refused) return refused;
        // Stopped inside its first function (the time limit, a cancel): the run ends for that reason, not as the worker's failure.
        const ended = stoppedEarly(job.ai, signal, error);
        if (ended) return ended;
        throw error;
      }
      outcome = typeof answer === 'string' ? answer : JSON.stringify(answer ?? null);
    }
    message = triggerMessage({
      trigger: job.trigger,
      triggerName: job.triggerName,
      inputText: ai.inputText ?? 'null',
      functionName: job.function,
      functionOutcome: outcome,
    });
  }
  // Every model call through the outbound guard: its address resolved and checked, the connection pinned to it.
  const provider = await loadModelProvider({
    provider: ai.provider,
    model: ai.model,
    apiKey: ai.apiKey,
    ...(ai.baseUrl ? { baseUrl: ai.baseUrl } : {}),
    fetch: modelGuard(ai.outbound).fetch,
  });
  const loop = await runLoop(
    { system: ai.system, history: ai.history, message, tools: ai.tools, limits: ai.limits, startedAt: ai.startedAt, signal },
    {
      provider,
      callTool: (name, args, s) => host.tool(name, args, s),
      ...(host.progress ? { onTurn: host.progress } : {}),
      ...(host.skipped ? { onSkipped: host.skipped } : {}),
    },
  );
  return { loop };
}

/** A run stopped before its loop began: by a cancel, or by its deadline (the host stops the function there). */
function stoppedEarly(ai: AiJob, signal: AbortSignal, error: unknown): LoopResult | undefined {
  const timeUp =
    Date.now() >= ai.startedAt + ai.limits.max_execution_seconds * 1000 || (error as { type?: unknown } | null)?.type === 'limit_exceeded';
  if (!signal.aborted && !timeUp) return undefined;
  const stopReason = signal.aborted ? 'cancelled' : 'max_execution_time';
  return {
    loop: {
      stopReason,
      answer: '',
      iterations: 0,
      usage: { input_tokens: 0, output_tokens: 0 },
      functionsCalled: 0,
      error:
        stopReason === 'cancelled'
          ? { type: 'cancelled', message: 'the run was cancelled' }
          : { type: stopReason, message: LIMIT_MESSAGES[stopReason]!(ai.limits.max_execution_seconds) },
      transcript: [],
    },
  };
}

/** run_then_reason's function refused by the host (its answer's type says so): the run ends there, the refusal named. */
function functionRefused(error: unknown): LoopResult | undefined {
  const e = error as { type?: unknown; message?: unknown } | null;
  if (e?.type !== FUNCTION_REJECTED) return undefined;
  const message = typeof e.message === 'string' ? e.message.slice(0, 10_000) : 'the function was refused';
  return {
    loop: {
      stopReason: FUNCTION_REJECTED,
      answer: '',
      iterations: 0,
      usage: { input_tokens: 0, output_tokens: 0 },
      functionsCalled: 0,
      error: { type: FUNCTION_REJECTED, message },
      transcript: [],
    },
  };
}
