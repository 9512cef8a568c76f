/** How credentials are hashed and checked: passwords with scrypt (in worker processes), API keys with HMAC-SHA256 under the server secret. */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { defaultKdfConcurrency, KdfPool, type KdfPriority } from './password-kdf.js';

export { KdfBusyError } from './password-kdf.js';

// scrypt N=2^15, r=8, p=1 (OWASP's minimum for scrypt), 32 MiB per hash.
const SCRYPT = { N: 32768, r: 8, p: 1, maxmem: 64 * 1024 * 1024 };
const KEY_LENGTH = 32;

// Passwords only (register, login), in niced worker processes, fewer at a time than the cores.
// Callers are throttled per client and per account before this; registrations queue behind logins.
let passwordKdf = new KdfPool(defaultKdfConcurrency(), 64, 16);
// API keys still holding a scrypt hash from before migration 7, each checked once and rewritten:
// their own worker, so sign-in load can never delay a key and stale keys never delay a sign-in.
const legacyKeyKdf = new KdfPool(1, 32, 0);

/** Sets how many password hashes run at a time (MCPWORKS_KDF_CONCURRENCY); at server start. */
export function configurePasswordKdf(concurrency: number): void {
  if (concurrency === passwordKdf.concurrency) return;
  const old = passwordKdf;
  passwordKdf = new KdfPool(concurrency, 64, 16);
  void old.close();
}

/**
 * Stops the KDF worker processes (the last server of this process closing): none is left behind.
 * The pools stay usable; a later hash starts workers again.
 */
export async function stopPasswordKdfWorkers(): Promise<void> {
  await Promise.all([passwordKdf.close(), legacyKeyKdf.close()]);
}

/** The password KDF's queue (for tests and operators). */
export function passwordKdfStats(): { running: number; waiting: number; workers: number[]; concurrency: number } {
  return { ...passwordKdf.stats(), concurrency: passwordKdf.concurrency };
}

/** `scrypt$N$r$p$salt$hash` (base64url), self-describing so parameters can rise later. `signUp`: queues behind sign-ins. */
export async function hashSecret(secret: string, options: { signUp?: boolean } = {}): Promise<string> {
  const salt = randomBytes(16);
  const hash = await passwordKdf.scrypt(
    { secret, salt, keylen: KEY_LENGTH, ...SCRYPT },
    options.signUp ? { priority: 'sign-up', what: 'sign-ups' } : {},
  );
  return ['scrypt', SCRYPT.N, SCRYPT.r, SCRYPT.p, salt.toString('base64url'), hash.toString('base64url')].join('$');
}

/** `suspect`: the client failed lately; its check queues behind other sign-ins. */
export function verifySecret(secret: string, stored: string, options: { suspect?: boolean } = {}): Promise<boolean> {
  return verifyScrypt(secret, stored, passwordKdf, options.suspect ? 'suspect' : 'sign-in');
}

/** An API key hashed the pre-migration-7 way (scrypt): checked in its own worker. */
export function verifyLegacyKey(key: string, stored: string): Promise<boolean> {
  return verifyScrypt(key, stored, legacyKeyKdf);
}

async function verifyScrypt(secret: string, stored: string, kdf: KdfPool, priority: KdfPriority = 'sign-in'): Promise<boolean> {
  const [scheme, n, r, p, salt, hash] = stored.split('$');
  if (scheme !== 'scrypt' || !n || !r || !p || !salt || !hash) return false;
  const expected = Buffer.from(hash, 'base64url');
  const actual = await kdf.scrypt(
    {
      secret,
      salt: Buffer.from(salt, 'base64url'),
      keylen: expected.length,
      N: Number(n),
      r: Number(r),
      p: Number(p),
      maxmem: SCRYPT.maxmem,
    },
    { priority },
  );
  return actual.length === expected.length && timingSafeEqual(actual, expected);
}

const KEYED_SCHEME = 'hmac-sha256$';

/**
 * API keys are 256-bit random values, so a slow KDF adds nothing against guessing them: they are
 * stored as HMAC-SHA256 under the server secret (`hmac-sha256$<base64url>`), checked in microseconds.
 */
export class ApiKeyHasher {
  constructor(private readonly secret: Buffer) {
    if (secret.length < 32) throw new Error('the API-key secret must be at least 32 bytes');
  }

  hash(key: string): string {
    return KEYED_SCHEME + this.mac(key).toString('base64url');
  }

  /** Constant-time in the comparison; false for any other scheme or a malformed hash. */
  verify(key: string, stored: string): boolean {
    if (!ApiKeyHasher.isKeyed(stored)) return false;
    const expected = Buffer.from(stored.slice(KEYED_SCHEME.length), 'base64url');
    const actual = this.mac(key);
    return expected.length === actual.length && timingSafeEqual(actual, expected);
  }

  static isKeyed(stored: string): boolean {
    return stored.startsWith(KEYED_SCHEME);
  }

  private mac(key: string): Buffer {
    return createHmac('sha256', this.secret).update(key, 'utf8').digest();
  }
}

export function sha256Hex(value: string): string {
  return createHash('sha256').update(value).digest('hex');
}

export function randomHex(bytes: number): string {
  return randomBytes(bytes).toString('hex');
}
