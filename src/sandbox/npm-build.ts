/**
 * TypeScript `requirements` are npm packages installed once, when a function version is created,
 * into a directory named by the hash of what was asked for (content-addressed: equal requirement
 * lists share one install). Runs then mount it read-only as the function's node_modules.
 * Install scripts never run: they would execute package code on the host, outside any sandbox.
 *
 * npm itself is untrusted-input-driven code (it parses whatever the registry sends), so it runs
 * through the sandbox helper: as an unprivileged user of its own (when the server is root), in a
 * memory- and pids-limited cgroup (rlimits where there is none), with none of the server's
 * environment, and is killed at a time limit.
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import {
  chmodSync,
  chownSync,
  existsSync,
  lchownSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { delimiter, dirname, isAbsolute, join, resolve } from 'node:path';
import { createRunCgroup, detectCgroupLayout, NO_CGROUPS, openCgroupSupport, type CgroupSupport, type RunCgroup } from './host/cgroup.js';
import type { SandboxHostFacts } from './host/facts.js';
import { defaultHostPaths } from './host.js';
import { madeByDeadProcess, ownerTag } from './owner-tag.js';
import { PlatformError } from '../core/errors.js';
import { MB } from '../core/units.js';

export type DependencyInstallErrorReason =
  | 'invalid_requirement'
  | 'install_failed'
  | 'cache_unreadable'
  /** npm was stopped by a limit: `limit` says which. */
  | 'limit_exceeded';

export type DependencyInstallData = {
  reason: DependencyInstallErrorReason;
  /** npm's own explanation (its error lines), for the make/update response. */
  detail: string;
  /** For limit_exceeded: 'timeout' or 'memory'. */
  limit?: 'timeout' | 'memory';
};

export class DependencyInstallError extends PlatformError {
  declare readonly data: Readonly<DependencyInstallData>;

  constructor(reason: DependencyInstallErrorReason, message: string, detail = '', limit?: 'timeout' | 'memory') {
    super('dependency_install', message, { reason, detail, ...(limit ? { limit } : {}) });
    this.name = 'DependencyInstallError';
  }
}

export interface PreparedDependencies {
  /** The node_modules directory to pass as SandboxRequest.nodeModulesDir; null when nothing is required. */
  dir: string | null;
  /** Content address of the requirement list. */
  key: string;
}

export interface PrepareOptions {
  /** npm executable (default: `npm` on PATH). */
  npm?: string;
  /** Give up after this long (default 2 minutes). */
  timeoutMs?: number;
  /** Memory of npm and everything it starts (default 512 MB). */
  memoryBytes?: number;
  /** Processes and threads npm may have at once (default 64). */
  maxProcesses?: number;
  /** Who runs npm when the server is root (default 65533:65533); ignored otherwise. */
  user?: { uid: number; gid: number };
  /** The npm registry URL (default: npm's own, or npm_config_registry in `environment`). */
  registry?: string;
  /** What npm may see of the server's environment, picked once at start by npmPassThrough (default: none). */
  environment?: Readonly<Record<string, string>>;
  /** Where `npm` is looked for: the server's PATH, read at start (default: beside this Node, then /usr/local/bin, /usr/bin, /bin). */
  searchPath?: string;
  /** false: rlimits only, as on hosts without usable cgroups. */
  cgroups?: boolean;
  /** The host's facts, detected once at start by the composition root (default: detected at the first build). */
  host?: Pick<SandboxHostFacts, 'isRoot' | 'cgroups'>;
  /** The sandbox helper that joins the cgroups, sets rlimits and drops to `user` (default: the built one). */
  helper?: string;
}

export const NPM_DEFAULTS = { timeoutMs: 120_000, memoryBytes: 512 * MB, maxProcesses: 64, user: { uid: 65533, gid: 65533 } } as const;

const NAME = /^(@[a-z0-9][a-z0-9._~-]*\/)?[a-z0-9][a-z0-9._~-]*$/;
/** Registry versions, ranges and dist-tags only: no git, file, URL or alias specs. */
const SPEC = /^[A-Za-z0-9.^~<>=*|+ x-]+$/;
const COMPLETE_MARKER = '.mcpworks-complete';
const STAGING_PREFIX = '.staging-';
/** A staging dir this old belongs to a server that died mid-install (no install lives an hour). */
const STALE_STAGING_MS = 60 * 60_000;
const DETAIL_CAP = 4000;

interface Requirement {
  name: string;
  spec: string;
}

export function parseRequirement(text: string): Requirement {
  const trimmed = text.trim();
  const at = trimmed.indexOf('@', 1);
  const name = at === -1 ? trimmed : trimmed.slice(0, at);
  const spec = at === -1 ? 'latest' : trimmed.slice(at + 1).trim();
  if (name.length > 214 || !NAME.test(name)) {
    throw new DependencyInstallError('invalid_requirement', `'${trimmed.slice(0, 100)}' is not an npm package name`);
  }
  if (spec.length === 0 || spec.length > 100 || !SPEC.test(spec) || spec.includes('..')) {
    throw new DependencyInstallError(
      'invalid_requirement',
      `'${trimmed.slice(0, 100)}': only registry versions, ranges and tags are allowed`,
    );
  }
  return { name, spec };
}

/** The cache key: the normalised requirement list and the Node major version that will run it. */
export function dependencyKey(requirements: readonly string[]): string {
  const normalised = requirements.map(parseRequirement).map((r) => `${r.name}@${r.spec}`);
  const unique = [...new Set(normalised)].sort();
  const nodeMajor = process.versions.node.split('.')[0];
  return createHash('sha256')
    .update(JSON.stringify({ requirements: unique, node: nodeMajor }))
    .digest('hex')
    .slice(0, 32);
}

/** An earlier complete install of `requirements` under `cacheRoot`, without installing anything. */
export function installedDependencies(requirements: readonly string[], cacheRoot: string): PreparedDependencies | null {
  const key = dependencyKey(requirements);
  if (requirements.length === 0) return { dir: null, key };
  const final = join(resolve(cacheRoot), 'ts-deps', key);
  return existsSync(join(final, COMPLETE_MARKER)) ? { dir: join(final, 'node_modules'), key } : null;
}

/**
 * Installs `requirements` (npm specs like `zod`, `lodash@^4`, `@scope/pkg@1.2.3`) under
 * `cacheRoot`, or reuses an earlier identical install. Throws DependencyInstallError with npm's
 * reason on failure, leaving nothing behind. Every directory from / to cacheRoot must be
 * searchable by the sandbox user (o+x), since runs bind the result read-only. Several servers may
 * share cacheRoot: each installs into a staging dir of its own and renames it into place.
 */
export async function prepareTypescriptDependencies(
  requirements: readonly string[],
  cacheRoot: string,
  options: PrepareOptions = {},
): Promise<PreparedDependencies> {
  const parsed = requirements.map(parseRequirement);
  const existing = installedDependencies(requirements, cacheRoot);
  if (existing) return existing;
  const key = dependencyKey(requirements);
  const root = resolve(cacheRoot);
  const installs = join(root, 'ts-deps');
  const final = join(installs, key);
  const modules = join(final, 'node_modules');

  assertSearchableByOthers(root);
  mkdirSync(installs, { recursive: true, mode: 0o755 });
  chmodSync(installs, 0o755);
  removeStaleStaging(installs);
  const host = options.host ?? npmHost();
  const isRoot = host.isRoot;
  const owner = { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };
  const npmUser = isRoot ? (options.user ?? NPM_DEFAULTS.user) : owner;
  const home = npmHome(root, isRoot ? npmUser : null);
  const staging = join(installs, `${STAGING_PREFIX}${ownerTag()}-${key}-${randomBytes(4).toString('hex')}`);
  mkdirSync(staging, { mode: 0o755 });
  try {
    const dependencies: Record<string, string> = {};
    for (const requirement of parsed) dependencies[requirement.name] = requirement.spec;
    writeFileSync(
      join(staging, 'package.json'),
      JSON.stringify({ name: 'mcpworks-function-dependencies', private: true, dependencies }, null, 2),
    );
    if (isRoot) {
      chownSync(staging, npmUser.uid, npmUser.gid);
      chownSync(join(staging, 'package.json'), npmUser.uid, npmUser.gid);
    }
    const what = parsed
      .map((r) => `${r.name}@${r.spec}`)
      .join(', ')
      .slice(0, 300);
    await runNpm({
      npm: resolveExecutable(options.npm ?? 'npm', options.searchPath ?? SYSTEM_PATH),
      helper: options.helper ?? defaultHostPaths().helper,
      cwd: staging,
      root,
      home,
      what,
      user: isRoot ? npmUser : null,
      cgroups: isRoot && options.cgroups !== false ? npmCgroupSupport(host.cgroups) : null,
      timeoutMs: options.timeoutMs ?? NPM_DEFAULTS.timeoutMs,
      memoryBytes: options.memoryBytes ?? NPM_DEFAULTS.memoryBytes,
      maxProcesses: options.maxProcesses ?? NPM_DEFAULTS.maxProcesses,
      registry: options.registry,
      environment: options.environment ?? {},
    });
    if (!existsSync(join(staging, 'node_modules'))) mkdirSync(join(staging, 'node_modules'), { mode: 0o755 });
    // From here on npm's user can change nothing of it, and the sandbox user can read it all.
    seal(staging, npmUser.uid, owner);
    writeFileSync(join(staging, COMPLETE_MARKER), new Date().toISOString());
    try {
      renameSync(staging, final);
    } catch (error) {
      // Another build of the same list (here or on another server) finished first: its result is identical, keep it.
      if (!existsSync(join(final, COMPLETE_MARKER))) throw error;
      rmSync(staging, { recursive: true, force: true });
    }
    return { dir: modules, key };
  } catch (error) {
    rmSync(staging, { recursive: true, force: true });
    throw error;
  }
}

/**
 * Hands the finished install to the server's user, top down (each directory is ours before we look
 * inside it, so npm's user cannot swap entries under us), and makes it readable by the sandbox
 * user. Anything not made by npm's user (a hard link to someone else's file) fails the install.
 */
function seal(dir: string, npmUid: number, owner: { uid: number; gid: number }): void {
  const own = (path: string) => {
    const stat = lstatSync(path);
    if (stat.uid !== npmUid && stat.uid !== owner.uid) {
      throw new DependencyInstallError('install_failed', 'npm install produced a file it does not own; nothing was installed');
    }
    lchownSync(path, owner.uid, owner.gid);
    return stat;
  };
  const walk = (path: string) => {
    own(path);
    chmodSync(path, 0o755);
    for (const entry of readdirSync(path, { withFileTypes: true })) {
      const child = join(path, entry.name);
      if (entry.isDirectory()) walk(child);
      else if (entry.isSymbolicLink()) own(child);
      else if (entry.isFile()) {
        const mode = own(child).mode;
        // Executable for others only where it was executable for the owner (bin scripts); no set-id bits, no writers but us.
        chmodSync(child, (mode & 0o755) | 0o444 | (mode & 0o100 ? 0o011 : 0));
      } else rmSync(child, { force: true });
    }
  };
  walk(dir);
}

function assertSearchableByOthers(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  for (let current = dir; ; current = dirname(current)) {
    if ((statSync(current).mode & 0o001) === 0) {
      throw new DependencyInstallError(
        'cache_unreadable',
        `the dependency cache ${dir} is not reachable by the sandbox user: make ${current} searchable (chmod o+x)`,
      );
    }
    if (dirname(current) === current) return;
  }
}

/** npm's HOME and cache: private to npm's user (shared by servers that share the cache dir). */
function npmHome(root: string, user: { uid: number; gid: number } | null): string {
  const home = join(root, 'npm-home');
  mkdirSync(join(home, 'cache'), { recursive: true, mode: 0o700 });
  if (user) {
    for (const dir of [home, join(home, 'cache')]) {
      chownSync(dir, user.uid, user.gid);
      chmodSync(dir, 0o700);
    }
  }
  return home;
}

function removeStaleStaging(installs: string): void {
  for (const name of readdirSync(installs)) {
    if (!name.startsWith(STAGING_PREFIX)) continue;
    try {
      if (madeByDeadProcess(name) || Date.now() - lstatSync(join(installs, name)).mtimeMs > STALE_STAGING_MS)
        rmSync(join(installs, name), { recursive: true, force: true });
    } catch {
      // removed by another server meanwhile
    }
  }
}

let detectedHost: Pick<SandboxHostFacts, 'isRoot' | 'cgroups'> | undefined;
/** Without facts passed in (tests, the CLI): detected once per process, at the first build. */
function npmHost(): Pick<SandboxHostFacts, 'isRoot' | 'cgroups'> {
  if (!detectedHost) {
    const isRoot = process.getuid?.() === 0;
    detectedHost = { isRoot, cgroups: isRoot ? detectCgroupLayout() : NO_CGROUPS };
  }
  return detectedHost;
}

let cgroupSupport: CgroupSupport | undefined;
/** Made once per process: npm's groups sit beside the sandbox's (a dead process's are removed at the next start). */
function npmCgroupSupport(layout: SandboxHostFacts['cgroups']): CgroupSupport {
  cgroupSupport ??= openCgroupSupport(layout);
  return cgroupSupport;
}

function resolveExecutable(command: string, searchPath: string): string {
  if (isAbsolute(command) || command.includes('/')) return resolve(command);
  for (const dir of searchPath.split(delimiter)) {
    if (dir && existsSync(join(dir, command))) return join(dir, command);
  }
  throw new DependencyInstallError('install_failed', `npm could not start: ${command} not found`);
}

/** The system and the Node that runs the server: npm's PATH, and where npm is looked for by default. */
const SYSTEM_PATH = [dirname(process.execPath), '/usr/local/bin', '/usr/bin', '/bin'].join(':');

/** What npm may see of the server's environment (`env`, read once at start): its locale, proxies and registry settings. */
export function npmPassThrough(env: Readonly<Record<string, string | undefined>>): Record<string, string> {
  const passed: Record<string, string> = {};
  for (const [name, value] of Object.entries(env)) {
    if (value === undefined) continue;
    if (['LANG', 'HTTP_PROXY', 'HTTPS_PROXY', 'NO_PROXY', 'http_proxy', 'https_proxy', 'no_proxy'].includes(name)) passed[name] = value;
    else if (/^npm_config_(registry|strict_ssl|cafile|proxy|https_proxy|noproxy)$/i.test(name)) passed[name] = value;
  }
  return passed;
}

/**
 * The environment npm needs and nothing else of the server's: no secrets, no DATABASE_URL. HOME and
 * the cache are npm's own; PATH only reaches the system and the Node that runs the server.
 */
function npmEnvironment(
  home: string,
  registry: string | undefined,
  heapMb: number | null,
  passed: Readonly<Record<string, string>>,
): Record<string, string> {
  const env: Record<string, string> = {
    PATH: SYSTEM_PATH,
    HOME: home,
    npm_config_cache: join(home, 'cache'),
    npm_config_update_notifier: 'false',
  };
  Object.assign(env, npmPassThrough(passed));
  if (registry) env.npm_config_registry = registry;
  // Without a memory cgroup, V8's own heap limit is what stops npm in time.
  if (heapMb !== null) env.NODE_OPTIONS = `--max-old-space-size=${heapMb}`;
  return env;
}

interface NpmRun {
  npm: string;
  helper: string;
  cwd: string;
  root: string;
  home: string;
  /** The requirement list, for messages. */
  what: string;
  user: { uid: number; gid: number } | null;
  cgroups: CgroupSupport | null;
  timeoutMs: number;
  memoryBytes: number;
  maxProcesses: number;
  registry: string | undefined;
  environment: Readonly<Record<string, string>>;
}

function runNpm(run: NpmRun): Promise<void> {
  const npmArgs = [
    'install',
    '--ignore-scripts',
    '--omit=dev',
    '--no-audit',
    '--no-fund',
    '--no-update-notifier',
    '--loglevel=error',
    '--prefer-offline',
  ];
  if (!existsSync(run.helper)) {
    return Promise.reject(
      new DependencyInstallError('cache_unreadable', `the sandbox helper is missing at ${run.helper}: run \`make setup\``),
    );
  }
  let cgroup: RunCgroup | null = null;
  if (run.cgroups)
    cgroup = createRunCgroup(run.cgroups, `npm-${randomUUID()}`, { memoryBytes: run.memoryBytes, maxProcesses: run.maxProcesses });
  // The helper joins the groups before it starts npm, so nothing of npm ever runs outside them.
  const args = ['exec', ...(cgroup?.procsFiles ?? []).flatMap((file) => ['--cgroup', file])];
  // A build never outlives the server.
  args.push('--watch-pid', String(process.pid));
  args.push('--rlimit', 'core=0:0', '--rlimit', 'nofile=4096:4096');
  const memoryCgroup = run.cgroups?.memory != null && cgroup !== null;
  // Node reserves about 1 GB of address space it never touches.
  if (!memoryCgroup) args.push('--rlimit', `as=${run.memoryBytes + 1024 * MB}:${run.memoryBytes + 1024 * MB}`);
  // Per-user count: npm's user is its own, so this only brakes the installs themselves.
  if (run.user && !run.cgroups?.pids) args.push('--rlimit', `nproc=${run.maxProcesses * 8}:${run.maxProcesses * 8}`);
  if (run.user) args.push('--user', `${run.user.uid}:${run.user.gid}`);
  args.push('--keep-fds', '3', '--', run.npm, ...npmArgs);
  const heapMb = memoryCgroup ? null : Math.max(32, Math.floor((run.memoryBytes * 3) / 4 / MB));

  return new Promise<void>((resolvePromise, reject) => {
    // Its own process group, so a timeout kills everything npm started even without a cgroup.
    const child = spawn(run.helper, args, {
      cwd: run.cwd,
      env: npmEnvironment(run.home, run.registry, heapMb, run.environment),
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    let output = '';
    const collect = (chunk: Buffer) => {
      if (output.length < 64 * 1024) output += chunk.toString('utf8');
    };
    child.stdout!.on('data', collect);
    child.stderr!.on('data', collect);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      cgroup?.killAll();
      try {
        if (child.pid) process.kill(-child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }, run.timeoutMs);
    const finish = async (error: DependencyInstallError | null) => {
      clearTimeout(timer);
      // The helper waited for all it started; the group catches anything that slipped away.
      cgroup?.killAll();
      await cgroup?.remove();
      if (error) reject(error);
      else resolvePromise();
    };
    child.on('error', (error) => void finish(new DependencyInstallError('install_failed', `npm could not start: ${error.message}`)));
    child.on('close', (code) => {
      if (timedOut) {
        return void finish(
          new DependencyInstallError(
            'limit_exceeded',
            `npm install of ${run.what} did not finish within ${Math.round(run.timeoutMs / 1000)} s (the install time limit); nothing was installed`,
            '',
            'timeout',
          ),
        );
      }
      const reason = npmReason(output, run.cwd, run.root);
      // Without a memory cgroup, an allocation refused under the address-space limit shows as V8's
      // out-of-memory report, or as Node aborting or crashing (the helper answers 128 + signal).
      const rlimitMemory =
        !memoryCgroup &&
        code !== 0 &&
        (/heap out of memory|Reached heap limit|allocation failed|ENOMEM/i.test(output) || code === 134 || code === 139);
      if (cgroup?.oomKilled() || rlimitMemory) {
        return void finish(
          new DependencyInstallError(
            'limit_exceeded',
            `npm install of ${run.what} ran out of memory (the install memory limit is ${Math.round(run.memoryBytes / MB)} MB); nothing was installed`,
            '',
            'memory',
          ),
        );
      }
      if (code === 0) return void finish(null);
      const fallback =
        code === 111 && /mcpworks-sandbox-helper/.test(output) ? 'npm could not be started' : `npm exited with status ${code}`;
      const text = reason || fallback;
      const lines = text.split('\n');
      const errorCode = /^code (\S+)/.exec(lines[0] ?? '')?.[1];
      const summary = lines.find((line) => !/^code \S+$/.test(line) && !/^\S+$/.test(line)) ?? lines[0];
      void finish(
        new DependencyInstallError('install_failed', `npm install failed${errorCode ? ` (${errorCode})` : ''}: ${summary}`, text),
      );
    });
  });
}

/** npm's error lines without the log-file pointers and paths that name the host's directories. */
function npmReason(output: string, cwd: string, root: string): string {
  const lines = output
    .split('\n')
    .map((line) => line.replace(/^npm (error|ERR!)\s?/, '').trimEnd())
    .filter((line) => line.length > 0 && !/A complete log of this run|verbose|\/_logs\/|mcpworks-sandbox-helper/.test(line))
    .map((line) => line.split(cwd).join('.').split(root).join('<cache>'));
  return lines.join('\n').slice(0, DETAIL_CAP);
}
