import pg from 'pg';
import type { EmbeddedThread } from './pglite-thread.js';
import type { DatabaseHealth } from './db-health.js';

/** Told each payload NOTIFYed on the channel; `resync` when notifications may have been missed. */
export interface ChannelHandler {
  notify(payload: string): void;
  /** The listening connection was lost and is back: what changed meanwhile was not announced. */
  resync(): void;
}

/** LISTEN on the database: one handler per channel, for the life of the database. */
export interface NotifyListener {
  listen(channel: string, handler: ChannelHandler): Promise<void>;
  close(): Promise<void>;
}

const CHANNEL = /^[a-z_][a-z0-9_]{0,62}$/;

function checkChannel(channel: string): void {
  if (!CHANNEL.test(channel)) throw new Error(`invalid channel name ${JSON.stringify(channel)}`);
}

/**
 * The embedded database: one backend, so its own notifications come back to it. LISTEN runs while
 * holding the pool's turn (`exclusive`): inside another checkout's open transaction it would take
 * effect only if that transaction committed.
 */
export function pgliteNotifyListener(db: EmbeddedThread, exclusive: () => Promise<{ release(): void }>): NotifyListener {
  let closed = false;
  return {
    async listen(channel, handler) {
      checkChannel(channel);
      const turn = await exclusive();
      try {
        await db.listen(channel, (payload) => {
          if (!closed) handler.notify(payload);
        });
      } finally {
        turn.release();
      }
    },
    async close() {
      // No UNLISTEN: the database closes next (and one poisoned by a full disk must not run another statement).
      closed = true;
    },
  };
}

/** Reconnect delays of the listening connection: doubling from 250 ms up to 5 s. */
const RECONNECT_MIN_MS = 250;
const RECONNECT_MAX_MS = 5000;
const CONNECT_TIMEOUT_MS = 5000;

/**
 * PostgreSQL: a dedicated connection of its own (LISTEN holds its session, so never a pool slot),
 * with TCP keepalive. Lost (the server restarted, the network dropped), it reconnects with backoff,
 * LISTENs again, and tells every handler to resync: notifications sent while it was away are gone.
 * When the pool's health probe finds the database back, a pending reconnect runs at once.
 */
export function postgresNotifyListener(connectionString: string, health: DatabaseHealth): NotifyListener {
  const handlers = new Map<string, ChannelHandler>();
  let client: pg.Client | undefined;
  let connecting: Promise<void> | undefined;
  let timer: NodeJS.Timeout | undefined;
  let delay = RECONNECT_MIN_MS;
  let closed = false;
  let lost = false;

  const schedule = () => {
    if (closed || timer) return;
    timer = setTimeout(() => {
      timer = undefined;
      void connect();
    }, delay);
    timer.unref();
    delay = Math.min(RECONNECT_MAX_MS, delay * 2);
  };

  const connect = (): Promise<void> =>
    (connecting ??= (async () => {
      const next = new pg.Client({
        connectionString,
        connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
        keepAlive: true,
        keepAliveInitialDelayMillis: 10_000,
      });
      let dropped = false;
      const drop = () => {
        if (dropped) return;
        dropped = true;
        if (client === next) client = undefined;
        next.end().catch(() => undefined);
        lost = true;
        schedule();
      };
      next.on('error', drop);
      next.on('end', drop);
      next.on('notification', (message) => {
        const handler = handlers.get(message.channel);
        if (handler) handler.notify(message.payload ?? '');
      });
      try {
        await next.connect();
        for (const channel of handlers.keys()) await next.query(`LISTEN ${channel}`);
      } catch {
        drop();
        return;
      }
      if (closed) {
        await next.end().catch(() => undefined);
        return;
      }
      client = next;
      delay = RECONNECT_MIN_MS;
      if (lost) {
        lost = false;
        for (const handler of handlers.values()) handler.resync();
      }
    })().finally(() => (connecting = undefined)));

  const stopWatching = health.onChange((state) => {
    if (state === 'ok' && !client && timer) {
      clearTimeout(timer);
      timer = undefined;
      void connect();
    }
  });

  return {
    async listen(channel, handler) {
      checkChannel(channel);
      handlers.set(channel, handler);
      if (client) {
        await client.query(`LISTEN ${channel}`);
        return;
      }
      await connect();
      // Not reachable now: the reconnect loop LISTENs once it is (and the handler resyncs then).
    },
    async close() {
      closed = true;
      stopWatching();
      if (timer) clearTimeout(timer);
      timer = undefined;
      await connecting;
      const current = client;
      client = undefined;
      await current?.end().catch(() => undefined);
    },
  };
}
