// test-database: embedded, configuration parsing only (it names DATABASE_URL but opens no database)
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { configFromEnv, DEFAULT_HTTP_LIMITS, httpLimitsFor, SANDBOX_DEFAULTS, sandboxFromEnv } from './config.js';
import { shutdownGraceMs } from './start-server.js';
import { leaseMsFromEnvironment } from '../services/instance-lease.js';
import { applyTierOverrides } from '../core/tiers.js';
import { parseSandboxUids } from '../sandbox/uid-range.js';
import { isPlatformError, PlatformError } from '../core/errors.js';
import { loadServerSecret } from '../services/server-secret.js';

test('HTTP limits come from the environment, with defaults, and bad values stop the server', () => {
  const defaults = httpLimitsFor(configFromEnv({}));
  assert.deepEqual(defaults, DEFAULT_HTTP_LIMITS);
  const set = httpLimitsFor(
    configFromEnv({
      MCPWORKS_MAX_CONNECTIONS: '500',
      MCPWORKS_MAX_CONNECTIONS_PER_IP: '20',
      MCPWORKS_REQUESTS_PER_SECOND_PER_IP: '50',
      MCPWORKS_BODY_MB_PER_SECOND_PER_IP: '4',
      MCPWORKS_HEADERS_TIMEOUT_S: '2.5',
      MCPWORKS_REQUEST_TIMEOUT_S: '30',
      MCPWORKS_KEEP_ALIVE_TIMEOUT_S: '95',
      MCPWORKS_TRUSTED_PROXIES: '127.0.0.1, ::1',
    }),
  );
  assert.deepEqual(set, {
    maxConnections: 500,
    maxConnectionsPerIp: 20,
    requestsPerSecondPerIp: 50,
    bodyBytesPerSecondPerIp: 4 * 1024 * 1024,
    headersTimeoutMs: 2500,
    requestTimeoutMs: 30_000,
    keepAliveTimeoutMs: 95_000,
    trustedProxies: ['127.0.0.1', '::1'],
  });
  for (const env of [
    { MCPWORKS_MAX_CONNECTIONS: '0' },
    { MCPWORKS_MAX_CONNECTIONS_PER_IP: 'many' },
    { MCPWORKS_REQUESTS_PER_SECOND_PER_IP: '0' },
    { MCPWORKS_REQUESTS_PER_SECOND_PER_IP: '1e3' },
    { MCPWORKS_BODY_MB_PER_SECOND_PER_IP: '0.5' },
    { MCPWORKS_HEADERS_TIMEOUT_S: '-1' },
    { MCPWORKS_REQUEST_TIMEOUT_S: 'soon' },
    { MCPWORKS_KEEP_ALIVE_TIMEOUT_S: 'long' },
    { MCPWORKS_TRUSTED_PROXIES: 'proxy.example.com' },
    { MCPWORKS_TRUSTED_PROXIES: '10.0.0.0/33' },
    { MCPWORKS_TRUSTED_PROXIES: '10.0.0.1:8080' },
  ]) {
    assert.throws(() => configFromEnv(env), /MCPWORKS_/, JSON.stringify(env));
  }
  assert.throws(() => httpLimitsFor(configFromEnv({ MCPWORKS_HEADERS_TIMEOUT_S: '90' })), /headers timeout/);
  // Any written form of an address, and CIDR ranges, are accepted as given (matched by net.BlockList).
  const forms = ['2001:db8:0:0:0:0:0:1', '10.0.0.0/8', 'fd00::/8', '::ffff:192.0.2.7'];
  assert.deepEqual(httpLimitsFor(configFromEnv({ MCPWORKS_TRUSTED_PROXIES: forms.join(',') })).trustedProxies, forms);
});

test('sandbox switches go env -> config: MCPWORKS_ZYGOTE, MCPWORKS_SANDBOX_POOL, MCPWORKS_SANDBOX_NETWORK(_ALLOW), MCPWORKS_SANDBOX_CPU_WEIGHT', () => {
  assert.deepEqual(sandboxFromEnv({}), SANDBOX_DEFAULTS);
  assert.equal(sandboxFromEnv({ MCPWORKS_ZYGOTE: 'off' }).zygote, false);
  assert.equal(sandboxFromEnv({ MCPWORKS_ZYGOTE: 'on' }).zygote, true);
  assert.equal(sandboxFromEnv({ MCPWORKS_SANDBOX_POOL: 'off' }).pool, false);
  assert.equal(sandboxFromEnv({ MCPWORKS_SANDBOX_POOL: 'on' }).pool, true);
  assert.equal(sandboxFromEnv({ MCPWORKS_SANDBOX_NETWORK: 'on' }).network, true);
  assert.equal(sandboxFromEnv({ MCPWORKS_SANDBOX_NETWORK: 'off' }).network, false);
  // The allow-list applies only with the network on; a bad one stops the server at start.
  assert.deepEqual(
    sandboxFromEnv({ MCPWORKS_SANDBOX_NETWORK: 'on', MCPWORKS_SANDBOX_NETWORK_ALLOW: '203.0.113.7, 198.51.100.0/24' }).networkAllow,
    ['203.0.113.7/32', '198.51.100.0/24'],
  );
  assert.deepEqual(sandboxFromEnv({ MCPWORKS_SANDBOX_NETWORK_ALLOW: '203.0.113.7' }).networkAllow, []);
  assert.throws(
    () => sandboxFromEnv({ MCPWORKS_SANDBOX_NETWORK: 'on', MCPWORKS_SANDBOX_NETWORK_ALLOW: '127.0.0.1' }),
    /MCPWORKS_SANDBOX_NETWORK_ALLOW/,
  );
  // The runs' CPU weight in cgroup v2 units, 1 to 10000, default a quarter of a default group's;
  // `idle` (opt-in): the runs' group idle, at 25 where the kernel has no cpu.idle.
  assert.equal(SANDBOX_DEFAULTS.cpuWeight, 25);
  assert.equal(SANDBOX_DEFAULTS.cpuIdle, false);
  for (const [value, idle] of [
    ['', false],
    ['idle', true],
  ] as const) {
    const { cpuWeight, cpuIdle } = sandboxFromEnv({ MCPWORKS_SANDBOX_CPU_WEIGHT: value });
    assert.deepEqual({ cpuWeight, cpuIdle }, { cpuWeight: 25, cpuIdle: idle }, value);
  }
  for (const value of ['1', '40', '10000']) {
    const { cpuWeight, cpuIdle } = sandboxFromEnv({ MCPWORKS_SANDBOX_CPU_WEIGHT: value });
    assert.deepEqual({ cpuWeight, cpuIdle }, { cpuWeight: Number(value), cpuIdle: false }, value);
  }
  for (const value of ['0', '10001', '2.5', '-5', '0x10', ' 40', 'low', 'IDLE', 'idle ']) {
    assert.throws(
      () => configFromEnv({ MCPWORKS_SANDBOX_CPU_WEIGHT: value }),
      (error: unknown) =>
        isPlatformError(error, 'config_invalid') &&
        error.message === `MCPWORKS_SANDBOX_CPU_WEIGHT must be idle or an integer from 1 to 10000, not ${JSON.stringify(value)}`,
      value,
    );
  }
  // The whole config carries them: what start-server hands the sandbox.
  assert.deepEqual(configFromEnv({ MCPWORKS_ZYGOTE: 'off', MCPWORKS_SANDBOX_POOL: 'off', MCPWORKS_SANDBOX_CPU_WEIGHT: '40' }).sandbox, {
    ...SANDBOX_DEFAULTS,
    zygote: false,
    pool: false,
    cpuWeight: 40,
    cpuIdle: false,
  });
});

test('MCPWORKS_KDF_CONCURRENCY: unset leaves the default (cores - 1), a positive integer sets it, anything else stops the server', () => {
  assert.equal(configFromEnv({}).kdfConcurrency, undefined);
  assert.equal(configFromEnv({ MCPWORKS_KDF_CONCURRENCY: '2' }).kdfConcurrency, 2);
  for (const value of ['0', '-1', 'two', '1.5', '1000'])
    assert.throws(() => configFromEnv({ MCPWORKS_KDF_CONCURRENCY: value }), /MCPWORKS_KDF_CONCURRENCY/);
});

test('MCPWORKS_DB_CACHE_MB: unset leaves the default (16), 1 to 1024 sets it, anything else stops the server', () => {
  assert.equal(configFromEnv({}).dbCacheMb, undefined);
  assert.equal(configFromEnv({ MCPWORKS_DB_CACHE_MB: '128' }).dbCacheMb, 128);
  for (const value of ['0', '-1', 'big', '1.5', '1025', '16MB'])
    assert.throws(() => configFromEnv({ MCPWORKS_DB_CACHE_MB: value }), /MCPWORKS_DB_CACHE_MB must be a positive integer up to 1024/);
});

test('MCPWORKS_AGENT_MCP_ALLOW: unset allows nothing in refused ranges; addresses, ranges and names are read; a bad entry stops the server', () => {
  assert.deepEqual(configFromEnv({}).agentMcpAllow, []);
  assert.deepEqual(
    configFromEnv({ MCPWORKS_AGENT_MCP_ALLOW: '10.0.5.0/24, Tools.Internal' }).agentMcpAllow?.map((e) =>
      e.kind === 'host' ? e.host : e.text,
    ),
    ['10.0.5.0/24', 'tools.internal'],
  );
  for (const value of ['10.0.0.0/40', '0x7f000001', 'http://tools.internal', 'a b'])
    assert.throws(
      () => configFromEnv({ MCPWORKS_AGENT_MCP_ALLOW: value }),
      (error: unknown) => isPlatformError(error, 'config_invalid') && /MCPWORKS_AGENT_MCP_ALLOW/.test(String(error)),
      value,
    );
});

test('MCPWORKS_PROGRESS_INTERVAL_MS: unset leaves the default (10 s), 100 to 10000 sets it, anything else stops the server', () => {
  assert.equal(configFromEnv({}).progressIntervalMs, undefined);
  assert.equal(configFromEnv({ MCPWORKS_PROGRESS_INTERVAL_MS: '250' }).progressIntervalMs, 250);
  assert.equal(configFromEnv({ MCPWORKS_PROGRESS_INTERVAL_MS: '10000' }).progressIntervalMs, 10_000);
  for (const value of ['0', '99', '10001', '60000', '1e3', 'fast'])
    assert.throws(() => configFromEnv({ MCPWORKS_PROGRESS_INTERVAL_MS: value }), /MCPWORKS_PROGRESS_INTERVAL_MS/);
});

test('integer settings take decimal digits only, within range: not hex, exponents, signs, spaces or 20 digits', () => {
  assert.equal(configFromEnv({ MCPWORKS_DISK_RESERVE_MB: '100' }).diskReserveBytes, 100 * 1024 * 1024);
  for (const name of ['MCPWORKS_DISK_RESERVE_MB', 'MCPWORKS_NPM_CACHE_MB', 'MCPWORKS_MAX_CONNECTIONS']) {
    for (const value of ['0x40', '1e2', '+5', ' 5', '99999999999999999999', '3000000000']) {
      assert.throws(() => configFromEnv({ [name]: value }), new RegExp(name), `${name}=${value}`);
    }
  }
});

test('configuration errors quote the value given one way: as JSON, after "not"', () => {
  assert.throws(() => shutdownGraceMs('soon'), /^Error: MCPWORKS_SHUTDOWN_GRACE_MS must be an integer from 0 to 600000, not "soon"$/);
  assert.throws(() => leaseMsFromEnvironment('5'), /^Error: MCPWORKS_INSTANCE_LEASE_MS must be an integer from 1000 to 3600000, not "5"$/);
  assert.throws(() => configFromEnv({ MCPWORKS_KDF_CONCURRENCY: 'two' }), /, not "two"$/);
  assert.throws(() => applyTierOverrides('{"Gold":{}}'), /tier name "Gold" must be/);
  assert.throws(() => applyTierOverrides('{"gold":{"speed":1}}'), /MCPWORKS_TIERS: "gold.speed" is not a limit/);
  assert.throws(() => parseSandboxUids('5', { passwd: '', npmUid: 65533 }), /joined by "-", not "5"$/);
});

test('a bad setting is a config_invalid PlatformError, with the message and error name operators read', () => {
  const configInvalid = (fn: () => unknown, message: string, name = 'Error') =>
    assert.throws(fn, (error: unknown) => {
      assert.ok(isPlatformError(error, 'config_invalid'), String(error));
      assert.equal(error.message, message);
      assert.equal(error.name, name);
      return true;
    });
  configInvalid(() => configFromEnv({ MCPWORKS_TIERS: '[1]' }), 'MCPWORKS_TIERS must be a JSON object mapping tier names to limits');
  configInvalid(() => configFromEnv({ MCPWORKS_TIERS: '{"gold":{"timeout_s":0}}' }), 'MCPWORKS_TIERS: "gold.timeout_s" must be at least 1');
  configInvalid(
    () => configFromEnv({ MCPWORKS_NPM_USER: 'root' }),
    'MCPWORKS_NPM_USER must be UID or UID:GID of an unprivileged user, not "root"',
  );
  configInvalid(() => configFromEnv({ PORT: '70000' }), 'invalid port "70000"');
  configInvalid(
    () => configFromEnv({ MCPWORKS_TRUSTED_PROXIES: 'proxy.local' }),
    'MCPWORKS_TRUSTED_PROXIES: "proxy.local" is not an IP address or CIDR range',
  );
  configInvalid(
    () => configFromEnv({ MCPWORKS_INSTANCE_LEASE_MS: '5' }),
    'MCPWORKS_INSTANCE_LEASE_MS must be an integer from 1000 to 3600000, not "5"',
  );
  configInvalid(
    () => configFromEnv({ MCPWORKS_SANDBOX_NETWORK: 'on', MCPWORKS_SANDBOX_NETWORK_ALLOW: 'example.com' }),
    'MCPWORKS_SANDBOX_NETWORK_ALLOW: "example.com" is not an IPv4 address or prefix of /8 to /32',
  );
  configInvalid(
    () => configFromEnv({ MCPWORKS_SANDBOX_UIDS: '0-65535' }),
    'MCPWORKS_SANDBOX_UIDS: 0-65535 includes uid 0 (root)',
    'SandboxUidsError',
  );
  configInvalid(
    () => httpLimitsFor({ ...configFromEnv({}), http: { headersTimeoutMs: 2000, requestTimeoutMs: 1000 } }),
    'the headers timeout must not be longer than the request timeout',
  );
  // Clients are told 5 s less than the server holds an idle connection: at least 1 s must be left to tell.
  configInvalid(
    () => httpLimitsFor(configFromEnv({ MCPWORKS_KEEP_ALIVE_TIMEOUT_S: '5' })),
    'the keep-alive timeout must be at least 6 s (clients are told 5 s less)',
  );
  configInvalid(
    () => loadServerSecret({ secretKey: 'short', dataDir: '/nonexistent' }),
    'the secret in MCPWORKS_SECRET_KEY must be at least 32 characters (e.g. `openssl rand -hex 32`)',
  );
  // The shape every local failure shares: a code, the message, data only where a family has some.
  const error = new PlatformError('data_dir_locked', 'in use', { pid: 1 });
  assert.deepEqual([error instanceof Error, error.code, error.message, error.data], [true, 'data_dir_locked', 'in use', { pid: 1 }]);
});
