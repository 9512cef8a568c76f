import { chmodSync, mkdirSync } from 'node:fs';
import { createServer as createHttpServer, type RequestListener, type ServerOptions } from 'node:http';
import type { AddressInfo } from 'node:net';
import { TypescriptDependencies } from '../run/typescript-dependencies.js';
import { FunctionsPackageBuilder } from '../run/functions-package.js';
import { serve, type ServerType } from '@hono/node-server';
import { AccountService } from '../services/accounts.js';
import { ApiKeyHasher } from '../services/secrets.js';
import { loadServerSecret } from '../services/server-secret.js';
import { CatalogService } from '../services/catalog.js';
import { ExecutionHistory } from '../services/history.js';
import { AccountsStore } from '../store/accounts-store.js';
import { CatalogStore } from '../store/catalog-store.js';
import { acquireDataDirLock } from '../store/data-dir-lock.js';
import { openDatabase } from '../store/database.js';
import { createApp } from './app.js';
import { RunService } from '../run/run-service.js';
import { SchemaGuard } from '../run/schema-guard.js';
import { createBubblewrapSandbox, networkFromEnvironment } from '../sandbox/index.js';
import type { Sandbox } from '../core/sandbox.js';
import { ExecutionsStore } from '../store/executions-store.js';
import { MeteringStore } from '../store/metering-store.js';
import { Housekeeping, packageGraceMs } from '../services/housekeeping.js';
import { cacheDirFor, hostGuardFor, httpLimitsFor, type ServerConfig } from './config.js';
import { guardConnections } from './connection-guard.js';
import { createLogger, type Logger } from './logger.js';
import { VERSION } from './version.js';

export interface RunningServer {
  url: string;
  port: number;
  /** The running services, for in-process operator tasks (and tests) that must not open the data dir twice. */
  services: { accounts: AccountService; accountsStore: AccountsStore; catalog: CatalogService; schemas: SchemaGuard; housekeeping: Housekeeping; sandbox: Sandbox };
  close(): Promise<void>;
}

/** The composition root: database, services, HTTP app, listening socket. */
export async function startServer(config: ServerConfig, logger: Logger = createLogger()): Promise<RunningServer> {
  const limits = httpLimitsFor(config);
  prepareDataDir(config.dataDir);
  const releaseLock = config.databaseUrl ? () => undefined : acquireDataDirLock(config.dataDir, 'mcpworks serve');
  let database;
  let keys: ApiKeyHasher;
  try {
    const secret = loadServerSecret(config);
    if (secret.created) logger.info({ file: 'secret_key' }, 'created the API-key secret in the data dir: back it up with the database (losing it invalidates every API key)');
    if (secret.warning) logger.warn(secret.warning);
    keys = new ApiKeyHasher(secret.secret);
    database = await openDatabase({ databaseUrl: config.databaseUrl, dataDir: config.dataDir });
  } catch (error) {
    releaseLock();
    throw error;
  }
  const accountsStore = new AccountsStore(database.db);
  const accounts = new AccountService(accountsStore, config.tiers, { keys });
  const catalogStore = new CatalogStore(database.db);
  const cacheDir = cacheDirFor(config);
  const dependencies = new TypescriptDependencies(cacheDir, config.npm);
  // Every tenant schema is compiled and applied in its worker pool, never on this thread.
  const schemas = new SchemaGuard();
  const catalog = new CatalogService(catalogStore, dependencies.prepare, schemas, config.tiers);
  const sandbox = openSandbox(logger);
  const executions = new ExecutionsStore(database.db);
  const history = new ExecutionHistory(catalog, executions);
  const packages = new FunctionsPackageBuilder(cacheDir);
  const housekeeping = new Housekeeping({
    accounts: accountsStore,
    catalogStore,
    packages,
    graceMs: packageGraceMs(Math.max(...Object.values(config.tiers).map((t) => t.timeoutSeconds))),
    logger,
  });
  const runs = new RunService({
    catalog,
    catalogStore,
    metering: new MeteringStore(database.db),
    executions,
    sandbox,
    dependencies,
    packages,
    schemas,
    tiers: config.tiers,
    accountTier: async (id) => (await accountsStore.findAccountById(id))?.tier ?? 'pro_trial',
    securityLog: (event) => logger.warn({ security_event: 'secret_redacted', ...event }, 'secret redacted from function output'),
  });
  const app = createApp({ accounts, accountsStore, catalog, history, runs, logger, version: VERSION, databaseKind: database.kind, baseHost: config.baseHost, hostGuard: hostGuardFor(config), trustedProxies: limits.trustedProxies });

  const server: ServerType = await new Promise((resolve, reject) => {
    const s = serve(
      {
        fetch: app.fetch,
        port: config.port,
        hostname: config.host,
        // Node's timeouts bound receiving a request (headers, then the whole request); nothing
        // bounds the response, so long runs and SSE streams are never cut.
        serverOptions: {
          headersTimeout: limits.headersTimeoutMs,
          requestTimeout: limits.requestTimeoutMs,
          connectionsCheckingInterval: Math.min(1000, Math.max(50, Math.floor(limits.headersTimeoutMs / 4))),
        },
        createServer: ((options: ServerOptions, listener: RequestListener) => {
          const http = createHttpServer(options);
          http.on('request', guardConnections(http, limits, logger, listener));
          return http;
        }) as never,
      },
      () => resolve(s),
    );
    s.once('error', reject);
  });
  const port = (server.address() as AddressInfo).port;
  const url = `http://${config.host.includes(':') ? `[${config.host}]` : config.host}:${port}`;
  logger.info({ url, database: database.kind, dataDir: config.databaseUrl ? undefined : config.dataDir }, 'mcpworks listening');
  housekeeping.start();

  let closing: Promise<void> | undefined;
  return {
    url,
    port,
    services: { accounts, accountsStore, catalog, schemas, housekeeping, sandbox },
    close() {
      closing ??= (async () => {
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          // Streams held open by clients must not keep shutdown waiting.
          (server as unknown as { closeAllConnections?: () => void }).closeAllConnections?.();
        });
        await housekeeping.stop();
        await schemas.close();
        await sandbox.close();
        await database.close();
        releaseLock();
        logger.info('mcpworks stopped');
      })();
      return closing;
    },
  };
}

/**
 * The code_sandbox backend. When this machine cannot run it (no bubblewrap, no helper), the server
 * still serves management calls, and every run answers a SandboxError saying why.
 */
function openSandbox(logger: Logger): Sandbox {
  try {
    return createBubblewrapSandbox({ network: networkFromEnvironment(), log: (message) => logger.warn({ component: 'sandbox' }, message) });
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    logger.error({ reason }, 'sandbox unavailable: runs will fail until it is installed (make run installs it)');
    return {
      async run() {
        return { ok: false, error: { type: 'SandboxError', message: `the sandbox is not available on this server: ${reason}`, stderr: '', platform: true }, stdout: '', durationMs: 0 };
      },
      async close() {},
    };
  }
}

/** The data dir holds the embedded database: private to the server's user. */
function prepareDataDir(dataDir: string): void {
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  chmodSync(dataDir, 0o700);
}
