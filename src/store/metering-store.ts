import { sql } from 'kysely';
import type { TierLimits } from '../core/tiers.js';
import type { Db } from './database.js';
import { hotStatement, runHot } from './hot-statements.js';

export type Rejection =
  | { code: 'QUOTA_EXCEEDED'; usage: number; limit: number }
  | { code: 'EXECUTION_RATE_EXCEEDED'; limit: number; retryAfter: number }
  | { code: 'CONCURRENCY_LIMIT_EXCEEDED'; limit: number; retryAfter: number };

export interface AdmissionRequest {
  ticketId: string;
  accountId: string;
  limits: Pick<TierLimits, 'monthlyExecutions' | 'executionsPerMinute' | 'concurrency' | 'timeoutSeconds'>;
  now: Date;
  /** What the record of the call needs if its server dies before it ends (see recordInterrupted). */
  run?: InterruptedRun | undefined;
  /** Called when the call was admitted but its client's cancel had come first (kept by another node). */
  onCancelled?: () => void;
  /** A key from a node's cache of verified keys, checked by this admission (migration 38). */
  cachedKey?: CachedKeyCheck | undefined;
}

/** What a cached key's admission re-checks: the key live, its plan, and the namespace's catalog version the call was read at. */
export interface CachedKeyCheck {
  keyId: string;
  tier: string;
  namespaceId: string;
  catalogVersion: number;
  /** A 2025-era call's session, cached with the key: still live and the account's, for this endpoint and namespace (migration 40). */
  session?: { id: string; endpoint: string; namespace: string; live: { created: Date; seen: Date } } | undefined;
}

/** The key or what it reached changed since it was cached: nothing was taken; look it up and start again. */
export const KEY_CHANGED = 'KEY_CHANGED';

/** The fields of an execution record known when a call is admitted. */
export interface InterruptedRun {
  namespace_id: string;
  key_id: string | null;
  agent_id?: string;
  mode: 'tools' | 'code';
  /** core/principal.ts TRIGGERS; the interrupted record names it (migration 16; absent: the MCP call of its mode). */
  trigger?: string;
  service_name: string | null;
  function_name: string | null;
  function_id: string | null;
  version: number | null;
  functions: string[];
  language: string | null;
  /** What a 2025-era client's notifications/cancelled names the call by (session and request id). */
  cancel_key?: string;
}

/** What mcpworks_admit_call and mcpworks_admit_key_call answer. */
interface AdmissionAnswer {
  rejected: Rejection['code'] | typeof KEY_CHANGED | null;
  used: number;
  retry_after: number | null;
  cancelled: boolean;
}

/**
 * The admission of a call whose key was looked up (migration 38's mcpworks_admit_call; p_month and
 * p_window are unused since migration 29) and of one whose key came from the node's cache (its
 * key, plan and catalog version checked too): fixed texts, hot statements (hot-statements.ts).
 */
const ADMIT_CALL = hotStatement(
  'mcpworks_admit_call',
  `SELECT rejected, used, retry_after, cancelled FROM mcpworks_admit_call($1, $2, $3, NULL::text, NULL::timestamptz,
    $4, $5, $6, $7, $8, $9, $10::jsonb)`,
);
const ADMIT_KEY_CALL = hotStatement(
  'mcpworks_admit_key_call',
  `SELECT rejected, used, retry_after, cancelled FROM mcpworks_admit_key_call($1, $2, $3, $4, $5, $6, $7,
    $8, $9, $10, $11, $12, $13, $14::jsonb)`,
);

const ADMIT_SESSION_CALL = hotStatement(
  'mcpworks_admit_session_call',
  `SELECT rejected, used, retry_after, cancelled FROM mcpworks_admit_session_call($1, $2, $3, $4, $5, $6, $7, $8, $9,
    $10, $11, $12, $13, $14, $15, $16, $17, $18, $19::jsonb)`,
);

/** The margin past a call's time limit by which its slot is expected free (start-up, settling). */
const SLOT_DEADLINE_MARGIN_MS = 2000;

/**
 * The database's month (`2026-11`, UTC) and minute window: the meter's clock. Nodes' clocks may
 * disagree; the database's is the one they share (as migration 29's admission uses it).
 */
const DB_MONTH = sql<string>`to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM')`;
const DB_MINUTE = sql<Date>`(date_trunc('minute', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')`;

/**
 * The quota ledger and the rate and concurrency gates, all in the database so that every node of
 * a cluster sees the same counts. Admission locks the account row, so concurrent admissions of one
 * account are serialised and a quota of N admits exactly N.
 */
export class MeteringStore {
  /** `instanceId`: the server instance (see InstanceLease) whose slots these are. */
  constructor(
    private readonly db: Db,
    private readonly instanceId: string | null = null,
  ) {}

  /**
   * One round trip: the steps run in the database function mcpworks_admit_call (migration 31),
   * under the account's row lock. Nothing is counted when it answers a rejection.
   */
  async admit(request: AdmissionRequest): Promise<Rejection | undefined> {
    const { accountId, limits, now, ticketId, run } = request;
    // A slot outlives the longest possible run by a margin, then frees itself. The month and the
    // minute window are the database's (p_month and p_window are unused since migration 29).
    const expiresAt = new Date(now.getTime() + (limits.timeoutSeconds + 120) * 1000);
    const deadline = new Date(now.getTime() + limits.timeoutSeconds * 1000 + SLOT_DEADLINE_MARGIN_MS);
    const key = request.cachedKey;
    const gates = [limits.monthlyExecutions, limits.executionsPerMinute, limits.concurrency, expiresAt, this.instanceId, deadline];
    const runJson = run ? JSON.stringify(run) : null;
    const session = key?.session;
    // Each statement's parameters: the key's checks, then the session's, then the admission's own.
    const checked = [
      ...(key ? [key.keyId, key.tier, key.namespaceId, key.catalogVersion] : []),
      ...(session ? [session.id, session.endpoint, session.namespace, session.live.created, session.live.seen] : []),
    ];
    const { rows } = await runHot<AdmissionAnswer>(this.db, session ? ADMIT_SESSION_CALL : key ? ADMIT_KEY_CALL : ADMIT_CALL, [
      ...checked,
      ticketId,
      accountId,
      now,
      ...gates,
      runJson,
    ]);
    const answer = rows[0];
    if (!answer) throw new Error('mcpworks_admit returned no row');
    switch (answer.rejected) {
      case KEY_CHANGED:
        throw new KeyChangedError();
      case null:
        // Its client cancelled the call before the admission committed (on another node, say).
        if (answer.cancelled) request.onCancelled?.();
        return undefined;
      case 'CONCURRENCY_LIMIT_EXCEEDED':
        // Until the earliest of the account's calls reaches its time limit: by then its slot is free.
        return { code: answer.rejected, limit: limits.concurrency!, retryAfter: Math.max(1, Number(answer.retry_after ?? 1)) };
      case 'EXECUTION_RATE_EXCEEDED':
        // Until the database's minute ends.
        return { code: answer.rejected, limit: limits.executionsPerMinute!, retryAfter: Math.max(1, Number(answer.retry_after ?? 1)) };
      case 'QUOTA_EXCEEDED':
        return { code: answer.rejected, usage: Number(answer.used), limit: limits.monthlyExecutions! };
      default:
        throw new Error(`mcpworks_admit answered an unknown rejection ${JSON.stringify(answer.rejected)}`);
    }
  }

  /**
   * Frees the concurrency slot; an unsuccessful call also gives back its quota unit. Exactly once
   * per ticket: a second settle (or one after the slot expired) changes nothing.
   */
  async settle(ticketId: string, accountId: string, successful: boolean): Promise<void> {
    // The refund depends on the slot this statement deletes: one statement, no transaction around it.
    await settleOn(this.db, { ticketId, accountId, counted: successful });
  }

  /**
   * One unit of the per-minute rate, without a quota unit or a slot: for a sandbox that a running
   * code-mode call starts (a cross-language function call). Refused, and nothing taken, when the
   * database's minute window is full (perMinute null: no limit, the unit is still counted); the
   * refusal says when that window ends. Under the account's row lock, as admission is, so the two
   * together never pass the limit.
   */
  async takeRateUnit(accountId: string, perMinute: number | null): Promise<RateUnit> {
    if (perMinute !== null && perMinute <= 0) return { taken: false, windowEndsInMs: 60_000 };
    const { rows } = await sql<{ taken: boolean; ends_in_ms: number }>`
      WITH unit AS (
        INSERT INTO rate_windows (account_id, window_start, executions)
          SELECT id, ${DB_MINUTE}, 1 FROM accounts WHERE id = ${accountId} FOR UPDATE
        ON CONFLICT (account_id, window_start) DO UPDATE SET executions = rate_windows.executions + 1
          WHERE ${perMinute}::int IS NULL OR rate_windows.executions < ${perMinute}::int
        RETURNING executions)
      SELECT EXISTS (SELECT 1 FROM unit) AS taken,
        ceil(extract(epoch FROM (${DB_MINUTE} + interval '1 minute' - now())) * 1000)::int AS ends_in_ms`.execute(this.db);
    const answer = rows[0];
    if (answer?.taken) return { taken: true };
    return { taken: false, windowEndsInMs: Math.max(1, Number(answer?.ends_in_ms ?? 60_000)) };
  }

  /**
   * Releases stale slots of every account: expired ones, those of instances whose lease expired,
   * and those of `dead` instances (null: every slot, when no other server can share the database).
   * Their unrecorded calls give back their quota unit and, once begun, are recorded as interrupted.
   */
  async releaseStale(now: Date, dead: string[] | null): Promise<number> {
    const { rows } = await sql<{
      n: number;
    }>`SELECT mcpworks_release_stale(NULL, ${now}, ${dead}::text[], ${this.instanceId}) AS n`.execute(this.db);
    return Number(rows[0]?.n ?? 0);
  }

  /** This month's count, the current minute's and the slots held, all by the database's clock. */
  async usage(accountId: string): Promise<{ month: string; executions: number; lastMinute: number; active: number }> {
    const { rows } = await sql<{ month: string; executions: number; last_minute: number; active: number }>`
      SELECT ${DB_MONTH} AS month,
        coalesce((SELECT executions FROM usage_months WHERE account_id = ${accountId} AND month = ${DB_MONTH}), 0)::int AS executions,
        coalesce((SELECT executions FROM rate_windows WHERE account_id = ${accountId} AND window_start = ${DB_MINUTE}), 0)::int AS last_minute,
        (SELECT count(*) FROM active_executions WHERE account_id = ${accountId} AND expires_at >= now())::int AS active`.execute(this.db);
    const row = rows[0]!;
    return { month: row.month, executions: Number(row.executions), lastMinute: Number(row.last_minute), active: Number(row.active) };
  }
}

/** A cached key's admission found the key, its plan or its namespace's catalog changed: nothing was taken. */
export class KeyChangedError extends Error {
  constructor() {
    super('the API key or its namespace changed since the key was cached');
    this.name = 'KeyChangedError';
  }
}

/** takeRateUnit's answer: a refusal lasts until the database's minute window ends. */
export type RateUnit = { taken: true } | { taken: false; windowEndsInMs: number };

/** What settling a ticket needs: its slot, and whether its quota unit stays counted. */
export interface Settlement {
  ticketId: string;
  accountId: string;
  counted: boolean;
}

/**
 * settle() as common table expressions in front of the caller's statement (the run ledger settles
 * and records in one statement): `freed` frees the slot, and an uncounted call whose slot was
 * still held gives back its quota unit, in the month the slot says it was counted in (its
 * started_at, the database's clock at admission). Exactly once per ticket: once the slot is gone, nothing
 * is refunded again. Data-modifying CTEs run whether or not the main statement reads them.
 * Fixed texts (hot statements): `$1` the ticket, `$2` the account (uncounted only), as
 * settlementParameters gives them; the caller's parameters follow.
 */
export function settlementCtes(counted: boolean): string[] {
  if (counted) return ['freed AS (DELETE FROM active_executions WHERE id = $1)'];
  return [
    'freed AS (DELETE FROM active_executions WHERE id = $1 RETURNING started_at)',
    // No slot freed (settled before, or released): no month, nothing refunded. The account's row
    // (key share) is waited for before the month's count is locked, the order admission takes them
    // in: a record's foreign key took it after, and deadlocked with an admission of the account.
    `refund AS (UPDATE usage_months SET executions = greatest(executions - 1, 0)
      WHERE account_id = (SELECT id FROM accounts WHERE id = $2 FOR KEY SHARE)
        AND month = (SELECT to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM') FROM freed))`,
  ];
}

/** The parameters of settlementCtes, in order. */
export function settlementParameters(settlement: Settlement): unknown[] {
  return settlement.counted ? [settlement.ticketId] : [settlement.ticketId, settlement.accountId];
}

/** MeteringStore.settle's statement on `db` (a connection already held, for one). */
export async function settleOn(db: Db, settlement: Settlement): Promise<void> {
  await runHot(db, settlement.counted ? SETTLE_COUNTED : SETTLE_UNCOUNTED, settlementParameters(settlement));
}

const SETTLE_COUNTED = hotStatement('mcpworks_settle_counted', `WITH ${settlementCtes(true).join(', ')} SELECT 1 AS done`);
const SETTLE_UNCOUNTED = hotStatement('mcpworks_settle_uncounted', `WITH ${settlementCtes(false).join(', ')} SELECT 1 AS done`);
