import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DomainError } from './errors.js';
import { BACKOFF_MAX_MS, exitReason, nextStreak, replicaHeapMb, restartDelayMs, scalePlan, validateReplicaCount } from './replicas.js';

test('crash back-off: 1 s doubling to 60 s; a process that stayed up a minute starts the streak again', () => {
  assert.deepEqual([1, 2, 3, 4, 5, 6, 7, 8, 50].map(restartDelayMs), [1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, BACKOFF_MAX_MS]);
  assert.equal(restartDelayMs(0), 0);
  assert.equal(nextStreak(0, 10), 1);
  assert.equal(nextStreak(3, 59_999), 4);
  assert.equal(nextStreak(3, 60_000), 1);
});

test('scale plan: adds up to the count; removes the newest first (LIFO), not counting those already being removed', () => {
  const rows = [
    { name: 'a-a', seq: 1, status: 'running' },
    { name: 'c-c', seq: 3, status: 'running' },
    { name: 'b-b', seq: 2, status: 'stopped' },
    { name: 'd-d', seq: 4, status: 'draining' },
  ];
  assert.deepEqual(scalePlan(rows, 1), { add: 0, remove: ['c-c', 'b-b'] });
  assert.deepEqual(scalePlan(rows, 0), { add: 0, remove: ['c-c', 'b-b', 'a-a'] });
  assert.deepEqual(scalePlan(rows, 3), { add: 0, remove: [] });
  assert.deepEqual(scalePlan(rows, 5), { add: 2, remove: [] });
});

test('replica counts, heap and exit reasons', () => {
  assert.equal(validateReplicaCount(0), 0);
  assert.equal(validateReplicaCount(30), 30);
  for (const bad of [-1, 1.5, '3', null, 1001]) assert.throws(() => validateReplicaCount(bad), DomainError, String(bad));
  assert.equal(replicaHeapMb(512), 512);
  assert.equal(replicaHeapMb(16), 64);
  assert.equal(exitReason(null, 'SIGKILL'), 'killed by signal SIGKILL');
  assert.equal(exitReason(1, null), 'exited with code 1');
  assert.match(exitReason(134, null, true), /^out of memory/);
});
