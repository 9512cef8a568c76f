// The zygote pool's rules with fake host hooks, a fake clock and fake free memory: no root, no
// bubblewrap, no Python. (zygote.test.ts runs real zygotes.)
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Duplex, PassThrough } from 'node:stream';
import { after, test } from 'node:test';
import type { RunCgroup } from '../host/cgroup.js';
import { errnoName } from './zygote.js';
import { ZygotePool, type ZygoteCgroups, type ZygoteHostHooks, type ZygoteOptions, type ZygoteProcess, type ZygoteSpec } from './pool.js';

const MB = 1024 * 1024;
const dirs: string[] = [];
const pools: ZygotePool[] = [];
after(async () => {
  await Promise.all(pools.map((pool) => pool.close()));
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

const spec = (key: string, owner = key): ZygoteSpec => ({
  key,
  label: key,
  owner,
  imports: [],
  preload: null,
  runLimits: { memoryBytes: 64 * MB, maxProcesses: 16 },
  maxLogBytes: 1024,
  config: { tmpfsBytes: MB, rlimits: {}, procMasks: { files: [], dirs: [] } },
  mounts: [],
});

const fakeCgroup = (name: string): RunCgroup =>
  ({
    procsFiles: [`/fake/${name}/cgroup.procs`],
    configure() {},
    killAll() {},
    killUntilEmpty: async () => true,
    oomKilled: () => false,
    remove: async () => {},
  }) as unknown as RunCgroup;

/** A zygote process that says ready at once and takes fork requests into the void. */
class FakeZygote {
  killed = false;
  readonly control: Duplex;
  readonly stderr = new PassThrough();
  private end: () => void = () => {};
  readonly exited = new Promise<void>((resolve) => (this.end = resolve));
  constructor(
    readonly key: string,
    ready: boolean,
  ) {
    this.control = new Duplex({
      read() {},
      write(_chunk, _encoding, callback) {
        callback();
      },
    });
    if (ready) setImmediate(() => this.control.push('{"ready": true}\n'));
  }
  process(): ZygoteProcess {
    return {
      control: this.control,
      stderr: this.stderr,
      exited: this.exited,
      kill: () => {
        this.killed = true;
        this.end();
      },
    };
  }
}

function harness(options: ZygoteOptions & { cgroups?: boolean; ready?: boolean; log?: (line: string) => void } = {}) {
  let clock = 1_000_000;
  let free = 8192 * MB;
  const launched: FakeZygote[] = [];
  let cgroupCalls = 0;
  const hooks: ZygoteHostHooks = {
    cgroups: (id) => {
      cgroupCalls++;
      if (options.cgroups === false) return null;
      return {
        memoryDir: '/fake',
        pidsDir: '/fake',
        self: fakeCgroup(`self-${id}`),
        user: { uid: 0, gid: 0 },
        createRun: (name) => fakeCgroup(`run-${name}`),
        remove: async () => {},
      } as ZygoteCgroups;
    },
    launch: (zygoteSpec) => {
      const zygote = new FakeZygote(zygoteSpec.key, options.ready !== false);
      launched.push(zygote);
      return zygote.process();
    },
    log: options.log ?? (() => {}),
  };
  const dir = mkdtempSync(join(tmpdir(), 'zygote-pool-test-'));
  dirs.push(dir);
  const pool = new ZygotePool(dir, null, hooks, {
    reserveBytes: 512 * MB,
    zygoteMemoryBytes: 160 * MB,
    minSpares: 0,
    maxSpares: 0,
    ...options,
    now: () => clock,
    freeMemory: () => free,
  });
  pools.push(pool);
  const tick = () => (pool as unknown as { tick(): void }).tick();
  /** Until the pool's zygote of `key` is ready (bounded). */
  const ready = async (key: string) => {
    for (let index = 0; index < 1000 && pool.stats().zygotes.find((zygote) => zygote.label === key)?.state !== 'ready'; index++) {
      await new Promise((resolve) => setImmediate(resolve));
    }
  };
  return {
    pool,
    launched,
    tick,
    ready,
    advance: (ms: number) => (clock += ms),
    setFree: (bytes: number) => (free = bytes),
    cgroupCalls: () => cgroupCalls,
  };
}

test('a key learns its zygote: the first claim starts it and takes the ordinary path; once ready, claims get children', async () => {
  const h = harness();
  assert.equal(h.pool.claim(spec('a')), null);
  await h.ready('a');
  assert.equal(h.launched.length, 1);
  const child = h.pool.claim(spec('a'));
  assert.ok(child, 'a child of the ready zygote');
  assert.equal(h.pool.stats().runs, 1);
  child.discard();
});

test('no zygote starts where it would eat into the memory reserve', async () => {
  const h = harness();
  h.setFree(512 * MB + 100 * MB);
  assert.equal(h.pool.claim(spec('a')), null);
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(h.cgroupCalls(), 0);
  assert.equal(h.pool.stats().zygotes.length, 0);
});

test('eviction makes room from an idle zygote, never from one with a run in progress', async () => {
  const h = harness({ maxZygotes: 2, maxZygotesPerOwner: 3 });
  h.pool.claim(spec('busy', 'x'));
  await h.ready('busy');
  h.pool.claim(spec('idle', 'x'));
  await h.ready('idle');
  // A run in progress in one of them.
  const running = h.pool.claim(spec('busy', 'x'))!;
  assert.ok(running);
  // An owner at its cap replaces only one of its own unused for 10 s.
  h.advance(10_000);
  h.pool.claim(spec('new', 'x'));
  const [busy, idle] = h.launched;
  assert.equal(busy!.killed, false, 'the busy zygote keeps its run');
  assert.equal(idle!.killed, true, 'the idle one made room');
  assert.equal(h.launched.length, 2, 'the new key starts once its host socket listens');
  await h.ready('new');
  assert.equal(h.launched.length, 3);
  // Full of busy zygotes, a new key waits (its runs take the ordinary path).
  const second = h.pool.claim(spec('new', 'x'))!;
  h.pool.claim(spec('other', 'x'));
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(h.launched.length, 3);
  assert.ok(h.launched.every((zygote, index) => zygote.killed === (index === 1)));
  running.discard();
  second.discard();
});

test("a zygote that never gets ready is not tried again for a minute of the pool's clock", async () => {
  const h = harness({ cgroups: false });
  h.pool.claim(spec('a'));
  await new Promise((resolve) => setTimeout(resolve, 10));
  assert.equal(h.cgroupCalls(), 1);
  h.tick();
  h.advance(59_000);
  h.pool.claim(spec('a'));
  await new Promise((resolve) => setTimeout(resolve, 10));
  assert.equal(h.cgroupCalls(), 1, 'backed off');
  h.advance(2000);
  h.pool.claim(spec('a'));
  await new Promise((resolve) => setTimeout(resolve, 10));
  assert.equal(h.cgroupCalls(), 2, 'tried again after the minute');
});

test('a zygote that crashes after serving is retried after 1 s, then 2 s (the crash back-off doubles)', async () => {
  const h = harness();
  const crash = async (expectedLaunches: number) => {
    await h.ready('a');
    assert.equal(h.launched.length, expectedLaunches);
    h.launched.at(-1)!.process().kill();
    await new Promise((resolve) => setImmediate(resolve));
    h.tick();
  };
  h.pool.claim(spec('a'));
  await crash(1);
  h.advance(900);
  assert.equal(h.pool.claim(spec('a')), null);
  assert.equal(h.launched.length, 1, 'within the first second');
  h.advance(200);
  h.pool.claim(spec('a'));
  await crash(2);
  h.advance(1100);
  h.pool.claim(spec('a'));
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(h.launched.length, 2, 'the second crash waits 2 s');
  h.advance(1000);
  h.pool.claim(spec('a'));
  await h.ready('a');
  assert.equal(h.launched.length, 3);
});

test("a child's set-up report on its zygote's control socket is logged with the errno's name, only for a child the zygote still has", async () => {
  const lines: string[] = [];
  const h = harness({ log: (line) => lines.push(line) });
  h.pool.claim(spec('a'));
  await h.ready('a');
  const child = h.pool.claim(spec('a'));
  assert.ok(child, 'a child of the ready zygote');
  const control = h.launched[0]!.control;
  const reported = async (line: string) => {
    const before = lines.length;
    control.push(`${line}\n`);
    await new Promise((resolve) => setImmediate(resolve));
    return lines.slice(before);
  };
  // ECHILD: a name util.getSystemErrorName does not know ("Unknown system error -10").
  assert.deepEqual(await reported(`{"setupFailed": "zygote_gone", "errno": 10, "child": "${child.id}"}`), [
    "zygote a: a forked child's set-up failed at zygote_gone (ECHILD); its run, if it had one, takes the ordinary path",
  ]);
  assert.deepEqual(await reported(`{"setupFailed": "umount", "errno": 1, "child": "ffffffffffffffff"}`), [], 'no such child');
  assert.deepEqual(await reported(`{"setupFailed": "Set Up!", "errno": 1, "child": "${child.id}"}`), [], 'not a step word');
  assert.deepEqual(await reported(`{"setupFailed": "umount", "errno": 1}`), [], 'no child named');
  assert.equal(errnoName(1), 'EPERM');
  assert.equal(errnoName(11), 'EAGAIN');
  assert.equal(errnoName(0), 'errno 0');
  assert.equal(errnoName(4095), 'errno 4095');
});
