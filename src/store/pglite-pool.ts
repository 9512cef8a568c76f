import type { PGlite, Results } from '@electric-sql/pglite';
import type { PostgresPool, PostgresPoolClient, PostgresQueryResult } from 'kysely';

/**
 * Presents one embedded PGlite instance as the `pg`-style pool Kysely's PostgresDialect expects.
 * PGlite is a single connection, so a checkout holds a mutex until release: a transaction
 * therefore owns the database exclusively, exactly as it would own a pooled connection.
 */
export class PGlitePool implements PostgresPool {
  private queue: Promise<void> = Promise.resolve();

  constructor(private readonly db: PGlite) {}

  async connect(): Promise<PostgresPoolClient> {
    let release!: () => void;
    const turn = new Promise<void>((resolve) => (release = resolve));
    const previous = this.queue;
    this.queue = previous.then(() => turn);
    await previous;
    const db = this.db;
    let released = false;
    const client = {
      async query<R>(sql: string, parameters: ReadonlyArray<unknown>): Promise<PostgresQueryResult<R>> {
        // PGlite's query() is the extended protocol: parse, describe, bind, describe, execute and
        // sync, each a pass through the WASM backend. A statement without parameters (BEGIN,
        // COMMIT, a migration's DDL) needs none of that: the simple protocol is one query and a sync.
        const result = parameters.length === 0 ? lastOf(await db.exec(sql)) : await db.query<R>(sql, parameters as unknown[]);
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

  async end(): Promise<void> {
    await this.queue;
    await this.db.close();
  }
}

/** exec() answers one result per statement; Kysely sends one statement, so its result is the last. */
function lastOf(results: Results[]): Results {
  return results[results.length - 1] ?? { rows: [], fields: [] };
}
