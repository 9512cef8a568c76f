import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LiteralMatcher } from './literal-matcher.js';

/** Every occurrence of every literal, joined where they overlap: what ranges() must answer. */
function bruteForce(text: string, literals: string[]): number[] {
  const covered: Array<[number, number]> = [];
  for (const literal of literals) {
    if (!literal) continue;
    for (let at = text.indexOf(literal); at !== -1; at = text.indexOf(literal, at + 1)) covered.push([at, at + literal.length]);
  }
  covered.sort((a, b) => a[0] - b[0] || b[1] - a[1]);
  const out: number[] = [];
  for (const [start, end] of covered) {
    if (out.length > 0 && out[out.length - 1]! > start) out[out.length - 1] = Math.max(out[out.length - 1]!, end);
    else out.push(start, end);
  }
  return out;
}

test('finds every occurrence, joins overlaps, keeps adjacent ones apart', () => {
  const matcher = new LiteralMatcher(['he', 'she', 'hers', 'his']);
  assert.deepEqual(matcher.ranges('ushers and his'), [1, 6, 11, 14]);
  assert.deepEqual(new LiteralMatcher(['abc']).ranges('abcabc'), [0, 3, 3, 6]);
  assert.deepEqual(new LiteralMatcher(['aaa']).ranges('aaaaa'), [0, 5]);
  assert.deepEqual(new LiteralMatcher([]).ranges('anything'), []);
  assert.deepEqual(new LiteralMatcher(['', 'x']).ranges('axb'), [1, 2]);
  // Astral characters and lone surrogates are UTF-16 units like any other.
  assert.deepEqual(new LiteralMatcher(['😀x', '\ud800']).ranges('a😀x\ud800'), [1, 4, 4, 5]);
});

test('agrees with a brute-force search on random texts and literals', () => {
  let seed = 7;
  const random = (n: number) => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed % n;
  };
  const word = (alphabet: string, length: number) => Array.from({ length }, () => alphabet[random(alphabet.length)]).join('');
  for (let round = 0; round < 300; round++) {
    const alphabet = 'ab\u00e9\ud83d'.slice(0, 2 + random(3));
    const literals = Array.from({ length: 1 + random(6) }, () => word(alphabet, 1 + random(6)));
    const text = word(alphabet, random(60));
    assert.deepEqual(new LiteralMatcher(literals).ranges(text), bruteForce(text, literals), JSON.stringify({ literals, text }));
  }
});

test('a text that keeps almost matching long literals is one pass, not text × literal', () => {
  // A regex alternation of these literals re-reads up to 6,000 units at every position.
  const matcher = new LiteralMatcher(['a'.repeat(5999) + 'b', 'a'.repeat(5998) + 'c']);
  const text = 'a'.repeat(200_000);
  assert.deepEqual(matcher.ranges(text), []);
  assert.deepEqual(matcher.ranges(`${text}b`), [200_000 - 5999, 200_001]);
});
