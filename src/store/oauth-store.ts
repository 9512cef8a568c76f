import { randomUUID } from 'node:crypto';
import type { Db } from './database.js';
import type { ApiKeyRow } from './schema.js';
import { databaseDate } from '../core/database-clock.js';

/** An /authorize request as the consent page shows it and the token endpoint redeems it. */
export interface AuthorizationRow {
  id: string;
  client_id: string;
  redirect_uri: string;
  code_challenge: string;
  state: string | null;
  scopes: string[];
  resource: string | null;
  expires_at: Date;
  account_id: string | null;
  namespace: string | null;
  granted_scopes: string[] | null;
  code_expires_at: Date | null;
  used_at: Date | null;
  key_id: string | null;
}

export interface TokenRow {
  token_hash: string;
  key_id: string;
  kind: 'access' | 'refresh';
  expires_at: Date;
  used_at: Date | null;
}

/** Queries for OAuth clients, authorization requests and grant tokens (a grant is an api_keys row). */
export class OAuthStore {
  constructor(private readonly db: Db) {}

  async createClient(clientId: string, metadata: Record<string, unknown>): Promise<void> {
    await this.db
      .insertInto('oauth_clients')
      .values({ client_id: clientId, metadata: JSON.stringify(metadata) })
      .execute();
  }

  /**
   * Registrations nobody signed in with: clients registered before `before` with no grant (live or
   * revoked) and no authorization request or code still open. Their requests go with them (cascade).
   */
  async deleteUnusedClients(before: Date, now: Date): Promise<number> {
    const result = await this.db
      .deleteFrom('oauth_clients')
      .where('created_at', '<', before)
      .where(({ not, exists, selectFrom }) =>
        not(exists(selectFrom('api_keys').select('api_keys.id').whereRef('api_keys.oauth_client_id', '=', 'oauth_clients.client_id'))),
      )
      .where(({ not, exists, selectFrom }) =>
        not(
          exists(
            selectFrom('oauth_authorizations as a')
              .select('a.id')
              .whereRef('a.client_id', '=', 'oauth_clients.client_id')
              .where((w) => w.or([w('a.expires_at', '>', now), w('a.code_expires_at', '>', now)])),
          ),
        ),
      )
      .executeTakeFirst();
    return Number(result.numDeletedRows);
  }

  async findClient(clientId: string): Promise<Record<string, unknown> | undefined> {
    const row = await this.db.selectFrom('oauth_clients').select('metadata').where('client_id', '=', clientId).executeTakeFirst();
    return row?.metadata;
  }

  async createAuthorization(input: {
    id: string;
    clientId: string;
    redirectUri: string;
    codeChallenge: string;
    state: string | null;
    scopes: string[];
    resource: string | null;
    expiresAt: Date;
  }): Promise<void> {
    // Requests nobody decided (or redeemed) in time go as new ones come.
    await this.db.deleteFrom('oauth_authorizations').where('expires_at', '<', databaseDate(-3_600_000)).execute();
    await this.db
      .insertInto('oauth_authorizations')
      .values({
        id: input.id,
        client_id: input.clientId,
        redirect_uri: input.redirectUri,
        code_challenge: input.codeChallenge,
        state: input.state,
        scopes: JSON.stringify(input.scopes),
        resource: input.resource,
        expires_at: input.expiresAt,
      })
      .execute();
  }

  async findAuthorization(id: string): Promise<AuthorizationRow | undefined> {
    return this.db
      .selectFrom('oauth_authorizations')
      .select([
        'id',
        'client_id',
        'redirect_uri',
        'code_challenge',
        'state',
        'scopes',
        'resource',
        'expires_at',
        'account_id',
        'namespace',
        'granted_scopes',
        'code_expires_at',
        'used_at',
        'key_id',
      ])
      .where('id', '=', id)
      .executeTakeFirst();
  }

  async findAuthorizationByCode(codeHash: string): Promise<AuthorizationRow | undefined> {
    const row = await this.db.selectFrom('oauth_authorizations').select('id').where('code_hash', '=', codeHash).executeTakeFirst();
    return row ? this.findAuthorization(row.id) : undefined;
  }

  /** Records the owner's decision once (true), before the request expires. A denial is recorded as a used request. */
  async decide(
    id: string,
    decision: { accountId: string; namespace: string; scopes: string[]; codeHash: string; codeExpiresAt: Date } | { denied: true },
  ): Promise<boolean> {
    const update = this.db
      .updateTable('oauth_authorizations')
      .where('id', '=', id)
      .where('account_id', 'is', null)
      .where('used_at', 'is', null)
      .where('expires_at', '>', databaseDate());
    const result =
      'denied' in decision
        ? await update.set({ used_at: databaseDate() }).executeTakeFirst()
        : await update
            .set({
              account_id: decision.accountId,
              namespace: decision.namespace,
              granted_scopes: JSON.stringify(decision.scopes),
              code_hash: decision.codeHash,
              code_expires_at: decision.codeExpiresAt,
            })
            .executeTakeFirst();
    return Number(result.numUpdatedRows) > 0;
  }

  /**
   * Redeems a code: marks it used and stores the grant (api_keys row), its first tokens and the
   * request's key_id in ONE transaction. The conditional UPDATE holds the row lock until commit, so
   * a parallel redemption waits, then finds the code used AND the grant recorded (it can revoke it).
   * undefined: the code was used already (reuse), and nothing is stored.
   */
  async redeemCode(
    codeHash: string,
    input: {
      authorizationId: string;
      accountId: string;
      clientId: string;
      name: string;
      prefix: string;
      namespace: string;
      scopes: string[];
      expiresAt: Date;
      tokens: Array<{ hash: string; kind: 'access' | 'refresh'; expiresAt: Date }>;
    },
  ): Promise<ApiKeyRow | undefined> {
    return this.db.transaction().execute(async (trx) => {
      const marked = await trx
        .updateTable('oauth_authorizations')
        .set({ used_at: databaseDate() })
        .where('code_hash', '=', codeHash)
        .where('used_at', 'is', null)
        .executeTakeFirst();
      if (Number(marked.numUpdatedRows) === 0) return undefined;
      const key = await trx
        .insertInto('api_keys')
        .values({
          id: randomUUID(),
          account_id: input.accountId,
          name: input.name,
          prefix: input.prefix,
          // Never matched: a grant is reached through its tokens, not as a key.
          key_hash: 'oauth-grant',
          namespace: input.namespace,
          scopes: JSON.stringify(input.scopes),
          expires_at: input.expiresAt,
          oauth_client_id: input.clientId,
        })
        .returningAll()
        .executeTakeFirstOrThrow();
      await trx
        .insertInto('oauth_tokens')
        .values(input.tokens.map((t) => ({ token_hash: t.hash, key_id: key.id, kind: t.kind, expires_at: t.expiresAt })))
        .execute();
      await trx.updateTable('oauth_authorizations').set({ key_id: key.id }).where('id', '=', input.authorizationId).execute();
      return key;
    });
  }

  /** A grant (api_keys row) with its client, live or not: the refresh and revocation checks read it. */
  async findGrant(keyId: string): Promise<ApiKeyRow | undefined> {
    return this.db.selectFrom('api_keys').selectAll().where('id', '=', keyId).where('oauth_client_id', 'is not', null).executeTakeFirst();
  }

  async findToken(hash: string): Promise<TokenRow | undefined> {
    return this.db
      .selectFrom('oauth_tokens')
      .select(['token_hash', 'key_id', 'kind', 'expires_at', 'used_at'])
      .where('token_hash', '=', hash)
      .executeTakeFirst();
  }

  /**
   * Rotation: the refresh token is marked used and its successors stored, in one transaction; false
   * when it was used already (a concurrent or replayed refresh), and nothing is stored then.
   */
  async rotate(
    refreshHash: string,
    keyId: string,
    tokens: Array<{ hash: string; kind: 'access' | 'refresh'; expiresAt: Date }>,
    grantExpiresAt: Date,
  ): Promise<boolean> {
    return this.db.transaction().execute(async (trx) => {
      const used = await trx
        .updateTable('oauth_tokens')
        .set({ used_at: databaseDate() })
        .where('token_hash', '=', refreshHash)
        .where('kind', '=', 'refresh')
        .where('used_at', 'is', null)
        .executeTakeFirst();
      if (Number(used.numUpdatedRows) === 0) return false;
      await trx
        .insertInto('oauth_tokens')
        .values(tokens.map((t) => ({ token_hash: t.hash, key_id: keyId, kind: t.kind, expires_at: t.expiresAt })))
        .execute();
      await trx.updateTable('api_keys').set({ expires_at: grantExpiresAt }).where('id', '=', keyId).execute();
      // Expired tokens of the grant are of no further use (reuse is detected by the used ones kept until they expire).
      await trx.deleteFrom('oauth_tokens').where('key_id', '=', keyId).where('expires_at', '<', databaseDate()).execute();
      return true;
    });
  }

  /** Revokes a grant: its tokens stop working at once (the auth path reads revoked_at). */
  async revokeGrant(keyId: string): Promise<void> {
    await this.db
      .updateTable('api_keys')
      .set({ revoked_at: databaseDate() })
      .where('id', '=', keyId)
      .where('revoked_at', 'is', null)
      .execute();
  }
}
