/** What zygote a request can run in (its spec and key), or none. Pure. */
import { findPythonPackage } from '../../core/python-packages.js';
import type { SandboxRequest } from '../../core/sandbox.js';
import type { ZygoteSpec } from '../zygote/types.js';
import type { ProcMasks } from './bwrap-args.js';
import type { SandboxShape } from './shape.js';

/** A Python import name (the first part of a dotted one). */
const IMPORT_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

export function zygoteSpecFor(request: SandboxRequest, shape: SandboxShape, masks: ProcMasks): ZygoteSpec | null {
  const warm = request.warm;
  if (!warm || request.language !== 'python') return null;
  // Only allow-listed packages, by their import names: the zygote imports them before any run.
  const imports = [...new Set(warm.imports)]
    .filter((name) => IMPORT_NAME.test(name) && findPythonPackage(name)?.importName === name)
    .sort();
  const preload = preloadOf(request);
  const { limits } = request;
  // The CPU-time limit is not part of the zygote: each run's worker sets its own from the run's
  // first line (a code-mode callee's limit is what is left of its caller's time, which would
  // otherwise make a new zygote every second).
  // The same text as JSON.stringify([...command, limits, log cap, owner, group, imports, preload]).
  const key = `[${shapePartOf(shape)},${JSON.stringify([warm.owner ?? null, warm.group, imports, preload]).slice(1, -1)}]`;
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
    preload,
    runLimits: shape.cgroupLimits,
    maxLogBytes: shape.maxLogBytes,
    config: { tmpfsBytes: limits.tmpfsBytes, rlimits, procMasks: masks },
    // In the key already: the shape's command line holds every mount.
    mounts: request.mounts ?? [],
  };
}

/** The shape's part of a zygote key, per frozen shape (shapeFor remembers them): its command line is long. */
const shapeParts = new WeakMap<SandboxShape, string>();

/**
 * The shape's command line, CPU-time limit aside (the zygote's runs set their own: see above),
 * with its cgroup limits and log cap, as JSON without its outer brackets.
 */
function shapePartOf(shape: SandboxShape): string {
  let part = shapeParts.get(shape);
  if (part === undefined) {
    const cpuFree = shape.command.map((arg) => (arg.startsWith('cpu=') ? 'cpu=run' : arg));
    part = JSON.stringify([cpuFree, shape.cgroupLimits, shape.maxLogBytes]).slice(1, -1);
    // Only a shape that cannot change is remembered by identity.
    if (Object.isFrozen(shape) && Object.isFrozen(shape.command) && Object.isFrozen(shape.cgroupLimits)) shapeParts.set(shape, part);
  }
  return part;
}

/**
 * The module the zygote imports from the request's library paths, when every one of them lies in
 * one of its read-only mounts (what the server generated, never a path of the user's choosing).
 */
function preloadOf(request: SandboxRequest): ZygoteSpec['preload'] {
  const module = request.warm?.preload;
  const paths = request.libraryPaths ?? [];
  if (module === undefined || !IMPORT_NAME.test(module) || paths.length === 0) return null;
  const mounted = (dir: string) =>
    !dir.split('/').includes('..') && (request.mounts ?? []).some((m) => dir === m.target || dir.startsWith(`${m.target}/`));
  return paths.every(mounted) ? { module, paths: [...paths] } : null;
}
