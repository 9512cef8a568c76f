import { fromJsonSchema, type CallToolResult, type McpServer, type ToolAnnotations } from '@modelcontextprotocol/server';
import { z } from 'zod';
import { DomainError } from '../core/errors.js';
import { unstorableMessage, unstorableReason } from '../core/storable-text.js';
import type { Logger } from '../core/logger.js';
import { runTool } from './tool-results.js';

// The SDK would answer bad arguments with unstructured text; we publish the schema as-is but
// validate in the handler so that bad input gets our typed error like every other failure.
const acceptEverything = {
  getValidator: () => (input: unknown) => ({ valid: true as const, data: input as never, errorMessage: undefined }),
};

function describeIssues(error: z.ZodError): string {
  return error.issues.map((issue) => `${issue.path.length ? issue.path.join('.') : '(arguments)'}: ${issue.message}`).join('; ');
}

/**
 * What a tool's body gets besides its arguments: the MCP request's abort signal (the client cancelled
 * it), and (2025 era, in a session) the name a notifications/cancelled gives the call (cancelKeyOf).
 */
export interface ToolCallContext {
  signal?: AbortSignal;
  /** The JSON-RPC id of the tools/call. */
  requestId?: string | number;
  /** The call's session and request id (run-service cancelKeyOf), when the request came in a session of this caller's. */
  cancelKey?: string;
}

export interface ToolDefinition<S extends z.ZodObject> {
  description: string;
  input: S;
  annotations: ToolAnnotations;
}

/**
 * Each tool's published input schema, converted from zod once per process rather than on every
 * request (the create endpoint builds its server per request). A tool's input is fixed by its
 * name: it never depends on the caller or the namespace (those go in descriptions and handlers).
 */
const publishedInputs = new Map<string, Record<string, unknown>>();

export function defineTool<S extends z.ZodObject>(
  server: McpServer,
  logger: Logger,
  name: string,
  definition: ToolDefinition<S>,
  body: (args: z.infer<S>, call: ToolCallContext) => Promise<unknown>,
): void {
  let jsonSchema = publishedInputs.get(name);
  if (!jsonSchema) {
    jsonSchema = z.toJSONSchema(definition.input, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>;
    delete jsonSchema.$schema;
    publishedInputs.set(name, jsonSchema);
  }
  server.registerTool(
    name,
    {
      description: definition.description,
      inputSchema: fromJsonSchema(jsonSchema as never, acceptEverything),
      annotations: definition.annotations,
    },
    ((args: unknown, handler?: { mcpReq?: { signal?: AbortSignal; id?: unknown } }): Promise<CallToolResult> =>
      runTool(logger, name, async () => {
        // Refused up front rather than failing deep in a query (PostgreSQL cannot store them).
        const unstorable = unstorableReason(args);
        if (unstorable) throw new DomainError('validation_error', `invalid arguments for ${name}: ${unstorableMessage(unstorable)}`);
        const parsed = definition.input.safeParse(args ?? {});
        if (!parsed.success) {
          throw new DomainError('validation_error', `invalid arguments for ${name}: ${describeIssues(parsed.error)}`);
        }
        const id = handler?.mcpReq?.id;
        return body(parsed.data, {
          ...(handler?.mcpReq?.signal ? { signal: handler.mcpReq.signal } : {}),
          ...(typeof id === 'string' || typeof id === 'number' ? { requestId: id } : {}),
        });
      })) as never,
  );
}
