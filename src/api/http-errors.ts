import type { Context } from 'hono';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import { DomainError, isDomainError, type DomainErrorType } from '../core/errors.js';
import { unstorableMessage, unstorableReason } from '../core/storable-text.js';
import type { Logger } from '../core/logger.js';

const STATUS: Record<DomainErrorType, ContentfulStatusCode> = {
  validation_error: 400,
  invalid_schema: 400,
  unknown_package: 400,
  code_too_large: 413,
  dependency_error: 422,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  conflict: 409,
  locked: 423,
  quota_exceeded: 429,
  limit_exceeded: 429,
  rate_limited: 429,
  // The database is unreachable (503) or the disk below its reserve (507): retry after Retry-After.
  unavailable: 503,
  storage_full: 507,
  internal_error: 500,
};

export function errorResponse(c: Context, error: unknown, logger: Logger): Response {
  if (isDomainError(error)) {
    const retryAfter = error.details?.retry_after;
    if (typeof retryAfter === 'number') c.header('Retry-After', String(retryAfter));
    return c.json(error.toJSON(), STATUS[error.type]);
  }
  logger.error({ err: error, path: c.req.path }, 'request failed unexpectedly');
  return c.json(new DomainError('internal_error', 'internal error; the operator can find details in the server log').toJSON(), 500);
}

/** Reads a JSON object body or throws a validation error (never a parser stack trace). */
export async function jsonBody(c: Context): Promise<Record<string, unknown>> {
  let body: unknown;
  try {
    body = await c.req.json();
  } catch {
    throw new DomainError('validation_error', 'the request body must be a JSON object');
  }
  if (body === null || typeof body !== 'object' || Array.isArray(body))
    throw new DomainError('validation_error', 'the request body must be a JSON object');
  // What the database cannot store is refused here, for every JSON route, as the MCP tools refuse it.
  for (const [field, value] of Object.entries(body)) {
    const unstorable = unstorableReason(field) ?? unstorableReason(value);
    if (unstorable) throw new DomainError('validation_error', `${field}: ${unstorableMessage(unstorable)}`, { field });
  }
  return body as Record<string, unknown>;
}
