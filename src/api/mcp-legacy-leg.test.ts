// The 2025-era leg's answer shapes, against a real SDK server (mcp-legacy-leg.ts): JSON when the
// answer is ready in time, an SSE stream with keep-alives when it is not, the SDK's stream when
// progress is asked for, and a client that goes away ends its call. The whole endpoint's shapes
// are in mcp-refusals.test.ts (its 2025-era describe) and cancel.test.ts (progress, cancels).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { McpServer } from '@modelcontextprotocol/server';
import { z } from 'zod';
import { asksForProgress, legacyLeg } from './mcp-legacy-leg.js';

const ACCEPT = 'application/json, text/event-stream';

/** A leg over a fresh server per request with a `nap` tool (ms), recording each call's abort. */
function leg(waits: { jsonWaitMs: number; keepAliveMs: number }) {
  const aborted: boolean[] = [];
  const errors: Error[] = [];
  const handler = legacyLeg(
    () => {
      const server = new McpServer({ name: 'leg-test', version: '1.0.0' });
      server.registerTool('nap', { inputSchema: z.object({ ms: z.number() }) }, async ({ ms }, context) => {
        const signal = context?.mcpReq?.signal;
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, ms);
          signal?.addEventListener('abort', () => {
            clearTimeout(timer);
            aborted.push(true);
            resolve();
          });
        });
        return { content: [{ type: 'text', text: `slept ${ms}` }] };
      });
      // What a cancelled call does (run-endpoint.ts, silence): closes its server, never answering.
      server.registerTool('silenced', { inputSchema: z.object({ ms: z.number() }) }, async ({ ms }) => {
        await new Promise((resolve) => setTimeout(resolve, ms));
        await server.close();
        return new Promise<never>(() => undefined);
      });
      return server;
    },
    (error) => errors.push(error),
    { maxRequestBodySize: 1 << 20, ...waits },
  );
  return { handler, aborted, errors };
}

function call(ms: number, meta?: Record<string, unknown>, signal?: AbortSignal, tool = 'nap') {
  const body = {
    jsonrpc: '2.0',
    id: 1,
    method: 'tools/call',
    params: { name: tool, arguments: { ms }, ...(meta ? { _meta: meta } : {}) },
  };
  const request = new Request('http://127.0.0.1/mcp', {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: ACCEPT, 'mcp-protocol-version': '2025-06-18' },
    body: JSON.stringify(body),
    ...(signal ? { signal } : {}),
  });
  return { request, parsedBody: body };
}

test('an answer ready in time is JSON; a later one an SSE stream with keep-alives, then the answer as one event', async () => {
  const { handler, errors } = leg({ jsonWaitMs: 300, keepAliveMs: 100 });
  const quick = call(0);
  const json = await handler(quick.request, { parsedBody: quick.parsedBody });
  assert.equal(json.status, 200);
  assert.match(json.headers.get('content-type') ?? '', /^application\/json/);
  assert.equal(((await json.json()) as { result: { content: Array<{ text: string }> } }).result.content[0]!.text, 'slept 0');

  const slow = call(900);
  const started = Date.now();
  const sse = await handler(slow.request, { parsedBody: slow.parsedBody });
  assert.ok(Date.now() - started < 800, 'the stream is opened once the wait is over, not at the answer');
  assert.match(sse.headers.get('content-type') ?? '', /^text\/event-stream/);
  const text = await sse.text();
  assert.ok((text.match(/^: keepalive$/gm) ?? []).length >= 2, text);
  const events = text.split('\n\n').filter((event) => event.startsWith('event: message\n'));
  assert.equal(events.length, 1, text);
  const answer = JSON.parse(events[0]!.slice('event: message\ndata: '.length)) as {
    id: number;
    result: { content: Array<{ text: string }> };
  };
  assert.equal(answer.id, 1);
  assert.equal(answer.result.content[0]!.text, 'slept 900');
  assert.deepEqual(errors, []);
});

test('a request asking for progress gets the SDK stream at once', async () => {
  const { handler } = leg({ jsonWaitMs: 5000, keepAliveMs: 15_000 });
  const withProgress = call(10, { progressToken: 'p' });
  const response = await handler(withProgress.request, { parsedBody: withProgress.parsedBody });
  assert.match(response.headers.get('content-type') ?? '', /^text\/event-stream/);
  assert.match(await response.text(), /slept 10/);
  assert.equal(asksForProgress([{ params: {} }, { params: { _meta: { progressToken: 0 } } }]), true);
  assert.equal(asksForProgress({ params: { _meta: {} } }), false);
  assert.equal(asksForProgress(null), false);
});

test('a client that goes away ends its call, answered JSON or streamed', { timeout: 60_000 }, async () => {
  for (const jsonWaitMs of [5000, 50]) {
    const { handler, aborted } = leg({ jsonWaitMs, keepAliveMs: 15_000 });
    const controller = new AbortController();
    const slow = call(30_000, undefined, controller.signal);
    const answered = handler(slow.request, { parsedBody: slow.parsedBody });
    setTimeout(() => controller.abort(), 200);
    const response = await answered;
    if (jsonWaitMs === 50) {
      assert.match(response.headers.get('content-type') ?? '', /^text\/event-stream/);
      await response.body?.cancel().catch(() => undefined);
    } else assert.equal(response.status, 499, 'settled by the end of the request, never counted as answered');
    for (const deadline = Date.now() + 5000; aborted.length === 0 && Date.now() < deadline;)
      await new Promise((resolve) => setTimeout(resolve, 10));
    assert.deepEqual(aborted, [true], `wait ${jsonWaitMs} ms: the call's handler saw its signal abort`);
  }
});

test(
  'a call silenced by its cancel (its server closed, no answer) ends its answer without an event, answered JSON or streamed',
  { timeout: 60_000 },
  async () => {
    const { handler } = leg({ jsonWaitMs: 300, keepAliveMs: 100 });
    for (const ms of [10, 700]) {
      const silenced = call(ms, undefined, undefined, 'silenced');
      const response = await handler(silenced.request, { parsedBody: silenced.parsedBody });
      assert.equal(response.status, 200);
      assert.match(response.headers.get('content-type') ?? '', /^text\/event-stream/, `${ms} ms`);
      const text = await response.text();
      assert.doesNotMatch(text, /event: message/, `${ms} ms: ${text}`);
    }
  },
);

test('a client gone before its exchange starts (while its server is built) is answered 499, not "Session not found"', async () => {
  // The run endpoint's buildServer reads the namespace's snapshot first: a client can go meanwhile.
  let built = 0;
  const handler = legacyLeg(
    async () => {
      await new Promise((resolve) => setTimeout(resolve, 100));
      built++;
      return new McpServer({ name: 'leg-test', version: '1.0.0' });
    },
    () => undefined,
    { maxRequestBodySize: 1 << 20 },
  );
  const controller = new AbortController();
  const gone = call(10, undefined, controller.signal);
  const answered = handler(gone.request, { parsedBody: gone.parsedBody });
  controller.abort();
  const response = await answered;
  assert.equal(built, 1);
  // A 404 tells a 2025-era client (and the request log) that its session is gone, which it is not.
  assert.equal(response.status, 499, await response.clone().text());
  assert.equal(((await response.json()) as { id: unknown }).id, 1);
});
