import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { packageRoot } from '../sandbox/host.js';
import { schemaProblems } from '../core/json-schema.js';

/** How long a pattern-bearing schema check may take before it is abandoned (and fails closed). */
const PATTERN_CHECK_TIMEOUT_MS = 1000;

/** Per schema object: snapshots share theirs between calls, so each is serialised once. */
const patternsOf = new WeakMap<object, boolean>();

function hasPatterns(schema: Record<string, unknown>): boolean {
  let found = patternsOf.get(schema);
  if (found === undefined) {
    const text = JSON.stringify(schema);
    found = text.includes('"pattern"') || text.includes('"patternProperties"');
    patternsOf.set(schema, found);
  }
  return found;
}

/**
 * Checks a run's input against its function's input_schema. Schemas without regex patterns are
 * checked inline (fast, linear); those with patterns go to a worker thread with a deadline, so one
 * tenant's catastrophic pattern cannot stall the server for everyone.
 */
export class SchemaGuard {
  private worker: Worker | undefined;
  private nextId = 0;
  private readonly pending = new Map<number, { resolve: (problems: string[]) => void; timer: NodeJS.Timeout }>();

  async problems(schema: Record<string, unknown>, data: unknown): Promise<string[]> {
    if (!hasPatterns(schema)) return schemaProblems(schema, data);
    const worker = this.ensureWorker();
    const id = this.nextId++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        // The worker is stuck in a regex: replace it; whatever it was checking fails closed.
        this.reset([`checking the input against input_schema took longer than ${PATTERN_CHECK_TIMEOUT_MS} ms (a pattern in the schema is too expensive for this input)`]);
      }, PATTERN_CHECK_TIMEOUT_MS);
      this.pending.set(id, { resolve, timer });
      worker.postMessage({ id, schema, data });
    });
  }

  async close(): Promise<void> {
    const worker = this.worker;
    this.reset(['the server is shutting down']);
    await worker?.terminate();
  }

  private ensureWorker(): Worker {
    if (this.worker) return this.worker;
    const worker = new Worker(path.join(packageRoot(), 'src', 'run', 'runtime', 'host', 'schema-worker.mjs'));
    worker.unref();
    worker.on('message', (message: { id: number; problems: string[] }) => {
      const entry = this.pending.get(message.id);
      if (!entry) return;
      clearTimeout(entry.timer);
      this.pending.delete(message.id);
      entry.resolve(message.problems);
    });
    worker.on('error', () => this.reset(['the input could not be checked against input_schema']));
    this.worker = worker;
    return worker;
  }

  private reset(problems: string[]): void {
    const worker = this.worker;
    this.worker = undefined;
    for (const [id, entry] of this.pending) {
      clearTimeout(entry.timer);
      this.pending.delete(id);
      entry.resolve(problems);
    }
    void worker?.terminate();
  }
}
