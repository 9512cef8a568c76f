// test-database: embedded, start-up refuses before the database matters
/** MCPWORKS_SANDBOX_UIDS: the parser on its own, then `mcpworks serve` refusing a bad range at start. */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { DEFAULT_SANDBOX_UIDS, hostPasswd, MAX_SANDBOX_UIDS, MIN_SANDBOX_UIDS, parseSandboxUids } from './uid-range.js';
import { cliCommand } from '../test-support/cli-command.js';

const PASSWD = [
  'root:x:0:0:root:/root:/bin/bash',
  'nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin',
  'alice:x:1000:1000::/home/alice:/bin/bash',
  'build:x:2000000100:2000000100::/home/build:/bin/sh',
  '# comment:x:5000:',
  '',
].join('\n');
const host = { passwd: PASSWD, npmUid: 65533 };

test('a valid range is read; unset is the default range, checked the same way', () => {
  assert.deepEqual(parseSandboxUids('100000-165535', host), { first: 100_000, count: 65_536 });
  assert.deepEqual(parseSandboxUids(' 3000000000-3000000063 ', host), { first: 3_000_000_000, count: MIN_SANDBOX_UIDS });
  assert.deepEqual(parseSandboxUids(undefined, { passwd: '', npmUid: 65533 }), DEFAULT_SANDBOX_UIDS);
  assert.deepEqual(parseSandboxUids('', { passwd: '', npmUid: 65533 }), DEFAULT_SANDBOX_UIDS);
  // The default range overlaps a host user here: refused too.
  assert.throws(() => parseSandboxUids(undefined, host), /uid 2000000100 of the host's user "build"/);
});

test('ranges that take in root, nobody, the npm user, a host user or reserved uids are refused', () => {
  const refused: Array<[string, RegExp, { passwd: string; npmUid: number }?]> = [
    ['0-65535', /includes uid 0 \(root\)/],
    ['500-999', /starts below 1000/],
    ['60000-70000', /includes uid 65534 \(nobody\)/],
    ['65535-70000', /includes uid 65535/],
    ['65000-65533', /includes uid 65533, which npm installs run as/],
    ['100000-100100', /includes uid 100050, which npm installs run as/, { passwd: PASSWD, npmUid: 100_050 }],
    ['1000-1100', /includes uid 1000 of the host's user "alice"/],
    ['2000000000-2000065535', /includes uid 2000000100 of the host's user "build"/],
    ['4294967200-4294967294', /ends above 4294967293/],
    ['4294967232-4294967295', /ends above 4294967293/],
    ['100000-100062', new RegExp(`holds 63 uids; at least ${MIN_SANDBOX_UIDS}`)],
    [`100000-${100_000 + MAX_SANDBOX_UIDS}`, new RegExp(`at most ${MAX_SANDBOX_UIDS}`)],
    ['100100-100000', /below the first/],
    ['100000', /must be FIRST-LAST/],
    ['100000-', /must be FIRST-LAST/],
    ['-5-100', /must be FIRST-LAST/],
    ['1e5-2e5', /must be FIRST-LAST/],
    ['100000-99999999999', /must be FIRST-LAST/],
    ['100000-200000,300000-400000', /must be FIRST-LAST/],
  ];
  for (const [value, message, on] of refused) {
    assert.throws(
      () => parseSandboxUids(value, on ?? host),
      (error: Error) => error.name === 'SandboxUidsError' && /^MCPWORKS_SANDBOX_UIDS: /.test(error.message) && message.test(error.message),
      value,
    );
  }
});

test('mcpworks serve refuses to start with a range that takes in a host user, saying why', async () => {
  const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
  // A user this host really has (nobody, at least); the range around it is otherwise sane.
  const uid =
    hostPasswd()
      .split('\n')
      .map((line) => Number(line.split(':')[2]))
      .find((n) => Number.isInteger(n) && n >= 1064 && n <= 4_294_960_000) ?? 65534;
  const range = `${uid - 32}-${uid + 31}`;
  const dataDir = mkdtempSync(path.join(tmpdir(), 'mcpworks-uids-'));
  try {
    const result = await new Promise<{ code: number | null; out: string }>((resolve, reject) => {
      const child = spawn(process.execPath, [...cliCommand(), 'serve', '--port', '0', '--host', '127.0.0.1', '--data-dir', dataDir], {
        cwd: repoRoot,
        env: { ...process.env, MCPWORKS_SANDBOX_UIDS: range, DATABASE_URL: '', LOG_LEVEL: 'info' },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      child.stdout.on('data', (d) => (out += d));
      child.stderr.on('data', (d) => (out += d));
      child.on('error', reject);
      // Bounded: a server that started anyway is stopped and reported.
      const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
      child.on('close', (code) => {
        clearTimeout(timer);
        resolve({ code, out });
      });
    });
    assert.equal(result.code, 1, result.out);
    assert.match(result.out, new RegExp(`MCPWORKS_SANDBOX_UIDS: ${range} includes uid ${uid}`));
    assert.doesNotMatch(result.out, /mcpworks listening/);
    assert.doesNotMatch(result.out, /\n\s+at /, 'no stack trace');
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
});
