import { sql } from 'kysely';
import type { Db } from './database.js';

/** The channel on which a call's cancellation reaches the node that runs it (payload: the call's id). */
export const CANCEL_CHANNEL = 'mcpworks_cancel';

/**
 * Cancellation through the database, so that a client's notifications/cancelled may reach any
 * node: the call's slot is marked and its id NOTIFYed; each node LISTENs and kills its own.
 */
export class CancelStore {
  constructor(
    private readonly db: Db,
    private readonly instanceId: string | null,
  ) {}

  /**
   * Marks the account's call in progress under `cancelKey` (session and request id) and notifies
   * its node (NOTIFY is sent at commit); when no call is marked (its admission on another node has
   * not committed yet), the cancel is kept a minute for that admission to take (migration 14).
   * Answers the ids of the calls marked.
   */
  async request(accountId: string, cancelKey: string, now = new Date()): Promise<string[]> {
    const { rows } = await sql<{ marked_id: string }>`SELECT marked_id FROM mcpworks_cancel(${accountId}, ${cancelKey}, ${now})`.execute(
      this.db,
    );
    return rows.map((row) => row.marked_id);
  }

  /** This node's calls whose cancellation was asked for (a listener that was away may have missed it). */
  async requested(): Promise<string[]> {
    if (this.instanceId === null) return [];
    const rows = await this.db
      .selectFrom('active_executions')
      .select('id')
      .where('instance_id', '=', this.instanceId)
      .where('cancel_requested_at', 'is not', null)
      .execute();
    return rows.map((row) => row.id);
  }
}
