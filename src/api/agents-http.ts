import type { Context, Hono } from 'hono';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import { DomainError } from '../core/errors.js';
import type { WebhookTrigger } from '../agents/triggers/webhook.js';
import { BodyTooLargeError, readCappedBody } from './body-limit.js';

export interface WebhookRoute {
  namespace: string;
  agent: string;
  path: string;
}

const PATH_FORM = /^\/mcp\/agent\/([^/]+)\/([^/]+)\/webhook\/([^/]+)\/?$/;
const SUBDOMAIN_PATH = /^\/([^/]+)\/webhook\/([^/]+)\/?$/;

/**
 * An agent webhook's URL: `/mcp/agent/{ns}/{agent}/webhook/{path}` on any host, or
 * `/{agent}/webhook/{path}` on `{ns}.agent.{base}` when MCPWORKS_BASE_HOST is set. Segments are
 * matched as sent (the rules allow nothing that needs escaping, so an escaped one matches no webhook).
 */
export function webhookRoute(pathname: string, host: string | undefined, baseHost: string | undefined): WebhookRoute | undefined {
  const path = PATH_FORM.exec(pathname);
  if (path) return { namespace: path[1]!, agent: path[2]!, path: path[3]! };
  if (!host || !baseHost) return undefined;
  const hostname = host.replace(/:\d+$/, '').toLowerCase();
  const suffix = `.agent.${baseHost.replace(/:\d+$/, '').toLowerCase()}`;
  if (!hostname.endsWith(suffix)) return undefined;
  const sub = SUBDOMAIN_PATH.exec(pathname);
  return sub ? { namespace: hostname.slice(0, -suffix.length), agent: sub[1]!, path: sub[2]! } : undefined;
}

/** Any request on an agent host (`{ns}.agent.{base}`) or under /mcp/agent/: answered here, never as an MCP endpoint. */
export function isAgentRequest(pathname: string, host: string | undefined, baseHost: string | undefined): boolean {
  if (pathname.startsWith('/mcp/agent/')) return true;
  if (!host || !baseHost) return false;
  return host
    .replace(/:\d+$/, '')
    .toLowerCase()
    .endsWith(`.agent.${baseHost.replace(/:\d+$/, '').toLowerCase()}`);
}

/**
 * The agents' public HTTP routes (no API key: a webhook's URL, and its secret when it has one, are
 * the credentials): POST to a webhook runs its handler through the agent dispatcher.
 */
export function mountAgentRoutes(app: Hono, deps: { webhooks: WebhookTrigger | undefined; baseHost: string | undefined }): void {
  app.use('*', async (c, next) => {
    const host = c.req.header('host');
    if (!isAgentRequest(c.req.path, host, deps.baseHost)) return next();
    const route = webhookRoute(c.req.path, host, deps.baseHost);
    if (!route || !deps.webhooks) return c.json(new DomainError('not_found', `no route for ${c.req.method} ${c.req.path}`).toJSON(), 404);
    if (c.req.method !== 'POST')
      return c.json(new DomainError('validation_error', 'a webhook takes POST').toJSON(), 405, { allow: 'POST' });
    return deliver(c, route, deps.webhooks);
  });
}

async function deliver(c: Context, route: WebhookRoute, webhooks: WebhookTrigger): Promise<Response> {
  const url = new URL(c.req.url);
  const answer = await webhooks.deliver({
    ...route,
    headers: c.req.raw.headers,
    query: url.searchParams,
    readBody: (limit) => readCappedBody(c.req.raw, limit),
    isTooLarge: (error) => error instanceof BodyTooLargeError,
  });
  const headers: Record<string, string> = { ...answer.headers };
  // An unread (or cut-off) body is not drained: the connection ends with the answer.
  if (answer.close) headers.connection = 'close';
  return c.json(answer.body, answer.status as ContentfulStatusCode, headers);
}
