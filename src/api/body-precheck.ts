import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Logger } from '../core/logger.js';
import { bodyRuleOf, type BodyRuleOptions } from './body-rules.js';

/** Early refusals are counted and logged as one summary line per this interval, never a line each. */
const SUMMARY_INTERVAL_MS = 10_000;
/**
 * How long a refused connection is held, unread, after its answer: closing a socket with unread
 * bytes sends a reset, and a client still uploading then loses the 413 it has not read yet. The
 * reset leaves this long after the answer, so the client has this long to read what already
 * arrived, whatever the round trip. Short, because nothing tells the server that the client has
 * gone (it reads nothing): the held connection counts against its address's cap until then.
 */
export const REFUSED_LINGER_MS = 250;

export interface BodyPrecheck {
  /** True when it answered the request (413): the caller does nothing more with it. */
  (req: IncomingMessage, res: ServerResponse): boolean;
  /** Requests answered here since start (for tests and operators). */
  refused(): number;
}

/** Hono's view of a path: percent-decoded when it can be (its router and c.req.path see that form). */
function decodedPath(url: string): string {
  const query = url.indexOf('?');
  const path = query < 0 ? url : url.slice(0, query);
  if (!path.includes('%')) return path;
  try {
    return decodeURI(path);
  } catch {
    return path;
  }
}

/**
 * Writes the 413 on the socket itself and half-closes it, never reading on: nothing consumes the
 * request, so Node's parser stops reading once the request's small buffer is full (through
 * ServerResponse, Node would read the body through to the end of the connection instead). The
 * socket is destroyed when the client closes or the linger ends.
 */
function answerUnread(socket: Socket, body: string): void {
  socket.end(
    `HTTP/1.1 413 Payload Too Large\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  );
  const linger = setTimeout(() => socket.destroy(), REFUSED_LINGER_MS).unref();
  socket.once('close', () => clearTimeout(linger));
}

/**
 * A request whose declared Content-Length is over its route's cap is answered `413` from Node's
 * request event, with the app's answer for that route (body-rules.ts) and `connection: close`:
 * before the app builds a Request, runs its middleware or converts the refusal, and without reading
 * beyond what arrived with the headers. A flood of oversized uploads then costs what accepting and
 * answering a connection costs. Bodies without a declared length are counted by the app's body
 * limit as they stream. `exempt`: the paths mounted ahead of that limit (they cap their own bodies).
 */
export function bodyPrecheck(
  options: BodyRuleOptions & { logger: Logger; exempt: (path: string, host: string | undefined) => boolean },
): BodyPrecheck {
  let total = 0;
  let windowCount = 0;
  const note = () => {
    total++;
    if (windowCount++ === 0)
      setTimeout(() => {
        options.logger.warn(
          { refused_bodies: windowCount, window_s: SUMMARY_INTERVAL_MS / 1000 },
          "request bodies over their route's limit refused (413)",
        );
        windowCount = 0;
      }, SUMMARY_INTERVAL_MS).unref();
  };

  const precheck = (req: IncomingMessage, _res: ServerResponse): boolean => {
    const declared = req.headers['content-length'];
    if (declared === undefined) return false;
    const path = decodedPath(req.url ?? '/');
    const host = req.headers.host;
    if (options.exempt(path, host)) return false;
    const rule = bodyRuleOf(path, host, options);
    if (/^\d+$/.test(declared.trim()) && Number(declared) <= rule.limit) return false;
    note();
    answerUnread(req.socket, rule.tooLarge);
    return true;
  };
  return Object.assign(precheck, { refused: () => total });
}
