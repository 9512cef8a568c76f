/**
 * What the agent test files share: a test file's server on its own data dir (a fresh PostgreSQL
 * database when the run has one, else a seeded embedded one), a new account with a namespace and
 * its create client, and a bounded wait on state.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import pg from 'pg';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { ServerConfig } from '../app/config.js';
import {
  callOk,
  connect,
  createAccount,
  freshDatabaseUrl,
  seedEmbeddedDatabase,
  startTestServer,
  type McpTestClient,
  type TestAccount,
  type TestServer,
} from './harness.js';

export interface Owner {
  account: TestAccount;
  ns: string;
  create: McpTestClient;
}

/** A new account (moved to `tier` when given) with a namespace `{prefix}-xxxxxxxx` made through its create client. */
export async function newOwner(on: TestServer, prefix: string, tier?: string): Promise<Owner> {
  const account = await createAccount(on.url);
  if (tier) await on.server.services.accounts.setTier(account.email, tier);
  const ns = `${prefix}-${Math.random().toString(36).slice(2, 10)}`;
  const create = await connect(`${on.url}/mcp/create/${ns}`, account.key);
  await callOk(create, 'make_namespace', { name: ns });
  return { account, ns, create };
}

/**
 * A server on a data dir of its own, started again on the same dir and database by `restart`
 * (what a test of persistence across restarts needs). Call `start` in `before`, `stop` in `after`.
 */
export function fileServer(prefix: string, given: Partial<ServerConfig> = {}) {
  let overrides = given;
  let dataDir: string | undefined;
  let databaseUrl: string | undefined;
  let current: TestServer | undefined;
  const boot = async () => (current = await startTestServer({ dataDir, databaseUrl, ...overrides }));
  return {
    get server(): TestServer {
      if (!current) throw new Error('the file server is not started');
      return current;
    },
    async start(): Promise<TestServer> {
      dataDir = mkdtempSync(path.join(tmpdir(), `mcpworks-${prefix}-`));
      databaseUrl = await freshDatabaseUrl();
      if (!databaseUrl) await seedEmbeddedDatabase(dataDir);
      return boot();
    },
    /** Stops the server, runs `between` (e.g. a look at the data dir at rest), starts it again (with `changes` to its configuration from then on). */
    async restart(between?: () => void | Promise<void>, changes: Partial<ServerConfig> = {}): Promise<TestServer> {
      await current?.stop();
      overrides = { ...overrides, ...changes };
      await between?.();
      return boot();
    },
    async stop(): Promise<void> {
      await current?.stop();
      current = undefined;
      if (dataDir) rmSync(dataDir, { recursive: true, force: true });
    },
    get dataDir(): string {
      if (!dataDir) throw new Error('the file server is not started');
      return dataDir;
    },
    get databaseUrl(): string | undefined {
      return databaseUrl;
    },
    /**
     * `secret` is stored nowhere in plain text: on PostgreSQL in no row of any table (each row as
     * text), on the embedded database in no file of the data dir (tables, WAL and all). Run it
     * with the server stopped (inside `restart`'s `between`) so that the embedded files are complete.
     */
    async assertNotAtRest(secret: string): Promise<void> {
      if (databaseUrl) await assertNotInTables(databaseUrl, [secret]);
      else assertNotInFiles(dataDir!, [secret]);
    },
  };
}

/** Reads until `check` holds (state, not time: the bound only keeps a broken build from hanging). */
export async function until<T>(
  what: string,
  read: () => Promise<T>,
  check: (value: T) => boolean,
  rounds = 600,
  everyMs = 100,
): Promise<T> {
  let last: T | undefined;
  for (let i = 0; i < rounds; i++) {
    last = await read();
    if (check(last)) return last;
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
  assert.fail(`${what}: still ${JSON.stringify(last)}`);
}

/** None of `secrets` is in any row of any table of the database at `url` (each row as text). */
export async function assertNotInTables(url: string, secrets: readonly string[]): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const tables = (await client.query("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).rows as Array<{ tablename: string }>;
    assert.ok(tables.length > 10, 'the tables were listed');
    for (const { tablename } of tables)
      for (const secret of secrets) {
        const { rows } = await client.query(`SELECT count(*)::int AS n FROM "${tablename}" t WHERE strpos(t::text, $1) > 0`, [secret]);
        assert.equal((rows[0] as { n: number }).n, 0, `plain text in table ${tablename}`);
      }
  } finally {
    await client.end();
  }
}

/** None of `secrets` is in any file under `dir` (the embedded database's tables, WAL and all): look with its server stopped. */
export function assertNotInFiles(dir: string, secrets: readonly string[]): void {
  const needles = secrets.map((secret) => Buffer.from(secret));
  let files = 0;
  const walk = (at: string) => {
    for (const name of readdirSync(at)) {
      const file = path.join(at, name);
      if (statSync(file).isDirectory()) walk(file);
      else {
        files++;
        const bytes = readFileSync(file);
        for (const needle of needles) assert.equal(bytes.indexOf(needle), -1, `plain text in ${file}`);
      }
    }
  };
  walk(dir);
  assert.ok(files > 10, 'the data dir was read');
}
