import { DomainError } from '../core/errors.js';
import { isAgentRequest } from './agents-http.js';
import { ACCOUNT_MAX_BODY_BYTES, DASHBOARD_PAYLOAD_MAX_BODY_BYTES, dashboardPayloadRoute, MCP_MAX_BODY_BYTES } from './body-limit.js';
import { isMcpRequest, jsonRpcRefusal } from './mcp-refusals.js';

/** A route's body cap and its 413 answer (JSON text), known from the path and Host alone. */
export interface RouteBodyRule {
  limit: number;
  tooLarge: string;
}

export interface BodyRuleOptions {
  baseHost?: string | undefined;
  /** The largest plan's webhook body cap (each delivery is then held to its own plan's). */
  webhookMaxBytes?: number | undefined;
}

/**
 * The body rule of every route the app's body limit covers: the same function serves the early
 * check in Node's request event (body-precheck.ts) and the app's middleware, so the two never
 * disagree on a limit or an answer.
 */
export function bodyRuleOf(path: string, host: string | undefined, options: BodyRuleOptions): RouteBodyRule {
  if (isAgentRequest(path, host, options.baseHost)) return rule('webhook', options.webhookMaxBytes ?? ACCOUNT_MAX_BODY_BYTES);
  if (isMcpRequest(path, host, options.baseHost)) return rule('mcp', MCP_MAX_BODY_BYTES);
  return rule('other', dashboardPayloadRoute(path) ? DASHBOARD_PAYLOAD_MAX_BODY_BYTES : ACCOUNT_MAX_BODY_BYTES);
}

type RouteKind = 'webhook' | 'mcp' | 'other';
// A handful of distinct answers, each built once: a flood is answered without building an Error (and its stack) per request.
const rules = new Map<string, RouteBodyRule>();
function rule(kind: RouteKind, limit: number): RouteBodyRule {
  const key = `${kind} ${limit}`;
  let found = rules.get(key);
  if (!found) {
    found = { limit, tooLarge: tooLargeAnswer(kind, limit) };
    rules.set(key, found);
  }
  return found;
}

function tooLargeAnswer(kind: RouteKind, limit: number): string {
  if (kind === 'webhook') return JSON.stringify(new DomainError('limit_exceeded', `webhook body larger than ${limit} bytes`).toJSON());
  const message = `request body larger than ${limit} bytes`;
  if (kind === 'mcp') return jsonRpcRefusal('validation_error', message);
  return JSON.stringify(new DomainError('validation_error', message).toJSON());
}

/** The answer to a GET or HEAD that carries a chunked body (400): in the route's error shape. */
export function noBodyAnswer(path: string, host: string | undefined, options: BodyRuleOptions): string {
  const message = 'a GET or HEAD request carries no body';
  if (isMcpRequest(path, host, options.baseHost)) return jsonRpcRefusal('validation_error', message);
  return JSON.stringify(new DomainError('validation_error', message).toJSON());
}
