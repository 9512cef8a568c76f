/** One zygote: its fork-server process (runtime/zygote.py), its control lines and its spare children. */
import { randomBytes } from 'node:crypto';
import { constants as osConstants } from 'node:os';
import type { RunCgroup } from '../host/cgroup.js';
import { DecayingRate, REAP_BOUND_MS, targetSize } from '../policy/capacity.js';
import { JsonLineReader } from '../wire/json-lines.js';
import { forkRequest, isZygoteControl, setupFailureOf, type SetupFailure } from '../wire/messages.js';
import { RECORD_CGROUP, ZygoteChild } from './child.js';
import type { HostSocket } from './host-socket.js';
import type { ZygoteCgroups, ZygoteHostHooks, ZygoteOptions, ZygoteProcess, ZygoteSpec } from './types.js';

/** A zygote that has not finished its imports in this long is given up. */
const ZYGOTE_START_MS = 60_000;
/** The longest control line a zygote may write (its lines are a few dozen bytes). */
const CONTROL_LINE_CAP = 1 << 20;
/** Of a zygote's stderr (the platform's own lines), this much is kept, and its tail logged when it ends. */
const DIAGNOSTIC_CHARS = 4096;
const DIAGNOSTIC_TAIL_CHARS = 500;

type ZygoteState = 'starting' | 'ready' | 'failed' | 'stopped';

/**
 * This platform's errno names by number, the first of a number's aliases (EAGAIN, not EWOULDBLOCK).
 * Not util.getSystemErrorName: it names only libuv's errors and answers "Unknown system error -10"
 * for the rest (ECHILD, ENOEXEC, EDEADLK, ...), which a set-up step can fail with as well.
 */
const ERRNO_NAMES = new Map<number, string>();
for (const [name, errno] of Object.entries(osConstants.errno)) if (!ERRNO_NAMES.has(errno)) ERRNO_NAMES.set(errno, name);

/** An errno's name (ECHILD), or "errno N" for a number this platform does not name (0 included). */
export function errnoName(errno: number): string {
  return ERRNO_NAMES.get(errno) ?? `errno ${errno}`;
}

/** One zygote process and its spare children. */
export class Zygote {
  state: ZygoteState = 'starting';
  /** It served: a later death is a crash to recover from at once, not a host that cannot start one. */
  everReady = false;
  lastUsed: number;
  runs = 0;
  /** Runs in progress in its children: a zygote is never stopped under them, except by close(). */
  active = 0;
  readonly spares: ZygoteChild[] = [];
  /** By fork-request id. */
  private readonly children = new Map<string, ZygoteChild>();
  private forks = 0;
  /** Empty run cgroups kept for the next children: making and removing groups costs more than a run. */
  private readonly freeGroups: RunCgroup[] = [];
  private process: ZygoteProcess | null = null;
  private cgroups: ZygoteCgroups | null = null;
  /** Its control lines; a zygote that writes a line this long without ending it is stopped. */
  private readonly control = new JsonLineReader({
    maxLineBytes: CONTROL_LINE_CAP,
    onOverflow: () => this.stop('wrote too much on its control channel'),
  });
  private finished: Promise<void> | null = null;
  private readonly rate: DecayingRate;

  constructor(
    readonly spec: ZygoteSpec,
    private readonly hooks: ZygoteHostHooks,
    private readonly sockets: HostSocket,
    private readonly options: Required<Pick<ZygoteOptions, 'minSpares' | 'maxSpares'>>,
    private readonly now: () => number,
  ) {
    this.lastUsed = now();
    this.rate = new DecayingRate(this.lastUsed);
  }

  start(): void {
    const id = randomBytes(6).toString('hex');
    const cgroups = this.hooks.cgroups(id);
    if (!cgroups) {
      this.fail('its runs cannot get cgroups of their own here');
      return;
    }
    this.cgroups = cgroups;
    let started: ZygoteProcess;
    try {
      started = this.hooks.launch(this.spec, cgroups, this.sockets.dir);
    } catch (error) {
      this.fail(`could not start: ${(error as Error).message}`);
      return;
    }
    this.process = started;
    const startTimer = setTimeout(() => {
      if (this.state === 'starting') this.stop(`did not finish its imports within ${ZYGOTE_START_MS / 1000} s`);
    }, ZYGOTE_START_MS);
    startTimer.unref();
    let diagnostics = '';
    started.stderr.on('data', (chunk: Buffer) => {
      if (diagnostics.length < DIAGNOSTIC_CHARS) diagnostics += chunk.toString('utf8');
    });
    started.control.on('error', () => {});
    started.control.on('data', (chunk: Buffer) => this.receive(chunk));
    void started.exited.then(() => {
      clearTimeout(startTimer);
      // Only the platform's own lines: nothing of a run passes through the zygote's stderr.
      if (this.state !== 'stopped')
        this.stop(`ended unexpectedly${diagnostics ? `: ${diagnostics.trim().slice(-DIAGNOSTIC_TAIL_CHARS)}` : ''}`);
    });
  }

  private receive(chunk: Buffer): void {
    for (const line of this.control.push(chunk)) {
      if (!line.ok) {
        this.stop('wrote an unreadable control line');
        return;
      }
      if (!isZygoteControl(line.value)) continue;
      const message = line.value;
      if (typeof message.setupFailed === 'string') {
        // From a child of this zygote, before it had its channel: only for a child still expected.
        const report = setupFailureOf(message);
        if (report && typeof message.child === 'string' && this.children.has(message.child)) this.setupFailed(report);
      } else if (message.ready === true && this.state === 'starting') {
        this.state = 'ready';
        this.everReady = true;
        this.refill();
      } else if (typeof message.exited === 'string') {
        const child = this.children.get(message.exited);
        if (!child) continue;
        this.children.delete(message.exited);
        const index = this.spares.indexOf(child);
        if (index !== -1) {
          // A spare that died unclaimed (it failed its set-up): not worth retrying at once.
          this.spares.splice(index, 1);
          void child.cgroup.remove();
          this.hooks.log(`zygote ${this.spec.label}: a forked child failed its set-up (status ${message.status})`);
        }
        child.settle(typeof message.status === 'number' ? message.status : null);
      }
    }
  }

  /** A child for one run: a spare (ready or still starting), else one forked now. */
  claim(): ZygoteChild | null {
    if (this.state !== 'ready') return null;
    const now = this.now();
    this.lastUsed = now;
    this.rate.claim(now);
    this.runs++;
    const spare = this.spares.find((candidate) => candidate.channel !== null) ?? this.spares[0] ?? null;
    if (spare) this.spares.splice(this.spares.indexOf(spare), 1);
    const child = spare ?? this.fork();
    if (child) {
      this.active++;
      child.onDone = () => {
        this.active--;
        this.lastUsed = this.now();
      };
    }
    // After the claiming run has sent its request.
    setImmediate(() => this.refill());
    return child;
  }

  private fork(): ZygoteChild | null {
    if (!this.process || !this.cgroups || this.state !== 'ready') return null;
    let cgroup: RunCgroup;
    const child = (() => {
      try {
        cgroup = this.freeGroups.pop() ?? this.cgroups!.createRun(randomBytes(8).toString('hex'), this.spec.runLimits);
      } catch (error) {
        this.hooks.log(`zygote ${this.spec.label}: could not make a run's cgroups: ${(error as Error).message}`);
        return null;
      }
      return new ZygoteChild(
        ++this.forks,
        cgroup,
        this.spec.maxLogBytes,
        this.sockets,
        this.hooks.log,
        (used, exited) => void this.recycle(used, exited),
        (report) => this.setupFailed(report),
      );
    })();
    if (!child) return null;
    const name = child.cgroup.procsFiles[0]?.split('/').at(-2) ?? '';
    if (!RECORD_CGROUP.test(name)) {
      this.hooks.log(`zygote ${this.spec.label}: a run's cgroup name does not fit a fork request`);
      child.discard();
      return null;
    }
    this.children.set(child.id, child);
    this.process.control.write(forkRequest(child.token, child.id, name));
    return child;
  }

  /** A child's own report of the set-up step that failed (a fixed word and an errno: nothing of any run). */
  private setupFailed(report: SetupFailure): void {
    this.hooks.log(
      `zygote ${this.spec.label}: a forked child's set-up failed at ${report.step} (${errnoName(report.errno)}); its run, if it had one, takes the ordinary path`,
    );
  }

  /**
   * A finished run's groups serve a later child once no process is left in them, unless the run
   * was OOM-killed (the counter would tell the next run it was). Anything charged that is left is
   * page cache, which the kernel reclaims before it would stop the next run.
   */
  private async recycle(cgroup: RunCgroup, exited: Promise<unknown>): Promise<void> {
    // This zygote reports a child's status once it has reaped it: by then the run's group (killed
    // at the run's end) is empty as a rule, and the first look finds it so, with no SIGKILL sent
    // twice and no looks on a timer. Processes still in it are killed and waited for as before.
    let bound: NodeJS.Timeout | undefined;
    await Promise.race([exited, new Promise((resolve) => (bound = setTimeout(resolve, REAP_BOUND_MS)))]);
    clearTimeout(bound);
    const empty = await cgroup.killUntilEmpty(REAP_BOUND_MS);
    if (empty && !cgroup.oomKilled() && this.state === 'ready' && this.freeGroups.length < this.options.maxSpares * 2) {
      this.freeGroups.push(cgroup);
    } else {
      await cgroup.remove();
    }
  }

  refill(): void {
    if (this.state !== 'ready') return;
    const target = targetSize({ rate: this.rate.read(this.now()), min: this.options.minSpares, max: this.options.maxSpares });
    while (this.spares.length < target) {
      const child = this.fork();
      if (!child) return;
      this.spares.push(child);
    }
  }

  private fail(reason: string): void {
    this.state = 'failed';
    this.hooks.log(`zygote ${this.spec.label} not used: ${reason}`);
  }

  /** Ends the zygote, its spares and (through its PID namespace) every child still running. */
  stop(reason?: string): void {
    if (this.state === 'stopped' || this.state === 'failed') return;
    this.state = reason ? 'failed' : 'stopped';
    if (reason) this.hooks.log(`zygote ${this.spec.label} stopped: ${reason}`);
    for (const spare of this.spares.splice(0)) spare.discard();
    this.process?.kill();
    const process = this.process;
    const cgroups = this.cgroups;
    this.finished = (async () => {
      await process?.exited;
      for (const child of this.children.values()) child.settle(null);
      this.children.clear();
      await Promise.all(this.freeGroups.splice(0).map((group) => group.remove()));
      await cgroups?.remove();
    })();
  }

  /** Settles once a stopped zygote's process and groups are gone. */
  closed(): Promise<void> {
    return this.finished ?? Promise.resolve();
  }
}
