/**
 * TypeScript `requirements` are npm packages installed once, when a function version is created,
 * into a directory named by the hash of what was asked for (content-addressed: equal requirement
 * lists share one install). Runs then mount it read-only as the function's node_modules.
 * Install scripts never run: they would execute package code on the host, outside any sandbox.
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';

export type DependencyInstallErrorReason = 'invalid_requirement' | 'install_failed' | 'cache_unreadable';

export class DependencyInstallError extends Error {
  readonly reason: DependencyInstallErrorReason;
  /** npm's own explanation (its error lines), for the make/update response. */
  readonly detail: string;

  constructor(reason: DependencyInstallErrorReason, message: string, detail = '') {
    super(message);
    this.name = 'DependencyInstallError';
    this.reason = reason;
    this.detail = detail;
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
  /** Give up after this long (default 5 minutes). */
  timeoutMs?: number;
}

const NAME = /^(@[a-z0-9][a-z0-9._~-]*\/)?[a-z0-9][a-z0-9._~-]*$/;
/** Registry versions, ranges and dist-tags only: no git, file, URL or alias specs. */
const SPEC = /^[A-Za-z0-9.^~<>=*|+ x-]+$/;
const COMPLETE_MARKER = '.mcpworks-complete';
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
    throw new DependencyInstallError('invalid_requirement', `'${trimmed.slice(0, 100)}': only registry versions, ranges and tags are allowed`);
  }
  return { name, spec };
}

/** The cache key: the normalised requirement list and the Node major version that will run it. */
export function dependencyKey(requirements: readonly string[]): string {
  const normalised = requirements.map(parseRequirement).map((r) => `${r.name}@${r.spec}`);
  const unique = [...new Set(normalised)].sort();
  const nodeMajor = process.versions.node.split('.')[0];
  return createHash('sha256').update(JSON.stringify({ requirements: unique, node: nodeMajor })).digest('hex').slice(0, 32);
}

/**
 * Installs `requirements` (npm specs like `zod`, `lodash@^4`, `@scope/pkg@1.2.3`) under
 * `cacheRoot`, or reuses an earlier identical install. Throws DependencyInstallError with npm's
 * reason on failure, leaving nothing behind. Every directory from / to cacheRoot must be
 * searchable by the sandbox user (o+x), since runs bind the result read-only.
 */
export async function prepareTypescriptDependencies(
  requirements: readonly string[],
  cacheRoot: string,
  options: PrepareOptions = {},
): Promise<PreparedDependencies> {
  const parsed = requirements.map(parseRequirement);
  const key = dependencyKey(requirements);
  if (parsed.length === 0) return { dir: null, key };
  const root = resolve(cacheRoot);
  const installs = join(root, 'ts-deps');
  const final = join(installs, key);
  const modules = join(final, 'node_modules');
  if (existsSync(join(final, COMPLETE_MARKER))) return { dir: modules, key };

  assertSearchableByOthers(root);
  mkdirSync(installs, { recursive: true, mode: 0o755 });
  chmodSync(installs, 0o755);
  const staging = join(installs, `.staging-${key}-${randomBytes(4).toString('hex')}`);
  mkdirSync(staging, { mode: 0o755 });
  try {
    const dependencies: Record<string, string> = {};
    for (const requirement of parsed) dependencies[requirement.name] = requirement.spec;
    writeFileSync(join(staging, 'package.json'), JSON.stringify({ name: 'mcpworks-function-dependencies', private: true, dependencies }, null, 2));
    await runNpm(options.npm ?? 'npm', staging, join(root, 'npm-cache'), options.timeoutMs ?? 5 * 60_000);
    if (!existsSync(join(staging, 'node_modules'))) mkdirSync(join(staging, 'node_modules'), { mode: 0o755 });
    // Whatever the server's umask, the sandbox user must be able to read what runs import.
    makeReadableByOthers(staging);
    writeFileSync(join(staging, COMPLETE_MARKER), new Date().toISOString());
    try {
      renameSync(staging, final);
    } catch (error) {
      // Another build of the same list finished first: its result is identical, keep it.
      if (!existsSync(join(final, COMPLETE_MARKER))) throw error;
      rmSync(staging, { recursive: true, force: true });
    }
    return { dir: modules, key };
  } catch (error) {
    rmSync(staging, { recursive: true, force: true });
    throw error;
  }
}

function makeReadableByOthers(dir: string): void {
  chmodSync(dir, statSync(dir).mode | 0o755);
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) makeReadableByOthers(path);
    else if (entry.isFile()) {
      const mode = statSync(path).mode;
      // Executable for others only where it was executable for the owner (bin scripts).
      chmodSync(path, mode | 0o444 | (mode & 0o100 ? 0o011 : 0));
    }
  }
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

/** The environment npm needs and nothing else of the server's (secrets stay out of npm's reach). */
function npmEnvironment(cache: string): Record<string, string> {
  const env: Record<string, string> = { npm_config_cache: cache };
  for (const [name, value] of Object.entries(process.env)) {
    if (value === undefined) continue;
    if (['PATH', 'HOME', 'LANG', 'HTTP_PROXY', 'HTTPS_PROXY', 'NO_PROXY', 'http_proxy', 'https_proxy', 'no_proxy'].includes(name)) env[name] = value;
    else if (/^npm_config_(registry|strict_ssl|cafile|proxy|https_proxy|noproxy)$/i.test(name)) env[name] = value;
  }
  return env;
}

function runNpm(npm: string, cwd: string, cache: string, timeoutMs: number): Promise<void> {
  const args = ['install', '--ignore-scripts', '--omit=dev', '--no-audit', '--no-fund', '--no-update-notifier', '--loglevel=error', '--prefer-offline'];
  return new Promise((resolvePromise, reject) => {
    const child = spawn(npm, args, { cwd, env: npmEnvironment(cache), stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    const collect = (chunk: Buffer) => {
      if (output.length < 64 * 1024) output += chunk.toString('utf8');
    };
    child.stdout.on('data', collect);
    child.stderr.on('data', collect);
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (error) => {
      clearTimeout(timer);
      reject(new DependencyInstallError('install_failed', `npm could not start: ${error.message}`));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) return resolvePromise();
      const reason = npmReason(output, cwd) || (signal ? `npm was stopped (${signal}) after ${timeoutMs} ms` : `npm exited with status ${code}`);
      const lines = reason.split('\n');
      const errorCode = /^code (\S+)/.exec(lines[0] ?? '')?.[1];
      const summary = lines.find((line) => !/^code \S+$/.test(line) && !/^\S+$/.test(line)) ?? lines[0];
      reject(new DependencyInstallError('install_failed', `npm install failed${errorCode ? ` (${errorCode})` : ''}: ${summary}`, reason));
    });
  });
}

/** npm's error lines without the log-file pointers that name host paths. */
function npmReason(output: string, cwd: string): string {
  const lines = output
    .split('\n')
    .map((line) => line.replace(/^npm (error|ERR!)\s?/, '').trimEnd())
    .filter((line) => line.length > 0 && !/A complete log of this run|verbose|\/_logs\//.test(line))
    .map((line) => line.split(cwd).join('.'));
  return lines.join('\n').slice(0, DETAIL_CAP);
}
