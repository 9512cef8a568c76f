import { McpServer } from '@modelcontextprotocol/server';
import { z } from 'zod';
import { packagesByCategory } from '../core/python-packages.js';
import { pythonInventory } from '../sandbox/index.js';
import { findTemplate, TEMPLATES } from '../core/templates.js';
import { DomainError } from '../core/errors.js';
import { cancelKeyOf } from '../run/run-service.js';
import { TOOL_NAME_BUDGET } from '../core/names.js';
import { suggestion } from '../core/suggest.js';
import type { KeyPrincipal } from '../services/accounts.js';
import type { CatalogService } from '../services/catalog.js';
import type { AgentService } from '../services/agents.js';
import type { AgentRuntime } from '../agents/index.js';
import { registerAgentAiTools } from './agent-ai-tools.js';
import { registerChatTools } from './chat-tools.js';
import { registerMcpServerTools } from './mcp-server-tools.js';
import { registerAgentRuntimeTools } from './agent-runtime-tools.js';
import type { ScheduleService } from '../services/schedules.js';
import { registerScheduleTools } from './schedule-tools.js';
import { registerAgentTools } from './agent-tools.js';
import type { WebhookService } from '../services/webhooks.js';
import { registerWebhookTools } from './webhook-tools.js';
import type { ExecutionHistory } from '../services/history.js';
import type { Logger } from '../core/logger.js';
import { refuseUnknownTools } from './unknown-tools.js';
import { defineTool, type ToolCallContext, type ToolDefinition } from './tool-schema.js';
import { DESTRUCTIVE, IDEMPOTENT_WRITE, READ_ONLY, WRITE } from './tool-kit.js';

export interface CreateToolsContext {
  principal: KeyPrincipal;
  namespace: string;
  catalog: CatalogService;
  agents: AgentService;
  /** add_webhook, list_webhooks, remove_webhook (absent: not offered). */
  webhooks?: WebhookService | undefined;
  runtime: AgentRuntime;
  schedules?: ScheduleService;
  history: ExecutionHistory;
  logger: Logger;
  version: string;
  /** The request's URL: make_namespace answers the new namespace's URLs in the same form. */
  url?: URL;
  /** The tool names the request calls: an unknown one is answered with the available tools. */
  calls?: readonly string[] | undefined;
  /** The HTTP request's signal: aborted when the client closes the connection before the answer. */
  signal?: AbortSignal | undefined;
  /** The 2025-era session of this caller the request came in (its notifications/cancelled name calls by it). */
  sessionId?: string | undefined;
}

/** A namespace's endpoints as the caller reaches this one: by path, or by subdomain (`{ns}.create.{base}`). */
function namespaceUrls(url: URL | undefined, current: string, name: string): { create_url: string; run_url: string } {
  if (!url) return { create_url: `/mcp/create/${name}`, run_url: `/mcp/run/${name}` };
  const prefix = `${current}.create.`;
  if (!url.pathname.startsWith('/mcp/') && url.host.startsWith(prefix)) {
    const base = url.host.slice(prefix.length);
    return { create_url: `${url.protocol}//${name}.create.${base}/`, run_url: `${url.protocol}//${name}.run.${base}/` };
  }
  return { create_url: `${url.origin}/mcp/create/${name}`, run_url: `${url.origin}/mcp/run/${name}` };
}

const jsonSchemaObject = z.record(z.string(), z.unknown());

const serviceArg = z.string().describe('Service name (a folder of functions), e.g. "utils"');
const functionArg = z.string().describe('Function name, e.g. "hello-world"; hyphens become underscores in code mode');

// The versioned fields shared by make_function and update_function.
const definitionFields = {
  code: z
    .string()
    .optional()
    .describe(
      'Source code (max 1 MB). Python: define main(input_data) returning a JSON value (or set `result`/`output`). TypeScript: `export default function main(input)` (may be async).',
    ),
  language: z.enum(['python', 'typescript']).optional().describe('Language of `code` (default python)'),
  backend: z.enum(['code_sandbox']).optional().describe('Execution engine; only "code_sandbox" exists (default)'),
  config: jsonSchemaObject.nullable().optional().describe('Free-form JSON configuration stored with the version'),
  input_schema: jsonSchemaObject
    .nullable()
    .optional()
    .describe('JSON Schema of the input object, e.g. {"type":"object","properties":{"name":{"type":"string"}}}'),
  output_schema: jsonSchemaObject.nullable().optional().describe('JSON Schema of the returned value; checked on every run'),
  requirements: z
    .array(z.string())
    .optional()
    .describe(
      'Python: names from list_packages (aliases like bs4, yaml, sklearn, PIL work). TypeScript: npm packages ("name" or "name@version"), installed when the version is created',
    ),
  required_env: z
    .array(z.string())
    .optional()
    .describe('Environment variable names the function needs (values arrive per request in the X-MCPWorks-Env header), e.g. ["API_TOKEN"]'),
  optional_env: z.array(z.string()).optional().describe('Environment variable names the function can use when present'),
  description: z.string().optional().describe('What the function does; shown to AI assistants that call it'),
  tags: z.array(z.string()).optional().describe('Labels for filtering with list_functions'),
};

function definitionInput(args: Record<string, unknown>) {
  return {
    service: args.service,
    name: args.name,
    code: args.code,
    language: args.language,
    backend: args.backend,
    config: args.config,
    inputSchema: args.input_schema,
    outputSchema: args.output_schema,
    requirements: args.requirements,
    requiredEnv: args.required_env,
    optionalEnv: args.optional_env,
    description: args.description,
    tags: args.tags,
    template: args.template,
    restoreVersion: args.restore_version,
  };
}

/** Builds the create-endpoint MCP server for one caller and one namespace path. */
export function buildCreateServer(ctx: CreateToolsContext): McpServer {
  const { principal, namespace: ns, catalog, logger } = ctx;
  const server = new McpServer(
    { name: `mcpworks-create-${ns}`, version: ctx.version },
    {
      instructions:
        `Management endpoint of MCPWorks namespace "${ns}". Create services (folders) and Python or TypeScript functions ` +
        `that AI assistants run through the run endpoint (/mcp/run/${ns}). Start with list_services; make_namespace if "${ns}" does not exist yet.`,
    },
  );
  const names: string[] = [];
  const tool = <S extends z.ZodObject>(
    name: string,
    definition: ToolDefinition<S>,
    body: (args: Record<string, unknown>, call: ToolCallContext) => Promise<unknown>,
  ) => {
    names.push(name);
    return defineTool(server, logger, name, definition, (args, call) => {
      // The MCP layer's cancel, or the connection closed (a 2026-era cancel closes the call's stream).
      const signals = [call.signal, ctx.signal].filter((x): x is AbortSignal => x !== undefined);
      // A 2025-era notifications/cancelled comes on another request: it names the call by session and request id.
      const cancelKey =
        ctx.sessionId !== undefined && call.requestId !== undefined ? cancelKeyOf(ctx.sessionId, call.requestId) : undefined;
      return body(args as Record<string, unknown>, {
        ...(signals.length > 0 ? { signal: AbortSignal.any(signals) } : {}),
        ...(cancelKey ? { cancelKey } : {}),
      });
    });
  };

  tool(
    'make_namespace',
    {
      description:
        'Create a new namespace (your top-level unit; each gets /mcp/create/{name} and /mcp/run/{name}). Names: 1-63 lowercase letters, digits, hyphens; start and end with a letter or digit. Works even when the current URL names a namespace that does not exist yet.',
      input: z.object({ name: z.string().describe('Namespace name, e.g. "demo"'), description: z.string().optional() }),
      annotations: WRITE,
    },
    async (a) => {
      const made = await catalog.makeNamespace(principal, a.name, a.description);
      const answer: Record<string, unknown> = { ...made, ...namespaceUrls(ctx.url, ns, made.name) };
      if (made.name !== ns) {
        answer.note = `This connection still acts on namespace '${ns}' (the one in its URL). To manage '${made.name}', connect an MCP client to create_url; its functions run at run_url.`;
      }
      return answer;
    },
  );
  tool('list_namespaces', { description: 'List all namespaces of your account.', input: z.object({}), annotations: READ_ONLY }, () =>
    catalog.listNamespaces(principal),
  );
  tool(
    'make_service',
    {
      description: `Create a service (a folder of functions) in namespace "${ns}". Names: start with a letter; lowercase letters, digits, '-' and '_'; at most 31 characters. Keep it short: tool mode names each function \`{service}__{function}\`, at most ${TOOL_NAME_BUDGET} characters (clients add a prefix, and models refuse tool names over 64); the answer's max_function_name says how long this service's function names may be.`,
      input: z.object({ name: z.string().describe('Service name, e.g. "utils"'), description: z.string().optional() }),
      annotations: WRITE,
    },
    (a) => catalog.makeService(principal, ns, a.name, a.description),
  );
  tool(
    'list_services',
    {
      description: `List the services of namespace "${ns}" with name, description, function_count and call_count.`,
      input: z.object({}),
      annotations: READ_ONLY,
    },
    () => catalog.listServices(principal, ns),
  );
  tool(
    'delete_service',
    {
      description: 'Delete a service and all its functions and versions permanently. Refused while any of its functions is locked.',
      input: z.object({ name: serviceArg }),
      annotations: DESTRUCTIVE,
    },
    (a) => catalog.deleteService(principal, ns, a.name),
  );
  tool(
    'make_function',
    {
      description:
        "Create a function (version 1) in a service. Give `code`, or `template` (see list_templates) to clone a template's code, schemas, tags and requirements; explicit fields override the template. " +
        "Python contract: the global dict `input_data` holds the arguments; the output is main(input_data)'s return value, else a global `result`, else `output`. " +
        'TypeScript contract: export default (or named) function main(input), may be async. ' +
        `Its tool-mode name \`{service}__{function}\` may have at most ${TOOL_NAME_BUDGET} characters.`,
      input: z.object({
        service: serviceArg,
        name: functionArg,
        template: z
          .enum(TEMPLATES.map((t) => t.name) as [string, ...string[]])
          .optional()
          .describe('Start from a template'),
        ...definitionFields,
      }),
      annotations: WRITE,
    },
    (a) => catalog.makeFunction(principal, ns, definitionInput(a)),
  );
  tool(
    'update_function',
    {
      description:
        'Update a function. Changing code, config, schemas, requirements, language or env declarations creates a new immutable version (v2, v3, …) that becomes active; changing only description/tags updates metadata without a new version. ' +
        '`restore_version: N` copies version N into a new version. Refused while the function is locked.',
      input: z.object({
        service: serviceArg,
        name: functionArg,
        restore_version: z.number().int().positive().optional().describe('Copy this earlier version into a new active version'),
        ...definitionFields,
      }),
      annotations: WRITE,
    },
    (a) => catalog.updateFunction(principal, ns, definitionInput(a)),
  );
  tool(
    'delete_function',
    {
      description: 'Delete a function and all its versions permanently. Refused while the function is locked.',
      input: z.object({ service: serviceArg, name: functionArg }),
      annotations: DESTRUCTIVE,
    },
    (a) => catalog.deleteFunction(principal, ns, a.service, a.name),
  );
  tool(
    'list_functions',
    {
      description:
        'List the functions of a service (name, description, tags, language, active version, locked), optionally only those with a tag.',
      input: z.object({ service: serviceArg, tag: z.string().optional().describe('Only functions carrying this tag') }),
      annotations: READ_ONLY,
    },
    (a) => catalog.listFunctions(principal, ns, a.service, a.tag),
  );
  tool(
    'describe_function',
    {
      description:
        "Full details of a function: code, input/output schemas, requirements, env declarations, lock state and every version (number, date, hash). Shows the active version's code unless `version` is given.",
      input: z.object({
        service: serviceArg,
        name: functionArg,
        version: z.number().int().positive().optional().describe("Show this version's code and schemas"),
      }),
      annotations: READ_ONLY,
    },
    (a) => catalog.describeFunction(principal, ns, a.service, a.name, a.version),
  );
  tool(
    'list_packages',
    {
      description:
        'List the Python packages functions may use in `requirements`, grouped by category, with the installed version of each and the Python version; `available: false` marks allow-listed packages this server cannot provide.',
      input: z.object({}),
      annotations: READ_ONLY,
    },
    async () => {
      const inventory = await pythonInventory();
      return {
        python_version: inventory.python,
        python: packagesByCategory(inventory.versions),
        aliases: {
          bs4: 'beautifulsoup4',
          yaml: 'pyyaml',
          sklearn: 'scikit-learn',
          PIL: 'pillow',
          dateutil: 'python-dateutil',
          jwt: 'pyjwt',
          psycopg2: 'psycopg2-binary',
        },
        typescript: 'Any npm package: list it in `requirements` ("name" or "name@version"); it is installed when the version is created.',
        node_version: process.versions.node,
      };
    },
  );
  tool(
    'list_templates',
    { description: 'List the function templates (name, description, requirements).', input: z.object({}), annotations: READ_ONLY },
    async () =>
      TEMPLATES.map((t) => ({
        name: t.name,
        description: t.description,
        language: t.language,
        requirements: t.requirements,
        tags: t.tags,
      })),
  );
  tool(
    'describe_template',
    {
      description: 'Full details of a template: code, input/output schemas, tags, requirements.',
      input: z.object({ name: z.string().describe('Template name, e.g. "hello-world"') }),
      annotations: READ_ONLY,
    },
    async (a) => {
      const template = typeof a.name === 'string' ? findTemplate(a.name) : undefined;
      if (!template) {
        const hint = suggestion(
          String(a.name),
          TEMPLATES.map((t) => t.name),
          'templates',
        );
        throw new DomainError('not_found', `template ${JSON.stringify(a.name)} not found.${hint.text}`, hint.details);
      }
      const { inputSchema, outputSchema, ...rest } = template;
      return { ...rest, input_schema: inputSchema, output_schema: outputSchema };
    },
  );
  tool(
    'lock_function',
    {
      description: 'Lock a function: update_function and delete_function (and deleting its service) are refused until unlock_function.',
      input: z.object({ service: serviceArg, name: functionArg }),
      annotations: IDEMPOTENT_WRITE,
    },
    (a) => catalog.setLocked(principal, ns, a.service, a.name, true),
  );
  tool(
    'unlock_function',
    {
      description: 'Unlock a locked function so it can be updated or deleted again.',
      input: z.object({ service: serviceArg, name: functionArg }),
      annotations: IDEMPOTENT_WRITE,
    },
    (a) => catalog.setLocked(principal, ns, a.service, a.name, false),
  );
  tool(
    'list_executions',
    {
      description:
        'Execution history of this namespace, newest first: id, mode, function(s) and version, status, error type, duration, bytes out. Filter by function ("name" or "service.name"), status ("success"/"error"/"interrupted": the server stopped before the run ended; "cancelled": the client cancelled it; neither is counted) and since (ISO date-time).',
      input: z.object({
        function: z.string().optional().describe('e.g. "is-prime" or "math.is-prime"'),
        status: z.enum(['success', 'error', 'interrupted', 'cancelled']).optional(),
        since: z.string().optional().describe('ISO 8601 date-time, e.g. 2026-11-01T00:00:00Z'),
        limit: z.number().int().min(1).max(200).optional().describe('At most this many (default 50)'),
      }),
      annotations: READ_ONLY,
    },
    (a) => ctx.history.list(principal, ns, a),
  );
  tool(
    'describe_execution',
    {
      description:
        'One execution in full, with its logs (stdout, stderr) and error message; secrets were redacted before they were stored.',
      input: z.object({ id: z.string().describe('Execution id from list_executions') }),
      annotations: READ_ONLY,
    },
    (a) => ctx.history.describe(principal, ns, a.id),
  );
  tool(
    'list_security_events',
    {
      description:
        "Security events of this namespace, newest first: e.g. a secret found in a function's output and redacted (which function, which kind of secret; never the value).",
      input: z.object({ since: z.string().optional(), limit: z.number().int().min(1).max(200).optional() }),
      annotations: READ_ONLY,
    },
    (a) => ctx.history.securityEvents(principal, ns, a.since, a.limit),
  );
  registerAgentTools(tool, {
    principal,
    namespace: ns,
    agents: ctx.agents,
    runtime: ctx.runtime,
    webhooks: ctx.webhooks ? { service: ctx.webhooks, url: ctx.url ?? new URL(`http://localhost/mcp/create/${ns}`) } : undefined,
    ...(ctx.schedules ? { schedules: ctx.schedules } : {}),
  });
  registerAgentRuntimeTools(tool, { principal, namespace: ns, agents: ctx.agents, runtime: ctx.runtime });
  if (ctx.webhooks)
    registerWebhookTools(tool, {
      principal,
      namespace: ns,
      webhooks: ctx.webhooks,
      url: ctx.url ?? new URL(`http://localhost/mcp/create/${ns}`),
    });
  if (ctx.schedules) registerScheduleTools(tool, { principal, namespace: ns, schedules: ctx.schedules });
  registerAgentAiTools(tool, { principal, namespace: ns, agents: ctx.agents, runtime: ctx.runtime });
  registerChatTools(tool, { principal, namespace: ns, agents: ctx.agents, runtime: ctx.runtime });
  registerMcpServerTools(tool, { principal, namespace: ns, agents: ctx.agents });
  refuseUnknownTools(server, ns, ctx.calls ?? [], names);
  return server;
}
