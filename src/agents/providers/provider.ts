/**
 * One model turn, whatever the vendor: the orchestration loop (issue 16) offers tools, gets tool
 * calls, sends their results back in the next turn, counts tokens from each answer and aborts a
 * call in flight. The adapters (anthropic.ts, openai.ts) speak the wire formats through the
 * vendors' official SDKs; nothing here knows a vendor.
 */
import type { ChatMessage, ToolCall } from '../../core/agent-chat.js';
import { OutboundAddressRefused } from '../outbound-guard.js';

export interface ToolSpec {
  /** e.g. `service__function`, `mcp__server__tool`, `state_get`. */
  name: string;
  description: string;
  /** JSON Schema of the arguments (an object schema). */
  inputSchema: Record<string, unknown>;
}

// The conversation's shapes are core's (dependencies point inward); re-exported for the adapters and the loop.
export type { ChatMessage, ToolCall, ToolResult } from '../../core/agent-chat.js';

export interface TurnRequest {
  system?: string;
  messages: ChatMessage[];
  tools: ToolSpec[];
  /** Output tokens the model may spend on this turn. */
  maxOutputTokens: number;
  /** Aborts the call in flight (stop, run cancelled). */
  signal?: AbortSignal;
  /** Epoch ms by which the call must have answered: the run's deadline. */
  deadline: number;
}

export interface TokenUsage {
  input: number;
  output: number;
  /** The answer did not say what it cost (some OpenAI-compatible servers omit `usage`): the loop estimates it. */
  estimated?: boolean;
}

export interface TurnResult {
  /** The model's text (may be empty when it only calls tools). */
  text: string;
  toolCalls: ToolCall[];
  usage: TokenUsage;
  /** Why the model stopped: 'end', 'tool_calls', 'max_tokens', or the vendor's word. */
  stopReason: string;
}

export type ProviderErrorKind = 'auth' | 'rate_limited' | 'timeout' | 'aborted' | 'bad_response' | 'unavailable' | 'address_refused';

/**
 * A failed model call. The message is ours (kind, status, the provider's name): never the
 * vendor's text, which may echo the request, and never the API key.
 */
export class ProviderError extends Error {
  constructor(
    readonly kind: ProviderErrorKind,
    message: string,
    readonly status?: number,
  ) {
    super(message);
    this.name = 'ProviderError';
  }
}

export interface ModelProvider {
  readonly provider: string;
  readonly model: string;
  turn(request: TurnRequest): Promise<TurnResult>;
}

/** The AI settings an adapter needs (the key opened from its sealed form just before use). */
export interface ProviderSettings {
  provider: string;
  model: string;
  apiKey: string;
  /** Overrides the provider's default address (OpenAI-compatible services, local Ollama, tests). */
  baseUrl?: string;
  /** The SDK's fetch: on a replica, the outbound guard's (each call's address checked and pinned). */
  fetch?: (input: string | URL | Request, init?: RequestInit) => Promise<Response>;
}

/** Milliseconds left before the deadline, or a timeout error when none is left. */
export function remainingMs(request: Pick<TurnRequest, 'deadline' | 'signal'>, provider: string): number {
  if (request.signal?.aborted) throw new ProviderError('aborted', `the call to ${provider} was aborted`);
  const left = request.deadline - Date.now();
  if (left <= 0) throw new ProviderError('timeout', `the call to ${provider} reached the run's deadline`);
  return left;
}

/**
 * One signal that fires on the caller's abort or at the deadline, and whether the deadline fired.
 * The SDKs' own timeout is set too, but this one also covers the time spent reading the body.
 */
export function turnSignal(request: Pick<TurnRequest, 'deadline' | 'signal'>, leftMs: number) {
  const controller = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    controller.abort();
  }, leftMs);
  const onAbort = () => controller.abort();
  request.signal?.addEventListener('abort', onAbort, { once: true });
  return {
    signal: controller.signal,
    timedOut: () => timedOut,
    done: () => {
      clearTimeout(timer);
      request.signal?.removeEventListener('abort', onAbort);
    },
  };
}

/**
 * One vendor call under the turn's deadline and abort: `call` gets the signal and the milliseconds
 * left; whatever it throws comes out typed (providerError), and the timer is always cleared.
 */
export async function guardedTurn(
  request: Pick<TurnRequest, 'deadline' | 'signal'>,
  provider: string,
  call: (signal: AbortSignal, leftMs: number) => Promise<TurnResult>,
): Promise<TurnResult> {
  const left = remainingMs(request, provider);
  const guard = turnSignal(request, left);
  try {
    return await call(guard.signal, left);
  } catch (error) {
    throw providerError(error, provider, guard.timedOut(), request.signal?.aborted ?? false);
  } finally {
    guard.done();
  }
}

/**
 * The SDK error class of `error`: its constructor's name, or that of the nearest SDK class it
 * extends. By class, not by `name`: the openai SDK's errors all say "Error" there.
 */
function sdkErrorClass(error: unknown): string | undefined {
  const known = new Set(['APIConnectionTimeoutError', 'APIUserAbortError', 'APIConnectionError']);
  for (let proto = error && typeof error === 'object' ? Object.getPrototypeOf(error) : null; proto; proto = Object.getPrototypeOf(proto)) {
    const name = (proto as { constructor?: { name?: unknown } }).constructor?.name;
    if (typeof name === 'string' && known.has(name)) return name;
  }
  const name = (error as { name?: unknown } | null)?.name;
  return typeof name === 'string' ? name : undefined;
}

/** Maps an SDK failure to a typed error whose message names only the provider and the status. */
export function providerError(error: unknown, provider: string, timedOut: boolean, aborted: boolean): ProviderError {
  if (error instanceof ProviderError) return error;
  if (timedOut) return new ProviderError('timeout', `the call to ${provider} reached the run's deadline`);
  if (aborted) return new ProviderError('aborted', `the call to ${provider} was aborted`);
  // The outbound guard refused the model's address (the SDKs wrap what fetch throws as its cause).
  const refused = [error, (error as { cause?: unknown } | null)?.cause].find(
    (e): e is OutboundAddressRefused => e instanceof OutboundAddressRefused,
  );
  if (refused) return new ProviderError('address_refused', `the address of ${provider} was refused: ${refused.message}`);
  const status = typeof (error as { status?: unknown })?.status === 'number' ? (error as { status: number }).status : undefined;
  const name = sdkErrorClass(error);
  if (name === 'APIConnectionTimeoutError') return new ProviderError('timeout', `the call to ${provider} reached the run's deadline`);
  if (name === 'APIUserAbortError') return new ProviderError('aborted', `the call to ${provider} was aborted`);
  if (status === 401 || status === 403)
    return new ProviderError('auth', `${provider} refused the API key (HTTP ${status}); configure the agent's AI with a valid key`, status);
  if (status === 429) return new ProviderError('rate_limited', `${provider} is rate limiting this key (HTTP 429); try again later`, status);
  if (status !== undefined && status >= 500) return new ProviderError('unavailable', `${provider} answered HTTP ${status}`, status);
  if (status !== undefined) return new ProviderError('bad_response', `${provider} refused the request (HTTP ${status})`, status);
  if (name === 'APIConnectionError') return new ProviderError('unavailable', `${provider} could not be reached`);
  return new ProviderError('bad_response', `${provider} gave an answer that could not be read`);
}

/** A tool call's id as kept: a model's id past this would not fit the replica's messages (ids are opaque; a prefix still pairs call and result). */
export const CALL_ID_MAX_CHARS = 200;

/** A tool call as a provider read it: its id clipped, its name as text ('' when the model sent none; the loop refuses it). */
export function readToolCall(id: string, name: unknown, args: unknown): ToolCall {
  return { id: id.slice(0, CALL_ID_MAX_CHARS), name: typeof name === 'string' ? name : '', ...parseArguments(args) };
}

/** Tool-call arguments as the model sent them (a JSON text in OpenAI's format). */
export function parseArguments(text: unknown): Pick<ToolCall, 'arguments' | 'argumentsError'> {
  if (text !== null && typeof text === 'object' && !Array.isArray(text)) return { arguments: text as Record<string, unknown> };
  if (typeof text !== 'string' || text.trim() === '') return { arguments: {} };
  try {
    const value: unknown = JSON.parse(text);
    if (value !== null && typeof value === 'object' && !Array.isArray(value)) return { arguments: value as Record<string, unknown> };
  } catch {
    // falls through: the loop tells the model its arguments were not JSON
  }
  return { arguments: {}, argumentsError: 'the arguments were not a JSON object' };
}

export const count = (n: unknown): number => (typeof n === 'number' && Number.isFinite(n) && n > 0 ? Math.floor(n) : 0);

/** A turn's usage as the vendor reported it; a count it left out makes the whole turn's usage estimated by the loop. */
export function usageOf(input: unknown, output: unknown): TokenUsage {
  const reported = (n: unknown) => typeof n === 'number' && Number.isFinite(n);
  return { input: count(input), output: count(output), ...(reported(input) && reported(output) ? {} : { estimated: true }) };
}
