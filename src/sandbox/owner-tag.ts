/**
 * Names of temporary directories (staging dirs of the package and npm caches) that say which
 * process made them: `h<host>p<pid>`. A crashed server's leftovers are then recognised at once by
 * the next process on the same host (its pid is gone), not only after a grace period; a cache
 * shared by several hosts keeps the others' for their grace.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { hostname } from 'node:os';

let host: string | undefined;

/** Read at the first use, not at import (no sandbox module probes the host when imported), then kept. */
function hostTag(): string {
  if (host !== undefined) return host;
  let boot = '';
  try {
    boot = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    // no procfs: leftovers then wait for their grace period
  }
  host = createHash('sha256').update(`${hostname()}/${boot}`).digest('hex').slice(0, 8);
  return host;
}

const TAGGED = /^\.staging-h([0-9a-f]{8})p(\d+)-/;

/** This process's tag, for `.staging-${ownerTag()}-…` names. */
export function ownerTag(): string {
  return `h${hostTag()}p${process.pid}`;
}

/** True for a tagged staging name made on this host by a process that has ended. */
export function madeByDeadProcess(name: string): boolean {
  const match = TAGGED.exec(name);
  if (!match || match[1] !== hostTag()) return false;
  return Number(match[2]) !== process.pid && !existsSync(`/proc/${match[2]}`);
}
