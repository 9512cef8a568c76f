import { randomUUID } from 'node:crypto';
import {
  createMcpHandler,
  isJsonContentType,
  isLegacyRequest,
  SUPPORTED_PROTOCOL_VERSIONS,
  type AuthInfo,
  type McpServer,
  type McpServerFactory,
} from '@modelcontextprotocol/server';
import type { KeyPrincipal } from '../services/accounts.js';
import {
  MCP_SESSION_IDLE_MS,
  MCP_SESSIONS_PER_KEY,
  MCP_SESSION_TOUCH_MS,
  type AccountsStore,
  type McpSessionRef,
} from '../store/accounts-store.js';
import { MCP_MAX_BODY_BYTES as MAX_BODY_BYTES } from './body-limit.js';
import type { Logger } from '../core/logger.js';
import { isRetryableStoreError } from '../store/db-health.js';
import type { ListChangedHub } from './list-changed.js';
import type { SessionActivity } from './session-activity.js';
import { serveLegacyBatch } from './mcp-batch.js';
import { legacyLeg } from './mcp-legacy-leg.js';
import { sharedFairShare } from '../run/fair-share.js';
import { databaseNow } from '../core/database-clock.js';
import { calledToolNames } from './unknown-tools.js';
import { MAX_CHECKED_DEPTH, MAX_CHECKED_VALUES } from '../core/limits.js';
import { textShapeExcessSlices } from '../core/json-scan.js';
import { parseJsonSlices } from '../core/json-sliced-parse.js';

/** Bodies longer than this (characters) are scanned and parsed in their tenant's fair turns (fair-share.ts). */
const LARGE_BODY_CHARS = 64 * 1024;
/**
 * What a large body may hold, checked before it is parsed: a call's input caps (core/limits.ts)
 * plus room for the JSON-RPC envelope (a batch's messages share it).
 */
export const BODY_MAX_VALUES = MAX_CHECKED_VALUES + 1000;
export const BODY_MAX_DEPTH = MAX_CHECKED_DEPTH + 8;
/** A fraction of a millisecond of scanning per fair slice (a few ms while the scan is still cold). */
const SCAN_SLICE_CHARS = 64 * 1024;

const MCP_SESSION_IDLE_MINUTES = MCP_SESSION_IDLE_MS / 60_000;

export type EndpointKind = 'create' | 'run';

export interface RequestScope<Extra extends object = Record<string, unknown>> {
  principal: KeyPrincipal;
  namespace: string;
  url: URL;
  /** Per-request state an endpoint attaches in `beforeDispatch` (e.g. the run endpoint's admission ticket). */
  extra?: Extra;
  /** The Mcp-Session-Id this request sent, as read with its key (owner null: unknown or expired). */
  session?: { id: string; owner: McpSessionRef | null };
  /** The tool names the request's tools/call names (set before the MCP layer builds its server). */
  calls?: readonly string[];
}

/**
 * beforeDispatch's answer for a request the MCP layer may answer while a check it depends on is
 * still out (the run endpoint: a cached key's lookup, for requests that change nothing): the
 * answer is held until `check` settles. undefined: it stands; a Response: that is the answer
 * instead; 'again': the request was prepared again with what the check found, and is answered
 * afresh. A rejected check is the request's failure, as a throwing beforeDispatch's is.
 */
export interface CheckedDispatch {
  check: Promise<Response | undefined | 'again'>;
}

export function jsonRpcError(
  status: number,
  code: number,
  message: string,
  headers: Record<string, string> = {},
  data?: Record<string, unknown>,
): Response {
  return new Response(JSON.stringify({ jsonrpc: '2.0', error: { code, message, ...(data ? { data } : {}) }, id: null }), {
    status,
    headers: { 'content-type': 'application/json', ...headers },
  });
}

/** What the SDK's 2025-era initialize settles on: the client's version when supported, else the newest. */
const LEGACY_VERSIONS = SUPPORTED_PROTOCOL_VERSIONS.filter((v) => v < '2026');
function negotiatedVersion(body: unknown): string | undefined {
  const requested = (body as { params?: { protocolVersion?: unknown } } | null)?.params?.protocolVersion;
  return typeof requested === 'string' && LEGACY_VERSIONS.includes(requested) ? requested : LEGACY_VERSIONS[0];
}

/** The response, calling `release` once its body has been sent or abandoned (a streamed answer lasts as long as its call). */
async function releasedWhenDone(response: Response, release: () => void): Promise<Response> {
  if (!response.body) {
    release();
    return response;
  }
  // A whole answer (its length known: one-write.ts, or a spliced tool listing) is in memory already:
  // released now and passed on as it is (not copied); the HTTP layer writes it before its tick ends.
  if (response.headers.has('content-length')) {
    release();
    return response;
  }
  const reader = response.body.getReader();
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const { done, value } = await reader.read();
        if (done) {
          release();
          controller.close();
        } else controller.enqueue(value);
      } catch (error) {
        release();
        controller.error(error);
      }
    },
    cancel(reason) {
      release();
      return reader.cancel(reason);
    },
  });
  return new Response(body, { status: response.status, statusText: response.statusText, headers: response.headers });
}

function isInitialize(body: unknown): boolean {
  const messages = Array.isArray(body) ? body : [body];
  return messages.some((m) => m !== null && typeof m === 'object' && (m as { method?: unknown }).method === 'initialize');
}

/**
 * One MCP endpoint (create or run) serving both protocol eras from one server factory:
 * - 2026-07-28 (per-request envelope) through the SDK's modern handler;
 * - 2025-era clients (initialize + Mcp-Session-Id, as Claude Code speaks) through the SDK's
 *   stateless legacy leg (answering in JSON where only the answer can be sent: mcp-legacy-leg.ts), with session ids recorded in the database rather than in memory,
 *   so any node of a cluster can serve any session.
 */
export function createMcpEndpoint<Extra extends object = Record<string, unknown>>(options: {
  kind: EndpointKind;
  buildServer: (scope: RequestScope<Extra>) => McpServer | Promise<McpServer>;
  accounts: AccountsStore;
  logger: Logger;
  /** Runs on every parsed POST before the MCP layer sees it; a Response short-circuits (e.g. 429). */
  beforeDispatch?: (body: unknown, scope: RequestScope<Extra>) => Promise<Response | CheckedDispatch | undefined>;
  /** Runs once the MCP layer has answered (or started streaming) a request that beforeDispatch let through; answers the response to send. */
  afterDispatch?: (scope: RequestScope<Extra>, response: Response) => Promise<Response>;
  /** The caller's limit of live 2025-era sessions (null = unlimited). */
  sessionLimit: (principal: KeyPrincipal) => number | null;
  /** Change streams (2025 GET stream, 2026 subscriptions/listen); `notifies`: this endpoint's tool list can change. */
  listChanged?: { hub: ListChangedHub; notifies: boolean };
  /** Holds a 2025-era session in use while one of its requests is being answered. */
  sessionActivity?: SessionActivity;
}) {
  const { kind, accounts, logger } = options;
  const streams = options.listChanged;
  const factory: McpServerFactory = (ctx) => options.buildServer((ctx.authInfo?.extra as { scope: RequestScope<Extra> }).scope);
  const onerror = (error: Error) => logger.debug({ err: error.message, endpoint: kind }, 'mcp request rejected');
  // Listen streams are capped per account by the hub; the SDK's own cap is per handler (all tenants).
  const modern = createMcpHandler(factory, {
    legacy: 'reject',
    onerror,
    maxRequestBodySize: MAX_BODY_BYTES,
    ...(streams ? { bus: streams.hub.bus, maxSubscriptions: Number.MAX_SAFE_INTEGER } : {}),
  });
  const legacy = legacyLeg(factory, onerror, { maxRequestBodySize: MAX_BODY_BYTES });

  async function ownedSession(id: string, scope: RequestScope<Extra>): Promise<boolean> {
    const session = scope.session?.id === id ? scope.session.owner : await accounts.findMcpSession(id);
    const owned =
      !!session && session.account_id === scope.principal.accountId && session.endpoint === kind && session.namespace === scope.namespace;
    // Use keeps a session alive (idle expiry); the write happens at most once a minute.
    // A touch refused by a full disk or a database gone away must not fail a request that only reads.
    if (owned && databaseNow() - new Date(session.last_seen_at).getTime() > MCP_SESSION_TOUCH_MS) {
      const touched = await accounts.touchMcpSession(id).then(
        () => true,
        (error: unknown) => {
          if (!isRetryableStoreError(error)) throw error;
          return false;
        },
      );
      // The owner may be a node's cached copy (a key's, AccountService.cachedRunKey): written now, it
      // says so, or every later request served from that cache would write it again.
      if (touched) session.last_seen_at = new Date(databaseNow());
    }
    return owned;
  }

  /**
   * GET: the 2025 era's standalone SSE stream of a session, on which the server sends what is not
   * an answer (here notifications/tools/list_changed). 2026-07-28 clients use subscriptions/listen.
   */
  async function standaloneStream(
    request: Request,
    sessionId: string | null,
    scope: RequestScope<Extra>,
    hub: NonNullable<typeof streams>,
  ): Promise<Response> {
    if (!sessionId)
      return jsonRpcError(
        400,
        -32000,
        'Bad Request: Mcp-Session-Id header is required (initialize first); 2026-07-28 clients use subscriptions/listen',
      );
    if (!(await ownedSession(sessionId, scope))) return jsonRpcError(404, -32001, 'Session not found');
    if (!(request.headers.get('accept') ?? '').includes('text/event-stream'))
      return jsonRpcError(406, -32000, 'Not Acceptable: Client must accept text/event-stream');
    const stream = hub.hub.legacyStream(sessionId, scope.namespace, hub.notifies, request.signal);
    return stream ?? jsonRpcError(409, -32000, 'Conflict: Only one SSE stream is allowed per session');
  }

  /**
   * The MCP layer's answer to a request beforeDispatch let through, passed through afterDispatch.
   * Should the layer throw (the SDK answers its own refusals, but a fault is a fault), afterDispatch
   * still runs on a JSON-RPC internal error: whatever beforeDispatch took (a call's slot and quota
   * unit) is given back now, not at its expiry.
   */
  async function dispatched(scope: RequestScope<Extra>, dispatch: () => Promise<Response>): Promise<Response> {
    let response: Response;
    try {
      response = await dispatch();
    } catch (error) {
      if (!options.afterDispatch) throw error;
      logger.warn({ err: error instanceof Error ? error.message : String(error), endpoint: kind }, 'the MCP layer failed on a request');
      return options.afterDispatch(scope, jsonRpcError(500, -32603, 'Internal error'));
    }
    return options.afterDispatch ? options.afterDispatch(scope, response) : response;
  }

  /**
   * dispatched(), started at once but held until the check settles (CheckedDispatch). An answer
   * not used is discarded unread: nothing of it reaches the client.
   */
  async function checkedDispatch(
    scope: RequestScope<Extra>,
    checked: CheckedDispatch | undefined,
    dispatch: () => Promise<Response>,
  ): Promise<Response> {
    if (!checked) return dispatched(scope, dispatch);
    const first = dispatch();
    // Handled from the start: a failure while the check is out must not go unhandled meanwhile
    // (dispatched() still sees it, as an internal error, if the answer stands).
    first.catch(() => undefined);
    const discard = () =>
      void first.then(
        (response) => response.body?.cancel().catch(() => undefined),
        () => undefined,
      );
    let verdict: Response | undefined | 'again';
    try {
      verdict = await checked.check;
    } catch (error) {
      discard();
      throw error;
    }
    if (verdict === undefined) return dispatched(scope, () => first);
    discard();
    return verdict === 'again' ? dispatched(scope, dispatch) : verdict;
  }

  return async function handle(request: Request, scope: RequestScope<Extra>): Promise<Response> {
    const authInfo: AuthInfo = { token: '', clientId: scope.principal.keyId, scopes: scope.principal.scopes, extra: { scope } };
    const sessionId = request.headers.get('mcp-session-id');
    const method = request.method.toUpperCase();

    if (method === 'DELETE') {
      if (!sessionId || !(await ownedSession(sessionId, scope))) return jsonRpcError(404, -32001, 'Session not found');
      await accounts.deleteMcpSession(sessionId);
      streams?.hub.endSession(sessionId);
      return new Response(null, { status: 200 });
    }
    if (method === 'GET' && streams) return standaloneStream(request, sessionId, scope, streams);
    if (method !== 'POST') return legacy(request, { authInfo });
    // Before the body is read: the SDK checks it too, but a batch is split before the SDK sees it.
    if (!isJsonContentType(request.headers.get('content-type')))
      return jsonRpcError(415, -32000, 'Unsupported Media Type: Content-Type must be application/json');

    let text: string;
    try {
      text = await request.text();
    } catch {
      // The body limit cut it off (the app answers 413), or the client went away.
      return jsonRpcError(400, -32700, 'Parse error: the request body could not be read');
    }
    if (Buffer.byteLength(text) > MAX_BODY_BYTES) return jsonRpcError(413, -32600, `request body larger than ${MAX_BODY_BYTES} bytes`);
    if (text.length > LARGE_BODY_CHARS) {
      // One JSON.parse of 8 MB of small values holds the main thread for hundreds of milliseconds:
      // a body over the caps is refused by a scan in fair slices before any parse.
      const excess = await sharedFairShare.run(
        scope.principal.accountId,
        textShapeExcessSlices(text, { maxDepth: BODY_MAX_DEPTH, maxValues: BODY_MAX_VALUES }, SCAN_SLICE_CHARS),
      );
      if (excess?.limit === 'values') {
        const message = `request body holds more than ${BODY_MAX_VALUES} JSON values (a call's input may hold at most ${MAX_CHECKED_VALUES}); refused before parsing`;
        return jsonRpcError(413, -32600, message, {}, { type: 'validation_error', limit: 'values', max: BODY_MAX_VALUES });
      }
      if (excess) {
        const message = `request body is nested deeper than ${BODY_MAX_DEPTH} levels (a call's input may nest at most ${MAX_CHECKED_DEPTH}); refused before parsing`;
        return jsonRpcError(400, -32600, message, {}, { type: 'validation_error', limit: 'depth', max: BODY_MAX_DEPTH });
      }
    }
    let parsedBody: unknown;
    try {
      // Within the caps, a large body is still parsed in fair slices (json-sliced-parse.ts).
      parsedBody =
        text.length > LARGE_BODY_CHARS
          ? await sharedFairShare.run(scope.principal.accountId, parseJsonSlices(text, SCAN_SLICE_CHARS))
          : JSON.parse(text);
    } catch {
      return jsonRpcError(400, -32700, 'Parse error: the body is not valid JSON');
    }
    // The MCP layer is handed the parsed body and never reads one (the SDK reads a body only when
    // it is given none): it gets the request itself, whose body is spent, not a copy (a Request
    // built per call, its headers copied and its URL parsed again). Its signal is the client's:
    // the SDK closes the exchange when the client goes away, as the run's own watch does.
    const replay = request;
    if (!Array.isArray(parsedBody)) scope.calls = calledToolNames(parsedBody);
    if (!(await isLegacyRequest(replay, parsedBody))) {
      // The 2026-07-28 revision has no batches.
      if (Array.isArray(parsedBody))
        return jsonRpcError(
          400,
          -32600,
          'Invalid Request: JSON-RPC batches are not supported under protocol 2026-07-28; send one message per request',
        );
      const listens = streams && (parsedBody as { method?: unknown } | null)?.method === 'subscriptions/listen';
      if (listens && !streams.hub.mayListen(scope.principal.accountId)) {
        return jsonRpcError(
          429,
          -32000,
          'Too many open subscriptions/listen streams for this account on this server; close some (they end when their request is cancelled)',
        );
      }
      const early = await options.beforeDispatch?.(parsedBody, scope);
      if (early instanceof Response) return early;
      const owner = { namespace: streams?.notifies ? scope.namespace : '', accountId: scope.principal.accountId };
      // Only a listen request subscribes to the bus: only it needs its owner known there.
      return checkedDispatch(scope, early, () =>
        listens
          ? streams.hub.within(owner, () => modern.fetch(replay, { authInfo, parsedBody }))
          : modern.fetch(replay, { authInfo, parsedBody }),
      );
    }
    // 2025 era: batches exist in 2025-03-26 only. The version is the one the session negotiated at
    // initialize; for a session from before that was recorded, the one the client sends with every
    // request (MCP-Protocol-Version, required since 2025-06-18; absent = 2025-03-26, as the spec says).
    if (Array.isArray(parsedBody)) {
      const owner = sessionId ? (scope.session?.id === sessionId ? scope.session.owner : await accounts.findMcpSession(sessionId)) : null;
      const version = owner?.protocol_version ?? request.headers.get('mcp-protocol-version') ?? '2025-03-26';
      if (version !== '2025-03-26')
        return jsonRpcError(
          400,
          -32600,
          `Invalid Request: JSON-RPC batches are not supported under protocol ${version}; send one message per request`,
        );
      // Each part has its own request state (the run endpoint's ticket, snapshot, listing).
      return serveLegacyBatch(parsedBody, request, (part) =>
        handle(part, { ...scope, ...(scope.extra ? { extra: { ...scope.extra } } : {}) }),
      );
    }

    const initializing = isInitialize(parsedBody);
    // A session id we did not issue (or issued to someone else) is "not found": the client re-initializes.
    if (sessionId && !initializing && !(await ownedSession(sessionId, scope))) return jsonRpcError(404, -32001, 'Session not found');
    const early = await options.beforeDispatch?.(parsedBody, scope);
    if (early instanceof Response) return early;
    // The session row is taken (within the account's live-session limit) before the MCP layer
    // answers, and given back when it did not answer 200: a refusal changes nothing.
    const id = randomUUID();
    if (initializing) {
      const limit = options.sessionLimit(scope.principal);
      const protocolVersion = negotiatedVersion(Array.isArray(parsedBody) ? undefined : parsedBody);
      const session = {
        id,
        accountId: scope.principal.accountId,
        keyId: scope.principal.keyId,
        endpoint: kind,
        namespace: scope.namespace,
        ...(protocolVersion ? { protocolVersion } : {}),
      };
      const created = await accounts.createMcpSession(session, limit);
      // A session ended for the key's cap loses its change stream here at once (elsewhere, its
      // next request answers 404).
      for (const evicted of created.evicted) streams?.hub.endSession(evicted);
      if (created.refused) {
        // Not one of the spec's quota bodies: a JSON-RPC error like every other refusal, its figures in data.
        const perKey = created.refused.scope === 'key';
        const cap = perKey ? MCP_SESSIONS_PER_KEY : limit;
        const message = perKey
          ? `Live MCP session limit per API key (${cap}) reached and every one of this key's sessions is in use (an open stream or a request being answered); close sessions you no longer use (DELETE with Mcp-Session-Id), use another API key, or retry later`
          : `Live MCP session limit (${cap}) reached; close sessions you no longer use (DELETE with Mcp-Session-Id) or wait until one has been idle ${MCP_SESSION_IDLE_MINUTES} minutes`;
        const data = {
          code: 'SESSION_LIMIT_EXCEEDED',
          limit: cap,
          usage: created.refused.usage,
          tier: scope.principal.tier,
          retry_after: created.refused.retryAfter,
        };
        return jsonRpcError(429, -32000, message, { 'retry-after': String(created.refused.retryAfter) }, data);
      }
    }
    if (!initializing && sessionId && options.sessionActivity) {
      const release = options.sessionActivity.hold(sessionId);
      try {
        return await releasedWhenDone(await checkedDispatch(scope, early, () => legacy(replay, { authInfo, parsedBody })), release);
      } catch (error) {
        release();
        throw error;
      }
    }
    const response = await checkedDispatch(scope, early, () => legacy(replay, { authInfo, parsedBody })).catch(async (error: unknown) => {
      if (initializing) await accounts.deleteMcpSession(id);
      throw error;
    });
    if (!initializing) return response;
    if (response.status !== 200) {
      await accounts.deleteMcpSession(id);
      return response;
    }
    const headers = new Headers(response.headers);
    headers.set('mcp-session-id', id);
    return new Response(response.body, { status: response.status, headers });
  };
}
