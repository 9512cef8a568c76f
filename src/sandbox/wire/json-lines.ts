/**
 * The one line reader of every line-based stream the sandbox host reads: fd 3 of a run (see
 * wire/channel.ts), a zygote's control pipe, the spawner's events and the greeting on the zygotes' host
 * socket. Lines are split on bytes (0x0a) and handed on whole, so a UTF-8 character split across
 * two chunks is never decoded in halves. What waits for its newline is capped: a peer that never
 * ends its line cannot grow the server's memory.
 */

export interface LineReaderOptions {
  /** Most bytes held while a line waits for its newline; more is an overflow. */
  maxLineBytes: number;
  /** Called once when the cap is passed; the reader then drops everything it is given. */
  onOverflow?: () => void;
}

/** Pieces of a waiting line shorter than this are joined, SMALL_PIECES_JOINED at a time (see LineReader.hold). */
const SMALL_PIECE_BYTES = 4096;
const SMALL_PIECES_JOINED = 64;

export class LineReader {
  /** The cap on a line still waiting for its newline (a run changes it when it claims its channel). */
  maxLineBytes: number;
  private readonly onOverflow: () => void;
  private readonly pending: Buffer[] = [];
  private pendingBytes = 0;
  /** How many small pieces end `pending` (see hold). */
  private smallTail = 0;
  private overflowedFlag = false;

  constructor(options: LineReaderOptions) {
    this.maxLineBytes = options.maxLineBytes;
    this.onOverflow = options.onOverflow ?? (() => {});
  }

  /** The cap was passed: nothing more is read. */
  get overflowed(): boolean {
    return this.overflowedFlag;
  }

  /**
   * The whole lines this chunk completes, without their newlines, in order. With `maxLines`, at
   * most that many; the rest of the chunk is then kept unsplit for `rest()`.
   */
  push(chunk: Buffer, maxLines = Infinity): Buffer[] {
    // Each a copy of its own (a large one with its own ArrayBuffer, which can be moved to a worker).
    return this.pushPieces(chunk, maxLines).map((pieces) => Buffer.concat(pieces));
  }

  /**
   * As push, each line as the pieces of the chunks it arrived in (views into the chunks; a line
   * within one chunk is one piece; small pieces that waited for their newline joined, see hold).
   * A large line's whole chunks can then be moved to a worker as they are (scan-pool.ts
   * transferables): no copy of the line on this thread, and none of its bytes left here for the
   * garbage collector to count.
   */
  pushPieces(chunk: Buffer, maxLines = Infinity): Buffer[][] {
    const lines: Buffer[][] = [];
    if (this.overflowedFlag) return lines;
    let start = 0;
    for (let newline = chunk.indexOf(10); newline !== -1 && lines.length < maxLines; newline = chunk.indexOf(10, start)) {
      this.pending.push(chunk.subarray(start, newline));
      lines.push(this.pending.splice(0));
      this.pendingBytes = 0;
      this.smallTail = 0;
      start = newline + 1;
    }
    if (start < chunk.length) {
      this.hold(chunk.subarray(start));
      this.pendingBytes += chunk.length - start;
      // Only what waits for a newline is bounded here; a caller that stopped at maxLines reads the rest itself.
      if (lines.length < maxLines && this.pendingBytes > this.maxLineBytes) {
        this.overflowedFlag = true;
        this.pending.length = 0;
        this.pendingBytes = 0;
        this.smallTail = 0;
        this.onOverflow();
      }
    }
    return lines;
  }

  /**
   * Keeps a piece of a line still waiting for its newline. Small pieces are joined as they gather
   * (a byte is copied at most some tens of times, in blocks under 4 KB): a sandbox writing a byte at
   * a time makes a chunk per byte, and a view per chunk held a million Buffers (427 MB of memory,
   * 195 MB of heap) for a 1 MB line, counted as 1 MB; joined, 254 pieces (17 MB).
   */
  private hold(piece: Buffer): void {
    this.pending.push(piece);
    if (piece.length >= SMALL_PIECE_BYTES) {
      this.smallTail = 0;
      return;
    }
    if (++this.smallTail < SMALL_PIECES_JOINED) return;
    const joined = Buffer.concat(this.pending.splice(this.pending.length - this.smallTail));
    this.pending.push(joined);
    this.smallTail = joined.length < SMALL_PIECE_BYTES ? 1 : 0;
  }

  /** The bytes held after the last line handed out (a partial line, or what `maxLines` left), and forgets them. */
  rest(): Buffer {
    const bytes = Buffer.concat(this.pending);
    this.pending.length = 0;
    this.pendingBytes = 0;
    this.smallTail = 0;
    return bytes;
  }
}

/** A line that was read: its parsed value, or the line itself when it is not JSON. */
export type JsonLine<T> = { ok: true; value: T } | { ok: false; line: string };

/**
 * JSON lines over LineReader: each whole line decoded as UTF-8 and parsed. The type is the
 * caller's claim about its peer; each message union in messages.ts has a guard to check it.
 */
export class JsonLineReader<T = unknown> {
  private readonly lines: LineReader;

  constructor(options: LineReaderOptions) {
    this.lines = new LineReader(options);
  }

  get overflowed(): boolean {
    return this.lines.overflowed;
  }

  push(chunk: Buffer | string): JsonLine<T>[] {
    const bytes = typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk;
    return this.lines.push(bytes).map((raw) => {
      const line = raw.toString('utf8');
      try {
        return { ok: true, value: JSON.parse(line) as T };
      } catch {
        return { ok: false, line };
      }
    });
  }
}

/** One message as a JSON line. */
export function jsonLine(value: unknown): string {
  return `${JSON.stringify(value ?? null)}\n`;
}
