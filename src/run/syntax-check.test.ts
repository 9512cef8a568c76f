// Issue 12 (GAPS 7): the queue of create-time syntax checks is bounded in all and per account
// (real python3 children; small limits here, the node's are SYNTAX_QUEUE_LIMITS). A place is
// counted when a check is asked for, before anything is awaited, so checks asked for together are
// counted together, however fast python3 compiles.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isDomainError } from '../core/errors.js';
import { syntaxChecker } from './syntax-check.js';

const OK = { language: 'python' as const, code: 'def main(input_data):\n    return 1\n' };

async function outcomes(calls: Array<Promise<void>>): Promise<string[]> {
  return Promise.all(
    calls.map((call) =>
      call.then(
        () => 'ok',
        (error: unknown) => (isDomainError(error) ? `${error.type}: ${error.message}` : String(error)),
      ),
    ),
  );
}

test('one account: the checks past its share are refused (rate_limited), the others pass; a freed share serves again', async () => {
  const check = syntaxChecker({ concurrent: 1, waiting: 10, perAccount: 2, reserved: 0 });
  assert.deepEqual(await outcomes([check(OK, 'a'), check(OK, 'a'), check(OK, 'a'), check(OK, 'b')]), [
    'ok',
    'ok',
    'rate_limited: this account already has 2 code checks in progress on this server (at most 2); wait for them to finish and try again',
    'ok',
  ]);
  // Freed: served again; code that does not parse is still the validation_error with its line.
  assert.deepEqual(await outcomes([check({ language: 'python', code: 'def main(:\n' }, 'a'), check(OK, 'a')]), [
    'validation_error: code is not valid Python (SyntaxError) at line 1, column 10: invalid syntax\n    def main(:',
    'ok',
  ]);
});

test('all accounts: past the running checks and the waiting room, one more is refused', async () => {
  const check = syntaxChecker({ concurrent: 1, waiting: 2, perAccount: 4, reserved: 0 });
  const results = await outcomes(['a', 'b', 'c', 'd', 'e'].map((account) => check(OK, account)));
  assert.deepEqual(results, [
    'ok',
    'ok',
    'ok',
    "rate_limited: the server's code checks are busy (2 waiting); try again shortly",
    "rate_limited: the server's code checks are busy (2 waiting); try again shortly",
  ]);
});

test("waiting checks take turns by account: one account's queue waits behind the others' first checks", async () => {
  const check = syntaxChecker({ concurrent: 1, waiting: 10, perAccount: 10, reserved: 0 });
  const started: string[] = [];
  // One place: the order checks finish in is the order they got it.
  const calls = ['a1', 'a2', 'a3', 'a4', 'b1', 'c1'].map((label) => check(OK, label[0]!).then(() => void started.push(label)));
  await Promise.all(calls);
  assert.deepEqual(started, ['a1', 'b1', 'c1', 'a2', 'a3', 'a4']);
});

test('the last places of the waiting room are kept for accounts with none waiting', async () => {
  const check = syntaxChecker({ concurrent: 1, waiting: 4, perAccount: 10, reserved: 2 });
  const results = await outcomes(['a', 'a', 'a', 'a', 'a', 'b', 'c', 'd'].map((account) => check(OK, account)));
  const mineBusy = "rate_limited: the server's code checks are busy (2 waiting, this account 2 of them); try again shortly";
  assert.deepEqual(results, [
    'ok',
    'ok',
    'ok',
    mineBusy,
    mineBusy,
    'ok',
    'ok',
    "rate_limited: the server's code checks are busy (4 waiting); try again shortly",
  ]);
  // Served and freed: the room is whole again, for the flooding account too.
  assert.deepEqual(await outcomes([check(OK, 'a'), check(OK, 'a'), check(OK, 'a')]), ['ok', 'ok', 'ok']);
});
