// The dashboard's Agents routes, reached by the account owner's login session (never an API key).
// Every one calls what the create endpoint's agent tools call (agent-operations.ts and the agent,
// schedule and webhook services), as the owner: a principal with every scope and no namespace
// limit. So the plan's agent slots and replicas cap, the sealing of the AI key and tenancy hold as
// on the MCP endpoint: another account's namespace or agent is not found. Writes pass app.ts's
// cross-site checks like every /api/ route.
import type { Context, Hono } from 'hono';
import type { AgentRuntime } from '../agents/index.js';
import { AI_PROVIDERS } from '../core/agent-ai.js';
import { invalid } from '../core/errors.js';
import type { CatalogService } from '../services/catalog.js';
import type { AgentArgs, AgentService } from '../services/agents.js';
import type { KeyPrincipal } from '../services/accounts.js';
import type { ScheduleService } from '../services/schedules.js';
import type { WebhookService } from '../services/webhooks.js';
import {
  type AgentScope,
  chatWithAgent,
  configureAgentAi,
  describeAgentInFull,
  describeAgentRun,
  listAgentRuns,
  scaleAgent,
  startAgent,
  stopAgent,
} from './agent-operations.js';
import { jsonBody } from './http-errors.js';

export interface DashboardAgentsDeps {
  catalog: CatalogService;
  agents: AgentService;
  runtime: AgentRuntime;
  schedules?: ScheduleService | undefined;
  webhooks?: WebhookService | undefined;
  /** The signed-in owner as a key principal with every scope (401 without a live login session). */
  owner: (c: Context) => Promise<KeyPrincipal>;
}

/** Characters of a state value's JSON the page is sent at most (a value may be megabytes); the rest is cut with a marker. */
export const STATE_VIEW_MAX_CHARS = 16 * 1024;

/** A state value as the page shows it: its JSON, indented, cut at STATE_VIEW_MAX_CHARS. */
export function stateValueView(value: unknown): { text: string; truncated: boolean } {
  const text = JSON.stringify(value, null, 2) ?? 'null';
  if (text.length <= STATE_VIEW_MAX_CHARS) return { text, truncated: false };
  let end = STATE_VIEW_MAX_CHARS;
  if (/[\uD800-\uDBFF]/.test(text[end - 1]!)) end--;
  return { text: `${text.slice(0, end)}\n[… cut at ${STATE_VIEW_MAX_CHARS} characters of ${text.length}]`, truncated: true };
}

/** A query's positive integer (limit), or undefined when absent. */
function queryInteger(value: string | undefined, field: string): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d{1,9}$/.test(value)) throw invalid(`${field} must be a positive integer`, { field });
  return Number(value);
}

export function mountDashboardAgents(app: Hono, deps: DashboardAgentsDeps): void {
  const { agents, runtime } = deps;
  const base = '/api/agents/:ns/:agent';

  /** The tools' scope for the owner in the route's namespace; the webhooks' URLs on this origin (or the base host). */
  const scopeOf = async (c: Context): Promise<AgentScope> => ({
    principal: await deps.owner(c),
    namespace: c.req.param('ns')!,
    agents,
    runtime,
    schedules: deps.schedules,
    webhooks: deps.webhooks ? { service: deps.webhooks, url: new URL(c.req.url) } : undefined,
  });
  /** The tool's arguments: the body's, with the agent named by the path (never by the body). */
  const args = (c: Context, extra: Record<string, unknown> = {}): AgentArgs => {
    const { agent_name: _ignored, ...rest } = extra;
    return { ...rest, name: c.req.param('agent') };
  };

  // Every agent of every namespace of the account (list_agents' fields), in two queries however many namespaces.
  app.get('/api/agents', async (c) => {
    const principal = await deps.owner(c);
    const [names, all] = await Promise.all([deps.catalog.listNamespaces(principal), agents.accountAgents(principal)]);
    const namespaces = names.map((ns) => ({
      name: ns.name,
      agents: all.filter((agent) => agent.namespace === ns.name).map(({ namespace: _, ...agent }) => agent),
    }));
    // The providers configure_agent_ai accepts, for the page's AI form.
    return c.json({ namespaces, ai_providers: Object.keys(AI_PROVIDERS) });
  });

  // make_agent (stopped, one replica: one agent slot).
  app.post('/api/agents/:ns', async (c) => {
    const principal = await deps.owner(c);
    const body = await jsonBody(c);
    return c.json(await agents.makeAgent(principal, c.req.param('ns'), { name: body.name, description: body.description }), 201);
  });

  // describe_agent: replicas, schedules with their next fire, webhooks with full URLs, AI (never its key), recent runs.
  app.get(base, async (c) => c.json(await describeAgentInFull(await scopeOf(c), args(c))));

  app.post(`${base}/start`, async (c) => c.json(await startAgent(await scopeOf(c), args(c, await jsonBody(c)))));
  app.post(`${base}/stop`, async (c) => c.json(await stopAgent(await scopeOf(c), args(c, await jsonBody(c)))));
  app.post(`${base}/scale`, async (c) => c.json(await scaleAgent(await scopeOf(c), args(c, await jsonBody(c)))));

  // configure_agent_ai: provider, model, api_key (sealed), base_url, system_prompt. The answer has no key.
  app.post(`${base}/ai`, async (c) => c.json(await configureAgentAi(await scopeOf(c), args(c, await jsonBody(c)))));

  // chat_with_agent: the named replica or the least busy answers; the answer names it. A closed page cancels it.
  app.post(`${base}/chat`, async (c) => {
    const body = await jsonBody(c);
    return c.json(await chatWithAgent(await scopeOf(c), args(c, body), c.req.raw.signal));
  });

  // list_schedule_fires: the recent fires of the agent's schedules.
  app.get(`${base}/fires`, async (c) => {
    const scope = await scopeOf(c);
    const limit = queryInteger(c.req.query('limit'), 'limit');
    // Without a schedule service there are no fires, but another account's agent is still not found.
    const fires = deps.schedules
      ? await deps.schedules.listFires(scope.principal, scope.namespace, args(c, limit === undefined ? {} : { limit }))
      : await agents.resolve(scope.principal, scope.namespace, args(c), 'read').then(() => []);
    return c.json({ fires });
  });

  // list_agent_state_keys (never the values), a page at a time.
  app.get(`${base}/state`, async (c) => {
    const scope = await scopeOf(c);
    const q = c.req.query();
    const limit = queryInteger(q.limit, 'limit');
    return c.json(
      await agents.listStateKeys(
        scope.principal,
        scope.namespace,
        args(c, {
          ...(q.after !== undefined ? { after: q.after } : {}),
          ...(q.prefix !== undefined ? { prefix: q.prefix } : {}),
          ...(limit !== undefined ? { limit } : {}),
        }),
      ),
    );
  });

  // get_agent_state for one key (`?key=`: keys may hold "/"), its JSON cut at STATE_VIEW_MAX_CHARS.
  app.get(`${base}/state-value`, async (c) => {
    const scope = await scopeOf(c);
    const { value, ...rest } = await agents.getState(scope.principal, scope.namespace, args(c, { key: c.req.query('key') }));
    return c.json({ ...rest, ...stateValueView(value) });
  });

  // list_agent_runs, and one run with its function executions and the model's tool calls.
  app.get(`${base}/runs`, async (c) => {
    const q = c.req.query();
    const limit = queryInteger(q.limit, 'limit');
    return c.json(
      await listAgentRuns(
        await scopeOf(c),
        args(c, { ...(q.before !== undefined ? { before: q.before } : {}), ...(limit !== undefined ? { limit } : {}) }),
      ),
    );
  });
  app.get(`${base}/runs/:run`, async (c) => c.json(await describeAgentRun(await scopeOf(c), args(c, { run_id: c.req.param('run') }))));
}
