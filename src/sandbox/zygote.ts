/**
 * Python fork-servers ("zygotes"), host side. A zygote is a long-lived sandbox (runtime/zygote.py)
 * per namespace and sandbox shape that has pre-imported the allow-listed packages the namespace's
 * functions declare; each run is a child it forks into fresh PID, mount, IPC and network
 * namespaces and the run's own cgroups, with capabilities dropped and seccomp loaded before the
 * run's request exists. Children are forked ahead of demand (spares), so a run only sends its
 * request. The zygote holds no secrets: requests, env values included, go straight to the child.
 *
 * Every child connects its stdout, stderr and channel to one host socket with a random per-run
 * token; the zygote reports its exit status. Zygotes are learned from demand (the first run of a
 * key takes the ordinary path while its zygote starts), capped in number and by free memory, and
 * stopped when idle.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, mkdirSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { freemem, totalmem } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import type { SandboxBridge, SandboxMount } from '../core/sandbox.js';
import { CappedCapture } from './capture.js';
import { RunChannel, type RunRecord } from './channel.js';
import type { RunCgroup } from './cgroup.js';
import type { ProcMasks } from './plan/bwrap-args.js';
import { JsonLineReader, LineReader } from './wire/json-lines.js';
import { backoffMs, DecayingRate, KILL_GRACE_MS, memoryReserve, targetSize } from './policy/capacity.js';
import { forkRequest, HELLO_MAX_BYTES, isZygoteControl, parseHello } from './wire/messages.js';

const MB = 1024 * 1024;
/** A child that has not connected and reported ready in this long is given up. */
const CHILD_START_MS = 10_000;
/** An owner at its cap replaces one of its own zygotes only once it has been unused this long. */
const OWN_REPLACE_MS = 10_000;
/** A zygote that has not finished its imports in this long is given up. */
const ZYGOTE_START_MS = 60_000;
/** A zygote that crashed after serving is retried after 1 s, doubling with each crash of its key, up to a minute. */
const CRASH_BACKOFF = { baseMs: 1000, maxMs: 60_000 };
/** A zygote that never got ready says the host cannot run one: its key waits this long. */
const NEVER_READY_BACKOFF_MS = 60_000;
/** The longest control line a zygote may write (its lines are a few dozen bytes). */
const CONTROL_LINE_CAP = 1 << 20;

/** What one zygote is: everything fixed when it starts. */
export interface ZygoteSpec {
  readonly key: string;
  /** For logs and stats (never request data). */
  readonly label: string;
  /** Whose runs it serves (an account id): zygote slots are shared fairly between owners. */
  readonly owner: string;
  /** What the zygote pre-imports (allow-listed import names). */
  readonly imports: readonly string[];
  /** Per-run limits of a child's cgroups. */
  readonly runLimits: { memoryBytes: number; maxProcesses: number };
  readonly maxLogBytes: number;
  /** Passed to zygote.py: tmpfs size, the worker's rlimits and what each child masks in its /proc. */
  readonly config: { tmpfsBytes: number; rlimits: Record<string, [number, number]>; procMasks: ProcMasks };
  /** Read-only mounts of the zygote's sandbox (its runs' mounts: code mode's package). */
  readonly mounts: readonly SandboxMount[];
}

/** The cgroup directories a zygote's runs are made in (bound into its sandbox). */
export interface ZygoteCgroups {
  /** Host directories bound at /sandbox/zygote/cg-memory and /sandbox/zygote/cg-pids. */
  readonly memoryDir: string | null;
  readonly pidsDir: string | null;
  /** The zygote process's own group. */
  readonly self: RunCgroup;
  /** The host user the zygote and its children run as. */
  readonly user: { uid: number; gid: number };
  /** A fresh group for one child, writable (cgroup.procs) by the sandbox user. */
  createRun(name: string, limits: { memoryBytes: number; maxProcesses: number }): RunCgroup;
  remove(): Promise<void>;
}

/** A started zygote process (bubblewrap through the helper), as bubblewrap.ts launches it. */
export interface ZygoteProcess {
  readonly control: Duplex;
  readonly stderr: NodeJS.ReadableStream;
  kill(): void;
  readonly exited: Promise<void>;
}

export interface ZygoteHostHooks {
  /** Makes this zygote's cgroups, or null when the host cannot give its runs their own. */
  cgroups(id: string): ZygoteCgroups | null;
  /** Starts the zygote's sandbox. */
  launch(spec: ZygoteSpec, cgroups: ZygoteCgroups, socketDir: string): ZygoteProcess;
  log(message: string): void;
}

export interface ZygoteOptions {
  /**
   * Most zygotes alive at once. Default 4. A new one takes the place of an idle one of its own
   * owner or of an owner holding more (the one holding the most, least recently used first), never
   * of one with a run in progress.
   */
  maxZygotes?: number;
  /** Most zygotes of one owner (account) at once, so others always find a slot. Default half of maxZygotes (at least 1). */
  maxZygotesPerOwner?: number;
  /** Spare children kept forked per zygote (its floor). Default 2. */
  minSpares?: number;
  /** Most spare children per zygote. Default 12. */
  maxSpares?: number;
  /** A zygote unused this long is stopped. Default 5 min. */
  idleMs?: number;
  /** Free memory a new zygote must leave. Default max(512 MB, 10 % of RAM). */
  reserveBytes?: number;
  /** Memory one zygote is assumed to hold (pandas and numpy loaded), for that check. Default 160 MB. */
  zygoteMemoryBytes?: number;
  /** Free memory now (default os.freemem); replaceable for tests. */
  freeMemory?: () => number;
  /** The clock of claim rates, idle times and back-off (default Date.now); replaceable for tests. */
  now?: () => number;
}

/** What a run through a zygote child produced, in the form bubblewrap.ts interprets. */
export interface ZygoteRunRecord extends RunRecord {
  /** The child died before its run began (the caller may take the ordinary path instead). */
  notStarted: boolean;
}

export interface ZygoteRunRequest {
  payload: string;
  bridge: SandboxBridge | undefined;
  lineCapBytes: number;
  timeoutMs: number;
  /** Aborted: the run is killed (the server is stopping). */
  signal?: AbortSignal | undefined;
}

export interface ZygoteStats {
  zygotes: { label: string; owner: string; state: string; spares: number; runs: number; active: number }[];
  runs: number;
}

interface Registration {
  streams: Partial<Record<'out' | 'err' | 'chan', (socket: Socket) => void>>;
}

/** One Unix socket every child of every zygote of a sandbox instance connects to, by token. */
class HostSocket {
  readonly dir: string;
  private readonly server: Server;
  private readonly waiting = new Map<string, Registration>();
  readonly listening: Promise<void>;

  constructor(parent: string, owner: { uid: number; gid: number } | null) {
    this.dir = join(parent, 'zygote-sock');
    mkdirSync(this.dir, { mode: 0o755 });
    chmodSync(this.dir, 0o755);
    const path = join(this.dir, 'host.sock');
    this.server = createServer((socket) => this.accept(socket));
    this.listening = new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(path, () => {
        // Only the sandbox users (their group) need it; the token decides which run a connection
        // belongs to.
        if (owner) chownSync(path, owner.uid, owner.gid);
        chmodSync(path, 0o660);
        resolve();
      });
    });
    this.server.unref();
  }

  expect(token: string, streams: Registration['streams']): void {
    this.waiting.set(token, { streams });
  }

  forget(token: string): void {
    this.waiting.delete(token);
  }

  private accept(socket: Socket): void {
    socket.on('error', () => {});
    // The greeting, "TOKEN STREAM\n"; whatever follows it is the stream's.
    const greeting = new LineReader({ maxLineBytes: HELLO_MAX_BYTES, onOverflow: () => socket.destroy() });
    const timer = setTimeout(() => socket.destroy(), CHILD_START_MS);
    const onData = (chunk: Buffer) => {
      const [line] = greeting.push(chunk, 1);
      if (line === undefined) return;
      socket.off('data', onData);
      clearTimeout(timer);
      const hello = parseHello(line);
      const registration = hello && this.waiting.get(hello.token);
      const take = hello && registration?.streams[hello.stream];
      if (!hello || !registration || !take) {
        socket.destroy();
        return;
      }
      // Each stream of a token is taken once: a second connection with the same token is refused.
      delete registration.streams[hello.stream];
      if (Object.keys(registration.streams).length === 0) this.waiting.delete(hello.token);
      socket.pause();
      const rest = greeting.rest();
      if (rest.length > 0) socket.unshift(rest);
      take(socket);
      socket.resume();
    };
    socket.on('data', onData);
  }

  close(): void {
    this.server.close();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A run's cgroup name (cgroup.ts: run-ID), a fixed-size field of zygote.py's fork records. */
const RECORD_CGROUP = /^run-[0-9a-f]{16}$/;

/** One forked child waiting for its run. */
class ZygoteChild {
  readonly token = randomBytes(16).toString('hex');
  /** What the zygote knows the child by (it never keeps a token; see zygote.py). */
  readonly id: string;
  readonly stdout: CappedCapture;
  readonly stderr: CappedCapture;
  readonly ready: Promise<boolean>;
  channel: RunChannel | null = null;
  private channelSocket: Socket | null = null;
  private readonly streamsClosed: Promise<void>[] = [];
  private exitStatus: number | null | undefined = undefined;
  private readonly exitWaiters: Array<(status: number | null) => void> = [];
  private markReady: (ready: boolean) => void = () => {};
  private timer: NodeJS.Timeout;

  constructor(
    id: number,
    readonly cgroup: RunCgroup,
    maxLogBytes: number,
    sockets: HostSocket,
    log: (message: string) => void,
    /** Takes the run's cgroups back once the run is over (to reuse or remove them). */
    private readonly release: (cgroup: RunCgroup) => void,
  ) {
    this.id = id.toString(16).padStart(16, '0');
    this.stdout = new CappedCapture(maxLogBytes);
    this.stderr = new CappedCapture(maxLogBytes);
    this.ready = new Promise((resolve) => (this.markReady = resolve));
    const capture = (into: CappedCapture) => (socket: Socket) => {
      socket.on('data', (chunk: Buffer) => into.push(chunk));
      this.streamsClosed.push(new Promise((resolve) => socket.once('close', () => resolve())));
    };
    sockets.expect(this.token, {
      out: capture(this.stdout),
      err: capture(this.stderr),
      chan: (socket) => {
        this.channelSocket = socket;
        this.streamsClosed.push(new Promise((resolve) => socket.once('close', () => resolve())));
        this.channel = new RunChannel(socket, log);
        void this.channel.ready.then((ready) => this.markReady(ready));
      },
    });
    this.timer = setTimeout(() => {
      sockets.forget(this.token);
      this.markReady(false);
    }, CHILD_START_MS);
    this.timer.unref();
    void this.ready.then(() => {
      clearTimeout(this.timer);
      sockets.forget(this.token);
    });
  }

  get exited(): boolean {
    return this.exitStatus !== undefined;
  }

  /** The zygote reported the child's status (null: the zygote itself is gone). */
  settle(status: number | null): void {
    if (this.exitStatus !== undefined) return;
    this.exitStatus = status;
    this.markReady(false);
    for (const waiter of this.exitWaiters.splice(0)) waiter(status);
  }

  waitExit(): Promise<number | null> {
    if (this.exitStatus !== undefined) return Promise.resolve(this.exitStatus);
    return new Promise((resolve) => this.exitWaiters.push(resolve));
  }

  /** Called once when a claimed child's run is over (its zygote counts the runs in progress). */
  onDone: () => void = () => {};

  async run(request: ZygoteRunRequest): Promise<ZygoteRunRecord> {
    try {
      return await this.runOnce(request);
    } finally {
      this.onDone();
    }
  }

  private async runOnce(request: ZygoteRunRequest): Promise<ZygoteRunRecord> {
    const started = await this.ready;
    const channel = this.channel;
    // Gone before the request was sent (its zygote died, say): nothing of the run happened.
    if (!started || !channel || !this.channelSocket || this.channelSocket.destroyed || this.exited) {
      this.discard();
      await this.cgroup.remove();
      return this.record(null, false, true);
    }
    let timedOut = false;
    let escalated = false;
    let lost: NodeJS.Timeout | undefined;
    const kill = () => {
      if (escalated) return;
      escalated = true;
      this.cgroup.killAll();
      // Killed processes are reported within milliseconds; if nothing comes, the run is over anyway.
      lost = setTimeout(() => this.settle(null), 5000);
      lost.unref();
    };
    const timer = setTimeout(() => {
      timedOut = true;
      kill();
    }, request.timeoutMs);
    if (request.signal?.aborted) kill();
    else request.signal?.addEventListener('abort', kill, { once: true });
    channel.begin(request.bridge, request.lineCapBytes, kill);
    this.channelSocket.write(`${request.payload}\n`);
    const runStarted = performance.now();
    // With the answer in, the run is over: the runner flushed its output before answering, so it
    // is on the sockets already (read by the end of this turn of the event loop). Ending the run's
    // processes then, and not waiting for P1's status to travel through the zygote, saves a
    // millisecond or two; a run that ends without an answer is waited for.
    const streams = Promise.all(this.streamsClosed).then(() => 'streams' as const);
    const answered = channel.answered.then(() => new Promise<'answered'>((resolve) => setImmediate(() => resolve('answered'))));
    const first = await Promise.race([answered, this.waitExit().then(() => 'exit' as const)]);
    let status: number | null;
    let bound: NodeJS.Timeout | undefined;
    const bounded = new Promise((resolve) => (bound = setTimeout(resolve, KILL_GRACE_MS)));
    if (first === 'answered') {
      // The SIGKILL below is not waited for: no user code runs once it is delivered, and a large
      // process's memory teardown (pandas: milliseconds) need not delay the answer.
      status = 0;
    } else {
      status = await this.waitExit();
      await Promise.race([streams, bounded]);
      // Ended by the child's own wall clock (this process was stalled past its timer): a timeout.
      if (!timedOut && channel.answer === null && performance.now() - runStarted >= request.timeoutMs) timedOut = true;
    }
    clearTimeout(bound);
    clearTimeout(timer);
    clearTimeout(lost);
    this.cgroup.killAll();
    if (timedOut || channel.overflowed || channel.flooded) await this.cgroup.killUntilEmpty(KILL_GRACE_MS);
    const record = this.record(status, timedOut, false);
    this.release(this.cgroup);
    return record;
  }

  private record(status: number | null, timedOut: boolean, notStarted: boolean): ZygoteRunRecord {
    return {
      stdout: this.stdout,
      stderr: this.stderr,
      answer: this.channel?.answer ?? null,
      overflowed: this.channel?.overflowed ?? false,
      flooded: this.channel?.flooded ?? false,
      timedOut,
      oomKilled: this.cgroup.oomKilled(),
      // A run's request is sent only once its child said ready.
      ready: !notStarted && (this.channel?.isReady ?? false),
      // A child whose zygote vanished reads as a sandbox that could not run.
      exit: { code: status, signal: null, spawnFailed: status === null },
      notStarted,
    };
  }

  /** Ends an unclaimed child. */
  discard(): void {
    clearTimeout(this.timer);
    this.cgroup.killAll();
    this.channelSocket?.destroy();
    void this.cgroup.remove();
  }
}

type ZygoteState = 'starting' | 'ready' | 'failed' | 'stopped';

/** One zygote process and its spare children. */
class Zygote {
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
      if (diagnostics.length < 4096) diagnostics += chunk.toString('utf8');
    });
    started.control.on('error', () => {});
    started.control.on('data', (chunk: Buffer) => this.receive(chunk));
    void started.exited.then(() => {
      clearTimeout(startTimer);
      // Only the platform's own lines: nothing of a run passes through the zygote's stderr.
      if (this.state !== 'stopped') this.stop(`ended unexpectedly${diagnostics ? `: ${diagnostics.trim().slice(-500)}` : ''}`);
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
      if (message.ready === true && this.state === 'starting') {
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
      return new ZygoteChild(++this.forks, cgroup, this.spec.maxLogBytes, this.sockets, this.hooks.log, (used) => void this.recycle(used));
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

  /**
   * A finished run's groups serve a later child once no process is left in them, unless the run
   * was OOM-killed (the counter would tell the next run it was). Anything charged that is left is
   * page cache, which the kernel reclaims before it would stop the next run.
   */
  private async recycle(cgroup: RunCgroup): Promise<void> {
    const empty = await cgroup.killUntilEmpty(KILL_GRACE_MS);
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

/** The zygotes of one sandbox instance, by key. */
export class ZygotePool {
  private readonly zygotes = new Map<string, Zygote>();
  private readonly sockets: HostSocket;
  private readonly maxZygotes: number;
  private readonly maxPerOwner: number;
  private readonly idleMs: number;
  private readonly reserveBytes: number;
  private readonly zygoteMemoryBytes: number;
  private readonly spareOptions: { minSpares: number; maxSpares: number };
  private readonly timer: NodeJS.Timeout;
  private readonly failedUntil = new Map<string, number>();
  private readonly crashes = new Map<string, number>();
  private readonly now: () => number;
  private readonly freeMemory: () => number;
  private closed = false;
  private runs = 0;

  constructor(
    runtimeDir: string,
    owner: { uid: number; gid: number } | null,
    private readonly hooks: ZygoteHostHooks,
    options: ZygoteOptions = {},
  ) {
    this.sockets = new HostSocket(runtimeDir, owner);
    this.maxZygotes = options.maxZygotes ?? 4;
    this.maxPerOwner = Math.max(1, Math.min(this.maxZygotes, options.maxZygotesPerOwner ?? Math.floor(this.maxZygotes / 2)));
    this.idleMs = options.idleMs ?? 5 * 60_000;
    this.reserveBytes = options.reserveBytes ?? memoryReserve(totalmem());
    this.now = options.now ?? Date.now;
    this.freeMemory = options.freeMemory ?? freemem;
    this.zygoteMemoryBytes = options.zygoteMemoryBytes ?? 160 * MB;
    this.spareOptions = { minSpares: options.minSpares ?? 2, maxSpares: Math.max(options.minSpares ?? 2, options.maxSpares ?? 12) };
    this.timer = setInterval(() => this.tick(), 1000);
    this.timer.unref();
  }

  /**
   * A child of this spec's zygote, ready or about to be; null when there is none yet (the zygote
   * is starting, failed, or cannot be started now): the caller takes the ordinary path.
   */
  claim(spec: ZygoteSpec): ZygoteChild | null {
    if (this.closed) return null;
    const existing = this.zygotes.get(spec.key);
    if (existing && existing.state !== 'failed' && existing.state !== 'stopped') {
      // Most recently used last, for eviction.
      this.zygotes.delete(spec.key);
      this.zygotes.set(spec.key, existing);
      const child = existing.claim();
      if (child) this.runs++;
      return child;
    }
    if (existing) this.zygotes.delete(spec.key);
    if ((this.failedUntil.get(spec.key) ?? 0) > this.now()) return null;
    this.startZygote(spec);
    return null;
  }

  private startZygote(spec: ZygoteSpec): void {
    if (this.freeMemory() - this.zygoteMemoryBytes < this.reserveBytes) return;
    // Only an idle zygote (no run in progress) makes room, so no tenant can end another's runs;
    // without one, this key waits (its runs take the ordinary path).
    const idle = (owner?: string) => [...this.zygotes].filter(([, zygote]) => zygote.active === 0 && (owner === undefined || zygote.spec.owner === owner));
    const held = (owner: string) => [...this.zygotes.values()].filter((zygote) => zygote.spec.owner === owner).length;
    if (held(spec.owner) >= this.maxPerOwner) {
      // At its own cap, an owner can only replace one of its own (least recently used first), and
      // not one used in the last moments: its namespaces would take turns ending each other's.
      const own = idle(spec.owner).find(([, zygote]) => this.now() - zygote.lastUsed >= OWN_REPLACE_MS);
      if (!own) return;
      this.evict(own[0]);
    }
    while (this.zygotes.size >= this.maxZygotes) {
      // One of its own, or one of an owner holding more than it does: from the owner holding the
      // most, least recently used first (the map is in that order).
      const mine = held(spec.owner);
      let victim: string | undefined;
      let most = 0;
      for (const [key, zygote] of idle()) {
        const count = held(zygote.spec.owner);
        if ((zygote.spec.owner === spec.owner || count > mine) && count > most) [victim, most] = [key, count];
      }
      if (victim === undefined) return;
      this.evict(victim);
    }
    const zygote = new Zygote(spec, this.hooks, this.sockets, this.spareOptions, this.now);
    this.zygotes.set(spec.key, zygote);
    // Its children connect to the host socket, so that listens first.
    void this.sockets.listening.then(
      () => {
        if (this.closed || zygote.state !== 'starting') return;
        zygote.start();
        if ((zygote.state as string) === 'failed') this.failedUntil.set(spec.key, this.now() + NEVER_READY_BACKOFF_MS);
      },
      (error: Error) => {
        zygote.stop(`the host socket could not listen: ${error.message}`);
      },
    );
  }

  private evict(key: string): void {
    const zygote = this.zygotes.get(key);
    this.zygotes.delete(key);
    zygote?.stop();
  }

  stats(): ZygoteStats {
    return {
      runs: this.runs,
      zygotes: [...this.zygotes.values()].map((zygote) => ({
        label: zygote.spec.label,
        owner: zygote.spec.owner,
        state: zygote.state,
        spares: zygote.spares.length,
        runs: zygote.runs,
        active: zygote.active,
      })),
    };
  }

  private tick(): void {
    const now = this.now();
    for (const [key, zygote] of [...this.zygotes]) {
      if (zygote.state === 'failed') {
        this.zygotes.delete(key);
        // A crash after serving is retried soon (1 s, doubling with each crash of the key, up to a
        // minute); a zygote that never got ready says the host cannot run one: a minute.
        const crashes = (this.crashes.get(key) ?? 0) + (zygote.everReady ? 1 : 0);
        this.crashes.set(key, crashes);
        this.failedUntil.set(key, now + (zygote.everReady ? backoffMs(crashes - 1, CRASH_BACKOFF) : NEVER_READY_BACKOFF_MS));
        // Bounded: the oldest keys' back-off records go first.
        for (const map of [this.failedUntil, this.crashes]) {
          while (map.size > 256) map.delete(map.keys().next().value as string);
        }
      } else if (now - zygote.lastUsed > this.idleMs && zygote.active === 0) {
        this.zygotes.delete(key);
        zygote.stop();
      } else {
        zygote.refill();
      }
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    const all = [...this.zygotes.values()];
    this.zygotes.clear();
    for (const zygote of all) zygote.stop();
    await Promise.all(all.map((zygote) => zygote.closed()));
    this.sockets.close();
  }
}

export type { ZygoteChild };
