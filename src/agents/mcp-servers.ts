/**
 * An agent's attached MCP servers, reached with the official MCP SDK client over Streamable HTTP
 * (issue 16). Every request goes through the agents' outbound guard (outbound-guard.ts: the
 * address resolved, every answer checked, the connection pinned to it, redirects not followed).
 * Connections are cached per agent and server, a bounded number, and dropped when the server's
 * settings change or a call fails.
 */
import { Client, SdkHttpError, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';
import type { Logger } from '../core/logger.js';
import type { OpenMcpServer } from '../services/agent-mcp-servers.js';
import type { AttachedTool, AttachedToolSource } from './orchestration/toolbox.js';
import { OUTBOUND_RESPONSE_MAX_BYTES, type OutboundAddressGuard } from './outbound-guard.js';

export type { AttachedTool, AttachedToolSource } from './orchestration/toolbox.js';

/** A tool result's text sent on (the toolbox caps and scans it again for the model). */
export const MCP_RESULT_MAX_CHARS = 100_000;
/** One response body from an attached server (a JSON answer or an SSE stream's whole life). */
export const MCP_RESPONSE_MAX_BYTES = OUTBOUND_RESPONSE_MAX_BYTES;
/** Tools taken from one server. */
export const MCP_TOOLS_PER_SERVER = 128;
const LIST_PAGES = 8;
/** One server's listing (connect included) at most this long, within the caller's signal. */
const LIST_TIMEOUT_MS = 20_000;
/** The SDK's own bound of one call, within the caller's signal (which normally ends first). */
const CALL_TIMEOUT_MS = 600_000;
const ERROR_MAX_CHARS = 500;

interface Connection {
  version: string;
  client: Promise<Client>;
}

export interface McpServerSourceOptions {
  /** purpose 'mcp' */
  guard: OutboundAddressGuard;
  /** The agent's servers with their headers opened (none for an agent that is gone). */
  servers: (agentId: string) => Promise<OpenMcpServer[]>;
  logger: Logger;
  /** The client's version in its initialize request. */
  version: string;
  /** Connections kept open at most (least recently used closed first). */
  maxConnections?: number;
}

/** A message for the model or the log: bounded, one line. */
function reason(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  return text.replace(/\s+/g, ' ').slice(0, ERROR_MAX_CHARS);
}

/** A tool result's content as text: text items joined, other kinds named, capped. */
export function resultText(result: { content?: unknown; structuredContent?: unknown }): string {
  const items = Array.isArray(result.content) ? (result.content as Array<Record<string, unknown>>) : [];
  const parts = items.map((item) => {
    if (item.type === 'text' && typeof item.text === 'string') return item.text;
    const resource = item.resource as Record<string, unknown> | undefined;
    if (item.type === 'resource' && typeof resource?.text === 'string') return resource.text;
    return `[${typeof item.type === 'string' ? item.type : 'content'} omitted]`;
  });
  if (parts.length === 0 && result.structuredContent !== undefined) parts.push(JSON.stringify(result.structuredContent));
  const text = parts.join('\n');
  return text.length > MCP_RESULT_MAX_CHARS
    ? `${text.slice(0, MCP_RESULT_MAX_CHARS)}\n[… cut at ${MCP_RESULT_MAX_CHARS} characters]`
    : text;
}

/** AttachedToolSource over the official SDK client. */
export class McpServerSource implements AttachedToolSource {
  /** Insertion order is use order: the first entry is the least recently used. */
  private readonly connections = new Map<string, Connection>();
  private readonly max: number;

  constructor(private readonly options: McpServerSourceOptions) {
    this.max = options.maxConnections ?? 64;
  }

  /** The agent's servers; one whose headers do not open (another server secret) is logged and left out. */
  private async servers(agentId: string): Promise<OpenMcpServer[]> {
    try {
      return await this.options.servers(agentId);
    } catch (error) {
      this.options.logger.warn({ agent_id: agentId, reason: reason(error) }, "agent's attached MCP servers could not be read");
      return [];
    }
  }

  /** The header values the agent's servers are sent, each also without its scheme word ('Bearer x': x too). */
  async secrets(agentId: string): Promise<string[]> {
    const servers = await this.servers(agentId);
    return servers.flatMap((s) => Object.values(s.headers).flatMap((value) => [value, ...value.split(/\s+/).filter(Boolean)]));
  }

  async list(agentId: string, signal: AbortSignal): Promise<AttachedTool[]> {
    const servers = await this.servers(agentId);
    const lists = await Promise.all(
      servers.map(async (server) => {
        const bounded = AbortSignal.any([signal, AbortSignal.timeout(LIST_TIMEOUT_MS)]);
        try {
          return await this.listOne(agentId, server, bounded);
        } catch (error) {
          this.drop(agentId, server.name);
          if (signal.aborted) throw signal.reason;
          this.options.logger.warn(
            { agent_id: agentId, mcp_server: server.name, host: hostOf(server.url), reason: reason(error) },
            'attached MCP server left out of the run: its tools could not be listed',
          );
          return [];
        }
      }),
    );
    return lists.flat();
  }

  /**
   * A kept connection may have outlived its session on the server (idle expiry, evicted for the
   * key's cap, a restart): work that fails on it is tried once more on a new connection. A call
   * only when the server said it does not know the session (HTTP 404: the call did not run).
   */
  private async withConnection<T>(
    agentId: string,
    server: OpenMcpServer,
    signal: AbortSignal,
    work: (client: Client) => Promise<T>,
    retry: (error: unknown) => boolean,
  ): Promise<T> {
    const { client, reused } = this.connection(agentId, server, signal);
    try {
      return await work(await client);
    } catch (error) {
      this.drop(agentId, server.name);
      if (!reused || signal.aborted || !retry(error)) throw error;
      return await work(await this.connection(agentId, server, signal).client);
    }
  }

  private async listOne(agentId: string, server: OpenMcpServer, signal: AbortSignal): Promise<AttachedTool[]> {
    return this.withConnection(
      agentId,
      server,
      signal,
      (client) => this.listWith(client, server, signal),
      () => true,
    );
  }

  private async listWith(client: Client, server: OpenMcpServer, signal: AbortSignal): Promise<AttachedTool[]> {
    const tools: AttachedTool[] = [];
    let cursor: string | undefined;
    for (let page = 0; page < LIST_PAGES && tools.length < MCP_TOOLS_PER_SERVER; page++) {
      const answer = await client.listTools(cursor ? { cursor } : {}, { signal, timeout: LIST_TIMEOUT_MS });
      for (const tool of answer.tools) {
        if (tools.length >= MCP_TOOLS_PER_SERVER) break;
        tools.push({
          server: server.name,
          tool: tool.name,
          description: tool.description ?? '',
          inputSchema: (tool.inputSchema ?? { type: 'object' }) as Record<string, unknown>,
        });
      }
      cursor = answer.nextCursor;
      if (!cursor) break;
    }
    return tools;
  }

  async call(agentId: string, serverName: string, tool: string, args: Record<string, unknown>, signal: AbortSignal) {
    const server = (await this.servers(agentId)).find((s) => s.name === serverName);
    if (!server) return { content: `no MCP server '${serverName}' is attached to this agent`, isError: true };
    try {
      const result = await this.withConnection(
        agentId,
        server,
        signal,
        (client) => client.callTool({ name: tool, arguments: args }, { signal, timeout: CALL_TIMEOUT_MS }),
        (error) => error instanceof SdkHttpError && error.status === 404,
      );
      return { content: resultText(result as never), isError: result.isError === true };
    } catch (error) {
      // A failed connection is not reused (a server restarted, a session expired); the call is not retried (it may have run).
      this.drop(agentId, serverName);
      if (signal.aborted) throw signal.reason;
      this.options.logger.warn(
        { agent_id: agentId, mcp_server: serverName, tool, host: hostOf(server.url), reason: reason(error) },
        'attached MCP server call failed',
      );
      return { content: `MCP server '${serverName}' failed: ${reason(error)}`, isError: true };
    }
  }

  /** Closes every cached connection (the server is stopping). */
  async close(): Promise<void> {
    const all = [...this.connections.values()];
    this.connections.clear();
    await Promise.all(all.map((c) => closeClient(c.client)));
  }

  private connection(agentId: string, server: OpenMcpServer, signal: AbortSignal): { client: Promise<Client>; reused: boolean } {
    const key = `${agentId}\u0000${server.name}`;
    const cached = this.connections.get(key);
    this.connections.delete(key);
    if (cached && cached.version === server.version) {
      this.connections.set(key, cached);
      return { client: cached.client, reused: true };
    }
    if (cached) void closeClient(cached.client);
    const client = this.open(server, signal);
    this.connections.set(key, { version: server.version, client });
    client.catch(() => {
      if (this.connections.get(key)?.client === client) this.connections.delete(key);
    });
    while (this.connections.size > this.max) {
      const [oldest, entry] = this.connections.entries().next().value as [string, Connection];
      this.connections.delete(oldest);
      void closeClient(entry.client);
    }
    return { client, reused: false };
  }

  private async open(server: OpenMcpServer, signal: AbortSignal): Promise<Client> {
    const transport = new StreamableHTTPClientTransport(new URL(server.url), {
      fetch: this.options.guard.fetch,
      requestInit: { headers: server.headers },
      // A dropped stream is not re-opened in the background: the next call connects again.
      reconnectionOptions: { maxRetries: 0, initialReconnectionDelay: 1000, maxReconnectionDelay: 1000, reconnectionDelayGrowFactor: 1 },
    });
    const client = new Client({ name: 'mcpworks-agent', version: this.options.version });
    try {
      await client.connect(transport, { signal, timeout: LIST_TIMEOUT_MS });
    } catch (error) {
      await client.close().catch(() => undefined);
      throw error;
    }
    return client;
  }

  private drop(agentId: string, serverName: string): void {
    const key = `${agentId}\u0000${serverName}`;
    const entry = this.connections.get(key);
    if (!entry) return;
    this.connections.delete(key);
    void closeClient(entry.client);
  }
}

async function closeClient(client: Promise<Client>): Promise<void> {
  try {
    await (await client).close();
  } catch {
    // Already failed or closed.
  }
}

/** The host of a server's URL, for logs (a query may hold what its owner thinks private). */
function hostOf(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return '?';
  }
}
