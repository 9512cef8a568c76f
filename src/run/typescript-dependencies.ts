import path from 'node:path';
import { DomainError } from '../core/errors.js';
import type { FunctionDefinition } from '../core/functions.js';
import { DependencyInstallError, dependencyKey, installedDependencies, NPM_DEFAULTS, prepareTypescriptDependencies, type PrepareOptions } from '../sandbox/index.js';
import { InstallQueue } from './install-queue.js';

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
}

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

  constructor(cacheRoot: string, settings: NpmSettings = {}) {
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
      memoryBytes: (settings.memoryMb ?? NPM_DEFAULTS.memoryBytes / (1024 * 1024)) * 1024 * 1024,
      ...(settings.user ? { user: settings.user } : {}),
      ...(settings.registry ? { registry: settings.registry } : {}),
    };
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
      if (done) return done.dir ?? undefined;
      const key = dependencyKey(definition.requirements);
      let install = this.inFlight.get(key);
      if (!install) {
        install = this.queue
          .run(accountId, async () => (await prepareTypescriptDependencies(definition.requirements, this.cacheRoot, this.options)).dir)
          .finally(() => this.inFlight.delete(key));
        this.inFlight.set(key, install);
      }
      return (await install) ?? undefined;
    } catch (error) {
      if (!(error instanceof DependencyInstallError)) throw error;
      throw new DomainError(
        error.reason === 'invalid_requirement' ? 'validation_error' : 'dependency_error',
        error.reason === 'cache_unreadable' ? 'the server cannot prepare npm packages right now; the operator can find details in the server log' : error.message,
        {
          field: 'requirements',
          ...(error.limit ? { limit: error.limit } : {}),
          ...(error.reason === 'install_failed' && error.detail ? { npm: error.detail } : {}),
        },
      );
    }
  }
}

