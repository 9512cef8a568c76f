// What answers the `mcpworks` module's state requests from inside a sandbox (`from mcpworks import
// state`, `import { state } from 'mcpworks'`): one per run, for the agent the run belongs to. Bounded
// like the bridge's function calls: argument shapes and sizes, a count per run, nothing after the
// run ended, and a cancelled run stops waiting. The rules on keys, values, caps and versions are
// the agent's (AgentStateAccess, made by AgentService with the state tools' rules and locks).
import { MAX_STATE_CALLS, NOT_AGENT_RUN_MESSAGE, STATE_ERROR_TYPES, type AgentStateAccess } from '../core/agent-state-access.js';
import { callInputProblem } from '../core/call-input.js';
import { isDomainError } from '../core/errors.js';
import { RawJson } from '../core/raw-json.js';

/** A state request as the module sends it: `{op: "state", function: verb, args: {...}, input: value}`. */
interface StateRequest {
  op?: unknown;
  function?: unknown;
  args?: unknown;
  input?: unknown;
  /** A large line's value was checked in the scan worker that read it (see scan-worker.ts). */
  inputProblem?: unknown;
}

const refused = (error_type: string, error: string, details?: Record<string, unknown>) => ({
  ok: false,
  error_type,
  error,
  ...(details ? { details } : {}),
});

const ENDED = () => refused(STATE_ERROR_TYPES.bridge, 'the run has ended');

/** Whether a bridge message is a state request (the rest are the code-mode bridge's). */
export function isStateRequest(message: unknown): boolean {
  return message !== null && typeof message === 'object' && (message as { op?: unknown }).op === 'state';
}

export class StateBridge {
  private count = 0;
  private finished = false;

  /**
   * `access`: the run's agent's state, undefined when the run was not started by an agent (every
   * request is then refused as not_agent_run). `signal` stops the run (cancel, shutdown).
   */
  constructor(
    private readonly access: AgentStateAccess | undefined,
    private readonly signal: AbortSignal,
  ) {}

  /** Whether the run has state to reach (an agent's run). */
  get available(): boolean {
    return this.access !== undefined;
  }

  /** The run ended: requests its code queued before it ended reach nothing. */
  finish(): void {
    this.finished = true;
  }

  /** A SandboxRequest.bridge that answers state requests only (tool mode, an other-language callee). */
  readonly handleOnly = async (message: unknown): Promise<unknown> =>
    isStateRequest(message) ? this.handle(message) : refused(STATE_ERROR_TYPES.bridge, 'unknown bridge request');

  async handle(message: unknown): Promise<unknown> {
    if (this.finished || this.signal.aborted) return ENDED();
    if (++this.count > MAX_STATE_CALLS) return refused(STATE_ERROR_TYPES.bridge, `at most ${MAX_STATE_CALLS} state operations per run`);
    const access = this.access;
    if (!access) return refused(STATE_ERROR_TYPES.notAgentRun, NOT_AGENT_RUN_MESSAGE);
    const request = message as StateRequest;
    const args = request.args;
    if (args === null || typeof args !== 'object' || Array.isArray(args))
      return refused('validation_error', 'a state request needs its arguments as an object');
    const a = args as Record<string, unknown>;
    let operation: () => Promise<unknown>;
    switch (request.function) {
      case 'get':
        operation = async () => {
          const found = await access.get(a.key as string, { raw: true });
          if (!found) return null;
          // The value's JSON text goes back as it is (the channel splices RawJson bytes into its reply).
          const text = (found.value as RawJson).bytes;
          return new RawJson(Buffer.concat([Buffer.from('{"value":'), text, Buffer.from(`,"version":${found.version}}`)]));
        };
        break;
      case 'set': {
        // As for a function call's input: a value no function could receive is refused before any work.
        const problem =
          request.input instanceof RawJson
            ? typeof request.inputProblem === 'string'
              ? request.inputProblem
              : undefined
            : request.input === undefined
              ? undefined
              : callInputProblem(request.input);
        if (problem) return refused('validation_error', problem.replace(/^the input/, 'the value'), { field: 'value' });
        operation = () => access.set(a.key as string, request.input, versionOption(a.if_version));
        break;
      }
      case 'delete':
        operation = () => access.delete(a.key as string, versionOption(a.if_version));
        break;
      case 'keys':
        operation = () =>
          access.keys({
            ...(a.prefix !== undefined && a.prefix !== null ? { prefix: a.prefix as string } : {}),
            ...(a.cursor !== undefined && a.cursor !== null ? { cursor: a.cursor as string } : {}),
            ...(a.limit !== undefined && a.limit !== null ? { limit: a.limit as number } : {}),
          });
        break;
      default:
        return refused(STATE_ERROR_TYPES.bridge, 'unknown state operation (get, set, delete or keys)');
    }
    try {
      const result = await this.untilStopped(operation());
      if (result === STOPPED) return ENDED();
      return { ok: true, result: result ?? null };
    } catch (error) {
      // The rules' own refusals (a conflict, a cap, a bad key, the agent gone) go to the code as
      // they are; anything else is the platform's and is not described to the sandbox.
      if (isDomainError(error)) return refused(error.type, error.message, error.details);
      throw error;
    }
  }

  /** A cancelled or stopped run does not wait for its state operation (which still ends on its own). */
  private untilStopped<T>(work: Promise<T>): Promise<T | typeof STOPPED> {
    if (this.signal.aborted) return Promise.resolve(STOPPED);
    let onAbort: () => void = () => {};
    const stopped = new Promise<typeof STOPPED>((resolve) => {
      onAbort = () => resolve(STOPPED);
      this.signal.addEventListener('abort', onAbort, { once: true });
    });
    // The operation's own failure is still reported (or logged by the channel) when it comes after.
    work.catch(() => undefined);
    return Promise.race([work, stopped]).finally(() => this.signal.removeEventListener('abort', onAbort));
  }
}

const STOPPED = Symbol('stopped');

/** if_version as the module sends it (null or absent: no compare-and-swap); its rules are the access's. */
function versionOption(value: unknown): { ifVersion?: number } {
  return value === undefined || value === null ? {} : { ifVersion: value as number };
}
