/**
 * Test harness: starts the real server on a free loopback port (embedded PGlite in a temp dir,
 * or a fresh database on the PostgreSQL named by MCPWORKS_TEST_DATABASE_URL) and gives tests
 * accounts, keys and official-SDK MCP clients.
 */
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createHash, randomBytes } from 'node:crypto';
import pg from 'pg';
import { Client as ClientV2, StreamableHTTPClientTransport as TransportV2 } from '@modelcontextprotocol/client';
import { startServer, type RunningServer } from '../app/start-server.js';
import { createLogger } from '../app/logger.js';
import type { DestinationStream } from 'pino';
import { DEFAULT_TIER, DEFAULT_TIERS, TRIAL_DAYS } from '../core/tiers.js';
import { hashSecret, randomHex, sha256Hex } from '../services/credential-hashing.js';
import { openDatabase } from '../store/database.js';
import { sandboxFromEnv, type ServerConfig } from '../app/config.js';
import { npmPassThrough } from '../sandbox/npm-build.js';
import { sweepStaleTestDirs, testDataRoot } from './data-root.js';

export { testDataRoot };

export interface TestServer {
  url: string;
  server: RunningServer;
  dataDir: string;
  databaseUrl: string | undefined;
  stop(): Promise<void>;
}

/** A fresh database on the test PostgreSQL, or undefined to use embedded PGlite. */
export async function freshDatabaseUrl(): Promise<string | undefined> {
  const admin = process.env.MCPWORKS_TEST_DATABASE_URL;
  if (!admin) return undefined;
  const name = `mcpworks_test_${randomBytes(6).toString('hex')}`;
  const client = new pg.Client({ connectionString: admin });
  await client.connect();
  try {
    await client.query(`CREATE DATABASE ${name}`);
  } finally {
    await client.end();
  }
  const url = new URL(admin);
  url.pathname = `/${name}`;
  return url.toString();
}

/**
 * A `skip` option for tests that never use the test PostgreSQL (always the embedded database, or no
 * database), or whose rule does not depend on the database: scripts/test.sh runs their file again on
 * PostgreSQL (for its other tests), where they would only repeat themselves.
 */
export const EMBEDDED_RUN_ONLY: string | false = process.env.MCPWORKS_TEST_DATABASE_URL
  ? 'independent of the database: run in the embedded run'
  : false;

/** EMBEDDED_RUN_ONLY from inside a test (`if (embeddedRunOnly(t)) return;`): true, and the test skipped, in the PostgreSQL run. */
export function embeddedRunOnly(t: { skip(message?: string): void }): boolean {
  if (EMBEDDED_RUN_ONLY) t.skip(EMBEDDED_RUN_ONLY);
  return EMBEDDED_RUN_ONLY !== false;
}

/** Servers on a shared PostgreSQL must be given the API-key secret (MCPWORKS_SECRET_KEY); tests use this one. */
export const TEST_SECRET_KEY = 'mcpworks-test-secret-key-0123456789abcdef';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
/** What the content of a new embedded database depends on. */
const TEMPLATE_SOURCES = ['src/store/migrations.ts', 'src/store/database.ts', 'node_modules/@electric-sql/pglite/package.json'];
let template: Promise<string> | undefined;

/**
 * A test server's new embedded database is a copy of one made once per content of the migrations
 * (.build/test-pglite-<hash>): PGlite's initdb and the migrations take seconds of CPU, and the suite
 * starts dozens of servers. The server still opens it and runs its migrations (none is left to
 * apply); migrating an empty database is tested in src/store/database.test.ts and by every test that
 * brings its own data dir.
 */
export async function seedEmbeddedDatabase(dataDir: string): Promise<void> {
  cpSync(await prepareEmbeddedTemplate(), path.join(dataDir, 'pglite'), { recursive: true });
}

/** Makes the template if it is not there yet. scripts/test.sh calls it once before the test files start, so parallel files do not each make it. */
export function prepareEmbeddedTemplate(): Promise<string> {
  template ??= (sweepStaleTestDirs(), embeddedTemplate());
  return template;
}

async function embeddedTemplate(): Promise<string> {
  const hash = createHash('sha256');
  for (const file of TEMPLATE_SOURCES) hash.update(readFileSync(path.join(repoRoot, file)));
  const dir = path.join(repoRoot, '.build', `test-pglite-${hash.digest('hex').slice(0, 16)}`);
  if (existsSync(dir)) return dir;
  mkdirSync(path.dirname(dir), { recursive: true });
  const staging = mkdtempSync(path.join(path.dirname(dir), '.test-pglite-'));
  try {
    const database = await openDatabase({ dataDir: staging });
    await database.close();
    // Test files run in parallel processes: the first rename wins, the others find it there.
    renameSync(path.join(staging, 'pglite'), dir);
    // Templates of earlier migrations are of no further use.
    for (const name of readdirSync(path.dirname(dir))) {
      if (name.startsWith('test-pglite-') && name !== path.basename(dir))
        rmSync(path.join(path.dirname(dir), name), { recursive: true, force: true });
    }
  } catch (error) {
    if (!existsSync(dir)) throw error;
  } finally {
    rmSync(staging, { recursive: true, force: true });
  }
  return dir;
}

/** `log`: where the server's log lines go (at debug level), for tests that read them; else TEST_LOG_LEVEL (silent). */
export async function startTestServer(overrides: Partial<ServerConfig> = {}, log?: DestinationStream): Promise<TestServer> {
  const dataDir = overrides.dataDir ?? mkdtempSync(path.join(testDataRoot(), 'mcpworks-test-'));
  const databaseUrl = 'databaseUrl' in overrides ? overrides.databaseUrl : await freshDatabaseUrl();
  if (!overrides.dataDir && !databaseUrl) await seedEmbeddedDatabase(dataDir);
  // The sandbox's default switches (a test passes its own as `sandbox`) and npm's share of the environment, as `serve` reads it.
  const npm = { environment: npmPassThrough(process.env), ...(process.env.PATH ? { searchPath: process.env.PATH } : {}), ...overrides.npm };
  const server = await startServer(
    {
      host: '127.0.0.1',
      port: 0,
      dataDir,
      databaseUrl,
      tiers: DEFAULT_TIERS,
      // What an unset environment gives (the same parse as `serve`), not the constant: the
      // network-off default is then tested through the path a real start takes.
      sandbox: sandboxFromEnv({}),
      // Test files share two cores: a schema check waiting for a worker behind other files' load
      // is not what they test (schema-guard and schema-abuse test the wait bound with their own).
      schemas: { maxWaitMs: 120_000, nice: 0 },
      ...(databaseUrl ? { secretKey: TEST_SECRET_KEY } : {}),
      ...overrides,
      npm,
    },
    log ? createLogger('debug', log) : createLogger(process.env.TEST_LOG_LEVEL ?? 'silent'),
  );
  inProcess.set(server.url, server);
  return {
    url: server.url,
    server,
    dataDir,
    databaseUrl,
    async stop() {
      inProcess.delete(server.url);
      await server.close();
      if (!overrides.dataDir) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export interface TestAccount {
  email: string;
  password: string;
  accountId: string;
  token: string;
  key: string;
}

export async function postJson(
  url: string,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: any; headers: Headers }> {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null, headers: response.headers };
}

/** Servers started in this process by startTestServer, by URL: createAccount seeds their accounts. */
const inProcess = new Map<string, RunningServer>();
const TEST_PASSWORD = 'correct horse battery';
/** TEST_PASSWORD's stored hash, made once per process by the real KDF and shared by seeded accounts. */
let seededPasswordHash: Promise<string> | undefined;

/**
 * An account with one all-scope API key and a web session (`token`), as registering and signing in
 * make them. On a server this process started, the account and its session are written through the
 * server's own store, with a password hash made once per process: the password KDF (scrypt, in
 * worker processes at a lower priority) took seconds per account beside the other test files, and
 * registering is not what the callers test (accounts-http and credentials test it, over HTTP). The
 * key is still made over HTTP with the session. Elsewhere (a server in a child process), and from
 * createAccountOverHttp, it goes through /register and /login.
 */
export async function createAccount(base: string, keyOptions: Record<string, unknown> = {}): Promise<TestAccount> {
  const server = inProcess.get(base);
  if (!server) return createAccountOverHttp(base, keyOptions);
  const email = `user-${randomBytes(4).toString('hex')}@example.com`;
  seededPasswordHash ??= hashSecret(TEST_PASSWORD);
  // As AccountService.register and login write them: a pro_trial account ends its trial in TRIAL_DAYS, a session lasts 30 days.
  const trialEndsAt = DEFAULT_TIER === 'pro_trial' ? new Date(Date.now() + TRIAL_DAYS * 86_400_000) : null;
  const account = await server.services.accountsStore.createAccount({
    email,
    passwordHash: await seededPasswordHash,
    tier: DEFAULT_TIER,
    trialEndsAt,
  });
  if (!account) throw new Error(`seeding account ${email} failed`);
  const token = randomHex(32);
  await server.services.accountsStore.createWebSession(sha256Hex(token), account.id, new Date(Date.now() + 30 * 86_400_000));
  const key = await postJson(`${base}/api/keys`, { name: 'test', ...keyOptions }, { authorization: `Bearer ${token}` });
  if (key.status !== 201) throw new Error(`key failed: ${JSON.stringify(key.body)}`);
  return { email, password: TEST_PASSWORD, accountId: account.id, token, key: key.body.key };
}

/** Registers over HTTP, logs in and creates one all-scope API key (the password KDF runs twice). */
export async function createAccountOverHttp(base: string, keyOptions: Record<string, unknown> = {}): Promise<TestAccount> {
  const email = `user-${randomBytes(4).toString('hex')}@example.com`;
  const password = TEST_PASSWORD;
  const registered = await postJson(`${base}/api/register`, { email, password });
  if (registered.status !== 201) throw new Error(`register failed: ${JSON.stringify(registered.body)}`);
  const login = await postJson(`${base}/api/login`, { email, password });
  const key = await postJson(`${base}/api/keys`, { name: 'test', ...keyOptions }, { authorization: `Bearer ${login.body.token}` });
  if (key.status !== 201) throw new Error(`key failed: ${JSON.stringify(key.body)}`);
  return { email, password, accountId: registered.body.account_id, token: login.body.token, key: key.body.key };
}

export async function createKey(base: string, account: TestAccount, options: Record<string, unknown>): Promise<string> {
  const key = await postJson(`${base}/api/keys`, { name: 'extra', ...options }, { authorization: `Bearer ${account.token}` });
  if (key.status !== 201) throw new Error(`key failed: ${JSON.stringify(key.body)}`);
  return key.body.key;
}

/** The tool-call surface shared by the v1 and v2 SDK clients. */
/** v1 = the v1 SDK (2025 protocol); v2 = the v2 SDK pinned to 2026-07-28; v2-legacy = the v2 SDK's default 2025 handshake. */
export type ClientEra = 'v1' | 'v2' | 'v2-legacy';
export const MODERN_PROTOCOL = '2026-07-28';

export interface McpTestClient {
  era: ClientEra;
  listTools(): Promise<{ tools: Array<{ name: string; description?: string; inputSchema: any; annotations?: any }> }>;
  /** `options.signal`: aborting it cancels the call as the SDK does (2025 era: notifications/cancelled; 2026: the call's stream closed). */
  callTool(
    name: string,
    args?: Record<string, unknown>,
    options?: { signal?: AbortSignal },
  ): Promise<{ isError?: boolean; content: Array<{ type: string; text?: string }>; structuredContent?: unknown }>;
  close(): Promise<void>;
  sessionId(): string | undefined;
}

export async function connect(
  url: string,
  key: string | undefined,
  era: ClientEra = 'v2',
  extraHeaders: Record<string, string> = {},
  /** The transport's fetch (e.g. one that sends some requests to another node). */
  fetch?: typeof globalThis.fetch,
): Promise<McpTestClient> {
  const headers: Record<string, string> = { ...(key ? { authorization: `Bearer ${key}` } : {}), ...extraHeaders };
  // The v1 and v2 SDK clients have the same call surface for what the tests use.
  const wrap = (
    client: {
      listTools(): Promise<unknown>;
      callTool(params: { name: string; arguments: Record<string, unknown> }, ...rest: unknown[]): Promise<unknown>;
      close(): Promise<void>;
    },
    transport: { sessionId?: string | undefined },
  ): McpTestClient => ({
    era,
    listTools: () => client.listTools() as never,
    // The v1 SDK takes its request options third (after a result schema), the v2 SDK second.
    callTool: (name, args = {}, options) =>
      (options
        ? era === 'v1'
          ? client.callTool({ name, arguments: args }, undefined, options)
          : client.callTool({ name, arguments: args }, options)
        : client.callTool({ name, arguments: args })) as never,
    close: () => client.close(),
    sessionId: () => transport.sessionId,
  });
  if (era === 'v1') {
    // Loaded by the first v1 connection: ~0.1 s of CPU at every test file's start otherwise, and most never use it.
    const [{ Client: ClientV1 }, { StreamableHTTPClientTransport: TransportV1 }] = await Promise.all([
      import('@modelcontextprotocol/sdk/client/index.js'),
      import('@modelcontextprotocol/sdk/client/streamableHttp.js'),
    ]);
    const transport = new TransportV1(new URL(url), { requestInit: { headers }, ...(fetch ? { fetch } : {}) });
    const client = new ClientV1({ name: 'mcpworks-test-v1', version: '1.0.0' });
    await client.connect(transport);
    return wrap(client as never, transport);
  }
  const transport = new TransportV2(new URL(url), { requestInit: { headers }, ...(fetch ? { fetch } : {}) });
  const client = new ClientV2(
    { name: 'mcpworks-test-v2', version: '1.0.0' },
    era === 'v2' ? { versionNegotiation: { mode: { pin: MODERN_PROTOCOL } } } : {},
  );
  await client.connect(transport);
  return wrap(client as never, transport);
}

/** Parses a tool result's JSON text (for errors, the one shape `{error, error_type, …}`; see errorOf). */
export function parseResult(result: { isError?: boolean; content: Array<{ type: string; text?: string }> }): any {
  const text = result.content.find((c) => c.type === 'text')?.text ?? '';
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

export async function callOk(client: McpTestClient, name: string, args: Record<string, unknown> = {}): Promise<any> {
  const result = await client.callTool(name, args);
  if (result.isError) throw new Error(`${name} failed: ${JSON.stringify(parseResult(result))}`);
  return parseResult(result);
}

export async function callError(
  client: McpTestClient,
  name: string,
  args: Record<string, unknown> = {},
): Promise<{ type: string; message: string; [k: string]: unknown }> {
  const result = await client.callTool(name, args);
  if (!result.isError) throw new Error(`${name} unexpectedly succeeded: ${JSON.stringify(parseResult(result))}`);
  return errorOf(parseResult(result));
}

/**
 * The one error shape of every answer (`{"error": message, "error_type": T, …details}`), checked
 * and read as `{type, message, …details}`; anything else throws.
 */
export function errorOf(body: any): { type: string; message: string; [k: string]: unknown } {
  if (typeof body?.error !== 'string' || typeof body?.error_type !== 'string')
    throw new Error(`not the one error shape: ${JSON.stringify(body)}`);
  return { ...body, type: body.error_type, message: body.error };
}

/**
 * One raw MCP POST through node:http (fetch cannot set Host), answering the status and the
 * JSON-RPC message (taken from the last SSE `data:` line when the server streamed).
 */
export async function rawMcpPost(
  url: string,
  key: string,
  message: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: any }> {
  const { request } = await import('node:http');
  const text = await new Promise<{ status: number; data: string }>((resolve, reject) => {
    const req = request(
      url,
      {
        method: 'POST',
        headers: {
          authorization: `Bearer ${key}`,
          'content-type': 'application/json',
          accept: 'application/json, text/event-stream',
          'mcp-protocol-version': '2025-06-18',
          ...headers,
        },
      },
      (res) => {
        let data = '';
        res.on('data', (chunk) => (data += chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, data }));
      },
    );
    req.on('error', reject);
    req.end(JSON.stringify(message));
  });
  const payload = text.data.includes('data:') ? text.data.split('data:').pop()!.trim() : text.data;
  let body: unknown = payload;
  try {
    body = payload ? JSON.parse(payload) : null;
  } catch {
    // Not JSON: the caller asserts on the raw text.
  }
  return { status: text.status, body };
}
