import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { packageRoot } from '../sandbox/host.js';

const LAUNCHER_FILE = path.join(packageRoot(), 'src', 'run', 'host-bin', 'schema-launcher.mjs');

export interface RemoteWorkerEvents {
  message(message: unknown): void;
  /** The process ended (or could not be started); `stderr`: the tail of what it wrote there. */
  closed(stderr: string): void;
}

/** A schema worker process started by the launcher thread; its messages relayed through it. */
export class RemoteWorker {
  /** Known shortly after the start (the launcher reports it). */
  pid: number | undefined;
  closed = false;
  private readonly waiters: Array<() => void> = [];

  constructor(
    private readonly launcher: SchemaLauncher,
    readonly id: number,
    readonly events: RemoteWorkerEvents,
  ) {}

  send(message: unknown): void {
    if (!this.closed) this.launcher.post({ op: 'send', id: this.id, message });
  }

  /** Kills it at once (it may be stuck in a loop). */
  kill(): void {
    if (!this.closed) this.launcher.post({ op: 'kill', id: this.id });
  }

  /** Kills it and waits until it is gone; the server's event loop is held meanwhile. */
  stop(): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise((resolve) => {
      this.launcher.hold(true);
      this.waiters.push(() => {
        this.launcher.hold(false);
        resolve();
      });
      this.kill();
    });
  }

  /** From the launcher. */
  ended(stderr: string): void {
    if (this.closed) return;
    this.closed = true;
    for (const waiter of this.waiters.splice(0)) waiter();
    this.events.closed(stderr);
  }
}

/**
 * Starts schema worker processes from a worker thread (host-bin/schema-launcher.mjs) rather
 * than from the main thread, whose event loop a fork of the server's large address space would
 * hold until the child has exec'd. The thread only relays messages; it keeps the process alive
 * only while something holds it (a job in a worker, a worker being stopped).
 */
export class SchemaLauncher {
  private thread: Worker | undefined;
  private readonly workers = new Map<number, RemoteWorker>();
  private nextId = 1;
  private holds = 0;

  /** `idle`: the process runs under SCHED_IDLE where the host allows it (host-bin/schema-launcher.mjs). */
  spawn(file: string, execArgv: string[], events: RemoteWorkerEvents, options: { idle?: boolean } = {}): RemoteWorker {
    const worker = new RemoteWorker(this, this.nextId++, events);
    this.workers.set(worker.id, worker);
    this.post({ op: 'spawn', id: worker.id, file, execArgv, idle: options.idle === true });
    return worker;
  }

  /** Counts what keeps the server's process alive (jobs running, workers being stopped). */
  hold(on: boolean): void {
    this.holds = Math.max(0, this.holds + (on ? 1 : -1));
    if (this.holds > 0) this.thread?.ref();
    else this.thread?.unref();
  }

  /** Ends the thread (its workers must have been stopped first). */
  async close(): Promise<void> {
    const thread = this.thread;
    this.thread = undefined;
    this.lost();
    await thread?.terminate();
  }

  post(request: { op: string; id: number; [key: string]: unknown }): void {
    this.ensure().postMessage(request);
  }

  private ensure(): Worker {
    if (this.thread) return this.thread;
    // No loader hooks or flags of the server's (tsx in development): the file is plain JavaScript.
    const thread = new Worker(LAUNCHER_FILE, { execArgv: [], env: {}, resourceLimits: { maxOldGenerationSizeMb: 64 } });
    this.thread = thread;
    thread.on('message', (event: { op: string; id: number; pid?: number; message?: unknown; stderr?: string }) => {
      const worker = this.workers.get(event.id);
      if (!worker) return;
      if (event.op === 'spawned') worker.pid = event.pid;
      else if (event.op === 'message') worker.events.message(event.message);
      else if (event.op === 'closed' || event.op === 'failed') {
        this.workers.delete(event.id);
        worker.ended(event.stderr ?? '');
      }
    });
    // The thread failed: its workers see their channel close and exit; they count as ended here.
    const gone = () => {
      if (this.thread !== thread) return;
      this.thread = undefined;
      this.lost();
    };
    thread.on('error', gone);
    thread.on('exit', gone);
    if (this.holds === 0) thread.unref();
    return thread;
  }

  private lost(): void {
    const workers = [...this.workers.values()];
    this.workers.clear();
    for (const worker of workers) worker.ended('');
  }
}
