/**
 * The embedded database's first-time set-up, in a process of its own (see pglite-create.ts):
 * opens `dir` (PGlite runs initdb there), applies every migration, closes, reports and exits.
 * It is the code the server opens the database with, under the same free-space guard.
 */
import { Kysely, PostgresDialect } from 'kysely';
import { DatabaseHealth } from './db-health.js';
import { migrate } from './database.js';
import type { CreateReply, CreateRequest } from './pglite-create.js';
import { PGlitePool } from './pglite-pool.js';
import { EmbeddedThread, toWire } from './pglite-thread.js';
import type { Database } from './schema.js';
import { StorageGuard } from './storage-guard.js';

// The server that started this is gone: a set-up nobody waits for stops here.
process.on('disconnect', () => process.exit(1));

const request = JSON.parse(process.argv[2]!) as CreateRequest;
const report = (reply: CreateReply) => new Promise<void>((resolve) => process.send!(reply, () => resolve()));

let thread: EmbeddedThread | undefined;
try {
  thread = await EmbeddedThread.open(request.dir, request.cacheMb);
} catch (error) {
  await report({ stage: 'open', error: toWire(error) });
}
if (thread) {
  const health = new DatabaseHealth();
  const storage = new StorageGuard(request.dir, request.reserveBytes, health);
  const pool = new PGlitePool(thread, { health, storage, onFatal: () => undefined });
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
  try {
    await migrate(db);
    await db.destroy();
    await report({ ok: true });
  } catch (error) {
    await db.destroy().catch(() => undefined);
    await report({ stage: 'migrate', error: toWire(error) });
  }
}
process.exit(0);
