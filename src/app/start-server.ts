import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer, type RequestListener, type ServerOptions } from 'node:http';
import type { AddressInfo } from 'node:net';
import { TypescriptDependencies } from '../run/typescript-dependencies.js';
import { FunctionsPackageBuilder } from '../run/functions-package.js';
import { serve, type ServerType } from '@hono/node-server';
import { AccountService } from '../services/accounts.js';
import { OAuthService } from '../services/oauth.js';
import { OAuthStore } from '../store/oauth-store.js';
import type { Db } from '../store/database.js';
import { ApiKeyHasher, configurePasswordKdf, stopPasswordKdfWorkers } from '../services/credential-hashing.js';
import { sharedScanPool } from '../run/scan-pool.js';
import { sharedFairShare } from '../run/fair-share.js';
import { loadServerSecret } from '../services/server-secret.js';
import { CatalogService } from '../services/catalog.js';
import { AgentService } from '../services/agents.js';
import { AgentRuntime } from '../agents/index.js';
import { keepHandedOverOutcome, WebhookTrigger } from '../agents/triggers/webhook.js';
import { McpServerSource } from '../agents/mcp-servers.js';
import { OutboundAddressGuard, outboundPolicyWire, ownEndpointsOf } from '../agents/outbound-guard.js';
import type { OwnEndpoints } from '../core/mcp-servers.js';
import { BoundCipher, StateCipher } from '../services/state-cipher.js';
import { secretContext, WebhookService } from '../services/webhooks.js';
import { WebhooksStore } from '../store/webhooks-store.js';
import { AgentsStore } from '../store/agents-store.js';
import type { ReplicaSupervisor } from '../agents/supervisor.js';
import { copySchedules, SchedulesStore } from '../store/schedules-store.js';
import { ScheduleService } from '../services/schedules.js';
import { ScheduleLoop } from '../agents/triggers/schedule.js';
import { ExecutionHistory } from '../services/history.js';
import { AccountsStore } from '../store/accounts-store.js';
import { CatalogStore } from '../store/catalog-store.js';
import { acquireDataDirLock } from '../store/data-dir-lock.js';
import { openDatabase } from '../store/database.js';
import { PendingWrites } from '../store/pending-writes.js';
import { aheadOfBodyLimit, createApp } from '../api/app.js';
import { defaultDashboardDir, loadDashboard } from '../api/dashboard.js';
import { RunService } from '../run/run-service.js';
import { SchemaGuard } from '../run/schema-guard.js';
import { createBubblewrapSandbox } from '../sandbox/index.js';
import { NPM_DEFAULTS } from '../sandbox/npm-build.js';
import { parseSandboxUids, type UidRange } from '../sandbox/uid-range.js';
import { detectHost, type HostFacts } from './host-facts.js';
import type { Sandbox } from '../core/sandbox.js';
import { ExecutionsStore } from '../store/executions-store.js';
import { MeteringStore } from '../store/metering-store.js';
import { CANCEL_CHANNEL, CancelStore } from '../store/cancel-store.js';
import { Housekeeping, packageGraceMs } from '../services/housekeeping.js';
import { DEFAULT_LEASE_MS, InstanceLease } from '../services/instance-lease.js';
import {
  cacheDirFor,
  hostGuardFor,
  httpLimitsFor,
  SANDBOX_DEFAULTS,
  shutdownGraceMs,
  type SandboxSettings,
  type ServerConfig,
} from './config.js';
import { guardConnections, MAX_HEADER_BYTES, type ConnectionStats } from '../api/connection-guard.js';
import { ListChangedHub } from '../api/list-changed.js';
import { SessionActivity } from '../api/session-activity.js';
import { refusalFor } from '../api/mcp-refusals.js';
import { ByteBudget } from '../api/client-pacing.js';
import { keepAliveHint } from '../api/http-limits.js';
import { signInPrecheck } from '../api/sign-in-precheck.js';
import { bodyPrecheck, REFUSED_BODY_COST } from '../api/body-precheck.js';
import { createLogger, type Logger } from './logger.js';
import { VERSION } from '../api/version.js';

export interface RunningServer {
  url: string;
  port: number;
  /** The running services, for in-process operator tasks (and tests) that must not open the data dir twice. */
  services: {
    accounts: AccountService;
    accountsStore: AccountsStore;
    catalog: CatalogService;
    agents: AgentService;
    /** This node's agent replicas (their worker processes and leases). */
    replicas: ReplicaSupervisor;
    agentRuntime: AgentRuntime;
    schemas: SchemaGuard;
    housekeeping: Housekeeping;
    sandbox: Sandbox;
    runs: RunService;
    connections: () => ConnectionStats;
    cancels: CancelStore;
    listChanged: ListChangedHub;
    sessionActivity: SessionActivity;
    signInsRefusedEarly: () => number;
    /** Requests whose declared body is over their route's limit, answered 413 from Node's request event. */
    bodiesRefusedEarly: () => number;
    bodyBudget: ByteBudget | undefined;
    /** Agents' attached MCP servers' tools (the orchestration loop's toolbox lists and calls them). */
    attachedTools: McpServerSource;
    /** Sign-in from MCP clients: clients, consent, grants. */
    oauth: OAuthService;
    /** The database itself, for tests that must set a state no API reaches (an access token past its expiry). */
    db: Db;
  };
  /** Resolves with a message when the server must stop (the embedded database cannot be kept safe). */
  failed: Promise<string>;
  close(): Promise<void>;
}

/** Read with the rest of the environment in config.ts; exported here too, where it is used. */
export { shutdownGraceMs };

/** Servers started in this process and not yet closed: the last one stops the process-wide workers. */
let liveServers = 0;

/** The composition root: database, services, HTTP app, listening socket. */
export async function startServer(
  config: ServerConfig,
  logger: Logger = createLogger(config.logLevel),
  host: HostFacts = detectHost(),
): Promise<RunningServer> {
  // What start-up has opened. A step that throws (synchronously too, anywhere before listening)
  // undoes them all here, in reverse order, as a failed step does through failStart.
  const opened: Array<() => unknown> = [];
  try {
    return await startServerSteps(config, logger, host, opened);
  } catch (error) {
    for (const close of opened.splice(0).reverse()) {
      try {
        await close();
      } catch (cleanup) {
        logger.warn({ err: cleanup instanceof Error ? cleanup.message : String(cleanup) }, 'clean-up after a failed start');
      }
    }
    throw error;
  }
}

async function startServerSteps(
  config: ServerConfig,
  logger: Logger,
  host: HostFacts,
  opened: Array<() => unknown>,
): Promise<RunningServer> {
  const limits = httpLimitsFor(config);
  const graceMs = config.shutdownGraceMs ?? shutdownGraceMs(undefined);
  const leaseMs = config.leaseMs ?? DEFAULT_LEASE_MS;
  const sandboxSettings = config.sandbox ?? SANDBOX_DEFAULTS;
  if (config.kdfConcurrency) configurePasswordKdf(config.kdfConcurrency);
  // Checked before anything starts: a bad range refuses to start rather than run without sandboxes.
  const sandboxUids =
    config.sandboxUids ?? parseSandboxUids(undefined, { passwd: host.passwd, npmUid: config.npm?.user?.uid ?? NPM_DEFAULTS.user.uid });
  prepareDataDir(config.dataDir);
  preferredByOomKiller(host.isRoot);
  const releaseLock = config.databaseUrl ? () => undefined : acquireDataDirLock(config.dataDir, 'mcpworks serve');
  // What start-up has opened, undone in reverse order (database last, then the lock) if a later
  // step fails, a busy port say: a server that did not start leaves nothing running or locked.
  // First of all (so undone last): the process-wide KDF worker processes and scan threads, which
  // the last server of the process stops.
  liveServers++;
  opened.push(async () => {
    if (--liveServers === 0) await Promise.all([stopPasswordKdfWorkers(), sharedScanPool.stopIdleWorkers()]);
  });
  opened.push(releaseLock);
  const undo = async () => {
    for (const close of opened.splice(0).reverse()) {
      try {
        await close();
      } catch (error) {
        logger.warn({ err: error instanceof Error ? error.message : String(error) }, 'clean-up after a failed start');
      }
    }
  };
  const failStart = async (error: unknown): Promise<never> => {
    await undo();
    if ((error as NodeJS.ErrnoException).code === 'EADDRINUSE') {
      throw new Error(`${config.host}:${config.port} is already in use (EADDRINUSE): stop what listens there or choose another --port`);
    }
    throw error;
  };
  let database;
  let keys: ApiKeyHasher;
  let stateCipher: StateCipher;
  let fail!: (message: string) => void;
  const failed = new Promise<string>((resolve) => (fail = resolve));
  try {
    const secret = loadServerSecret(config);
    if (secret.created)
      logger.info(
        { file: 'secret_key' },
        'created the API-key secret in the data dir: back it up with the database (losing it invalidates every API key)',
      );
    if (secret.warning) logger.warn(secret.warning);
    keys = new ApiKeyHasher(secret.secret);
    // Agent state is encrypted under a key derived from the same secret (its own HKDF label).
    stateCipher = new StateCipher(secret.secret);
    database = await openDatabase({
      databaseUrl: config.databaseUrl,
      dataDir: config.dataDir,
      diskReserveBytes: config.diskReserveBytes,
      cacheMb: config.dbCacheMb,
      onFatal: (message) => {
        logger.fatal(message);
        fail(message);
      },
      onStateChange: (state, previous, detail) => {
        const fields = { database_state: state, previous, ...(detail ? { detail } : {}) };
        if (state === 'ok') logger.info(fields, 'database is back: writes resume');
        else if (state === 'unreachable')
          logger.error(fields, 'database unreachable: requests that need it get 503 until it is back (reconnecting by itself)');
        else if (state === 'storage_full')
          logger.error(
            fields,
            'storage full: the data dir is below its free-space reserve; writes are refused (507) until space is freed, reads go on',
          );
      },
    });
  } catch (error) {
    return failStart(error);
  }
  const openDb = database;
  opened.push(() => openDb.close());
  const accountsStore = new AccountsStore(database.db);
  const accounts = new AccountService(accountsStore, config.tiers, { keys });
  const catalogStore = new CatalogStore(database.db);
  const oauthStore = new OAuthStore(database.db);
  const oauth = new OAuthService(
    oauthStore,
    accountsStore,
    async (accountId) => (await catalogStore.listNamespaces(accountId)).map((n) => n.name),
    config.baseHost,
  );
  const cacheDir = cacheDirFor(config, host);
  const dependencies = new TypescriptDependencies(cacheDir, config.npm, host.sandbox);
  // This process as an instance: its slots name it; what dead instances left is released now.
  const instance = new InstanceLease({
    db: database.db,
    metering: () => metering,
    embedded: database.kind === 'pglite',
    leaseMs,
    logger,
    health: database.health,
  });
  const metering = new MeteringStore(database.db, instance.id);
  await instance.start().catch(failStart);
  opened.push(() => instance.stop());
  const pending = new PendingWrites(database.health, logger);
  // Writes the database refused get a last try while it is still open: closed after the sandboxes
  // and schema workers (their last runs write through it), before the instance and the database.
  opened.push(() => pending.close());
  // Every tenant schema is compiled and applied in its worker pool, never on this thread.
  // MCPWORKS_SANDBOX_CPU_WEIGHT=idle puts the schema workers under SCHED_IDLE with the runs.
  const schemas = new SchemaGuard({ idle: sandboxSettings.cpuIdle, ...config.schemas });
  opened.push(() => schemas.close());
  const catalog = new CatalogService(catalogStore, dependencies.prepare, schemas, config.tiers, {
    sandboxNetwork: sandboxSettings.network,
  });
  const agents = new AgentService(new AgentsStore(database.db), catalog, stateCipher, config.tiers, (accountId) =>
    sharedFairShare.turn(accountId),
  );
  // Agents' attached MCP servers: every address checked (the operator's list; this server's run
  // endpoints once it listens) and the connection pinned to it; headers opened only to connect.
  let ownEndpoints: OwnEndpoints | undefined;
  const mcpGuard = new OutboundAddressGuard({ allow: config.agentMcpAllow ?? [], own: () => ownEndpoints });
  agents.mcp.addressCheck = (url) => mcpGuard.check(url).then(() => undefined);
  // Agents' models by the same rules and list (this server itself never one): base_url checked
  // here, and each model call again on its replica (the policy travels with the job).
  const modelGuard = new OutboundAddressGuard({ allow: config.agentMcpAllow ?? [], own: () => ownEndpoints, purpose: 'model' });
  agents.ai.addressCheck = (url) => modelGuard.check(url).then(() => undefined);
  const agentsById = new AgentsStore(database.db);
  const attachedTools = new McpServerSource({
    guard: mcpGuard,
    servers: async (agentId) => {
      const row = await agentsById.agentById(agentId);
      return row ? agents.mcp.open(row) : [];
    },
    logger,
    version: VERSION,
  });
  opened.push(() => attachedTools.close());
  // Webhook secrets (and outcomes kept for Idempotency-Keys) sealed under the state cipher, bound to their own label.
  const boundCipher = new BoundCipher(stateCipher);
  const webhooksStore = new WebhooksStore(database.db);
  const webhookService = new WebhookService(webhooksStore, new AgentsStore(database.db), catalog, boundCipher, config.baseHost);
  // clone_agent copies the webhooks too, each secret sealed again for the copy's id.
  agents.cloneHooks.push((trx, from, to) =>
    webhooksStore
      .copyAll(trx, from, to, (sealed, fromId, toId) =>
        boundCipher.seal(secretContext(toId), boundCipher.open(secretContext(fromId), sealed)),
      )
      .then(() => undefined),
  );
  const schedulesStore = new SchedulesStore(database.db);
  const schedules = new ScheduleService(new AgentsStore(database.db), schedulesStore, catalog, config.tiers);
  // clone_agent copies the schedules too (fresh: no fires, no failures).
  agents.cloneHooks.push((trx, from, to) => copySchedules(trx, from, to, new Date()).then(() => undefined));
  const sandbox = openSandbox(logger, sandboxUids, sandboxSettings, host);
  opened.push(() => sandbox.close());
  const executions = new ExecutionsStore(database.db);
  const history = new ExecutionHistory(catalog, executions);
  const packages = new FunctionsPackageBuilder(cacheDir);
  const housekeeping = new Housekeeping({
    accounts: accountsStore,
    catalogStore,
    packages,
    dependencies,
    graceMs: packageGraceMs(Math.max(...Object.values(config.tiers).map((t) => t.timeoutSeconds))),
    logger,
    webhooks: webhooksStore,
    oauthClients: oauthStore,
  });
  const cancels = new CancelStore(database.db, instance.id);
  const runs = new RunService({
    pending,
    catalog,
    catalogStore,
    metering,
    executions,
    sandbox,
    dependencies,
    packages,
    schemas,
    tiers: config.tiers,
    accountTier: async (id) => (await accountsStore.findAccountById(id))?.tier ?? 'pro_trial',
    securityLog: ({ service, ...event }) =>
      logger.warn({ security_event: 'secret_redacted', service_name: service, ...event }, 'secret redacted from function output'),
    cancels,
    sandboxNetwork: sandboxSettings.network,
    // Only the embedded database: one node, its statements in the order asked for. On PostgreSQL
    // another node's admission could still count the slot of a call already answered here.
    answerBeforeRecord: database.kind === 'pglite',
    log: logger,
  });
  // Agents' triggers run through `runs` as their agent; runs a dead node left running are ended now.
  const agentRuntime = new AgentRuntime({
    db: database.db,
    run: runs,
    nodeId: instance.id,
    tiers: config.tiers,
    logger,
    leaseMs,
    maxReplicas: config.maxReplicasPerNode,
    pending,
    state: (agentId, tier) => agents.stateAccess(agentId, tier),
    ai: agents.ai,
    attached: attachedTools,
    outbound: () => outboundPolicyWire(config.agentMcpAllow ?? [], ownEndpoints),
    chatSealer: boundCipher,
    notifications: database.notifications,
    // The embedded database is one process's: no other node can share it.
    soleNode: database.kind === 'pglite',
    // A keyed webhook delivery handed to this node: its outcome kept under its key here too.
    servedHere: keepHandedOverOutcome({ store: webhooksStore, cipher: boundCipher }),
  });
  // Its replicas are claimed by lease (instance.id names this node), each run as its own worker process.
  const replicas = agentRuntime.supervisor;
  await agentRuntime.start().catch(failStart);
  opened.push(() => agentRuntime.stop());
  // Deliveries to agents' webhooks end in the same dispatcher, on a replica this node holds, or
  // handed to the node that holds one (agents/handoff.ts).
  const webhookTrigger = new WebhookTrigger({
    store: webhooksStore,
    cipher: boundCipher,
    tiers: config.tiers,
    dispatcher: agentRuntime.router,
    replicas: agentRuntime.replicas,
    logger,
  });
  // Schedules of running agents fire on the replicas this node holds (agents/triggers/schedule.ts).
  const scheduleLoop = new ScheduleLoop({
    store: schedulesStore,
    dispatcher: agentRuntime.dispatcher,
    localReplicas: (agentId) => agentRuntime.replicas.localReplicas(agentId),
    node: instance.id,
    logger,
  });
  // A cancel received by any node reaches the one running the call (the payload: the call's id, or
  // a chat call's run id). When the listening connection comes back after the database was away,
  // marks it missed are looked for.
  try {
    await database.notifications.listen(CANCEL_CHANNEL, {
      notify: (id) => void (runs.cancelTicket(id) || agentRuntime.chat.cancelRun(id)),
      resync: () => {
        Promise.all([runs.cancelMarked(), agentRuntime.chat.cancelMarked()]).catch((error: unknown) =>
          logger.warn({ err: error instanceof Error ? error.message : String(error) }, 'could not look for cancelled calls'),
        );
      },
    });
  } catch (error) {
    return failStart(error);
  }
  // Open streams and requests being answered hold their sessions in use (src/api/session-activity.ts).
  const sessionActivity = new SessionActivity(
    {
      markMcpSessionsInUse: (ids) => accountsStore.markMcpSessionsInUse(instance.id, ids),
      clearMcpSessionInUse: (id) => accountsStore.clearMcpSessionInUse(instance.id, id),
      clearMcpSessionHolds: () => accountsStore.clearMcpSessionHolds(instance.id),
    },
    logger,
  );
  // Catalog changes on any node reach this node's run streams (LISTEN on the database).
  const listChanged = new ListChangedHub(logger, sessionActivity);
  await listChanged.start(database.notifications).catch(failStart);
  // A key revoked or re-dated on any node leaves this node's cache of verified keys at once.
  await accounts.listenForKeyChanges(database.notifications).catch(failStart);
  // Its sweep timer lives as long as the server: closed with it (and if start-up fails).
  const bodyBudget = limits.bodyBytesPerSecondPerIp ? new ByteBudget(limits.bodyBytesPerSecondPerIp) : undefined;
  if (bodyBudget) opened.push(() => bodyBudget.close());
  // The largest plan's cap bounds any webhook body; each delivery is then held to its own plan's.
  const webhookMaxBodyBytes = Math.max(...Object.values(config.tiers).map((t) => t.webhookPayloadBytes));
  const app = createApp({
    accounts,
    accountsStore,
    catalog,
    agents,
    agentRuntime,
    schedules,
    history,
    runs,
    logger,
    version: VERSION,
    databaseKind: database.kind,
    health: database.health,
    baseHost: config.baseHost,
    hostGuard: hostGuardFor(config),
    trustedProxies: limits.trustedProxies,
    bodyBudget,
    progressIntervalMs: config.progressIntervalMs,
    listChanged,
    sessionActivity,
    webhooks: {
      service: webhookService,
      trigger: webhookTrigger,
      maxBodyBytes: webhookMaxBodyBytes,
    },
    dashboard: loadDashboard(config.dashboardDir ?? defaultDashboardDir()),
    oauth,
  });

  // Sign-ins from addresses their gate refuses anyway: 429 before the app reads anything.
  const precheck = signInPrecheck({ accounts, trustedProxies: limits.trustedProxies, baseHost: config.baseHost, logger });
  // Declared bodies over their route's limit: 413 before the app reads anything (the app's own limit gives the same answer).
  const oversized = bodyPrecheck({
    baseHost: config.baseHost,
    webhookMaxBytes: webhookMaxBodyBytes,
    logger,
    exempt: (path, host) => aheadOfBodyLimit(path, host, config.baseHost),
  });
  // Set when shutdown begins: new requests are refused (503), those in progress go on.
  let draining = false;
  let connections: () => ConnectionStats = () => ({
    open: 0,
    sockets: 0,
    refusedTotal: 0,
    refusedAddress: 0,
    refusedPolitely: 0,
    deferred: 0,
    waiting: 0,
  });
  let stopPacing = () => undefined as void;
  const server: ServerType = await new Promise<ServerType>((resolve, reject) => {
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
          maxHeaderSize: MAX_HEADER_BYTES,
        },
        createServer: ((options: ServerOptions, listener: RequestListener) => {
          const http = createHttpServer(options);
          // Idle connections are held longer than clients hold theirs, and clients are told less (see keepAliveHint):
          // otherwise a request written as the server closes the connection is reset (ECONNRESET at the client).
          http.keepAliveTimeout = limits.keepAliveTimeoutMs;
          const keepAlive = keepAliveHint(limits);
          // Sign-in prechecks run within the client's share of requests, as everything else does.
          const guard = guardConnections(
            http,
            limits,
            logger,
            (request, response) => {
              if (precheck(request, response)) return;
              // A body refused unread costs its client more of its share than one request (see REFUSED_BODY_COST).
              if (oversized(request, response)) return guard.charge(request, REFUSED_BODY_COST - 1);
              listener(request, response);
            },
            { baseHost: config.baseHost },
          );
          connections = guard.stats;
          stopPacing = guard.stop;
          // `Expect: 100-continue`: told to go on only when its headers pass the early checks; the
          // request then takes the usual path (an upload about to be refused is not invited).
          http.on('checkContinue', (request, response) => {
            if (!draining && !oversized.wouldRefuse(request)) response.writeContinue();
            http.emit('request', request, response);
          });
          http.on('request', (request, response) => {
            if (!draining) {
              response.setHeader('keep-alive', keepAlive);
              return guard.listener(request, response);
            }
            const body = refusalFor(request, config.baseHost, 'unavailable', 'the server is shutting down', { retry_after: 5 });
            response.writeHead(503, {
              'content-type': 'application/json',
              'content-length': Buffer.byteLength(body),
              'retry-after': '5',
              connection: 'close',
            });
            response.end(body);
          });
          return http;
        }) as never,
      },
      () => resolve(s),
    );
    s.once('error', reject);
    opened.push(() => new Promise<void>((resolve) => s.close(() => resolve())));
  }).catch(failStart);
  const bound = server.address() as AddressInfo;
  const port = bound.port;
  // The address it is bound to, not the configured name: a host name (resolved by listen) would
  // leave this server's own address unknown to the outbound rules.
  ownEndpoints = ownEndpointsOf(bound.address, port, config.baseHost);
  const url = `http://${config.host.includes(':') ? `[${config.host}]` : config.host}:${port}`;
  logger.info({ url, database: database.kind, dataDir: config.databaseUrl ? undefined : config.dataDir }, 'mcpworks listening');
  housekeeping.start();
  replicas.start();
  scheduleLoop.start();

  let closing: Promise<void> | undefined;
  return {
    url,
    port,
    services: {
      accounts,
      accountsStore,
      catalog,
      agents,
      replicas,
      agentRuntime,
      schemas,
      housekeeping,
      sandbox,
      runs,
      connections: () => connections(),
      cancels,
      listChanged,
      sessionActivity,
      signInsRefusedEarly: () => precheck.refused(),
      bodiesRefusedEarly: () => oversized.refused(),
      bodyBudget,
      attachedTools,
      oauth,
      db: database.db,
    },
    failed,
    close() {
      closing ??= (async () => {
        draining = true;
        stopPacing();
        // No schedule fires any more; those running end with the runs below.
        await scheduleLoop.stop(0);
        // Change streams say nothing more; ended now, they do not hold the connections open.
        listChanged.closeAll();
        // This node's holds end now: its sessions may be ended for their key's cap at once.
        await sessionActivity.close();
        const http = server as unknown as { closeIdleConnections?: () => void; closeAllConnections?: () => void };
        // No new connections; open ones serve what is in progress (new requests get 503).
        const connectionsEnded = new Promise<void>((resolve) => server.close(() => resolve()));
        http.closeIdleConnections?.();
        // Replicas finish their current runs (within the grace), end their processes and free their leases for other nodes.
        await replicas.stop(graceMs);
        if (!(await runs.drained(graceMs)))
          logger.warn(
            { runs: runs.inProgress, graceMs },
            'grace period over: stopping the runs still in progress (recorded as interrupted, not counted)',
          );
        // Runs still going are stopped, answer an error and are recorded; none begins any more.
        runs.interrupt();
        await runs.drained(10_000);
        // Their fires' ends are recorded before the database closes.
        await scheduleLoop.settled(5000);
        // Runs handed to other nodes go on there: their callers are told so while connected (a cut connection would cancel them).
        await Promise.race([agentRuntime.router.close(), delay(graceMs)]);
        // Their answers are written; streams held open by clients must not keep shutdown waiting.
        await Promise.race([connectionsEnded, delay(1000)]);
        http.closeAllConnections?.();
        await connectionsEnded;
        await housekeeping.stop();
        opened.pop(); // the listening socket, closed above
        // Then the sandboxes, the schema workers, the instance, the database last, the lock.
        await undo();
        logger.info('mcpworks stopped');
      })();
      return closing;
    },
  };
}

const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms).unref());

/**
 * The code_sandbox backend. When this machine cannot run it (no bubblewrap, no helper), the server
 * still serves management calls, and every run answers a SandboxError saying why.
 */
function openSandbox(logger: Logger, sandboxUids: UidRange, settings: SandboxSettings, host: HostFacts): Sandbox {
  try {
    return createBubblewrapSandbox({
      ...settings,
      sandboxUids,
      host: host.sandbox,
      log: (message) => logger.warn({ component: 'sandbox' }, message),
    });
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    logger.error({ reason }, 'sandbox unavailable: runs will fail until it is installed (make run installs it)');
    return {
      async run() {
        return {
          ok: false,
          error: { type: 'SandboxError', message: `the sandbox is not available on this server: ${reason}`, stderr: '', platform: true },
          stdout: '',
          durationMs: 0,
        };
      },
      async close() {},
    };
  }
}

/**
 * In a host-wide out-of-memory, the kernel kills the process with the highest oom_score_adj first:
 * sandboxes (1000) and their helpers (500) set theirs; the server, when it may (root), goes last.
 */
export const SERVER_OOM_SCORE_ADJ = -500;

function preferredByOomKiller(isRoot: boolean): void {
  if (!isRoot) return;
  try {
    writeFileSync('/proc/self/oom_score_adj', String(SERVER_OOM_SCORE_ADJ));
  } catch {
    // no procfs, or not allowed in this container: the kernel's default then
  }
}

/** The data dir holds the embedded database: private to the server's user. */
function prepareDataDir(dataDir: string): void {
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  chmodSync(dataDir, 0o700);
}
