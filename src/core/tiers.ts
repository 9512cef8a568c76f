/**
 * Subscription tiers: the spec's tables, kept in exactly one place.
 * `null` means unlimited (a real no-limit, never a negative number compared with >=).
 */
export interface TierLimits {
  /** Executions per calendar month (UTC); null = unlimited. */
  monthlyExecutions: number | null;
  executionsPerMinute: number | null;
  concurrency: number | null;
  /** Sandbox wall-clock timeout in seconds. */
  timeoutSeconds: number;
  /** Sandbox memory in MB. */
  memoryMb: number;
  /** Agent slots; null = unlimited. */
  agents: number | null;
  /** Largest serialised result a run may return, in bytes. */
  maxResultBytes: number;
}

export type TierName = string;

const MB = 1024 * 1024;

export const DEFAULT_TIERS: Readonly<Record<string, TierLimits>> = Object.freeze({
  pro_trial: { monthlyExecutions: 125_000, executionsPerMinute: 100, concurrency: 15, timeoutSeconds: 90, memoryMb: 512, agents: 5, maxResultBytes: 1 * MB },
  pro: { monthlyExecutions: 250_000, executionsPerMinute: 100, concurrency: 15, timeoutSeconds: 90, memoryMb: 512, agents: 5, maxResultBytes: 1 * MB },
  enterprise: { monthlyExecutions: 1_000_000, executionsPerMinute: 300, concurrency: 50, timeoutSeconds: 300, memoryMb: 2048, agents: 20, maxResultBytes: 5 * MB },
  dedicated: { monthlyExecutions: null, executionsPerMinute: 500, concurrency: 100, timeoutSeconds: 300, memoryMb: 2048, agents: null, maxResultBytes: 10 * MB },
});

export const DEFAULT_TIER: TierName = 'pro_trial';

/** Length of the trial in days, as the guide promises. */
export const TRIAL_DAYS = 14;

export function tierNames(tiers: Readonly<Record<string, TierLimits>> = DEFAULT_TIERS): string[] {
  return Object.keys(tiers);
}

export function isKnownTier(name: string, tiers: Readonly<Record<string, TierLimits>> = DEFAULT_TIERS): boolean {
  return Object.prototype.hasOwnProperty.call(tiers, name);
}

export function limitsFor(name: string, tiers: Readonly<Record<string, TierLimits>> = DEFAULT_TIERS): TierLimits {
  const limits = isKnownTier(name, tiers) ? tiers[name] : undefined;
  if (!limits) throw new Error(`unknown tier '${name}'`);
  return limits;
}
