import { parse, protocol, type PGlite, type Results } from '@electric-sql/pglite';
import type { PostgresPool, PostgresPoolClient, PostgresQueryResult } from 'kysely';
import { DatabaseUnavailableError, isDiskFullError, storageFullError, type DatabaseHealth } from './db-health.js';
import type { StorageGuard } from './storage-guard.js';

/** Named statements kept prepared in the embedded backend (least recently used ones are closed). */
const MAX_PREPARED = 256;

export interface PGliteGuards {
  health: DatabaseHealth;
  storage: StorageGuard;
  /** The embedded database failed a write for lack of space and must not be touched again: stop the server. */
  onFatal: (message: string) => void;
}

/**
 * Presents one embedded PGlite instance as the `pg`-style pool Kysely's PostgresDialect expects.
 * PGlite is a single connection, so a checkout holds a mutex until release: a transaction
 * therefore owns the database exclusively, exactly as it would own a pooled connection.
 * With guards, each checkout first looks at free space: below the reserve the session is made
 * read-only (writes fail with storage_full, reads go on); a disk-full error that gets through
 * anyway poisons the pool, since PGlite's next statement would spin forever.
 */
export class PGlitePool implements PostgresPool {
  private queue: Promise<void> = Promise.resolve();
  private readonly statements: PreparedStatements;
  private readOnly = false;
  private poisoned = false;

  constructor(
    private readonly db: PGlite,
    private readonly guards?: PGliteGuards,
  ) {
    this.statements = new PreparedStatements(db);
  }

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
          await this.db.exec(`SET default_transaction_read_only = ${readOnly ? 'on' : 'off'}`);
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
        let result: Results;
        try {
          // A statement without parameters (BEGIN, COMMIT, a migration's DDL) takes the simple
          // protocol: one query and a sync. One with parameters runs as a named prepared statement.
          result = parameters.length === 0 ? lastOf(await pool.db.exec(sql)) : await pool.statements.run(sql, parameters);
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
    // A poisoned PGlite would spin in close() too; the process exits without it (its files stay
    // as PostgreSQL left them; the next start runs its crash recovery, as after a kill -9).
    if (this.poisoned) return;
    await this.db.close();
  }
}

/** exec() answers one result per statement; Kysely sends one statement, so its result is the last. */
function lastOf(results: Results[]): Results {
  return results[results.length - 1] ?? { rows: [], fields: [] };
}

/**
 * Kysely's statements as named prepared statements of the one embedded backend, keyed by their
 * text. PGlite's query() parses and plans a statement on every call, in six passes through the
 * WASM backend (parse, describe, bind, describe, execute, sync); planning is most of a small
 * query's cost. Here a statement is parsed once (its parameter types learned from a describe),
 * and each run is bind, describe, execute and sync in one pass: PostgreSQL reuses the plan
 * (a generic plan after five runs, as for any prepared statement, re-planned when a table it
 * reads changes). Values are serialised and rows parsed with the instance's own serializers and
 * parsers, as query() does. The caller (the pool's checkout) runs one statement at a time.
 */
class PreparedStatements {
  private readonly prepared = new Map<string, { name: string; types: number[] }>();
  private counter = 0;

  constructor(private readonly db: PGlite) {}

  run(text: string, parameters: ReadonlyArray<unknown>): Promise<Results> {
    return this.db.runExclusive(async () => {
      const statement = this.prepared.get(text) ?? (await this.prepare(text));
      // Least recently used last out: a hit moves to the end.
      this.prepared.delete(text);
      this.prepared.set(text, statement);
      const values = parameters.map((value, index) => {
        if (value === null || value === undefined) return null;
        const serializer = this.db.serializers[statement.types[index]!];
        return serializer ? serializer(value) : String(value);
      });
      let messages;
      try {
        messages = await this.db.execProtocolStream(
          concat([
            protocol.serialize.bind({ statement: statement.name, values }),
            protocol.serialize.describe({ type: 'P' }),
            protocol.serialize.execute({}),
            protocol.serialize.sync(),
          ]),
          { syncToFs: false },
        );
      } catch (error) {
        // A table changed under the statement in a way its plan cannot follow: prepare it afresh next time.
        if (/cached plan must not change result type/.test(String((error as Error).message))) this.forget(text);
        throw error;
      }
      await this.db.syncToFs();
      return parse.parseResults(messages, this.db.parsers)[0] ?? { rows: [], fields: [] };
    });
  }

  private async prepare(text: string): Promise<{ name: string; types: number[] }> {
    const parts: Uint8Array[] = [];
    if (this.prepared.size >= MAX_PREPARED) {
      const [oldest, evicted] = this.prepared.entries().next().value as [string, { name: string }];
      this.prepared.delete(oldest);
      parts.push(protocol.serialize.close({ type: 'S', name: evicted.name }));
    }
    const name = `mcpworks_${++this.counter}`;
    parts.push(protocol.serialize.parse({ name, text }), protocol.serialize.describe({ type: 'S', name }), protocol.serialize.sync());
    const messages = await this.db.execProtocolStream(concat(parts), { syncToFs: false });
    const statement = { name, types: parse.parseDescribeStatementResults(messages) };
    this.prepared.set(text, statement);
    return statement;
  }

  private forget(text: string): void {
    const statement = this.prepared.get(text);
    if (!statement) return;
    this.prepared.delete(text);
    // Best effort: a statement left behind only costs its memory.
    void this.db
      .execProtocolStream(concat([protocol.serialize.close({ type: 'S', name: statement.name }), protocol.serialize.sync()]), {
        syncToFs: false,
      })
      .catch(() => undefined);
  }
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((length, part) => length + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}
