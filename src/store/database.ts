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
  return { db, kind, close: () => db.destroy() };
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
