import { applyTierOverrides, type TierLimits } from '../core/tiers.js';

export interface ServerConfig {
  host: string;
  port: number;
  dataDir: string;
  databaseUrl?: string | undefined;
  baseHost?: string | undefined;
  tiers: Readonly<Record<string, TierLimits>>;
}

export function configFromEnv(env: NodeJS.ProcessEnv = process.env): ServerConfig {
  return {
    host: env.HOST || '127.0.0.1',
    port: env.PORT ? parsePort(env.PORT) : 8787,
    dataDir: env.MCPWORKS_DATA_DIR || './data',
    databaseUrl: env.DATABASE_URL || undefined,
    baseHost: env.MCPWORKS_BASE_HOST || undefined,
    // Validated here, at start: a malformed plan table stops the server with a clear message.
    tiers: applyTierOverrides(env.MCPWORKS_TIERS),
  };
}

export function parsePort(value: string): number {
  const port = Number(value);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`invalid port ${JSON.stringify(value)}`);
  return port;
}
