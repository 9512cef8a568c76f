import { chmodSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import { MIGRATIONS } from './migrations.js';
import type { Database } from './schema.js';

export type Db = Kysely<Database>;

export interface DatabaseOptions {
  /** A real PostgreSQL (`postgres://…`); when absent, embedded PGlite in `dataDir`. */
  databaseUrl?: string | undefined;
  dataDir: string;
}

export interface OpenDatabase {
  db: Db;
  kind: 'pglite' | 'postgres';
  close(): Promise<void>;
}

export async function openDatabase(options: DatabaseOptions): Promise<OpenDatabase> {
  let dialect: PostgresDialect;
  let kind: OpenDatabase['kind'];
  if (options.databaseUrl) {
    kind = 'postgres';
    const pool = new pg.Pool({ connectionString: options.databaseUrl, max: 10 });
    // A dropped idle connection must not crash the process; pg reconnects on next checkout.
    pool.on('error', () => undefined);
    dialect = new PostgresDialect({ pool });
  } else {
    kind = 'pglite';
    const dir = path.join(options.dataDir, 'pglite');
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    chmodSync(dir, 0o700);
    const [{ PGlite }, { PGlitePool }] = await Promise.all([import('@electric-sql/pglite'), import('./pglite-pool.js')]);
    const embedded = await PGlite.create(dir);
    dialect = new PostgresDialect({ pool: new PGlitePool(embedded) });
  }
  const db = new Kysely<Database>({ dialect });
  try {
    await migrate(db);
  } catch (error) {
    await db.destroy();
    throw error;
  }
  if (kind === 'postgres') return { db, kind, close: () => db.destroy() };
  const stopMaintenance = startMaintenance(db);
  return {
    db,
    kind,
    close: async () => {
      await stopMaintenance();
      await db.destroy();
    },
  };
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
function startMaintenance(db: Db): () => Promise<void> {
  let running: Promise<void> | undefined;
  const timer = setInterval(() => {
    running ??= maintain(db)
      .then(() => undefined, () => undefined)
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
  const age = await sql<{ age: number }>`SELECT age(datfrozenxid)::int AS age FROM pg_database WHERE datname = current_database()`.execute(db);
  if (Number(age.rows[0]?.age ?? 0) > FREEZE_AGE) {
    await sql`VACUUM`.execute(db);
    return ['*'];
  }
  const tables = await sql<{ relname: string; live: number; dead: number }>`
    SELECT relname, n_live_tup::float8 AS live, n_dead_tup::float8 AS dead FROM pg_stat_user_tables WHERE schemaname = 'public'`.execute(db);
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
