/**
 * Where an agent's outbound HTTP goes (issue 16): its attached MCP servers and its model's
 * base_url, one guard. Every request's address is resolved and checked against the rules of
 * core/outbound-address.ts (every DNS answer), then the connection is made to that checked address
 * (no second resolution a rebinding name could answer differently); redirects are never followed
 * here (a 3xx goes back to the caller as it is: the model SDKs take it as an error, the MCP
 * transport may follow a same-origin one, which comes back here and is checked again).
 */
import { lookup } from 'node:dns/promises';
import { networkInterfaces } from 'node:os';
import http from 'node:http';
import https from 'node:https';
import { Readable, Transform } from 'node:stream';
import {
  bareHost,
  formatIp,
  parseAgentMcpAllow,
  parseIp,
  parseServerUrl,
  refusal,
  refusedKind,
  type AllowEntry,
  type IpAddress,
  type OutboundPurpose,
  type OwnEndpoints,
  type ServerTarget,
} from '../core/outbound-address.js';

/** One response body at most, unless the guard is told otherwise (a JSON answer or an SSE stream's whole life). */
export const OUTBOUND_RESPONSE_MAX_BYTES = 8 * 1024 * 1024;

/** fetch as the MCP transport and both model SDKs call it. */
export type GuardedFetch = (input: string | URL | Request, init?: RequestInit) => Promise<Response>;

/**
 * This server's own endpoints as it listens: its address (on an unspecified one, loopback and
 * each interface's), its port, and the base host of `{ns}.run.{base}`.
 */
export function ownEndpointsOf(host: string, port: number, baseHost: string | undefined): OwnEndpoints {
  const ip = parseIp(bareHost(host));
  const loopback = [parseIp('127.0.0.1')!, parseIp('::1')!];
  let addresses: IpAddress[] = [];
  if (ip && refusedKind(ip) === 'unspecified') {
    addresses = [...loopback];
    for (const entries of Object.values(networkInterfaces()))
      for (const entry of entries ?? []) {
        const address = parseIp(entry.address.split('%')[0]!);
        if (address) addresses.push(address);
      }
  } else if (ip) addresses = [ip];
  else if (bareHost(host) === 'localhost') addresses = loopback;
  return { addresses, port, ...(baseHost ? { baseHost } : {}) };
}

/** A refused address (or URL): the message says why, never a header. */
export class OutboundAddressRefused extends Error {
  override readonly name = 'OutboundAddressRefused';
}

/** A name's addresses; `signal` is the caller's: once it is aborted, a lookup not yet started never starts. */
export type Resolver = (host: string, signal?: AbortSignal) => Promise<Array<{ address: string; family: number }>>;

/**
 * At most `concurrent` of `inner`'s lookups at once, `waiting` more queued, each of those waiting
 * `waitMs` at most, or until its caller gives up. The system's lookup (getaddrinfo) holds one of
 * libuv's four pool threads until the resolver answers, which a name can make take many seconds:
 * without this, a few tenants' names would hold every thread the server's file and crypto work needs.
 */
export function limitedResolver(inner: Resolver, limits: { concurrent: number; waiting: number; waitMs: number }): Resolver {
  let running = 0;
  const queue: Array<() => void> = [];
  // A slot freed goes straight to the first waiter (so no newcomer slips in between).
  const release = () => {
    const next = queue.shift();
    if (next) next();
    else running--;
  };
  return async (host, signal) => {
    signal?.throwIfAborted();
    if (running >= limits.concurrent) {
      if (queue.length >= limits.waiting) throw Object.assign(new Error('too many lookups in progress'), { code: 'EBUSY' });
      await new Promise<void>((go, fail) => {
        const leave = (error: unknown) => {
          queue.splice(queue.indexOf(turn), 1);
          clearTimeout(timer);
          signal?.removeEventListener('abort', onAbort);
          fail(error);
        };
        const onAbort = () => leave(signal!.reason);
        const turn = () => {
          clearTimeout(timer);
          signal?.removeEventListener('abort', onAbort);
          go();
        };
        const timer = setTimeout(() => leave(Object.assign(new Error('no lookup slot in time'), { code: 'ETIMEOUT' })), limits.waitMs);
        timer.unref();
        signal?.addEventListener('abort', onAbort, { once: true });
        queue.push(turn);
      });
    } else running++;
    try {
      return await inner(host, signal);
    } finally {
      release();
    }
  };
}

const systemResolver: Resolver = limitedResolver((host) => lookup(host, { all: true, verbatim: true }), {
  concurrent: 2,
  waiting: 64,
  waitMs: 10_000,
});

export interface OutboundAddressGuardOptions {
  /** MCPWORKS_AGENT_MCP_ALLOW, parsed. */
  allow: readonly AllowEntry[];
  /** This server's own endpoints, once it listens (undefined before). */
  own: () => OwnEndpoints | undefined;
  /** An attached MCP server ('mcp', the default) or an agent's model ('model'). */
  purpose?: OutboundPurpose;
  /** DNS (tests give their own). */
  resolve?: Resolver;
  /** One response body at most (OUTBOUND_RESPONSE_MAX_BYTES). */
  maxResponseBytes?: number;
}

function abortable<T>(work: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return work;
  signal.throwIfAborted();
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    work.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

/** Where an agent's connections may go: resolution checked, the checked address pinned. */
export class OutboundAddressGuard {
  private readonly resolve: Resolver;
  private readonly what: string;

  constructor(private readonly options: OutboundAddressGuardOptions) {
    this.resolve = options.resolve ?? systemResolver;
    this.what = options.purpose === 'model' ? "the agent's model" : 'attached MCP server';
  }

  /** The address a connection to `url` goes to, every answer of its name checked; throws OutboundAddressRefused. */
  async check(url: string, signal?: AbortSignal): Promise<{ target: ServerTarget; address: string }> {
    let target: ServerTarget;
    try {
      target = parseServerUrl(url);
    } catch (error) {
      throw new OutboundAddressRefused((error as Error).message);
    }
    const policy = { allow: this.options.allow, own: this.options.own(), purpose: this.options.purpose };
    if (target.literal) {
      const why = refusal(target, target.literal, policy);
      if (why) throw new OutboundAddressRefused(why);
      return { target, address: formatIp(target.literal) };
    }
    let answers: Array<{ address: string; family: number }>;
    try {
      answers = await abortable(this.resolve(target.host, signal), signal);
    } catch (error) {
      if (signal?.aborted) throw error;
      throw new OutboundAddressRefused(`${target.host} does not resolve (${(error as NodeJS.ErrnoException).code ?? 'lookup failed'})`);
    }
    if (answers.length === 0) throw new OutboundAddressRefused(`${target.host} does not resolve`);
    // Every answer, not only the one used: a name with one public and one private address is refused.
    let first: string | undefined;
    for (const answer of answers) {
      const ip = parseIp(answer.address);
      if (!ip) throw new OutboundAddressRefused(`${target.host} resolves to an address this server cannot check`);
      const why = refusal(target, ip, policy);
      if (why) throw new OutboundAddressRefused(why);
      first ??= formatIp(ip);
    }
    return { target, address: first! };
  }

  /**
   * fetch for the MCP transport and the model SDKs: each request checked (check()) and sent to the
   * checked address (TLS still verifies the host name); a redirect is answered as it is, never
   * followed here; a response body past the cap ends in an error.
   */
  readonly fetch: GuardedFetch = async (input, init) => {
    const href = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
    const signal = init?.signal ?? undefined;
    const { target, address } = await this.check(href, signal);
    const url = new URL(target.url);
    const headers: Record<string, string> = {};
    new Headers(init?.headers).forEach((value, name) => (headers[name] = value));
    headers.host = url.host;
    const body = init?.body;
    if (body !== undefined && body !== null && typeof body !== 'string' && !(body instanceof Uint8Array))
      throw new TypeError(`${this.what}: unsupported request body`);
    const request = (target.protocol === 'https:' ? https : http).request({
      host: address,
      port: target.port,
      method: init?.method ?? 'GET',
      path: url.pathname + url.search,
      headers,
      // The name the certificate must carry (the connection goes to the checked address).
      ...(target.protocol === 'https:' && !target.literal ? { servername: target.host } : {}),
      agent: false,
      ...(signal ? { signal } : {}),
    });
    const response = await new Promise<http.IncomingMessage>((resolve, reject) => {
      request.once('response', resolve);
      request.once('error', reject);
      request.end(body ?? undefined);
    });
    const status = response.statusCode ?? 502;
    const responseHeaders = new Headers();
    for (let i = 0; i + 1 < response.rawHeaders.length; i += 2)
      responseHeaders.append(response.rawHeaders[i]!, response.rawHeaders[i + 1]!);
    if (status < 200 || status > 599) {
      response.destroy();
      throw new Error(`${this.what} answered HTTP ${status}`);
    }
    const empty = status === 204 || status === 205 || status === 304 || init?.method === 'HEAD';
    if (empty) response.resume();
    const max = this.options.maxResponseBytes ?? OUTBOUND_RESPONSE_MAX_BYTES;
    const what = this.what;
    let seen = 0;
    const capped = new Transform({
      transform(chunk: Buffer, _encoding, done) {
        seen += chunk.length;
        if (seen > max) done(new Error(`${what}'s response passed ${max} bytes`));
        else done(null, chunk);
      },
    });
    response.once('error', (error) => capped.destroy(error));
    return new Response(empty ? null : (Readable.toWeb(response.pipe(capped)) as ReadableStream<Uint8Array>), {
      status,
      statusText: response.statusMessage ?? '',
      headers: responseHeaders,
    });
  };
}

/**
 * The policy as it travels to a replica's worker process (JSON over IPC: no bigints): the
 * operator's entries as text and this server's endpoints, so the worker checks each model call
 * itself, with the same rules.
 */
export interface OutboundPolicyWire {
  allow: string[];
  own: { addresses: string[]; port: number; baseHost?: string | undefined } | null;
}

export function outboundPolicyWire(allow: readonly AllowEntry[], own: OwnEndpoints | undefined): OutboundPolicyWire {
  return {
    allow: allow.map((entry) => (entry.kind === 'range' ? entry.text : entry.host)),
    own: own ? { addresses: own.addresses.map(formatIp), port: own.port, ...(own.baseHost ? { baseHost: own.baseHost } : {}) } : null,
  };
}

/** The guard of an agent's model calls, from the policy a job carries (none: nothing in a refused range). */
export function modelGuard(wire: OutboundPolicyWire | undefined, resolve?: Resolver): OutboundAddressGuard {
  const own: OwnEndpoints | undefined = wire?.own
    ? {
        addresses: wire.own.addresses.map((a) => parseIp(a)).filter((a): a is IpAddress => a !== undefined),
        port: wire.own.port,
        ...(wire.own.baseHost ? { baseHost: wire.own.baseHost } : {}),
      }
    : undefined;
  return new OutboundAddressGuard({
    allow: parseAgentMcpAllow((wire?.allow ?? []).join(',')),
    own: () => own,
    purpose: 'model',
    ...(resolve ? { resolve } : {}),
  });
}
