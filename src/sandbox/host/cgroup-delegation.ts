/**
 * cgroup v2's "no internal processes" rule, followed: a group that holds processes cannot hand its
 * controllers down to child groups. A server started in a leaf group (a systemd service's own
 * group, whose cgroup.subtree_control is empty) therefore first moves every process of that group
 * into a leaf of its own, `<group>/mcpworks-server`, and then enables memory and pids (and cpu,
 * where the group has it) in `<group>`'s subtree_control, so that the sandbox's groups are made
 * beside the server, never above or below it. Root only, and only where the group has those
 * controllers to give (a systemd unit with Delegate=yes, or any group root may write).
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

/** The leaf the server's group's processes move into (and where a process started there later finds itself). */
export const SERVER_LEAF = 'mcpworks-server';
/** Rounds of "move what is there, try to enable": a process may fork between a read and a write. */
const CLAIM_ROUNDS = 20;

function words(file: string): string[] {
  try {
    return readFileSync(file, 'utf8').split(/\s+/).filter(Boolean);
  } catch {
    return [];
  }
}

/** The controllers `dir` hands down to its children (cgroup.subtree_control). */
export function handedDown(dir: string): string[] {
  return words(join(dir, 'cgroup.subtree_control'));
}

/** Moves every process of `from` into `to`; one that exits meanwhile is skipped. */
function moveAll(from: string, to: string): void {
  for (const pid of words(join(from, 'cgroup.procs'))) {
    try {
      writeFileSync(join(to, 'cgroup.procs'), pid);
    } catch {
      // exited meanwhile (ESRCH), or a kernel thread of the root group: the write below says
    }
  }
}

/**
 * The group under which this process's sandbox groups are made on the unified hierarchy `mount`,
 * given this process's group `own` (its path in /proc/self/cgroup), claimed as above if need be;
 * null where memory and pids cannot be handed down there.
 */
export function claimV2Subtree(mount: string, own: string): string | null {
  const ownDir = join(mount, own);
  // Moved into the leaf already (an earlier start, or another process of the same group did it).
  const group = basename(ownDir) === SERVER_LEAF ? dirname(ownDir) : ownDir;
  const available = words(join(group, 'cgroup.controllers'));
  const enableCpu = () => {
    if (!available.includes('cpu') || handedDown(group).includes('cpu')) return;
    try {
      writeFileSync(join(group, 'cgroup.subtree_control'), '+cpu');
    } catch {
      // a realtime thread in the group, say: the runs keep the kernel's default CPU weighting
    }
  };
  const handed = handedDown(group);
  if (handed.includes('memory') && handed.includes('pids')) {
    enableCpu();
    return group;
  }
  if (!available.includes('memory') || !available.includes('pids')) return null;
  const leaf = join(group, SERVER_LEAF);
  for (let round = 0; round < CLAIM_ROUNDS; round++) {
    try {
      writeFileSync(join(group, 'cgroup.subtree_control'), '+memory +pids');
      enableCpu();
      return group;
    } catch (error) {
      // EBUSY: processes in the group (the rule above); anything else (EACCES, EROFS): not ours.
      if ((error as NodeJS.ErrnoException).code !== 'EBUSY') return null;
    }
    try {
      mkdirSync(leaf, { recursive: true });
    } catch {
      return null;
    }
    moveAll(group, leaf);
  }
  return null;
}
