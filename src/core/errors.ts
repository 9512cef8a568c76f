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

export const notFound = (what: string, name: string): DomainError =>
  new DomainError('not_found', `${what} '${name}' not found`);

export const invalid = (message: string, details?: Record<string, unknown>): DomainError =>
  new DomainError('validation_error', message, details);

export function isDomainError(error: unknown): error is DomainError {
  return error instanceof DomainError;
}
