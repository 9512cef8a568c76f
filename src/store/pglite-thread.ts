import { setFlagsFromString } from 'node:v8';
import { Worker } from 'node:worker_threads';

/** A thrown value crossing from the database thread: an Error's parts, or a thrown object's fields. */
export type WireError =
  { isError: true; name: string; message: string; fields: Record<string, unknown> } | { isError: false; value: unknown };

export type BackendRequest =
  | { id: number; op: 'query'; sql: string; parameters: unknown[] }
  | { id: number; op: 'listen'; channel: string }
  | { id: number; op: 'close' };

export type BackendReply =
  | { id: number; ok: true }
  | { id: number; rows: unknown[]; affectedRows: number | undefined }
  | { id: number; error: WireError }
  | { id: -1; channel: string; payload: string };

/** What the database thread is started with. */
export interface EmbeddedThreadData {
  dir: string;
  /** PostgreSQL's buffer cache (shared_buffers), MB. */
  cacheMb: number;
}

/**
 * The embedded database's buffer cache (MCPWORKS_DB_CACHE_MB). PostgreSQL keeps it in PGlite's
 * WASM memory, zeroed at every open, so it is resident in full however little of it is used: the
 * 128 MB PostgreSQL's initdb writes was half the idle server. A table or index page not in the cache
 * is read from the operating system's page cache, one system call per 8 kB page.
 */
export const DEFAULT_EMBEDDED_CACHE_MB = 16;

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

/**
 * A thrown value as plain data: an Error's name, message and own fields (PostgreSQL's `code`,
 * `detail`…), or a thrown object's own fields (PGlite's file system throws {name, errno}).
 */
export function toWire(error: unknown): WireError {
  if (error === null || typeof error !== 'object') return { isError: false, value: String(error) };
  const fields: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(error)) {
    if (value === null || ['string', 'number', 'boolean'].includes(typeof value)) fields[key] = value;
  }
  if (error instanceof Error) return { isError: true, name: error.name, message: error.message, fields };
  return { isError: false, value: fields };
}

/** The thrown value as the code that used PGlite in-thread saw it (message, name, code, errno…). */
export function fromWire(wire: WireError): unknown {
  if (!wire.isError) return wire.value;
  const error = new Error(wire.message);
  error.name = wire.name;
  return Object.assign(error, wire.fields);
}

/**
 * In dist/ the compiled pglite-worker.js. Under tsx (tests, benches) the .ts source, through a
 * bootstrap that registers tsx in the worker: Node 20 does not pass --import hooks to workers.
 */
function workerUrl(): URL {
  if (!import.meta.url.endsWith('.ts')) return new URL('./pglite-worker.js', import.meta.url);
  const source = new URL('./pglite-worker.ts', import.meta.url).href;
  const boot = `import { register } from ${JSON.stringify(import.meta.resolve('tsx/esm/api'))}; register(); await import(${JSON.stringify(source)});`;
  return new URL(`data:text/javascript,${encodeURIComponent(boot)}`);
}

/**
 * PGlite's WebAssembly on V8's baseline tier (Liftoff) only, as `node --liftoff-only` would run it.
 * TurboFan's recompiling of hot functions in the background left 40–60 MB of its working memory in
 * glibc's arenas of V8's helper threads for good (idle server 221–245 → 165–211 MB RSS, 12-02); see
 * "Where the memory goes" in the README for what it costs a call. A V8 flag is process-wide and read when a
 * module is compiled, so it is set before the thread compiles pglite.wasm. Node's own small modules
 * compiled after (fetch's HTTP parser, the CJS lexer) run on Liftoff too; the sandboxes are other processes.
 */
export function useBaselineWasmTier(): void {
  setFlagsFromString('--liftoff-only');
}

export interface EmbeddedResult {
  rows: unknown[];
  affectedRows: number | undefined;
}

/**
 * The embedded database (PGlite) on a thread of its own (src/store/pglite-worker.ts), so that
 * its statements, which run synchronously in WASM, never hold the server's event loop. One
 * request at a time is what the pool sends (its checkout is a mutex); replies are matched by id.
 * The thread keeps the process alive only while a request is pending, as the in-thread database
 * (which has no handles) did not keep it alive either.
 */
export class EmbeddedThread {
  private readonly pending = new Map<number, { resolve: (reply: BackendReply) => void; reject: (error: unknown) => void }>();
  private readonly channels = new Map<string, (payload: string) => void>();
  private nextId = 1;
  private gone: unknown;

  private constructor(private readonly worker: Worker) {
    worker.on('message', (reply: BackendReply) => {
      if (reply.id === -1) {
        if ('channel' in reply) this.channels.get(reply.channel)?.(reply.payload);
        return;
      }
      const waiting = this.pending.get(reply.id);
      if (!waiting) return;
      this.pending.delete(reply.id);
      if (this.pending.size === 0) worker.unref();
      if ('error' in reply) waiting.reject(fromWire(reply.error));
      else waiting.resolve(reply);
    });
    // A thread that dies (a bug, out of memory) fails what waits on it and everything after.
    const fail = (error: unknown) => {
      this.gone ??= error;
      for (const waiting of this.pending.values()) waiting.reject(this.gone);
      this.pending.clear();
    };
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new Error(`the embedded database's thread exited (code ${code})`)));
  }

  /** Opens the database in `dir` on a new thread (creating it when `dir` holds none); rejects with what PGlite threw when it cannot. */
  static async open(dir: string, cacheMb = DEFAULT_EMBEDDED_CACHE_MB): Promise<EmbeddedThread> {
    useBaselineWasmTier();
    const workerData: EmbeddedThreadData = { dir, cacheMb };
    const worker = new Worker(workerUrl(), { workerData });
    let onError!: (error: unknown) => void;
    let onExit!: (code: number) => void;
    const opened = await new Promise<BackendReply>((resolve, reject) => {
      onError = reject;
      onExit = (code) => reject(new Error(`the embedded database's thread exited at start (code ${code})`));
      worker.once('message', resolve).once('error', onError).once('exit', onExit);
    }).finally(() => worker.off('error', onError).off('exit', onExit));
    if ('error' in opened) {
      await worker.terminate();
      throw fromWire(opened.error);
    }
    worker.unref();
    return new EmbeddedThread(worker);
  }

  private send(request: DistributiveOmit<BackendRequest, 'id'>): Promise<BackendReply> {
    if (this.gone !== undefined) return Promise.reject(this.gone);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.ref();
      this.worker.postMessage({ ...request, id });
    });
  }

  /** One statement: with parameters as a prepared statement, without as a simple query (its last result). */
  async query(sql: string, parameters: ReadonlyArray<unknown>): Promise<EmbeddedResult> {
    const reply = await this.send({ op: 'query', sql, parameters: [...parameters] });
    return reply as EmbeddedResult;
  }

  async listen(channel: string, handler: (payload: string) => void): Promise<void> {
    this.channels.set(channel, handler);
    await this.send({ op: 'listen', channel });
  }

  /** Stops the thread without closing the database (one that must not run another statement). */
  async terminate(): Promise<void> {
    this.gone ??= new Error('the embedded database was stopped');
    await this.worker.terminate();
  }

  async close(): Promise<void> {
    if (this.gone === undefined) await this.send({ op: 'close' }).catch(() => undefined);
    await this.worker.terminate();
  }
}
