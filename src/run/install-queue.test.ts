// The npm install queue on its own: caps, bounded queue, bounded wait, fair hand-over between accounts.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { DomainError } from '../core/errors.js';
import { InstallQueue } from './install-queue.js';

/** A task the test finishes by hand, counting how many run at once. */
function gate() {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => (open = resolve));
  return { open, opened };
}

async function refusal(promise: Promise<unknown>): Promise<DomainError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof DomainError, String(error));
    return error;
  }
  assert.fail('expected a refusal');
}

describe('InstallQueue', () => {
  test(
    'runs at most the caps at once; the queue holds the bound; the rest are refused at once; a freed slot goes to the first waiter that fits',
    { timeout: 10_000 },
    async () => {
      const queue = new InstallQueue({ concurrency: 2, accountConcurrency: 1, queue: 3, accountQueue: 2, maxWaitMs: 60_000 });
      const started: string[] = [];
      const gates = new Map<string, ReturnType<typeof gate>>();
      const task = (name: string) => async () => {
        started.push(name);
        const g = gate();
        gates.set(name, g);
        await g.opened;
        return name;
      };
      const a1 = queue.run('a', task('a1'));
      const a2 = queue.run('a', task('a2'));
      const a3 = queue.run('a', task('a3'));
      const refusedA = await refusal(queue.run('a', task('a4')));
      assert.equal(refusedA.type, 'rate_limited');
      assert.equal(refusedA.details?.limit, 'npm_install_queue');
      const b1 = queue.run('b', task('b1'));
      const b2 = queue.run('b', task('b2'));
      const refusedB = await refusal(queue.run('b', task('b3')));
      assert.equal(refusedB.details?.limit, 'npm_install_queue', 'the whole queue (3) is full');
      const c1 = refusal(queue.run('c', task('c1')));
      assert.equal((await c1).details?.limit, 'npm_install_queue');
      await new Promise((resolve) => setImmediate(resolve));
      assert.deepEqual(started, ['a1', 'b1'], 'one per account, two in all');
      // a1 ends: a2 is first in line and its account has room again.
      gates.get('a1')!.open();
      assert.equal(await a1, 'a1');
      await new Promise((resolve) => setImmediate(resolve));
      assert.deepEqual(started, ['a1', 'b1', 'a2']);
      // b1 ends: a3 waits behind a2 (a at its cap), so b2 goes first.
      gates.get('b1')!.open();
      await b1;
      await new Promise((resolve) => setImmediate(resolve));
      assert.deepEqual(started, ['a1', 'b1', 'a2', 'b2']);
      for (const name of ['a2', 'b2']) gates.get(name)!.open();
      await Promise.all([a2, b2]);
      await new Promise((resolve) => setImmediate(resolve));
      gates.get('a3')!.open();
      assert.equal(await a3, 'a3');
    },
  );

  test('a waiter gives up after the wait bound with a typed error; a failed task frees its slot', { timeout: 10_000 }, async () => {
    const queue = new InstallQueue({ concurrency: 1, accountConcurrency: 1, queue: 4, accountQueue: 4, maxWaitMs: 50 });
    const hold = gate();
    const first = queue.run('a', () => hold.opened);
    const waited = await refusal(queue.run('b', async () => 'never'));
    assert.equal(waited.type, 'rate_limited');
    assert.equal(waited.details?.limit, 'npm_install_wait');
    hold.open();
    await first;
    await assert.rejects(
      queue.run('a', async () => Promise.reject(new Error('npm failed'))),
      /npm failed/,
    );
    assert.equal(await queue.run('a', async () => 'next'), 'next');
  });
});
