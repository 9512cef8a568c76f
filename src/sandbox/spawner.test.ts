// Sandboxes started from the spawner process (spawner.ts, runtime/spawner.cjs), through real
// bubblewrap sandboxes: runs go through it, it holds none of the server's environment, and its
// death (idle or mid-run) never loses the next run nor hangs one in flight.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { SANDBOX_ERROR_TYPES, sandboxLimitsFor, type SandboxOutcome } from '../core/sandbox.js';
import { limitsFor } from '../core/tiers.js';
import { createBubblewrapSandbox, type BubblewrapSandbox } from './bubblewrap.js';

const pro = sandboxLimitsFor(limitsFor('pro'));
const CANARY = `spawner-canary-${process.pid}`;

function parentOf(pid: string): number | null {
  try {
    return Number(readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')[1]);
  } catch {
    return null;
  }
}

function cmdline(pid: string | number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  } catch {
    return '';
  }
}

/** Our spawner processes (children of this test process running spawner.cjs). */
function spawners(): number[] {
  return readdirSync('/proc')
    .filter((pid) => /^\d+$/.test(pid) && parentOf(pid) === process.pid && cmdline(pid).includes('spawner.cjs'))
    .map(Number);
}

/** Sandbox helpers (pre-started or running) whose parent is `parent`. */
function helpersOf(parent: number): number[] {
  return readdirSync('/proc')
    .filter((pid) => /^\d+$/.test(pid) && parentOf(pid) === parent && cmdline(pid).includes('mcpworks-sandbox-helper'))
    .map(Number);
}

async function waitFor(what: string, condition: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

function resultOf(outcome: SandboxOutcome): unknown {
  assert.equal(outcome.ok, true, `expected success, got ${JSON.stringify(outcome)}`);
  return (outcome as { result: unknown }).result;
}

const hello = (sandbox: BubblewrapSandbox) =>
  Promise.all([
    sandbox.run({ language: 'python', code: 'def main(input_data):\n    return {"n": input_data["n"] + 1}\n', input: { n: 1 }, limits: pro }),
    sandbox.run({ language: 'typescript', code: 'export default (input: { n: number }) => ({ n: input.n * 2 });\n', input: { n: 21 }, limits: pro }),
  ]);

/** Settles with the outcome, or rejects if it takes longer than `ms` (a hung run). */
function within(ms: number, outcome: Promise<SandboxOutcome>): Promise<SandboxOutcome> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    outcome.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`the run did not end within ${ms} ms`)), ms))),
  ]);
}

describe('sandbox spawner', () => {
  it('starts the helpers, with none of the server environment, and close() ends it', async () => {
    process.env.MCPWORKS_SPAWNER_CANARY = CANARY;
    const sandbox = createBubblewrapSandbox({ network: false, pool: { minSize: 1 } });
    try {
      const outcomes = await hello(sandbox);
      assert.deepEqual(outcomes.map(resultOf), [{ n: 2 }, { n: 42 }]);
      const [spawner, ...others] = spawners();
      assert.ok(spawner, 'a spawner process runs');
      assert.deepEqual(others, []);
      // The pre-started helpers are its children, not the server's.
      await waitFor('pre-started helpers', () => helpersOf(spawner).length > 0);
      assert.deepEqual(helpersOf(process.pid), []);
      const environ = readFileSync(`/proc/${spawner}/environ`, 'utf8');
      assert.ok(!environ.includes(CANARY), 'the server environment reached the spawner');
      const names = environ.split('\0').filter(Boolean).map((entry) => entry.slice(0, entry.indexOf('=')));
      for (const name of names) assert.match(name, /^(PATH|HOME|TMPDIR|LANG|MPLCONFIGDIR|MPLBACKEND|NODE_CHANNEL_FD|NODE_CHANNEL_SERIALIZATION_MODE)$/);
      for (const helper of helpersOf(spawner)) assert.ok(!readFileSync(`/proc/${helper}/environ`, 'utf8').includes(CANARY));
    } finally {
      delete process.env.MCPWORKS_SPAWNER_CANARY;
      await sandbox.close();
    }
    assert.deepEqual(spawners(), []);
  });

  it('a spawner killed while idle is replaced, and the next runs work', async () => {
    const logs: string[] = [];
    const sandbox = createBubblewrapSandbox({ network: false, pool: { minSize: 2 }, log: (message) => logs.push(message) });
    try {
      await waitFor('the pool', () => sandbox.poolStats()!.keys.every((key) => key.ready === 2));
      const [first] = spawners();
      process.kill(first, 'SIGKILL');
      await waitFor('the spawner to end', () => !spawners().includes(first));
      assert.deepEqual((await hello(sandbox)).map(resultOf), [{ n: 2 }, { n: 42 }]);
      const [second] = spawners();
      assert.ok(second && second !== first, 'a new spawner started');
      // Killed again at once: the runs go on (spawned directly while it backs off).
      process.kill(second, 'SIGKILL');
      await waitFor('the spawner to end', () => !spawners().includes(second));
      assert.deepEqual((await hello(sandbox)).map(resultOf), [{ n: 2 }, { n: 42 }]);
      assert.ok(logs.some((line) => /spawning directly meanwhile/.test(line)), logs.join('\n'));
      // The pool refills from what is left, and runs keep working.
      await waitFor('the pool', () => sandbox.poolStats()!.keys.every((key) => key.ready === 2));
      assert.deepEqual((await hello(sandbox)).map(resultOf), [{ n: 2 }, { n: 42 }]);
    } finally {
      await sandbox.close();
    }
    assert.deepEqual(spawners(), []);
  });

  it('runs in flight when the spawner dies end with their result or a SandboxError, never hang', async () => {
    const sandbox = createBubblewrapSandbox({ network: false, pool: { minSize: 1 } });
    try {
      await waitFor('the pool', () => sandbox.poolStats()!.keys.every((key) => key.ready === 1));
      const sleeper = sandbox.run({ language: 'python', code: 'import time\ntime.sleep(1.5)\nprint("slept")\nresult = "done"\n', input: {}, limits: pro });
      const spinner = sandbox.run({ language: 'python', code: 'while True:\n    pass\n', input: {}, limits: { ...pro, timeoutSeconds: 2 } });
      const failing = sandbox.run({ language: 'python', code: 'import os, time\ntime.sleep(1)\nos._exit(3)\n', input: {}, limits: pro });
      // Long enough for all three to be running, well before any ends.
      await new Promise((resolve) => setTimeout(resolve, 400));
      for (const pid of spawners()) process.kill(pid, 'SIGKILL');
      const [slept, spun, exited] = await Promise.all([within(10_000, sleeper), within(10_000, spinner), within(10_000, failing)]);
      // The pipes are the server's: the answer still arrives.
      assert.equal(resultOf(slept), 'done');
      assert.equal(slept.stdout, 'slept\n');
      assert.equal(spun.ok, false);
      assert.ok(!spun.ok && ([SANDBOX_ERROR_TYPES.timeout, SANDBOX_ERROR_TYPES.sandbox] as string[]).includes(spun.error.type), JSON.stringify(spun));
      // Its exit status died with the spawner: a platform failure, not the function's.
      assert.ok(!exited.ok && exited.error.type === SANDBOX_ERROR_TYPES.sandbox, JSON.stringify(exited));
      assert.deepEqual((await hello(sandbox)).map(resultOf), [{ n: 2 }, { n: 42 }]);
    } finally {
      await sandbox.close();
    }
  });

  it('a launch sent to a spawner that dies before answering is sent again', async () => {
    const sandbox = createBubblewrapSandbox({ network: false, pool: false, launcherPool: 0 });
    try {
      // The launch request is sent before the spawner has even started; it dies before answering.
      const pending = sandbox.run({ language: 'python', code: 'result = 1\n', input: {}, limits: pro });
      const [first] = spawners();
      process.kill(first, 'SIGKILL');
      assert.equal(resultOf(await within(10_000, pending)), 1);
      assert.ok(!spawners().includes(first));
      assert.deepEqual((await hello(sandbox)).map(resultOf), [{ n: 2 }, { n: 42 }]);
    } finally {
      await sandbox.close();
    }
  });

  it('spawner: false spawns from the server itself', async () => {
    const sandbox = createBubblewrapSandbox({ network: false, pool: false, spawner: false });
    try {
      assert.deepEqual((await hello(sandbox)).map(resultOf), [{ n: 2 }, { n: 42 }]);
      assert.deepEqual(spawners(), []);
    } finally {
      await sandbox.close();
    }
  });
});
