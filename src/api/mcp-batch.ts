/**
 * JSON-RPC batches of the 2025-03-26 revision (later revisions removed them). Each message of a
 * batch is served as a request of its own through the endpoint's whole path (session check,
 * admission and metering of a tools/call, the MCP layer), so a batch gets no more than the same
 * messages sent one by one. The answers go back on one SSE stream as they come (notifications
 * such as progress included), or as a 202 when the batch holds no request.
 */

import { isDomainError } from '../core/errors.js';
import { sseMessage } from './sse.js';

/** The SDK's own bound on a batch (its transport refuses larger ones the same way). */
export const MAX_BATCH_MESSAGES = 100;

type Message = Record<string, unknown>;

function error(id: unknown, code: number, message: string, data?: unknown): Message {
  return { jsonrpc: '2.0', id: id ?? null, error: { code, message, ...(data !== undefined ? { data } : {}) } };
}

function refusal(status: number, code: number, message: string): Response {
  return new Response(JSON.stringify(error(null, code, message)), { status, headers: { 'content-type': 'application/json' } });
}

const isRequest = (m: unknown): m is Message & { id: string | number; method: string } =>
  m !== null && typeof m === 'object' && typeof (m as Message).method === 'string' && ((m as Message).id ?? null) !== null;

/** The JSON-RPC messages of one part's answer, as they arrive (SSE) or at once (JSON). */
async function* messagesOf(response: Response, part: unknown): AsyncGenerator<Message> {
  const id = isRequest(part) ? part.id : null;
  const type = response.headers.get('content-type') ?? '';
  if (type.includes('text/event-stream') && response.body) {
    const decoder = new TextDecoder();
    let buffer = '';
    for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
      buffer += decoder.decode(chunk, { stream: true });
      let end: number;
      while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, '');
        const data = event
          .split(/\r?\n/)
          .filter((line) => line.startsWith('data:'))
          .map((line) => line.slice(5).replace(/^ /, ''))
          .join('\n');
        if (data) yield JSON.parse(data) as Message;
      }
    }
    return;
  }
  const text = await response.text();
  if (!text) {
    // 202 for a notification or a response; any other empty answer is an error of this part.
    if (response.status >= 400 && id !== null) yield error(id, -32603, `request refused with HTTP ${response.status}`);
    return;
  }
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    if (id !== null) yield error(id, -32603, `request refused with HTTP ${response.status}`);
    return;
  }
  for (const message of Array.isArray(body) ? body : [body]) {
    if (message && typeof message === 'object' && (message as Message).jsonrpc === '2.0') {
      const m = message as Message;
      // A refusal before the MCP layer read the message carries id null: it is this part's.
      yield m.error !== undefined && (m.id ?? null) === null ? { ...m, id } : m;
    } else if (id !== null) {
      // A quota refusal (HTTP 429 with the spec's body) cannot be a batch's answer: its body travels as data.
      const data = message as { message?: unknown };
      yield error(id, -32000, typeof data?.message === 'string' ? data.message : `request refused with HTTP ${response.status}`, {
        http_status: response.status,
        ...(message as object),
      });
    }
  }
}

export async function serveLegacyBatch(
  batch: unknown[],
  request: Request,
  dispatch: (part: Request) => Promise<Response>,
): Promise<Response> {
  if (batch.length === 0) return refusal(400, -32600, 'Invalid Request: an empty batch');
  if (batch.length > MAX_BATCH_MESSAGES)
    return refusal(400, -32600, `Invalid Request: Batch must not exceed ${MAX_BATCH_MESSAGES} messages`);
  if (batch.some((m) => m !== null && typeof m === 'object' && (m as Message).method === 'initialize')) {
    return refusal(400, -32600, 'Invalid Request: initialize must not be part of a JSON-RPC batch');
  }
  const accept = request.headers.get('accept') ?? '';
  if (!accept.includes('application/json') || !accept.includes('text/event-stream')) {
    return refusal(406, -32000, 'Not Acceptable: Client must accept both application/json and text/event-stream');
  }
  const part = (message: unknown) =>
    new Request(request.url, { method: 'POST', headers: request.headers, body: JSON.stringify(message), signal: request.signal });
  const answers = batch.map((message) => dispatch(part(message)).then((response) => ({ message, response })));
  if (!batch.some(isRequest)) {
    // Notifications and responses only: accepted, nothing to answer.
    for (const { response } of await Promise.all(answers)) await response.body?.cancel().catch(() => undefined);
    return new Response(null, { status: 202 });
  }
  const encoder = new TextEncoder();
  const body = new ReadableStream<Uint8Array>({
    async start(controller) {
      const write = (message: Message) => {
        try {
          controller.enqueue(encoder.encode(sseMessage(JSON.stringify(message))));
        } catch {
          // the client went away: its parts end on their own (the request's signal)
        }
      };
      await Promise.all(
        answers.map(async (answer, index) => {
          const id = isRequest(batch[index]) ? (batch[index] as Message).id : null;
          try {
            const { message, response } = await answer;
            for await (const m of messagesOf(response, message)) write(m);
          } catch (failure) {
            // A refusal thrown on the way (the database away: unavailable) is this part's error.
            if (id === null) return;
            if (isDomainError(failure)) write(error(id, -32000, failure.message, { type: failure.type, ...(failure.details ?? {}) }));
            else write(error(id, -32603, 'internal error; the operator can find details in the server log'));
          }
        }),
      );
      controller.close();
    },
  });
  return new Response(body, { status: 200, headers: { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' } });
}
