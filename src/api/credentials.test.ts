// test-database: postgres, several nodes on one database share keys and sign-in failure counts; concurrent failures
/**
 * Issue 10 item 6: sign-in load must not starve real sign-ins or API keys. Keys are checked with
 * HMAC under the server secret (never the password KDF); sign-ins are throttled per client address
 * and per email before the KDF runs. Attacks come from other loopback addresses (127.0.0.x).
 */
import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { request } from 'node:http';
import path from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { apiKeyPrefix, SIGN_IN_LIMITS } from '../core/accounts.js';
import { DEFAULT_TIERS } from '../core/tiers.js';
import { hashSecret, passwordKdfStats } from '../services/credential-hashing.js';
import { REGISTRATION_LIMITS } from '../services/sign-in-throttle.js';
import { SECRET_FILE } from '../services/server-secret.js';
import {
  connect,
  createAccount,
  createKey,
  EMBEDDED_RUN_ONLY,
  freshDatabaseUrl,
  postJson,
  seedEmbeddedDatabase,
  startTestServer,
  TEST_SECRET_KEY,
  testDataRoot,
  type TestServer,
} from '../test-support/harness.js';
import { configFromEnv } from '../app/config.js';
import { startServer } from '../app/start-server.js';

interface Answer {
  status: number;
  body: any;
  retryAfter: string | undefined;
}

/** A POST from a chosen loopback source address (fetch cannot bind one). */
function postFrom(base: string, from: string, route: string, body: unknown, headers: Record<string, string> = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(
      `${base}${route}`,
      { method: 'POST', localAddress: from, agent: false, headers: { 'content-type': 'application/json', ...headers } },
      (res) => {
        let data = '';
        res.setEncoding('utf8');
        res.on('data', (d) => (data += d));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            body: data ? JSON.parse(data) : null,
            retryAfter: res.headers['retry-after'] as string | undefined,
          }),
        );
      },
    );
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}

const login = (base: string, from: string, email: string, password: string) => postFrom(base, from, '/login', { email, password });
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const PROXY = '127.0.0.11';
const spray = () => `spray-${randomBytes(4).toString('hex')}@example.com`;
const keyed = (secret: string, key: string) =>
  `hmac-sha256$${createHmac('sha256', Buffer.from(secret, 'utf8')).update(key).digest('base64url')}`;

function assertRateLimited(answer: Answer, what: string): void {
  assert.equal(answer.status, 429, `${what}: ${JSON.stringify(answer.body)}`);
  assert.equal(answer.body.error_type, 'rate_limited', what);
  assert.equal(typeof answer.body.retry_after, 'number', what);
  assert.ok(answer.body.retry_after >= 1, what);
  assert.equal(answer.retryAfter, String(answer.body.retry_after), `${what}: Retry-After header`);
}

/** A key works on the real hot path: an MCP session on the create endpoint lists its tools. */
async function keyWorks(base: string, key: string): Promise<boolean> {
  const response = await fetch(`${base}/mcp/create/probe`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
    body: JSON.stringify({
      jsonrpc: '2.0',
      id: 1,
      method: 'initialize',
      params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 't', version: '1' } },
    }),
  });
  await response.text();
  if (response.status === 401) return false;
  assert.equal(response.status, 200);
  const client = await connect(`${base}/mcp/create/probe`, key);
  try {
    assert.ok((await client.listTools()).tools.length > 0);
  } finally {
    await client.close();
  }
  return true;
}

async function storedHash(server: TestServer, accountId: string, prefix: string): Promise<string> {
  const keys = await server.server.services.accountsStore.listKeys(accountId);
  const row = keys.find((k) => k.prefix === prefix);
  assert.ok(row, `key ${prefix} stored`);
  return row.key_hash;
}

/** A key row written the way every key was before migration 7: an scrypt hash. */
async function insertLegacyKey(server: TestServer, accountId: string): Promise<string> {
  const raw = `mcpw_${randomBytes(32).toString('hex')}`;
  await server.server.services.accountsStore.createKey({
    accountId,
    name: 'from before migration 7',
    prefix: apiKeyPrefix(raw),
    keyHash: await hashSecret(raw),
    namespace: null,
    scopes: ['read', 'write', 'execute'],
    expiresAt: null,
  });
  return raw;
}

let server: TestServer;
let secret: string;
before(async () => {
  server = await startTestServer({ http: { trustedProxies: [PROXY] } });
  secret = server.databaseUrl ? TEST_SECRET_KEY : readFileSync(path.join(server.dataDir, SECRET_FILE), 'utf8').trim();
});
after(async () => {
  await server?.stop();
});

describe('sign-in load', () => {
  test('100 concurrent bad sign-ins from one address: real sign-ins, first key uses and /healthz from another go through', async () => {
    const victim = await createAccount(server.url);
    const user = await createAccount(server.url);
    const keyUser = await createAccount(server.url);
    const freshKeys = [keyUser.key, await createKey(server.url, keyUser, {}), await createKey(server.url, keyUser, { scopes: ['read'] })];
    const legacy = await insertLegacyKey(server, keyUser.accountId);

    const attack = Array.from({ length: 100 }, (_, i) =>
      login(
        server.url,
        '127.0.0.2',
        i % 2 ? victim.email : `nobody-${i}-${randomBytes(3).toString('hex')}@example.com`,
        `wrong password ${i}`,
      ),
    );
    // Once the first attacker answer is back, the rest are in the KDF or queued behind it.
    await Promise.race(attack);
    const [health, realLogin, ...keyUses] = await Promise.all([
      fetch(`${server.url}/healthz`),
      login(server.url, '127.0.0.1', user.email, user.password),
      ...[...freshKeys, legacy].map((key) => keyWorks(server.url, key)),
    ]);
    const answers = await Promise.all(attack);

    assert.equal(health.status, 200, '/healthz answers during the attack');
    assert.equal(realLogin.status, 200, `a real sign-in from another address: ${JSON.stringify(realLogin.body)}`);
    assert.deepEqual(keyUses, [true, true, true, true], 'every key works on first use, the pre-migration one too');
    assert.equal(
      await storedHash(server, keyUser.accountId, apiKeyPrefix(legacy)),
      keyed(secret, legacy),
      'the old key is now stored keyed',
    );

    let checked = 0;
    for (const [i, answer] of answers.entries()) {
      if (answer.status === 401) {
        checked++;
        assert.equal(answer.body.error_type, 'unauthorized');
      } else {
        assertRateLimited(answer, `attempt ${i}`);
      }
    }
    // The password KDF ran only for the address's free failures (and what was in it beside the last).
    assert.ok(checked >= 1, 'some attempts were checked');
    assert.ok(checked <= SIGN_IN_LIMITS.clientFreeFailures + SIGN_IN_LIMITS.clientConcurrent - 1, `${checked} attempts reached the KDF`);
    assert.ok(
      answers.some((a) => /at once from your address/.test(a.body.error)),
      'beyond its waiting room, an address is refused at once',
    );
    const onVictim = answers.filter((a, i) => i % 2 === 1 && a.status === 401).length;
    assert.ok(onVictim <= SIGN_IN_LIMITS.accountFreeFailures, `${onVictim} attempts on one email reached the KDF`);

    assert.equal((await fetch(`${server.url}/healthz`)).status, 200);
    const usage = await fetch(`${server.url}/api/usage`, { headers: { authorization: `Bearer ${user.token}` } });
    assert.equal((await usage.json()).executions, 0, 'sign-ins and key checks are never metered');
  });

  test(
    'sign-up floods: from many addresses they queue behind sign-ins and overflow with 429; real sign-in, key use and /healthz go through',
    { skip: EMBEDDED_RUN_ONLY },
    async () => {
      const user = await createAccount(server.url);
      const before = await (await fetch(`${server.url}/api/usage`, { headers: { authorization: `Bearer ${user.key}` } })).json();
      const created: number[] = [];
      const signUps = Array.from({ length: 60 }, (_, i) =>
        postFrom(server.url, `127.0.2.${i + 1}`, '/register', {
          email: `flood-${i}-${randomBytes(3).toString('hex')}@example.com`,
          password: 'long enough pw',
        }).then((answer) => {
          if (answer.status === 201) created.push(i);
          return answer;
        }),
      );
      // Wait (bounded) until sign-ups are queued for the KDF, then sign in for real.
      const deadline = Date.now() + 60_000;
      while (passwordKdfStats().waiting < 10 && Date.now() < deadline) await sleep(10);
      const waitingAtLogin = passwordKdfStats().waiting;
      assert.ok(waitingAtLogin >= 10, `sign-ups queued for the KDF: ${waitingAtLogin}`);
      const doneBefore = created.length;
      const realLogin = await login(server.url, '127.0.0.1', user.email, user.password);
      const doneDuring = created.length - doneBefore;
      assert.equal(realLogin.status, 200, JSON.stringify(realLogin.body));
      // The sign-in went ahead of the queued sign-ups: only those already hashing finished meanwhile.
      assert.ok(doneDuring < waitingAtLogin, `${doneDuring} sign-ups finished while the sign-in waited (${waitingAtLogin} were queued)`);
      assert.equal(await keyWorks(server.url, user.key), true);
      assert.equal((await fetch(`${server.url}/healthz`)).status, 200);
      // The hashes run in worker processes at a lower CPU priority than the server, not on its threads.
      const niceness = (pid: number) => Number(readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')[16]);
      const workers = passwordKdfStats().workers;
      assert.ok(workers.length >= 1 && !workers.includes(process.pid), JSON.stringify(workers));
      // Every thread of each (V8's GC and compiler threads were started before the worker lowered itself).
      for (const pid of workers) {
        for (const tid of readdirSync(`/proc/${pid}/task`)) {
          const nice = Number(readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8').split(') ')[1]!.split(' ')[16]);
          assert.ok(nice > niceness(process.pid), `KDF worker ${pid}, thread ${tid} at niceness ${nice}`);
        }
      }

      const answers = await Promise.all(signUps);
      // Beyond the sign-ups' own (global) queue: 429 at once, before the KDF.
      const refused = answers.filter((a) => a.status !== 201);
      assert.ok(refused.length >= 1, 'some sign-ups were refused');
      for (const answer of refused) {
        assertRateLimited(answer, 'sign-up flood');
        assert.match(answer.body.error, /too many sign-ups at once/);
      }
      const usage = await (await fetch(`${server.url}/api/usage`, { headers: { authorization: `Bearer ${user.key}` } })).json();
      assert.equal(usage.executions, before.executions, 'sign-ups and sign-ins are never metered');
    },
  );

  test(
    'sign-ups from one address are rationed before the KDF; a taken email spends nothing; other addresses unaffected',
    { skip: EMBEDDED_RUN_ONLY },
    async () => {
      const from = '127.0.3.1';
      const signUp = (email = `ration-${randomBytes(4).toString('hex')}@example.com`) =>
        postFrom(server.url, from, '/register', { email, password: 'long enough pw' });
      const first = await signUp();
      assert.equal(first.status, 201);
      // A taken email answers 409 and spends no sign-up.
      for (let i = 0; i < 3; i++) assert.equal((await signUp(first.body.email)).status, 409);
      // Sign up ten at a time (the address's waiting room) until refused: the burst, plus what
      // refilled (one per refillSeconds) while a slow machine hashed them.
      const started = performance.now();
      let made = 1;
      let over: Answer | undefined;
      while (!over && made <= REGISTRATION_LIMITS.burst + 20) {
        const batch = await Promise.all(Array.from({ length: 10 }, () => signUp()));
        for (const answer of batch) {
          if (answer.status === 201) made++;
          else over = answer;
        }
      }
      assert.ok(over, `${made} sign-ups from one address, none refused`);
      assertRateLimited(over, 'over the sign-up ration');
      assert.match(over.body.error, /too many sign-ups from your address/);
      const refilled = Math.ceil((performance.now() - started) / 1000 / REGISTRATION_LIMITS.refillSeconds);
      assert.ok(
        made >= REGISTRATION_LIMITS.burst && made <= REGISTRATION_LIMITS.burst + refilled,
        `${made} sign-ups reached the KDF (${refilled} refilled)`,
      );
      // Its sign-ins are not affected, nor are other addresses' sign-ups.
      assert.equal((await login(server.url, from, first.body.email, 'long enough pw')).status, 200);
      assert.equal(
        (
          await postFrom(server.url, '127.0.3.2', '/register', {
            email: `other-${randomBytes(4).toString('hex')}@example.com`,
            password: 'long enough pw',
          })
        ).status,
        201,
      );
      assert.equal((await fetch(`${server.url}/healthz`)).status, 200);
    },
  );

  test('per email: failures back off across addresses, unknown emails alike, other accounts unaffected; a success clears them', async () => {
    const target = await createAccount(server.url);
    const bystander = await createAccount(server.url);
    for (let i = 0; i < SIGN_IN_LIMITS.accountFreeFailures; i++) {
      const wrong = await login(server.url, '127.0.0.4', target.email, 'not the password');
      assert.equal(wrong.status, 401, `failure ${i + 1} is checked`);
    }
    // Locked even with the right password, from another address; the bystander signs in from the first.
    const locked = await login(server.url, '127.0.0.5', target.email, target.password);
    assertRateLimited(locked, 'locked email');
    assert.equal(
      (await login(server.url, '127.0.0.4', bystander.email, bystander.password)).status,
      200,
      'another account from the same address',
    );

    // An unknown email backs off the same way, with the same message: a 429 says nothing about existence.
    const ghost = `ghost-${randomBytes(4).toString('hex')}@example.com`;
    for (let i = 0; i < SIGN_IN_LIMITS.accountFreeFailures; i++)
      assert.equal((await login(server.url, '127.0.0.7', ghost, 'whatever pw')).status, 401);
    const ghostLocked = await login(server.url, '127.0.0.8', ghost, 'whatever pw');
    assertRateLimited(ghostLocked, 'unknown email');
    assert.equal(ghostLocked.body.error.replace(/\d+/g, 'N'), locked.body.error.replace(/\d+/g, 'N'));

    await sleep(Number(locked.retryAfter) * 1000 + 200);
    assert.equal((await login(server.url, '127.0.0.5', target.email, target.password)).status, 200, 'signs in once the wait is over');
    assert.equal((await login(server.url, '127.0.0.5', target.email, 'wrong again')).status, 401);
    assert.equal((await login(server.url, '127.0.0.5', target.email, 'and again')).status, 401, 'the success cleared the count');
    assert.equal((await fetch(`${server.url}/healthz`)).status, 200);
  });

  test('per email, concurrently from many addresses: only the free failures reach the KDF', async () => {
    const target = await createAccount(server.url);
    const started = performance.now();
    const answers = await Promise.all(
      Array.from({ length: 20 }, (_, i) => login(server.url, `127.0.1.${i + 1}`, target.email, `guess ${i}`)),
    );
    const seconds = (performance.now() - started) / 1000;
    const checked = answers.filter((a) => a.status === 401).length;
    for (const answer of answers) if (answer.status !== 401) assertRateLimited(answer, 'concurrent guess');
    // The free failures, then one more per back-off period (5 s, 10 s, …) the burst outlasted on a slow machine.
    const periods = Math.floor(Math.log2(seconds / SIGN_IN_LIMITS.firstBackoffSeconds + 1));
    assert.ok(
      checked <= SIGN_IN_LIMITS.accountFreeFailures + periods,
      `${checked} concurrent guesses reached the KDF in ${seconds.toFixed(1)} s`,
    );
  });

  test('per address: failures back off (sign-in and register), other addresses unaffected', { skip: EMBEDDED_RUN_ONLY }, async () => {
    const user = await createAccount(server.url);
    for (let i = 0; i < SIGN_IN_LIMITS.clientFreeFailures; i++) {
      const wrong = await login(server.url, '127.0.0.6', `spray-${i}-${randomBytes(3).toString('hex')}@example.com`, 'spray password');
      assert.equal(wrong.status, 401, `failure ${i + 1} is checked`);
    }
    assertRateLimited(await login(server.url, '127.0.0.6', user.email, user.password), 'sprayer address, right password');
    assertRateLimited(
      await postFrom(
        server.url,
        '127.0.0.6',
        '/login',
        { email: user.email, password: user.password },
        { 'x-forwarded-for': '198.51.100.99' },
      ),
      'X-Forwarded-For from an untrusted peer is ignored',
    );
    assertRateLimited(
      await postFrom(server.url, '127.0.0.6', '/register', {
        email: `new-${randomBytes(3).toString('hex')}@example.com`,
        password: 'long enough pw',
      }),
      'register',
    );
    assert.equal((await login(server.url, '127.0.0.1', user.email, user.password)).status, 200, 'the same account from another address');
    assert.equal((await fetch(`${server.url}/healthz`)).status, 200);
  });

  test('behind a trusted proxy, X-Forwarded-For names the client', { skip: EMBEDDED_RUN_ONLY }, async () => {
    const user = await createAccount(server.url);
    const viaProxy = (forwardedFor: string, email: string, password: string) =>
      postFrom(server.url, PROXY, '/login', { email, password }, { 'x-forwarded-for': forwardedFor });
    for (let i = 0; i < SIGN_IN_LIMITS.clientFreeFailures; i++)
      assert.equal((await viaProxy(`203.0.113.9, 198.51.100.7, ${PROXY}`, spray(), 'spray password')).status, 401);
    assertRateLimited(await viaProxy('198.51.100.7', user.email, user.password), 'the client behind the proxy');
    assert.equal((await viaProxy('198.51.100.8', user.email, user.password)).status, 200, 'another client behind the same proxy');
    assert.equal((await login(server.url, PROXY, user.email, user.password)).status, 200, 'the proxy itself');
  });
});

describe('API keys under the server secret', () => {
  test('keys are stored keyed; wrong, malformed and revoked keys are refused', async () => {
    const account = await createAccount(server.url);
    assert.equal(await storedHash(server, account.accountId, apiKeyPrefix(account.key)), keyed(secret, account.key));
    assert.equal(await keyWorks(server.url, account.key), true);
    const samePrefix = account.key.slice(0, 17) + (account.key.at(-1) === '0' ? '1' : '0').repeat(64 - 12);
    for (const wrong of [samePrefix, `mcpw_${randomBytes(32).toString('hex')}`, `${account.key}0`, account.key.toUpperCase()]) {
      assert.equal(await keyWorks(server.url, wrong), false, wrong.slice(0, 20));
    }
    const extra = await createKey(server.url, account, { name: 'revoke me' });
    const listed = await fetch(`${server.url}/api/keys`, { headers: { authorization: `Bearer ${account.token}` } });
    const id = (await listed.json()).keys.find((k: { prefix: string }) => k.prefix === apiKeyPrefix(extra)).id;
    await fetch(`${server.url}/api/keys/${id}`, { method: 'DELETE', headers: { authorization: `Bearer ${account.token}` } });
    assert.equal(await keyWorks(server.url, extra), false, 'revoked');
  });

  test('a key from before migration 7 still works and is rewritten on first use; a wrong key for it changes nothing', async () => {
    const account = await createAccount(server.url);
    const legacy = await insertLegacyKey(server, account.accountId);
    const prefix = apiKeyPrefix(legacy);
    const before = await storedHash(server, account.accountId, prefix);
    assert.match(before, /^scrypt\$/);
    const wrong = legacy.slice(0, 17) + randomBytes(26).toString('hex').slice(0, 52);
    assert.equal(await keyWorks(server.url, wrong), false, 'wrong key against an scrypt row');
    assert.equal(await storedHash(server, account.accountId, prefix), before, 'unchanged by a wrong key');
    assert.equal(await keyWorks(server.url, legacy), true);
    assert.equal(await storedHash(server, account.accountId, prefix), keyed(secret, legacy));
    assert.equal(await keyWorks(server.url, wrong), false, 'wrong key against the rewritten row');
    assert.equal(await keyWorks(server.url, legacy), true, 'still works after the rewrite');
  });
});

describe('the server secret', () => {
  test(
    'created once in the data dir (0600), reused across restarts, never logged; MCPWORKS_SECRET_KEY takes precedence',
    { skip: EMBEDDED_RUN_ONLY },
    async () => {
      const dataDir = mkdtempSync(path.join(testDataRoot(), 'mcpworks-secret-'));
      await seedEmbeddedDatabase(dataDir);
      const file = path.join(dataDir, SECRET_FILE);
      const lines: string[] = [];
      const logs = new Writable({ write: (chunk, _enc, done) => (lines.push(String(chunk)), done()) });
      const start = (secretKey?: string) =>
        startServer(
          { host: '127.0.0.1', port: 0, dataDir, databaseUrl: undefined, tiers: DEFAULT_TIERS, secretKey },
          pino({ level: 'info' }, logs),
        );
      let running: Awaited<ReturnType<typeof start>> | undefined;
      try {
        running = await start();
        const stat = statSync(file);
        assert.equal(stat.mode & 0o777, 0o600);
        const text = readFileSync(file, 'utf8');
        assert.match(text, /^[0-9a-f]{64}\n$/);
        const fileSecret = text.trim();
        const account = await createAccount(running.url);
        assert.equal((await running.services.accountsStore.listKeys(account.accountId))[0]!.key_hash, keyed(fileSecret, account.key));
        await running.close();

        running = await start();
        assert.equal(readFileSync(file, 'utf8'), text, 'reused, not replaced');
        assert.equal(await keyWorks(running.url, account.key), true, 'keys survive a restart');
        await running.close();

        const configured = randomBytes(24).toString('base64');
        running = await start(configured);
        assert.equal(await keyWorks(running.url, account.key), false, 'MCPWORKS_SECRET_KEY wins over the file');
        const login = await postJson(`${running.url}/login`, { email: account.email, password: account.password });
        const created = await postJson(`${running.url}/api/keys`, { name: 'under env' }, { authorization: `Bearer ${login.body.token}` });
        const rows = await running.services.accountsStore.listKeys(account.accountId);
        assert.equal(rows.find((r) => r.prefix === created.body.prefix)!.key_hash, keyed(configured, created.body.key));
        assert.equal(readFileSync(file, 'utf8'), text, 'the file is left alone');
        await running.close();

        const all = lines.join('');
        assert.match(all, /differs from the secret in/, 'a differing MCPWORKS_SECRET_KEY is reported');
        assert.ok(!all.includes(fileSecret) && !all.includes(configured), 'the secret is never logged');
      } finally {
        await running?.close();
        rmSync(dataDir, { recursive: true, force: true });
      }
    },
  );

  test(
    'refused at start: DATABASE_URL without MCPWORKS_SECRET_KEY, a short secret; read from the environment',
    { skip: EMBEDDED_RUN_ONLY },
    async () => {
      const dataDir = mkdtempSync(path.join(testDataRoot(), 'mcpworks-secret-'));
      try {
        await assert.rejects(
          startTestServer({ dataDir, databaseUrl: 'postgres://127.0.0.1:9/never', secretKey: undefined }),
          /DATABASE_URL is set but MCPWORKS_SECRET_KEY is not/,
        );
        await assert.rejects(startTestServer({ dataDir, databaseUrl: undefined, secretKey: 'too short' }), /at least 32 characters/);
      } finally {
        rmSync(dataDir, { recursive: true, force: true });
      }
      assert.equal(configFromEnv({ MCPWORKS_SECRET_KEY: 'k'.repeat(40) }).secretKey, 'k'.repeat(40));
      assert.equal(configFromEnv({}).secretKey, undefined);
    },
  );

  test(
    'several nodes on one PostgreSQL share keys and sign-in failure counts',
    { skip: !process.env.MCPWORKS_TEST_DATABASE_URL && 'needs MCPWORKS_TEST_DATABASE_URL' },
    async () => {
      const databaseUrl = await freshDatabaseUrl();
      const first = await startTestServer({ databaseUrl });
      const second = await startTestServer({ databaseUrl });
      try {
        const account = await createAccount(first.url);
        assert.equal(await keyWorks(second.url, account.key), true, 'a key made on one node works on the other');
        const legacy = await insertLegacyKey(first, account.accountId);
        assert.equal(await keyWorks(second.url, legacy), true);
        assert.equal(await storedHash(first, account.accountId, apiKeyPrefix(legacy)), keyed(TEST_SECRET_KEY, legacy));
        for (let i = 0; i < SIGN_IN_LIMITS.accountFreeFailures; i++)
          assert.equal((await login(first.url, '127.0.0.9', account.email, 'wrong')).status, 401);
        assertRateLimited(await login(second.url, '127.0.0.10', account.email, account.password), 'the other node');
      } finally {
        await first.stop();
        await second.stop();
      }
    },
  );
});
