/**
 * Pre-started sandboxes. A sandbox is started (namespaces, mounts, seccomp, dropped privileges,
 * interpreter and runner up, blocked reading its request) before any request exists, so it can
 * only depend on what every request of its *shape* shares: the command line and the limits fixed at
 * start. The shape's key is all of that; a sandbox serves one run of its own key and is never
 * returned to the pool, so nothing of one run can reach the next.
 *
 * Sizing: keys named at creation (the common plain Python and TypeScript shapes) keep `minSize`
 * ready; other keys are learned from demand (the first run of a key takes the cold path) and keep
 * `learnedSize`, since many of them (a namespace's package before its next change) are never
 * claimed again and each start costs the server a fork. Each key's
 * target follows its recent claim rate, capped per key, in total, and by free memory; a key nobody
 * claims for `idleMs` shrinks back to its floor (learned keys are then dropped). Idle sandboxes are
 * blocked in read(2), so they cost memory, never CPU.
 *
 * A claimed sandbox's replacement starts once its run has answered (`done`), or `replaceAfterMs`
 * after the claim if the run takes longer, or at once when the claim took the key's last ready
 * sandbox: an interpreter's start (about 25 ms of CPU for Node) beside a short run on a 2-core host
 * doubled its latency, while a long run's slot, or a pool that demand has emptied, is refilled.
 */
import { availableParallelism, freemem, totalmem } from 'node:os';
import { backoffMs, DecayingRate, memoryReserve, POOL_TICK_MS, REPLACE_AFTER_MS, START_BACKOFF, targetSize } from './policy/capacity.js';

export interface PoolShape {
  /** Everything fixed when the sandbox starts; equal keys are interchangeable sandboxes. */
  readonly key: string;
  /** For stats and logs (never contains request data). */
  readonly label: string;
  /** Memory one idle sandbox of this shape holds, for the free-memory cap. */
  readonly memoryEstimateBytes: number;
}

export interface PoolItem {
  /** Resolves true once the sandbox can be claimed (it waits for its request), false if it ended first. */
  readonly ready: Promise<boolean>;
  alive(): boolean;
  /** Ends an unclaimed sandbox and frees what it holds. */
  discard(): Promise<void>;
  /**
   * Settles once the run that claimed it has answered or ended (never rejects); its replacement
   * waits for it, up to `replaceAfterMs`. Without it, the replacement starts at the claim.
   */
  readonly done?: Promise<unknown>;
}

export interface WarmPoolOptions {
  /** Sandboxes kept ready for each key named at creation (its floor). Default 2. */
  minSize?: number;
  /** The floor of a key learned from demand while it is in use. Default 1. */
  learnedSize?: number;
  /** Most sandboxes kept ready for one key. Default 8. */
  maxSize?: number;
  /** Most sandboxes kept ready over all keys. Default 24. */
  maxTotal?: number;
  /** Most distinct keys kept (the least recently claimed learned key is dropped first). Default 8. */
  maxKeys?: number;
  /** A key unclaimed this long goes back to its floor; a learned one is dropped. Default 60 s. */
  idleMs?: number;
  /** Sandboxes being started at once, so refills never swamp the runs in progress. Default: CPUs. */
  maxStarting?: number;
  /** Longest a claimed sandbox's replacement waits for its run's answer. Default 200 ms (REPLACE_AFTER_MS). */
  replaceAfterMs?: number;
  /** Free memory idle sandboxes must leave. Default max(512 MB, 10 % of RAM). */
  reserveBytes?: number;
  /** Free memory now (default os.freemem, MemAvailable on Linux); replaceable for tests. */
  freeMemory?: () => number;
  /** How often sizes are reconsidered. Default 1 s. */
  tickMs?: number;
  /**
   * The clock claim rates and idle times are read from (default Date.now); replaceable for tests.
   * Start-failure back-off always uses real time: it protects the host, not the sizing.
   */
  now?: () => number;
}

export interface PoolKeyStats {
  label: string;
  pinned: boolean;
  ready: number;
  starting: number;
  target: number;
  claims: number;
  hits: number;
}

export interface PoolStats {
  claims: number;
  hits: number;
  keys: PoolKeyStats[];
}

interface Entry<T> {
  item: T;
  ready: boolean;
}

interface KeyState<S, T> {
  shape: S;
  pinned: boolean;
  entries: Entry<T>[];
  rate: DecayingRate;
  lastClaim: number;
  claims: number;
  hits: number;
  failures: number;
  retryAt: number;
  /** Releases of claimed sandboxes whose replacement waits for their run's answer (each counted as present until then). */
  holds: Set<() => void>;
}

export class WarmPool<S extends PoolShape, T extends PoolItem> {
  private readonly states = new Map<string, KeyState<S, T>>();
  private readonly minSize: number;
  private readonly learnedSize: number;
  private readonly maxSize: number;
  private readonly maxTotal: number;
  private readonly maxKeys: number;
  private readonly idleMs: number;
  private readonly maxStarting: number;
  private readonly replaceAfterMs: number;
  private readonly reserveBytes: number;
  private readonly freeMemory: () => number;
  private readonly now: () => number;
  private readonly timer: NodeJS.Timeout;
  private starting = 0;
  private startingBytes = 0;
  private refillQueued = false;
  private closed = false;
  private claims = 0;
  private hits = 0;

  constructor(
    private readonly start: (shape: S) => T,
    pinned: readonly S[],
    options: WarmPoolOptions = {},
    private readonly log: (message: string) => void = () => {},
  ) {
    this.minSize = options.minSize ?? 2;
    this.learnedSize = Math.min(options.learnedSize ?? 1, this.minSize);
    this.maxSize = Math.max(this.minSize, options.maxSize ?? 8);
    this.maxTotal = options.maxTotal ?? 24;
    this.maxKeys = Math.max(pinned.length + 1, options.maxKeys ?? 8);
    this.idleMs = options.idleMs ?? 60_000;
    this.maxStarting = Math.max(1, options.maxStarting ?? availableParallelism());
    this.replaceAfterMs = Math.max(0, options.replaceAfterMs ?? REPLACE_AFTER_MS);
    this.reserveBytes = options.reserveBytes ?? memoryReserve(totalmem());
    this.freeMemory = options.freeMemory ?? freemem;
    this.now = options.now ?? Date.now;
    const now = this.now();
    for (const shape of pinned) this.states.set(shape.key, this.newState(shape, true, now));
    // unref: an idle pool must not keep the process alive, and the tick itself is a few comparisons.
    this.timer = setInterval(() => this.tick(), options.tickMs ?? POOL_TICK_MS);
    this.timer.unref();
    this.refill();
  }

  /**
   * A started sandbox of this shape, removed from the pool for good; null when none is there (the
   * caller takes the cold path). Either way the claim counts as demand for the shape.
   */
  claim(shape: S): T | null {
    if (this.closed) return null;
    const now = this.now();
    let state = this.states.get(shape.key);
    if (!state) {
      state = this.newState(shape, false, now);
      this.states.set(shape.key, state);
      this.evictKeys();
    }
    state.rate.claim(now);
    state.lastClaim = now;
    state.claims++;
    this.claims++;
    // Ready ones first; one still starting is still ahead of a cold start.
    let found: T | null = null;
    for (const wantReady of [true, false]) {
      for (let index = 0; index < state.entries.length && !found; index++) {
        const entry = state.entries[index];
        if (entry.ready !== wantReady) continue;
        if (!entry.item.alive()) {
          state.entries.splice(index--, 1);
          void entry.item.discard();
          continue;
        }
        state.entries.splice(index, 1);
        found = entry.item;
      }
    }
    if (found) {
      state.hits++;
      this.hits++;
      this.holdReplacement(state, found);
    }
    this.queueRefill();
    return found;
  }

  /**
   * The claimed sandbox's slot stays counted until its run answers (or the bound passes), while
   * another ready one of its key is there for the next claim. A claim that takes the key's last
   * ready sandbox lets every held slot go: demand has caught up with the pool, and waiting would
   * only send the next claims to cold starts.
   */
  private holdReplacement(state: KeyState<S, T>, item: T): void {
    if (!state.entries.some((entry) => entry.ready)) {
      for (const release of [...state.holds]) release();
      return;
    }
    if (!item.done || this.replaceAfterMs === 0) return;
    let bound: NodeJS.Timeout | undefined = undefined;
    const release = () => {
      if (!state.holds.delete(release)) return;
      clearTimeout(bound);
      this.queueRefill();
    };
    state.holds.add(release);
    bound = setTimeout(release, this.replaceAfterMs);
    // A held slot must not keep the process alive; a closed pool starts nothing anyway.
    bound.unref();
    void item.done.then(release, release);
  }

  stats(): PoolStats {
    const now = this.now();
    return {
      claims: this.claims,
      hits: this.hits,
      keys: [...this.states.values()].map((state) => ({
        label: state.shape.label,
        pinned: state.pinned,
        ready: state.entries.filter((entry) => entry.ready).length,
        starting: state.entries.filter((entry) => !entry.ready).length,
        target: this.targetFor(state, now),
        claims: state.claims,
        hits: state.hits,
      })),
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    const entries = [...this.states.values()].flatMap((state) => state.entries.splice(0));
    await Promise.all(entries.map((entry) => entry.item.discard()));
  }

  private newState(shape: S, pinned: boolean, now: number): KeyState<S, T> {
    return {
      shape,
      pinned,
      entries: [],
      rate: new DecayingRate(now),
      lastClaim: now,
      claims: 0,
      hits: 0,
      failures: 0,
      retryAt: 0,
      holds: new Set(),
    };
  }

  private decayedRate(state: KeyState<S, T>, now: number): number {
    return state.rate.read(now);
  }

  private targetFor(state: KeyState<S, T>, now: number): number {
    const active = now - state.lastClaim < this.idleMs;
    const floor = state.pinned ? this.minSize : active ? this.learnedSize : 0;
    return targetSize({ rate: this.decayedRate(state, now), min: floor, max: this.maxSize });
  }

  /** Learned keys beyond maxKeys go, least recently claimed first, with their idle sandboxes. */
  private evictKeys(): void {
    while (this.states.size > this.maxKeys) {
      const learned = [...this.states.values()].filter((state) => !state.pinned).sort((a, b) => a.lastClaim - b.lastClaim);
      const victim = learned[0];
      if (!victim) return;
      this.dropKey(victim);
    }
  }

  private dropKey(state: KeyState<S, T>): void {
    this.states.delete(state.shape.key);
    for (const entry of state.entries.splice(0)) void entry.item.discard();
  }

  private queueRefill(): void {
    if (this.refillQueued || this.closed) return;
    this.refillQueued = true;
    // After the claiming run has sent its request, so starting a replacement never delays it.
    setImmediate(() => {
      this.refillQueued = false;
      this.refill();
    });
  }

  private total(): number {
    let total = 0;
    for (const state of this.states.values()) total += state.entries.length;
    return total;
  }

  /** Starts sandboxes where a key is below its target, as far as the caps allow. */
  private refill(): void {
    if (this.closed) return;
    const now = this.now();
    // Busiest keys first, so a shortage of memory or total slots falls on the quiet ones.
    const states = [...this.states.values()].sort((a, b) => this.decayedRate(b, now) - this.decayedRate(a, now));
    let total = this.total();
    let progress = true;
    // One sandbox per key per round, so keys share the starting slots fairly.
    while (progress) {
      progress = false;
      for (const state of states) {
        if (this.starting >= this.maxStarting || total >= this.maxTotal) return;
        if (state.entries.length + state.holds.size >= this.targetFor(state, now) || Date.now() < state.retryAt) continue;
        const estimate = state.shape.memoryEstimateBytes;
        if (this.freeMemory() - this.startingBytes - estimate < this.reserveBytes) continue;
        this.startOne(state, estimate);
        total++;
        progress = true;
      }
    }
  }

  private startOne(state: KeyState<S, T>, estimate: number): void {
    let item: T;
    try {
      item = this.start(state.shape);
    } catch (error) {
      this.failed(state, `could not start a pooled sandbox (${state.shape.label}): ${(error as Error).message}`);
      return;
    }
    const entry: Entry<T> = { item, ready: false };
    state.entries.push(entry);
    this.starting++;
    this.startingBytes += estimate;
    void item.ready.then((ready) => {
      this.starting--;
      this.startingBytes -= estimate;
      const index = state.entries.indexOf(entry);
      if (ready) {
        entry.ready = true;
        state.failures = 0;
      } else if (index !== -1) {
        // Died before it was claimed (a claimed one reports its own failure to its run).
        state.entries.splice(index, 1);
        void item.discard();
        if (!this.closed) this.failed(state, `a pooled sandbox (${state.shape.label}) ended before it was ready`);
      }
      this.refill();
    });
  }

  /** Backs off a key whose sandboxes fail to start, so a broken host is not hammered with forks. */
  private failed(state: KeyState<S, T>, message: string): void {
    state.failures++;
    state.retryAt = Date.now() + backoffMs(Math.min(state.failures, 9), START_BACKOFF);
    if (state.failures <= 3) this.log(message);
  }

  private tick(): void {
    if (this.closed) return;
    const now = this.now();
    for (const state of [...this.states.values()]) {
      if (!state.pinned && now - state.lastClaim >= this.idleMs) {
        this.dropKey(state);
        continue;
      }
      // Shrink to the target, oldest ready ones first (those still starting may be claimed soon).
      const target = this.targetFor(state, now);
      for (let index = 0; state.entries.length > target && index < state.entries.length;) {
        const entry = state.entries[index];
        if (entry.ready || !entry.item.alive()) {
          state.entries.splice(index, 1);
          void entry.item.discard();
        } else {
          index++;
        }
      }
    }
    // Memory pressure: give idle sandboxes back, quietest keys first, until the reserve is free again.
    let short = this.reserveBytes - this.freeMemory();
    if (short > 0) {
      const states = [...this.states.values()].sort((a, b) => this.decayedRate(a, now) - this.decayedRate(b, now));
      for (const state of states) {
        while (short > 0 && state.entries.length > 0) {
          const entry = state.entries.shift()!;
          short -= state.shape.memoryEstimateBytes;
          void entry.item.discard();
        }
      }
    }
    this.refill();
  }
}
