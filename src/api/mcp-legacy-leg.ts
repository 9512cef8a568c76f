import {
  legacyStatelessFallback,
  WebStandardStreamableHTTPServerTransport,
  type LegacyHttpHandler,
  type McpServerFactory,
} from '@modelcontextprotocol/server';
import { within, NOT_YET } from './one-write.js';
import { SSE_HEADERS, SSE_KEEP_ALIVE_FRAME, SSE_KEEP_ALIVE_MS, sseMessage } from './sse.js';

/** How long an answer may take and still go as JSON; a later one goes on an SSE stream opened then. */
export const JSON_ANSWER_WAIT_MS = 1000;

/**
 * True when a 2025-era body may get more than its answers: a request asking for progress
 * (`_meta.progressToken`), which only an SSE stream can carry. A call of ours sends nothing else
 * on its request's stream (list changes go on the session's GET stream).
 */
export function asksForProgress(body: unknown): boolean {
  const messages = Array.isArray(body) ? body : [body];
  return messages.some((message) => {
    const meta = (message as { params?: { _meta?: { progressToken?: unknown } } } | null)?.params?._meta;
    return meta !== null && typeof meta === 'object' && meta.progressToken !== undefined;
  });
}

/** A single request's id, echoed in an error answer (null for a batch or a notification). */
function requestIdOf(body: unknown): string | number | null {
  const id = (body as { id?: unknown } | null)?.id;
  return !Array.isArray(body) && (typeof id === 'string' || typeof id === 'number') ? id : null;
}

const encoder = new TextEncoder();

/**
 * An SSE stream that waits for `answer` (a JSON answer), sending keep-alive comments meanwhile,
 * then carries it as one `message` event, as the SDK's stream would have. `cancel`: the client
 * went away.
 */
function streamedAnswer(answer: Promise<Response>, cancel: () => void, keepAliveMs: number): Response {
  let keepAlive: NodeJS.Timeout | undefined;
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      keepAlive = setInterval(() => controller.enqueue(encoder.encode(SSE_KEEP_ALIVE_FRAME)), keepAliveMs);
      keepAlive.unref();
      answer
        .then(async (response) => {
          // An exchange ended without an answer (a silenced call) ends the stream without an event.
          const text = response.headers.get('content-type')?.startsWith('text/event-stream') ? '' : await response.text();
          if (text) controller.enqueue(encoder.encode(sseMessage(text)));
          controller.close();
        })
        .catch((error: unknown) => controller.error(error))
        .finally(() => clearInterval(keepAlive));
    },
    cancel() {
      clearInterval(keepAlive);
      cancel();
    },
  });
  return new Response(body, { status: 200, headers: SSE_HEADERS });
}

/**
 * The 2025-era leg: the SDK's stateless fallback (a fresh server and transport per POST), but a
 * POST that cannot be sent anything before its answer is answered in JSON, as the 2025 revisions
 * allow (a client must accept both), not as an SSE stream of one event: the stream cost the
 * server its framing and two stream wrappers per answer, and the client its SSE parser
 * (`bench/call-cost --era v1`). An answer not ready within JSON_ANSWER_WAIT_MS goes on an SSE
 * stream opened then, with keep-alive comments, so a long run is not cut by a proxy's idle timeout.
 * A POST asking for progress, and anything else (GET, DELETE: 405), goes through the SDK's
 * fallback unchanged.
 */
export function legacyLeg(
  factory: McpServerFactory,
  onerror: (error: Error) => void,
  options: { maxRequestBodySize: number; jsonWaitMs?: number; keepAliveMs?: number },
): LegacyHttpHandler {
  const streamed = legacyStatelessFallback(factory, onerror, { maxRequestBodySize: options.maxRequestBodySize });
  const jsonWaitMs = options.jsonWaitMs ?? JSON_ANSWER_WAIT_MS;
  const keepAliveMs = options.keepAliveMs ?? SSE_KEEP_ALIVE_MS;
  return async (request, handlerOptions) => {
    const parsedBody = handlerOptions?.parsedBody;
    if (request.method.toUpperCase() !== 'POST' || parsedBody === undefined || asksForProgress(parsedBody)) {
      return streamed(request, handlerOptions);
    }
    const authInfo = handlerOptions?.authInfo;
    try {
      const server = await factory({ era: 'legacy', ...(authInfo ? { authInfo } : {}), requestInfo: request });
      const transport = new WebStandardStreamableHTTPServerTransport({
        sessionIdGenerator: undefined,
        enableJsonResponse: true,
        maxRequestBodySize: options.maxRequestBodySize,
      });
      await server.connect(transport);
      const signal = request.signal;
      // Settles the answer when the exchange ends without one: a JSON answer is a promise the
      // closed transport never settles. A client that goes away: 499, which nobody reads and no
      // caller counts as answered. A call silenced by its cancel (the handler closes its server,
      // run-endpoint.ts): an SSE stream without an event, the SDK stream's end without an answer.
      let settle: (response: Response) => void = () => undefined;
      const ended = new Promise<Response>((resolve) => (settle = resolve));
      const onAbort = () => {
        const error = { jsonrpc: '2.0', error: { code: -32000, message: 'the client went away' }, id: requestIdOf(parsedBody) };
        settle(Response.json(error, { status: 499 }));
        teardown();
      };
      let closed = false;
      const teardown = () => {
        if (closed) return;
        closed = true;
        signal?.removeEventListener('abort', onAbort);
        transport.close().catch(() => undefined);
        server.close().catch(() => undefined);
      };
      const closing = transport.onclose;
      transport.onclose = () => {
        closing?.();
        settle(new Response(null, { status: 200, headers: SSE_HEADERS }));
      };
      // A client that goes away ends the exchange (its handlers see their signal abort), as the
      // SDK's fallback does for a stream.
      if (signal?.aborted) onAbort();
      else signal?.addEventListener('abort', onAbort, { once: true });
      // A client gone before the exchange starts (while its server was built) is not served: the
      // closed transport would answer 404 "Session not found" at once, winning the race.
      const answer = signal?.aborted
        ? ended
        : Promise.race([transport.handleRequest(request, { ...(authInfo ? { authInfo } : {}), parsedBody }), ended]);
      answer.then(teardown, teardown);
      // The client's going away settles `answer` itself (499), so no signal is passed.
      const first = await within(answer, jsonWaitMs, undefined);
      if (first === NOT_YET) return streamedAnswer(answer, teardown, keepAliveMs);
      // With its length, so the HTTP layer sends it in one write (one-write.ts), as the run
      // endpoint's calls and listings are; the SDK's JSON answer does not say it.
      if (!first.body || first.headers.has('content-length')) return first;
      const bytes = Buffer.from(await first.arrayBuffer());
      const headers = new Headers(first.headers);
      headers.set('content-length', String(bytes.byteLength));
      return new Response(bytes as unknown as BodyInit, { status: first.status, headers });
    } catch (error) {
      onerror(error instanceof Error ? error : new Error(String(error)));
      return Response.json(
        { jsonrpc: '2.0', error: { code: -32603, message: 'Internal server error' }, id: requestIdOf(parsedBody) },
        { status: 500 },
      );
    }
  };
}
