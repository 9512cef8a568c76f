// The pre-started sandbox pool, through real bubblewrap sandboxes: one run per sandbox and nothing
// carried between runs, limits that still hold for pooled runs, refills, sizing by demand and by
// free memory, and the switch that turns it off.
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { sandboxLimitsFor, type SandboxOutcome, type SandboxRequest } from '../core/sandbox.js';
import { limitsFor } from '../core/tiers.js';
import { sandboxFromEnv } from '../app/config.js';
import { createBubblewrapSandbox, type BubblewrapSandbox } from './bubblewrap.js';

const pro = sandboxLimitsFor(limitsFor('pro'));
const small = sandboxLimitsFor({ timeoutSeconds: 90, memoryMb: 256, maxResultBytes: 1024 * 1024 });

function resultOf(outcome: SandboxOutcome): any {
  assert.equal(outcome.ok, true, `expected success, got ${JSON.stringify(outcome)}`);
  return (outcome as { result: unknown }).result;
}

function errorOf(outcome: SandboxOutcome): { type: string; message: string } {
  assert.equal(outcome.ok, false, `expected a failure, got ${JSON.stringify(outcome)}`);
  return (outcome as { error: { type: string; message: string } }).error;
}

function keyStats(sandbox: BubblewrapSandbox, label: string) {
  const stats = sandbox.poolStats();
  assert.ok(stats, 'the pool is on');
  return stats.keys.find((key) => key.label === label);
}

async function waitFor(what: string, condition: () => boolean, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** The runners (python3 or node) of the pre-started sandboxes below this process, waiting for their requests. */
function pooledRunners(): number[] {
  const parents = new Map<number, number>();
  const argv = new Map<number, string[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      parents.set(Number(entry), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
      argv.set(Number(entry), readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0'));
    } catch {
      // gone
    }
  }
  const below = (pid: number): boolean => {
    for (let current = parents.get(pid); current !== undefined && current > 1; current = parents.get(current)) {
      if (current === process.pid) return true;
    }
    return false;
  };
  return [...argv].filter(([pid, args]) => below(pid) && !args[0]!.includes('bwrap') && args.includes('pooled')).map(([pid]) => pid);
}

/** The idle launchers below this process: helpers waiting for their command (they watch this pid). */
function idleLaunchers(): number[] {
  return readdirSync('/proc')
    .filter((entry) => /^\d+$/.test(entry))
    .filter((entry) => {
      try {
        const argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
        return argv.includes('--wait-command') && argv.includes(String(process.pid));
      } catch {
        return false;
      }
    })
    .map(Number);
}

/** Processes whose name (comm) is one of these. */
function processesNamed(names: readonly string[]): number[] {
  return readdirSync('/proc')
    .filter((entry) => /^\d+$/.test(entry))
    .filter((entry) => {
      try {
        return names.includes(readFileSync(`/proc/${entry}/comm`, 'utf8').trim());
      } catch {
        return false;
      }
    })
    .map(Number);
}

const readyCount = (sandbox: BubblewrapSandbox, label: string) => keyStats(sandbox, label)?.ready ?? 0;

function run(
  sandbox: BubblewrapSandbox,
  language: SandboxRequest['language'],
  code: string,
  extra: Partial<SandboxRequest> = {},
): Promise<SandboxOutcome> {
  return sandbox.run({ language, code, input: {}, limits: pro, ...extra });
}

describe('sandbox pool', () => {
  it("each pooled sandbox serves one run: the next sees none of the previous run's files, globals or env", async () => {
    const sandbox = createBubblewrapSandbox({ network: false, pool: { minSize: 2 } });
    try {
      await waitFor('the pool', () => readyCount(sandbox, 'python 512 MB') === 2 && readyCount(sandbox, 'typescript 512 MB') === 2);
      const python = `import builtins, os, sys
def main(input_data):
    seen = {
        "file": os.path.exists("/tmp/left.txt"),
        "global": hasattr(builtins, "left_behind"),
        "env": os.environ.get("LEFT_SECRET"),
        "argv": sys.argv,
    }
    open("/tmp/left.txt", "w").write("x")
    builtins.left_behind = True
    os.environ["LEFT_BY_CODE"] = "1"
    return seen
`;
      const seen = [];
      for (let index = 0; index < 4; index++) {
        // Each run waits for a refilled sandbox, so all four are pooled even on a loaded machine.
        await waitFor('a ready sandbox', () => readyCount(sandbox, 'python 512 MB') >= 1);
        // Only the first run is given the secret; the ones after must not find it.
        seen.push(resultOf(await run(sandbox, 'python', python, index === 0 ? { env: { LEFT_SECRET: 'left-secret-789' } } : {})));
      }
      assert.equal(seen[0].env, 'left-secret-789');
      for (const later of seen.slice(1)) assert.deepEqual([later.file, later.global, later.env], [false, false, null]);
      // Pooled or not, the code sees the same process: the runner's "pooled" argument is gone.
      for (const one of seen) assert.deepEqual(one.argv, ['main.py']);
      // No sandbox served twice: the file and global each run leaves would be there for the next.
      // (Namespace inode numbers are no proof: the kernel reuses them once a namespace is freed.)
      // warm: the runner's own warm-up module left nothing a run can look up (its source map).
      const typescript = `import { existsSync, writeFileSync } from "node:fs";
import { findSourceMap } from "node:module";
export default () => {
  const seen = { file: existsSync("/tmp/left.txt"), global: "leftBehind" in globalThis, env: process.env.LEFT_SECRET ?? null, argv: process.argv.slice(2), warm: findSourceMap("/sandbox/warm-up.js")?.payload ?? null };
  writeFileSync("/tmp/left.txt", "x");
  (globalThis as any).leftBehind = true;
  return seen;
};
`;
      await waitFor('a ready sandbox', () => readyCount(sandbox, 'typescript 512 MB') >= 1);
      const first = resultOf(await run(sandbox, 'typescript', typescript, { env: { LEFT_SECRET: 'left-secret-789' } }));
      await waitFor('a ready sandbox', () => readyCount(sandbox, 'typescript 512 MB') >= 1);
      const second = resultOf(await run(sandbox, 'typescript', typescript));
      assert.deepEqual([first.file, first.global, first.env], [false, false, 'left-secret-789']);
      assert.deepEqual([second.file, second.global, second.env], [false, false, null]);
      assert.deepEqual([first.argv, second.argv], [[], []]);
      assert.deepEqual([first.warm, second.warm], [null, null]);
      // Every one of those runs took a pre-started sandbox.
      assert.equal(keyStats(sandbox, 'python 512 MB')?.hits, 4);
      assert.equal(keyStats(sandbox, 'typescript 512 MB')?.hits, 2);
    } finally {
      await sandbox.close();
    }
  });

  it('timeouts and memory limits hold for pooled runs; the timeout starts when the run claims its sandbox', async () => {
    const sandbox = createBubblewrapSandbox({ network: false, pool: { minSize: 2 } });
    try {
      await waitFor('the pool', () => readyCount(sandbox, 'python 512 MB') === 2 && readyCount(sandbox, 'typescript 512 MB') === 2);
      // These sandboxes have waited longer than a 3 s timeout: only time after the claim counts. (3 s,
      // not 1 s: a 0.3 s run inside 1 s left a loaded host 0.7 s for the claim and the answer.)
      await new Promise((resolve) => setTimeout(resolve, 3200));
      const brief = { ...pro, timeoutSeconds: 1 };
      assert.equal(
        resultOf(
          await run(sandbox, 'python', 'import time\ntime.sleep(0.3)\nresult = "in time"\n', { limits: { ...pro, timeoutSeconds: 3 } }),
        ),
        'in time',
      );
      await waitFor('the refill', () => readyCount(sandbox, 'python 512 MB') === 2);
      const spin = errorOf(await run(sandbox, 'python', 'while True:\n    pass\n', { limits: brief }));
      assert.equal(spin.type, 'TimeoutError');
      assert.equal(
        errorOf(await run(sandbox, 'typescript', 'export default () => { for (;;) {} };\n', { limits: brief })).type,
        'TimeoutError',
      );
      assert.equal(errorOf(await run(sandbox, 'python', 'blob = bytearray(4 * 1024 ** 3)\n')).type, 'MemoryError');
      assert.equal(keyStats(sandbox, 'python 512 MB')?.hits, 3);
      assert.equal(keyStats(sandbox, 'typescript 512 MB')?.hits, 1);

      // Another memory limit is another shape: its first run is cold, then one is kept ready too.
      const allocate =
        'def main(input_data):\n    blob = bytearray(input_data["mb"] * 1024 * 1024)\n    return len(blob) // (1024 * 1024)\n';
      assert.equal(resultOf(await sandbox.run({ language: 'python', code: allocate, input: { mb: 64 }, limits: small })), 64);
      assert.equal(keyStats(sandbox, 'python 256 MB')?.hits, 0);
      await waitFor('the 256 MB shape', () => readyCount(sandbox, 'python 256 MB') === 1);
      assert.equal(
        errorOf(await sandbox.run({ language: 'python', code: allocate, input: { mb: 320 }, limits: small })).type,
        'MemoryError',
      );
      assert.equal(resultOf(await sandbox.run({ language: 'python', code: allocate, input: { mb: 160 }, limits: small })), 160);
      assert.equal(keyStats(sandbox, 'python 256 MB')?.hits, 2);
    } finally {
      await sandbox.close();
    }
  });

  it('refills after claims, grows with demand, shrinks back when idle', async () => {
    // The pool reads rates and idle times from this clock, so sizing does not depend on how fast
    // this machine runs the claims: time moves only where the test says so.
    let clock = Date.now();
    const sandbox = createBubblewrapSandbox({
      network: false,
      pool: { minSize: 2, maxSize: 5, idleMs: 1000, tickMs: 100, now: () => clock },
    });
    try {
      await waitFor('the pool', () => readyCount(sandbox, 'python 512 MB') === 2);
      const quick = (n: number) => run(sandbox, 'python', 'def main(input_data):\n    return input_data["n"] * 2\n', { input: { n } });
      // 30 claims within 100 ms of the pool's time is a rate that asks for more than the floor of 2.
      for (let wave = 0; wave < 5; wave++) {
        // Each wave starts on a refilled floor, so at least two of its claims are hits.
        await waitFor('the refill', () => readyCount(sandbox, 'python 512 MB') >= 2);
        const outcomes = await Promise.all([0, 1, 2, 3, 4, 5].map((n) => quick(wave * 6 + n)));
        outcomes.forEach((outcome, n) => assert.equal(resultOf(outcome), (wave * 6 + n) * 2));
        clock += 20;
      }
      const busy = keyStats(sandbox, 'python 512 MB')!;
      assert.ok(busy.target > 2, JSON.stringify(busy));
      assert.ok(busy.hits >= 10, JSON.stringify(busy));
      await waitFor('growth', () => readyCount(sandbox, 'python 512 MB') > 2);
      // Idle: the claim rate decays and the pool goes back to its floor, refilled and ready.
      clock += 60_000;
      await waitFor('the shrink', () => readyCount(sandbox, 'python 512 MB') === 2 && keyStats(sandbox, 'python 512 MB')!.starting === 0);
      assert.equal(keyStats(sandbox, 'python 512 MB')!.target, 2);
      // A learned shape nobody claims any more is dropped altogether.
      resultOf(await sandbox.run({ language: 'python', code: 'result = 1\n', input: {}, limits: small }));
      await waitFor('the learned shape', () => readyCount(sandbox, 'python 256 MB') === 1);
      clock += 1000;
      await waitFor('the drop', () => keyStats(sandbox, 'python 256 MB') === undefined);
    } finally {
      await sandbox.close();
    }
  });

  it('a shape with a mount is kept ready for that directory, and not used once the directory is replaced', async () => {
    const sandbox = createBubblewrapSandbox({ network: false, pool: { minSize: 2 } });
    const root = mkdtempSync(join(tmpdir(), 'mcpworks-pool-view-'));
    const source = join(root, 'view');
    const fill = (text: string) => {
      mkdirSync(source, { mode: 0o755 });
      writeFileSync(join(source, 'version.txt'), text);
      for (const dir of [root, source]) chmodSync(dir, 0o755);
      chmodSync(join(source, 'version.txt'), 0o644);
    };
    try {
      fill('v1');
      const read = () =>
        run(sandbox, 'python', 'result = open("/opt/view/version.txt").read()\n', { mounts: [{ source, target: '/opt/view' }] });
      assert.equal(resultOf(await read()), 'v1');
      await waitFor('the mount shape', () => readyCount(sandbox, 'python 512 MB mounts') === 1);
      assert.equal(resultOf(await read()), 'v1');
      assert.equal(keyStats(sandbox, 'python 512 MB mounts')?.hits, 1);
      // Rebuilt at the same path: sandboxes that mounted the old directory must not serve it.
      await waitFor('the refill', () => readyCount(sandbox, 'python 512 MB mounts') === 1);
      rmSync(source, { recursive: true });
      fill('v2');
      assert.equal(resultOf(await read()), 'v2');
      await waitFor('the new view', () => readyCount(sandbox, 'python 512 MB mounts') === 1);
      assert.equal(resultOf(await read()), 'v2');
    } finally {
      await sandbox.close();
      rmSync(root, { recursive: true, force: true });
    }
  });

  it('free memory caps the pool: below the reserve nothing waits, and runs take the cold path', async () => {
    let free = 64 * 1024 ** 3;
    const sandbox = createBubblewrapSandbox({
      network: false,
      pool: { minSize: 2, tickMs: 100, reserveBytes: 1024 ** 3, freeMemory: () => free },
    });
    try {
      await waitFor('the pool', () => readyCount(sandbox, 'python 512 MB') === 2);
      free = 512 * 1024 ** 2;
      await waitFor('the release', () => sandbox.poolStats()!.keys.every((key) => key.ready === 0 && key.starting === 0));
      const before = sandbox.poolStats()!.hits;
      assert.equal(resultOf(await run(sandbox, 'python', 'result = "cold"\n')), 'cold');
      assert.equal(resultOf(await run(sandbox, 'typescript', 'export default () => "cold";\n')), 'cold');
      await new Promise((resolve) => setTimeout(resolve, 300));
      assert.equal(sandbox.poolStats()!.hits, before);
      assert.ok(sandbox.poolStats()!.keys.every((key) => key.ready === 0 && key.starting === 0));
    } finally {
      await sandbox.close();
    }
  });

  // A run held inside its code until the test lets it go: it calls the bridge, which answers when
  // `open` is called. `entered` settles once the run's code is running.
  function gatedRun(sandbox: BubblewrapSandbox) {
    let open = () => {};
    const gate = new Promise<void>((resolve) => (open = resolve));
    let entered = () => {};
    const inside = new Promise<void>((resolve) => (entered = resolve));
    const outcome = run(sandbox, 'typescript', 'export default () => globalThis.__mcpworksBridge({ wait: true });\n', {
      bridge: async () => {
        entered();
        await gate;
        return { ok: true, result: 'let go' };
      },
    });
    return { outcome, inside, open };
  }

  it("a claimed sandbox's replacement starts once the run has answered, not beside it", async () => {
    const sandbox = createBubblewrapSandbox({ network: false, zygote: false, pool: { minSize: 2, replaceAfterMs: 600_000 } });
    try {
      await waitFor('the pool', () => readyCount(sandbox, 'typescript 512 MB') === 2);
      const gated = gatedRun(sandbox);
      await gated.inside;
      // The periodic refill (once a second) does not start it either.
      await new Promise((resolve) => setTimeout(resolve, 1200));
      const during = keyStats(sandbox, 'typescript 512 MB')!;
      assert.deepEqual([during.ready, during.starting, during.hits], [1, 0, 1], 'nothing started while the run is in progress');
      gated.open();
      assert.deepEqual(resultOf(await gated.outcome), { ok: true, result: 'let go' });
      await waitFor('the replacement', () => readyCount(sandbox, 'typescript 512 MB') === 2);
    } finally {
      await sandbox.close();
    }
  });

  it('runs that go on do not starve the pool: three at once empty it, and it refills while they run', async () => {
    const sandbox = createBubblewrapSandbox({ network: false, zygote: false, pool: { minSize: 2 } });
    try {
      await waitFor('the pool', () => readyCount(sandbox, 'typescript 512 MB') === 2);
      const gated = [gatedRun(sandbox), gatedRun(sandbox), gatedRun(sandbox)];
      await Promise.all(gated.map((one) => one.inside));
      // Two took pooled sandboxes, the third started its own; all three are still in their code.
      assert.equal(keyStats(sandbox, 'typescript 512 MB')!.hits, 2);
      await waitFor('the refill while the runs go on', () => readyCount(sandbox, 'typescript 512 MB') === 2);
      for (const one of gated) one.open();
      for (const one of gated) assert.deepEqual(resultOf(await one.outcome), { ok: true, result: 'let go' });
      assert.equal(resultOf(await run(sandbox, 'typescript', 'export default () => "next";\n')), 'next');
      assert.equal(keyStats(sandbox, 'typescript 512 MB')!.hits, 3, 'the next run took a pooled sandbox');
    } finally {
      await sandbox.close();
    }
  });

  it('MCPWORKS_SANDBOX_POOL=off (or pool: false) starts every sandbox on the request path', async () => {
    // The switch is read once, at start, by the composition root (src/app/config.ts), which passes it in.
    const sandbox: BubblewrapSandbox = createBubblewrapSandbox({ ...sandboxFromEnv({ MCPWORKS_SANDBOX_POOL: 'off' }), network: false });
    try {
      assert.equal(sandbox.poolStats(), null);
      assert.equal(resultOf(await run(sandbox, 'python', 'result = "fresh"\n')), 'fresh');
    } finally {
      await sandbox.close();
    }
    const off = createBubblewrapSandbox({ network: false, pool: false });
    assert.equal(off.poolStats(), null);
    await off.close();
  });
});

describe('pooled sandboxes killed while they wait', () => {
  /** Each run tells the host through the bridge that its code ran: `count` has how many times. */
  function counted(sandbox: BubblewrapSandbox, count: Map<string, number>, language: 'python' | 'typescript', n: number, tail = '') {
    const mark = `${language}-${n}-${Math.random()}`;
    const code =
      language === 'python'
        ? `import _mcpworks_bridge\n_mcpworks_bridge.call({"mark": ${JSON.stringify(mark)}})\n${tail}result = ${n}\n`
        : `export function main() { (globalThis as any).__mcpworksBridge({ mark: ${JSON.stringify(mark)} }); ${tail}return ${n}; }`;
    const bridge = async (message: unknown) => {
      count.set(mark, (count.get(mark) ?? 0) + 1);
      return { ok: true, result: message };
    };
    return { mark, outcome: run(sandbox, language, code, { bridge, ...(language === 'python' ? { entry: 'script' as const } : {}) }) };
  }

  it('runs that claim pre-started sandboxes killed before their start ack get their real results, their code run once', async () => {
    const sandbox = createBubblewrapSandbox({ network: false, pool: { minSize: 3 }, zygote: false });
    try {
      await waitFor('the pool', () => readyCount(sandbox, 'python 512 MB') === 3 && readyCount(sandbox, 'typescript 512 MB') === 3);
      const runners = pooledRunners();
      assert.ok(runners.length >= 6, `pooled runners found: ${runners.length}`);
      // No pause: the runs claim them before the host has seen any of them end.
      for (const pid of runners) process.kill(pid, 'SIGKILL');
      const count = new Map<string, number>();
      const runs = (['python', 'typescript'] as const).flatMap((language) =>
        [0, 1, 2].map((n) => ({ n, ...counted(sandbox, count, language, n) })),
      );
      for (const { n, mark, outcome } of runs) {
        assert.equal(resultOf(await outcome), n);
        assert.equal(count.get(mark), 1, 'its code ran once');
      }
    } finally {
      await sandbox.close();
    }
  });

  it('runs that take pre-started helpers (launchers) killed while they waited get their real results, their code run once', async () => {
    const sandbox = createBubblewrapSandbox({ network: false, pool: false, zygote: false, launcherPool: 2 });
    try {
      await waitFor('the launchers', () => idleLaunchers().length === 2);
      // No pause: the runs take them before the host has seen them end.
      for (const pid of idleLaunchers()) process.kill(pid, 'SIGKILL');
      const count = new Map<string, number>();
      const runs = (['python', 'typescript'] as const).flatMap((language) =>
        [0, 1].map((n) => ({ n, ...counted(sandbox, count, language, n) })),
      );
      for (const { n, mark, outcome } of runs) {
        assert.equal(resultOf(await outcome), n);
        assert.equal(count.get(mark), 1, 'its code ran once');
      }
    } finally {
      await sandbox.close();
    }
  });

  it('runs whose code had begun when their pre-started sandboxes were killed fail and are never run again', async () => {
    const sandbox = createBubblewrapSandbox({ network: false, pool: { minSize: 2 }, zygote: false });
    try {
      await waitFor('the pool', () => readyCount(sandbox, 'python 512 MB') === 2 && readyCount(sandbox, 'typescript 512 MB') === 2);
      const count = new Map<string, number>();
      const sleep = {
        python: 'import time\ntime.sleep(30)\n',
        typescript: 'Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 30000); ',
      };
      // Two tell the host they have begun (a bridge call); two say nothing on fd 3 and only rename
      // their process, which the test sees in /proc.
      const markers = { python: `mcpwp${process.pid % 100000}`, typescript: `mcpwt${process.pid % 100000}` };
      const runs = [
        counted(sandbox, count, 'python', 1, sleep.python).outcome,
        counted(sandbox, count, 'typescript', 2, sleep.typescript).outcome,
        run(sandbox, 'python', `open("/proc/self/comm", "w").write("${markers.python}")\n${sleep.python}result = 3\n`, { entry: 'script' }),
        run(sandbox, 'typescript', `export function main() { process.title = "${markers.typescript}"; ${sleep.typescript}return 4; }`),
      ];
      const named = () => processesNamed(Object.values(markers));
      await waitFor('all four runs to begin', () => count.size === 2 && named().length === 2);
      // Theirs, and refills started since (which no run has claimed).
      for (const pid of [...pooledRunners(), ...named()]) process.kill(pid, 'SIGKILL');
      for (const outcome of await Promise.all(runs)) assert.equal(outcome.ok, false, JSON.stringify(outcome));
      assert.deepEqual([...count.values()], [1, 1], 'never run again');
      assert.deepEqual(named(), [], 'nor the silent ones');
    } finally {
      await sandbox.close();
    }
  });
});
