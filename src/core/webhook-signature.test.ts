// Webhook signatures and delivery rules (pure): HMAC over "timestamp.body" under the secret, the
// window both ways, constant-time compare, and the rules of paths, secrets, keys and handler input.
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { test } from 'node:test';
import { SIGNATURE_WINDOW_SECONDS, signatureHeader, verifySignature } from './webhook-signature.js';
import {
  idempotencyKeyOf,
  validateHandlerName,
  validateOrchestrationMode,
  validateWebhookPath,
  validateWebhookSecret,
  waitSeconds,
  webhookInput,
} from './webhooks.js';
import { applyTierOverrides, DEFAULT_TIERS } from './tiers.js';
import { isDomainError } from './errors.js';

const SECRET = 'whsec-test-0123456789abcdef';
const NOW = 1_790_000_000;
const body = Buffer.from('{"event":"push"}');
// What a sender computes with node:crypto by hand: the module must agree with it, not only with itself.
const signed = (ts: number | string, b: Uint8Array = body, secret = SECRET) =>
  `sha256=${createHmac('sha256', secret).update(`${ts}.`).update(b).digest('hex')}`;
const check = (over: Partial<Parameters<typeof verifySignature>[0]>) =>
  verifySignature({ secret: SECRET, body, signature: signed(NOW), timestamp: String(NOW), nowSeconds: NOW, ...over });

test('a good signature passes; the helper signs what a sender signs by hand', () => {
  assert.equal(signatureHeader(SECRET, NOW, body), signed(NOW));
  const ok = check({});
  assert.ok(ok.ok);
  assert.equal(ok.ok && ok.signature, signed(NOW).slice(7));
  // Upper-case hex is the same signature (and is remembered in lower case for replay checks).
  const upper = check({ signature: `sha256=${signed(NOW).slice(7).toUpperCase()}` });
  assert.ok(upper.ok && upper.signature === signed(NOW).slice(7));
});

test('wrong secret, changed body, changed timestamp, other algorithm: refused as a mismatch', () => {
  for (const over of [
    { signature: signed(NOW, body, 'another-secret-0123456789') },
    { body: Buffer.from('{"event":"push "}') },
    { signature: signed(NOW - 1) },
    // The hosted original's "signature": sha256 of the body alone, no secret.
    { signature: `sha256=${createHmac('sha256', '').update(body).digest('hex')}` },
  ]) {
    const result = check(over);
    assert.equal(result.ok, false);
    assert.equal(!result.ok && result.reason, 'mismatch');
  }
});

test('the 5-minute window holds both ways, to the second', () => {
  assert.equal(SIGNATURE_WINDOW_SECONDS, 300);
  for (const skew of [-300, 300]) assert.ok(check({ timestamp: String(NOW + skew), signature: signed(NOW + skew) }).ok, `skew ${skew}`);
  for (const skew of [-301, 301]) {
    const result = check({ timestamp: String(NOW + skew), signature: signed(NOW + skew) });
    assert.equal(!result.ok && result.reason, 'stale', `skew ${skew}`);
  }
});

test('missing and malformed headers get their own reasons', () => {
  const reason = (over: Partial<Parameters<typeof verifySignature>[0]>) => {
    const r = check(over);
    return r.ok ? 'ok' : r.reason;
  };
  assert.equal(reason({ signature: undefined }), 'missing_signature');
  assert.equal(reason({ signature: '' }), 'missing_signature');
  assert.equal(reason({ timestamp: undefined }), 'missing_timestamp');
  assert.equal(reason({ timestamp: '1.79e9' }), 'malformed_timestamp');
  assert.equal(reason({ timestamp: String(NOW * 1000) + '0' }), 'malformed_timestamp');
  assert.equal(reason({ signature: signed(NOW).slice(7) }), 'malformed_signature');
  assert.equal(reason({ signature: `sha1=${'a'.repeat(40)}` }), 'malformed_signature');
  assert.equal(reason({ signature: `sha256=${'a'.repeat(63)}` }), 'malformed_signature');
});

const refusedWith = (fn: () => unknown, field: string) =>
  assert.throws(fn, (e: unknown) => isDomainError(e) && e.type === 'validation_error' && e.details?.field === field);

test('paths: one safe URL segment; secrets: HMAC keys; handlers: service.function; only direct mode', () => {
  assert.equal(validateWebhookPath('github-push'), 'github-push');
  assert.equal(validateWebhookPath('/on_event2'), 'on_event2');
  for (const bad of ['', 'A', 'a/b', '..', 'a.b', '-a', 'a-', 'a%2f', 'x'.repeat(65), 7])
    refusedWith(() => validateWebhookPath(bad), 'path');
  assert.equal(validateWebhookSecret(undefined), undefined);
  assert.equal(validateWebhookSecret('x'.repeat(16)), 'x'.repeat(16));
  for (const bad of ['short', 'x'.repeat(257), ` ${'x'.repeat(20)}`, `${'x'.repeat(20)}\n`, 12])
    refusedWith(() => validateWebhookSecret(bad), 'secret');
  assert.deepEqual(validateHandlerName('github.on-push'), { service: 'github', fn: 'on-push', name: 'github.on-push' });
  for (const bad of ['github', 'a.b.c', 'Git.x', '.x', 'x.']) refusedWith(() => validateHandlerName(bad), 'handler_function_name');
  assert.equal(validateOrchestrationMode(undefined), 'direct');
  assert.equal(validateOrchestrationMode('run_then_reason'), 'run_then_reason');
  assert.equal(validateOrchestrationMode('reason_first'), 'reason_first');
  refusedWith(() => validateOrchestrationMode('magic'), 'orchestration_mode');
});

test('Idempotency-Key: absent or empty is none; visible ASCII up to 255', () => {
  assert.equal(idempotencyKeyOf(undefined), undefined);
  assert.equal(idempotencyKeyOf('  '), undefined);
  assert.equal(idempotencyKeyOf(' delivery-1 '), 'delivery-1');
  refusedWith(() => idempotencyKeyOf('a b'), 'Idempotency-Key');
  refusedWith(() => idempotencyKeyOf('k'.repeat(256)), 'Idempotency-Key');
});

test('handler input: JSON when typed JSON and parsable, else text; credentials withheld; non-UTF-8 refused', () => {
  const input = (raw: string | Uint8Array, contentType?: string) =>
    webhookInput({
      raw: typeof raw === 'string' ? Buffer.from(raw) : raw,
      contentType,
      headers: [
        ['content-type', contentType ?? ''],
        ['authorization', 'Bearer x'],
        ['cookie', 'a=b'],
        ['x-mcpworks-signature', 'sha256=00'],
        ['x-mcpworks-timestamp', '1'],
        ['x-github-event', 'push'],
      ],
      query: [
        ['a', '1'],
        ['a', '2'],
      ],
      path: 'hook',
    });
  assert.deepEqual(input('{"a":[1]}', 'application/json; charset=utf-8').body, { a: [1] });
  assert.deepEqual(input('{"a":1}', 'application/vnd.github+json').body, { a: 1 });
  assert.equal(input('{"a":', 'application/json').body, '{"a":');
  assert.equal(input('{"a":1}', 'text/plain').body, '{"a":1}');
  assert.equal(input('', 'application/json').body, '');
  const full = input('x', 'text/plain');
  assert.deepEqual(Object.keys(full.headers).sort(), ['content-type', 'x-github-event', 'x-mcpworks-timestamp']);
  assert.deepEqual(full.query, { a: '2' });
  assert.equal(full.path, 'hook');
  assert.throws(() => input(Uint8Array.from([0x7b, 0xff, 0x7d]), 'application/json'), /not UTF-8/);
});

test('tiers: payload caps 1/5/10 MB, a rate per webhook; MCPWORKS_TIERS names both; waits are bounded', () => {
  const MB = 1024 * 1024;
  assert.deepEqual(
    ['pro_trial', 'pro', 'enterprise', 'dedicated'].map((t) => DEFAULT_TIERS[t]!.webhookPayloadBytes),
    [1 * MB, 1 * MB, 5 * MB, 10 * MB],
  );
  const tiers = applyTierOverrides('{"pro":{"webhook_payload_bytes":2048,"webhook_requests_per_minute":-1}}');
  assert.equal(tiers.pro!.webhookPayloadBytes, 2048);
  assert.equal(tiers.pro!.webhookRequestsPerMinute, null);
  assert.throws(() => applyTierOverrides('{"pro":{"webhook_payload_bytes":0}}'), /at least 1/);
  assert.throws(() => applyTierOverrides('{"pro":{"webhook_payload_bytes":-1}}'), /at least 1/);
  assert.equal(waitSeconds({ timeoutSeconds: 90 }), 120);
  assert.equal(waitSeconds({ timeoutSeconds: 3000 }), 330);
});
