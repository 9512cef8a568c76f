/** The types the zygote pieces share (pool.ts says what zygotes are). */
import type { Duplex } from 'node:stream';
import type { SandboxBridge, SandboxMount } from '../../core/sandbox.js';
import type { RunRecord } from '../wire/channel.js';
import type { RunCgroup } from '../host/cgroup.js';
import type { ProcMasks } from '../plan/bwrap-args.js';

/** What one zygote is: everything fixed when it starts. */
export interface ZygoteSpec {
  readonly key: string;
  /** For logs and stats (never request data). */
  readonly label: string;
  /** Whose runs it serves (an account id): zygote slots are shared fairly between owners. */
  readonly owner: string;
  /** What the zygote pre-imports (allow-listed import names). */
  readonly imports: readonly string[];
  /** A module the zygote imports from `paths` (read-only mounts: code mode's package), then drops the paths again. */
  readonly preload: { readonly module: string; readonly paths: readonly string[] } | null;
  /** Per-run limits of a child's cgroups. */
  readonly runLimits: { memoryBytes: number; maxProcesses: number };
  readonly maxLogBytes: number;
  /** Passed to zygote.py: tmpfs size, the worker's rlimits and what each child masks in its /proc. */
  readonly config: { tmpfsBytes: number; rlimits: Record<string, [number, number]>; procMasks: ProcMasks };
  /** Read-only mounts of the zygote's sandbox (its runs' mounts: code mode's package). */
  readonly mounts: readonly SandboxMount[];
}

/** The cgroup directories a zygote's runs are made in (bound into its sandbox). */
export interface ZygoteCgroups {
  /** Host directories bound at /sandbox/zygote/cg-memory and /sandbox/zygote/cg-pids. */
  readonly memoryDir: string | null;
  readonly pidsDir: string | null;
  /** The zygote process's own group. */
  readonly self: RunCgroup;
  /** The host user the zygote and its children run as. */
  readonly user: { uid: number; gid: number };
  /** A fresh group for one child, writable (cgroup.procs) by the sandbox user. */
  createRun(name: string, limits: { memoryBytes: number; maxProcesses: number }): RunCgroup;
  remove(): Promise<void>;
}

/** A started zygote process (bubblewrap through the helper), as bubblewrap.ts launches it. */
export interface ZygoteProcess {
  readonly control: Duplex;
  readonly stderr: NodeJS.ReadableStream;
  kill(): void;
  readonly exited: Promise<void>;
}

export interface ZygoteHostHooks {
  /** Makes this zygote's cgroups, or null when the host cannot give its runs their own. */
  cgroups(id: string): ZygoteCgroups | null;
  /** Starts the zygote's sandbox. */
  launch(spec: ZygoteSpec, cgroups: ZygoteCgroups, socketDir: string): ZygoteProcess;
  log(message: string): void;
}

export interface ZygoteOptions {
  /**
   * Most zygotes alive at once. Default 4. A new one takes the place of an idle one of its own
   * owner or of an owner holding more (the one holding the most, least recently used first), never
   * of one with a run in progress.
   */
  maxZygotes?: number;
  /** Most zygotes of one owner (account) at once, so others always find a slot. Default half of maxZygotes (at least 1). */
  maxZygotesPerOwner?: number;
  /** Spare children kept forked per zygote (its floor). Default 2. */
  minSpares?: number;
  /** Most spare children per zygote. Default 12. */
  maxSpares?: number;
  /** A zygote unused this long is stopped. Default 5 min. */
  idleMs?: number;
  /** Free memory a new zygote must leave. Default max(512 MB, 10 % of RAM). */
  reserveBytes?: number;
  /** Memory one zygote is assumed to hold (pandas and numpy loaded), for that check. Default 160 MB. */
  zygoteMemoryBytes?: number;
  /** Free memory now (default os.freemem); replaceable for tests. */
  freeMemory?: () => number;
  /** The clock of claim rates, idle times and back-off (default Date.now); replaceable for tests. */
  now?: () => number;
}

/** What a run through a zygote child produced, in the form bubblewrap.ts interprets. */
export interface ZygoteRunRecord extends RunRecord {
  /**
   * The child was gone before its run began: never ready, or its fd 3 ended with nothing after the
   * ready line, not even its start ack (STARTED_LINE). None of the run's code ran, so the caller
   * takes the ordinary path instead.
   */
  notStarted: boolean;
}

export interface ZygoteRunRequest {
  payload: string;
  bridge: SandboxBridge | undefined;
  lineCapBytes: number;
  timeoutMs: number;
  /** Aborted: the run is killed (the server is stopping). */
  signal?: AbortSignal | undefined;
}

export interface ZygoteStats {
  zygotes: { label: string; owner: string; state: string; spares: number; runs: number; active: number }[];
  runs: number;
}
