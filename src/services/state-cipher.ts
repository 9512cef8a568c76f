import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';

/** Stored form: `v1:` + base64(iv ‖ tag ‖ ciphertext). The prefix leaves room for another key or scheme later. */
const PREFIX = 'v1:';
const IV_BYTES = 12;
const TAG_BYTES = 16;

export class StateCipherError extends Error {}

/**
 * AES-256-GCM for agent state at rest. The key is derived with HKDF-SHA256 from the server secret
 * (MCPWORKS_SECRET_KEY or the data dir's secret_key, see server-secret.ts) under its own label, so
 * it is never the key API keys are hashed under. Each value is bound to its agent, key and version
 * (the GCM associated data): a row copied onto another agent or key, or a key rolled back to an
 * older ciphertext by someone who can write the database, does not decrypt.
 */
export class StateCipher {
  private readonly key: Buffer;

  constructor(serverSecret: Buffer) {
    this.key = Buffer.from(hkdfSync('sha256', serverSecret, Buffer.from('mcpworks'), Buffer.from('agent-state/aes-256-gcm/v1'), 32));
  }

  seal(agentId: string, key: string, version: number, plaintext: string): string {
    return this.sealAad(associated(agentId, key, version), plaintext);
  }

  open(agentId: string, key: string, version: number, stored: string): string {
    return this.openAad(associated(agentId, key, version), stored);
  }

  /** seal() with the associated data given (BoundCipher's); state goes through seal(). */
  sealAad(aad: Buffer, plaintext: string): string {
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.key, iv);
    cipher.setAAD(aad);
    const body = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
    return PREFIX + Buffer.concat([iv, cipher.getAuthTag(), body]).toString('base64');
  }

  openAad(aad: Buffer, stored: string): string {
    if (!stored.startsWith(PREFIX)) throw new StateCipherError('agent state value in an unknown format');
    const raw = Buffer.from(stored.slice(PREFIX.length), 'base64');
    if (raw.length < IV_BYTES + TAG_BYTES) throw new StateCipherError('agent state value is truncated');
    const decipher = createDecipheriv('aes-256-gcm', this.key, raw.subarray(0, IV_BYTES));
    decipher.setAAD(aad);
    decipher.setAuthTag(raw.subarray(IV_BYTES, IV_BYTES + TAG_BYTES));
    try {
      return Buffer.concat([decipher.update(raw.subarray(IV_BYTES + TAG_BYTES)), decipher.final()]).toString('utf8');
    } catch {
      // Another server secret, or a tampered or rolled-back row: never the value, never the key.
      throw new StateCipherError('agent state value does not decrypt under this server secret');
    }
  }
}

/**
 * The same cipher for other secrets at rest that must stay usable (a webhook's HMAC key, a result
 * kept for an Idempotency-Key), bound to `context`: a label naming what it is, then the ids it belongs
 * to. The label keeps these from ever opening as agent state (and the other way round).
 */
export class BoundCipher {
  constructor(private readonly cipher: StateCipher) {}

  seal(context: readonly [string, ...string[]], plaintext: string): string {
    return this.cipher.sealAad(Buffer.from(JSON.stringify(['bound', ...context]), 'utf8'), plaintext);
  }

  open(context: readonly [string, ...string[]], stored: string): string {
    return this.cipher.openAad(Buffer.from(JSON.stringify(['bound', ...context]), 'utf8'), stored);
  }
}

/**
 * A secret of an agent's configuration (its AI API key, later attached servers' headers): the same
 * cipher, associated data `[agentId, purpose]` (two elements: never a state value's three), so a
 * sealed key copied onto another agent or into a state row does not decrypt.
 */
export function sealSecret(cipher: StateCipher, agentId: string, purpose: string, plaintext: string): string {
  return cipher.sealAad(Buffer.from(JSON.stringify([agentId, purpose]), 'utf8'), plaintext);
}

export function openSecret(cipher: StateCipher, agentId: string, purpose: string, stored: string): string {
  return cipher.openAad(Buffer.from(JSON.stringify([agentId, purpose]), 'utf8'), stored);
}

const associated = (agentId: string, key: string, version: number): Buffer => Buffer.from(JSON.stringify([agentId, key, version]), 'utf8');
