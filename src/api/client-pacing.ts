/**
 * Per-client pacing of HTTP work on the main thread. A client (an IPv4 address, an IPv6 /64, or
 * behind a trusted proxy its forwarded address) starts at most `ratePerSecond` new requests a
 * second, after a burst of as many, and at most PER_TURN of them in one turn of the event loop. What
 * is over its share waits, FIFO per client, and the waiting clients are served in turn, each up to
 * PER_TURN a turn: another client's request never queues behind a flood, and a flood's connections
 * wait unread (no socket, no parser, no bytes looked at) instead of being answered as fast as the
 * attacker can send them.
 */

/** New requests one client may start in one turn of the event loop, even with tokens to spare. */
export const PER_TURN = 4;
/** Idle clients (full bucket, nothing waiting) are forgotten at this interval. */
const SWEEP_INTERVAL_MS = 10_000;

interface Waiting {
  go(): void;
  drop(): void;
}

interface ClientState {
  tokens: number;
  at: number;
  /** The turn of the last grant and how many were granted in it. */
  turn: number;
  inTurn: number;
  queue: Waiting[];
}

export interface PacingStats {
  /** Requests (or connections) started at once. */
  immediate: number;
  /** Ones that had to wait for their client's share (counted when they were queued). */
  deferred: number;
  /** Waiting now. */
  waiting: number;
}

export type PacingVerdict = 'now' | 'queued' | 'full';

export class ClientPacer {
  private readonly clients = new Map<string, ClientState>();
  private readonly ratePerMs: number;
  private turn = 0;
  private turnTick = false;
  private drainScheduled: { cancel(): void } | undefined;
  private readonly sweeper: NodeJS.Timeout;
  private waitingNow = 0;
  private readonly counts = { immediate: 0, deferred: 0 };
  private closed = false;

  constructor(
    private readonly ratePerSecond: number,
    /** Waiting entries one client may have (past it: `full`, and the caller refuses). */
    private readonly maxWaiting: number,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.ratePerMs = ratePerSecond / 1000;
    this.sweeper = setInterval(() => this.sweep(), SWEEP_INTERVAL_MS).unref();
  }

  /**
   * Starts `go` now when `client` is within its share (returns 'now', `go` already called), or
   * queues it for its turn ('queued'); 'full' when the client already has `maxWaiting` entries
   * waiting (nothing is kept: the caller refuses). `drop` is called instead of `go` if the pacer
   * is closed first.
   */
  enter(client: string, go: () => void, drop: () => void): PacingVerdict {
    if (this.closed) {
      drop();
      return 'queued';
    }
    const state = this.state(client);
    if (state.queue.length === 0 && this.grant(state)) {
      this.counts.immediate++;
      go();
      return 'now';
    }
    if (state.queue.length >= this.maxWaiting) return 'full';
    state.queue.push({ go, drop });
    this.waitingNow++;
    this.counts.deferred++;
    this.scheduleDrain();
    return 'queued';
  }

  /**
   * Takes `requests` more from `client`'s share, for a request that cost the server more than a
   * request (its share may go below zero: what it starts next waits until it is paid back).
   */
  charge(client: string, requests: number): void {
    if (this.closed) return;
    const state = this.state(client);
    this.refill(state);
    state.tokens -= requests;
  }

  stats(): PacingStats {
    return { ...this.counts, waiting: this.waitingNow };
  }

  /** Drops everything still waiting (the server is stopping). */
  close(): void {
    this.closed = true;
    clearInterval(this.sweeper);
    this.drainScheduled?.cancel();
    this.drainScheduled = undefined;
    for (const state of this.clients.values()) {
      for (const waiting of state.queue.splice(0)) {
        this.waitingNow--;
        waiting.drop();
      }
    }
    this.clients.clear();
  }

  private state(client: string): ClientState {
    let state = this.clients.get(client);
    if (!state) {
      state = { tokens: this.ratePerSecond, at: this.now(), turn: -1, inTurn: 0, queue: [] };
      this.clients.set(client, state);
    }
    return state;
  }

  private refill(state: ClientState): void {
    const now = this.now();
    state.tokens = Math.min(this.ratePerSecond, state.tokens + (now - state.at) * this.ratePerMs);
    state.at = now;
  }

  /** Takes a token and a place in this turn, if both are there. */
  private grant(state: ClientState): boolean {
    this.refill(state);
    if (state.turn !== this.turn) {
      state.turn = this.turn;
      state.inTurn = 0;
    }
    if (state.tokens < 1 || state.inTurn >= PER_TURN) return false;
    state.tokens -= 1;
    state.inTurn++;
    if (!this.turnTick) {
      // The turn ends after this round of I/O: the next grants count towards the next one.
      this.turnTick = true;
      setImmediate(() => {
        this.turnTick = false;
        this.turn++;
      });
    }
    return true;
  }

  private scheduleDrain(): void {
    if (this.drainScheduled || this.closed) return;
    // The soonest any waiting client has a token again (all refill at the same rate).
    let soonest = Infinity;
    for (const state of this.clients.values()) {
      if (state.queue.length === 0) continue;
      this.refill(state);
      soonest = Math.min(soonest, state.tokens >= 1 ? 0 : (1 - state.tokens) / this.ratePerMs);
    }
    if (soonest === Infinity) return;
    if (soonest === 0) {
      // After this turn's I/O: what other clients sent meanwhile is read first.
      const immediate = setImmediate(() => this.drain());
      this.drainScheduled = { cancel: () => clearImmediate(immediate) };
    } else {
      const timer = setTimeout(() => this.drain(), Math.max(1, Math.ceil(soonest)));
      this.drainScheduled = { cancel: () => clearTimeout(timer) };
    }
  }

  /** One turn of the waiting clients: each starts what its share allows, up to PER_TURN. */
  private drain(): void {
    this.drainScheduled = undefined;
    this.turn++;
    for (const state of this.clients.values()) {
      while (state.queue.length > 0 && this.grant(state)) {
        this.waitingNow--;
        state.queue.shift()!.go();
      }
    }
    this.scheduleDrain();
  }

  private sweep(): void {
    for (const [client, state] of this.clients) {
      if (state.queue.length > 0) continue;
      this.refill(state);
      if (state.tokens >= this.ratePerSecond) this.clients.delete(client);
    }
  }
}

/**
 * Per-client budget of request-body bytes read a second (burst: one second's worth). Reading goes
 * into debt by a chunk at most; the reader then waits the debt off before it reads on, so the
 * client's socket is not read meanwhile (backpressure holds the rest in its own buffers).
 */
export class ByteBudget {
  private readonly clients = new Map<string, { tokens: number; at: number }>();
  private readonly perMs: number;
  private readonly sweeper: NodeJS.Timeout;

  constructor(
    private readonly bytesPerSecond: number,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.perMs = bytesPerSecond / 1000;
    this.sweeper = setInterval(() => this.sweep(), SWEEP_INTERVAL_MS).unref();
  }

  /** Takes `bytes` from `client`'s budget; the milliseconds to wait before reading more (0: within its share). */
  take(client: string, bytes: number): number {
    const now = this.now();
    const state = this.clients.get(client) ?? { tokens: this.bytesPerSecond, at: now };
    state.tokens = Math.min(this.bytesPerSecond, state.tokens + (now - state.at) * this.perMs) - bytes;
    state.at = now;
    this.clients.set(client, state);
    return state.tokens >= 0 ? 0 : Math.ceil(-state.tokens / this.perMs);
  }

  private stopped = false;

  /** Closed: its sweep timer is gone (the server that made it has stopped). */
  get closed(): boolean {
    return this.stopped;
  }

  close(): void {
    this.stopped = true;
    clearInterval(this.sweeper);
    this.clients.clear();
  }

  private sweep(): void {
    const now = this.now();
    for (const [client, state] of this.clients)
      if (state.tokens + (now - state.at) * this.perMs >= this.bytesPerSecond) this.clients.delete(client);
  }
}
