// test-database: embedded, the early refusal happens before the database is asked
/**
 * Issue 10 item 6, the HTTP work per attempt: an address whose sign-in gate refuses it anyway
 * (backing off after failures) is answered 429 from Node's request event, before the app reads its
 * body or asks the database, and is logged as a summary per window, not a line per attempt.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import path from 'node:path';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { pino } from 'pino';
import { SIGN_IN_LIMITS } from '../core/accounts.js';
import { DEFAULT_TIERS } from '../core/tiers.js';
import { createAccount, seedEmbeddedDatabase, testDataRoot } from '../test-support/harness.js';
import { startServer } from '../app/start-server.js';

interface Answer {
  status: number;
  body: any;
  headers: Record<string, string | string[] | undefined>;
}

/** A POST from a chosen loopback address, with the body and headers as given (raw). */
function postFrom(base: string, from: string, route: string, body: string, headers: Record<string, string | number>): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(`${base}${route}`, { method: 'POST', localAddress: from, agent: false, headers }, (res) => {
      let data = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (data += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: data ? JSON.parse(data) : null, headers: res.headers }));
    });
    req.on('error', reject);
    // An announced body larger than what is sent: the answer must come without it.
    if (typeof headers['content-length'] === 'number' && headers['content-length'] > Buffer.byteLength(body)) req.write(body);
    else req.end(body);
  });
}

const json = (value: unknown): [string, Record<string, string | number>] => {
  const body = JSON.stringify(value);
  return [body, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }];
};

test('an address that is backing off gets 429 before its body is read, and no log line per attempt', async () => {
  const lines: string[] = [];
  const logs = new Writable({ write: (chunk, _enc, done) => (lines.push(String(chunk)), done()) });
  const dataDir = mkdtempSync(path.join(testDataRoot(), 'mcpworks-precheck-'));
  await seedEmbeddedDatabase(dataDir);
  const running = await startServer(
    { host: '127.0.0.1', port: 0, dataDir, databaseUrl: undefined, tiers: DEFAULT_TIERS },
    pino({ level: 'info' }, logs),
  );
  const base = running.url;
  try {
    const user = await createAccount(base);
    const attacker = '127.0.0.21';
    for (let i = 0; i < SIGN_IN_LIMITS.clientFreeFailures; i++) {
      assert.equal(
        (
          await postFrom(
            base,
            attacker,
            '/login',
            ...json({ email: `spray-${i}-${randomBytes(3).toString('hex')}@example.com`, password: 'spray password' }),
          )
        ).status,
        401,
        `failure ${i + 1} is checked`,
      );
    }
    const refusedBefore = running.services.signInsRefusedEarly();
    const requestLines = () =>
      lines.filter((line) => /"msg":"request"/.test(line) && /"path":"\/(api\/)?(login|register)"/.test(line)).length;
    const linesBefore = requestLines();

    // The full path would answer these 415 (not JSON), 400 (not a JSON object) and 413 (over the
    // 64 KB limit, the rest never sent): 429 shows nothing of the body was looked at.
    const attempts: Array<[string, string, Record<string, string | number>]> = [
      ['/login', ...json({ email: user.email, password: user.password })],
      ['/login', 'email=a&password=b', { 'content-type': 'text/plain', 'content-length': 19 }],
      ['/login?next=1', '[1, 2', { 'content-type': 'application/json', 'content-length': 5 }],
      ['/login', '{"email":"', { 'content-type': 'application/json', 'content-length': 10 * 1024 * 1024 }],
      ['/register', ...json({ email: `new-${randomBytes(3).toString('hex')}@example.com`, password: 'long enough pw' })],
      // The documented account routes under /api/ and the older root ones are the same routes.
      ['/api/login', '[1, 2', { 'content-type': 'application/json', 'content-length': 5 }],
      ['/api/register', '{"email":"', { 'content-type': 'application/json', 'content-length': 10 * 1024 * 1024 }],
    ];
    for (const [route, body, headers] of attempts) {
      const answer = await postFrom(base, attacker, route, body, headers);
      assert.equal(answer.status, 429, `${route} ${String(headers['content-type'])}: ${JSON.stringify(answer.body)}`);
      assert.equal(answer.body.error_type, 'rate_limited');
      assert.match(answer.body.error, /too many failed sign-ins from your address; retry in \d+ s/);
      assert.ok(answer.body.retry_after >= 1);
      assert.equal(answer.headers['retry-after'], String(answer.body.retry_after));
    }
    const flood = await Promise.all(
      Array.from({ length: 40 }, () => postFrom(base, attacker, '/login', ...json({ email: user.email, password: 'x' }))),
    );
    assert.ok(flood.every((a) => a.status === 429));
    assert.equal(running.services.signInsRefusedEarly() - refusedBefore, attempts.length + flood.length, 'all answered before the app');
    assert.equal(requestLines(), linesBefore, 'no log line per refused attempt');

    // Other addresses, and other routes from the refused address, are served as before.
    assert.equal((await postFrom(base, '127.0.0.22', '/login', ...json({ email: user.email, password: user.password }))).status, 200);
    const usage = await fetch(`${base}/api/usage`, { headers: { authorization: `Bearer ${user.key}` } });
    assert.equal(usage.status, 200);
    assert.equal((await fetch(`${base}/healthz`)).status, 200);

    // One summary line for the window, naming the address.
    const deadline = Date.now() + 20_000;
    const summaries = () => lines.filter((line) => /sign-ins refused \(rate limited\)/.test(line));
    while (summaries().length === 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(summaries().length, 1, 'one summary line');
    const summary = JSON.parse(summaries()[0]!);
    assert.equal(summary.refused_sign_ins, attempts.length + flood.length);
    assert.deepEqual(summary.top[0], { client: attacker, count: attempts.length + flood.length });
  } finally {
    await running.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
});
