/**
 * The embedded database's own thread (see pglite-thread.ts): PGlite runs PostgreSQL compiled to
 * WASM synchronously on the thread that calls it, so on the server's main thread every statement
 * of every request held the event loop (a metered call's three statements took about 5 ms of it).
 * Here it holds only this thread. Messages come from EmbeddedThread, one reply per request.
 */
import { writeFileSync } from 'node:fs';
import { getPriority, setPriority } from 'node:os';
import { parentPort, workerData } from 'node:worker_threads';
import { parse, PGlite, protocol, type Results } from '@electric-sql/pglite';
import { toWire, type BackendReply, type BackendRequest, type EmbeddedThreadData } from './pglite-thread.js';

/** Named statements kept prepared in the embedded backend (least recently used ones are closed). */
const MAX_PREPARED = 256;

type BackendMessage = Parameters<typeof parse.parseResults>[0][number];

interface Prepared {
  name: string;
  /** The parameters' type oids. */
  types: number[];
  /** The statement's RowDescription message; none for a statement without rows. */
  rowDescription: BackendMessage | undefined;
}

/**
 * Kysely's statements as named prepared statements of the one embedded backend, keyed by their
 * text. PGlite's query() parses and plans a statement on every call, in six passes through the
 * WASM backend (parse, describe, bind, describe, execute, sync); planning is most of a small
 * query's cost. Here a statement is parsed once (its parameter types and row description learned
 * from a describe), and each run is bind, execute and sync in one pass, its rows read with the
 * row description kept (a result that would no longer fit it is PostgreSQL's error below, not a
 * silent change): PostgreSQL reuses the plan
 * (a generic plan after five runs, as for any prepared statement, re-planned when a table it
 * reads changes). Values are serialised and rows parsed with the instance's own serializers and
 * parsers, as query() does. The pool's checkout runs one statement at a time.
 */
class PreparedStatements {
  private readonly prepared = new Map<string, Prepared>();
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
      return (
        parse.parseResults(statement.rowDescription ? [statement.rowDescription, ...messages] : messages, this.db.parsers)[0] ?? {
          rows: [],
          fields: [],
        }
      );
    });
  }

  private async prepare(text: string): Promise<Prepared> {
    const parts: Uint8Array[] = [];
    if (this.prepared.size >= MAX_PREPARED) {
      const [oldest, evicted] = this.prepared.entries().next().value as [string, { name: string }];
      this.prepared.delete(oldest);
      parts.push(protocol.serialize.close({ type: 'S', name: evicted.name }));
    }
    const name = `mcpworks_${++this.counter}`;
    parts.push(protocol.serialize.parse({ name, text }), protocol.serialize.describe({ type: 'S', name }), protocol.serialize.sync());
    const messages = await this.db.execProtocolStream(concat(parts), { syncToFs: false });
    const statement = {
      name,
      types: parse.parseDescribeStatementResults(messages),
      rowDescription: messages.find((message) => message.name === 'rowDescription'),
    };
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

/** How much nicer than the thread that started it (the server's main thread) the database thread runs. */
const DATABASE_THREAD_NICER = 5;
try {
  // On Linux the nice value is per thread: this lowers this thread only. Waking it for each
  // statement then does not preempt the event loop that posted the statement (at the server's
  // own priority it did, on a busy machine), and it stays above the scan and schema workers (10
  // nicer). Relative to the nice it started with (the server's): at an absolute 5, a server started
  // at nice 5 had its database level with its event loop.
  setPriority(Math.min(19, getPriority() + DATABASE_THREAD_NICER));
} catch {
  // Not permitted here: the database still runs off the main thread.
}
try {
  // A name of its own in `top -H` and /proc/PID/task/*/comm (Node names every thread `node`): what
  // takes the cores is then seen per thread (bench/abuse --threads).
  writeFileSync('/proc/thread-self/comm', 'mcpw-pglite');
} catch {
  // Not Linux: the name only helps an operator's tools.
}

const port = parentPort!;
const post = (reply: BackendReply) => port.postMessage(reply);

const { dir, cacheMb } = workerData as EmbeddedThreadData;
let db: PGlite;
try {
  db = await PGlite.create(dir, {
    // PostgreSQL's shared_buffers is zeroed in WASM memory at every open, so all of it is resident
    // from the start (128 MB by default, from initdb's postgresql.conf): the cache is sized here.
    startParams: [...PGlite.defaultStartParams, '-c', `shared_buffers=${cacheMb}MB`],
  });
} catch (error) {
  post({ id: 0, error: toWire(error) });
  // The thread ends with nothing open; the main side reports the failure.
  process.exit(0);
}
const statements = new PreparedStatements(db);
post({ id: 0, ok: true });

port.on('message', (request: BackendRequest) => {
  void (async () => {
    try {
      switch (request.op) {
        case 'query': {
          // A statement without parameters (BEGIN, COMMIT, a migration's DDL, SET) takes the simple
          // protocol: one query and a sync. One with parameters runs as a named prepared statement.
          const result =
            request.parameters.length === 0
              ? ((await db.exec(request.sql)).at(-1) ?? { rows: [], fields: [] })
              : await statements.run(request.sql, request.parameters);
          post({ id: request.id, rows: result.rows, affectedRows: result.affectedRows });
          return;
        }
        case 'listen':
          await db.listen(request.channel, (payload) => post({ id: -1, channel: request.channel, payload }));
          post({ id: request.id, ok: true });
          return;
        case 'close':
          await db.close();
          post({ id: request.id, ok: true });
          return;
      }
    } catch (error) {
      post({ id: request.id, error: toWire(error) });
    }
  })();
});
