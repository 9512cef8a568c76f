import { backoffSeconds, clientKeyOf, SIGN_IN_LIMITS } from '../core/accounts.js';
import { DomainError } from '../core/errors.js';

export function rateLimited(message: string, retryAfterSeconds: number): DomainError {
  return new DomainError('rate_limited', message, { retry_after: Math.max(1, Math.ceil(retryAfterSeconds)) });
}

interface ClientState {
  running: number;
  waiting: Array<() => void>;
  failures: number;
  lastFailureAt: number;
  blockedUntil: number;
}

/** Past this many tracked clients, idle ones are forgotten first (oldest first). */
const MAX_TRACKED = 50_000;

/**
 * Per-client (per source address) gate in front of the password KDF, in this node's memory: the
 * per-account limit is in the database and holds across nodes; this one only has to keep one
 * client from taking the whole KDF queue, so a per-node view is enough.
 */
export class ClientSignInGate {
  private readonly clients = new Map<string, ClientState>();

  constructor(private readonly now: () => number = Date.now) {}

  /** Runs `work` in one of the client's slots; 429 while the client is backing off or has too many requests waiting. */
  async run<T>(address: string | undefined, work: () => Promise<T>): Promise<T> {
    const key = clientKeyOf(address);
    const state = this.state(key);
    this.refuseWhileBlocked(state);
    if (state.running >= SIGN_IN_LIMITS.clientConcurrent) {
      if (state.waiting.length >= SIGN_IN_LIMITS.clientQueued) throw rateLimited('too many sign-in requests at once from your address', 1);
      await new Promise<void>((resolve) => state.waiting.push(resolve));
    } else {
      state.running++;
    }
    try {
      // Again after waiting: the requests ahead may have used up the free failures.
      this.refuseWhileBlocked(state);
      return await work();
    } finally {
      const next = state.waiting.shift();
      if (next) next();
      else state.running--;
      this.forgetIfIdle(key, state);
    }
  }

  private refuseWhileBlocked(state: ClientState): void {
    const wait = (state.blockedUntil - this.now()) / 1000;
    if (wait > 0) throw rateLimited(`too many failed sign-ins from your address; retry in ${Math.ceil(wait)} s`, wait);
  }

  /** Counts a failed sign-in from this client; past the free ones, it waits before its next. */
  failure(address: string | undefined): void {
    const key = clientKeyOf(address);
    const state = this.state(key);
    const now = this.now();
    if (now - state.lastFailureAt > SIGN_IN_LIMITS.failureWindowSeconds * 1000) state.failures = 0;
    state.failures++;
    state.lastFailureAt = now;
    const seconds = backoffSeconds(state.failures, SIGN_IN_LIMITS.clientFreeFailures);
    if (seconds > 0) state.blockedUntil = now + seconds * 1000;
  }

  success(address: string | undefined): void {
    const key = clientKeyOf(address);
    const state = this.clients.get(key);
    if (!state) return;
    state.failures = 0;
    state.blockedUntil = 0;
    this.forgetIfIdle(key, state);
  }

  private state(key: string): ClientState {
    let state = this.clients.get(key);
    if (!state) {
      if (this.clients.size >= MAX_TRACKED) this.evict();
      state = { running: 0, waiting: [], failures: 0, lastFailureAt: 0, blockedUntil: 0 };
      this.clients.set(key, state);
    }
    return state;
  }

  private forgetIfIdle(key: string, state: ClientState): void {
    if (state.running === 0 && state.waiting.length === 0 && state.failures === 0) this.clients.delete(key);
  }

  /** Drops clients with nothing in flight whose failures are stale, or failing that the oldest idle ones. */
  private evict(): void {
    const now = this.now();
    const stale = SIGN_IN_LIMITS.failureWindowSeconds * 1000;
    for (const [key, state] of this.clients) {
      if (state.running === 0 && now - state.lastFailureAt > stale && state.blockedUntil <= now) this.clients.delete(key);
    }
    for (const [key, state] of this.clients) {
      if (this.clients.size < MAX_TRACKED) break;
      if (state.running === 0) this.clients.delete(key);
    }
  }
}
