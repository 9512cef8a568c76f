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
  if (isMcpRequest(req.url, req.headers.host, baseHost))
    return JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: jsonRpcCodeFor(type), message, data: { type, ...details } } });
  return JSON.stringify(new DomainError(type, message, details).toJSON());
}

/** The response as a JSON-RPC error when it is a refusal in another shape; otherwise unchanged. */
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
  if (object?.jsonrpc === '2.0') return response;
  if (response.status === 429 && typeof object?.code === 'string' && QUOTA_BODY_CODES.has(object.code)) return response;
  let rpc: Record<string, unknown>;
  // The one error shape (DomainError.toJSON): {"error": message, "error_type": T, …details}.
  if (object && typeof object.error === 'string' && typeof object.error_type === 'string') {
    const { error: message, error_type: type, ...details } = object;
    rpc = { code: jsonRpcCodeFor(type), message, data: { type, ...details } };
  } else {
    rpc = { code: -32000, message: text && !object ? text.slice(0, 500) : response.statusText || `HTTP ${response.status}` };
  }
  const headers = new Headers(response.headers);
  headers.set('content-type', 'application/json');
  headers.delete('content-length');
  return new Response(JSON.stringify({ jsonrpc: '2.0', id: null, error: rpc }), {
    status: response.status,
    statusText: response.statusText,
    headers,
  });
}
