import type { CallToolResult } from '@modelcontextprotocol/server';
import { isDomainError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';

/** A successful tool call: the value as pretty JSON text (what models read best). */
export function toolResult(value: unknown): CallToolResult {
  return { content: [{ type: 'text', text: JSON.stringify(value, null, 2) }] };
}

/** Domain errors become structured tool errors; anything else is logged and reported without internals. */
export function toolError(error: unknown, logger: Logger, tool: string): CallToolResult {
  if (isDomainError(error)) {
    return { isError: true, content: [{ type: 'text', text: JSON.stringify(error.toJSON()) }] };
  }
  logger.error({ err: error, tool }, 'tool failed unexpectedly');
  return {
    isError: true,
    content: [{ type: 'text', text: JSON.stringify({ error: { type: 'internal_error', message: 'internal error; the operator can find details in the server log' } }) }],
  };
}

/**
 * The run endpoint's one error shape, that of a failed run (`{"error": message, "error_type": T,
 * "stderr": …}`): refusals before a run (bad language, not found, forbidden) use it too, their
 * details beside it. The create endpoint keeps the management shape `{"error": {"type", "message"}}`.
 */
export function runToolError(error: unknown, logger: Logger, tool: string): CallToolResult {
  let body: Record<string, unknown>;
  if (isDomainError(error)) {
    body = { ...(error.details ?? {}), error: error.message, error_type: error.type, stderr: '' };
  } else {
    logger.error({ err: error, tool }, 'tool failed unexpectedly');
    body = { error: 'internal error; the operator can find details in the server log', error_type: 'internal_error', stderr: '' };
  }
  return { isError: true, content: [{ type: 'text', text: JSON.stringify(body) }] };
}

/** Runs a tool body and renders its outcome either way. */
export async function runTool(logger: Logger, tool: string, body: () => Promise<unknown>): Promise<CallToolResult> {
  try {
    return toolResult(await body());
  } catch (error) {
    return toolError(error, logger, tool);
  }
}
