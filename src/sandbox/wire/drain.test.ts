// drainPending on real sockets (a child process's stdio, as a sandbox helper's are): bytes the event
// loop has not read yet are taken from the kernel, once, in order, and a stream holding bytes of
// its own is left to its end. No sandbox: a shell writes the bytes.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { CappedCapture } from './capture.js';
import { drainPending, takeOutputAtAnswer } from './drain.js';

const BYTES = 100_000;

/** Blocks this thread (the event loop reads nothing meanwhile) until `done` holds, bounded. */
function blockUntil(what: string, done: () => boolean): void {
  const pause = new Int32Array(new SharedArrayBuffer(4));
  const deadline = Date.now() + 30_000;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    Atomics.wait(pause, 0, 0, 10);
  }
}

const stateOf = (pid: number) => readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '')[0];
const commandOf = (pid: number) => readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')[0];
const ended = (child: ChildProcess) => new Promise((resolve) => child.once('close', resolve));

/** A writer whose bytes sit in the socket, unread: the event loop is blocked from its start. */
function writer(script: string): { child: ChildProcess; capture: CappedCapture; total: () => number } {
  // Fewer bytes than a socket holds (about 180 KB here), so the writer never waits for a read.
  const child = spawn('sh', ['-c', script], { stdio: ['ignore', 'pipe', 'ignore'] });
  const capture = new CappedCapture(64 * 1024);
  let total = 0;
  child.stdout!.on('data', (chunk: Buffer) => {
    total += chunk.length;
    capture.push(chunk);
  });
  return { child, capture, total: () => total };
}

test('bytes written and still in the socket are read at once, and not again by the stream', async () => {
  // The writer exits: its bytes and the end are both in the socket.
  const { child, capture, total } = writer(`head -c ${BYTES} /dev/zero`);
  blockUntil('the writer to exit', () => stateOf(child.pid!) === 'Z');
  assert.equal(drainPending(child.stdout, capture), true);
  assert.equal(capture.byteLength, BYTES, 'everything written is in the capture at once');
  assert.equal(total(), 0, 'none of it came through the stream');
  await ended(child);
  assert.equal(capture.byteLength, BYTES, 'the stream then ends without giving any byte twice');
  assert.equal(capture.text().length < BYTES, true, 'the capture keeps its cap');
  assert.match(capture.text(), new RegExp(`\\[output cut: ${BYTES - 64 * 1024} more bytes not shown\\]`));
});

test('a writer still alive: what it wrote so far is read, up to the empty socket', async () => {
  const { child, capture } = writer(`head -c ${BYTES} /dev/zero; exec sleep 30`);
  blockUntil('the writer to finish writing', () => commandOf(child.pid!) === 'sleep');
  assert.equal(drainPending(child.stdout, capture), true);
  assert.equal(capture.byteLength, BYTES);
  child.kill('SIGKILL');
  await ended(child);
  assert.equal(capture.byteLength, BYTES);
});

test('a stream with bytes of its own not yet given out is not drained (the caller waits for its end)', async () => {
  const child = spawn('sh', ['-c', `head -c ${BYTES} /dev/zero`], { stdio: ['ignore', 'pipe', 'ignore'] });
  const capture = new CappedCapture(64 * 1024);
  // Paused (a 'readable' listener that never reads), the stream fills its own buffer.
  child.stdout!.on('readable', () => {});
  while (child.stdout!.readableLength === 0) await new Promise((resolve) => setTimeout(resolve, 10));
  assert.equal(drainPending(child.stdout, capture), false);
  assert.equal(capture.byteLength, 0);
  child.stdout!.removeAllListeners('readable');
  child.stdout!.resume();
  await ended(child);
});

test('no stream, or one that has ended: nothing to drain', async () => {
  const capture = new CappedCapture(1024);
  assert.equal(drainPending(null, capture), true);
  const { child, capture: other } = writer('printf x');
  await ended(child);
  assert.equal(drainPending(child.stdout, other), true);
  assert.equal(other.text(), 'x');
});

test("takeOutputAtAnswer: drained at once; where a stream holds bytes of its own, it waits for that stream's end", async () => {
  const { child, capture } = writer(`head -c ${BYTES} /dev/zero`);
  blockUntil('the writer to exit', () => stateOf(child.pid!) === 'Z');
  await takeOutputAtAnswer([[child.stdout, capture]], 60_000);
  assert.equal(capture.byteLength, BYTES, 'at once');
  await ended(child);

  const held = spawn('sh', ['-c', `head -c ${BYTES} /dev/zero`], { stdio: ['ignore', 'pipe', 'ignore'] });
  const late = new CappedCapture(64 * 1024);
  held.stdout!.on('readable', () => {});
  while (held.stdout!.readableLength === 0) await new Promise((resolve) => setTimeout(resolve, 10));
  let finished = false;
  const taking = takeOutputAtAnswer([[held.stdout, late]], 60_000).then(() => (finished = true));
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal(finished, false, 'not before the stream has given out what it holds');
  held.stdout!.removeAllListeners('readable');
  held.stdout!.on('data', (chunk: Buffer) => late.push(chunk));
  await taking;
  assert.equal(late.byteLength, BYTES, 'its end came after all of it');
});
