import type { Context } from 'hono';
import { DomainError } from '../core/errors.js';

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/** The origins this server is reached at, as the request names it: its own Host, either scheme. */
function ownOrigins(c: Context): string[] {
  const host = c.req.header('host')?.trim().toLowerCase();
  return host ? [`http://${host}`, `https://${host}`] : [];
}

function isJson(contentType: string | undefined): boolean {
  const type = contentType?.split(';')[0]?.trim().toLowerCase();
  return type === 'application/json';
}

/**
 * Cross-site request forgery, same-site included (a page on localhost:<another port> is the same
 * site as the server on localhost): a state-changing account request, which a browser would send
 * with the session cookie, must come from the server's own origin (when the browser names one) and
 * a POST or a body must be JSON. A JSON POST is not a "simple" request, so a browser on another
 * origin must ask first (preflight), and this server grants no cross-origin request.
 */
export function csrfRejection(c: Context): Response | undefined {
  if (SAFE_METHODS.has(c.req.method.toUpperCase())) return undefined;
  const refuse = (message: string) => c.json(new DomainError('forbidden', message).toJSON(), 403);
  const origin = c.req.header('origin');
  if (origin !== undefined && !ownOrigins(c).includes(origin.trim().toLowerCase())) {
    return refuse(`requests from origin ${JSON.stringify(origin)} may not change this account: use the server's own origin`);
  }
  // Browsers that send Sec-Fetch-Site say whether the request comes from the same origin.
  const site = c.req.header('sec-fetch-site');
  if (site !== undefined && site !== 'same-origin' && site !== 'none') {
    return refuse(`a ${site} request may not change this account`);
  }
  // POST is the one state-changing method a page can send cross-origin without asking first.
  const length = c.req.header('content-length');
  const hasBody = length !== undefined ? length.trim() !== '0' : c.req.header('transfer-encoding') !== undefined;
  if ((c.req.method.toUpperCase() === 'POST' || hasBody) && !isJson(c.req.header('content-type'))) {
    return c.json(new DomainError('validation_error', 'send the request as JSON: Content-Type: application/json').toJSON(), 415);
  }
  return undefined;
}
