import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { RawJson, type RenderedToolResult } from '../core/raw-json.js';
import { ScanPool } from './scan-pool.js';

/** A rendered answer as the client reads it: its content texts, and its structured content. */
function read(value: unknown): { fields: Record<string, unknown>; texts: string[]; structured?: unknown } {
  const { rendered, ...fields } = value as { rendered: RenderedToolResult };
  assert.ok(rendered, 'a large answer comes back rendered');
  return {
    fields,
    texts: rendered.texts.map((text) => JSON.parse(text.toString('utf8')) as string),
    ...(rendered.structured ? { structured: JSON.parse(rendered.structured.toString('utf8')) } : {}),
  };
}

const secret = 'pool-secret-value-7f3a';

/** What history keeps of a text past its 64 KB (core/recorded-text.ts), written out. */
const cut = (text: string) => `${text.slice(0, 65536)}\n[… result cut at 65536 characters of ${text.length}]`;
const recordedOf = (value: unknown) => (value as { rendered: RenderedToolResult }).rendered.recorded;
const pool = new ScanPool();
after(() => pool.close());

test('a large answer is scanned in a worker: redacted, findings and byte count of the redacted JSON', async () => {
  const value = {
    ok: true,
    result: { text: `${'x'.repeat(200_000)} ${secret} ${Buffer.from(secret).toString('base64')}` },
    stdout: `out ${secret}`,
    stderr: '',
  };
  const outcome = await pool.scan([secret], value);
  const { fields, texts } = read(outcome.value);
  assert.doesNotMatch(JSON.stringify([fields, texts]), /pool-secret/);
  assert.match(texts[0]!, /x \[REDACTED_ENV_VALUE\] \[REDACTED_ENV_VALUE\]"/);
  assert.equal(texts[1], 'stdout:\nout [REDACTED_ENV_VALUE]');
  assert.equal(fields.stdout, 'out [REDACTED_ENV_VALUE]');
  assert.deepEqual(outcome.findings, [{ type: 'ENV_VALUE' }]);
  const redacted = { ok: true, result: JSON.parse(texts[0]!), stdout: fields.stdout, stderr: '' };
  assert.equal(outcome.bytes, Buffer.byteLength(JSON.stringify(redacted)));
  // History's text of it, made in the worker: the texts the client reads, joined and cut.
  assert.equal(recordedOf(outcome.value), cut(texts.join('\n')));
});

test('a large result as bytes (RawJson) is parsed, scanned and rendered in the worker, structured content too', async () => {
  const result = { text: `${'x'.repeat(100_000)} ${secret}`, n: [1, 2] };
  // With a log: history keeps the structured content, not the texts (which add it).
  const value = { ok: true, result: new RawJson(Buffer.from(JSON.stringify(result))), stdout: 'log', stderr: '' };
  const outcome = await pool.scan([secret], value, { objectOutputSchema: true });
  const { fields, texts, structured } = read(outcome.value);
  const redacted = { ...result, text: `${'x'.repeat(100_000)} [REDACTED_ENV_VALUE]` };
  assert.deepEqual(fields, { ok: true, stdout: 'log', stderr: '' });
  assert.deepEqual(texts, [JSON.stringify(redacted), 'stdout:\nlog']);
  assert.deepEqual(structured, redacted);
  assert.equal(outcome.bytes, Buffer.byteLength(JSON.stringify({ ok: true, stdout: 'log', stderr: '', result: redacted })));
  assert.equal(recordedOf(outcome.value), cut(JSON.stringify(redacted)), 'history keeps the structured content');
  const plain = await pool.scan([secret], { ok: true, result: new RawJson(Buffer.from(JSON.stringify(result))), stdout: '', stderr: '' });
  assert.equal(read(plain.value).structured, undefined, 'no structured content without an object output_schema');
});

test('a large error is rendered in the worker as the error body the client reads', async () => {
  const value = { ok: false, error: `boom ${'e'.repeat(50_000)} ${secret}`, error_type: 'ValueError', stdout: 'o', stderr: 's' };
  const outcome = await pool.scan([secret], value);
  const { fields, texts } = read(outcome.value);
  assert.equal(fields.error, `boom ${'e'.repeat(50_000)} [REDACTED_ENV_VALUE]`);
  assert.deepEqual(JSON.parse(texts[0]!), { error: fields.error, error_type: 'ValueError', stderr: 's', stdout: 'o' });
  assert.equal((outcome.value as { rendered: RenderedToolResult }).rendered.isError, true);
  assert.equal(outcome.bytes, Buffer.byteLength(JSON.stringify({ ...value, error: fields.error })));
  assert.equal(recordedOf(outcome.value), undefined, 'a failed run keeps no result');
});

test('an answer line is decoded in the worker: result as bytes, failures, depth and unreadable lines', async () => {
  const ok = await pool.decode(Buffer.from(JSON.stringify({ ok: true, result: { a: 'x'.repeat(40_000) } })));
  assert.ok(ok !== true && ok.ok && ok.result instanceof RawJson);
  assert.deepEqual(ok.result.parse(), { a: 'x'.repeat(40_000) });
  assert.deepEqual(await pool.decode(Buffer.from(JSON.stringify({ ok: false, type: 'ValueError', message: 'm', traceback: 't' }))), {
    ok: false,
    type: 'ValueError',
    message: 'm',
    traceback: 't',
  });
  const deep = await pool.decode(Buffer.from(`{"ok":true,"result":${'['.repeat(1001)}${']'.repeat(1001)}}`));
  assert.ok(deep !== true && !deep.ok && deep.type === 'SerializationError');
  const unreadable = await pool.decode(Buffer.from('{"ok":tru'));
  assert.ok(unreadable !== true && !unreadable.ok && unreadable.type === 'ProcessExitError');
  assert.equal(await pool.decode(Buffer.from('"just a string"')), true);
});

test('a line in the pieces it arrived in: joined in the worker, whole chunks moved there (not copied here), partial ones copied', async () => {
  // As LineReader.pushPieces hands out a line read from a socket: the end of a chunk holding the
  // line before it, whole chunks (each its own ArrayBuffer, as a socket read makes them), the start of one holding the next.
  const result = { a: `${'x'.repeat(70_000)}é${'y'.repeat(70_000)}` };
  const line = Buffer.from(JSON.stringify({ ok: true, result }));
  const first = Buffer.concat([Buffer.from('{"previous":1}\n'), line.subarray(0, 1000)]);
  const whole = [line.subarray(1000, 71_000), line.subarray(71_000, line.length - 10)].map((part) => Buffer.from(part));
  const last = Buffer.concat([line.subarray(line.length - 10), Buffer.from('\n{"next"')]);
  const pieces = [first.subarray(15), ...whole, last.subarray(0, 10)];
  const decoded = await pool.decode(pieces);
  assert.ok(decoded !== true && decoded.ok);
  assert.deepEqual(decoded.result.parse(), result, 'the é split across two pieces is whole');
  for (const piece of whole) assert.equal(piece.buffer.byteLength, 0, 'a whole chunk was moved to the worker');
  assert.equal(first.toString().slice(0, 15), '{"previous":1}\n', 'a chunk holding more than the line is copied, not moved');
  assert.equal(last.toString().slice(10), '\n{"next"');
  // A bridge call too.
  const call = Buffer.from(JSON.stringify({ bridge: { op: 'call', service: 's', function: 'f', input: { big: 'z'.repeat(50_000) } } }));
  const callPieces = [Buffer.from(call.subarray(0, 3)), Buffer.from(call.subarray(3))];
  const bridge = await pool.decodeBridge(callPieces);
  assert.ok('request' in bridge);
  assert.deepEqual(bridge.request.input?.parse(), { big: 'z'.repeat(50_000) });
  assert.equal(callPieces[1]!.buffer.byteLength, 0);
});

test('a line of many tiny chunks (a sandbox writing a byte at a time) is copied together, not moved chunk by chunk', async () => {
  // Each moved ArrayBuffer costs the transfer on this thread (pairwise over the transfer list):
  // 100,000 one-byte chunks moved one by one blocked it for seconds.
  const line = Buffer.from(JSON.stringify({ ok: true, result: { big: 'b'.repeat(100_000), tail: 't'.repeat(20_000) } }));
  const tiny = Array.from(line.subarray(0, 100_000), (byte) => {
    const piece = Buffer.from(new ArrayBuffer(1));
    piece[0] = byte;
    return piece;
  });
  const large = Buffer.from(line.subarray(100_000));
  const decoded = await pool.decode([...tiny, large]);
  assert.ok(decoded !== true && decoded.ok);
  assert.deepEqual(decoded.result.parse(), { big: 'b'.repeat(100_000), tail: 't'.repeat(20_000) });
  assert.equal(
    tiny.every((piece) => piece.buffer.byteLength === 1),
    true,
    'the tiny chunks were copied (into one buffer), not moved',
  );
  assert.equal(large.buffer.byteLength, 0, 'a large whole chunk is still moved');
});

test('a large answer with nothing to redact comes back as it was', async () => {
  const value = { ok: true, result: 'y'.repeat(100_000), stdout: '', stderr: '' };
  const outcome = await pool.scan(['z'.repeat(5000)], value);
  assert.deepEqual(read(outcome.value).texts, [JSON.stringify(value.result)]);
  assert.deepEqual(outcome.findings, []);
  assert.equal(outcome.bytes, Buffer.byteLength(JSON.stringify(value)));
});

test('small answers are scanned in place, patterns too', async () => {
  const outcome = await pool.scan([secret], {
    ok: false,
    error: `bad ${secret} ghp_${'a'.repeat(36)}`,
    error_type: 'E',
    stdout: '',
    stderr: '',
  });
  assert.deepEqual(outcome.value, {
    ok: false,
    error: 'bad [REDACTED_ENV_VALUE] [REDACTED_GITHUB_TOKEN]',
    error_type: 'E',
    stdout: '',
    stderr: '',
  });
});

test('a scan that overruns its deadline fails (the caller withholds), and the next one works', async () => {
  const slow = new ScanPool({ workers: 1, deadlineMs: 1 });
  try {
    const big = { ok: true, result: `${secret} `.repeat(400_000), stdout: '', stderr: '' };
    await assert.rejects(slow.scan(['q'.repeat(3000), secret], big), /deadline/);
  } finally {
    await slow.close();
  }
  const outcome = await pool.scan(['q'.repeat(3000), secret], { ok: true, result: `${secret} `.repeat(10_000), stdout: '', stderr: '' });
  assert.doesNotMatch(read(outcome.value).texts[0]!, /pool-secret/);
});

test('a line whose worker dies after its chunks were moved there fails (the caller withholds), and the pool goes on', async () => {
  const slow = new ScanPool({ workers: 1, deadlineMs: 1 });
  try {
    const line = Buffer.from(JSON.stringify({ ok: true, result: `${secret} ${'w'.repeat(100_000)}` }));
    const pieces = [Buffer.from(line.subarray(0, 60_000)), Buffer.from(line.subarray(60_000))];
    // The worker is stopped at its deadline (before it has even started): the decode fails, never
    // answers the bytes it was given, and the moved chunks are gone from this thread.
    await assert.rejects(slow.decode(pieces), /deadline/);
    assert.deepEqual(
      pieces.map((piece) => piece.buffer.byteLength),
      [0, 0],
    );
    await assert.rejects(
      slow.decodeBridge([Buffer.from(`{"bridge":${JSON.stringify({ op: 'call', input: 'i'.repeat(50_000) })}}`)]),
      /deadline/,
    );
  } finally {
    await slow.close();
  }
  const decoded = await pool.decode([Buffer.from('{"ok":true,'), Buffer.from('"result":1}')]);
  assert.ok(decoded !== true && decoded.ok && decoded.result.parse() === 1);
});

test("a stopped worker's end does not stop the worker started in its place, nor fail that one's job", async () => {
  // A worker dropped (at a job's deadline, or idle) ends a little later; meanwhile the next job may
  // start a new worker in its slot. The old one's exit once stopped that one too, failing a job of
  // another run (another tenant's answer withheld, whenever one overran its deadline).
  const one = new ScanPool({ workers: 1 });
  try {
    assert.equal(await one.decode(Buffer.from('"warm"')), true);
    const stopping = one.stopIdleWorkers();
    const decoded = one.decode([Buffer.from('{"ok":true,'), Buffer.from('"result":2}')]);
    await stopping;
    const answer = await decoded;
    assert.ok(answer !== true && answer.ok && answer.result.parse() === 2);
    assert.equal(one.workers, 1);
  } finally {
    await one.close();
  }
});

test('a scan the worker cannot complete fails (the caller withholds the answer)', async () => {
  // Forms beyond what one matcher may hold: the worker's scanner cannot be built.
  const huge = 'h'.repeat(250_000);
  await assert.rejects(pool.scan([huge], { ok: true, result: `${huge} `.repeat(2), stdout: '', stderr: '' }), /the scan failed/);
});
