/** Collects a stream's bytes up to a cap and counts the rest, so a flood never grows server memory. */
export class CappedCapture {
  private readonly chunks: Buffer[] = [];
  private kept = 0;
  private dropped = 0;

  constructor(private readonly capBytes: number) {}

  push(chunk: Buffer): void {
    const room = this.capBytes - this.kept;
    if (room > 0) {
      const piece = chunk.length <= room ? chunk : chunk.subarray(0, room);
      this.chunks.push(piece);
      this.kept += piece.length;
    }
    if (chunk.length > room) this.dropped += chunk.length - Math.max(room, 0);
  }

  get overflowed(): boolean {
    return this.dropped > 0;
  }

  get byteLength(): number {
    return this.kept + this.dropped;
  }

  /** The kept bytes as text, followed by a marker saying how much was cut. */
  text(): string {
    let kept = Buffer.concat(this.chunks);
    // The cap falls where it falls: a character it splits is left out whole, never shown as U+FFFD.
    if (this.dropped > 0) kept = kept.subarray(0, characterBoundary(kept));
    const body = kept.toString('utf8');
    return this.dropped > 0 ? `${body}\n[output cut: ${this.dropped} more bytes not shown]\n` : body;
  }

  buffer(): Buffer {
    return Buffer.concat(this.chunks);
  }
}

/** The most bytes one UTF-8 character takes. */
const UTF8_MAX_BYTES = 4;

/** The length of `bytes` without a UTF-8 character cut off at its end (at most 3 bytes shorter). */
export function characterBoundary(bytes: Buffer): number {
  let start = bytes.length;
  // Back over continuation bytes (10xxxxxx) to the last lead byte, if it is near the end.
  while (start > 0 && bytes.length - start < UTF8_MAX_BYTES && (bytes[start - 1]! & 0xc0) === 0x80) start--;
  if (start === 0) return bytes.length;
  const lead = bytes[start - 1]!;
  const needs = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
  return bytes.length - (start - 1) >= needs ? bytes.length : start - 1;
}
