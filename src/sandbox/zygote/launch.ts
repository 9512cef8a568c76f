/**
 * The host side of starting a zygote (ZygoteHostHooks): its cgroup directories (its own group and
 * one per child, made on demand and writable by its user) and its sandbox, bubblewrap through the
 * helper, with the control socket at fd 3 and the seccomp program at fd 4 for its children.
 */
import { chownSync } from 'node:fs';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { createRunCgroup, openNestedSupport, releaseCgroupSupport, type CgroupSupport } from '../host/cgroup.js';
import type { HostPaths } from '../host.js';
import { spawnHelper } from '../host/spawn-helper.js';
import type { Spawner } from '../spawner.js';
import type { UidAllocator } from '../host/uid-allocator.js';
import { zygoteBubblewrapArgs } from '../plan/bwrap-args.js';
import { SANDBOX_GID, sandboxEnvironment } from '../plan/environment.js';
import type { ZygoteCgroups, ZygoteHostHooks, ZygoteProcess, ZygoteSpec } from './types.js';
import { MB } from '../../core/units.js';

export interface ZygoteHostDeps {
  cgroups: CgroupSupport;
  /** The fixed sandbox user, when there is one (with a uid range, each zygote takes a uid of its own). */
  sandboxUser: { uid: number; gid: number };
  uids: UidAllocator | null;
  /** The sandbox's base bubblewrap arguments (plan/bwrap-args.ts). */
  baseArgs: readonly string[];
  paths: HostPaths;
  log: (message: string) => void;
  /**
   * Where the zygote's helper is started (spawner.ts), so that no fork of the server's large address
   * space holds its event loop (tens of ms, at each namespace's first run); absent or null: directly.
   */
  spawner?: Pick<Spawner, 'launch'> | null;
}

export function zygoteHostHooks(deps: ZygoteHostDeps): ZygoteHostHooks {
  const { cgroups, sandboxUser, uids, baseArgs, paths } = deps;

  /** A zygote's own cgroup directories: its process's group, and one group per child made on demand. */
  function zygoteCgroups(id: string): ZygoteCgroups | null {
    // v1: the zygote itself stays at the server's weight (its start-up is no tenant's code); each
    // child joins the instance's low-weight CPU group when its run's code is sent (ZygoteChild).
    // v2: the zygote's group is in the instance's (one hierarchy), at the runs' weight throughout.
    const support = openNestedSupport(cgroups, `zygote-${id}`);
    if (!support) return null;
    const memoryBase = support.memory!.base;
    const pidsBase = support.pids!.base;
    // The zygote itself: pre-imported packages, plus each child until it joins its run's groups.
    const self = createRunCgroup(support, 'self', { memoryBytes: 1024 * MB, maxProcesses: 512 })!;
    // The zygote's own uid, shared by its children (one namespace's runs).
    const user = uids ? { uid: uids.take(), gid: SANDBOX_GID } : sandboxUser;
    // cgroup v2 lets a process move (itself too: a child leaves the zygote's group for its run's)
    // only with write access to both groups' common ancestor as well: this zygote's own group.
    if (support.memory!.version === 2) chownSync(join(memoryBase, 'cgroup.procs'), user.uid, user.gid);
    let released = false;
    return {
      memoryDir: memoryBase,
      pidsDir: pidsBase,
      self,
      user,
      createRun(name, limits) {
        const group = createRunCgroup(support, name, limits)!;
        // The child writes itself into its group before the run begins; nothing else it can reach.
        for (const file of group.procsFiles) chownSync(file, user.uid, user.gid);
        return group;
      },
      async remove() {
        await self.remove();
        await releaseCgroupSupport(support);
        if (uids && !released) uids.release(user.uid);
        released = true;
      },
    };
  }

  function launchZygote(spec: ZygoteSpec, groups: ZygoteCgroups, socketDir: string): ZygoteProcess {
    const bwrapArgs = zygoteBubblewrapArgs(baseArgs, spec, { memoryDir: groups.memoryDir!, pidsDir: groups.pidsDir!, socketDir });
    const args = ['exec', ...groups.self.procsFiles.flatMap((file) => ['--cgroup', file])];
    // Ends with the server, and every child with it (their PID namespaces are inside its own).
    args.push('--watch-pid', String(process.pid));
    // No CPU limit: a zygote lives long; each run's worker sets its own.
    args.push('--rlimit', 'core=0:0', '--rlimit', 'nofile=1024:1024');
    args.push('--user', `${groups.user.uid}:${groups.user.gid}`);
    args.push('--keep-fds', '5', '--', paths.bwrap, ...bwrapArgs);
    const remote = deps.spawner?.launch(paths.helper, args, sandboxEnvironment(), paths.seccompProgram);
    if (remote) {
      // The spawner gives every helper a stdout pipe; a zygote's is not read (direct, it is /dev/null).
      remote.stdout.resume();
      return {
        control: remote.stdio[3],
        stderr: remote.stderr,
        kill: () => {
          remote.kill('SIGTERM');
          groups.self.killAll(remote.pid);
        },
        exited: remote.exited.then(() => {}),
      };
    }
    const { child, exited } = spawnHelper(paths.helper, args, {
      seccompProgram: paths.seccompProgram,
      env: sandboxEnvironment(),
      stdout: 'ignore',
    });
    return {
      control: child.stdio[3] as Duplex,
      stderr: child.stderr!,
      kill: () => {
        child.kill('SIGTERM');
        groups.self.killAll(child.pid);
      },
      exited: exited.then(() => {}),
    };
  }

  return { cgroups: zygoteCgroups, launch: launchZygote, log: deps.log };
}
