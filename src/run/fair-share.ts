/**
 * The main thread's share of tenants' heavy request work (measuring a large input, serialising a
 * value for a worker, parsing a large body), handed out in turns.
 *
 * Such work comes as slices (a generator that yields between slices). Each turn of the event loop
 * runs one slice, of one task, taken round-robin across tenants: the tenant whose turn came longest
 * ago goes next, and within a tenant its tasks go in order. Between two slices the event loop
 * serves I/O (other tenants' requests, /healthz), so a request waits for at most one slice of
 * another tenant's work, and a tenant that floods the server with heavy requests queues them
 * behind its own, never before other tenants'. Without this, every sliced task pending at once
 * ran a slice in the same turn (setImmediate runs every callback queued before the turn), so the
 * wait of everyone else grew with the number of heavy requests in flight.
 */

/** Values a slice walks or serialises (about a millisecond or two of the main thread's time). */
export const MAIN_THREAD_SLICE_VALUES = 8192;

interface Task {
  slices: Generator<void, unknown, void>;
  /** Slices run (of any task) when this one was queued; undefined once it has had its first turn. */
  queuedAt: number | undefined;
  /** Other tenants' tasks pending when this one was queued. */
  othersPending: number;
  resolve: (value: unknown) => void;
  reject: (error: unknown) => void;
}

export interface FairShareStats {
  /** Tasks waiting for or between turns, in all. */
  pending: number;
  /** Tenants with tasks pending. */
  tenants: number;
  /** Slices run so far. */
  slices: number;
}

export class FairShare {
  /** Tenants with pending tasks, in the order their next turn comes (Map keeps insertion order). */
  private readonly queues = new Map<string, Task[]>();
  private scheduled = false;
  private pendingTasks = 0;
  private slicesRun = 0;
  /**
   * For tests: called at each task's first turn with its tenant, the slices (of other tasks) run
   * while it waited for that turn, and how many other tenants' tasks were pending when it came.
   */
  onFirstTurn: ((turn: { tenant: string; waited: number; othersPending: number }) => void) | undefined;

  /** Runs `slices` in turns shared fairly with other tenants; settles with what the generator returns. */
  run<T>(tenant: string, slices: Generator<void, T, void>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      let queue = this.queues.get(tenant);
      if (!queue) this.queues.set(tenant, (queue = []));
      const othersPending = this.pendingTasks - queue.length;
      queue.push({ slices, queuedAt: this.slicesRun, othersPending, resolve: resolve as (value: unknown) => void, reject });
      this.pendingTasks++;
      this.schedule();
    });
  }

  /**
   * Resolves on the tenant's next turn: the caller does one bounded synchronous step right after
   * (before its next await), in that turn.
   */
  turn(tenant: string): Promise<void> {
    return this.run(tenant, oneSlice());
  }

  stats(): FairShareStats {
    return { pending: this.pendingTasks, tenants: this.queues.size, slices: this.slicesRun };
  }

  private schedule(): void {
    if (this.scheduled || this.queues.size === 0) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.step();
      this.schedule();
    });
  }

  /** One slice of the first task of the tenant whose turn it is; that tenant then goes last. */
  private step(): void {
    const next = this.queues.entries().next();
    if (next.done) return;
    const [tenant, queue] = next.value;
    this.queues.delete(tenant);
    const task = queue[0]!;
    if (task.queuedAt !== undefined) {
      this.onFirstTurn?.({ tenant, waited: this.slicesRun - task.queuedAt, othersPending: task.othersPending });
      task.queuedAt = undefined;
    }
    this.slicesRun++;
    let done = false;
    try {
      const step = task.slices.next();
      if (step.done) {
        done = true;
        task.resolve(step.value);
      }
    } catch (error) {
      done = true;
      task.reject(error);
    }
    if (done) {
      queue.shift();
      this.pendingTasks--;
    }
    if (queue.length > 0) this.queues.set(tenant, queue);
  }
}

function* oneSlice(): Generator<void, void, void> {}

/** The process's share: every server in it shares one main thread. */
export const sharedFairShare = new FairShare();
