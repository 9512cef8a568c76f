/**
 * What a run printed before its answer, read from the kernel at the answer instead of after the
 * pipes' end. The runners' writes to stdout and stderr block until the bytes are in the socket, and
 * the answer is written after them; so once the answer line is in, every byte printed before it has
 * either been read or is waiting in the socket's buffer. Reading that buffer to its end without
 * blocking is complete then: a fact of the host's own reads, not the run's word. Waiting for the
 * pipes' end instead took until bubblewrap's processes had died (4-20 ms a run).
 */
import { readSync } from 'node:fs';
import type { Readable } from 'node:stream';
import type { CappedCapture } from './capture.js';

/** One read's buffer; a socket holds a few hundred KB at most, taken in turns of this size. */
const CHUNK_BYTES = 64 * 1024;
/**
 * Reads per drain: far more than a socket's buffer holds. A writer that keeps it full for longer (a
 * process of the run still printing after the answer) is not waited for here.
 */
const MAX_READS = 64;

interface HandleHolder {
  _handle?: { fd?: unknown } | null;
  readableLength?: number;
}

/**
 * Moves what is left in a stream's socket buffer into `into`, after everything its 'data' events
 * gave. False when that cannot be done safely (no descriptor, bytes still queued in the stream
 * itself, a read error): the caller then waits for the stream's end as before.
 */
export function drainPending(stream: Readable | null | undefined, into: CappedCapture): boolean {
  if (!stream) return true;
  // A spawner's pipe (spawner.ts, LatePipe) wraps the socket it received; a helper spawned here is the socket.
  const socket = ((stream as { socket?: unknown }).socket ?? stream) as HandleHolder;
  if ((stream as HandleHolder).readableLength || socket.readableLength) return false;
  if (stream.readableEnded || stream.destroyed) return true;
  const fd = socket._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) return false;
  const buffer = Buffer.allocUnsafe(CHUNK_BYTES);
  for (let reads = 0; reads < MAX_READS; reads++) {
    let read: number;
    try {
      read = readSync(fd, buffer, 0, buffer.length, null);
    } catch (error) {
      // EAGAIN: the buffer is empty, everything is read.
      return (error as NodeJS.ErrnoException).code === 'EAGAIN';
    }
    // 0: every writer has closed it; the stream's own 'end' follows as usual.
    if (read === 0) return true;
    into.push(Buffer.from(buffer.subarray(0, read)));
  }
  return false;
}

/**
 * After an answer: everything the run printed before it, into the captures. Drained at once where
 * possible; otherwise the pipes' end is waited for (the helper exits once the kill is reaped),
 * bounded by `boundMs` so a stuck helper cannot hold the answer.
 */
export async function takeOutputAtAnswer(
  pipes: ReadonlyArray<readonly [Readable | null | undefined, CappedCapture]>,
  boundMs: number,
): Promise<void> {
  if (pipes.every(([stream, capture]) => drainPending(stream, capture))) return;
  let bound: NodeJS.Timeout | undefined;
  await Promise.race([
    Promise.all(pipes.map(([stream]) => ended(stream))),
    new Promise((resolve) => (bound = setTimeout(resolve, boundMs))),
  ]);
  clearTimeout(bound);
}

/** Settles when a stream has ended or closed (at once for none, or one that already has). */
function ended(stream: Readable | null | undefined): Promise<void> {
  return new Promise<void>((resolve) => {
    if (!stream || stream.readableEnded || stream.destroyed) return resolve();
    stream.once('end', () => resolve());
    stream.once('close', () => resolve());
  });
}
