import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { getPriority } from 'node:os';
import path from 'node:path';
import { canonicalJson } from '../core/functions.js';
import { describeExcess, shapeExcess, shapeExcessSlices } from '../core/json-schema.js';
import { piecesShapeExcessSlices } from '../core/json-scan.js';
import { jsonTextPieces, weightUpTo } from '../core/json-text.js';
import { MAX_CHECKED_DEPTH, MAX_CHECKED_VALUES, SCHEMA_CHECK_DEADLINE_MS, SCHEMA_WORKER_HEAP_MB } from '../core/limits.js';
import { RawJson } from '../core/raw-json.js';
import { packageRoot } from '../sandbox/host.js';
import { MAIN_THREAD_SLICE_VALUES, sharedFairShare, type FairShare } from './fair-share.js';
import { setProcessNice } from './process-priority.js';
import { SchemaLauncher, type RemoteWorker } from './schema-launcher.js';

export interface SchemaGuardOptions {
  /** Worker processes. One account holds at most workers - 1 of them (at least one) at a time. */
  workers: number;
  /**
   * CPU time one compile or check may use in its worker before the worker is killed. Measured as
   * CPU rather than wall-clock time, so a server busy with sandboxes does not stop honest checks;
   * wall-clock time is capped too, at `wallFactor` times this.
   */
  deadlineMs: number;
  wallFactor: number;
  /** V8 old-generation heap of each worker; going over it ends that worker only. */
  heapMb: number;
  /** Jobs waiting for a worker, in all and per account; beyond that a job fails at once. */
  maxWaiting: number;
  maxWaitingPerAccount: number;
  /** How long a job may wait for a worker; then it fails closed as busy. */
  maxWaitMs: number;
  /**
   * How far below the server's scheduling priority the workers run (added to its nice value, at
   * most 19), so two workers busy with tenants' schemas cannot take both cores from the event loop
   * that answers everyone.
   */
  nice: number;
  /**
   * The workers run under SCHED_IDLE (where the host allows it): the event loop, and every other
   * thread of the server's, takes a core from a tenant's schema as soon as it wakes. So does every
   * other process in the server's cgroup at the same level, hence opt-in (MCPWORKS_SANDBOX_CPU_WEIGHT=idle).
   */
  idle: boolean;
  /**
   * Values measured or serialised on the main thread between two turns of its event loop: a large
   * input or result is prepared for the worker in slices, so other requests are served meanwhile.
   */
  sliceValues: number;
  /** Where those slices take their turns, shared fairly with other tenants' main-thread work. */
  share: FairShare;
  /**
   * Passes remembered per account (its least recently used dropped first): a value whose JSON text
   * is at most REMEMBERED_VALUE_CHARS, already found to match a schema for the same account, is not
   * sent to a worker again. Each account has its own list, so one account's passes never push out
   * another's. 0: none.
   */
  rememberedPasses: number;
  /** Accounts whose passes are held; beyond it, the least recently used account's whole list goes. */
  rememberedAccounts: number;
}

export const SCHEMA_GUARD_DEFAULTS: Readonly<SchemaGuardOptions> = Object.freeze({
  workers: 2,
  deadlineMs: SCHEMA_CHECK_DEADLINE_MS,
  wallFactor: 10,
  heapMb: SCHEMA_WORKER_HEAP_MB,
  maxWaiting: 1000,
  maxWaitingPerAccount: 100,
  maxWaitMs: 10_000,
  nice: 10,
  idle: false,
  sliceValues: MAIN_THREAD_SLICE_VALUES,
  share: sharedFairShare,
  rememberedPasses: 256,
  rememberedAccounts: 32,
});

/**
 * The longest JSON text of a value whose pass is remembered. At most 256 × 32 = 8,192 passes are
 * held: 11.5 MB of heap, 19.9 MB if every text holds characters beyond Latin-1 (measured; README, Security).
 */
export const REMEMBERED_VALUE_CHARS = 1024;
/**
 * Values (weightUpTo's count) measured and serialised right away rather than in the fair share's
 * turns: a few microseconds, well under a slice, and most inputs and results are this small.
 */
const SMALL_VALUE_WEIGHT = 256;

/**
 * A check's answer. `stopped`: the check was not allowed to finish (too deep, too big, too slow,
 * too much memory, too many waiting); the caller fails closed. `busy` marks the server's load
 * rather than the schema or value.
 */
export type SchemaVerdict = { ok: true } | { ok: false; problems: string[] } | { ok: false; stopped: string; busy?: boolean };
export type CompileVerdict = { ok: true } | { ok: false; invalid: string } | { ok: false; stopped: string; busy?: boolean };

interface SchemaText {
  key: string;
  text: string;
}

type Answer = { ok: true } | { problems: string[] } | { invalid: string } | { stopped: string; busy?: boolean } | { unreadable: true };

interface Job {
  id: number;
  accountId: string;
  op: 'compile' | 'check';
  schema: SchemaText;
  /** The value's JSON text, in pieces of about a slice each. */
  data?: Array<string | Buffer>;
  /** The worker said it lacks this schema: send its text this time. */
  withText: boolean;
  resolve: (answer: Answer) => void;
  /** Fails the job if no worker took it in time (cleared when one does). */
  waitTimer: NodeJS.Timeout | undefined;
}

interface Slot {
  worker: RemoteWorker | undefined;
  ready: boolean;
  job: Job | undefined;
  timer: NodeJS.Timeout | undefined;
  /** Schema keys this worker was sent the text of (it may have dropped some; it then says so). */
  known: Set<string>;
  /** The last worker died before it was ready: start another only when new work arrives. */
  failedToStart: boolean;
}

type WorkerMessage =
  | { ready: true }
  | { id: number; ok: true }
  | { id: number; problems: string[] }
  | { id: number; invalid: string }
  | { id: number; unknown: true }
  | { id: number; unreadable: true };

const WORKER_FILE = path.join(packageRoot(), 'src', 'run', 'host-bin', 'schema-worker.mjs');

/**
 * Every use of a tenant's JSON Schema (compiling it when a version is created, checking a run's
 * input or result against it) runs here: in a small pool of worker processes, each job with a
 * deadline and each worker with a heap limit. A job that overruns kills its worker (a fresh one
 * takes over) and fails closed; the main thread only measures the value (iteratively, with caps)
 * and serialises it, both in slices between which other work is served. Waiting jobs are kept per account and served fairly: a free worker takes the
 * next job of the account served longest ago (one that waits for its first turn goes first), one
 * account never holds every worker, and each account may have only so many jobs waiting, each for
 * a bounded time. So one tenant's flood of slow checks queues behind itself, not before others.
 *
 * Processes, not worker threads: a worker thread that reaches its resourceLimits can still abort
 * the whole process (V8 reports some out-of-memory failures as fatal for the process; see
 * nodejs/node#47224), and `--max-old-space-size` in NODE_OPTIONS overrides resourceLimits.
 */
export class SchemaGuard {
  private readonly options: SchemaGuardOptions;
  private readonly slots: Slot[];
  /** Waiting jobs, per account, each queue in order. */
  private readonly queues = new Map<string, Job[]>();
  private waitingCount = 0;
  private readonly running = new Map<string, number>();
  /** When (in turns) each account with work here was last given a worker; absent: not yet. */
  private readonly lastServed = new Map<string, number>();
  private turn = 0;
  /** Snapshots share schema objects between calls: each is serialised and hashed once. */
  private readonly texts = new WeakMap<object, SchemaText>();
  private nextId = 0;
  private closed = false;
  /** Workers start with the first job, then stay (a killed one is replaced at once). */
  private inUse = false;
  private replaced = 0;
  /** Checks whose value is being measured and serialised (on the main thread, in slices). */
  private preparing = 0;
  /** Jobs whose value is being sent to their worker, a piece per turn. */
  private sending = 0;
  /** Checks whose value came as bytes (RawJson) and went to a worker unparsed. */
  private rawChecks = 0;
  /** Starts the worker processes off the main thread, and relays their messages. */
  private readonly launcher = new SchemaLauncher();
  /**
   * Remembered passes: per account (in order of use, least recent first), its own list by
   * rememberKey (scope, schema, value), also in order of use. Per account so that one tenant's
   * passes can neither push out another's nor, by timing its own, count another's.
   */
  private readonly passes = new Map<string, Map<string, true>>();
  /** Checks answered from the remembered passes. */
  private rememberedChecks = 0;

  constructor(options: Partial<SchemaGuardOptions> = {}) {
    this.options = { ...SCHEMA_GUARD_DEFAULTS, ...options };
    this.slots = Array.from({ length: Math.max(1, this.options.workers) }, () => ({
      worker: undefined,
      ready: false,
      job: undefined,
      timer: undefined,
      known: new Set<string>(),
      failedToStart: false,
    }));
  }

  /**
   * Checks `value` (what: "the input", "the result") against a stored schema. A RawJson (a large
   * answer or bridge input, still as bytes) is never parsed on this thread: its text is scanned for
   * the caps in slices, then goes to the worker as it is, which parses it under the job's deadline.
   * `scope` (the function's id) narrows the remembered passes within the account: a key limited to
   * one namespace must not learn, from a check's speed, what was checked in another namespace.
   */
  async check(schema: Record<string, unknown>, value: unknown, accountId: string, what: string, scope = ''): Promise<SchemaVerdict> {
    if (value instanceof RawJson) return this.checkRaw(schema, value, accountId, what);
    if (weightUpTo(value, this.smallWeight()) <= this.smallWeight()) return this.checkSmall(schema, value, accountId, what, scope);
    // Measuring and serialising a value of up to MAX_CHECKED_VALUES values takes the main thread
    // tens of milliseconds: both run in slices of `sliceValues` values, one slice per turn of the
    // event loop shared round-robin across tenants (fair-share.ts), so requests waiting on it
    // (other tenants', /healthz) wait for one slice at most.
    let text: SchemaText | undefined;
    let data: string[];
    this.preparing++;
    try {
      const { share, sliceValues } = this.options;
      const excess = await share.run(
        accountId,
        shapeExcessSlices(value, { maxDepth: MAX_CHECKED_DEPTH, maxValues: MAX_CHECKED_VALUES }, sliceValues),
      );
      if (excess) return { ok: false, stopped: describeExcess(what, excess) };
      text = this.textOf(schema);
      if (!text) return { ok: false, stopped: 'the schema could not be read' };
      // JSON text costs the host less than a structured clone; sent a piece at a time (see start).
      data = await share.run(accountId, collected(jsonTextPieces(value ?? null, sliceValues)));
    } finally {
      this.preparing--;
    }
    return this.verdictOf(await this.submit(accountId, 'check', text, data), what);
  }

  /**
   * A value as its JSON bytes: decoded a piece per turn and scanned for the caps as it is (never
   * parsed here), then parsed and checked in the worker. The scan comes first so that a value past
   * the caps gets the cap's message without a worker parsing megabytes past its deadline (which
   * would kill a worker every tenant shares).
   */
  private async checkRaw(schema: Record<string, unknown>, raw: RawJson, accountId: string, what: string): Promise<SchemaVerdict> {
    if (raw.bytes.length === 0) return { ok: false, stopped: `${what} could not be read as JSON: it is empty` };
    const text = this.textOf(schema);
    if (!text) return { ok: false, stopped: 'the schema could not be read' };
    this.rawChecks++;
    const data: string[] = [];
    this.preparing++;
    try {
      const caps = { maxDepth: MAX_CHECKED_DEPTH, maxValues: MAX_CHECKED_VALUES };
      const over = await this.options.share.run(accountId, piecesShapeExcessSlices(decoded(raw.bytes, data), caps, RAW_SCAN_CHARS));
      if (over) return { ok: false, stopped: describeExcess(what, over) };
    } finally {
      this.preparing--;
    }
    return this.verdictOf(await this.submit(accountId, 'check', text, data), what);
  }

  /**
   * A small value: measured and serialised at once (bounded work), then a pass remembered for this
   * account, schema and exact text is taken as it is. The worker's verdict depends only on the
   * schema's text and the value's text, so the same pair passes again; failures and stops are
   * never remembered (a stop may be the server's load), and the key holds the account, so one
   * tenant's checks tell nothing of another's.
   */
  private async checkSmall(
    schema: Record<string, unknown>,
    value: unknown,
    accountId: string,
    what: string,
    scope: string,
  ): Promise<SchemaVerdict> {
    const pastCaps = shapeExcess(value, { maxDepth: MAX_CHECKED_DEPTH, maxValues: MAX_CHECKED_VALUES });
    if (pastCaps) return { ok: false, stopped: describeExcess(what, pastCaps) };
    const text = this.textOf(schema);
    if (!text) return { ok: false, stopped: 'the schema could not be read' };
    // What jsonTextPieces gives for a value within one slice: JSON.stringify's text, or null.
    const data = JSON.stringify(value) ?? 'null';
    const key =
      data.length <= REMEMBERED_VALUE_CHARS && this.options.rememberedPasses > 0 && this.options.rememberedAccounts > 0
        ? rememberKey(scope, text.key, data)
        : undefined;
    if (key !== undefined && this.recall(accountId, key)) {
      this.rememberedChecks++;
      return { ok: true };
    }
    const verdict = this.verdictOf(await this.submit(accountId, 'check', text, [data]), what);
    if (key !== undefined && verdict.ok) this.remember(accountId, key);
    return verdict;
  }

  /** Whether the account has this pass remembered; if so it (and the account) becomes the most recently used. */
  private recall(accountId: string, key: string): boolean {
    const list = this.passes.get(accountId);
    if (!list?.delete(key)) return false;
    list.set(key, true);
    this.passes.delete(accountId);
    this.passes.set(accountId, list);
    return true;
  }

  /**
   * Adds a pass to the account's own list: past its share, the account's own least recently used
   * pass goes (never another account's); a new account past the bound on accounts pushes out the
   * least recently used account's whole list.
   */
  private remember(accountId: string, key: string): void {
    let list = this.passes.get(accountId);
    if (list) this.passes.delete(accountId);
    else {
      list = new Map();
      if (this.passes.size >= this.options.rememberedAccounts) this.passes.delete(this.passes.keys().next().value!);
    }
    this.passes.set(accountId, list);
    list.set(key, true);
    if (list.size > this.options.rememberedPasses) list.delete(list.keys().next().value!);
  }

  /** The weight up to which a value is small: never more than a slice. */
  private smallWeight(): number {
    return Math.min(SMALL_VALUE_WEIGHT, Math.max(1, this.options.sliceValues));
  }

  private verdictOf(answer: Answer, what: string): SchemaVerdict {
    if ('unreadable' in answer) return { ok: false, stopped: `${what} could not be read as JSON` };
    if ('problems' in answer) return { ok: false, problems: answer.problems };
    if ('invalid' in answer) return { ok: false, problems: [`the schema could not be applied: ${answer.invalid}`] };
    if ('stopped' in answer) return { ok: false, stopped: answer.stopped, ...(answer.busy ? { busy: true } : {}) };
    return { ok: true };
  }

  /** Compiles a new schema (ajv's own rules and the meta-schema), leaving it cached in a worker. */
  async compile(schema: Record<string, unknown>, accountId: string): Promise<CompileVerdict> {
    const text = this.textOf(schema);
    if (!text) return { ok: false, stopped: 'the schema could not be read' };
    const answer = await this.submit(accountId, 'compile', text, undefined);
    if ('unreadable' in answer) return { ok: false, stopped: 'the schema checker answered out of turn' };
    if ('invalid' in answer) return { ok: false, invalid: answer.invalid };
    if ('stopped' in answer) return { ok: false, stopped: answer.stopped, ...(answer.busy ? { busy: true } : {}) };
    if ('problems' in answer) return { ok: false, invalid: answer.problems.join('; ') };
    return { ok: true };
  }

  /**
   * For tests and operators: workers ready, jobs in workers, jobs waiting, workers replaced after an
   * overrun, checks whose value is still being prepared on the main thread, jobs whose value is
   * still being sent to their worker, checks so far whose value was never parsed here (raw), and
   * checks so far answered from the remembered passes, and the passes and accounts held now.
   */
  stats(): {
    ready: number;
    busy: number;
    waiting: number;
    replaced: number;
    preparing: number;
    sending: number;
    raw: number;
    remembered: number;
    held: { passes: number; accounts: number };
  } {
    let passes = 0;
    for (const list of this.passes.values()) passes += list.size;
    return {
      remembered: this.rememberedChecks,
      held: { passes, accounts: this.passes.size },
      ready: this.slots.filter((s) => s.ready).length,
      busy: this.slots.filter((s) => s.job).length,
      waiting: this.waitingCount,
      replaced: this.replaced,
      preparing: this.preparing,
      sending: this.sending,
      raw: this.rawChecks,
    };
  }

  /** For tests: jobs of one account waiting for a worker. */
  waitingOf(accountId: string): number {
    return this.queues.get(accountId)?.length ?? 0;
  }

  async close(): Promise<void> {
    this.closed = true;
    this.failWaiting('the server is shutting down');
    const workers = this.slots
      .map((slot) => this.retire(slot, 'the server is shutting down'))
      .filter((w): w is RemoteWorker => w !== undefined);
    await Promise.all(workers.map((w) => w.stop()));
    await this.launcher.close();
  }

  private textOf(schema: Record<string, unknown>): SchemaText | undefined {
    let known = this.texts.get(schema);
    if (!known) {
      let text: string;
      try {
        text = canonicalJson(schema);
      } catch {
        // Deeper than the stack (only a schema stored before the depth cap could be).
        return undefined;
      }
      known = { key: createHash('sha256').update(text).digest('hex'), text };
      this.texts.set(schema, known);
    }
    return known;
  }

  private submit(accountId: string, op: Job['op'], schema: SchemaText, data: Array<string | Buffer> | undefined): Promise<Answer> {
    if (this.closed) return Promise.resolve({ stopped: 'the server is shutting down' });
    if (this.waitingCount >= this.options.maxWaiting || this.waitingOf(accountId) >= this.options.maxWaitingPerAccount) {
      return Promise.resolve({ stopped: `too many schema checks are waiting on this server; try again shortly`, busy: true });
    }
    this.inUse = true;
    for (const slot of this.slots) slot.failedToStart = false;
    return new Promise((resolve) => {
      this.enqueue(
        {
          id: this.nextId++,
          accountId,
          op,
          schema,
          ...(data !== undefined ? { data } : {}),
          withText: false,
          resolve,
          waitTimer: undefined,
        },
        false,
      );
      this.pump();
    });
  }

  private enqueue(job: Job, first: boolean): void {
    let queue = this.queues.get(job.accountId);
    if (!queue) this.queues.set(job.accountId, (queue = []));
    if (first) queue.unshift(job);
    else queue.push(job);
    this.waitingCount++;
    const { maxWaitMs } = this.options;
    job.waitTimer = setTimeout(() => {
      if (!this.dequeue(job)) return;
      job.resolve({ stopped: `no schema checker was free within ${maxWaitMs} ms (the server is busy); try again shortly`, busy: true });
    }, maxWaitMs);
    job.waitTimer.unref();
  }

  /** Takes a waiting job out of its queue; false when it no longer waits. */
  private dequeue(job: Job): boolean {
    clearTimeout(job.waitTimer);
    job.waitTimer = undefined;
    const queue = this.queues.get(job.accountId);
    const index = queue ? queue.indexOf(job) : -1;
    if (index < 0) return false;
    queue!.splice(index, 1);
    if (queue!.length === 0) this.queues.delete(job.accountId);
    this.waitingCount--;
    this.forgetIdle(job.accountId);
    return true;
  }

  /**
   * The next job to start: the first waiting job of the account given a worker longest ago (an
   * account waiting for its first turn before any), among accounts below their share of workers.
   */
  private nextJob(perAccount: number): Job | undefined {
    let chosen: string | undefined;
    let chosenTurn = Infinity;
    for (const accountId of this.queues.keys()) {
      if ((this.running.get(accountId) ?? 0) >= perAccount) continue;
      const turn = this.lastServed.get(accountId) ?? -1;
      if (turn < chosenTurn) {
        chosen = accountId;
        chosenTurn = turn;
      }
    }
    if (chosen === undefined) return undefined;
    const job = this.queues.get(chosen)![0]!;
    this.dequeue(job);
    this.lastServed.set(chosen, this.turn++);
    return job;
  }

  /** An account with nothing waiting and nothing running starts afresh next time. */
  private forgetIdle(accountId: string): void {
    if (!this.queues.has(accountId) && !this.running.has(accountId)) this.lastServed.delete(accountId);
  }

  private failWaiting(reason: string): void {
    for (const queue of [...this.queues.values()]) {
      for (const job of [...queue]) {
        this.dequeue(job);
        job.resolve({ stopped: reason });
      }
    }
  }

  /** Hands waiting jobs to idle workers; starts workers while there is work for them. */
  private pump(): void {
    if (this.closed) return;
    const perAccount = Math.max(1, this.slots.length - 1);
    for (const slot of this.slots) {
      if (slot.job) continue;
      if (!slot.worker) {
        if (this.inUse && !slot.failedToStart) this.spawn(slot);
        continue;
      }
      if (!slot.ready) continue;
      const job = this.nextJob(perAccount);
      if (!job) return;
      this.start(slot, job);
    }
    // No worker can start: fail what waits rather than leave it hanging.
    if (this.waitingCount > 0 && this.slots.every((s) => !s.worker && s.failedToStart))
      this.failWaiting('the schema checker could not start');
  }

  private start(slot: Slot, job: Job): void {
    const worker = slot.worker!;
    slot.job = job;
    this.launcher.hold(true);
    this.count(this.running, job.accountId, 1);
    const withText = job.withText || !slot.known.has(job.schema.key);
    if (withText) {
      if (slot.known.size >= 4096) slot.known.clear();
      slot.known.add(job.schema.key);
    }
    this.watch(slot, job, worker.pid === undefined ? undefined : cpuMs(worker.pid), Date.now());
    const message = {
      id: job.id,
      op: job.op,
      key: job.schema.key,
      ...(withText ? { text: job.schema.text } : {}),
    };
    const pieces = job.data;
    // No pieces at all is no JSON text: the worker refuses it as unreadable (never reads it as null).
    if (!pieces || pieces.length <= 1) worker.send({ ...message, ...(pieces ? { data: pieces[0]?.toString() ?? '' } : {}) });
    else void this.sendInPieces(slot, job, worker, pieces, message);
  }

  /**
   * A large value goes to the worker one piece per turn of the event loop (each send serialises and
   * copies its message on this thread: megabytes at once would hold it), then the job itself. Stops
   * if the job ends meanwhile (its worker killed at the deadline, or gone).
   */
  private async sendInPieces(
    slot: Slot,
    job: Job,
    worker: RemoteWorker,
    pieces: Array<string | Buffer>,
    message: Record<string, unknown>,
  ): Promise<void> {
    this.sending++;
    try {
      for (const piece of pieces) {
        // Each piece in its own turn of the job's tenant (the send serialises it on this thread).
        await this.options.share.turn(job.accountId);
        if (slot.job !== job || slot.worker !== worker) return;
        worker.send({ id: job.id, piece: piece.toString() });
      }
      if (slot.job === job && slot.worker === worker) worker.send(message);
    } finally {
      this.sending--;
    }
  }

  /** Arms the deadline of the job in `slot`: re-armed while the worker has used less CPU than allowed. */
  private watch(slot: Slot, job: Job, cpuStart: number | undefined, wallStart: number): void {
    const { deadlineMs, wallFactor } = this.options;
    const check = (): void => {
      if (slot.job !== job) return;
      const pid = slot.worker?.pid;
      const now = pid === undefined || cpuStart === undefined ? undefined : cpuMs(pid);
      const used = now === undefined ? deadlineMs : now - cpuStart!;
      if (used >= deadlineMs) return this.kill(slot, `it needed more than ${deadlineMs} ms of CPU time`);
      const wallLeft = wallStart + deadlineMs * wallFactor - Date.now();
      if (wallLeft <= 0) return this.kill(slot, `it took longer than ${deadlineMs * wallFactor} ms`);
      slot.timer = setTimeout(check, Math.max(20, Math.min(deadlineMs - used, wallLeft)));
    };
    slot.timer = setTimeout(check, deadlineMs);
  }

  private spawn(slot: Slot): void {
    const execArgv = [
      `--max-old-space-size=${this.options.heapMb}`,
      `--max-semi-space-size=${Math.max(1, Math.ceil(this.options.heapMb / 16))}`,
    ];
    // Started from the launcher thread: a fork of the server holds the thread that forks. A worker
    // starting (for work that is waiting) keeps the server's process alive until it is ready.
    let starting = true;
    const started = () => {
      if (starting) this.launcher.hold(false);
      starting = false;
    };
    this.launcher.hold(true);
    const worker = this.launcher.spawn(
      WORKER_FILE,
      execArgv,
      {
        message: (message) => {
          if ('ready' in (message as WorkerMessage)) started();
          this.received(slot, worker, message as WorkerMessage);
        },
        // The tail of its stderr tells a heap overrun ("JavaScript heap out of memory") from a crash.
        closed: (stderr) => {
          started();
          if (slot.worker !== worker) return;
          this.kill(
            slot,
            /heap out of memory|Reached heap limit/.test(stderr)
              ? `it needed more than ${this.options.heapMb} MB of memory`
              : 'the schema checker stopped',
          );
        },
      },
      { idle: this.options.idle },
    );
    slot.worker = worker;
    slot.ready = false;
    slot.known = new Set();
  }

  private received(slot: Slot, worker: RemoteWorker, message: WorkerMessage): void {
    if (slot.worker !== worker) return;
    if ('ready' in message) {
      // Lowered once started: start-up is short and counts against the jobs waiting for it, so
      // it runs at the server's priority; the tenants' work after it runs below. (Under SCHED_IDLE,
      // `idle`, it started idle already: where that was refused, the nice is what applies.)
      this.lower(worker);
      slot.ready = true;
      this.pump();
      return;
    }
    const job = slot.job;
    if (!job || message.id !== job.id) return;
    this.release(slot, job);
    if ('unknown' in message) {
      // The worker dropped this schema from its cache: again, with the text.
      slot.known.delete(job.schema.key);
      job.withText = true;
      this.enqueue(job, true);
    } else {
      if ('invalid' in message) slot.known.delete(job.schema.key);
      job.resolve(message);
    }
    this.pump();
  }

  private lower(worker: RemoteWorker): void {
    if (worker.pid === undefined || this.options.nice === 0) return;
    try {
      // Every thread: a schema's GC work runs in V8's threads, started before this.
      setProcessNice(worker.pid, getPriority() + this.options.nice);
    } catch {
      // Not allowed here (an unusual container): the worker runs at the server's priority.
    }
  }

  private release(slot: Slot, job: Job): void {
    this.launcher.hold(false);
    clearTimeout(slot.timer);
    slot.timer = undefined;
    slot.job = undefined;
    this.count(this.running, job.accountId, -1);
    this.forgetIdle(job.accountId);
  }

  /** An overrun or a crash: the job fails closed, the worker goes, a fresh one is started. */
  private kill(slot: Slot, reason: string): void {
    const wasReady = slot.ready;
    const worker = this.retire(slot, reason);
    if (worker) void worker.stop();
    this.replaced++;
    if (!wasReady) slot.failedToStart = true;
    this.pump();
  }

  private retire(slot: Slot, reason: string): RemoteWorker | undefined {
    const { worker, job } = slot;
    if (job) {
      this.release(slot, job);
      job.resolve({ stopped: reason });
    }
    clearTimeout(slot.timer);
    slot.worker = undefined;
    slot.ready = false;
    slot.known = new Set();
    return worker;
  }

  private count(map: Map<string, number>, key: string, delta: number): void {
    const next = (map.get(key) ?? 0) + delta;
    if (next <= 0) map.delete(key);
    else map.set(key, next);
  }
}

/** The remembered pass's key in its account's list: the scope (length-prefixed, so no two splits read alike), the schema's hash, the value's text. */
function rememberKey(scope: string, schemaKey: string, data: string): string {
  return `${scope.length}:${scope}${schemaKey}${data}`;
}

/** Bytes of a raw value's text decoded (while scanned) and sent to a worker per turn. */
const RAW_PIECE_BYTES = 256 * 1024;
/** Characters of a raw value's text scanned for the caps per turn (as for a request body). */
const RAW_SCAN_CHARS = 64 * 1024;

/** `bytes` cut into pieces of about `size`, never inside a UTF-8 character (views, not copies); none for no bytes. */
export function utf8Pieces(bytes: Buffer, size: number): Buffer[] {
  const pieces: Buffer[] = [];
  let start = 0;
  while (start < bytes.length) {
    let end = Math.min(bytes.length, start + size);
    // Back off continuation bytes (10xxxxxx): a piece ends before the character they belong to.
    while (end < bytes.length && end > start && (bytes[end]! & 0xc0) === 0x80) end--;
    if (end === start) end = Math.min(bytes.length, start + size);
    pieces.push(bytes.subarray(start, end));
    start = end;
  }
  return pieces;
}

/** A raw value's text, a piece of RAW_PIECE_BYTES at a time, each decoded when taken and kept in `into` (to be sent). */
function* decoded(bytes: Buffer, into: string[]): Generator<string, void, void> {
  for (const piece of utf8Pieces(bytes, RAW_PIECE_BYTES)) {
    const text = piece.toString('utf8');
    into.push(text);
    yield text;
  }
}

/** The pieces of JSON text as slices (one piece made per slice); `null` when there are none. */
function* collected(pieces: Generator<string, void, void>): Generator<void, string[], void> {
  const all: string[] = [];
  for (let step = pieces.next(); !step.done;) {
    all.push(step.value);
    step = pieces.next();
    if (!step.done) yield;
  }
  return all.length > 0 ? all : ['null'];
}

/** CPU time (user + system) a process has used, from /proc (Linux's USER_HZ is 100); undefined if unknown. */
function cpuMs(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(fields[11]) + Number(fields[12]);
    return Number.isFinite(ticks) ? ticks * 10 : undefined;
  } catch {
    return undefined;
  }
}
