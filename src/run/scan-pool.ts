import { Worker } from 'node:worker_threads';
import { RawJson, type RenderedToolResult } from '../core/raw-json.js';
import type { Finding } from '../core/secret-scanner.js';
import { SecretScannerCache } from './scanner-cache.js';
import type { DecodedAnswer, DecodedBridge, RunFields, ScanJob, ScanReply } from './scan-worker.js';

export interface ScanOutcome {
  /**
   * The answer with every secret redacted (the same object when nothing was found). An answer
   * scanned in a worker comes back rendered: its fields without `result`, and `rendered`, the MCP
   * tool result as JSON bytes (see RenderedToolResult).
   */
  value: unknown;
  findings: Finding[];
  /** UTF-8 bytes of the redacted answer's JSON. */
  bytes: number;
}

export interface ScanOptions {
  /** The function has an object output_schema: an object result is also sent as structuredContent. */
  objectOutputSchema?: boolean;
  /** The answer of an execute: rendered with the null-result hint. */
  codeMode?: boolean;
}

/** A run's answer as RunResult has it (result may be a RawJson: a large answer still as bytes). */
type RunShape = RunFields & { result?: unknown };

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

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

/**
 * The ArrayBuffer of exactly these bytes, to be transferred (moved, not copied) to a worker. A
 * Buffer of its own ArrayBuffer (Buffer.concat of a large line makes one) is moved as it is; one
 * in Node's shared pool is copied first. The Buffer is unusable here afterwards.
 */
function transferable(bytes: Buffer): ArrayBuffer {
  // (A piece that is a whole socket chunk has its own ArrayBuffer: moved. Part of a chunk: copied,
  // as the rest of that chunk may still be read here.)
  if (ownsItsBuffer(bytes)) return bytes.buffer as ArrayBuffer;
  const copy = new Uint8Array(bytes.length);
  copy.set(bytes);
  return copy.buffer;
}

/** Whether these bytes are the whole of an ArrayBuffer of their own (so it can be moved, not copied). */
function ownsItsBuffer(bytes: Buffer): boolean {
  return bytes.byteOffset === 0 && bytes.buffer.byteLength === bytes.length && bytes.buffer instanceof ArrayBuffer;
}

/**
 * Whole chunks smaller than this are copied together with their neighbours, not moved: each moved
 * ArrayBuffer costs this thread in the transfer (Node checks the transfer list pairwise), so a line
 * of 100,000 one-byte chunks (a sandbox writing a byte at a time) moved chunk by chunk blocked it
 * for seconds. A socket read's chunk of a large line is 64 KB, moved as before.
 */
const MIN_MOVED_BYTES = 16 * 1024;

/**
 * A line (one buffer, or the pieces it arrived in) as ArrayBuffers to move to a worker, in order:
 * large whole chunks as they are, the pieces between them copied into one buffer each.
 */
function transferables(line: Buffer | readonly Buffer[]): ArrayBuffer[] {
  const out: ArrayBuffer[] = [];
  let run: Buffer[] = [];
  let runBytes = 0;
  const flush = () => {
    if (runBytes > 0) out.push(transferable(run.length === 1 ? run[0]! : Buffer.concat(run, runBytes)));
    run = [];
    runBytes = 0;
  };
  for (const piece of Buffer.isBuffer(line) ? [line] : line) {
    if (piece.length >= MIN_MOVED_BYTES && ownsItsBuffer(piece)) {
      flush();
      out.push(transferable(piece));
    } else if (piece.length > 0) {
      run.push(piece);
      runBytes += piece.length;
    }
  }
  flush();
  return out;
}

interface Pending {
  job: ScanJob;
  transfer: ArrayBuffer[];
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
 * Where run answers are decoded, scanned for secrets and rendered. A large answer (or one whose env
 * values make a large scanner) goes to a worker thread of lower priority as bytes: its line is
 * parsed there (decode), and scanned and rendered into the MCP tool result's JSON there (scan), so
 * the main thread only moves buffers. Small answers with few env values are scanned in place: a
 * round trip would cost more than the scan. Everything is scanned before the caller gets it; a worker that
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

  /** Answer lines decoded and answers rendered in workers so far (for tests: which path an answer took). */
  readonly counts = { decoded: 0, rendered: 0 };

  /** Scans under way in workers now (the main thread is free meanwhile). */
  get running(): number {
    return this.scanning;
  }

  constructor(options: Partial<ScanPoolOptions> = {}) {
    this.options = { ...DEFAULTS, ...options };
    this.slots = new Array(this.options.workers).fill(null);
  }

  /**
   * Scans a run's answer (RunResult). A small one is scanned here and comes back as a value; a
   * large one (its result a RawJson, or its texts long) is scanned and rendered in a worker: the
   * main thread neither parses nor serialises its result.
   */
  async scan(env: readonly string[], value: unknown, options: ScanOptions = {}): Promise<ScanOutcome> {
    const run = value as RunShape;
    const raw = run.ok && run.result instanceof RawJson ? run.result : undefined;
    const resultText = raw || !run.ok ? undefined : JSON.stringify(run.result);
    const envChars = env.reduce((sum, item) => sum + item.length, 0);
    const chars =
      (raw ? raw.bytes.length : (resultText?.length ?? 0)) +
      (run.stdout?.length ?? 0) +
      (run.stderr?.length ?? 0) +
      (run.error?.length ?? 0);
    if (!raw && chars <= this.options.inlineChars && envChars <= this.options.inlineEnvChars) {
      const text = JSON.stringify(value);
      const findings: Finding[] = [];
      const scanned = this.inline.for(env).scanValue(value, findings);
      return { value: scanned, findings, bytes: Buffer.byteLength(findings.length === 0 ? text : JSON.stringify(scanned)) };
    }
    const { result: _result, ...fields } = run;
    const resultBytes = raw ? transferable(raw.bytes) : undefined;
    const job = {
      op: 'render' as const,
      env,
      fields,
      objectOutputSchema: options.objectOutputSchema === true,
      codeMode: options.codeMode === true,
      ...(resultBytes ? { resultBytes } : resultText !== undefined ? { resultText } : {}),
    };
    this.scanning++;
    let reply: ScanReply;
    try {
      reply = await this.submit(job, env, resultBytes ? [resultBytes] : []);
    } finally {
      this.scanning--;
    }
    if (!('texts' in reply)) throw new Error('the scan failed');
    this.counts.rendered++;
    const rendered: RenderedToolResult = {
      isError: reply.isError,
      texts: reply.texts.map((text) => Buffer.from(text)),
      ...(reply.structured ? { structured: Buffer.from(reply.structured) } : {}),
      ...(reply.recorded !== undefined ? { recorded: reply.recorded } : {}),
    };
    return { value: { ...reply.fields, rendered }, findings: reply.types.map((type) => ({ type })), bytes: reply.bytes };
  }

  /**
   * A run's answer line too large for the main thread, checked for depth and parsed in a worker:
   * as a parsed line, with a result as RawJson (`true` stands for a line that is not an object).
   */
  async decode(
    line: Buffer | readonly Buffer[],
  ): Promise<{ ok: true; result: RawJson } | { ok: false; type: string; message: string; traceback: string } | true> {
    const pieces = transferables(line);
    const reply = await this.submit({ op: 'decode', line: pieces }, [], pieces);
    if (!('decoded' in reply)) throw new Error('the answer could not be decoded');
    this.counts.decoded++;
    const decoded: DecodedAnswer = reply.decoded;
    if (decoded.kind === 'other') return true;
    if (decoded.kind === 'result') return { ok: true, result: new RawJson(Buffer.from(decoded.result)) };
    return { ok: false, type: decoded.type, message: decoded.message, traceback: decoded.traceback };
  }

  /**
   * A bridge call's line too large for the main thread, parsed in a worker: the request as the
   * bridge reads it (its input a RawJson), or the failure the line stands for as the run's answer.
   */
  async decodeBridge(line: Buffer | readonly Buffer[]): Promise<
    | {
        request: {
          op?: string;
          service?: string;
          function?: string;
          input?: RawJson;
          result?: RawJson;
          inputProblem?: string;
          args?: Record<string, unknown>;
        };
      }
    | { answer: { ok: false; type: string; message: string } }
  > {
    const pieces = transferables(line);
    const reply = await this.submit({ op: 'bridge', line: pieces }, [], pieces);
    if (!('bridge' in reply)) throw new Error('the bridge call could not be decoded');
    this.counts.decoded++;
    const decoded: DecodedBridge = reply.bridge;
    if (decoded.kind === 'answer') return { answer: { ok: false, type: decoded.type, message: decoded.message } };
    const { kind: _kind, input, result, ...fields } = decoded;
    return {
      request: {
        ...fields,
        ...(input ? { input: new RawJson(Buffer.from(input)) } : {}),
        ...(result ? { result: new RawJson(Buffer.from(result)) } : {}),
      },
    };
  }

  /** Worker threads alive now (for tests and operators). */
  get workers(): number {
    return this.slots.filter((slot) => slot !== null).length;
  }

  /** Stops the idle workers (the last server of this process closing); the pool stays usable and starts workers again on demand. */
  async stopIdleWorkers(): Promise<void> {
    await Promise.all(this.slots.map((slot) => (slot && !slot.busy ? this.drop(slot, new Error('the scan pool is stopping')) : undefined)));
  }

  /** Stops the workers; scans still queued or running fail. */
  async close(): Promise<void> {
    this.closed = true;
    for (const pending of this.queue.splice(0)) pending.reject(new Error('the scan pool is closed'));
    await Promise.all(this.slots.map((slot) => (slot ? this.drop(slot, new Error('the scan pool is closed')) : undefined)));
  }

  private submit(job: DistributiveOmit<ScanJob, 'id'>, env: readonly string[], transfer: ArrayBuffer[]): Promise<ScanReply> {
    if (this.closed) return Promise.reject(new Error('the scan pool is closed'));
    // The same env values go to the same worker, whose scanner cache then holds them.
    let hash = 0;
    for (const value of env) for (let i = 0; i < Math.min(value.length, 64); i++) hash = (hash * 31 + value.charCodeAt(i)) | 0;
    return new Promise((resolve, reject) => {
      this.queue.push({
        job: { ...job, id: this.nextId++ } as ScanJob,
        transfer,
        preferred: Math.abs(hash) % this.slots.length,
        resolve,
        reject,
      });
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
      slot.timer = setTimeout(() => void this.drop(slot, new Error('the scan ran past its deadline')), this.options.deadlineMs);
      slot.worker.postMessage(pending.job, pending.transfer);
    }
  }

  private start(index: number): Slot {
    // A small young generation: a scan's large strings go straight to the old generation anyway,
    // and V8's default young generation (tens of MB a worker, filled between scavenges) was most of
    // what two busy workers added to the server's memory under a stream of 1 MB answers.
    const worker = new Worker(workerUrl(), { resourceLimits: { maxOldGenerationSizeMb: 256, maxYoungGenerationSizeMb: 8 } });
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
    // (By this slot, not its index: a dropped worker exits later, when a new one may hold its index.)
    worker.on('error', () => void this.drop(slot, new Error('the scan worker failed')));
    worker.on('exit', () => void this.drop(slot, new Error('the scan worker exited')));
    // Idle workers do not keep the process alive.
    worker.unref();
    this.slots[index] = slot;
    return slot;
  }

  /** Stops this slot's worker, failing its job; nothing if the slot was dropped already. */
  private async drop(slot: Slot, error: Error): Promise<void> {
    const index = this.slots.indexOf(slot);
    if (index === -1) return;
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
