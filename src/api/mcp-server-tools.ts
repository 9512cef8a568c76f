// The create endpoint's tool for an agent's attached MCP servers: Streamable HTTP only, headers
// sealed and never shown, addresses checked (src/core/mcp-servers.ts).
import { z } from 'zod';
import { MCP_SERVERS_MAX, validateMcpServers } from '../core/mcp-servers.js';
import type { KeyPrincipal } from '../services/accounts.js';
import type { AgentService } from '../services/agents.js';
import type { ToolRegistrar } from './agent-tools.js';

const WRITE = { readOnlyHint: false, destructiveHint: false, idempotentHint: true, openWorldHint: false } as const;

// Loose: a stdio server's `command` must reach the rules to be refused by name, not dropped unseen.
const server = z.looseObject({
  name: z
    .string()
    .describe('Its name for the agent: 1-32 lowercase letters, digits, _ or -; its tools reach the model as mcp__{name}__{tool}'),
  url: z
    .string()
    .optional()
    .describe(
      "The Streamable HTTP address (required), e.g. https://tools.example.com/mcp or another namespace's run endpoint /mcp/run/{ns}",
    ),
  headers: z
    .record(z.string(), z.string())
    .optional()
    .describe('Sent with every request, e.g. {"Authorization": "Bearer …"}; stored encrypted, never shown again'),
});

export function registerMcpServerTools(
  tool: ToolRegistrar,
  ctx: { principal: KeyPrincipal; namespace: string; agents: AgentService },
): void {
  const { principal, namespace: ns, agents } = ctx;
  tool(
    'configure_mcp_servers',
    {
      description:
        `Attach MCP servers to an agent: their tools are offered to its model as mcp__{server}__{tool} (needs a key with the write and execute scopes). ` +
        `Streamable HTTP servers only (no command ever runs on this host), at most ${MCP_SERVERS_MAX}; the list replaces the agent's servers, [] detaches them all. ` +
        'Headers are encrypted at rest and never shown again (describe_agent lists names, URLs and header names). ' +
        "Loopback, private, link-local, CGNAT and cloud-metadata addresses are refused unless the operator allows them; this server's run endpoints are always allowed, its create endpoints never.",
      input: z.object({
        name: z.string().optional().describe('Agent name (required; or give it as agent_name)'),
        agent_name: z.string().optional().describe("Same as name (the hosted original's spelling)"),
        servers: z.array(server).describe('The servers: [{name, url, headers?}]'),
      }),
      annotations: WRITE,
    },
    async (a) => {
      // The servers' tools run with the agent's runs and their credentials: as configure_agent_ai, write and execute.
      const agent = await agents.resolve(principal, ns, a, 'write', 'execute');
      return agents.mcp.configure(agent, validateMcpServers(a.servers));
    },
  );
}
