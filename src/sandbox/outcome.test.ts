// How a finished run becomes its outcome (outcome.ts): every exit path, from records made by hand.
// Pure: no root, no bubblewrap.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SANDBOX_ERROR_TYPES, sandboxLimitsFor, type SandboxOutcome, type SandboxRequest } from '../core/sandbox.js';
import { CappedCapture } from './wire/capture.js';
import type { RunRecord } from './wire/channel.js';
import { interpret, TRACEBACK_CAP, trimTraceback } from './outcome.js';

const limits = sandboxLimitsFor({ timeoutSeconds: 10, memoryMb: 256, maxResultBytes: 1024 });
const request: SandboxRequest = { language: 'python', code: '', input: null, limits };
const USER_STDERR = 'user wrote this to stderr\n';

function record(overrides: Partial<RunRecord> = {}): RunRecord {
  const stdout = new CappedCapture(1024);
  const stderr = new CappedCapture(1024);
  stdout.push(Buffer.from('printed\n'));
  stderr.push(Buffer.from(USER_STDERR));
  return {
    stdout,
    stderr,
    answer: null,
    overflowed: false,
    flooded: false,
    timedOut: false,
    oomKilled: false,
    ready: true,
    exit: { code: 0, signal: null, spawnFailed: false },
    ...overrides,
  };
}

function outcome(run: RunRecord, options: { memoryCgroup?: boolean; request?: SandboxRequest } = {}) {
  const logs: string[] = [];
  const result = interpret(options.request ?? request, run, 0, {
    memoryCgroup: options.memoryCgroup ?? true,
    log: (line) => logs.push(line),
    now: () => 12.34,
  });
  return { result, logs };
}

function failure(result: SandboxOutcome) {
  assert.equal(result.ok, false);
  return (result as Extract<SandboxOutcome, { ok: false }>).error;
}

test('an ok answer is the result, with what the run printed and the time it took', () => {
  const { result } = outcome(record({ answer: { ok: true, result: { sum: 3 } } }));
  assert.deepEqual(result, { ok: true, result: { sum: 3 }, stdout: 'printed\n', stderr: USER_STDERR, durationMs: 12.3 });
  const empty = outcome(record({ answer: { ok: true } })).result;
  assert.equal(empty.ok && empty.result, null);
});

test("the run's own error answer keeps its type, message and traceback; it may not pose as the platform", () => {
  const error = failure(outcome(record({ answer: { ok: false, type: 'ValueError', message: 'bad', traceback: 'Traceback: x' } })).result);
  assert.deepEqual(error, { type: 'ValueError', message: 'bad', stderr: `${USER_STDERR}Traceback: x` });
  const posing = failure(outcome(record({ answer: { ok: false, type: 'SandboxError', message: 'fake' } })).result);
  assert.equal(posing.type, SANDBOX_ERROR_TYPES.userSandbox);
  assert.equal(posing.platform, undefined);
});

test('a sandbox that never said ready is a platform failure: nothing of the run is returned, only its platform lines are logged', () => {
  const stderr = new CappedCapture(1024);
  stderr.push(Buffer.from('bwrap: Creating new namespace failed\nsecret=hunter2\n'));
  const { result, logs } = outcome(
    record({ ready: false, stderr, answer: { ok: true, result: 1 }, exit: { code: 1, signal: null, spawnFailed: false } }),
  );
  assert.deepEqual(failure(result), {
    type: SANDBOX_ERROR_TYPES.sandbox,
    message: 'the sandbox could not start',
    stderr: '',
    platform: true,
  });
  assert.equal((result as { stdout: string }).stdout, '');
  assert.deepEqual(logs, ['sandbox failed to start (status 1): bwrap: Creating new namespace failed']);
});

test("an interrupted run without an answer is the platform's; with one, the answer stands", () => {
  const controller = new AbortController();
  controller.abort();
  const stopped = { ...request, signal: controller.signal };
  assert.equal(failure(outcome(record(), { request: stopped }).result).platform, true);
  assert.equal(outcome(record({ answer: { ok: true, result: 1 } }), { request: stopped }).result.ok, true);
});

test('flooding the bridge, overflowing the result, timing out and running out of memory each name their limit', () => {
  const cases: [Partial<RunRecord>, string, RegExp][] = [
    [{ flooded: true, overflowed: true }, SANDBOX_ERROR_TYPES.exited, /bridge calls without waiting/],
    [{ overflowed: true, answer: { ok: true } }, SANDBOX_ERROR_TYPES.outputSize, /larger than 1024 bytes/],
    [{ timedOut: true, exit: { code: 137, signal: null, spawnFailed: false } }, SANDBOX_ERROR_TYPES.timeout, /longer than 10 s/],
    [{ oomKilled: true, exit: { code: 137, signal: null, spawnFailed: false } }, SANDBOX_ERROR_TYPES.memory, /more than 256 MB/],
  ];
  for (const [overrides, type, message] of cases) {
    const error = failure(outcome(record(overrides)).result);
    assert.equal(error.type, type);
    assert.match(error.message, message);
    // A failure of the run keeps the run's own stderr.
    assert.equal(error.stderr, USER_STDERR);
  }
  const heap = new CappedCapture(1024);
  heap.push(Buffer.from('FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory\n'));
  assert.equal(
    failure(outcome(record({ stderr: heap, exit: { code: 134, signal: null, spawnFailed: false } })).result).type,
    SANDBOX_ERROR_TYPES.memory,
  );
});

test('the 128+N statuses: CPU time, forbidden system call, file size; SIGKILL only hints at memory without a memory cgroup', () => {
  const status = (code: number, memoryCgroup = true) =>
    failure(outcome(record({ exit: { code, signal: null, spawnFailed: false } }), { memoryCgroup }).result);
  assert.deepEqual(
    [status(128 + 24).type, status(128 + 24).message],
    [SANDBOX_ERROR_TYPES.timeout, 'the function used more than 10 s of CPU time and was stopped'],
  );
  assert.match(status(128 + 31).message, /SIGSYS/);
  assert.match(status(128 + 25).message, new RegExp(`larger than ${limits.maxFileBytes} bytes`));
  assert.match(status(128 + 9, false).message, /possibly for exceeding its memory/);
  assert.equal(status(128 + 9, true).message, 'the function was killed by signal 9 before returning a result');
  assert.equal(status(3).message, 'the function exited with status 3 before returning a result');
  assert.equal(status(3).type, SANDBOX_ERROR_TYPES.exited);
  assert.equal(
    failure(outcome(record({ exit: { code: null, signal: null, spawnFailed: false } })).result).message,
    'the function exited with status -1 before returning a result',
  );
});

test("a helper killed from outside, or lost with its spawner, is the platform's, and logged", () => {
  const killed = outcome(record({ exit: { code: null, signal: 'SIGKILL', spawnFailed: false } }));
  assert.deepEqual(failure(killed.result), {
    type: SANDBOX_ERROR_TYPES.sandbox,
    message: 'the sandbox was stopped by the host (SIGKILL) before the function finished',
    stderr: '',
    platform: true,
  });
  assert.deepEqual(killed.logs, ['a sandbox helper was killed by SIGKILL during a run']);
  const lost = outcome(record({ exit: { code: null, signal: null, spawnFailed: false, lost: true } }));
  assert.equal(failure(lost.result).message, 'the sandbox was lost (its spawner stopped)');
  assert.equal(failure(lost.result).platform, true);
});

test('a long traceback keeps its end, cut between tokens, so no secret is kept without its start', () => {
  assert.equal(trimTraceback('short'), 'short');
  const token = `ghp_${'a'.repeat(36)}`;
  const trace = `${'x'.repeat(10)} ${token} ${'y'.repeat(TRACEBACK_CAP - 20)}`;
  const kept = trimTraceback(trace);
  assert.ok(kept.startsWith('[traceback cut]\n'));
  assert.ok(!kept.includes('aaaa'), 'the split token is dropped whole');
  assert.ok(kept.endsWith('y'.repeat(100)));
  assert.ok(kept.length <= TRACEBACK_CAP + '[traceback cut]\n'.length);
});
