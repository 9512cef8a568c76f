import assert from 'node:assert/strict';
import { test } from 'node:test';
import { findingTypes, SecretScanner, type Finding } from './secret-scanner.js';

const scan = (text: string, env: string[] = []) => {
  const findings: Finding[] = [];
  return { text: new SecretScanner(env).scanString(text, findings), types: findingTypes(findings) };
};

// One sample per pattern family (assembled at run time so this file holds no literal credential).
const SAMPLES: Array<[string, string]> = [
  ['sk-' + 'proj-' + 'a1B2c3D4e5F6g7H8i9J0kLmN', 'API_KEY'],
  ['sk-' + 'ant-api03-' + 'Zz9Yy8Xx7Ww6Vv5Uu4Tt3Ss2', 'API_KEY'],
  ['sk-' + 'Aa1Bb2Cc3Dd4Ee5Ff6Gg7Hh8Ii9', 'API_KEY'],
  ['sk_' + 'live_' + '51H8xYzAbCdEfGhIjKlMnOp', 'STRIPE_KEY'],
  ['rk_' + 'test_' + '4eC39HqLyjWDarjtT1zdp7dc', 'STRIPE_KEY'],
  ['whsec_' + 'MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'STRIPE_WEBHOOK'],
  ['AKIA' + 'IOSFODNN7EXAMPLE', 'AWS_KEY'],
  ['ghp_' + 'a'.repeat(36), 'GITHUB_TOKEN'],
  ['github_pat_' + '11ABCDEFG0123456789_abcdefghij', 'GITHUB_TOKEN'],
  ['glpat-' + 'xXyYzZ0123456789abcd', 'GITLAB_TOKEN'],
  ['xoxb-' + '1234567890-abcdefghij', 'SLACK_TOKEN'],
  ['mcpw_' + 'ab'.repeat(32), 'MCPWORKS_KEY'],
  ['eyJhbGciOiJIUzI1NiJ9' + '.eyJzdWIiOiIxMjM0NTY3ODkwIn0' + '.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U', 'JWT'],
  ['postgres://admin:' + 's3cr3tpw@db.internal:5432/app', 'CONNECTION_URI'],
  ['mongodb+srv://user:' + 'hunter22@cluster0.example.net/db', 'CONNECTION_URI'],
  ['-----BEGIN ' + 'RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----', 'PRIVATE_KEY'],
];

test('one sample per pattern family is redacted with its marker', () => {
  for (const [secret, marker] of SAMPLES) {
    const { text, types } = scan(`before ${secret} after`);
    assert.equal(text, `before [REDACTED_${marker}] after`, marker);
    assert.deepEqual(types, [marker]);
  }
});

test('an AWS secret is redacted after its key name, which stays', () => {
  const { text, types } = scan('aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY');
  assert.equal(text, 'aws_secret_access_key = [REDACTED_AWS_SECRET]');
  assert.deepEqual(types, ['AWS_SECRET']);
});

test('near-misses are left alone', () => {
  for (const harmless of [
    'sk-short',
    'the task-force met',
    'sk_live_',
    'pk_live_short',
    'AKIA1234',
    'ghp_tooShort',
    'postgres://db.internal:5432/app',
    'https://user@example.com/path',
    'mcpw_' + 'ab'.repeat(10),
    'eyJhbGciOiJIUzI1NiJ9 alone',
    'xoxb-',
    'BEGIN PUBLIC KEY',
    'api_key',
    'a perfectly normal sentence about keys and tokens',
  ]) {
    const { text, types } = scan(harmless);
    assert.equal(text, harmless, harmless);
    assert.deepEqual(types, []);
  }
});

test('env values are redacted raw and in base64, hex and URL-encoded forms', () => {
  const value = 'my secret/value+1';
  const forms = [value, Buffer.from(value).toString('base64'), Buffer.from(value).toString('hex'), encodeURIComponent(value)];
  for (const form of forms) {
    const { text, types } = scan(`x=${form};`, [value]);
    assert.equal(text, 'x=[REDACTED_ENV_VALUE];', form);
    assert.deepEqual(types, ['ENV_VALUE']);
  }
  assert.equal(scan('short', ['short']).text, 'short', 'values under 8 characters are not redacted');
});

test('structured results are scanned deeply, keys included', () => {
  const findings: Finding[] = [];
  const value = new SecretScanner(['tenant-token-123']).scanValue(
    { api_key: 'tenant-token-123', nested: [{ note: 'AKIA' + 'IOSFODNN7EXAMPLE' }], count: 3, ok: true, none: null, ['ghp_' + 'b'.repeat(36)]: 1 },
    findings,
  );
  assert.deepEqual(value, { api_key: '[REDACTED_ENV_VALUE]', nested: [{ note: '[REDACTED_AWS_KEY]' }], count: 3, ok: true, none: null, '[REDACTED_GITHUB_TOKEN]': 1 });
  assert.deepEqual(findingTypes(findings), ['AWS_KEY', 'ENV_VALUE', 'GITHUB_TOKEN']);
});

test('JWTs and private keys are found in one linear pass, also among many near-misses', () => {
  const jwt = 'eyJhbGciOiJIUzI1NiJ9' + '.eyJzdWIiOiIxMjM0NTY3ODkwIn0' + '.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U';
  assert.equal(scan(`a ${jwt} b token-${jwt}.`).text, 'a [REDACTED_JWT] b token-[REDACTED_JWT].');
  assert.equal(scan(`x${jwt}`).text, `x${jwt}`, 'not at a word boundary');
  const pem = (kind: string) => `-----BEGIN ${kind}PRIVATE KEY-----\nMIIB\n-----END ${kind}PRIVATE KEY-----`;
  assert.equal(scan(`${pem('')} and ${pem('EC ')}`).text, '[REDACTED_PRIVATE_KEY] and [REDACTED_PRIVATE_KEY]');
  // Hostile shapes that made backtracking patterns quadratic: many starts, never an end.
  const starts = '-eyJ'.repeat(100_000);
  assert.equal(scan(starts).text, starts);
  const begins = '-----BEGIN PRIVATE KEY-----'.repeat(20_000);
  assert.equal(scan(begins).text, begins);
});

test('a numeric env value returned as a number is redacted too', () => {
  const findings: Finding[] = [];
  assert.deepEqual(new SecretScanner(['12345678901']).scanValue({ n: 12345678901, other: 42 }, findings), { n: '[REDACTED_ENV_VALUE]', other: 42 });
  assert.deepEqual(findingTypes(findings), ['ENV_VALUE']);
});
