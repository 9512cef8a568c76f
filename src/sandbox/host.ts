/**
 * Where the sandbox's pieces live on this host: bubblewrap, the helper and seccomp program built by
 * scripts/setup.d/sandbox.sh, the interpreters, and the in-sandbox runner files.
 */
import { existsSync, lstatSync, readlinkSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository (or installed package) root: the nearest directory above us with package.json. */
export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    const parent = dirname(dir);
    if (parent === dir) throw new Error('mcpworks package root not found');
    dir = parent;
  }
}

export interface HostPaths {
  bwrap: string;
  helper: string;
  seccompProgram: string;
  python: string;
  node: string;
  /** Directory holding runner.py and runner.cjs (the source tree's, since tsc copies no .py). */
  runtimeSource: string;
}

export function defaultHostPaths(): HostPaths {
  const root = packageRoot();
  return {
    bwrap: '/usr/bin/bwrap',
    helper: join(root, '.build', 'mcpworks-sandbox-helper'),
    seccompProgram: join(root, '.build', 'seccomp.bpf'),
    python: '/usr/bin/python3',
    node: process.execPath,
    runtimeSource: join(root, 'src', 'sandbox', 'runtime'),
  };
}

/**
 * bubblewrap arguments that recreate the host's top-level links into /usr (merged /usr: /bin → usr/bin)
 * or bind the real directories on hosts without merged /usr.
 */
export function topLevelSystemDirs(): string[] {
  const args: string[] = [];
  for (const name of ['/bin', '/sbin', '/lib', '/lib32', '/lib64', '/libx32']) {
    let stat;
    try {
      stat = lstatSync(name);
    } catch {
      continue;
    }
    if (stat.isSymbolicLink()) args.push('--symlink', readlinkSync(name), name);
    else if (stat.isDirectory()) args.push('--ro-bind', name, name);
  }
  return args;
}

/** True when `path` lies inside `/usr` (already mounted read-only for every run). */
export function isUnderUsr(path: string): boolean {
  return resolve(path).startsWith('/usr/');
}
