/**
 * The database's clock as this node reads it. Expiry that is computed or compared in JavaScript
 * (API keys, login and MCP sessions, OAuth requests, codes and tokens) uses it, so that nodes whose
 * own clocks disagree agree on what has expired: a node an hour behind must not accept a key that
 * expired half an hour ago. Leases and metering compare on the database itself (migration 30).
 * The offset is measured by each instance-lease statement (services/instance-lease.ts): a cache
 * of the database's `now()`, 0 until the first one.
 */
let offsetMs = 0;

/** A round trip slower than this says too little about when the database read its clock. */
const TRUSTED_ROUND_TRIP_MS = 1000;

/** Milliseconds since the epoch on the database's clock. */
export function databaseNow(): number {
  return Date.now() + offsetMs;
}

/** The database's clock as a Date. */
export function databaseDate(offset = 0): Date {
  return new Date(databaseNow() + offset);
}

/**
 * A statement sent at `sentAt` and answered at `answeredAt` (this node's clock) read `databaseMs` as
 * now(). False where the reading says too little to be taken (the offset is then as it was).
 */
export function observeDatabaseClock(databaseMs: number, sentAt: number, answeredAt: number): boolean {
  if (!Number.isFinite(databaseMs) || answeredAt - sentAt > TRUSTED_ROUND_TRIP_MS) return false;
  offsetMs = databaseMs - (sentAt + answeredAt) / 2;
  return true;
}

/** The current offset (database minus this node), for logs and tests. */
export function databaseClockOffsetMs(): number {
  return offsetMs;
}
