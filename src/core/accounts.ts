import { invalid } from './errors.js';

/** API keys: `mcpw_` + 64 lowercase hex (the secret scanner recognises this shape). */
export const API_KEY_PATTERN = /^mcpw_[0-9a-f]{64}$/;
/** Characters of the key (after `mcpw_`) kept in clear as a lookup prefix. */
export const API_KEY_PREFIX_HEX = 12;

export const SCOPES = ['read', 'write', 'execute'] as const;
export type Scope = (typeof SCOPES)[number];

export function isApiKeyShape(value: string): boolean {
  return API_KEY_PATTERN.test(value);
}

/** OAuth tokens of a grant (sign-in from MCP clients): 256 random bits each, stored as SHA-256. */
export const OAUTH_ACCESS_TOKEN_PATTERN = /^mcpwat_[0-9a-f]{64}$/;
export const OAUTH_REFRESH_TOKEN_PATTERN = /^mcpwrt_[0-9a-f]{64}$/;

export function isAccessTokenShape(value: string): boolean {
  return OAUTH_ACCESS_TOKEN_PATTERN.test(value);
}

/** The non-secret part shown in listings and used to find the stored hash. */
export function apiKeyPrefix(key: string): string {
  return key.slice(0, 5 + API_KEY_PREFIX_HEX);
}

export function validateScopes(scopes: unknown): Scope[] {
  if (scopes === undefined) return [...SCOPES];
  if (!Array.isArray(scopes) || scopes.length === 0 || scopes.some((s) => !(SCOPES as readonly string[]).includes(s))) {
    throw invalid(`scopes must be a non-empty list of ${SCOPES.join(', ')}`, { field: 'scopes' });
  }
  return [...new Set(scopes as Scope[])];
}

const EMAIL_PATTERN = /^[^\s@]{1,64}@[^\s@.]+(\.[^\s@.]+)+$/;

export function validateEmail(email: unknown): string {
  if (typeof email !== 'string' || email.length > 254 || email.includes('\u0000') || !EMAIL_PATTERN.test(email.trim())) {
    throw invalid('email must be a valid address like user@example.com', { field: 'email' });
  }
  return email.trim().toLowerCase();
}

export const MIN_PASSWORD_LENGTH = 8;
export const MAX_PASSWORD_LENGTH = 1024;

export function validatePassword(password: unknown): string {
  if (typeof password !== 'string' || password.length < MIN_PASSWORD_LENGTH || password.length > MAX_PASSWORD_LENGTH) {
    throw invalid(`password must be ${MIN_PASSWORD_LENGTH}-${MAX_PASSWORD_LENGTH} characters`, { field: 'password' });
  }
  return password;
}

export function validateKeyName(name: unknown): string {
  if (name === undefined) return 'default';
  if (typeof name !== 'string' || name.trim() === '' || name.length > 100 || name.includes('\u0000')) {
    throw invalid('name must be 1-100 characters, without NUL', { field: 'name' });
  }
  return name.trim();
}

/**
 * Sign-in throttling, checked before the password KDF runs. Per account (by email, so an unknown
 * email is throttled exactly like a known one and 429s reveal nothing): a few free failures, then
 * a doubling wait. Per client address: a few requests in the KDF at once and a few waiting, then
 * a doubling wait after more failures. Failures older than the window are forgotten; a success
 * clears them.
 */
export const SIGN_IN_LIMITS = {
  accountFreeFailures: 5,
  clientFreeFailures: 10,
  firstBackoffSeconds: 5,
  maxBackoffSeconds: 900,
  failureWindowSeconds: 900,
  clientConcurrent: 2,
  clientQueued: 8,
} as const;

/** Seconds to wait after `failures` failures with `free` allowed: 0, then 5, 10, 20, … up to 15 minutes. */
export function backoffSeconds(failures: number, free: number): number {
  if (failures < free) return 0;
  return Math.min(SIGN_IN_LIMITS.firstBackoffSeconds * 2 ** (failures - free), SIGN_IN_LIMITS.maxBackoffSeconds);
}

/**
 * Who a sign-in comes from, for per-client throttling: an IPv4 address (also when IPv4-mapped), or
 * an IPv6 address's /64, since one host usually holds a whole /64.
 */
export function clientKeyOf(address: string | undefined): string {
  if (!address) return 'unknown';
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return mapped[1]!;
  if (!address.includes(':')) return address;
  const [head = '', tail = ''] = address.split('%')[0]!.toLowerCase().split('::');
  const left = head ? head.split(':') : [];
  const right = address.includes('::') ? (tail ? tail.split(':') : []) : [];
  const groups = address.includes('::') ? [...left, ...Array(Math.max(0, 8 - left.length - right.length)).fill('0'), ...right] : left;
  return `${groups
    .slice(0, 4)
    .map((g) => g.replace(/^0+(?=.)/, ''))
    .join(':')}::/64`;
}
