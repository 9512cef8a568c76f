// cgroup v2 delegation on a real unified hierarchy (the Debian 12 default; scripts/vm-test.sh runs
// this in such a VM, under a systemd service whose group is a leaf): the server leaves its group for
// a leaf of its own, the group hands memory, pids and cpu down, and a run's group beside the server
// gets its limits, its OOM kill counted and its processes killed. Skipped on a hybrid or v1 host.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { test } from 'node:test';
import { SERVER_LEAF, handedDown } from './cgroup-delegation.js';
import { createRunCgroup, detectCgroupLayout, openCgroupSupport, releaseCgroupSupport, type RunCgroup } from './cgroup.js';
import { defaultHostPaths } from '../host.js';
import { sandboxEnvironment } from '../plan/environment.js';
import { spawnHelper } from './spawn-helper.js';

const unified = existsSync('/sys/fs/cgroup/cgroup.controllers') && !existsSync('/sys/fs/cgroup/unified');
const skip = !unified ? 'not a cgroup v2-only host' : process.getuid?.() !== 0 ? 'needs root' : false;
const paths = defaultHostPaths();
/** The sandbox helper joined to `run`'s groups, running `command`: true once it ended by SIGKILL (its own, or its child's as 137). */
function killedInRun(run: RunCgroup, command: string[]): Promise<boolean> {
  const args = ['exec', ...run.procsFiles.flatMap((file) => ['--cgroup', file]), '--', ...command];
  const { exited } = spawnHelper(paths.helper, args, { seccompProgram: paths.seccompProgram, env: sandboxEnvironment() });
  return exited.then((exit) => exit.signal === 'SIGKILL' || exit.code === 128 + 9);
}
const ownPath = () => /^0::(.*)$/m.exec(readFileSync('/proc/self/cgroup', 'utf8'))![1]!;

test('the server moves into a leaf of its own, and its group hands memory, pids and cpu down', { skip }, async () => {
  const layout = detectCgroupLayout();
  assert.ok(layout.v2, 'memory and pids are handed down beside the server');
  const own = join('/sys/fs/cgroup', ownPath());
  // At the root of the hierarchy there is no rule to follow (and no leaf); elsewhere, the leaf.
  if (ownPath() !== '/') {
    assert.equal(basename(own), SERVER_LEAF);
    assert.equal(dirname(own), layout.v2);
    assert.deepEqual(readFileSync(join(layout.v2, 'cgroup.procs'), 'utf8'), '', 'no process left in the group');
  }
  const handed = handedDown(layout.v2);
  for (const controller of ['memory', 'pids']) assert.ok(handed.includes(controller), `${controller} in ${handed.join(' ')}`);
  // Again (another server of the same group, a restart): the same group, nothing moves.
  assert.equal(detectCgroupLayout().v2, layout.v2);
  assert.equal(join('/sys/fs/cgroup', ownPath()), own);
});

test("a run's group beside the server: its limits hold, an OOM kill is counted, and its processes are killed", { skip }, async () => {
  const support = openCgroupSupport(detectCgroupLayout(), { cpuWeight: 25 });
  const run = createRunCgroup(support, `v2-${process.pid}`, { memoryBytes: 32 * 1024 * 1024, maxProcesses: 4 })!;
  try {
    assert.equal(support.memory?.version, 2);
    const dir = dirname(run.procsFiles[0]!);
    assert.equal(readFileSync(join(dir, 'memory.max'), 'utf8').trim(), String(32 * 1024 * 1024));
    assert.equal(readFileSync(join(dir, 'pids.max'), 'utf8').trim(), '4');
    if (support.cpu) assert.equal(readFileSync(join(support.cpu.dir, 'cpu.weight'), 'utf8').trim(), '25');
    // A process in the group that allocates past its memory: the kernel's OOM killer, counted.
    assert.equal(run.oomKilled(), false);
    const hog = ['/usr/bin/python3', '-c', 'x = bytearray(256 * 1024 * 1024)\nfor i in range(0, len(x), 4096): x[i] = 1'];
    assert.equal(await killedInRun(run, hog), true);
    assert.equal(run.oomKilled(), true);
    // Processes left in it are killed (cgroup.kill) before the group goes.
    const sleeper = killedInRun(run, ['/bin/sleep', '60']);
    const count = () => readFileSync(run.procsFiles[0]!, 'utf8').split('\n').filter(Boolean).length;
    while (count() < 2) await new Promise((resolve) => setImmediate(resolve));
    run.killAll();
    assert.equal(await sleeper, true);
  } finally {
    await run.remove();
    await releaseCgroupSupport(support);
  }
});
