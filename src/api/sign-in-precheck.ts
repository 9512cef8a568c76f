import type { IncomingMessage, ServerResponse } from 'node:http';
import { clientKeyOf } from '../core/accounts.js';
import type { DomainErrorType } from '../core/errors.js';
import type { AccountService } from '../services/accounts.js';
import { ACCOUNT_MAX_BODY_BYTES } from './body-limit.js';
import { clientAddress } from './client-address.js';
import type { Logger } from '../core/logger.js';

/** Early refusals are counted and logged as one summary line per this interval, never a line each. */
const SUMMARY_INTERVAL_MS = 10_000;
/** Every path the account routes answer (app.ts: the /api/ paths and the older root ones). */
const SIGN_IN_PATHS = new Set(['/login', '/api/login']);
const SIGN_UP_PATHS = new Set(['/register', '/api/register']);
/** A flood from many addresses keeps at most this many keys for the summary. */
const SUMMARY_CLIENTS = 1000;

export interface SignInPrecheck {
  /** True when it answered the request (429): the caller does nothing more with it. */
  (req: IncomingMessage, res: ServerResponse): boolean;
  /** Sign-ins and sign-ups answered here since start (for tests and operators). */
  refused(): number;
}

/**
 * A sign-in or sign-up from an address its gate would refuse anyway (backing off after failures,
 * its waiting room full, its sign-ups used up) is answered `429` from Node's request event: before
 * the app's router, its body is read or parsed, or the database is asked. A flood of attempts from
 * a refused address then costs the server what accepting and answering the connection costs, and
 * no log line each (a summary per window). Anything this does not recognise takes the full path,
 * whose gate gives the same answer.
 */
export function signInPrecheck(options: {
  accounts: AccountService;
  trustedProxies: readonly string[];
  baseHost?: string | undefined;
  logger: Logger;
}): SignInPrecheck {
  const { accounts, trustedProxies, logger } = options;
  const base = options.baseHost?.replace(/:\d+$/, '').toLowerCase();
  let total = 0;
  let summary: { count: number; clients: Map<string, number> } | undefined;

  const note = (address: string | undefined) => {
    total++;
    if (!summary) {
      const window = { count: 0, clients: new Map<string, number>() };
      setTimeout(() => {
        summary = undefined;
        const top = [...window.clients.entries()]
          .sort((a, b) => b[1] - a[1])
          .slice(0, 3)
          .map(([client, count]) => ({ client, count }));
        logger.warn({ refused_sign_ins: window.count, top, window_s: SUMMARY_INTERVAL_MS / 1000 }, 'sign-ins refused (rate limited)');
      }, SUMMARY_INTERVAL_MS).unref();
      summary = window;
    }
    summary.count++;
    const client = clientKeyOf(address);
    if (summary.clients.has(client) || summary.clients.size < SUMMARY_CLIENTS)
      summary.clients.set(client, (summary.clients.get(client) ?? 0) + 1);
  };

  const precheck = (req: IncomingMessage, res: ServerResponse): boolean => {
    if (req.method !== 'POST') return false;
    const url = req.url ?? '';
    const query = url.indexOf('?');
    const path = query < 0 ? url : url.slice(0, query);
    const signUp = SIGN_UP_PATHS.has(path);
    if (!signUp && !SIGN_IN_PATHS.has(path)) return false;
    // On `{ns}.create.{base}` and `{ns}.run.{base}` every path is that namespace's MCP endpoint.
    if (base) {
      const host = (req.headers.host ?? '').replace(/:\d+$/, '').toLowerCase();
      if (host.endsWith(`.create.${base}`) || host.endsWith(`.run.${base}`)) return false;
    }
    const forwarded = req.headers['x-forwarded-for'];
    const address = clientAddress(req.socket.remoteAddress, Array.isArray(forwarded) ? forwarded.join(',') : forwarded, trustedProxies);
    const refusal = accounts.signInRefusal(address, signUp);
    if (!refusal) return false;
    note(address);
    // DomainError's answer shape, built without an Error: a flood is refused here at its pacing
    // rate, and capturing a stack for each refusal was a tenth of this path's main-thread time.
    const body = JSON.stringify({
      error: refusal.message,
      error_type: 'rate_limited' satisfies DomainErrorType,
      retry_after: refusal.retryAfter,
    });
    const headers: Record<string, string | number> = {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(body),
      'retry-after': String(refusal.retryAfter),
    };
    // The body is never read: Node discards a small one to keep the connection; a large or
    // unannounced one closes it instead of being read through.
    const declared = req.headers['content-length'];
    if (declared === undefined || !/^\d+$/.test(declared) || Number(declared) > ACCOUNT_MAX_BODY_BYTES) headers.connection = 'close';
    res.writeHead(429, headers).end(body);
    return true;
  };
  return Object.assign(precheck, { refused: () => total });
}
