import { randomUUID } from 'node:crypto';
import {
  createMcpHandler,
  isLegacyRequest,
  legacyStatelessFallback,
  type AuthInfo,
  type McpServer,
  type McpServerFactory,
} from '@modelcontextprotocol/server';
import type { KeyPrincipal } from '../services/accounts.js';
import { MCP_SESSION_IDLE_MS, MCP_SESSION_TOUCH_MS, type AccountsStore, type McpSessionRef } from '../store/accounts-store.js';
import { MCP_MAX_BODY_BYTES as MAX_BODY_BYTES } from './body-limit.js';
import type { Logger } from './logger.js';
import { isRetryableStoreError } from '../store/db-health.js';

const MCP_SESSION_IDLE_MINUTES = MCP_SESSION_IDLE_MS / 60_000;

export type EndpointKind = 'create' | 'run';

export interface RequestScope {
  principal: KeyPrincipal;
  namespace: string;
  url: URL;
  /** Per-request state an endpoint attaches in `beforeDispatch` (e.g. the run endpoint's admission ticket). */
  extra?: Record<string, unknown>;
  /** The Mcp-Session-Id this request sent, as read with its key (owner null: unknown or expired). */
  session?: { id: string; owner: McpSessionRef | null };
}

export function jsonRpcError(status: number, code: number, message: string, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify({ jsonrpc: '2.0', error: { code, message }, id: null }), {
    status,
    headers: { 'content-type': 'application/json', ...headers },
  });
}

function isInitialize(body: unknown): boolean {
  const messages = Array.isArray(body) ? body : [body];
  return messages.some((m) => m !== null && typeof m === 'object' && (m as { method?: unknown }).method === 'initialize');
}

/**
 * One MCP endpoint (create or run) serving both protocol eras from one server factory:
 * - 2026-07-28 (per-request envelope) through the SDK's modern handler;
 * - 2025-era clients (initialize + Mcp-Session-Id, as Claude Code speaks) through the SDK's
 *   stateless legacy leg, with session ids recorded in the database rather than in memory,
 *   so any node of a cluster can serve any session.
 */
export function createMcpEndpoint(options: {
  kind: EndpointKind;
  buildServer: (scope: RequestScope) => McpServer | Promise<McpServer>;
  accounts: AccountsStore;
  logger: Logger;
  /** Runs on every parsed POST before the MCP layer sees it; a Response short-circuits (e.g. 429). */
  beforeDispatch?: (body: unknown, scope: RequestScope) => Promise<Response | undefined>;
  /** Runs once the MCP layer has answered (or started streaming) a request that beforeDispatch let through; answers the response to send. */
  afterDispatch?: (scope: RequestScope, response: Response) => Promise<Response>;
  /** The caller's limit of live 2025-era sessions (null = unlimited). */
  sessionLimit: (principal: KeyPrincipal) => number | null;
}) {
  const { kind, accounts, logger } = options;
  const factory: McpServerFactory = (ctx) => options.buildServer((ctx.authInfo?.extra as { scope: RequestScope }).scope);
  const onerror = (error: Error) => logger.debug({ err: error.message, endpoint: kind }, 'mcp request rejected');
  const modern = createMcpHandler(factory, { legacy: 'reject', onerror, maxRequestBodySize: MAX_BODY_BYTES });
  const legacy = legacyStatelessFallback(factory, onerror, { maxRequestBodySize: MAX_BODY_BYTES });

  async function ownedSession(id: string, scope: RequestScope): Promise<boolean> {
    const session = scope.session?.id === id ? scope.session.owner : await accounts.findMcpSession(id);
    const owned = !!session && session.account_id === scope.principal.accountId && session.endpoint === kind && session.namespace === scope.namespace;
    // Use keeps a session alive (idle expiry); the write happens at most once a minute.
    // A touch refused by a full disk or a database gone away must not fail a request that only reads.
    if (owned && Date.now() - new Date(session.last_seen_at).getTime() > MCP_SESSION_TOUCH_MS) {
      await accounts.touchMcpSession(id).catch((error: unknown) => {
        if (!isRetryableStoreError(error)) throw error;
      });
    }
    return owned;
  }

  return async function handle(request: Request, scope: RequestScope): Promise<Response> {
    const authInfo: AuthInfo = { token: '', clientId: scope.principal.keyId, scopes: scope.principal.scopes, extra: { scope } };
    const sessionId = request.headers.get('mcp-session-id');
    const method = request.method.toUpperCase();

    if (method === 'DELETE') {
      if (!sessionId || !(await ownedSession(sessionId, scope))) return jsonRpcError(404, -32001, 'Session not found');
      await accounts.deleteMcpSession(sessionId);
      return new Response(null, { status: 200 });
    }
    if (method !== 'POST') return legacy(request, { authInfo });

    let text: string;
    try {
      text = await request.text();
    } catch {
      // The body limit cut it off (the app answers 413), or the client went away.
      return jsonRpcError(400, -32700, 'Parse error: the request body could not be read');
    }
    if (Buffer.byteLength(text) > MAX_BODY_BYTES) return jsonRpcError(413, -32600, `request body larger than ${MAX_BODY_BYTES} bytes`);
    let parsedBody: unknown;
    try {
      parsedBody = JSON.parse(text);
    } catch {
      return jsonRpcError(400, -32700, 'Parse error: the body is not valid JSON');
    }
    const replay = new Request(request.url, { method: 'POST', headers: request.headers, body: text });
    if (!(await isLegacyRequest(replay, parsedBody))) {
      const early = await options.beforeDispatch?.(parsedBody, scope);
      if (early) return early;
      const response = await modern.fetch(replay, { authInfo, parsedBody });
      return options.afterDispatch ? options.afterDispatch(scope, response) : response;
    }

    const initializing = isInitialize(parsedBody);
    // A session id we did not issue (or issued to someone else) is "not found": the client re-initializes.
    if (sessionId && !initializing && !(await ownedSession(sessionId, scope))) return jsonRpcError(404, -32001, 'Session not found');
    const early = await options.beforeDispatch?.(parsedBody, scope);
    if (early) return early;
    // The session row is taken (within the account's live-session limit) before the MCP layer
    // answers, and given back when it did not answer 200: a refusal changes nothing.
    const id = randomUUID();
    if (initializing) {
      const limit = options.sessionLimit(scope.principal);
      const created = await accounts.createMcpSession({ id, accountId: scope.principal.accountId, keyId: scope.principal.keyId, endpoint: kind, namespace: scope.namespace }, limit);
      if (created) {
        const body = {
          code: 'SESSION_LIMIT_EXCEEDED',
          message: `Live MCP session limit (${limit}) reached; close sessions you no longer use (DELETE with Mcp-Session-Id) or wait until one has been idle ${MCP_SESSION_IDLE_MINUTES} minutes`,
          limit,
          usage: created.refused.usage,
          tier: scope.principal.tier,
          retry_after: created.refused.retryAfter,
        };
        return new Response(JSON.stringify(body), { status: 429, headers: { 'content-type': 'application/json', 'retry-after': String(created.refused.retryAfter) } });
      }
    }
    const dispatched = await legacy(replay, { authInfo, parsedBody }).catch(async (error: unknown) => {
      if (initializing) await accounts.deleteMcpSession(id);
      throw error;
    });
    const response = options.afterDispatch ? await options.afterDispatch(scope, dispatched) : dispatched;
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
