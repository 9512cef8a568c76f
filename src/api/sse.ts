/**
 * The server-sent-event frames our own MCP streams write (the 2025 era's GET stream, a batch's
 * answers, a late 2025-era answer): one place for their shape and keep-alive interval.
 */

/** SSE comment frames on a stream that is otherwise quiet, so proxies keep it open and a vanished client is noticed. */
export const SSE_KEEP_ALIVE_MS = 15_000;
export const SSE_KEEP_ALIVE_FRAME = ': keepalive\n\n';
export const SSE_HEADERS: Readonly<Record<string, string>> = Object.freeze({
  'content-type': 'text/event-stream',
  'cache-control': 'no-cache, no-transform',
  connection: 'keep-alive',
  'x-accel-buffering': 'no',
});

/** One JSON-RPC message (its JSON text, one line) as an SSE `message` event. */
export function sseMessage(json: string): string {
  return `event: message\ndata: ${json}\n\n`;
}
