import { CompiledQuery, type QueryResult } from 'kysely';
import type { Db } from './database.js';

/**
 * A statement every metered call runs (its admission, its settlement and record): its text is
 * fixed, so no query builder builds and compiles it per call, and on PostgreSQL it is prepared
 * once per connection under its name (pg-pool.ts), not parsed and planned per call. The embedded
 * database's thread prepares every statement with parameters by its text already (pglite-worker.ts).
 */
export interface HotStatement {
  readonly name: string;
  readonly text: string;
}

/** Each hot statement's name by its text: how the `pg` pool tells one apart (Kysely passes only the text on). */
const names = new Map<string, string>();

/** Declares a hot statement; a name is one text for good (a connection keeps what it prepared under it). */
export function hotStatement(name: string, text: string): HotStatement {
  for (const [known, knownName] of names) {
    if (knownName === name && known !== text) throw new Error(`hot statement ${name} declared with two texts`);
  }
  names.set(text, name);
  return { name, text };
}

/** The prepared statement's name for a statement's text, when it is a hot statement. */
export function hotStatementName(text: string): string | undefined {
  return names.get(text);
}

/** Runs a hot statement on `db` (or a transaction) with its parameters in order ($1, $2, …). */
export function runHot<R>(db: Db, statement: HotStatement, parameters: readonly unknown[]): Promise<QueryResult<R>> {
  return db.executeQuery<R>(CompiledQuery.raw(statement.text, [...parameters]));
}
