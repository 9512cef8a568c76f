// The shared capacity rules (pure: a fake clock and memory sizes; no root, no sandbox).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { backoffMs, DecayingRate, memoryReserve, RATE_WINDOW_MS, targetSize } from './capacity.js';

test('a claim rate adds 1/window per claim and decays by e over one window', () => {
  const rate = new DecayingRate(0);
  assert.equal(rate.read(0), 0);
  for (let index = 0; index < 10; index++) rate.claim(0);
  assert.ok(Math.abs(rate.read(0) - 10 * (1000 / RATE_WINDOW_MS)) < 1e-12);
  assert.ok(Math.abs(rate.read(RATE_WINDOW_MS) - 2 / Math.E) < 1e-12);
  rate.claim(RATE_WINDOW_MS);
  assert.ok(Math.abs(rate.read(RATE_WINDOW_MS) - (2 / Math.E + 0.2)) < 1e-12);
  assert.ok(rate.read(100 * RATE_WINDOW_MS) < 1e-6);
});

test('the target follows half a second of demand between the floor and the cap', () => {
  assert.equal(targetSize({ rate: 0, min: 2, max: 8 }), 2);
  assert.equal(targetSize({ rate: 9, min: 2, max: 8 }), 5);
  assert.equal(targetSize({ rate: 100, min: 2, max: 8 }), 8);
  assert.equal(targetSize({ rate: 0.1, min: 0, max: 8 }), 1);
  assert.equal(targetSize({ rate: 10, horizonS: 1, min: 0, max: 12 }), 10);
});

test('the memory reserve is 512 MB, or a tenth of RAM on larger machines', () => {
  const MB = 1024 * 1024;
  assert.equal(memoryReserve(2048 * MB), 512 * MB);
  assert.equal(memoryReserve(16384 * MB), Math.floor(16384 * MB * 0.1));
});

test('back-off doubles from its base up to its cap', () => {
  const zygote = { baseMs: 1000, maxMs: 60_000 };
  assert.deepEqual(
    [0, 1, 2, 5, 6, 7, 50].map((step) => backoffMs(step, zygote)),
    [1000, 2000, 4000, 32_000, 60_000, 60_000, 60_000],
  );
  assert.equal(backoffMs(-1, { baseMs: 100, maxMs: 30_000 }), 100);
  assert.equal(backoffMs(2000, { baseMs: 100, maxMs: 30_000 }), 30_000);
});
