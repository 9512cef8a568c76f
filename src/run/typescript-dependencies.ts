import path from 'node:path';
import { DomainError } from '../core/errors.js';
import type { FunctionDefinition } from '../core/functions.js';
import { DependencyInstallError, prepareTypescriptDependencies } from '../sandbox/index.js';

/**
 * npm packages of TypeScript functions: installed when a version is created (a failed install
 * fails the make/update with npm's reason), and located again when the version runs.
 */
export class TypescriptDependencies {
  readonly cacheRoot: string;

  constructor(cacheRoot: string) {
    this.cacheRoot = path.resolve(cacheRoot);
  }

  /** The VersionPreparer for the catalog: nothing to do for Python or for no requirements. */
  readonly prepare = async (definition: FunctionDefinition): Promise<void> => {
    await this.nodeModulesFor(definition);
  };

  /** The node_modules dir a run mounts; installs on a cache miss (content-addressed, so idempotent). */
  async nodeModulesFor(definition: Pick<FunctionDefinition, 'language' | 'requirements'>): Promise<string | undefined> {
    if (definition.language !== 'typescript' || definition.requirements.length === 0) return undefined;
    try {
      return (await prepareTypescriptDependencies(definition.requirements, this.cacheRoot)).dir ?? undefined;
    } catch (error) {
      if (!(error instanceof DependencyInstallError)) throw error;
      throw new DomainError(
        error.reason === 'invalid_requirement' ? 'validation_error' : 'dependency_error',
        error.reason === 'cache_unreadable' ? 'the server cannot prepare npm packages right now; the operator can find details in the server log' : error.message,
        { field: 'requirements', ...(error.reason === 'install_failed' && error.detail ? { npm: error.detail } : {}) },
      );
    }
  }
}
