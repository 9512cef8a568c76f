// A zygote child's token (what its sockets present to the host): 128 fresh random bits each, drawn
// from a pool refilled every 64 tokens, never the bytes of another token.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { freshToken } from './child.js';

test('child tokens are 32 hex digits, each of bytes no other token had, across pool refills', () => {
  const tokens = Array.from({ length: 64 * 5 + 3 }, () => freshToken());
  for (const token of tokens) assert.match(token, /^[0-9a-f]{32}$/);
  assert.equal(new Set(tokens).size, tokens.length);
  // No token shares its first or last half with another (a pool read at the wrong offset would).
  assert.equal(new Set(tokens.map((t) => t.slice(0, 16))).size, tokens.length);
  assert.equal(new Set(tokens.map((t) => t.slice(16))).size, tokens.length);
});
