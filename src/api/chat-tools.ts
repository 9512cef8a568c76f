// The create endpoint's chat_with_agent: a message to a running agent with an AI, answered by one of
// its replicas; the conversation stays with that replica (src/agents/chat.ts).
import { z } from 'zod';
import type { AgentRuntime } from '../agents/index.js';
import { CHAT_MESSAGE_MAX_CHARS } from '../core/agent-chat.js';
import type { KeyPrincipal } from '../services/accounts.js';
import type { AgentService } from '../services/agents.js';
import { chatWithAgent } from './agent-operations.js';
import { agentFields, type ToolRegistrar } from './tool-kit.js';

// It runs functions and spends on the model provider's account: not read-only, not idempotent, open world.
const CHAT = { readOnlyHint: false, destructiveHint: false, idempotentHint: false, openWorldHint: true } as const;

export function registerChatTools(
  tool: ToolRegistrar,
  ctx: { principal: KeyPrincipal; namespace: string; agents: AgentService; runtime: AgentRuntime },
): void {
  const { principal, namespace: ns, agents, runtime } = ctx;
  tool(
    'chat_with_agent',
    {
      description:
        'Send a message to a running agent with an AI configured (needs a key with the execute scope: the agent may run its functions). ' +
        'One replica answers: the one named, else the least busy; the answer names it. The conversation (conversation_id) stays with that replica: pass the id back to continue it there; another replica does not see it. ' +
        `Messages of one conversation are answered one after another, in order; long histories are condensed. Message: at most ${CHAT_MESSAGE_MAX_CHARS} characters. ` +
        'Answers {response, replica, conversation_id, run_id, usage}; the run is in list_agent_runs (trigger chat).',
      input: z.object({
        ...agentFields,
        message: z.string().describe('What you tell the agent, e.g. "Summarise the newest feed items"'),
        replica: z.string().optional().describe('The replica to talk to (verb-animal name from describe_agent); default: the least busy'),
        conversation_id: z.string().optional().describe('Continue this conversation (from an earlier answer); default: a new one'),
      }),
      annotations: CHAT,
    },
    (a, call) => chatWithAgent(ctx, a, call.signal, call.cancelKey),
  );
}
