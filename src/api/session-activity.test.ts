import assert from 'node:assert/strict';
import { mock, test } from 'node:test';
import { createLogger } from '../app/logger.js';
import { SessionActivity, type SessionActivityStore } from './session-activity.js';

function recordingStore(): SessionActivityStore & { log: string[] } {
  const log: string[] = [];
  return {
    log,
    async markMcpSessionsInUse(ids) {
      log.push(`mark ${[...ids].sort().join(',')}`);
    },
    async clearMcpSessionInUse(id) {
      log.push(`clear ${id}`);
    },
    async clearMcpSessionHolds() {
      log.push('clear all');
    },
  };
}

const quiet = createLogger('silent');

test('a short request writes nothing; what is held at a refresh is marked, and its last release clears the mark', async () => {
  const store = recordingStore();
  const activity = new SessionActivity(store, quiet);
  activity.hold('a')();
  await activity.refresh();
  assert.deepEqual(store.log, [], 'released before any refresh: no write at all');

  const first = activity.hold('a');
  const second = activity.hold('a');
  const other = activity.hold('b');
  await activity.refresh();
  assert.deepEqual(store.log, ['mark a,b']);
  first();
  first(); // a release is counted once
  await activity.refresh();
  assert.deepEqual(store.log, ['mark a,b', 'mark a,b'], 'still held by its second request');
  second();
  other();
  await activity.refresh();
  assert.deepEqual(store.log, ['mark a,b', 'mark a,b', 'clear a', 'clear b']);
  assert.equal(activity.size(), 0);
  await activity.close();
});

test('a stream is marked at once; writes keep their order (a clear never lands after the next mark)', async () => {
  const store = recordingStore();
  let slowFirst = true;
  const slow: SessionActivityStore = {
    async markMcpSessionsInUse(ids) {
      if (slowFirst) {
        slowFirst = false;
        await new Promise((resolve) => setTimeout(resolve, 30));
      }
      await store.markMcpSessionsInUse(ids);
    },
    clearMcpSessionInUse: (id) => store.clearMcpSessionInUse(id),
    clearMcpSessionHolds: () => store.clearMcpSessionHolds(),
  };
  const activity = new SessionActivity(slow, quiet);
  const stream = activity.hold('s', { markNow: true });
  stream();
  const again = activity.hold('s', { markNow: true });
  await activity.refresh();
  assert.deepEqual(store.log, ['mark s', 'clear s', 'mark s', 'mark s']);
  again();
  await activity.close();
});

test('a failed write is logged, never thrown', async () => {
  const activity = new SessionActivity(
    {
      markMcpSessionsInUse: () => Promise.reject(new Error('database away')),
      clearMcpSessionInUse: () => Promise.reject(new Error('database away')),
      clearMcpSessionHolds: () => Promise.reject(new Error('database away')),
    },
    quiet,
  );
  const release = activity.hold('x', { markNow: true });
  await activity.refresh();
  release();
  await activity.refresh();
  await activity.close();
});

test('a request still being answered after REQUEST_HOLD_AFTER_MS is written then, once; a shorter one never', async () => {
  mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
  try {
    const store = recordingStore();
    const activity = new SessionActivity(store, quiet, { requestHoldAfterMs: 1_000 });
    const short = activity.hold('s');
    mock.timers.tick(999);
    short();
    mock.timers.tick(5_000);
    const long = activity.hold('l');
    const alongside = activity.hold('l');
    mock.timers.tick(1_000);
    await activity.refresh();
    assert.deepEqual(
      store.log,
      ['mark l', 'mark l'],
      'the long request written once by its timer (then by the refresh), the short one never',
    );
    long();
    alongside();
    await activity.refresh();
    assert.deepEqual(store.log, ['mark l', 'mark l', 'clear l']);
    await activity.close();
  } finally {
    mock.timers.reset();
  }
});

test("close ends all of this node's holds, and nothing is held or written after it", async () => {
  const store = recordingStore();
  const activity = new SessionActivity(store, quiet);
  const stream = activity.hold('s', { markNow: true });
  await activity.close();
  stream();
  activity.hold('t', { markNow: true })();
  await activity.refresh();
  assert.deepEqual(store.log, ['mark s', 'clear all']);
  assert.equal(activity.size(), 0);
});
