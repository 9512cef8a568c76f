/**
 * The bubblewrap sandbox: every run is a fresh set of namespaces (user, PID, mount, IPC, UTS, net,
 * cgroup) over a read-only /usr, a small private tmpfs, seccomp deny-list, per-run cgroup and
 * rlimits. Requests travel on stdin and answers on fd 3, so env values never appear in any argv.
 * With the pool on (the default), sandboxes are started ahead of their runs and wait, blocked on
 * stdin, for the request (see warm-pool.ts); each still serves exactly one run.
 */
import { randomUUID } from 'node:crypto';
import { existsSync, realpathSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { MB } from '../core/units.js';
import {
  SANDBOX_ERROR_TYPES,
  sandboxLimitsFor,
  type Sandbox,
  type SandboxLimits,
  type SandboxOutcome,
  type SandboxRequest,
} from '../core/sandbox.js';
import { DEFAULT_TIER, limitsFor } from '../core/tiers.js';
import { RawAnswer, type RunAnswer, type RunRecord } from './wire/channel.js';
import { sharedScanPool } from '../run/scan-pool.js';
import { WarmPool, type PoolStats, type WarmPoolOptions } from './warm-pool.js';
import { createRunCgroup, openCgroupSupport, releaseCgroupSupport, SANDBOX_CPU_WEIGHT, type CgroupSupport } from './host/cgroup.js';
import { LauncherPool, type Launcher } from './launcher-pool.js';
import { Spawner } from './spawner.js';
import { defaultHostPaths, type HostPaths } from './host.js';
import { detectSandboxHost, type SandboxHostFacts } from './host/facts.js';
import { ZygotePool, type ZygoteOptions, type ZygoteStats } from './zygote/pool.js';
import { transpileTypescript } from './transpile.js';
import { MountViews } from './mount-views.js';
import { allowedRoutes, networkAvailable } from './host/network.js';
import { NPM_DEFAULTS } from './npm-build.js';
import { hostPasswd, parseSandboxUids, type UidRange } from './uid-range.js';
import { baseBubblewrapArgs } from './plan/bwrap-args.js';
import { SANDBOX_GID, sandboxEnvironment } from './plan/environment.js';
import { checkRequest, requestPayload, zygoteRunLine } from './plan/request.js';
import { shapeFor, type SandboxShape, type ShapeContext } from './plan/shape.js';
import { zygoteSpecFor } from './plan/zygote-spec.js';
import { elapsed, failed, interpret, lineCapBytes, platformFailure, type OutcomeContext } from './outcome.js';
import { spawnHelper } from './host/spawn-helper.js';
import { prepareRuntimeDir, runtimeParent } from './host/runtime-dir.js';
import { UidAllocator } from './host/uid-allocator.js';
import { SandboxUnavailableError } from './errors.js';
import { zygoteHostHooks } from './zygote/launch.js';
import { prepareSandbox, type PrepareDeps, type PreparedSandbox } from './launch/prepared.js';
import { execute, type ExecuteDeps } from './execute.js';
import { memoryReserve } from './policy/capacity.js';

export { SandboxUnavailableError } from './errors.js';

export interface BubblewrapSandboxOptions {
  /**
   * The host's facts (root, cgroup layout, network tools, /proc masks, system dir links, RAM, CPUs),
   * detected once at start by the composition root (default: detected now, for tests and the benches).
   */
  host?: SandboxHostFacts;
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
  answers?: { decode(line: Buffer | readonly Buffer[]): Promise<RunAnswer | true> };
  /** Launchers kept pre-started (cgroups already joined); default 2, 0 turns it off. */
  launcherPool?: number;
  /** false: limit memory and processes with rlimits only, as on hosts without usable cgroups. */
  cgroups?: boolean;
  /**
   * The CPU weight of the runs' user code, in cgroup v2 units, 1 to 10000 (v1: cpu.shares in
   * proportion, 100 = 1024): all of one instance's runs weigh this much together beside the server
   * (a default group weighs 100). Default SANDBOX_CPU_WEIGHT; the server passes MCPWORKS_SANDBOX_CPU_WEIGHT.
   */
  cpuWeight?: number;
  /**
   * The runs' CPU group is an idle group (cpu.idle, Linux 5.15+; default false): they run on the CPU
   * time their group's siblings leave, and a waking server thread preempts them at once. The weight
   * still applies where the kernel has no cpu.idle. The server passes MCPWORKS_SANDBOX_CPU_WEIGHT=idle.
   */
  cpuIdle?: boolean;
  /**
   * Start sandbox helpers from a small spawner process rather than from the server (default
   * true): a spawn from the server's large process holds its event loop for milliseconds (see
   * spawner.ts). Not used with the network on.
   */
  spawner?: boolean;
  /**
   * Pre-started sandboxes waiting for their request (default on; the server passes MCPWORKS_SANDBOX_POOL).
   * false: every run starts its sandbox on the request path (a cold start).
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

export function poolFromEnvironment(value: string | undefined): boolean {
  return value !== 'off';
}

/** Memory limit of a pre-started launcher until its run sets the tier's (it only waits on stdin). */
const DEFAULT_LAUNCHER_MEMORY = 64 * MB;

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
 * MCPWORKS_SANDBOX_CPU_WEIGHT: the runs' CPU weight in cgroup v2 units, an integer from 1 to 10000
 * (unset or empty: SANDBOX_CPU_WEIGHT); or `idle`: tenants' CPU work idle (the runs' group, at
 * SANDBOX_CPU_WEIGHT where the kernel has no cpu.idle, and the schema workers). Anything else
 * throws, with the variable's name.
 */
export function cpuFromEnvironment(value: string | undefined): { cpuWeight: number; cpuIdle: boolean } {
  if (value === undefined || value === '') return { cpuWeight: SANDBOX_CPU_WEIGHT, cpuIdle: false };
  if (value === 'idle') return { cpuWeight: SANDBOX_CPU_WEIGHT, cpuIdle: true };
  const weight = Number(value);
  if (!/^\d+$/.test(value) || weight < 1 || weight > 10_000) {
    throw new SandboxUnavailableError(
      `MCPWORKS_SANDBOX_CPU_WEIGHT must be idle or an integer from 1 to 10000, not ${JSON.stringify(value.slice(0, 32))}`,
    );
  }
  return { cpuWeight: weight, cpuIdle: false };
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
    ['zygote library', paths.zygoteLibrary],
    ...(paths.zygoteInit === null ? [] : [['zygote init', paths.zygoteInit] as const]),
    ['python', paths.python],
    ['node', paths.node],
  ] as const) {
    if (!existsSync(path)) throw new SandboxUnavailableError(`${what} not found at ${path}: run \`make setup\``);
  }
  const host = options.host ?? detectSandboxHost();
  const network = options.network ?? false;
  if (network && !networkAvailable(host)) {
    throw new SandboxUnavailableError(
      'MCPWORKS_SANDBOX_NETWORK=on needs the server to run as root with slirp4netns, nsenter and ip installed',
    );
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
  const isRoot = host.isRoot;
  // A fixed user (the option) or, by default, a uid per sandbox from the range.
  const sandboxUser = isRoot ? (options.sandboxUser ?? { uid: 65534, gid: SANDBOX_GID }) : null;
  const uids = isRoot && !options.sandboxUser ? new UidAllocator(options.sandboxUids ?? sandboxUidsFromEnvironment(undefined)) : null;
  const cgroups: CgroupSupport =
    isRoot && options.cgroups !== false
      ? openCgroupSupport(host.cgroups, { cpuWeight: options.cpuWeight ?? SANDBOX_CPU_WEIGHT, cpuIdle: options.cpuIdle ?? false })
      : { memory: null, pids: null };
  const log = options.log ?? (() => {});
  const answers = options.answers ?? sharedScanPool;

  /** A large answer line is read in a worker thread (see RawAnswer); interpret gets what it holds. */
  async function decoded(record: RunRecord): Promise<RunRecord> {
    if (!(record.answer instanceof RawAnswer)) return record;
    let answer: RunAnswer | true;
    try {
      answer = await answers.decode(record.answer.pieces);
    } catch {
      // The code ran and answered; what the host cannot read is withheld, as an unreadable line is.
      answer = { ok: false, type: SANDBOX_ERROR_TYPES.exited, message: "the server could not read the function's answer" };
    }
    // `true`: a line that is not an object, which interpret reads as no answer of its own.
    return { ...record, answer: answer as RunAnswer };
  }
  const runtimeDir = prepareRuntimeDir(paths, network, runtimeParent(sandboxUser !== null));
  const nodeBinary = realpathSync(paths.node);
  const masks = host.procMasks;
  const views = new MountViews(join(runtimeDir, 'views'));
  const baseArgs = baseBubblewrapArgs({ runtimeDir, nodeBinary, network, masks, systemDirs: host.systemDirs });
  const shapeContext: ShapeContext = {
    baseArgs,
    nodeBinary,
    bwrap: paths.bwrap,
    network,
    cgroups: { memory: cgroups.memory !== null, pids: cgroups.pids !== null },
    fixedUser: sandboxUser && !uids ? sandboxUser : null,
  };
  const outcomeContext: OutcomeContext = { memoryCgroup: cgroups.memory !== null, log };
  let closed = false;
  const pendingRemovals = new Set<Promise<void>>();
  // With the network on, bubblewrap also gets its info and block pipes (fds 5 and 6, which
  // host/network.ts reads and writes); the spawner passes only fds 0-4, so those sandboxes are spawned
  // by the server directly.
  const spawner = !network && options.spawner !== false ? new Spawner(paths.spawnerScript, sandboxEnvironment(), log) : null;
  // Pre-joining only pays where there are cgroups to join.
  const launchers = new LauncherPool(startLauncher, cgroups.memory || cgroups.pids ? (options.launcherPool ?? 2) : 0);
  launchers.refill();
  const prepareDeps: PrepareDeps = { launchers, uids, network, networkTools: host.networkTools, allowed, log };
  const freshLaunchers: PrepareDeps = { ...prepareDeps, launchers: { take: () => startLauncher() } };
  const executeDeps: ExecuteDeps = { pendingRemovals, refillLaunchers: () => launchers.refill(), log };
  // The free memory both pools leave to everything else, from the host's RAM (detected once).
  const reserveBytes = memoryReserve(host.totalMemoryBytes);
  const poolOption = options.pool ?? true;
  let pool: WarmPool<SandboxShape, PreparedSandbox> | null = null;
  if (poolOption !== false) {
    const poolOptions: SandboxPoolOptions = poolOption === true ? {} : poolOption;
    const warmLimits = poolOptions.warmLimits ?? [sandboxLimitsFor(limitsFor(DEFAULT_TIER))];
    const pinned = warmLimits.flatMap((limits) =>
      (['python', 'typescript'] as const).map((language) => shapeFor({ language, code: '', input: null, limits }, shapeContext)),
    );
    const startPooled = (shape: SandboxShape) => {
      const prepared = prepareSandbox(shape, true, prepareDeps);
      // Off the request path already: put back the launcher the pooled sandbox used.
      setImmediate(() => launchers.refill());
      return prepared;
    };
    pool = new WarmPool(startPooled, pinned, { reserveBytes, maxStarting: host.cpus, ...poolOptions }, log);
  }
  const zygoteOption = options.zygote ?? true;
  let zygotes: ZygotePool | null = null;
  if (zygoteOption !== false && !network) {
    if (sandboxUser && cgroups.memory && cgroups.pids) {
      // The children's socket: the server's, open to the sandboxes' group.
      zygotes = new ZygotePool(
        runtimeDir,
        uids ? { uid: 0, gid: SANDBOX_GID } : sandboxUser,
        zygoteHostHooks({ cgroups, sandboxUser, uids, baseArgs, paths, log, spawner }),
        { reserveBytes, ...(zygoteOption === true ? {} : zygoteOption) },
      );
    } else {
      log('Python zygotes are off: they need the server to run as root with memory and pids cgroups (v1, or v2 handed down)');
    }
  }

  /** The request with its host directories replaced by their mirrors (see mount-views.ts). */
  function throughViews(request: SandboxRequest): SandboxRequest {
    if (!request.mounts?.length && !request.nodeModulesDir) return request;
    const view = (source: string) => {
      try {
        return views.viewOf(source);
      } catch (error) {
        // Mounted as it is, a missing or unreadable source fails the sandbox's start.
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
    checkRequest(request);
    request = throughViews(request);
    let code = request.code;
    if (request.language === 'typescript') {
      const transpiled = await transpileTypescript(request.code, request.entry ?? 'main');
      if (!transpiled.ok) {
        return failed(
          { type: SANDBOX_ERROR_TYPES.transpile, message: transpiled.message, stderr: transpiled.detail },
          '',
          elapsed(started),
        );
      }
      code = transpiled.code;
    }
    const payload = requestPayload(request, code);
    const shape = shapeFor(request, shapeContext);
    const spec = zygotes ? zygoteSpecFor(request, shape, masks) : null;
    const child = spec ? zygotes!.claim(spec) : null;
    if (child) {
      const record = await child.run({
        // The child's own wall clock (P1 ends the run at it, whatever the server does), as the helper's.
        payload: `${zygoteRunLine(request.limits)}\n${payload}`,
        bridge: request.bridge,
        lineCapBytes: lineCapBytes(request.limits),
        timeoutMs: request.limits.timeoutSeconds * 1000,
        signal: request.signal,
      });
      // A child gone before its run began (from what the host read of its fd 3: see ZygoteChild),
      // its zygote killed or replaced say, changes nothing: the run takes the ordinary path, once.
      if (!record.notStarted) {
        // The zygote itself gone (no status came from it), and nothing the host did to the run
        // (a timeout or an overflow kills it) nor any answer explains the end: the platform's.
        if (record.exit.spawnFailed && record.answer === null && !record.timedOut && !record.overflowed && !record.flooded) {
          log('a zygote ended while one of its children was running');
          return platformFailure('the sandbox stopped before the function finished', elapsed(started));
        }
        return interpret(request, await decoded(record), started, outcomeContext);
      }
    }
    if (closed) throw new SandboxUnavailableError('the sandbox is closed');
    // A pooled sandbox was started for exactly this shape and is handed to this run alone.
    const prepared = pool?.claim(shape) ?? prepareSandbox(shape, false, prepareDeps);
    let result = await execute(prepared, request, payload, executeDeps);
    // A pre-started sandbox, or the pre-started helper of a cold one, gone before its runner acked
    // the request (killed while it waited, the host not yet aware) ran none of the code: the run
    // gets one sandbox started now, on a helper started now (the pool's others may be dead too).
    if ((prepared.pooled || prepared.launcher.prestarted) && 'record' in result && result.notStarted) {
      if (closed) throw new SandboxUnavailableError('the sandbox is closed');
      log('a pre-started sandbox ended before its run began: the run takes a fresh one');
      result = await execute(prepareSandbox(shape, false, freshLaunchers), request, payload, executeDeps);
    }
    if ('platform' in result) return platformFailure(result.platform, elapsed(started));
    return interpret(request, await decoded(result.record), started, outcomeContext);
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
    const { child, exited } = spawnHelper(paths.helper, args, {
      seccompProgram: paths.seccompProgram,
      env: sandboxEnvironment(),
      networkPipes: network,
    });
    return { child, cgroup, exited, alive: () => child.exitCode === null && child.signalCode === null };
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
