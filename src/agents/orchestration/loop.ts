/**
 * The AI orchestration loop (issue 16), transport-free: it runs in a replica's worker process (the
 * worker calls the model itself; every tool call goes to the host over IPC) and in-process in tests.
 * It asks the model for a turn, runs the turn's tool calls through `callTool`, sends their results
 * back, and stops when the model answers without tool calls or a limit is reached. Limits hold inside
 * a call too: each turn gets the run's deadline and an abort signal, and tokens are counted from
 * every answer.
 */
import {
  isForbiddenToolName,
  ANSWER_MAX_CHARS,
  capText,
  estimateTokens,
  LIMIT_MESSAGES,
  RunBudget,
  SKIPPED_RECORDED_PER_TURN,
  TOOL_CALLS_PER_TURN,
  TOOL_NAME_MAX_CHARS,
  type SkipReason,
  type StopReason,
  type ToolKind,
} from '../../core/agent-orchestration.js';
import type { OrchestrationLimits } from '../../core/agent-ai.js';
import {
  CALL_ID_MAX_CHARS,
  ProviderError,
  type ChatMessage,
  type ModelProvider,
  type ToolResult,
  type ToolSpec,
} from '../providers/provider.js';

/** A tool offered to the model, with what it stands for (function runs count against max_functions_called). */
export interface OfferedTool extends ToolSpec {
  kind: ToolKind;
}

export interface LoopInput {
  system?: string | undefined;
  /** The conversation so far (chat), oldest first. */
  history?: ChatMessage[] | undefined;
  /** What the model is told now: the chat message, or the trigger rendered. */
  message: string;
  tools: OfferedTool[];
  limits: OrchestrationLimits;
  /** Epoch ms the run started (its deadline is counted from it). */
  startedAt: number;
  signal?: AbortSignal | undefined;
}

/** One tool call's result as the host answers it (already capped and scanned). */
export interface CallAnswer {
  content: string;
  isError: boolean;
}

export interface LoopDeps {
  provider: ModelProvider;
  /** Runs one tool call (on the host); `signal` fires at the run's deadline or when it is cancelled. */
  callTool(name: string, args: Record<string, unknown>, signal: AbortSignal): Promise<CallAnswer>;
  /**
   * A turn's tool calls that were never sent to `callTool` (the per-turn cap, a limit, a cancel, an
   * unreadable call), for the run's record: at most SKIPPED_RECORDED_PER_TURN, and how many more
   * (`moreForbidden` of those more were management tools: each still counts as an attempt).
   */
  onSkipped?(calls: Array<{ name: string; reason: SkipReason }>, more: number, moreForbidden: number): void;
  /** The running totals after each model turn (the host keeps them in case the process dies); `estimated` once any turn was. */
  onTurn?(iterations: number, usage: { input_tokens: number; output_tokens: number; estimated?: boolean }): void;
  now?: () => number;
}

export type LoopStopReason = Exclude<StopReason, 'fallback_direct'>;

export interface LoopOutcome {
  stopReason: LoopStopReason;
  /** The model's last text (its answer when stopReason is 'answered'), capped. */
  answer: string;
  iterations: number;
  usage: { input_tokens: number; output_tokens: number };
  /** Some turn's answer did not say what it cost: its tokens were estimated from the bytes sent and received. */
  usageEstimated?: boolean;
  functionsCalled: number;
  /** Set when a limit, a cancel or the provider ended the run. */
  error?: { type: string; message: string };
  /** The messages this run added after `history`. */
  transcript: ChatMessage[];
}

export async function runLoop(input: LoopInput, deps: LoopDeps): Promise<LoopOutcome> {
  const now = deps.now ?? Date.now;
  const budget = new RunBudget(input.limits, input.startedAt);
  const kinds = new Map(input.tools.map((t) => [t.name, t.kind]));
  const tools: ToolSpec[] = input.tools.map(({ name, description, inputSchema }) => ({ name, description, inputSchema }));
  const transcript: ChatMessage[] = [{ role: 'user', content: input.message }];
  const messages = (): ChatMessage[] => [...(input.history ?? []), ...transcript];
  // Fires at the deadline or on the caller's abort: model calls and tool calls in flight stop at once.
  const controller = new AbortController();
  const left = Math.max(0, budget.deadline - now());
  const timer = setTimeout(() => controller.abort(new Error('deadline')), left);
  const onAbort = () => controller.abort(new Error('cancelled'));
  input.signal?.addEventListener('abort', onAbort, { once: true });
  if (input.signal?.aborted) onAbort();
  let answer = '';

  const end = (stopReason: LoopStopReason, error?: { type: string; message: string }): LoopOutcome => ({
    stopReason,
    answer: capText(answer, ANSWER_MAX_CHARS),
    iterations: budget.iterations,
    usage: { input_tokens: budget.inputTokens, output_tokens: budget.outputTokens },
    ...(budget.estimated ? { usageEstimated: true } : {}),
    functionsCalled: budget.functionsCalled,
    ...(error ? { error } : {}),
    transcript,
  });
  const limit = (reason: LoopStopReason) => end(reason, { type: reason, message: LIMIT_MESSAGES[reason]!(budget.limitOf(reason)) });
  // Whoever fired the signal decides the stop: the caller (cancelled) or the clock (the time limit).
  const stopped = () =>
    input.signal?.aborted ? end('cancelled', { type: 'cancelled', message: 'the run was cancelled' }) : limit('max_execution_time');

  try {
    for (;;) {
      if (controller.signal.aborted) return stopped();
      const before = budget.beforeTurn(now());
      if (before) return limit(before);
      let turn;
      const sent = messages();
      try {
        turn = await deps.provider.turn({
          ...(input.system ? { system: input.system } : {}),
          messages: sent,
          tools,
          maxOutputTokens: budget.outputAllowance(),
          signal: controller.signal,
          deadline: budget.deadline,
        });
      } catch (error) {
        if (controller.signal.aborted || (error instanceof ProviderError && error.kind === 'timeout' && now() >= budget.deadline))
          return stopped();
        const kind = error instanceof ProviderError ? error.kind : 'bad_response';
        const message = error instanceof ProviderError ? error.message : `${deps.provider.provider} gave an answer that could not be read`;
        return end('provider_error', { type: `provider_${kind}`, message });
      }
      answer = turn.text;
      // An answer that does not say what it cost is estimated from what was sent and received (never less than it said).
      const usage = turn.usage.estimated
        ? {
            input: Math.max(turn.usage.input, estimateTokens((input.system ?? '') + JSON.stringify(sent) + JSON.stringify(tools))),
            output: Math.max(turn.usage.output, estimateTokens(turn.text + JSON.stringify(turn.toolCalls))),
            estimated: true,
          }
        : turn.usage;
      const overTokens = budget.afterTurn(usage);
      deps.onTurn?.(budget.iterations, {
        input_tokens: budget.inputTokens,
        output_tokens: budget.outputTokens,
        ...(budget.estimated ? { estimated: true } : {}),
      });
      // What the model asked for, within what a replica's messages carry: the first calls of the turn
      // only (the rest are dropped from it), names clipped (ids are clipped by the providers). Whatever a model sends, the run ends typed.
      const calls = turn.toolCalls.slice(0, TOOL_CALLS_PER_TURN).map((c) => ({ ...c, name: c.name.slice(0, TOOL_NAME_MAX_CHARS) }));
      transcript.push({ role: 'assistant', content: turn.text, ...(calls.length ? { toolCalls: calls } : {}) });
      // Every call the model asked for is in the run's record: those never sent are reported with why,
      // after the turn's calls that ran (the clipped ones last).
      const skipped: Array<{ name: string; reason: SkipReason }> = [];
      const reportSkipped = () => {
        for (const { name } of turn.toolCalls.slice(TOOL_CALLS_PER_TURN))
          skipped.push({ name: name.slice(0, TOOL_NAME_MAX_CHARS), reason: 'skipped: per-turn cap' });
        if (skipped.length > 0) {
          const more = skipped.slice(SKIPPED_RECORDED_PER_TURN);
          deps.onSkipped?.(
            skipped.slice(0, SKIPPED_RECORDED_PER_TURN),
            more.length,
            more.filter((c) => isForbiddenToolName(c.name)).length,
          );
        }
      };
      const stoppedHow = (): SkipReason => (input.signal?.aborted ? 'skipped: cancelled' : 'skipped: limit');
      if (calls.length === 0) {
        reportSkipped();
        return end('answered');
      }
      // Tokens past the limit: nothing more is spent, not even the calls this answer asked for; each
      // still gets its result (a vendor refuses a transcript with a call and no result).
      if (overTokens) {
        transcript.push({
          role: 'tool',
          results: calls.map((c) => ({ callId: c.id, content: 'not run: the run stopped', isError: true })),
        });
        for (const c of calls) skipped.push({ name: c.name, reason: 'skipped: limit' });
        reportSkipped();
        return limit(overTokens);
      }
      const results: ToolResult[] = [];
      let stop: LoopStopReason | undefined;
      for (const call of calls) {
        if (stop || controller.signal.aborted) {
          results.push({ callId: call.id, content: 'not run: the run stopped', isError: true });
          skipped.push({ name: call.name, reason: stop ? 'skipped: limit' : stoppedHow() });
          continue;
        }
        if (call.name === '') {
          results.push({ callId: call.id, content: 'not run: the tool call had no name', isError: true });
          skipped.push({ name: call.name, reason: 'skipped: no name' });
          continue;
        }
        if (call.argumentsError) {
          results.push({ callId: call.id, content: `not run: ${call.argumentsError}`, isError: true });
          skipped.push({ name: call.name, reason: 'skipped: bad arguments' });
          continue;
        }
        if (kinds.get(call.name) === 'function') {
          stop = budget.takeFunctionCall();
          if (stop) {
            results.push({ callId: call.id, content: 'not run: the run reached its limit of function calls', isError: true });
            skipped.push({ name: call.name, reason: 'skipped: limit' });
            continue;
          }
        }
        // Unknown and forbidden names go to the host too: it refuses them and records the attempt.
        let answered: CallAnswer;
        try {
          answered = await deps.callTool(call.name, call.arguments, controller.signal);
        } catch (error) {
          if (controller.signal.aborted) {
            results.push({ callId: call.id, content: 'not run: the run stopped', isError: true });
            continue;
          }
          const message = error instanceof Error ? error.message : String(error);
          answered = { content: `the tool call failed: ${message}`, isError: true };
        }
        results.push({ callId: call.id, content: answered.content, ...(answered.isError ? { isError: true } : {}) });
      }
      transcript.push({ role: 'tool', results });
      reportSkipped();
      if (controller.signal.aborted) return stopped();
      if (stop) return limit(stop);
    }
  } finally {
    clearTimeout(timer);
    input.signal?.removeEventListener('abort', onAbort);
  }
}
