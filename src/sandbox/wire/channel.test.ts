// fd 3's reader (RunChannel): what the host concludes about whether a run's code began, from the
// bytes it read after the runner's ready line (its start ack first) and the channel's end.
import assert from 'node:assert/strict';
import { Duplex } from 'node:stream';
import { describe, it } from 'node:test';
import { RunChannel } from './channel.js';
import { READY_LINE, STARTED_LINE } from './messages.js';

/** A channel over a stream the test writes the runner's side of, then ends (as the sandbox's death closes fd 3). */
function channelOf(...chunks: string[]): Promise<RunChannel> {
  const socket = new Duplex({ read() {}, write: (_chunk, _encoding, done) => done() });
  const channel = new RunChannel(socket, () => {});
  channel.begin(undefined, 1024 * 1024, () => {});
  for (const chunk of chunks) socket.push(chunk);
  socket.destroy();
  return channel.ended.then(() => channel);
}

describe('RunChannel: whether the run began', () => {
  it('ready and nothing after it: not begun, read to its end', async () => {
    const channel = await channelOf(`${READY_LINE}\n`);
    assert.equal(channel.isReady, true);
    assert.equal(channel.closed, true);
    assert.equal(channel.heardAfterReady, false);
    assert.equal(channel.answer, null);
  });

  it('the ack (in the same chunk as ready, or later) says it began, and is not the answer', async () => {
    for (const chunks of [[`${READY_LINE}\n${STARTED_LINE}\n`], [`${READY_LINE}\n`, `${STARTED_LINE}\n`]]) {
      const channel = await channelOf(...chunks);
      assert.equal(channel.heardAfterReady, true);
      assert.equal(channel.answer, null);
    }
    const answered = await channelOf(`${READY_LINE}\n${STARTED_LINE}\n{"ok":true,"result":1}\n`);
    assert.deepEqual(answered.answer, { ok: true, result: 1 });
  });

  it("only the first line after ready is the ack: the same line later is the run's answer", async () => {
    const channel = await channelOf(`${READY_LINE}\n${STARTED_LINE}\n${STARTED_LINE}\n`);
    assert.deepEqual(channel.answer, { started: true });
  });

  it('any byte after ready, even part of a line, says it began', async () => {
    const channel = await channelOf(`${READY_LINE}\n{"sta`);
    assert.equal(channel.heardAfterReady, true);
    assert.equal(channel.answer, null);
  });

  it('never ready: not begun', async () => {
    const channel = await channelOf();
    assert.equal(channel.isReady, false);
    assert.equal(channel.heardAfterReady, false);
  });

  it("a zygote child's set-up report before ready is the reason it never started, not an answer", async () => {
    const report = '{"setupFailed": "setrlimit", "errno": 1}';
    const channel = await channelOf(`${report}\n`);
    assert.deepEqual(channel.setupFailure, { step: 'setrlimit', errno: 1 });
    assert.equal(channel.answer, null);
    assert.equal(channel.closedBeforeStart, true);
    // After ready only the run writes: the same line is its answer, never a report.
    const after = await channelOf(`${READY_LINE}\n${STARTED_LINE}\n${report}\n`);
    assert.equal(after.setupFailure, null);
    assert.deepEqual(after.answer, { setupFailed: 'setrlimit', errno: 1 });
    // A report is a step word and an errno, nothing else.
    for (const odd of [
      '{"setupFailed": "Set Up!", "errno": 1}',
      '{"setupFailed": "x", "errno": -1}',
      '{"setupFailed": "x", "errno": "1"}',
    ]) {
      assert.equal((await channelOf(`${odd}\n`)).setupFailure, null, odd);
    }
  });
});
