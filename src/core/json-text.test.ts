// The sliced JSON text of a checked value (src/run/schema-guard.ts sends it to the schema worker):
// the very text of JSON.stringify, whatever the slice size, and made in bounded slices.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { runSlices, shapeExcess, shapeExcessSlices } from './json-schema.js';
import { jsonTextPieces, weightUpTo } from './json-text.js';

/** The pieces joined (undefined when there were none), and how many pieces. */
function slices(value: unknown, size: number): { text: string | undefined; pieces: number } {
  const pieces = [...jsonTextPieces(value, size)];
  return { text: pieces.length > 0 ? pieces.join('') : undefined, pieces: pieces.length };
}

const bare = Object.create(null) as Record<string, unknown>;
bare.x = [1, { y: 'z' }];
const VALUES: Record<string, unknown> = {
  scalars: [0, -0, 1.5, 1e21, -1e-7, NaN, Infinity, true, false, null, '', 'text'],
  escapes: ['"\\/\b\f\n\r\t', '\u0000\u001f\u2028\u2029', 'é😀', '\ud800 lone', 'x'.repeat(3000)],
  // What JSON.stringify leaves out of objects and writes as null in arrays.
  holes: { a: undefined, b: () => 1, c: Symbol('s'), d: [undefined, () => 1, Symbol('s'), 1], e: 2 },
  leadingHole: { a: undefined, b: 1 },
  empty: [[], {}, [[]], { a: {} }],
  keys: { '2': 'two', '1': 'one', b: 'b', a: 'a', 'quote"key': 1, '': 0 },
  nullPrototype: { bare },
  withToJson: { when: new Date(0), custom: { toJSON: () => ({ replaced: true }) }, gone: { toJSON: () => undefined } },
  deep: JSON.parse(`${'[{"a":'.repeat(60)}1${'}]'.repeat(60)}`),
  wide: {
    items: Array.from({ length: 5000 }, (_, i) =>
      i % 3 === 0 ? { a: i, b: [i, `s${i}`] } : i % 3 === 1 ? `v${i}` : [i, null, { c: true }],
    ),
  },
  wideObject: Object.fromEntries(Array.from({ length: 3000 }, (_, i) => [`k${i}`, i % 2 ? { n: i } : [i, i]])),
  bigStrings: Array.from({ length: 50 }, (_, i) => 'ab"c'.repeat(100 * i)),
};

test('the pieces join to exactly what JSON.stringify writes, at every slice size', () => {
  for (const [name, value] of Object.entries(VALUES)) {
    for (const size of [1, 2, 3, 7, 64, 1000, 8192]) {
      assert.equal(slices(value, size).text, JSON.stringify(value), `${name} in slices of ${size}`);
    }
  }
  for (const root of [undefined, () => 1, Symbol('s')]) assert.equal(slices(root, 1).text, undefined, 'as JSON.stringify: no text');
  assert.throws(() => slices({ n: [1n] }, 1), TypeError);
});

test('a large value is made in slices of bounded size; a small one in one go', () => {
  const numbers = Array.from({ length: 100_000 }, (_, i) => i);
  const pieces = [...jsonTextPieces({ numbers }, 1000)];
  assert.equal(pieces.join(''), JSON.stringify({ numbers }));
  assert.ok(pieces.length >= 50, `${pieces.length} pieces`);
  // A piece holds at most two slices' worth of values (at most 6 digits and a comma each).
  assert.ok(
    pieces.every((piece) => piece.length <= 2 * 1000 * 7 + 20),
    `longest piece: ${Math.max(...pieces.map((p) => p.length))}`,
  );
  assert.equal(slices({ numbers: numbers.slice(0, 500) }, 1000).pieces, 1);
});

test('weightUpTo counts values (long strings weigh more) and stops past its limit', () => {
  assert.equal(weightUpTo(1, 10), 1);
  assert.equal(weightUpTo('x'.repeat(600), 10), 3);
  assert.equal(weightUpTo({ a: [1, 2], b: 'x' }, 10), 5);
  assert.equal(
    weightUpTo(
      Array.from({ length: 1000 }, () => [1]),
      10,
    ),
    11,
  );
});

test('shapeExcessSlices gives what shapeExcess gives, yielding along a long array or object', () => {
  const caps = { maxDepth: 3, maxValues: 50_000 };
  for (const value of [
    Array.from({ length: 20_000 }, (_, i) => i),
    Object.fromEntries(Array.from({ length: 20_000 }, (_, i) => [`k${i}`, i])),
    [[[[1]]]],
    { a: [[{}]] },
  ]) {
    const generator = shapeExcessSlices(value, caps, 1000);
    let yields = 0;
    let step = generator.next();
    for (; !step.done; step = generator.next()) yields++;
    assert.deepEqual(step.value, shapeExcess(value, caps));
    assert.deepEqual(runSlices(shapeExcessSlices(value, caps, 7)), shapeExcess(value, caps));
    if (Array.isArray(value) ? value.length > 1000 : Object.keys(value).length > 1000) assert.ok(yields >= 19, `${yields} slices`);
  }
});
