// test-database: embedded, the embedded database on a full file system
// Issue 11, item 2: the embedded database's data dir on a small tmpfs that is filled. Writes must
// fail with a clear storage_full error (507, JSON, Retry-After; no stack traces in the log), reads
// and /healthz (degraded) stay alive, SIGTERM still stops the server, and writes resume once space
// is back. Starting on a nearly full disk prints a clear message; a disk filled past the reserve
// before it could act stops the server cleanly instead of wedging PGlite. Needs root (mount).
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import { sql } from 'kysely';
import { openDatabase } from './database.js';
import { freeBytes } from './storage-guard.js';
import { callOk, connect, createAccount, parseResult, rawMcpPost, seedEmbeddedDatabase } from '../test-support/harness.js';
import { fetchWithin, freePort, until } from '../test-support/processes.js';
import { cliCommand } from '../test-support/cli-command.js';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const MiB = 1024 * 1024;
const RESERVE_MB = 40;
const root = process.getuid?.() === 0;

let mountPoint: string | undefined;
const children: ChildProcess[] = [];

before(() => {
  if (!root) return;
  mountPoint = mkdtempSync(path.join(tmpdir(), 'mcpworks-fullfs-'));
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=160m', 'tmpfs', mountPoint]);
});

after(() => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  if (mountPoint) {
    execFileSync('umount', ['-l', mountPoint]);
    rmSync(mountPoint, { recursive: true, force: true });
  }
});

interface Child {
  url: string;
  process: ChildProcess;
  exited: Promise<number | null>;
  output(): string;
}

/** `mcpworks serve` (the build when current, else the source) on the tmpfs data dir; resolves once healthy, or with its exit. */
async function serve(dataDir: string, reserveMb: number): Promise<Child | { exitCode: number | null; output: string }> {
  const port = await freePort();
  const env: NodeJS.ProcessEnv = { ...process.env, LOG_LEVEL: 'info', MCPWORKS_DISK_RESERVE_MB: String(reserveMb) };
  for (const name of ['DATABASE_URL', 'MCPWORKS_DATA_DIR', 'PORT', 'HOST']) delete env[name];
  const child = spawn(process.execPath, [...cliCommand(), 'serve', '--port', String(port), '--data-dir', dataDir], {
    cwd: REPO_ROOT,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  let output = '';
  const collect = (chunk: Buffer) => (output = (output + chunk.toString('utf8')).slice(-200_000));
  child.stdout!.on('data', collect);
  child.stderr!.on('data', collect);
  let exitCode: number | null | undefined;
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve((exitCode = code))));
  const url = `http://127.0.0.1:${port}`;
  // Generous: creating the embedded database takes long on a loaded machine.
  const deadline = Date.now() + 300_000;
  while (exitCode === undefined && Date.now() < deadline) {
    try {
      if ((await fetchWithin(2_000, `${url}/healthz`)).status === 200) return { url, process: child, exited, output: () => output };
    } catch {
      // Not listening yet.
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  if (exitCode === undefined) child.kill('SIGKILL');
  return { exitCode: await exited, output };
}

/** Fills the file system with a file until `leave` bytes are free. */
function fill(file: string, leave: number): void {
  const size = freeBytes(path.dirname(file)) - leave;
  if (size > 0) execFileSync('fallocate', ['-l', String(size), file]);
}

async function health(url: string): Promise<{ status: number; body: any }> {
  const response = await fetchWithin(5_000, `${url}/healthz`);
  return { status: response.status, body: await response.json() };
}

const skip = !root && 'needs root (mounts a tmpfs)';

test(
  'a full data dir: storage_full (507) for writes, reads and /healthz alive, recovery when space returns, SIGTERM still stops it',
  { skip, timeout: 600_000 },
  async () => {
    const dataDir = path.join(mountPoint!, 'data');
    mkdirSync(dataDir);
    // The test template, not a database made from nothing (seconds of CPU): that start is the third test's subject.
    await seedEmbeddedDatabase(dataDir);
    const started = await serve(dataDir, RESERVE_MB);
    assert.ok('url' in started, `the server starts: ${'output' in started ? started.output : ''}`);
    const server = started;
    const account = await createAccount(server.url);
    const ns = 'fullfs';
    const create = await connect(`${server.url}/mcp/create/${ns}`, account.key, 'v2');
    await callOk(create, 'make_namespace', { name: ns });
    await callOk(create, 'make_service', { name: 'm' });
    await callOk(create, 'make_function', { service: 'm', name: 'hello', code: 'def main(input_data):\n    return {"hi": 1}\n' });
    const tools = `${server.url}/mcp/run/${ns}?mode=tools`;
    const run = await connect(tools, account.key, 'v1');
    assert.deepEqual(await callOk(run, 'm__hello'), { hi: 1 });

    const filler = path.join(mountPoint!, 'filler');
    fill(filler, (RESERVE_MB - 8) * MiB);
    const degraded = await until(
      '/healthz degraded',
      () => health(server.url),
      (h) => h.status === 503,
    );
    assert.equal(degraded.body.status, 'degraded');
    assert.equal(degraded.body.database_state, 'storage_full');

    // Writes: a clear storage_full error, HTTP 507 with Retry-After before dispatch, a tool error inside one.
    const register = await fetch(`${server.url}/register`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email: 'late@example.com', password: 'correct horse battery' }),
    });
    assert.equal(register.status, 507);
    assert.ok(register.headers.get('retry-after'));
    const registerBody = (await register.json()) as any;
    assert.equal(registerBody.error_type, 'storage_full');
    assert.match(registerBody.error, /storage full/);
    for (let i = 0; i < 20; i++) {
      const metered = await rawMcpPost(tools, account.key, {
        jsonrpc: '2.0',
        id: i,
        method: 'tools/call',
        params: { name: 'm__hello', arguments: {} },
      });
      assert.equal(metered.status, 507, 'a metered call cannot be admitted (admission writes)');
      assert.equal(metered.body.error.data.type, 'storage_full');
    }
    const refusedTool = await create.callTool('make_function', {
      service: 'm',
      name: 'other',
      code: 'def main(input_data):\n    return 1\n',
    });
    assert.equal(refusedTool.isError, true);
    assert.equal(parseResult(refusedTool).error_type, 'storage_full');

    // Reads go on: tool lists, history, usage, a 2025-era session's requests.
    assert.ok((await run.listTools()).tools.some((tool) => tool.name === 'm__hello'));
    await callOk(create, 'list_executions', {});
    const usage = await fetch(`${server.url}/api/usage`, { headers: { authorization: `Bearer ${account.token}` } });
    assert.equal(usage.status, 200);
    assert.doesNotMatch(server.output(), /"stack"/, 'refused writes log no stack traces');

    // Space returns: writes resume by themselves.
    rmSync(filler);
    await until(
      '/healthz ok again',
      () => health(server.url),
      (h) => h.status === 200,
    );
    assert.deepEqual(await callOk(run, 'm__hello'), { hi: 1 });
    await callOk(create, 'make_function', { service: 'm', name: 'other', code: 'def main(input_data):\n    return 1\n' });

    // A call that runs while the disk fills: answered, its record (sent behind the answer) refused
    // storage_full, held in the outbox and written once space is back; counted once.
    await callOk(create, 'make_function', {
      service: 'm',
      name: 'slow',
      code: 'import time\n\ndef main(input_data):\n    time.sleep(3)\n    return {"slept": 1}\n',
    });
    const meter = async () =>
      (await (await fetch(`${server.url}/api/usage`, { headers: { authorization: `Bearer ${account.token}` } })).json()) as any;
    const counted = (await meter()).executions;
    const slow = callOk(run, 'm__slow');
    await until('the slow call admitted', meter, (u) => u.concurrency.active === 1);
    fill(filler, (RESERVE_MB - 8) * MiB);
    await until(
      '/healthz degraded while the call runs',
      () => health(server.url),
      (h) => h.status === 503,
    );
    assert.deepEqual(await slow, { slept: 1 }, 'answered though its record cannot be written yet');
    rmSync(filler);
    const recorded = await until(
      'the held record written',
      () => callOk(create, 'list_executions', { function: 'slow' }),
      (rows: any[]) => rows.length === 1,
    );
    assert.equal(recorded[0].status, 'success');
    const settled = await meter();
    assert.deepEqual([settled.executions, settled.concurrency.active], [counted + 1, 0], 'counted once, its slot freed');

    // Full again, then SIGTERM: the server stops (it never spins in the database's commit).
    fill(filler, (RESERVE_MB - 8) * MiB);
    await until(
      '/healthz degraded again',
      () => health(server.url),
      (h) => h.status === 503,
    );
    await run.close().catch(() => undefined);
    await create.close().catch(() => undefined);
    server.process.kill('SIGTERM');
    assert.equal(await server.exited, 0);
    assert.match(server.output(), /mcpworks stopped/);

    // Starting on the nearly full file system: a clear message, a non-zero exit.
    const refused = await serve(dataDir, RESERVE_MB);
    assert.ok(!('url' in refused), 'the server refuses to start below the reserve');
    assert.equal(refused.exitCode, 1);
    assert.match(refused.output, /mcpworks: not enough free space for the embedded database: \d+ MiB free .* below the reserve of 40 MiB/);
    assert.doesNotMatch(refused.output, /\[object Object\]/);
    rmSync(filler);
  },
);

test(
  'a disk filled past the reserve before it could act: the embedded database is not touched again and the server is told to stop',
  { skip, timeout: 240_000 },
  async () => {
    const dataDir = path.join(mountPoint!, 'fatal');
    mkdirSync(dataDir);
    await seedEmbeddedDatabase(dataDir);
    const fatal: string[] = [];
    // A reserve too small to hold a new WAL segment: the guard cannot catch this fill in time.
    const database = await openDatabase({ dataDir, diskReserveBytes: 1, onFatal: (message) => fatal.push(message) });
    const filler = path.join(mountPoint!, 'filler-fatal');
    try {
      await sql`CREATE TABLE filler (x text)`.execute(database.db);
      fill(filler, 3 * MiB);
      let failure: any;
      for (let i = 0; i < 200 && !failure; i++) {
        await sql`INSERT INTO filler SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 30000)`
          .execute(database.db)
          .catch((error: unknown) => (failure = error));
      }
      assert.equal(failure?.type, 'storage_full', 'the failed write answers storage_full');
      assert.equal(database.health.state, 'failed');
      assert.equal(fatal.length, 1);
      assert.match(fatal[0]!, /stopping the server to protect the database/);
      // PGlite's next statement would spin forever on the main thread: it is never sent.
      await assert.rejects(sql`SELECT 1`.execute(database.db), (error: any) => error.type === 'unavailable');
    } finally {
      await database.close();
      rmSync(filler, { force: true });
    }
  },
);

test('a start that runs out of space while creating the embedded database prints what happened', { skip, timeout: 240_000 }, async () => {
  const dataDir = path.join(mountPoint!, 'cramped');
  mkdirSync(dataDir);
  const filler = path.join(mountPoint!, 'filler-start');
  // Above a 1 MiB reserve, far below what creating the database needs.
  fill(filler, 10 * MiB);
  try {
    const refused = await serve(dataDir, 1);
    assert.ok(!('url' in refused));
    assert.equal(refused.exitCode, 1);
    assert.match(refused.output, /mcpworks: could not open the embedded database in .*: no space left on device \(ENOSPC\)/);
    assert.doesNotMatch(refused.output, /\[object Object\]/);
  } finally {
    rmSync(filler, { force: true });
  }
});
