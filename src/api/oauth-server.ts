/**
 * The OAuth 2.1 authorization server MCP clients sign in with (the MCP authorization spec): the MCP
 * SDK's handlers do the protocol (RFC 7591 registration, /authorize with S256 PKCE and exact or
 * RFC 8252 loopback redirect matching, the token endpoint's PKCE check and grants, RFC 7009
 * revocation, RFC 6749 JSON errors); OAuthService keeps the state. The handlers are Express
 * routers: this module runs them on the Node request under Hono.
 */
import { createRequire } from 'node:module';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Context, Hono } from 'hono';
import { RESPONSE_ALREADY_SENT } from '@hono/node-server/utils/response';
import { authorizationHandler } from '@modelcontextprotocol/sdk/server/auth/handlers/authorize.js';
import { tokenHandler } from '@modelcontextprotocol/sdk/server/auth/handlers/token.js';
import { clientRegistrationHandler } from '@modelcontextprotocol/sdk/server/auth/handlers/register.js';
import { revocationHandler } from '@modelcontextprotocol/sdk/server/auth/handlers/revoke.js';
import type { OAuthServerProvider } from '@modelcontextprotocol/sdk/server/auth/provider.js';
import { OAuthError } from '@modelcontextprotocol/sdk/server/auth/errors.js';
import { SCOPES } from '../core/accounts.js';
import { DomainError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import type { OAuthService } from '../services/oauth.js';
import { jsonBody } from './http-errors.js';

export const OAUTH_PATHS = {
  authorize: '/oauth/authorize',
  token: '/oauth/token',
  register: '/oauth/register',
  revoke: '/oauth/revoke',
} as const;
export const AUTHORIZATION_SERVER_METADATA_PATH = '/.well-known/oauth-authorization-server';
/** The dashboard page an /authorize request is sent to (src/web/pages/consent.tsx). */
export const CONSENT_PAGE = '/consent';

type NodeHandler = (req: IncomingMessage, res: ServerResponse) => void;
// Express ships no types here; only these few calls are used.
interface ExpressApp {
  (req: IncomingMessage, res: ServerResponse): void;
  disable(setting: string): void;
  use(...handlers: unknown[]): void;
}

/** The origin a request reached: what issuer, endpoints and resources are named with. */
export function requestOrigin(url: string): string {
  return new URL(url).origin;
}

/** RFC 8414 metadata: this origin is the issuer; public clients (PKCE S256), the API keys' scope names. */
export function authorizationServerMetadata(origin: string): Record<string, unknown> {
  return {
    issuer: origin,
    authorization_endpoint: `${origin}${OAUTH_PATHS.authorize}`,
    token_endpoint: `${origin}${OAUTH_PATHS.token}`,
    registration_endpoint: `${origin}${OAUTH_PATHS.register}`,
    revocation_endpoint: `${origin}${OAUTH_PATHS.revoke}`,
    response_types_supported: ['code'],
    grant_types_supported: ['authorization_code', 'refresh_token'],
    code_challenge_methods_supported: ['S256'],
    token_endpoint_auth_methods_supported: ['none'],
    revocation_endpoint_auth_methods_supported: ['none'],
    scopes_supported: [...SCOPES],
  };
}

/** The SDK's provider interface over OAuthService; /authorize's answer is a redirect to the consent page. */
function providerOf(service: OAuthService): OAuthServerProvider {
  return {
    clientsStore: {
      getClient: (id) => service.getClient(id),
      registerClient: (client) => service.registerClient(client),
    },
    async authorize(client, params, res) {
      const req = (res as unknown as { req: IncomingMessage & { protocol: string } }).req;
      const origin = `${req.protocol}://${req.headers.host ?? ''}`;
      const id = await service.startAuthorization(client, params, origin);
      (res as unknown as { redirect(status: number, url: string): void }).redirect(302, `${CONSENT_PAGE}?request=${id}`);
    },
    challengeForAuthorizationCode: (client, code) => service.challengeFor(client, code),
    exchangeAuthorizationCode: (client, code, _verifier, redirectUri, resource) =>
      service.exchangeCode(client, code, redirectUri, resource),
    exchangeRefreshToken: (client, refreshToken, scopes, resource) => service.exchangeRefresh(client, refreshToken, scopes, resource),
    revokeToken: (client, request) => service.revoke(client, request.token),
    // MCP endpoints check access tokens through AccountService.authenticateRequest, as keys.
    verifyAccessToken: () => Promise.reject(new Error('access tokens are checked by the accounts service')),
  };
}

/**
 * /authorize's only redirect is to the consent page. The SDK sends parameter errors back to the
 * client's redirect URI (RFC 6749 4.1.2.1), but registration is open: anyone can register a client
 * whose redirect is their own site, so such errors would make this server an open redirector for a
 * client the user never approved. They are answered here instead (400 JSON, RFC 6749's error codes).
 */
function answerAuthorizeErrorsHere(logger: Logger) {
  return (_req: IncomingMessage, res: ServerResponse & { redirect(...args: unknown[]): void }, next: () => void) => {
    const redirect = res.redirect.bind(res);
    res.redirect = (...args: unknown[]) => {
      const target = String(args.length > 1 ? args[1] : args[0]);
      if (target.startsWith(`${CONSENT_PAGE}?`)) return redirect(...args);
      let params = new URLSearchParams();
      try {
        params = new URL(target).searchParams;
      } catch {
        // Not a URL: answered as a server error below.
      }
      const error = params.get('error') ?? 'server_error';
      if (error === 'server_error') logger.error({ error: params.get('error_description') }, 'the OAuth authorize endpoint failed');
      res.statusCode = error === 'server_error' ? 500 : 400;
      res.setHeader('content-type', 'application/json');
      res.setHeader('cache-control', 'no-store');
      res.end(
        JSON.stringify({
          error,
          error_description: error === 'server_error' ? 'the server failed' : (params.get('error_description') ?? error),
        }),
      );
    };
    next();
  };
}

/**
 * The SDK answers an unexpected (non-OAuth) error from the provider as server_error and logs nothing:
 * each is logged here by method and error class (no message: it could quote a token or a value).
 */
function loggingFailures(provider: OAuthServerProvider, logger: Logger): OAuthServerProvider {
  const logged =
    <A extends unknown[], R>(method: string, call: (...args: A) => Promise<R>) =>
    async (...args: A): Promise<R> => {
      try {
        return await call(...args);
      } catch (error) {
        if (!(error instanceof OAuthError)) {
          const code = (error as { code?: unknown }).code;
          logger.error(
            { method, error: (error as Error)?.name, ...(typeof code === 'string' ? { code } : {}) },
            'the OAuth provider failed',
          );
        }
        throw error;
      }
    };
  const store = provider.clientsStore;
  return {
    clientsStore: {
      getClient: logged('getClient', (id: string) => Promise.resolve(store.getClient(id))),
      registerClient: logged('registerClient', (client: Parameters<NonNullable<typeof store.registerClient>>[0]) =>
        Promise.resolve(store.registerClient!(client)),
      ),
    },
    authorize: logged('authorize', provider.authorize.bind(provider)),
    challengeForAuthorizationCode: logged('challengeForAuthorizationCode', provider.challengeForAuthorizationCode.bind(provider)),
    exchangeAuthorizationCode: logged('exchangeAuthorizationCode', provider.exchangeAuthorizationCode.bind(provider)),
    exchangeRefreshToken: logged('exchangeRefreshToken', provider.exchangeRefreshToken.bind(provider)),
    revokeToken: logged('revokeToken', provider.revokeToken!.bind(provider)),
    verifyAccessToken: provider.verifyAccessToken.bind(provider),
  };
}

function expressApp(service: OAuthService, logger: Logger, clientKey: (req: IncomingMessage) => string): NodeHandler {
  const express = createRequire(import.meta.url)('express') as (() => ExpressApp) & { json(options: { limit: string }): unknown };
  const app = express();
  app.disable('x-powered-by');
  const provider = loggingFailures(providerOf(service), logger);
  // Per client, in memory, keyed as the app's pacing is (behind MCPWORKS_TRUSTED_PROXIES the forwarded
  // client, not the proxy everyone shares); registration the tightest (each one is a stored row).
  const limits = (max: number) => ({ windowMs: 15 * 60_000, max, validate: false, keyGenerator: clientKey });
  app.use(OAUTH_PATHS.authorize, answerAuthorizeErrorsHere(logger));
  app.use(OAUTH_PATHS.authorize, authorizationHandler({ provider, rateLimit: limits(300) }));
  app.use(OAUTH_PATHS.token, tokenHandler({ provider, rateLimit: limits(300) }));
  // A registration is a few short fields (publicClientMetadata): 16 KB, read before the SDK's own 100 kB parser.
  app.use(OAUTH_PATHS.register, express.json({ limit: '16kb' }));
  app.use(OAUTH_PATHS.register, clientRegistrationHandler({ clientsStore: provider.clientsStore, rateLimit: limits(60) }));
  app.use(OAUTH_PATHS.revoke, revocationHandler({ provider, rateLimit: limits(300) }));
  // A body Express could not read (too large, not JSON or a form): RFC 6749's JSON error, never a stack trace.
  app.use((error: { status?: number; type?: string; message?: string }, _req: IncomingMessage, res: ServerResponse, _next: unknown) => {
    const status = typeof error.status === 'number' && error.status >= 400 && error.status < 500 ? error.status : 500;
    if (status === 500) logger.error({ err: error.message }, 'the OAuth server failed');
    res.statusCode = status;
    res.setHeader('content-type', 'application/json');
    res.setHeader('cache-control', 'no-store');
    res.end(
      JSON.stringify(
        status === 500
          ? { error: 'server_error', error_description: 'the server failed' }
          : {
              error: 'invalid_request',
              error_description: error.type === 'entity.too.large' ? 'request body too large' : 'unreadable request body',
            },
      ),
    );
  });
  return app;
}

/**
 * The protocol endpoints, answered on the Node request itself (before Hono's body limit wraps the
 * body: Express reads it, with its own 100 kB cap). `guard`: the DNS-rebinding check every route gets.
 */
export function mountOAuthProtocol(
  app: Hono,
  deps: {
    service: OAuthService;
    logger: Logger;
    guard: (c: Context) => Response | undefined;
    /** True on a `{ns}.create|run.{base}` host, where every path is the MCP endpoint. */
    onEndpointHost: (c: Context) => boolean;
    /** The client a request counts against for the rate limits (clientKeyOf of its trusted address). */
    clientKey: (req: IncomingMessage) => string;
  },
): void {
  const handler = expressApp(deps.service, deps.logger, deps.clientKey);
  for (const path of Object.values(OAUTH_PATHS)) {
    app.all(path, async (c, next) => {
      if (deps.onEndpointHost(c)) return next();
      const refused = deps.guard(c);
      if (refused) return refused;
      const node = c.env as { incoming?: IncomingMessage; outgoing?: ServerResponse } | undefined;
      if (!node?.incoming || !node.outgoing) throw new Error('the OAuth endpoints run under the Node server only');
      const { incoming, outgoing } = node;
      await new Promise<void>((resolve) => {
        outgoing.once('close', resolve);
        outgoing.once('finish', resolve);
        handler(incoming, outgoing);
      });
      // Already written: the Node server writes nothing more.
      return RESPONSE_ALREADY_SENT;
    });
  }
  // Mounted before the app-wide rebinding check, so it runs the guard itself: a rebound page must not
  // read endpoints named after the attacker's Host.
  app.get(AUTHORIZATION_SERVER_METADATA_PATH, async (c, next) => {
    if (deps.onEndpointHost(c)) return next();
    return deps.guard(c) ?? c.json(authorizationServerMetadata(requestOrigin(c.req.url)));
  });
}

/** The consent page's API and the API-keys page's list of signed-in clients (session cookie; JSON state changes). */
export function mountOAuthDashboardApi(app: Hono, deps: { service: OAuthService; sessionAccount: (c: Context) => Promise<string> }): void {
  const { service, sessionAccount } = deps;
  app.get('/api/oauth/requests/:id', async (c) => c.json(await service.describeRequest(await sessionAccount(c), c.req.param('id'))));
  app.post('/api/oauth/requests/:id', async (c) => {
    const accountId = await sessionAccount(c);
    const body = await jsonBody(c);
    return c.json({ redirect_to: await service.decide(accountId, c.req.param('id'), body) });
  });
  app.get('/api/oauth/grants', async (c) => c.json({ grants: await service.listGrants(await sessionAccount(c)) }));
  app.all('/api/oauth/*', (c) => c.json(new DomainError('not_found', `no route for ${c.req.method} ${c.req.path}`).toJSON(), 404));
}
