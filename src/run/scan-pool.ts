import { Worker } from 'node:worker_threads';
import type { Finding } from '../core/secret-scanner.js';
import { SecretScannerCache } from './scanner-cache.js';
import type { ScanJob, ScanReply } from './scan-worker.js';

export interface ScanOutcome {
  /** The answer with every secret redacted (the same object when nothing was found). */
  value: unknown;
  findings: Finding[];
  /** UTF-8 bytes of the redacted answer's JSON. */
  bytes: number;
}

export interface ScanPoolOptions {
  workers: number;
  /** A job not answered by then stops its worker; the answer is withheld (fail closed). */
  deadlineMs: number;
  /** Answers up to this many JSON characters, with env values up to inlineEnvChars, are scanned in place. */
  inlineChars: number;
  inlineEnvChars: number;
}

const DEFAULTS: ScanPoolOptions = { workers: 2, deadlineMs: 30_000, inlineChars: 32 * 1024, inlineEnvChars: 1024 };

/**
 * In dist/ the compiled scan-worker.js. Under tsx (tests, benches) the .ts source, through a
 * bootstrap that registers tsx in the worker: Node 20 does not pass --import hooks to workers.
 */
function workerUrl(): URL {
  if (!import.meta.url.endsWith('.ts')) return new URL('./scan-worker.js', import.meta.url);
  const source = new URL('./scan-worker.ts', import.meta.url).href;
  const boot = `import { register } from ${JSON.stringify(import.meta.resolve('tsx/esm/api'))}; register(); await import(${JSON.stringify(source)});`;
  return new URL(`data:text/javascript,${encodeURIComponent(boot)}`);
}

interface Pending {
  job: ScanJob;
  /** The worker this env's scanner is most likely cached in. */
  preferred: number;
  resolve: (reply: ScanReply) => void;
  reject: (error: Error) => void;
}

interface Slot {
  worker: Worker;
  busy: Pending | null;
  timer?: NodeJS.Timeout;
}

/**
 * Where run answers are scanned for secrets. A large answer (or one whose env values make a large
 * scanner) is scanned in a worker thread of lower priority, so the main thread is held only for
 * one JSON.stringify of it (which the byte count needs anyway), and for one JSON.parse when
 * something was redacted. Small answers with few env values are scanned in place: a round trip
 * would cost more than the scan. Everything is scanned before the caller gets it; a worker that
 * fails, dies or overruns its deadline fails the scan (the caller withholds the answer).
 */
export class ScanPool {
  private readonly options: ScanPoolOptions;
  private readonly slots: Array<Slot | null>;
  private readonly queue: Pending[] = [];
  private readonly inline = new SecretScannerCache(16, 256 * 1024);
  private nextId = 1;
  private closed = false;
  private scanning = 0;

  /** Scans under way in workers now (the main thread is free meanwhile). */
  get running(): number {
    return this.scanning;
  }

  constructor(options: Partial<ScanPoolOptions> = {}) {
    this.options = { ...DEFAULTS, ...options };
    this.slots = new Array(this.options.workers).fill(null);
  }

  async scan(env: readonly string[], value: unknown): Promise<ScanOutcome> {
    const text = JSON.stringify(value);
    const envChars = env.reduce((sum, item) => sum + item.length, 0);
    if (text.length <= this.options.inlineChars && envChars <= this.options.inlineEnvChars) {
      const findings: Finding[] = [];
      const scanned = this.inline.for(env).scanValue(value, findings);
      return { value: scanned, findings, bytes: Buffer.byteLength(findings.length === 0 ? text : JSON.stringify(scanned)) };
    }
    this.scanning++;
    let reply: ScanReply;
    try {
      reply = await this.submit(env, text);
    } finally {
      this.scanning--;
    }
    if ('failed' in reply) throw new Error('the scan failed');
    if (reply.text === undefined) return { value, findings: [], bytes: Buffer.byteLength(text) };
    return { value: JSON.parse(reply.text), findings: reply.types.map((type) => ({ type })), bytes: Buffer.byteLength(reply.text) };
  }

  /** Worker threads alive now (for tests and operators). */
  get workers(): number {
    return this.slots.filter((slot) => slot !== null).length;
  }

  /** Stops the idle workers (the last server of this process closing); the pool stays usable and starts workers again on demand. */
  async stopIdleWorkers(): Promise<void> {
    await Promise.all(this.slots.map((slot, index) => (slot && !slot.busy ? this.drop(index, new Error('the scan pool is stopping')) : undefined)));
  }

  /** Stops the workers; scans still queued or running fail. */
  async close(): Promise<void> {
    this.closed = true;
    for (const pending of this.queue.splice(0)) pending.reject(new Error('the scan pool is closed'));
    await Promise.all(this.slots.map((slot, index) => (slot ? this.drop(index, new Error('the scan pool is closed')) : undefined)));
  }

  private submit(env: readonly string[], text: string): Promise<ScanReply> {
    if (this.closed) return Promise.reject(new Error('the scan pool is closed'));
    // The same env values go to the same worker, whose scanner cache then holds them.
    let hash = 0;
    for (const value of env) for (let i = 0; i < Math.min(value.length, 64); i++) hash = (hash * 31 + value.charCodeAt(i)) | 0;
    return new Promise((resolve, reject) => {
      this.queue.push({ job: { id: this.nextId++, env, text }, preferred: Math.abs(hash) % this.slots.length, resolve, reject });
      this.dispatch();
    });
  }

  private dispatch(): void {
    while (this.queue.length > 0) {
      const idle = this.slots.map((slot, index) => (slot?.busy ? -1 : index)).filter((index) => index !== -1);
      if (idle.length === 0) return;
      const pending = this.queue.shift()!;
      const index = idle.includes(pending.preferred) ? pending.preferred : idle[0]!;
      const slot = this.slots[index] ?? this.start(index);
      slot.busy = pending;
      slot.timer = setTimeout(() => void this.drop(index, new Error('the scan ran past its deadline')), this.options.deadlineMs);
      slot.worker.postMessage(pending.job);
    }
  }

  private start(index: number): Slot {
    const worker = new Worker(workerUrl(), { resourceLimits: { maxOldGenerationSizeMb: 256 } });
    const slot: Slot = { worker, busy: null };
    worker.on('message', (reply: ScanReply) => {
      const pending = slot.busy;
      if (!pending || pending.job.id !== reply.id) return;
      clearTimeout(slot.timer);
      slot.busy = null;
      pending.resolve(reply);
      this.dispatch();
    });
    // A worker that dies (out of heap, or a bug) fails its job; the next job starts a new one.
    worker.on('error', () => void this.drop(index, new Error('the scan worker failed')));
    worker.on('exit', () => void this.drop(index, new Error('the scan worker exited')));
    // Idle workers do not keep the process alive.
    worker.unref();
    this.slots[index] = slot;
    return slot;
  }

  private async drop(index: number, error: Error): Promise<void> {
    const slot = this.slots[index];
    if (!slot) return;
    this.slots[index] = null;
    clearTimeout(slot.timer);
    slot.busy?.reject(error);
    slot.busy = null;
    await slot.worker.terminate().catch(() => {});
    if (!this.closed) this.dispatch();
  }
}

/** The process's scan workers, shared by every RunService (their caches hold hashed keys only). */
export const sharedScanPool = new ScanPool();
