// A tool result rendered in a scan worker reaches the client whole, wherever the MCP answer's
// stream splits its placeholders, and only the request's own rendered bytes are spliced in.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { renderedToTool, spliceRendered, spliceRenderedBytes, type RunScopeExtra } from './run-endpoint.js';

function streamOf(chunks: string[]): Response {
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      for (const chunk of chunks) controller.enqueue(Buffer.from(chunk));
      controller.close();
    },
  });
  return new Response(body, { headers: { 'content-length': '1' } });
}

test('placeholders are replaced by their bytes at any chunk boundary, once each', async () => {
  const extra = {} as RunScopeExtra;
  const text = 'a "quoted" line\nand é';
  const structured = { a: [1, { b: 'c' }] };
  const tool = renderedToTool(
    {
      isError: false,
      texts: [Buffer.from(JSON.stringify(text)), Buffer.from(JSON.stringify('stdout:\nhi'))],
      structured: Buffer.from(JSON.stringify(structured)),
    },
    extra,
  );
  const framed = `event: message\ndata: ${JSON.stringify({ jsonrpc: '2.0', id: 1, result: tool })}\n\n`;
  for (let split = 0; split <= framed.length; split++) {
    const take = (number: number) => extra.rendered?.get(number);
    const response = spliceRendered(streamOf([framed.slice(0, split), framed.slice(split)]), take);
    assert.equal(response.headers.get('content-length'), null);
    const out = await response.text();
    const message = JSON.parse(out.slice(out.indexOf('data: ') + 6));
    assert.deepEqual(
      message.result,
      {
        content: [
          { type: 'text', text },
          { type: 'text', text: 'stdout:\nhi' },
        ],
        structuredContent: structured,
      },
      `split at ${split}`,
    );
  }
  // What cannot start a placeholder (a progress notification on the call's stream) is not held back.
  const progress = 'event: message\ndata: {"method":"notifications/progress"}\n\n';
  const reader = spliceRendered(
    new Response(new ReadableStream<Uint8Array>({ start: (controller) => controller.enqueue(Buffer.from(progress)) })),
    () => undefined,
  ).body!.getReader();
  assert.equal(Buffer.from((await reader.read()).value!).toString(), progress);
  await reader.cancel();
  // Another request's placeholder (or one already used) is left as it is.
  const response = spliceRendered(streamOf([JSON.stringify(tool)]), () => undefined);
  assert.deepEqual(JSON.parse(await response.text()), JSON.parse(JSON.stringify(tool)));
});

test('an answer read whole gets the same splice, its pieces written as they are', () => {
  const extra = {} as RunScopeExtra;
  const structured = { big: 'x'.repeat(1000) };
  const tool = renderedToTool(
    { isError: false, texts: [Buffer.from(JSON.stringify('hi'))], structured: Buffer.from(JSON.stringify(structured)) },
    extra,
  );
  const framed = Buffer.from(JSON.stringify({ jsonrpc: '2.0', id: 1, result: tool }));
  const pieces = spliceRenderedBytes(framed, (number) => extra.rendered?.get(number));
  assert.deepEqual(JSON.parse(Buffer.concat(pieces).toString()).result, {
    content: [{ type: 'text', text: 'hi' }],
    structuredContent: structured,
  });
  // The rendered bytes go out as the very buffers the scan worker made (never copied).
  for (const bytes of extra.rendered!.values()) assert.ok(pieces.includes(bytes));
  // No placeholder: the bytes themselves, one piece.
  const plain = Buffer.from('{"jsonrpc":"2.0","id":1,"result":{"content":[]}}');
  assert.deepEqual(
    spliceRenderedBytes(plain, () => undefined),
    [plain],
  );
});
