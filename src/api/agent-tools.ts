import { z } from 'zod';
import { STATE_VALUE_MAX_BYTES } from '../core/agents.js';
import type { KeyPrincipal } from '../services/accounts.js';
import type { AgentService } from '../services/agents.js';
import type { AgentRuntime } from '../agents/index.js';
import { describeAgentInFull, replicaNameArg } from './agent-operations.js';
import type { ScheduleService } from '../services/schedules.js';
import type { WebhookService } from '../services/webhooks.js';
import { agentFields, DESTRUCTIVE, READ_ONLY, type ToolRegistrar, WRITE } from './tool-kit.js';

export type { ToolRegistrar } from './tool-kit.js';

const replicaArg = z.string().describe("A replica's verb-animal name, as describe_agent lists them");
const keyArg = z.string().describe('State key: 1-256 characters, no control characters, e.g. "last_run" or "feeds/hn"');
const ifVersion = z
  .number()
  .int()
  .min(0)
  .optional()
  .describe(
    'Compare-and-swap: act only if the key is at this version now (0: only if it does not exist yet); otherwise a conflict error and nothing changes',
  );

/** The agent tools of the create endpoint (lifecycle and state; running them arrives with the runtime). */
export function registerAgentTools(
  tool: ToolRegistrar,
  ctx: {
    principal: KeyPrincipal;
    namespace: string;
    agents: AgentService;
    runtime: AgentRuntime;
    /** describe_agent lists the agent's webhooks (with full URLs, as list_webhooks does) when given. */
    webhooks?: { service: WebhookService; url: URL } | undefined;
    schedules?: ScheduleService;
  },
): void {
  const { principal, namespace: ns, agents, runtime } = ctx;
  tool(
    'make_agent',
    {
      description:
        `Create an autonomous agent in namespace "${ns}" (stopped, 1 replica). Its functions are this namespace's functions (service.function). ` +
        'Names: 1-31 lowercase letters, digits and single hyphens, starting with a letter. Each replica takes one agent slot of your plan (Pro 5, Enterprise 20, Dedicated unlimited); the answer shows slots used.',
      input: z.object({
        ...agentFields,
        description: z.string().optional().describe('What the agent is for'),
        display_name: z.string().optional().describe("Same as description (the hosted original's spelling)"),
      }),
      annotations: WRITE,
    },
    (a) => agents.makeAgent(principal, ns, a),
  );
  tool(
    'list_agents',
    {
      description: `List the agents of namespace "${ns}": name, description, status, desired replicas, state keys and bytes.`,
      input: z.object({}),
      annotations: READ_ONLY,
    },
    () => agents.listAgents(principal, ns),
  );
  tool(
    'describe_agent',
    {
      description:
        'Details of an agent: description, status, desired replicas, its replicas (name, status, started, restarts, last exit), its schedules (next fire; why one is disabled), its webhooks (path, handler, signed, full URLs), config, its state (key count, bytes), recent runs, and the limits that apply (agent slots used and allowed, state bytes per agent, largest state value, shortest schedule interval).',
      input: z.object(agentFields),
      annotations: READ_ONLY,
    },
    (a) => describeAgentInFull(ctx, a),
  );
  tool(
    'destroy_agent',
    {
      description:
        'Permanently delete an agent and all its state, freeing its agent slots. With replica: remove only that replica (after its current run) and lower the count by one.',
      input: z.object({ ...agentFields, replica: replicaArg.optional().describe('Remove only this replica, e.g. "daring-duck"') }),
      annotations: DESTRUCTIVE,
    },
    async (a) => {
      if (a.replica === undefined) return agents.destroyAgent(principal, ns, a);
      const agent = await agents.resolve(principal, ns, a, 'write');
      return runtime.replicas.remove(agent, replicaNameArg(a.replica)!, {
        accountId: principal.accountId,
        limits: agents.planLimits(principal),
      });
    },
  );
  tool(
    'clone_agent',
    {
      description:
        'Copy an agent under a new name in this namespace: description, config, replica count and schedules (stopped: its schedules run once it is started). Its state is copied only with include_state: true, in pages: until the answer the copy has status "cloning" (state tools refuse it), each key is copied as it is when its page is, so writes to the source meanwhile may or may not be in the copy; if the copy fails it is removed. Takes agent slots like make_agent.',
      input: z.object({
        ...agentFields,
        new_name: z.string().describe('Name of the copy (same rules as make_agent)'),
        include_state: z.boolean().optional().describe('Copy every state key and value too (default false)'),
      }),
      annotations: WRITE,
    },
    (a) => agents.cloneAgent(principal, ns, a),
  );
  tool(
    'get_agent_state',
    {
      description: "Read one key of an agent's persistent state: its JSON value, version (for if_version) and size.",
      input: z.object({ ...agentFields, key: keyArg }),
      annotations: READ_ONLY,
    },
    (a) => agents.getState(principal, ns, a),
  );
  tool(
    'set_agent_state',
    {
      description:
        `Write one key of an agent's persistent state (any JSON value, at most ${STATE_VALUE_MAX_BYTES / (1024 * 1024)} MB as JSON text; the agent's state total is capped by your plan: Pro 100 MB, Enterprise 1 GB, Dedicated unlimited). ` +
        "Values are encrypted at rest and survive restarts. Each write bumps the key's version; give if_version to write only if nobody changed it meanwhile.",
      input: z.object({
        ...agentFields,
        key: keyArg,
        value: z.unknown().describe('Any JSON value (objects, arrays, strings, numbers, booleans, null)'),
        if_version: ifVersion,
      }),
      annotations: WRITE,
    },
    (a) => agents.setState(principal, ns, a),
  );
  tool(
    'delete_agent_state',
    {
      description: "Delete one key of an agent's persistent state (with if_version: only if it is at that version).",
      input: z.object({ ...agentFields, key: keyArg, if_version: ifVersion }),
      annotations: DESTRUCTIVE,
    },
    (a) => agents.deleteState(principal, ns, a),
  );
  tool(
    'list_agent_state_keys',
    {
      description:
        "List the keys of an agent's state in order (version, size, updated), never the values. Pages of `limit` (default 100); pass the answer's next_after as `after` for the next page.",
      input: z.object({
        ...agentFields,
        prefix: z.string().optional().describe('Only keys starting with this'),
        after: z.string().optional().describe('Only keys after this one (next_after of the previous page)'),
        limit: z.number().int().min(1).max(1000).optional().describe('At most this many keys (1-1000, default 100)'),
      }),
      annotations: READ_ONLY,
    },
    (a) => agents.listStateKeys(principal, ns, a),
  );
}
