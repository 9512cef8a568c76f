/** One child a zygote forked: it waits for its run, runs it once, and reports what happened. */
import { randomFillSync } from 'node:crypto';
import type { Socket } from 'node:net';
import { CappedCapture } from '../wire/capture.js';
import { RawAnswer, RunChannel } from '../wire/channel.js';
import { takeOutputAtAnswer } from '../wire/drain.js';
import type { SetupFailure } from '../wire/messages.js';
import type { RunCgroup } from '../host/cgroup.js';
import { OUTPUT_AFTER_ANSWER_MS, REAP_BOUND_MS } from '../policy/capacity.js';
import { CHILD_START_MS, type HostSocket } from './host-socket.js';
import type { ZygoteRunRecord, ZygoteRunRequest } from './types.js';

/** A run's cgroup name (host/cgroup.ts: run-ID), a fixed-size field of zygote.py's fork records. */
export const RECORD_CGROUP = /^run-[0-9a-f]{16}$/;
/** After a kill, how long the zygote's report of the child's status is waited for before the run ends without it. */
const KILLED_REPORT_MS = 5000;

/** Random bytes drawn for many children's tokens at once: one call into the CSPRNG per 64 children, not one each. */
const TOKEN_BYTES = 16;
const tokenPool = Buffer.alloc(TOKEN_BYTES * 64);
let tokenOffset = tokenPool.length;

/** A fresh token (32 hex digits) of bytes no other token had. */
export function freshToken(): string {
  if (tokenOffset + TOKEN_BYTES > tokenPool.length) {
    randomFillSync(tokenPool);
    tokenOffset = 0;
  }
  const token = tokenPool.toString('hex', tokenOffset, tokenOffset + TOKEN_BYTES);
  tokenOffset += TOKEN_BYTES;
  return token;
}

/** One forked child waiting for its run. */
export class ZygoteChild {
  readonly token = freshToken();
  /** What the zygote knows the child by (it never keeps a token; see zygote.py). */
  readonly id: string;
  readonly stdout: CappedCapture;
  readonly stderr: CappedCapture;
  readonly ready: Promise<boolean>;
  /** Settled once a started child's processes are in the instance's low-weight CPU group (v1). */
  private readonly lowered: Promise<void>;
  channel: RunChannel | null = null;
  private channelSocket: Socket | null = null;
  /** The run's stdout and stderr connections, as the host socket handed them over. */
  private readonly outputs: Array<readonly [Socket, CappedCapture]> = [];
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
    private readonly log: (message: string) => void,
    /** Takes the run's cgroups back once the run is over (to reuse or remove them), with the child's end (its status reported). */
    private readonly release: (cgroup: RunCgroup, exited: Promise<unknown>) => void,
    /** Told when the child reports, on its channel, the set-up step that failed. */
    onSetupFailure: (report: SetupFailure) => void = () => {},
  ) {
    this.id = id.toString(16).padStart(16, '0');
    this.stdout = new CappedCapture(maxLogBytes);
    this.stderr = new CappedCapture(maxLogBytes);
    this.ready = new Promise((resolve) => (this.markReady = resolve));
    // The child started at the zygote's (default) weight; once it is up (a spare, waiting), it takes
    // the runs' low one, off the request path: a run's code only ever runs at the low weight.
    // Settled: up, its processes are P1 and its worker, both waiting (zygote.py), and its request
    // waits for this (runOnce), so one read of the run's group finds them all (s24: a read a run).
    this.lowered = this.ready.then((up) => (up ? this.cgroup.lowerCpu({ settled: true }) : undefined)).catch(() => undefined);
    const capture = (into: CappedCapture) => (socket: Socket) => {
      this.outputs.push([socket, into]);
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
        this.channel.onSetupFailure = onSetupFailure;
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
    await this.lowered;
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
      lost = setTimeout(() => this.settle(null), KILLED_REPORT_MS);
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
    // is on the sockets already, read or in their buffers (taken below). Ending the run's
    // processes then, and not waiting for P1's status to travel through the zygote, saves a
    // millisecond or two; a run that ends without an answer is waited for.
    const streams = Promise.all(this.streamsClosed).then(() => 'streams' as const);
    const answered = channel.answered.then(() => new Promise<'answered'>((resolve) => setImmediate(() => resolve('answered'))));
    const first = await Promise.race([answered, this.waitExit().then(() => 'exit' as const)]);
    let status: number | null;
    let bound: NodeJS.Timeout | undefined;
    const bounded = new Promise((resolve) => (bound = setTimeout(resolve, REAP_BOUND_MS)));
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
    // Not necessarily read in the turn the answer was: epoll hands back the channel (reported
    // before, so listed first) with its answer while stdout's and stderr's earlier bytes, arriving
    // as the kernel gathers the batch, wait for the next one (seen: 9 runs in 1200, at load 6-8).
    if (first === 'answered') await takeOutputAtAnswer(this.outputs, OUTPUT_AFTER_ANSWER_MS);
    if (timedOut || channel.overflowed || channel.flooded) await this.cgroup.killUntilEmpty(REAP_BOUND_MS, { boost: true });
    // Its fd 3 read to the end with nothing after the ready line, not even the ack the child writes
    // once it has its request (before any of the run's code): the child (or its zygote, killed
    // between the claim and the ack) never began the run, so the caller may run it elsewhere. Any
    // byte after ready, or a fd 3 not read to its end, and the run counts as begun: never re-run.
    // The host's own kills (timeout, abort, overflow) end runs honestly, whatever they did.
    const notStarted = first === 'exit' && !escalated && channel.closedBeforeStart;
    if (notStarted) this.log('a zygote child ended before its run began (its zygote died?): the run takes the ordinary path');
    const record = this.record(status, timedOut, notStarted);
    // The run's signal may outlive it (a code-mode caller's, shared by its callees): once released,
    // the groups serve other children, which its abort must not kill (nor keep this child alive).
    request.signal?.removeEventListener('abort', kill);
    this.release(this.cgroup, this.waitExit());
    return record;
  }

  private record(status: number | null, timedOut: boolean, notStarted: boolean): ZygoteRunRecord {
    const answer = this.channel?.answer ?? null;
    // A run's own answer (parsed) decides its outcome whatever the memory group says (outcome.ts
    // reads oomKilled only for a run without one): the group's counter is read only then, once
    // per run at most, before the group is recycled. The recycling reads it again, when empty.
    const answeredItself = answer !== null && typeof answer === 'object' && !(answer instanceof RawAnswer);
    return {
      stdout: this.stdout,
      stderr: this.stderr,
      answer,
      overflowed: this.channel?.overflowed ?? false,
      flooded: this.channel?.flooded ?? false,
      timedOut,
      oomKilled: answeredItself ? false : this.cgroup.oomKilled(),
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
