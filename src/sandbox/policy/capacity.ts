/**
 * The capacity rules both pools (warm-pool.ts, zygote/pool.ts) and the spawner share: a claim rate that
 * decays, how many to keep ready for it, the free memory left for everything else, exponential
 * back-off, and the waits they share (kill grace, reap bound, tick). Pure: the clock and the
 * machine's memory are passed in.
 */

import { MB } from '../../core/units.js';

/** Claims per second are averaged over about this long. */
export const RATE_WINDOW_MS = 5000;
/** Keep enough ready for this much of the recent claim rate while refills catch up. */
export const DEMAND_HORIZON_S = 0.5;

/** The grace a process being stopped gets (SIGTERM, a closed channel, a start to finish) before SIGKILL. */
export const KILL_GRACE_MS = 2000;
/**
 * The bound on waiting for what an ended run leaves: killed processes reaped, its pipes' ends, the
 * runner's ready line. Each is a matter of milliseconds; the bound keeps a stuck one from holding the answer.
 */
export const REAP_BOUND_MS = 2000;
/** After a run's answer, where its output streams cannot be read to empty at once, how long they get to deliver what the run printed before it (cold, pooled and zygote runs alike). */
export const OUTPUT_AFTER_ANSWER_MS = 100;
/** Both pools look at demand, idle members and memory once per tick. */
export const POOL_TICK_MS = 1000;
/**
 * A claimed pooled sandbox's replacement waits for its run's answer at most this long (while its
 * key still has a ready one): a short run is not slowed by the start, a long one's slot is
 * refilled all the same (see warm-pool.ts).
 */
export const REPLACE_AFTER_MS = 200;

/** Claims per second, decaying exponentially over `windowMs` (each claim adds 1000/windowMs). */
export class DecayingRate {
  private value = 0;

  constructor(
    private at: number,
    private readonly windowMs = RATE_WINDOW_MS,
  ) {}

  /** The rate now. */
  read(now: number): number {
    return this.value * Math.exp(-(now - this.at) / this.windowMs);
  }

  /** Counts one claim at `now`. */
  claim(now: number): void {
    this.value = this.read(now) + 1000 / this.windowMs;
    this.at = now;
  }
}

/** How many to keep ready: enough for `horizonS` of the rate, between `min` and `max`. */
export function targetSize(options: { rate: number; horizonS?: number; min: number; max: number }): number {
  return Math.min(options.max, Math.max(options.min, Math.ceil(options.rate * (options.horizonS ?? DEMAND_HORIZON_S))));
}

/** Free memory what is kept ready must leave to everything else: max(512 MB, 10 % of RAM). */
export function memoryReserve(totalBytes: number): number {
  return Math.max(512 * MB, Math.floor(totalBytes * 0.1));
}

/** The back-off of something that fails to start (a pre-started sandbox, the spawner): 100 ms, doubling, at most 30 s. */
export const START_BACKOFF = Object.freeze({ baseMs: 100, maxMs: 30_000 });

/** The wait before attempt `step` (0, 1, 2, …) of something that keeps failing: base · 2^step, at most max. */
export function backoffMs(step: number, options: { baseMs: number; maxMs: number }): number {
  return Math.min(options.maxMs, options.baseMs * 2 ** Math.max(0, step));
}
