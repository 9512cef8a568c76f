// The helper's command frame (decoded by read_command in native/mcpworks-sandbox-helper.c); pure.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decodeCommandFrame, encodeCommandFrame, MAX_FRAME_BYTES } from './command-frame.js';

test('a frame is eight hex digits of body length, then each argument NUL-terminated', () => {
  const frame = encodeCommandFrame(['--user', '2000000001:65534', '--', '/usr/bin/bwrap']);
  const body = '--user\x002000000001:65534\x00--\x00/usr/bin/bwrap\x00';
  assert.equal(frame.subarray(0, 8).toString('ascii'), Buffer.byteLength(body).toString(16).padStart(8, '0'));
  assert.equal(frame.subarray(8).toString('utf8'), body);
  assert.deepEqual(decodeCommandFrame(frame), ['--user', '2000000001:65534', '--', '/usr/bin/bwrap']);
});

test('arguments with multi-byte characters and empty arguments survive the round trip', () => {
  const args = ['', 'é€', '{"imports":["numpy"]}', ''];
  assert.deepEqual(decodeCommandFrame(encodeCommandFrame(args)), args);
});

test('what read_command refuses: an empty body, one over its limit, a short frame', () => {
  assert.equal(decodeCommandFrame(encodeCommandFrame([])), null);
  assert.equal(decodeCommandFrame(encodeCommandFrame(['x'.repeat(MAX_FRAME_BYTES)])), null);
  assert.equal(decodeCommandFrame(encodeCommandFrame(['abc']).subarray(0, 10)), null);
  assert.deepEqual(decodeCommandFrame(encodeCommandFrame(['x'.repeat(MAX_FRAME_BYTES - 1)]))?.length, 1);
});
