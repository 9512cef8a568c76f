/**
 * What the run endpoint renders from a namespace's catalog (tool mode's serialised tools/list, code
 * mode's execute description), kept per namespace at one catalog version and shared by every
 * session and request of this node. The version is the namespace row's catalog_version, which the
 * database bumps on every change (triggers), so a node sees a change made through any other node
 * the next time it reads the row: an entry of another version is never served, only replaced.
 * Bounded in bytes; least recently used entries go first. Only a cache: losing it costs a render.
 */
export class RenderedCache<T> {
  private readonly entries = new Map<string, { version: number; value: T; bytes: number }>();
  private total = 0;

  constructor(
    private readonly maxBytes: number,
    private readonly sizeOf: (value: T) => number,
  ) {}

  /**
   * The value for `key` at `version`, rendered (and kept, when it fits) on a miss. The render is
   * given the entry of another version it replaces, if any, to reuse what did not change.
   */
  get(key: string, version: number, render: (stale: T | undefined) => T): T {
    const hit = this.entries.get(key);
    if (hit) {
      this.entries.delete(key);
      if (hit.version === version) {
        this.entries.set(key, hit);
        return hit.value;
      }
      this.total -= hit.bytes;
    }
    const value = render(hit?.value);
    const bytes = this.sizeOf(value);
    if (bytes <= this.maxBytes) {
      this.entries.set(key, { version, value, bytes });
      this.total += bytes;
      for (const [oldest, entry] of this.entries) {
        if (this.total <= this.maxBytes) break;
        this.entries.delete(oldest);
        this.total -= entry.bytes;
      }
    }
    return value;
  }

  get size(): { entries: number; bytes: number } {
    return { entries: this.entries.size, bytes: this.total };
  }
}
