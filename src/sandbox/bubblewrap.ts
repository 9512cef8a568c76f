/**
 * The bubblewrap sandbox: every run is a fresh set of namespaces (user, PID, mount, IPC, UTS, net,
 * cgroup) over a read-only /usr, a small private tmpfs, seccomp deny-list, per-run cgroup and
 * rlimits. Requests travel on stdin and answers on fd 3, so env values never appear in any argv.
 * With the pool on (the default), sandboxes are started ahead of their runs and wait, blocked on
 * stdin, for the request (see warm-pool.ts); each still serves exactly one run.
 */
import type { ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, realpathSync, rmSync, statSync } from 'node:fs';
import type { Duplex } from 'node:stream';
import { join } from 'node:path';
import {
  SANDBOX_ERROR_TYPES,
  sandboxLimitsFor,
  type Sandbox,
  type SandboxLimits,
  type SandboxOutcome,
  type SandboxRequest,
} from '../core/sandbox.js';
import { DEFAULT_TIER, limitsFor } from '../core/tiers.js';
import { CappedCapture } from './capture.js';
import { RawAnswer, RunChannel, type RunAnswer, type RunRecord } from './channel.js';
import { sharedScanPool } from '../run/scan-pool.js';
import { WarmPool, type PoolItem, type PoolStats, type WarmPoolOptions } from './warm-pool.js';
import { createRunCgroup, detectCgroupSupport, releaseCgroupSupport, type CgroupSupport } from './cgroup.js';
import { LauncherPool, type Launcher, type LauncherExit } from './launcher-pool.js';
import { Spawner } from './spawner.js';
import { defaultHostPaths, procMasks, topLevelSystemDirs, type HostPaths } from './host.js';
import { ZygotePool, type ZygoteOptions, type ZygoteStats } from './zygote/pool.js';
import { transpileTypescript } from './transpile.js';
import { MountViews } from './mount-views.js';
import { allowedRoutes, attachNetwork, networkAvailable, type NetworkAttachment } from './network.js';
import { NPM_DEFAULTS } from './npm-build.js';
import { hostPasswd, parseSandboxUids, type UidRange } from './uid-range.js';
import { baseBubblewrapArgs } from './plan/bwrap-args.js';
import { SANDBOX_GID, sandboxEnvironment } from './plan/environment.js';
import { checkRequest, requestPayload, zygoteRunLine } from './plan/request.js';
import { commandFrame, shapeFor, type SandboxShape, type ShapeContext } from './plan/shape.js';
import { zygoteSpecFor } from './plan/zygote-spec.js';
import { elapsed, failed, interpret, lineCapBytes, platformFailure, type OutcomeContext } from './outcome.js';
import { spawnHelper, stopHelper } from './host/spawn-helper.js';
import { prepareRuntimeDir, runtimeParent } from './host/runtime-dir.js';
import { UidAllocator } from './host/uid-allocator.js';
import { SandboxUnavailableError } from './errors.js';
import { zygoteHostHooks } from './zygote/launch.js';

export { SandboxUnavailableError } from './errors.js';

const MB = 1024 * 1024;

export interface BubblewrapSandboxOptions {
  /** Give functions network egress (default: MCPWORKS_SANDBOX_NETWORK === 'on'). */
  network?: boolean;
  /**
   * One host user every sandbox runs as when the server itself is root. Without it (the default),
   * each sandbox and each zygote gets a host uid of its own from `sandboxUids`, in group nogroup
   * (65534), so per-user kernel limits (inotify instances, mqueue bytes, pending signals, user
   * namespaces) are never shared by two runs in flight (children of one zygote, one namespace's,
   * share its uid).
   */
  sandboxUser?: { uid: number; gid: number };
  /** The host uids handed out (default MCPWORKS_SANDBOX_UIDS, else 2000000000-2000065535). */
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
   * Pre-started sandboxes waiting for their request (default: on unless MCPWORKS_SANDBOX_POOL=off).
   * false: every run starts its sandbox on the request path, as before the pool.
   */
  pool?: boolean | SandboxPoolOptions;
  /**
   * Python fork-servers for requests that ask for one (`warm`): default on unless
   * MCPWORKS_ZYGOTE=off. Used where runs can get cgroups of their own (root, cgroup v1 memory and
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

export function zygoteFromEnvironment(value = process.env.MCPWORKS_ZYGOTE): boolean {
  return value !== 'off';
}

export function poolFromEnvironment(value = process.env.MCPWORKS_SANDBOX_POOL): boolean {
  return value !== 'off';
}

/** Memory limit of a pre-started launcher until its run sets the tier's (it only waits on stdin). */
const DEFAULT_LAUNCHER_MEMORY = 64 * 1024 * 1024;

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
 * MCPWORKS_SANDBOX_UIDS=FIRST-LAST: the host uids sandboxes run as, checked against the host's
 * users (see uid-range.ts). The server checks it at start (configFromEnv) and passes the range in.
 */
export function sandboxUidsFromEnvironment(value = process.env.MCPWORKS_SANDBOX_UIDS, npmUid: number = NPM_DEFAULTS.user.uid): UidRange {
  try {
    return parseSandboxUids(value, { passwd: hostPasswd(), npmUid });
  } catch (error) {
    throw new SandboxUnavailableError((error as Error).message);
  }
}

export function networkFromEnvironment(value = process.env.MCPWORKS_SANDBOX_NETWORK): boolean {
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
  const network = options.network ?? networkFromEnvironment();
  if (network && !networkAvailable()) {
    throw new SandboxUnavailableError('MCPWORKS_SANDBOX_NETWORK=on needs the server to run as root with slirp4netns, nsenter and ip installed');
  }
  // A bad allow-list stops the server at start, not each run later.
  if (network) {
    try {
      allowedRoutes();
    } catch (error) {
      throw new SandboxUnavailableError((error as Error).message);
    }
  }
  const isRoot = process.getuid?.() === 0;
  // A fixed user (the option) or, by default, a uid per sandbox from the range.
  const sandboxUser = isRoot ? (options.sandboxUser ?? { uid: 65534, gid: SANDBOX_GID }) : null;
  const uids = isRoot && !options.sandboxUser ? new UidAllocator(options.sandboxUids ?? sandboxUidsFromEnvironment()) : null;
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
  const baseArgs = baseBubblewrapArgs({ runtimeDir, nodeBinary, network, masks, systemDirs: topLevelSystemDirs() });
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
  // network.ts reads and writes); the spawner passes only fds 0-4, so those sandboxes are spawned
  // by the server directly.
  const spawner = !network && options.spawner !== false ? new Spawner(paths.spawnerScript, sandboxEnvironment(), log) : null;
  // Pre-joining only pays where there are cgroups to join.
  const launchers = new LauncherPool(startLauncher, cgroups.memory || cgroups.pids ? (options.launcherPool ?? 2) : 0);
  launchers.refill();
  const poolOption = options.pool ?? poolFromEnvironment();
  let pool: WarmPool<SandboxShape, PreparedSandbox> | null = null;
  if (poolOption !== false) {
    const poolOptions: SandboxPoolOptions = poolOption === true ? {} : poolOption;
    const warmLimits = poolOptions.warmLimits ?? [sandboxLimitsFor(limitsFor(DEFAULT_TIER))];
    const pinned = warmLimits.flatMap((limits) =>
      (['python', 'typescript'] as const).map((language) => shapeFor({ language, code: '', input: null, limits }, shapeContext)),
    );
    const startPooled = (shape: SandboxShape) => {
      const prepared = prepare(shape, true);
      // Off the request path already: put back the launcher the pooled sandbox used.
      setImmediate(() => launchers.refill());
      return prepared;
    };
    pool = new WarmPool(startPooled, pinned, poolOptions, log);
  }
  const zygoteOption = options.zygote ?? zygoteFromEnvironment();
  let zygotes: ZygotePool | null = null;
  if (zygoteOption !== false && !network) {
    if (sandboxUser && cgroups.memory?.version === 1 && cgroups.pids?.version === 1) {
      // The children's socket: the server's, open to the sandboxes' group.
      zygotes = new ZygotePool(runtimeDir, uids ? { uid: 0, gid: SANDBOX_GID } : sandboxUser, zygoteHostHooks({ cgroups, sandboxUser, uids, baseArgs, paths, log }), zygoteOption === true ? {} : zygoteOption);
    } else {
      log('Python zygotes are off: they need the server to run as root with cgroup v1 memory and pids hierarchies');
    }
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
    checkRequest(request);
    request = throughViews(request);
    let code = request.code;
    if (request.language === 'typescript') {
      const transpiled = await transpileTypescript(request.code, request.entry ?? 'main');
      if (!transpiled.ok) {
        return failed({ type: SANDBOX_ERROR_TYPES.transpile, message: transpiled.message, stderr: transpiled.detail }, '', elapsed(started));
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
      // A child that died before its run began changes nothing: the run takes the ordinary path.
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
    return execute(request, shape, payload, started);
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
    const { child, exited } = spawnHelper(paths.helper, args, { seccompProgram: paths.seccompProgram, env: sandboxEnvironment(), networkPipes: network });
    return { child, cgroup, exited, alive: () => child.exitCode === null && child.signalCode === null };
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
      ? attachNetwork(child as ChildProcess).then(
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
        const escalation = stopHelper(child, cgroup);
        await exited;
        clearTimeout(escalation);
        (await networkReady).attachment?.close();
        await cgroup?.remove();
      },
    };
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
        escalation = stopHelper(child, cgroup);
      };
      const timer = setTimeout(() => {
        timedOut = true;
        kill();
      }, limits.timeoutSeconds * 1000);
      // The server is stopping and its grace period is over.
      if (request.signal?.aborted) kill();
      else request.signal?.addEventListener('abort', kill, { once: true });
      // Room for the result (or a bridge call's input) plus the error envelope and a traceback.
      channel.begin(request.bridge, lineCapBytes(limits), kill);
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
      return platformFailure('the sandbox could not start', elapsed(started));
    }
    // Between runs, so the fork never delays a run in progress.
    setImmediate(() => launchers.refill());
    if (networkFailed) {
      return platformFailure('the sandbox network could not be set up', elapsed(started));
    }
    // Whether the runner ever said ready: its line precedes any user code, so once the process is
    // gone it is in the pipe already (or fd 3 closes without it); bounded all the same.
    const ready = channel.isReady || (await Promise.race([channel.ready, delay(2000).then(() => false)]));
    return interpret(request, await decoded({ stdout, stderr, answer, overflowed, flooded, timedOut, oomKilled, exit, ready }), started, outcomeContext);
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

