import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Logger } from '../core/logger.js';
import { bodyRuleOf, noBodyAnswer, type BodyRuleOptions } from './body-rules.js';

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
/**
 * What a request answered here (an upload refused for its declared size, a GET or HEAD carrying a
 * body) costs its client, in requests of its share (the per-address request rate): an upload
 * refused for its declared size would otherwise be the cheapest request
 * there is to flood with, 100 a second from one address (each an accept, a parse and an answer on
 * the main thread, and what arrived with its headers read and dropped). At this cost a flood of
 * them waits, unread, for its share, and one client gets about 10 refusals a second; a client that
 * sends one oversized upload by mistake waits a tenth of a second longer for its next request.
 */
export const REFUSED_BODY_COST = 10;

export interface BodyPrecheck {
  /** True when it answered the request (413): the caller does nothing more with it. */
  (req: IncomingMessage, res: ServerResponse): boolean;
  /** Requests answered here since start (for tests and operators). */
  refused(): number;
  /** Whether it would answer this request (an `Expect: 100-continue` is then not told to go on). */
  wouldRefuse(req: IncomingMessage): boolean;
}

/**
 * The app's view of a request target's path: parsed as a URL (as the adapter builds the Request:
 * an absolute-form target's own path, dot segments, `%2e` among them, resolved), then
 * percent-decoded when it can be (Hono's router and c.req.path see that form).
 */
function decodedPath(url: string): string {
  let path: string;
  try {
    path = new URL(url, 'http://localhost').pathname;
  } catch {
    return url;
  }
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
function answerUnread(socket: Socket, status: 400 | 413, body: string): void {
  const reason = status === 413 ? 'Payload Too Large' : 'Bad Request';
  // A Date header, as every other answer of the server has (an origin with a clock sends one: RFC 9110 §6.6.1).
  socket.end(
    `HTTP/1.1 ${status} ${reason}\r\ndate: ${new Date().toUTCString()}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  );
  const linger = setTimeout(() => socket.destroy(), REFUSED_LINGER_MS).unref();
  socket.once('close', () => clearTimeout(linger));
}

/**
 * A GET or HEAD with a chunked body is answered `400` (Node would read such a body to its end:
 * nothing consumes it), and a request whose declared Content-Length is over its route's cap `413`,
 * from Node's request event, with the app's answer for that route (body-rules.ts) and `connection: close`:
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

  /** What the request gets here, from its headers alone: nothing (the app's), or an answer written unread. */
  const verdict = (req: IncomingMessage): { status: 400 | 413; body: string } | undefined => {
    const declared = req.headers['content-length'];
    // A GET or HEAD with a chunked body: Node would read it to its end (the app never consumes one).
    const chunkedWithoutBody = req.headers['transfer-encoding'] !== undefined && (req.method === 'GET' || req.method === 'HEAD');
    if (declared === undefined && !chunkedWithoutBody) return undefined;
    const path = decodedPath(req.url ?? '/');
    const host = req.headers.host;
    if (chunkedWithoutBody) return { status: 400, body: noBodyAnswer(path, host, options) };
    if (options.exempt(path, host)) return undefined;
    const rule = bodyRuleOf(path, host, options);
    if (/^\d+$/.test(declared!.trim()) && Number(declared) <= rule.limit) return undefined;
    return { status: 413, body: rule.tooLarge };
  };

  const precheck = (req: IncomingMessage, res: ServerResponse): boolean => {
    const answer = verdict(req);
    if (!answer) return false;
    note();
    // A pipelined request behind one still being answered gets the socket once that answer is
    // written (Node then emits 'socket' on its response): written before, it would overtake and end
    // the earlier answer. Attached to it, the response's 'close' still comes when the socket closes.
    if (res.socket === req.socket) answerUnread(req.socket, answer.status, answer.body);
    else res.once('socket', (socket: Socket) => answerUnread(socket, answer.status, answer.body));
    return true;
  };
  return Object.assign(precheck, { refused: () => total, wouldRefuse: (req: IncomingMessage) => verdict(req) !== undefined });
}
