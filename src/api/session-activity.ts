import type { Logger } from '../core/logger.js';

/** How often this node re-marks the sessions it holds in use (one statement for all). */
export const SESSION_IN_USE_REFRESH_MS = 20_000;

/** What the marks are written with (src/store/accounts-store.ts). */
export interface SessionActivityStore {
  /** Marks sessions in use for MCP_SESSION_IN_USE_MS on the database's clock, and used now. */
  markMcpSessionsInUse(ids: readonly string[]): Promise<void>;
  /** The session is no longer in use here (its mark ends now). */
  clearMcpSessionInUse(id: string): Promise<void>;
}

interface Held {
  count: number;
  marked: boolean;
}

/**
 * Which 2025-era sessions are in use on this node: an open GET stream, or a request still being
 * answered. Their rows carry an "in use until" mark, renewed while they are held, so a key at its
 * session cap never ends a session in use on any node (accounts-store createMcpSession).
 * A request shorter than the refresh writes nothing: only what is still held at a tick is marked,
 * so the request path stays free of writes.
 */
export class SessionActivity {
  private readonly held = new Map<string, Held>();
  private timer: NodeJS.Timeout | undefined;
  // Writes go one after another, so a stream's clear never lands after the next stream's mark.
  private writes: Promise<void> = Promise.resolve();

  constructor(
    private readonly store: SessionActivityStore,
    private readonly logger: Logger,
  ) {}

  /**
   * Holds a session in use until the answer is called. `markNow`: written at once (a stream:
   * rare, and long-lived by nature) rather than at the next refresh.
   */
  hold(id: string, options: { markNow?: boolean } = {}): () => void {
    let entry = this.held.get(id);
    if (!entry) {
      entry = { count: 0, marked: false };
      this.held.set(id, entry);
    }
    entry.count += 1;
    if (options.markNow && !entry.marked) {
      entry.marked = true;
      void this.write(() => this.store.markMcpSessionsInUse([id]), 1);
    }
    this.timer ??= setInterval(() => void this.refresh(), SESSION_IN_USE_REFRESH_MS).unref();
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.release(id);
    };
  }

  /** Renews the marks of every session held here (the timer's work; tests call it directly). */
  async refresh(): Promise<void> {
    const ids = [...this.held.keys()];
    // Nothing held: the writes already queued (clears) are still waited for.
    if (ids.length === 0) return this.writes;
    for (const id of ids) this.held.get(id)!.marked = true;
    await this.write(() => this.store.markMcpSessionsInUse(ids), ids.length);
  }

  /** Sessions held on this node (for tests and diagnostics). */
  size(): number {
    return this.held.size;
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.held.clear();
  }

  private release(id: string): void {
    const entry = this.held.get(id);
    if (!entry) return;
    entry.count -= 1;
    if (entry.count > 0) return;
    this.held.delete(id);
    // Only a session that was marked needs its mark ended (a short request wrote nothing).
    if (entry.marked) void this.write(() => this.store.clearMcpSessionInUse(id), 1);
    if (this.held.size === 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }

  private write(statement: () => Promise<void>, sessions: number): Promise<void> {
    // A mark lost to a database away only makes a session evictable sooner: never fails a request.
    this.writes = this.writes.then(statement).catch((error: unknown) => {
      this.logger.warn({ err: error instanceof Error ? error.message : String(error), sessions }, 'could not mark MCP sessions in use');
    });
    return this.writes;
  }
}
