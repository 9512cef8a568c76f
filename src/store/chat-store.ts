/**
 * Queries for agent chat (migration 23): conversations (each bound to one replica), their messages,
 * and the turn queue. Every change to one conversation's queue or messages takes its row lock first,
 * in a short transaction (never held across a model call), so two nodes taking messages of one
 * conversation at once hand out tickets and sequence numbers one after the other.
 */
import { sql, type Kysely } from 'kysely';
import { CANCEL_CHANNEL } from './cancel-store.js';
import type { Db } from './database.js';
import type { Database } from './schema.js';

/**
 * What seals a conversation's content at rest (services/state-cipher.ts BoundCipher): AES-256-GCM
 * under the server secret, bound to `context` (the GCM associated data).
 */
export interface ChatSealer {
  seal(context: readonly [string, ...string[]], plaintext: string): string;
  open(context: readonly [string, ...string[]], stored: string): string;
}

/** A message is bound to its conversation and place in it: a row moved to another conversation or seq does not open. */
const messageContext = (id: string, seq: number) => ['chat-message', id, String(seq)] as const;
const summaryContext = (id: string) => ['chat-summary', id] as const;

type Exec = Kysely<Database>;

export interface ConversationRow {
  id: string;
  agent_id: string;
  replica: string;
  summary: string | null;
  created_at: Date;
  updated_at: Date;
}

export interface MessageRow {
  seq: number;
  role: string;
  /** The message as kept (undefined: it does not open: moved, tampered, another server secret, or stored unsealed). */
  content: unknown;
  run_id: string | null;
}

/** A chat call's cancel as call_cancels keeps it (apart from a run call's keys, which are the bare session and request id). */
const keptChatCancel = (cancelKey: string) => `chat ${cancelKey}`;
/** Cancels kept per account for calls not yet queued (as mcpworks_cancel keeps for runs). */
export const CHAT_CANCELS_KEPT = 1000;

const lease = (ms: number) => sql`now() + make_interval(secs => ${ms / 1000}::float8)`;

export class ChatStore {
  constructor(
    private readonly db: Db,
    private readonly sealer: ChatSealer,
  ) {}

  /**
   * The conversation's summary opened (null: none; undefined: it does not open, see MessageRow.content).
   */
  summaryOf(row: Pick<ConversationRow, 'id' | 'summary'>): string | null | undefined {
    if (row.summary === null) return null;
    try {
      return this.sealer.open(summaryContext(row.id), row.summary);
    } catch {
      return undefined;
    }
  }

  /** The agent's conversation with this id (undefined: none, or another agent's). */
  async conversation(agentId: string, id: string): Promise<ConversationRow | undefined> {
    const rows = await sql<ConversationRow>`
      SELECT id, agent_id, replica, summary, created_at, updated_at FROM agent_conversations
      WHERE id = ${id} AND agent_id = ${agentId}`.execute(this.db);
    return rows.rows[0];
  }

  async createConversation(id: string, agentId: string, replica: string): Promise<void> {
    await sql`INSERT INTO agent_conversations (id, agent_id, replica) VALUES (${id}, ${agentId}, ${replica})`.execute(this.db);
  }

  /** Deletes a conversation that holds no message and no waiting turn (a first message that was refused). */
  async dropIfEmpty(id: string): Promise<void> {
    await sql`DELETE FROM agent_conversations WHERE id = ${id} AND next_seq = 0
      AND NOT EXISTS (SELECT 1 FROM agent_chat_turns t WHERE t.conversation_id = ${id})`.execute(this.db);
  }

  /** Locks the conversation's row in `trx`; false when it is gone (its agent destroyed). */
  private async lock(trx: Exec, id: string): Promise<boolean> {
    const rows = await sql`SELECT id FROM agent_conversations WHERE id = ${id} FOR UPDATE`.execute(trx);
    return rows.rows.length > 0;
  }

  /**
   * Queues a message: the next ticket of the conversation (undefined: the conversation is gone).
   * `cancelKey`: what a client's cancel names the call by (requestCancel marks it). A cancel that
   * came before (kept by requestCancel) is taken here: the turn is queued already marked, and its
   * first tryHold answers 'cancelled'.
   */
  enqueue(id: string, runId: string, aliveMs: number, cancelKey?: string): Promise<number | undefined> {
    return this.db.transaction().execute(async (trx) => {
      if (!(await this.lock(trx, id))) return undefined;
      const next = await sql<{ ticket: string | number }>`
        UPDATE agent_conversations SET next_ticket = next_ticket + 1 WHERE id = ${id} RETURNING next_ticket AS ticket`.execute(trx);
      const ticket = Number(next.rows[0]!.ticket);
      const cancelled = cancelKey !== undefined && (await this.takeKeptCancel(trx, id, cancelKey));
      await sql`INSERT INTO agent_chat_turns (conversation_id, ticket, run_id, alive_until, cancel_key, cancel_requested)
        VALUES (${id}, ${ticket}, ${runId}, ${lease(aliveMs)}, ${cancelKey ?? null}, ${cancelled})`.execute(trx);
      return ticket;
    });
  }

  /**
   * A cancel kept for this call (requestCancel found no turn) is taken, under the account's row lock
   * requestCancel takes too: either the cancel sees the turn, or the turn sees the cancel.
   */
  private async takeKeptCancel(trx: Exec, id: string, cancelKey: string): Promise<boolean> {
    const owner = await sql<{ account_id: string }>`
      SELECT n.account_id FROM agent_conversations v JOIN agents a ON a.id = v.agent_id JOIN namespaces n ON n.id = a.namespace_id
      WHERE v.id = ${id}`.execute(trx);
    const accountId = owner.rows[0]?.account_id;
    if (accountId === undefined) return false;
    await sql`SELECT 1 FROM accounts WHERE id = ${accountId} FOR KEY SHARE`.execute(trx);
    const taken = await sql`DELETE FROM call_cancels WHERE account_id = ${accountId} AND cancel_key = ${keptChatCancel(cancelKey)}
      AND requested_at >= now() - interval '1 minute'`.execute(trx);
    return Number(taken.numAffectedRows ?? 0) > 0;
  }

  /**
   * Whether `ticket` holds the conversation now: no live ticket below it (every lower one has ended,
   * given up, or lapsed with its node). Renews its own row; false when that row is gone.
   */
  tryHold(id: string, ticket: number, aliveMs: number): Promise<boolean | 'cancelled'> {
    return this.db.transaction().execute(async (trx) => {
      if (!(await this.lock(trx, id))) return false;
      const mine = await sql<{ cancel_requested: boolean }>`UPDATE agent_chat_turns SET alive_until = ${lease(aliveMs)}
        WHERE conversation_id = ${id} AND ticket = ${ticket} RETURNING cancel_requested`.execute(trx);
      if (mine.rows.length === 0) return false;
      // A client's cancel marked it (before it was queued, or while it waits): it goes no further.
      if (mine.rows[0]!.cancel_requested === true) return 'cancelled';
      const ahead = await sql<{ n: string | number }>`
        SELECT count(*) AS n FROM agent_chat_turns WHERE conversation_id = ${id} AND ticket < ${ticket} AND alive_until > now()`.execute(
        trx,
      );
      return Number(ahead.rows[0]!.n) === 0;
    });
  }

  /** Keeps the ticket alive while its message is being answered. */
  /** Answers whether a client's cancel marked the turn (requestCancel, from any node). */
  async renew(id: string, ticket: number, aliveMs: number): Promise<boolean> {
    const rows = await sql<{ cancel_requested: boolean }>`UPDATE agent_chat_turns SET alive_until = ${lease(aliveMs)}
      WHERE conversation_id = ${id} AND ticket = ${ticket} RETURNING cancel_requested`.execute(this.db);
    return rows.rows[0]?.cancel_requested === true;
  }

  /**
   * A client's cancel of a chat call another node may be answering: its turn is marked and its run id
   * NOTIFYed on the run cancels' channel (at commit), so the node answering it stops it at once; the
   * mark is also read as it renews or waits (a lost notification only delays). No turn yet (the call
   * has not been queued, here or on another node): the cancel is kept a minute in call_cancels
   * (migration 14, as a run's is) for enqueue to take, under the account's row lock; at most
   * CHAT_CANCELS_KEPT per account.
   */
  async requestCancel(accountId: string, cancelKey: string): Promise<void> {
    await this.db.transaction().execute(async (trx) => {
      const account = await sql`SELECT 1 FROM accounts WHERE id = ${accountId} FOR UPDATE`.execute(trx);
      const marked =
        await sql`WITH m AS (UPDATE agent_chat_turns SET cancel_requested = true WHERE cancel_key = ${cancelKey} RETURNING run_id)
        SELECT pg_notify(${CANCEL_CHANNEL}, run_id) FROM m`.execute(trx);
      if (marked.rows.length > 0 || account.rows.length === 0) return;
      await sql`DELETE FROM call_cancels WHERE account_id = ${accountId} AND requested_at < now() - interval '1 minute'`.execute(trx);
      const kept = await sql<{ n: string | number }>`SELECT count(*) AS n FROM call_cancels WHERE account_id = ${accountId}`.execute(trx);
      if (Number(kept.rows[0]!.n) >= CHAT_CANCELS_KEPT) return;
      await sql`INSERT INTO call_cancels (account_id, cancel_key) VALUES (${accountId}, ${keptChatCancel(cancelKey)})
        ON CONFLICT (account_id, cancel_key) DO UPDATE SET requested_at = now()`.execute(trx);
    });
  }

  /** Of these runs' turns, those a client's cancel marked (a listener that was away may have missed their notification). */
  async markedRuns(runIds: readonly string[]): Promise<string[]> {
    if (runIds.length === 0) return [];
    const rows = await sql<{ run_id: string }>`SELECT run_id FROM agent_chat_turns
      WHERE run_id IN (${sql.join(runIds)}) AND cancel_requested`.execute(this.db);
    return rows.rows.map((r) => r.run_id);
  }

  /** The message was answered or given up: the next ticket may go. Lapsed tickets below it go too. */
  async release(id: string, ticket: number): Promise<void> {
    await sql`DELETE FROM agent_chat_turns WHERE conversation_id = ${id} AND (ticket = ${ticket} OR (ticket < ${ticket} AND alive_until < now()))`.execute(
      this.db,
    );
  }

  /** The conversation's stored messages, oldest first, opened. */
  async messages(id: string): Promise<MessageRow[]> {
    const rows = await sql<MessageRow>`SELECT seq, role, content, run_id FROM agent_messages
      WHERE conversation_id = ${id} ORDER BY seq`.execute(this.db);
    return rows.rows.map((r) => {
      const seq = Number(r.seq);
      // Kept as a JSON string holding the sealed JSON text; anything else (a plain row) is not trusted.
      const stored = typeof r.content === 'string' && !r.content.startsWith('v1:') ? JSON.parse(r.content) : r.content;
      let content: unknown;
      if (typeof stored === 'string')
        try {
          content = JSON.parse(this.sealer.open(messageContext(id, seq), stored));
        } catch {
          content = undefined;
        }
      return { ...r, seq, content };
    });
  }

  /** Folds the messages up to `throughSeq` into the conversation's summary (they are deleted). */
  fold(id: string, summary: string, throughSeq: number): Promise<void> {
    return this.db.transaction().execute(async (trx) => {
      if (!(await this.lock(trx, id))) return;
      await sql`DELETE FROM agent_messages WHERE conversation_id = ${id} AND seq <= ${throughSeq}`.execute(trx);
      await sql`UPDATE agent_conversations SET summary = ${this.sealer.seal(summaryContext(id), summary)} WHERE id = ${id}`.execute(trx);
    });
  }

  /** Appends a run's messages after the conversation's last (false: the conversation is gone). */
  append(id: string, runId: string, messages: ReadonlyArray<{ role: string; content: unknown }>): Promise<boolean> {
    return this.db.transaction().execute(async (trx) => {
      if (!(await this.lock(trx, id))) return false;
      const top = await sql<{ seq: string | number }>`
        UPDATE agent_conversations SET next_seq = next_seq + ${messages.length}, updated_at = now()
        WHERE id = ${id} RETURNING next_seq AS seq`.execute(trx);
      let seq = Number(top.rows[0]!.seq) - messages.length;
      for (const m of messages) {
        seq++;
        await sql`INSERT INTO agent_messages (conversation_id, seq, role, content, run_id)
          VALUES (${id}, ${seq}, ${m.role}, ${JSON.stringify(this.sealer.seal(messageContext(id, seq), JSON.stringify(m.content)))}::jsonb, ${runId})`.execute(
          trx,
        );
      }
      return true;
    });
  }

  /**
   * Retention with the agent's runs: conversations idle longer than their account's plan keeps runs,
   * and older messages of the rest, are deleted. `days` by tier; `fallback` for a plan the table no longer has.
   */
  async prune(days: ReadonlyMap<string, number | null>, fallback: number | null, now: Date): Promise<number> {
    const known = [...days.keys()];
    const rules: Array<{ days: number; tier: string | null }> = [];
    for (const [tier, d] of days) if (d !== null) rules.push({ tier, days: d });
    if (fallback !== null) rules.push({ tier: null, days: fallback });
    let removed = 0;
    for (const rule of rules) {
      const cutoff = new Date(now.getTime() - rule.days * 86_400_000);
      const tierMatch =
        rule.tier !== null ? sql`ac.tier = ${rule.tier}` : known.length > 0 ? sql`ac.tier NOT IN (${sql.join(known)})` : sql`true`;
      const owned = sql`SELECT c.id FROM agent_conversations c JOIN agents a ON a.id = c.agent_id
        JOIN namespaces n ON n.id = a.namespace_id JOIN accounts ac ON ac.id = n.account_id WHERE ${tierMatch}`;
      const gone = await sql`DELETE FROM agent_conversations WHERE updated_at < ${cutoff} AND id IN (${owned})
        AND NOT EXISTS (SELECT 1 FROM agent_chat_turns t WHERE t.conversation_id = agent_conversations.id)`.execute(this.db);
      const old = await sql`DELETE FROM agent_messages WHERE created_at < ${cutoff} AND conversation_id IN (${owned})`.execute(this.db);
      removed += Number(gone.numAffectedRows ?? 0) + Number(old.numAffectedRows ?? 0);
    }
    return removed;
  }
}
