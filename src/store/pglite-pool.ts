import type { PostgresPool, PostgresPoolClient, PostgresQueryResult } from 'kysely';
import { DatabaseUnavailableError, isDiskFullError, storageFullError, type DatabaseHealth } from './db-health.js';
import type { EmbeddedResult, EmbeddedThread } from './pglite-thread.js';
import type { StorageGuard } from './storage-guard.js';

export interface PGliteGuards {
  health: DatabaseHealth;
  storage: StorageGuard;
  /** The embedded database failed a write for lack of space and must not be touched again: stop the server. */
  onFatal: (message: string) => void;
}

/**
 * Presents one embedded PGlite instance (on its own thread: pglite-thread.ts) as the `pg`-style
 * pool Kysely's PostgresDialect expects.
 * PGlite is a single connection, so a checkout holds a mutex until release: a transaction
 * therefore owns the database exclusively, exactly as it would own a pooled connection.
 * With guards, each checkout first looks at free space: below the reserve the session is made
 * read-only (writes fail with storage_full, reads go on); a disk-full error that gets through
 * anyway poisons the pool, since PGlite's next statement would spin forever.
 */
export class PGlitePool implements PostgresPool {
  private queue: Promise<void> = Promise.resolve();
  private readOnly = false;
  private poisoned = false;

  constructor(
    private readonly db: EmbeddedThread,
    private readonly guards?: PGliteGuards,
  ) {}

  async connect(): Promise<PostgresPoolClient> {
    let release!: () => void;
    const turn = new Promise<void>((resolve) => (release = resolve));
    const previous = this.queue;
    this.queue = previous.then(() => turn);
    await previous;
    if (this.guards) {
      try {
        if (this.poisoned) throw new DatabaseUnavailableError(false);
        const readOnly = this.guards.storage.check();
        if (readOnly !== this.readOnly) {
          // Session-wide: every later transaction is read-only, so any write (a function that
          // inserts included) fails with SQLSTATE 25006 and nothing reaches the disk.
          await this.db.query(`SET default_transaction_read_only = ${readOnly ? 'on' : 'off'}`, []);
          this.readOnly = readOnly;
        }
      } catch (error) {
        release();
        throw error;
      }
    }
    const pool = this;
    let released = false;
    // A client object per checkout (Kysely keys its connection state, a discarded flag included, by it).
    const client = {
      async query<R>(sql: string, parameters: ReadonlyArray<unknown>): Promise<PostgresQueryResult<R>> {
        if (pool.poisoned) throw new DatabaseUnavailableError(false);
        let result: EmbeddedResult;
        try {
          result = await pool.db.query(sql, parameters);
        } catch (error) {
          throw pool.failed(error);
        }
        pool.guards?.health.answered();
        const command = (sql.trimStart().split(/\s+/, 1)[0] ?? '').toUpperCase() as PostgresQueryResult<R>['command'];
        return { command, rowCount: result.affectedRows ?? result.rows.length, rows: result.rows as R[] };
      },
      release(): void {
        if (!released) {
          released = true;
          release();
        }
      },
    };
    return client as unknown as PostgresPoolClient;
  }

  /** A statement's error as the caller should see it. */
  private failed(error: unknown): unknown {
    if (!this.guards) return error;
    if (isDiskFullError(error)) {
      this.poisoned = true;
      this.guards.health.set('failed');
      this.guards.onFatal(
        `the embedded database could not write (${error instanceof Error ? error.message : 'no space left on device'}): the disk filled faster than the free-space reserve (MCPWORKS_DISK_RESERVE_MB) could catch; stopping the server to protect the database. Free space in ${this.guards.storage.dir} (or raise the reserve) and start it again.`,
      );
      return storageFullError();
    }
    if ((error as { code?: unknown } | null)?.code === '25006' && this.readOnly) return storageFullError();
    return error;
  }

  async end(): Promise<void> {
    await this.queue;
    // A poisoned PGlite would spin in close() too: its thread is stopped without it (its files stay
    // as PostgreSQL left them; the next start runs its crash recovery, as after a kill -9).
    if (this.poisoned) return this.db.terminate();
    await this.db.close();
  }
}
