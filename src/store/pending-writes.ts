import { isRetryableStoreError, type DatabaseHealth } from './db-health.js';

/** Writes held at most (count and bytes): far more than the calls one server can have in flight. */
export const PENDING_WRITES_MAX = 10_000;
export const PENDING_WRITES_MAX_BYTES = 64 * 1024 * 1024;
const RETRY_INTERVAL_MS = 2000;

export interface PendingWrite {
  /** For the log, should it be dropped: the ticket and what the write was (never a value). */
  what: string;
  /** Roughly what it holds in memory (a record's output). */
  bytes: number;
  /** Idempotent: run again after a failure that may have committed, it changes nothing twice. */
  run: () => Promise<void>;
}

/**
 * The outbox of a metered call's last writes (its record and settlement, or a refund) that the
 * database refused because it was unreachable or full: a cache of pending writes, in memory and
 * bounded, retried in order once the database is back (and every 2 s while any wait). A write whose
 * retry fails for another reason is logged and dropped, never retried forever. What is still here
 * when the process dies is lost from memory only: its slot is still held in the database, so it is
 * treated like any run of a dead server instance (its slot freed and its quota unit given back).
 */
export class PendingWrites {
  private readonly items: PendingWrite[] = [];
  private bytes = 0;
  private flushing: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly unsubscribe: () => void;

  constructor(
    private readonly health: DatabaseHealth,
    private readonly log: {
      warn: (fields: Record<string, unknown>, message: string) => void;
      error: (fields: Record<string, unknown>, message: string) => void;
    },
  ) {
    health.pendingWrites = () => this.items.length;
    this.unsubscribe = health.onChange((state) => {
      if (state === 'ok') void this.flush();
    });
  }

  get size(): number {
    return this.items.length;
  }

  /** Holds a write for later; false (and logged with what it was) when the outbox is full. */
  add(write: PendingWrite): boolean {
    if (this.items.length >= PENDING_WRITES_MAX || this.bytes + write.bytes > PENDING_WRITES_MAX_BYTES) {
      this.log.error(
        { write: write.what, pending: this.items.length },
        'pending-writes outbox full: a write the database refused is dropped',
      );
      return false;
    }
    this.items.push(write);
    this.bytes += write.bytes;
    if (this.items.length === 1)
      this.log.warn({ write: write.what }, 'database refused a write; held in the pending-writes outbox until it is back');
    this.timer ??= setInterval(() => void this.flush(), RETRY_INTERVAL_MS);
    this.timer.unref();
    return true;
  }

  /** Writes what it can, in order; stops at the first refusal that says the database is still away. */
  flush(): Promise<void> {
    this.flushing ??= (async () => {
      while (this.items.length > 0) {
        const write = this.items[0]!;
        try {
          await write.run();
        } catch (error) {
          if (isRetryableStoreError(error)) return;
          this.log.error({ write: write.what, err: error }, 'a pending write failed on retry and is dropped');
        }
        this.items.shift();
        this.bytes -= write.bytes;
      }
      if (this.timer) clearInterval(this.timer);
      this.timer = undefined;
    })().finally(() => (this.flushing = undefined));
    return this.flushing;
  }

  /** At shutdown: one last try, then say what is left (the database is closed next). */
  async close(): Promise<void> {
    this.unsubscribe();
    if (this.items.length > 0) await this.flush().catch(() => undefined);
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    if (this.items.length > 0) {
      this.log.error(
        { pending: this.items.length, writes: this.items.slice(0, 20).map((w) => w.what) },
        'stopping with writes the database refused still pending; their slots are freed and quota units given back at the next start',
      );
    }
  }
}
