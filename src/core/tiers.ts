/**
 * Subscription tiers: the spec's tables, kept in exactly one place.
 * `null` means unlimited (a real no-limit, never a negative number compared with >=).
 */
import { MB } from './units.js';
import { configInvalid } from './errors.js';

export interface TierLimits {
  /** Executions per calendar month (UTC); null = unlimited. */
  monthlyExecutions: number | null;
  executionsPerMinute: number | null;
  concurrency: number | null;
  /** Sandbox wall-clock timeout in seconds. */
  timeoutSeconds: number;
  /** Sandbox memory in MB. */
  memoryMb: number;
  /** Agent slots (one per replica); null = unlimited. */
  agents: number | null;
  /** Bytes of state (JSON text of its values) one agent may keep; null = unlimited. */
  agentStateBytes: number | null;
  /** Shortest gap allowed between two consecutive fires of an agent's schedule, in seconds. */
  scheduleMinIntervalSeconds: number;
  /** Days an agent's ended trigger runs are kept (list_agent_runs); null = for ever. */
  agentRunRetentionDays: number | null;
  /** Orchestration limits of one AI run (issue 16): model turns, tokens, seconds, function calls (null = unlimited). */
  agentMaxIterations: number;
  agentMaxAiTokens: number;
  agentMaxExecutionSeconds: number;
  agentMaxFunctionsCalled: number | null;
  /** Largest serialised result a run may return, in bytes. */
  maxResultBytes: number;
  /** Storage, per account (null = unlimited): namespaces, services and functions in all its namespaces. */
  namespaces: number | null;
  services: number | null;
  functions: number | null;
  /** Versions one function may keep (every update or restore adds one). */
  versionsPerFunction: number | null;
  /** Bytes of code, config and schemas across every version of every function of the account. */
  storedBytes: number | null;
  /** input_schema + output_schema bytes of a namespace's active versions (what tools/list carries). */
  schemaBytesPerNamespace: number | null;
  /** Live 2025-era MCP sessions (ids not yet idle for MCP_SESSION_IDLE_MS). */
  mcpSessions: number | null;
  /** Largest body an agent's webhook accepts, in bytes. */
  webhookPayloadBytes: number;
  /** Deliveries one webhook accepts per minute (refused ones count too); null = unlimited. */
  webhookRequestsPerMinute: number | null;
}

export type TierName = string;

const STANDARD_AGENTS = {
  agentStateBytes: 100 * MB,
  scheduleMinIntervalSeconds: 30,
  agentRunRetentionDays: 30,
  webhookPayloadBytes: 1 * MB,
  webhookRequestsPerMinute: 60,
  agentMaxIterations: 10,
  agentMaxAiTokens: 200_000,
  agentMaxExecutionSeconds: 120,
  agentMaxFunctionsCalled: 10,
};
const STANDARD_STORAGE = {
  namespaces: 10,
  services: 100,
  functions: 500,
  versionsPerFunction: 200,
  storedBytes: 100 * MB,
  schemaBytesPerNamespace: 2 * MB,
  mcpSessions: 100,
};

export const DEFAULT_TIERS: Readonly<Record<string, TierLimits>> = Object.freeze({
  pro_trial: {
    monthlyExecutions: 125_000,
    executionsPerMinute: 100,
    concurrency: 15,
    timeoutSeconds: 90,
    memoryMb: 512,
    agents: 5,
    maxResultBytes: 1 * MB,
    ...STANDARD_STORAGE,
    ...STANDARD_AGENTS,
  },
  pro: {
    monthlyExecutions: 250_000,
    executionsPerMinute: 100,
    concurrency: 15,
    timeoutSeconds: 90,
    memoryMb: 512,
    agents: 5,
    maxResultBytes: 1 * MB,
    ...STANDARD_STORAGE,
    ...STANDARD_AGENTS,
  },
  enterprise: {
    monthlyExecutions: 1_000_000,
    executionsPerMinute: 300,
    concurrency: 50,
    timeoutSeconds: 300,
    memoryMb: 2048,
    agents: 20,
    maxResultBytes: 5 * MB,
    agentStateBytes: 1024 * MB,
    scheduleMinIntervalSeconds: 15,
    agentRunRetentionDays: 90,
    agentMaxIterations: 25,
    agentMaxAiTokens: 1_000_000,
    agentMaxExecutionSeconds: 300,
    agentMaxFunctionsCalled: 25,
    namespaces: 100,
    services: 1_000,
    functions: 5_000,
    versionsPerFunction: 1_000,
    storedBytes: 1024 * MB,
    schemaBytesPerNamespace: 8 * MB,
    mcpSessions: 1_000,
    webhookPayloadBytes: 5 * MB,
    webhookRequestsPerMinute: 300,
  },
  dedicated: {
    monthlyExecutions: null,
    executionsPerMinute: 500,
    concurrency: 100,
    timeoutSeconds: 300,
    memoryMb: 2048,
    agents: null,
    maxResultBytes: 10 * MB,
    agentStateBytes: null,
    scheduleMinIntervalSeconds: 15,
    agentRunRetentionDays: 365,
    agentMaxIterations: 50,
    agentMaxAiTokens: 2_000_000,
    agentMaxExecutionSeconds: 300,
    agentMaxFunctionsCalled: null,
    namespaces: null,
    services: null,
    functions: null,
    versionsPerFunction: 5_000,
    storedBytes: 10 * 1024 * MB,
    schemaBytesPerNamespace: 32 * MB,
    mcpSessions: 10_000,
    webhookPayloadBytes: 10 * MB,
    webhookRequestsPerMinute: 1_000,
  },
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
  if (!limits) throw new Error(`unknown tier ${JSON.stringify(name)}`);
  return limits;
}

const OVERRIDE_FIELDS = {
  monthly_executions: 'monthlyExecutions',
  executions_per_minute: 'executionsPerMinute',
  concurrency: 'concurrency',
  timeout_s: 'timeoutSeconds',
  memory_mb: 'memoryMb',
  agents: 'agents',
  agent_state_bytes: 'agentStateBytes',
  schedule_min_interval_s: 'scheduleMinIntervalSeconds',
  agent_run_retention_days: 'agentRunRetentionDays',
  agent_max_iterations: 'agentMaxIterations',
  agent_max_ai_tokens: 'agentMaxAiTokens',
  agent_max_execution_s: 'agentMaxExecutionSeconds',
  agent_max_functions_called: 'agentMaxFunctionsCalled',
  namespaces: 'namespaces',
  services: 'services',
  functions: 'functions',
  versions_per_function: 'versionsPerFunction',
  stored_bytes: 'storedBytes',
  schema_bytes_per_namespace: 'schemaBytesPerNamespace',
  mcp_sessions: 'mcpSessions',
  webhook_payload_bytes: 'webhookPayloadBytes',
  webhook_requests_per_minute: 'webhookRequestsPerMinute',
} as const satisfies Record<string, keyof TierLimits>;

// Fields where -1 means unlimited; the sandbox limits must stay finite.
const UNLIMITABLE = new Set([
  'monthly_executions',
  'executions_per_minute',
  'concurrency',
  'agents',
  'agent_state_bytes',
  'agent_run_retention_days',
  'agent_max_functions_called',
  'namespaces',
  'services',
  'functions',
  'versions_per_function',
  'stored_bytes',
  'schema_bytes_per_namespace',
  'mcp_sessions',
  'webhook_requests_per_minute',
]);

// Fields that must stay at least 1 (a sandbox needs time and memory; a webhook a body byte budget; 0
// iterations, tokens or seconds would make every agent run fail at once).
const AT_LEAST_ONE = new Set([
  'timeout_s',
  'memory_mb',
  'webhook_payload_bytes',
  'agent_max_iterations',
  'agent_max_ai_tokens',
  'agent_max_execution_s',
]);

/** Plans an operator adds get `pro`'s limits for every field they do not name. */
export const NEW_TIER_BASE: TierName = 'pro';

/**
 * Applies `MCPWORKS_TIERS` (JSON: tier name → any of the OVERRIDE_FIELDS; -1 = unlimited for the
 * counts and storage limits) over the spec's table.
 * Throws a config_invalid PlatformError with a clear message on anything malformed.
 */
export function applyTierOverrides(
  json: string | undefined,
  base: Readonly<Record<string, TierLimits>> = DEFAULT_TIERS,
): Readonly<Record<string, TierLimits>> {
  if (json === undefined || json.trim() === '') return base;
  let parsed: unknown;
  try {
    parsed = JSON.parse(json);
  } catch {
    throw configInvalid('MCPWORKS_TIERS must be a JSON object mapping tier names to limits');
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed))
    throw configInvalid('MCPWORKS_TIERS must be a JSON object mapping tier names to limits');
  const tiers: Record<string, TierLimits> = { ...base };
  for (const [name, fields] of Object.entries(parsed as Record<string, unknown>)) {
    if (!/^[a-z][a-z0-9_]{0,31}$/.test(name))
      throw configInvalid(`MCPWORKS_TIERS: tier name ${JSON.stringify(name)} must be 1-32 lowercase letters, digits or "_"`);
    if (fields === null || typeof fields !== 'object' || Array.isArray(fields))
      throw configInvalid(`MCPWORKS_TIERS: ${JSON.stringify(name)} must map to an object of limits`);
    const limits: TierLimits = { ...(base[name] ?? base[NEW_TIER_BASE] ?? DEFAULT_TIERS.pro!) };
    for (const [field, value] of Object.entries(fields as Record<string, unknown>)) {
      const key = (OVERRIDE_FIELDS as Record<string, keyof TierLimits>)[field];
      if (!key)
        throw configInvalid(
          `MCPWORKS_TIERS: ${JSON.stringify(`${name}.${field}`)} is not a limit; use ${Object.keys(OVERRIDE_FIELDS).join(', ')}`,
        );
      if (typeof value !== 'number' || !Number.isInteger(value))
        throw configInvalid(`MCPWORKS_TIERS: ${JSON.stringify(`${name}.${field}`)} must be an integer`);
      if (value === -1 && UNLIMITABLE.has(field)) {
        (limits as unknown as Record<string, number | null>)[key] = null;
      } else if (value < (AT_LEAST_ONE.has(field) ? 1 : 0)) {
        throw configInvalid(
          `MCPWORKS_TIERS: ${JSON.stringify(`${name}.${field}`)} must be ${UNLIMITABLE.has(field) ? '-1 (unlimited) or ' : ''}at least ${AT_LEAST_ONE.has(field) ? 1 : 0}`,
        );
      } else {
        (limits as unknown as Record<string, number>)[key] = value;
      }
    }
    tiers[name] = limits;
  }
  return Object.freeze(tiers);
}
