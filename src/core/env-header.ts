import { DomainError } from './errors.js';
import { ENV_NAME_PATTERN, reservedEnvReason } from './env-names.js';

export const ENV_HEADER = 'x-mcpworks-env';
export const MAX_ENV_HEADER_DECODED_BYTES = 32 * 1024;
export const MAX_ENV_KEYS = 64;
export const MAX_ENV_VALUE_BYTES = 8 * 1024;

function bad(message: string): DomainError {
  return new DomainError('validation_error', `invalid X-MCPWorks-Env header: ${message}`, { header: 'X-MCPWorks-Env' });
}

/**
 * Parses `X-MCPWorks-Env`: base64 (optionally prefixed `base64:`) of a JSON object of strings.
 * Error messages name keys and rules, never values: the values are secrets.
 */
export function parseEnvHeader(header: string | null | undefined): Record<string, string> {
  if (header === null || header === undefined) return {};
  let encoded = header.trim();
  if (encoded.startsWith('base64:')) encoded = encoded.slice('base64:'.length).trim();
  if (encoded === '') return {};
  // A client that expands `${VAR}` in its headers sends the text as it is when VAR is unset.
  const placeholder = /\$\{([A-Za-z_][A-Za-z0-9_:.-]{0,63})/.exec(encoded);
  if (placeholder) {
    const name = placeholder[1]!.replace(/:-.*$/, '');
    throw bad(
      `it holds the unexpanded placeholder \${${name}}: the client sent it as text because ${name} is not set where the client runs. ` +
        `Set it (export ${name}=$(printf '{"NAME":"value"}' | base64 -w0)) and restart the client, or write \${${name}:-} in the client's configuration so an unset variable sends an empty header`,
    );
  }
  if (!/^[A-Za-z0-9+/_-]+={0,2}$/.test(encoded)) throw bad('it must be base64 of a JSON object');
  const decoded = Buffer.from(encoded, encoded.includes('-') || encoded.includes('_') ? 'base64url' : 'base64');
  if (decoded.length > MAX_ENV_HEADER_DECODED_BYTES) throw bad(`decoded it is larger than ${MAX_ENV_HEADER_DECODED_BYTES} bytes`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(decoded.toString('utf8'));
  } catch {
    throw bad('it must be base64 of a JSON object');
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw bad('it must be base64 of a JSON object');
  const entries = Object.entries(parsed as Record<string, unknown>);
  if (entries.length > MAX_ENV_KEYS) throw bad(`at most ${MAX_ENV_KEYS} variables`);
  const env: Record<string, string> = {};
  for (const [name, value] of entries) {
    if (!ENV_NAME_PATTERN.test(name)) throw bad(`variable name ${JSON.stringify(name.slice(0, 130))} must match ^[A-Z][A-Z0-9_]{0,127}$`);
    const reserved = reservedEnvReason(name);
    if (reserved) throw bad(`variable ${name} is not allowed: ${reserved}`);
    if (typeof value !== 'string') throw bad(`the value of ${name} must be a string`);
    if (Buffer.byteLength(value, 'utf8') > MAX_ENV_VALUE_BYTES)
      throw bad(`the value of ${name} is longer than ${MAX_ENV_VALUE_BYTES} bytes`);
    if (value.includes('\u0000')) throw bad(`the value of ${name} contains a NUL character`);
    env[name] = value;
  }
  return env;
}

/** Encodes env values the way clients send them (for tests and docs). */
export function encodeEnvHeader(env: Record<string, string>): string {
  return Buffer.from(JSON.stringify(env), 'utf8').toString('base64');
}
