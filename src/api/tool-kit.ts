// What every create-endpoint tool file shares: the MCP annotation sets and the agent's name fields.
import { z } from 'zod';
import type { ToolCallContext, ToolDefinition } from './tool-schema.js';

/**
 * buildCreateServer's tool registrar (it keeps the list of names for unknown-tool answers). `call.signal`
 * aborts when the client cancels the call or closes its connection.
 */
export type ToolRegistrar = <S extends z.ZodObject>(
  name: string,
  definition: ToolDefinition<S>,
  body: (args: Record<string, unknown>, call: ToolCallContext) => Promise<unknown>,
) => void;

export const READ_ONLY = { readOnlyHint: true, destructiveHint: false, idempotentHint: true, openWorldHint: false } as const;
export const WRITE = { readOnlyHint: false, destructiveHint: false, idempotentHint: false, openWorldHint: false } as const;
/** A write that, repeated with the same arguments, leaves the same state (configure_*, start/stop). */
export const IDEMPOTENT_WRITE = { readOnlyHint: false, destructiveHint: false, idempotentHint: true, openWorldHint: false } as const;
export const DESTRUCTIVE = { readOnlyHint: false, destructiveHint: true, idempotentHint: true, openWorldHint: false } as const;

// The guide's `name`, and the hosted original's `agent_name` for the same thing.
export const agentFields = {
  name: z.string().optional().describe('Agent name (required; or give it as agent_name), e.g. "social-scraper"'),
  agent_name: z.string().optional().describe("Same as name (the hosted original's spelling)"),
};
