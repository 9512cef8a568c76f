/**
 * The sandbox contract: what a run is asked to do and what it answers. Pure types and constants;
 * the implementations live in src/sandbox and may change (fresh sandbox, warm pool) behind this.
 */
import type { TierLimits } from './tiers.js';
import { MB } from './units.js';

export type SandboxLanguage = 'python' | 'typescript';

export const SANDBOX_LANGUAGES: readonly SandboxLanguage[] = Object.freeze(['python', 'typescript']);

export function isSandboxLanguage(value: unknown): value is SandboxLanguage {
  return value === 'python' || value === 'typescript';
}

/** Each of stdout and stderr is kept up to this many bytes, then cut with a marker (compat notes: 64 KB). */
export const LOG_CAP_BYTES = 64 * 1024;

/** Everything a single run may use. Built from a tier with `sandboxLimitsFor`. */
export interface SandboxLimits {
  /** Wall-clock limit; the whole process tree is killed when it passes. */
  timeoutSeconds: number;
  /** Memory of the whole run (all processes and the tmpfs). */
  memoryMb: number;
  /** Largest serialised result, in bytes. */
  maxResultBytes: number;
  /** Each of stdout and stderr is cut after this many bytes. */
  maxLogBytes: number;
  /** Processes and threads alive at once inside the run. */
  maxProcesses: number;
  /** Largest single file the run may write. */
  maxFileBytes: number;
  /** Size of the writable /tmp. */
  tmpfsBytes: number;
  /** CPU seconds per process. */
  cpuSeconds: number;
}

export function sandboxLimitsFor(tier: Pick<TierLimits, 'timeoutSeconds' | 'memoryMb' | 'maxResultBytes'>): SandboxLimits {
  return {
    timeoutSeconds: tier.timeoutSeconds,
    memoryMb: tier.memoryMb,
    maxResultBytes: tier.maxResultBytes,
    maxLogBytes: LOG_CAP_BYTES,
    maxProcesses: 64,
    maxFileBytes: 64 * MB,
    // Counted against the memory limit too (tmpfs pages are charged to the run's cgroup).
    tmpfsBytes: Math.min(256 * MB, Math.floor((tier.memoryMb * MB) / 2)),
    cpuSeconds: tier.timeoutSeconds,
  };
}

/** A host directory shown read-only inside the sandbox (under /opt). */
export interface SandboxMount {
  source: string;
  target: string;
}

/**
 * How the code is entered: `main` (a function: Python main(input_data) then result/output;
 * TypeScript's exported main), or `script` (code mode: the code runs top to bottom and its
 * `result`, else `output`, is the answer; TypeScript runs as an ES module, top-level await works).
 */
export type SandboxEntry = 'main' | 'script';

/**
 * Answers a message the code sends through the in-sandbox bridge (Python `_mcpworks_bridge.call`,
 * Node `globalThis.__mcpworksBridge`), which blocks until the answer arrives.
 */
export type SandboxBridge = (message: unknown) => Promise<unknown>;

export interface SandboxRequest {
  code: string;
  language: SandboxLanguage;
  /** The function's input: `input_data` in Python, the argument of `main` in TypeScript. */
  input: unknown;
  /** Values the function sees as environment variables. Never placed in argv or logs. */
  env?: Readonly<Record<string, string>>;
  limits: SandboxLimits;
  /**
   * Directory of installed npm packages for a TypeScript function (from
   * prepareTypescriptDependencies); mounted read-only as the function's node_modules.
   */
  nodeModulesDir?: string;
  /** Default 'main'. */
  entry?: SandboxEntry;
  /** Extra read-only directories (targets must lie under /opt). */
  mounts?: readonly SandboxMount[];
  /** Directories (inside the sandbox) searched first by `import` (Python) / `require` and ESM imports (Node). */
  libraryPaths?: readonly string[];
  bridge?: SandboxBridge;
  /**
   * Python only: lets the run use a warm fork-server (zygote) shared by runs of the same `group`
   * (a namespace) and shape, which has pre-imported `imports` (allow-listed import names that the
   * group's functions declare). Without it, or with the zygote off, the run starts its own interpreter.
   * `owner` (the account) is whose share of the zygote slots it counts against (without it, the
   * group's own). `preload`: a module of the request's `libraryPaths` (code mode's `functions`
   * package: the platform's static loader over JSON data, no function's code) that the zygote
   * imports too, so that no run pays for it; only when every library path lies in a mount.
   */
  warm?: { group: string; imports: readonly string[]; owner?: string; preload?: string };
  /**
   * Aborted when the server stops before the run ends (its grace period is over): the run is
   * killed and, unless it had answered, ends as a platform failure (not metered).
   */
  signal?: AbortSignal;
}

/** Failure types a run can report besides the user's own exception class names. */
export const SANDBOX_ERROR_TYPES = Object.freeze({
  syntax: 'SyntaxError',
  transpile: 'TranspileError',
  timeout: 'TimeoutError',
  memory: 'MemoryError',
  outputSize: 'OutputSizeError',
  schema: 'SchemaError',
  /** The result is not JSON (a set, a datetime, a function, a cycle, NaN, a BigInt…). */
  notSerializable: 'SerializationError',
  /** The process ended without reporting a result (os._exit, process.exit, a crash). */
  exited: 'ProcessExitError',
  /** The platform could not start the sandbox; not the function's fault. */
  sandbox: 'SandboxError',
  /** A function's own exception (or answer line) named `SandboxError`: the name is the platform's. */
  userSandbox: 'UserSandboxError',
} as const);

/**
 * Error types of bridge answers (a `functions.x()` call from code mode) besides the run's own
 * (SANDBOX_ERROR_TYPES: schema, transpile) and the domain's. Users' code sees them, so the values
 * stay as they are, casing mix included (`missing_env` beside `NotFound`) until a breaking version.
 */
export const BRIDGE_ERROR_TYPES = Object.freeze({
  /** The request is not one the bridge takes, or comes too late or too often. */
  bridge: 'BridgeError',
  notFound: 'NotFound',
  missingEnv: 'missing_env',
  /** The call's input could not be passed to any function (too deep, too large): as at the endpoint. */
  validation: 'validation_error',
  /** A call that costs the server work found the account's per-minute rate used up. */
  rateExceeded: 'EXECUTION_RATE_EXCEEDED',
  /** `from functions import x` / `functions.x` named no function or service of the namespace. */
  functionNotFound: 'FunctionNotFoundError',
} as const);

/**
 * A field of the function's own answer (its error's type, message, traceback) as text, as String()
 * gives it, whatever JSON the function wrote: String() of an object whose `toString` is not a
 * function throws, which would end the call as an internal error, unrecorded and uncounted.
 */
export function answerText(value: unknown, fallback: string): string {
  if (value === undefined || value === null) return fallback;
  try {
    return String(value);
  } catch {
    return Object.prototype.toString.call(value);
  }
}

/**
 * The type a run's own answer is reported with. `SandboxError` means "the platform failed", which
 * only the host can say (and which is not metered); a function that raises or writes it gets its
 * error reported, and counted, as `UserSandboxError`.
 */
export function answeredErrorType(type: string): string {
  return type === SANDBOX_ERROR_TYPES.sandbox ? SANDBOX_ERROR_TYPES.userSandbox : type;
}

export type SandboxErrorType = string;

export interface SandboxFailure {
  /** One of SANDBOX_ERROR_TYPES or the user's exception class name (ValueError, TypeError…). */
  type: SandboxErrorType;
  message: string;
  /** The function's stderr followed by a trimmed traceback that shows only the user's lines. */
  stderr: string;
  /**
   * A platform failure (not metered), decided by the host from what it saw itself: the helper
   * could not be spawned, the sandbox never reported ready, its network, spawner or zygote failed.
   * Never taken from anything the run wrote or printed.
   */
  platform?: true;
}

export type SandboxOutcome =
  | { ok: true; result: unknown; stdout: string; stderr: string; durationMs: number }
  | { ok: false; error: SandboxFailure; stdout: string; durationMs: number };

/** The one interface every way of running user code implements. */
export interface Sandbox {
  run(request: SandboxRequest): Promise<SandboxOutcome>;
  /** Releases what the implementation holds (temporary runtime files, pooled processes). */
  close(): Promise<void>;
}
