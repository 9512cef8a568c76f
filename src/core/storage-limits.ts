/**
 * Per-account storage limits (tier table): what a catalog change or a new MCP session would use,
 * and the typed refusal when it goes past the plan. No I/O: the stores count, this decides.
 */
import { DomainError } from './errors.js';
import type { FunctionDefinition } from './functions.js';
import type { TierLimits } from './tiers.js';

export type StorageResource =
  'namespaces' | 'services' | 'functions' | 'versionsPerFunction' | 'storedBytes' | 'schemaBytesPerNamespace' | 'mcpSessions';

/** The names MCPWORKS_TIERS and error details use. */
const FIELD: Record<StorageResource, string> = {
  namespaces: 'namespaces',
  services: 'services',
  functions: 'functions',
  versionsPerFunction: 'versions_per_function',
  storedBytes: 'stored_bytes',
  schemaBytesPerNamespace: 'schema_bytes_per_namespace',
  mcpSessions: 'mcp_sessions',
};

const WHAT: Record<StorageResource, string> = {
  namespaces: 'namespaces per account',
  services: 'services per account',
  functions: 'functions per account',
  versionsPerFunction: 'versions per function',
  storedBytes: 'stored bytes (code, config and schemas of every version) per account',
  schemaBytesPerNamespace: 'schema bytes of the active versions per namespace',
  mcpSessions: 'live MCP sessions per account',
};

export interface LimitRefusal {
  resource: string;
  limit: number;
  usage: number;
  tier: string;
  message: string;
}

/** The refusal when `usage + adding` would pass the tier's limit; undefined when it fits (null = unlimited). */
export function storageRefusal(
  resource: StorageResource,
  limits: TierLimits,
  tier: string,
  usage: number,
  adding = 1,
): LimitRefusal | undefined {
  const limit = limits[resource];
  if (limit === null || usage + adding <= limit) return undefined;
  const hint = resource === 'versionsPerFunction' ? '; delete and re-create the function to start its history again' : '';
  return {
    resource: FIELD[resource],
    limit,
    usage,
    tier,
    message: `limit of ${WHAT[resource]} reached on plan '${tier}': ${usage}${adding > 1 ? ` + ${adding}` : ''} > ${limit}${hint}`,
  };
}

/** Throws the typed `limit_exceeded` error (nothing was changed) when the change does not fit. */
export function assertWithinLimit(resource: StorageResource, limits: TierLimits, tier: string, usage: number, adding = 1): void {
  const refusal = storageRefusal(resource, limits, tier, usage, adding);
  if (refusal) {
    const { message, ...details } = refusal;
    throw new DomainError('limit_exceeded', message, details);
  }
}

const jsonBytes = (value: unknown): number => Buffer.byteLength(JSON.stringify(value ?? null), 'utf8');

/** input_schema + output_schema as stored (JSON text), the bytes tools/list carries. */
export function schemaBytes(d: Pick<FunctionDefinition, 'inputSchema' | 'outputSchema'>): number {
  return jsonBytes(d.inputSchema) + jsonBytes(d.outputSchema);
}

/** What one version stores: code, config and schemas (the same sum migration 8 back-fills). */
export function storedBytes(d: Pick<FunctionDefinition, 'code' | 'config' | 'inputSchema' | 'outputSchema'>): number {
  return Buffer.byteLength(d.code, 'utf8') + jsonBytes(d.config) + schemaBytes(d);
}
