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
import type { AccountsStore, McpSessionRef } from '../store/accounts-store.js';
import { MCP_MAX_BODY_BYTES as MAX_BODY_BYTES } from './body-limit.js';
import type { Logger } from './logger.js';

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
  /** Runs once the MCP layer has answered (or started streaming) a request that beforeDispatch let through. */
  afterDispatch?: (scope: RequestScope) => Promise<void>;
}) {
  const { kind, accounts, logger } = options;
  const factory: McpServerFactory = (ctx) => options.buildServer((ctx.authInfo?.extra as { scope: RequestScope }).scope);
  const onerror = (error: Error) => logger.debug({ err: error.message, endpoint: kind }, 'mcp request rejected');
  const modern = createMcpHandler(factory, { legacy: 'reject', onerror, maxRequestBodySize: MAX_BODY_BYTES });
  const legacy = legacyStatelessFallback(factory, onerror, { maxRequestBodySize: MAX_BODY_BYTES });

  async function ownedSession(id: string, scope: RequestScope): Promise<boolean> {
    const session = scope.session?.id === id ? scope.session.owner : await accounts.findMcpSession(id);
    return !!session && session.account_id === scope.principal.accountId && session.endpoint === kind && session.namespace === scope.namespace;
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
      await options.afterDispatch?.(scope);
      return response;
    }

    const initializing = isInitialize(parsedBody);
    // A session id we did not issue (or issued to someone else) is "not found": the client re-initializes.
    if (sessionId && !initializing && !(await ownedSession(sessionId, scope))) return jsonRpcError(404, -32001, 'Session not found');
    const early = await options.beforeDispatch?.(parsedBody, scope);
    if (early) return early;
    const response = await legacy(replay, { authInfo, parsedBody });
    await options.afterDispatch?.(scope);
    if (!initializing || response.status !== 200) return response;
    const id = randomUUID();
    await accounts.createMcpSession({ id, accountId: scope.principal.accountId, keyId: scope.principal.keyId, endpoint: kind, namespace: scope.namespace });
    const headers = new Headers(response.headers);
    headers.set('mcp-session-id', id);
    return new Response(response.body, { status: response.status, headers });
  };
}
