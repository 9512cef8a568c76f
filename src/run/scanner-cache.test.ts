import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LiteralMatcher } from '../core/literal-matcher.js';
import { envValueForms, SecretScanner } from '../core/secret-scanner.js';
import { SecretScannerCache } from './scanner-cache.js';

const redact = (cache: SecretScannerCache, values: string[], text: string) => cache.for(values).scanString(text, []);

test('one scanner per set of env values, whatever their order; it redacts exactly those values', () => {
  const cache = new SecretScannerCache();
  const a = cache.for(['alpha-secret-1', 'beta-secret-22']);
  assert.equal(cache.for(['beta-secret-22', 'alpha-secret-1']), a);
  assert.notEqual(cache.for(['alpha-secret-1']), a);
  assert.equal(redact(cache, ['alpha-secret-1'], 'x alpha-secret-1 beta-secret-22'), 'x [REDACTED_ENV_VALUE] beta-secret-22');
  assert.equal(
    redact(cache, ['beta-secret-22', 'alpha-secret-1'], 'x alpha-secret-1 beta-secret-22'),
    'x [REDACTED_ENV_VALUE] [REDACTED_ENV_VALUE]',
  );
});

test('bounded by entries and by the code units its matchers hold, oldest use out first', () => {
  const byEntries = new SecretScannerCache(2);
  const first = byEntries.for(['first-value-1']);
  byEntries.for(['second-value-2']);
  assert.equal(byEntries.for(['first-value-1']), first, 'a hit is a use');
  byEntries.for(['third-value-33']);
  assert.equal(byEntries.for(['first-value-1']), first, 'the least recently used went, not the first made');
  assert.notEqual(byEntries.for(['second-value-2']), byEntries.for(['fourth-value-4']), 'distinct sets');
  const big = 'v'.repeat(4000);
  const byUnits = new SecretScannerCache(64, 50_000);
  const kept = byUnits.for([`${big}-a`]);
  for (let i = 0; i < 20; i++) byUnits.for([`${big}-${i}`]);
  assert.notEqual(byUnits.for([`${big}-a`]), kept, 'evicted once the units passed the bound');
});

test("a scanner's size counts every form it holds: in its matcher and the copies kept for the traceback's head cut", () => {
  const value = 'size-secret-Zx81Qp';
  const formUnits = envValueForms(value).reduce((sum, form) => sum + form.length, 0);
  assert.equal(new SecretScanner([value]).envUnits, new LiteralMatcher(envValueForms(value)).units + formUnits);
  // Room for both matchers, not for their kept forms too: the second scanner pushes the first out.
  const cache = new SecretScannerCache(64, 3 * formUnits);
  const first = cache.for([value]);
  cache.for(['size-secret-other-Zx81Qp'.slice(0, value.length)]);
  assert.notEqual(cache.for([value]), first);
});
