// The byte-level pre-scan of an MCP request body (json-scan.ts) must count what the walk of the
// parsed value counts (json-schema.ts shapeExcess), whatever the strings hold: each text here is
// checked at its exact counts (passes) and one below (refused, for the same limit).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { runSlices, shapeExcess } from './json-schema.js';
import { piecesShapeExcessSlices, textShapeExcessSlices } from './json-scan.js';

const scan = (text: string, maxDepth: number, maxValues: number, slice = Infinity) =>
  runSlices(textShapeExcessSlices(text, { maxDepth, maxValues }, slice));

/** The smallest caps the parsed value passes, found by the walk of the parsed value. */
function exactCaps(value: unknown): { depth: number; values: number } {
  let depth = 1;
  while (shapeExcess(value, { maxDepth: depth, maxValues: Infinity })) depth++;
  let values = 1;
  while (shapeExcess(value, { maxDepth: Infinity, maxValues: values })) values++;
  return { depth, values };
}

const texts = [
  '[]',
  '{}',
  '[ ]',
  '{ \n\t}',
  '[0,1,2]',
  '[-1.5e+10, 0.25, 3E-2, 12345678901234567890]',
  '{"a":1,"b":[true,false,null],"c":{}}',
  '{"a,b":"[,{,],}", "c":"\\"],[\\"", "d\\"":[1,"\\\\"],"e":"\\\\\\""}',
  '["\\u0022,[", "\\\\", "\\/", "a\\nb"]',
  '{"ключ":"значение, [с] {скобками}","emoji":"😀,😀","k":["é", "ü,ß"]}',
  '[[[[1]]],[[]],{"x":[{"y":[]}]}]',
  ' [ 1 , [ 2 , 3 ] , { "a" : [ ] , "b" : { } } ] ',
  '{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"f","arguments":{"items":[0,0,0],"s":"x]"}}}',
  '[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"ping","params":{}}]',
];

test('the pre-scan counts values and depth as the walk of the parsed value does, strings skipped', () => {
  for (const text of texts) {
    const { depth, values } = exactCaps(JSON.parse(text));
    assert.equal(scan(text, depth, values), null, `passes at its own counts: ${text}`);
    if (values > 1) assert.deepEqual(scan(text, depth, values - 1), { limit: 'values', max: values - 1 }, `one value over: ${text}`);
    assert.deepEqual(scan(text, depth - 1, values), { limit: 'depth', max: depth - 1 }, `one level over: ${text}`);
    // Sliced to one character per slice: the same answer (a string spans slices).
    assert.deepEqual(scan(text, depth, values - 1, 1), scan(text, depth, values - 1), `sliced: ${text}`);
    assert.equal(scan(text, depth, values, 1), null);
  }
});

test('a long string counts as one value however many brackets, commas and escaped quotes it holds', () => {
  const long = JSON.stringify({ code: `x = [${'1,'.repeat(50_000)}]  # "{[,]}" \\ \u00e9 😀\n`.repeat(4) });
  assert.equal(scan(long, 1, 2), null);
  assert.deepEqual(scan(long, 1, 1), { limit: 'values', max: 1 });
});

test('the pre-scan yields about every sliceChars characters, inside strings too', () => {
  const text = JSON.stringify(['a'.repeat(10_000), new Array(1000).fill(0)]);
  let yields = 0;
  const slices = textShapeExcessSlices(text, { maxDepth: 10, maxValues: 10_000 }, 1000);
  for (let step = slices.next(); !step.done; step = slices.next()) yields++;
  assert.ok(
    yields >= Math.floor(text.length / 1000) - 1 && yields <= Math.ceil(text.length / 1000),
    `${yields} yields for ${text.length} characters`,
  );
});

test('a deep or many-valued text is refused at the cap, whatever follows it', () => {
  assert.deepEqual(scan(`${'['.repeat(200)} not json at all`, 128, 1000), { limit: 'depth', max: 128 });
  assert.deepEqual(scan(`[${'0,'.repeat(600)} not json`, 128, 500), { limit: 'values', max: 500 });
});

test('a text in pieces (a raw value decoded a piece at a time) counts as the whole text, wherever the cuts fall', () => {
  for (const text of texts) {
    const { depth, values } = exactCaps(JSON.parse(text));
    for (let cut = 0; cut <= text.length; cut++) {
      const pieces = [text.slice(0, cut), text.slice(cut)];
      const inPieces = (maxDepth: number, maxValues: number) => runSlices(piecesShapeExcessSlices(pieces, { maxDepth, maxValues }, 3));
      assert.equal(inPieces(depth, values), null, `cut at ${cut}: ${text}`);
      if (values > 1) assert.deepEqual(inPieces(depth, values - 1), { limit: 'values', max: values - 1 }, `cut at ${cut}: ${text}`);
      assert.deepEqual(inPieces(depth - 1, values), { limit: 'depth', max: depth - 1 }, `cut at ${cut}: ${text}`);
    }
  }
});
