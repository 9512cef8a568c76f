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
   * its node, in one statement (NOTIFY is sent at commit). Answers the ids of the calls marked.
   */
  async request(accountId: string, cancelKey: string, now = new Date()): Promise<string[]> {
    const { rows } = await sql<{ id: string }>`
      WITH marked AS (
        UPDATE active_executions SET cancel_requested_at = ${now}
          WHERE account_id = ${accountId} AND run->>'cancel_key' = ${cancelKey} AND cancel_requested_at IS NULL
          RETURNING id)
      SELECT id, pg_notify(${CANCEL_CHANNEL}, id) FROM marked`.execute(this.db);
    return rows.map((row) => row.id);
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
