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

const name = z.string().min(1).max(200);
const errorShape = z.object({ type: z.string().max(200), message: z.string().max(10_000) }).strict();

export const InitMessage = z.object({ t: z.literal('init'), agent: name, replica: name }).strict();

export const JobMessage = z
  .object({
    t: z.literal('job'),
    /** The run id (agent_runs.id): one job at a time per replica. */
    job: name,
    mode: z.literal('direct'),
    trigger: z.enum(['schedule', 'webhook', 'chat', 'heartbeat']),
    triggerName: z.string().max(200),
    /** 'service.function' */
    function: name,
    input: z.unknown(),
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
]);
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
