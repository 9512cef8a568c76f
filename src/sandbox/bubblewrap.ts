/**
 * The bubblewrap sandbox: every run is a fresh set of namespaces (user, PID, mount, IPC, UTS, net,
 * cgroup) over a read-only /usr, a small private tmpfs, seccomp deny-list, per-run cgroup and
 * rlimits. Requests travel on stdin and answers on fd 3, so env values never appear in any argv.
 * With the pool on (the default), sandboxes are started ahead of their runs and wait, blocked on
 * stdin, for the request (see warm-pool.ts); each still serves exactly one run.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { chmodSync, chownSync, closeSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, realpathSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import type { Duplex } from 'node:stream';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { invalid } from '../core/errors.js';
import { RawJson } from '../core/raw-json.js';
import {
  answeredErrorType,
  SANDBOX_ERROR_TYPES,
  sandboxLimitsFor,
  type Sandbox,
  type SandboxFailure,
  type SandboxLanguage,
  type SandboxLimits,
  type SandboxOutcome,
  type SandboxRequest,
} from '../core/sandbox.js';
import { DEFAULT_TIER, limitsFor } from '../core/tiers.js';
import { CappedCapture } from './capture.js';
import { RawAnswer, RunChannel, type RunAnswer, type RunRecord } from './channel.js';
import { sharedScanPool } from '../run/scan-pool.js';
import { WarmPool, type PoolItem, type PoolShape, type PoolStats, type WarmPoolOptions } from './warm-pool.js';
import { createRunCgroup, detectCgroupSupport, releaseCgroupSupport, type CgroupSupport } from './cgroup.js';
import { LauncherPool, type Launcher, type LauncherExit } from './launcher-pool.js';
import { Spawner } from './spawner.js';
import { defaultHostPaths, isUnderUsr, procMasks, topLevelSystemDirs, type HostPaths, type ProcMasks } from './host.js';
import { ZygotePool, type ZygoteCgroups, type ZygoteOptions, type ZygoteProcess, type ZygoteSpec, type ZygoteStats } from './zygote.js';
import { findPythonPackage } from '../core/python-packages.js';
import { transpileTypescript } from './transpile.js';
import { MountViews } from './mount-views.js';
import { allowedRoutes, attachNetwork, networkAvailable, type NetworkAttachment } from './network.js';
import { NPM_DEFAULTS } from './npm-build.js';
import { hostPasswd, parseSandboxUids, type UidRange } from './uid-range.js';

const MB = 1024 * 1024;
/** The user and group the function sees inside its namespace. */
const INNER_ID = 1000;
/** Kept from a failure's traceback/stack; the head of a traceback says little. */
const TRACEBACK_CAP = 16 * 1024;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

export class SandboxUnavailableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SandboxUnavailableError';
  }
}

export interface BubblewrapSandboxOptions {
  /** Give functions network egress (default off; the server passes MCPWORKS_SANDBOX_NETWORK). */
  network?: boolean;
  /** With the network on: prefixes in refused ranges runs may reach (MCPWORKS_SANDBOX_NETWORK_ALLOW, see allowedRoutes). */
  networkAllow?: readonly string[];
  /**
   * One host user every sandbox runs as when the server itself is root. Without it (the default),
   * each sandbox and each zygote gets a host uid of its own from `sandboxUids`, in group nogroup
   * (65534), so per-user kernel limits (inotify instances, mqueue bytes, pending signals, user
   * namespaces) are never shared by two runs in flight (children of one zygote, one namespace's,
   * share its uid).
   */
  sandboxUser?: { uid: number; gid: number };
  /** The host uids handed out (default 2000000000-2000065535; the server passes MCPWORKS_SANDBOX_UIDS). */
  sandboxUids?: { first: number; count: number };
  /** Override where bubblewrap, the helper, the interpreters and the runner files are. */
  paths?: Partial<HostPaths>;
  /** Operator diagnostics (never contains env values). */
  log?: (message: string) => void;
  /** Where large answer lines (RawAnswer) are decoded off the main thread (default: the process's scan workers). */
  answers?: { decode(line: Buffer): Promise<RunAnswer | true> };
  /** Launchers kept pre-started (cgroups already joined); default 2, 0 turns it off. */
  launcherPool?: number;
  /** false: limit memory and processes with rlimits only, as on hosts without usable cgroups. */
  cgroups?: boolean;
  /**
   * Start sandbox helpers from a small spawner process rather than from the server (default
   * true): a spawn from the server's large process holds its event loop for milliseconds (see
   * spawner.ts). Not used with the network on.
   */
  spawner?: boolean;
  /**
   * Pre-started sandboxes waiting for their request (default on; the server passes MCPWORKS_SANDBOX_POOL).
   * false: every run starts its sandbox on the request path, as before the pool.
   */
  pool?: boolean | SandboxPoolOptions;
  /**
   * Python fork-servers for requests that ask for one (`warm`): default on (the server passes
   * MCPWORKS_ZYGOTE). Used where runs can get cgroups of their own (root, cgroup v1 memory and
   * pids) and the network is off; elsewhere every run takes the pool or cold path.
   */
  zygote?: boolean | ZygoteOptions;
}

export interface SandboxPoolOptions extends WarmPoolOptions {
  /** Limits whose plain Python and TypeScript sandboxes are kept ready from the start (default: the default tier's). */
  warmLimits?: readonly SandboxLimits[];
}

/** The bubblewrap implementation of Sandbox, with a view of its pool for operators, tests and bench. */
export interface BubblewrapSandbox extends Sandbox {
  /** The pool's counters and sizes, or null when the pool is off. */
  poolStats(): PoolStats | null;
  /** The zygotes and their runs, or null when zygotes are not used. */
  zygoteStats(): ZygoteStats | null;
}

export function zygoteFromEnvironment(value: string | undefined): boolean {
  return value !== 'off';
}

const IMPORT_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

export function poolFromEnvironment(value: string | undefined): boolean {
  return value !== 'off';
}

/** Memory limit of a pre-started launcher until its run sets the tier's (it only waits on stdin). */
const DEFAULT_LAUNCHER_MEMORY = 64 * 1024 * 1024;

/**
 * Everything fixed when a sandbox starts, before its request exists: the helper's options (rlimits,
 * user) and bubblewrap's command line (tmpfs size, mounts, node_modules, the interpreter and its
 * heap) plus the cgroup limits and the log cap. Two requests with the same key can use the same
 * kind of pre-started sandbox; what differs per request (code, input, env, result cap, bridge,
 * timeout) reaches the sandbox only when its run begins.
 */
interface SandboxShape extends PoolShape {
  language: SandboxLanguage;
  command: string[];
  /** Host directories the sandbox mounts from the request (mounts, node_modules). */
  viewSources: string[];
  cgroupLimits: { memoryBytes: number; maxProcesses: number };
  maxLogBytes: number;
}

/** A started sandbox (pooled or cold) that has not yet been sent its request. */
interface PreparedSandbox extends PoolItem {
  launcher: Launcher;
  channel: RunChannel;
  stdout: CappedCapture;
  stderr: CappedCapture;
  network: Promise<{ attachment: NetworkAttachment | null; failed: boolean }>;
  /** Started ahead of its run: its helper's wall clock waits for SIGUSR2 (see helperArgs). */
  pooled: boolean;
}

/**
 * The helper's own wall clock runs this much past the run's limit: the server's timer (and its
 * SIGTERM) comes first; the helper's is for a server that cannot act (gone, or stalled).
 */
const HELPER_DEADLINE_MARGIN_MS = 1000;

/** The sandbox's own wall clock (the helper's, a zygote child's): the longer of the run's two time limits, plus the margin. */
function helperDeadlineMs(limits: SandboxLimits): number {
  return Math.max(limits.timeoutSeconds, limits.cpuSeconds) * 1000 + HELPER_DEADLINE_MARGIN_MS;
}

/**
 * What one idle pooled sandbox holds, for the pool's free-memory cap: measured on Debian 12 (Python
 * 3.11, Node 20) at about 5 and 7 MB charged to its cgroup (the interpreters' code is shared page
 * cache), doubled for bubblewrap, the helper and kernel objects.
 */
const IDLE_MEMORY_ESTIMATE: Record<SandboxLanguage, number> = { python: 10 * MB, typescript: 14 * MB };

/** The group of every sandbox (nogroup): per-user limits are per uid, so sharing it shares none. */
const SANDBOX_GID = 65534;

/**
 * MCPWORKS_SANDBOX_UIDS=FIRST-LAST: the host uids sandboxes run as, checked against the host's
 * users (see uid-range.ts). The server checks it at start (configFromEnv) and passes the range in.
 */
export function sandboxUidsFromEnvironment(value: string | undefined, npmUid: number = NPM_DEFAULTS.user.uid): UidRange {
  try {
    return parseSandboxUids(value, { passwd: hostPasswd(), npmUid });
  } catch (error) {
    throw new SandboxUnavailableError((error as Error).message);
  }
}

/**
 * Hands out uids in turn, skipping those in use, so a uid comes back only after every other one
 * (no kernel object a finished run left, if any, meets the next run). With every one in use, the
 * next in turn is shared.
 */
class UidAllocator {
  private next = 0;
  private readonly inUse = new Map<number, number>();

  constructor(private readonly range: { first: number; count: number }) {}

  take(): number {
    let uid = this.range.first + (this.next % this.range.count);
    for (let tried = 0; tried < this.range.count && this.inUse.has(uid); tried++) {
      this.next++;
      uid = this.range.first + (this.next % this.range.count);
    }
    this.next++;
    this.inUse.set(uid, (this.inUse.get(uid) ?? 0) + 1);
    return uid;
  }

  release(uid: number): void {
    const count = (this.inUse.get(uid) ?? 1) - 1;
    if (count > 0) this.inUse.set(uid, count);
    else this.inUse.delete(uid);
  }
}

export function networkFromEnvironment(value: string | undefined): boolean {
  return value === 'on';
}

export function createBubblewrapSandbox(options: BubblewrapSandboxOptions = {}): BubblewrapSandbox {
  const paths: HostPaths = { ...defaultHostPaths(), ...options.paths };
  for (const [what, path] of [
    ['bubblewrap', paths.bwrap],
    ['sandbox helper', paths.helper],
    ['seccomp program', paths.seccompProgram],
    ['python', paths.python],
    ['node', paths.node],
  ] as const) {
    if (!existsSync(path)) throw new SandboxUnavailableError(`${what} not found at ${path}: run \`make setup\``);
  }
  const network = options.network ?? false;
  if (network && !networkAvailable()) {
    throw new SandboxUnavailableError('MCPWORKS_SANDBOX_NETWORK=on needs the server to run as root with slirp4netns, nsenter and ip installed');
  }
  // A bad allow-list stops the server at start, not each run later.
  let allowed: string[] = [];
  if (network) {
    try {
      allowed = allowedRoutes(options.networkAllow?.join(','));
    } catch (error) {
      throw new SandboxUnavailableError((error as Error).message);
    }
  }
  const isRoot = process.getuid?.() === 0;
  // A fixed user (the option) or, by default, a uid per sandbox from the range.
  const sandboxUser = isRoot ? (options.sandboxUser ?? { uid: 65534, gid: SANDBOX_GID }) : null;
  const uids = isRoot && !options.sandboxUser ? new UidAllocator(options.sandboxUids ?? sandboxUidsFromEnvironment(undefined)) : null;
  const cgroups: CgroupSupport = isRoot && options.cgroups !== false ? detectCgroupSupport() : { memory: null, pids: null };
  const log = options.log ?? (() => {});
  const answers = options.answers ?? sharedScanPool;

  /** A large answer line is read in a worker thread (see RawAnswer); interpret gets what it holds. */
  async function decoded(record: RunRecord): Promise<RunRecord> {
    if (!(record.answer instanceof RawAnswer)) return record;
    let answer: RunAnswer | true;
    try {
      answer = await answers.decode(record.answer.bytes);
    } catch {
      // The code ran and answered; what the host cannot read is withheld, as an unreadable line is.
      answer = { ok: false, type: SANDBOX_ERROR_TYPES.exited, message: "the server could not read the function's answer" };
    }
    // `true`: a line that is not an object, which interpret reads as no answer of its own.
    return { ...record, answer: answer as RunAnswer };
  }
  const runtimeDir = prepareRuntimeDir(paths, network, runtimeParent(sandboxUser !== null));
  const nodeBinary = realpathSync(paths.node);
  const masks = procMasks();
  const views = new MountViews(join(runtimeDir, 'views'));
  const baseArgs = baseBubblewrapArgs(runtimeDir, nodeBinary, network, masks);
  let closed = false;
  const pendingRemovals = new Set<Promise<void>>();
  // With the network on, bubblewrap also gets its info and block pipes (fds 5 and 6, which
  // network.ts reads and writes); the spawner passes only fds 0-4, so those sandboxes are spawned
  // by the server directly.
  const spawner = !network && options.spawner !== false ? new Spawner(join(paths.runtimeSource, 'spawner.cjs'), sandboxEnvironment(), log) : null;
  // Pre-joining only pays where there are cgroups to join.
  const launchers = new LauncherPool(startLauncher, cgroups.memory || cgroups.pids ? (options.launcherPool ?? 2) : 0);
  launchers.refill();
  const poolOption = options.pool ?? true;
  let pool: WarmPool<SandboxShape, PreparedSandbox> | null = null;
  if (poolOption !== false) {
    const poolOptions: SandboxPoolOptions = poolOption === true ? {} : poolOption;
    const warmLimits = poolOptions.warmLimits ?? [sandboxLimitsFor(limitsFor(DEFAULT_TIER))];
    const pinned = warmLimits.flatMap((limits) =>
      (['python', 'typescript'] as const).map((language) => shapeFor({ language, code: '', input: null, limits })),
    );
    const startPooled = (shape: SandboxShape) => {
      const prepared = prepare(shape, true);
      // Off the request path already: put back the launcher the pooled sandbox used.
      setImmediate(() => launchers.refill());
      return prepared;
    };
    pool = new WarmPool(startPooled, pinned, poolOptions, log);
  }
  const zygoteOption = options.zygote ?? true;
  let zygotes: ZygotePool | null = null;
  if (zygoteOption !== false && !network) {
    if (sandboxUser && cgroups.memory?.version === 1 && cgroups.pids?.version === 1) {
      // The children's socket: the server's, open to the sandboxes' group.
      zygotes = new ZygotePool(runtimeDir, uids ? { uid: 0, gid: SANDBOX_GID } : sandboxUser, { cgroups: zygoteCgroups, launch: launchZygote, log }, zygoteOption === true ? {} : zygoteOption);
    } else {
      log('Python zygotes are off: they need the server to run as root with cgroup v1 memory and pids hierarchies');
    }
  }

  /** A zygote's own cgroup directories: its process's group, and one group per child made on demand. */
  function zygoteCgroups(id: string): ZygoteCgroups | null {
    const memoryBase = cgroups.memory && join(cgroups.memory.base, `zygote-${id}`);
    const pidsBase = cgroups.pids && join(cgroups.pids.base, `zygote-${id}`);
    if (!memoryBase || !pidsBase || !sandboxUser) return null;
    mkdirSync(memoryBase);
    mkdirSync(pidsBase);
    const support: CgroupSupport = { memory: { version: 1, base: memoryBase }, pids: { version: 1, base: pidsBase } };
    // The zygote itself: pre-imported packages plus its short-lived intermediate processes.
    const self = createRunCgroup(support, 'self', { memoryBytes: 1024 * MB, maxProcesses: 512 })!;
    // The zygote's own uid, shared by its children (one namespace's runs).
    const user = uids ? { uid: uids.take(), gid: SANDBOX_GID } : sandboxUser;
    let released = false;
    return {
      memoryDir: memoryBase,
      pidsDir: pidsBase,
      self,
      user,
      createRun(name, limits) {
        const group = createRunCgroup(support, name, limits)!;
        // The child writes itself into its group before the run begins; nothing else it can reach.
        for (const file of group.procsFiles) chownSync(file, user.uid, user.gid);
        return group;
      },
      async remove() {
        await self.remove();
        await releaseCgroupSupport(support);
        if (uids && !released) uids.release(user.uid);
        released = true;
      },
    };
  }

  function launchZygote(spec: ZygoteSpec, groups: ZygoteCgroups, socketDir: string): ZygoteProcess {
    const bwrapArgs = zygoteBubblewrapArgs(spec, groups, socketDir);
    const args = ['exec', ...groups.self.procsFiles.flatMap((file) => ['--cgroup', file])];
    // Ends with the server, and every child with it (their PID namespaces are inside its own).
    args.push('--watch-pid', String(process.pid));
    // No CPU limit: a zygote lives long; each run's worker sets its own.
    args.push('--rlimit', 'core=0:0', '--rlimit', 'nofile=1024:1024');
    args.push('--user', `${groups.user.uid}:${groups.user.gid}`);
    args.push('--keep-fds', '5', '--', paths.bwrap, ...bwrapArgs);
    const seccompFd = openSync(paths.seccompProgram, 'r');
    try {
      const child = spawn(paths.helper, args, { stdio: ['pipe', 'ignore', 'pipe', 'pipe', seccompFd], env: sandboxEnvironment() });
      const exited = new Promise<void>((resolve) => {
        child.once('error', () => resolve());
        child.once('close', () => resolve());
      });
      child.stdin!.on('error', () => {});
      return {
        control: child.stdio[3] as Duplex,
        stderr: child.stderr!,
        kill: () => {
          child.kill('SIGTERM');
          groups.self.killAll(child.pid);
        },
        exited,
      };
    } finally {
      closeSync(seccompFd);
    }
  }

  /** bubblewrap for a zygote: a run's layout, plus CAP_SYS_ADMIN inside its user namespace (to make each child's namespaces), its cgroup and socket directories, and no seccomp of its own (each child loads it). */
  function zygoteBubblewrapArgs(spec: ZygoteSpec, groups: ZygoteCgroups, socketDir: string): string[] {
    // --disable-userns would put the zygote in a nested user namespace without rights over the
    // PID namespace its children must leave; seccomp keeps user namespaces from every run instead.
    const args = baseArgs.filter((arg) => arg !== '--disable-userns');
    args.push('--size', String(spec.config.tmpfsBytes), '--perms', '1777', '--tmpfs', '/tmp');
    for (const mount of [...spec.mounts].sort((a, b) => a.target.length - b.target.length)) {
      args.push('--ro-bind', mount.source, mount.target);
    }
    // SYS_ADMIN for the child's namespaces and mounts, NET_ADMIN for its loopback, SETPCAP to
    // empty its bounding set; every child drops all three before anything of its run happens.
    args.push('--cap-add', 'CAP_SYS_ADMIN', '--cap-add', 'CAP_NET_ADMIN', '--cap-add', 'CAP_SETPCAP');
    args.push('--bind', groups.memoryDir!, '/sandbox/zygote/cg-memory', '--bind', groups.pidsDir!, '/sandbox/zygote/cg-pids');
    args.push('--ro-bind', socketDir, '/sandbox/zygote/sock');
    args.push('--remount-ro', '/', '--chdir', '/tmp', '--');
    args.push('/usr/bin/python3', '-I', '-S', '-B', '/sandbox/zygote.py', JSON.stringify({ imports: spec.imports, ...spec.config }));
    return args;
  }

  function zygoteSpecFor(request: SandboxRequest, shape: SandboxShape): ZygoteSpec | null {
    const warm = request.warm;
    if (!warm || request.language !== 'python') return null;
    // Only allow-listed packages, by their import names: the zygote imports them before any run.
    const imports = [...new Set(warm.imports)].filter((name) => IMPORT_NAME.test(name) && findPythonPackage(name)?.importName === name).sort();
    const { limits } = request;
    // The CPU-time limit is not part of the zygote: each run's worker sets its own from the run's
    // first line (a code-mode callee's limit is what is left of its caller's time, which would
    // otherwise make a new zygote every second).
    const cpuFree = shape.command.map((arg) => (arg.startsWith('cpu=') ? 'cpu=run' : arg));
    const key = JSON.stringify([cpuFree, shape.cgroupLimits, shape.maxLogBytes, warm.owner ?? null, warm.group, imports]);
    const rlimits: Record<string, [number, number]> = {
      fsize: [limits.maxFileBytes, limits.maxFileBytes],
      core: [0, 0],
      nofile: [1024, 1024],
    };
    return {
      key,
      label: `${shape.label} ${imports.join(',') || 'plain'}`,
      // Without an account, the group (namespace) is its own owner.
      owner: warm.owner ?? `group:${warm.group}`,
      imports,
      runLimits: shape.cgroupLimits,
      maxLogBytes: shape.maxLogBytes,
      config: { tmpfsBytes: limits.tmpfsBytes, rlimits, procMasks: masks },
      // In the key already: the shape's command line holds every mount.
      mounts: request.mounts ?? [],
    };
  }

  /** The request with its host directories replaced by their mirrors (see mount-views.ts). */
  function throughViews(request: SandboxRequest): SandboxRequest {
    if (!request.mounts?.length && !request.nodeModulesDir) return request;
    const view = (source: string) => {
      try {
        return views.viewOf(source);
      } catch (error) {
        // Mounted as it is, the source fails the sandbox's start as before (missing, unreadable).
        log(`could not mirror a mount source: ${(error as Error).message}`);
        return source;
      }
    };
    return {
      ...request,
      ...(request.mounts ? { mounts: request.mounts.map((mount) => ({ ...mount, source: view(mount.source) })) } : {}),
      ...(request.nodeModulesDir ? { nodeModulesDir: view(request.nodeModulesDir) } : {}),
    };
  }

  async function run(original: SandboxRequest): Promise<SandboxOutcome> {
    let request = original;
    if (closed) throw new SandboxUnavailableError('the sandbox is closed');
    const started = performance.now();
    const env = request.env ?? {};
    for (const [name, value] of Object.entries(env)) {
      if (!ENV_NAME.test(name) || value.includes('\0')) throw invalid(`env variable name '${name.slice(0, 64)}' or its value is not allowed`);
    }
    checkMounts(request);
    request = throughViews(request);
    let code = request.code;
    if (request.language === 'typescript') {
      const transpiled = await transpileTypescript(request.code, request.entry ?? 'main');
      if (!transpiled.ok) {
        return failed({ type: SANDBOX_ERROR_TYPES.transpile, message: transpiled.message, stderr: transpiled.detail }, '', started);
      }
      code = transpiled.code;
    }
    // A large input (a bridge call's, still as bytes) goes into the request as those bytes.
    const rawInput = request.input instanceof RawJson ? request.input : undefined;
    let payload = JSON.stringify({
      code,
      input: rawInput ? RAW_INPUT_MARK : (request.input ?? null),
      env,
      maxResultBytes: request.limits.maxResultBytes,
      entry: request.entry ?? 'main',
      libraryPaths: request.libraryPaths ?? [],
      bridge: request.bridge !== undefined,
    });
    if (rawInput) payload = payload.replace(JSON.stringify(RAW_INPUT_MARK), () => rawInput.bytes.toString('utf8'));
    const shape = shapeFor(request);
    const spec = zygotes ? zygoteSpecFor(request, shape) : null;
    const child = spec ? zygotes!.claim(spec) : null;
    if (child) {
      const record = await child.run({
        // The child's own wall clock (P1 ends the run at it, whatever the server does), as the helper's.
        payload: `${JSON.stringify({ cpuSeconds: Math.floor(request.limits.cpuSeconds), wallMs: helperDeadlineMs(request.limits) })}\n${payload}`,
        bridge: request.bridge,
        lineCapBytes: request.limits.maxResultBytes + 2 * TRACEBACK_CAP,
        timeoutMs: request.limits.timeoutSeconds * 1000,
        signal: request.signal,
      });
      // A child that died before its run began changes nothing: the run takes the ordinary path.
      if (!record.notStarted) {
        // The zygote itself gone (no status came from it), and nothing the host did to the run
        // (a timeout or an overflow kills it) nor any answer explains the end: the platform's.
        if (record.exit.spawnFailed && record.answer === null && !record.timedOut && !record.overflowed && !record.flooded) {
          log('a zygote ended while one of its children was running');
          return platformFailure('the sandbox stopped before the function finished', started);
        }
        return interpret(request, await decoded(record), started);
      }
    }
    return execute(request, shape, payload, started);
  }

  function shapeFor(request: SandboxRequest): SandboxShape {
    const { limits } = request;
    const args = [...baseArgs, '--size', String(limits.tmpfsBytes), '--perms', '1777', '--tmpfs', '/tmp'];
    let command: string[];
    if (request.language === 'python') {
      // -I: ignore PYTHON* env and user site; -S: no site.py (runner adds dist-packages itself); -B: read-only disk.
      command = ['/usr/bin/python3', '-I', '-S', '-B', '/sandbox/runner.pyc'];
    } else {
      // V8 stops at a heap limit below the cgroup's, so most JS exhaustion is a clean, reportable error.
      const heapMb = Math.max(64, Math.floor(limits.memoryMb * 0.75));
      // --use-openssl-ca: trust the host's CA store (/etc/ssl), as Python's ssl does.
      command = [nodeBinary, `--max-old-space-size=${heapMb}`, '--use-openssl-ca', '/sandbox/runner.cjs'];
    }
    // Parents before children, so a mount inside another mount lands on top of it.
    for (const mount of [...(request.mounts ?? [])].sort((a, b) => a.target.length - b.target.length)) {
      args.push('--ro-bind', mount.source, mount.target);
    }
    if (request.language === 'typescript') {
      if (request.nodeModulesDir) args.push('--ro-bind', request.nodeModulesDir, '/function/node_modules');
      // ES modules resolve bare imports only through node_modules directories above them; a
      // root-level link makes the first library path visible to code-mode scripts.
      const library = request.libraryPaths?.[0];
      if (library) args.push('--symlink', library, '/node_modules');
    }
    args.push('--remount-ro', '/', '--chdir', '/tmp', '--seccomp', '4', '--', ...command);
    const fullCommand = [...helperArgs(request), '--', paths.bwrap, ...(network ? ['--info-fd', '5', '--block-fd', '6'] : []), ...args];
    const cgroupLimits = { memoryBytes: limits.memoryMb * MB, maxProcesses: limits.maxProcesses };
    const views = [request.mounts?.length ? 'mounts' : '', request.nodeModulesDir ? 'node_modules' : '', request.language === 'typescript' && request.libraryPaths?.length ? 'library' : ''];
    return {
      key: JSON.stringify([fullCommand, cgroupLimits, limits.maxLogBytes]),
      label: [request.language, `${limits.memoryMb} MB`, ...views.filter(Boolean)].join(' '),
      memoryEstimateBytes: IDLE_MEMORY_ESTIMATE[request.language],
      language: request.language,
      command: fullCommand,
      viewSources: [...(request.mounts ?? []).map((mount) => mount.source), ...(request.language === 'typescript' && request.nodeModulesDir ? [request.nodeModulesDir] : [])],
      cgroupLimits,
      maxLogBytes: limits.maxLogBytes,
    };
  }

  /** A helper that has joined a fresh run's cgroups and waits for its command (see LauncherPool). */
  function startLauncher(): Launcher {
    const cgroup = createRunCgroup(cgroups, randomUUID(), { memoryBytes: DEFAULT_LAUNCHER_MEMORY, maxProcesses: 64 });
    const args = ['exec'];
    for (const file of cgroup?.procsFiles ?? []) args.push('--cgroup', file);
    // An idle launcher, and the run it starts, end with the server however it ends.
    args.push('--watch-pid', String(process.pid));
    args.push('--wait-command');
    // The same command, environment and fds through the spawner (it opens the seccomp program).
    const remote = spawner?.launch(paths.helper, args, sandboxEnvironment(), paths.seccompProgram);
    if (remote) return { child: remote, cgroup, exited: remote.exited, alive: () => remote.alive() };
    const seccompFd = openSync(paths.seccompProgram, 'r');
    try {
      const child = spawn(paths.helper, args, {
        stdio: network ? ['pipe', 'pipe', 'pipe', 'pipe', seccompFd, 'pipe', 'pipe'] : ['pipe', 'pipe', 'pipe', 'pipe', seccompFd],
        env: sandboxEnvironment(),
      });
      // Listening from the start: a launcher may end (or fail to spawn) before its run begins.
      const exited = new Promise<LauncherExit>((resolve) => {
        child.once('error', () => resolve({ code: null, signal: null, spawnFailed: true }));
        child.once('close', (code, signal) => resolve({ code, signal, spawnFailed: false }));
      });
      // The function may exit without reading its input; a broken pipe here is not an error.
      child.stdin!.on('error', () => {});
      return { child, cgroup, exited, alive: () => child.exitCode === null && child.signalCode === null };
    } finally {
      closeSync(seccompFd);
    }
  }

  /**
   * The rest of the helper's command line, sent on a launcher's stdin to start the sandbox. A
   * pooled runner is told so (its last argument), to use its wait for warming up; that changes
   * nothing a run can rely on, so it is not part of the shape's key.
   */
  function commandFrame(shape: SandboxShape, pooled: boolean, uid: number | null): Buffer {
    // The sandbox's own uid is not part of the shape: any pooled sandbox of it serves any run.
    const args = [...(uid === null ? [] : ['--user', `${uid}:${SANDBOX_GID}`]), ...(pooled ? ['--clock-on-signal'] : []), ...shape.command, ...(pooled ? ['pooled'] : [])];
    const body = Buffer.from(args.map((arg) => `${arg}\0`).join(''), 'utf8');
    return Buffer.concat([Buffer.from(body.length.toString(16).padStart(8, '0'), 'ascii'), body]);
  }

  /**
   * Starts a sandbox of this shape up to the point where its runner waits for the request: used by
   * the pool ahead of time, and on the request path when no pooled sandbox is there.
   */
  function prepare(shape: SandboxShape, pooled: boolean): PreparedSandbox {
    // Taken before bubblewrap mounts them: a directory replaced in between then reads as changed
    // (the safe direction), never the other way round.
    const views = shape.viewSources.map(identity);
    const launcher = launchers.take();
    const { child, cgroup, exited } = launcher;
    // The run's own limits from the start: the interpreter's start-up is charged to them too.
    cgroup?.configure(shape.cgroupLimits);
    const stdout = new CappedCapture(shape.maxLogBytes);
    const stderr = new CappedCapture(shape.maxLogBytes);
    child.stdout!.on('data', (chunk: Buffer) => stdout.push(chunk));
    child.stderr!.on('data', (chunk: Buffer) => stderr.push(chunk));
    const channel = new RunChannel(child.stdio[3] as Duplex, log);
    const uid = uids?.take() ?? null;
    if (uid !== null) void exited.then(() => uids!.release(uid));
    child.stdin!.write(commandFrame(shape, pooled, uid));
    const networkReady = network
      ? attachNetwork(child as ChildProcess, allowed).then(
          (attachment) => ({ attachment, failed: false }),
          (error: Error) => {
            log(`sandbox network set-up failed: ${error.message}`);
            return { attachment: null, failed: true };
          },
        )
      : Promise.resolve({ attachment: null, failed: false });
    let discarded = false;
    // Without its network bubblewrap stays blocked, so the runner would never report ready.
    const ready = networkReady.then((state) => (state.failed ? false : channel.ready));
    return {
      launcher,
      pooled,
      channel,
      stdout,
      stderr,
      network: networkReady,
      ready,
      // A pooled sandbox keeps the directories it mounted at start; if one has since been replaced
      // or removed (a cache rebuilt at the same path), it would show the old one, so it is not used.
      alive: () => !discarded && launcher.alive() && shape.viewSources.every((source, index) => identity(source) === views[index]),
      async discard() {
        discarded = true;
        // bubblewrap arms --die-with-parent in its child only once set-up is done: killed earlier,
        // it leaves that child blocked for good (and, without cgroups, nothing else would find it).
        // So a sandbox still starting is stopped once its runner is up (or after a bound).
        let bound: NodeJS.Timeout | undefined;
        await Promise.race([ready, new Promise((resolve) => (bound = setTimeout(resolve, 2000)))]);
        clearTimeout(bound);
        // As for a timeout: the helper kills bubblewrap and reaps every process before it exits.
        child.kill('SIGTERM');
        cgroup?.killAll(child.pid);
        const escalation = setTimeout(() => child.kill('SIGKILL'), 2000);
        await exited;
        clearTimeout(escalation);
        (await networkReady).attachment?.close();
        await cgroup?.remove();
      },
    };
  }

  function helperArgs(request: SandboxRequest): string[] {
    const { limits } = request;
    const args: string[] = [];
    const rlimit = (name: string, soft: number, hard = soft) => args.push('--rlimit', `${name}=${Math.floor(soft)}:${Math.floor(hard)}`);
    rlimit('cpu', limits.cpuSeconds, limits.cpuSeconds + 1);
    rlimit('fsize', limits.maxFileBytes);
    rlimit('core', 0);
    rlimit('nofile', 1024);
    if (!cgroups.memory) {
      // No memory cgroup: cap address space instead. Node reserves ~1 GB of virtual space it never touches.
      const extra = request.language === 'typescript' ? 1024 : 0;
      rlimit('as', (limits.memoryMb + extra) * MB);
    }
    // Without a pids group the per-user count is the only fork-bomb brake (per sandbox with a uid
    // of its own; shared by concurrent runs with one fixed sandbox user).
    if (!cgroups.pids) rlimit('nproc', limits.maxProcesses * 4);
    // The helper's backstop: the longer of the run's two time limits (equal for every plan), so the
    // shape, and with it the pool's keys, depends on nothing the CPU limit did not already decide.
    args.push('--deadline-ms', String(helperDeadlineMs(limits)));
    if (sandboxUser && !uids) args.push('--user', `${sandboxUser.uid}:${sandboxUser.gid}`);
    // fds 5 and 6 are bubblewrap's --info-fd/--block-fd pipes when the network is set up.
    args.push('--keep-fds', network ? '7' : '5');
    return args;
  }

  async function execute(request: SandboxRequest, shape: SandboxShape, payload: string, started: number): Promise<SandboxOutcome> {
    const { limits } = request;
    // A pooled sandbox was started for exactly this shape and is handed to this run alone.
    const prepared = pool?.claim(shape) ?? prepare(shape, false);
    const { child, cgroup, exited } = prepared.launcher;
    const { stdout, stderr, channel } = prepared;
    let attachment: NetworkAttachment | null = null;
    let timedOut = false;
    let networkFailed = false;
    let exit: LauncherExit;
    let answeredFirst = false;
    let runStarted = performance.now();
    try {
      let escalation: NodeJS.Timeout | undefined;
      // The helper kills bubblewrap on SIGTERM and stays to reap the namespace, so no orphan or
      // zombie is left behind; SIGKILL follows only if it does not finish.
      const kill = () => {
        if (escalation) return;
        child.kill('SIGTERM');
        cgroup?.killAll(child.pid);
        escalation = setTimeout(() => child.kill('SIGKILL'), 2000);
      };
      const timer = setTimeout(() => {
        timedOut = true;
        kill();
      }, limits.timeoutSeconds * 1000);
      // The server is stopping and its grace period is over.
      if (request.signal?.aborted) kill();
      else request.signal?.addEventListener('abort', kill, { once: true });
      // Room for the result (or a bridge call's input) plus the error envelope and a traceback.
      channel.begin(request.bridge, limits.maxResultBytes + 2 * TRACEBACK_CAP, kill);
      const networkState = await prepared.network;
      attachment = networkState.attachment;
      if (networkState.failed) {
        networkFailed = true;
        kill();
      }
      // A pooled sandbox's helper starts its own wall clock before the request is written, so no
      // user code runs without it even if this process stalls right after the write. Its runner is
      // up first (the helper then waits for this signal rather than dying of it).
      if (prepared.pooled && (channel.isReady || (await prepared.ready)) && prepared.launcher.alive() && child.pid !== undefined) {
        try {
          process.kill(child.pid, 'SIGUSR2');
        } catch {
          // it has just ended
        }
      }
      child.stdin!.end(payload);
      runStarted = performance.now();
      // With the answer in, the run is over: the runner flushed its output before answering, so it
      // is in the pipes already (read by the end of this turn of the event loop). Ending the run's
      // processes then beats waiting for the interpreter's own teardown by milliseconds.
      answeredFirst = cgroup ? await Promise.race([exited.then(() => false), channel.answered.then(nextTurn).then(() => true)]) : false;
      if (answeredFirst) {
        // SIGKILL, not waited for: no user code runs once it is delivered, and the interpreter's
        // memory teardown need not delay the answer.
        // The helper is spared: it reaps what the kill leaves and exits (no orphan, no zombie).
        cgroup!.killAll(child.pid);
        exit = { code: 0, signal: null, spawnFailed: false };
        // What the run printed before answering is in the pipes, but their reads may come a turn
        // after the answer's: wait for the pipes' end (the helper exits once the kill is reaped,
        // within milliseconds), bounded so a stuck helper cannot hold the answer.
        await Promise.race([Promise.all([ended(child.stdout), ended(child.stderr)]), delay(100)]);
      } else {
        exit = await exited;
        // Ended by the helper's own wall clock (the server's timer was late): a timeout all the same.
        if (!timedOut && channel.answer === null && performance.now() - runStarted >= limits.timeoutSeconds * 1000) timedOut = true;
      }
      clearTimeout(timer);
      clearTimeout(escalation);
    } finally {
      (attachment as NetworkAttachment | null)?.close();
      cgroup?.killAll(answeredFirst ? child.pid : undefined);
    }
    // After a kill the namespace may still be dying; a stopped run must not outlive its answer.
    const answer = channel.answer;
    const overflowed = channel.overflowed;
    const flooded = channel.flooded;
    if (timedOut || overflowed || flooded) await cgroup?.killUntilEmpty(2000);
    const oomKilled = cgroup?.oomKilled() ?? false;
    // Removing the group need not delay the answer; close() waits for it.
    if (cgroup) {
      // After an answered run, once the helper has reaped what the kill left (bounded).
      const helperDone = answeredFirst ? Promise.race([exited, delay(2000)]) : Promise.resolve();
      const removal = helperDone.then(() => cgroup.remove()).finally(() => pendingRemovals.delete(removal));
      pendingRemovals.add(removal);
    }
    if (exit.spawnFailed) {
      log('sandbox helper could not be started');
      return platformFailure('the sandbox could not start', started);
    }
    // Between runs, so the fork never delays a run in progress.
    setImmediate(() => launchers.refill());
    if (networkFailed) {
      return platformFailure('the sandbox network could not be set up', started);
    }
    // Whether the runner ever said ready: its line precedes any user code, so once the process is
    // gone it is in the pipe already (or fd 3 closes without it); bounded all the same.
    const ready = channel.isReady || (await Promise.race([channel.ready, delay(2000).then(() => false)]));
    return interpret(request, await decoded({ stdout, stderr, answer, overflowed, flooded, timedOut, oomKilled, exit, ready }), started);
  }

  function interpret(
    request: SandboxRequest,
    run: RunRecord,
    started: number,
  ): SandboxOutcome {
    const { limits } = request;
    // Stopped because the server is: the platform's doing, whatever the run had done (unanswered).
    if (request.signal?.aborted && run.answer === null) return platformFailure('the run was interrupted: the server is shutting down', started);
    const stdoutText = run.stdout.text();
    const stderrText = run.stderr.text();
    const fail = (type: string, message: string, trace = '') =>
      failed({ type, message, stderr: joinLogs(stderrText, trace) }, stdoutText, started);

    if (!run.ready) {
      // The runner never said ready, so no user code ran: the sandbox did not start. Decided from
      // that alone; what the sandbox printed is only logged (its platform lines, never the rest).
      const platformLines = stderrText.split('\n').filter((line) => /^(bwrap|mcpworks-sandbox-helper): /.test(line));
      log(`sandbox failed to start (status ${run.exit.code ?? run.exit.signal ?? 'none'})${platformLines.length ? `: ${platformLines.join(' | ').slice(0, 2000)}` : ''}`);
      return platformFailure('the sandbox could not start', started);
    }
    if (run.flooded) return fail(SANDBOX_ERROR_TYPES.exited, 'the function sent bridge calls without waiting for their answers and was stopped');
    if (run.overflowed) return fail(SANDBOX_ERROR_TYPES.outputSize, `the result is larger than ${limits.maxResultBytes} bytes`);
    const parsed = run.answer as RunAnswer | null;
    if (parsed !== null && typeof parsed === 'object') {
      if (parsed.ok === true) {
        return { ok: true, result: parsed.result ?? null, stdout: stdoutText, stderr: stderrText, durationMs: elapsed(started) };
      }
      const trace = trimTraceback(String(parsed.traceback ?? ''));
      // The run's own word: never a platform failure, whatever type it names.
      return fail(answeredErrorType(String(parsed.type ?? 'Error')), String(parsed.message ?? ''), trace);
    }
    if (run.timedOut) return fail(SANDBOX_ERROR_TYPES.timeout, `the function ran longer than ${limits.timeoutSeconds} s and was stopped`);
    if (run.oomKilled || /JavaScript heap out of memory|Reached heap limit/.test(stderrText)) {
      return fail(SANDBOX_ERROR_TYPES.memory, `the function used more than ${limits.memoryMb} MB of memory and was stopped`);
    }
    if (run.exit.lost) {
      log('a sandbox ended unobserved: its spawner stopped during the run');
      return platformFailure('the sandbox was lost (its spawner stopped)', started);
    }
    // The helper reports its child's signals as 128+N; a signal of its own came from outside the
    // sandbox (an operator, the host's OOM killer), never from the run (another PID namespace).
    if (run.exit.signal !== null) {
      log(`a sandbox helper was killed by ${run.exit.signal} during a run`);
      return platformFailure(`the sandbox was stopped by the host (${run.exit.signal}) before the function finished`, started);
    }
    const status = run.exit.code ?? -1;
    // bubblewrap reports a child killed by signal N as status 128+N.
    if (status === 128 + 24) return fail(SANDBOX_ERROR_TYPES.timeout, `the function used more than ${limits.cpuSeconds} s of CPU time and was stopped`);
    if (status === 128 + 31) return fail(SANDBOX_ERROR_TYPES.exited, 'the function made a system call the sandbox forbids (SIGSYS) and was stopped');
    if (status === 128 + 25) return fail(SANDBOX_ERROR_TYPES.exited, `the function wrote a file larger than ${limits.maxFileBytes} bytes and was stopped`);
    if (status === 128 + 9 && !cgroups.memory) {
      return fail(SANDBOX_ERROR_TYPES.exited, 'the function was killed (SIGKILL), possibly for exceeding its memory');
    }
    const how = status > 128 ? `was killed by signal ${status - 128}` : `exited with status ${status}`;
    return fail(SANDBOX_ERROR_TYPES.exited, `the function ${how} before returning a result`);
  }

  return {
    run,
    poolStats: () => pool?.stats() ?? null,
    zygoteStats: () => zygotes?.stats() ?? null,
    async close() {
      closed = true;
      await zygotes?.close();
      await pool?.close();
      await launchers.close();
      await spawner?.close();
      await Promise.all([...pendingRemovals]);
      await releaseCgroupSupport(cgroups);
      rmSync(runtimeDir, { recursive: true, force: true });
    },
  };
}

/**
 * Which directory a path is now, or null when it is gone. An inode number alone can be reused by a
 * directory made right after the old one was removed; with its birth and change times it cannot.
 * (An entry added in place also changes it: that only costs a cold start.)
 */
function identity(path: string): string | null {
  try {
    const stat = statSync(path, { bigint: true });
    return `${stat.dev}:${stat.ino}:${stat.birthtimeNs}:${stat.ctimeNs}`;
  } catch {
    return null;
  }
}

const MOUNT_TARGET = /^\/opt(\/[A-Za-z0-9._@+-]+)+$/;

/** Mounts go under /opt only, from absolute host paths: nothing may shadow the sandbox's own layout. */
function checkMounts(request: SandboxRequest): void {
  for (const mount of request.mounts ?? []) {
    const target = mount.target;
    if (!isAbsolute(mount.source) || !MOUNT_TARGET.test(target) || target.split('/').some((part) => part === '..' || part === '.')) {
      throw invalid(`sandbox mount target '${target.slice(0, 200)}' must be a plain path under /opt, from an absolute host path`);
    }
  }
  for (const path of request.libraryPaths ?? []) {
    if (!isAbsolute(path) || path.split('/').includes('..')) throw invalid(`library path '${path.slice(0, 200)}' must be an absolute sandbox path`);
  }
}

const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));
/** Settles when a stream has ended or closed (at once for none, or one that already has). */
const ended = (stream: NodeJS.ReadableStream | null | undefined) =>
  new Promise<void>((resolve) => {
    const readable = stream as (NodeJS.ReadableStream & { readableEnded?: boolean; destroyed?: boolean }) | null | undefined;
    if (!readable || readable.readableEnded || readable.destroyed) return resolve();
    readable.once('end', () => resolve());
    readable.once('close', () => resolve());
  });
const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms).unref());

function failed(error: SandboxFailure, stdout: string, started: number): SandboxOutcome {
  return { ok: false, error, stdout, durationMs: elapsed(started) };
}

/** Only for what the host saw itself (see SandboxFailure.platform); nothing of the run is returned. */
function platformFailure(message: string, started: number): SandboxOutcome {
  return failed({ type: SANDBOX_ERROR_TYPES.sandbox, message, stderr: '', platform: true }, '', started);
}

function elapsed(started: number): number {
  return Math.round((performance.now() - started) * 10) / 10;
}

function joinLogs(stderr: string, trace: string): string {
  if (!trace) return stderr;
  if (!stderr) return trace;
  return stderr.endsWith('\n') ? stderr + trace : `${stderr}\n${trace}`;
}

/** Stands for a RawJson input in a request's JSON until its bytes replace it (random: no code holds it). */
const RAW_INPUT_MARK = `mcpworks-raw-input-${randomUUID()}`;

/** How far past a traceback's cut the kept part may start, to start it between tokens. */
const TOKEN_WINDOW = 4096;

function trimTraceback(trace: string): string {
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

/** The whole environment bubblewrap and the function start with: nothing from the server. */
function sandboxEnvironment(): Record<string, string> {
  return {
    PATH: '/usr/local/bin:/usr/bin:/bin',
    HOME: '/tmp',
    TMPDIR: '/tmp',
    LANG: 'C.UTF-8',
    MPLCONFIGDIR: '/tmp',
    MPLBACKEND: 'Agg',
  };
}

function baseBubblewrapArgs(runtimeDir: string, nodeBinary: string, network: boolean, masks: ProcMasks): string[] {
  const args = [
    '--unshare-user',
    '--unshare-pid',
    '--unshare-ipc',
    '--unshare-uts',
    '--unshare-cgroup-try',
    // --disable-userns nests a second user namespace, which slirp4netns would join and then lack
    // rights over the network namespace; with network on, seccomp alone (unshare, setns and
    // clone's namespace flags denied, clone3 unavailable) keeps user namespaces out of reach.
    '--unshare-net',
    ...(network ? [] : ['--disable-userns']),
    '--die-with-parent',
    '--new-session',
    '--cap-drop',
    'ALL',
    '--uid',
    String(INNER_ID),
    '--gid',
    String(INNER_ID),
    '--hostname',
    'sandbox',
    '--ro-bind',
    '/usr',
    '/usr',
    ...topLevelSystemDirs(),
    '--ro-bind',
    join(runtimeDir, 'etc'),
    '/etc',
    '--ro-bind-try',
    '/etc/ssl',
    '/etc/ssl',
    // Debian's update-alternatives links (libblas for numpy, among others) resolve through here.
    '--ro-bind-try',
    '/etc/alternatives',
    '/etc/alternatives',
    '--ro-bind-try',
    '/etc/matplotlibrc',
    '/etc/matplotlibrc',
    '--ro-bind',
    join(runtimeDir, 'bin'),
    '/sandbox',
    '--proc',
    '/proc',
    // What /proc tells about the host: an empty read-only file or directory in its place.
    ...masks.files.flatMap((name) => ['--ro-bind', join(runtimeDir, 'bin', 'empty'), `/proc/${name}`]),
    ...masks.dirs.flatMap((name) => ['--size', '4096', '--perms', '0555', '--tmpfs', `/proc/${name}`, '--remount-ro', `/proc/${name}`]),
    // A hand-made /dev rather than --dev: --dev mounts devpts, which makes bubblewrap nest a second
    // user namespace that slirp4netns could not configure the network from. No ptys are needed.
    '--dir',
    '/dev',
    ...['null', 'zero', 'full', 'random', 'urandom'].flatMap((name) => ['--dev-bind', `/dev/${name}`, `/dev/${name}`]),
    // Sized: without a memory cgroup, tmpfs pages escape RLIMIT_AS.
    '--size',
    String(64 * MB),
    '--perms',
    '1777',
    '--tmpfs',
    '/dev/shm',
    '--symlink',
    '/proc/self/fd',
    '/dev/fd',
    '--symlink',
    '/proc/self/fd/0',
    '/dev/stdin',
    '--symlink',
    '/proc/self/fd/1',
    '/dev/stdout',
    '--symlink',
    '/proc/self/fd/2',
    '/dev/stderr',
    '--dir',
    '/function',
  ];
  if (!isUnderUsr(nodeBinary)) args.push('--ro-bind', nodeBinary, nodeBinary);
  return args;
}

/**
 * A private copy of the runner files and a minimal /etc, readable by the sandbox user (the source
 * tree or the data directory may not be).
 */
/** True when every directory from / down to `dir` lets other users pass (o+x). */
function searchableByOthers(dir: string): boolean {
  for (let current = resolve(dir); ; current = dirname(current)) {
    try {
      if ((statSync(current).mode & 0o001) === 0) return false;
    } catch {
      return false;
    }
    if (dirname(current) === current) return true;
  }
}

/** Where the runtime files go: the temp dir, unless the sandbox user could not reach it there. */
function runtimeParent(dropsPrivileges: boolean): string {
  if (!dropsPrivileges || searchableByOthers(tmpdir())) return tmpdir();
  if (searchableByOthers('/tmp')) return '/tmp';
  throw new SandboxUnavailableError(`neither ${tmpdir()} nor /tmp can be reached by the sandbox user (chmod o+x)`);
}

/** In the runtime dir, outside what any sandbox mounts: the pid of the server that made it. */
const OWNER_FILE = 'owner';

function prepareRuntimeDir(paths: HostPaths, network: boolean, parent: string): string {
  // Directories of servers that ended without close(): their owner file names the pid, gone with
  // it. The pid is not in the name, which every run sees in /proc/self/mountinfo.
  for (const entry of readdirSync(parent)) {
    if (!entry.startsWith('mcpworks-sandbox-')) continue;
    let owner = /^mcpworks-sandbox-(\d+)-/.exec(entry)?.[1];
    try {
      owner ??= readFileSync(join(parent, entry, OWNER_FILE), 'utf8').trim();
    } catch {
      continue; // not ours, or still being made
    }
    if (/^\d+$/.test(owner) && !existsSync(`/proc/${owner}`)) rmSync(join(parent, entry), { recursive: true, force: true });
  }
  const dir = mkdtempSync(join(parent, 'mcpworks-sandbox-'));
  writeFileSync(join(dir, OWNER_FILE), `${process.pid}\n`, { mode: 0o600 });
  chmodSync(dir, 0o755);
  const bin = join(dir, 'bin');
  const etc = join(dir, 'etc');
  // Modes are set with chmod throughout: the server's umask must not hide these from the sandbox user.
  mkdirSync(bin);
  mkdirSync(etc);
  chmodSync(bin, 0o755);
  chmodSync(etc, 0o755);
  for (const file of ['runner.py', 'runner.cjs', 'zygote.py']) {
    copyFileSync(join(paths.runtimeSource, file), join(bin, file));
    chmodSync(join(bin, file), 0o644);
  }
  // Mount points of a zygote's cgroup and socket directories (empty in every other sandbox).
  for (const dir of ['zygote', 'zygote/cg-memory', 'zygote/cg-pids', 'zygote/sock']) {
    mkdirSync(join(bin, dir));
    chmodSync(join(bin, dir), 0o755);
  }
  // Compiling the runner costs each Python run ~3 ms; the same interpreter compiles it once here.
  const compiled = spawnSync(
    paths.python,
    ['-I', '-c', 'import py_compile, sys; py_compile.compile(sys.argv[1], cfile=sys.argv[2], dfile="/sandbox/runner.py", doraise=True)', join(bin, 'runner.py'), join(bin, 'runner.pyc')],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  if (compiled.status !== 0) throw new SandboxUnavailableError(`could not compile the Python runner: ${compiled.stderr.toString().trim()}`);
  chmodSync(join(bin, 'runner.pyc'), 0o644);
  // Bound over the masked /proc files.
  writeFileSync(join(bin, 'empty'), '');
  chmodSync(join(bin, 'empty'), 0o444);
  const files: Record<string, string> = {
    passwd: `root:x:0:0:root:/nonexistent:/usr/sbin/nologin\nsandbox:x:${INNER_ID}:${INNER_ID}:sandbox:/tmp:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n`,
    group: `root:x:0:\nsandbox:x:${INNER_ID}:\nnogroup:x:65534:\n`,
    hosts: '127.0.0.1 localhost sandbox\n::1 localhost ip6-localhost ip6-loopback\n',
    'nsswitch.conf': 'passwd: files\ngroup: files\nhosts: files dns\n',
    // slirp4netns's built-in DNS forwarder; unused without network.
    'resolv.conf': network ? 'nameserver 10.0.2.3\n' : '',
  };
  for (const [name, content] of Object.entries(files)) {
    writeFileSync(join(etc, name), content);
    chmodSync(join(etc, name), 0o644);
  }
  // Mount points for the host files bound over the read-only copy.
  for (const mountPoint of ['ssl', 'alternatives']) {
    mkdirSync(join(etc, mountPoint));
    chmodSync(join(etc, mountPoint), 0o755);
  }
  writeFileSync(join(etc, 'matplotlibrc'), '');
  chmodSync(join(etc, 'matplotlibrc'), 0o644);
  if (existsSync('/usr/share/zoneinfo/Etc/UTC')) symlinkSync('/usr/share/zoneinfo/Etc/UTC', join(etc, 'localtime'));
  return dir;
}
