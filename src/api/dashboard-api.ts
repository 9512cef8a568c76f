// The dashboard's JSON routes for Functions and Executions, reached by the account owner's login
// session (never by an API key). The owner reaches every namespace of the account and no other:
// another account's namespace, function or execution answers not_found (404), as on the MCP
// endpoints. Writes (restore, try it) pass app.ts's cross-site checks like every /api/ route.
import type { Context, Hono } from 'hono';
import { invalid } from '../core/errors.js';
import { ownerPrincipal } from '../core/principal.js';
import { renderToolResult } from '../core/tool-render.js';
import type { KeyPrincipal } from '../services/accounts.js';
import type { CatalogService } from '../services/catalog.js';
import type { ExecutionHistory } from '../services/history.js';
import type { Rejection, RunService } from '../run/run-service.js';
import { jsonBody } from './http-errors.js';

export interface DashboardApiDeps {
  catalog: CatalogService;
  history: ExecutionHistory;
  runs: RunService;
  /** The signed-in owner's account and tier (401 without a live login session). */
  owner: (c: Context) => Promise<{ accountId: string; tier: string }>;
}

/** Namespaces, services and functions one tree answer lists at most (the tiers' limits are far below). */
const TREE_MAX_FUNCTIONS = 2000;

/** The catalog and history take a key's principal: the owner's is a key with every scope and no namespace limit. */
export function ownerKey(owner: { accountId: string; tier: string }): KeyPrincipal {
  // keyId names no key: the catalog, history and agent services never read it (only MCP sessions do).
  return { accountId: owner.accountId, tier: owner.tier, namespace: null, scopes: ['read', 'write', 'execute'], keyId: '' };
}

function positiveInteger(value: unknown, field: string): number {
  const n = typeof value === 'number' ? value : typeof value === 'string' && /^\d+$/.test(value) ? Number(value) : NaN;
  if (!Number.isInteger(n) || n < 1) throw invalid(`${field} must be a positive integer`, { field });
  return n;
}

/** A refusal of the meter (quota, rate, concurrency) as the dashboard's JSON error, with the MCP endpoint's figures. */
function rejectionJson(c: Context, rejection: Rejection, tier: string): Response {
  if (rejection.code === 'QUOTA_EXCEEDED') {
    const message = `Monthly execution limit (${rejection.limit}) exceeded`;
    return c.json(
      { error: message, error_type: 'quota_exceeded', code: rejection.code, usage: rejection.usage, limit: rejection.limit, tier },
      429,
    );
  }
  const message =
    rejection.code === 'EXECUTION_RATE_EXCEEDED'
      ? `Execution rate limit (${rejection.limit}/min) exceeded`
      : `Concurrent execution limit (${rejection.limit}) reached`;
  c.header('Retry-After', String(rejection.retryAfter));
  return c.json(
    { error: message, error_type: 'rate_limited', code: rejection.code, limit: rejection.limit, tier, retry_after: rejection.retryAfter },
    429,
  );
}

export function mountDashboardApi(app: Hono, deps: DashboardApiDeps): void {
  const { catalog, history, runs } = deps;
  const key = async (c: Context) => ownerKey(await deps.owner(c));
  const fnPath = '/api/functions/:ns/:service/:name';

  // The Functions page's tree: namespaces → services → functions (name, language, version, tags, lock).
  app.get('/api/functions', async (c) => c.json({ namespaces: await catalog.tree(await key(c), TREE_MAX_FUNCTIONS) }));

  // One function: its active version, or `?version=N` (the diff view fetches two).
  app.get(fnPath, async (c) => {
    const principal = await key(c);
    const raw = c.req.query('version');
    const version = raw === undefined ? undefined : positiveInteger(raw, 'version');
    return c.json(await catalog.describeFunction(principal, c.req.param('ns'), c.req.param('service'), c.req.param('name'), version));
  });

  // Restore: update_function's restore_version (a new version with the old code; refused while locked).
  app.post(`${fnPath}/restore`, async (c) => {
    const principal = await key(c);
    const body = await jsonBody(c);
    const version = positiveInteger(body.version, 'version');
    const restored = await catalog.updateFunction(principal, c.req.param('ns'), {
      service: c.req.param('service'),
      name: c.req.param('name'),
      restoreVersion: version,
    });
    return c.json(restored);
  });

  // Try it: the same RunService.invoke as every call (admitted against quota, rate and concurrency,
  // counted, recorded with trigger "dashboard"); the answer is the MCP tool result's texts. Its
  // snapshot looks the namespace up as the owner's: another account's is not found, unmetered.
  app.post(`${fnPath}/run`, async (c) => {
    const owner = await deps.owner(c);
    const body = await jsonBody(c);
    const input = body.input ?? {};
    if (input === null || typeof input !== 'object' || Array.isArray(input))
      throw invalid("input must be a JSON object (the function's arguments)", { field: 'input' });
    const service = c.req.param('service');
    const name = c.req.param('name');
    const ns = c.req.param('ns');
    const outcome = await runs.invoke(
      { principal: ownerPrincipal(owner), namespace: ns, env: {} },
      { kind: 'function', service, name },
      input,
      'dashboard',
      { signal: c.req.raw.signal },
    );
    if ('rejected' in outcome) return rejectionJson(c, outcome.rejected, outcome.tier);
    const rendered = outcome.rendered
      ? { isError: outcome.rendered.isError, texts: outcome.rendered.texts.map((t) => JSON.parse(t.toString('utf8')) as string) }
      : renderToolResult(outcome, false);
    return c.json({ execution_id: outcome.executionId, is_error: rendered.isError, texts: rendered.texts });
  });

  // Executions: one namespace's (`?namespace=`), or the newest of every namespace of the account (one query).
  app.get('/api/executions', async (c) => {
    const q = c.req.query();
    return c.json({ executions: await history.list(await key(c), q.namespace, q) });
  });

  app.get('/api/executions/:ns/:id', async (c) => c.json(await history.describe(await key(c), c.req.param('ns'), c.req.param('id'))));

  // Usage: this month against the quota, executions per day of the month, and the tier's limits.
  app.get('/api/usage/month', async (c) => {
    const owner = await deps.owner(c);
    const usage = await runs.usage(owner.accountId, owner.tier);
    // The days of the month the meter counts in (the database's clock, as usage.month is).
    const [year, month] = usage.month.split('-').map(Number) as [number, number];
    const since = new Date(Date.UTC(year, month - 1, 1));
    const limits = runs.tierLimits({ tier: owner.tier });
    return c.json({
      usage,
      days: await history.dailyCounts(owner.accountId, since),
      limits: {
        monthly_executions: limits.monthlyExecutions,
        executions_per_minute: limits.executionsPerMinute,
        concurrency: limits.concurrency,
        agents: limits.agents,
      },
    });
  });

  app.get('/api/security-events', async (c) => {
    const q = c.req.query();
    return c.json({ events: await history.securityEvents(await key(c), q.namespace, q.since, q.limit) });
  });
}
