import { DomainError } from '../core/errors.js';

/**
 * What the server knows of its database, kept by the pool wrappers from every query's outcome and
 * by bounded probes: `/healthz` reads it without waiting on a dead connection, and requests that
 * need the database are refused at once (503 / 507) instead of queueing on it.
 * - `unreachable`: PostgreSQL refused or dropped connections; a probe reconnects by itself.
 * - `storage_full`: the data dir's file system is below its free-space reserve; reads still work.
 * - `failed`: the embedded database hit the disk's end before the reserve caught it; it is not
 *   touched again and the server stops (PGlite cannot recover from a failed WAL write).
 */
export type DatabaseState = 'ok' | 'unreachable' | 'storage_full' | 'failed';

/** Seconds a client is told to wait (Retry-After) while the database is unreachable or full. */
export const UNAVAILABLE_RETRY_AFTER_S = 5;
export const STORAGE_FULL_RETRY_AFTER_S = 30;

/** A request refused because the database is unreachable (HTTP 503, tool error `unavailable`). */
export class DatabaseUnavailableError extends DomainError {
  /**
   * True when the statement may have reached the database before the connection broke: it may
   * have committed (the caller then settles the ticket it was taking, later).
   */
  readonly ambiguous: boolean;

  constructor(ambiguous: boolean) {
    super('unavailable', 'the database is unreachable; retry shortly', { retry_after: UNAVAILABLE_RETRY_AFTER_S });
    this.ambiguous = ambiguous;
  }
}

export function storageFullError(): DomainError {
  return new DomainError(
    'storage_full',
    "storage full: the server's disk is below its free-space reserve, so writes are refused until space is freed; reads still work",
    {
      retry_after: STORAGE_FULL_RETRY_AFTER_S,
    },
  );
}

/** PostgreSQL's unique_violation: the row is there already. */
export function isUniqueViolation(error: unknown): boolean {
  return (error as { code?: unknown } | null)?.code === '23505';
}

/** Refusals that a later attempt may get past (the database came back, space was freed). */
export function isRetryableStoreError(error: unknown): error is DomainError {
  return error instanceof DomainError && (error.type === 'unavailable' || error.type === 'storage_full');
}

const CONNECTION_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  '57P01',
  '57P02',
  '57P03',
]);
const CONNECTION_MESSAGES =
  /Connection terminated|connection timeout|timeout exceeded when trying to connect|Client has encountered a connection error|Client was closed|not queryable|terminating connection/i;

/** An error that says the connection, not the statement, failed (SQLSTATE class 08, shutdown 57P0x, socket errors). */
export function isConnectionError(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'string' && (CONNECTION_CODES.has(code) || code.startsWith('08'))) return true;
  return CONNECTION_MESSAGES.test(error.message);
}

/** The database could not write: SQLSTATE 53100 disk_full, or the OS said ENOSPC. */
export function isDiskFullError(error: unknown): boolean {
  if (error === null || typeof error !== 'object') return false;
  const { code, message, name, errno } = error as { code?: unknown; message?: unknown; name?: unknown; errno?: unknown };
  // PGlite's file system layer throws {name: 'ErrnoError', errno: 51}: Emscripten's ENOSPC.
  if (name === 'ErrnoError' && errno === 51) return true;
  return code === '53100' || code === 'ENOSPC' || (typeof message === 'string' && /No space left on device/i.test(message));
}

export interface HealthSnapshot {
  state: DatabaseState;
  /** When the state last changed away from ok. */
  since: string | null;
  /** Metered calls' records and settlements waiting for the database (see PendingWrites). */
  pending_writes: number;
}

/** The database's state and its transitions; one per server. */
export class DatabaseHealth {
  private current: DatabaseState = 'ok';
  private changedAt: Date | null = null;
  /** Last time a statement answered (ms epoch): a fresh one makes probing unnecessary. */
  lastOkAt = Date.now();
  private readonly listeners = new Set<(state: DatabaseState, previous: DatabaseState) => void>();
  /** Set by the pool: a bounded check of the database, run by `/healthz` when nothing answered lately. */
  probe: (() => Promise<void>) | undefined;
  pendingWrites: () => number = () => 0;

  get state(): DatabaseState {
    return this.current;
  }

  set(state: DatabaseState): void {
    if (state === this.current || this.current === 'failed') return;
    const previous = this.current;
    this.current = state;
    this.changedAt = state === 'ok' ? null : new Date();
    if (state === 'ok') this.lastOkAt = Date.now();
    for (const listener of this.listeners) listener(state, previous);
  }

  answered(): void {
    this.lastOkAt = Date.now();
  }

  onChange(listener: (state: DatabaseState, previous: DatabaseState) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * The state as `/healthz` reports it. When no statement answered in the last `freshMs`, a probe
   * runs first, waited for at most `boundMs`: a probe still running then means the database is
   * not answering, reported as unreachable without waiting longer.
   */
  async check(freshMs = 2000, boundMs = 1000): Promise<HealthSnapshot> {
    if (this.probe && (this.current !== 'ok' || Date.now() - this.lastOkAt > freshMs)) {
      let timer: NodeJS.Timeout | undefined;
      const bound = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), boundMs)));
      const outcome = await Promise.race([
        this.probe().then(
          () => 'done' as const,
          () => 'done' as const,
        ),
        bound,
      ]);
      clearTimeout(timer);
      if (outcome === 'late' && this.current === 'ok') return this.snapshot('unreachable');
    }
    return this.snapshot(this.current);
  }

  private snapshot(state: DatabaseState): HealthSnapshot {
    return {
      state,
      since: this.changedAt?.toISOString() ?? (state === 'ok' ? null : new Date().toISOString()),
      pending_writes: this.pendingWrites(),
    };
  }
}
