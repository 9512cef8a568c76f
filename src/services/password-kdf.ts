import { fork, type ChildProcess } from 'node:child_process';
import { availableParallelism } from 'node:os';
import path from 'node:path';
import { DomainError } from '../core/errors.js';
import { packageRoot } from '../sandbox/host.js';

export interface ScryptJob {
  secret: string;
  salt: Buffer;
  keylen: number;
  N: number;
  r: number;
  p: number;
  maxmem: number;
}

export class KdfBusyError extends DomainError {
  constructor(what = 'sign-in attempts') {
    super('rate_limited', `too many ${what} at once; retry in a few seconds`, { retry_after: 1 });
  }
}

/**
 * Hashes at a time by default: fewer than the cores, so the event loop always has one (1 on a
 * 2-core machine), at most 4. MCPWORKS_KDF_CONCURRENCY overrides it.
 */
export function defaultKdfConcurrency(): number {
  return Math.max(1, Math.min(4, availableParallelism() - 1));
}

const WORKER_FILE = path.join(packageRoot(), 'src', 'services', 'kdf-worker.mjs');

/** Queue order: sign-ins from clients without recent failures, then the others, then sign-ups. */
export type KdfPriority = 'sign-in' | 'suspect' | 'sign-up';
const RANK: Record<KdfPriority, number> = { 'sign-in': 0, suspect: 1, 'sign-up': 2 };

interface Waiting {
  job: ScryptJob;
  rank: number;
  resolve(hash: Buffer): void;
  reject(error: Error): void;
}

interface Slot {
  worker: ChildProcess | undefined;
  ready: boolean;
  job: (Waiting & { id: number }) | undefined;
}

type WorkerMessage = { ready: true } | { id: number; hash: string } | { id: number; error: string };

/**
 * The password KDF, in child processes at a lower CPU priority (see kdf-worker.mjs): never on the
 * server's thread or its libuv threadpool, `concurrency` hashes at a time, a bounded queue, then
 * "busy". A sign-in from a client that has failed lately waits behind the others, and sign-ups wait
 * behind every sign-in and have a smaller queue of their own: a flood of bad attempts or of sign-ups
 * delays a real user's login by at most the hashes already running. Workers start with the first hash and then stay;
 * an idle worker does not keep the process alive.
 */
export class KdfPool {
  private readonly slots: Slot[];
  private readonly waiting: Waiting[] = [];
  private nextId = 0;

  constructor(
    concurrency: number,
    private readonly queueLimit: number,
    private readonly lowQueueLimit: number,
  ) {
    this.slots = Array.from({ length: Math.max(1, concurrency) }, () => ({ worker: undefined, ready: false, job: undefined }));
  }

  get concurrency(): number {
    return this.slots.length;
  }

  /** Jobs in workers and waiting, and the workers' pids (for tests and operators). */
  stats(): { running: number; waiting: number; workers: number[] } {
    return {
      running: this.slots.filter((s) => s.job).length,
      waiting: this.waiting.length,
      workers: this.slots.flatMap((s) => (s.worker?.pid ? [s.worker.pid] : [])),
    };
  }

  scrypt(job: ScryptJob, options: { priority?: KdfPriority; what?: string } = {}): Promise<Buffer> {
    const rank = RANK[options.priority ?? 'sign-in'];
    const idle = this.slots.some((s) => !s.job && (!s.worker || s.ready));
    if (!idle || this.waiting.length > 0) {
      const signUp = rank === RANK['sign-up'];
      const queued = signUp ? this.waiting.filter((w) => w.rank === rank).length : this.waiting.length;
      if (queued >= (signUp ? this.lowQueueLimit : this.queueLimit)) return Promise.reject(new KdfBusyError(options.what));
    }
    return new Promise((resolve, reject) => {
      const entry: Waiting = { job, rank, resolve, reject };
      const after = this.waiting.findIndex((w) => w.rank > rank);
      if (after < 0) this.waiting.push(entry);
      else this.waiting.splice(after, 0, entry);
      this.pump();
    });
  }

  async close(): Promise<void> {
    for (const entry of this.waiting.splice(0)) entry.reject(new Error('the server is shutting down'));
    await Promise.all(
      this.slots.map(async (slot) => {
        const worker = slot.worker;
        slot.job?.reject(new Error('the server is shutting down'));
        slot.job = undefined;
        slot.worker = undefined;
        slot.ready = false;
        if (worker && worker.exitCode === null && worker.signalCode === null) {
          await new Promise<void>((resolve) => {
            worker.once('exit', () => resolve());
            // Idle workers are unref'd: without this, a process with nothing else to do would end
            // before the exit is seen, with close() never settling.
            worker.ref();
            worker.kill('SIGKILL');
          });
        }
      }),
    );
  }

  private pump(): void {
    for (const slot of this.slots) {
      if (this.waiting.length === 0) return;
      if (slot.job) continue;
      if (!slot.worker) {
        this.spawn(slot);
        continue;
      }
      if (!slot.ready) continue;
      const entry = this.waiting.shift()!;
      const id = this.nextId++;
      slot.job = { ...entry, id };
      holdOpen(slot.worker, true);
      const { secret, salt, keylen, N, r, p, maxmem } = entry.job;
      slot.worker.send({ id, secret, salt: salt.toString('base64'), keylen, N, r, p, maxmem });
    }
  }

  private spawn(slot: Slot): void {
    const worker = fork(WORKER_FILE, [], {
      // None of the host's loaders (tsx in development), flags or environment (database URL, secrets).
      execArgv: [],
      env: {},
      stdio: ['ignore', 'ignore', 'ignore', 'ipc'],
    });
    slot.worker = worker;
    slot.ready = false;
    holdOpen(worker, true);
    worker.on('message', (message: WorkerMessage) => {
      if (slot.worker !== worker) return;
      if ('ready' in message) {
        slot.ready = true;
        holdOpen(worker, false);
        this.pump();
        return;
      }
      const job = slot.job;
      if (!job || job.id !== message.id) return;
      slot.job = undefined;
      holdOpen(worker, false);
      if ('hash' in message) job.resolve(Buffer.from(message.hash, 'base64'));
      else job.reject(new Error(`the password hash failed: ${message.error}`));
      this.pump();
    });
    const gone = () => {
      if (slot.worker !== worker) return;
      const job = slot.job;
      slot.worker = undefined;
      slot.ready = false;
      slot.job = undefined;
      job?.reject(new Error('the password hasher stopped'));
      // Without a worker that can start, what waits would wait forever: fail it instead.
      if (!job) for (const entry of this.waiting.splice(0)) entry.reject(new Error('the password hasher could not start'));
      else this.pump();
    };
    worker.on('error', gone);
    worker.on('exit', gone);
    worker.unref();
  }
}

/** A worker with a job (or starting for one) keeps the process alive; an idle one does not. */
function holdOpen(worker: ChildProcess, busy: boolean): void {
  const channel = worker.channel as { ref?: () => void; unref?: () => void } | null | undefined;
  if (busy) channel?.ref?.();
  else channel?.unref?.();
}
