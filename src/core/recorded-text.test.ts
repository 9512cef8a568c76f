// The history's cut of a large answer's texts is exactly the cut of their join, made without it.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MAX_RECORDED_RESULT, recordedResult, recordedTexts } from './recorded-text.js';

test('recordedTexts is recordedResult of the texts joined by newlines, at every boundary', () => {
  const max = MAX_RECORDED_RESULT;
  const cases: string[][] = [
    [],
    ['short'],
    ['a', 'b', ''],
    ['x'.repeat(max)],
    ['x'.repeat(max + 1)],
    ['x'.repeat(max - 1), 'y'],
    ['x'.repeat(max), 'stdout:\nlog'],
    ['x'.repeat(max - 3), 'stdout:\nlog', 'stderr:\nwarn'],
    ['x'.repeat(3 * max), 'stdout:\n' + 'o'.repeat(max)],
    // A surrogate pair across the cut is not split, whichever text it is in.
    ['x'.repeat(max - 2) + '😀', 'tail'],
    ['x'.repeat(max - 1) + '😀' + 'z'.repeat(10)],
    ['x'.repeat(max - 2), '😀 after the newline'],
  ];
  for (const texts of cases) {
    assert.equal(recordedTexts(texts), recordedResult(texts.join('\n')), texts.map((text) => text.length).join(','));
  }
  assert.match(recordedTexts(['x'.repeat(max + 5), 'y']), new RegExp(`\\n\\[… result cut at ${max} characters of ${max + 7}\\]$`));
});
