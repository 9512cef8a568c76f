import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  agentSlots,
  assertAgentSlots,
  assertScheduleInterval,
  assertStateFits,
  nextFires,
  offsetChanges,
  replicaName,
  REPLICA_NAME_COUNT,
  REPLICA_NAME_PATTERN,
  shortestGap,
  STATE_VALUE_MAX_BYTES,
  stateValueText,
  validateAgentName,
  validateCron,
  validateStateKey,
  validateTimezone,
} from './agents.js';
import { DomainError } from './errors.js';
import { applyTierOverrides, DEFAULT_TIERS } from './tiers.js';
import { MB } from './units.js';

const typeOf = (work: () => unknown): string => {
  try {
    work();
  } catch (error) {
    assert.ok(error instanceof DomainError, `a DomainError, not ${String(error)}`);
    return error.type;
  }
  return 'none';
};

test('agent names: like function names, with hyphens as the only separator', () => {
  for (const ok of ['a', 'social-scraper', 'bot2', 'a'.repeat(31)]) assert.equal(validateAgentName(ok), ok);
  for (const bad of ['', 'A', '2bot', '-a', 'a-', 'a--b', 'a_b', 'a.b', 'a'.repeat(32), 7, null, 'a b']) {
    assert.equal(
      typeOf(() => validateAgentName(bad)),
      'validation_error',
      JSON.stringify(bad),
    );
  }
});

test('replica names: verb-animal, never one already taken, deterministic with a fixed pick', () => {
  const first = replicaName(new Set(), () => 0);
  assert.equal(first, 'daring-duck');
  assert.equal(
    replicaName(new Set(), () => 1),
    'daring-falcon',
  );
  assert.match(replicaName(new Set()), REPLICA_NAME_PATTERN);
  // A pick that keeps landing on a taken name falls back to the next free one in order.
  assert.equal(
    replicaName(new Set(['daring-duck']), () => 0),
    'daring-falcon',
  );
  // Past every plain name, a number keeps them unique.
  const taken = new Set<string>();
  for (let i = 0; i < REPLICA_NAME_COUNT; i++) taken.add(replicaName(taken, () => i));
  assert.equal(taken.size, REPLICA_NAME_COUNT);
  const extra = replicaName(taken, () => 0);
  assert.equal(extra, 'daring-duck-2');
  assert.match(extra, REPLICA_NAME_PATTERN);
  for (const name of taken) assert.match(name, REPLICA_NAME_PATTERN);
});

test('time zones: IANA names canonicalised, default UTC, an unknown zone is an error (never UTC)', () => {
  assert.equal(validateTimezone(undefined), 'UTC');
  assert.equal(validateTimezone('Europe/Berlin'), 'Europe/Berlin');
  assert.equal(validateTimezone('europe/berlin'), 'Europe/Berlin');
  for (const bad of ['Mars/Base', '', '+01:00', 42, 'x'.repeat(65)])
    assert.equal(
      typeOf(() => validateTimezone(bad)),
      'validation_error',
      JSON.stringify(bad),
    );
});

test('cron: 5 or 6 fields parsed by croner, normalised; anything else refused', () => {
  const now = new Date('2026-01-01T00:00:00Z');
  assert.equal(validateCron('*/15 * * * *', 'UTC', now), '*/15 * * * *');
  assert.equal(validateCron('  0   12 * * 1-5 ', 'UTC', now), '0 12 * * 1-5');
  assert.equal(validateCron('*/30 * * * * *', 'UTC', now), '*/30 * * * * *');
  for (const bad of ['* * * *', '* * * * * * *', '@daily', '61 * * * *', 'x y z a b', '0 0 30 2 *', 42, '']) {
    assert.equal(
      typeOf(() => validateCron(bad, 'UTC', now)),
      'validation_error',
      JSON.stringify(bad),
    );
  }
});

test('fires follow the zone across DST (fixed clock)', () => {
  // Berlin springs forward on 2026-03-29 (02:00 → 03:00): 02:30 does not exist that day.
  const spring = nextFires('30 2 * * *', 'Europe/Berlin', new Date('2026-03-28T00:00:00Z'), 3).map((d) => d.toISOString());
  assert.deepEqual(spring, ['2026-03-28T01:30:00.000Z', '2026-03-29T01:00:00.000Z', '2026-03-30T00:30:00.000Z']);
  // New York falls back on 2026-11-01: 01:30 happens twice, an hour apart in real time.
  const fall = nextFires('30 1 * * *', 'America/New_York', new Date('2026-10-31T12:00:00Z'), 3).map((d) => d.toISOString());
  assert.equal(fall[0], '2026-11-01T05:30:00.000Z');
  const changes = offsetChanges('America/New_York', new Date('2026-01-01T00:00:00Z'));
  assert.deepEqual(
    changes.map((d) => d.toISOString()),
    ['2026-03-08T07:00:00.000Z', '2026-11-01T06:00:00.000Z'],
  );
  assert.deepEqual(offsetChanges('UTC', new Date('2026-01-01T00:00:00Z')), []);
});

test('minimum interval: measured on the real gap between consecutive fires, DST included', () => {
  const now = new Date('2026-01-01T00:00:00Z');
  const pro = DEFAULT_TIERS.pro!;
  const enterprise = DEFAULT_TIERS.enterprise!;
  assert.equal(shortestGap('*/15 * * * * *', 'UTC', now)!.seconds, 15);
  assert.equal(
    typeOf(() => assertScheduleInterval('*/15 * * * * *', 'UTC', pro, 'pro', now)),
    'limit_exceeded',
  );
  assert.equal(
    typeOf(() => assertScheduleInterval('*/15 * * * * *', 'UTC', enterprise, 'enterprise', now)),
    'none',
  );
  assert.equal(
    typeOf(() => assertScheduleInterval('*/30 * * * * *', 'UTC', pro, 'pro', now)),
    'none',
  );
  // Uneven lists: the gap that counts is the short one (59 s → 0 s of the next minute), not the average.
  assert.equal(shortestGap('0,50 * * * * *', 'UTC', now)!.seconds, 10);
  assert.equal(
    typeOf(() => assertScheduleInterval('0,50 * * * * *', 'UTC', enterprise, 'enterprise', now)),
    'limit_exceeded',
  );
  // Twice a day, 20 s apart: rare, still found.
  assert.equal(shortestGap('0,20 0 12 * * *', 'UTC', now)!.seconds, 20);
  // Across a day boundary only: 23:59:50 then 00:00:00.
  assert.equal(shortestGap('0,50 0,59 0,23 * * *', 'UTC', now)!.seconds, 10);
  // In New York, 01:59:45 EDT then 01:00:00 EST is 15 s of real time: only the fall-back night has it.
  const ny = new Date('2026-06-01T00:00:00Z');
  const gap = shortestGap('0,45 0,59 1 * * *', 'America/New_York', ny)!;
  assert.equal(gap.seconds, 15);
  assert.equal(gap.between, '2026-11-01T05:59:45.000Z → 2026-11-01T06:00:00.000Z');
  assert.equal(shortestGap('0,45 0,59 1 * * *', 'UTC', ny)!.seconds, 45);
  assert.equal(
    typeOf(() => assertScheduleInterval('0,45 0,59 1 * * *', 'America/New_York', pro, 'pro', ny)),
    'limit_exceeded',
  );
  assert.equal(
    typeOf(() => assertScheduleInterval('0,45 0,59 1 * * *', 'UTC', pro, 'pro', ny)),
    'none',
  );
  // The tier's figure, and MCPWORKS_TIERS can change it.
  const tiers = applyTierOverrides('{"pro":{"schedule_min_interval_s":60}}');
  assert.equal(
    typeOf(() => assertScheduleInterval('*/30 * * * * *', 'UTC', tiers.pro!, 'pro', now)),
    'limit_exceeded',
  );
});

test('agent slots: one per replica (none at 0 replicas); unlimited is really unlimited', () => {
  assert.equal(agentSlots(0), 0);
  assert.equal(agentSlots(3), 3);
  const pro = DEFAULT_TIERS.pro!;
  assert.equal(
    typeOf(() => assertAgentSlots(pro, 'pro', 4, 1)),
    'none',
  );
  assert.equal(
    typeOf(() => assertAgentSlots(pro, 'pro', 5, 1)),
    'limit_exceeded',
  );
  assert.equal(
    typeOf(() => assertAgentSlots(pro, 'pro', 3, 3)),
    'limit_exceeded',
  );
  assert.equal(
    typeOf(() => assertAgentSlots(DEFAULT_TIERS.dedicated!, 'dedicated', 1_000_000, 1_000)),
    'none',
  );
  const tiers = applyTierOverrides('{"pro":{"agents":-1},"tiny":{"agents":0}}');
  assert.equal(tiers.pro!.agents, null);
  assert.equal(
    typeOf(() => assertAgentSlots(tiers.pro!, 'pro', 10_000, 1)),
    'none',
  );
  assert.equal(
    typeOf(() => assertAgentSlots(tiers.tiny!, 'tiny', 0, 1)),
    'limit_exceeded',
  );
});

test('state: keys, value size cap, per-agent cap per tier (unlimited on dedicated)', () => {
  assert.equal(validateStateKey('last_seen/feed:1'), 'last_seen/feed:1');
  for (const bad of ['', 'a\nb', 'x'.repeat(257), 3])
    assert.equal(
      typeOf(() => validateStateKey(bad)),
      'validation_error',
      JSON.stringify(bad),
    );
  assert.equal(stateValueText({ a: [1, null] }), '{"a":[1,null]}');
  assert.equal(stateValueText(null), 'null');
  assert.equal(
    typeOf(() => stateValueText(undefined)),
    'validation_error',
  );
  assert.equal(
    typeOf(() => stateValueText('x'.repeat(STATE_VALUE_MAX_BYTES))),
    'limit_exceeded',
  );
  assert.equal(DEFAULT_TIERS.pro!.agentStateBytes, 100 * MB);
  assert.equal(DEFAULT_TIERS.enterprise!.agentStateBytes, 1024 * MB);
  assert.equal(DEFAULT_TIERS.dedicated!.agentStateBytes, null);
  const pro = DEFAULT_TIERS.pro!;
  assert.equal(
    typeOf(() => assertStateFits(pro, 'pro', 100 * MB - 10, 0, 10)),
    'none',
  );
  assert.equal(
    typeOf(() => assertStateFits(pro, 'pro', 100 * MB - 10, 0, 11)),
    'limit_exceeded',
  );
  // Replacing a value counts only the difference.
  assert.equal(
    typeOf(() => assertStateFits(pro, 'pro', 100 * MB, 50, 50)),
    'none',
  );
  assert.equal(
    typeOf(() => assertStateFits(DEFAULT_TIERS.dedicated!, 'dedicated', 10_000 * MB, 0, MB)),
    'none',
  );
});
