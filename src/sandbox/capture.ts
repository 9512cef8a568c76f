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
    const body = Buffer.concat(this.chunks).toString('utf8');
    return this.dropped > 0 ? `${body}\n[output cut: ${this.dropped} more bytes not shown]\n` : body;
  }

  buffer(): Buffer {
    return Buffer.concat(this.chunks);
  }
}
