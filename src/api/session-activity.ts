import type { Logger } from '../core/logger.js';

/** How often this node renews its holds on the sessions it has in use (one statement for all). */
export const SESSION_IN_USE_REFRESH_MS = 20_000;
/** A request still being answered this long holds its session in the database (shorter ones write nothing). */
export const REQUEST_HOLD_AFTER_MS = 1_000;

/** What this node's holds are written with (src/store/accounts-store.ts, bound to this node's id). */
export interface SessionActivityStore {
  /** This node holds the sessions in use for MCP_SESSION_IN_USE_MS more (database clock), used now. */
  markMcpSessionsInUse(ids: readonly string[]): Promise<void>;
  /** This node no longer holds the session (other nodes' holds stay). */
  clearMcpSessionInUse(id: string): Promise<void>;
  /** This node holds nothing any more. */
  clearMcpSessionHolds(): Promise<void>;
}

interface Held {
  count: number;
  /** This node's hold is in the database (it must be ended there when the last hold goes). */
  marked: boolean;
  /** A request's delayed mark (REQUEST_HOLD_AFTER_MS). */
  timer?: NodeJS.Timeout;
}

/**
 * Which 2025-era sessions are in use on this node: an open GET stream, or a request still being
 * answered. Each node writes its own hold rows (mcp_session_holds), renewed while they last and
 * ended by that node alone, so a key at its session cap never ends a session in use on any node
 * (accounts-store createMcpSession). A stream is written at once; a request only once it has
 * lasted REQUEST_HOLD_AFTER_MS, so short requests stay free of writes.
 */
export class SessionActivity {
  private readonly held = new Map<string, Held>();
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  // Writes go one after another, so a stream's clear never lands after the next stream's mark.
  private writes: Promise<void> = Promise.resolve();

  constructor(
    private readonly store: SessionActivityStore,
    private readonly logger: Logger,
    private readonly options: { requestHoldAfterMs?: number } = {},
  ) {}

  /**
   * Holds a session in use until the answer is called. `markNow`: written at once (a stream:
   * rare, and long-lived by nature); otherwise once the hold has lasted REQUEST_HOLD_AFTER_MS.
   */
  hold(id: string, options: { markNow?: boolean } = {}): () => void {
    if (this.closed) return () => undefined;
    let entry = this.held.get(id);
    if (!entry) {
      entry = { count: 0, marked: false };
      this.held.set(id, entry);
    }
    entry.count += 1;
    if (options.markNow) this.markOne(id, entry);
    else if (!entry.marked && !entry.timer) {
      const held = entry;
      held.timer = setTimeout(() => {
        held.timer = undefined;
        if (this.held.get(id) === held) this.markOne(id, held);
      }, this.options.requestHoldAfterMs ?? REQUEST_HOLD_AFTER_MS);
      held.timer.unref();
    }
    this.timer ??= setInterval(() => void this.refresh(), SESSION_IN_USE_REFRESH_MS).unref();
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.release(id);
    };
  }

  /** Renews this node's holds on every session it has in use (the timer's work; tests call it directly). */
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

  /** Shutdown: this node's holds end in the database (its sessions are evictable at once), and no new one starts. */
  async close(): Promise<void> {
    if (this.closed) return this.writes;
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    for (const entry of this.held.values()) if (entry.timer) clearTimeout(entry.timer);
    this.held.clear();
    return this.write(() => this.store.clearMcpSessionHolds(), 0);
  }

  private markOne(id: string, entry: Held): void {
    if (entry.marked) return;
    entry.marked = true;
    void this.write(() => this.store.markMcpSessionsInUse([id]), 1);
  }

  private release(id: string): void {
    const entry = this.held.get(id);
    if (!entry) return;
    entry.count -= 1;
    if (entry.count > 0) return;
    this.held.delete(id);
    if (entry.timer) clearTimeout(entry.timer);
    // Only a hold that was written needs ending (a short request wrote nothing).
    if (entry.marked) void this.write(() => this.store.clearMcpSessionInUse(id), 1);
    if (this.held.size === 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }

  private write(statement: () => Promise<void>, sessions: number): Promise<void> {
    // A hold lost to a database away only makes a session evictable sooner: never fails a request.
    this.writes = this.writes.then(statement).catch((error: unknown) => {
      this.logger.warn({ err: error instanceof Error ? error.message : String(error), sessions }, 'could not record MCP sessions in use');
    });
    return this.writes;
  }
}
