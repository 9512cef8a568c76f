import pg from 'pg';
import { sql, type Kysely } from 'kysely';
import type { PGlite } from '@electric-sql/pglite';
import type { Database } from './schema.js';

/**
 * LISTEN on a channel: `onPayload` gets each NOTIFY's payload, `onConnected` runs each time the
 * listener is (re)connected (notifications sent while it was away are lost: look at the state
 * they were about). Answers the function that stops listening.
 */
export type Listen = (channel: string, onPayload: (payload: string) => void, onConnected?: () => void) => Promise<() => Promise<void>>;

/** A lost listening connection is tried again after this. */
const RECONNECT_MS = 1000;
const CONNECT_TIMEOUT_MS = 5000;

function checkChannel(channel: string): void {
  // Channels are ours, never a client's; checked because LISTEN takes no parameter.
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(channel)) throw new Error(`invalid channel name ${JSON.stringify(channel)}`);
}

/** On PostgreSQL: a connection of its own (never a pool slot), reconnected while the database is away. */
export function postgresListen(connectionString: string): Listen {
  return async (channel, onPayload, onConnected) => {
    checkChannel(channel);
    let stopped = false;
    let client: pg.Client | undefined;
    let timer: NodeJS.Timeout | undefined;
    const schedule = () => {
      if (stopped || timer) return;
      timer = setTimeout(() => {
        timer = undefined;
        void connect();
      }, RECONNECT_MS);
      timer.unref();
    };
    const connect = async (): Promise<void> => {
      if (stopped) return;
      const candidate = new pg.Client({ connectionString, connectionTimeoutMillis: CONNECT_TIMEOUT_MS, keepAlive: true, keepAliveInitialDelayMillis: 10_000 });
      candidate.on('error', () => undefined);
      candidate.on('notification', (message) => {
        if (message.channel === channel) onPayload(message.payload ?? '');
      });
      candidate.on('end', () => {
        if (client !== candidate) return;
        client = undefined;
        schedule();
      });
      try {
        await candidate.connect();
        await candidate.query(`LISTEN ${channel}`);
      } catch {
        candidate.end().catch(() => undefined);
        schedule();
        return;
      }
      if (stopped) {
        await candidate.end().catch(() => undefined);
        return;
      }
      client = candidate;
      onConnected?.();
    };
    await connect();
    return async () => {
      stopped = true;
      clearTimeout(timer);
      const current = client;
      client = undefined;
      await current?.end().catch(() => undefined);
    };
  };
}

/** On the embedded database: one connection, so LISTEN goes through the pool like any statement. */
export function pgliteListen(embedded: PGlite, db: Kysely<Database>): Listen {
  return async (channel, onPayload, onConnected) => {
    checkChannel(channel);
    const off = embedded.onNotification((name, payload) => {
      if (name === channel) onPayload(payload);
    });
    await sql.raw(`LISTEN ${channel}`).execute(db);
    onConnected?.();
    return async () => {
      off();
      await sql.raw(`UNLISTEN ${channel}`).execute(db).catch(() => undefined);
    };
  };
}
