/**
 * An agent's AI settings and orchestration limits (issue 16): the rules, no I/O. They live in
 * agents.config (`ai`, `orchestration_limits`); the API key only ever in its sealed form.
 */
import { invalid } from './errors.js';
import { publicMcpServers } from './mcp-servers.js';
import type { TierLimits } from './tiers.js';

/** Providers and their default addresses; `anthropic` speaks its own API, every other Chat Completions. */
export const AI_PROVIDERS: Readonly<Record<string, string | undefined>> = Object.freeze({
  anthropic: undefined, // the SDK's own default
  openai: undefined,
  openrouter: 'https://openrouter.ai/api/v1',
  groq: 'https://api.groq.com/openai/v1',
  ollama: 'http://127.0.0.1:11434/v1',
  // Any other OpenAI-compatible service: give its base_url.
  'openai-compatible': undefined,
});

export const MODEL_MAX_CHARS = 200;
export const SYSTEM_PROMPT_MAX_CHARS = 32_000;
export const API_KEY_MAX_CHARS = 4_096;
export const BASE_URL_MAX_CHARS = 2_048;

export function providerBaseUrl(provider: string): string | undefined {
  return Object.prototype.hasOwnProperty.call(AI_PROVIDERS, provider) ? AI_PROVIDERS[provider] : undefined;
}

/** What agents.config.ai holds. */
export interface StoredAi {
  provider: string;
  model: string;
  base_url?: string;
  system_prompt?: string;
  /** StateCipher.sealSecret(agentId, 'ai-key', key). */
  api_key_sealed: string;
  configured_at: string;
}

export interface AiInput {
  provider: string;
  model: string;
  apiKey: string;
  systemPrompt?: string;
  baseUrl?: string;
}

const CONTROL = /[\u0000-\u001f\u007f]/;

/** `provider` or its alias `engine` (the same value when both are given), then the other fields' rules. */
export function validateAiInput(args: Record<string, unknown>): AiInput {
  const { provider: p, engine } = args;
  if (p !== undefined && engine !== undefined && p !== engine)
    throw invalid("give the provider as 'provider' or 'engine', not two different values", { field: 'provider' });
  const provider = p ?? engine;
  if (typeof provider !== 'string' || !Object.prototype.hasOwnProperty.call(AI_PROVIDERS, provider))
    throw invalid(`provider must be one of ${Object.keys(AI_PROVIDERS).join(', ')}`, { field: 'provider' });
  const model = args.model;
  if (typeof model !== 'string' || model.trim() === '' || model.length > MODEL_MAX_CHARS || CONTROL.test(model))
    throw invalid(`model must be the provider's model name (1-${MODEL_MAX_CHARS} characters), e.g. "claude-sonnet-4-5" or "gpt-4o"`, {
      field: 'model',
    });
  const apiKey = args.api_key;
  // Never echo the key in the message, not even a part of it.
  if (
    typeof apiKey !== 'string' ||
    apiKey.length === 0 ||
    apiKey.length > API_KEY_MAX_CHARS ||
    CONTROL.test(apiKey) ||
    apiKey.trim() !== apiKey
  )
    throw invalid(`api_key must be the provider's key: 1-${API_KEY_MAX_CHARS} characters, no spaces around it or control characters`, {
      field: 'api_key',
    });
  const systemPrompt = args.system_prompt;
  if (systemPrompt !== undefined && (typeof systemPrompt !== 'string' || systemPrompt.length > SYSTEM_PROMPT_MAX_CHARS))
    throw invalid(`system_prompt must be text of at most ${SYSTEM_PROMPT_MAX_CHARS} characters`, { field: 'system_prompt' });
  const baseUrl = args.base_url === undefined ? undefined : validateBaseUrl(args.base_url);
  if (provider === 'openai-compatible' && !baseUrl)
    throw invalid("provider 'openai-compatible' needs base_url: the service's address, e.g. https://example.com/v1", { field: 'base_url' });
  return { provider, model, apiKey, ...(systemPrompt ? { systemPrompt } : {}), ...(baseUrl ? { baseUrl } : {}) };
}

/**
 * http(s) only, no credentials in it (describe_agent shows it), no query or fragment (the SDKs
 * append their paths). It may not name this server's create endpoint: no `/mcp/` path segment and
 * no `{ns}.create.{host}` name, so the model's channel can never be pointed at the management tools.
 * Where it may point is the agents' outbound rules (core/outbound-address.ts, purpose 'model'):
 * checked when it is configured (services/agent-ai.ts) and again at each model call.
 */
export function validateBaseUrl(value: unknown): string {
  const bad = (why: string) => invalid(`base_url ${why}`, { field: 'base_url' });
  if (typeof value !== 'string' || value.length === 0 || value.length > BASE_URL_MAX_CHARS || CONTROL.test(value))
    throw bad(`must be an http(s) address of at most ${BASE_URL_MAX_CHARS} characters`);
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw bad('must be an absolute http(s) address, e.g. http://127.0.0.1:11434/v1');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw bad('must use http or https');
  if (url.username || url.password) throw bad('may not carry credentials (give the key as api_key)');
  if (url.search || url.hash || value.includes('?') || value.includes('#')) throw bad('may not have a query or fragment');
  const segments = url.pathname.toLowerCase().split('/');
  if (segments.includes('mcp') || url.hostname.toLowerCase().split('.').includes('create'))
    throw bad("may not point at an MCP endpoint (this server's create endpoint is never a model's address)");
  return url.toString().replace(/\/+$/, '');
}

/** What describe_agent shows: never the key, sealed or not. */
export function publicAi(ai: unknown): Record<string, unknown> | null {
  if (!ai || typeof ai !== 'object') return null;
  const a = ai as Partial<StoredAi>;
  return {
    provider: a.provider,
    model: a.model,
    base_url: a.base_url ?? providerBaseUrl(String(a.provider)) ?? null,
    system_prompt_set: typeof a.system_prompt === 'string' && a.system_prompt.length > 0,
    system_prompt_chars: typeof a.system_prompt === 'string' ? a.system_prompt.length : 0,
    api_key: 'set (encrypted; never shown)',
    configured_at: a.configured_at,
  };
}

/** An agent's config as tools show it: the AI part without its key, attached servers without their headers' values. */
export function publicConfig(config: Record<string, unknown> | null | undefined): Record<string, unknown> {
  const { ai, mcp_servers, ...rest } = config ?? {};
  return {
    ...rest,
    ...(ai === undefined ? {} : { ai: publicAi(ai) }),
    ...(mcp_servers === undefined ? {} : { mcp_servers: publicMcpServers(mcp_servers) }),
  };
}

export interface OrchestrationLimits {
  max_iterations: number;
  max_ai_tokens: number;
  max_execution_seconds: number;
  /** null: unlimited (the tier allows it). */
  max_functions_called: number | null;
}

export function tierOrchestrationLimits(limits: TierLimits): OrchestrationLimits {
  return {
    max_iterations: limits.agentMaxIterations,
    max_ai_tokens: limits.agentMaxAiTokens,
    max_execution_seconds: limits.agentMaxExecutionSeconds,
    max_functions_called: limits.agentMaxFunctionsCalled,
  };
}

/** The agent's own limits over the tier's defaults, each never above the tier's (a plan may have been lowered since). */
export function effectiveLimits(stored: unknown, limits: TierLimits): OrchestrationLimits {
  const tier = tierOrchestrationLimits(limits);
  const own = stored && typeof stored === 'object' ? (stored as Record<string, unknown>) : {};
  const pick = (key: keyof OrchestrationLimits): number | null => {
    const cap = tier[key];
    const value = own[key];
    if (typeof value !== 'number') return cap;
    return cap === null ? value : Math.min(value, cap);
  };
  return {
    max_iterations: pick('max_iterations')!,
    max_ai_tokens: pick('max_ai_tokens')!,
    max_execution_seconds: pick('max_execution_seconds')!,
    max_functions_called: pick('max_functions_called'),
  };
}

/**
 * configure_orchestration_limits' arguments: positive integers, none above the tier's;
 * `max_execution_seconds` is an alias of `max_execution_time`. Answers the fields to store.
 */
export function validateLimitsInput(args: Record<string, unknown>, limits: TierLimits, tier: string): Partial<OrchestrationLimits> {
  const { max_execution_time: t, max_execution_seconds: s } = args;
  if (t !== undefined && s !== undefined && t !== s)
    throw invalid("give the time as 'max_execution_time' or 'max_execution_seconds', not two different values", {
      field: 'max_execution_time',
    });
  const caps = tierOrchestrationLimits(limits);
  const given: Array<[keyof OrchestrationLimits, string, unknown]> = [
    ['max_iterations', 'max_iterations', args.max_iterations],
    ['max_ai_tokens', 'max_ai_tokens', args.max_ai_tokens],
    ['max_execution_seconds', t !== undefined ? 'max_execution_time' : 'max_execution_seconds', t ?? s],
    ['max_functions_called', 'max_functions_called', args.max_functions_called],
  ];
  const out: Partial<OrchestrationLimits> = {};
  for (const [key, field, value] of given) {
    if (value === undefined) continue;
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1)
      throw invalid(`${field} must be a whole number of at least 1`, { field });
    const cap = caps[key];
    if (cap !== null && value > cap)
      throw invalid(`${field} ${value} is above your plan's limit (${tier}: ${cap})`, { field, limit: cap, tier });
    out[key] = value;
  }
  if (Object.keys(out).length === 0)
    throw invalid('give at least one of max_iterations, max_ai_tokens, max_execution_time, max_functions_called', {
      field: 'max_iterations',
    });
  return out;
}
