import { DomainError, type DomainErrorType } from '../core/errors.js';

/**
 * Every refusal on an MCP endpoint is a JSON-RPC error object (`{jsonrpc, id: null, error: {code,
 * message, data: {type, …details}}}`), whichever layer refused (authentication, namespace, mode,
 * env header, the database away, an unexpected failure); the HTTP status stays. The one exception
 * is the spec's HTTP 429 quota bodies (QUOTA_EXCEEDED, EXECUTION_RATE_EXCEEDED,
 * CONCURRENCY_LIMIT_EXCEEDED), sent as they are.
 */
export const QUOTA_BODY_CODES: ReadonlySet<string> = new Set(['QUOTA_EXCEEDED', 'EXECUTION_RATE_EXCEEDED', 'CONCURRENCY_LIMIT_EXCEEDED']);

/** JSON-RPC codes: bad requests are -32600, our own failures -32603, every other refusal -32000 (data.type says which). */
export function jsonRpcCodeFor(type: string): number {
  const invalid: readonly string[] = ['validation_error', 'invalid_schema', 'code_too_large'] satisfies DomainErrorType[];
  if (invalid.includes(type)) return -32600;
  if (type === 'internal_error') return -32603;
  return -32000;
}

/**
 * A refusal written where the route is not known yet (the connection cap at accept, shutdown):
 * a JSON-RPC error object (its `error` is an object) that also carries `error_type` at the top.
 */
export function routeAgnosticRefusal(type: DomainErrorType, message: string): string {
  return JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: jsonRpcCodeFor(type), message, data: { type } }, error_type: type });
}

/** An MCP endpoint's request: a `/mcp/` path, or any path on `{ns}.create.{base}` / `{ns}.run.{base}`. */
export function isMcpRequest(url: string | undefined, host: string | undefined, baseHost: string | undefined): boolean {
  // Agents' webhooks (/mcp/agent/...) are called by other services: plain JSON refusals.
  if ((url ?? '').startsWith('/mcp/agent/')) return false;
  if ((url ?? '').startsWith('/mcp/')) return true;
  if (!baseHost || !host) return false;
  const hostname = host.replace(/:\d+$/, '').toLowerCase();
  const base = baseHost.replace(/:\d+$/, '').toLowerCase();
  return hostname.endsWith(`.create.${base}`) || hostname.endsWith(`.run.${base}`);
}

/** An MCP endpoint's refusal body: `{jsonrpc, id: null, error: {code, message, data: {type, …details}}}`. */
export function jsonRpcRefusal(type: DomainErrorType, message: string, details: Record<string, unknown> = {}): string {
  return JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: jsonRpcCodeFor(type), message, data: { type, ...details } } });
}

/**
 * A refusal written from Node's request event (pacing, shutdown), where the request line is known:
 * a JSON-RPC error on MCP endpoints, the one error shape (DomainError.toJSON) everywhere else.
 */
export function refusalFor(
  req: { url?: string | undefined; headers: { host?: string | undefined } },
  baseHost: string | undefined,
  type: DomainErrorType,
  message: string,
  details: Record<string, unknown> = {},
): string {
  if (isMcpRequest(req.url, req.headers.host, baseHost)) return jsonRpcRefusal(type, message, details);
  return JSON.stringify(new DomainError(type, message, details).toJSON());
}

/** The error type of a refusal that came without one (the MCP SDK's transport, plain HTTP answers), from its status. */
export function typeForStatus(status: number): DomainErrorType {
  if (status === 401) return 'unauthorized';
  if (status === 403) return 'forbidden';
  if (status === 404) return 'not_found';
  if (status === 409) return 'conflict';
  if (status === 429) return 'rate_limited';
  if (status === 503) return 'unavailable';
  if (status === 507) return 'storage_full';
  if (status >= 500) return 'internal_error';
  return 'validation_error';
}

/**
 * The response as a JSON-RPC error with `data.type` when it is a refusal in another shape or a
 * JSON-RPC error without a type (the SDK's own, e.g. a method it does not serve); otherwise unchanged.
 */
export async function asJsonRpcRefusal(response: Response): Promise<Response> {
  if (response.status < 400) return response;
  const text = await response.clone().text();
  let body: unknown;
  try {
    body = text ? JSON.parse(text) : undefined;
  } catch {
    body = undefined;
  }
  const object = body !== null && typeof body === 'object' && !Array.isArray(body) ? (body as Record<string, unknown>) : undefined;
  if (object?.jsonrpc === '2.0') {
    const error = object.error;
    if (error === null || typeof error !== 'object' || Array.isArray(error)) return response;
    const data = (error as { data?: unknown }).data;
    if (data !== null && typeof data === 'object' && typeof (data as { type?: unknown }).type === 'string') return response;
    const typed = {
      ...object,
      error: { ...error, data: { ...(data !== null && typeof data === 'object' ? data : {}), type: typeForStatus(response.status) } },
    };
    return rewritten(response, typed);
  }
  if (response.status === 429 && typeof object?.code === 'string' && QUOTA_BODY_CODES.has(object.code)) return response;
  let rpc: Record<string, unknown>;
  // The one error shape (DomainError.toJSON): {"error": message, "error_type": T, …details}.
  if (object && typeof object.error === 'string' && typeof object.error_type === 'string') {
    const { error: message, error_type: type, ...details } = object;
    rpc = { code: jsonRpcCodeFor(type), message, data: { type, ...details } };
  } else {
    rpc = {
      code: -32000,
      message: text && !object ? text.slice(0, 500) : response.statusText || `HTTP ${response.status}`,
      data: { type: typeForStatus(response.status) },
    };
  }
  return rewritten(response, { jsonrpc: '2.0', id: null, error: rpc });
}

function rewritten(response: Response, body: unknown): Response {
  const headers = new Headers(response.headers);
  headers.set('content-type', 'application/json');
  headers.delete('content-length');
  return new Response(JSON.stringify(body), { status: response.status, statusText: response.statusText, headers });
}
