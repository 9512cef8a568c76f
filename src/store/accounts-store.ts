import { randomUUID } from 'node:crypto';
import { sql, type RawBuilder } from 'kysely';
import type { Db } from './database.js';
import { hotStatement, runHot, type HotStatement } from './hot-statements.js';
import type { AccountRow, ApiKeyRow } from './schema.js';
import { databaseDate, databaseNow } from '../core/database-clock.js';

/** A namespace as a request addresses it: enough to serve from a snapshot cached by catalog version. */
export interface NamespaceRef {
  id: string;
  catalog_version: number;
}

/** Who owns an MCP session id, and where it was issued. */
export interface McpSessionRef {
  account_id: string;
  endpoint: string;
  namespace: string;
  last_seen_at: Date;
  /** Negotiated at initialize (null: a session from before migration 11). */
  protocol_version: string | null;
}

/** findKeyForRequest's answer: undefined where not asked for, null where asked for and absent. */
export type KeyForRequest = ApiKeyRow & {
  tier: string;
  addressed: NamespaceRef | null | undefined;
  session: McpSessionRef | null | undefined;
};

/** How long an MCP session id stays valid at most (2025-era clients re-initialize after a 404). */
export const MCP_SESSION_TTL_MS = 7 * 24 * 3600 * 1000;
/** A session unused this long has expired (it no longer counts against the live-session limit). */
export const MCP_SESSION_IDLE_MS = 60 * 60 * 1000;
/**
 * Live sessions one API key keeps: past it, a new one ends the key's least recently used session
 * that is not in use (no open GET stream, no request being answered, on any node), else it is
 * refused. Clients that never send DELETE (mcp-remote's throw-away session at each connect, test
 * suites) then cannot fill the account's limit by themselves, and a client that is listening or
 * waiting for an answer never loses its session to another's initialize.
 */
export const MCP_SESSIONS_PER_KEY = 32;
/** How long a node's "in use" mark lasts unless renewed (src/api/session-activity.ts renews it every 20 s). */
export const MCP_SESSION_IN_USE_MS = 60 * 1000;
/** A key's last use (`last_used_at`) is written at most this often (not on every request). */
export const KEY_TOUCH_MS = 60 * 1000;
/** A session's last use is written at most this often (not on every request). */
export const MCP_SESSION_TOUCH_MS = 60 * 1000;

/**
 * The key's columns by name, not `k.*`: PostgreSQL prepares the statement per connection, and a
 * prepared `k.*` fails ("cached plan must not change result type") on every connection once another
 * node's migration adds a column to api_keys, that is, one authenticated request per connection.
 * The type check below keeps the list in step with ApiKeyRow.
 */
const KEY_COLUMNS = [
  'id',
  'account_id',
  'name',
  'prefix',
  'key_hash',
  'namespace',
  'scopes',
  'expires_at',
  'revoked_at',
  'last_used_at',
  'created_at',
  'oauth_client_id',
] as const satisfies readonly (keyof ApiKeyRow)[];
// A compile error here: ApiKeyRow has a column KEY_COLUMNS does not read.
const everyKeyColumn: Exclude<keyof ApiKeyRow, (typeof KEY_COLUMNS)[number]> extends never ? true : never = true;
void everyKeyColumn;

/**
 * findKeyForRequest's statements, which run on every authenticated request: fixed texts (a hot
 * statement each, so no query builder builds and compiles one per request), by an API key's prefix
 * or an OAuth access token's hash, with or without an MCP session to find. A namespace not asked
 * for is passed as NULL, which no namespace's name equals, so its columns read NULL.
 * Parameters: the prefix or hash, the namespace's name, then with a session its id and the oldest
 * creation and last use a live session may have, then for a token now (its expiry).
 */
function keyRequestStatement(by: 'prefix' | 'token', withSession: boolean): HotStatement {
  const session = withSession
    ? `session.account_id AS session_account_id, session.endpoint AS session_endpoint,
    session.namespace AS session_namespace, session.last_seen_at AS session_last_seen_at,
    session.protocol_version AS session_protocol_version`
    : `NULL AS session_account_id, NULL AS session_endpoint, NULL AS session_namespace,
    NULL AS session_last_seen_at, NULL AS session_protocol_version`;
  const now = withSession ? '$6' : '$3';
  return hotStatement(
    `mcpworks_find_${by === 'prefix' ? 'key' : 'token_key'}${withSession ? '_session' : ''}`,
    `SELECT ${KEY_COLUMNS.map((column) => `k.${column}`).join(', ')}, a.tier, ns.id AS ns_id, ns.catalog_version AS ns_catalog_version, ${session}
  FROM api_keys k JOIN accounts a ON a.id = k.account_id
  ${by === 'token' ? 'JOIN oauth_tokens token ON token.key_id = k.id' : ''}
  LEFT JOIN namespaces ns ON ns.account_id = k.account_id AND ns.name = $2
  ${withSession ? 'LEFT JOIN mcp_sessions session ON session.id = $3 AND session.created_at >= $4 AND session.last_seen_at >= $5' : ''}
  WHERE ${
    // An OAuth access token names its grant (an api_keys row) through oauth_tokens: a live access token only.
    by === 'prefix'
      ? 'k.prefix = $1 AND k.oauth_client_id IS NULL'
      : `token.token_hash = $1 AND token.kind = 'access' AND token.expires_at > ${now}`
  }`,
  );
}
const KEY_REQUEST = {
  prefix: [keyRequestStatement('prefix', false), keyRequestStatement('prefix', true)],
  token: [keyRequestStatement('token', false), keyRequestStatement('token', true)],
} as const;

type KeyRequestRow = ApiKeyRow & {
  tier: string;
  ns_id: string | null;
  ns_catalog_version: number | string | null;
  session_account_id: string | null;
  session_endpoint: string | null;
  session_namespace: string | null;
  session_last_seen_at: Date | string | null;
  session_protocol_version: string | null;
};

/** Where a live session is: young enough and recently used (the oldest creation and last use it may have). */
export const liveSince = (now = databaseNow()) => ({
  created: new Date(now - MCP_SESSION_TTL_MS),
  seen: new Date(now - MCP_SESSION_IDLE_MS),
});

export interface SignInLimits {
  freeFailures: number;
  firstBackoffSeconds: number;
  maxBackoffSeconds: number;
  windowSeconds: number;
}

/** When an email with `failures` counted may try again (NULL while failures are free): core's backoffSeconds, in SQL. */
function lockExpression(failures: RawBuilder<unknown>, limits: SignInLimits): RawBuilder<unknown> {
  const free = sql`${limits.freeFailures}::int`;
  return sql`CASE WHEN ${failures} >= ${free} THEN now() + make_interval(secs => least(${limits.firstBackoffSeconds}::float8 * power(2, ${failures} - ${free}), ${limits.maxBackoffSeconds}::float8)) END`;
}

/** Queries for accounts, API keys and login sessions. */
export class AccountsStore {
  constructor(private readonly db: Db) {}

  /** Returns the new account, or undefined when the email is taken. */
  async createAccount(input: {
    email: string;
    passwordHash: string;
    tier: string;
    trialEndsAt: Date | null;
  }): Promise<AccountRow | undefined> {
    return this.db
      .insertInto('accounts')
      .values({
        id: randomUUID(),
        email: input.email,
        password_hash: input.passwordHash,
        tier: input.tier,
        trial_ends_at: input.trialEndsAt,
      })
      .onConflict((oc) => oc.column('email').doNothing())
      .returningAll()
      .executeTakeFirst();
  }

  findAccountByEmail(email: string): Promise<AccountRow | undefined> {
    return this.db.selectFrom('accounts').selectAll().where('email', '=', email).executeTakeFirst();
  }

  findAccountById(id: string): Promise<AccountRow | undefined> {
    return this.db.selectFrom('accounts').selectAll().where('id', '=', id).executeTakeFirst();
  }

  async setTier(email: string, tier: string, trialEndsAt: Date | null): Promise<AccountRow | undefined> {
    return this.db
      .updateTable('accounts')
      .set({ tier, trial_ends_at: trialEndsAt })
      .where('email', '=', email)
      .returningAll()
      .executeTakeFirst();
  }

  async createKey(input: {
    accountId: string;
    name: string;
    prefix: string;
    keyHash: string;
    namespace: string | null;
    scopes: string[];
    expiresAt: Date | null;
  }): Promise<ApiKeyRow> {
    return this.db
      .insertInto('api_keys')
      .values({
        id: randomUUID(),
        account_id: input.accountId,
        name: input.name,
        prefix: input.prefix,
        key_hash: input.keyHash,
        namespace: input.namespace,
        scopes: JSON.stringify(input.scopes),
        expires_at: input.expiresAt,
      })
      .returningAll()
      .executeTakeFirstOrThrow();
  }

  /**
   * The key and its account's tier in one round trip: this runs on every authenticated request.
   * An MCP request also gets, in that same round trip, the key's account's namespace of the name
   * it addresses (id and catalog version; null when there is none) and the MCP session of the id
   * it sends (null when unknown or expired). Whether the key may use them is the caller's rule.
   */
  async findKeyForRequest(
    by: { prefix: string } | { accessTokenHash: string },
    what: { namespace?: string; sessionId?: string },
  ): Promise<KeyForRequest | undefined> {
    const { namespace, sessionId } = what;
    const live = sessionId === undefined ? undefined : liveSince();
    const parameters = [
      'prefix' in by ? by.prefix : by.accessTokenHash,
      namespace ?? null,
      ...(live ? [sessionId, live.created, live.seen] : []),
      ...('prefix' in by ? [] : [databaseDate()]),
    ];
    const statement = KEY_REQUEST['prefix' in by ? 'prefix' : 'token'][live ? 1 : 0];
    const result = await runHot<KeyRequestRow>(this.db, statement, parameters);
    const row = result.rows[0];
    if (!row) return undefined;
    const {
      ns_id,
      ns_catalog_version,
      session_account_id,
      session_endpoint,
      session_namespace,
      session_last_seen_at,
      session_protocol_version,
      ...key
    } = row;
    return {
      ...key,
      addressed: namespace === undefined ? undefined : ns_id === null ? null : { id: ns_id, catalog_version: Number(ns_catalog_version) },
      session:
        sessionId === undefined
          ? undefined
          : session_account_id === null
            ? null
            : {
                account_id: session_account_id,
                endpoint: session_endpoint!,
                namespace: session_namespace!,
                last_seen_at: new Date(session_last_seen_at!),
                protocol_version: session_protocol_version ?? null,
              },
    };
  }

  /**
   * Replaces a key's stored hash (a pre-migration-7 scrypt hash by its keyed hash) only if it still
   * holds `from`, so nodes upgrading the same key at once agree. True when this call changed it.
   */
  async replaceKeyHash(keyId: string, from: string, to: string): Promise<boolean> {
    const result = await this.db
      .updateTable('api_keys')
      .set({ key_hash: to })
      .where('id', '=', keyId)
      .where('key_hash', '=', from)
      .executeTakeFirst();
    return Number(result.numUpdatedRows) > 0;
  }

  /**
   * Counts one sign-in attempt for `email` before the password is checked, atomically on every
   * node: refused (with the seconds left) while the email is backing off; otherwise counted, and
   * the back-off for the next attempt set once the free failures are used up. A success calls
   * clearSignInFailures. Failures older than the window start again from one.
   */
  async claimSignIn(email: string, limits: SignInLimits): Promise<{ allowed: true } | { allowed: false; retryAfter: number }> {
    const failures = sql`CASE WHEN t.updated_at < now() - make_interval(secs => ${limits.windowSeconds}::float8) THEN 1 ELSE t.failures + 1 END`;
    const lockAfter = (f: typeof failures) => lockExpression(f, limits);
    const result = await sql<{ failures: number | null; wait: number | null }>`
      WITH claim AS (
        INSERT INTO login_throttle AS t (email, failures, locked_until, updated_at)
        VALUES (${email}, 1, ${lockAfter(sql`1`)}, now())
        ON CONFLICT (email) DO UPDATE SET failures = ${failures}, locked_until = ${lockAfter(failures)}, updated_at = now()
        WHERE t.locked_until IS NULL OR t.locked_until <= now()
        RETURNING t.failures
      )
      SELECT (SELECT failures FROM claim) AS failures,
        (SELECT extract(epoch FROM locked_until - now())::float8 FROM login_throttle WHERE email = ${email}) AS wait`.execute(this.db);
    const row = result.rows[0];
    if (row && row.failures !== null) return { allowed: true };
    return { allowed: false, retryAfter: Math.max(1, Math.ceil(Number(row?.wait ?? 1))) };
  }

  /**
   * A claimed attempt failed: past the free failures, the wait runs from now (the failure), not
   * from when it was claimed, however long the password check took.
   */
  async recordSignInFailure(email: string, limits: SignInLimits): Promise<void> {
    await sql`UPDATE login_throttle AS t SET locked_until = greatest(t.locked_until, ${lockExpression(sql`t.failures`, limits)})
      WHERE t.email = ${email} AND t.failures >= ${limits.freeFailures}::int`.execute(this.db);
  }

  async clearSignInFailures(email: string): Promise<void> {
    await sql`DELETE FROM login_throttle WHERE email = ${email}`.execute(this.db);
  }

  /** Forgets emails whose failures are past the window and that are not backing off. */
  async sweepSignInFailures(windowSeconds: number): Promise<void> {
    await sql`DELETE FROM login_throttle
      WHERE updated_at < now() - make_interval(secs => ${windowSeconds}::float8) AND (locked_until IS NULL OR locked_until < now())`.execute(
      this.db,
    );
  }

  /** The account's live API keys (not its OAuth grants: listOAuthGrants). */
  listKeys(accountId: string): Promise<ApiKeyRow[]> {
    return this.db
      .selectFrom('api_keys')
      .selectAll()
      .where('account_id', '=', accountId)
      .where('revoked_at', 'is', null)
      .where('oauth_client_id', 'is', null)
      .orderBy('created_at')
      .execute();
  }

  /** The account's live, unexpired OAuth grants, with the client's metadata (its name is untrusted text). */
  listOAuthGrants(accountId: string): Promise<Array<ApiKeyRow & { client_metadata: Record<string, unknown> }>> {
    return this.db
      .selectFrom('api_keys')
      .innerJoin('oauth_clients as client', 'client.client_id', 'api_keys.oauth_client_id')
      .selectAll('api_keys')
      .select('client.metadata as client_metadata')
      .where('api_keys.account_id', '=', accountId)
      .where('api_keys.revoked_at', 'is', null)
      .where('api_keys.expires_at', '>', databaseDate())
      .orderBy('api_keys.created_at')
      .execute();
  }

  /** True when a live key of this account was revoked now. */
  async revokeKey(accountId: string, keyId: string): Promise<boolean> {
    const result = await this.db
      .updateTable('api_keys')
      .set({ revoked_at: databaseDate() })
      .where('id', '=', keyId)
      .where('account_id', '=', accountId)
      .where('revoked_at', 'is', null)
      .executeTakeFirst();
    return Number(result.numUpdatedRows) > 0;
  }

  async createWebSession(tokenHash: string, accountId: string, expiresAt: Date): Promise<void> {
    await this.db.insertInto('web_sessions').values({ token_hash: tokenHash, account_id: accountId, expires_at: expiresAt }).execute();
  }

  async findWebSession(tokenHash: string): Promise<{ account_id: string; expires_at: Date } | undefined> {
    return this.db.selectFrom('web_sessions').select(['account_id', 'expires_at']).where('token_hash', '=', tokenHash).executeTakeFirst();
  }

  /** Logout: the session's row goes, so its token is refused from now on (on every node). */
  async deleteWebSession(tokenHash: string): Promise<void> {
    await this.db.deleteFrom('web_sessions').where('token_hash', '=', tokenHash).execute();
  }

  /**
   * A password change: the new hash, every login session of the account ended (the one that asked
   * too: a stolen copy of its token must not outlive the change) and `session` made in its place, in
   * one transaction.
   */
  async changePassword(accountId: string, passwordHash: string, session: { tokenHash: string; expiresAt: Date }): Promise<void> {
    await this.db.transaction().execute(async (trx) => {
      await trx.updateTable('accounts').set({ password_hash: passwordHash }).where('id', '=', accountId).execute();
      await trx.deleteFrom('web_sessions').where('account_id', '=', accountId).execute();
      await trx
        .insertInto('web_sessions')
        .values({ token_hash: session.tokenHash, account_id: accountId, expires_at: session.expiresAt })
        .execute();
    });
  }

  /**
   * Records a new session unless the account already has `limit` live ones (null = unlimited) or
   * the key has MCP_SESSIONS_PER_KEY that are all in use: the counts and the insert run under the
   * account's row lock, so parallel initializes cannot both pass. Refused: which limit, the live
   * count and the seconds until a place may free. `evicted`: the key's sessions ended (least
   * recently used first, none in use) to keep it within MCP_SESSIONS_PER_KEY.
   */
  async createMcpSession(
    input: { id: string; accountId: string; keyId: string; endpoint: string; namespace: string; protocolVersion?: string },
    limit: number | null,
  ): Promise<{ refused?: { scope: 'account' | 'key'; usage: number; retryAfter: number }; evicted: string[] }> {
    return this.db.transaction().execute(async (trx) => {
      await trx.selectFrom('accounts').select('id').where('id', '=', input.accountId).forUpdate().executeTakeFirst();
      const now = databaseNow();
      const live = liveSince(now);
      // Sessions are cheap to re-create (a client re-initializes on 404): expired ones go here.
      await trx
        .deleteFrom('mcp_sessions')
        .where('account_id', '=', input.accountId)
        .where((eb) => eb.or([eb('created_at', '<', live.created), eb('last_seen_at', '<', live.seen)]))
        .execute();
      // "In use" is read on the database's clock, the one its marks were written with.
      const keySessions = await trx
        .selectFrom('mcp_sessions')
        .select([
          'id',
          sql<boolean>`EXISTS (SELECT 1 FROM mcp_session_holds h WHERE h.session_id = mcp_sessions.id AND h.until > now())`.as('in_use'),
        ])
        .where('account_id', '=', input.accountId)
        .where('key_id', '=', input.keyId)
        .orderBy('last_seen_at', 'asc')
        .orderBy('created_at', 'asc')
        .execute();
      const excess = keySessions.length - (MCP_SESSIONS_PER_KEY - 1);
      const idle = keySessions.filter((row) => !row.in_use);
      if (excess > 0 && idle.length < excess) {
        return { refused: { scope: 'key', usage: keySessions.length, retryAfter: Math.ceil(MCP_SESSION_IN_USE_MS / 1000) }, evicted: [] };
      }
      const evicted = excess > 0 ? idle.slice(0, excess).map((row) => row.id) : [];
      if (limit !== null) {
        const row = await trx
          .selectFrom('mcp_sessions')
          .select([sql<number>`count(*)::int`.as('n'), sql<Date | null>`min(last_seen_at)`.as('oldest')])
          .where('account_id', '=', input.accountId)
          .executeTakeFirstOrThrow();
        const usage = Number(row.n);
        // The key's own sessions past its cap make room; a refusal ends none of them.
        if (usage - evicted.length >= limit) {
          const oldest = row.oldest ? new Date(row.oldest).getTime() : now;
          return {
            refused: { scope: 'account', usage, retryAfter: Math.max(1, Math.ceil((oldest + MCP_SESSION_IDLE_MS - now) / 1000)) },
            evicted: [],
          };
        }
      }
      if (evicted.length > 0) await trx.deleteFrom('mcp_sessions').where('id', 'in', evicted).execute();
      await trx
        .insertInto('mcp_sessions')
        .values({
          id: input.id,
          account_id: input.accountId,
          key_id: input.keyId,
          endpoint: input.endpoint,
          namespace: input.namespace,
          protocol_version: input.protocolVersion ?? null,
        })
        .execute();
      return { evicted };
    });
  }

  findMcpSession(id: string): Promise<(McpSessionRef & { key_id: string }) | undefined> {
    const live = liveSince();
    return this.db
      .selectFrom('mcp_sessions')
      .select(['account_id', 'key_id', 'endpoint', 'namespace', 'last_seen_at', 'protocol_version'])
      .where('id', '=', id)
      .where('created_at', '>=', live.created)
      .where('last_seen_at', '>=', live.seen)
      .executeTakeFirst();
  }

  /**
   * Marks a key used now, at most once per KEY_TOUCH_MS whichever node serves it: the condition is
   * in the UPDATE, so concurrent requests of a burst write the row once.
   */
  async touchKey(id: string): Promise<void> {
    await this.db
      .updateTable('api_keys')
      .set({ last_used_at: databaseDate() })
      .where('id', '=', id)
      .where((eb) => eb.or([eb('last_used_at', 'is', null), eb('last_used_at', '<', databaseDate(-KEY_TOUCH_MS))]))
      .execute();
  }

  /** The account that owns the namespace called `name`, if any (names are global). */
  async namespaceOwner(name: string): Promise<string | undefined> {
    const row = await this.db.selectFrom('namespaces').select('account_id').where('name', '=', name).executeTakeFirst();
    return row?.account_id;
  }

  /** Every account, oldest first, with how many namespaces and live keys it has (operator CLI). */
  async listAccounts(): Promise<
    Array<{ id: string; email: string; tier: string; trial_ends_at: Date | null; created_at: Date; namespaces: number; keys: number }>
  > {
    return this.db
      .selectFrom('accounts')
      .select(['accounts.id', 'accounts.email', 'accounts.tier', 'accounts.trial_ends_at', 'accounts.created_at'])
      .select((eb) => [
        eb
          .selectFrom('namespaces')
          .select(sql<number>`count(*)::int`.as('n'))
          .whereRef('namespaces.account_id', '=', 'accounts.id')
          .as('namespaces'),
        eb
          .selectFrom('api_keys')
          .select(sql<number>`count(*)::int`.as('n'))
          .whereRef('api_keys.account_id', '=', 'accounts.id')
          .where('api_keys.revoked_at', 'is', null)
          .as('keys'),
      ])
      .orderBy('accounts.created_at')
      .orderBy('accounts.id')
      .execute() as never;
  }

  /**
   * Keeps a used session alive; written at most once per MCP_SESSION_TOUCH_MS. Only a live one: the
   * caller may have read the session a while ago (a key's cache, AccountService.cachedRunKey), and
   * one expired since must stay expired, not be made live again by its next request.
   */
  async touchMcpSession(id: string): Promise<void> {
    const live = liveSince();
    await this.db
      .updateTable('mcp_sessions')
      .set({ last_seen_at: databaseDate() })
      .where('id', '=', id)
      .where('last_seen_at', '<', databaseDate(-MCP_SESSION_TOUCH_MS))
      .where('created_at', '>=', live.created)
      .where('last_seen_at', '>=', live.seen)
      .execute();
  }

  /**
   * Node `nodeId` holds these sessions in use for MCP_SESSION_IN_USE_MS more (on the database's
   * clock), and they were used now; see src/api/session-activity.ts. A deleted session is skipped.
   */
  async markMcpSessionsInUse(nodeId: string, ids: readonly string[]): Promise<void> {
    if (ids.length === 0) return;
    const list = [...ids];
    await this.db.transaction().execute(async (trx) => {
      await trx
        .updateTable('mcp_sessions')
        .set({ last_seen_at: sql`now()` })
        .where('id', 'in', list)
        .execute();
      await trx
        .insertInto('mcp_session_holds')
        .columns(['session_id', 'node_id', 'until'])
        .expression((eb) =>
          eb
            .selectFrom('mcp_sessions')
            .select([
              'id',
              sql<string>`${nodeId}`.as('node_id'),
              sql<Date>`now() + make_interval(secs => ${MCP_SESSION_IN_USE_MS / 1000})`.as('until'),
            ])
            .where('id', 'in', list),
        )
        .onConflict((oc) => oc.columns(['session_id', 'node_id']).doUpdateSet({ until: (eb) => eb.ref('excluded.until') }))
        .execute();
    });
  }

  /** Node `nodeId` no longer holds the session (another node's hold stays). */
  async clearMcpSessionInUse(nodeId: string, id: string): Promise<void> {
    await this.db.deleteFrom('mcp_session_holds').where('session_id', '=', id).where('node_id', '=', nodeId).execute();
  }

  /** Node `nodeId` holds no session any more (it is shutting down). */
  async clearMcpSessionHolds(nodeId: string): Promise<void> {
    await this.db.deleteFrom('mcp_session_holds').where('node_id', '=', nodeId).execute();
  }

  /** Deletes every expired session (all accounts) as of `now`; answers how many. */
  async deleteExpiredMcpSessions(now = databaseNow()): Promise<number> {
    const live = liveSince(now);
    // Holds a node left behind (it stopped without ending them) have lapsed: they go too.
    await this.db
      .deleteFrom('mcp_session_holds')
      .where('until', '<', new Date(now - MCP_SESSION_IN_USE_MS))
      .execute();
    const result = await this.db
      .deleteFrom('mcp_sessions')
      .where((eb) => eb.or([eb('created_at', '<', live.created), eb('last_seen_at', '<', live.seen)]))
      .executeTakeFirst();
    return Number(result.numDeletedRows);
  }

  async deleteMcpSession(id: string): Promise<void> {
    await this.db.deleteFrom('mcp_sessions').where('id', '=', id).execute();
  }
}
