import { chmodSync, existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { Kysely, PostgresDialect, sql } from 'kysely';
import { DatabaseHealth, type DatabaseState } from './db-health.js';
import { guardedPostgresPool } from './pg-pool.js';
import { DEFAULT_DISK_RESERVE_BYTES, freeBytes, mib, StorageGuard } from './storage-guard.js';
import { MIGRATIONS } from './migrations.js';
import { pgliteNotifyListener, postgresNotifyListener, type NotifyListener } from './notify-listener.js';
import type { Database } from './schema.js';

export type Db = Kysely<Database>;

export interface DatabaseOptions {
  /** A real PostgreSQL (`postgres://…`); when absent, embedded PGlite in `dataDir`. */
  databaseUrl?: string | undefined;
  dataDir: string;
  /** Free space the embedded database keeps on the data dir's file system (default 64 MiB). */
  diskReserveBytes?: number | undefined;
  /** The embedded database's buffer cache, MB (default DEFAULT_EMBEDDED_CACHE_MB). */
  cacheMb?: number | undefined;
  /** Told when the database must not be used again (the embedded one failed a write for lack of space). */
  onFatal?: (message: string) => void;
  /** Told when the database's state changes (unreachable, storage full, back). */
  onStateChange?: (state: DatabaseState, previous: DatabaseState, detail: string) => void;
}

export interface OpenDatabase {
  db: Db;
  kind: 'pglite' | 'postgres';
  /** Reachability and storage state, for /healthz and for refusing requests early. */
  health: DatabaseHealth;
  /** LISTEN/NOTIFY on a connection of its own (every node hears every node's NOTIFY): catalog changes, cancels. */
  notifications: NotifyListener;
  close(): Promise<void>;
}

export async function openDatabase(options: DatabaseOptions): Promise<OpenDatabase> {
  let dialect: PostgresDialect;
  let kind: OpenDatabase['kind'];
  const health = new DatabaseHealth();
  let stopGuard: () => void;
  let notifications: NotifyListener;
  if (options.databaseUrl) {
    kind = 'postgres';
    const guarded = guardedPostgresPool(options.databaseUrl, health);
    stopGuard = guarded.stop;
    if (options.onStateChange) health.onChange((state, previous) => options.onStateChange!(state, previous, ''));
    dialect = new PostgresDialect({ pool: guarded.pool });
    notifications = postgresNotifyListener(options.databaseUrl, health);
  } else {
    kind = 'pglite';
    const dir = path.join(options.dataDir, 'pglite');
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    chmodSync(dir, 0o700);
    const reserve = options.diskReserveBytes ?? DEFAULT_DISK_RESERVE_BYTES;
    const storage = new StorageGuard(dir, reserve, health);
    if (options.onStateChange)
      health.onChange((state, previous) => options.onStateChange!(state, previous, `${mib(storage.free)} free, reserve ${mib(reserve)}`));
    // Opening (and recovering) writes too: on a file system below the reserve, say so and stop here.
    const free = freeBytes(dir);
    if (free < reserve) {
      throw new Error(
        `not enough free space for the embedded database: ${mib(free)} free on the file system of ${dir}, below the reserve of ${mib(reserve)}; free space (or lower MCPWORKS_DISK_RESERVE_MB) and start again`,
      );
    }
    const [{ EmbeddedThread }, { PGlitePool }, { createEmbeddedDatabase, CreateFailed }] = await Promise.all([
      import('./pglite-thread.js'),
      import('./pglite-pool.js'),
      import('./pglite-create.js'),
    ]);
    const cannotOpen = (error: unknown) => new Error(`could not open the embedded database in ${dir}: ${describeError(error)}`);
    // A new data dir is made in a process that exits after (pglite-create.ts): the server's holds only what serving needs.
    if (!existsSync(path.join(dir, 'PG_VERSION'))) {
      try {
        await createEmbeddedDatabase({ dir, cacheMb: options.cacheMb, reserveBytes: reserve });
      } catch (error) {
        if (!(error instanceof CreateFailed)) throw error;
        throw error.stage === 'migrate' ? error.reason : cannotOpen(error.reason);
      }
    }
    let embedded;
    try {
      embedded = await EmbeddedThread.open(dir, options.cacheMb);
    } catch (error) {
      throw cannotOpen(error);
    }
    storage.start();
    stopGuard = () => storage.stop();
    const pool = new PGlitePool(embedded, { health, storage, onFatal: options.onFatal ?? (() => undefined) });
    dialect = new PostgresDialect({ pool });
    notifications = pgliteNotifyListener(embedded, () => pool.connect());
  }
  const db = new Kysely<Database>({ dialect });
  try {
    await migrate(db);
  } catch (error) {
    stopGuard();
    await notifications.close();
    await db.destroy().catch(() => undefined);
    throw error;
  }
  // The embedded database's own upkeep (PostgreSQL has its own).
  const stopMaintenance = kind === 'postgres' ? async () => undefined : startMaintenance(db, health);
  return {
    db,
    kind,
    health,
    notifications,
    close: async () => {
      await notifications.close();
      stopGuard();
      await stopMaintenance();
      await db.destroy();
    },
  };
}

/** Emscripten's errno values (not Linux's) for the failures an operator can act on. */
const EMSCRIPTEN_ERRNO: Record<number, string> = {
  2: 'permission denied (EACCES)',
  19: 'disk quota exceeded (EDQUOT)',
  29: 'input/output error (EIO)',
  44: 'no such file or directory (ENOENT)',
  51: 'no space left on device (ENOSPC)',
  69: 'read-only file system (EROFS)',
};

/**
 * A thrown value's message, whatever was thrown: libraries (PGlite's WASM among them) sometimes
 * throw plain objects, which String() renders as `[object Object]`.
 */
export function describeError(error: unknown): string {
  if (error instanceof Error && error.message) return error.message;
  if (error !== null && typeof error === 'object') {
    const { message, code, name, errno } = error as { message?: unknown; code?: unknown; name?: unknown; errno?: unknown };
    // PGlite's file system layer throws {name: 'ErrnoError', errno} with Emscripten's numbers.
    if (name === 'ErrnoError' && typeof errno === 'number') return EMSCRIPTEN_ERRNO[errno] ?? `file system error (errno ${errno})`;
    if (typeof message === 'string' && message) return typeof code === 'string' ? `${message} (${code})` : message;
    try {
      return JSON.stringify(error);
    } catch {
      return Object.prototype.toString.call(error);
    }
  }
  return String(error);
}

/** How often the embedded database is checked for tables that need vacuuming. */
const MAINTENANCE_INTERVAL_MS = 10_000;

/**
 * PGlite runs no autovacuum. Without it, every row a metered call inserts and deletes again (its
 * concurrency slot) stays behind as a dead tuple and index entry, so each admission scans more of
 * them: after 15,000 calls an admission took twice as long. This does autovacuum's job on the
 * same rules, between requests: a table is vacuumed (and analysed) once its dead tuples pass
 * 50 + 20% of its live ones, and the whole database before its transaction ids get old enough to
 * wrap around.
 */
function startMaintenance(db: Db, health: DatabaseHealth): () => Promise<void> {
  let running: Promise<void> | undefined;
  const timer = setInterval(() => {
    // Vacuuming writes: not on a disk below its reserve.
    if (health.state !== 'ok') return;
    running ??= maintain(db)
      .then(
        () => undefined,
        () => undefined,
      )
      .finally(() => (running = undefined));
  }, MAINTENANCE_INTERVAL_MS);
  timer.unref();
  return async () => {
    clearInterval(timer);
    await running;
  };
}

// autovacuum_vacuum_threshold, autovacuum_vacuum_scale_factor and vacuum_freeze_table_age defaults.
const VACUUM_THRESHOLD = 50;
const VACUUM_SCALE = 0.2;
const FREEZE_AGE = 150_000_000;

/** One maintenance pass (exported for tests): the tables it vacuumed, `*` for the whole database. */
export async function maintain(db: Db): Promise<string[]> {
  const done: string[] = [];
  const age = await sql<{ age: number }>`SELECT age(datfrozenxid)::int AS age FROM pg_database WHERE datname = current_database()`.execute(
    db,
  );
  if (Number(age.rows[0]?.age ?? 0) > FREEZE_AGE) {
    await sql`VACUUM`.execute(db);
    return ['*'];
  }
  const tables = await sql<{ relname: string; live: number; dead: number }>`
    SELECT relname, n_live_tup::float8 AS live, n_dead_tup::float8 AS dead FROM pg_stat_user_tables WHERE schemaname = 'public'`.execute(
    db,
  );
  for (const table of tables.rows) {
    if (Number(table.dead) <= VACUUM_THRESHOLD + VACUUM_SCALE * Number(table.live)) continue;
    await sql`VACUUM (ANALYZE) ${sql.id(table.relname)}`.execute(db);
    done.push(table.relname);
  }
  return done;
}

// Several nodes may start at once against one PostgreSQL: an advisory lock serialises migrating.
const MIGRATION_LOCK_KEY = 727_001;

export async function migrate(db: Db): Promise<number[]> {
  const applied: number[] = [];
  await db.transaction().execute(async (trx) => {
    await sql`SELECT pg_advisory_xact_lock(${MIGRATION_LOCK_KEY})`.execute(trx);
    await sql`CREATE TABLE IF NOT EXISTS schema_migrations (
      version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())`.execute(trx);
    const rows = await trx.selectFrom('schema_migrations').select('version').execute();
    const done = new Set(rows.map((r) => r.version));
    for (const migration of MIGRATIONS) {
      if (done.has(migration.version)) continue;
      for (const statement of migration.statements) await sql.raw(statement).execute(trx);
      await trx.insertInto('schema_migrations').values({ version: migration.version, name: migration.name }).execute();
      applied.push(migration.version);
    }
  });
  return applied;
}
