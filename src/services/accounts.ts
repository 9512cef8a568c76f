import {
  apiKeyPrefix,
  isAccessTokenShape,
  isApiKeyShape,
  SIGN_IN_LIMITS,
  validateEmail,
  validateKeyName,
  validatePassword,
  validateScopes,
  MAX_PASSWORD_LENGTH,
  MIN_PASSWORD_LENGTH,
  type Scope,
} from '../core/accounts.js';
import type { CreatedKey, KeyListing } from '../core/dashboard-types.js';
import { DomainError, invalid } from '../core/errors.js';
import { validateNamespaceName } from '../core/names.js';
import { DEFAULT_TIER, TRIAL_DAYS, isKnownTier, type TierLimits } from '../core/tiers.js';
import { KEY_TOUCH_MS, type AccountsStore, type KeyForRequest, type McpSessionRef, type NamespaceRef } from '../store/accounts-store.js';
import type { AccountRow, ApiKeyRow } from '../store/schema.js';
import type { NotifyListener } from '../store/notify-listener.js';
import { ApiKeyHasher, hashSecret, randomHex, sha256Hex, verifyLegacyKey, verifySecret } from './credential-hashing.js';
import { ClientSignInGate, rateLimited } from './sign-in-throttle.js';
import { databaseDate, databaseNow } from '../core/database-clock.js';

/** Where a sign-in comes from: its source address (HTTP). Operator commands pass none and are not throttled. */
export interface SignInSource {
  address: string | undefined;
}

/** Who is calling, as established by an API key. */
export interface KeyPrincipal {
  accountId: string;
  keyId: string;
  tier: string;
  /** When set, the key works only in this namespace. */
  namespace: string | null;
  scopes: Scope[];
}

export type { CreatedKey, KeyListing } from '../core/dashboard-types.js';

const SESSION_DAYS = 30;
const DAY_MS = 86_400_000;

const iso = (d: Date | null): string | null => (d ? new Date(d).toISOString() : null);

function trialEnd(tier: string, now = databaseNow()): Date | null {
  return tier === 'pro_trial' ? new Date(now + TRIAL_DAYS * DAY_MS) : null;
}

const SWEEP_INTERVAL_MS = 60_000;
const ACCOUNT_LIMITS = {
  freeFailures: SIGN_IN_LIMITS.accountFreeFailures,
  firstBackoffSeconds: SIGN_IN_LIMITS.firstBackoffSeconds,
  maxBackoffSeconds: SIGN_IN_LIMITS.maxBackoffSeconds,
  windowSeconds: SIGN_IN_LIMITS.failureWindowSeconds,
};

/**
 * How long a key this node verified is used by the run endpoint's metered calls without a lookup
 * of its own (see cachedRunKey): as long as its last use may go unwritten anyway.
 */
export const KEY_CACHE_MS = KEY_TOUCH_MS;
/** Keys kept verified (least recently verified out first), and namespaces kept per key. */
const KEY_CACHE_ENTRIES = 4096;
const KEY_CACHE_NAMESPACES = 16;
/** 2025-era sessions kept per key (a client keeps one; mcp-remote makes one per connect). */
const KEY_CACHE_SESSIONS = 16;
/** The channel migration 39's trigger NOTIFYs a changed key's id on. */
export const API_KEYS_CHANNEL = 'mcpworks_api_keys';

/** A key verified by a lookup on this node, and the namespaces and 2025-era sessions lookups saw. */
interface VerifiedKey {
  principal: KeyPrincipal;
  /** Until when (this node's clock) it is used without a lookup. */
  until: number;
  namespaces: Map<string, NamespaceRef>;
  /** By session id, as a lookup found it live (its owner's fields; whose it is stays the caller's check). */
  sessions: Map<string, McpSessionRef>;
}

export class AccountService {
  private dummyHash: Promise<string> | undefined;
  private readonly keys: ApiKeyHasher;
  private readonly gate: ClientSignInGate;
  private lastSweep = 0;
  /** By the SHA-256 of the whole key: a key is found only by its whole secret. */
  private readonly verified = new Map<string, VerifiedKey>();

  constructor(
    private readonly store: AccountsStore,
    private readonly tiers: Readonly<Record<string, TierLimits>>,
    options: { keys: ApiKeyHasher; gate?: ClientSignInGate },
  ) {
    this.keys = options.keys;
    this.gate = options.gate ?? new ClientSignInGate();
  }

  async register(emailInput: unknown, passwordInput: unknown, tierInput?: unknown, from?: SignInSource): Promise<AccountRow> {
    const email = validateEmail(emailInput);
    const password = validatePassword(passwordInput);
    const tier = tierInput === undefined ? DEFAULT_TIER : this.validateTier(tierInput);
    return this.throttled(from, async () => {
      const taken = () => new DomainError('conflict', `an account with email ${email} already exists`, { field: 'email' });
      // Per client, sign-ups that reach the KDF are rationed (a bucket); checked before any lookup.
      if (from) this.gate.checkRegistration(from.address);
      // A taken email answers before the KDF runs (the 409 says as much anyway).
      if (await this.store.findAccountByEmail(email)) throw taken();
      if (from) this.gate.spendRegistration(from.address);
      // In the KDF's queue, sign-ups wait behind sign-ins and have a smaller queue of their own.
      const account = await this.store.createAccount({
        email,
        passwordHash: await hashSecret(password, { signUp: true }),
        tier,
        trialEndsAt: trialEnd(tier),
      });
      if (!account) throw taken();
      return account;
    });
  }

  /**
   * Whether a sign-in (or sign-up) from this address would be refused by its per-client gate right
   * now (backing off, waiting room full, sign-ups used up): the HTTP layer answers those before
   * reading the request's body. Changes nothing.
   */
  signInRefusal(address: string | undefined, signUp = false): { message: string; retryAfter: number } | undefined {
    return this.gate.refusal(address, signUp);
  }

  /** The per-client gate (HTTP callers only), in front of anything that runs the password KDF. */
  private throttled<T>(from: SignInSource | undefined, work: () => Promise<T>): Promise<T> {
    return from ? this.gate.run(from.address, work) : work();
  }

  validateTier(tier: unknown): string {
    if (typeof tier !== 'string' || !isKnownTier(tier, this.tiers)) {
      throw invalid(`unknown tier ${JSON.stringify(tier)}; known tiers: ${Object.keys(this.tiers).join(', ')}`, { field: 'tier' });
    }
    return tier;
  }

  async setTier(emailInput: unknown, tierInput: unknown): Promise<AccountRow> {
    const email = validateEmail(emailInput);
    const tier = this.validateTier(tierInput);
    const account = await this.store.setTier(email, tier, trialEnd(tier));
    if (!account) throw new DomainError('not_found', `no account with email ${email}`);
    return account;
  }

  /**
   * Checks email + password; the same error (and similar time) for an unknown email and a wrong
   * password. Before the KDF runs: the client's gate (HTTP), then the email's attempt count, which
   * every node shares; both answer 429 with the seconds to wait.
   */
  async checkPassword(emailInput: unknown, passwordInput: unknown, from?: SignInSource): Promise<AccountRow> {
    const email = typeof emailInput === 'string' ? emailInput.trim().toLowerCase() : '';
    const password = typeof passwordInput === 'string' ? passwordInput : '';
    if (!email || !password) throw invalid('email and password are required', { field: email ? 'password' : 'email' });
    const wrong = () => new DomainError('unauthorized', 'wrong email or password');
    // No account can have such an email (register validates it): nothing to throttle or hash.
    if (email.length > 254 || email.includes('\u0000') || password.length > MAX_PASSWORD_LENGTH) throw wrong();
    return this.throttled(from, async () => {
      this.sweepSometimes();
      const claim = await this.store.claimSignIn(email, ACCOUNT_LIMITS);
      if (!claim.allowed) throw rateLimited(`too many failed sign-ins for this email; retry in ${claim.retryAfter} s`, claim.retryAfter);
      const account = await this.store.findAccountByEmail(email);
      this.dummyHash ??= hashSecret('not-a-password');
      const ok = await verifySecret(password, account?.password_hash ?? (await this.dummyHash), {
        suspect: !!from && this.gate.hasFailures(from.address),
      });
      if (!account || !ok) {
        if (from) this.gate.failure(from.address);
        await this.store.recordSignInFailure(email, ACCOUNT_LIMITS);
        throw wrong();
      }
      if (from) this.gate.success(from.address);
      await this.store.clearSignInFailures(email);
      return account;
    });
  }

  /** Old attempt counts go now and then (per node; any node's sweep serves all). */
  private sweepSometimes(): void {
    const now = Date.now();
    if (now - this.lastSweep < SWEEP_INTERVAL_MS) return;
    this.lastSweep = now;
    this.store.sweepSignInFailures(SIGN_IN_LIMITS.failureWindowSeconds).catch(() => undefined);
  }

  async login(email: unknown, password: unknown, from?: SignInSource): Promise<{ token: string; accountId: string; expiresAt: Date }> {
    const account = await this.checkPassword(email, password, from);
    const token = randomHex(32);
    const expiresAt = databaseDate(SESSION_DAYS * DAY_MS);
    await this.store.createWebSession(sha256Hex(token), account.id, expiresAt);
    return { token, accountId: account.id, expiresAt };
  }

  async authenticateSession(token: string): Promise<string | undefined> {
    if (!/^[0-9a-f]{64}$/.test(token)) return undefined;
    const session = await this.store.findWebSession(sha256Hex(token));
    if (!session || new Date(session.expires_at).getTime() <= databaseNow()) return undefined;
    return session.account_id;
  }

  /** Ends the login session of this token (a no-op for an unknown one): logout. */
  async logout(token: string): Promise<void> {
    if (/^[0-9a-f]{64}$/.test(token)) await this.store.deleteWebSession(sha256Hex(token));
  }

  /** The signed-in account, as the dashboard shows it. */
  async describeAccount(accountId: string): Promise<{ account_id: string; email: string; tier: string }> {
    const account = await this.store.findAccountById(accountId);
    if (!account) throw new DomainError('unauthorized', 'this login session has no account any more: log in again');
    return { account_id: account.id, email: account.email, tier: account.tier };
  }

  /**
   * A new password, the current one required (checked and throttled like a sign-in, so a stolen
   * session cannot guess it). Every other login session of the account ends; `sessionToken`'s stays.
   */
  async changePassword(
    accountId: string,
    input: { current_password?: unknown; new_password?: unknown },
    from?: SignInSource,
  ): Promise<{ token: string; expiresAt: Date }> {
    const next = input.new_password;
    if (typeof next !== 'string' || next.length < MIN_PASSWORD_LENGTH || next.length > MAX_PASSWORD_LENGTH) {
      throw invalid(`the new password must be ${MIN_PASSWORD_LENGTH}-${MAX_PASSWORD_LENGTH} characters`, { field: 'new_password' });
    }
    const account = await this.store.findAccountById(accountId);
    if (!account) throw new DomainError('unauthorized', 'this login session has no account any more: log in again');
    try {
      await this.checkPassword(account.email, input.current_password, from);
    } catch (error) {
      // Not a 401: the session is fine, the password typed is not.
      if (error instanceof DomainError && (error.type === 'unauthorized' || error.type === 'validation_error')) {
        throw invalid('the current password is wrong', { field: 'current_password' });
      }
      throw error;
    }
    // The asking session is replaced too: its new token is the caller's from now on.
    const token = randomHex(32);
    const expiresAt = databaseDate(SESSION_DAYS * DAY_MS);
    await this.store.changePassword(accountId, await hashSecret(next), { tokenHash: sha256Hex(token), expiresAt });
    return { token, expiresAt };
  }

  async createKey(
    accountId: string,
    input: { name?: unknown; namespace?: unknown; scopes?: unknown; expires_at?: unknown; expires_in_days?: unknown },
  ): Promise<CreatedKey> {
    const name = validateKeyName(input.name);
    const namespace = input.namespace === undefined || input.namespace === null ? null : validateNamespaceName(input.namespace);
    const scopes = validateScopes(input.scopes);
    const expiresAt = parseExpiry(input.expires_at, input.expires_in_days);
    // A key for a namespace that does not exist yet is fine (make_namespace may follow); one for a
    // namespace another account owns could never work. Names are global, so saying so reveals no
    // more than make_namespace does.
    if (namespace !== null) {
      const owner = await this.store.namespaceOwner(namespace);
      if (owner !== undefined && owner !== accountId) {
        throw new DomainError('conflict', `namespace name '${namespace}' is not available: it belongs to another account`, {
          field: 'namespace',
        });
      }
    }
    const key = `mcpw_${randomHex(32)}`;
    const row = await this.store.createKey({
      accountId,
      name,
      prefix: apiKeyPrefix(key),
      keyHash: this.keys.hash(key),
      namespace,
      scopes,
      expiresAt,
    });
    return { id: row.id, name: row.name, prefix: row.prefix, key, namespace, scopes, expires_at: iso(row.expires_at) };
  }

  async listKeys(accountId: string): Promise<KeyListing[]> {
    const rows = await this.store.listKeys(accountId);
    return rows.map((r: ApiKeyRow) => ({
      id: r.id,
      name: r.name,
      prefix: r.prefix,
      namespace: r.namespace,
      scopes: r.scopes,
      expires_at: iso(r.expires_at),
      last_used_at: iso(r.last_used_at),
      created_at: iso(r.created_at)!,
    }));
  }

  async revokeKey(accountId: string, keyId: string): Promise<void> {
    const found = /^[0-9a-f-]{36}$/.test(keyId) && (await this.store.revokeKey(accountId, keyId));
    if (!found) throw new DomainError('not_found', `API key '${keyId.slice(0, 64)}' not found`);
    // Revoked through this node: its next request here is looked up (and refused) before its body
    // is read. Other nodes are told by the database (listenForKeyChanges).
    this.forgetKey(keyId);
  }

  /**
   * Drops from this node's cache the keys the database announces revoked, re-dated or deleted
   * (migration 39, on any node): their next request is looked up before its body is read. A
   * reconnected listener may have missed some, so it drops them all. The admission's check of a
   * cached key stays the guard meanwhile (a notification arrives after its commit).
   */
  async listenForKeyChanges(notifications: NotifyListener): Promise<void> {
    await notifications.listen(API_KEYS_CHANNEL, {
      notify: (keyId) => this.forgetKey(keyId),
      resync: () => this.verified.clear(),
    });
  }

  /** Takes the key of this id out of this node's cache of verified keys. */
  forgetKey(keyId: string): void {
    for (const [id, entry] of this.verified) if (entry.principal.keyId === keyId) this.verified.delete(id);
  }

  /** Resolves a raw API key to its principal; undefined for unknown, revoked or expired keys. */
  async authenticateKey(raw: string): Promise<KeyPrincipal | undefined> {
    return (await this.authenticateRequest(raw, {}))?.principal;
  }

  /**
   * authenticateKey, and in the same round trip what an MCP request addresses: the account's
   * namespace of that name and the MCP session of that id (see AccountsStore.findKeyForRequest;
   * undefined where not asked for, null where absent). Whether the key may use the namespace
   * (a key limited to another one) and the session (issued to it, for that endpoint) stays the
   * caller's check.
   */
  async authenticateRequest(
    raw: string,
    what: { namespace?: string; sessionId?: string },
  ): Promise<
    { principal: KeyPrincipal; addressed: NamespaceRef | null | undefined; session: McpSessionRef | null | undefined } | undefined
  > {
    // An OAuth access token stands for its grant, an api_keys row: from here on the same checks as a key.
    const accessToken = isAccessTokenShape(raw);
    if (!accessToken && !isApiKeyShape(raw)) return undefined;
    const cacheId = accessToken ? undefined : sha256Hex(raw);
    let found: Awaited<ReturnType<AccountService['lookUpKey']>>;
    try {
      found = await this.lookUpKey(raw, accessToken, what);
    } finally {
      // A lookup that fails (or throws) takes the key out of the cache: the next call is looked up
      // again. One that succeeds adds what it found to the entry as it is now, not as it was when
      // the lookup began: a key's concurrent lookups (one a session, 15 clients on one key) each
      // keep what the others found, where clearing the entry for the lookup's time sent every
      // request of the key meanwhile to a lookup of its own, each forgetting the others' sessions.
      if (cacheId && !found) this.verified.delete(cacheId);
    }
    if (!found) return undefined;
    const { principal, row } = found;
    if (cacheId) this.remember(cacheId, principal, what, row, this.verified.get(cacheId));
    return { principal, addressed: row.addressed, session: row.session };
  }

  /** authenticateRequest's lookup and checks: the key's principal and row, or undefined when refused. */
  private async lookUpKey(
    raw: string,
    accessToken: boolean,
    what: { namespace?: string; sessionId?: string },
  ): Promise<{ principal: KeyPrincipal; row: KeyForRequest } | undefined> {
    const row = await this.store.findKeyForRequest(accessToken ? { accessTokenHash: sha256Hex(raw) } : { prefix: apiKeyPrefix(raw) }, what);
    if (!row || row.revoked_at) return undefined;
    if (row.expires_at && new Date(row.expires_at).getTime() <= databaseNow()) return undefined;
    if (accessToken) {
      // Found by its hash (a live access token of this grant): nothing more to verify.
    } else if (ApiKeyHasher.isKeyed(row.key_hash)) {
      if (!this.keys.verify(raw, row.key_hash)) return undefined;
    } else {
      // A key from before migration 7: checked with scrypt this once, then stored keyed.
      if (!(await verifyLegacyKey(raw, row.key_hash))) return undefined;
      await this.store.replaceKeyHash(row.id, row.key_hash, this.keys.hash(raw));
    }
    if (row.last_used_at === null || databaseNow() - new Date(row.last_used_at).getTime() > KEY_TOUCH_MS) {
      // Coalesced: at most one write per key a minute. A failed write (database trouble) must not
      // fail the request it describes.
      await this.store.touchKey(row.id).catch(() => undefined);
    }
    const principal: KeyPrincipal = {
      accountId: row.account_id,
      keyId: row.id,
      tier: row.tier,
      namespace: row.namespace,
      scopes: row.scopes as Scope[],
    };
    return { principal, row };
  }

  /**
   * A key this node verified by a lookup less than KEY_CACHE_MS ago, with the namespace `namespace`
   * as a lookup saw it: no round trip. Undefined when not cached (unknown keys included: they are
   * looked up, and refused, before the request's body is read). Provisional: it may have been
   * revoked, expired, changed plan or the namespace's functions may have changed since, on any
   * node. The caller lets a request through only once the database has said otherwise: a metered
   * call's admission checks the key and the catalog version (mcpworks_admit_key_call), and
   * anything else is looked up with authenticateRequest first. API keys only (not OAuth tokens).
   * `sessionId`: a 2025-era request's Mcp-Session-Id, which a lookup of this key must have found
   * live too (else undefined); just as provisional (ended or expired since, on any node), so a
   * metered call's admission checks it as well (mcpworks_admit_session_call, migration 40).
   */
  cachedRunKey(
    raw: string,
    namespace: string,
    sessionId?: string,
  ): { principal: KeyPrincipal; addressed: NamespaceRef; session?: McpSessionRef } | undefined {
    if (!isApiKeyShape(raw)) return undefined;
    const id = sha256Hex(raw);
    const entry = this.verified.get(id);
    if (!entry) return undefined;
    // Its expiry, like its revocation, is the admission's check (the database's clock).
    if (entry.until <= Date.now()) {
      this.verified.delete(id);
      return undefined;
    }
    const addressed = entry.namespaces.get(namespace);
    if (!addressed) return undefined;
    if (sessionId === undefined) return { principal: entry.principal, addressed };
    // A session is as provisional as the key: a metered call's admission checks it (migration 40).
    const session = entry.sessions.get(sessionId);
    return session ? { principal: entry.principal, addressed, session } : undefined;
  }

  private remember(
    id: string,
    principal: KeyPrincipal,
    what: { namespace?: string; sessionId?: string },
    row: { addressed: NamespaceRef | null | undefined; session: McpSessionRef | null | undefined },
    previous: VerifiedKey | undefined,
  ) {
    // What earlier lookups of the key saw of other namespaces and sessions stays (the admission checks it anyway).
    const namespaces = new Map(previous?.namespaces);
    if (what.namespace !== undefined) {
      namespaces.delete(what.namespace);
      if (row.addressed) namespaces.set(what.namespace, row.addressed);
      if (namespaces.size > KEY_CACHE_NAMESPACES) namespaces.delete(namespaces.keys().next().value!);
    }
    const sessions = new Map(previous?.sessions);
    if (what.sessionId !== undefined) {
      sessions.delete(what.sessionId);
      // Only the key's own account's: another's is refused (not found) at every request, looked up.
      if (row.session && row.session.account_id === principal.accountId) sessions.set(what.sessionId, row.session);
      if (sessions.size > KEY_CACHE_SESSIONS) sessions.delete(sessions.keys().next().value!);
    }
    this.verified.delete(id);
    if (this.verified.size >= KEY_CACHE_ENTRIES) this.verified.delete(this.verified.keys().next().value!);
    this.verified.set(id, {
      principal,
      until: Date.now() + KEY_CACHE_MS,
      namespaces,
      sessions,
    });
  }
}

function parseExpiry(expiresAt: unknown, expiresInDays: unknown): Date | null {
  if (expiresAt !== undefined && expiresAt !== null) {
    const date = typeof expiresAt === 'string' ? new Date(expiresAt) : new Date(NaN);
    if (Number.isNaN(date.getTime())) throw invalid('expires_at must be an ISO 8601 date-time', { field: 'expires_at' });
    if (date.getTime() <= databaseNow()) throw invalid('expires_at must be in the future', { field: 'expires_at' });
    return date;
  }
  if (expiresInDays !== undefined && expiresInDays !== null) {
    if (typeof expiresInDays !== 'number' || !Number.isFinite(expiresInDays) || expiresInDays <= 0 || expiresInDays > 3650) {
      throw invalid('expires_in_days must be a number between 0 and 3650', { field: 'expires_in_days' });
    }
    return databaseDate(expiresInDays * DAY_MS);
  }
  return null;
}
