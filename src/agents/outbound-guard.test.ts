import assert from 'node:assert/strict';
import { test } from 'node:test';
import { limitedResolver, type Resolver } from './outbound-guard.js';

/** A resolver whose lookups answer when the test says (a name whose DNS hangs, held in hand). */
function heldResolver() {
  const pending: Array<() => void> = [];
  let active = 0;
  let most = 0;
  const resolve: Resolver = async () => {
    active++;
    most = Math.max(most, active);
    await new Promise<void>((go) => pending.push(go));
    active--;
    return [{ address: '192.0.2.1', family: 4 }];
  };
  return { resolve, pending, most: () => most, active: () => active };
}

const code = (error: unknown) => (error as NodeJS.ErrnoException).code;

test('lookups: at most `concurrent` at once, a bounded queue, a freed slot goes to the first waiter', async () => {
  const held = heldResolver();
  const limited = limitedResolver(held.resolve, { concurrent: 2, waiting: 1, waitMs: 60_000 });
  const first = limited('a.example');
  const second = limited('b.example');
  const third = limited('c.example');
  await new Promise((go) => setImmediate(go));
  assert.equal(held.active(), 2, 'two lookups hold pool threads, the third waits');
  await assert.rejects(limited('d.example'), (error) => code(error) === 'EBUSY', 'past the queue: refused at once');
  held.pending.shift()!();
  await first;
  await new Promise((go) => setImmediate(go));
  assert.equal(held.active(), 2, 'the waiter took the freed slot');
  held.pending.splice(0).forEach((go) => go());
  await Promise.all([second, third]);
  await new Promise((go) => setImmediate(go));
  held.pending.splice(0).forEach((go) => go());
  assert.equal(held.most(), 2, 'never more than two at once');
});

test('lookups: a waiter gives up after waitMs, and its place is not kept', async () => {
  const held = heldResolver();
  const limited = limitedResolver(held.resolve, { concurrent: 1, waiting: 4, waitMs: 20 });
  const running = limited('a.example');
  // The wait's timer does not hold a process open (unref): this test's loop is held here.
  const alive = setInterval(() => undefined, 1000);
  try {
    const waiting = limited('b.example');
    await new Promise((go) => setImmediate(go));
    assert.equal(held.active(), 1, 'the second lookup waits');
    await assert.rejects(waiting, (error) => code(error) === 'ETIMEOUT');
  } finally {
    clearInterval(alive);
  }
  held.pending.shift()!();
  await running;
  const next = limited('c.example');
  await new Promise((go) => setImmediate(go));
  assert.equal(held.active(), 1, 'the slot is free again');
  held.pending.shift()!();
  await next;
});

test('lookups: a waiter whose caller gives up leaves the queue and never starts its lookup; the slot goes to the next', async () => {
  const held = heldResolver();
  const started: string[] = [];
  const limited = limitedResolver(
    (host, signal) => {
      started.push(host);
      return held.resolve(host, signal);
    },
    { concurrent: 1, waiting: 4, waitMs: 60_000 },
  );
  const running = limited('a.example');
  const gaveUp = new AbortController();
  const abandoned = limited('b.example', gaveUp.signal);
  const next = limited('c.example');
  await new Promise((go) => setImmediate(go));
  gaveUp.abort(new Error('the caller went away'));
  await assert.rejects(abandoned, /the caller went away/);
  await assert.rejects(limited('d.example', gaveUp.signal), /the caller went away/, 'an aborted caller never queues');
  held.pending.shift()!();
  await running;
  await new Promise((go) => setImmediate(go));
  assert.deepEqual(started, ['a.example', 'c.example'], 'the abandoned lookup never ran: the next waiter took the slot');
  held.pending.shift()!();
  await next;
});
