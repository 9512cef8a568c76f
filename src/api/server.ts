import type { AddressInfo } from 'node:net';
import { serve, type ServerType } from '@hono/node-server';
import { AccountService } from '../services/accounts.js';
import { CatalogService } from '../services/catalog.js';
import { AccountsStore } from '../store/accounts-store.js';
import { CatalogStore } from '../store/catalog-store.js';
import { acquireDataDirLock } from '../store/data-dir-lock.js';
import { openDatabase } from '../store/database.js';
import { createApp } from './app.js';
import type { ServerConfig } from './config.js';
import { createLogger, type Logger } from './logger.js';
import { VERSION } from './version.js';

export interface RunningServer {
  url: string;
  port: number;
  close(): Promise<void>;
}

/** The composition root: database, services, HTTP app, listening socket. */
export async function startServer(config: ServerConfig, logger: Logger = createLogger()): Promise<RunningServer> {
  const releaseLock = config.databaseUrl ? () => undefined : acquireDataDirLock(config.dataDir, 'mcpworks serve');
  let database;
  try {
    database = await openDatabase({ databaseUrl: config.databaseUrl, dataDir: config.dataDir });
  } catch (error) {
    releaseLock();
    throw error;
  }
  const accountsStore = new AccountsStore(database.db);
  const accounts = new AccountService(accountsStore, config.tiers);
  const catalog = new CatalogService(new CatalogStore(database.db));
  const app = createApp({ accounts, accountsStore, catalog, logger, version: VERSION, databaseKind: database.kind, baseHost: config.baseHost });

  const server: ServerType = await new Promise((resolve, reject) => {
    const s = serve({ fetch: app.fetch, port: config.port, hostname: config.host }, () => resolve(s));
    s.once('error', reject);
  });
  const port = (server.address() as AddressInfo).port;
  const url = `http://${config.host.includes(':') ? `[${config.host}]` : config.host}:${port}`;
  logger.info({ url, database: database.kind, dataDir: config.databaseUrl ? undefined : config.dataDir }, 'mcpworks listening');

  let closing: Promise<void> | undefined;
  return {
    url,
    port,
    close() {
      closing ??= (async () => {
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          // Streams held open by clients must not keep shutdown waiting.
          (server as unknown as { closeAllConnections?: () => void }).closeAllConnections?.();
        });
        await database.close();
        releaseLock();
        logger.info('mcpworks stopped');
      })();
      return closing;
    },
  };
}
