/**
 * Webhook signatures (issue 15): the sender signs `timestamp + "." + raw body` with HMAC-SHA256 under
 * the webhook's secret and sends `X-MCPWorks-Timestamp: <unix seconds>` and
 * `X-MCPWorks-Signature: sha256=<hex>`. Pure: the caller passes the clock and the secret.
 * (The hosted original hashed the body without the secret, which anyone can forge.)
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

export const SIGNATURE_HEADER = 'x-mcpworks-signature';
export const TIMESTAMP_HEADER = 'x-mcpworks-timestamp';
/** How far a timestamp may be from the server's clock, either way. */
export const SIGNATURE_WINDOW_SECONDS = 300;

/** Why a delivery's signature is refused; each is a 401 with its own message. */
export type SignatureRefusal =
  'missing_signature' | 'missing_timestamp' | 'malformed_signature' | 'malformed_timestamp' | 'stale' | 'mismatch';

export type SignatureCheck = { ok: true; timestamp: number; signature: string } | { ok: false; reason: SignatureRefusal; message: string };

/** The hex HMAC-SHA256 of `timestamp.body` under `secret`. */
export function signatureHex(secret: string | Buffer, timestamp: string | number, body: Uint8Array): string {
  return createHmac('sha256', secret).update(`${timestamp}.`, 'utf8').update(body).digest('hex');
}

/** The header value a sender puts in X-MCPWorks-Signature. */
export function signatureHeader(secret: string | Buffer, timestamp: string | number, body: Uint8Array): string {
  return `sha256=${signatureHex(secret, timestamp, body)}`;
}

const refuse = (reason: SignatureRefusal, message: string): SignatureCheck => ({ ok: false, reason, message });

/**
 * Checks a delivery: both headers present and well formed, the timestamp within the window of `nowSeconds`
 * (both ways), and the signature equal, in constant time, to the HMAC of the timestamp text as sent
 * and the raw body. The answer's `signature` (lowercase hex) is what replay protection remembers.
 */
export function verifySignature(input: {
  secret: string | Buffer;
  body: Uint8Array;
  signature: string | undefined;
  timestamp: string | undefined;
  nowSeconds: number;
  windowSeconds?: number;
}): SignatureCheck {
  const window = input.windowSeconds ?? SIGNATURE_WINDOW_SECONDS;
  if (input.signature === undefined || input.signature.trim() === '')
    return refuse(
      'missing_signature',
      'this webhook has a secret: send X-MCPWorks-Signature: sha256=<hex HMAC-SHA256 of "timestamp.body">',
    );
  if (input.timestamp === undefined || input.timestamp.trim() === '')
    return refuse(
      'missing_timestamp',
      'this webhook has a secret: send X-MCPWorks-Timestamp: <unix seconds> (it is part of the signed text)',
    );
  const stamp = input.timestamp.trim();
  // Decimal seconds only: "1e9", "0x10" or milliseconds would sign one text and mean another time.
  if (!/^[0-9]{1,12}$/.test(stamp)) return refuse('malformed_timestamp', 'X-MCPWorks-Timestamp must be unix time in whole seconds');
  const match = /^sha256=([0-9a-fA-F]{64})$/.exec(input.signature.trim());
  if (!match) return refuse('malformed_signature', 'X-MCPWorks-Signature must be sha256= followed by 64 hex digits');
  const timestamp = Number(stamp);
  if (Math.abs(input.nowSeconds - timestamp) > window)
    return refuse(
      'stale',
      `X-MCPWorks-Timestamp is more than ${window} seconds from the server's time; sign the delivery again with the current time`,
    );
  const given = Buffer.from(match[1]!.toLowerCase(), 'hex');
  const expected = Buffer.from(signatureHex(input.secret, stamp, input.body), 'hex');
  // Both are 32 bytes (the pattern above), so timingSafeEqual compares without throwing.
  if (given.length !== expected.length || !timingSafeEqual(given, expected))
    return refuse('mismatch', 'X-MCPWorks-Signature does not match: HMAC-SHA256 of "timestamp.body" under the webhook secret');
  return { ok: true, timestamp, signature: match[1]!.toLowerCase() };
}
