// One MCP tools/call as a bare HTTP POST, for the cluster tests: no SDK session, so each call may
// land on any node behind the round-robin proxy, and its status and answering node are seen as sent.
import { NODE_HEADER } from '../cli/cluster-proxy.js';

/** One tools/call POST without a session (2025-06-18): its status, JSON-RPC answer and the node the proxy named. */
export async function rawCall(url: string, key: string, tool: string, args: Record<string, unknown>, timeoutMs = 60_000) {
  const response = await fetch(url, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
      'mcp-protocol-version': '2025-06-18',
      authorization: `Bearer ${key}`,
    },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: tool, arguments: args } }),
    signal: AbortSignal.timeout(timeoutMs),
  });
  const text = await response.text();
  const body = text.includes('data:') ? JSON.parse(text.split('data:').pop()!.trim()) : text ? JSON.parse(text) : null;
  return { status: response.status, body, node: response.headers.get(NODE_HEADER) };
}
