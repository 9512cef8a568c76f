import assert from 'node:assert/strict';
import { test } from 'node:test';
import { encodeEnvHeader, parseEnvHeader } from './env-header.js';
import { isDomainError } from './errors.js';
import { applyTierOverrides, DEFAULT_TIERS } from './tiers.js';

const b64 = (value: string) => Buffer.from(value).toString('base64');
const invalidHeader = (e: unknown) => isDomainError(e) && e.type === 'validation_error' && /X-MCPWorks-Env/.test(e.message);

test('X-MCPWorks-Env: base64 JSON object of strings, optional base64: prefix, absent = none', () => {
  assert.deepEqual(parseEnvHeader(undefined), {});
  assert.deepEqual(parseEnvHeader(''), {});
  assert.deepEqual(parseEnvHeader(encodeEnvHeader({ API_KEY: 'v', REGION: 'eu' })), { API_KEY: 'v', REGION: 'eu' });
  assert.deepEqual(parseEnvHeader(`base64:${b64('{"A":"1"}')}`), { A: '1' });
});

test('X-MCPWorks-Env: every malformed header is a clear validation error that never echoes values', () => {
  const cases = [
    'not base64!',
    b64('not json'),
    b64('["A"]'),
    b64('{"A":1}'),
    b64('{"lower":"x"}'),
    b64('{"PATH":"/evil"}'),
    b64('{"LD_PRELOAD":"/x.so"}'),
    b64('{"PYTHONSTARTUP":"x"}'),
    b64('{"NODE_OPTIONS":"x"}'),
    b64('{"MCPWORKS_X":"x"}'),
    b64(JSON.stringify({ A: 'x'.repeat(8 * 1024 + 1) })),
    b64(JSON.stringify({ A: 'a\u0000b' })),
    b64(JSON.stringify(Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`K${i}`, 'v'])))),
    b64(JSON.stringify(Object.fromEntries(Array.from({ length: 5 }, (_, i) => [`K${i}`, 'x'.repeat(7000)])))),
  ];
  for (const header of cases) assert.throws(() => parseEnvHeader(header), invalidHeader, header.slice(0, 40));
  assert.throws(
    () => parseEnvHeader(b64('{"TOKEN":12345}')),
    (e: unknown) => isDomainError(e) && !e.message.includes('12345'),
  );
});

test('X-MCPWorks-Env: an unexpanded ${VAR} placeholder is named as such, with the :- default as the fix', () => {
  for (const header of ['${MCPWORKS_ENV_B64}', ' ${MCPWORKS_ENV_B64} ', 'base64:${MCPWORKS_ENV_B64}', '${env:MCPWORKS_ENV_B64}']) {
    assert.throws(
      () => parseEnvHeader(header),
      (e: unknown) =>
        invalidHeader(e) &&
        /unexpanded placeholder \$\{(env:)?MCPWORKS_ENV_B64\}/.test((e as Error).message) &&
        /\$\{(env:)?MCPWORKS_ENV_B64:-\}/.test((e as Error).message),
      header,
    );
  }
  assert.deepEqual(parseEnvHeader(''), {}, 'what ${MCPWORKS_ENV_B64:-} expands to when unset: no variables');
});

test('MCPWORKS_TIERS overrides fields, adds plans, and rejects nonsense', () => {
  const tiers = applyTierOverrides('{"pro_trial":{"monthly_executions":20},"team":{"concurrency":-1,"timeout_s":30}}');
  assert.equal(tiers.pro_trial!.monthlyExecutions, 20);
  assert.equal(tiers.pro_trial!.executionsPerMinute, 100, 'unnamed fields keep the spec values');
  assert.equal(tiers.team!.concurrency, null);
  assert.equal(tiers.team!.timeoutSeconds, 30);
  assert.equal(tiers.team!.monthlyExecutions, DEFAULT_TIERS.pro!.monthlyExecutions);
  assert.equal(applyTierOverrides(undefined), DEFAULT_TIERS);
  for (const bad of [
    'nope',
    '[]',
    '{"pro":{"bogus":1}}',
    '{"pro":{"timeout_s":-1}}',
    '{"pro":{"memory_mb":0}}',
    '{"pro":{"concurrency":1.5}}',
    '{"Bad Name":{}}',
    '{"pro":3}',
  ]) {
    assert.throws(() => applyTierOverrides(bad), /MCPWORKS_TIERS/, bad);
  }
});
