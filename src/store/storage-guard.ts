import { statfsSync } from 'node:fs';
import type { DatabaseHealth } from './db-health.js';
import { MB } from '../core/units.js';

/** Default free-space reserve of the data dir's file system (MCPWORKS_DISK_RESERVE_MB). */
export const DEFAULT_DISK_RESERVE_BYTES = 64 * MB;
/** Statements between two looks at free space at most this far apart (statfs is a cheap system call). */
const CHECK_EVERY_MS = 100;
/** Without traffic, free space is still watched (recovery, /healthz). */
const WATCH_INTERVAL_MS = 1000;

export function freeBytes(dir: string): number {
  const stats = statfsSync(dir);
  return Number(stats.bavail) * Number(stats.bsize);
}

export function mib(bytes: number): string {
  return `${Math.floor(bytes / MB)} MiB`;
}

/**
 * Keeps the embedded database off a full disk. PGlite cannot survive a failed WAL write: after
 * "No space left on device" its next statement spins forever on the main thread. So writes are
 * refused (the database is put in read-only mode) while free space is below the reserve, which
 * must hold what PostgreSQL may still write at once: a new 16 MiB WAL segment and more. Writes
 * resume once free space is back above the reserve by a quarter (no flapping at the edge).
 */
export class StorageGuard {
  private checkedAt = 0;
  private timer: NodeJS.Timeout | undefined;
  /** Free bytes at the last look. */
  free = Number.POSITIVE_INFINITY;

  constructor(
    readonly dir: string,
    readonly reserveBytes: number,
    private readonly health: DatabaseHealth,
    private readonly log: (full: boolean, free: number) => void = () => undefined,
  ) {}

  /** Looks at free space (at most every 100 ms unless forced) and updates the health state; true when writes must be refused. */
  check(force = false): boolean {
    const now = Date.now();
    if (force || now - this.checkedAt >= CHECK_EVERY_MS) {
      this.checkedAt = now;
      try {
        this.free = freeBytes(this.dir);
      } catch {
        // The dir vanished or statfs failed: keep the last answer rather than guess.
      }
      const state = this.health.state;
      if (state === 'ok' && this.free < this.reserveBytes) {
        this.health.set('storage_full');
        this.log(true, this.free);
      } else if (state === 'storage_full' && this.free >= this.reserveBytes * 1.25) {
        this.health.set('ok');
        this.log(false, this.free);
      }
    }
    return this.health.state === 'storage_full';
  }

  start(): void {
    this.timer ??= setInterval(() => this.check(true), WATCH_INTERVAL_MS);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}
