import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FairShare } from './fair-share.js';

/** A task of `count` slices that logs `label` at each slice. */
function* slices(log: string[], label: string, count: number): Generator<void, string, void> {
  for (let i = 0; i < count; i++) {
    log.push(label);
    if (i < count - 1) yield;
  }
  return label;
}

test("one tenant's flood waits behind itself: another tenant's task runs after at most one of its slices, and finishes first", async () => {
  const share = new FairShare();
  const log: string[] = [];
  const turns: Array<{ tenant: string; waited: number }> = [];
  share.onFirstTurn = ({ tenant, waited }) => turns.push({ tenant, waited });
  const flood = ['a1', 'a2', 'a3'].map((label) => share.run('a', slices(log, label, 5)));
  const other = share.run('b', slices(log, 'b', 2));
  assert.deepEqual(await Promise.all([...flood, other]), ['a1', 'a2', 'a3', 'b']);
  // Round-robin by tenant, in order within a tenant.
  assert.deepEqual(log.slice(0, 4), ['a1', 'b', 'a1', 'b']);
  assert.deepEqual(log.slice(4), ['a1', 'a1', 'a1', 'a2', 'a2', 'a2', 'a2', 'a2', 'a3', 'a3', 'a3', 'a3', 'a3']);
  assert.deepEqual(
    turns.find((turn) => turn.tenant === 'b'),
    { tenant: 'b', waited: 1 },
  );
  assert.deepEqual(share.stats(), { pending: 0, tenants: 0, slices: 17 });
});

test('one slice per turn of the event loop: an immediate queued beside the work runs after its first slice', async () => {
  const share = new FairShare();
  const log: string[] = [];
  const work = Promise.all([share.run('a', slices(log, 'a', 4)), share.run('b', slices(log, 'b', 4))]);
  await new Promise((resolve) => setImmediate(resolve));
  log.push('io');
  await work;
  assert.equal(log.indexOf('io'), 1, `one slice ran before the other callback: ${log.join(' ')}`);
});

test('a slice that throws rejects its task only; a turn resolves in order', async () => {
  const share = new FairShare();
  function* failing(): Generator<void, never, void> {
    yield;
    throw new Error('bad slice');
  }
  const log: string[] = [];
  const failed = share.run('a', failing());
  const fine = share.run('a', slices(log, 'x', 2));
  const turn = share.turn('b').then(() => log.push('turn'));
  await assert.rejects(failed, /bad slice/);
  assert.equal(await fine, 'x');
  await turn;
  assert.deepEqual(log, ['turn', 'x', 'x']);
  assert.equal(share.stats().pending, 0);
});
