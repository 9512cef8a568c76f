// What the create endpoint's agent tools do, as functions of the caller and the namespace: the tools
// (agent-tools.ts, agent-runtime-tools.ts, agent-ai-tools.ts, chat-tools.ts) and the dashboard's
// Agents routes (dashboard-agents.ts) both call these, so both enforce the same scopes, plan limits
// (agent slots, replicas), sealing of the AI key and tenancy.
import type { AgentRuntime } from '../agents/index.js';
import { REPLICA_NAME_PATTERN } from '../core/agents.js';
import { invalid } from '../core/errors.js';
import { validateReplicaCount } from '../core/replicas.js';
import type { KeyPrincipal } from '../services/accounts.js';
import type { AgentArgs, AgentService } from '../services/agents.js';
import type { ScheduleService } from '../services/schedules.js';
import type { WebhookService } from '../services/webhooks.js';

export interface AgentScope {
  principal: KeyPrincipal;
  namespace: string;
  agents: AgentService;
  runtime: AgentRuntime;
  schedules?: ScheduleService | undefined;
  /** The agent's webhooks with their full URLs (the origin of `url`, or the base host). */
  webhooks?: { service: WebhookService; url: URL } | undefined;
}

/** `replica`: a replica's verb-animal name (undefined: none given). */
export function replicaNameArg(value: unknown): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || !REPLICA_NAME_PATTERN.test(value))
    throw invalid('replica must be a replica name as describe_agent lists them, e.g. "daring-duck"', { field: 'replica' });
  return value;
}

/** describe_agent: the agent, its replicas, schedules (next fire), webhooks (full URLs) and recent runs. */
export async function describeAgentInFull(scope: AgentScope, a: AgentArgs) {
  const { principal, namespace: ns, agents, runtime } = scope;
  const described = await agents.describeAgent(principal, ns, a);
  const agent = await agents.resolve(principal, ns, a, 'read');
  const [replicas, recent] = await Promise.all([runtime.replicas.list(agent.id), runtime.runs.recent(agent)]);
  const hooks = scope.webhooks ? (await scope.webhooks.service.listWebhooks(principal, ns, a, scope.webhooks.url)).webhooks : undefined;
  const schedules = scope.schedules ? await scope.schedules.schedulesOf(agent) : undefined;
  return { ...described, replicas, ...(schedules ? { schedules } : {}), ...(hooks ? { webhooks: hooks } : {}), recent_runs: recent };
}

/** start_agent: write and execute (its functions then run as the agent). */
export async function startAgent(scope: AgentScope, a: AgentArgs) {
  const replica = replicaNameArg(a.replica);
  const agent = await scope.agents.resolve(scope.principal, scope.namespace, a, 'write', 'execute');
  return { agent: agent.name, ...(await scope.runtime.replicas.start(agent, replica)) };
}

export async function stopAgent(scope: AgentScope, a: AgentArgs) {
  const replica = replicaNameArg(a.replica);
  const agent = await scope.agents.resolve(scope.principal, scope.namespace, a, 'write');
  return { agent: agent.name, ...(await scope.runtime.replicas.stop(agent, replica)) };
}

/** `replicas` (the guide), or `count`; the same value when both are given. */
function countArg(args: AgentArgs): unknown {
  if (args.replicas !== undefined && args.count !== undefined && args.replicas !== args.count)
    throw invalid("give the count as 'replicas' or 'count', not two different numbers", { field: 'replicas' });
  const value = args.replicas ?? args.count;
  if (value === undefined)
    throw invalid("'replicas' is required: how many replicas the agent should have (0 or more)", { field: 'replicas' });
  return value;
}

/** scale_agent: the plan's agent slots and the replicas cap apply (the slot count is taken under the account's lock). */
export async function scaleAgent(scope: AgentScope, a: AgentArgs) {
  const { principal, agents } = scope;
  const desired = validateReplicaCount(countArg(a));
  const agent = await agents.resolve(principal, scope.namespace, a, 'write');
  return scope.runtime.replicas.scale(agent, desired, {
    accountId: principal.accountId,
    tier: principal.tier,
    limits: agents.planLimits(principal),
  });
}

/** configure_agent_ai: the key sealed at rest, never answered; write and execute (it spends and runs functions). */
export async function configureAgentAi(scope: AgentScope, a: AgentArgs) {
  const agent = await scope.agents.resolve(scope.principal, scope.namespace, a, 'write', 'execute');
  return scope.agents.ai.configure(agent, a);
}

/** chat_with_agent: the named replica or the least busy answers, and the answer names it. */
export async function chatWithAgent(scope: AgentScope, a: AgentArgs, signal: AbortSignal | undefined, cancelKey?: string) {
  const { principal } = scope;
  return scope.runtime.chat.send(
    await scope.agents.resolve(principal, scope.namespace, a, 'execute'),
    a,
    signal,
    cancelKey ? { accountId: principal.accountId, key: cancelKey } : undefined,
  );
}

export async function listAgentRuns(scope: AgentScope, a: AgentArgs) {
  return scope.runtime.runs.list(await scope.agents.resolve(scope.principal, scope.namespace, a, 'read'), a);
}

/** describe_agent_run: the run with its function executions and the model's tool calls. */
export async function describeAgentRun(scope: AgentScope, a: AgentArgs) {
  return scope.runtime.runs.describe(await scope.agents.resolve(scope.principal, scope.namespace, a, 'read'), a);
}
