/**
 * Pre-started launchers: helper processes that have already joined their run's (fresh, empty)
 * cgroups and wait for the command line. Joining a cgroup costs an RCU grace period, ~10 ms on an
 * idle VM, so paying it ahead keeps it off the request path. The sandbox itself (namespaces,
 * interpreter) is still created fresh for each run; a launcher is used once.
 */
import type { Readable, Writable } from 'node:stream';
import type { RunCgroup } from './host/cgroup.js';

/**
 * A started helper: a ChildProcess spawned by the server itself, or a SpawnedHelper started by the
 * spawner process (spawner.ts) with the same pid, pipes and signals.
 */
export interface LauncherChild {
  readonly pid?: number | undefined;
  readonly stdin: Writable | null;
  readonly stdout: Readable | null;
  readonly stderr: Readable | null;
  /** stdin, stdout, stderr and fd 3 (the answer socket), then anything else passed. */
  readonly stdio: readonly unknown[];
  kill(signal: NodeJS.Signals): boolean;
}

export interface LauncherExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  spawnFailed: boolean;
  /** It ended unobserved (its spawner died first): its status is unknown. */
  lost?: boolean;
}

export interface Launcher {
  child: LauncherChild;
  cgroup: RunCgroup | null;
  /** Settles when the helper has ended (its stdio closed) or could not be spawned. */
  exited: Promise<LauncherExit>;
  /** Not ended, and its end will be seen with its status. */
  alive(): boolean;
  /**
   * Taken from the pool, started before its run: it may have been killed while it waited, before
   * the host saw it end (so its run may go to a fresh one; see bubblewrap.ts).
   */
  prestarted?: boolean;
}

export class LauncherPool {
  private readonly ready: Launcher[] = [];
  private closed = false;

  constructor(
    private readonly start: () => Launcher,
    private readonly size: number,
  ) {}

  /** A launcher for one run: a pre-started one if any is alive, else a fresh one. */
  take(): Launcher {
    while (this.ready.length > 0) {
      const launcher = this.ready.shift()!;
      if (launcher.alive()) return Object.assign(launcher, { prestarted: true });
      discard(launcher);
    }
    return this.start();
  }

  /** Tops the pool up; called between runs so the fork never delays a run in progress. */
  refill(): void {
    while (!this.closed && this.ready.length < this.size) this.ready.push(this.start());
  }

  async close(): Promise<void> {
    this.closed = true;
    const idle = this.ready.splice(0);
    await Promise.all(
      idle.map(async (launcher) => {
        launcher.child.kill('SIGKILL');
        await launcher.exited;
        await launcher.cgroup?.remove();
      }),
    );
  }
}

function discard(launcher: Launcher): void {
  launcher.child.kill('SIGKILL');
  void launcher.cgroup?.remove();
}
