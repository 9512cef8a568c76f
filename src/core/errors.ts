/**
 * The one domain error. Its `type` is stable and rendered by both the MCP layer (tool error)
 * and the HTTP layer (status + JSON) in one shape (toJSON); `details` carries machine-readable extras.
 */
export type DomainErrorType =
  | 'validation_error'
  | 'not_found'
  | 'conflict'
  | 'locked'
  | 'unauthorized'
  | 'forbidden'
  | 'invalid_schema'
  | 'unknown_package'
  | 'code_too_large'
  | 'dependency_error'
  | 'quota_exceeded'
  | 'limit_exceeded'
  | 'rate_limited'
  | 'unavailable'
  | 'storage_full'
  | 'internal_error';

export class DomainError extends Error {
  readonly type: DomainErrorType;
  readonly details: Record<string, unknown> | undefined;

  constructor(type: DomainErrorType, message: string, details?: Record<string, unknown>) {
    super(message);
    this.name = 'DomainError';
    this.type = type;
    this.details = details;
  }

  /** The one error shape of every answer: `{"error": message, "error_type": T, …details}`; a detail never overwrites the two. */
  toJSON(): Record<string, unknown> {
    const { error: _message, error_type: _type, ...details } = this.details ?? {};
    return { error: this.message, error_type: this.type, ...details };
  }
}

export const notFound = (what: string, name: string): DomainError => new DomainError('not_found', `${what} '${name}' not found`);

export const invalid = (message: string, details?: Record<string, unknown>): DomainError =>
  new DomainError('validation_error', message, details);

export function isDomainError(error: unknown): error is DomainError {
  return error instanceof DomainError;
}

/**
 * What a local failure is about: the host or its settings keep the server (or a CLI command) from
 * doing its work. The operator reads these; clients never see one as it is (a route that meets one
 * answers with a DomainError of its own).
 */
export type PlatformErrorCode =
  /** A sandbox cannot be used on this host: a missing binary, a bad setting, a closed sandbox. */
  | 'sandbox_unavailable'
  /** npm could not install a TypeScript function's requirements; `data.reason` says why. */
  | 'dependency_install'
  /** The embedded database's data dir is held by another process. */
  | 'data_dir_locked'
  /** A configuration value (environment variable, secret file) is malformed; the message names it. */
  | 'config_invalid'
  /** A CLI command was called with bad arguments; the command prints its usage. */
  | 'cli_usage';

/**
 * The one local-failure error: a stable `code`, the operator's message, and machine-readable `data`.
 * Families with extra fields (DependencyInstallError, DataDirLockedError, …) are thin subclasses that
 * type `data` and keep their own `name`. Its own name stays `Error`, as the plain errors it replaces
 * had: `code` tells the families apart, and what operators read (`Error: MCPWORKS_TIERS …`) is unchanged.
 */
export class PlatformError extends Error {
  readonly code: PlatformErrorCode;
  readonly data: Readonly<Record<string, unknown>> | undefined;

  constructor(code: PlatformErrorCode, message: string, data?: Readonly<Record<string, unknown>>) {
    super(message);
    this.code = code;
    this.data = data;
  }
}

export const configInvalid = (message: string): PlatformError => new PlatformError('config_invalid', message);

export function isPlatformError(error: unknown, code?: PlatformErrorCode): error is PlatformError {
  return error instanceof PlatformError && (code === undefined || error.code === code);
}
