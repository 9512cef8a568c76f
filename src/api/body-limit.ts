import type { Context, MiddlewareHandler } from 'hono';
import type { ByteBudget } from './client-pacing.js';

/**
 * The largest MCP request body. The largest legitimate one is make_function/update_function: code
 * up to 1 MB, two schemas up to 256 KB each, config up to 64 KB and a description. JSON escaping
 * can triple text (`json.dumps`' default `\uXXXX` for non-ASCII; quotes and newlines double), so
 * about 5 MB; 8 MB leaves room. Environment values travel in a header, not in the body.
 */
export const MCP_MAX_BODY_BYTES = 8 * 1024 * 1024;
/** Every other route (register, login, keys) reads small JSON objects. */
export const ACCOUNT_MAX_BODY_BYTES = 64 * 1024;
/**
 * The dashboard's routes that carry what the MCP tools take as text of up to 32,000 characters (an
 * agent's system prompt, a chat message) or a function's input (try it): `\uXXXX` escaping makes
 * such text up to 192 KB, so the page is not refused what the tool accepts.
 */
export const DASHBOARD_PAYLOAD_MAX_BODY_BYTES = 256 * 1024;

export function dashboardPayloadRoute(path: string): boolean {
  return path.startsWith('/api/agents/') || /^\/api\/functions\/[^/]+\/[^/]+\/[^/]+\/run$/.test(path);
}

/** Declared bodies up to this size are paced whole, before they are read (see bodyLimit). */
export const PACED_WHOLE_MAX_BYTES = 64 * 1024;

export class BodyTooLargeError extends Error {
  constructor(readonly limit: number) {
    super(`request body larger than ${limit} bytes`);
  }
}

export interface BodyRule {
  limit: number;
  /** The 413 answer for this route (JSON-RPC on MCP endpoints, a JSON error elsewhere). */
  tooLarge: (c: Context, limit: number) => Response;
}

/**
 * Enforces a body limit on every request before any handler (and so any authentication) runs:
 * a declared Content-Length over the limit is refused without reading a byte; a body without
 * one (chunked) is counted as it streams and cut off at the limit. A refused request closes its
 * connection, so the rest of the body is not read either.
 */
export function bodyLimit(
  ruleFor: (c: Context) => BodyRule,
  pacing?: { budget: ByteBudget; client: (c: Context) => string },
): MiddlewareHandler {
  return async (c, next) => {
    const { limit, tooLarge } = ruleFor(c);
    const refuse = () => {
      const response = tooLarge(c, limit);
      response.headers.set('connection', 'close');
      return response;
    };
    const declared = c.req.header('content-length');
    if (declared !== undefined) {
      // Node's parser holds the body to exactly this length, so nothing more needs counting.
      if (!/^\d+$/.test(declared.trim()) || Number(declared) > limit) return refuse();
      if (!pacing || Number(declared) === 0) return next();
      if (Number(declared) <= PACED_WHOLE_MAX_BYTES) {
        // A small body arrives in a chunk or two: its bytes are taken from the client's share at
        // once, and a client in debt waits before it is read, as it would for its next chunk,
        // without a stream wrapped around the body (which costs every MCP request more than the read).
        const wait = pacing.budget.take(pacing.client(c), Number(declared));
        if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
        return next();
      }
    }
    // GET and HEAD requests are given no body (the adapter never reads one), and asking for it
    // would build the whole Fetch Request (an AbortController, a stream): about a quarter of the
    // main thread's work for each /healthz.
    if (c.req.method === 'GET' || c.req.method === 'HEAD') return next();
    const raw = c.req.raw;
    if (!raw.body) return next();
    const reader = raw.body.getReader();
    const client = pacing?.client(c);
    let seen = 0;
    let exceeded = false;
    let readOnAt = 0;
    // Pull-based: bytes are read only as the handler consumes them, never ahead of it.
    const limited = new ReadableStream<Uint8Array>(
      {
        async pull(controller) {
          // Over its client's share of body bytes: nothing more is read until the debt is paid.
          const wait = readOnAt - performance.now();
          if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
          const { done, value } = await reader.read();
          if (done) return controller.close();
          if (pacing && client !== undefined) readOnAt = performance.now() + pacing.budget.take(client, value.byteLength);
          seen += value.byteLength;
          if (seen > limit) {
            exceeded = true;
            controller.error(new BodyTooLargeError(limit));
            return;
          }
          controller.enqueue(value);
        },
        cancel(reason) {
          return reader.cancel(reason);
        },
      },
      { highWaterMark: 0 },
    );
    c.req.raw = new Request(raw, { body: limited, duplex: 'half' } as RequestInit);
    await next();
    if (exceeded) {
      // Whatever the handler made of the failed read, the answer is 413.
      (c as unknown as { res: Response | undefined }).res = undefined;
      c.res = refuse();
    }
  };
}

/**
 * Reads a request's whole body for a route whose cap is known only once the route has looked
 * something up (an agent webhook's plan): a declared Content-Length over `limit` is refused without
 * reading a byte, a chunked body is counted as it streams and cut off at the limit (BodyTooLargeError;
 * the caller answers 413 and closes the connection, so the rest is never read).
 */
export async function readCappedBody(request: Request, limit: number): Promise<Uint8Array> {
  const declared = request.headers.get('content-length');
  if (declared !== null && (!/^\d+$/.test(declared.trim()) || Number(declared) > limit)) throw new BodyTooLargeError(limit);
  if (!request.body) return new Uint8Array(0);
  const reader = request.body.getReader();
  const chunks: Uint8Array[] = [];
  let seen = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    seen += value.byteLength;
    if (limit < seen) {
      await reader.cancel().catch(() => undefined);
      throw new BodyTooLargeError(limit);
    }
    chunks.push(value);
  }
  const body = new Uint8Array(seen);
  let at = 0;
  for (const chunk of chunks) {
    body.set(chunk, at);
    at += chunk.byteLength;
  }
  return body;
}
