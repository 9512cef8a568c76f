import { ProtocolError, ProtocolErrorCode, type McpServer } from '@modelcontextprotocol/server';
import { suggestion } from '../core/suggest.js';

/** The tool names a request's tools/call messages name (one message per request on every endpoint). */
export function calledToolNames(body: unknown): string[] {
  const messages = Array.isArray(body) ? body : [body];
  return messages
    .filter((m) => m !== null && typeof m === 'object' && (m as { method?: unknown }).method === 'tools/call')
    .map((m) => (m as { params?: { name?: unknown } }).params?.name)
    .filter((name): name is string => typeof name === 'string');
}

/**
 * A tools/call of a tool this server does not have: the protocol's error (-32602, as the SDK
 * answers it) with the available tools and the nearest names, in the message and in `data`
 * (`type: "not_found"`, `available`, `did_you_mean`), as unknown function names are answered.
 * Installed only for a request that calls an unknown name, after every tool is registered.
 */
export function refuseUnknownTools(server: McpServer, namespace: string, called: Iterable<string>, names: readonly string[]): void {
  if (![...called].some((name) => !names.includes(name))) return;
  server.server.setRequestHandler('tools/call', (request) => {
    const wanted = request.params.name;
    const hint = suggestion(wanted, names, 'tools');
    throw new ProtocolError(ProtocolErrorCode.InvalidParams, `Tool ${wanted} not found in namespace '${namespace}'.${hint.text}`, {
      type: 'not_found',
      ...hint.details,
    });
  });
}
