import { DEFAULT_TIERS, type TierLimits } from '../core/tiers.js';

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
    tiers: DEFAULT_TIERS,
  };
}

export function parsePort(value: string): number {
  const port = Number(value);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`invalid port ${JSON.stringify(value)}`);
  return port;
}
