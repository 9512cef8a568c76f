import { createHash, randomBytes, scrypt as scryptCallback, timingSafeEqual } from 'node:crypto';
import { promisify } from 'node:util';
import { DomainError } from '../core/errors.js';

const scrypt = promisify(scryptCallback) as (password: string, salt: Buffer, keylen: number, options: object) => Promise<Buffer>;

// scrypt N=2^15, r=8, p=1 (OWASP's minimum for scrypt), 32 MiB per hash.
const SCRYPT = { N: 32768, r: 8, p: 1, maxmem: 64 * 1024 * 1024 };
const KEY_LENGTH = 32;

// Each scrypt takes 32 MiB and a libuv thread: a few at a time, a bounded queue, then "busy".
const KDF_CONCURRENCY = 4;
const KDF_QUEUE_LIMIT = 64;
let kdfRunning = 0;
const kdfWaiting: Array<() => void> = [];

export class KdfBusyError extends DomainError {
  constructor() {
    super('rate_limited', 'too many sign-in attempts at once; retry in a few seconds');
  }
}

async function withKdfSlot<T>(work: () => Promise<T>): Promise<T> {
  if (kdfRunning >= KDF_CONCURRENCY) {
    if (kdfWaiting.length >= KDF_QUEUE_LIMIT) throw new KdfBusyError();
    await new Promise<void>((resolve) => kdfWaiting.push(resolve));
  } else {
    kdfRunning++;
  }
  try {
    return await work();
  } finally {
    const next = kdfWaiting.shift();
    if (next) next();
    else kdfRunning--;
  }
}

/** `scrypt$N$r$p$salt$hash` (base64url), self-describing so parameters can rise later. */
export async function hashSecret(secret: string): Promise<string> {
  const salt = randomBytes(16);
  const hash = await withKdfSlot(() => scrypt(secret, salt, KEY_LENGTH, SCRYPT));
  return ['scrypt', SCRYPT.N, SCRYPT.r, SCRYPT.p, salt.toString('base64url'), hash.toString('base64url')].join('$');
}

export async function verifySecret(secret: string, stored: string): Promise<boolean> {
  const [scheme, n, r, p, salt, hash] = stored.split('$');
  if (scheme !== 'scrypt' || !n || !r || !p || !salt || !hash) return false;
  const expected = Buffer.from(hash, 'base64url');
  const actual = await withKdfSlot(() =>
    scrypt(secret, Buffer.from(salt, 'base64url'), expected.length, {
      N: Number(n),
      r: Number(r),
      p: Number(p),
      maxmem: SCRYPT.maxmem,
    }),
  );
  return actual.length === expected.length && timingSafeEqual(actual, expected);
}

export function sha256Hex(value: string): string {
  return createHash('sha256').update(value).digest('hex');
}

export function randomHex(bytes: number): string {
  return randomBytes(bytes).toString('hex');
}
