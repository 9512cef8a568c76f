// Sandboxes started from the spawner process (spawner.ts, host-bin/spawner.cjs), through real
// bubblewrap sandboxes: runs go through it, it holds none of the server's environment, and its
// death (idle or mid-run) never loses the next run nor hangs one in flight. One case uses a
// stand-in spawner, to die at a chosen point of a launch.
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { SANDBOX_ERROR_TYPES, sandboxLimitsFor, type SandboxOutcome } from '../core/sandbox.js';
import { limitsFor } from '../core/tiers.js';
import { createBubblewrapSandbox, type BubblewrapSandbox } from './bubblewrap.js';
import { Spawner } from './spawner.js';

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
    sandbox.run({
      language: 'python',
      code: 'def main(input_data):\n    return {"n": input_data["n"] + 1}\n',
      input: { n: 1 },
      limits: pro,
    }),
    sandbox.run({
      language: 'typescript',
      code: 'export default (input: { n: number }) => ({ n: input.n * 2 });\n',
      input: { n: 21 },
      limits: pro,
    }),
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
      const names = environ
        .split('\0')
        .filter(Boolean)
        .map((entry) => entry.slice(0, entry.indexOf('=')));
      for (const name of names)
        assert.match(name, /^(PATH|HOME|TMPDIR|LANG|MPLCONFIGDIR|MPLBACKEND|NODE_CHANNEL_FD|NODE_CHANNEL_SERIALIZATION_MODE)$/);
      // A helper whose run just ended may be gone between the listing and the read: it holds no
      // environment then; the pre-started one (the pool's minimum) stays, so at least one is read.
      let read = 0;
      for (const helper of helpersOf(spawner)) {
        let helperEnviron: string;
        try {
          helperEnviron = readFileSync(`/proc/${helper}/environ`, 'utf8');
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code === 'ENOENT' || (error as NodeJS.ErrnoException).code === 'ESRCH') continue;
          throw error;
        }
        read++;
        assert.ok(!helperEnviron.includes(CANARY), 'the server environment reached a helper');
      }
      assert.ok(read > 0, 'no helper environment was read');
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
      // Seen by the server once both its channels have ended: its pid leaves spawners() earlier (a
      // dying process's command line reads empty while its memory is torn down, before its fds close).
      const ends = () => logs.filter((line) => /^sandbox spawner ended/.test(line)).length;
      const [first] = spawners();
      process.kill(first, 'SIGKILL');
      await waitFor('the spawner to end', () => !spawners().includes(first) && ends() === 1);
      assert.deepEqual((await hello(sandbox)).map(resultOf), [{ n: 2 }, { n: 42 }]);
      const [second] = spawners();
      assert.ok(second && second !== first, 'a new spawner started');
      // Killed again at once: the runs go on (spawned directly while it backs off).
      process.kill(second, 'SIGKILL');
      await waitFor('the spawner to end', () => !spawners().includes(second) && ends() === 2);
      assert.deepEqual((await hello(sandbox)).map(resultOf), [{ n: 2 }, { n: 42 }]);
      assert.ok(
        logs.some((line) => /spawning directly meanwhile/.test(line)),
        logs.join('\n'),
      );
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
      // Each run names its process (comm) once its code runs, so the spawner dies while all three
      // are running: after a fixed 400 ms, a loaded host could still be starting them.
      const markers = ['a', 'b', 'c'].map((letter) => `spawn${process.pid % 100000}${letter}`);
      const named = (marker: string) => `open("/proc/self/comm", "w").write(${JSON.stringify(marker)})\n`;
      const sleeper = sandbox.run({
        language: 'python',
        code: `import time\n${named(markers[0]!)}time.sleep(1.5)\nprint("slept")\nresult = "done"\n`,
        input: {},
        limits: pro,
      });
      const spinner = sandbox.run({
        language: 'python',
        code: `${named(markers[1]!)}while True:\n    pass\n`,
        input: {},
        limits: { ...pro, timeoutSeconds: 2 },
      });
      const failing = sandbox.run({
        language: 'python',
        code: `import os, time\n${named(markers[2]!)}time.sleep(1)\nos._exit(3)\n`,
        input: {},
        limits: pro,
      });
      const running = new Set<string>();
      await waitFor(
        'all three runs in their code',
        () => {
          for (const pid of readdirSync('/proc').filter((entry) => /^\d+$/.test(entry))) {
            try {
              running.add(readFileSync(`/proc/${pid}/comm`, 'utf8').trim());
            } catch {
              // gone
            }
          }
          return markers.every((marker) => running.has(marker));
        },
        60_000,
      );
      for (const pid of spawners()) process.kill(pid, 'SIGKILL');
      const [slept, spun, exited] = await Promise.all([within(10_000, sleeper), within(10_000, spinner), within(10_000, failing)]);
      // The pipes are the server's: the answer still arrives.
      assert.equal(resultOf(slept), 'done');
      assert.equal(slept.stdout, 'slept\n');
      assert.equal(spun.ok, false);
      assert.ok(
        !spun.ok && ([SANDBOX_ERROR_TYPES.timeout, SANDBOX_ERROR_TYPES.sandbox] as string[]).includes(spun.error.type),
        JSON.stringify(spun),
      );
      // os._exit(3) is answered by the runner itself (one exit rule in both languages) on the
      // server's pipe, so it arrives like the sleeper's result: the function's failure.
      assert.ok(
        !exited.ok && exited.error.type === SANDBOX_ERROR_TYPES.exited && /status 3/.test(exited.error.message),
        JSON.stringify(exited),
      );
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

  it('a launch whose spawner dies after handing over only some pipes is started again, untouched', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'spawner-test-'));
    // The first spawner hands over the helper's stdin alone, then dies; later ones are the real one.
    const script = join(dir, 'half-starter.cjs');
    writeFileSync(
      script,
      `'use strict';
const { existsSync, openSync, writeFileSync } = require('node:fs');
const { spawn } = require('node:child_process');
if (existsSync(process.env.MARKER)) {
  require(${JSON.stringify(fileURLToPath(new URL('./host-bin/spawner.cjs', import.meta.url)))});
} else {
  writeFileSync(process.env.MARKER, '');
  process.on('message', (message) => {
    if (message.op !== 'spawn') return;
    const child = spawn(message.file, message.args, { stdio: ['pipe', 'pipe', 'pipe', 'pipe', openSync(message.seccomp, 'r')], env: message.env });
    process.stdout.write(JSON.stringify({ op: 'spawned', id: message.id, pid: child.pid }) + '\\n');
    // The next message leaves only once the server has taken the handle in.
    process.send({ op: 'stdio', id: message.id, index: 0 }, child.stdin);
    process.send({ op: 'taken' }, undefined, undefined, () => process.kill(process.pid, 'SIGKILL'));
  });
}
`,
    );
    const logs: string[] = [];
    const spawner = new Spawner(script, { PATH: '/usr/bin:/bin', MARKER: join(dir, 'marker') }, (line) => logs.push(line));
    try {
      // Each helper appends the line it reads to the same file: one that got it before the restart
      // would leave a second (the first one only sees its stdin end).
      const seen = join(dir, 'seen');
      writeFileSync(seen, '');
      const helper = spawner.launch(
        '/bin/sh',
        ['-c', 'read line && echo "$line" >> "$0" && echo "got $line"', seen],
        { PATH: '/usr/bin:/bin' },
        '/dev/null',
      );
      helper.stdin.end('hello\n');
      let stdout = '';
      helper.stdout.on('data', (chunk: Buffer) => (stdout += chunk));
      helper.stderr.resume();
      helper.stdio[3].resume();
      const exit = await helper.exited;
      assert.deepEqual(exit, { code: 0, signal: null, spawnFailed: false, lost: false }, logs.join('\n'));
      assert.equal(stdout, 'got hello\n');
      assert.equal(readFileSync(seen, 'utf8'), 'hello\n');
      assert.equal(helper.restarts, 1);
      assert.ok(
        logs.some((line) => /sandbox spawner ended \(1 helpers in flight\)/.test(line)),
        logs.join('\n'),
      );
    } finally {
      await spawner.close();
      rmSync(dir, { recursive: true, force: true });
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
