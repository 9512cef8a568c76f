import type { CallToolResult } from '@modelcontextprotocol/server';
import { DomainError, isDomainError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';

const INTERNAL_ERROR = new DomainError('internal_error', 'internal error; the operator can find details in the server log');

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
    content: [{ type: 'text', text: JSON.stringify(INTERNAL_ERROR.toJSON()) }],
  };
}

/**
 * The run endpoint's tool errors: the one shape (DomainError.toJSON) plus the `stderr` of a failed
 * run, so refusals before a run (bad language, not found, forbidden) read like a failed run.
 */
export function runToolError(error: unknown, logger: Logger, tool: string): CallToolResult {
  let body: Record<string, unknown>;
  if (isDomainError(error)) {
    body = { ...error.toJSON(), stderr: '' };
  } else {
    logger.error({ err: error, tool }, 'tool failed unexpectedly');
    body = { ...INTERNAL_ERROR.toJSON(), stderr: '' };
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
