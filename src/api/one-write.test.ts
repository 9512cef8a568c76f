// A short answer is read whole and sent with its length (one socket write); a long, slow or large
// one streams as it comes, nothing lost or held back; a client that goes away stops the wait.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { inOneWrite, WHOLE_ANSWER_MAX_BYTES } from './one-write.js';

/** A stream that gives `chunks` one per pull, then waits for `release` (if any) before ending. */
function answer(chunks: Uint8Array[], options: { release?: Promise<void>; onCancel?: () => void } = {}): Response {
  let next = 0;
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (next < chunks.length) return controller.enqueue(chunks[next++]!);
      await options.release;
      controller.close();
    },
    cancel: () => options.onCancel?.(),
  });
  return new Response(body, { status: 200, headers: { 'content-type': 'text/event-stream' } });
}

test('an answer that is complete at once is sent whole, with its length', async () => {
  const parts = ['event: message\ndata: {"result":', '{"ok":true}}\n\n'].map((text) => Buffer.from(text));
  const sent = await inOneWrite(answer(parts));
  const text = parts.map(String).join('');
  assert.equal(sent.headers.get('content-length'), String(Buffer.byteLength(text)));
  assert.equal(sent.headers.get('content-type'), 'text/event-stream');
  assert.equal(await sent.text(), text);
});

test('an answer that goes on (a progress notification first) streams: the first bytes at once, the rest when they come', async () => {
  let release!: () => void;
  const progress = Buffer.from('event: message\ndata: {"method":"notifications/progress"}\n\n');
  const sent = await inOneWrite(answer([progress], { release: new Promise((resolve) => (release = resolve)) }));
  assert.equal(sent.headers.get('content-length'), null);
  const reader = sent.body!.getReader();
  assert.equal(Buffer.from((await reader.read()).value!).toString(), progress.toString());
  release();
  assert.equal((await reader.read()).done, true);
});

test('a large answer is not gathered into one buffer: it streams, every byte in order', async () => {
  const pieces = Array.from({ length: 5 }, (_, index) => Buffer.alloc(WHOLE_ANSWER_MAX_BYTES / 2, 97 + index));
  const sent = await inOneWrite(answer(pieces));
  assert.equal(sent.headers.get('content-length'), null);
  assert.deepEqual(Buffer.from(await sent.arrayBuffer()), Buffer.concat(pieces));
});

test('a client that goes away stops the wait and cancels the answer', async () => {
  const abort = new AbortController();
  let cancelled = false;
  const waiting = inOneWrite(
    answer([], {
      release: new Promise(() => {}),
      onCancel: () => (cancelled = true),
    }),
    abort.signal,
  );
  abort.abort('the client closed its connection');
  const sent = await waiting;
  assert.equal(cancelled, true);
  assert.equal(sent.headers.get('content-length'), null);
});
