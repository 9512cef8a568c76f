/**
 * The host's side of one replica's worker process: starts it (a fork with a minimal environment, no
 * loaders or flags of the server, a heap limit from the tier), hands it jobs, answers its calls and
 * reports how it ended. Every message from the worker is checked against the protocol; one that does
 * not fit kills it.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { WorkerMessage, type CallOp, type JobMessage } from './protocol.js';

export interface JobError {
  type: string;
  message: string;
}

/** The host's answers to a job's calls (the supervisor binds them to the job's run). */
export type CallHandler = (request: CallOp) => Promise<unknown>;

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** The host ended it (stop, drain, shutdown): not a crash. */
  expected: boolean;
  outOfMemory: boolean;
  /** How long it was up, in ms. */
  upMs: number;
}

/** Ends a job whose replica process went away mid-run. */
export class ReplicaCrashedError extends Error {
  readonly type = 'ReplicaCrashed';
  constructor(message: string) {
    super(message);
  }
}

let devEntry: string | undefined;

/**
 * In dist/ the compiled entry.js. Under tsx (tests, benches) the .ts source compiled once per host
 * process by esbuild into .build/ (dependencies stay imports of node_modules, as in dist/): a worker
 * with tsx's loader would take seconds to start on a loaded machine.
 */
function entry(): string {
  if (!import.meta.url.endsWith('.ts')) return fileURLToPath(new URL('./entry.js', import.meta.url));
  if (devEntry) return devEntry;
  const root = fileURLToPath(new URL('../../../', import.meta.url));
  const esbuild = createRequire(import.meta.url)('esbuild') as typeof import('esbuild');
  const dir = join(root, '.build');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `replica-worker-${process.pid}.mjs`);
  removeDeadHostsEntries(dir);
  esbuild.buildSync({
    entryPoints: [fileURLToPath(new URL('./entry.ts', import.meta.url))],
    bundle: true,
    packages: 'external',
    platform: 'node',
    format: 'esm',
    target: 'node20',
    outfile: file,
    logLevel: 'error',
  });
  process.once('exit', () => rmSync(file, { force: true }));
  devEntry = file;
  return file;
}

/** Entries left by host processes that were killed (SIGKILL skips the 'exit' handler): their pid is gone. */
function removeDeadHostsEntries(dir: string): void {
  for (const name of readdirSync(dir)) {
    const pid = /^replica-worker-(\d+)\.mjs$/.exec(name)?.[1];
    if (!pid || Number(pid) === process.pid) continue;
    try {
      process.kill(Number(pid), 0);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ESRCH') rmSync(join(dir, name), { force: true });
    }
  }
}

const STDERR_TAIL = 4096;
const START_TIMEOUT_MS = 30_000;

export class ReplicaProcess {
  private child: ChildProcess | undefined;
  private stderrTail = '';
  /** The worker's V8 heap limit as it reported it when ready. */
  heapLimitBytes = 0;
  private startedAt = 0;
  private ending = false;
  private job:
    | {
        id: string;
        onCall: CallHandler;
        resolve: (outcome: { ok: true; result: unknown } | { ok: false; error: JobError }) => void;
        reject: (error: Error) => void;
      }
    | undefined;
  readonly exited: Promise<ExitInfo>;
  private settleExit!: (info: ExitInfo) => void;

  constructor(
    readonly agentName: string,
    readonly replica: string,
    private readonly heapMb: number,
  ) {
    this.exited = new Promise((resolve) => (this.settleExit = resolve));
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  get busy(): boolean {
    return this.job !== undefined;
  }

  /** Forks the worker and waits for it to say it is ready (rejects if it ends or stays silent first). */
  start(): Promise<void> {
    const file = entry();
    this.startedAt = Date.now();
    const child = fork(file, [], {
      // Nothing of the server's environment (database URL, secret key), flags or loaders: only the heap limit.
      execArgv: [`--max-old-space-size=${this.heapMb}`],
      env: {},
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
      serialization: 'json',
    });
    this.child = child;
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (chunk: string) => {
      this.stderrTail = (this.stderrTail + chunk).slice(-STDERR_TAIL);
    });
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.kill();
        reject(new Error(`replica ${this.replica}: its worker did not start within ${START_TIMEOUT_MS} ms`));
      }, START_TIMEOUT_MS);
      timer.unref();
      child.on('message', (raw: unknown) => {
        const parsed = WorkerMessage.safeParse(raw);
        if (!parsed.success) {
          this.kill();
          return;
        }
        const message = parsed.data;
        if (message.t === 'ready') {
          clearTimeout(timer);
          this.heapLimitBytes = message.heapLimit;
          resolve();
        } else this.onMessage(message);
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        const info: ExitInfo = {
          code,
          signal,
          expected: this.ending,
          outOfMemory: /heap out of memory|Reached heap limit/i.test(this.stderrTail),
          upMs: Date.now() - this.startedAt,
        };
        reject(new Error(`replica ${this.replica}: its worker ended before it was ready (${signal ?? `code ${code}`})`));
        const job = this.job;
        this.job = undefined;
        job?.reject(
          new ReplicaCrashedError(
            `replica '${this.replica}' ended during the run (${signal ? `signal ${signal}` : `exit code ${code}`}${info.outOfMemory ? ', out of memory' : ''})`,
          ),
        );
        this.settleExit(info);
      });
      child.once('error', () => this.kill());
      child.send({ t: 'init', agent: this.agentName, replica: this.replica });
    });
  }

  private onMessage(message: WorkerMessage): void {
    const job = this.job;
    if (message.t === 'ready') return;
    if (!job || message.job !== job.id) {
      // A call or an answer for a job it does not have: out of step with the host.
      this.kill();
      return;
    }
    if (message.t === 'done') {
      this.job = undefined;
      job.resolve(message.ok ? { ok: true, result: message.result } : { ok: false, error: message.error });
      return;
    }
    const call = message.call;
    job.onCall(message.request).then(
      (result) => this.send({ t: 'reply', call, ok: true, result }),
      (error: unknown) =>
        this.send({
          t: 'reply',
          call,
          ok: false,
          error: {
            type: typeof (error as { type?: unknown })?.type === 'string' ? (error as { type: string }).type : 'HostError',
            message: error instanceof Error ? error.message : String(error),
          },
        }),
    );
  }

  private send(message: unknown): void {
    if (this.child?.connected) this.child.send(message as never, (error) => error && undefined);
  }

  /**
   * Runs one job on the worker; its calls go to `onCall`. Resolves with how the worker ended it;
   * rejects with ReplicaCrashedError when the process goes away first.
   */
  run(job: Omit<JobMessage, 't'>, onCall: CallHandler): Promise<{ ok: true; result: unknown } | { ok: false; error: JobError }> {
    if (this.job) return Promise.reject(new Error(`replica ${this.replica} is already running a job`));
    if (!this.child?.connected || this.ending) return Promise.reject(new ReplicaCrashedError(`replica '${this.replica}' is not running`));
    return new Promise((resolve, reject) => {
      this.job = { id: job.job, onCall, resolve, reject };
      this.send({ t: 'job', ...job });
    });
  }

  /** Tells the worker to stop the job in flight (an AI job's model call is aborted; the host stops its own calls). */
  cancel(jobId: string): void {
    if (this.job?.id === jobId) this.send({ t: 'cancel', job: jobId });
  }

  /** Kills a worker that did not end its job after it was stopped: a crash (it is restarted), not an ending. */
  terminate(): void {
    this.kill('SIGKILL');
  }

  /** Ends the process (expected: not a crash). */
  stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<ExitInfo> {
    this.ending = true;
    this.kill(signal);
    return this.exited;
  }

  private kill(signal: NodeJS.Signals = 'SIGKILL'): void {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    child.kill(signal);
    if (signal !== 'SIGKILL') {
      // A worker that does not end at once is ended for sure.
      const timer = setTimeout(() => child.kill('SIGKILL'), 2000);
      timer.unref();
      child.once('exit', () => clearTimeout(timer));
    }
  }
}
