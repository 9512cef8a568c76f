/**
 * Pure rules of agent replicas as processes: crash back-off, the worker's memory limit, how a scale
 * changes the rows (LIFO), and the replica statuses. No I/O: the supervisor (src/agents/replicas.ts)
 * and the store act on what these decide.
 */
import { invalid } from './errors.js';

/** Replica row statuses (agent_replicas.status). */
export const REPLICA_STATUSES = ['pending', 'running', 'stopping', 'draining', 'stopped', 'crashed'] as const;
export type ReplicaStatus = (typeof REPLICA_STATUSES)[number];

/**
 * pending: wanted, no process yet (or its node is starting one); running: its process is up;
 * crashed: its process ended unexpectedly and waits out its back-off; stopping: finishing its
 * current run, then 'stopped' (stop_agent); draining: finishing its current run, then removed
 * (scale-down, destroy_agent with `replica`); stopped: kept (name and restarts) but not running.
 */
export const LIVE_STATUSES: readonly ReplicaStatus[] = ['pending', 'running', 'crashed'];
export const ENDING_STATUSES: readonly ReplicaStatus[] = ['stopping', 'draining'];

/** First restart delay after a crash; each further crash in a row doubles it, up to the cap. */
export const BACKOFF_FIRST_MS = 1_000;
export const BACKOFF_MAX_MS = 60_000;
/** A process that stayed up this long ends its crash streak: its next crash restarts after BACKOFF_FIRST_MS again. */
export const BACKOFF_RESET_AFTER_MS = 60_000;

/** How long to wait before restarting a replica that has crashed `streak` times in a row (streak ≥ 1). */
export function restartDelayMs(streak: number): number {
  if (!Number.isInteger(streak) || streak < 1) return 0;
  // 2^6 = 64 s is past the cap already: no need to compute larger powers.
  return Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** Math.min(streak - 1, 6));
}

/** The crash streak after a process that was up `upMs` crashed (`previous`: the streak before it). */
export function nextStreak(previous: number, upMs: number): number {
  return upMs >= BACKOFF_RESET_AFTER_MS ? 1 : previous + 1;
}

/** The heap limit of a replica's worker process, in MB: the tier's memory, at least 64 MB (a Node process needs that much to start). */
export const REPLICA_MIN_HEAP_MB = 64;
export function replicaHeapMb(tierMemoryMb: number): number {
  return Math.max(REPLICA_MIN_HEAP_MB, Math.floor(tierMemoryMb));
}

/** Why a replica's process ended, as recorded in last_exit. */
export function exitReason(code: number | null, signal: string | null, outOfMemory = false): string {
  if (outOfMemory) return `out of memory (${signal ? `signal ${signal}` : `exit code ${code ?? 'unknown'}`})`;
  if (signal) return `killed by signal ${signal}`;
  return `exited with code ${code ?? 'unknown'}`;
}

/** Replica counts scale_agent accepts. */
export const MAX_REPLICAS_PER_AGENT = 1000;

export function validateReplicaCount(value: unknown, field = 'replicas'): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > MAX_REPLICAS_PER_AGENT)
    throw invalid(`${field} must be an integer from 0 to ${MAX_REPLICAS_PER_AGENT} (0 stops every replica and frees their slots)`, {
      field,
    });
  return value;
}

export interface ReplicaSlot {
  name: string;
  seq: number;
  status: string;
}

/**
 * What scaling to `desired` does to the agent's replicas that are not already being removed: how
 * many to add, and which to drain (the newest, highest seq first: LIFO keeps the oldest names).
 */
export function scalePlan(replicas: readonly ReplicaSlot[], desired: number): { add: number; remove: string[] } {
  const kept = replicas.filter((r) => r.status !== 'draining').sort((a, b) => a.seq - b.seq);
  if (kept.length <= desired) return { add: desired - kept.length, remove: [] };
  return {
    add: 0,
    remove: kept
      .slice(desired)
      .reverse()
      .map((r) => r.name),
  };
}
