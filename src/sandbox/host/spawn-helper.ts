/**
 * The one way the server starts the sandbox helper itself (pre-started launchers, zygotes, and the
 * spawner's fallback while it is backed off): the seccomp program open at fd 4, pipes at fds 0-3
 * (and bubblewrap's network pipes at 5 and 6 when asked), the sandbox's own environment, and an
 * `exited` promise listening from the start. The helper started through the spawner process gets
 * the same layout from host-bin/spawner.cjs.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import type { LauncherExit } from '../launcher-pool.js';
import type { RunCgroup } from './cgroup.js';
import { KILL_GRACE_MS } from '../policy/capacity.js';

export interface HelperSpawnOptions {
  /** The seccomp program, opened here and passed at fd 4 (bubblewrap's --seccomp 4; zygote children read it). */
  seccompProgram: string;
  env: Record<string, string>;
  /** The helper's stdout: a pipe (a run's), or nothing (a zygote's; its children report on sockets). */
  stdout?: 'pipe' | 'ignore';
  /** Pipes at fds 5 and 6 too: bubblewrap's --info-fd and --block-fd, for the network set-up. */
  networkPipes?: boolean;
}

export interface SpawnedProcess {
  child: ChildProcess;
  /** Settles when the helper has ended and its stdio closed, or could not be spawned. */
  exited: Promise<LauncherExit>;
}

/** Starts `helper` with `args`; throws if the seccomp program cannot be opened or the spawn fails at once. */
export function spawnHelper(helper: string, args: readonly string[], options: HelperSpawnOptions): SpawnedProcess {
  const seccompFd = openSync(options.seccompProgram, 'r');
  try {
    const child = spawn(helper, args, {
      stdio: ['pipe', options.stdout ?? 'pipe', 'pipe', 'pipe', seccompFd, ...(options.networkPipes ? (['pipe', 'pipe'] as const) : [])],
      env: options.env,
    });
    // Listening from the start: a helper may end (or fail to spawn) before its run begins.
    const exited = new Promise<LauncherExit>((resolve) => {
      child.once('error', () => resolve({ code: null, signal: null, spawnFailed: true }));
      child.once('close', (code, signal) => resolve({ code, signal, spawnFailed: false }));
    });
    // The function may exit without reading its input; a broken pipe here is not an error.
    child.stdin!.on('error', () => {});
    return { child, exited };
  } finally {
    closeSync(seccompFd);
  }
}

/**
 * Stops a helper and its run: SIGTERM (the helper kills bubblewrap and stays to reap the
 * namespace, so no orphan or zombie is left), SIGKILL to what is in the run's cgroups, and SIGKILL
 * to the helper if it has not finished after the grace period. Returns that timer, for the caller
 * to clear once the helper has exited.
 */
export function stopHelper(
  child: { pid?: number | undefined; kill(signal: NodeJS.Signals): boolean },
  cgroup: Pick<RunCgroup, 'killAll'> | null | undefined,
  graceMs = KILL_GRACE_MS,
): NodeJS.Timeout {
  child.kill('SIGTERM');
  cgroup?.killAll(child.pid);
  return setTimeout(() => child.kill('SIGKILL'), graceMs);
}
