import { randomUUID } from 'node:crypto';
import { sql, type Kysely } from 'kysely';
import type { Db } from './database.js';
import type { Database } from './schema.js';

type Exec = Kysely<Database>;

export interface WebhookRow {
  id: string;
  agent_id: string;
  path: string;
  handler_function: string;
  secret_sealed: string | null;
  orchestration_mode: string;
  created_at: Date;
}

/** What a delivery needs to know, found from its URL alone (no API key: the URL names it). */
export interface WebhookTarget extends WebhookRow {
  agent_name: string;
  agent_status: string;
  namespace_id: string;
  namespace_name: string;
  account_id: string;
  tier: string;
}

export interface DeliveryRow {
  run_id: string;
  status: string;
  outcome_sealed: string | null;
  /** How the run ended by its record (agent_runs), null while it has none: its status, error, AI answer. */
  run_status: string | null;
  run_error_type: string | null;
  run_error_message: string | null;
  run_answer: string | null;
  run_stop_reason: string | null;
}

/** Queries for agent webhooks (migration 20). Secrets and kept outcomes arrive and leave sealed. */
export class WebhooksStore {
  constructor(private readonly db: Db) {}

  async list(agentId: string, exec: Exec = this.db): Promise<WebhookRow[]> {
    const rows = await sql<WebhookRow>`
      SELECT id, agent_id, path, handler_function, secret_sealed, orchestration_mode, created_at
      FROM agent_webhooks WHERE agent_id = ${agentId} ORDER BY path`.execute(exec);
    return rows.rows;
  }

  /**
   * Adds a webhook holding the agent's row lock (the per-agent count is checked under it); undefined
   * when the agent already has one at this path. `seal` gets the new id (the secret is bound to it).
   */
  async add(
    agentId: string,
    webhook: { path: string; handlerFunction: string; orchestrationMode: string; seal: ((id: string) => string) | undefined },
    maxPerAgent: number,
  ): Promise<{ row: WebhookRow } | { exists: true } | { full: number }> {
    return this.db.transaction().execute(async (trx) => {
      await sql`SELECT id FROM agents WHERE id = ${agentId} FOR UPDATE`.execute(trx);
      const count = await sql<{ n: number }>`SELECT count(*)::int AS n FROM agent_webhooks WHERE agent_id = ${agentId}`.execute(trx);
      const n = Number(count.rows[0]?.n ?? 0);
      const id = randomUUID();
      const inserted = await sql<WebhookRow>`
        INSERT INTO agent_webhooks (id, agent_id, path, handler_function, secret_sealed, orchestration_mode)
        SELECT ${id}, ${agentId}, ${webhook.path}, ${webhook.handlerFunction}, ${webhook.seal ? webhook.seal(id) : null}, ${webhook.orchestrationMode}
        WHERE ${n} < ${maxPerAgent}
        ON CONFLICT (agent_id, path) DO NOTHING
        RETURNING id, agent_id, path, handler_function, secret_sealed, orchestration_mode, created_at`.execute(trx);
      const row = inserted.rows[0];
      if (row) return { row };
      if (n >= maxPerAgent) return { full: n };
      return { exists: true as const };
    });
  }

  /**
   * Copies an agent's webhooks onto its clone (clone_agent, in its transaction): same paths and
   * handlers, each secret opened and sealed again for the copy's new id by `reseal`.
   */
  async copyAll(
    exec: Exec,
    fromAgentId: string,
    toAgentId: string,
    reseal: (sealed: string, fromId: string, toId: string) => string,
  ): Promise<number> {
    const rows = await this.list(fromAgentId, exec);
    for (const row of rows) {
      const id = randomUUID();
      await sql`
        INSERT INTO agent_webhooks (id, agent_id, path, handler_function, secret_sealed, orchestration_mode)
        VALUES (${id}, ${toAgentId}, ${row.path}, ${row.handler_function},
                ${row.secret_sealed === null ? null : reseal(row.secret_sealed, row.id, id)}, ${row.orchestration_mode})`.execute(exec);
    }
    return rows.length;
  }

  /** Deletes the agent's webhook at `path`; false when there is none. Its seen signatures, keys and rate go with it. */
  async remove(agentId: string, path: string): Promise<boolean> {
    const result = await sql`DELETE FROM agent_webhooks WHERE agent_id = ${agentId} AND path = ${path} RETURNING id`.execute(this.db);
    return result.rows.length > 0;
  }

  /** The webhook at ns/agent/path with its agent, namespace and account (one round trip). */
  async target(namespace: string, agent: string, path: string): Promise<WebhookTarget | undefined> {
    const rows = await sql<WebhookTarget>`
      SELECT w.id, w.agent_id, w.path, w.handler_function, w.secret_sealed, w.orchestration_mode, w.created_at,
             a.name AS agent_name, a.status AS agent_status, n.id AS namespace_id, n.name AS namespace_name,
             n.account_id, acc.tier
      FROM namespaces n
      JOIN agents a ON a.namespace_id = n.id AND a.name = ${agent}
      JOIN agent_webhooks w ON w.agent_id = a.id AND w.path = ${path}
      JOIN accounts acc ON acc.id = n.account_id
      WHERE n.name = ${namespace}`.execute(this.db);
    return rows.rows[0];
  }

  /**
   * Counts one delivery in the webhook's current minute (the database's clock, so every node shares
   * it): the count so far including this one, and the seconds left in the minute.
   */
  async countDelivery(webhookId: string): Promise<{ count: number; retryAfter: number }> {
    const rows = await sql<{ count: number; retry_after: number }>`
      INSERT INTO agent_webhook_rates AS r (webhook_id, window_start, count)
      VALUES (${webhookId}, date_trunc('minute', now()), 1)
      ON CONFLICT (webhook_id) DO UPDATE SET
        count = CASE WHEN r.window_start = excluded.window_start THEN r.count + 1 ELSE 1 END,
        window_start = excluded.window_start
      RETURNING count, greatest(1, ceil(extract(epoch FROM (window_start + interval '1 minute' - now()))))::int AS retry_after`.execute(
      this.db,
    );
    const row = rows.rows[0]!;
    return { count: Number(row.count), retryAfter: Number(row.retry_after) };
  }

  /**
   * Remembers an accepted signature until `expiresAtSeconds`; false when it was seen already (a replay)
   * on ANY webhook: a signature depends on the secret, and a clone's webhooks share their agent's, so
   * one signed delivery is accepted once across all of them. Under a lock on the signature (every node
   * shares it); expired rows of the webhook are cleared on the way. The row lives until
   * `expiresAtSeconds` (the node's clock) and at least `minSeconds` from now on the database's clock,
   * so a node whose clock is ahead of the database's cannot see its row expire inside the window.
   * A row let go for its Idempotency-Key (letGoSignature) is taken over by a delivery with that key
   * only: the sender's retry, never a copy sent without the key or with another.
   */
  async rememberSignature(
    webhookId: string,
    signature: string,
    expiresAtSeconds: number,
    minSeconds: number,
    runId: string,
    key?: string,
  ): Promise<boolean> {
    await sql`DELETE FROM agent_webhook_signatures WHERE webhook_id = ${webhookId} AND expires_at < now()`.execute(this.db);
    return this.db.transaction().execute(async (trx) => {
      await sql`SELECT pg_advisory_xact_lock(hashtextextended(${'webhook-signature:' + signature}, 0))`.execute(trx);
      if (key !== undefined) {
        const taken = await sql`
          UPDATE agent_webhook_signatures SET run_id = ${runId}, released = false
          WHERE webhook_id = ${webhookId} AND signature = ${signature} AND released AND idempotency_key = ${key} AND expires_at >= now()
          RETURNING signature`.execute(trx);
        if (taken.rows.length === 1) return true;
      }
      const inserted = await sql`
        INSERT INTO agent_webhook_signatures (webhook_id, signature, expires_at, run_id, idempotency_key)
        SELECT ${webhookId}, ${signature}, greatest(to_timestamp(${expiresAtSeconds}), now() + make_interval(secs => ${minSeconds})),
          ${runId}, ${key ?? null}
        WHERE NOT EXISTS (SELECT 1 FROM agent_webhook_signatures WHERE signature = ${signature} AND expires_at >= now())
        ON CONFLICT (webhook_id, signature) DO NOTHING RETURNING signature`.execute(trx);
      return inserted.rows.length === 1;
    });
  }

  /**
   * Lets go of the signature accepted for the delivery of run `runId`, which never ran, so that the
   * sender's retry of it is taken: forgotten, or, for a delivery with an Idempotency-Key, kept but
   * open to a delivery with that key only (rememberSignature), so that a copy of it sent without its
   * key does not run in the retry's place. By run: a retry taken meanwhile keeps the row it made.
   */
  async letGoSignature(webhookId: string, runId: string): Promise<void> {
    await sql`DELETE FROM agent_webhook_signatures WHERE webhook_id = ${webhookId} AND run_id = ${runId} AND idempotency_key IS NULL`.execute(
      this.db,
    );
    await sql`UPDATE agent_webhook_signatures SET released = true WHERE webhook_id = ${webhookId} AND run_id = ${runId} AND idempotency_key IS NOT NULL`.execute(
      this.db,
    );
  }

  /** The delivery an unexpired Idempotency-Key names, if any. */
  async delivery(webhookId: string, key: string): Promise<DeliveryRow | undefined> {
    const rows = await sql<DeliveryRow>`
      SELECT d.run_id, d.status, d.outcome_sealed, r.status AS run_status, r.error_type AS run_error_type,
        r.error_message AS run_error_message, r.answer AS run_answer, r.stop_reason AS run_stop_reason
      FROM agent_webhook_deliveries d LEFT JOIN agent_runs r ON r.id = d.run_id
      WHERE d.webhook_id = ${webhookId} AND d.idempotency_key = ${key} AND d.expires_at >= now()`.execute(this.db);
    return rows.rows[0];
  }

  /**
   * Claims an Idempotency-Key for `runId` (for `hours`); when another delivery holds it unexpired, that
   * delivery's row instead. An expired holder is replaced.
   */
  async claimKey(webhookId: string, key: string, runId: string, hours: number): Promise<{ claimed: true } | { existing: DeliveryRow }> {
    await sql`DELETE FROM agent_webhook_deliveries WHERE webhook_id = ${webhookId} AND expires_at < now()`.execute(this.db);
    const rows = await sql<{ claimed: boolean }>`
      INSERT INTO agent_webhook_deliveries AS d (webhook_id, idempotency_key, run_id, expires_at)
      VALUES (${webhookId}, ${key}, ${runId}, now() + make_interval(hours => ${hours}))
      ON CONFLICT (webhook_id, idempotency_key) DO UPDATE SET
        run_id = excluded.run_id, status = 'running', outcome_sealed = NULL, created_at = now(), expires_at = excluded.expires_at
        WHERE d.expires_at < now()
      RETURNING true AS claimed`.execute(this.db);
    if (rows.rows[0]) return { claimed: true };
    const existing = await this.delivery(webhookId, key);
    // Expired between the two statements: claim again (bounded: an expired row is replaced above).
    if (!existing) return this.claimKey(webhookId, key, runId, hours);
    return { existing };
  }

  /** Records how a keyed delivery's run ended (the outcome sealed by the caller). */
  async finishKey(webhookId: string, key: string, runId: string, status: string, outcomeSealed: string): Promise<void> {
    await sql`
      UPDATE agent_webhook_deliveries SET status = ${status}, outcome_sealed = ${outcomeSealed}
      WHERE webhook_id = ${webhookId} AND idempotency_key = ${key} AND run_id = ${runId}`.execute(this.db);
  }

  /** The id of an agent's webhook at `path` (a handed-over delivery names its webhook by path). */
  async idOf(agentId: string, path: string): Promise<string | undefined> {
    const rows = await sql<{ id: string }>`SELECT id FROM agent_webhooks WHERE agent_id = ${agentId} AND path = ${path}`.execute(this.db);
    return rows.rows[0]?.id;
  }

  /** Drops a claim whose run never started (the agent stopped meanwhile), so a retry is not answered with it. */
  async releaseKey(webhookId: string, key: string, runId: string): Promise<void> {
    await sql`DELETE FROM agent_webhook_deliveries WHERE webhook_id = ${webhookId} AND idempotency_key = ${key} AND run_id = ${runId}`.execute(
      this.db,
    );
  }

  /**
   * A refused delivery (bad, stale or replayed signature, too large, over the rate) as a security event
   * of the webhook's namespace (list_security_events shows it): why, never the body or signature.
   */
  async recordRefusal(target: WebhookTarget, reason: string): Promise<void> {
    const [service, fn] = target.handler_function.split('.');
    const detail = JSON.stringify({ detection: reason, agent: target.agent_name, path: target.path });
    await sql`
      INSERT INTO security_events (id, account_id, namespace_id, service_name, function_name, event_type, detail)
      VALUES (${randomUUID()}, ${target.account_id}, ${target.namespace_id}, ${service ?? null}, ${fn ?? null}, 'webhook_refused', ${detail}::jsonb)`.execute(
      this.db,
    );
  }

  /** Expired signatures and keys of every webhook (housekeeping). */
  async purgeExpired(): Promise<number> {
    const a = await sql`DELETE FROM agent_webhook_signatures WHERE expires_at < now() RETURNING 1`.execute(this.db);
    const b = await sql`DELETE FROM agent_webhook_deliveries WHERE expires_at < now() RETURNING 1`.execute(this.db);
    return a.rows.length + b.rows.length;
  }
}
