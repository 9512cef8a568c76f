/**
 * Answers sent in one socket write. A streamed answer makes the HTTP layer flush its headers at
 * once and then write the body as chunks: two writes (and two wake-ups of the client) for a call
 * whose whole answer is ready a moment later. Here a short answer is read whole first and sent with
 * its length; a long or slow one still streams, its headers held only until its first bytes come.
 */

/** How long a streamed (SSE) answer's headers wait for its first event: a longer run gets them then, as before. */
export const FIRST_BYTES_WAIT_MS = 1000;
/** An answer is read whole up to this many bytes; past it, it streams (a large rendered result is never copied into one buffer). */
export const WHOLE_ANSWER_MAX_BYTES = 64 * 1024;

export const NOT_YET = Symbol('not yet');

/** The promise's value, or NOT_YET once `ms` pass or `signal` aborts. */
export function within<T>(promise: Promise<T>, ms: number, signal: AbortSignal | undefined): Promise<T | typeof NOT_YET> {
  let timer: NodeJS.Timeout | undefined;
  let onAbort: (() => void) | undefined;
  const late = new Promise<typeof NOT_YET>((resolve) => {
    timer = setTimeout(() => resolve(NOT_YET), ms);
    onAbort = () => resolve(NOT_YET);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
  return Promise.race([promise, late]).finally(() => {
    clearTimeout(timer);
    signal?.removeEventListener('abort', onAbort!);
  });
}

/**
 * The answer with its body read whole when it ends soon (its first bytes within FIRST_BYTES_WAIT_MS,
 * each next piece already on its way) and stays under WHOLE_ANSWER_MAX_BYTES; else the same
 * answer streamed, the bytes read so far first. Progress events of a long call are not held: a
 * piece that does not follow at once sends what was read. `signal`: the request's, aborted when
 * its client closes the connection (then nothing more is waited for).
 */
export async function inOneWrite(response: Response, signal?: AbortSignal, edit: AnswerEdit = {}): Promise<Response> {
  if (!response.body || signal?.aborted) return edit.streamed ? edit.streamed(response) : response;
  const reader = response.body.getReader();
  const pieces: Uint8Array[] = [];
  let size = 0;
  let pending: Promise<ReadableStreamReadResult<Uint8Array>> | undefined = reader.read();
  let waitMs = FIRST_BYTES_WAIT_MS;
  for (;;) {
    let next: ReadableStreamReadResult<Uint8Array> | typeof NOT_YET;
    try {
      next = await within(pending, waitMs, signal);
    } catch {
      // The body failed: the stream below ends with the same error (its read is `pending`).
      break;
    }
    if (next === NOT_YET) {
      // The client went away: its answer is dropped (as the HTTP layer drops a stream whose
      // connection closed), which also ends the call's exchange in the MCP layer.
      if (signal?.aborted) void reader.cancel(signal.reason).catch(() => undefined);
      break;
    }
    pending = undefined;
    if (next.done) {
      const bytes = Buffer.concat(pieces, size);
      const { body, length } = bodyOfPieces(edit.whole ? edit.whole(bytes) : [bytes]);
      const headers = new Headers(response.headers);
      headers.set('content-length', String(length));
      return new Response(body, { status: response.status, statusText: response.statusText, headers });
    }
    pieces.push(next.value);
    size += next.value.byteLength;
    if (size > WHOLE_ANSWER_MAX_BYTES) break;
    pending = reader.read();
    // The rest of an answer that is ready follows within a turn or two of the event loop.
    waitMs = 1;
  }
  const headers = new Headers(response.headers);
  headers.delete('content-length');
  let first: Promise<ReadableStreamReadResult<Uint8Array>> | undefined = pending;
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      for (const piece of pieces) controller.enqueue(piece);
    },
    async pull(controller) {
      const next = await (first ?? reader.read());
      first = undefined;
      if (next.done) controller.close();
      else controller.enqueue(next.value);
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  });
  const streaming = new Response(body, { status: response.status, statusText: response.statusText, headers });
  return edit.streamed ? edit.streamed(streaming) : streaming;
}

/**
 * What the caller does to the answer's bytes: `whole` to an answer read whole (the pieces to send,
 * written as they are, never copied into one buffer), `streamed` to one that streams.
 */
export interface AnswerEdit {
  whole?: (bytes: Buffer) => Buffer[];
  streamed?: (response: Response) => Response;
}

/**
 * A body of pieces already in memory, and its length: up to WHOLE_ANSWER_MAX_BYTES one buffer (one
 * write; a stream of pieces is a write per piece), above it the pieces as they are, never copied.
 */
export function bodyOfPieces(parts: readonly Buffer[]): { body: BodyInit; length: number } {
  const length = parts.reduce((sum, part) => sum + part.byteLength, 0);
  if (parts.length === 1) return { body: parts[0] as unknown as BodyInit, length };
  if (length <= WHOLE_ANSWER_MAX_BYTES) return { body: Buffer.concat(parts, length) as unknown as BodyInit, length };
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      for (const part of parts) controller.enqueue(part);
      controller.close();
    },
  });
  return { body, length };
}
