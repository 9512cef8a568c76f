/**
 * A replica's worker process (child_process.fork of dist/agents/worker/entry.js, by
 * src/agents/worker/host.ts). It runs the trigger jobs the host hands it, one at a time, and asks
 * the host for every function run: it never runs user code (that runs only in sandboxes, through
 * the host's run path) and has no database, no server environment and no secret of its own.
 * It ends when the host disconnects, or on a message that breaks the protocol.
 */
import { getHeapStatistics } from 'node:v8';
import { HostMessage, type JobMessage, type WorkerMessage, type CallOp } from './protocol.js';
import { runAiJob } from '../orchestration/job.js';

let replica: string | undefined;
let nextCall = 0;
const waiting = new Map<number, { resolve: (value: unknown) => void; reject: (error: HostCallError) => void }>();
let current: { job: string; cancelled: boolean; abort: AbortController } | undefined;

class HostCallError extends Error {
  constructor(
    readonly type: string,
    message: string,
  ) {
    super(message);
  }
}

function send(message: WorkerMessage): void {
  process.send?.(message);
}

/** Asks the host to do `request` for the current job; resolves with its answer. */
function call(job: string, request: CallOp): Promise<unknown> {
  const id = nextCall++;
  return new Promise((resolve, reject) => {
    waiting.set(id, { resolve, reject });
    send({ t: 'call', call: id, job, request });
  });
}

/** Asks the host for a tool call; gives up waiting (the host stops it itself) when the run stops. */
function toolCall(job: string, name: string, args: Record<string, unknown>, signal: AbortSignal) {
  return new Promise<{ content: string; isError: boolean }>((resolve, reject) => {
    if (signal.aborted) return reject(new HostCallError('cancelled', 'the run stopped'));
    const onAbort = () => reject(new HostCallError('cancelled', 'the run stopped'));
    signal.addEventListener('abort', onAbort, { once: true });
    call(job, { op: 'tool', name, arguments: args }).then(
      (answer) => {
        signal.removeEventListener('abort', onAbort);
        const a = answer as { content?: unknown; isError?: unknown } | null;
        resolve({ content: typeof a?.content === 'string' ? a.content : '', isError: a?.isError === true });
      },
      (error: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(error instanceof Error ? error : new Error(String(error)));
      },
    );
  });
}

/**
 * `direct`: the trigger's function, run once by the host with the trigger's input. The AI modes:
 * the orchestration loop, with the model this job names and its tool calls answered by the host.
 */
async function runJob(job: JobMessage): Promise<void> {
  const abort = new AbortController();
  current = { job: job.job, cancelled: false, abort };
  try {
    let result: unknown;
    if (job.mode === 'direct' || !job.ai) {
      if (!job.function) throw new HostCallError('WorkerError', 'a direct job names its function');
      result = await call(job.job, { op: 'invoke', function: job.function, input: job.input });
    } else {
      result = await runAiJob(
        { mode: job.mode, trigger: job.trigger, triggerName: job.triggerName, function: job.function, input: job.input, ai: job.ai },
        {
          invoke: (fn, input) => call(job.job, { op: 'invoke', function: fn, input }),
          tool: (name, args, signal) => toolCall(job.job, name, args, signal),
          progress: (iterations, usage) => void call(job.job, { op: 'progress', iterations, usage }).catch(() => undefined),
          skipped: (calls, more, moreForbidden) => void call(job.job, { op: 'skipped', calls, more, moreForbidden }).catch(() => undefined),
        },
        abort.signal,
      );
    }
    send({ t: 'done', job: job.job, ok: true, result });
  } catch (error) {
    const typed = error instanceof HostCallError ? error : new HostCallError('WorkerError', String(error));
    send({ t: 'done', job: job.job, ok: false, error: { type: typed.type, message: typed.message.slice(0, 10_000) } });
  } finally {
    current = undefined;
  }
}

process.on('message', (raw: unknown) => {
  const parsed = HostMessage.safeParse(raw);
  if (!parsed.success) {
    // The host only sends what the protocol allows: anything else means the pair is out of step.
    process.exitCode = 3;
    process.disconnect?.();
    return;
  }
  const message = parsed.data;
  switch (message.t) {
    case 'init':
      replica = message.replica;
      process.title = `mcpworks-replica ${message.agent}/${message.replica}`;
      send({ t: 'ready', replica, pid: process.pid, heapLimit: getHeapStatistics().heap_size_limit });
      return;
    case 'job':
      if (!replica || current) {
        send({ t: 'done', job: message.job, ok: false, error: { type: 'ReplicaBusy', message: 'the replica is already running a job' } });
        return;
      }
      void runJob(message);
      return;
    case 'reply': {
      const pending = waiting.get(message.call);
      if (!pending) return;
      waiting.delete(message.call);
      if (message.ok) pending.resolve(message.result);
      else pending.reject(new HostCallError(message.error.type, message.error.message));
      return;
    }
    case 'cancel':
      // The host aborts the function run itself (its answer then says cancelled); an AI job's loop stops its model call.
      if (current?.job === message.job) {
        current.cancelled = true;
        current.abort.abort();
      }
      return;
  }
});

// The host is gone (or let go of this replica): nothing is left to do.
process.on('disconnect', () => process.exit(process.exitCode ?? 0));
