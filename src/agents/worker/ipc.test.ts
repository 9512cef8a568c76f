// A replica's worker process through its real IPC protocol: jobs, the host's calls, a crash mid-run,
// a message that breaks the protocol. No server or database: the host's call handler is the test's.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { ReplicaCrashedError, ReplicaProcess } from './host.js';

const job = (id: string) => ({
  job: id,
  mode: 'direct' as const,
  trigger: 'schedule' as const,
  triggerName: 'tick',
  function: 'svc.fn',
  input: { n: 1 },
});

test('direct job: the worker asks the host to invoke the function once and reports its result; failures come back typed', async () => {
  const worker = new ReplicaProcess('agent', 'daring-duck', 64);
  await worker.start();
  try {
    const calls: unknown[] = [];
    const ok = await worker.run(job('run-1'), async (request) => {
      calls.push(request);
      return { echoed: request };
    });
    assert.deepEqual(calls, [{ op: 'invoke', function: 'svc.fn', input: { n: 1 } }]);
    assert.deepEqual(ok, { ok: true, result: { echoed: { op: 'invoke', function: 'svc.fn', input: { n: 1 } } } });
    const failed = await worker.run(job('run-2'), async () => {
      throw Object.assign(new Error('quota used up'), { type: 'quota_exceeded' });
    });
    assert.deepEqual(failed, { ok: false, error: { type: 'quota_exceeded', message: 'quota used up' } });
    // The worker got no environment of the server's, and its heap is capped (old space 64 MB, plus young space).
    const environ = readFileSync(`/proc/${worker.pid}/environ`, 'utf8');
    assert.equal(environ.includes('MCPWORKS'), false);
    assert.equal(environ.includes('DATABASE'), false);
    assert.ok(worker.heapLimitBytes > 0 && worker.heapLimitBytes <= (64 + 64) * 1024 * 1024, String(worker.heapLimitBytes));
  } finally {
    const exit = await worker.stop();
    assert.equal(exit.expected, true);
  }
});

test('a worker killed mid-run ends the run with ReplicaCrashed, and its exit says how (not expected)', async () => {
  const worker = new ReplicaProcess('agent', 'swift-falcon', 64);
  await worker.start();
  const running = worker.run(job('run-3'), async () => {
    process.kill(worker.pid!, 'SIGKILL');
    return new Promise(() => undefined);
  });
  await assert.rejects(running, (error: unknown) => error instanceof ReplicaCrashedError && /SIGKILL/.test(error.message));
  const exit = await worker.exited;
  assert.equal(exit.signal, 'SIGKILL');
  assert.equal(exit.expected, false);
});
