import { applyTierOverrides, type TierLimits } from '../core/tiers.js';
import { configInvalid } from '../core/errors.js';
import type { NpmSettings } from '../run/typescript-dependencies.js';
import type { SchemaGuardOptions } from '../run/schema-guard.js';
import { NPM_DEFAULTS, npmPassThrough } from '../sandbox/npm-build.js';
import { allowedRoutes } from '../sandbox/host/network.js';
import { cpuFromEnvironment, networkFromEnvironment, poolFromEnvironment, zygoteFromEnvironment } from '../sandbox/bubblewrap.js';
import { SANDBOX_CPU_WEIGHT } from '../sandbox/host/cgroup.js';
import { parseSandboxUids, type UidRange } from '../sandbox/uid-range.js';
import { detectHost, type HostFacts } from './host-facts.js';
import { leaseMsFromEnvironment } from '../services/instance-lease.js';
import { DEFAULT_HTTP_LIMITS, KEEP_ALIVE_HINT_MARGIN_MS, type HttpLimits } from '../api/http-limits.js';
import { parseTrustedProxy } from '../api/client-address.js';
import { MB } from '../core/units.js';
import { parseAgentMcpAllow, type AllowEntry } from '../core/mcp-servers.js';

export { DEFAULT_HTTP_LIMITS, type HttpLimits };

export interface ServerConfig {
  host: string;
  port: number;
  dataDir: string;
  /** npm packages of TypeScript functions (shared, content-addressed); must be reachable by the sandbox user. */
  cacheDir?: string | undefined;
  databaseUrl?: string | undefined;
  baseHost?: string | undefined;
  /** Extra hostnames accepted in Host (e.g. the public name behind a reverse proxy). */
  allowedHosts?: string[];
  /** Extra hostnames accepted in Origin (web pages allowed to call the API from a browser). */
  allowedOrigins?: string[];
  tiers: Readonly<Record<string, TierLimits>>;
  /** MCPWORKS_SECRET_KEY: API keys are hashed under it; required with databaseUrl, else a file in the data dir. */
  secretKey?: string | undefined;
  /** Connection and request-time limits of the HTTP listener (defaults: DEFAULT_HTTP_LIMITS). */
  http?: Partial<HttpLimits>;
  /** npm installs of TypeScript requirements: queue, caps, limits, user, registry. */
  npm?: NpmSettings;
  /** MCPWORKS_DISK_RESERVE_MB: free space the embedded database keeps on the data dir's file system (default 64 MiB). */
  diskReserveBytes?: number | undefined;
  /** MCPWORKS_DB_CACHE_MB: the embedded database's buffer cache (default 16 MB; PostgreSQL has its own setting). */
  dbCacheMb?: number | undefined;
  /** MCPWORKS_KDF_CONCURRENCY: password hashes at a time (default: cores - 1, 1 to 4). */
  kdfConcurrency?: number | undefined;
  /** The schema worker pool (defaults: SCHEMA_GUARD_DEFAULTS); set by tests, not by the environment. */
  schemas?: Partial<SchemaGuardOptions>;
  /** MCPWORKS_SANDBOX_UIDS, checked against the host's users (unset: checked at start from the environment). */
  sandboxUids?: UidRange;
  /** MCPWORKS_PROGRESS_INTERVAL_MS: notifications/progress of a call with a progressToken, 100 to 10000 ms apart (default 10000). */
  progressIntervalMs?: number | undefined;
  /** MCPWORKS_SHUTDOWN_GRACE_MS: how long a stopping server lets runs in progress finish (default 5000). */
  shutdownGraceMs?: number | undefined;
  /** MCPWORKS_INSTANCE_LEASE_MS: how long this server's slots outlive its last sign of life (default 30000). */
  leaseMs?: number | undefined;
  /** MCPWORKS_MAX_REPLICAS_PER_NODE: most agent replica processes this node runs (default 64); the rest wait for another node. */
  maxReplicasPerNode?: number | undefined;
  /** MCPWORKS_AGENT_MCP_ALLOW: addresses, ranges and names in refused ranges that agents' attached MCP servers may have. */
  agentMcpAllow?: AllowEntry[];
  /** The built web dashboard (default: dist/web, where `npm run build` puts it); set by tests. */
  dashboardDir?: string | undefined;
  /** LOG_LEVEL: the pino level (default info). */
  logLevel?: string | undefined;
  /** The sandbox's switches (defaults: SANDBOX_DEFAULTS, what an unset environment gives). */
  sandbox?: SandboxSettings;
}

/** The sandbox's own switches, read from the environment once, at start. */
export interface SandboxSettings {
  /** MCPWORKS_SANDBOX_NETWORK=on: functions get network egress. */
  network: boolean;
  /** MCPWORKS_SANDBOX_NETWORK_ALLOW, checked (read only with the network on): prefixes in refused ranges runs may reach. */
  networkAllow: string[];
  /** MCPWORKS_SANDBOX_POOL (not off): pre-started sandboxes wait for their runs. */
  pool: boolean;
  /** MCPWORKS_ZYGOTE (not off): Python fork-servers where the host allows them. */
  zygote: boolean;
  /** MCPWORKS_SANDBOX_CPU_WEIGHT: the runs' CPU weight beside the server, cgroup v2 units (1-10000)… */
  cpuWeight: number;
  /** …or `idle`: the runs' group idle (at that weight where the kernel has no cpu.idle) and the schema workers under SCHED_IDLE. */
  cpuIdle: boolean;
}

export const SANDBOX_DEFAULTS: Readonly<SandboxSettings> = {
  network: false,
  networkAllow: [],
  pool: true,
  zygote: true,
  cpuWeight: SANDBOX_CPU_WEIGHT,
  cpuIdle: false,
};

/** The sandbox's switches from `env`; a bad allow-list stops the server here, at start. */
export function sandboxFromEnv(env: NodeJS.ProcessEnv): SandboxSettings {
  const network = networkFromEnvironment(env.MCPWORKS_SANDBOX_NETWORK);
  return {
    network,
    networkAllow: network ? asConfigError(() => allowedRoutes(env.MCPWORKS_SANDBOX_NETWORK_ALLOW)) : [],
    pool: poolFromEnvironment(env.MCPWORKS_SANDBOX_POOL),
    zygote: zygoteFromEnvironment(env.MCPWORKS_ZYGOTE),
    ...asConfigError(() => cpuFromEnvironment(env.MCPWORKS_SANDBOX_CPU_WEIGHT)),
  };
}

/** A setting refused by the module that owns its rules (the sandbox's allow-list): config_invalid, same message. */
function asConfigError<T>(read: () => T): T {
  try {
    return read();
  } catch (error) {
    throw configInvalid((error as Error).message);
  }
}

/** MCPWORKS_SHUTDOWN_GRACE_MS: how long a stopping server lets runs in progress finish (default 5 s). */
export function shutdownGraceMs(value: string | undefined): number {
  if (value === undefined || value === '') return 5000;
  const ms = Number(value);
  if (!Number.isInteger(ms) || ms < 0 || ms > 600_000)
    throw configInvalid(`MCPWORKS_SHUTDOWN_GRACE_MS must be an integer from 0 to 600000, not ${JSON.stringify(value.slice(0, 32))}`);
  return ms;
}

export function httpLimitsFor(config: ServerConfig): HttpLimits {
  const limits = { ...DEFAULT_HTTP_LIMITS, ...config.http };
  if (limits.headersTimeoutMs > limits.requestTimeoutMs)
    throw configInvalid('the headers timeout must not be longer than the request timeout');
  if (limits.keepAliveTimeoutMs < KEEP_ALIVE_HINT_MARGIN_MS + 1000)
    throw configInvalid(
      `the keep-alive timeout must be at least ${KEEP_ALIVE_HINT_MARGIN_MS / 1000 + 1} s (clients are told ${KEEP_ALIVE_HINT_MARGIN_MS / 1000} s less)`,
    );
  return limits;
}

/**
 * The one reader of the server's environment: every variable is read and checked here, at start,
 * and the typed result is passed down (no module below the composition root reads process.env).
 */
export function configFromEnv(env: NodeJS.ProcessEnv = process.env, host: Pick<HostFacts, 'passwd'> = detectHost()): ServerConfig {
  const npm = npmFromEnv(env);
  return {
    host: env.HOST || '127.0.0.1',
    port: env.PORT ? parsePort(env.PORT) : 8787,
    dataDir: env.MCPWORKS_DATA_DIR || './data',
    databaseUrl: env.DATABASE_URL || undefined,
    cacheDir: env.MCPWORKS_CACHE_DIR || undefined,
    baseHost: env.MCPWORKS_BASE_HOST || undefined,
    allowedHosts: list(env.MCPWORKS_ALLOWED_HOSTS),
    allowedOrigins: list(env.MCPWORKS_ALLOWED_ORIGINS),
    // Validated here, at start: a malformed plan table stops the server with a clear message.
    tiers: applyTierOverrides(env.MCPWORKS_TIERS),
    http: httpFromEnv(env),
    secretKey: env.MCPWORKS_SECRET_KEY || undefined,
    npm,
    // A range that takes in root, nobody, the npm user or a host account stops the server here.
    sandboxUids: parseSandboxUids(env.MCPWORKS_SANDBOX_UIDS, { passwd: host.passwd, npmUid: npm.user?.uid ?? NPM_DEFAULTS.user.uid }),
    diskReserveBytes: env.MCPWORKS_DISK_RESERVE_MB
      ? positiveInteger('MCPWORKS_DISK_RESERVE_MB', env.MCPWORKS_DISK_RESERVE_MB) * MB
      : undefined,
    // Up to 1 GB: PGlite's WASM memory is at most 2 GB, and the cache is resident in full.
    dbCacheMb: env.MCPWORKS_DB_CACHE_MB ? positiveInteger('MCPWORKS_DB_CACHE_MB', env.MCPWORKS_DB_CACHE_MB, 1024) : undefined,
    kdfConcurrency: env.MCPWORKS_KDF_CONCURRENCY
      ? positiveInteger('MCPWORKS_KDF_CONCURRENCY', env.MCPWORKS_KDF_CONCURRENCY, 64)
      : undefined,
    progressIntervalMs: env.MCPWORKS_PROGRESS_INTERVAL_MS ? progressInterval(env.MCPWORKS_PROGRESS_INTERVAL_MS) : undefined,
    shutdownGraceMs: shutdownGraceMs(env.MCPWORKS_SHUTDOWN_GRACE_MS),
    leaseMs: leaseMsFromEnvironment(env.MCPWORKS_INSTANCE_LEASE_MS),
    maxReplicasPerNode: env.MCPWORKS_MAX_REPLICAS_PER_NODE
      ? positiveInteger('MCPWORKS_MAX_REPLICAS_PER_NODE', env.MCPWORKS_MAX_REPLICAS_PER_NODE, 10_000)
      : undefined,
    logLevel: env.LOG_LEVEL ?? 'info',
    agentMcpAllow: asConfigError(() => parseAgentMcpAllow(env.MCPWORKS_AGENT_MCP_ALLOW)),
    sandbox: sandboxFromEnv(env),
  };
}

function npmFromEnv(env: NodeJS.ProcessEnv): NpmSettings {
  const count = (name: string): number | undefined => (env[name] ? positiveInteger(name, env[name]) : undefined);
  // What npm may see of the server's environment (proxies, its registry settings) and where npm is.
  const settings: NpmSettings = { environment: npmPassThrough(env), ...(env.PATH ? { searchPath: env.PATH } : {}) };
  const numbers = {
    concurrency: 'MCPWORKS_NPM_CONCURRENCY',
    accountConcurrency: 'MCPWORKS_NPM_ACCOUNT_CONCURRENCY',
    queue: 'MCPWORKS_NPM_QUEUE',
    accountQueue: 'MCPWORKS_NPM_ACCOUNT_QUEUE',
    timeoutSeconds: 'MCPWORKS_NPM_TIMEOUT_S',
    memoryMb: 'MCPWORKS_NPM_MEMORY_MB',
    cacheMb: 'MCPWORKS_NPM_CACHE_MB',
  } as const;
  for (const [field, name] of Object.entries(numbers) as Array<[keyof typeof numbers, string]>) {
    const value = count(name);
    if (value !== undefined) settings[field] = value;
  }
  if (env.MCPWORKS_NPM_USER) {
    const match = /^(\d+)(?::(\d+))?$/.exec(env.MCPWORKS_NPM_USER);
    if (!match || Number(match[1]) === 0 || Number(match[2] ?? match[1]) === 0)
      throw configInvalid(`MCPWORKS_NPM_USER must be UID or UID:GID of an unprivileged user, not ${JSON.stringify(env.MCPWORKS_NPM_USER)}`);
    settings.user = { uid: Number(match[1]), gid: Number(match[2] ?? match[1]) };
  }
  return settings;
}

function httpFromEnv(env: NodeJS.ProcessEnv): Partial<HttpLimits> {
  const http: Partial<HttpLimits> = {};
  if (env.MCPWORKS_MAX_CONNECTIONS) http.maxConnections = positiveInteger('MCPWORKS_MAX_CONNECTIONS', env.MCPWORKS_MAX_CONNECTIONS);
  if (env.MCPWORKS_MAX_CONNECTIONS_PER_IP)
    http.maxConnectionsPerIp = positiveInteger('MCPWORKS_MAX_CONNECTIONS_PER_IP', env.MCPWORKS_MAX_CONNECTIONS_PER_IP);
  if (env.MCPWORKS_REQUESTS_PER_SECOND_PER_IP)
    http.requestsPerSecondPerIp = positiveInteger(
      'MCPWORKS_REQUESTS_PER_SECOND_PER_IP',
      env.MCPWORKS_REQUESTS_PER_SECOND_PER_IP,
      1_000_000,
    );
  if (env.MCPWORKS_BODY_MB_PER_SECOND_PER_IP)
    http.bodyBytesPerSecondPerIp =
      positiveInteger('MCPWORKS_BODY_MB_PER_SECOND_PER_IP', env.MCPWORKS_BODY_MB_PER_SECOND_PER_IP, 1_000_000) * MB;
  if (env.MCPWORKS_HEADERS_TIMEOUT_S) http.headersTimeoutMs = seconds('MCPWORKS_HEADERS_TIMEOUT_S', env.MCPWORKS_HEADERS_TIMEOUT_S);
  if (env.MCPWORKS_KEEP_ALIVE_TIMEOUT_S)
    http.keepAliveTimeoutMs = seconds('MCPWORKS_KEEP_ALIVE_TIMEOUT_S', env.MCPWORKS_KEEP_ALIVE_TIMEOUT_S);
  if (env.MCPWORKS_REQUEST_TIMEOUT_S) http.requestTimeoutMs = seconds('MCPWORKS_REQUEST_TIMEOUT_S', env.MCPWORKS_REQUEST_TIMEOUT_S);
  const proxies = list(env.MCPWORKS_TRUSTED_PROXIES);
  for (const proxy of proxies)
    if (!parseTrustedProxy(proxy))
      throw configInvalid(`MCPWORKS_TRUSTED_PROXIES: ${JSON.stringify(proxy)} is not an IP address or CIDR range`);
  if (proxies.length) http.trustedProxies = proxies;
  return http;
}

/** Decimal digits only (Number() would take "0x40", "1e2" and 20-digit values), 1 to `max`. */
function positiveInteger(name: string, value: string, max = 2_147_483_647): number {
  const n = /^[0-9]{1,10}$/.test(value) ? Number(value) : NaN;
  if (!Number.isInteger(n) || n < 1 || n > max)
    throw configInvalid(`${name} must be a positive integer up to ${max}, not ${JSON.stringify(value)}`);
  return n;
}

/** Clients time out at 60 s by default and reset on progress: never rarer than every 10 s, nor a flood. */
function progressInterval(value: string): number {
  const ms = positiveInteger('MCPWORKS_PROGRESS_INTERVAL_MS', value, 10_000);
  if (ms < 100) throw configInvalid(`MCPWORKS_PROGRESS_INTERVAL_MS must be from 100 to 10000, not ${JSON.stringify(value)}`);
  return ms;
}

function seconds(name: string, value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0 || n > 3600)
    throw configInvalid(`${name} must be a number of seconds between 0 and 3600, not ${JSON.stringify(value)}`);
  return Math.round(n * 1000);
}

export function parsePort(value: string): number {
  const port = Number(value);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw configInvalid(`invalid port ${JSON.stringify(value)}`);
  return port;
}

function list(value: string | undefined): string[] {
  return (value ?? '')
    .split(',')
    .map((v) => v.trim().toLowerCase())
    .filter(Boolean);
}

const LOOPBACK_HOSTS = new Set(['127.0.0.1', 'localhost', '::1', '[::1]']);

/** Host checking is on when we know every name clients may use: loopback-only, or names configured. */
export function hostGuardFor(config: ServerConfig) {
  const allowedHosts = config.allowedHosts ?? [];
  return {
    checkHost: LOOPBACK_HOSTS.has(config.host) || !!config.baseHost || allowedHosts.length > 0,
    allowedHosts,
    allowedOrigins: config.allowedOrigins ?? [],
  };
}

/**
 * Where npm packages of TypeScript functions are installed. As root the default is a system cache
 * dir, since a data dir under a private home (/root is 0700) is unreachable for the sandbox user.
 */
export function cacheDirFor(config: ServerConfig, host: Pick<HostFacts, 'isRoot'>): string {
  if (config.cacheDir) return config.cacheDir;
  return host.isRoot ? '/var/cache/mcpworks' : `${config.dataDir}/cache`;
}
