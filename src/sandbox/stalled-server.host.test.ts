// A sandbox never outlives its time limit, whatever the server does (issue 11): the process that
// owns the sandbox is stopped with SIGSTOP while its run sleeps (in a child process, so no CPU
// limit helps), and the run must still end at its own wall clock, on the cold, pooled and zygote
// paths, in both languages (the zygote serves Python only). Once the owner is resumed, the run
// reads as a timeout.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Host pids of processes whose command line is exactly `argv`. */
function processesRunning(argv: string[]): number[] {
  const wanted = `${argv.join('\0')}\0`;
  const found: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8') === wanted) found.push(Number(entry));
    } catch {
      // ended meanwhile
    }
  }
  return found;
}

async function stallDuringRun(route: 'cold' | 'pooled' | 'zygote', language: 'python' | 'typescript', marker: string): Promise<void> {
  const owner = spawn(process.execPath, ['--import', 'tsx', 'src/test-support/stalled-owner.ts', route, language, marker], {
    cwd: REPO_ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, LOG_LEVEL: 'warn' },
  });
  let output = '';
  let errors = '';
  owner.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  owner.stderr!.on('data', (chunk: Buffer) => (errors += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => owner.once('exit', (code) => resolve(code)));
  try {
    let sleepers: number[] = [];
    for (let waited = 0; sleepers.length === 0 && waited < 90_000; waited += 20) {
      await sleep(20);
      sleepers = processesRunning(['/bin/sleep', marker]);
      if (owner.exitCode !== null) break;
    }
    assert.ok(sleepers.length > 0, `the run started its sleeping child (${route} ${language}): ${output}${errors}`);
    // The owner's event loop stops: no timer of its own can end the run now.
    owner.kill('SIGSTOP');
    let gone = false;
    // The run's limit is 5 s and the sandbox's own clock 1 s more; well past both, it must be gone.
    for (let waited = 0; !gone && waited < 15_000; waited += 100) {
      await sleep(100);
      gone = processesRunning(['/bin/sleep', marker]).length === 0;
    }
    const stillStopped = readFileSync(`/proc/${owner.pid}/stat`, 'utf8').split(') ')[1]!.startsWith('T');
    owner.kill('SIGCONT');
    assert.ok(stillStopped, 'the owner was stopped all along');
    assert.ok(gone, `${route} ${language}: the run ended at its own wall clock while its owner was stopped`);
    assert.equal(await exited, 0, errors);
    const last = JSON.parse(output.trim().split('\n').at(-1)!) as { outcome: { ok: boolean; error?: { type: string } }; served: boolean };
    assert.equal(last.served, true, `the run took the ${route} path`);
    assert.equal(last.outcome.ok, false);
    assert.equal(last.outcome.error?.type, 'TimeoutError', JSON.stringify(last.outcome));
  } finally {
    if (owner.exitCode === null) {
      owner.kill('SIGCONT');
      owner.kill('SIGKILL');
    }
    for (const pid of processesRunning(['/bin/sleep', marker])) process.kill(pid, 'SIGKILL');
  }
}

describe(
  'a stalled server (SIGSTOP) cannot keep a run past its time limit',
  { skip: process.getuid?.() !== 0 && 'the sandbox helper needs root here' },
  () => {
    it('cold path, Python and TypeScript', async () => {
      await stallDuringRun('cold', 'python', `301.${process.pid}`);
      await stallDuringRun('cold', 'typescript', `302.${process.pid}`);
    });

    it('pooled path, Python and TypeScript', async () => {
      await stallDuringRun('pooled', 'python', `303.${process.pid}`);
      await stallDuringRun('pooled', 'typescript', `304.${process.pid}`);
    });

    it('zygote path (Python)', async () => {
      await stallDuringRun('zygote', 'python', `305.${process.pid}`);
    });
  },
);
