// The create endpoint's tools that run agents: start and stop, and the record of their trigger runs.
import { z } from 'zod';
import type { AgentRuntime } from '../agents/index.js';
import type { KeyPrincipal } from '../services/accounts.js';
import type { AgentService } from '../services/agents.js';
import { describeAgentRun, listAgentRuns, scaleAgent, startAgent, stopAgent } from './agent-operations.js';
import { agentFields, IDEMPOTENT_WRITE, READ_ONLY, type ToolRegistrar } from './tool-kit.js';

const replicaField = z.string().optional().describe('Only this replica (its verb-animal name, e.g. "daring-duck"); default: every replica');

export function registerAgentRuntimeTools(
  tool: ToolRegistrar,
  ctx: { principal: KeyPrincipal; namespace: string; agents: AgentService; runtime: AgentRuntime },
): void {
  tool(
    'start_agent',
    {
      description:
        'Start an agent (needs a key with the write and execute scopes: its functions then run as the agent): each of its replicas (up to its replica count, each with a verb-animal name it keeps for life) runs as its own worker process on a server node and runs its schedules and webhooks. ' +
        'With `replica`, start only that replica. A crashed replica is restarted with the same name, backing off if it keeps crashing. Answers the replicas and their status (running once their process is up).',
      input: z.object({ ...agentFields, replica: replicaField }),
      annotations: IDEMPOTENT_WRITE,
    },
    // Starting makes functions run as the agent: the key must be allowed to run code, not only to write.
    (a) => startAgent(ctx, a),
  );
  tool(
    'stop_agent',
    {
      description:
        'Stop an agent: its replicas stop taking triggers (schedules do not fire, webhooks answer 503); a replica running a job finishes it first (status "stopping"), then its process ends. ' +
        'With `replica`, stop only that replica; the others keep running. Names, slots, state and configuration are kept.',
      input: z.object({ ...agentFields, replica: replicaField }),
      annotations: IDEMPOTENT_WRITE,
    },
    (a) => stopAgent(ctx, a),
  );
  tool(
    'scale_agent',
    {
      description:
        'Set how many replicas an agent has (0 or more; each takes one agent slot of your plan: Pro 5, Enterprise 20, Dedicated unlimited; 0 frees them all). ' +
        'New replicas get new verb-animal names; scaling down removes the newest first (LIFO), keeping the oldest, and each removed replica finishes its current run first.',
      input: z.object({
        ...agentFields,
        replicas: z.number().int().min(0).optional().describe('The replica count (required; or give it as count), e.g. 3'),
        count: z.number().int().min(0).optional().describe('Same as replicas'),
      }),
      annotations: IDEMPOTENT_WRITE,
    },
    (a) => scaleAgent(ctx, a),
  );
  tool(
    'list_agent_runs',
    {
      description:
        "An agent's trigger runs, newest first: trigger (schedule, webhook, chat, heartbeat) and its name, replica, function, status (running, succeeded, failed, cancelled, rejected by quota/rate/concurrency), error and duration. Pages of `limit` (default 20); pass next_before as `before` for older runs.",
      input: z.object({
        ...agentFields,
        status: z.enum(['running', 'succeeded', 'failed', 'cancelled', 'rejected']).optional().describe('Only runs with this status'),
        trigger: z.enum(['schedule', 'webhook', 'chat', 'heartbeat']).optional().describe('Only runs of this trigger'),
        before: z.string().max(512).optional().describe('next_before of the previous page'),
        limit: z.number().int().min(1).max(200).optional().describe('At most this many runs (1-200, default 20)'),
      }),
      annotations: READ_ONLY,
    },
    (a) => listAgentRuns(ctx, a),
  );
  tool(
    'describe_agent_run',
    {
      description:
        'One trigger run of an agent: what started it, the replica, status, error, timing, and each function execution it made (execution_id: see describe_execution).',
      input: z.object({
        ...agentFields,
        run_id: z.string().max(128).describe("A run id from list_agent_runs (or a webhook's 202 answer)"),
      }),
      annotations: READ_ONLY,
    },
    (a) => describeAgentRun(ctx, a),
  );
}
