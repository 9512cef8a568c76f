// The sliced parse of a large MCP body (json-sliced-parse.ts) must give exactly what JSON.parse
// gives, and refuse exactly what it refuses: checked against JSON.parse itself on random texts
// (nesting, strings with brackets, commas, escapes and unicode, duplicate and "__proto__" keys,
// numbers of every form, whitespace), at piece sizes small enough that every path is taken, and on
// the same texts with a character deleted, inserted or replaced.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { runSlices } from './json-schema.js';
import { parseJsonSlices } from './json-sliced-parse.js';

let seed = 7;
const random = (n: number) => {
  seed = (seed * 1103515245 + 12345) % 2 ** 31;
  return seed % n;
};
const pick = <T>(items: readonly T[]): T => items[random(items.length)]!;
const space = () => pick(['', '', '', ' ', '\n', ' \t ', '\r\n']);
const strings = [
  '',
  'a',
  '[',
  ']',
  '{',
  '}',
  ',',
  ':',
  '\\"',
  '\\\\',
  '\\\\\\"',
  '\\u0022',
  '\\n',
  'é',
  '😀',
  '\\ud83d\\ude00',
  '[{,\\"}]',
  '__proto__',
];
const numbers = ['0', '-0', '1', '-12', '3.25', '1e3', '-2.5E-3', '9007199254740993', '1e400', '0.1'];
const keys = ['"a"', '"b"', '"a"', '"__proto__"', '"1"', '"10"', '"k,]"', '"\\"x"', '"é"'];

function value(depth: number): string {
  const kind = depth > 5 ? random(3) : random(6);
  if (kind === 0) return `"${Array.from({ length: random(4) }, () => pick(strings)).join('')}"`;
  if (kind === 1) return pick(numbers);
  if (kind === 2) return pick(['true', 'false', 'null']);
  const count = random(kind === 5 ? 12 : 5);
  if (kind === 3 || kind === 5)
    return `[${space()}${Array.from({ length: count }, () => `${space()}${value(depth + 1)}${space()}`).join(',')}]`;
  return `{${space()}${Array.from({ length: count }, () => `${space()}${pick(keys)}${space()}:${space()}${value(depth + 1)}`).join(',')}${space()}}`;
}

function outcome(parse: () => unknown): { ok: true; value: unknown } | { ok: false } {
  try {
    return { ok: true, value: parse() };
  } catch (error) {
    assert.ok(error instanceof SyntaxError, `not a SyntaxError: ${String(error)}`);
    return { ok: false };
  }
}

test('the sliced parse gives what JSON.parse gives, and refuses what it refuses', () => {
  const alphabet = ['[', ']', '{', '}', '"', ',', ':', ' ', '0', 'a', '\\', '-', 'e'];
  for (let round = 0; round < 600; round++) {
    const text = `${space()}${value(0)}${space()}`;
    const piece = 1 + random(24);
    const expected = outcome(() => JSON.parse(text));
    assert.equal(expected.ok, true, text);
    const got = outcome(() => runSlices(parseJsonSlices(text, piece)));
    assert.deepStrictEqual(got, expected, `piece ${piece}: ${text}`);
    for (let mutation = 0; mutation < 6; mutation++) {
      const at = random(text.length + 1);
      const how = random(3);
      const broken =
        how === 0
          ? text.slice(0, at) + text.slice(at + 1)
          : how === 1
            ? text.slice(0, at) + pick(alphabet) + text.slice(at)
            : text.slice(0, at) + pick(alphabet) + text.slice(at + 1);
      const want = outcome(() => JSON.parse(broken));
      assert.deepStrictEqual(
        outcome(() => runSlices(parseJsonSlices(broken, piece))),
        want,
        `piece ${piece}: ${broken}`,
      );
    }
  }
});

test('"__proto__" keys become own properties, never the prototype, in large and small objects', () => {
  const text = `{"__proto__":{"polluted":true},"x":[${'1,'.repeat(50)}1],"__proto__":[${'2,'.repeat(50)}2]}`;
  const parsed = runSlices(parseJsonSlices(text, 8)) as Record<string, unknown>;
  assert.equal(Object.getPrototypeOf(parsed), Object.prototype);
  assert.deepStrictEqual(parsed, JSON.parse(text));
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
});

test('a large body is parsed in many slices', () => {
  const text = JSON.stringify({ jsonrpc: '2.0', id: 1, params: { arguments: { items: new Array(100_000).fill('abcdefghijklm') } } });
  let slices = 0;
  const parse = parseJsonSlices(text, 64 * 1024);
  let step = parse.next();
  for (; !step.done; step = parse.next()) slices++;
  assert.ok(slices >= (2 * text.length) / (64 * 1024) - 2, `${slices} slices for ${text.length} characters`);
  assert.deepStrictEqual(step.value, JSON.parse(text));
});
