/**
 * Pure rules of autonomous agents: names, replica names, cron schedules and time zones, the
 * tier's agent slots, minimum schedule interval and state caps. No I/O: the stores count, this decides.
 */
import { randomInt } from 'node:crypto';
import { Cron, CronPattern } from 'croner';
import { DomainError, invalid } from './errors.js';
import { RawJson } from './raw-json.js';
import { MB } from './units.js';
import { validateEntityName } from './names.js';
import type { TierLimits } from './tiers.js';

/**
 * Agent names: like function names (a lowercase letter first, then lowercase letters and digits,
 * at most 31), but with '-' as the only separator: an agent's name is also a DNS label in its
 * webhooks' subdomain form, where '_' is not allowed.
 */
export const AGENT_NAME_PATTERN = /^[a-z](?:[a-z0-9]|-(?=[a-z0-9])){0,30}$/;
export const AGENT_NAME_MAX = 31;

export function validateAgentName(name: unknown, field = 'name'): string {
  if (typeof name !== 'string' || !AGENT_NAME_PATTERN.test(name)) {
    throw invalid(
      `invalid agent name ${JSON.stringify(name)}: use 1-${AGENT_NAME_MAX} lowercase letters, digits and single hyphens, starting with a letter and ending with a letter or digit (e.g. "social-scraper")`,
      { field },
    );
  }
  return name;
}

// Replica names are `verb-animal` (the guide's "daring-duck", "swift-falcon"): 48 × 48 = 2,304 names.
const VERBS = [
  'daring',
  'swift',
  'brave',
  'calm',
  'clever',
  'eager',
  'gentle',
  'happy',
  'jolly',
  'keen',
  'lively',
  'lucky',
  'merry',
  'nimble',
  'proud',
  'quick',
  'quiet',
  'rapid',
  'sharp',
  'steady',
  'sunny',
  'witty',
  'bold',
  'bright',
  'busy',
  'chirpy',
  'cosy',
  'dapper',
  'fancy',
  'fearless',
  'fierce',
  'frisky',
  'glad',
  'grand',
  'hardy',
  'humble',
  'jumpy',
  'kind',
  'loyal',
  'mighty',
  'plucky',
  'polite',
  'rustic',
  'snappy',
  'spry',
  'tidy',
  'vivid',
  'zesty',
] as const;
const ANIMALS = [
  'duck',
  'falcon',
  'otter',
  'badger',
  'beaver',
  'bison',
  'camel',
  'cobra',
  'crane',
  'crow',
  'dingo',
  'dolphin',
  'eagle',
  'ferret',
  'finch',
  'fox',
  'gecko',
  'goose',
  'hare',
  'hawk',
  'heron',
  'ibis',
  'jackal',
  'koala',
  'lemur',
  'lion',
  'llama',
  'lynx',
  'magpie',
  'marten',
  'moose',
  'newt',
  'owl',
  'panda',
  'parrot',
  'pelican',
  'puffin',
  'quail',
  'raven',
  'robin',
  'seal',
  'shrew',
  'sloth',
  'swan',
  'tiger',
  'toad',
  'walrus',
  'wombat',
] as const;

/** All the plain verb-animal names, in a fixed order. */
export const REPLICA_NAME_COUNT = VERBS.length * ANIMALS.length;
const plainName = (i: number): string => `${VERBS[Math.floor(i / ANIMALS.length)]}-${ANIMALS[i % ANIMALS.length]}`;

/**
 * A verb-animal name not in `taken` (the agent's other replicas): a random one, or, when random
 * tries keep landing on taken names, the first free one in order; past all 2,304, with a number
 * (`daring-duck-2`). `pick(n)` chooses in [0, n): tests pass a fixed one.
 */
export function replicaName(taken: ReadonlySet<string>, pick: (n: number) => number = randomInt): string {
  for (let attempt = 0; attempt < 8; attempt++) {
    const name = plainName(pick(REPLICA_NAME_COUNT));
    if (!taken.has(name)) return name;
  }
  const start = pick(REPLICA_NAME_COUNT);
  for (let round = 1; ; round++) {
    for (let k = 0; k < REPLICA_NAME_COUNT; k++) {
      const base = plainName((start + k) % REPLICA_NAME_COUNT);
      const name = round === 1 ? base : `${base}-${round}`;
      if (!taken.has(name)) return name;
    }
  }
}

export const REPLICA_NAME_PATTERN = /^[a-z]+-[a-z]+(?:-[1-9][0-9]*)?$/;

// ---------------------------------------------------------------------------------------------
// Schedules

export const DEFAULT_TIMEZONE = 'UTC';
const MAX_CRON_CHARS = 200;

/**
 * The IANA zone's canonical name ("europe/berlin" → "Europe/Berlin"). An unknown zone is an error,
 * never UTC; so are UTC offsets ("+01:00"), which have no DST rules and are not IANA names.
 */
export function validateTimezone(value: unknown, field = 'timezone'): string {
  if (value === undefined || value === null) return DEFAULT_TIMEZONE;
  if (typeof value !== 'string' || value.length === 0 || value.length > 64)
    throw invalid('timezone must be an IANA time zone name such as "UTC" or "Europe/Berlin"', { field });
  try {
    return new Intl.DateTimeFormat('en-US', { timeZone: value }).resolvedOptions().timeZone;
  } catch {
    throw invalid(`unknown time zone ${JSON.stringify(value)}: use an IANA name such as "UTC", "America/New_York" or "Europe/Berlin"`, {
      field,
    });
  }
}

function cronOf(expression: string, timezone: string): Cron {
  return new Cron(expression, { timezone, mode: '5-or-6-parts', paused: true });
}

/**
 * A cron expression of 5 fields (minute hour day month weekday) or 6 (with seconds first),
 * normalised to single spaces; refused when croner cannot parse it or it never fires.
 */
export function validateCron(
  value: unknown,
  timezone: string = DEFAULT_TIMEZONE,
  now: Date = new Date(),
  field = 'cron_expression',
): string {
  if (typeof value !== 'string' || value.length > MAX_CRON_CHARS)
    throw invalid(`${field} must be a cron expression of 5 or 6 fields, e.g. "*/15 * * * *"`, { field });
  const fields = value
    .trim()
    .split(/\s+/)
    .filter((part) => part !== '');
  if (fields.length !== 5 && fields.length !== 6) {
    throw invalid(
      `${field} ${JSON.stringify(value)} has ${fields.length} field(s): use 5 (minute hour day month weekday) or 6 (second first), e.g. "*/15 * * * *"`,
      { field },
    );
  }
  const expression = fields.join(' ');
  let next: Date | null;
  try {
    next = cronOf(expression, timezone).nextRun(now);
  } catch (error) {
    const reason = error instanceof Error ? error.message.replace(/^CronPattern:\s*/, '') : 'unreadable';
    throw invalid(`invalid ${field} ${JSON.stringify(expression)}: ${reason}`, { field });
  }
  if (!next) throw invalid(`${field} ${JSON.stringify(expression)} never fires (no such date)`, { field });
  return expression;
}

/** The next `count` fire times after `from` (exclusive). */
export function nextFires(expression: string, timezone: string, from: Date, count: number): Date[] {
  return cronOf(expression, timezone).nextRuns(count, from);
}

const DAY_MS = 86_400_000;
const DAY_S = 86_400;

export interface ScheduleGap {
  seconds: number;
  /** Where: two wall times ("23:59:50 → 00:00:00") or, around an offset change, the two instants. */
  between: string;
}

const clock = (s: number): string =>
  [Math.floor(s / 3600), Math.floor((s % 3600) / 60), s % 60].map((n) => String(n).padStart(2, '0')).join(':');

/** The zone's UTC offset at an instant, in minutes (one formatter per zone and call site). */
function offsetReader(timezone: string): (at: Date) => number {
  const format = new Intl.DateTimeFormat('en-US', {
    timeZone: timezone,
    hourCycle: 'h23',
    year: 'numeric',
    month: 'numeric',
    day: 'numeric',
    hour: 'numeric',
    minute: 'numeric',
    second: 'numeric',
  });
  return (at) => {
    const parts = format.formatToParts(at);
    const get = (type: string) => Number(parts.find((p) => p.type === type)?.value);
    const local = Date.UTC(get('year'), get('month') - 1, get('day'), get('hour'), get('minute'), get('second'));
    return Math.round((local - Math.floor(at.getTime() / 1000) * 1000) / 60_000);
  };
}

/** The instants within `days` after `from` where the zone's UTC offset changes (to the minute). */
export function offsetChanges(timezone: string, from: Date, days = 366): Date[] {
  const offsetAt = offsetReader(timezone);
  const changes: Date[] = [];
  let before = offsetAt(from);
  for (let day = 1; day <= days; day++) {
    const at = new Date(from.getTime() + day * DAY_MS);
    const after = offsetAt(at);
    if (after === before) continue;
    let low = at.getTime() - DAY_MS;
    let high = at.getTime();
    while (high - low > 1000) {
      const mid = low + Math.floor((high - low) / 2);
      if (offsetAt(new Date(mid)) === before) low = mid;
      else high = mid;
    }
    // Zones change their offset on a whole minute.
    changes.push(new Date(Math.floor(high / 60_000) * 60_000));
    before = after;
  }
  return changes;
}

/**
 * The shortest real gap between consecutive fires, in seconds of elapsed time. Away from offset
 * changes the clock is regular: the gap follows from the parsed pattern (times of day, and whether
 * two consecutive days fire), exactly and cheaply. Around each offset change (DST) of the zone in
 * the next year, croner's real fires are measured: what it does with skipped and repeated wall
 * times is what a schedule does. Null when the pattern fires at most once a day and never on two
 * days in a row (its gap is a day or more). Stops early once a gap below `stopBelow` is found, and
 * looks for an overnight gap only when it would be below `stopBelow`.
 */
export function shortestGap(expression: string, timezone: string, from: Date, stopBelow = Number.POSITIVE_INFINITY): ScheduleGap | null {
  const pattern = new CronPattern(expression, timezone, { mode: '5-or-6-parts' });
  const times: number[] = [];
  for (let h = 0; h < 24; h++) {
    if (!pattern.hour[h]) continue;
    for (let m = 0; m < 60; m++) {
      if (!pattern.minute[m]) continue;
      for (let s = 0; s < 60; s++) if (pattern.second[s]) times.push(h * 3600 + m * 60 + s);
    }
  }
  let best: ScheduleGap | null = null;
  const consider = (seconds: number, between: string) => {
    if (!best || seconds < best.seconds) best = { seconds, between };
  };
  for (let i = 1; i < times.length; i++) consider(times[i]! - times[i - 1]!, `${clock(times[i - 1]!)} → ${clock(times[i]!)}`);
  const overnight = DAY_S - times[times.length - 1]! + times[0]!;
  // Looking for two consecutive days costs up to a few hundred ms: only when it could matter.
  if (overnight < stopBelow && (!best || overnight < (best as ScheduleGap).seconds) && firesOnConsecutiveDays(expression, pattern, from))
    consider(overnight, `${clock(times[times.length - 1]!)} → ${clock(times[0]!)} the next day`);
  const below = () => Number.isFinite(stopBelow) && best !== null && (best as ScheduleGap).seconds < stopBelow;
  if (below()) return best;
  const cron = cronOf(expression, timezone);
  for (const change of offsetChanges(timezone, from)) {
    for (const start of DST_WINDOW_STARTS) {
      let previous = cron.nextRun(new Date(change.getTime() - start));
      let after = 0;
      for (let i = 0; previous && i < DST_WINDOW_FIRES && after < DST_FIRES_AFTER; i++) {
        const next = cron.nextRun(previous);
        if (!next) break;
        consider((next.getTime() - previous.getTime()) / 1000, `${previous.toISOString()} → ${next.toISOString()}`);
        if (below()) return best;
        if (next.getTime() >= change.getTime()) after++;
        previous = next;
      }
    }
  }
  return best;
}

// Offset changes shift a zone by an hour (rarely two): a fire more than two hours before one keeps
// its regular gap. Dense patterns reach the change from the nearer starts. After the change the
// clock is regular again: what croner does with skipped or repeated wall times shows in the first
// fires after it (a skipped fixed time fires at the change; a repeated hour starts at it).
const DST_WINDOW_STARTS = [2 * 3600_000, 65 * 60_000, 2 * 60_000];
const DST_WINDOW_FIRES = 60;
const DST_FIRES_AFTER = 4;

/** Whether the pattern's days (day of month, month, weekday) include two consecutive days, looked for over four years. */
function firesOnConsecutiveDays(expression: string, pattern: CronPattern, from: Date): boolean {
  if (pattern.starDOM && pattern.starDOW && pattern.month.every(Boolean)) return true;
  const fields = expression.split(' ');
  const days = new Cron(`0 0 0 ${fields.slice(-3).join(' ')}`, { timezone: 'UTC', paused: true });
  let previous = days.nextRun(from);
  for (let i = 0; previous && i < 4 * 366; i++) {
    const next = days.nextRun(previous);
    if (!next) return false;
    if (next.getTime() - previous.getTime() === DAY_MS) return true;
    previous = next;
  }
  return false;
}

/** Refuses a schedule whose fires can come closer than the tier's minimum interval. */
export function assertScheduleInterval(
  expression: string,
  timezone: string,
  limits: Pick<TierLimits, 'scheduleMinIntervalSeconds'>,
  tier: string,
  now: Date = new Date(),
): void {
  const minimum = limits.scheduleMinIntervalSeconds;
  const gap = shortestGap(expression, timezone, now, minimum);
  if (gap && gap.seconds < minimum) {
    throw new DomainError(
      'limit_exceeded',
      `schedule "${expression}" (${timezone}) fires ${gap.seconds} s apart (${gap.between}); plan '${tier}' allows at least ${minimum} s between fires`,
      { resource: 'schedule_min_interval_s', limit: minimum, gap_s: gap.seconds, tier, field: 'cron_expression' },
    );
  }
}

// ---------------------------------------------------------------------------------------------
// Agent slots and state

/**
 * Slots an agent takes: one per desired replica, and at least one even when scaled to 0 (until
 * replicas run as processes, an agent that exists holds a slot; scale-to-zero freeing it comes
 * with the runtime).
 */
export function agentSlots(desiredReplicas: number): number {
  return Math.max(1, desiredReplicas);
}

/** Refuses (typed limit_exceeded, nothing changed) when `used + adding` slots pass the tier's agents (null = unlimited). */
export function assertAgentSlots(limits: Pick<TierLimits, 'agents'>, tier: string, used: number, adding: number): void {
  const limit = limits.agents;
  if (limit === null || used + adding <= limit) return;
  throw new DomainError(
    'limit_exceeded',
    `agent slots used up on plan '${tier}': ${used} in use + ${adding} > ${limit} (each replica takes a slot; destroy an agent or change plans)`,
    {
      resource: 'agents',
      limit,
      usage: used,
      tier,
    },
  );
}

/** One state value (its JSON text) may be at most this large, on every plan. */
export const STATE_VALUE_MAX_BYTES = 1 * MB;
export const STATE_KEY_MAX_CHARS = 256;

/** State keys: 1-256 characters, no control characters. */
export function validateStateKey(key: unknown, field = 'key'): string {
  if (typeof key !== 'string' || key.length === 0 || key.length > STATE_KEY_MAX_CHARS || /[\u0000-\u001f\u007f]/.test(key)) {
    throw invalid(`${field} must be 1-${STATE_KEY_MAX_CHARS} characters without control characters`, { field });
  }
  return key;
}

/** A state value's JSON text; refused when it is not JSON or larger than STATE_VALUE_MAX_BYTES. */
export function stateValueText(value: unknown, field = 'value'): string {
  if (value === undefined) throw invalid(`${field} is required (any JSON value; null too)`, { field });
  // A large value from a sandbox's bridge call arrives as the bytes of its JSON text, never parsed here.
  const text = value instanceof RawJson ? value.bytes.toString('utf8') : JSON.stringify(value);
  const bytes = Buffer.byteLength(text, 'utf8');
  if (bytes > STATE_VALUE_MAX_BYTES) {
    throw new DomainError('limit_exceeded', `state value is ${bytes} bytes; one value may be at most ${STATE_VALUE_MAX_BYTES} bytes`, {
      resource: 'state_value_bytes',
      limit: STATE_VALUE_MAX_BYTES,
      size: bytes,
      field,
    });
  }
  return text;
}

/** Refuses a write that would take the agent's state past the tier's cap (null = unlimited): `total` now, `replacing` the old value's size. */
export function assertStateFits(
  limits: Pick<TierLimits, 'agentStateBytes'>,
  tier: string,
  total: number,
  replacing: number,
  adding: number,
): void {
  const limit = limits.agentStateBytes;
  const after = total - replacing + adding;
  if (limit === null || after <= limit) return;
  throw new DomainError('limit_exceeded', `agent state would be ${after} bytes; plan '${tier}' allows ${limit} bytes of state per agent`, {
    resource: 'agent_state_bytes',
    limit,
    usage: total,
    tier,
  });
}

/**
 * A trigger's function as `service.function` (the guide's form for schedules and webhooks): the two
 * entity names, each checked by the catalog's rules. `field` names the argument in the error.
 */
export function parseFunctionName(value: unknown, field = 'function_name'): { service: string; name: string } {
  if (typeof value !== 'string' || !value.includes('.'))
    throw invalid(`${field} must be "service.function", e.g. "scrape.sources"`, { field });
  const dot = value.indexOf('.');
  const service = validateEntityName('service', value.slice(0, dot), field);
  const name = validateEntityName('function', value.slice(dot + 1), field);
  return { service, name };
}
