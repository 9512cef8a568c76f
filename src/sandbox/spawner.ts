/**
 * Sandbox helpers started from a small spawner process (host-bin/spawner.cjs) instead of the server.
 * `child_process.spawn` is fork()+exec: from the server, whose address space is large (the embedded
 * database), each launch held its event loop for 9–20 ms, which every pool refill put in front of
 * the run in progress. The spawner is a plain Node process with a small heap; it forks the helper
 * and passes the stdio pipes back over its IPC channel (its events, a helper's pid and end, come as
 * lines on its stdout, so an end never waits behind the next helper's pipes), so a launch costs
 * the server a few small messages. The server then owns the pipes: requests (with env values) are
 * written straight to the helper's stdin and answers read from its pipes, never through the
 * spawner.
 *
 * A helper's pipes are held until all four have arrived, so nothing reaches it before then (it waits
 * for its command on stdin). If the spawner dies first, the helper is therefore untouched and is
 * started again, by the next spawner or directly: a launch, pre-started or already handed to a run,
 * never fails because the spawner died. Helpers it started whose pipes all arrived keep running
 * (their pipes are the server's): a run in progress still gets its answer, and ends, with no exit
 * status to read, as a SandboxError if it had none. Idle ones are discarded. The next launch starts
 * a new spawner; one that keeps dying is backed off, and launches meanwhile spawn directly from the
 * server. The spawner counts as dead only once both its channels have ended, so every pipe and
 * event it sent before dying has been taken in.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type { Socket } from 'node:net';
import { Duplex } from 'node:stream';
import type { LauncherChild, LauncherExit } from './launcher-pool.js';
import { spawnHelper } from './host/spawn-helper.js';
import { backoffMs, KILL_GRACE_MS, START_BACKOFF } from './policy/capacity.js';
import { JsonLineReader } from './wire/json-lines.js';
import type { SpawnerEvent, SpawnerRequest } from './wire/messages.js';

/** A spawner that lived less than this before dying counts towards its back-off. */
const QUICK_DEATH_MS = 10_000;
/** After the spawner's exit, how long its channels get to end (what it sent before dying is read) before it counts as dead. */
const CHANNELS_AFTER_EXIT_MS = 1000;
/** The spawner's event lines are a few dozen bytes; one this long without its end is not one. */
const EVENT_LINE_CAP = 64 * 1024;

/**
 * One of a helper's pipes, handed out at once (prepare() wires it synchronously) and joined to the
 * real socket when that arrives from the spawner. Writes wait for it; errors of the pipe (the
 * sandbox gone) are never raised, as with a helper's own pipes: its end is seen as 'close'.
 */
class LatePipe extends Duplex {
  socket: Socket | null = null;
  /** The pipe is closed on the server's side (or never arrived). */
  gone = false;
  private ended = false;
  private readonly queued: Array<{ chunk: Buffer; callback: () => void }> = [];
  private finalCallback: (() => void) | null = null;

  constructor(
    /** Read from (stdout, stderr, fd 3); stdin is only written. */
    private readonly reads: boolean,
    private readonly onGone: () => void,
  ) {
    super({ allowHalfOpen: false });
  }

  attach(socket: Socket | undefined): void {
    // A socket held until its helper's last pipe arrived may have ended meanwhile (the helper
    // gone): its 'end' (with nothing left unread) or 'close' has been emitted already.
    if (this.gone || this.destroyed || !socket || socket.destroyed || (this.reads && socket.readableEnded)) {
      socket?.destroy();
      this.close();
      return;
    }
    this.socket = socket;
    socket.on('error', () => {});
    socket.once('close', () => this.close());
    if (this.reads) {
      socket.on('data', (chunk: Buffer) => {
        if (!this.push(chunk)) socket.pause();
      });
      socket.once('end', () => this.endReadable());
    } else {
      // Nothing is read from stdin, but its end must be seen for the socket to close.
      socket.resume();
    }
    for (const { chunk, callback } of this.queued.splice(0)) this._write(chunk, 'binary', callback);
    if (this.finalCallback) {
      const callback = this.finalCallback;
      this.finalCallback = null;
      this._final(callback);
    }
  }

  /**
   * The pipe's server end is gone. What was read stays to be consumed (the stream then ends and
   * closes as a socket would); pending writes are dropped.
   */
  close(): void {
    if (this.gone) return;
    this.gone = true;
    this.endReadable();
    for (const { callback } of this.queued.splice(0)) callback();
    const final = this.finalCallback;
    this.finalCallback = null;
    final?.();
    if (!this.reads) this.destroy();
    this.onGone();
  }

  private endReadable(): void {
    if (this.ended) return;
    this.ended = true;
    this.push(null);
  }

  override _read(): void {
    this.socket?.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    const socket = this.socket;
    if (socket && !socket.destroyed) socket.write(chunk, () => callback());
    else if (socket || this.gone) callback();
    else this.queued.push({ chunk, callback: () => callback() });
  }

  override _final(callback: (error?: Error | null) => void): void {
    const socket = this.socket;
    if (socket && !socket.destroyed) socket.end(() => callback());
    else if (socket || this.gone) callback();
    else this.finalCallback = () => callback();
  }

  override _destroy(_error: Error | null, callback: (error?: Error | null) => void): void {
    this.socket?.destroy();
    callback(null);
  }
}

/** What a helper is started with. */
interface LaunchRequest {
  file: string;
  args: string[];
  env: Record<string, string>;
  seccomp: string;
}

/**
 * A helper started by the spawner (or, while it is unavailable, by the server directly), standing
 * in for its ChildProcess: the same pid, stdio and kill, and `exited` settling as ChildProcess
 * 'close' would (the helper ended and its pipes are drained).
 */
export class SpawnedHelper implements LauncherChild {
  pid: number | undefined = undefined;
  readonly stdin: LatePipe;
  readonly stdout: LatePipe;
  readonly stderr: LatePipe;
  readonly stdio: readonly [LatePipe, LatePipe, LatePipe, LatePipe];
  readonly exited: Promise<LauncherExit>;
  /** The spawner process that was asked to start it, and its id there. */
  via: ChildProcess | null = null;
  id = 0;
  /** Started by the server itself (no spawner to be had). */
  direct: ChildProcess | null = null;
  /** Pipes handed over so far. */
  received = 0;
  /** Times it was started again because its spawner died before handing over every pipe. */
  restarts = 0;
  /** The last signal asked for, applied again if it started anew or lost its spawner meanwhile. */
  killedWith: NodeJS.Signals | null = null;
  private status: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  /** The spawner died after handing over every pipe: the helper runs on, unobserved. */
  private orphaned = false;
  private failed = false;
  private settled = false;
  /**
   * Pipes received, by fd, until the last one comes: only then are they joined to stdio, so no
   * byte is written to the helper (whose command comes on stdin) while it could still have to be
   * started again.
   */
  private readonly held = new Map<number, Socket | undefined>();
  private resolveExit: (exit: LauncherExit) => void = () => {};

  constructor(
    readonly request: LaunchRequest,
    private readonly relayKill: (helper: SpawnedHelper, signal: NodeJS.Signals) => boolean,
  ) {
    const settle = () => this.settle();
    this.stdin = new LatePipe(false, () => {});
    this.stdout = new LatePipe(true, settle);
    this.stderr = new LatePipe(true, settle);
    const answers = new LatePipe(true, settle);
    this.stdio = [this.stdin, this.stdout, this.stderr, answers];
    // The function may exit without reading its input; a broken pipe here is not an error.
    this.stdin.on('error', () => {});
    this.exited = new Promise((resolve) => (this.resolveExit = resolve));
  }

  /** Running and watched: not ended, and someone there to report its end. */
  alive(): boolean {
    return !this.settled && !this.failed && !this.orphaned && this.status === null;
  }

  kill(signal: NodeJS.Signals = 'SIGTERM'): boolean {
    if (this.settled || this.failed || this.status !== null) return false;
    this.killedWith = signal;
    if (this.direct) return this.direct.kill(signal);
    if (!this.orphaned) return this.relayKill(this, signal);
    // Without its spawner nobody reaps it on our behalf; its pid is still its own while any of its
    // pipes is open (the helper outlives every process of the run, which all hold them).
    if (this.pid === undefined || this.readablesOpen() === 0) return false;
    try {
      process.kill(this.pid, signal);
      return true;
    } catch {
      return false;
    }
  }

  /** Messages from the spawner. */
  started(pid: number): void {
    this.pid = pid;
  }

  attach(index: number, socket: Socket | undefined): void {
    if (!this.stdio[index] || this.held.has(index) || this.failed || this.received === this.stdio.length) {
      socket?.destroy();
      return;
    }
    socket?.on('error', () => {});
    this.held.set(index, socket);
    this.received++;
    if (this.received === this.stdio.length) this.joinHeld();
  }

  /** Joins the pipes received so far to stdio (all of them, or those there are once it ended). */
  private joinHeld(): void {
    for (const [index, socket] of this.held) this.stdio[index].attach(socket);
    this.held.clear();
  }

  /** Closes the pipes received so far without using them. */
  private dropHeld(): void {
    for (const socket of this.held.values()) socket?.destroy();
    this.held.clear();
  }

  ended(code: number | null, signal: NodeJS.Signals | null): void {
    this.status = { code, signal };
    this.settle();
  }

  /** It could not be started. */
  fail(): void {
    if (this.failed) return;
    this.failed = true;
    this.dropHeld();
    for (const pipe of this.stdio) {
      pipe.socket?.destroy();
      pipe.close();
    }
    this.settle();
  }

  /** Started by the server itself: wired as it would be by the spawner's messages. */
  adopt(child: ChildProcess): void {
    this.direct = child;
    if (child.pid === undefined) {
      child.once('error', () => this.fail());
      return;
    }
    this.pid = child.pid;
    child.on('error', () => {});
    child.once('exit', (code, signal) => this.ended(code, signal));
    for (const index of [0, 1, 2, 3]) this.attach(index, child.stdio[index] as Socket);
    if (this.killedWith) child.kill(this.killedWith);
  }

  /** Its end has been reported. */
  get reported(): boolean {
    return this.status !== null;
  }

  /** Its spawner has nothing more to say about it: ended (or failed), with every pipe handed over. */
  finished(): boolean {
    return this.failed || (this.status !== null && this.received === this.stdio.length);
  }

  /**
   * Its spawner died before handing over every pipe, and before reporting its end: nothing has been
   * written to it (see `held`), so it can be started afresh. The pipes that did arrive are closed,
   * and the helper the dead spawner started, if any, sees its stdin end and exits. False when it
   * cannot (it ended, failed, or got all its pipes).
   */
  prepareRestart(): boolean {
    if (this.failed || this.settled || this.status !== null || this.received === this.stdio.length) return false;
    this.dropHeld();
    this.received = 0;
    this.pid = undefined;
    this.via = null;
    this.id = 0;
    this.restarts++;
    return true;
  }

  /** The spawner died before handing over every pipe or before reporting the helper's end. */
  orphan(): void {
    if (this.failed) return;
    if (this.status !== null) {
      // It ended; pipes still in transit died with the spawner. What arrived is still read.
      for (const [index, pipe] of this.stdio.entries()) if (!this.held.has(index) && !pipe.socket) pipe.close();
      this.joinHeld();
      this.received = this.stdio.length;
      this.settle();
      return;
    }
    if (this.received < this.stdio.length) {
      // Some pipes died with the spawner, and it cannot be started again (the server is closing
      // the spawner): nothing was written to it, so dropping its pipes ends it.
      this.fail();
      return;
    }
    this.orphaned = true;
    if (this.killedWith) this.kill(this.killedWith);
    this.settle();
  }

  private readablesOpen(): number {
    return this.stdio.slice(1).filter((pipe) => !pipe.gone).length;
  }

  private settle(): void {
    if (this.settled) return;
    if (this.failed) {
      this.settled = true;
      this.resolveExit({ code: null, signal: null, spawnFailed: true });
      return;
    }
    if ((this.status === null && !this.orphaned) || this.received < this.stdio.length || this.readablesOpen() > 0) return;
    this.settled = true;
    const { code, signal } = this.status ?? { code: null, signal: null };
    this.resolveExit({ code, signal, spawnFailed: false, lost: this.status === null });
  }
}

export class Spawner {
  private process: ChildProcess | null = null;
  private readonly live = new Map<number, SpawnedHelper>();
  private nextId = 1;
  private startedAt = 0;
  private quickDeaths = 0;
  private retryAt = 0;
  private closed = false;
  private exitedProcess: Promise<void> = Promise.resolve();

  constructor(
    /** host-bin/spawner.cjs */
    private readonly script: string,
    /** The spawner's whole environment: the sandbox's, never the server's. */
    private readonly env: Record<string, string>,
    private readonly log: (message: string) => void,
  ) {}

  /**
   * Starts `file` with stdio pipes at fds 0-3 and the seccomp program at fd 4: through the
   * spawner, or directly while one that keeps dying is backed off.
   */
  launch(file: string, args: string[], env: Record<string, string>, seccomp: string): SpawnedHelper {
    const helper = new SpawnedHelper({ file, args, env, seccomp }, (target, signal) => this.relayKill(target, signal));
    this.start(helper);
    return helper;
  }

  /** Ends the spawner (helpers still running are left to their pipes, as after its death). */
  async close(): Promise<void> {
    this.closed = true;
    const spawner = this.process;
    if (!spawner) return;
    // It exits when its channel closes.
    if (spawner.connected) spawner.disconnect();
    const kill = setTimeout(() => spawner.kill('SIGKILL'), KILL_GRACE_MS);
    await this.exitedProcess;
    clearTimeout(kill);
  }

  private start(helper: SpawnedHelper): void {
    const spawner = this.ensure();
    if (!spawner) {
      this.spawnDirectly(helper);
      return;
    }
    helper.via = spawner;
    helper.id = this.nextId++;
    this.live.set(helper.id, helper);
    this.updateRef();
    const { file, args, env, seccomp } = helper.request;
    this.send(spawner, { op: 'spawn', id: helper.id, file, args, env, seccomp });
    if (helper.killedWith) this.send(spawner, { op: 'kill', id: helper.id, signal: helper.killedWith });
  }

  private spawnDirectly(helper: SpawnedHelper): void {
    const { file, args, env, seccomp } = helper.request;
    try {
      helper.adopt(spawnHelper(file, args, { seccompProgram: seccomp, env }).child);
    } catch (error) {
      this.log(`sandbox helper could not be started: ${(error as Error).message}`);
      helper.fail();
    }
  }

  private ensure(): ChildProcess | null {
    if (this.process) return this.process;
    if (this.closed || Date.now() < this.retryAt) return null;
    let spawner: ChildProcess;
    try {
      spawner = spawn(process.execPath, [this.script], {
        stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
        env: this.env,
        serialization: 'json',
      });
    } catch (error) {
      this.log(`could not start the sandbox spawner: ${(error as Error).message}`);
      this.died(null);
      return null;
    }
    this.process = spawner;
    this.startedAt = Date.now();
    this.exitedProcess = new Promise((resolve) => {
      spawner.once('exit', () => resolve());
      spawner.once('error', () => resolve());
    });
    spawner.on('message', (message: { op?: string; id?: number; index?: number }, handle) => {
      if (message.op === 'stdio') this.receivePipe(Number(message.id), Number(message.index), handle as Socket | undefined);
      else (handle as Socket | undefined)?.destroy();
    });
    const events = new JsonLineReader<SpawnerEvent>({
      maxLineBytes: EVENT_LINE_CAP,
      // Nothing it says after that can be read: it is ended, and treated as any spawner that died.
      onOverflow: () => {
        this.log('the sandbox spawner wrote an unreadable line');
        spawner.kill('SIGKILL');
      },
    });
    spawner.stdout!.on('data', (chunk: Buffer) => {
      for (const line of events.push(chunk)) {
        try {
          if (!line.ok) throw new Error(line.line);
          this.receive(line.value);
        } catch {
          this.log('the sandbox spawner wrote an unreadable line');
        }
      }
    });
    spawner.once('error', (error) => {
      this.log(`sandbox spawner failed: ${error.message}`);
      this.died(spawner);
    });
    // Whatever it wrote or sent before dying is still read: both its channels' ends come after.
    let ends = 0;
    const ended = () => {
      if (++ends === 2) this.died(spawner);
    };
    spawner.once('disconnect', ended);
    spawner.stdout!.once('close', ended);
    spawner.once('exit', () => setTimeout(() => this.died(spawner), CHANNELS_AFTER_EXIT_MS).unref());
    // Never what keeps the server running: only launches waiting on it hold the channel.
    spawner.unref();
    (spawner.stdout as Socket).unref();
    this.updateRef();
    return spawner;
  }

  private relayKill(helper: SpawnedHelper, signal: NodeJS.Signals): boolean {
    const spawner = helper.via;
    return spawner !== null && this.send(spawner, { op: 'kill', id: helper.id, signal });
  }

  private send(spawner: ChildProcess, message: SpawnerRequest): boolean {
    if (spawner !== this.process || !spawner.connected) return false;
    spawner.send(message, undefined, undefined, (error) => {
      // Its channel is broken (most often: it has just died). Not counted as dead yet: pipes and
      // events it sent before may still be unread, and are read before its channels end; this
      // makes sure they do. The launch is sent again then, if nothing of it arrived.
      if (error && spawner === this.process && spawner.exitCode === null && spawner.signalCode === null) spawner.kill('SIGKILL');
    });
    return true;
  }

  private receivePipe(id: number, index: number, handle: Socket | undefined): void {
    const helper = this.live.get(id);
    if (!helper) {
      handle?.destroy();
      return;
    }
    helper.attach(index, handle);
    this.forgetIfFinished(helper);
  }

  private receive(event: SpawnerEvent): void {
    const helper = this.live.get(event.id);
    if (!helper) return;
    switch (event.op) {
      case 'spawned':
        helper.started(event.pid);
        break;
      case 'failed':
        this.log(`sandbox helper could not be started: ${event.message}`);
        helper.fail();
        break;
      case 'exit':
        // Its pipes may still be on their way (they travel on the other channel).
        helper.ended(event.code, event.signal);
        break;
    }
    this.forgetIfFinished(helper);
  }

  private forgetIfFinished(helper: SpawnedHelper): void {
    if (!helper.finished()) return;
    this.live.delete(helper.id);
    this.updateRef();
  }

  private died(spawner: ChildProcess | null): void {
    if (spawner !== this.process) return;
    this.process = null;
    const helpers = [...this.live.values()];
    this.live.clear();
    if (!this.closed) {
      if (spawner && spawner.exitCode === null && spawner.signalCode === null) spawner.kill('SIGKILL');
      const now = Date.now();
      this.quickDeaths = spawner && now - this.startedAt >= QUICK_DEATH_MS ? 1 : this.quickDeaths + 1;
      // The first death restarts at once; one that keeps dying waits longer each time.
      this.retryAt = this.quickDeaths <= 1 ? 0 : now + backoffMs(this.quickDeaths - 2, START_BACKOFF);
      this.log(
        `sandbox spawner ended (${helpers.length} helpers in flight)${this.retryAt ? `; restarting in ${this.retryAt - now} ms, spawning directly meanwhile` : ''}`,
      );
    }
    for (const helper of helpers) {
      // Not all its pipes reached the server, so nothing has been written to it: ask again (the one
      // it may have started sees its stdin end and exits). Whoever holds it (a run, the pools)
      // sees only a slower start. Each time takes a spawner's death, and those are backed off.
      if (!this.closed && helper.prepareRestart()) this.start(helper);
      else helper.orphan();
    }
  }

  private updateRef(): void {
    const channel = this.process?.channel;
    if (!channel) return;
    if (this.live.size > 0) channel.ref();
    else channel.unref();
  }
}
