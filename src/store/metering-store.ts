import { sql, type Kysely } from 'kysely';
import type { TierLimits } from '../core/tiers.js';
import type { Db } from './database.js';
import type { Database } from './schema.js';

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
}

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

/** The margin past a call's time limit by which its slot is expected free (start-up, settling). */
const SLOT_DEADLINE_MARGIN_MS = 2000;

/** `2026-11` for any instant in November 2026 (UTC): the quota period. */
export function monthKey(at: Date): string {
  return at.toISOString().slice(0, 7);
}

function minuteStart(at: Date): Date {
  return new Date(Math.floor(at.getTime() / 60_000) * 60_000);
}

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
   * One round trip: the steps run in the database function mcpworks_admit (migration 6), under
   * the account's row lock. Nothing is counted when it answers a rejection.
   */
  async admit(request: AdmissionRequest): Promise<Rejection | undefined> {
    const { accountId, limits, now, ticketId, run } = request;
    const window = minuteStart(now);
    // A slot outlives the longest possible run by a margin, then frees itself.
    const expiresAt = new Date(now.getTime() + (limits.timeoutSeconds + 120) * 1000);
    const deadline = new Date(now.getTime() + limits.timeoutSeconds * 1000 + SLOT_DEADLINE_MARGIN_MS);
    const { rows } = await sql<{ rejected: Rejection['code'] | null; used: number; retry_after: number | null; cancelled: boolean }>`
      SELECT rejected, used, retry_after, cancelled FROM mcpworks_admit_call(${ticketId}, ${accountId}, ${now}, ${monthKey(now)}, ${window},
        ${limits.monthlyExecutions}, ${limits.executionsPerMinute}, ${limits.concurrency}, ${expiresAt},
        ${this.instanceId}, ${deadline}, ${run ? JSON.stringify(run) : null}::jsonb)`.execute(this.db);
    const answer = rows[0];
    if (!answer) throw new Error('mcpworks_admit returned no row');
    switch (answer.rejected) {
      case null:
        // Its client cancelled the call before the admission committed (on another node, say).
        if (answer.cancelled) request.onCancelled?.();
        return undefined;
      case 'CONCURRENCY_LIMIT_EXCEEDED':
        // Until the earliest of the account's calls reaches its time limit: by then its slot is free.
        return { code: answer.rejected, limit: limits.concurrency!, retryAfter: Math.max(1, Number(answer.retry_after ?? 1)) };
      case 'EXECUTION_RATE_EXCEEDED':
        return {
          code: answer.rejected,
          limit: limits.executionsPerMinute!,
          retryAfter: Math.max(1, Math.ceil((window.getTime() + 60_000 - now.getTime()) / 1000)),
        };
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
  async settle(ticketId: string, accountId: string, admittedAt: Date, successful: boolean): Promise<void> {
    // The refund depends on the slot this statement deletes: one statement, no transaction around it.
    await withSettlement(this.db, { ticketId, accountId, admittedAt, counted: successful })
      .selectNoFrom(sql<number>`1`.as('done'))
      .execute();
  }

  /**
   * One unit of the per-minute rate, without a quota unit or a slot: for a sandbox that a running
   * code-mode call starts (a cross-language function call). False, and nothing taken, when the
   * minute's window is full (null: no limit, the unit is still counted). Under the account's row
   * lock, as admission is, so the two together never pass the limit.
   */
  async takeRateUnit(accountId: string, perMinute: number | null, now: Date): Promise<boolean> {
    if (perMinute !== null && perMinute <= 0) return false;
    const { rows } = await sql<{ executions: number }>`
      INSERT INTO rate_windows (account_id, window_start, executions)
        SELECT id, ${minuteStart(now)}, 1 FROM accounts WHERE id = ${accountId} FOR UPDATE
      ON CONFLICT (account_id, window_start) DO UPDATE SET executions = rate_windows.executions + 1
        WHERE ${perMinute}::int IS NULL OR rate_windows.executions < ${perMinute}::int
      RETURNING executions`.execute(this.db);
    return rows.length > 0;
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

  async usage(accountId: string, now: Date): Promise<{ month: string; executions: number; lastMinute: number; active: number }> {
    const month = monthKey(now);
    const [usage, rate, active] = await Promise.all([
      this.db
        .selectFrom('usage_months')
        .select('executions')
        .where('account_id', '=', accountId)
        .where('month', '=', month)
        .executeTakeFirst(),
      this.db
        .selectFrom('rate_windows')
        .select('executions')
        .where('account_id', '=', accountId)
        .where('window_start', '=', minuteStart(now))
        .executeTakeFirst(),
      this.db
        .selectFrom('active_executions')
        .select(sql<number>`count(*)::int`.as('n'))
        .where('account_id', '=', accountId)
        // The database's clock, as slots' expiries are (see migration 12).
        .where('expires_at', '>=', sql<Date>`now()`)
        .executeTakeFirstOrThrow(),
    ]);
    return { month, executions: usage?.executions ?? 0, lastMinute: rate?.executions ?? 0, active: Number(active.n) };
  }
}

/** What settling a ticket needs: its slot, and whether its quota unit stays counted. */
export interface Settlement {
  ticketId: string;
  accountId: string;
  admittedAt: Date;
  counted: boolean;
}

/**
 * settle() as common table expressions in front of the caller's statement (the run ledger settles
 * and records in one statement): `freed` frees the slot, and an uncounted call whose slot was
 * still held gives back its quota unit. Exactly once per ticket: once the slot is gone, nothing
 * is refunded again. Data-modifying CTEs run whether or not the main statement reads them.
 */
export function withSettlement(db: Kysely<Database>, settlement: Settlement) {
  const freeing = db.with('freed', (qb) => qb.deleteFrom('active_executions').where('id', '=', settlement.ticketId).returning('id'));
  if (settlement.counted) return freeing;
  return freeing.with('refund', (qb) =>
    qb
      .updateTable('usage_months')
      .set({ executions: sql`greatest(executions - 1, 0)` })
      .where('account_id', '=', settlement.accountId)
      .where('month', '=', monthKey(settlement.admittedAt))
      .where(sql<boolean>`EXISTS (SELECT 1 FROM freed)`)
      .returning('account_id'),
  );
}
