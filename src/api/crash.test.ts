// test-database: postgres, kill -9 durability of acknowledged writes on the database the node uses
/**
 * Crash test: the real server runs as a child process while several MCP clients update functions
 * in a loop; the server is killed with SIGKILL mid-loop and restarted on the same data dir (or
 * the same PostgreSQL database when MCPWORKS_TEST_DATABASE_URL is set), several times. After each
 * restart every version a client saw acknowledged must be there with the code sent for it, the
 * versions must be exactly 1..N and the active version N. A version nobody saw acknowledged may
 * exist only if its update was in flight at the kill, and then with that update's code.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, test } from 'node:test';
import { callOk, type ClientEra, connect, createAccount, freshDatabaseUrl, type McpTestClient, seedEmbeddedDatabase, TEST_SECRET_KEY } from '../test-support/harness.js';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const ROUNDS = 3;
const FUNCTIONS = ['alpha', 'beta'];
const CLIENT_ERAS: ClientEra[] = ['v2', 'v1', 'v2-legacy', 'v2'];
const START_TIMEOUT_MS = 60_000;

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => resolve(port));
    });
  });
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface Child {
  process: ChildProcess;
  url: string;
  exited: Promise<number | null>;
  output(): string;
}

/** Runs `mcpworks serve` from source (tsx), so the test never depends on a stale build. */
async function startChild(dataDir: string, databaseUrl: string | undefined): Promise<Child> {
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const env: NodeJS.ProcessEnv = { ...process.env, LOG_LEVEL: 'warn' };
    delete env.DATABASE_URL;
    delete env.MCPWORKS_DATA_DIR;
    delete env.PORT;
    delete env.HOST;
    // Several processes on one PostgreSQL share the API key secret, as the server requires.
    if (databaseUrl) Object.assign(env, { DATABASE_URL: databaseUrl, MCPWORKS_SECRET_KEY: TEST_SECRET_KEY });
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'serve', '--port', String(port), '--host', '127.0.0.1', '--data-dir', dataDir], {
      cwd: REPO_ROOT,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    // A test that timed out goes on running: a server it starts after the file's end would hold it open.
    live.add(child);
    child.once('exit', () => live.delete(child));
    if (ended) child.kill('SIGKILL');
    let output = '';
    const collect = (chunk: Buffer) => {
      output = (output + chunk.toString('utf8')).slice(-32_000);
    };
    child.stdout!.on('data', collect);
    child.stderr!.on('data', collect);
    let exitCode: number | null | undefined;
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve((exitCode = code))));
    const url = `http://127.0.0.1:${port}`;
    const deadline = Date.now() + START_TIMEOUT_MS;
    while (exitCode === undefined && Date.now() < deadline) {
      try {
        const health = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(2_000) });
        if (health.status === 200) {
          const body = (await health.json()) as { database?: string };
          assert.equal(body.database, databaseUrl ? 'postgres' : 'pglite', 'the server runs on the intended database');
          return { process: child, url, exited, output: () => output };
        }
      } catch (error) {
        if (error instanceof assert.AssertionError) throw error;
      }
      await sleep(100);
    }
    if (exitCode === undefined) child.kill('SIGKILL');
    await exited;
    // A port taken between probing and listening is the only failure worth one more try.
    if (attempt < 3 && /EADDRINUSE/.test(output)) continue;
    throw new Error(`server did not become healthy (exit ${String(exitCode)}):\n${output}`);
  }
}

async function killChild(child: Child): Promise<void> {
  if (child.process.exitCode === null && child.process.signalCode === null) child.process.kill('SIGKILL');
  await child.exited;
}

function codeFor(fn: string, client: number, round: number, seq: number): string {
  return `def main(input_data):\n    return {"function": "${fn}", "client": ${client}, "round": ${round}, "seq": ${seq}}\n`;
}

interface FunctionLedger {
  /** version → the code whose update_function call was acknowledged with that version. */
  acknowledged: Map<number, string>;
  /** Codes sent whose outcome no client saw (in flight at a kill); each may have committed once. */
  unknown: Set<string>;
}

let child: Child | undefined;
let dataDir: string | undefined;
/** Every server process started and not yet exited; `ended` once the file's after() ran. */
const live = new Set<ChildProcess>();
let ended = false;
after(async () => {
  ended = true;
  for (const running of live) running.kill('SIGKILL');
  if (child) await killChild(child);
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

test('kill -9 while functions are updated: every acknowledged version survives, versions stay contiguous', { timeout: 240_000 }, async () => {
  dataDir = mkdtempSync(path.join(tmpdir(), 'mcpworks-crash-'));
  const databaseUrl = await freshDatabaseUrl();
  if (!databaseUrl) await seedEmbeddedDatabase(dataDir);
  const stats: string[] = [];
  const firstStart = Date.now();
  child = await startChild(dataDir, databaseUrl);
  stats.push(`first start ${Date.now() - firstStart} ms`);

  const account = await createAccount(child.url);
  const ns = 'crash-test';
  const endpoint = () => `${child!.url}/mcp/create/${ns}`;
  {
    const setup = await connect(endpoint(), account.key, 'v2');
    await callOk(setup, 'make_namespace', { name: ns });
    await callOk(setup, 'make_service', { name: 'svc' });
    for (const fn of FUNCTIONS) {
      const made = await callOk(setup, 'make_function', { service: 'svc', name: fn, code: codeFor(fn, -1, 0, 0) });
      assert.equal(made.version ?? 1, 1);
    }
    await setup.close();
  }
  const ledgers = new Map<string, FunctionLedger>(
    FUNCTIONS.map((fn) => [fn, { acknowledged: new Map([[1, codeFor(fn, -1, 0, 0)]]), unknown: new Set<string>() }]),
  );

  for (let round = 1; round <= ROUNDS; round++) {
    const clients: McpTestClient[] = await Promise.all(CLIENT_ERAS.map((era) => connect(endpoint(), account.key, era)));
    let acksThisRound = 0;
    const killAfter = 15 + Math.floor(Math.random() * 25);
    let killed = false;
    let failed = false;
    // A call cut off by the kill may hang (a client retrying its stream); 1 s after the server is gone it counts as unknown.
    let giveUp!: (error: Error) => void;
    const noAnswerAfterKill = new Promise<never>((_, reject) => (giveUp = reject));
    noAnswerAfterKill.catch(() => undefined);
    const roundStart = Date.now();
    let killing = false;
    const kill = () => {
      killing = true;
      // A random few ms later, so the kill lands at any point of the requests in flight.
      setTimeout(() => {
        killed = true;
        child!.process.kill('SIGKILL');
        void child!.exited.then(() => setTimeout(() => giveUp(new Error('no answer after the kill')), 1_000).unref());
      }, Math.floor(Math.random() * 15));
    };
    const loops = clients.map(async (client, c) => {
      const fn = FUNCTIONS[c % FUNCTIONS.length]!;
      const ledger = ledgers.get(fn)!;
      try {
        for (let seq = 1; !failed; seq++) {
          const code = codeFor(fn, c, round, seq);
          let result;
          try {
            result = await Promise.race([client.callTool('update_function', { service: 'svc', name: fn, code }), noAnswerAfterKill]);
          } catch (error) {
            if (!killed) throw new Error(`update_function failed before the kill: ${String(error)}\n${child!.output()}`);
            ledger.unknown.add(code);
            return;
          }
          if (result.isError) {
            if (!killed) throw new Error(`update_function error before the kill: ${JSON.stringify(result.content)}`);
            // Whether it committed is unknown: the weaker, safe claim.
            ledger.unknown.add(code);
            return;
          }
          const answer = JSON.parse(result.content.find((x) => x.type === 'text')?.text ?? '{}') as { version: number; new_version: boolean };
          assert.equal(answer.new_version, true, `a code change makes a new version (${fn})`);
          assert.ok(!ledger.acknowledged.has(answer.version), `version ${answer.version} of ${fn} acknowledged twice`);
          ledger.acknowledged.set(answer.version, code);
          acksThisRound++;
          if (!killing && acksThisRound >= killAfter) kill();
        }
      } catch (error) {
        failed = true;
        throw error;
      }
    });
    await Promise.all(loops);
    await child.exited;
    await Promise.all(clients.map((client) => client.close().catch(() => undefined)));
    const loopMs = Date.now() - roundStart;
    const restartStart = Date.now();
    child = await startChild(dataDir, databaseUrl);
    stats.push(`round ${round}: ${acksThisRound} acks in ${loopMs} ms, restart ${Date.now() - restartStart} ms`);
    const checker = await connect(endpoint(), account.key, 'v2');
    for (const [fn, ledger] of ledgers) {
      const described = await callOk(checker, 'describe_function', { service: 'svc', name: fn });
      const versions = (described.versions as Array<{ version: number }>).map((v) => v.version);
      const n = described.active_version as number;
      assert.deepEqual(versions, Array.from({ length: versions.length }, (_, i) => i + 1), `${fn}: versions are 1..N without gaps`);
      assert.equal(n, versions.length, `${fn}: the active version is the latest`);
      const maxAcked = Math.max(...ledger.acknowledged.keys());
      assert.ok(n >= maxAcked, `${fn}: acknowledged version ${maxAcked} is missing after restart (latest is ${n})`);
      const shownCode = new Map<number, string>();
      const pending = Array.from({ length: n }, (_, i) => i + 1);
      await Promise.all(
        Array.from({ length: 6 }, async () => {
          for (let v = pending.shift(); v !== undefined; v = pending.shift()) {
            shownCode.set(v, (await callOk(checker, 'describe_function', { service: 'svc', name: fn, version: v })).code);
          }
        }),
      );
      for (let v = 1; v <= n; v++) {
        const shown = { code: shownCode.get(v) };
        const acked = ledger.acknowledged.get(v);
        if (acked !== undefined) {
          assert.equal(shown.code, acked, `${fn} v${v}: the code acknowledged for it`);
        } else {
          // Committed but the answer was lost in the kill: it must be one of the in-flight updates.
          assert.ok(shown.code !== undefined && ledger.unknown.has(shown.code), `${fn} v${v}: code that no in-flight update sent:\n${shown.code}`);
          ledger.unknown.delete(shown.code!);
          ledger.acknowledged.set(v, shown.code!);
        }
      }
      // What did not commit is gone for good: a later round must not see it appear.
      ledger.unknown.clear();
    }
    await checker.close();
  }
  const total = FUNCTIONS.map((fn) => `${fn}=${ledgers.get(fn)!.acknowledged.size}`).join(' ');
  console.log(`crash test (${databaseUrl ? 'postgres' : 'pglite'}): ${stats.join('; ')}; versions ${total}`);
});
