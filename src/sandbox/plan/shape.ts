/**
 * What a request's sandbox is before the request exists: its helper options and bubblewrap command
 * line, cgroup limits and log cap (its shape), and what a pre-started helper is sent to start it.
 * Two requests of one shape can use the same kind of pre-started sandbox. Pure.
 */
import type { SandboxLanguage, SandboxLimits, SandboxRequest } from '../../core/sandbox.js';
import type { PoolShape } from '../warm-pool.js';
import { encodeCommandFrame } from '../wire/command-frame.js';
import { mountArgs } from './bwrap-args.js';
import { SANDBOX_GID } from './environment.js';
import { MB } from '../../core/units.js';

/**
 * Everything fixed when a sandbox starts, before its request exists: the helper's options (rlimits,
 * user) and bubblewrap's command line (tmpfs size, mounts, node_modules, the interpreter and its
 * heap) plus the cgroup limits and the log cap. Two requests with the same key can use the same
 * kind of pre-started sandbox; what differs per request (code, input, env, result cap, bridge,
 * timeout) reaches the sandbox only when its run begins.
 */
export interface SandboxShape extends PoolShape {
  language: SandboxLanguage;
  command: string[];
  /** Host directories the sandbox mounts from the request (mounts, node_modules). */
  viewSources: string[];
  cgroupLimits: { memoryBytes: number; maxProcesses: number };
  maxLogBytes: number;
}

/** What shapes depend on besides the request: fixed when the sandbox is made. */
export interface ShapeContext {
  /** baseBubblewrapArgs of the sandbox's layout. */
  baseArgs: readonly string[];
  /** The real path of the node binary. */
  nodeBinary: string;
  /** bubblewrap's path on the host. */
  bwrap: string;
  network: boolean;
  /** Which cgroup controllers runs get (absent ones are replaced by rlimits). */
  cgroups: { memory: boolean; pids: boolean };
  /** The one host user every sandbox runs as, or null when each gets a uid of its own (or the server is not root). */
  fixedUser: { uid: number; gid: number } | null;
}

/**
 * The helper's own wall clock runs this much past the run's limit: the server's timer (and its
 * SIGTERM) comes first; the helper's is for a server that cannot act (gone, or stalled).
 */
export const HELPER_DEADLINE_MARGIN_MS = 1000;

/** The sandbox's own wall clock (the helper's, a zygote child's): the longer of the run's two time limits, plus the margin. */
export function helperDeadlineMs(limits: SandboxLimits): number {
  return Math.max(limits.timeoutSeconds, limits.cpuSeconds) * 1000 + HELPER_DEADLINE_MARGIN_MS;
}

/**
 * What one idle pooled sandbox holds, for the pool's free-memory cap: measured on Debian 12 (Python
 * 3.11, Node 20) at about 5 and 7 MB charged to its cgroup (the interpreters' code is shared page
 * cache), doubled for bubblewrap, the helper and kernel objects.
 */
export const IDLE_MEMORY_ESTIMATE: Record<SandboxLanguage, number> = { python: 10 * MB, typescript: 14 * MB };

/** The helper's options for a request: rlimits, its backstop deadline, the user, the fds it keeps. */
export function helperArgs(request: SandboxRequest, context: ShapeContext): string[] {
  const { limits } = request;
  const args: string[] = [];
  const rlimit = (name: string, soft: number, hard = soft) => args.push('--rlimit', `${name}=${Math.floor(soft)}:${Math.floor(hard)}`);
  rlimit('cpu', limits.cpuSeconds, limits.cpuSeconds + 1);
  rlimit('fsize', limits.maxFileBytes);
  rlimit('core', 0);
  rlimit('nofile', 1024);
  if (!context.cgroups.memory) {
    // No memory cgroup: cap address space instead. Node reserves ~1 GB of virtual space it never touches.
    const extra = request.language === 'typescript' ? 1024 : 0;
    rlimit('as', (limits.memoryMb + extra) * MB);
  }
  // Without a pids group the per-user count is the only fork-bomb brake (per sandbox with a uid
  // of its own; shared by concurrent runs with one fixed sandbox user).
  if (!context.cgroups.pids) rlimit('nproc', limits.maxProcesses * 4);
  // The helper's backstop: the longer of the run's two time limits (equal for every plan), so the
  // shape, and with it the pool's keys, depends on nothing the CPU limit did not already decide.
  args.push('--deadline-ms', String(helperDeadlineMs(limits)));
  if (context.fixedUser) args.push('--user', `${context.fixedUser.uid}:${context.fixedUser.gid}`);
  // fds 5 and 6 are bubblewrap's --info-fd/--block-fd pipes when the network is set up.
  args.push('--keep-fds', context.network ? '7' : '5');
  return args;
}

/** Most shapes remembered per context: a handful of plans and languages; past it, the memo starts over. */
const REMEMBERED_SHAPES = 64;
const remembered = new WeakMap<ShapeContext, Map<string, SandboxShape>>();

/**
 * The request's shape, the same (frozen) object for every request with the same language, limits
 * and views: its command line and key are built once, not for every run (a run's pool and zygote
 * lookups are by key). Everything `planShape` reads of the request is in the memo's key.
 */
export function shapeFor(request: SandboxRequest, context: ShapeContext): SandboxShape {
  const key = JSON.stringify([
    request.language,
    request.limits,
    request.mounts ?? null,
    request.nodeModulesDir ?? null,
    request.libraryPaths ?? null,
  ]);
  let shapes = remembered.get(context);
  if (!shapes) remembered.set(context, (shapes = new Map()));
  const known = shapes.get(key);
  if (known) return known;
  const shape = planShape(request, context);
  Object.freeze(shape.command);
  Object.freeze(shape.viewSources);
  Object.freeze(shape.cgroupLimits);
  Object.freeze(shape);
  if (shapes.size >= REMEMBERED_SHAPES) shapes.clear();
  shapes.set(key, shape);
  return shape;
}

function planShape(request: SandboxRequest, context: ShapeContext): SandboxShape {
  const { limits } = request;
  const args = [...context.baseArgs, '--size', String(limits.tmpfsBytes), '--perms', '1777', '--tmpfs', '/tmp'];
  let command: string[];
  if (request.language === 'python') {
    // -I: ignore PYTHON* env and user site; -S: no site.py (runner adds dist-packages itself); -B: read-only disk.
    command = ['/usr/bin/python3', '-I', '-S', '-B', '/sandbox/runner.pyc'];
  } else {
    // V8 stops at a heap limit below the cgroup's, so most JS exhaustion is a clean, reportable error.
    const heapMb = Math.max(64, Math.floor(limits.memoryMb * 0.75));
    // --use-openssl-ca: trust the host's CA store (/etc/ssl), as Python's ssl does.
    command = [context.nodeBinary, `--max-old-space-size=${heapMb}`, '--use-openssl-ca', '/sandbox/runner.cjs'];
  }
  args.push(...mountArgs(request.mounts ?? []));
  if (request.language === 'typescript') {
    if (request.nodeModulesDir) args.push('--ro-bind', request.nodeModulesDir, '/function/node_modules');
    // ES modules resolve bare imports only through node_modules directories above them; a
    // root-level link makes the first library path visible to code-mode scripts.
    const library = request.libraryPaths?.[0];
    if (library) args.push('--symlink', library, '/node_modules');
  }
  args.push('--remount-ro', '/', '--chdir', '/tmp', '--seccomp', '4', '--', ...command);
  const fullCommand = [
    ...helperArgs(request, context),
    '--',
    context.bwrap,
    ...(context.network ? ['--info-fd', '5', '--block-fd', '6'] : []),
    ...args,
  ];
  const cgroupLimits = { memoryBytes: limits.memoryMb * MB, maxProcesses: limits.maxProcesses };
  const views = [
    request.mounts?.length ? 'mounts' : '',
    request.nodeModulesDir ? 'node_modules' : '',
    request.language === 'typescript' && request.libraryPaths?.length ? 'library' : '',
  ];
  return {
    key: JSON.stringify([fullCommand, cgroupLimits, limits.maxLogBytes]),
    label: [request.language, `${limits.memoryMb} MB`, ...views.filter(Boolean)].join(' '),
    memoryEstimateBytes: IDLE_MEMORY_ESTIMATE[request.language],
    language: request.language,
    command: fullCommand,
    viewSources: [
      ...(request.mounts ?? []).map((mount) => mount.source),
      ...(request.language === 'typescript' && request.nodeModulesDir ? [request.nodeModulesDir] : []),
    ],
    cgroupLimits,
    maxLogBytes: limits.maxLogBytes,
  };
}

/**
 * The rest of the helper's command line, sent on a launcher's stdin to start the sandbox. A
 * pooled runner is told so (its last argument), to use its wait for warming up; that changes
 * nothing a run can rely on, so it is not part of the shape's key.
 */
export function commandFrame(shape: SandboxShape, pooled: boolean, uid: number | null): Buffer {
  // The sandbox's own uid is not part of the shape: any pooled sandbox of it serves any run.
  return encodeCommandFrame([
    ...(uid === null ? [] : ['--user', `${uid}:${SANDBOX_GID}`]),
    ...(pooled ? ['--clock-on-signal'] : []),
    ...shape.command,
    ...(pooled ? ['pooled'] : []),
  ]);
}
