import { randomUUID } from 'node:crypto';
import type { Db } from './database.js';
import type { AccountRow, ApiKeyRow } from './schema.js';

/** How long an MCP session id stays valid (2025-era clients re-initialize after a 404). */
export const MCP_SESSION_TTL_MS = 7 * 24 * 3600 * 1000;

/** Queries for accounts, API keys and login sessions. */
export class AccountsStore {
  constructor(private readonly db: Db) {}

  /** Returns the new account, or undefined when the email is taken. */
  async createAccount(input: { email: string; passwordHash: string; tier: string; trialEndsAt: Date | null }): Promise<AccountRow | undefined> {
    return this.db
      .insertInto('accounts')
      .values({ id: randomUUID(), email: input.email, password_hash: input.passwordHash, tier: input.tier, trial_ends_at: input.trialEndsAt })
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
    return this.db.updateTable('accounts').set({ tier, trial_ends_at: trialEndsAt }).where('email', '=', email).returningAll().executeTakeFirst();
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

  /** The key and its account's tier in one round trip: this runs on every authenticated request. */
  findKeyByPrefix(prefix: string): Promise<(ApiKeyRow & { tier: string }) | undefined> {
    return this.db
      .selectFrom('api_keys')
      .innerJoin('accounts', 'accounts.id', 'api_keys.account_id')
      .selectAll('api_keys')
      .select('accounts.tier')
      .where('api_keys.prefix', '=', prefix)
      .executeTakeFirst();
  }

  listKeys(accountId: string): Promise<ApiKeyRow[]> {
    return this.db.selectFrom('api_keys').selectAll().where('account_id', '=', accountId).where('revoked_at', 'is', null).orderBy('created_at').execute();
  }

  /** True when a live key of this account was revoked now. */
  async revokeKey(accountId: string, keyId: string): Promise<boolean> {
    const result = await this.db
      .updateTable('api_keys')
      .set({ revoked_at: new Date() })
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

  async createMcpSession(input: { id: string; accountId: string; keyId: string; endpoint: string; namespace: string }): Promise<void> {
    // Sessions are cheap to re-create (a client re-initializes on 404): expired ones go here.
    await this.db.deleteFrom('mcp_sessions').where('account_id', '=', input.accountId).where('created_at', '<', new Date(Date.now() - MCP_SESSION_TTL_MS)).execute();
    await this.db
      .insertInto('mcp_sessions')
      .values({ id: input.id, account_id: input.accountId, key_id: input.keyId, endpoint: input.endpoint, namespace: input.namespace })
      .execute();
  }

  findMcpSession(id: string): Promise<{ account_id: string; key_id: string; endpoint: string; namespace: string } | undefined> {
    return this.db
      .selectFrom('mcp_sessions')
      .select(['account_id', 'key_id', 'endpoint', 'namespace'])
      .where('id', '=', id)
      .where('created_at', '>=', new Date(Date.now() - MCP_SESSION_TTL_MS))
      .executeTakeFirst();
  }

  async deleteMcpSession(id: string): Promise<void> {
    await this.db.deleteFrom('mcp_sessions').where('id', '=', id).execute();
  }
}
