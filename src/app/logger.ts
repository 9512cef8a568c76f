import { pino, type DestinationStream, type Logger as PinoLogger } from 'pino';

export type Logger = PinoLogger;

/** Structured JSON logs on stdout (or `destination`); never given secrets (keys, passwords, env values). */
export function createLogger(level = 'info', destination?: DestinationStream): Logger {
  const options = {
    level,
    base: { service: 'mcpworks' },
    // `service` names this program (the base above): a line about a user's service says
    // `service_name`, so no line carries the key twice.
    formatters: {
      log: (object: Record<string, unknown>) => {
        if (!Object.hasOwn(object, 'service')) return object;
        const { service, ...rest } = object;
        return { service_name: service, ...rest };
      },
    },
    redact: { paths: ['req.headers.authorization', 'req.headers.cookie', 'req.headers["x-mcpworks-env"]'], remove: true },
    // Only what identifies an error: database errors carry their query's parameters, which must not reach logs.
    serializers: {
      err: (error: unknown) => {
        if (!(error instanceof Error)) return { message: String(error) };
        const code = (error as { code?: unknown }).code;
        return { type: error.name, message: error.message, ...(typeof code === 'string' ? { code } : {}), stack: error.stack };
      },
    },
  };
  return (destination ? pino(options, destination) : pino(options)) as Logger;
}
