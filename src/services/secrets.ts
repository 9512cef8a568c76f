import { createHash, createHmac, randomBytes, scrypt as scryptCallback, timingSafeEqual } from 'node:crypto';
import { promisify } from 'node:util';
import { DomainError } from '../core/errors.js';

const scrypt = promisify(scryptCallback) as (password: string, salt: Buffer, keylen: number, options: object) => Promise<Buffer>;

// scrypt N=2^15, r=8, p=1 (OWASP's minimum for scrypt), 32 MiB per hash.
const SCRYPT = { N: 32768, r: 8, p: 1, maxmem: 64 * 1024 * 1024 };
const KEY_LENGTH = 32;

export class KdfBusyError extends DomainError {
  constructor() {
    super('rate_limited', 'too many sign-in attempts at once; retry in a few seconds', { retry_after: 1 });
  }
}

/** A few scrypt runs at a time (each takes 32 MiB and a libuv thread), a bounded queue, then "busy". */
class KdfSlots {
  private running = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(
    private readonly concurrency: number,
    private readonly queueLimit: number,
  ) {}

  async run<T>(work: () => Promise<T>): Promise<T> {
    if (this.running >= this.concurrency) {
      if (this.waiting.length >= this.queueLimit) throw new KdfBusyError();
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    } else {
      this.running++;
    }
    try {
      return await work();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.running--;
    }
  }
}

// Passwords only (register, login). Callers are throttled per client and per account before this.
const passwordSlots = new KdfSlots(4, 64);
// API keys still holding a scrypt hash from before migration 7, each checked once and rewritten:
// their own slots, so sign-in load can never delay a key and stale keys never delay a sign-in.
const legacyKeySlots = new KdfSlots(2, 32);

/** `scrypt$N$r$p$salt$hash` (base64url), self-describing so parameters can rise later. */
export async function hashSecret(secret: string): Promise<string> {
  const salt = randomBytes(16);
  const hash = await passwordSlots.run(() => scrypt(secret, salt, KEY_LENGTH, SCRYPT));
  return ['scrypt', SCRYPT.N, SCRYPT.r, SCRYPT.p, salt.toString('base64url'), hash.toString('base64url')].join('$');
}

export function verifySecret(secret: string, stored: string): Promise<boolean> {
  return verifyScrypt(secret, stored, passwordSlots);
}

/** An API key hashed the pre-migration-7 way (scrypt): checked in its own slots. */
export function verifyLegacyKey(key: string, stored: string): Promise<boolean> {
  return verifyScrypt(key, stored, legacyKeySlots);
}

async function verifyScrypt(secret: string, stored: string, slots: KdfSlots): Promise<boolean> {
  const [scheme, n, r, p, salt, hash] = stored.split('$');
  if (scheme !== 'scrypt' || !n || !r || !p || !salt || !hash) return false;
  const expected = Buffer.from(hash, 'base64url');
  const actual = await slots.run(() =>
    scrypt(secret, Buffer.from(salt, 'base64url'), expected.length, {
      N: Number(n),
      r: Number(r),
      p: Number(p),
      maxmem: SCRYPT.maxmem,
    }),
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
