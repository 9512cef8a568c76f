/**
 * Pure rules of an agent's schedule: its options (mode, failure policy, overlap, catch-up,
 * orchestration), which ticks to fire or record as skipped at a given moment, the back-off wait,
 * and what a fire's end does to the failure streak. No I/O and no clock: the caller passes `now`.
 */
import { Cron } from 'croner';
import { invalid } from './errors.js';

export const SCHEDULE_MODES = ['single', 'cluster'] as const;
export type ScheduleMode = (typeof SCHEDULE_MODES)[number];
export const FAILURE_STRATEGIES = ['continue', 'auto_disable', 'backoff'] as const;
export type FailureStrategy = (typeof FAILURE_STRATEGIES)[number];
export const OVERLAP_POLICIES = ['skip', 'allow'] as const;
export type OverlapPolicy = (typeof OVERLAP_POLICIES)[number];
export const CATCH_UP_POLICIES = ['none', 'once'] as const;
export type CatchUpPolicy = (typeof CATCH_UP_POLICIES)[number];
/** direct: the function runs; run_then_reason: it runs, then the agent's model gets its outcome; reason_first: the model gets the tick and decides (without an AI configured both run direct). */
export const ORCHESTRATION_MODES = ['direct', 'run_then_reason', 'reason_first'] as const;
export type OrchestrationMode = (typeof ORCHESTRATION_MODES)[number];

export interface FailurePolicy {
  strategy: FailureStrategy;
  /** auto_disable: consecutive failures that turn the schedule off. */
  maxFailures: number;
  /** backoff: after k consecutive failures the next fire waits interval·factor^k. */
  backoffFactor: number;
  /** backoff: the wait never passes this. */
  maxBackoffS: number;
}

export const DEFAULT_FAILURE_POLICY: FailurePolicy = { strategy: 'continue', maxFailures: 5, backoffFactor: 2, maxBackoffS: 3600 };
export const MAX_FAILURES_LIMIT = 1000;
export const MAX_BACKOFF_FACTOR = 100;
export const MAX_BACKOFF_S_LIMIT = 7 * 86_400;

export interface ScheduleOptions {
  mode: ScheduleMode;
  failurePolicy: FailurePolicy;
  overlap: OverlapPolicy;
  catchUp: CatchUpPolicy;
  orchestrationMode: OrchestrationMode;
}

function oneOf<T extends string>(value: unknown, allowed: readonly T[], fallback: T, field: string): T {
  if (value === undefined || value === null) return fallback;
  if (typeof value !== 'string' || !(allowed as readonly string[]).includes(value))
    throw invalid(`${field} must be one of ${allowed.map((v) => `'${v}'`).join(', ')} (default '${fallback}')`, { field });
  return value as T;
}

function numberIn(value: unknown, fallback: number, min: number, max: number, field: string, integer: boolean): number {
  if (value === undefined || value === null) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min || value > max || (integer && !Number.isInteger(value)))
    throw invalid(`${field} must be ${integer ? 'an integer' : 'a number'} from ${min} to ${max}`, { field });
  return value;
}

/** The failure policy of add_schedule's `failure_policy` object (every field optional). */
export function parseFailurePolicy(value: unknown): FailurePolicy {
  if (value === undefined || value === null) return { ...DEFAULT_FAILURE_POLICY };
  if (typeof value !== 'object' || Array.isArray(value))
    throw invalid('failure_policy must be an object {strategy, max_failures, backoff_factor, max_backoff_s}', { field: 'failure_policy' });
  const v = value as Record<string, unknown>;
  const known = new Set(['strategy', 'max_failures', 'backoff_factor', 'max_backoff_s']);
  const unknown = Object.keys(v).filter((k) => !known.has(k));
  if (unknown.length > 0)
    throw invalid(`failure_policy has unknown field(s) ${unknown.join(', ')}: use strategy, max_failures, backoff_factor, max_backoff_s`, {
      field: 'failure_policy',
    });
  const d = DEFAULT_FAILURE_POLICY;
  return {
    strategy: oneOf(v.strategy, FAILURE_STRATEGIES, d.strategy, 'failure_policy.strategy'),
    maxFailures: numberIn(v.max_failures, d.maxFailures, 1, MAX_FAILURES_LIMIT, 'failure_policy.max_failures', true),
    backoffFactor: numberIn(v.backoff_factor, d.backoffFactor, 1, MAX_BACKOFF_FACTOR, 'failure_policy.backoff_factor', false),
    maxBackoffS: numberIn(v.max_backoff_s, d.maxBackoffS, 1, MAX_BACKOFF_S_LIMIT, 'failure_policy.max_backoff_s', true),
  };
}

/** add_schedule's options besides the cron and zone. */
export function parseScheduleOptions(args: Record<string, unknown>): ScheduleOptions {
  const orchestration = oneOf(args.orchestration_mode, ORCHESTRATION_MODES, 'direct', 'orchestration_mode');
  return {
    mode: oneOf(args.mode, SCHEDULE_MODES, 'single', 'mode'),
    failurePolicy: parseFailurePolicy(args.failure_policy),
    overlap: oneOf(args.overlap, OVERLAP_POLICIES, 'skip', 'overlap'),
    catchUp: oneOf(args.catch_up, CATCH_UP_POLICIES, 'none', 'catch_up'),
    orchestrationMode: orchestration,
  };
}

export interface FailureStreak {
  /** Consecutive failed fires (0 after a success). */
  count: number;
  /** The scheduled time of the last failed fire (the back-off counts from it). */
  lastFailedTick: Date | null;
}

export const NO_FAILURES: FailureStreak = { count: 0, lastFailedTick: null };

export interface PlanInput {
  cron: string;
  timezone: string;
  catchUp: CatchUpPolicy;
  failurePolicy: FailurePolicy;
  streak: FailureStreak;
  /** Ticks up to and including this one are planned already (fire rows exist, or the schedule was armed then). */
  cursor: Date;
  now: Date;
  /**
   * Since when the planning node has been watching: a due tick before it came while no node ran
   * (another node would have planned it, moving the cursor past it), so it follows catch_up.
   */
  runningSince: Date;
  /** At most this many skipped ticks are recorded one by one (older ones are summed up in the oldest's reason). */
  maxSkipRecords?: number;
  /** At most this many ticks fire in one plan (a node stalled past more records the older ones as late). */
  maxFires?: number;
}

export interface PlannedSkip {
  at: Date;
  reason: string;
}

export interface Plan {
  /** Ticks to fire now, oldest first. */
  fire: Date[];
  /** Ticks to record as skipped, with why, oldest first. */
  skip: PlannedSkip[];
  /** The newest tick this plan covers (the cursor afterwards; the input cursor when nothing was due). */
  cursor: Date;
  /** When the next fire is due (after `now`, and after any back-off wait); null when the cron never fires again. */
  nextFireAt: Date | null;
}

export const MISSED_REASON = 'missed: server down';
export const OVERLAP_REASON = 'overlap: the previous run of this schedule was still running';

const DEFAULT_MAX_SKIP_RECORDS = 100;
const DEFAULT_MAX_FIRES = 10;

function cronOf(expression: string, timezone: string): Cron {
  return new Cron(expression, { timezone, mode: '5-or-6-parts', paused: true });
}

/**
 * The ticks in (cursor, now], oldest first, at most `limit` (the newest ones when there are more),
 * and whether older ones were left out.
 */
function dueTicks(cron: Cron, cursor: Date, now: Date, limit: number): { ticks: Date[]; truncated: boolean } {
  const ticks: Date[] = [];
  let previous: Date | null = cursor;
  while (previous) {
    const next: Date | null = cron.nextRun(previous);
    if (!next || next.getTime() > now.getTime()) return { ticks, truncated: false };
    if (ticks.length === limit) break;
    ticks.push(next);
    previous = next;
  }
  // More than `limit` are due (a long outage): the newest ones, counted back from now.
  const newest = cron
    .previousRuns(limit, new Date(now.getTime() + 1))
    .filter((t) => t.getTime() > cursor.getTime() && t.getTime() <= now.getTime())
    .sort((a, b) => a.getTime() - b.getTime());
  return { ticks: newest, truncated: true };
}

/**
 * Until when a schedule in back-off waits after `streak.count` consecutive failures: the last
 * failed tick plus interval·factor^k, capped by max_backoff_s, where the interval is the real gap
 * from the failed tick to the one after it. Null when the policy is not back-off or nothing failed.
 */
export function backoffUntil(cron: string, timezone: string, policy: FailurePolicy, streak: FailureStreak): Date | null {
  if (policy.strategy !== 'backoff' || streak.count < 1 || !streak.lastFailedTick) return null;
  const failed = streak.lastFailedTick;
  const following = cronOf(cron, timezone).nextRun(failed);
  if (!following) return null;
  const interval = following.getTime() - failed.getTime();
  const wait = Math.min(interval * Math.pow(policy.backoffFactor, streak.count), policy.maxBackoffS * 1000);
  return new Date(failed.getTime() + wait);
}

/** The next fire after `now` (not before the back-off wait ends). */
export function nextFireAt(cron: string, timezone: string, now: Date, waitUntil: Date | null = null): Date | null {
  const from = waitUntil && waitUntil.getTime() > now.getTime() ? new Date(waitUntil.getTime() - 1) : now;
  return cronOf(cron, timezone).nextRun(from);
}

const iso = (d: Date): string => d.toISOString();

/**
 * What to do at `now`: the due ticks in (cursor, now] split into fires and skips. Ticks that came
 * before `runningSince` were missed while no node ran: catch_up 'none' records them skipped, 'once'
 * fires the newest of them and records the others skipped. A back-off wait skips the ticks inside it.
 */
export function planTicks(input: PlanInput): Plan {
  const cron = cronOf(input.cron, input.timezone);
  const maxSkips = input.maxSkipRecords ?? DEFAULT_MAX_SKIP_RECORDS;
  const maxFires = input.maxFires ?? DEFAULT_MAX_FIRES;
  const { ticks, truncated } = dueTicks(cron, input.cursor, input.now, maxSkips + maxFires);
  const fire: Date[] = [];
  const skip: PlannedSkip[] = [];
  const missed = ticks.filter((t) => t.getTime() < input.runningSince.getTime());
  const live = ticks.filter((t) => t.getTime() >= input.runningSince.getTime());

  const candidates: Date[] = [];
  if (missed.length > 0) {
    if (input.catchUp === 'once') {
      const caughtUp = missed[missed.length - 1]!;
      for (const t of missed.slice(0, -1)) skip.push({ at: t, reason: `${MISSED_REASON} (caught up by one run, for ${iso(caughtUp)})` });
      candidates.push(caughtUp);
    } else {
      for (const t of missed) skip.push({ at: t, reason: MISSED_REASON });
    }
  }
  const late = live.length - maxFires;
  live.forEach((t, i) => {
    if (i < late) skip.push({ at: t, reason: `late: ${live.length} ticks came due at once; only the newest ${maxFires} ran` });
    else candidates.push(t);
  });

  const waitUntil = backoffUntil(input.cron, input.timezone, input.failurePolicy, input.streak);
  for (const t of candidates) {
    if (waitUntil && t.getTime() < waitUntil.getTime())
      skip.push({
        at: t,
        reason: `backoff: ${input.streak.count} consecutive failure(s); no run before ${iso(waitUntil)}`,
      });
    else fire.push(t);
  }
  skip.sort((a, b) => a.at.getTime() - b.at.getTime());
  // The oldest recorded skip says how far back the unrecorded ones go.
  if (truncated && skip.length > 0)
    skip[0] = { at: skip[0]!.at, reason: `${skip[0]!.reason}; earlier ticks since ${iso(input.cursor)} were not recorded one by one` };
  const cursor = ticks.length > 0 ? ticks[ticks.length - 1]! : input.cursor;
  return { fire, skip, cursor, nextFireAt: nextFireAt(input.cron, input.timezone, input.now, waitUntil) };
}

export interface FireOutcome {
  /** succeeded resets the streak; failed counts; cancelled (the server stopping) leaves it as it is. */
  status: 'succeeded' | 'failed' | 'cancelled';
  tick: Date;
  error?: { type: string; message: string };
}

export interface AfterOutcome {
  streak: FailureStreak;
  /** Set when auto_disable turns the schedule off: the reason list_schedules and describe_agent show. */
  disabledReason: string | null;
}

/** The failure streak after a fire ended, and whether auto_disable turns the schedule off now. */
export function afterOutcome(policy: FailurePolicy, streak: FailureStreak, outcome: FireOutcome): AfterOutcome {
  if (outcome.status === 'cancelled') return { streak, disabledReason: null };
  if (outcome.status === 'succeeded') return { streak: { ...NO_FAILURES }, disabledReason: null };
  const last = streak.lastFailedTick;
  const next: FailureStreak = {
    count: streak.count + 1,
    lastFailedTick: last && last.getTime() > outcome.tick.getTime() ? last : outcome.tick,
  };
  if (policy.strategy === 'auto_disable' && next.count >= policy.maxFailures) {
    const error = outcome.error ? `${outcome.error.type}: ${outcome.error.message}`.slice(0, 300) : 'failed';
    return {
      streak: next,
      disabledReason: `auto_disabled after ${next.count} consecutive failures (max_failures ${policy.maxFailures}); last at ${iso(outcome.tick)}: ${error}`,
    };
  }
  return { streak: next, disabledReason: null };
}
