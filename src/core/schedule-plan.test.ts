// Schedule planning with fixed clocks: DST in two zones, 6-field crons, catch-up, back-off,
// auto-disable, and the options add_schedule takes.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  afterOutcome,
  backoffUntil,
  DEFAULT_FAILURE_POLICY,
  MISSED_REASON,
  NO_FAILURES,
  parseFailurePolicy,
  parseScheduleOptions,
  planTicks,
  type FailurePolicy,
  type PlanInput,
} from './schedule-plan.js';
import { DomainError } from './errors.js';

const at = (s: string) => new Date(s);
const isos = (ds: Date[]) => ds.map((d) => d.toISOString());

function plan(over: Partial<PlanInput> & Pick<PlanInput, 'cron' | 'cursor' | 'now'>) {
  return planTicks({
    timezone: 'UTC',
    catchUp: 'none',
    failurePolicy: DEFAULT_FAILURE_POLICY,
    streak: NO_FAILURES,
    runningSince: new Date(0),
    ...over,
  });
}

describe('planTicks across DST (a 02:30 daily job)', () => {
  test('Europe/Berlin spring forward: the skipped 02:30 fires once at 03:00 CEST; fall back: 02:30 fires once', () => {
    const spring = plan({
      cron: '30 2 * * *',
      timezone: 'Europe/Berlin',
      cursor: at('2026-03-27T12:00:00Z'),
      now: at('2026-03-30T12:00:00Z'),
    });
    assert.deepEqual(isos(spring.fire), ['2026-03-28T01:30:00.000Z', '2026-03-29T01:00:00.000Z', '2026-03-30T00:30:00.000Z']);
    assert.deepEqual(spring.skip, []);
    assert.equal(spring.cursor.toISOString(), '2026-03-30T00:30:00.000Z');
    assert.equal(spring.nextFireAt?.toISOString(), '2026-03-31T00:30:00.000Z');
    const fall = plan({
      cron: '30 2 * * *',
      timezone: 'Europe/Berlin',
      cursor: at('2026-10-24T12:00:00Z'),
      now: at('2026-10-26T12:00:00Z'),
    });
    assert.deepEqual(isos(fall.fire), ['2026-10-25T00:30:00.000Z', '2026-10-26T01:30:00.000Z'], 'the repeated 02:30 runs once');
  });

  test('America/New_York spring forward and fall back', () => {
    const spring = plan({
      cron: '30 2 * * *',
      timezone: 'America/New_York',
      cursor: at('2026-03-07T12:00:00Z'),
      now: at('2026-03-09T12:00:00Z'),
    });
    assert.deepEqual(isos(spring.fire), ['2026-03-08T07:00:00.000Z', '2026-03-09T06:30:00.000Z']);
    const fall = plan({
      cron: '30 2 * * *',
      timezone: 'America/New_York',
      cursor: at('2026-10-31T12:00:00Z'),
      now: at('2026-11-02T12:00:00Z'),
    });
    assert.deepEqual(isos(fall.fire), ['2026-11-01T07:30:00.000Z', '2026-11-02T07:30:00.000Z']);
    // The next fire as list_schedules shows it, the evening before the change.
    const before = plan({
      cron: '30 2 * * *',
      timezone: 'America/New_York',
      cursor: at('2026-03-07T12:00:00Z'),
      now: at('2026-03-07T12:00:00Z'),
    });
    assert.deepEqual(before.fire, []);
    assert.equal(before.nextFireAt?.toISOString(), '2026-03-08T07:00:00.000Z');
  });

  test('an hourly job in the repeated hour fires for each real hour', () => {
    const fall = plan({
      cron: '30 * * * *',
      timezone: 'Europe/Berlin',
      cursor: at('2026-10-25T00:00:00Z'),
      now: at('2026-10-25T02:00:00Z'),
    });
    assert.deepEqual(isos(fall.fire), ['2026-10-25T00:30:00.000Z', '2026-10-25T01:30:00.000Z']);
  });
});

describe('planTicks: 6-field crons, the cursor and late ticks', () => {
  test('a seconds cron: the ticks in (cursor, now], each once', () => {
    const p = plan({ cron: '*/2 * * * * *', cursor: at('2026-01-01T00:00:00Z'), now: at('2026-01-01T00:00:07.500Z') });
    assert.deepEqual(isos(p.fire), ['2026-01-01T00:00:02.000Z', '2026-01-01T00:00:04.000Z', '2026-01-01T00:00:06.000Z']);
    assert.equal(p.cursor.toISOString(), '2026-01-01T00:00:06.000Z');
    assert.equal(p.nextFireAt?.toISOString(), '2026-01-01T00:00:08.000Z');
    // Planning again from the new cursor at the same moment fires nothing twice.
    const again = plan({ cron: '*/2 * * * * *', cursor: p.cursor, now: at('2026-01-01T00:00:07.900Z') });
    assert.deepEqual(again.fire, []);
    assert.equal(again.cursor.toISOString(), p.cursor.toISOString());
    // A tick exactly at now is due.
    assert.deepEqual(isos(plan({ cron: '* * * * * *', cursor: at('2026-01-01T00:00:00Z'), now: at('2026-01-01T00:00:01Z') }).fire), [
      '2026-01-01T00:00:01.000Z',
    ]);
  });

  test('a node that stalled: only the newest maxFires run, the older are recorded late', () => {
    const p = plan({ cron: '* * * * * *', cursor: at('2026-01-01T00:00:00Z'), now: at('2026-01-01T00:00:05Z'), maxFires: 2 });
    assert.deepEqual(isos(p.fire), ['2026-01-01T00:00:04.000Z', '2026-01-01T00:00:05.000Z']);
    assert.equal(p.skip.length, 3);
    assert.match(p.skip[0]!.reason, /^late: /);
  });
});

describe('planTicks: catch-up of ticks missed while no node ran', () => {
  const base = {
    cron: '* * * * *',
    cursor: at('2026-01-01T00:00:00Z'),
    now: at('2026-01-01T00:05:30Z'),
    runningSince: at('2026-01-01T00:04:10Z'),
  };

  test("catch_up 'none': the missed ticks are recorded skipped; the ticks since the node runs fire", () => {
    const p = plan({ ...base, catchUp: 'none' });
    assert.deepEqual(isos(p.fire), ['2026-01-01T00:05:00.000Z']);
    assert.deepEqual(
      p.skip.map((s) => [s.at.toISOString(), s.reason]),
      [1, 2, 3, 4].map((m) => [`2026-01-01T00:0${m}:00.000Z`, MISSED_REASON]),
    );
  });

  test("catch_up 'once': one run for the missed ticks (the newest), the others skipped", () => {
    const p = plan({ ...base, catchUp: 'once' });
    assert.deepEqual(isos(p.fire), ['2026-01-01T00:04:00.000Z', '2026-01-01T00:05:00.000Z']);
    assert.deepEqual(isos(p.skip.map((s) => s.at)), ['2026-01-01T00:01:00.000Z', '2026-01-01T00:02:00.000Z', '2026-01-01T00:03:00.000Z']);
    assert.match(p.skip[0]!.reason, /^missed: server down \(caught up by one run, for 2026-01-01T00:04:00.000Z\)/);
  });

  test('a long outage records the newest skips one by one and says the older were left out', () => {
    const p = plan({
      cron: '* * * * * *',
      cursor: at('2026-01-01T00:00:00Z'),
      now: at('2026-01-02T00:00:00Z'),
      runningSince: at('2026-01-02T00:00:00.500Z'),
      maxSkipRecords: 5,
      maxFires: 2,
    });
    // All due ticks came before the node started: all missed, the newest 7 considered.
    assert.deepEqual(p.fire, []);
    assert.equal(p.skip.length, 7);
    assert.equal(p.skip[6]!.at.toISOString(), '2026-01-02T00:00:00.000Z');
    assert.match(p.skip[0]!.reason, /earlier ticks since 2026-01-01T00:00:00.000Z were not recorded/);
    assert.equal(p.cursor.toISOString(), '2026-01-02T00:00:00.000Z');
  });
});

describe('back-off and auto-disable', () => {
  const backoff: FailurePolicy = { strategy: 'backoff', maxFailures: 5, backoffFactor: 2, maxBackoffS: 3600 };

  test('after k failures the next fire waits interval·factor^k, capped by max_backoff_s; ticks inside are skipped', () => {
    const failed = at('2026-01-01T00:10:00Z');
    // 1 failure, every minute, factor 2: no run before 00:12.
    assert.equal(
      backoffUntil('* * * * *', 'UTC', backoff, { count: 1, lastFailedTick: failed })?.toISOString(),
      '2026-01-01T00:12:00.000Z',
    );
    assert.equal(
      backoffUntil('* * * * *', 'UTC', backoff, { count: 3, lastFailedTick: failed })?.toISOString(),
      '2026-01-01T00:18:00.000Z',
    );
    assert.equal(
      backoffUntil('* * * * *', 'UTC', { ...backoff, maxBackoffS: 300 }, { count: 10, lastFailedTick: failed })?.toISOString(),
      '2026-01-01T00:15:00.000Z',
    );
    assert.equal(backoffUntil('* * * * *', 'UTC', { ...backoff, strategy: 'continue' }, { count: 3, lastFailedTick: failed }), null);
    const p = plan({
      cron: '* * * * *',
      failurePolicy: backoff,
      streak: { count: 2, lastFailedTick: failed },
      cursor: failed,
      now: at('2026-01-01T00:14:30Z'),
    });
    assert.deepEqual(isos(p.fire), ['2026-01-01T00:14:00.000Z']);
    assert.deepEqual(isos(p.skip.map((s) => s.at)), ['2026-01-01T00:11:00.000Z', '2026-01-01T00:12:00.000Z', '2026-01-01T00:13:00.000Z']);
    assert.match(p.skip[0]!.reason, /^backoff: 2 consecutive failure\(s\); no run before 2026-01-01T00:14:00.000Z/);
    // While waiting, the next fire shown is the first after the wait.
    const waiting = plan({
      cron: '* * * * *',
      failurePolicy: backoff,
      streak: { count: 2, lastFailedTick: failed },
      cursor: failed,
      now: at('2026-01-01T00:11:30Z'),
    });
    assert.equal(waiting.nextFireAt?.toISOString(), '2026-01-01T00:14:00.000Z');
  });

  test('afterOutcome: success resets, failure counts, cancelled keeps; auto_disable at max_failures with the reason', () => {
    const policy: FailurePolicy = { ...DEFAULT_FAILURE_POLICY, strategy: 'auto_disable', maxFailures: 2 };
    const t1 = at('2026-01-01T00:01:00Z');
    const t2 = at('2026-01-01T00:02:00Z');
    const one = afterOutcome(policy, NO_FAILURES, { status: 'failed', tick: t1, error: { type: 'runtime_error', message: 'boom' } });
    assert.deepEqual(one, { streak: { count: 1, lastFailedTick: t1 }, disabledReason: null });
    assert.deepEqual(afterOutcome(policy, one.streak, { status: 'cancelled', tick: t2 }).streak, one.streak);
    assert.deepEqual(afterOutcome(policy, one.streak, { status: 'succeeded', tick: t2 }).streak, NO_FAILURES);
    const two = afterOutcome(policy, one.streak, { status: 'failed', tick: t2, error: { type: 'runtime_error', message: 'boom' } });
    assert.equal(two.streak.count, 2);
    assert.match(two.disabledReason ?? '', /^auto_disabled after 2 consecutive failures \(max_failures 2\).*runtime_error: boom/);
    // continue and backoff never disable.
    for (const strategy of ['continue', 'backoff'] as const)
      assert.equal(afterOutcome({ ...policy, strategy }, one.streak, { status: 'failed', tick: t2 }).disabledReason, null);
    // An older fire ending late does not move the back-off's start back.
    assert.equal(afterOutcome(policy, { count: 1, lastFailedTick: t2 }, { status: 'failed', tick: t1 }).streak.lastFailedTick, t2);
  });
});

describe('add_schedule options', () => {
  test('defaults, the guide values, and clear refusals', () => {
    assert.deepEqual(parseScheduleOptions({}), {
      mode: 'single',
      failurePolicy: DEFAULT_FAILURE_POLICY,
      overlap: 'skip',
      catchUp: 'none',
      orchestrationMode: 'direct',
    });
    const o = parseScheduleOptions({
      mode: 'cluster',
      overlap: 'allow',
      catch_up: 'once',
      failure_policy: { strategy: 'backoff', backoff_factor: 1.5 },
    });
    assert.equal(o.mode, 'cluster');
    assert.equal(o.failurePolicy.backoffFactor, 1.5);
    for (const bad of [
      { mode: 'all' },
      { overlap: 'queue' },
      { catch_up: 'all' },
      { failure_policy: { strategy: 'retry' } },
      { failure_policy: { max_failures: 0 } },
      { failure_policy: { backoff_factor: 0.5 } },
      { failure_policy: { max_backoff_s: 1.5 } },
      { failure_policy: { tries: 3 } },
      { failure_policy: 'continue' },
      { orchestration_mode: 'freestyle' },
    ]) {
      assert.throws(
        () => parseScheduleOptions(bad),
        (e: unknown) => e instanceof DomainError && e.type === 'validation_error',
        JSON.stringify(bad),
      );
    }
    for (const mode of ['run_then_reason', 'reason_first'] as const)
      assert.equal(parseScheduleOptions({ orchestration_mode: mode }).orchestrationMode, mode);
    assert.deepEqual(parseFailurePolicy(null), DEFAULT_FAILURE_POLICY);
  });
});
