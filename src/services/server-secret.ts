import { closeSync, fsyncSync, linkSync, lstatSync, chmodSync, mkdirSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { PlatformError } from '../core/errors.js';

/** The file in the data dir that holds the API-key secret when MCPWORKS_SECRET_KEY is unset. */
export const SECRET_FILE = 'secret_key';
export const MIN_SECRET_LENGTH = 32;

/** The server secret is missing where it must be configured, too short, or its file is not a file: config_invalid. */
export class ServerSecretError extends PlatformError {
  constructor(message: string) {
    super('config_invalid', message);
  }
}

export interface ServerSecret {
  /** The HMAC key for API keys: the UTF-8 bytes of the configured value (or of the file's text). */
  secret: Buffer;
  source: 'env' | 'file';
  /** For the file: whether this call created it. */
  created: boolean;
  /** Something the operator should hear (never contains the secret). */
  warning?: string;
}

/**
 * The server secret API keys are hashed under. MCPWORKS_SECRET_KEY wins; otherwise a random one is
 * kept in `<data-dir>/secret_key` (0600, created once, atomically). With DATABASE_URL it must be
 * configured: several nodes share the key rows, so they must share the secret too, and a file per
 * node would silently split them.
 */
export function loadServerSecret(options: {
  secretKey?: string | undefined;
  databaseUrl?: string | undefined;
  dataDir: string;
}): ServerSecret {
  const file = path.join(options.dataDir, SECRET_FILE);
  if (options.secretKey !== undefined) {
    const value = validSecret(options.secretKey, 'MCPWORKS_SECRET_KEY');
    const stored = options.databaseUrl ? undefined : readIfPresent(file);
    const warning =
      stored !== undefined && stored.trim() !== value
        ? `MCPWORKS_SECRET_KEY differs from the secret in ${file}: API keys created under that file's secret no longer verify`
        : undefined;
    return { secret: Buffer.from(value, 'utf8'), source: 'env', created: false, ...(warning ? { warning } : {}) };
  }
  if (options.databaseUrl) {
    throw new ServerSecretError(
      'DATABASE_URL is set but MCPWORKS_SECRET_KEY is not: every node (and operator command) sharing that database must hash API keys ' +
        `under the same secret. Set MCPWORKS_SECRET_KEY to one value of at least ${MIN_SECRET_LENGTH} characters (e.g. \`openssl rand -hex 32\`) everywhere.`,
    );
  }
  mkdirSync(options.dataDir, { recursive: true, mode: 0o700 });
  let created = false;
  let text = readIfPresent(file);
  if (text === undefined) {
    created = createOnce(file, `${randomBytes(32).toString('hex')}\n`);
    text = readIfPresent(file) ?? '';
  }
  return { secret: Buffer.from(validSecret(text, file), 'utf8'), source: 'file', created };
}

function validSecret(raw: string, where: string): string {
  const value = raw.trim();
  if (value.length < MIN_SECRET_LENGTH) {
    throw new ServerSecretError(`the secret in ${where} must be at least ${MIN_SECRET_LENGTH} characters (e.g. \`openssl rand -hex 32\`)`);
  }
  return value;
}

/** The file's text, or undefined when it does not exist; refuses anything but a regular file. */
function readIfPresent(file: string): string | undefined {
  let stat;
  try {
    stat = lstatSync(file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
  if (!stat.isFile()) throw new ServerSecretError(`${file} must be a regular file holding the server secret`);
  if ((stat.mode & 0o077) !== 0) chmodSync(file, 0o600);
  return readFileSync(file, 'utf8');
}

/**
 * Writes a private temp file in full, then links it into place: the link fails if the file
 * appeared meanwhile, so the secret is never half-written, never replaced, and never readable by
 * others. True when this call's content won.
 */
function createOnce(file: string, content: string): boolean {
  const temp = `${file}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
  const fd = openSync(temp, 'wx', 0o600);
  try {
    writeSync(fd, content);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    linkSync(temp, file);
    // The name must survive a crash too: losing this file invalidates every API key.
    const dir = openSync(path.dirname(file), 'r');
    try {
      fsyncSync(dir);
    } finally {
      closeSync(dir);
    }
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw error;
  } finally {
    unlinkSync(temp);
  }
}
