import assert from 'node:assert/strict';
import { test } from 'node:test';
import { inspect } from 'node:util';
import { findingTypes, SecretScanner, type Finding } from './secret-scanner.js';

const scan = (text: string, env: string[] = []) => {
  const findings: Finding[] = [];
  return { text: new SecretScanner(env).scanString(text, findings), types: findingTypes(findings) };
};

// Every alternative of every pattern family (assembled at run time so this file holds no literal
// credential): removing any one alternative from a pattern leaves its sample unredacted.
const BODY = 'a1B2c3D4e5F6g7H8i9J0kLmN';
const JWT_SAMPLE = 'eyJhbGciOiJIUzI1NiJ9' + '.eyJzdWIiOiIxMjM0NTY3ODkwIn0' + '.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U';
const pem = (kind: string, block = '') =>
  `-----BEGIN ${kind}PRIVATE KEY${block}-----\nMIIEowIBAAKCAQEA\n-----END ${kind}PRIVATE KEY${block}-----`;
const SAMPLES: Array<[string, string]> = [
  ...['sk-', 'sk-' + 'proj-', 'sk-' + 'ant-api03-', 'sk-' + 'svcacct-', 'sk-' + 'admin-'].map((prefix): [string, string] => [
    prefix + BODY,
    'API_KEY',
  ]),
  ...['sk', 'pk', 'rk'].flatMap((kind) => ['live', 'test'].map((mode): [string, string] => [`${kind}_${mode}_` + BODY, 'STRIPE_KEY'])),
  ['whsec_' + 'MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'STRIPE_WEBHOOK'],
  ...['AKIA', 'ASIA', 'AGPA', 'AIDA', 'AROA', 'ANPA', 'ANVA', 'AIPA'].map((prefix): [string, string] => [
    prefix + 'IOSFODNN7EXAMPLE',
    'AWS_KEY',
  ]),
  ...['ghp_', 'gho_', 'ghs_', 'ghu_', 'ghr_'].map((prefix): [string, string] => [prefix + 'aB3'.repeat(12), 'GITHUB_TOKEN']),
  ['github_pat_' + '11ABCDEFG0123456789_abcdefghij', 'GITHUB_TOKEN'],
  ['glpat-' + 'xXyYzZ0123456789abcd', 'GITLAB_TOKEN'],
  ...['a', 'b', 'p', 'o', 's', 'r'].map((kind): [string, string] => [`xox${kind}-` + '1234567890-abcdefghij', 'SLACK_TOKEN']),
  ...['mcpw_', 'mcpwat_', 'mcpwrt_'].map((prefix): [string, string] => [prefix + 'ab'.repeat(32), 'MCPWORKS_KEY']),
  [JWT_SAMPLE, 'JWT'],
  ...['postgres', 'postgresql', 'mysql', 'mariadb', 'mongodb', 'mongodb+srv', 'redis', 'rediss', 'amqp', 'amqps', 'mssql', 'sqlserver'].map(
    (scheme): [string, string] => [`${scheme}://admin:` + 's3cr3tpw@db.internal:5432/app', 'CONNECTION_URI'],
  ),
  ['POSTGRES://admin:' + 's3cr3tpw@db.internal/app', 'CONNECTION_URI'],
  [pem(''), 'PRIVATE_KEY'],
  [pem('RSA '), 'PRIVATE_KEY'],
  [pem('OPENSSH '), 'PRIVATE_KEY'],
  [pem('ENCRYPTED '), 'PRIVATE_KEY'],
  [pem('PGP ', ' BLOCK'), 'PRIVATE_KEY'],
];

test('every alternative of every pattern family is redacted with its marker', () => {
  for (const [secret, marker] of SAMPLES) {
    const { text, types } = scan(`before ${secret} after`);
    assert.equal(text, `before [REDACTED_${marker}] after`, secret.slice(0, 16));
    assert.deepEqual(types, [marker]);
  }
});

test('an AWS secret is redacted after each spelling of its key name, which stays', () => {
  const secret = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY';
  for (const name of [
    'aws_secret_access_key = ',
    'AWS_SECRET_KEY=',
    'awssecretaccesskey: ',
    'aws_secretkey="',
    "aws_secret_access_key_id:'",
    'aws_secret_accesskey=',
    '"aws_secret_key": "',
  ]) {
    const { text, types } = scan(`${name}${secret}`);
    assert.equal(text, `${name}[REDACTED_AWS_SECRET]`, name);
    assert.deepEqual(types, ['AWS_SECRET']);
  }
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

// A value with everything that makes the forms differ: non-ASCII, both quotes, a backslash, a
// space, a slash, parentheses; 31 UTF-8 bytes (so base64 pads, and +/ appear at every alignment).
const VALUE = 'pä ss/wö(rd) "q" \\ it\'s~!ÿ??';
// What CPython 3.11 prints for it (json.dumps, repr, str(bytes), urllib.parse.quote and quote_plus).
const PYTHON_FORMS: Record<string, string> = {
  'json.dumps': 'p\\u00e4 ss/w\\u00f6(rd) \\"q\\" \\\\ it\'s~!\\u00ff??',
  'json.dumps twice': 'p\\\\u00e4 ss/w\\\\u00f6(rd) \\\\\\"q\\\\\\" \\\\\\\\ it\'s~!\\\\u00ff??',
  repr: 'pä ss/wö(rd) "q" \\\\ it\\\'s~!ÿ??',
  'str(bytes)': 'p\\xc3\\xa4 ss/w\\xc3\\xb6(rd) "q" \\\\ it\\\'s~!\\xc3\\xbf??',
  quote: 'p%C3%A4%20ss/w%C3%B6%28rd%29%20%22q%22%20%5C%20it%27s~%21%C3%BF%3F%3F',
  quote_plus: 'p%C3%A4+ss%2Fw%C3%B6%28rd%29+%22q%22+%5C+it%27s~%21%C3%BF%3F%3F',
  urlsafe_b64encode: 'cMOkIHNzL3fDtihyZCkgInEiIFwgaXQnc34hw78_Pw==',
  'json.dumps of repr': String.raw`p\u00e4 ss/w\u00f6(rd) \"q\" \\\\ it\\'s~!\u00ff??`,
  'json.dumps of str(bytes)': String.raw`p\\xc3\\xa4 ss/w\\xc3\\xb6(rd) \"q\" \\\\ it\\'s~!\\xc3\\xbf??`,
  'list(bytes), json.dumps of it':
    '112, 195, 164, 32, 115, 115, 47, 119, 195, 182, 40, 114, 100, 41, 32, 34, 113, 34, 32, 92, 32, 105, 116, 39, 115, 126, 33, 195, 191, 63, 63',
};
const bytes = Buffer.from(VALUE);
const NODE_FORMS: Record<string, string> = {
  raw: VALUE,
  'JSON.stringify': JSON.stringify(VALUE).slice(1, -1),
  'JSON.stringify twice': JSON.stringify(JSON.stringify(VALUE)).slice(3, -3),
  'util.inspect': inspect(VALUE).slice(1, -1),
  'JSON.stringify of util.inspect': JSON.stringify(inspect(VALUE).slice(1, -1)).slice(1, -1),
  // json.dumps(..., ensure_ascii=False) escapes as JSON.stringify does.
  'json.dumps (ensure_ascii=False) of repr': JSON.stringify(PYTHON_FORMS.repr).slice(1, -1),
  base64: bytes.toString('base64'),
  'base64 unpadded': bytes.toString('base64').replace(/=+$/, ''),
  base64url: bytes.toString('base64url'),
  hex: bytes.toString('hex'),
  HEX: bytes.toString('hex').toUpperCase(),
  encodeURIComponent: encodeURIComponent(VALUE),
  'encodeURIComponent, + for space': encodeURIComponent(VALUE).replace(/%20/g, '+'),
  // Also what Python's bytes.hex(' ') prints.
  'util.inspect of a Buffer': inspect(bytes).slice('<Buffer '.length, -1),
  'JSON.stringify of a Buffer': JSON.stringify(bytes).slice('{"type":"Buffer","data":['.length, -2),
};

test('env values are redacted in every form everyday code writes them', () => {
  for (const [name, form] of Object.entries({ ...PYTHON_FORMS, ...NODE_FORMS })) {
    const { text, types } = scan(`x=${form};`, [VALUE]);
    assert.equal(text, 'x=[REDACTED_ENV_VALUE];', name);
    assert.deepEqual(types, ['ENV_VALUE']);
  }
  // Each form differs from the others, so each is tested on its own.
  const all = Object.values({ ...PYTHON_FORMS, ...NODE_FORMS });
  assert.equal(new Set(all).size, all.length);
  assert.equal(scan('short', ['short']).text, 'short', 'values under 8 characters are not redacted');
});

test('base64 of an env value inside other bytes is redacted at each of the three alignments', () => {
  for (const alphabet of ['base64', 'base64url'] as const) {
    for (const offset of [0, 1, 2]) {
      const encoded = Buffer.concat([Buffer.from([0xfe, 0x01]).subarray(0, offset), bytes, Buffer.from([0xf7, 8, 9])]).toString(alphabet);
      // Only the characters that bits around the value share stay.
      const head = Math.ceil((offset * 8) / 6);
      const tail = Math.floor(((offset + bytes.length) * 8) / 6);
      const { text } = scan(encoded, [VALUE]);
      assert.equal(text, `${encoded.slice(0, head)}[REDACTED_ENV_VALUE]${encoded.slice(tail)}`, `${alphabet} at offset ${offset}`);
    }
  }
});

test('the forms of a value are redacted wherever they touch or overlap', () => {
  const other = 'second-secret-value';
  const { text, types } = scan(`${VALUE}${VALUE}|${other.slice(0, 7)}${other}|${Buffer.from(other).toString('hex')}`, [VALUE, other]);
  assert.equal(text, '[REDACTED_ENV_VALUE][REDACTED_ENV_VALUE]|second-[REDACTED_ENV_VALUE]|[REDACTED_ENV_VALUE]');
  assert.deepEqual(types, ['ENV_VALUE']);
  // Two values where one's end is the other's start: the joined stretch is redacted whole.
  assert.equal(scan('<abcdefgh12345678>', ['abcdefgh1234', 'gh12345678']).text, '<[REDACTED_ENV_VALUE]>');
});

test('structured results are scanned deeply, keys included', () => {
  const findings: Finding[] = [];
  const value = new SecretScanner(['tenant-token-123']).scanValue(
    {
      api_key: 'tenant-token-123',
      nested: [{ note: 'AKIA' + 'IOSFODNN7EXAMPLE' }],
      count: 3,
      ok: true,
      none: null,
      ['ghp_' + 'b'.repeat(36)]: 1,
    },
    findings,
  );
  assert.deepEqual(value, {
    api_key: '[REDACTED_ENV_VALUE]',
    nested: [{ note: '[REDACTED_AWS_KEY]' }],
    count: 3,
    ok: true,
    none: null,
    '[REDACTED_GITHUB_TOKEN]': 1,
  });
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
  assert.deepEqual(new SecretScanner(['12345678901']).scanValue({ n: 12345678901, other: 42 }, findings), {
    n: '[REDACTED_ENV_VALUE]',
    other: 42,
  });
  assert.deepEqual(findingTypes(findings), ['ENV_VALUE']);
});

test('values of any depth are scanned without recursion; keys named __proto__ stay keys', () => {
  let deep: unknown = 'tenant-token-123';
  for (let i = 0; i < 400_000; i++) deep = i % 2 ? [deep] : { k: deep };
  const findings: Finding[] = [];
  let out = new SecretScanner(['tenant-token-123']).scanValue(deep, findings);
  let depth = 0;
  while (typeof out === 'object' && out !== null) {
    out = Array.isArray(out) ? out[0] : (out as { k: unknown }).k;
    depth++;
  }
  assert.equal(depth, 400_000);
  assert.equal(out, '[REDACTED_ENV_VALUE]');
  const parsed = JSON.parse('{"__proto__": {"x": "tenant-token-123"}, "b": [1, "tenant-token-123"]}');
  const scanned = new SecretScanner(['tenant-token-123']).scanValue(parsed, []);
  assert.equal(JSON.stringify(scanned), '{"__proto__":{"x":"[REDACTED_ENV_VALUE]"},"b":[1,"[REDACTED_ENV_VALUE]"]}');
});

const CUT = '\n[output cut: 1234 more bytes not shown]\n';

test('what survives of an env value cut short is redacted at the cut: the stdout/stderr cap, util.inspect of a long Buffer or string', () => {
  const value = 'tenant-secret-0123456789-abcdefghijklmnop';
  for (const kept of [4, 12, value.length - 1]) {
    const { text, types } = scan(`log: ${value.slice(0, kept)}${CUT}`, [value]);
    assert.equal(text, `log: [REDACTED_ENV_VALUE]${CUT}`, `${kept} characters kept`);
    assert.deepEqual(types, ['ENV_VALUE']);
  }
  // Any form: base64 and JSON-escaped values cut short too.
  const encoded = Buffer.from(value).toString('base64');
  assert.equal(scan(`b64 ${encoded.slice(0, 20)}${CUT}`, [value]).text, `b64 [REDACTED_ENV_VALUE]${CUT}`);
  // A UTF-8 sequence cut in two leaves U+FFFD after what survived.
  const cutBytes = Buffer.from(`x ${VALUE}`).subarray(0, 11);
  assert.equal(scan(`${cutBytes.toString()}${CUT}`, [VALUE]).text, `x [REDACTED_ENV_VALUE]\uFFFD${CUT}`);
  // util.inspect shows 50 bytes of a Buffer and 10,000 characters of a string.
  const long = value.repeat(2);
  const buffer = inspect(Buffer.from(long));
  assert.match(buffer, / \.\.\. 32 more bytes>$/);
  assert.equal(scan(buffer, [long]).text, '<Buffer [REDACTED_ENV_VALUE] ... 32 more bytes>');
  assert.equal(scan(inspect(Buffer.from(`id=${long}`)), [long]).text, '<Buffer 69 64 3d [REDACTED_ENV_VALUE] ... 35 more bytes>');
  const string = inspect(`${'x'.repeat(9_990)}${value}`);
  assert.match(string, /'\.\.\. 31 more characters$/);
  assert.equal(scan(string, [value]).text, `'${'x'.repeat(9_990)}[REDACTED_ENV_VALUE]'... 31 more characters`);
  // Only at a cut, and only from 4 characters: elsewhere a value's start is not the value.
  assert.equal(scan(`log: ${value.slice(0, 12)} and more`, [value]).text, `log: ${value.slice(0, 12)} and more`);
  assert.equal(scan(`log: ${value.slice(0, 3)}${CUT}`, [value]).text, `log: ${value.slice(0, 3)}${CUT}`);
  assert.equal(scan(`plain words${CUT}`, [value]).text, `plain words${CUT}`);
});

test('what survives of a pattern secret cut short is redacted at the cut, for every family', () => {
  const samples: Array<[string, string, string?]> = [
    ['postgres://admin:' + 'hunt', 'CONNECTION_URI'],
    ['whsec_' + 'MfKQ9r', 'STRIPE_WEBHOOK'],
    ['sk_live_' + 'a1B2', 'STRIPE_KEY'],
    ['sk-' + 'proj-a1', 'API_KEY'],
    ['AKIA' + 'IOSF', 'AWS_KEY'],
    ...['ghp_', 'gho_', 'ghs_', 'ghu_', 'ghr_'].map((prefix): [string, string] => [prefix + 'aB3aB3', 'GITHUB_TOKEN']),
    ['github_pat_' + '11ABC', 'GITHUB_TOKEN'],
    ['glpat-' + 'xXyY', 'GITLAB_TOKEN'],
    ['xoxb-' + '12345', 'SLACK_TOKEN'],
    ...['mcpw_', 'mcpwat_', 'mcpwrt_'].map((prefix): [string, string] => [prefix + 'abab', 'MCPWORKS_KEY']),
    ['eyJhbGciOiJIUzI1NiJ9' + '.eyJzdWIi', 'JWT'],
    ['-----BEGIN RSA PRIVATE KEY-----\nMIIEow', 'PRIVATE_KEY'],
    ['aws_secret_access_key = "' + 'wJalrXUtnF', 'AWS_SECRET', 'aws_secret_access_key = "'],
  ];
  for (const [partial, marker, kept = ''] of samples) {
    for (const cut of [CUT, ' ... 7 more bytes>', "'... 7 more characters"]) {
      const { text, types } = scan(`before ${partial}${cut}`);
      assert.equal(text, `before ${kept}[REDACTED_${marker}]${cut}`, `${partial} ${JSON.stringify(cut)}`);
      assert.deepEqual(types, [marker]);
    }
  }
  for (const harmless of [
    'sk-',
    'ghp_',
    'the task-force',
    'a finished key: -----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY----- done',
  ]) {
    assert.equal(scan(`${harmless}${CUT}`).text, `${harmless}${CUT}`, harmless);
  }
  // Many cuts: each looks back only to the one before, so this stays linear.
  const many = `\nsk-${'a'.repeat(100)}'... 1 more character`.repeat(20_000);
  assert.ok(scan(many).text === "\n[REDACTED_API_KEY]'... 1 more character".repeat(20_000), 'each of many cuts');
});

test('an env value in an array of byte values (a returned Buffer, Python list(bytes)) becomes one marker', () => {
  const value = 'tenant-token-123';
  const data = [...Buffer.from(`xx${value}yy`)];
  const findings: Finding[] = [];
  const scanned = new SecretScanner([value]).scanValue({ type: 'Buffer', data, other: [...Buffer.from(value)] }, findings);
  assert.deepEqual(scanned, { type: 'Buffer', data: [120, 120, '[REDACTED_ENV_VALUE]', 121, 121], other: ['[REDACTED_ENV_VALUE]'] });
  assert.deepEqual(findingTypes(findings), ['ENV_VALUE']);
  const harmless = [...Buffer.from('no secret in here at all')];
  assert.deepEqual(new SecretScanner([value]).scanValue(harmless, []), harmless);
  const mixed = [...data, 'x'];
  assert.deepEqual(new SecretScanner([value]).scanValue(mixed, []), mixed, 'not all bytes: each element scanned as itself');
});

test('the end of an env value that starts a traceback the server cut (it keeps the end) is redacted', () => {
  const value = 'tenant-secret-0123456789-abcdefghijklmnop';
  const cut = '[traceback cut]\n';
  for (const kept of [4, 20, value.length - 1]) {
    const { text, types } = scan(`printed\n${cut}${value.slice(-kept)}\n  File "x.py"`, [value]);
    assert.equal(text, `printed\n${cut}[REDACTED_ENV_VALUE]\n  File "x.py"`, `${kept} characters kept`);
    assert.deepEqual(types, ['ENV_VALUE']);
  }
  const json = JSON.stringify(value).slice(1, -1);
  assert.equal(scan(`${cut}${json.slice(-10)} more`, [value]).text, `${cut}[REDACTED_ENV_VALUE] more`, 'any form');
  // Only the last marker is the server's (the traceback comes last); under 4 characters stays.
  assert.equal(scan(`${cut}${value.slice(-10)}\n${cut}ok`, [value]).text, `${cut}${value.slice(-10)}\n${cut}ok`);
  assert.equal(scan(`${cut}${value.slice(-3)} x`, [value]).text, `${cut}${value.slice(-3)} x`);
});
