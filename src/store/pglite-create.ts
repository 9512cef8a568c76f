import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { fromWire, type WireError } from './pglite-thread.js';

/** What the set-up process is started with (its one argument, as JSON). */
export interface CreateRequest {
  dir: string;
  cacheMb: number | undefined;
  reserveBytes: number;
}

/** The set-up process's one message before it exits. */
export type CreateReply = { ok: true } | { stage: 'open' | 'migrate'; error: WireError };

/** Why creating the database failed: at opening (initdb, the files) or in a migration, with what was thrown. */
export class CreateFailed extends Error {
  constructor(
    readonly stage: 'open' | 'migrate' | 'process',
    readonly reason: unknown,
  ) {
    super(reason instanceof Error ? reason.message : String(reason));
  }
}

/**
 * In dist/ the compiled entry; under tsx (tests, benches) the .ts source with tsx's loader. Of the
 * server's flags only --liftoff-only is passed on (the test pool's, as cluster-command.ts does).
 */
function entry(): { file: string; execArgv: string[] } {
  const flags = process.execArgv.includes('--liftoff-only') ? ['--liftoff-only'] : [];
  if (!import.meta.url.endsWith('.ts'))
    return { file: fileURLToPath(new URL('./pglite-create-process.js', import.meta.url)), execArgv: flags };
  return {
    file: fileURLToPath(new URL('./pglite-create-process.ts', import.meta.url)),
    execArgv: [...flags, '--import', import.meta.resolve('tsx')],
  };
}

/**
 * Creates the embedded database in `dir` (PGlite's initdb, then every migration) in a process of
 * its own, which exits when done. initdb runs a second PGlite with a WASM module of its own: in
 * the server's process that left about 450 MB behind for good (WASM memory never shrinks, and the
 * native heap its threads grew is not given back even once they end). The server then opens the
 * finished database as it opens any existing one. Rejects with a CreateFailed.
 */
export function createEmbeddedDatabase(request: CreateRequest): Promise<void> {
  const { file, execArgv } = entry();
  const child = fork(file, [JSON.stringify(request)], { execArgv, stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr = (stderr + chunk).slice(-2000)));
  let reply: CreateReply | undefined;
  child.on('message', (message: CreateReply) => (reply ??= message));
  return new Promise((resolve, reject) => {
    child.once('error', (error) => reject(new CreateFailed('process', error)));
    child.once('exit', (code, signal) => {
      if (reply && 'ok' in reply) resolve();
      else if (reply) reject(new CreateFailed(reply.stage, fromWire(reply.error)));
      else {
        const how = signal ? `signal ${signal}` : `code ${code}`;
        reject(new CreateFailed('process', new Error(`its set-up process ended (${how})${stderr.trim() ? `: ${stderr.trim()}` : ''}`)));
      }
    });
  });
}
