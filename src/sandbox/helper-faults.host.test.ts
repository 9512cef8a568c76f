// Faults around the sandbox helper (issue 11): a helper killed by a signal before its run answered
// is the platform's failure (SandboxError, not metered), on the cold and pooled paths in both
// languages; and the helper's own guards, run as real processes: it ends its sandbox when the
// server it watches ends, and at its own wall-clock limit (from the command, or for a pooled
// sandbox from the SIGUSR2 that says its run began).
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, openSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { describe, it } from 'node:test';
import { sandboxLimitsFor, type SandboxOutcome } from '../core/sandbox.js';
import { DEFAULT_TIER, limitsFor } from '../core/tiers.js';
import { createBubblewrapSandbox, type BubblewrapSandbox } from './bubblewrap.js';
import { defaultHostPaths } from './host.js';
import { cgroupDirsNamed } from '../test-support/processes.js';

const limits = sandboxLimitsFor(limitsFor(DEFAULT_TIER));
const paths = defaultHostPaths();
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function parentOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
}

function exeOf(pid: number): string {
  try {
    return readlinkSync(`/proc/${pid}/exe`);
  } catch {
    return '';
  }
}

/** The host pid of a process whose command line is exactly `argv` (null while there is none). */
function findProcess(argv: string[]): number | null {
  const wanted = `${argv.join('\0')}\0`;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8') === wanted) return Number(entry);
    } catch {
      // ended meanwhile
    }
  }
  return null;
}

/** The sandbox helper above `pid` (sleep → bubblewrap → bubblewrap → helper). */
function helperAbove(pid: number): number {
  for (let current = pid, hops = 0; current > 1 && hops < 10; current = parentOf(current), hops++) {
    if (exeOf(current) === paths.helper) return current;
  }
  throw new Error(`no sandbox helper above ${pid}`);
}

const CODE = {
  python: (marker: string) =>
    `import subprocess\n\ndef main(input_data):\n    print("started")\n    subprocess.run(["/bin/sleep", "${marker}"])\n    return 1\n`,
  typescript: (marker: string) =>
    `import { execFileSync } from "node:child_process";\nexport default function main() {\n  console.log("started");\n  execFileSync("/bin/sleep", ["${marker}"]);\n  return 1;\n}\n`,
};

/** Starts a run that sleeps in a child process, kills its helper with SIGKILL, and returns the outcome. */
async function killHelperDuringRun(sandbox: BubblewrapSandbox, language: 'python' | 'typescript', marker: string): Promise<SandboxOutcome> {
  const running = sandbox.run({ language, code: CODE[language](marker), input: {}, limits });
  let sleeper: number | null = null;
  for (let waited = 0; sleeper === null && waited < 30_000; waited += 20) {
    await sleep(20);
    sleeper = findProcess(['/bin/sleep', marker]);
  }
  assert.ok(sleeper !== null, 'the run started its sleeping child');
  process.kill(helperAbove(sleeper), 'SIGKILL');
  return running;
}

function assertPlatformFailure(outcome: SandboxOutcome, what: string): void {
  assert.equal(outcome.ok, false, what);
  const error = (outcome as Extract<SandboxOutcome, { ok: false }>).error;
  assert.equal(error.type, 'SandboxError', `${what}: ${JSON.stringify(error)}`);
  assert.equal(error.platform, true, what);
}

describe(
  'a helper killed by a signal before the run answered',
  { skip: process.getuid?.() !== 0 && 'the sandbox helper needs root here' },
  () => {
    it('cold path, Python and TypeScript: SandboxError, a platform failure', async () => {
      const sandbox = createBubblewrapSandbox({ network: false, pool: false, zygote: false });
      try {
        for (const [i, language] of (['python', 'typescript'] as const).entries()) {
          assertPlatformFailure(await killHelperDuringRun(sandbox, language, `3${i}1.${process.pid}`), `cold ${language}`);
        }
      } finally {
        await sandbox.close();
      }
    });

    it('pooled path, Python and TypeScript: the same', async () => {
      const sandbox = createBubblewrapSandbox({ network: false, pool: { minSize: 1 }, zygote: false });
      try {
        const ready = () => (sandbox.poolStats()?.keys ?? []).filter((key) => key.ready > 0).length >= 2;
        for (let waited = 0; !ready() && waited < 20_000; waited += 50) await sleep(50);
        const hits = sandbox.poolStats()!.hits;
        for (const [i, language] of (['python', 'typescript'] as const).entries()) {
          assertPlatformFailure(await killHelperDuringRun(sandbox, language, `3${i}2.${process.pid}`), `pooled ${language}`);
        }
        assert.ok(sandbox.poolStats()!.hits >= hits + 2, 'the runs were served by pooled sandboxes');
      } finally {
        await sandbox.close();
      }
    });
  },
);

/** Waits until the sandboxed `/bin/sleep <marker>` runs (60 s at most, for a hung test only). */
async function sandboxStarted(marker: string): Promise<void> {
  for (let waited = 0; findProcess(['/bin/sleep', marker]) === null; waited += 20) {
    if (waited > 60_000) assert.fail(`the sandbox (/bin/sleep ${marker}) never started`);
    await sleep(20);
  }
}

/** Runs the helper as the server would, on a program of our choosing; resolves with its status and stderr. */
function runHelper(args: string[], frame?: string[]): { pid: number; done: Promise<{ code: number | null; stderr: string }> } {
  const seccomp = openSync(paths.seccompProgram, 'r');
  const child = spawn(paths.helper, ['exec', ...args], { stdio: ['pipe', 'ignore', 'pipe', 'ignore', seccomp] });
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  if (frame) {
    const body = Buffer.from(frame.map((arg) => `${arg}\0`).join(''));
    child.stdin!.write(Buffer.concat([Buffer.from(body.length.toString(16).padStart(8, '0')), body]));
  }
  const done = new Promise<{ code: number | null; stderr: string }>((resolve) => child.once('close', (code) => resolve({ code, stderr })));
  return { pid: child.pid!, done };
}

describe('the helper guards its sandbox itself', () => {
  it('kills the sandbox at its own wall-clock limit', async () => {
    const { done } = runHelper(['--deadline-ms', '300', '--', '/bin/sleep', '30']);
    const { code } = await done;
    assert.equal(code, 128 + 9, 'sleep 30 was killed (it would exit 0 on its own)');
  });

  it('kills the sandbox when the server it watches ends', async () => {
    const server = spawn('/bin/sleep', ['60'], { stdio: 'ignore' });
    const marker = `30.${process.pid}66`;
    const { done } = runHelper(['--watch-pid', String(server.pid), '--', '/bin/sleep', marker]);
    // Until its sandbox runs (the helper watches before it starts it): a fixed 200 ms could end first
    // on a loaded machine, and the server's death went unseen.
    await sandboxStarted(marker);
    server.kill('SIGKILL');
    const { code } = await done;
    assert.equal(code, 128 + 9, 'the sandbox ended with the watched server');
  });

  it('scores the sandbox 1000 and itself 500 for the OOM killer (the server, root, is at -500)', async () => {
    const marker = `20.${process.pid}77`;
    const { pid, done } = runHelper(['--deadline-ms', '20000', '--', '/bin/sleep', marker]);
    let sleeper: number | null = null;
    for (let waited = 0; sleeper === null && waited < 10_000; waited += 20) {
      await sleep(20);
      sleeper = findProcess(['/bin/sleep', marker]);
    }
    assert.ok(sleeper !== null);
    assert.equal(readFileSync(`/proc/${sleeper}/oom_score_adj`, 'utf8').trim(), '1000', 'the sandbox goes first');
    assert.equal(readFileSync(`/proc/${pid}/oom_score_adj`, 'utf8').trim(), '500', 'its helper next');
    process.kill(pid, 'SIGTERM');
    assert.equal((await done).code, 128 + 9);
  });

  it('a pooled sandbox: the clock waits for SIGUSR2, then runs', async () => {
    // No signal: the program ends by itself, past the deadline that was never started.
    const idle = runHelper(['--wait-command'], ['--clock-on-signal', '--deadline-ms', '100', '--', '/bin/sleep', '1']);
    assert.equal((await idle.done).code, 0, 'no clock before the run begins');
    const marker = `30.${process.pid}55`;
    const started = runHelper(['--wait-command'], ['--clock-on-signal', '--deadline-ms', '100', '--', '/bin/sleep', marker]);
    // Until the run has begun (not a fixed 200 ms, which a loaded machine outlasts before the helper is ready).
    await sandboxStarted(marker);
    process.kill(started.pid, 'SIGUSR2');
    assert.equal((await started.done).code, 128 + 9, 'killed once its clock ran out');
  });
});

/** This process's sandbox-instance cgroup directories (instance-PID-…), in every hierarchy. */
const ourInstanceGroups = () => cgroupDirsNamed(`instance-${process.pid}-`);

describe("a dead server's cgroups", { skip: process.getuid?.() !== 0 && 'cgroups need root' }, () => {
  it('start-up kills what is left in them, then removes them', async () => {
    const first = createBubblewrapSandbox({ network: false, pool: false, zygote: false, launcherPool: 0 });
    const parents = ourInstanceGroups().map((dir) => dirname(dir));
    await first.close();
    assert.ok(parents.length > 0, 'this host gives sandboxes cgroups (root)');
    // A group of a server that is gone, with a process still in it.
    const deadPid = spawnSync('/bin/true').pid!;
    const groups = parents.map((parent) => join(parent, `instance-${deadPid}-deadbeef`, 'run-left'));
    const orphan = spawn('/bin/sleep', ['120'], { stdio: 'ignore' });
    const ended = new Promise<NodeJS.Signals | null>((resolve) => orphan.once('exit', (_code, signal) => resolve(signal)));
    for (const group of groups) {
      mkdirSync(group, { recursive: true });
      writeFileSync(join(group, 'cgroup.procs'), String(orphan.pid));
    }
    const second = createBubblewrapSandbox({ network: false, pool: false, zygote: false, launcherPool: 0 });
    try {
      const outcome = await Promise.race([ended, sleep(10_000).then(() => 'still running')]);
      assert.equal(outcome, 'SIGKILL', "the process left in the dead server's group was killed");
      for (const group of groups) assert.equal(existsSync(dirname(group)), false, `${dirname(group)} removed`);
    } finally {
      orphan.kill('SIGKILL');
      await second.close();
    }
  });
});
