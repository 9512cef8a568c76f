import { sql, type Transaction } from 'kysely';
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
}

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
  constructor(private readonly db: Db) {}

  async admit(request: AdmissionRequest): Promise<Rejection | undefined> {
    const { accountId, limits, now, ticketId } = request;
    const month = monthKey(now);
    const window = minuteStart(now);
    return this.db.transaction().execute(async (trx) => {
      await trx.selectFrom('accounts').select('id').where('id', '=', accountId).forUpdate().executeTakeFirst();

      // Slots whose call never settled (its node died, or it never reached a handler) free
      // themselves here, and give back their quota unit unless the call was recorded.
      const expired = await trx.deleteFrom('active_executions').where('account_id', '=', accountId).where('expires_at', '<', now).returning(['id', 'started_at']).execute();
      for (const slot of expired) {
        const recorded = await trx.selectFrom('executions').select('id').where('id', '=', slot.id).executeTakeFirst();
        if (!recorded) await refundIn(trx, accountId, new Date(slot.started_at));
      }
      if (limits.concurrency !== null) {
        const active = await trx
          .selectFrom('active_executions')
          .select(sql<number>`count(*)::int`.as('n'))
          .where('account_id', '=', accountId)
          .executeTakeFirstOrThrow();
        if (Number(active.n) >= limits.concurrency) return { code: 'CONCURRENCY_LIMIT_EXCEEDED', limit: limits.concurrency, retryAfter: 1 } as const;
      }
      if (limits.executionsPerMinute !== null) {
        const row = await trx.selectFrom('rate_windows').select('executions').where('account_id', '=', accountId).where('window_start', '=', window).executeTakeFirst();
        if ((row?.executions ?? 0) >= limits.executionsPerMinute) {
          const retryAfter = Math.max(1, Math.ceil((window.getTime() + 60_000 - now.getTime()) / 1000));
          return { code: 'EXECUTION_RATE_EXCEEDED', limit: limits.executionsPerMinute, retryAfter } as const;
        }
      }
      const usage = await trx.selectFrom('usage_months').select('executions').where('account_id', '=', accountId).where('month', '=', month).executeTakeFirst();
      if (limits.monthlyExecutions !== null && (usage?.executions ?? 0) >= limits.monthlyExecutions) {
        return { code: 'QUOTA_EXCEEDED', usage: usage?.executions ?? 0, limit: limits.monthlyExecutions } as const;
      }

      await trx
        .insertInto('usage_months')
        .values({ account_id: accountId, month, executions: 1 })
        .onConflict((oc) => oc.columns(['account_id', 'month']).doUpdateSet({ executions: sql`usage_months.executions + 1` }))
        .execute();
      await trx.deleteFrom('rate_windows').where('account_id', '=', accountId).where('window_start', '<', new Date(window.getTime() - 60_000)).execute();
      await trx
        .insertInto('rate_windows')
        .values({ account_id: accountId, window_start: window, executions: 1 })
        .onConflict((oc) => oc.columns(['account_id', 'window_start']).doUpdateSet({ executions: sql`rate_windows.executions + 1` }))
        .execute();
      // A slot outlives the longest possible run by a margin, then frees itself.
      const expiresAt = new Date(now.getTime() + (limits.timeoutSeconds + 120) * 1000);
      await trx.insertInto('active_executions').values({ id: ticketId, account_id: accountId, started_at: now, expires_at: expiresAt }).execute();
      return undefined;
    });
  }

  /**
   * Frees the concurrency slot; an unsuccessful call also gives back its quota unit. Exactly once
   * per ticket: a second settle (or one after the slot expired) changes nothing.
   */
  async settle(ticketId: string, accountId: string, admittedAt: Date, successful: boolean): Promise<void> {
    await this.db.transaction().execute((trx) => settleIn(trx, ticketId, accountId, admittedAt, successful));
  }

  async usage(accountId: string, now: Date): Promise<{ month: string; executions: number; lastMinute: number; active: number }> {
    const month = monthKey(now);
    const [usage, rate, active] = await Promise.all([
      this.db.selectFrom('usage_months').select('executions').where('account_id', '=', accountId).where('month', '=', month).executeTakeFirst(),
      this.db.selectFrom('rate_windows').select('executions').where('account_id', '=', accountId).where('window_start', '=', minuteStart(now)).executeTakeFirst(),
      this.db
        .selectFrom('active_executions')
        .select(sql<number>`count(*)::int`.as('n'))
        .where('account_id', '=', accountId)
        .where('expires_at', '>=', now)
        .executeTakeFirstOrThrow(),
    ]);
    return { month, executions: usage?.executions ?? 0, lastMinute: rate?.executions ?? 0, active: Number(active.n) };
  }

}

/** settle() inside a caller's transaction (the run ledger settles and records in one). */
export async function settleIn(trx: Transaction<Database>, ticketId: string, accountId: string, admittedAt: Date, successful: boolean): Promise<void> {
  const freed = await trx.deleteFrom('active_executions').where('id', '=', ticketId).returning('id').executeTakeFirst();
  if (!freed || successful) return;
  await refundIn(trx, accountId, admittedAt);
}

async function refundIn(trx: Transaction<Database>, accountId: string, admittedAt: Date): Promise<void> {
  await trx
    .updateTable('usage_months')
    .set({ executions: sql`greatest(executions - 1, 0)` })
    .where('account_id', '=', accountId)
    .where('month', '=', monthKey(admittedAt))
    .execute();
}
