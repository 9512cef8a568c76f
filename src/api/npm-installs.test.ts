// test-database: embedded, the install queue lives in the node
// Issue 10, item 9: TypeScript make_function calls against a slow npm registry. Installs queue under
// a global and a per-account cap, run as npm's own unprivileged user in a limited cgroup without
// the server's env, and end at the time limit with a typed error and nothing created.
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { NPM_DEFAULTS } from '../sandbox/npm-build.js';
import { startFakeRegistry, type FakeRegistry } from '../test-support/fake-npm-registry.js';
import { callOk, connect, createAccount, errorOf, startTestServer, type McpTestClient, type TestServer } from '../test-support/harness.js';

const CANARY = `canary-${Math.random().toString(36).slice(2)}`;
// Installs are held by the registry until the test releases them, so nothing here depends on timing.
const CAPS = { concurrency: 2, accountConcurrency: 1, queue: 4, accountQueue: 2, timeoutSeconds: 120 };
let server: TestServer;
let registry: FakeRegistry;
/** A second server whose installs stall for good and meet its 3 s time limit. */
let slowServer: TestServer;
let slowRegistry: FakeRegistry;
let cacheDir: string;
let slowCacheDir: string;
const saved = { DATABASE_URL: process.env.DATABASE_URL, MCPWORKS_SECRET_KEY: process.env.MCPWORKS_SECRET_KEY };

before(async () => {
  // Secrets in the server's own environment, which npm must not inherit.
  process.env.DATABASE_URL = `postgres://user:${CANARY}@127.0.0.1:1/db`;
  process.env.MCPWORKS_SECRET_KEY = CANARY;
  registry = await startFakeRegistry({ stall: (name) => name.startsWith('stall-') });
  slowRegistry = await startFakeRegistry({ stall: (name) => name.startsWith('stall-') });
  cacheDir = mkdtempSync(join(tmpdir(), 'mcpworks-npm-limits-'));
  slowCacheDir = mkdtempSync(join(tmpdir(), 'mcpworks-npm-slow-'));
  chmodSync(cacheDir, 0o755);
  chmodSync(slowCacheDir, 0o755);
  [server, slowServer] = await Promise.all([
    startTestServer({ cacheDir, npm: { ...CAPS, registry: registry.url } }),
    startTestServer({ cacheDir: slowCacheDir, npm: { timeoutSeconds: 3, registry: slowRegistry.url } }),
  ]);
});
after(async () => {
  await server.stop();
  await slowServer.stop();
  await registry.close();
  await slowRegistry.close();
  rmSync(cacheDir, { recursive: true, force: true });
  rmSync(slowCacheDir, { recursive: true, force: true });
  for (const [name, value] of Object.entries(saved)) {
    if (value === undefined) delete process.env[name];
    else process.env[name] = value;
  }
});

interface NpmProcess {
  pid: string;
  status: string;
  environ: string[];
  cgroup: string;
}

/** npm processes installing into `cache` (not the helper that started them, nor other tests' npm). */
function npmProcesses(cache = cacheDir): NpmProcess[] {
  const found: NpmProcess[] = [];
  for (const pid of readdirSync('/proc').filter((name) => /^\d+$/.test(name))) {
    try {
      if (!readlinkSync(`/proc/${pid}/cwd`).startsWith(join(cache, 'ts-deps', '.staging-'))) continue;
      if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('mcpworks-sandbox-helper')) continue;
      found.push({
        pid,
        status: readFileSync(`/proc/${pid}/status`, 'utf8'),
        environ: readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0'),
        cgroup: readFileSync(`/proc/${pid}/cgroup`, 'utf8'),
      });
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

function cgroupOf(npm: NpmProcess, controller: string): string {
  return new RegExp(`^\\d+:(?:[^:]*,)?${controller}(?:,[^:]*)?:(.*)$`, 'm').exec(npm.cgroup)?.[1] ?? '';
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function space(on = server): Promise<{ create: McpTestClient; key: string; ns: string }> {
  const account = await createAccount(on.url);
  const ns = `npm-${Math.random().toString(36).slice(2, 10)}`;
  const create = await connect(`${on.url}/mcp/create/${ns}`, account.key);
  await callOk(create, 'make_namespace', { name: ns });
  await callOk(create, 'make_service', { name: 'deps' });
  return { create, key: account.key, ns };
}

describe('npm installs of make_function (issue 10, item 9)', () => {
  test(
    '30 parallel installs against a stalled registry: at most the caps run, a bounded queue waits, the rest are refused at once; npm runs unprivileged without the server env',
    { timeout: 300_000 },
    async () => {
      // Three accounts, so the server-wide cap (2) binds before the per-account cap (1) does.
      const spaces = { a: await space(), b: await space(), c: await space() };
      const settled: Array<{ account: string; index: number; error: any }> = [];
      const fire = (account: 'a' | 'b' | 'c') =>
        Array.from({ length: 10 }, async (_, index) => {
          const result = await spaces[account].create.callTool('make_function', {
            service: 'deps',
            name: `f${index}`,
            language: 'typescript',
            code: 'export default () => 1;',
            requirements: [`stall-${account}-${index}@1.0.0`],
          });
          assert.equal(result.isError, true, `${account}${index} was created: ${JSON.stringify(result)}`);
          const text = result.content.find((c) => c.type === 'text')?.text ?? '';
          settled.push({ account, index, error: errorOf(JSON.parse(text)) });
        });

      // Sampled while the calls are in flight: npm processes alive, and requests held per account.
      let maxProcesses = 0;
      let maxPerAccount = 0;
      const seen = new Map<string, NpmProcess>();
      const heldFor = (account: string) => registry.stalled().filter((name) => name.startsWith(`stall-${account}-`)).length;
      const sampleUntil = async (done: () => boolean) => {
        for (let i = 0; i < 3000 && !done(); i++) {
          const live = npmProcesses();
          maxProcesses = Math.max(maxProcesses, live.length);
          for (const npm of live) seen.set(npm.pid, npm);
          for (const account of ['a', 'b', 'c']) maxPerAccount = Math.max(maxPerAccount, heldFor(account));
          await sleep(20);
        }
      };
      // One account first: 1 install runs, 2 wait, the other 7 are refused (a second install of its own would show here).
      const calls = fire('a');
      await sampleUntil(
        () =>
          (settled.length >= 10 - CAPS.accountConcurrency - CAPS.accountQueue && heldFor('a') >= 1) ||
          heldFor('a') > CAPS.accountConcurrency,
      );
      assert.equal(heldFor('a'), CAPS.accountConcurrency, 'one account runs at most its cap');
      // Then two more accounts: one more install fits the server's cap, the queue fills, the rest are refused.
      calls.push(...fire('b'), ...fire('c'));
      // While the registry holds the installs nothing can finish but refusals: wait for all of them.
      const mustRefuse = 30 - CAPS.concurrency - CAPS.queue;
      const overCap = () => maxProcesses > CAPS.concurrency || registry.stalled().length > CAPS.concurrency;
      await sampleUntil(
        () => (settled.length >= mustRefuse && registry.stalled().length >= CAPS.concurrency && seen.size >= CAPS.concurrency) || overCap(),
      );
      assert.equal(settled.length, mustRefuse, JSON.stringify(settled));
      for (const s of settled) {
        assert.equal(s.error.type, 'rate_limited', JSON.stringify(s.error));
        assert.equal(s.error.limit, 'npm_install_queue');
        assert.equal(s.error.field, 'requirements');
        assert.match(s.error.message, /npm install/);
        assert.doesNotMatch(JSON.stringify(s.error), /\n\s+at |\/ts-deps\/|staging/, 'no stack trace, no host path');
      }
      // Refused at once: a refused call never reached npm.
      const refusedNames = new Set(settled.map((s) => `stall-${s.account}-${s.index}`));
      assert.ok(!registry.requested.some((name) => refusedNames.has(name)));
      assert.equal(registry.stalled().length, CAPS.concurrency);
      assert.ok(
        maxProcesses >= 1 && maxProcesses <= CAPS.concurrency,
        `at most ${CAPS.concurrency} npm processes at once, saw ${maxProcesses}`,
      );
      assert.equal(registry.maxStalled, CAPS.concurrency);
      assert.equal(maxPerAccount, CAPS.accountConcurrency);
      // The server keeps answering while npm is held.
      assert.equal((await fetch(`${server.url}/healthz`)).status, 200);
      assert.equal(registry.stalled().length, CAPS.concurrency, '/healthz answered while the installs were still held');

      // npm ran as its own unprivileged user, with its own HOME, in a limited cgroup, without the server's env.
      const { uid, gid } = NPM_DEFAULTS.user;
      for (const npm of seen.values()) {
        assert.match(npm.status, new RegExp(`^Uid:\\t${uid}\\t${uid}\\t${uid}\\t${uid}$`, 'm'), npm.status);
        assert.match(npm.status, new RegExp(`^Gid:\\t${gid}\\t${gid}\\t${gid}\\t${gid}$`, 'm'));
        assert.match(npm.status, /^Groups:\s*$/m, 'no supplementary groups');
        assert.match(npm.status, /^CapEff:\t0+$/m);
        const environ = npm.environ.join('\n');
        assert.ok(!environ.includes(CANARY), "no server secret in npm's environment");
        assert.ok(!npm.environ.some((entry) => entry.startsWith('DATABASE_URL=') || entry.startsWith('MCPWORKS_')));
        assert.ok(npm.environ.includes(`HOME=${join(cacheDir, 'npm-home')}`), environ);
        assert.match(cgroupOf(npm, 'memory'), /\/mcpworks-sandbox\/instance-\d+-[0-9a-f]+\/run-npm-/, npm.cgroup);
        assert.match(cgroupOf(npm, 'pids'), /\/run-npm-/, npm.cgroup);
      }

      // Released: the held installs fail (404), the queued ones run and fail too. Nothing is created.
      registry.release();
      await Promise.all(calls);
      const ran = settled.slice(mustRefuse);
      assert.equal(ran.length, CAPS.concurrency + CAPS.queue);
      for (const s of ran) assert.equal(s.error.type, 'dependency_error', JSON.stringify(s.error));
      for (const s of Object.values(spaces)) assert.deepEqual(await callOk(s.create, 'list_functions', { service: 'deps' }), []);
      assert.deepEqual(readdirSync(join(cacheDir, 'ts-deps')), []);
      assert.deepEqual(npmProcesses(), []);
      // The create endpoint stays unmetered.
      for (const s of Object.values(spaces)) {
        const usage = await (await fetch(`${server.url}/api/usage`, { headers: { authorization: `Bearer ${s.key}` } })).json();
        assert.equal(usage.executions, 0);
      }
    },
  );

  test(
    'a stalled install ends at the time limit with a typed error naming the package; npm ran in memory- and pids-limited groups; nothing created',
    { timeout: 120_000 },
    async () => {
      const s = await space(slowServer);
      const call = s.create.callTool('make_function', {
        service: 'deps',
        name: 'limited',
        language: 'typescript',
        code: 'export default () => 1;',
        requirements: ['stall-limits@1.0.0'],
      });
      let limits: { memory: string; pids: string } | null = null;
      for (let i = 0; i < 1000 && !limits; i++) {
        const [npm] = npmProcesses(slowCacheDir);
        if (npm) {
          try {
            limits = {
              memory: readFileSync(join('/sys/fs/cgroup/memory', cgroupOf(npm, 'memory'), 'memory.limit_in_bytes'), 'utf8').trim(),
              pids: readFileSync(join('/sys/fs/cgroup/pids', cgroupOf(npm, 'pids'), 'pids.max'), 'utf8').trim(),
            };
          } catch {
            // the group went away between the reads
          }
        }
        if (!limits) await sleep(20);
      }
      assert.equal((await fetch(`${slowServer.url}/healthz`)).status, 200);
      const result = await call;
      assert.equal(result.isError, true);
      const error = errorOf(JSON.parse(result.content.find((c) => c.type === 'text')?.text ?? ''));
      assert.equal(error.type, 'dependency_error');
      assert.equal(error.limit, 'timeout');
      assert.equal(
        error.message,
        'npm install of stall-limits@1.0.0 did not finish within 3 s (the install time limit); nothing was installed',
      );
      assert.ok(limits, 'saw the npm process in its groups');
      assert.equal(limits.memory, String(NPM_DEFAULTS.memoryBytes));
      assert.equal(limits.pids, String(NPM_DEFAULTS.maxProcesses));
      assert.deepEqual(await callOk(s.create, 'list_functions', { service: 'deps' }), []);
      assert.deepEqual(readdirSync(join(slowCacheDir, 'ts-deps')), []);
      assert.deepEqual(npmProcesses(slowCacheDir), []);
      assert.equal(slowRegistry.stalled().length, 0, 'npm was killed: its request is gone');
      const usage = await (await fetch(`${slowServer.url}/api/usage`, { headers: { authorization: `Bearer ${s.key}` } })).json();
      assert.equal(usage.executions, 0);
    },
  );

  test(
    'a package from the registry installs, runs, and is not installed twice for parallel equal lists',
    { timeout: 120_000 },
    async () => {
      const s = await space();
      const made = await Promise.all(
        Array.from({ length: 4 }, (_, index) =>
          s.create.callTool('make_function', {
            service: 'deps',
            name: `ok${index}`,
            language: 'typescript',
            code: 'import v from "good-pkg";\nexport default () => v;\n',
            requirements: ['good-pkg@1.0.0'],
          }),
        ),
      );
      // Four calls for one list in one account: one install (the others joined it), none refused.
      assert.deepEqual(
        made.map((r) => r.isError ?? false),
        [false, false, false, false],
        JSON.stringify(made),
      );
      assert.equal(registry.requested.filter((name) => name === 'good-pkg').length, 1);
      const run = await connect(`${server.url}/mcp/run/${s.ns}`, s.key, 'v1');
      const answer = await run.callTool('execute', {
        language: 'typescript',
        code: 'import { ok0 } from "functions";\nresult = await ok0({});',
      });
      assert.equal(answer.isError ?? false, false, JSON.stringify(answer));
      assert.match(JSON.stringify(answer), /good-pkg/);
      await run.close();
    },
  );
});
