import { Hono, type Context } from 'hono';
import {
  hostHeaderValidationResponse,
  localhostAllowedHostnames,
  localhostAllowedOrigins,
  originValidationResponse,
} from '@modelcontextprotocol/server';
import { deleteCookie, getCookie, setCookie } from 'hono/cookie';
import { DomainError } from '../core/errors.js';
import { isValidNamespaceName } from '../core/names.js';
import type { AccountService, KeyPrincipal } from '../services/accounts.js';
import type { CatalogService } from '../services/catalog.js';
import type { AgentService } from '../services/agents.js';
import type { AgentRuntime } from '../agents/index.js';
import type { ScheduleService } from '../services/schedules.js';
import type { ExecutionHistory } from '../services/history.js';
import type { AccountsStore } from '../store/accounts-store.js';
import { bodyLimit } from './body-limit.js';
import { bodyRuleOf } from './body-rules.js';
import type { ByteBudget } from './client-pacing.js';
import { clientKeyOf } from '../core/accounts.js';
import { buildCreateServer } from './create-tools.js';
import { clientAddress } from './client-address.js';
import { errorResponse, jsonBody } from './http-errors.js';
import type { Logger } from '../core/logger.js';
import { createMcpEndpoint, type EndpointKind, type RequestScope } from './mcp-endpoint.js';
import { csrfRejection } from './same-origin.js';
import {
  bearerChallenge,
  clientRegistrationRefusal,
  isClientRegistration,
  METADATA_PATH,
  protectedResourceMetadata,
} from './oauth-answers.js';
import type { ListChangedHub } from './list-changed.js';
import type { SessionActivity } from './session-activity.js';
import { asJsonRpcRefusal } from './mcp-refusals.js';
import { runEndpointParts, type RunScopeExtra } from './run-endpoint.js';
import { ENV_HEADER, parseEnvHeader } from '../core/env-header.js';
import { cancelKeyOf, type RunService } from '../run/run-service.js';
import type { DatabaseHealth } from '../store/db-health.js';
import type { WebhookService } from '../services/webhooks.js';
import type { WebhookTrigger } from '../agents/triggers/webhook.js';
import { isAgentRequest, mountAgentRoutes } from './agents-http.js';
import { mountDashboard, type DashboardAssets } from './dashboard.js';
import { mountDashboardApi, ownerKey } from './dashboard-api.js';
import { mountDashboardAgents } from './dashboard-agents.js';
import type { OAuthService } from '../services/oauth.js';
import { AUTHORIZATION_SERVER_METADATA_PATH, mountOAuthDashboardApi, mountOAuthProtocol, OAUTH_PATHS } from './oauth-server.js';

export interface AppDependencies {
  accounts: AccountService;
  accountsStore: AccountsStore;
  catalog: CatalogService;
  agents: AgentService;
  agentRuntime: AgentRuntime;
  schedules?: ScheduleService;
  history: ExecutionHistory;
  runs: RunService;
  logger: Logger;
  version: string;
  databaseKind: string;
  /** The database's reachability and storage state (/healthz). */
  health?: DatabaseHealth;
  /** When set, `{ns}.create.{baseHost}` and `{ns}.run.{baseHost}` route to the namespace endpoints. */
  baseHost?: string | undefined;
  /** DNS-rebinding protection: which Host and Origin hostnames requests may carry. */
  hostGuard: HostGuard;
  /** Reverse proxies trusted to say, in X-Forwarded-For, whom a request is from. */
  trustedProxies?: readonly string[];
  /** Request-body bytes one client (address, IPv6 /64, forwarded client) is read a second (absent: unpaced); the server closes it. */
  bodyBudget?: ByteBudget | undefined;
  /** How often a run with a progressToken sends notifications/progress (default 10 s). */
  progressIntervalMs?: number | undefined;
  /** notifications/tools/list_changed to the run endpoint's streams (absent: no GET streams). */
  listChanged?: ListChangedHub;
  sessionActivity?: SessionActivity;
  /** add_webhook / list_webhooks / remove_webhook, and the deliveries to agents' webhook URLs. */
  webhooks?: { service: WebhookService; trigger: WebhookTrigger; maxBodyBytes: number };
  /** The built web dashboard served at `/`, `/login`, …, (absent: those pages say it was not built). */
  dashboard?: DashboardAssets | undefined;
  /** Sign-in from MCP clients (OAuth 2.1): the authorization server's state. */
  oauth: OAuthService;
}

export interface HostGuard {
  /** Check Host at all: on when the server listens on loopback or knows its public names. */
  checkHost: boolean;
  allowedHosts: string[];
  allowedOrigins: string[];
}

function hostnameOf(value: string): string {
  return value.replace(/:\d+$/, '').toLowerCase();
}

/**
 * A browser page on another site must not reach this server through DNS rebinding: a present
 * Origin must be ours (localhost, the base host and its subdomains, or configured), and so must Host.
 */
function rebindingRejection(request: Request, guard: HostGuard, baseHost: string | undefined): Response | undefined {
  const base = baseHost ? hostnameOf(baseHost) : undefined;
  const ours = (hostname: string) => !!base && (hostname === base || hostname.endsWith(`.${base}`));
  const origin = request.headers.get('origin');
  if (origin !== null) {
    let hostname = '';
    try {
      hostname = new URL(origin).hostname.toLowerCase();
    } catch {
      // Unparseable (including "null") origins are rejected below.
    }
    const allowed = [...localhostAllowedOrigins(), ...guard.allowedOrigins, ...(hostname && ours(hostname) ? [hostname] : [])];
    const rejected = originValidationResponse(request, allowed);
    if (rejected) return rejected;
  }
  if (!guard.checkHost) return undefined;
  const host = hostnameOf(request.headers.get('host') ?? '');
  const allowedHosts = [...localhostAllowedHostnames(), ...guard.allowedHosts, ...(ours(host) ? [host] : [])];
  return hostHeaderValidationResponse(request, allowedHosts);
}

export const SESSION_COOKIE = 'mcpworks_session';

function bearer(c: Context): string | undefined {
  const header = c.req.header('authorization');
  const match = header ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
  return match?.[1];
}

/** The peer's address, or the client's behind a trusted proxy (sign-in throttling keys on it). */
function remoteAddress(c: Context, trustedProxies: readonly string[] = []): string | undefined {
  const peer = (c.env as { incoming?: { socket?: { remoteAddress?: string } } } | undefined)?.incoming?.socket?.remoteAddress;
  return clientAddress(peer, c.req.header('x-forwarded-for'), trustedProxies);
}

const unauthorized = (c: Context, message: string, challenge = 'Bearer realm="mcpworks"') =>
  c.json(new DomainError('unauthorized', message).toJSON(), 401, { 'WWW-Authenticate': challenge });

/** `foo.create.example.com` → { kind: 'create', namespace: 'foo' } when baseHost is example.com. */
function subdomainRoute(host: string | undefined, baseHost: string | undefined): { kind: EndpointKind; namespace: string } | undefined {
  if (!host || !baseHost) return undefined;
  const hostname = host.replace(/:\d+$/, '').toLowerCase();
  const base = baseHost.replace(/:\d+$/, '').toLowerCase();
  for (const kind of ['create', 'run'] as const) {
    const suffix = `.${kind}.${base}`;
    if (hostname.endsWith(suffix)) return { kind, namespace: hostname.slice(0, -suffix.length) };
  }
  return undefined;
}

const OAUTH_PROTOCOL_PATHS: ReadonlySet<string> = new Set([...Object.values(OAUTH_PATHS), AUTHORIZATION_SERVER_METADATA_PATH]);

/**
 * The paths the app answers ahead of its body limit (the OAuth protocol endpoints read and cap
 * their own bodies), except on an endpoint host, where every path is the MCP endpoint: the early
 * body check in Node's request event leaves them to the app.
 */
export function aheadOfBodyLimit(path: string, host: string | undefined, baseHost: string | undefined): boolean {
  return OAUTH_PROTOCOL_PATHS.has(path) && !subdomainRoute(host, baseHost);
}

export function createApp(deps: AppDependencies): Hono {
  const { accounts, catalog, logger } = deps;
  const app = new Hono();
  const run = runEndpointParts(deps.runs, logger, deps.version, undefined, deps.progressIntervalMs);
  const sessionLimit = (principal: KeyPrincipal) => deps.runs.tierLimits(principal).mcpSessions;

  const endpoints = {
    create: createMcpEndpoint<{ signal?: AbortSignal }>({
      kind: 'create',
      accounts: deps.accountsStore,
      logger,
      sessionLimit,
      ...(deps.sessionActivity ? { sessionActivity: deps.sessionActivity } : {}),
      ...(deps.listChanged ? { listChanged: { hub: deps.listChanged, notifies: false } } : {}),
      // A 2025-era notifications/cancelled comes on a request of its own: chat_with_agent calls get it here.
      beforeDispatch: async (body, scope) => {
        await deliverChatCancels(body, scope);
        return undefined;
      },
      buildServer: (scope) =>
        buildCreateServer({
          principal: scope.principal,
          namespace: scope.namespace,
          url: scope.url,
          calls: scope.calls,
          signal: scope.extra?.signal,
          sessionId: ownedCreateSession(scope),
          catalog,
          agents: deps.agents,
          webhooks: deps.webhooks?.service,
          runtime: deps.agentRuntime,
          ...(deps.schedules ? { schedules: deps.schedules } : {}),
          history: deps.history,
          logger,
          version: deps.version,
        }),
    }),
    run: createMcpEndpoint({
      kind: 'run',
      accounts: deps.accountsStore,
      logger,
      sessionLimit,
      buildServer: run.buildServer,
      beforeDispatch: run.beforeDispatch,
      afterDispatch: run.afterDispatch,
      ...(deps.sessionActivity ? { sessionActivity: deps.sessionActivity } : {}),
      ...(deps.listChanged ? { listChanged: { hub: deps.listChanged, notifies: true } } : {}),
    }),
  } satisfies Record<EndpointKind, unknown>;

  /** The 2025-era create session this request holds (this caller's, of this namespace), if any. */
  function ownedCreateSession(scope: RequestScope<{ signal?: AbortSignal }>): string | undefined {
    const owner = scope.session?.owner;
    const owned =
      !!owner && owner.account_id === scope.principal.accountId && owner.endpoint === 'create' && owner.namespace === scope.namespace;
    return owned ? scope.session!.id : undefined;
  }

  /** notifications/cancelled in a session names its call by request id: a chat_with_agent call it names is stopped (any node). */
  async function deliverChatCancels(body: unknown, scope: RequestScope<{ signal?: AbortSignal }>): Promise<void> {
    const session = ownedCreateSession(scope);
    if (!session) return;
    for (const message of Array.isArray(body) ? body : [body]) {
      const m = message as { method?: unknown; id?: unknown; params?: { requestId?: unknown } } | null;
      if (!m || typeof m !== 'object' || m.method !== 'notifications/cancelled' || m.id !== undefined) continue;
      const requestId = m.params?.requestId;
      if (typeof requestId !== 'string' && typeof requestId !== 'number') continue;
      await deps.agentRuntime.chat.cancel(scope.principal.accountId, cancelKeyOf(session, requestId)).catch((error: unknown) => {
        logger.warn({ err: error instanceof Error ? error.message : String(error) }, 'a chat cancel could not be delivered');
      });
    }
  }

  async function serveMcp(c: Context, kind: EndpointKind, namespace: string): Promise<Response> {
    const token = bearer(c);
    if (!token) return unauthorized(c, 'missing API key: send Authorization: Bearer <key>', bearerChallenge(new URL(c.req.url), 'missing'));
    const validNamespace = isValidNamespaceName(namespace);
    const sessionId = c.req.header('mcp-session-id');
    // One round trip: the key, and what the request addresses (the run endpoint's namespace, for
    // its snapshot; a 2025-era client's session).
    const lookUp = () =>
      accounts.authenticateRequest(token, {
        ...(kind === 'run' && validNamespace ? { namespace } : {}),
        ...(sessionId ? { sessionId } : {}),
      });
    const refused = () => unauthorized(c, 'invalid, revoked or expired API key', bearerChallenge(new URL(c.req.url), 'invalid'));
    // None for a run endpoint's POST whose key (and 2025-era session, if it names one) this node
    // verified lately: it is checked by the call's admission, or looked up before anything else
    // (run-endpoint.ts, cachedKey).
    const cached =
      kind === 'run' && validNamespace && c.req.method === 'POST' ? accounts.cachedRunKey(token, namespace, sessionId) : undefined;
    // A cached key is looked up at most once a request, as without the cache: a 2025-03-26 batch's
    // parts (each served as a request of its own) share that lookup and its answer.
    let looked: ReturnType<typeof lookUp> | undefined;
    const confirm = async () => {
      const found = await (looked ??= lookUp());
      return found ? { principal: found.principal, addressed: found.addressed, session: found.session } : refused();
    };
    const auth = cached ? { ...cached, session: cached.session } : await lookUp();
    if (!auth) return refused();
    const principal: KeyPrincipal = auth.principal;
    if (!validNamespace) return c.json(new DomainError('not_found', `no MCP endpoint at ${c.req.path}`).toJSON(), 404);
    const url = new URL(c.req.url);
    const session = sessionId && auth.session !== undefined ? { session: { id: sessionId, owner: auth.session } } : {};
    if (kind === 'create')
      return endpoints.create(c.req.raw, { principal, namespace, url, extra: { signal: c.req.raw.signal }, ...session });
    const mode = url.searchParams.get('mode') ?? 'code';
    if (mode !== 'code' && mode !== 'tools') {
      return c.json(
        new DomainError('validation_error', `unknown mode ${JSON.stringify(mode)}: use ?mode=code (default) or ?mode=tools`).toJSON(),
        400,
      );
    }
    // A bad env header fails the calls that would use it (a tool error), not the connection.
    let env: Record<string, string> = {};
    let envRefused: DomainError | undefined;
    try {
      env = parseEnvHeader(c.req.header(ENV_HEADER));
    } catch (error) {
      if (!(error instanceof DomainError)) throw error;
      envRefused = error;
    }
    const extra: RunScopeExtra = {
      mode,
      env,
      ...(envRefused ? { envRefused } : {}),
      signal: c.req.raw.signal,
      ...(auth.addressed !== undefined ? { addressed: auth.addressed } : {}),
      ...(cached
        ? {
            cachedKey: { confirm },
          }
        : {}),
    };
    return endpoints.run(c.req.raw, { principal, namespace, url, extra, ...session });
  }

  app.onError((error, c) => errorResponse(c, error, logger));

  // One structured line per request: never headers or bodies (keys and env values live there).
  app.use('*', async (c, next) => {
    const started = performance.now();
    await next();
    logger.info({ method: c.req.method, path: c.req.path, status: c.res.status, ms: Math.round(performance.now() - started) }, 'request');
  });
  // On an MCP endpoint every refusal, from whichever layer below, is a JSON-RPC error (mcp-refusals.ts).
  app.use('*', async (c, next) => {
    await next();
    if (!c.req.path.startsWith('/mcp/') && !subdomainRoute(c.req.header('host'), deps.baseHost)) return;
    // An agent's webhook is called by other services, not MCP clients: its refusals stay plain JSON.
    if (isAgentRequest(c.req.path, c.req.header('host'), deps.baseHost)) return;
    const converted = await asJsonRpcRefusal(c.res);
    if (converted === c.res) return;
    // Replaced, not merged: the old answer's headers (its length among them) must not carry over.
    (c as unknown as { res: Response | undefined }).res = undefined;
    c.res = converted;
  });
  app.notFound((c) => c.json(new DomainError('not_found', `no route for ${c.req.method} ${c.req.path}`).toJSON(), 404));

  // The OAuth protocol endpoints run on the Node request (Express, the MCP SDK's handlers), which
  // reads and caps the body itself: before the body limit below wraps it.
  mountOAuthProtocol(app, {
    service: deps.oauth,
    logger,
    guard: (c) => rebindingRejection(c.req.raw, deps.hostGuard, deps.baseHost),
    onEndpointHost: (c) => !!subdomainRoute(c.req.header('host'), deps.baseHost),
    clientKey: (req) => {
      const forwarded = req.headers['x-forwarded-for'];
      return clientKeyOf(
        clientAddress(req.socket.remoteAddress, Array.isArray(forwarded) ? forwarded.join(',') : forwarded, deps.trustedProxies ?? []),
      );
    },
  });

  // Body size before anything else reads the request (authentication included), on every route.
  app.use(
    '*',
    bodyLimit(
      // The same rule as the early check in Node's request event (body-precheck.ts): webhooks get the
      // largest plan's cap here (the route holds each delivery to its own plan's), MCP endpoints a JSON-RPC 413.
      (c) => {
        const rule = bodyRuleOf(c.req.path, c.req.header('host'), {
          baseHost: deps.baseHost,
          webhookMaxBytes: deps.webhooks?.maxBodyBytes,
        });
        return {
          limit: rule.limit,
          tooLarge: () => new Response(rule.tooLarge, { status: 413, headers: { 'content-type': 'application/json' } }),
        };
      },
      // Bodies are read at most at their client's share of bytes a second, whoever else is reading.
      deps.bodyBudget ? { budget: deps.bodyBudget, client: (c) => clientKeyOf(remoteAddress(c, deps.trustedProxies)) } : undefined,
    ),
  );

  app.use('*', async (c, next) => {
    if (c.req.path === '/healthz') return next();
    return rebindingRejection(c.req.raw, deps.hostGuard, deps.baseHost) ?? next();
  });

  // PostgreSQL text cannot hold NUL: a path or query that decodes to one names nothing here, on any
  // route (refused before a parameter reaches a query and fails there).
  app.use('*', async (c, next) => {
    const url = c.req.url;
    if (!/%00|\u0000/i.test(url.slice(url.indexOf('/', url.indexOf('//') + 2)))) return next();
    return c.json(new DomainError('validation_error', 'the path and query must not contain NUL characters (%00)').toJSON(), 400);
  });

  // Agents' webhooks: /mcp/agent/{ns}/{agent}/webhook/{path} and {ns}.agent.{base}/{agent}/webhook/{path}.
  mountAgentRoutes(app, { webhooks: deps.webhooks?.trigger, baseHost: deps.baseHost });

  // Subdomain routing runs first: on `{ns}.create.{base}` every path is that namespace's endpoint.
  app.use('*', async (c, next) => {
    const route = subdomainRoute(c.req.header('host'), deps.baseHost);
    if (!route) return next();
    // The metadata its 401 names (resource_metadata) is the one other thing such a host serves.
    if (c.req.method === 'GET' && (c.req.path === METADATA_PATH || c.req.path.startsWith(`${METADATA_PATH}/`))) {
      // Signing in happens on the base host (its dashboard's session cookie is that host's).
      const url = new URL(c.req.url);
      return c.json(
        protectedResourceMetadata(`${url.origin}${c.req.path.slice(METADATA_PATH.length) || '/'}`, `${url.protocol}//${deps.baseHost}`),
      );
    }
    return serveMcp(c, route.kind, route.namespace);
  });

  // 200 `ok`, or 503 `degraded` while the database is unreachable, full or failed: a bounded check
  // that never waits on a dead connection (see DatabaseHealth.check).
  app.get('/healthz', async (c) => {
    const db = deps.health ? await deps.health.check() : { state: 'ok' as const, since: null, pending_writes: 0 };
    const ok = db.state === 'ok';
    return c.json(
      {
        status: ok ? 'ok' : 'degraded',
        version: deps.version,
        database: deps.databaseKind,
        database_state: db.state,
        database_since: db.since,
        pending_writes: db.pending_writes,
      },
      ok ? 200 : 503,
    );
  });

  // RFC 9728 metadata of an MCP endpoint (the 401's challenge names it), path-suffixed, and of the
  // server as a whole at the root (clients of the 2025-03-26 spec look there): API keys or OAuth.
  app.get(METADATA_PATH, (c) => {
    const origin = new URL(c.req.url).origin;
    return c.json(protectedResourceMetadata(origin, origin));
  });
  app.get(`${METADATA_PATH}/*`, (c) => {
    const path = c.req.path.slice(METADATA_PATH.length);
    const match = /^\/mcp\/(create|run)\/([^/]+)$/.exec(path);
    if (!match || !isValidNamespaceName(match[2]!)) return c.json(new DomainError('not_found', `no MCP endpoint at ${path}`).toJSON(), 404);
    const origin = new URL(c.req.url).origin;
    return c.json(protectedResourceMetadata(`${origin}${path}`, origin));
  });

  // Account routes (the ones a browser's session cookie reaches): state changes only as
  // same-origin JSON. They live under /api/; `/register` and `/login` stay as aliases.
  for (const path of ['/register', '/login', '/api/*']) {
    app.use(path, async (c, next) => csrfRejection(c) ?? next());
  }

  // `/register` is also OAuth's default client-registration path: such a request (RFC 7591 client
  // metadata) gets an OAuth error, never an account.
  const register = async (c: Context) => {
    const body = await jsonBody(c);
    if (isClientRegistration(body)) return clientRegistrationRefusal();
    const account = await accounts.register(body.email, body.password, undefined, { address: remoteAddress(c, deps.trustedProxies) });
    return c.json({ account_id: account.id, email: account.email, tier: account.tier }, 201);
  };
  app.post('/api/register', register);
  app.post('/register', register);

  // The session cookie: HttpOnly (no script reads it), SameSite=Strict (no other site's page or
  // link sends it; the dashboard's own requests do), Secure behind HTTPS. Cross-site forgery of a
  // state change is refused besides by csrfRejection above (origin, Sec-Fetch-Site, JSON only).
  const secureRequest = (c: Context) => new URL(c.req.url).protocol === 'https:' || c.req.header('x-forwarded-proto') === 'https';
  const sessionCookie = (c: Context, session: { token: string; expiresAt: Date }) =>
    setCookie(c, SESSION_COOKIE, session.token, {
      httpOnly: true,
      sameSite: 'Strict',
      path: '/',
      secure: secureRequest(c),
      expires: session.expiresAt,
    });
  const login = async (c: Context) => {
    const body = await jsonBody(c);
    const session = await accounts.login(body.email, body.password, { address: remoteAddress(c, deps.trustedProxies) });
    sessionCookie(c, session);
    // The dashboard asks for the cookie alone (`"session": "cookie"`): no script ever holds the token.
    const token = body.session === 'cookie' ? {} : { token: session.token };
    return c.json({ ...token, account_id: session.accountId, expires_at: session.expiresAt.toISOString() });
  };
  app.post('/api/login', login);
  app.post('/login', login);

  /** The login session of a request: the session cookie or `Authorization: Bearer <login token>`. */
  async function loginSession(c: Context): Promise<{ accountId: string; token: string }> {
    const token = getCookie(c, SESSION_COOKIE) ?? bearer(c);
    const accountId = token ? await accounts.authenticateSession(token) : undefined;
    if (!accountId || !token)
      throw new DomainError('unauthorized', 'log in first: POST /api/login, then send the session cookie or Authorization: Bearer <token>');
    return { accountId, token };
  }
  const sessionAccount = async (c: Context): Promise<string> => (await loginSession(c)).accountId;

  // Logout ends the session on the server (its token is refused from then on), not only the cookie.
  app.post('/api/logout', async (c) => {
    const token = getCookie(c, SESSION_COOKIE) ?? bearer(c);
    if (token) await accounts.logout(token);
    deleteCookie(c, SESSION_COOKIE, { path: '/', secure: secureRequest(c) });
    return c.json({ logged_out: true });
  });

  app.get('/api/account', async (c) => c.json(await accounts.describeAccount(await sessionAccount(c))));
  // The dashboard's "am I signed in?": 200 either way (a 401 would be a console error on every visit).
  app.get('/api/session', async (c) => {
    const token = getCookie(c, SESSION_COOKIE);
    const accountId = token ? await accounts.authenticateSession(token) : undefined;
    return c.json(accountId ? { signed_in: true, account: await accounts.describeAccount(accountId) } : { signed_in: false });
  });

  app.post('/api/password', async (c) => {
    const { accountId } = await loginSession(c);
    const body = await jsonBody(c);
    const session = await accounts.changePassword(accountId, body, { address: remoteAddress(c, deps.trustedProxies) });
    // Every session ended, this one included: a browser gets its new one as the cookie, a client
    // that sent its token as a Bearer gets the new token in the answer.
    if (getCookie(c, SESSION_COOKIE) !== undefined) {
      sessionCookie(c, session);
      return c.json({ changed: true, sessions_ended: true });
    }
    return c.json({ changed: true, sessions_ended: true, token: session.token, expires_at: session.expiresAt.toISOString() });
  });

  app.get('/api/namespaces', async (c) => c.json({ namespaces: await catalog.accountNamespaces(await sessionAccount(c)) }));

  app.post('/api/keys', async (c) => {
    const accountId = await sessionAccount(c);
    const body = await jsonBody(c);
    return c.json(await accounts.createKey(accountId, body), 201);
  });

  app.get('/api/keys', async (c) => c.json({ keys: await accounts.listKeys(await sessionAccount(c)) }));

  app.delete('/api/keys/:id', async (c) => {
    await accounts.revokeKey(await sessionAccount(c), c.req.param('id'));
    return c.json({ revoked: c.req.param('id') });
  });

  // The consent page's requests and the signed-in clients on the API-keys page (revoked as keys are).
  mountOAuthDashboardApi(app, { service: deps.oauth, sessionAccount });

  // Functions, Executions (the dashboard's pages): the owner's session reaches the account's namespaces.
  mountDashboardApi(app, {
    catalog,
    history: deps.history,
    runs: deps.runs,
    owner: async (c) => {
      const { tier, account_id } = await accounts.describeAccount(await sessionAccount(c));
      return { accountId: account_id, tier };
    },
  });

  // Agents (the dashboard's page): the create endpoint's agent tools' code, as the owner.
  mountDashboardAgents(app, {
    catalog,
    agents: deps.agents,
    runtime: deps.agentRuntime,
    schedules: deps.schedules,
    webhooks: deps.webhooks?.service,
    owner: async (c) => {
      const { tier, account_id } = await accounts.describeAccount(await sessionAccount(c));
      return ownerKey({ accountId: account_id, tier });
    },
  });

  app.all('/mcp/create/:namespace', (c) => serveMcp(c, 'create', c.req.param('namespace')));
  app.all('/mcp/run/:namespace', (c) => serveMcp(c, 'run', c.req.param('namespace')));

  /**
   * Usage for the current month: by login session or by API key. The numbers are the account's,
   * across all its namespaces: a key needs the `read` scope and no namespace limit to see them.
   */
  app.get('/api/usage', async (c) => {
    const token = getCookie(c, SESSION_COOKIE) ?? bearer(c);
    let accountId: string | undefined;
    let tier: string | undefined;
    if (token?.startsWith('mcpw_')) {
      const principal = await accounts.authenticateKey(token);
      if (principal && !principal.scopes.includes('read')) throw new DomainError('forbidden', "this API key lacks the 'read' scope");
      if (principal && principal.namespace !== null) {
        throw new DomainError(
          'forbidden',
          `this API key is limited to namespace '${principal.namespace}'; usage is account-wide: use a key without a namespace limit or a login session`,
        );
      }
      accountId = principal?.accountId;
      tier = principal?.tier;
    } else if (token) {
      accountId = await accounts.authenticateSession(token);
    }
    if (!accountId) return unauthorized(c, 'send a session cookie, a login token or an API key');
    return c.json(await deps.runs.usage(accountId, tier));
  });

  mountDashboard(app, deps.dashboard);

  return app;
}
