/**
 * An agent's attached MCP servers in agents.config.mcp_servers (issue 16): name, url and the
 * headers sealed with the state cipher under [agentId, 'mcp-headers:{server}'], opened only when a
 * connection needs them; never answered, never logged.
 */
import { DomainError, invalid } from '../core/errors.js';
import { parseServerUrl, publicMcpServers, refusal, type McpServerInput, type StoredMcpServer } from '../core/mcp-servers.js';
import type { AgentsStore } from '../store/agents-store.js';
import type { AgentRow } from '../store/schema.js';
import { openSecret, sealSecret, type StateCipher } from './state-cipher.js';

/** A server with its headers opened, for the connection only. */
export interface OpenMcpServer {
  name: string;
  url: string;
  headers: Record<string, string>;
  /** Changes whenever the stored server does (a new seal each time): a cached connection of an older one is not reused. */
  version: string;
}

const purpose = (server: string) => `mcp-headers:${server}`;

function storedServers(config: Record<string, unknown> | null | undefined): StoredMcpServer[] {
  const list = config?.mcp_servers;
  return Array.isArray(list) ? (list as StoredMcpServer[]) : [];
}

/** Refuses a server's URL whose address an agent may not reach (throws with the reason). */
export type McpAddressCheck = (url: string) => Promise<void>;

/** Without the composition root's check (which resolves names): addresses written in the URL only. */
const literalCheck: McpAddressCheck = async (url) => {
  const target = parseServerUrl(url);
  const why = target.literal ? refusal(target, target.literal, { allow: [] }) : undefined;
  if (why) throw new Error(why);
};

export class AgentMcpServers {
  constructor(
    private readonly store: AgentsStore,
    private readonly cipher: StateCipher,
  ) {}

  /**
   * Each URL's address checked before it is stored (the composition root sets the resolving check
   * with the operator's list and this server's address; every connection is checked again).
   */
  addressCheck: McpAddressCheck = literalCheck;

  /** Replaces the agent's servers (an empty list detaches them all) under its row lock. */
  async configure(agent: AgentRow, servers: McpServerInput[]) {
    for (const [index, server] of servers.entries()) {
      try {
        await this.addressCheck(server.url);
      } catch (error) {
        const field = `servers[${index}].url`;
        throw invalid(`${field} refused: ${(error as Error).message}`, { field });
      }
    }
    const now = new Date().toISOString();
    const stored: StoredMcpServer[] = servers.map((s) => {
      const names = Object.keys(s.headers);
      return {
        name: s.name,
        url: s.url,
        header_names: names,
        ...(names.length ? { headers_sealed: sealSecret(this.cipher, agent.id, purpose(s.name), JSON.stringify(s.headers)) } : {}),
        configured_at: now,
      };
    });
    const config = await this.store.withAgentLock(agent.id, async (trx, locked) => {
      if (!locked) throw new DomainError('not_found', `agent '${agent.name}' not found`);
      const { mcp_servers: _old, ...rest } = locked.config ?? {};
      const next = stored.length ? { ...rest, mcp_servers: stored } : rest;
      await this.store.setConfig(trx, locked.id, next);
      return next;
    });
    return { agent: agent.name, mcp_servers: publicMcpServers(config.mcp_servers), detached: stored.length === 0 };
  }

  /** For the connection: the agent's servers with their headers opened. */
  open(agent: Pick<AgentRow, 'id' | 'config'>): OpenMcpServer[] {
    return storedServers(agent.config).map((s) => ({
      name: s.name,
      url: s.url,
      headers: s.headers_sealed
        ? (JSON.parse(openSecret(this.cipher, agent.id, purpose(s.name), s.headers_sealed)) as Record<string, string>)
        : {},
      version: `${s.url}\u0000${s.configured_at}\u0000${s.headers_sealed ?? ''}`,
    }));
  }

  /** clone_agent: each server's headers sealed again for the copy (sealed under the source's id, they would not open there). */
  resealFor(config: Record<string, unknown>, fromId: string, toId: string): Record<string, unknown> {
    const list = storedServers(config);
    if (!list.some((s) => s.headers_sealed)) return config;
    return {
      ...config,
      mcp_servers: list.map((s) =>
        s.headers_sealed
          ? {
              ...s,
              headers_sealed: sealSecret(
                this.cipher,
                toId,
                purpose(s.name),
                openSecret(this.cipher, fromId, purpose(s.name), s.headers_sealed),
              ),
            }
          : s,
      ),
    };
  }
}
