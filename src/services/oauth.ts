import { randomUUID } from 'node:crypto';
import {
  InvalidClientMetadataError,
  InvalidGrantError,
  InvalidRequestError,
  InvalidScopeError,
  InvalidTargetError,
} from '@modelcontextprotocol/sdk/server/auth/errors.js';
import type { OAuthClientInformationFull, OAuthTokens } from '@modelcontextprotocol/sdk/shared/auth.js';
import { OAUTH_REFRESH_TOKEN_PATTERN, isAccessTokenShape, type Scope } from '../core/accounts.js';
import { DomainError, invalid } from '../core/errors.js';
import {
  OAUTH_LIFETIMES,
  clientDisplayName,
  namespaceOfResource,
  publicClientMetadata,
  redirectShown,
  requestedScopes,
} from '../core/oauth.js';
import { unstorableMessage, unstorableReason } from '../core/storable-text.js';
import type { ConsentRequest, OAuthGrantListing } from '../core/dashboard-types.js';
import type { OAuthStore } from '../store/oauth-store.js';
import type { AccountsStore } from '../store/accounts-store.js';
import { randomHex, sha256Hex } from './credential-hashing.js';
import { databaseDate, databaseNow } from '../core/database-clock.js';

interface Issued {
  tokens: OAuthTokens;
  rows: Array<{ hash: string; kind: 'access' | 'refresh'; expiresAt: Date }>;
  grantExpiresAt: Date;
}

const iso = (d: Date | null): string | null => (d ? new Date(d).toISOString() : null);

/**
 * The authorization server's state: registered clients, consent, codes, and the tokens of a grant.
 * A grant is an api_keys row, so its access tokens go through AccountService.authenticateRequest
 * like a key (scopes, namespace, tenancy, limits, metering) and revoking it is revoking a key.
 */
export class OAuthService {
  constructor(
    private readonly store: OAuthStore,
    private readonly accounts: AccountsStore,
    private readonly namespacesOf: (accountId: string) => Promise<string[]>,
    /** `{ns}.create|run.{baseHost}` hosts are endpoints too (their resource names the namespace). */
    private readonly baseHost: string | undefined,
    private readonly lifetimes: typeof OAUTH_LIFETIMES = OAUTH_LIFETIMES,
  ) {}

  /** The namespace a stored or presented resource names (see namespaceOfResource); null: the owner picks. */
  private namespaceOf(resource: string | URL | null): string | null | undefined {
    if (!resource) return null;
    const url = new URL(resource);
    // The origin part was checked at /authorize; here a resource of this server's root names no namespace.
    const named = namespaceOfResource(url, url.origin, this.baseHost);
    return named === null && this.baseHost ? (namespaceOfResource(url, '', this.baseHost) ?? null) : named;
  }

  async getClient(clientId: string): Promise<OAuthClientInformationFull | undefined> {
    // Ids are ours (random UUIDs): anything else names no client and never reaches a query.
    if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(clientId)) return undefined;
    const metadata = await this.store.findClient(clientId);
    return metadata ? ({ ...metadata, client_id: clientId } as OAuthClientInformationFull) : undefined;
  }

  /**
   * Every client is registered public (RFC 7591 lets the server choose): PKCE binds a code to the
   * client that asked for it, and no client secret is kept anywhere.
   */
  async registerClient(client: Omit<OAuthClientInformationFull, 'client_id' | 'client_id_issued_at'>): Promise<OAuthClientInformationFull> {
    const kept = publicClientMetadata(client as unknown as Record<string, unknown>);
    if (!kept.ok) throw new InvalidClientMetadataError(kept.problem);
    // What the database cannot hold (NUL, lone surrogates) is refused as bad metadata, not failed in the insert.
    const unstorable = unstorableReason(kept.metadata);
    if (unstorable) throw new InvalidClientMetadataError(`client metadata: ${unstorableMessage(unstorable)}`);
    const clientId = randomUUID();
    const registered = {
      ...kept.metadata,
      token_endpoint_auth_method: 'none',
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      client_id_issued_at: Math.floor(Date.now() / 1000),
    };
    await this.store.createClient(clientId, registered);
    return { ...registered, client_id: clientId } as OAuthClientInformationFull;
  }

  /** An /authorize request, validated by the SDK (client, redirect URI, S256 challenge): kept for the consent page. */
  async startAuthorization(
    client: OAuthClientInformationFull,
    params: {
      state?: string | undefined;
      scopes?: string[] | undefined;
      codeChallenge: string;
      redirectUri: string;
      resource?: URL | undefined;
    },
    origin: string,
  ): Promise<string> {
    const texts = [params.state ?? '', params.codeChallenge, params.redirectUri, params.resource?.href ?? ''];
    if (texts.some((t) => t.includes('\u0000')) || (params.state ?? '').length > 1024 || params.codeChallenge.length > 128) {
      throw new InvalidRequestError('state (at most 1024 characters), code_challenge (at most 128) and the URIs must not contain NUL');
    }
    const scopes = requestedScopes(params.scopes);
    if (!scopes) throw new InvalidScopeError(`scopes are read, write and execute (space-separated)`);
    if (params.resource && namespaceOfResource(params.resource, origin, this.baseHost) === undefined) {
      throw new InvalidTargetError('resource must be one of this server’s MCP endpoints (/mcp/create/{ns} or /mcp/run/{ns})');
    }
    const id = randomHex(32);
    await this.store.createAuthorization({
      id,
      clientId: client.client_id,
      redirectUri: params.redirectUri,
      codeChallenge: params.codeChallenge,
      state: params.state ?? null,
      scopes,
      resource: params.resource?.href ?? null,
      expiresAt: databaseDate(this.lifetimes.requestSeconds * 1000),
    });
    return id;
  }

  /** The pending request for the consent page; another account's decided one, or an expired one, is not found. */
  async describeRequest(accountId: string, requestId: unknown): Promise<ConsentRequest> {
    const row = await this.pendingRequest(requestId);
    const client = (await this.store.findClient(row.client_id)) ?? {};
    const fixed = this.namespaceOf(row.resource);
    return {
      request_id: row.id,
      client_name: clientDisplayName(client),
      redirect_host: redirectShown(row.redirect_uri),
      scopes: row.scopes as Scope[],
      namespace: fixed ?? null,
      namespaces: await this.namespacesOf(accountId),
      expires_at: row.expires_at.toISOString(),
    };
  }

  /**
   * The owner's decision: where the browser goes next (the client's redirect URI with the code and
   * state, or access_denied). The namespace must be the account's; the scopes, some of those asked for.
   */
  async decide(
    accountId: string,
    requestId: unknown,
    input: { approve?: unknown; namespace?: unknown; scopes?: unknown },
  ): Promise<string> {
    const row = await this.pendingRequest(requestId);
    const back = new URL(row.redirect_uri);
    if (row.state !== null) back.searchParams.set('state', row.state);
    if (input.approve !== true) {
      if (!(await this.store.decide(row.id, { denied: true }))) throw this.gone();
      back.searchParams.set('error', 'access_denied');
      back.searchParams.set('error_description', 'the account owner denied the request');
      return back.href;
    }
    const fixed = this.namespaceOf(row.resource);
    const namespace = fixed ?? input.namespace;
    const owned = await this.namespacesOf(accountId);
    if (typeof namespace !== 'string' || !owned.includes(namespace)) {
      throw invalid(
        fixed
          ? `this client asks for namespace '${fixed}', which is not one of this account's: log in with the account that owns it`
          : 'namespace must be one of this account’s namespaces',
        { field: 'namespace' },
      );
    }
    const asked = row.scopes as string[];
    const scopes = input.scopes;
    if (!Array.isArray(scopes) || scopes.length === 0 || scopes.some((s) => typeof s !== 'string' || !asked.includes(s))) {
      throw invalid(`scopes must be a non-empty list of those asked for: ${asked.join(', ')}`, { field: 'scopes' });
    }
    const code = randomHex(32);
    const decided = await this.store.decide(row.id, {
      accountId,
      namespace,
      scopes: [...new Set(scopes as string[])],
      codeHash: sha256Hex(code),
      codeExpiresAt: databaseDate(this.lifetimes.codeSeconds * 1000),
    });
    if (!decided) throw this.gone();
    back.searchParams.set('code', code);
    return back.href;
  }

  /** The code's PKCE challenge, for the SDK's check of the verifier (before the code is redeemed). */
  async challengeFor(client: OAuthClientInformationFull, code: string): Promise<string> {
    const row = await this.store.findAuthorizationByCode(sha256Hex(code));
    if (!row || row.client_id !== client.client_id) throw new InvalidGrantError('unknown authorization code');
    return row.code_challenge;
  }

  /** Redeems a code once; a second redemption revokes what the first one got (RFC 6749 section 4.1.2). */
  async exchangeCode(client: OAuthClientInformationFull, code: string, redirectUri?: string, resource?: URL): Promise<OAuthTokens> {
    const hash = sha256Hex(code);
    const row = await this.store.findAuthorizationByCode(hash);
    if (!row || row.client_id !== client.client_id || !row.account_id || !row.namespace || !row.granted_scopes) {
      throw new InvalidGrantError('unknown authorization code');
    }
    // A request that does not match leaves an unused code as it is; a used one goes to the reuse answer.
    if (!row.used_at) {
      if (!row.code_expires_at || row.code_expires_at.getTime() <= databaseNow()) throw new InvalidGrantError('authorization code expired');
      if (redirectUri !== undefined && redirectUri !== row.redirect_uri) {
        throw new InvalidGrantError('redirect_uri differs from the authorization request’s');
      }
      if (resource && row.resource && resource.href !== row.resource) {
        throw new InvalidTargetError('resource differs from the authorization request’s');
      }
    }
    const issued = this.issue(row.granted_scopes);
    const grant = await this.store.redeemCode(hash, {
      authorizationId: row.id,
      accountId: row.account_id,
      clientId: client.client_id,
      name: clientDisplayName(client as unknown as Record<string, unknown>).slice(0, 100),
      prefix: `mcpwg_${randomHex(6)}`,
      namespace: row.namespace,
      scopes: row.granted_scopes,
      expiresAt: issued.grantExpiresAt,
      tokens: issued.rows,
    });
    if (!grant) {
      // The winner's transaction has committed by now (its row lock made this one wait): key_id is set.
      const again = await this.store.findAuthorization(row.id);
      if (again?.key_id) await this.store.revokeGrant(again.key_id);
      throw new InvalidGrantError('authorization code already used: the tokens it gave are revoked');
    }
    return issued.tokens;
  }

  /** Rotation: each refresh token works once; presenting a used one revokes the whole grant (reuse detection). */
  async exchangeRefresh(client: OAuthClientInformationFull, refreshToken: string, scopes?: string[], resource?: URL): Promise<OAuthTokens> {
    const hash = OAUTH_REFRESH_TOKEN_PATTERN.test(refreshToken) ? sha256Hex(refreshToken) : undefined;
    const token = hash ? await this.store.findToken(hash) : undefined;
    if (!hash || !token || token.kind !== 'refresh') throw new InvalidGrantError('unknown refresh token');
    const grant = await this.store.findGrant(token.key_id);
    if (!grant || grant.oauth_client_id !== client.client_id) throw new InvalidGrantError('unknown refresh token');
    if (token.used_at) {
      await this.store.revokeGrant(grant.id);
      throw new InvalidGrantError('refresh token already used: the grant is revoked, sign in again');
    }
    if (grant.revoked_at) throw new InvalidGrantError('this sign-in was revoked: sign in again');
    if (token.expires_at.getTime() <= databaseNow() || (grant.expires_at && grant.expires_at.getTime() <= databaseNow())) {
      throw new InvalidGrantError('refresh token expired: sign in again');
    }
    const granted = grant.scopes as string[];
    if (scopes && scopes.length > 0 && (scopes.some((s) => !granted.includes(s)) || new Set(scopes).size !== granted.length)) {
      throw new InvalidScopeError(`a refresh keeps the granted scopes (${granted.join(' ')}); sign in again for others`);
    }
    if (resource && this.namespaceOf(resource) !== null && this.namespaceOf(resource) !== grant.namespace) {
      throw new InvalidTargetError(`this grant is for namespace '${grant.namespace}'`);
    }
    const issued = this.issue(granted);
    if (!(await this.store.rotate(hash, grant.id, issued.rows, issued.grantExpiresAt))) {
      await this.store.revokeGrant(grant.id);
      throw new InvalidGrantError('refresh token already used: the grant is revoked, sign in again');
    }
    return issued.tokens;
  }

  /** RFC 7009: revoking either token of a grant ends the grant; an unknown token is no error. */
  async revoke(client: OAuthClientInformationFull, token: string): Promise<void> {
    if (!isAccessTokenShape(token) && !OAUTH_REFRESH_TOKEN_PATTERN.test(token)) return;
    const row = await this.store.findToken(sha256Hex(token));
    const grant = row ? await this.store.findGrant(row.key_id) : undefined;
    if (grant && grant.oauth_client_id === client.client_id) await this.store.revokeGrant(grant.id);
  }

  /** The account's connected clients, for the API-keys page (revoked with DELETE /api/keys/{id}). */
  async listGrants(accountId: string): Promise<OAuthGrantListing[]> {
    const rows = await this.accounts.listOAuthGrants(accountId);
    return rows.map((r) => ({
      id: r.id,
      client_name: clientDisplayName(r.client_metadata),
      namespace: r.namespace,
      scopes: r.scopes,
      created_at: iso(r.created_at)!,
      last_used_at: iso(r.last_used_at),
      expires_at: iso(r.expires_at),
    }));
  }

  private issue(scopes: string[]): Issued {
    const now = databaseNow();
    const access = `mcpwat_${randomHex(32)}`;
    const refresh = `mcpwrt_${randomHex(32)}`;
    const accessExpires = new Date(now + this.lifetimes.accessTokenSeconds * 1000);
    const refreshExpires = new Date(now + this.lifetimes.refreshTokenSeconds * 1000);
    return {
      tokens: {
        access_token: access,
        token_type: 'Bearer',
        expires_in: this.lifetimes.accessTokenSeconds,
        refresh_token: refresh,
        scope: scopes.join(' '),
      },
      rows: [
        { hash: sha256Hex(access), kind: 'access', expiresAt: accessExpires },
        { hash: sha256Hex(refresh), kind: 'refresh', expiresAt: refreshExpires },
      ],
      grantExpiresAt: refreshExpires,
    };
  }

  private async pendingRequest(requestId: unknown) {
    const row =
      typeof requestId === 'string' && /^[0-9a-f]{64}$/.test(requestId) ? await this.store.findAuthorization(requestId) : undefined;
    if (!row || row.account_id || row.used_at || row.expires_at.getTime() <= databaseNow()) throw this.gone();
    return row;
  }

  private gone(): DomainError {
    return new DomainError(
      'not_found',
      'this sign-in request is unknown, expired or already decided: start the sign-in again from the client',
    );
  }
}
