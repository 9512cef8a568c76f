import assert from 'node:assert/strict';
import { test } from 'node:test';
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
  activity.close();
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
  };
  const activity = new SessionActivity(slow, quiet);
  const stream = activity.hold('s', { markNow: true });
  stream();
  const again = activity.hold('s', { markNow: true });
  await activity.refresh();
  assert.deepEqual(store.log, ['mark s', 'clear s', 'mark s', 'mark s']);
  again();
  activity.close();
});

test('a failed write is logged, never thrown', async () => {
  const activity = new SessionActivity(
    {
      markMcpSessionsInUse: () => Promise.reject(new Error('database away')),
      clearMcpSessionInUse: () => Promise.reject(new Error('database away')),
    },
    quiet,
  );
  const release = activity.hold('x', { markNow: true });
  await activity.refresh();
  release();
  await activity.refresh();
  activity.close();
});
