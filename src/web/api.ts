/// <reference lib="dom" />
/** The dashboard's one way to the server: same-origin JSON, the session cookie sent by the browser. */

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: string,
    readonly field: string | undefined,
    readonly retryAfter: number | undefined,
  ) {
    super(message);
  }
}

export async function api<T>(method: 'GET' | 'POST' | 'DELETE', path: string, body?: unknown): Promise<T> {
  // Every state change is sent as JSON (the server refuses a POST that is not: see same-origin.ts).
  const payload = body === undefined && method === 'POST' ? {} : body;
  const response = await fetch(path, {
    method,
    credentials: 'same-origin',
    headers: payload === undefined ? { accept: 'application/json' } : { accept: 'application/json', 'content-type': 'application/json' },
    ...(payload === undefined ? {} : { body: JSON.stringify(payload) }),
  });
  const text = await response.text();
  let parsed: any = undefined;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    parsed = undefined;
  }
  if (!response.ok) {
    const retry = Number(response.headers.get('retry-after') ?? parsed?.retry_after);
    throw new ApiError(
      response.status,
      typeof parsed?.error === 'string' ? parsed.error : `the server answered ${response.status}`,
      typeof parsed?.error_type === 'string' ? parsed.error_type : 'error',
      typeof parsed?.field === 'string' ? parsed.field : undefined,
      Number.isFinite(retry) && retry > 0 ? retry : undefined,
    );
  }
  return parsed as T;
}

/** The message a form shows for a failed request (throttled sign-ins name the wait). */
export function describeError(error: unknown): string {
  if (error instanceof ApiError) {
    if (error.type === 'rate_limited' && error.retryAfter !== undefined && !/retry/i.test(error.message)) {
      return `${error.message} (try again in ${error.retryAfter} s)`;
    }
    return error.message;
  }
  return 'the server could not be reached; try again';
}

export type { Account, CreatedKey, KeyListing, Namespace } from '../core/dashboard-types.js';
