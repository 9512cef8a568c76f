import { readFileSync } from 'node:fs';
import { PlatformError } from '../core/errors.js';

/** Host uids handed to sandboxes (MCPWORKS_SANDBOX_UIDS): `first` and the `count` after it. */
export interface UidRange {
  first: number;
  count: number;
}

export const DEFAULT_SANDBOX_UIDS: Readonly<UidRange> = Object.freeze({ first: 2_000_000_000, count: 65_536 });
/** Enough for a busy server's concurrent sandboxes and zygotes, each with a uid of its own. */
export const MIN_SANDBOX_UIDS = 64;
/** A range is set aside for this server alone; more than 2^24 uids is a typo, not a plan. */
export const MAX_SANDBOX_UIDS = 16_777_216;
/** Below this, uids belong to the system (Debian's SYS_UID_MAX is 999). */
const FIRST_ALLOWED = 1000;
/** 4294967294 is (uid_t)-2, the overflow uid of some systems; 4294967295 is (uid_t)-1, "no uid". */
const LAST_ALLOWED = 4_294_967_293;
const NOBODY = 65534;
/** (uint16_t)-1: the "no change" value of the old 16-bit uid calls; never handed out. */
const SIXTEEN_BIT_MINUS_ONE = 65535;

/** A bad MCPWORKS_SANDBOX_UIDS: config_invalid, with the variable's name leading the message. */
export class SandboxUidsError extends PlatformError {
  constructor(message: string) {
    super('config_invalid', `MCPWORKS_SANDBOX_UIDS: ${message}`);
    this.name = 'SandboxUidsError';
  }
}

/**
 * Parses and checks MCPWORKS_SANDBOX_UIDS (`FIRST-LAST`; unset: the default range). A sandbox's uid
 * must belong to nothing else on the host: per-user kernel limits (processes, inotify instances,
 * mqueue bytes, pending signals) and file ownership are per uid, so a range that took in root,
 * nobody, the npm user or any account of the host would share them with it. `passwd` is the text
 * of /etc/passwd; `npmUid` the uid npm installs run as.
 */
export function parseSandboxUids(value: string | undefined, host: { passwd: string; npmUid: number }): UidRange {
  let range: UidRange;
  if (value === undefined || value.trim() === '') {
    range = { ...DEFAULT_SANDBOX_UIDS };
  } else {
    const match = /^(\d{1,10})-(\d{1,10})$/.exec(value.trim());
    if (!match) throw new SandboxUidsError(`must be FIRST-LAST, two uids joined by "-", not ${JSON.stringify(value.slice(0, 64))}`);
    const first = Number(match[1]);
    const last = Number(match[2]);
    if (last < first) throw new SandboxUidsError(`the last uid (${last}) is below the first (${first})`);
    range = { first, count: last - first + 1 };
  }
  const last = range.first + range.count - 1;
  const name = `${range.first}-${last}`;
  const includes = (uid: number) => uid >= range.first && uid <= last;
  if (includes(0)) throw new SandboxUidsError(`${name} includes uid 0 (root)`);
  if (range.first < FIRST_ALLOWED) throw new SandboxUidsError(`${name} starts below ${FIRST_ALLOWED}, among the system's uids`);
  if (last > LAST_ALLOWED) throw new SandboxUidsError(`${name} ends above ${LAST_ALLOWED} (4294967294 and 4294967295 are reserved)`);
  if (range.count < MIN_SANDBOX_UIDS)
    throw new SandboxUidsError(`${name} holds ${range.count} uids; at least ${MIN_SANDBOX_UIDS} are needed`);
  if (range.count > MAX_SANDBOX_UIDS)
    throw new SandboxUidsError(`${name} holds ${range.count} uids; at most ${MAX_SANDBOX_UIDS} are allowed`);
  if (includes(NOBODY)) throw new SandboxUidsError(`${name} includes uid ${NOBODY} (nobody)`);
  if (includes(SIXTEEN_BIT_MINUS_ONE)) throw new SandboxUidsError(`${name} includes uid ${SIXTEEN_BIT_MINUS_ONE}, which is (uint16_t)-1`);
  if (includes(host.npmUid))
    throw new SandboxUidsError(`${name} includes uid ${host.npmUid}, which npm installs run as (MCPWORKS_NPM_USER)`);
  for (const line of host.passwd.split('\n')) {
    const fields = line.split(':');
    if (fields.length < 3 || line.startsWith('#')) continue;
    const uid = Number(fields[2]);
    if (fields[2] !== '' && Number.isInteger(uid) && includes(uid)) {
      throw new SandboxUidsError(
        `${name} includes uid ${uid} of the host's user ${JSON.stringify(fields[0])} (/etc/passwd); choose a range no user has`,
      );
    }
  }
  return range;
}

/** The host's /etc/passwd (empty when it cannot be read: a minimal container may have none). */
export function hostPasswd(path = '/etc/passwd'): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}
