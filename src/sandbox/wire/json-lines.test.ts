// The line reader every line-based stream of the sandbox host goes through (pure: no root, no sandbox).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { JsonLineReader, LineReader, jsonLine } from './json-lines.js';

const text = (lines: Buffer[]) => lines.map((line) => line.toString('utf8'));

test('lines split across chunks come out whole, in order, without their newlines', () => {
  const reader = new LineReader({ maxLineBytes: 1024 });
  assert.deepEqual(text(reader.push(Buffer.from('{"a":'))), []);
  assert.deepEqual(text(reader.push(Buffer.from('1}\n{"b"'))), ['{"a":1}']);
  assert.deepEqual(text(reader.push(Buffer.from(':2}\n\n{"c":3}\n'))), ['{"b":2}', '', '{"c":3}']);
  assert.equal(reader.rest().length, 0);
});

test('pushPieces: each line as views into the chunks it arrived in, nothing copied', () => {
  const reader = new LineReader({ maxLineBytes: 1 << 20 });
  const chunks = [Buffer.from('{"a":1}\n{"b":'), Buffer.from('x'.repeat(100)), Buffer.from('2}\n{"c"')];
  assert.deepEqual(
    reader.pushPieces(chunks[0]!).map((line) => text(line)),
    [['{"a":1}']],
  );
  assert.deepEqual(reader.pushPieces(chunks[1]!), []);
  const [line] = reader.pushPieces(chunks[2]!);
  assert.deepEqual(text(line!), ['{"b":', 'x'.repeat(100), '2}']);
  // The middle piece is the whole chunk itself (so it can be moved to a worker); the others are views into theirs.
  assert.equal(line![1]!.buffer, chunks[1]!.buffer);
  assert.equal(line![0]!.buffer, chunks[0]!.buffer);
  assert.equal(reader.rest().toString(), '{"c"');
});

test('a multi-byte UTF-8 character split between chunks is decoded whole', () => {
  const line = Buffer.from('{"s":"é€😀"}\n', 'utf8');
  // Every split point, including inside each character.
  for (let cut = 1; cut < line.length; cut++) {
    const reader = new JsonLineReader<{ s: string }>({ maxLineBytes: 1024 });
    const got = [...reader.push(line.subarray(0, cut)), ...reader.push(line.subarray(cut))];
    assert.deepEqual(got, [{ ok: true, value: { s: 'é€😀' } }], `cut at byte ${cut}`);
  }
});

test('a line waiting for its newline past the cap is an overflow, reported once, and nothing more is read', () => {
  let overflows = 0;
  const reader = new LineReader({ maxLineBytes: 8, onOverflow: () => overflows++ });
  assert.deepEqual(text(reader.push(Buffer.from('12345678'))), []);
  assert.equal(reader.overflowed, false);
  assert.deepEqual(text(reader.push(Buffer.from('9'))), []);
  assert.equal(reader.overflowed, true);
  assert.equal(overflows, 1);
  assert.deepEqual(text(reader.push(Buffer.from('\nok\n'))), []);
  assert.equal(overflows, 1);
});

test('the cap bounds what is held, not whole lines already read (a long line in one chunk passes)', () => {
  const reader = new LineReader({ maxLineBytes: 4 });
  const long = 'x'.repeat(100_000);
  assert.deepEqual(text(reader.push(Buffer.from(`${long}\nab`))), [long]);
  assert.equal(reader.overflowed, false);
});

test('a long line over many chunks is kept whole below the cap, and the cap can be raised for a run', () => {
  const reader = new LineReader({ maxLineBytes: 16 });
  reader.maxLineBytes = 1 << 20;
  const chunks = Array.from({ length: 64 }, (_, index) => Buffer.alloc(4096, 97 + (index % 26)));
  for (const chunk of chunks) assert.deepEqual(reader.push(chunk), []);
  const [line] = reader.push(Buffer.from('\n'));
  assert.deepEqual(line, Buffer.concat(chunks));
});

test('maxLines stops after that many lines and leaves the rest of the chunk unsplit', () => {
  const reader = new LineReader({ maxLineBytes: 4 });
  assert.deepEqual(text(reader.push(Buffer.from('abc'), 1)), []);
  assert.deepEqual(text(reader.push(Buffer.from('d\nfirst bytes of a stream\nmore'), 1)), ['abcd']);
  // The rest is not held against the cap: it is the caller's (a socket's first bytes after a greeting).
  assert.equal(reader.overflowed, false);
  assert.equal(reader.rest().toString(), 'first bytes of a stream\nmore');
  assert.equal(reader.rest().length, 0);
});

test('JSON lines: values parsed, a line that is not JSON handed back as text', () => {
  const reader = new JsonLineReader({ maxLineBytes: 1024 });
  assert.deepEqual(reader.push('{"op":"spawned","id":1,"pid":2}\nnot json\nnull\n'), [
    { ok: true, value: { op: 'spawned', id: 1, pid: 2 } },
    { ok: false, line: 'not json' },
    { ok: true, value: null },
  ]);
  assert.equal(jsonLine({ a: 'é' }), '{"a":"é"}\n');
  assert.equal(jsonLine(undefined), 'null\n');
});

test('pushPieces: a line of many tiny chunks is held as a few pieces (small ones joined as they wait), whole and in order', () => {
  // A sandbox writing a byte at a time: each read a chunk of one byte. Held as one view each, a 1 MB
  // line was a million Buffers (about 200 MB of the main heap, 400 MB of memory) for 1 MB counted.
  const reader = new LineReader({ maxLineBytes: 1 << 20 });
  const bytes = Buffer.from(`{"s":"${'é'.repeat(50_000)}"}`);
  for (const byte of bytes) {
    const chunk = Buffer.from(new ArrayBuffer(1));
    chunk[0] = byte;
    assert.deepEqual(reader.pushPieces(chunk), []);
  }
  const big = Buffer.from(new ArrayBuffer(40_000)).fill('x'.charCodeAt(0));
  assert.deepEqual(reader.pushPieces(big), []);
  const [line] = reader.pushPieces(Buffer.from('\n'));
  assert.equal(Buffer.concat(line!).toString(), `${bytes.toString()}${'x'.repeat(40_000)}`);
  assert.ok(line!.length <= 100, `${line!.length} pieces for ${bytes.length} one-byte chunks`);
  assert.ok(
    line!.some((piece) => piece.buffer === big.buffer && piece.length === big.length),
    'a large chunk is still held as it came (to be moved to a worker)',
  );
});
