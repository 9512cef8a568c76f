import { randomBytes } from 'node:crypto';
import { lstatSync, readdirSync, renameSync, rmSync, statSync, utimesSync } from 'node:fs';
import path from 'node:path';
import { DomainError } from '../core/errors.js';
import type { FunctionDefinition } from '../core/functions.js';
import {
  DependencyInstallError,
  dependencyKey,
  installedDependencies,
  NPM_DEFAULTS,
  prepareTypescriptDependencies,
  type PrepareOptions,
} from '../sandbox/index.js';
import { InstallQueue } from './install-queue.js';
import { MB } from '../core/units.js';

/** How this server runs npm (see README, Configuration). */
export interface NpmSettings {
  /** Installs at once on this server (default 2). */
  concurrency?: number;
  /** Installs at once for one account (default 1). */
  accountConcurrency?: number;
  /** Installs waiting for a slot, in all (default 16) and per account (default 4). */
  queue?: number;
  accountQueue?: number;
  /** Install time limit, also the longest wait for a slot (default 120 s). */
  timeoutSeconds?: number;
  /** Memory of one install (default 512 MB). */
  memoryMb?: number;
  /** The unprivileged user npm runs as when the server is root (default 65533:65533). */
  user?: { uid: number; gid: number };
  /** Registry URL (default: npm's own, or npm_config_registry). */
  registry?: string;
  /** What npm may see of the server's environment (proxies, registry settings), picked at start. */
  environment?: Readonly<Record<string, string>>;
  /** The server's PATH, where npm is looked for. */
  searchPath?: string;
  /** Bytes all installs may take in the cache dir, in MB (default 4096): past it, new installs are refused. */
  cacheMb?: number;
}

export const DEFAULT_NPM_CACHE_MB = 4096;
/** An install's directory name: dependencyKey's hex. */
const INSTALL_NAME = /^[0-9a-f]{32}$/;

/**
 * npm packages of TypeScript functions: installed when a version is created (a failed install
 * fails the make/update with npm's reason), and located again when the version runs. Installs go
 * through a bounded queue with per-account caps; equal requirement lists share one install.
 */
export class TypescriptDependencies {
  readonly cacheRoot: string;
  private readonly queue: InstallQueue;
  private readonly options: PrepareOptions;
  private readonly inFlight = new Map<string, Promise<string | null>>();
  private readonly cacheBytes: number;
  /** Bytes of the installs in the cache dir: measured by each collection, plus this node's installs since. */
  private installedBytes: number;

  /** `host`: the sandbox's host facts (root, cgroup layout), detected once at start by the composition root. */
  constructor(cacheRoot: string, settings: NpmSettings = {}, host?: PrepareOptions['host']) {
    this.cacheRoot = path.resolve(cacheRoot);
    const timeoutMs = (settings.timeoutSeconds ?? NPM_DEFAULTS.timeoutMs / 1000) * 1000;
    this.queue = new InstallQueue({
      concurrency: settings.concurrency ?? 2,
      accountConcurrency: settings.accountConcurrency ?? 1,
      queue: settings.queue ?? 16,
      accountQueue: settings.accountQueue ?? 4,
      maxWaitMs: timeoutMs,
    });
    this.options = {
      timeoutMs,
      memoryBytes: (settings.memoryMb ?? NPM_DEFAULTS.memoryBytes / MB) * MB,
      ...(settings.user ? { user: settings.user } : {}),
      ...(settings.registry ? { registry: settings.registry } : {}),
      ...(settings.environment ? { environment: settings.environment } : {}),
      ...(settings.searchPath ? { searchPath: settings.searchPath } : {}),
      ...(host ? { host } : {}),
    };
    this.cacheBytes = (settings.cacheMb ?? DEFAULT_NPM_CACHE_MB) * MB;
    this.installedBytes = this.measure().bytes;
  }

  private get installsDir(): string {
    return path.join(this.cacheRoot, 'ts-deps');
  }

  /** The installs in the cache dir and their bytes (each file once, however many links it has). */
  private measure(): { names: string[]; bytes: number } {
    let names: string[] = [];
    try {
      names = readdirSync(this.installsDir).filter((name) => INSTALL_NAME.test(name));
    } catch {
      return { names, bytes: 0 };
    }
    const seen = new Set<number>();
    let bytes = 0;
    for (const name of names) bytes += treeBytes(path.join(this.installsDir, name), seen);
    return { names, bytes };
  }

  /**
   * Deletes installs no stored version asks for (`referenced`: dependencyKey of every TypeScript
   * version in the database, history included, so a restore finds its packages) and that were not
   * prepared or run for `graceMs` (the mark is the directory's mtime, shared by nodes that share
   * the cache dir; a run marks its install when it starts). An install is renamed away before it is
   * removed, so two collectors never race on one. Answers how many it removed and the bytes left.
   */
  collectGarbage(referenced: ReadonlySet<string>, graceMs: number, now = Date.now()): { removed: number; bytes: number } {
    let entries: string[] = [];
    try {
      entries = readdirSync(this.installsDir);
    } catch {
      // Nothing installed yet.
    }
    let removed = 0;
    for (const name of entries) {
      const dir = path.join(this.installsDir, name);
      if (!INSTALL_NAME.test(name) || referenced.has(name) || this.inFlight.has(name)) continue;
      try {
        if (now - statSync(dir).mtimeMs < graceMs) continue;
        renameSync(dir, path.join(this.installsDir, `.trash-${name}-${randomBytes(4).toString('hex')}`));
      } catch {
        continue; // gone, or another collector took it
      }
      removed++;
    }
    // The renamed-away installs (and any a collector that died left).
    for (const name of readdirSafe(this.installsDir)) {
      if (name.startsWith('.trash-')) rmSync(path.join(this.installsDir, name), { recursive: true, force: true });
    }
    this.installedBytes = this.measure().bytes;
    return { removed, bytes: this.installedBytes };
  }

  /** The VersionPreparer for the catalog: nothing to do for Python or for no requirements. */
  readonly prepare = async (definition: FunctionDefinition, accountId: string): Promise<void> => {
    await this.nodeModulesFor(definition, accountId);
  };

  /** The node_modules dir a run mounts; installs on a cache miss (content-addressed, so idempotent). */
  async nodeModulesFor(definition: Pick<FunctionDefinition, 'language' | 'requirements'>, accountId: string): Promise<string | undefined> {
    if (definition.language !== 'typescript' || definition.requirements.length === 0) return undefined;
    try {
      const done = installedDependencies(definition.requirements, this.cacheRoot);
      if (done) {
        // Prepared or run now: the collector's grace starts again.
        if (done.dir) markUsed(path.dirname(done.dir));
        return done.dir ?? undefined;
      }
      const key = dependencyKey(definition.requirements);
      let install = this.inFlight.get(key);
      if (!install) {
        if (this.installedBytes >= this.cacheBytes) {
          throw new DomainError(
            'dependency_error',
            `the server's npm package store is full (${Math.round(this.installedBytes / MB)} MB of ${Math.round(this.cacheBytes / MB)} MB); packages no function version uses are removed within minutes, or the operator can raise MCPWORKS_NPM_CACHE_MB`,
            { field: 'requirements', limit: 'cache' },
          );
        }
        install = this.queue
          .run(accountId, async () => {
            const prepared = await prepareTypescriptDependencies(definition.requirements, this.cacheRoot, this.options);
            if (prepared.dir) this.installedBytes += treeBytes(path.dirname(prepared.dir), new Set());
            return prepared.dir;
          })
          .finally(() => this.inFlight.delete(key));
        this.inFlight.set(key, install);
      }
      return (await install) ?? undefined;
    } catch (error) {
      if (!(error instanceof DependencyInstallError)) throw error;
      const { reason, detail, limit } = error.data;
      throw new DomainError(
        reason === 'invalid_requirement' ? 'validation_error' : 'dependency_error',
        reason === 'cache_unreadable'
          ? 'the server cannot prepare npm packages right now; the operator can find details in the server log'
          : error.message,
        {
          field: 'requirements',
          ...(limit ? { limit } : {}),
          ...(reason === 'install_failed' && detail ? { npm: detail } : {}),
        },
      );
    }
  }
}

function readdirSafe(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/** Bytes of the files under `dir` whose inodes are not in `seen` yet (a vanishing entry is skipped). */
function treeBytes(dir: string, seen: Set<number>): number {
  let bytes = 0;
  for (const entry of readdirSafeWithTypes(dir)) {
    const entryPath = path.join(dir, entry.name);
    if (entry.isDirectory()) {
      bytes += treeBytes(entryPath, seen);
      continue;
    }
    try {
      const stat = lstatSync(entryPath);
      if (seen.has(stat.ino)) continue;
      seen.add(stat.ino);
      bytes += stat.size;
    } catch {
      // removed meanwhile
    }
  }
  return bytes;
}

function readdirSafeWithTypes(dir: string) {
  try {
    return readdirSync(dir, { withFileTypes: true });
  } catch {
    return [];
  }
}

function markUsed(dir: string): void {
  try {
    const now = new Date();
    utimesSync(dir, now, now);
  } catch {
    // Collected meanwhile: the next preparation installs it again.
  }
}
