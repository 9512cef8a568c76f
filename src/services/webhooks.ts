import type { Scope } from '../core/accounts.js';
import { validateAgentName } from '../core/agents.js';
import { DomainError, invalid } from '../core/errors.js';
import { suggestion } from '../core/suggest.js';
import {
  validateHandlerName,
  validateOrchestrationMode,
  validateWebhookPath,
  validateWebhookSecret,
  WEBHOOKS_PER_AGENT,
} from '../core/webhooks.js';
import { SIGNATURE_WINDOW_SECONDS } from '../core/webhook-signature.js';
import type { AgentsStore } from '../store/agents-store.js';
import type { AgentRow, NamespaceRow } from '../store/schema.js';
import type { WebhookRow, WebhooksStore } from '../store/webhooks-store.js';
import type { KeyPrincipal } from './accounts.js';
import type { CatalogService } from './catalog.js';
import type { BoundCipher } from './state-cipher.js';

type Args = Record<string, unknown>;

/** What a webhook's secret is sealed under: its own label and the webhook's id. */
export const secretContext = (webhookId: string): [string, string] => ['webhook-secret', webhookId];

function requireScope(principal: KeyPrincipal, scope: Scope): void {
  if (!principal.scopes.includes(scope)) throw new DomainError('forbidden', `this API key lacks the '${scope}' scope`);
}

/** The agent as `name` or the hosted original's `agent_name` (the same value when both are given). */
function agentNameArg(args: Args): string {
  if (args.name !== undefined && args.agent_name !== undefined && args.name !== args.agent_name)
    throw invalid("give the agent as 'name' or 'agent_name', not two different names", { field: 'name' });
  const chosen = args.name ?? args.agent_name;
  if (chosen === undefined) throw invalid("'name' is required: the agent's name", { field: 'name' });
  return validateAgentName(chosen, args.name !== undefined ? 'name' : 'agent_name');
}

/** `handler_function_name`, or `function_name` (add_schedule's spelling) for the same thing. */
function handlerArg(args: Args) {
  const value = args.handler_function_name ?? args.function_name;
  if (args.handler_function_name !== undefined && args.function_name !== undefined && args.handler_function_name !== args.function_name)
    throw invalid("give the handler as 'handler_function_name' or 'function_name', not two different names", {
      field: 'handler_function_name',
    });
  if (value === undefined)
    throw invalid('\'handler_function_name\' is required: the function ("service.function") each delivery runs', {
      field: 'handler_function_name',
    });
  return validateHandlerName(value, args.handler_function_name !== undefined ? 'handler_function_name' : 'function_name');
}

/** Where a webhook is served: the path form, and the subdomain form under MCPWORKS_BASE_HOST. */
export interface WebhookUrls {
  /** `{origin}/mcp/agent/{ns}/{agent}/webhook/{path}` */
  url: string;
  /** `{scheme}://{ns}.agent.{base}/{agent}/webhook/{path}` when a base host is configured. */
  subdomain_url?: string;
}

/**
 * The public URLs of a webhook. The origin is the base host when one is configured (a request that came
 * in on `{ns}.create.{base}` must not be given a URL on that host: every path there is the MCP endpoint),
 * else the origin the create request came to.
 */
export function webhookUrls(requestUrl: URL, baseHost: string | undefined, ns: string, agent: string, path: string): WebhookUrls {
  const scheme = requestUrl.protocol;
  const origin = baseHost ? `${scheme}//${baseHost}` : requestUrl.origin;
  return {
    url: `${origin}/mcp/agent/${ns}/${agent}/webhook/${path}`,
    ...(baseHost ? { subdomain_url: `${scheme}//${ns}.agent.${baseHost}/${agent}/webhook/${path}` } : {}),
  };
}

/** add_webhook, list_webhooks, remove_webhook on the create endpoint. */
export class WebhookService {
  constructor(
    private readonly store: WebhooksStore,
    private readonly agents: AgentsStore,
    private readonly catalog: CatalogService,
    private readonly cipher: BoundCipher,
    private readonly baseHost: string | undefined,
  ) {}

  private async agent(ns: NamespaceRow, name: string): Promise<AgentRow> {
    const row = await this.agents.findAgent(ns.id, name);
    if (row) return row;
    const hint = suggestion(name, await this.agents.agentNames(ns.id), `agents in namespace '${ns.name}'`);
    throw new DomainError(
      'not_found',
      `agent '${name}' not found in namespace '${ns.name}'; create it with make_agent.${hint.text}`,
      hint.details,
    );
  }

  private shown(ns: NamespaceRow, agent: AgentRow, row: WebhookRow, url: URL) {
    return {
      path: row.path,
      handler_function_name: row.handler_function,
      orchestration_mode: row.orchestration_mode,
      signed: row.secret_sealed !== null,
      ...webhookUrls(url, this.baseHost, ns.name, agent.name, row.path),
      created_at: new Date(row.created_at).toISOString(),
    };
  }

  async addWebhook(principal: KeyPrincipal, nsName: string, args: Args, url: URL) {
    requireScope(principal, 'write');
    // A webhook runs functions as the agent whenever it is called: the key must be allowed to run code.
    requireScope(principal, 'execute');
    const ns = await this.catalog.namespace(principal, nsName);
    const name = agentNameArg(args);
    const path = validateWebhookPath(args.path);
    const handler = handlerArg(args);
    const secret = validateWebhookSecret(args.secret);
    const mode = validateOrchestrationMode(args.orchestration_mode);
    const agent = await this.agent(ns, name);
    // The handler must exist now (it may change later; a delivery to a missing one fails as a run).
    await this.catalog.describeFunction(principal, nsName, handler.service, handler.fn, undefined);
    const added = await this.store.add(
      agent.id,
      {
        path,
        handlerFunction: handler.name,
        orchestrationMode: mode,
        seal: secret === undefined ? undefined : (id) => this.cipher.seal(secretContext(id), secret),
      },
      WEBHOOKS_PER_AGENT,
    );
    if ('exists' in added)
      throw new DomainError('conflict', `agent '${agent.name}' already has a webhook at path '${path}'; remove_webhook it first`, {
        field: 'path',
      });
    if ('full' in added)
      throw new DomainError('limit_exceeded', `agent '${agent.name}' has ${added.full} webhooks, the most one agent may have`, {
        resource: 'webhooks',
        limit: WEBHOOKS_PER_AGENT,
        usage: added.full,
      });
    const shown = this.shown(ns, agent, added.row, url);
    return {
      agent: agent.name,
      ...shown,
      ...(secret === undefined
        ? {
            warning:
              'This webhook has no secret: anyone who has its URL can call it and run your function. Add one (remove_webhook, then add_webhook with secret) to require signed deliveries.',
          }
        : {
            signing: `Each delivery must carry X-MCPWorks-Timestamp (unix seconds, within ${SIGNATURE_WINDOW_SECONDS} s of the server's clock) and X-MCPWorks-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<raw body>" under the secret>; a signature is accepted once. The secret is stored encrypted and never shown again.`,
          }),
      ...(agent.status !== 'running' ? { note: `agent '${agent.name}' is ${agent.status}: deliveries get 503 until start_agent` } : {}),
    };
  }

  async listWebhooks(principal: KeyPrincipal, nsName: string, args: Args, url: URL) {
    requireScope(principal, 'read');
    const ns = await this.catalog.namespace(principal, nsName);
    const agent = await this.agent(ns, agentNameArg(args));
    const rows = await this.store.list(agent.id);
    return { agent: agent.name, webhooks: rows.map((r) => this.shown(ns, agent, r, url)) };
  }

  async removeWebhook(principal: KeyPrincipal, nsName: string, args: Args) {
    requireScope(principal, 'write');
    const ns = await this.catalog.namespace(principal, nsName);
    const agent = await this.agent(ns, agentNameArg(args));
    const path = validateWebhookPath(args.path);
    if (!(await this.store.remove(agent.id, path))) {
      const hint = suggestion(
        path,
        (await this.store.list(agent.id)).map((r) => r.path),
        `webhook paths of agent '${agent.name}'`,
      );
      throw new DomainError('not_found', `agent '${agent.name}' has no webhook at path '${path}'.${hint.text}`, hint.details);
    }
    return { removed: path, agent: agent.name };
  }
}
