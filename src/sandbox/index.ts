/** The sandbox module's public surface: one interface, its bubblewrap implementation, npm builds. */
export type {
  Sandbox,
  SandboxRequest,
  SandboxOutcome,
  SandboxFailure,
  SandboxLimits,
  SandboxLanguage,
  SandboxMount,
  SandboxEntry,
  SandboxBridge,
} from '../core/sandbox.js';
export { SANDBOX_ERROR_TYPES, sandboxLimitsFor, LOG_CAP_BYTES, isSandboxLanguage } from '../core/sandbox.js';
export {
  createBubblewrapSandbox,
  networkFromEnvironment,
  sandboxUidsFromEnvironment,
  SandboxUnavailableError,
  type BubblewrapSandboxOptions,
} from './bubblewrap.js';
export { networkAvailable } from './host/network.js';
export { detectSandboxHost, type SandboxHostFacts } from './host/facts.js';
export { pythonInventory, type PythonInventory } from './python-inventory.js';
export {
  prepareTypescriptDependencies,
  npmPassThrough,
  installedDependencies,
  NPM_DEFAULTS,
  dependencyKey,
  parseRequirement,
  DependencyInstallError,
  type DependencyInstallErrorReason,
  type PreparedDependencies,
  type PrepareOptions,
} from './npm-build.js';
