import { apiKeyPrefix, isApiKeyShape, validateEmail, validateKeyName, validatePassword, validateScopes, type Scope } from '../core/accounts.js';
import { DomainError, invalid } from '../core/errors.js';
import { validateNamespaceName } from '../core/names.js';
import { DEFAULT_TIER, TRIAL_DAYS, isKnownTier, type TierLimits } from '../core/tiers.js';
import type { AccountsStore, McpSessionRef, NamespaceRef } from '../store/accounts-store.js';
import type { AccountRow, ApiKeyRow } from '../store/schema.js';
import { hashSecret, randomHex, sha256Hex, verifySecret } from './secrets.js';

/** Who is calling, as established by an API key. */
export interface KeyPrincipal {
  accountId: string;
  keyId: string;
  tier: string;
  /** When set, the key works only in this namespace. */
  namespace: string | null;
  scopes: Scope[];
}

export interface CreatedKey {
  id: string;
  name: string;
  prefix: string;
  key: string;
  namespace: string | null;
  scopes: Scope[];
  expires_at: string | null;
}

export interface KeyListing {
  id: string;
  name: string;
  prefix: string;
  namespace: string | null;
  scopes: string[];
  expires_at: string | null;
  last_used_at: string | null;
  created_at: string;
}

const SESSION_DAYS = 30;
const DAY_MS = 86_400_000;

const iso = (d: Date | null): string | null => (d ? new Date(d).toISOString() : null);

function trialEnd(tier: string, now = Date.now()): Date | null {
  return tier === 'pro_trial' ? new Date(now + TRIAL_DAYS * DAY_MS) : null;
}

export class AccountService {
  /** sha256(raw key) → stored hash it verified against: skips scrypt on repeat requests (a cache; the row is still read). */
  private readonly verifiedKeys = new Map<string, string>();
  private dummyHash: Promise<string> | undefined;

  constructor(
    private readonly store: AccountsStore,
    private readonly tiers: Readonly<Record<string, TierLimits>>,
  ) {}

  async register(emailInput: unknown, passwordInput: unknown, tierInput?: unknown): Promise<AccountRow> {
    const email = validateEmail(emailInput);
    const password = validatePassword(passwordInput);
    const tier = tierInput === undefined ? DEFAULT_TIER : this.validateTier(tierInput);
    const account = await this.store.createAccount({ email, passwordHash: await hashSecret(password), tier, trialEndsAt: trialEnd(tier) });
    if (!account) throw new DomainError('conflict', `an account with email ${email} already exists`, { field: 'email' });
    return account;
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

  /** Checks email + password; the same error (and similar time) for an unknown email and a wrong password. */
  async checkPassword(emailInput: unknown, passwordInput: unknown): Promise<AccountRow> {
    const email = typeof emailInput === 'string' ? emailInput.trim().toLowerCase() : '';
    const password = typeof passwordInput === 'string' ? passwordInput : '';
    if (!email || !password) throw invalid('email and password are required', { field: email ? 'password' : 'email' });
    if (email.includes('\u0000')) throw new DomainError('unauthorized', 'wrong email or password');
    const account = await this.store.findAccountByEmail(email);
    this.dummyHash ??= hashSecret('not-a-password');
    const ok = await verifySecret(password, account?.password_hash ?? (await this.dummyHash));
    if (!account || !ok) throw new DomainError('unauthorized', 'wrong email or password');
    return account;
  }

  async login(email: unknown, password: unknown): Promise<{ token: string; accountId: string; expiresAt: Date }> {
    const account = await this.checkPassword(email, password);
    const token = randomHex(32);
    const expiresAt = new Date(Date.now() + SESSION_DAYS * DAY_MS);
    await this.store.createWebSession(sha256Hex(token), account.id, expiresAt);
    return { token, accountId: account.id, expiresAt };
  }

  async authenticateSession(token: string): Promise<string | undefined> {
    if (!/^[0-9a-f]{64}$/.test(token)) return undefined;
    const session = await this.store.findWebSession(sha256Hex(token));
    if (!session || new Date(session.expires_at).getTime() <= Date.now()) return undefined;
    return session.account_id;
  }

  async createKey(
    accountId: string,
    input: { name?: unknown; namespace?: unknown; scopes?: unknown; expires_at?: unknown; expires_in_days?: unknown },
  ): Promise<CreatedKey> {
    const name = validateKeyName(input.name);
    const namespace = input.namespace === undefined || input.namespace === null ? null : validateNamespaceName(input.namespace);
    const scopes = validateScopes(input.scopes);
    const expiresAt = parseExpiry(input.expires_at, input.expires_in_days);
    const key = `mcpw_${randomHex(32)}`;
    const row = await this.store.createKey({ accountId, name, prefix: apiKeyPrefix(key), keyHash: await hashSecret(key), namespace, scopes, expiresAt });
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
  ): Promise<{ principal: KeyPrincipal; addressed: NamespaceRef | null | undefined; session: McpSessionRef | null | undefined } | undefined> {
    if (!isApiKeyShape(raw)) return undefined;
    const row = await this.store.findKeyForRequest(apiKeyPrefix(raw), what);
    if (!row || row.revoked_at) return undefined;
    if (row.expires_at && new Date(row.expires_at).getTime() <= Date.now()) return undefined;
    const fingerprint = sha256Hex(raw);
    if (this.verifiedKeys.get(fingerprint) !== row.key_hash) {
      if (!(await verifySecret(raw, row.key_hash))) return undefined;
      if (this.verifiedKeys.size > 10_000) this.verifiedKeys.clear();
      this.verifiedKeys.set(fingerprint, row.key_hash);
    }
    return {
      principal: { accountId: row.account_id, keyId: row.id, tier: row.tier, namespace: row.namespace, scopes: row.scopes as Scope[] },
      addressed: row.addressed,
      session: row.session,
    };
  }
}

function parseExpiry(expiresAt: unknown, expiresInDays: unknown): Date | null {
  if (expiresAt !== undefined && expiresAt !== null) {
    const date = typeof expiresAt === 'string' ? new Date(expiresAt) : new Date(NaN);
    if (Number.isNaN(date.getTime())) throw invalid('expires_at must be an ISO 8601 date-time', { field: 'expires_at' });
    if (date.getTime() <= Date.now()) throw invalid('expires_at must be in the future', { field: 'expires_at' });
    return date;
  }
  if (expiresInDays !== undefined && expiresInDays !== null) {
    if (typeof expiresInDays !== 'number' || !Number.isFinite(expiresInDays) || expiresInDays <= 0 || expiresInDays > 3650) {
      throw invalid('expires_in_days must be a number between 0 and 3650', { field: 'expires_in_days' });
    }
    return new Date(Date.now() + expiresInDays * DAY_MS);
  }
  return null;
}
