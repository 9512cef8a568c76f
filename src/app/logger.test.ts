import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { createLogger } from './logger.js';

test("a log line never carries a key twice: a user service is service_name beside the program's service", () => {
  const lines: string[] = [];
  const sink = new Writable({ write: (chunk, _encoding, done) => (lines.push(String(chunk)), done()) });
  const logger = createLogger('info', sink as never);
  // The secret-redaction event as the run service reports it (server.ts), and a careless caller.
  logger.warn(
    { security_event: 'secret_redacted', service_name: 'utils', function: 'leaky', detections: ['ENV_VALUE'] },
    'secret redacted from function output',
  );
  logger.info({ service: 'billing' }, 'about a user service');
  assert.equal(lines.length, 2);
  for (const line of lines) {
    const keys = [...line.matchAll(/"([a-z_]+)":/g)].map((m) => m[1]);
    assert.equal(new Set(keys).size, keys.length, line);
    assert.equal(JSON.parse(line).service, 'mcpworks');
  }
  assert.equal(JSON.parse(lines[1]!).service_name, 'billing');
});
