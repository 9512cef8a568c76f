// A client's body bytes are paced by its share (bodyBytesPerSecondPerIp) whether its body is small
// and declared (taken from the share at once, no stream around it) or large or chunked (counted
// as it is read): a client in debt is not read on until the debt is paid.
import assert from 'node:assert/strict';
import { mock, test } from 'node:test';
import { Hono } from 'hono';
import { bodyLimit, PACED_WHOLE_MAX_BYTES } from './body-limit.js';
import { ByteBudget } from './client-pacing.js';

function pacedApp(budget: ByteBudget) {
  const app = new Hono();
  const read: string[] = [];
  app.use(bodyLimit(() => ({ limit: 1024 * 1024, tooLarge: (c) => c.text('too large', 413) }), { budget, client: () => 'one client' }));
  app.post('/', async (c) => {
    read.push(await c.req.text());
    return c.text('ok');
  });
  return { app, read };
}

const turns = async (n: number) => {
  for (let i = 0; i < n; i++) await new Promise((resolve) => setImmediate(resolve));
};

test('a small declared body is taken from the share before it is read; a client in debt waits for it', async (t) => {
  const budget = new ByteBudget(1000, () => 0);
  t.after(() => budget.close());
  mock.timers.enable({ apis: ['setTimeout'] });
  t.after(() => mock.timers.reset());
  const { app, read } = pacedApp(budget);
  const body = 'x'.repeat(800);
  const post = () => app.request('/', { method: 'POST', body, headers: { 'content-length': String(body.length) } });
  assert.equal((await post()).status, 200, 'within the share: read at once');
  // 1000 - 800 - 800 = -600 bytes: 600 ms before it is read.
  const second = post();
  await turns(20);
  assert.equal(read.length, 1, 'the second body is not read while its client is in debt');
  mock.timers.tick(599);
  await turns(20);
  assert.equal(read.length, 1);
  mock.timers.tick(1);
  assert.equal((await second).status, 200);
  assert.deepEqual(read, [body, body]);
  assert.ok(body.length <= PACED_WHOLE_MAX_BYTES);
});

test('a large declared body is still counted as it is read', async (t) => {
  // A share a little below the body: the read ends after a short wait (real time) for the debt.
  const budget = new ByteBudget(PACED_WHOLE_MAX_BYTES - 4096, () => 0);
  t.after(() => budget.close());
  const { app, read } = pacedApp(budget);
  const body = 'y'.repeat(PACED_WHOLE_MAX_BYTES + 1);
  const response = await app.request('/', { method: 'POST', body, headers: { 'content-length': String(body.length) } });
  assert.equal(response.status, 200);
  assert.equal(read[0], body);
  // Its bytes were taken from the share as they came: the next small body waits.
  assert.ok(budget.take('one client', 0) > 0);
});
