/**
 * A sandbox started up to the point where its runner waits for the request: a launcher sent its
 * command line, its output captured, its fd 3 channel listening, its network attached. Used by the
 * warm pool ahead of time, and on the request path when no pooled sandbox is there.
 */
import type { ChildProcess } from 'node:child_process';
import { statSync } from 'node:fs';
import type { Duplex } from 'node:stream';
import { CappedCapture } from '../wire/capture.js';
import { RunChannel } from '../wire/channel.js';
import { stopHelper } from '../host/spawn-helper.js';
import type { UidAllocator } from '../host/uid-allocator.js';
import type { Launcher, LauncherPool } from '../launcher-pool.js';
import { attachNetwork, type NetworkAttachment, type NetworkTools } from '../host/network.js';
import { commandFrame, type SandboxShape } from '../plan/shape.js';
import { KILL_GRACE_MS } from '../policy/capacity.js';
import type { PoolItem } from '../warm-pool.js';

export /** A started sandbox (pooled or cold) that has not yet been sent its request. */
interface PreparedSandbox extends PoolItem {
  launcher: Launcher;
  channel: RunChannel;
  stdout: CappedCapture;
  stderr: CappedCapture;
  network: Promise<{ attachment: NetworkAttachment | null; failed: boolean }>;
  /** Started ahead of its run: its helper's wall clock waits for SIGUSR2 (see helperArgs). */
  pooled: boolean;
  /** True once its runner waits for the request; false if it ended first. (`ready`, the pool's word, also waits for `lowered`.) */
  up: Promise<boolean>;
  /**
   * A pooled sandbox's move to the runs' low CPU weight, begun once its runner is up; null for one
   * started on the request path (its run moves it). Settles, never rejects.
   */
  lowered: Promise<void> | null;
  /** The run is over for the machine: answered and killed, or ended (execute calls it; see `done`). */
  finish(): void;
}

export interface PrepareDeps {
  launchers: Pick<LauncherPool, 'take'>;
  uids: UidAllocator | null;
  network: boolean;
  /** The host's network tools (a host fact detected at start), used with the network on. */
  networkTools: NetworkTools;
  /** With the network on: the refused prefixes runs may still reach (MCPWORKS_SANDBOX_NETWORK_ALLOW). */
  allowed: readonly string[];
  log: (message: string) => void;
}

/**
 * Starts a sandbox of this shape up to the point where its runner waits for the request: used by
 * the pool ahead of time, and on the request path when no pooled sandbox is there.
 */
export function prepareSandbox(shape: SandboxShape, pooled: boolean, deps: PrepareDeps): PreparedSandbox {
  const { launchers, uids, network, networkTools, allowed, log } = deps;
  // Taken before bubblewrap mounts them: a directory replaced in between then reads as changed
  // (the safe direction), never the other way round.
  const views = shape.viewSources.map(identity);
  const launcher = launchers.take();
  const { child, cgroup, exited } = launcher;
  // The run's own limits from the start: the interpreter's start-up is charged to them too.
  cgroup?.configure(shape.cgroupLimits);
  const stdout = new CappedCapture(shape.maxLogBytes);
  const stderr = new CappedCapture(shape.maxLogBytes);
  child.stdout!.on('data', (chunk: Buffer) => stdout.push(chunk));
  child.stderr!.on('data', (chunk: Buffer) => stderr.push(chunk));
  const channel = new RunChannel(child.stdio[3] as Duplex, log);
  const uid = uids?.take() ?? null;
  if (uid !== null) void exited.then(() => uids!.release(uid));
  child.stdin!.write(commandFrame(shape, pooled, uid));
  const networkReady = network
    ? attachNetwork(child as ChildProcess, allowed, networkTools).then(
        (attachment) => ({ attachment, failed: false }),
        (error: Error) => {
          log(`sandbox network set-up failed: ${error.message}`);
          return { attachment: null, failed: true };
        },
      )
    : Promise.resolve({ attachment: null, failed: false });
  let discarded = false;
  // Without its network bubblewrap stays blocked, so the runner would never report ready.
  const up = networkReady.then((state) => (state.failed ? false : channel.ready));
  // A pooled sandbox starts at the default weight (its start-up is no tenant's code) and takes the
  // runs' low one once its runner waits, off the request path: a cgroup v1 move waits for an RCU
  // grace period (15-20 ms measured), which its claim would otherwise wait for. It counts as ready
  // for the pool once moved, so claims take moved ones first.
  const lowered = pooled && cgroup ? up.then((isUp) => (isUp ? cgroup.lowerCpu() : undefined)).catch(() => undefined) : null;
  const ready = lowered ? up.then((isUp) => lowered.then(() => isUp)) : up;
  let finish = () => {};
  const done = new Promise<void>((resolve) => (finish = resolve));
  return {
    launcher,
    pooled,
    up,
    lowered,
    channel,
    stdout,
    stderr,
    network: networkReady,
    ready,
    done,
    finish,
    // A pooled sandbox keeps the directories it mounted at start; if one has since been replaced
    // or removed (a cache rebuilt at the same path), it would show the old one, so it is not used.
    alive: () => !discarded && launcher.alive() && shape.viewSources.every((source, index) => identity(source) === views[index]),
    async discard() {
      discarded = true;
      // bubblewrap arms --die-with-parent in its child only once set-up is done: killed earlier,
      // it leaves that child blocked for good (and, without cgroups, nothing else would find it).
      // So a sandbox still starting is stopped once its runner is up (or after a bound).
      let bound: NodeJS.Timeout | undefined;
      await Promise.race([up, new Promise((resolve) => (bound = setTimeout(resolve, KILL_GRACE_MS)))]);
      clearTimeout(bound);
      // As for a timeout: the helper kills bubblewrap and reaps every process before it exits.
      const escalation = stopHelper(child, cgroup);
      await exited;
      clearTimeout(escalation);
      (await networkReady).attachment?.close();
      await cgroup?.remove();
    },
  };
}

/**
 * Which directory a path is now, or null when it is gone. An inode number alone can be reused by a
 * directory made right after the old one was removed; with its birth and change times it cannot.
 * (An entry added in place also changes it: that only costs a cold start.)
 */
function identity(path: string): string | null {
  try {
    const stat = statSync(path, { bigint: true });
    return `${stat.dev}:${stat.ino}:${stat.birthtimeNs}:${stat.ctimeNs}`;
  } catch {
    return null;
  }
}
