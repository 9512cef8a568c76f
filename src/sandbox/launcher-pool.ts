/**
 * Pre-started launchers: helper processes that have already joined their run's (fresh, empty)
 * cgroups and wait for the command line. Joining a cgroup costs an RCU grace period, ~10 ms on an
 * idle VM, so paying it ahead keeps it off the request path. The sandbox itself (namespaces,
 * interpreter) is still created fresh for each run; a launcher is used once.
 */
import type { ChildProcess } from 'node:child_process';
import type { RunCgroup } from './cgroup.js';

export interface Launcher {
  child: ChildProcess;
  cgroup: RunCgroup | null;
  /** Settles when the helper has ended (its stdio closed) or could not be spawned. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; spawnFailed: boolean }>;
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
      if (launcher.child.exitCode === null && launcher.child.signalCode === null) return launcher;
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
