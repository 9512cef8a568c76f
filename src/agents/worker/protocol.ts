/**
 * The IPC protocol between the server (host) and a replica's worker process. Both sides check every
 * message they receive against these schemas: a malformed one is a protocol error (the host kills the
 * worker; the worker exits), never a guess. Values travel as JSON (Node's default IPC serialization).
 *
 * The host hands the worker trigger jobs; the worker orchestrates each job (in `direct` mode: one
 * function run) and asks the host for everything that needs the platform (running a function through
 * the run path, state operations), by numbered calls the host answers. The worker has no database,
 * no server environment and no secret: what it gets is what a job carries.
 */
import { z } from 'zod';
import { LOOP_STOP_REASONS, SKIP_REASONS, SKIPPED_RECORDED_PER_TURN } from '../../core/agent-orchestration.js';

const name = z.string().min(1).max(200);
const errorShape = z.object({ type: z.string().max(200), message: z.string().max(10_000) }).strict();

export const InitMessage = z.object({ t: z.literal('init'), agent: name, replica: name }).strict();

const ToolCallShape = z
  .object({
    id: z.string().max(500),
    name: z.string().max(500),
    arguments: z.record(z.string(), z.unknown()),
    argumentsError: z.string().max(500).optional(),
  })
  .strict();
/** A chat message as providers/provider.ts has it. */
export const ChatMessageShape = z.union([
  z.object({ role: z.literal('user'), content: z.string() }).strict(),
  z.object({ role: z.literal('assistant'), content: z.string(), toolCalls: z.array(ToolCallShape).max(1000).optional() }).strict(),
  z
    .object({
      role: z.literal('tool'),
      results: z.array(z.object({ callId: z.string().max(500), content: z.string(), isError: z.boolean().optional() }).strict()).max(1000),
    })
    .strict(),
]);

/**
 * An AI job's settings: the model (its key opened by the host just before the job; it travels only
 * over this channel), the tools offered (their calls go back to the host by name), the run's limits.
 */
export const AiJobShape = z
  .object({
    provider: z.string().min(1).max(100),
    model: z.string().min(1).max(200),
    apiKey: z.string().min(1).max(4096),
    baseUrl: z.string().max(2048).optional(),
    system: z.string().max(32_000).optional(),
    /** The chat message or heartbeat instructions; absent: the worker renders the trigger itself. */
    message: z.string().max(1_000_000).optional(),
    /** A trigger's input as the model reads it, rendered and scanned by the host (the worker holds no secret list). */
    inputText: z.string().max(1_000_000).optional(),
    history: z.array(ChatMessageShape).max(10_000).optional(),
    tools: z
      .array(
        z
          .object({
            name: z.string().min(1).max(64),
            kind: z.enum(['function', 'mcp', 'state']),
            description: z.string().max(10_000),
            inputSchema: z.record(z.string(), z.unknown()),
          })
          .strict(),
      )
      .max(2000),
    limits: z
      .object({
        max_iterations: z.number().int().positive(),
        max_ai_tokens: z.number().int().positive(),
        max_execution_seconds: z.number().int().positive(),
        max_functions_called: z.number().int().positive().nullable(),
      })
      .strict(),
    /** Epoch ms the run started: its deadline is counted from it. */
    startedAt: z.number(),
    /**
     * Where the model may be reached (the operator's MCPWORKS_AGENT_MCP_ALLOW entries, this
     * server's own endpoints): each model call's address is checked against it and pinned.
     */
    outbound: z
      .object({
        allow: z.array(z.string().max(300)).max(1000),
        own: z
          .object({ addresses: z.array(z.string().max(64)).max(1000), port: z.number().int(), baseHost: z.string().max(300).optional() })
          .strict()
          .nullable(),
      })
      .strict(),
  })
  .strict();
export type AiJob = z.infer<typeof AiJobShape>;

export const JobMessage = z
  .object({
    t: z.literal('job'),
    /** The run id (agent_runs.id): one job at a time per replica. */
    job: name,
    /** direct: the function once; run_then_reason: the function, then the model with its outcome; reason_first: the model. */
    mode: z.enum(['direct', 'run_then_reason', 'reason_first']),
    trigger: z.enum(['schedule', 'webhook', 'chat', 'heartbeat']),
    triggerName: z.string().max(200),
    /** 'service.function' (absent for a chat or heartbeat) */
    function: name.optional(),
    input: z.unknown(),
    ai: AiJobShape.optional(),
  })
  .strict();

export const ReplyMessage = z.discriminatedUnion('ok', [
  z.object({ t: z.literal('reply'), call: z.number().int().nonnegative(), ok: z.literal(true), result: z.unknown() }).strict(),
  z.object({ t: z.literal('reply'), call: z.number().int().nonnegative(), ok: z.literal(false), error: errorShape }).strict(),
]);

export const CancelMessage = z.object({ t: z.literal('cancel'), job: name }).strict();

/** What the host sends. */
export const HostMessage = z.union([InitMessage, JobMessage, ReplyMessage, CancelMessage]);
export type HostMessage = z.infer<typeof HostMessage>;
export type JobMessage = z.infer<typeof JobMessage>;

/** The host operations a worker may ask for, within the job it is running. */
export const CallOp = z.discriminatedUnion('op', [
  z.object({ op: z.literal('invoke'), function: name, input: z.unknown() }).strict(),
  z.object({ op: z.literal('state_get'), key: z.string().min(1).max(256) }).strict(),
  z.object({ op: z.literal('state_set'), key: z.string().min(1).max(256), value: z.unknown() }).strict(),
  z.object({ op: z.literal('state_delete'), key: z.string().min(1).max(256) }).strict(),
  /** An AI job's tool call, by the name the model used (the host maps it, refuses what it does not offer). */
  z.object({ op: z.literal('tool'), name: z.string().min(1).max(500), arguments: z.record(z.string(), z.unknown()) }).strict(),
  /** An AI job's tool calls of one turn that were never sent (the per-turn cap, a limit, a cancel), for the run's record. */
  z
    .object({
      op: z.literal('skipped'),
      calls: z.array(z.object({ name: z.string().max(500), reason: z.enum(SKIP_REASONS) }).strict()).max(SKIPPED_RECORDED_PER_TURN),
      more: z.number().int().nonnegative(),
      /** How many of the `more` were management tools (each counts as a forbidden attempt). */
      moreForbidden: z.number().int().nonnegative().optional(),
    })
    .strict(),
  /** An AI job's running totals after each model turn: a run whose process dies still records them. */
  z
    .object({
      op: z.literal('progress'),
      iterations: z.number().int().nonnegative(),
      usage: z
        .object({
          input_tokens: z.number().int().nonnegative(),
          output_tokens: z.number().int().nonnegative(),
          /** Some turn's tokens were estimated (its answer did not say what it cost). */
          estimated: z.boolean().optional(),
        })
        .strict(),
    })
    .strict(),
]);

/** What an AI job's `done` carries: the loop's outcome (the host checks it), and run_then_reason's function outcome. */
export const LoopResultShape = z
  .object({
    loop: z
      .object({
        stopReason: z.enum(LOOP_STOP_REASONS),
        answer: z.string().max(1_000_000),
        iterations: z.number().int().nonnegative(),
        usage: z.object({ input_tokens: z.number().int().nonnegative(), output_tokens: z.number().int().nonnegative() }).strict(),
        usageEstimated: z.boolean().optional(),
        functionsCalled: z.number().int().nonnegative(),
        error: errorShape.optional(),
        transcript: z.array(ChatMessageShape).max(10_000),
      })
      .strict(),
  })
  .strict();
export type LoopResult = z.infer<typeof LoopResultShape>;
export type CallOp = z.infer<typeof CallOp>;

/** `heapLimit`: the worker's V8 heap limit in bytes, as it sees it (the tier's memory, set by the host). */
export const ReadyMessage = z
  .object({ t: z.literal('ready'), replica: name, pid: z.number().int().positive(), heapLimit: z.number().nonnegative() })
  .strict();
export const CallMessage = z.object({ t: z.literal('call'), call: z.number().int().nonnegative(), job: name, request: CallOp }).strict();
export const DoneMessage = z.discriminatedUnion('ok', [
  z.object({ t: z.literal('done'), job: name, ok: z.literal(true), result: z.unknown() }).strict(),
  z.object({ t: z.literal('done'), job: name, ok: z.literal(false), error: errorShape }).strict(),
]);

/** What the worker sends. */
export const WorkerMessage = z.union([ReadyMessage, CallMessage, DoneMessage]);
export type WorkerMessage = z.infer<typeof WorkerMessage>;
export type DoneMessage = z.infer<typeof DoneMessage>;
