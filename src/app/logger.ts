import { pino, type Logger as PinoLogger } from 'pino';

export type Logger = PinoLogger;

/** Structured JSON logs on stdout; never given secrets (keys, passwords, env values). */
export function createLogger(level = 'info'): Logger {
  return pino({
    level,
    base: { service: 'mcpworks' },
    redact: { paths: ['req.headers.authorization', 'req.headers.cookie', 'req.headers["x-mcpworks-env"]'], remove: true },
    // Only what identifies an error: database errors carry their query's parameters, which must not reach logs.
    serializers: {
      err: (error: unknown) => {
        if (!(error instanceof Error)) return { message: String(error) };
        const code = (error as { code?: unknown }).code;
        return { type: error.name, message: error.message, ...(typeof code === 'string' ? { code } : {}), stack: error.stack };
      },
    },
  });
}
