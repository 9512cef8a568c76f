// test-database: postgres, the operator commands and serve on DATABASE_URL (a PostgreSQL-only path)
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  callOk,
  connect,
  EMBEDDED_RUN_ONLY,
  freshDatabaseUrl,
  seedEmbeddedDatabase,
  startTestServer,
  TEST_SECRET_KEY,
  testDataRoot,
} from '../test-support/harness.js';
import { cliBatch, cliCommand, type CliResult } from '../test-support/cli-command.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

function cli(args: string[], env: Record<string, string | undefined>): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...cliCommand(), ...args], {
      cwd: repoRoot,
      env: { ...process.env, LOG_LEVEL: 'warn', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

let dataDir: string;
let databaseUrl: string | undefined;
let env: Record<string, string | undefined>;

before(async () => {
  dataDir = mkdtempSync(path.join(testDataRoot(), 'mcpworks-cli-'));
  databaseUrl = await freshDatabaseUrl();
  if (!databaseUrl) await seedEmbeddedDatabase(dataDir);
  env = { MCPWORKS_DATA_DIR: dataDir, DATABASE_URL: databaseUrl ?? '', MCPWORKS_SECRET_KEY: databaseUrl ? TEST_SECRET_KEY : '' };
});
after(() => rmSync(dataDir, { recursive: true, force: true }));

describe('mcpworks CLI', () => {
  test('--help lists every command', { skip: EMBEDDED_RUN_ONLY }, async () => {
    const result = await cli(['--help'], env);
    assert.equal(result.code, 0);
    for (const command of [
      'serve',
      'account create',
      'account set-tier',
      'account list',
      'key create',
      'key list',
      'key revoke',
      'sandbox run',
      'cluster',
    ])
      assert.match(result.stdout, new RegExp(command));
  });

  test('account create, set-tier and key create work against the data dir the server then uses', async () => {
    const created = await cli(['account', 'create', '--email', 'ops@example.com', '--password', 'operator password', '--tier', 'pro'], env);
    assert.equal(created.code, 0, created.stderr);
    assert.equal(JSON.parse(created.stdout).tier, 'pro');

    const tier = await cli(['account', 'set-tier', '--email', 'ops@example.com', '--tier', 'enterprise'], env);
    assert.equal(tier.code, 0, tier.stderr);
    assert.equal(JSON.parse(tier.stdout).tier, 'enterprise');

    const key = await cli(['key', 'create', '--email', 'ops@example.com', '--name', 'ci'], env);
    assert.equal(key.code, 0, key.stderr);
    assert.match(key.stdout, /^mcpw_[0-9a-f]{64}\n$/, 'only the raw key on stdout');

    const server = await startTestServer({ dataDir, databaseUrl });
    try {
      const client = await connect(`${server.url}/mcp/create/ops`, key.stdout.trim());
      assert.equal((await callOk(client, 'make_namespace', { name: 'ops' })).name, 'ops');
      await client.close();
    } finally {
      await server.stop();
    }
  });

  test("account list, key list and key revoke; a key for another account's namespace is refused; last use is recorded, coalesced", async () => {
    // The account and namespace of the test above. One process for these (cliBatch): the commands'
    // own process, its output and status, are the subject of the test above and of the revokes below.
    const [other, taken, future, accounts, made, listed] = await cliBatch(
      [
        ['account', 'create', '--email', 'other@example.com', '--password', 'operator password'],
        ['key', 'create', '--email', 'other@example.com', '--namespace', 'ops'],
        ['key', 'create', '--email', 'other@example.com', '--namespace', 'not-made-yet'],
        ['account', 'list'],
        ['key', 'create', '--email', 'ops@example.com', '--name', 'short-lived'],
        ['key', 'list', '--email', 'ops@example.com'],
      ],
      env,
    );
    assert.equal(other!.code, 0, other!.stderr);
    assert.equal(taken!.code, 1);
    assert.match(taken!.stderr, /conflict: namespace name 'ops' is not available/);
    assert.equal(future!.code, 0, future!.stderr);

    assert.equal(accounts!.code, 0, accounts!.stderr);
    const rows = accounts!.stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line));
    const ops = rows.find((row) => row.email === 'ops@example.com');
    assert.deepEqual([ops.tier, ops.namespaces, ops.keys], ['enterprise', 1, 1]);
    assert.deepEqual(rows.find((row) => row.email === 'other@example.com').keys, 1, 'the refused key was not made');

    assert.equal(made!.code, 0, made!.stderr);
    assert.match(made!.stdout, /^mcpw_[0-9a-f]{64}\n$/, 'only the raw key on stdout');
    const key = made!.stdout.trim();
    assert.equal(listed!.code, 0, listed!.stderr);
    const keys = listed!.stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line));
    const mine = keys.find((row) => row.name === 'short-lived');
    assert.equal(mine.last_used_at, null);
    assert.ok(key.startsWith(mine.prefix) && !listed!.stdout.includes(key), 'the prefix, never the key');

    const server = await startTestServer({ dataDir, databaseUrl });
    try {
      // While the server holds the data dir, the account's own view: GET /api/keys with a login.
      const login = await fetch(`${server.url}/login`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ email: 'ops@example.com', password: 'operator password' }),
      });
      const token = (await login.json()).token;
      const lastUsed = async () =>
        (
          (await (await fetch(`${server.url}/api/keys`, { headers: { authorization: `Bearer ${token}` } })).json()).keys as Array<{
            name: string;
            last_used_at: string | null;
          }>
        ).find((row) => row.name === 'short-lived')!.last_used_at;
      const client = await connect(`${server.url}/mcp/create/ops`, key);
      const used = await lastUsed();
      assert.ok(used, 'set by the first use');
      // More requests within the minute write nothing more (one write per key a minute, not per request).
      await callOk(client, 'list_services');
      await callOk(client, 'list_services');
      assert.equal(await lastUsed(), used);
      await client.close();
      // The HTTP route that makes keys refuses another account's namespace the same way.
      const otherLogin = await fetch(`${server.url}/login`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ email: 'other@example.com', password: 'operator password' }),
      });
      const otherToken = (await otherLogin.json()).token;
      const refused = await fetch(`${server.url}/api/keys`, {
        method: 'POST',
        headers: { authorization: `Bearer ${otherToken}`, 'content-type': 'application/json' },
        body: JSON.stringify({ name: 'sneaky', namespace: 'ops' }),
      });
      assert.equal(refused.status, 409);
      assert.equal((await refused.json()).error_type, 'conflict');
    } finally {
      await server.stop();
    }

    const revoked = await cli(['key', 'revoke', '--email', 'ops@example.com', '--id', mine.id], env);
    assert.equal(revoked.code, 0, revoked.stderr);
    const gone = await cli(['key', 'revoke', '--email', 'ops@example.com', '--id', mine.id], env);
    assert.equal(gone.code, 1);
    assert.match(gone.stderr, /not_found/);
  });

  test("an operator host whose clock is days off: a key's --expires-in-days and a trial's end are on the database's clock", async (t) => {
    if (!databaseUrl) return t.skip("PostgreSQL only: the embedded database reads the command process's own clock");
    // The command's process runs three days behind the database (test-support/skewed-clock.mjs).
    const skewed = {
      ...env,
      NODE_OPTIONS: `--import=${path.join(repoRoot, 'src/test-support/skewed-clock.mjs')}`,
      MCPWORKS_TEST_CLOCK_SKEW_MS: String(-3 * 86_400_000),
    };
    const [made, key, accounts, keys] = await cliBatch(
      [
        ['account', 'create', '--email', 'behind@example.com', '--password', 'operator password', '--tier', 'pro_trial'],
        ['key', 'create', '--email', 'behind@example.com', '--name', 'two-days', '--expires-in-days', '2'],
        ['account', 'list'],
        ['key', 'list', '--email', 'behind@example.com'],
      ],
      skewed,
    );
    for (const r of [made, key, accounts, keys]) assert.equal(r!.code, 0, r!.stderr);
    const near = (iso: string, expected: number, what: string) =>
      assert.ok(
        Math.abs(new Date(iso).getTime() - expected) < 3_600_000,
        `${what}: ${iso}, expected about ${new Date(expected).toISOString()}`,
      );
    const account = accounts!.stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line))
      .find((row) => row.email === 'behind@example.com');
    near(account.trial_ends_at, Date.now() + 14 * 86_400_000, "the trial ends 14 days from the database's now");
    const twoDays = JSON.parse(keys!.stdout.trim().split('\n')[0]!);
    near(twoDays.expires_at, Date.now() + 2 * 86_400_000, "the key expires 2 days from the database's now, not a day ago");
  });

  test("a database too slow to read its clock: the command says so and computes expiry on its host's clock", async (t) => {
    if (!databaseUrl) return t.skip('PostgreSQL only (as above)');
    // Three days behind, and every Date.now() a second and a half on: no round trip is quick enough.
    const slow = {
      ...env,
      NODE_OPTIONS: `--import=${path.join(repoRoot, 'src/test-support/skewed-clock.mjs')}`,
      MCPWORKS_TEST_CLOCK_SKEW_MS: String(-3 * 86_400_000),
      MCPWORKS_TEST_CLOCK_STEP_MS: '1500',
    };
    const [made, key] = await cliBatch(
      [
        ['account', 'create', '--email', 'slow-clock@example.com', '--password', 'operator password', '--tier', 'pro_trial'],
        ['key', 'create', '--email', 'slow-clock@example.com', '--name', 'host-clock', '--expires-in-days', '2'],
      ],
      slow,
    );
    for (const r of [made, key]) {
      assert.equal(r!.code, 0, r!.stderr);
      assert.match(r!.stderr, /too slowly to read its clock; expiry is computed on this host's clock/);
    }
    const [keys] = await cliBatch([['key', 'list', '--email', 'slow-clock@example.com']], env);
    const expires = new Date(JSON.parse(keys!.stdout.trim().split('\n')[0]!).expires_at).getTime();
    // Two days from the host's now, three days behind: about a day ago (never two days from the database's).
    assert.ok(Math.abs(expires - (Date.now() - 86_400_000)) < 6 * 3_600_000, new Date(expires).toISOString());
  });

  test('bad input is a clear message and a non-zero exit', async () => {
    // db: the refusal comes from the database (an unknown account or key); the others are argument
    // and input checks, the same whatever the database: in the PostgreSQL run only the former run.
    const cases: Array<[string[], RegExp, db?: 'db']> = [
      [['account', 'create', '--email', 'not-an-email', '--password', 'long enough'], /email/],
      [['account', 'create', '--email', 'x@example.com'], /--password/],
      [['account', 'create', '--email', 'y@example.com', '--password', 'long enough', '--tier', 'gold'], /unknown tier/],
      [['account', 'set-tier', '--email', 'nobody@example.com', '--tier', 'pro'], /no account/, 'db'],
      [['key', 'create', '--email', 'nobody@example.com'], /no account/, 'db'],
      [['key', 'create'], /--email/],
      [['key', 'list'], /key list needs --email/],
      [['key', 'revoke', '--email', 'ops@example.com'], /--id/],
      [['key', 'revoke', '--email', 'ops@example.com', '--id', 'not-a-key-id'], /not_found/, 'db'],
      [['account', 'create', '--bogus'], /bogus/],
      [['frobnicate'], /unknown command/],
    ];
    // The matrix through the command line's own main in one process (cliBatch); the process's own
    // exit status and output for a refusal of each kind (an argument, the database) just below.
    const run = cases.filter(([, , db]) => db || !EMBEDDED_RUN_ONLY);
    const results = await cliBatch(
      run.map(([args]) => args),
      env,
    );
    for (const [i, [args, pattern]] of run.entries()) {
      const result = results[i]!;
      assert.equal(result.code, 1, args.join(' '));
      assert.match(result.stderr, pattern, args.join(' '));
      assert.doesNotMatch(result.stderr, /\n\s+at /, 'no stack trace');
    }
    if (!EMBEDDED_RUN_ONLY) {
      const unknown = await cli(['frobnicate'], env);
      assert.equal(unknown.code, 1);
      assert.equal(unknown.stderr, 'mcpworks: unknown command "frobnicate"; see mcpworks --help\n');
    }
    const duplicate = await cli(['account', 'create', '--email', 'ops@example.com', '--password', 'operator password'], env);
    assert.equal(duplicate.code, 1);
    assert.match(duplicate.stderr, /already exists/);
    assert.doesNotMatch(duplicate.stderr, /\n\s+at /, 'no stack trace');
  });

  test('with the embedded database, operator commands refuse while a server holds the data dir', { skip: EMBEDDED_RUN_ONLY }, async () => {
    // Always the embedded database: the lock exists only there.
    const embeddedDir = mkdtempSync(path.join(testDataRoot(), 'mcpworks-cli-lock-'));
    await seedEmbeddedDatabase(embeddedDir);
    const embeddedEnv = { MCPWORKS_DATA_DIR: embeddedDir, DATABASE_URL: '' };
    const server = await startTestServer({ dataDir: embeddedDir, databaseUrl: undefined });
    try {
      const result = await cli(['account', 'create', '--email', 'late@example.com', '--password', 'long enough'], embeddedEnv);
      assert.equal(result.code, 1);
      assert.match(result.stderr, /in use by mcpworks serve/);
      assert.equal((await fetch(`${server.url}/healthz`)).status, 200, 'server unaffected');
    } finally {
      await server.stop();
    }
    const afterStop = await cli(['account', 'create', '--email', 'late@example.com', '--password', 'long enough'], embeddedEnv);
    assert.equal(afterStop.code, 0, afterStop.stderr);
    rmSync(embeddedDir, { recursive: true, force: true });
  });

  test('serve listens, answers /healthz, and shuts down cleanly on SIGTERM', async () => {
    const child = spawn(process.execPath, [...cliCommand(), 'serve', '--port', '0', '--host', '127.0.0.1', '--data-dir', dataDir], {
      cwd: repoRoot,
      env: { ...process.env, DATABASE_URL: databaseUrl ?? '', MCPWORKS_SECRET_KEY: databaseUrl ? TEST_SECRET_KEY : '', LOG_LEVEL: 'info' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let logs = '';
    const url = await new Promise<string>((resolve, reject) => {
      child.stdout.on('data', (d) => {
        logs += d;
        const match = /"url":"(http:\/\/[^"]+)"/.exec(logs);
        if (match) resolve(match[1]!);
      });
      child.on('exit', (code) => reject(new Error(`serve exited early (${code}): ${logs}`)));
    });
    const health = await fetch(`${url}/healthz`);
    assert.equal(health.status, 200);
    assert.equal((await health.json()).status, 'ok');
    for (const line of logs.trim().split('\n')) assert.doesNotThrow(() => JSON.parse(line), 'structured JSON logs');
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    child.kill('SIGTERM');
    assert.equal(await exited, 0);
    assert.match(logs, /mcpworks stopped/);
    if (!databaseUrl) assert.equal(existsSync(path.join(dataDir, 'mcpworks.lock')), false, 'lock released');
  });
});
