import { DomainError } from '../core/errors.js';
import { isAgentRequest } from './agents-http.js';
import { ACCOUNT_MAX_BODY_BYTES, DASHBOARD_PAYLOAD_MAX_BODY_BYTES, dashboardPayloadRoute, MCP_MAX_BODY_BYTES } from './body-limit.js';
import { isMcpRequest } from './mcp-refusals.js';

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
  if (isAgentRequest(path, host, options.baseHost)) {
    const limit = options.webhookMaxBytes ?? ACCOUNT_MAX_BODY_BYTES;
    return { limit, tooLarge: JSON.stringify(new DomainError('limit_exceeded', `webhook body larger than ${limit} bytes`).toJSON()) };
  }
  if (isMcpRequest(path, host, options.baseHost)) {
    const message = `request body larger than ${MCP_MAX_BODY_BYTES} bytes`;
    return { limit: MCP_MAX_BODY_BYTES, tooLarge: JSON.stringify({ jsonrpc: '2.0', error: { code: -32600, message }, id: null }) };
  }
  const limit = dashboardPayloadRoute(path) ? DASHBOARD_PAYLOAD_MAX_BODY_BYTES : ACCOUNT_MAX_BODY_BYTES;
  return { limit, tooLarge: JSON.stringify(new DomainError('validation_error', `request body larger than ${limit} bytes`).toJSON()) };
}
