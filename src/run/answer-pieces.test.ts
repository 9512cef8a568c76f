// test-database: embedded, the answer path is the server's, not the database's
// A large answer line reaches the scan worker as the pieces of the socket chunks it arrived in
// (LineReader.pushPieces, whole chunks moved to the worker, partial ones copied). Written here by the
// function itself in several writes, each read by the host as a chunk of its own: a secret (and its
// base64 form) and a multi-byte character cut between two chunks, the newline alone in the last
// chunk, or the line's end sharing a chunk with the next line. The client and the run's history
// must still get every byte, whole and redacted.
// Also: an answer's error fields are the function's to write, of any JSON type, small or large.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { DEFAULT_TIERS } from '../core/tiers.js';
import { callOk } from '../test-support/harness.js';
import { startRuleServer, type RuleServer } from '../test-support/spaces.js';
import { sharedScanPool } from './scan-pool.js';

let t: RuleServer;
before(async () => {
  t = await startRuleServer(DEFAULT_TIERS);
});
after(async () => {
  await t?.stop();
});

const TOKEN = 'pieces-secret-Zk4wQ8rT1';
const BASE64 = Buffer.from(TOKEN).toString('base64');
const A = 40_000;

/**
 * A function writing its own answer line on fd 3 in `writes` (Python expressions of bytes, `t` the
 * token's bytes, `b` its base64), each after a pause so the host reads it as a chunk of its own.
 */
function writer(writes: string[]): string {
  return [
    'import os, time, base64',
    'def main(input_data):',
    '    time.sleep(0.3)',
    '    t = os.environ["APP_TOKEN"].encode()',
    '    b = base64.b64encode(t)',
    '    head = b\'{"ok":true,"result":{"text":"\' + b"a" * ' + A,
    '    e = "é".encode()',
    ...writes.map((write) => `    os.write(3, ${write})\n    time.sleep(0.3)`),
    '    os._exit(0)',
    '',
  ].join('\n');
}

// The line: {"ok":true,"result":{"text":"a…a<TOKEN> é <BASE64>b…b"}}
const cuts: Record<string, string[]> = {
  // Every piece a whole chunk (moved), the newline alone: the line ends at a chunk's last byte.
  whole: ['head + t[:7]', 't[7:] + b" " + e[:1]', 'e[1:] + b" " + b[:5]', 'b[5:] + b"b" * 40000 + b\'"}}\'', 'b"\\n"'],
  // The line starts after a bridge call in its first chunk and ends before the next line in its last
  // (both those pieces copied), a whole chunk between.
  partial: [
    'b\'{"bridge":{"op":"nothing"}}\\n\' + head + t[:3]',
    't[3:] + b" " + e[:1] + e[1:] + b" " + b[:9]',
    'b[9:] + b"b" * 40000 + b\'"}}\\n{"ok":true,"result":"a second line"}\\n\'',
  ],
};
const expected = `${'a'.repeat(A)}[REDACTED_ENV_VALUE] é [REDACTED_ENV_VALUE]${'b'.repeat(40_000)}`;

describe('a large answer in pieces', () => {
  test('a secret and a character cut between chunks: the client and the history get it whole and redacted', async () => {
    const s = await t.space(Object.entries(cuts).map(([name, writes]) => ({ name, required_env: ['APP_TOKEN'], code: writer(writes) })));
    const tools = await s.run('tools', { APP_TOKEN: TOKEN });
    for (const name of Object.keys(cuts)) {
      const decoded = sharedScanPool.counts.decoded;
      const answer = await tools.callTool(`utils__${name}`);
      assert.equal(answer.isError, undefined, `${name}: ${JSON.stringify(answer).slice(0, 300)}`);
      assert.deepEqual(answer.content, [{ type: 'text', text: JSON.stringify({ text: expected }) }], name);
      assert.equal(sharedScanPool.counts.decoded, decoded + 1, `${name}: the line was decoded in a worker`);
    }
    const listed = await callOk(s.create, 'list_executions');
    assert.equal(listed.length, 2);
    for (const { id } of listed) {
      const stored = await callOk(s.create, 'describe_execution', { id });
      assert.equal(stored.status, 'success');
      const text = JSON.stringify(stored);
      assert.ok(!text.includes(TOKEN) && !text.includes(BASE64), 'no secret in the history');
      assert.match(text, /a\[REDACTED_ENV_VALUE\] é \[REDACTED_ENV_VALUE\]b/);
    }
    await t.assertHealthy();
    assert.deepEqual(await t.usage(s.account), { executions: 2, active: 0 });
  });
});

describe("an answer's error fields of any JSON type", () => {
  test("an object for its type, message or traceback (one whose toString is not a function): the run's own error, recorded and counted, small or large", async () => {
    // String() of {"toString": 1} throws: read on the main thread (a small answer), that ended the
    // call as an internal error, neither recorded nor counted; in a worker (a large one), withheld.
    const odd = '{"toString":1,"valueOf":1}';
    const line = (pad: string) => `b'{"ok":false,"type":${odd},"message":${odd},"traceback":${odd},"pad":"' + b"p" * ${pad} + b'"}\\n'`;
    const code = (pad: string) => `import os\ndef main(input_data):\n    os.write(3, ${line(pad)})\n    os._exit(0)\n`;
    const s = await t.space([
      { name: 'small', code: code('10') },
      { name: 'large', code: code('40000') },
    ]);
    const tools = await s.run('tools');
    const bodies = [];
    for (const name of ['small', 'large']) {
      const answer = await tools.callTool(`utils__${name}`);
      assert.equal(answer.isError, true, name);
      bodies.push(JSON.parse((answer.content as Array<{ text: string }>)[0]!.text));
    }
    assert.deepEqual(bodies[0], { error: '[object Object]', error_type: '[object Object]', stderr: '[object Object]' });
    assert.deepEqual(bodies[1], bodies[0], 'a large answer reads as a small one does');
    const listed = await callOk(s.create, 'list_executions');
    assert.deepEqual(listed.map((run: { function: string; status: string }) => [run.function, run.status]).sort(), [
      ['large', 'error'],
      ['small', 'error'],
    ]);
    await t.assertHealthy();
    assert.deepEqual(await t.usage(s.account), { executions: 2, active: 0 });
  });
});
