/**
 * Every message the sandbox host exchanges with a program over a line-based stream, one union per
 * stream, each naming the program at its other end. Read with the readers of json-lines.ts.
 */

// ---- fd 3 of a run (RunChannel, wire/channel.ts). Other end: runtime/runner.py and runtime/runner.cjs.

/** What the runner writes on fd 3 when it is started and blocked reading its request. */
export const READY_LINE = '{"ready":true}';

/**
 * What the runner writes on fd 3 once it has read its request, before any of the run's code
 * (runner.py, runner.cjs): a sandbox or zygote child gone without it never ran its code (see
 * execute.ts and ZygoteChild), so the host may run it elsewhere.
 */
export const STARTED_LINE = '{"started":true}';

/** How the runners begin a bridge call's line: `{"bridge": message}`. */
export const BRIDGE_PREFIX = Buffer.from('{"bridge":');

/** A run's answer: any line on fd 3 that is neither READY_LINE nor a bridge call (the first counts). */
export interface RunAnswer {
  ok: boolean;
  result?: unknown;
  type?: string;
  message?: string;
  traceback?: string;
}

/**
 * A zygote child's set-up step that failed (native/mcpworks-zygote-child.c), before any of its run
 * exists: `{"setupFailed": STEP, "errno": N}` on the child's fd 3 before the ready line, or on its
 * zygote's control socket with `"child": ID` until the child has its channel. The step is a fixed
 * word of the C code; nothing else is read from the line.
 */
export interface SetupFailure {
  step: string;
  errno: number;
}

/** The report in a parsed line, if the line is one (a step word and an errno), else null. */
export function setupFailureOf(value: unknown): SetupFailure | null {
  if (value === null || typeof value !== 'object') return null;
  const { setupFailed: step, errno } = value as { setupFailed?: unknown; errno?: unknown };
  if (typeof step !== 'string' || !/^[a-z_]{1,32}$/.test(step)) return null;
  if (typeof errno !== 'number' || !Number.isInteger(errno) || errno < 0 || errno > 4095) return null;
  return { step, errno };
}

// ---- A zygote's control socket (fd 3 of the zygote). Other end: runtime/zygote.py.

/**
 * Zygote → host: {"ready": true} once its imports are done; {"exited": ID, "status": N} per forked
 * child; a child's SetupFailure with `child: ID` (written by the child itself, see SetupFailure).
 */
export interface ZygoteControl {
  ready?: boolean;
  exited?: string;
  status?: number;
  setupFailed?: string;
  child?: string;
}

/** A control line is an object (its fields are checked where they are read); anything else is ignored. */
export function isZygoteControl(value: unknown): value is ZygoteControl {
  return value !== null && typeof value === 'object';
}

/**
 * Host → zygote: a fork request, a fixed-size record "F TOKEN ID run-CGROUP\n" (32, 16 and 16 hex
 * digits), which zygote.py reads by its length.
 */
export function forkRequest(token: string, id: string, cgroup: string): string {
  return `F ${token} ${id} ${cgroup}\n`;
}

// ---- The spawner process (spawner.ts). Other end: host-bin/spawner.cjs.

/** Host → spawner, on its IPC channel. */
export type SpawnerRequest =
  | { op: 'spawn'; id: number; file: string; args: string[]; env: Record<string, string>; seccomp: string }
  | { op: 'kill'; id: number; signal: NodeJS.Signals };

/** Spawner → host, as JSON lines on its stdout; pipes come on its IPC channel ({op: 'stdio'}). */
export type SpawnerEvent =
  | { op: 'spawned'; id: number; pid: number }
  | { op: 'failed'; id: number; message: string }
  | { op: 'exit'; id: number; code: number | null; signal: NodeJS.Signals | null };

// ---- The zygotes' host socket (zygote.ts, HostSocket). Other end: runtime/zygote.py's children.

/** The greeting each connection begins with: "TOKEN STREAM\n" (32 hex digits; out, err or chan). */
export interface HostSocketHello {
  token: string;
  stream: 'out' | 'err' | 'chan';
}

const TOKEN = /^[0-9a-f]{32}$/;
/** The longest greeting: a token, a space and a stream name. */
export const HELLO_MAX_BYTES = 64;

/** A greeting line read, or null when it is not one. */
export function parseHello(line: Buffer): HostSocketHello | null {
  const [token, stream] = line.toString('latin1').split(' ');
  if (!TOKEN.test(token ?? '')) return null;
  if (stream !== 'out' && stream !== 'err' && stream !== 'chan') return null;
  return { token: token!, stream };
}
