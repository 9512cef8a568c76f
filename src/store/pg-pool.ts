import pg from 'pg';
import type { PostgresPool, PostgresPoolClient } from 'kysely';
import { hotStatementName } from './hot-statements.js';
import { DatabaseUnavailableError, isConnectionError, isDiskFullError, storageFullError, type DatabaseHealth } from './db-health.js';

/** Probes while the database is unreachable: how often, and how long one may take. */
const PROBE_INTERVAL_MS = 1000;
const PROBE_TIMEOUT_MS = 2000;
/** A connection attempt that hangs (a black-holed network) fails after this. */
const CONNECT_TIMEOUT_MS = 5000;
/**
 * A statement unanswered this long has the database probed (on a connection of its own): a
 * database that stopped answering without closing its connections (a black-holed network, a host
 * frozen, postgres stopped with SIGSTOP) is found in seconds, not when TCP keepalive gives up, and
 * every statement waiting on it fails at once (503). A slow but answering database is left alone.
 */
const QUERY_SUSPECT_MS = 2000;
/** SQLSTATE of "cached plan must not change result type" (feature_not_supported). */
const CACHED_PLAN_CHANGED = '0A000';
/** Closing the pool waits this long for checked-out clients at most. */
const CLOSE_TIMEOUT_MS = 5000;

/**
 * A `pg` pool for Kysely that survives the database going away: every connection has an `error`
 * listener (an unhandled one on a checked-out client killed the process), connection failures
 * become DatabaseUnavailableError (503), and while the database is known to be unreachable new
 * checkouts are refused at once rather than each waiting on a dead server. A probe on a connection
 * of its own (never a pool slot, which load may hold) finds the database again, every second.
 */
export function guardedPostgresPool(
  connectionString: string,
  health: DatabaseHealth,
  options: { connectTimeoutMs?: number } = {},
): { pool: PostgresPool; stop(): void } {
  // TCP keepalive: a peer lost without a reset (a black-holed network) fails its connections in
  // minutes rather than never.
  const pool = new pg.Pool({
    connectionString,
    max: 10,
    connectionTimeoutMillis: options.connectTimeoutMs ?? CONNECT_TIMEOUT_MS,
    keepAlive: true,
    keepAliveInitialDelayMillis: 10_000,
  });
  // An idle connection dropped by the server: pg-pool removes it; the next checkout reconnects.
  pool.on('error', () => undefined);
  // A checked-out connection's error rejects its query (seen below); without a listener it would be thrown.
  pool.on('connect', (client) => client.on('error', () => undefined));

  let probing: Promise<void> | undefined;
  const probe = (): Promise<void> =>
    (probing ??= (async () => {
      const client = new pg.Client({ connectionString, connectionTimeoutMillis: PROBE_TIMEOUT_MS, query_timeout: PROBE_TIMEOUT_MS });
      client.on('error', () => undefined);
      try {
        await client.connect();
        await client.query('SELECT 1');
        health.set('ok');
      } catch {
        health.set('unreachable');
      } finally {
        client.end().catch(() => undefined);
      }
    })().finally(() => (probing = undefined)));
  health.probe = probe;

  // Connections with a statement in flight: cut when the database is found unreachable, so their
  // statements fail now (a black hole would hold them until keepalive gives up).
  const waiting = new Set<pg.PoolClient>();
  const cut = (client: pg.PoolClient) =>
    (client as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream?.destroy();

  // Checkouts not yet given a connection: refused when the database is found unreachable. Otherwise
  // one queued behind connections held by hung statements, or opening a connection to a black hole,
  // waited the whole connect timeout (5 s) after the database was known gone, for a 503 it could
  // have had at once (seen as a flaky outage test once per-second background loops held connections).
  const checkouts = new Set<(error: Error) => void>();

  let timer: NodeJS.Timeout | undefined;
  const unsubscribe = health.onChange((state) => {
    if (state === 'unreachable') for (const client of waiting) cut(client);
    if (state === 'unreachable') for (const refuse of [...checkouts]) refuse(new DatabaseUnavailableError(false));
    if (state === 'unreachable' && !timer) {
      timer = setInterval(() => void probe(), PROBE_INTERVAL_MS);
      timer.unref();
    } else if (state !== 'unreachable' && timer) {
      clearInterval(timer);
      timer = undefined;
    }
  });

  /** A connection-level failure: refuse with 503 and let a probe decide whether the database is gone. */
  const failed = (error: unknown, ambiguous: boolean): unknown => {
    // PostgreSQL out of disk refuses the statement and stays up: the same answer as the embedded database's.
    if (isDiskFullError(error)) return storageFullError();
    if (!isConnectionError(error)) return error;
    void probe();
    return new DatabaseUnavailableError(ambiguous);
  };

  // Connections holding a hot statement PostgreSQL refuses as prepared (see query): destroyed at release.
  const stale = new WeakSet<pg.PoolClient>();
  // One wrapper per pg client: Kysely keeps a connection object per client it is given.
  const wrappers = new WeakMap<pg.PoolClient, PostgresPoolClient>();
  const wrap = (client: pg.PoolClient): PostgresPoolClient => {
    let wrapper = wrappers.get(client);
    if (!wrapper) {
      wrapper = {
        async query(sql: string, parameters: ReadonlyArray<unknown>) {
          // Known to be away (found while this connection was checked out): fail now.
          if (health.state === 'unreachable') {
            cut(client);
            throw new DatabaseUnavailableError(false);
          }
          waiting.add(client);
          const suspect = setTimeout(() => void probe(), QUERY_SUSPECT_MS);
          suspect.unref();
          // A hot statement (hot-statements.ts) is parsed and planned once per connection, under its name.
          const name = hotStatementName(sql);
          try {
            const result = await (name
              ? client.query({ name, text: sql, values: parameters as unknown[] })
              : client.query(sql, parameters as unknown[]));
            health.answered();
            return result;
          } catch (error) {
            // A hot statement whose result type changed under it (another node's migration): PostgreSQL
            // refuses it on this connection for good; the connection goes at its release, the next one prepares it afresh.
            if (name && (error as { code?: unknown } | null)?.code === CACHED_PLAN_CHANGED) stale.add(client);
            throw failed(error, true);
          } finally {
            clearTimeout(suspect);
            waiting.delete(client);
          }
        },
        release(destroy?: boolean) {
          client.release(destroy || stale.delete(client));
        },
      } as unknown as PostgresPoolClient;
      wrappers.set(client, wrapper);
    }
    return wrapper;
  };

  /** pool.connect(), refused early when the database is found unreachable meanwhile; a connection it gets after that goes back to the pool. */
  const checkout = () =>
    new Promise<pg.PoolClient>((resolve, reject) => {
      let settled = false;
      // A checkout this slow (the pool full of hung statements, or a connection attempt unanswered) has the database probed.
      const suspect = setTimeout(() => void probe(), QUERY_SUSPECT_MS);
      suspect.unref();
      const settle = () => {
        settled = true;
        clearTimeout(suspect);
        checkouts.delete(refuse);
      };
      const refuse = (error: unknown) => {
        if (settled) return;
        settle();
        reject(error);
      };
      checkouts.add(refuse);
      pool.connect().then((client) => {
        if (settled) return client.release();
        settle();
        resolve(client);
      }, refuse);
    });

  const guarded: PostgresPool = {
    async connect() {
      if (health.state === 'unreachable') throw new DatabaseUnavailableError(false);
      try {
        return wrap(await checkout());
      } catch (error) {
        throw failed(error, false);
      }
    },
    // Bounded: clients stuck on an unreachable server must not hold shutdown forever.
    end: () => Promise.race([pool.end(), new Promise<void>((resolve) => setTimeout(resolve, CLOSE_TIMEOUT_MS).unref())]),
  };
  return {
    pool: guarded,
    stop() {
      unsubscribe();
      if (timer) clearInterval(timer);
      timer = undefined;
    },
  };
}
