/**
 * A replica's worker process (child_process.fork of dist/agents/worker/entry.js, by
 * src/agents/worker/host.ts). It runs the trigger jobs the host hands it, one at a time, and asks
 * the host for every function run: it never runs user code (that runs only in sandboxes, through
 * the host's run path) and has no database, no server environment and no secret of its own.
 * It ends when the host disconnects, or on a message that breaks the protocol.
 */
import { getHeapStatistics } from 'node:v8';
import { HostMessage, type JobMessage, type WorkerMessage, type CallOp } from './protocol.js';

let replica: string | undefined;
let nextCall = 0;
const waiting = new Map<number, { resolve: (value: unknown) => void; reject: (error: HostCallError) => void }>();
let current: { job: string; cancelled: boolean } | undefined;

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

/** `direct` orchestration: the trigger's function, run once by the host with the trigger's input. */
async function runJob(job: JobMessage): Promise<void> {
  current = { job: job.job, cancelled: false };
  try {
    const result = await call(job.job, { op: 'invoke', function: job.function, input: job.input });
    send({ t: 'done', job: job.job, ok: true, result });
  } catch (error) {
    const typed = error instanceof HostCallError ? error : new HostCallError('WorkerError', String(error));
    send({ t: 'done', job: job.job, ok: false, error: { type: typed.type, message: typed.message } });
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
      // The host aborts the function run itself (its answer then says cancelled); this marks the job.
      if (current?.job === message.job) current.cancelled = true;
      return;
  }
});

// The host is gone (or let go of this replica): nothing is left to do.
process.on('disconnect', () => process.exit(process.exitCode ?? 0));
