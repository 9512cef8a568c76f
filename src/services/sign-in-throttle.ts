import { backoffSeconds, clientKeyOf, SIGN_IN_LIMITS } from '../core/accounts.js';
import { DomainError } from '../core/errors.js';

export function rateLimited(message: string, retryAfterSeconds: number): DomainError {
  return new DomainError('rate_limited', message, { retry_after: Math.max(1, Math.ceil(retryAfterSeconds)) });
}

/**
 * Sign-ups from one client (address): each one that reaches the KDF takes a token from a bucket of
 * `burst`, refilled one per `refillSeconds`. A taken email or a bad password takes none.
 */
export const REGISTRATION_LIMITS = { burst: 30, refillSeconds: 20 } as const;

interface ClientState {
  running: number;
  /** Registration tokens left at `tokensAt` (NaN: a full bucket). */
  tokens: number;
  tokensAt: number;
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

  /**
   * What `run` (and, for a sign-up, `checkRegistration`) would refuse this client right now, read
   * without counting or queueing anything: so a refused attempt can be answered before its body is
   * read or the database is asked. Undefined: the attempt must take the full path.
   */
  refusal(address: string | undefined, signUp = false): { message: string; retryAfter: number } | undefined {
    const state = this.clients.get(clientKeyOf(address));
    if (!state) return undefined;
    const wait = (state.blockedUntil - this.now()) / 1000;
    if (wait > 0)
      return {
        message: `too many failed sign-ins from your address; retry in ${Math.ceil(wait)} s`,
        retryAfter: Math.max(1, Math.ceil(wait)),
      };
    if (state.running >= SIGN_IN_LIMITS.clientConcurrent && state.waiting.length >= SIGN_IN_LIMITS.clientQueued)
      return { message: 'too many sign-in requests at once from your address', retryAfter: 1 };
    if (signUp) {
      const tokens = this.tokensOf(state);
      const seconds = (1 - tokens) * REGISTRATION_LIMITS.refillSeconds;
      if (tokens < 1)
        return {
          message: `too many sign-ups from your address; retry in ${Math.ceil(seconds)} s`,
          retryAfter: Math.max(1, Math.ceil(seconds)),
        };
    }
    return undefined;
  }

  /** 429 when this client has used up its sign-ups for now (checked before the email is looked up). */
  checkRegistration(address: string | undefined): void {
    const state = this.clients.get(clientKeyOf(address));
    if (!state) return;
    const tokens = this.tokensOf(state);
    if (tokens < 1)
      throw rateLimited(
        `too many sign-ups from your address; retry in ${Math.ceil((1 - tokens) * REGISTRATION_LIMITS.refillSeconds)} s`,
        (1 - tokens) * REGISTRATION_LIMITS.refillSeconds,
      );
  }

  /** Takes one sign-up token (right before the KDF); 429 when none is left. */
  spendRegistration(address: string | undefined): void {
    const state = this.state(clientKeyOf(address));
    const tokens = this.tokensOf(state);
    if (tokens < 1)
      throw rateLimited(
        `too many sign-ups from your address; retry in ${Math.ceil((1 - tokens) * REGISTRATION_LIMITS.refillSeconds)} s`,
        (1 - tokens) * REGISTRATION_LIMITS.refillSeconds,
      );
    state.tokens = tokens - 1;
    state.tokensAt = this.now();
  }

  private tokensOf(state: ClientState): number {
    if (Number.isNaN(state.tokens)) return REGISTRATION_LIMITS.burst;
    return Math.min(REGISTRATION_LIMITS.burst, state.tokens + (this.now() - state.tokensAt) / (REGISTRATION_LIMITS.refillSeconds * 1000));
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

  /** Whether this client failed a sign-in within the failure window (its hashes queue behind others'). */
  hasFailures(address: string | undefined): boolean {
    const state = this.clients.get(clientKeyOf(address));
    return !!state && state.failures > 0 && this.now() - state.lastFailureAt <= SIGN_IN_LIMITS.failureWindowSeconds * 1000;
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
      state = { running: 0, tokens: Number.NaN, tokensAt: 0, waiting: [], failures: 0, lastFailureAt: 0, blockedUntil: 0 };
      this.clients.set(key, state);
    }
    return state;
  }

  private forgetIfIdle(key: string, state: ClientState): void {
    if (state.running === 0 && state.waiting.length === 0 && state.failures === 0 && this.tokensOf(state) >= REGISTRATION_LIMITS.burst)
      this.clients.delete(key);
  }

  /** Drops clients with nothing in flight whose failures are stale, or failing that the oldest idle ones. */
  private evict(): void {
    const now = this.now();
    const stale = SIGN_IN_LIMITS.failureWindowSeconds * 1000;
    for (const [key, state] of this.clients) {
      if (
        state.running === 0 &&
        now - state.lastFailureAt > stale &&
        state.blockedUntil <= now &&
        this.tokensOf(state) >= REGISTRATION_LIMITS.burst
      )
        this.clients.delete(key);
    }
    for (const [key, state] of this.clients) {
      if (this.clients.size < MAX_TRACKED) break;
      if (state.running === 0) this.clients.delete(key);
    }
  }
}
