/**
 * How a finished run becomes its outcome: from what the host saw (ready or not, timed out, stopped
 * for an overflow, OOM-killed, the helper's exit status) and the runner's answer, to a typed
 * SandboxOutcome. Pure: the clock and the log are passed in. A platform failure never carries
 * anything of the run; the run's own stderr is returned only with failures of the run itself.
 */
import {
  answeredErrorType,
  answerText,
  SANDBOX_ERROR_TYPES,
  type SandboxFailure,
  type SandboxLimits,
  type SandboxOutcome,
  type SandboxRequest,
} from '../core/sandbox.js';
import type { RunAnswer } from './wire/messages.js';
import type { RunRecord } from './wire/channel.js';

/** Kept from a failure's traceback/stack; the head of a traceback says little. */
export const TRACEBACK_CAP = 16 * 1024;
/** How far past a traceback's cut the kept part may start, to start it between tokens. */
const TOKEN_WINDOW = 4096;
/** Longest excerpt of a failed start's platform lines in the log. */
const LOG_EXCERPT_CHARS = 2000;

/** Room on fd 3 for the result (or a bridge call's input) plus the error envelope and a traceback. */
export function lineCapBytes(limits: SandboxLimits): number {
  return limits.maxResultBytes + 2 * TRACEBACK_CAP;
}

export interface OutcomeContext {
  /** Runs have a memory cgroup (its OOM kills are counted); without it a SIGKILL may be the memory rlimit's. */
  memoryCgroup: boolean;
  log: (message: string) => void;
  /** The clock `started` was read from (default performance.now). */
  now?: () => number;
}

/** The helper's statuses for its child's signals (128+N) that a run's own limits explain. */
const SIGNAL_EXITS: Record<number, (limits: SandboxLimits) => { type: string; message: string }> = {
  [128 + 24]: (limits) => ({
    type: SANDBOX_ERROR_TYPES.timeout,
    message: `the function used more than ${limits.cpuSeconds} s of CPU time and was stopped`,
  }),
  [128 + 31]: () => ({
    type: SANDBOX_ERROR_TYPES.exited,
    message: 'the function made a system call the sandbox forbids (SIGSYS) and was stopped',
  }),
  [128 + 25]: (limits) => ({
    type: SANDBOX_ERROR_TYPES.exited,
    message: `the function wrote a file larger than ${limits.maxFileBytes} bytes and was stopped`,
  }),
};

export function interpret(request: SandboxRequest, run: RunRecord, started: number, context: OutcomeContext): SandboxOutcome {
  const { limits } = request;
  const { log } = context;
  const now = context.now ?? (() => performance.now());
  const durationMs = () => elapsed(started, now());
  // Stopped because the server is: the platform's doing, whatever the run had done (unanswered).
  if (request.signal?.aborted && run.answer === null)
    return platformFailure('the run was interrupted: the server is shutting down', durationMs());
  const stdoutText = run.stdout.text();
  const stderrText = run.stderr.text();
  const fail = (type: string, message: string, trace = '') =>
    failed({ type, message, stderr: joinLogs(stderrText, trace) }, stdoutText, durationMs());

  if (!run.ready) {
    // The runner never said ready, so no user code ran: the sandbox did not start. Decided from
    // that alone; what the sandbox printed is only logged (its platform lines, never the rest).
    const platformLines = stderrText.split('\n').filter((line) => /^(bwrap|mcpworks-sandbox-helper): /.test(line));
    log(
      `sandbox failed to start (status ${run.exit.code ?? run.exit.signal ?? 'none'})${platformLines.length ? `: ${platformLines.join(' | ').slice(0, LOG_EXCERPT_CHARS)}` : ''}`,
    );
    return platformFailure('the sandbox could not start', durationMs());
  }
  if (run.flooded)
    return fail(SANDBOX_ERROR_TYPES.exited, 'the function sent bridge calls without waiting for their answers and was stopped');
  if (run.overflowed) return fail(SANDBOX_ERROR_TYPES.outputSize, `the result is larger than ${limits.maxResultBytes} bytes`);
  const parsed = run.answer as RunAnswer | null;
  if (parsed !== null && typeof parsed === 'object') {
    if (parsed.ok === true) {
      return { ok: true, result: parsed.result ?? null, stdout: stdoutText, stderr: stderrText, durationMs: durationMs() };
    }
    const trace = trimTraceback(answerText(parsed.traceback, ''));
    // The run's own word: never a platform failure, whatever type it names.
    return fail(answeredErrorType(answerText(parsed.type, 'Error')), answerText(parsed.message, ''), trace);
  }
  if (run.timedOut) return fail(SANDBOX_ERROR_TYPES.timeout, `the function ran longer than ${limits.timeoutSeconds} s and was stopped`);
  if (run.oomKilled || /JavaScript heap out of memory|Reached heap limit/.test(stderrText)) {
    return fail(SANDBOX_ERROR_TYPES.memory, `the function used more than ${limits.memoryMb} MB of memory and was stopped`);
  }
  if (run.exit.lost) {
    log('a sandbox ended unobserved: its spawner stopped during the run');
    return platformFailure('the sandbox was lost (its spawner stopped)', durationMs());
  }
  // The helper reports its child's signals as 128+N; a signal of its own came from outside the
  // sandbox (an operator, the host's OOM killer), never from the run (another PID namespace).
  if (run.exit.signal !== null) {
    log(`a sandbox helper was killed by ${run.exit.signal} during a run`);
    return platformFailure(`the sandbox was stopped by the host (${run.exit.signal}) before the function finished`, durationMs());
  }
  const status = run.exit.code ?? -1;
  // bubblewrap reports a child killed by signal N as status 128+N.
  const known = SIGNAL_EXITS[status];
  if (known) {
    const { type, message } = known(limits);
    return fail(type, message);
  }
  if (status === 128 + 9 && !context.memoryCgroup) {
    return fail(SANDBOX_ERROR_TYPES.exited, 'the function was killed (SIGKILL), possibly for exceeding its memory');
  }
  const how = status > 128 ? `was killed by signal ${status - 128}` : `exited with status ${status}`;
  return fail(SANDBOX_ERROR_TYPES.exited, `the function ${how} before returning a result`);
}

export function failed(error: SandboxFailure, stdout: string, durationMs: number): SandboxOutcome {
  return { ok: false, error, stdout, durationMs };
}

/** Only for what the host saw itself (see SandboxFailure.platform); nothing of the run is returned. */
export function platformFailure(message: string, durationMs: number): SandboxOutcome {
  return failed({ type: SANDBOX_ERROR_TYPES.sandbox, message, stderr: '', platform: true }, '', durationMs);
}

/** Milliseconds since `started`, to a tenth. */
export function elapsed(started: number, now: number = performance.now()): number {
  return Math.round((now - started) * 10) / 10;
}

export function joinLogs(stderr: string, trace: string): string {
  if (!trace) return stderr;
  if (!stderr) return trace;
  return stderr.endsWith('\n') ? stderr + trace : `${stderr}\n${trace}`;
}

export function trimTraceback(trace: string): string {
  if (trace.length <= TRACEBACK_CAP) return trace;
  // Keep the end: the innermost frames and the exception line matter most. The kept part starts at
  // a character no secret pattern's body holds (white space, quote, angle bracket), so a token the
  // cut would split (ghp_…, sk-…, a URI's password) is dropped whole, not kept without the start
  // that the scanner knows it by. An env value's end is found by the scanner (SecretScanner.cutHead).
  let at = trace.length - TRACEBACK_CAP;
  const boundary = trace.slice(at, at + TOKEN_WINDOW).search(/[\s'"<>]/);
  at += boundary === -1 ? TOKEN_WINDOW : boundary;
  return `[traceback cut]\n${trace.slice(at)}`;
}
