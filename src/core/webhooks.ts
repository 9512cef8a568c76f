/**
 * Agent webhooks (issue 15): the rules of their names, secrets and deliveries. Pure: the route
 * (api/agents-http.ts) and the tools (services/webhooks.ts) apply them.
 */
import { invalid } from './errors.js';
import { validateEntityName } from './names.js';
import { SIGNATURE_HEADER } from './webhook-signature.js';
import type { TierLimits } from './tiers.js';

/**
 * A webhook's path: one URL segment, 1-64 lowercase letters, digits, '-' and '_', starting and
 * ending with a letter or digit. Nothing that needs escaping, no '/', '.', '..' or '%': the URL a
 * sender is given is the URL the route matches, byte for byte.
 */
export const WEBHOOK_PATH_PATTERN = /^[a-z0-9](?:[a-z0-9_-]{0,62}[a-z0-9])?$/;
export const WEBHOOK_SECRET_MIN = 16;
export const WEBHOOK_SECRET_MAX = 256;
/** Webhooks one agent may have. */
export const WEBHOOKS_PER_AGENT = 50;
/** How long an Idempotency-Key is remembered. */
export const IDEMPOTENCY_HOURS = 24;
export const IDEMPOTENCY_KEY_MAX = 255;
/** ?wait=true waits at most the tier's run timeout plus this, and never longer than WAIT_CAP_SECONDS. */
export const WAIT_MARGIN_SECONDS = 30;
export const WAIT_CAP_SECONDS = 330;
/** direct: the handler runs; run_then_reason: it runs, then the agent's model gets its outcome; reason_first: the model gets the delivery and decides (without an AI configured both run direct). */
export const ORCHESTRATION_MODES = ['direct', 'run_then_reason', 'reason_first'] as const;
export type WebhookOrchestrationMode = (typeof ORCHESTRATION_MODES)[number];

export function validateWebhookPath(value: unknown, field = 'path'): string {
  // A leading '/' is forgiven: people write paths that way.
  const path = typeof value === 'string' && value.startsWith('/') ? value.slice(1) : value;
  if (typeof path !== 'string' || !WEBHOOK_PATH_PATTERN.test(path))
    throw invalid(
      `invalid webhook path ${JSON.stringify(value)}: use 1-64 lowercase letters, digits, '-' or '_', starting and ending with a letter or digit (one URL segment, e.g. "github-push")`,
      { field },
    );
  return path;
}

/** A webhook secret is an HMAC key: 16-256 printable characters (no spaces or control characters at the ends). */
export function validateWebhookSecret(value: unknown, field = 'secret'): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string') throw invalid('secret must be a string (the HMAC key senders sign with)', { field });
  if ([...value].length < WEBHOOK_SECRET_MIN || [...value].length > WEBHOOK_SECRET_MAX)
    throw invalid(`secret must be ${WEBHOOK_SECRET_MIN}-${WEBHOOK_SECRET_MAX} characters (e.g. openssl rand -hex 32)`, { field });
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(value) || value.trim() !== value)
    throw invalid('secret must not contain control characters or start or end with white space', { field });
  return value;
}

/** `service.function`, both parts by the catalog's naming rules. */
export function validateHandlerName(value: unknown, field = 'handler_function_name'): { service: string; fn: string; name: string } {
  if (typeof value !== 'string' || !/^[^.]+\.[^.]+$/.test(value))
    throw invalid(`${field} must name a function of this namespace as "service.function", e.g. "github.on_push"`, { field });
  const [service, fn] = value.split('.') as [string, string];
  validateEntityName('service', service, field);
  validateEntityName('function', fn, field);
  return { service, fn, name: value };
}

export function validateOrchestrationMode(value: unknown, field = 'orchestration_mode'): WebhookOrchestrationMode {
  if (value === undefined || value === null) return 'direct';
  if (typeof value === 'string' && (ORCHESTRATION_MODES as readonly string[]).includes(value)) return value as WebhookOrchestrationMode;
  throw invalid(`orchestration_mode must be one of 'direct', 'run_then_reason', 'reason_first' (default 'direct')`, { field });
}

/** An Idempotency-Key: 1-255 visible ASCII characters; undefined when absent or empty. */
export function idempotencyKeyOf(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  const key = header.trim();
  if (key === '') return undefined;
  if (key.length > IDEMPOTENCY_KEY_MAX || !/^[\x21-\x7e]+$/.test(key))
    throw invalid(`Idempotency-Key must be 1-${IDEMPOTENCY_KEY_MAX} visible ASCII characters`, { field: 'Idempotency-Key' });
  return key;
}

/** Request headers the handler never sees: credentials and the signature (the timestamp stays). */
export const WITHHELD_HEADERS: ReadonlySet<string> = new Set(['authorization', 'proxy-authorization', 'cookie', SIGNATURE_HEADER]);

export interface WebhookInput {
  body: unknown;
  headers: Record<string, string>;
  query: Record<string, string>;
  path: string;
}

/**
 * The handler's input. The body is parsed JSON when the content type is JSON (application/json or
 * any +json) and it parses, else its text; a body that is not UTF-8 is refused (a clear 400), since
 * the handler's input is JSON text. Headers are lowercase, minus WITHHELD_HEADERS; a repeated query
 * parameter gives its last value.
 */
export function webhookInput(input: {
  raw: Uint8Array;
  contentType: string | undefined;
  headers: Iterable<[string, string]>;
  query: Iterable<[string, string]>;
  path: string;
}): WebhookInput {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false }).decode(input.raw);
  } catch {
    throw invalid('the webhook body is not UTF-8 text; send JSON or text (binary payloads can be base64-encoded)', { field: 'body' });
  }
  let body: unknown = text;
  const type = (input.contentType ?? '').split(';')[0]!.trim().toLowerCase();
  if (text !== '' && (type === 'application/json' || /^application\/[a-z0-9.+-]*\+json$/.test(type))) {
    try {
      body = JSON.parse(text);
    } catch {
      body = text;
    }
  }
  const headers: Record<string, string> = {};
  for (const [name, value] of input.headers) if (!WITHHELD_HEADERS.has(name.toLowerCase())) headers[name.toLowerCase()] = value;
  const query: Record<string, string> = {};
  for (const [name, value] of input.query) query[name] = value;
  return { body, headers, query, path: input.path };
}

/** How long ?wait=true waits for the run's end: the tier's timeout plus a margin, capped. */
export function waitSeconds(limits: Pick<TierLimits, 'timeoutSeconds'>): number {
  return Math.min(limits.timeoutSeconds + WAIT_MARGIN_SECONDS, WAIT_CAP_SECONDS);
}
