/**
 * What the sandbox's Python really has: the interpreter's version and the installed version of each
 * allow-listed Debian package, for list_packages. Read once per process (a cache: the packages change
 * only when an operator upgrades the host, and a restart picks that up).
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { PYTHON_PACKAGES } from '../core/python-packages-data.js';

const run = promisify(execFile);

export interface PythonInventory {
  /** e.g. "3.11.2"; null where the interpreter could not be asked. */
  python: string | null;
  /** Upstream version by Debian package name (e.g. python3-pandas → "1.5.3"); absent when not installed. */
  versions: ReadonlyMap<string, string>;
}

/** The upstream part of a Debian version: no epoch ("1:"), Debian revision ("-2") or repack tag ("+dfsg"). */
export function upstreamVersion(debian: string): string {
  let version = debian.replace(/^\d+:/, '');
  const dash = version.lastIndexOf('-');
  if (dash > 0) version = version.slice(0, dash);
  return version.replace(/[+~](dfsg|ds|repack)\d*.*$/i, '');
}

async function pythonVersion(python: string): Promise<string | null> {
  try {
    const { stdout } = await run(python, ['-I', '-S', '-c', 'import sys; print("%d.%d.%d" % sys.version_info[:3])'], {
      timeout: 10_000,
      env: {},
    });
    return /^\d+\.\d+\.\d+$/.test(stdout.trim()) ? stdout.trim() : null;
  } catch {
    return null;
  }
}

async function debianVersions(): Promise<Map<string, string>> {
  const names = [...new Set(PYTHON_PACKAGES.flatMap((pkg) => (pkg.debianPackage ? [pkg.debianPackage] : [])))];
  const versions = new Map<string, string>();
  let stdout = '';
  try {
    ({ stdout } = await run('dpkg-query', ['-W', '-f=${Package}\t${Status}\t${Version}\n', ...names], {
      timeout: 10_000,
      env: { PATH: '/usr/bin:/bin' },
    }));
  } catch (error) {
    // dpkg-query exits 1 when some name is unknown, with the others still on stdout; elsewhere
    // (no dpkg: not Debian) every version stays unknown.
    stdout = (error as { stdout?: string }).stdout ?? '';
  }
  for (const line of stdout.split('\n')) {
    const [name, status, version] = line.split('\t');
    if (name && version && status?.endsWith('install ok installed')) versions.set(name.replace(/:.*$/, ''), upstreamVersion(version));
  }
  return versions;
}

let cached: Promise<PythonInventory> | undefined;

export function pythonInventory(python = '/usr/bin/python3'): Promise<PythonInventory> {
  cached ??= Promise.all([pythonVersion(python), debianVersions()]).then(([version, versions]) => ({ python: version, versions }));
  return cached;
}
