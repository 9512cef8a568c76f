// The warm pool's sizing rules with a fake clock, fake free memory and fake sandboxes: no root, no
// bubblewrap. (pool.test.ts runs the real pool with real sandboxes.)
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { WarmPool, type PoolItem, type PoolShape, type WarmPoolOptions } from './warm-pool.js';

const MB = 1024 * 1024;

class FakeSandbox implements PoolItem {
  readonly ready: Promise<boolean>;
  /** Settled by the test: the run that claimed it has answered. */
  readonly done: Promise<void>;
  discarded = false;
  settle: (ready: boolean) => void = () => {};
  answer: () => void = () => {};
  constructor(readonly shape: PoolShape) {
    this.ready = new Promise((resolve) => (this.settle = resolve));
    this.done = new Promise((resolve) => (this.answer = resolve));
  }
  alive(): boolean {
    return !this.discarded;
  }
  async discard(): Promise<void> {
    this.discarded = true;
  }
}

const shape = (key: string): PoolShape => ({ key, label: key, memoryEstimateBytes: 10 * MB });
const turn = () => new Promise<void>((resolve) => setImmediate(resolve));
const pools: WarmPool<PoolShape, FakeSandbox>[] = [];
after(() => Promise.all(pools.map((pool) => pool.close())));

function harness(pinned: PoolShape[], options: WarmPoolOptions = {}) {
  let clock = 1_000_000;
  let free = 8192 * MB;
  const started: FakeSandbox[] = [];
  const logs: string[] = [];
  const pool = new WarmPool<PoolShape, FakeSandbox>(
    (s) => {
      const item = new FakeSandbox(s);
      started.push(item);
      // Ready at once, as a sandbox whose runner is up.
      item.settle(true);
      return item;
    },
    pinned,
    { reserveBytes: 512 * MB, maxStarting: 100, tickMs: 1e9, ...options, now: () => clock, freeMemory: () => free },
    (line) => logs.push(line),
  );
  pools.push(pool);
  const tick = () => (pool as unknown as { tick(): void }).tick();
  return {
    pool,
    started,
    logs,
    tick,
    advance: (ms: number) => (clock += ms),
    setFree: (bytes: number) => (free = bytes),
    live: (key: string) => started.filter((item) => item.shape.key === key && !item.discarded),
  };
}

test('named shapes are filled to their floor at start; a claim takes a ready one and a refill replaces it', async () => {
  const h = harness([shape('py'), shape('ts')], { minSize: 2 });
  await turn();
  assert.equal(h.live('py').length, 2);
  assert.equal(h.live('ts').length, 2);
  const claimed = h.pool.claim(shape('py'));
  assert.ok(claimed);
  claimed.answer();
  await turn();
  await turn();
  assert.equal(h.started.filter((item) => item.shape.key === 'py').length, 3, 'one started in its place');
  assert.deepEqual(h.pool.stats().keys.find((key) => key.label === 'py')?.hits, 1);
});

test('a learned shape starts cold, then keeps what its claim rate needs, up to the cap', async () => {
  const h = harness([], { learnedSize: 1, maxSize: 4, minSize: 2 });
  assert.equal(h.pool.claim(shape('pkg')), null, 'the first run of a key takes the cold path');
  await turn();
  assert.equal(h.live('pkg').length, 1);
  // 40 claims in the same instant: 8 per second decaying over 5 s, half a second of it is 4.
  for (let index = 0; index < 40; index++) h.pool.claim(shape('pkg'))?.answer();
  await turn();
  await turn();
  const [key] = h.pool.stats().keys;
  assert.equal(key!.target, 4);
  assert.equal(key!.ready + key!.starting, 4);
  // Unclaimed for the idle time, a learned key is dropped with its sandboxes.
  h.advance(60_000);
  h.tick();
  assert.equal(h.pool.stats().keys.length, 0);
  assert.equal(h.started.filter((item) => item.discarded).length, 4, 'its 4 idle sandboxes discarded');
});

test('short of free memory, idle sandboxes of the quietest key go first', async () => {
  const h = harness([shape('busy'), shape('quiet')], { minSize: 2 });
  await turn();
  for (let index = 0; index < 5; index++) h.pool.claim(shape('busy'));
  await turn();
  await turn();
  const busyBefore = h.live('busy').length;
  // 15 MB short of the reserve: two sandboxes' worth (10 MB each).
  h.setFree(512 * MB - 15 * MB);
  h.tick();
  assert.equal(h.live('quiet').length, 0);
  assert.equal(h.live('busy').length, busyBefore);
});

test('no sandbox starts while it would eat into the memory reserve', async () => {
  const h = harness([shape('py')], { minSize: 2 });
  h.setFree(512 * MB + 5 * MB);
  await turn();
  h.pool.claim(shape('py'));
  await turn();
  await turn();
  assert.equal(h.started.length, 2, 'only those started before memory ran short');
});

test('a shape whose sandboxes cannot start is backed off, and logged only a few times', async () => {
  const logs: string[] = [];
  let attempts = 0;
  const pool = new WarmPool<PoolShape, FakeSandbox>(
    () => {
      attempts++;
      throw new Error('no helper');
    },
    [shape('broken')],
    { minSize: 2, tickMs: 1e9, freeMemory: () => 8192 * MB, reserveBytes: 512 * MB },
    (line) => logs.push(line),
  );
  pools.push(pool);
  for (let index = 0; index < 10; index++) {
    pool.claim(shape('broken'));
    await turn();
  }
  // Each failure backs the key off (200 ms of real time, doubling), so ten claims' refills do not each try again.
  assert.ok(attempts >= 1 && attempts < 10, `${attempts} attempts`);
  assert.ok(logs.length <= 3);
  assert.equal(logs[0], 'could not start a pooled sandbox (broken): no helper');
});

const startedFor = (h: ReturnType<typeof harness>, key: string) => h.started.filter((item) => item.shape.key === key).length;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

test("a claimed sandbox's replacement starts once its run has answered, not beside the run", async () => {
  const h = harness([shape('ts')], { minSize: 2, replaceAfterMs: 60_000 });
  await turn();
  const claimed = h.pool.claim(shape('ts'))!;
  await turn();
  await turn();
  // The periodic refill and another sandbox becoming ready do not start it either.
  h.tick();
  await turn();
  assert.equal(startedFor(h, 'ts'), 2, 'nothing started while the run is in progress');
  assert.equal(h.pool.stats().keys[0]!.ready, 1);
  claimed.answer();
  await turn();
  await turn();
  assert.equal(startedFor(h, 'ts'), 3, 'its replacement once it answered');
  // A second settling of the same run changes nothing.
  claimed.answer();
  h.tick();
  await turn();
  assert.equal(startedFor(h, 'ts'), 3);
});

test('a run longer than replaceAfterMs gets its replacement all the same, once', async () => {
  // 1 s, not 30 ms: the check right after the claim must come before the bound, and a loaded
  // machine can hold this process for 30 ms between the two.
  const h = harness([shape('ts')], { minSize: 2, replaceAfterMs: 1000 });
  await turn();
  const claimed = h.pool.claim(shape('ts'))!;
  await turn();
  assert.equal(startedFor(h, 'ts'), 2);
  // Set after the pool's timer, so it fires after it.
  await sleep(1100);
  await turn();
  assert.equal(startedFor(h, 'ts'), 3, 'replaced after the bound though the run goes on');
  claimed.answer();
  await turn();
  await turn();
  assert.equal(startedFor(h, 'ts'), 3, 'its late answer starts no second one');
});

test('parallel runs: each slot is refilled as its own run answers; a claim that empties the key refills at once', async () => {
  const h = harness([shape('ts')], { minSize: 3, maxSize: 3, replaceAfterMs: 60_000 });
  await turn();
  const first = h.pool.claim(shape('ts'))!;
  h.pool.claim(shape('ts'));
  await turn();
  await turn();
  assert.equal(startedFor(h, 'ts'), 3, 'no replacement beside the two runs while one is still ready');
  first.answer();
  await turn();
  await turn();
  assert.equal(startedFor(h, 'ts'), 4, 'one for the run that answered');
  await turn();
  // Two ready now (the last one and the replacement); two more claims take both.
  h.pool.claim(shape('ts'));
  h.pool.claim(shape('ts'));
  await turn();
  await turn();
  assert.equal(startedFor(h, 'ts'), 7, 'the key emptied: every held slot refilled at once, while all three runs go on');
  // A claim that finds none ready takes the cold path and holds nothing back.
  const empty = harness([shape('py')], { minSize: 1, replaceAfterMs: 60_000 });
  await turn();
  empty.pool.claim(shape('py'));
  await turn();
  await turn();
  assert.equal(startedFor(empty, 'py'), 2);
});

test('replaceAfterMs 0: the replacement starts at the claim', async () => {
  const h = harness([shape('ts')], { minSize: 2, replaceAfterMs: 0 });
  await turn();
  h.pool.claim(shape('ts'));
  await turn();
  await turn();
  assert.equal(startedFor(h, 'ts'), 3);
});
