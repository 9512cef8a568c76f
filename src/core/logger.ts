/**
 * The logger every layer is handed (structured JSON logs; never given secrets). Only the type
 * lives here: the composition root (src/app/logger.ts) makes the one instance.
 */
export type { Logger } from 'pino';
