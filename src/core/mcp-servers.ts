/**
 * An agent's attached MCP servers (issue 16): the rules, no I/O. Streamable HTTP only (no command
 * ever runs on this host); their addresses follow the agents' outbound rules (outbound-address.ts:
 * refused ranges unless the operator allows them, this server's run endpoints always allowed, its
 * create endpoints never), checked again at connect time (src/agents/outbound-guard.ts).
 */
import { invalid } from './errors.js';
import { OUTBOUND_URL_MAX_CHARS, parseServerUrl } from './outbound-address.js';

// The address rules are shared with a model's base_url; imported from here by older callers.
export * from './outbound-address.js';

export const MCP_SERVERS_MAX = 10;
export const MCP_SERVER_NAME = /^[a-z0-9][a-z0-9_-]{0,31}$/;
export const MCP_URL_MAX_CHARS = OUTBOUND_URL_MAX_CHARS;
export const MCP_HEADERS_MAX = 20;
export const MCP_HEADER_VALUE_MAX_CHARS = 8192;
/** An HTTP field name (RFC 9110 token). */
const HEADER_NAME = /^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}$/;
/** Headers the transport sets itself, or that would change the request's framing or target. */
const RESERVED_HEADERS = new Set([
  'host',
  'content-length',
  'content-type',
  'accept',
  'connection',
  'keep-alive',
  'transfer-encoding',
  'te',
  'trailer',
  'upgrade',
  'expect',
  'proxy-connection',
  'proxy-authorization',
  'mcp-session-id',
  'mcp-protocol-version',
  'last-event-id',
]);
/** Fields of a stdio server in other clients' configurations: refused, never run. */
const STDIO_FIELDS = ['command', 'args', 'env', 'cwd', 'stdio'];
const HTTP_TRANSPORTS = new Set(['http', 'streamable-http', 'streamable_http', 'streamablehttp']);
const CONTROL = /[\u0000-\u001f\u007f]/;

/** One server as configure_mcp_servers takes it (headers in the clear; the service seals them). */
export interface McpServerInput {
  name: string;
  url: string;
  headers: Record<string, string>;
}

/** configure_mcp_servers' `servers`: at most MCP_SERVERS_MAX, names unique, each a Streamable HTTP server. */
export function validateMcpServers(value: unknown): McpServerInput[] {
  if (!Array.isArray(value))
    throw invalid('servers must be a list of {name, url, headers?} (an empty list detaches every server)', { field: 'servers' });
  if (value.length > MCP_SERVERS_MAX) throw invalid(`at most ${MCP_SERVERS_MAX} servers per agent`, { field: 'servers' });
  const seen = new Set<string>();
  return value.map((item, index) => {
    const server = validateServer(item, `servers[${index}]`);
    if (seen.has(server.name)) throw invalid(`server name '${server.name}' is given twice`, { field: `servers[${index}].name` });
    seen.add(server.name);
    return server;
  });
}

function validateServer(item: unknown, field: string): McpServerInput {
  if (!item || typeof item !== 'object' || Array.isArray(item))
    throw invalid(`${field} must be an object {name, url, headers?}`, { field });
  const s = item as Record<string, unknown>;
  const stdio = STDIO_FIELDS.find((key) => key in s);
  if (stdio !== undefined || (typeof s.transport === 'string' && s.transport.toLowerCase() === 'stdio'))
    throw invalid(
      `${field}: stdio servers are not supported: no command ever runs on this host; attach a Streamable HTTP server by its url`,
      { field: `${field}.${stdio ?? 'transport'}` },
    );
  if (s.transport !== undefined && (typeof s.transport !== 'string' || !HTTP_TRANSPORTS.has(s.transport.toLowerCase())))
    throw invalid(`${field}.transport: only Streamable HTTP servers can be attached (transport "http", or leave it out)`, {
      field: `${field}.transport`,
    });
  const unknown = Object.keys(s).find((key) => !['name', 'url', 'headers', 'transport'].includes(key));
  if (unknown !== undefined) throw invalid(`${field}: unknown field '${unknown.slice(0, 64)}' (give name, url and headers)`, { field });
  const name = s.name;
  if (typeof name !== 'string' || !MCP_SERVER_NAME.test(name))
    throw invalid(`${field}.name must be 1-32 lowercase letters, digits, '_' or '-', starting with a letter or digit`, {
      field: `${field}.name`,
    });
  if (s.url === undefined) throw invalid(`${field}.url is required: the server's Streamable HTTP address`, { field: `${field}.url` });
  const url = parseServerUrl(s.url, `${field}.url`).url;
  return { name, url, headers: validateHeaders(s.headers, `${field}.headers`) };
}

/** Header names and values are checked without ever echoing a value (they hold credentials). */
function validateHeaders(value: unknown, field: string): Record<string, string> {
  if (value === undefined || value === null) return {};
  if (typeof value !== 'object' || Array.isArray(value)) throw invalid(`${field} must be an object of header name to text`, { field });
  const entries = Object.entries(value as Record<string, unknown>);
  if (entries.length > MCP_HEADERS_MAX) throw invalid(`${field}: at most ${MCP_HEADERS_MAX} headers`, { field });
  const out: Record<string, string> = {};
  const seen = new Set<string>();
  for (const [name, text] of entries) {
    if (!HEADER_NAME.test(name))
      throw invalid(`${field}: '${name.slice(0, 64).replace(CONTROL, '?')}' is not an HTTP header name`, { field });
    const lower = name.toLowerCase();
    if (RESERVED_HEADERS.has(lower)) throw invalid(`${field}: the header '${name}' is set by the transport and cannot be given`, { field });
    if (seen.has(lower)) throw invalid(`${field}: the header '${name}' is given twice`, { field });
    seen.add(lower);
    if (typeof text !== 'string' || text.length > MCP_HEADER_VALUE_MAX_CHARS || CONTROL.test(text.replace(/\t/g, ' ')))
      throw invalid(
        `${field}: the value of '${name}' must be text of at most ${MCP_HEADER_VALUE_MAX_CHARS} characters without line breaks`,
        {
          field,
        },
      );
    out[name] = text;
  }
  return out;
}

/** What agents.config.mcp_servers holds, one per server. */
export interface StoredMcpServer {
  name: string;
  url: string;
  /** The header names (shown), and their values sealed as one JSON object (never shown). */
  header_names: string[];
  headers_sealed?: string;
  configured_at: string;
}

/** What describe_agent shows of each server: name, url and header names; never a value, sealed or not. */
export function publicMcpServers(list: unknown): Array<Record<string, unknown>> {
  if (!Array.isArray(list)) return [];
  return (list as StoredMcpServer[]).map((s) => ({
    name: s.name,
    url: s.url,
    header_names: Array.isArray(s.header_names) ? s.header_names : [],
    ...(s.headers_sealed ? { headers: 'set (encrypted; never shown)' } : {}),
    configured_at: s.configured_at,
  }));
}
