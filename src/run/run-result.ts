// What a run answers before the MCP layer (or another trigger) shapes it, and how a sandbox's
// outcome becomes that answer: shared by tool mode, code mode and the code-mode bridge.
import { SANDBOX_ERROR_TYPES, type Sandbox, type SandboxOutcome, type SandboxRequest } from '../core/sandbox.js';
import type { RenderedToolResult } from '../core/raw-json.js';

/**
 * What a run answers, before the MCP layer shapes it. Already scanned for secrets. A large answer
 * arrives with `rendered` (its MCP tool result as JSON bytes, made in a scan worker) and no `result`.
 */
export type RunResult = (
  | { ok: true; result: unknown; stdout: string; stderr: string }
  | { ok: false; error: string; error_type: string; stderr: string; stdout: string; missing?: string[] }
) & { rendered?: RenderedToolResult };

/** The error type of a run the server stopped before it ended (shutdown): recorded, never counted. */
export const INTERRUPTED = 'interrupted';
/** The error type (and status) of a run the client cancelled: killed, recorded, never counted. */
export const CANCELLED = 'cancelled';
/** A run whose output the server could not check (scan failure): withheld, still counted. */
export const INTERNAL_ERROR = 'internal_error';
/** The abort reason of a run's signal when its caller cancelled it (any other reason: shutdown). */
export const CANCEL_REASON = Symbol('cancelled by the client');

/** Only the host's own observation makes a failure the platform's (see SandboxFailure.platform). */
export function platformFailed(outcome: SandboxOutcome): boolean {
  return !outcome.ok && outcome.error.platform === true;
}

export function fromOutcome(outcome: SandboxOutcome, signal?: AbortSignal): RunResult {
  if (outcome.ok) return { ok: true, result: outcome.result, stdout: outcome.stdout, stderr: outcome.stderr };
  // Stopped by its client's cancel, or by the server's shutdown (the host's own observation).
  if (signal?.aborted && outcome.error.platform === true && signal.reason === CANCEL_REASON) {
    return {
      ok: false,
      error: 'the client cancelled the call; it was stopped and not counted',
      error_type: CANCELLED,
      stderr: '',
      stdout: '',
    };
  }
  if (signal?.aborted && outcome.error.platform === true)
    return { ok: false, error: outcome.error.message, error_type: INTERRUPTED, stderr: '', stdout: '' };
  return { ok: false, error: outcome.error.message, error_type: outcome.error.type, stderr: outcome.error.stderr, stdout: outcome.stdout };
}

/** A sandbox run, unless the run was already stopped: then an interrupted run, without starting one. */
export function runInSandbox(sandbox: Sandbox, signal: AbortSignal, request: SandboxRequest): Promise<SandboxOutcome> {
  if (signal.aborted) {
    return Promise.resolve({
      ok: false,
      error: {
        type: SANDBOX_ERROR_TYPES.sandbox,
        message: 'the run was interrupted: the server is shutting down',
        stderr: '',
        platform: true,
      },
      stdout: '',
      durationMs: 0,
    });
  }
  return sandbox.run({ ...request, signal });
}
