import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CodeCache } from './code-cache.js';

test('a version loaded by two calls at once is counted once: the cache keeps what fits', async () => {
  const code = 'x'.repeat(1000); // 2,000 bytes as the cache counts them
  const loads: string[] = [];
  const cache = new CodeCache(async (ids) => {
    loads.push(...ids);
    await new Promise((resolve) => setTimeout(resolve, 10));
    return new Map(ids.map((id) => [id, code]));
  }, 4000);
  const fn = (versionId: string) => ({ versionId, service: 's', name: 'f' });
  // Both miss before either has remembered the code.
  await Promise.all([cache.codeOf(fn('a')), cache.codeOf(fn('a'))]);
  await cache.codeOf(fn('b'));
  // a and b fit in 4,000 bytes; counted twice, a would have been evicted by b.
  await cache.codeOf(fn('a'));
  await cache.codeOf(fn('b'));
  assert.deepEqual(loads, ['a', 'a', 'b']);
});
