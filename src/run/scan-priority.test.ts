// test-database: embedded, the subject is the server's threads, not the database's
// A server started at a nice value of its own (an operator's `nice`, a shared machine's bench)
// keeps its scan threads 10 steps below its event loop: their priority is relative to the thread
// that starts them, not an absolute 10 (which left them 5 steps below a server at nice 5, and level
// with or above one at nice 10 or more).
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { getPriority, setPriority } from 'node:os';
import { after, before, test } from 'node:test';
import { DEFAULT_TIERS } from '../core/tiers.js';
import { startRuleServer, type RuleServer } from '../test-support/spaces.js';
import { sharedScanPool } from './scan-pool.js';

// This file's process is its own: its main thread (the server's event loop here) is lowered by 3
// before anything starts, as `nice -n 3 mcpworks serve` would start it. A thread's nice can always be raised.
const started = getPriority();
setPriority(Math.min(19, started + 3));

let t: RuleServer;
before(async () => {
  t = await startRuleServer(DEFAULT_TIERS);
});
after(async () => {
  await t?.stop();
});

/** Field `field` (1-based, man 5 proc) of /proc/self/task/TID/stat for each thread of this process named `name`. */
function threadStats(name: string, field: number): number[] {
  const values: number[] = [];
  for (const tid of readdirSync('/proc/self/task')) {
    try {
      if (readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').trim() !== name) continue;
      values.push(Number(readFileSync(`/proc/self/task/${tid}/stat`, 'utf8').split(') ')[1]!.split(' ')[field - 3]));
    } catch {
      // The thread ended meanwhile.
    }
  }
  return values;
}
/** Each such thread's nice value (field 19). */
const threadNices = (name: string) => threadStats(name, 19);

test('scan threads run 10 steps nicer than the server that starts them, whatever its own nice', async () => {
  const loop = getPriority();
  assert.equal(loop, Math.min(19, started + 3), 'the event loop runs lowered');
  assert.equal(sharedScanPool.workers, 0, 'no scan thread before the first large answer');
  const s = await t.space([{ name: 'big', code: 'def main(input_data):\n    return {"text": "x" * 200000}\n' }]);
  const tools = await s.run('tools');
  const answer = await tools.callTool('utils__big');
  assert.equal(answer.isError, undefined);
  assert.equal(sharedScanPool.counts.rendered >= 1, true, 'the answer was rendered in a scan thread');
  const nices = threadNices('mcpw-scan');
  assert.ok(nices.length >= 1, 'a scan thread is running');
  for (const nice of nices) assert.equal(nice, Math.min(19, loop + 10), `scan thread at nice ${nice}, the event loop at ${loop}`);
});
