// The benches' accounting (bench/lib): the /proc tree walk and its CPU sums, the smaps breakdown,
// the machine's busy time and nearest-rank quantiles. A wrong sum here would print a wrong figure
// beside a target, so each is checked on known input, and the CPU walk on a real child process.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { beyondIdle, machineBusyMs } from '../../bench/lib/machine.js';
import { quantile } from '../../bench/lib/measure.js';
import { openCgroupCpu, ownGroupPath, parseCgroupCpuMs } from '../../bench/lib/cgroup-cpu.js';
import { breakdown } from '../../bench/lib/smaps.js';
import { parseStat, sampleTree, treeCpu, walk, watchTree, type Stat } from '../../bench/lib/tree.js';

describe('bench/lib/tree', () => {
  it('reads ppid and CPU after the last ")" of a command name that holds spaces and parentheses', () => {
    // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime cutime cstime …
    const stat = parseStat('42 (a) b (c)) S 7 42 42 0 -1 4194560 100 0 0 0 11 22 33 44 20 0 1 0');
    assert.deepEqual(stat, { ppid: 7, ownTicks: 33, cpuTicks: 110 });
  });

  it('walks the tree under root and leaves out the subtrees under an excluded pid', () => {
    const stat = (ppid: number): Stat => ({ ppid, cpuTicks: 1, ownTicks: 1 });
    const stats = new Map([
      [1, stat(0)],
      [10, stat(1)],
      [11, stat(10)],
      [12, stat(10)],
      [13, stat(12)],
      [20, stat(1)],
    ]);
    const children = new Map([
      [1, [10, 20]],
      [10, [11, 12]],
      [12, [13]],
    ]);
    assert.deepEqual([...walk(10, stats, children).keys()].sort(), [10, 11, 12, 13]);
    assert.deepEqual([...walk(10, stats, children, new Set([12])).keys()].sort(), [10, 11]);
    assert.equal(walk(99, stats, children).size, 0);
  });

  it("counts a child's CPU while it runs unless excluded, and in the parent's cutime once reaped", async () => {
    const before = await treeCpu(process.pid);
    // Burns 300 ms of its own CPU, then waits for stdin to close (so it can be sampled alive).
    const child = spawn(
      process.execPath,
      [
        '-e',
        'const t = process.cpuUsage(); while ((process.cpuUsage(t).user + process.cpuUsage(t).system) < 300_000); console.log("done"); process.stdin.resume()',
      ],
      { stdio: ['pipe', 'pipe', 'inherit'] },
    );
    await new Promise<void>((resolve) => child.stdout.once('data', () => resolve()));
    const alive = await treeCpu(process.pid);
    const aliveExcluded = await treeCpu(process.pid, [child.pid!]);
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.stdin.end();
    await exited;
    const reaped = await treeCpu(process.pid);
    assert.ok(alive.restMs - before.restMs >= 250, `live child counted: ${alive.restMs - before.restMs} ms`);
    assert.ok(aliveExcluded.restMs - before.restMs < 100, `excluded child left out: ${aliveExcluded.restMs - before.restMs} ms`);
    assert.ok(reaped.restMs - before.restMs >= 250, `reaped child counted: ${reaped.restMs - before.restMs} ms`);
  });

  it("follows the root's PSS by its RSS once read (its smaps_rollup walk stalls the process's mmaps), and counts what it gains", async () => {
    // Touches 64 MB of new memory when told to (a line on stdin), then says so.
    const child = spawn(
      process.execPath,
      [
        '-e',
        'console.log("up"); process.stdin.once("data", () => { globalThis.b = Buffer.alloc(64 * 1024 * 1024, 1); console.log("grown") })',
      ],
      { stdio: ['pipe', 'pipe', 'inherit'] },
    );
    const line = () => new Promise<void>((resolve) => child.stdout.once('data', () => resolve()));
    await line();
    try {
      // Read: a node process shares its binary's pages with this one, so its PSS is under its RSS.
      const read = (await sampleTree(child.pid!))!;
      assert.ok(read.memoryMb < read.rssMb, `PSS ${read.memoryMb} MB, RSS ${read.rssMb} MB`);
      // Followed from a base: the base's PSS plus the RSS gained since, from the same status read as the RSS.
      const followed = (await sampleTree(child.pid!, { pssKb: 1024, rssKb: 0 }))!;
      assert.equal(followed.memoryMb, followed.rssMb + 1);
      const watch = watchTree(child.pid!, 10);
      await watch.ready;
      const grown = line();
      child.stdin.write('grow\n');
      await grown;
      const samples = await watch.stop();
      const [first, last] = [samples[0]!, samples[samples.length - 1]!];
      assert.ok(last.memoryMb - first.memoryMb >= 60, `grew ${last.memoryMb - first.memoryMb} MB`);
      assert.ok(Math.abs(last.memoryMb - first.memoryMb - (last.rssMb - first.rssMb)) < 0.01, 'PSS followed by RSS');
      assert.ok(first.memoryMb < first.rssMb, 'the first sample read PSS');
    } finally {
      child.kill();
    }
  });
});

describe('bench/lib/cgroup-cpu', () => {
  it("reads v1 cpuacct.usage (ns) and v2 cpu.stat's usage_usec as ms, and nothing from other text", () => {
    assert.equal(parseCgroupCpuMs('cgroup v1 cpuacct', '123456789\n'), 123.456789);
    assert.equal(parseCgroupCpuMs('cgroup v2 cpu.stat', 'usage_usec 2500\nuser_usec 2000\nsystem_usec 500\n'), 2.5);
    // A v1 cpu.stat (nr_periods …) is not an accounting file; a key ending in usage_usec is not it either.
    assert.equal(parseCgroupCpuMs('cgroup v2 cpu.stat', 'nr_periods 0\nnr_throttled 0\n'), undefined);
    assert.equal(parseCgroupCpuMs('cgroup v2 cpu.stat', 'x_usage_usec 5\n'), undefined);
    assert.equal(parseCgroupCpuMs('cgroup v1 cpuacct', ''), undefined);
  });

  it("finds this process's group in a v1 hierarchy by controller (co-mounted or not) and in the unified one", () => {
    const text = '9:name=systemd:/\n4:memory:/a/b\n2:cpu,cpuacct:/bench/x\n0::/user.slice/s.scope\n';
    assert.equal(ownGroupPath(text, 'cpuacct'), '/bench/x');
    assert.equal(ownGroupPath(text, 'memory'), '/a/b');
    assert.equal(ownGroupPath(text, null), '/user.slice/s.scope');
    assert.equal(ownGroupPath(text, 'pids'), undefined);
    assert.equal(ownGroupPath('4:memory:/a\n', null), undefined);
  });

  it(
    "counts a process the kernel reaps when its PID namespace's init is killed, which the /proc tree walk misses",
    { skip: process.getuid?.() !== 0 ? 'needs root (a control group and a PID namespace of its own)' : false },
    async () => {
      const account = openCgroupCpu();
      if ('unavailable' in account) return assert.fail(`no CPU control group: ${account.unavailable}`);
      try {
        const groupBefore = account.usageMs();
        const ownBefore = process.cpuUsage();
        const treeBefore = await treeCpu(process.pid);
        // unshare's child is the namespace's init (sh); it forks a node that burns 300 ms of CPU, says so and waits.
        // SIGKILL to unshare: --kill-child kills init, and the kernel kills and reaps the burner, adding its CPU to no one.
        const burn =
          'const t = process.cpuUsage(); while ((process.cpuUsage(t).user + process.cpuUsage(t).system) < 300_000); console.log("done"); setInterval(() => {}, 1000)';
        const child = spawn('unshare', ['--pid', '--fork', '--kill-child', 'sh', '-c', `"$0" -e '${burn}' & wait`, process.execPath], {
          stdio: ['ignore', 'pipe', 'inherit'],
        });
        await new Promise<void>((resolve, reject) => {
          child.stdout.once('data', () => resolve());
          child.once('exit', (code) => reject(new Error(`unshare exited (${code}) before the burn`)));
        });
        const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
        child.kill('SIGKILL');
        await exited;
        // The namespace's processes are gone from the group once reaped (bounded wait).
        for (
          let i = 0;
          i < 100 &&
          readFileSync(join(account.dir, 'server', 'cgroup.procs'), 'utf8')
            .trim()
            .split('\n').length > 1;
          i++
        )
          await new Promise((resolve) => setTimeout(resolve, 20));
        const own = process.cpuUsage(ownBefore);
        const underMs = account.usageMs() - groupBefore - (own.user + own.system) / 1000;
        const walkedMs = (await treeCpu(process.pid)).restMs - treeBefore.restMs;
        assert.ok(underMs >= 280, `the group counted the killed burner: ${underMs} ms`);
        assert.ok(walkedMs < 150, `the tree walk lost it (the point of the group): ${walkedMs} ms`);
      } finally {
        await account.close();
      }
      assert.ok(!existsSync(account.dir), 'the groups are removed on close');
      assert.ok(!readFileSync('/proc/self/cgroup', 'utf8').includes('mcpworks-bench-'), 'this process is back in its own group');
    },
  );
});

describe('bench/lib/smaps', () => {
  it('tells wasm memories (read-write pages followed by the rest of a ≥ 4 GiB reservation) from files and other anonymous memory', () => {
    const mapping = (start: bigint, size: bigint, perms: string, inode: number, path: string, rssKb: number) =>
      `${start.toString(16)}-${(start + size).toString(16)} ${perms} 00000000 00:00 ${inode}   ${path}\nSize: ${size / 1024n} kB\nRss: ${rssKb} kB\nPss: ${rssKb} kB\n`;
    const MB = 1024n * 1024n;
    const smaps = [
      mapping(0x400000n, 26n * MB, 'r-xp', 1234, '/usr/bin/node', 20_000),
      mapping(0x7f0000000000n, 188n * MB, 'rw-p', 0, '', 150_000),
      mapping(0x7f0000000000n + 188n * MB, 8003n * MB, '---p', 0, '', 0),
      // An arena-like region: read-write then inaccessible, but far under 4 GiB together.
      mapping(0x7f1000000000n, 128n * MB, 'rw-p', 0, '', 100_000),
      mapping(0x7f1000000000n + 128n * MB, 2048n * MB, '---p', 0, '', 0),
      mapping(0x7f2000000000n, 64n * MB, 'rw-p', 0, '[heap]', 30_000),
    ].join('');
    const parts = breakdown(smaps);
    assert.equal(parts.wasmMemories, 1);
    assert.equal(Math.round(parts.wasmMb * 1024), 150_000);
    assert.equal(Math.round(parts.anonymousMb * 1024), 130_000);
    assert.equal(Math.round(parts.filesMb * 1024), 20_000);
  });
});

describe('bench/lib/machine and measure', () => {
  it("sums the machine's busy ticks (user, nice, system, irq, softirq, steal; not idle or iowait) in ms", () => {
    assert.equal(machineBusyMs('cpu  100 2 30 5000 40 5 6 7 0 0\ncpu0 1 1 1 1 1 1 1 1 0 0\n'), (100 + 2 + 30 + 5 + 6 + 7) * 10);
  });

  it("takes the bench process's own CPU and the idle machine's rate over the span off the machine's busy CPU", () => {
    // Idle: 2 s in which the machine was busy 500 ms, 100 of them the bench's: 0.2 cores of other work.
    const idle = { busyMs: 500, selfMs: 100, elapsedMs: 2000 };
    const span = beyondIdle({ busyMs: 9000, selfMs: 3000, elapsedMs: 10_000 }, idle);
    assert.equal(span.idleCores, 0.2);
    assert.equal(span.ms, 9000 - 3000 - 0.2 * 10_000);
    // A busier idle than the span: negative, printed as it is, not clamped into a flattering 0.
    assert.equal(beyondIdle({ busyMs: 100, selfMs: 0, elapsedMs: 1000 }, { busyMs: 1000, selfMs: 0, elapsedMs: 1000 }).ms, -900);
  });

  it('takes nearest-rank quantiles', () => {
    const samples = [5, 1, 4, 2, 3];
    assert.equal(quantile(samples, 0.5), 3);
    assert.equal(quantile(samples, 0.99), 5);
    assert.equal(quantile([1, 2, 3, 4], 0.5), 2);
    assert.ok(Number.isNaN(quantile([], 0.5)));
  });
});
