import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { ScanPool } from './scan-pool.js';

const secret = 'pool-secret-value-7f3a';
const pool = new ScanPool();
after(() => pool.close());

test('a large answer is scanned in a worker: redacted, findings and byte count of the redacted JSON', async () => {
  const value = { ok: true, result: { text: `${'x'.repeat(200_000)} ${secret} ${Buffer.from(secret).toString('base64')}` }, stdout: `out ${secret}`, stderr: '' };
  const outcome = await pool.scan([secret], value);
  const text = JSON.stringify(outcome.value);
  assert.doesNotMatch(text, /pool-secret/);
  assert.match(text, /x \[REDACTED_ENV_VALUE\] \[REDACTED_ENV_VALUE\]"/);
  assert.match(text, /"stdout":"out \[REDACTED_ENV_VALUE\]"/);
  assert.deepEqual(outcome.findings, [{ type: 'ENV_VALUE' }]);
  assert.equal(outcome.bytes, Buffer.byteLength(text));
});

test('a large answer with nothing to redact comes back as it was', async () => {
  const value = { ok: true, result: 'y'.repeat(100_000), stdout: '', stderr: '' };
  const outcome = await pool.scan(['z'.repeat(5000)], value);
  assert.equal(outcome.value, value);
  assert.deepEqual(outcome.findings, []);
  assert.equal(outcome.bytes, Buffer.byteLength(JSON.stringify(value)));
});

test('small answers are scanned in place, patterns too', async () => {
  const outcome = await pool.scan([secret], { ok: false, error: `bad ${secret} ghp_${'a'.repeat(36)}`, error_type: 'E', stdout: '', stderr: '' });
  assert.deepEqual(outcome.value, { ok: false, error: 'bad [REDACTED_ENV_VALUE] [REDACTED_GITHUB_TOKEN]', error_type: 'E', stdout: '', stderr: '' });
});

test('a scan that overruns its deadline fails (the caller withholds), and the next one works', async () => {
  const slow = new ScanPool({ workers: 1, deadlineMs: 1 });
  try {
    const big = { ok: true, result: `${secret} `.repeat(400_000), stdout: '', stderr: '' };
    await assert.rejects(slow.scan(['q'.repeat(3000), secret], big), /deadline/);
  } finally {
    await slow.close();
  }
  const outcome = await pool.scan(['q'.repeat(3000), secret], { ok: true, result: `${secret} `.repeat(10_000), stdout: '', stderr: '' });
  assert.doesNotMatch(JSON.stringify(outcome.value), /pool-secret/);
});

test('a scan the worker cannot complete fails (the caller withholds the answer)', async () => {
  // Forms beyond what one matcher may hold: the worker's scanner cannot be built.
  const huge = 'h'.repeat(250_000);
  await assert.rejects(pool.scan([huge], { ok: true, result: `${huge} `.repeat(2), stdout: '', stderr: '' }), /the scan failed/);
});
