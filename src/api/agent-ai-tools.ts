// The create endpoint's tools for an agent's AI: which model it talks to (the key sealed, never
// shown) and the limits of one orchestration run.
import { z } from 'zod';
import { AI_PROVIDERS } from '../core/agent-ai.js';
import type { KeyPrincipal } from '../services/accounts.js';
import type { AgentService } from '../services/agents.js';
import type { AgentRuntime } from '../agents/index.js';
import { configureAgentAi } from './agent-operations.js';
import { agentFields, DESTRUCTIVE, IDEMPOTENT_WRITE, type ToolRegistrar } from './tool-kit.js';

const providers = Object.keys(AI_PROVIDERS).join(', ');

export function registerAgentAiTools(
  tool: ToolRegistrar,
  ctx: { principal: KeyPrincipal; namespace: string; agents: AgentService; runtime: AgentRuntime },
): void {
  const { principal, namespace: ns, agents } = ctx;
  tool(
    'configure_agent_ai',
    {
      description:
        `Give an agent a model to orchestrate with (needs a key with the write and execute scopes: the agent then spends on the provider's account and runs functions). Providers: ${providers} ` +
        '(anthropic: Anthropic Messages; the others: OpenAI Chat Completions; openrouter, groq and ollama have default addresses, base_url overrides). ' +
        'The API key is encrypted at rest and never shown again; describe_agent shows provider, model and base_url. Configuring again replaces the settings.',
      input: z.object({
        ...agentFields,
        provider: z.string().optional().describe(`One of ${providers} (required; or give it as engine)`),
        engine: z.string().optional().describe('Same as provider'),
        model: z.string().describe('The provider\'s model name, e.g. "claude-sonnet-4-5", "gpt-4o", "llama3.1"'),
        api_key: z.string().describe("The provider's API key (any non-empty text for a local Ollama)"),
        system_prompt: z.string().optional().describe('What the agent is told before every run'),
        base_url: z.string().optional().describe('http(s) address of an OpenAI-compatible service, e.g. http://127.0.0.1:11434/v1'),
      }),
      annotations: IDEMPOTENT_WRITE,
    },
    // The key makes the agent spend money and its runs call functions: as start_agent, write and execute.
    (a) => configureAgentAi(ctx, a),
  );
  tool(
    'remove_agent_ai',
    {
      description: "Remove an agent's AI settings and its stored key; its triggers then run their functions directly (no model).",
      input: z.object(agentFields),
      annotations: DESTRUCTIVE,
    },
    async (a) => agents.ai.remove(await agents.resolve(principal, ns, a, 'write')),
  );
  tool(
    'configure_heartbeat',
    {
      description:
        "A periodic autonomous run of the agent: every interval_seconds (at least your plan's schedule gap) one replica of the running agent gives its model the instructions (reason_first; needs configure_agent_ai). enabled false turns it off. Each run is in list_agent_runs with trigger 'heartbeat'.",
      input: z.object({
        ...agentFields,
        enabled: z.boolean().describe('Turn the heartbeat on or off'),
        interval_seconds: z.number().int().optional().describe('Seconds between heartbeats (required to turn it on)'),
        instructions: z.string().optional().describe('What the model is told each time (default: check on things and summarise)'),
      }),
      annotations: IDEMPOTENT_WRITE,
    },
    // As configure_agent_ai: the heartbeat spends on the provider's account and runs functions.
    // Turning it off only stops spending: write is enough.
    async (a) =>
      agents.ai.configureHeartbeat(
        await (a.enabled === false ? agents.resolve(principal, ns, a, 'write') : agents.resolve(principal, ns, a, 'write', 'execute')),
        principal.tier,
        a,
      ),
  );
  tool(
    'configure_orchestration_limits',
    {
      description:
        "Limits of one AI run of this agent (each at most your plan's; unset ones take the plan's): model turns, tokens (input + output), seconds, function calls. " +
        'Plans: Pro 10 turns, 200k tokens, 120 s, 10 calls; Enterprise 25, 1M, 300 s, 25; Dedicated 50, 2M, 300 s, unlimited calls.',
      input: z.object({
        ...agentFields,
        max_iterations: z.number().int().optional().describe('Model turns per run'),
        max_ai_tokens: z.number().int().optional().describe('Input + output tokens per run'),
        max_execution_time: z.number().int().optional().describe('Seconds per run'),
        max_execution_seconds: z.number().int().optional().describe('Same as max_execution_time'),
        max_functions_called: z.number().int().optional().describe('Function calls per run'),
      }),
      annotations: IDEMPOTENT_WRITE,
    },
    async (a) => agents.ai.configureLimits(await agents.resolve(principal, ns, a, 'write'), principal.tier, a),
  );
}
