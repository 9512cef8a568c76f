// The shape caps checked on the main thread before a schema worker sees a value (depth and number of
// JSON values), for arrays and objects alike, at their boundaries. The caps themselves are enforced
// end to end in src/api/schema-abuse.test.ts; here each branch of the walk is pinned, and the walk
// of a call's input (src/core/call-input.ts) in slices.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { describeExcess, shapeExcess } from './json-schema.js';

const caps = { maxDepth: 3, maxValues: 6 };
const arrays = (levels: number): unknown => JSON.parse(`${'['.repeat(levels)}1${']'.repeat(levels)}`);
const objects = (levels: number): unknown => JSON.parse(`${'{"a":'.repeat(levels)}1${'}'.repeat(levels)}`);

test('depth: arrays and objects, and the two mixed, up to the cap pass and one level more does not', () => {
  assert.equal(shapeExcess(arrays(3), caps), null);
  assert.equal(shapeExcess(objects(3), caps), null);
  assert.deepEqual(shapeExcess(arrays(4), caps), { limit: 'depth', max: 3 });
  assert.deepEqual(shapeExcess(objects(4), caps), { limit: 'depth', max: 3 });
  assert.equal(shapeExcess({ a: [{ b: 1 }] }, caps), null);
  assert.deepEqual(shapeExcess({ a: [{ b: [] }] }, caps), { limit: 'depth', max: 3 });
  assert.deepEqual(shapeExcess([{ a: [[]] }], caps), { limit: 'depth', max: 3 });
  // Scalars and empty containers hold nothing to walk.
  assert.equal(shapeExcess('x'.repeat(100), caps), null);
  assert.equal(shapeExcess([], { maxDepth: 1, maxValues: 1 }), null);
});

test('values: array items and object members count alike, the container itself included', () => {
  assert.equal(shapeExcess([1, 2, 3, 4, 5], caps), null);
  assert.equal(shapeExcess({ a: 1, b: 2, c: 3, d: 4, e: 5 }, caps), null);
  assert.deepEqual(shapeExcess([1, 2, 3, 4, 5, 6], caps), { limit: 'values', max: 6 });
  assert.deepEqual(shapeExcess({ a: 1, b: 2, c: 3, d: 4, e: 5, f: 6 }, caps), { limit: 'values', max: 6 });
  // Nested: 1 + 2 + 2 + 2 = 7 values.
  assert.deepEqual(shapeExcess({ a: [1, 2], b: { c: 1, d: 2 } }, caps), { limit: 'values', max: 6 });
  assert.deepEqual(shapeExcess([[1, 2], { c: 1, d: 2 }], caps), { limit: 'values', max: 6 });
});

test('the refusal says which cap, and its number', () => {
  assert.equal(describeExcess('the input', { limit: 'depth', max: 3 }), 'the input is nested deeper than 3 levels');
  assert.equal(describeExcess('the result', { limit: 'values', max: 6 }), 'the result holds more than 6 JSON values');
});

test("a call's input is walked in slices (caps, then exact integers), with the same verdicts as in one go", async () => {
  const { callInputProblem, callInputProblemSlices } = await import('./call-input.js');
  const count = (input: unknown) => {
    const slices = callInputProblemSlices(input, 1000);
    let yields = 0;
    for (let step = slices.next(); ; step = slices.next()) {
      if (step.done) return { yields, problem: step.value };
      yields++;
    }
  };
  // 40,000 numbers, then 20,000 objects: each walked for the caps and again for the integers, in
  // slices of 1,000 values (a slice boundary in the middle of one long array included).
  for (const large of [{ items: new Array(40_000).fill(7) }, { items: Array.from({ length: 20_000 }, (_, i) => ({ a: i })) }]) {
    assert.ok(count(large).yields >= 75, `slices: ${count(large).yields}`);
    assert.equal(count(large).problem, undefined);
  }
  const inexact = { items: [...new Array(5000).fill(1), 2 ** 60] };
  assert.ok(count(inexact).yields >= 5);
  assert.equal(count(inexact).problem, callInputProblem(inexact));
  assert.match(count(inexact).problem!, /whole number beyond/);
  assert.match(count(arrays(200)).problem!, /nested deeper than 128 levels/);
});
