/**
 * The sandbox instance's runtime directory on the host: the programs that run inside the sandbox,
 * compiled where that pays, a minimal /etc, and the mount points of a zygote's directories. Also
 * removes those of servers that ended without close().
 */
import { spawnSync } from 'node:child_process';
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { SandboxUnavailableError } from '../errors.js';
import type { HostPaths } from '../host.js';
import { INNER_ID } from '../plan/environment.js';

/** True when every directory from / down to `dir` lets other users pass (o+x). */
function searchableByOthers(dir: string): boolean {
  for (let current = resolve(dir); ; current = dirname(current)) {
    try {
      if ((statSync(current).mode & 0o001) === 0) return false;
    } catch {
      return false;
    }
    if (dirname(current) === current) return true;
  }
}

/** Where the runtime files go: the temp dir, unless the sandbox user could not reach it there. */
export function runtimeParent(dropsPrivileges: boolean): string {
  if (!dropsPrivileges || searchableByOthers(tmpdir())) return tmpdir();
  if (searchableByOthers('/tmp')) return '/tmp';
  throw new SandboxUnavailableError(`neither ${tmpdir()} nor /tmp can be reached by the sandbox user (chmod o+x)`);
}

/** In the runtime dir, outside what any sandbox mounts: the pid of the server that made it. */
const OWNER_FILE = 'owner';

/**
 * A private copy of the runner files and a minimal /etc, readable by the sandbox user (the source
 * tree or the data directory may not be).
 */
export function prepareRuntimeDir(paths: HostPaths, network: boolean, parent: string): string {
  // Directories of servers that ended without close(): their owner file names the pid, gone with
  // it. The pid is not in the name, which every run sees in /proc/self/mountinfo.
  for (const entry of readdirSync(parent)) {
    if (!entry.startsWith('mcpworks-sandbox-')) continue;
    let owner = /^mcpworks-sandbox-(\d+)-/.exec(entry)?.[1];
    try {
      owner ??= readFileSync(join(parent, entry, OWNER_FILE), 'utf8').trim();
    } catch {
      continue; // not ours, or still being made
    }
    if (/^\d+$/.test(owner) && !existsSync(`/proc/${owner}`)) rmSync(join(parent, entry), { recursive: true, force: true });
  }
  const dir = mkdtempSync(join(parent, 'mcpworks-sandbox-'));
  writeFileSync(join(dir, OWNER_FILE), `${process.pid}\n`, { mode: 0o600 });
  chmodSync(dir, 0o755);
  const bin = join(dir, 'bin');
  const etc = join(dir, 'etc');
  // Modes are set with chmod throughout: the server's umask must not hide these from the sandbox user.
  mkdirSync(bin);
  mkdirSync(etc);
  chmodSync(bin, 0o755);
  chmodSync(etc, 0o755);
  for (const file of ['runner.py', 'runner.cjs', 'zygote.py']) {
    copyFileSync(join(paths.runtimeSource, file), join(bin, file));
    chmodSync(join(bin, file), 0o644);
  }
  // The `mcpworks` module every run can import (its state calls need the run's bridge): Python's
  // from /sandbox/python, Node's from /sandbox/node_modules (runner.py and runner.cjs add them).
  const guest = join(paths.runtimeSource, 'mcpworks');
  const nodeModule = join(bin, 'node_modules', 'mcpworks');
  for (const made of [join(bin, 'python'), join(bin, 'node_modules'), nodeModule]) {
    mkdirSync(made);
    chmodSync(made, 0o755);
  }
  for (const [file, target] of [
    ['mcpworks.py', join(bin, 'python', 'mcpworks.py')],
    ['index.cjs', join(nodeModule, 'index.cjs')],
    ['index.mjs', join(nodeModule, 'index.mjs')],
    ['package.json', join(nodeModule, 'package.json')],
  ] as const) {
    copyFileSync(join(guest, file), target);
    chmodSync(target, 0o644);
  }
  // Each zygote child's set-up, loaded by zygote.py (a copy: the sandbox user may not reach .build).
  copyFileSync(paths.zygoteLibrary, join(bin, 'zygote-child.so'));
  chmodSync(join(bin, 'zygote-child.so'), 0o644);
  // P1's program: executable, not readable, by the sandbox user, so that the kernel makes every
  // P1 that runs it undumpable from its exec (a run cannot open its /proc files).
  if (paths.zygoteInit !== null) {
    copyFileSync(paths.zygoteInit, join(bin, 'zygote-init'));
    chmodSync(join(bin, 'zygote-init'), 0o711);
  }
  // Mount points of a zygote's cgroup and socket directories (empty in every other sandbox).
  for (const dir of ['zygote', 'zygote/cg-memory', 'zygote/cg-pids', 'zygote/sock']) {
    mkdirSync(join(bin, dir));
    chmodSync(join(bin, dir), 0o755);
  }
  // Compiling the runner costs each Python run ~3 ms; the same interpreter compiles it once here.
  const compiled = spawnSync(
    paths.python,
    [
      '-I',
      '-c',
      'import py_compile, sys; py_compile.compile(sys.argv[1], cfile=sys.argv[2], dfile="/sandbox/runner.py", doraise=True)',
      join(bin, 'runner.py'),
      join(bin, 'runner.pyc'),
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  if (compiled.status !== 0) throw new SandboxUnavailableError(`could not compile the Python runner: ${compiled.stderr.toString().trim()}`);
  chmodSync(join(bin, 'runner.pyc'), 0o644);
  // Bound over the masked /proc files.
  writeFileSync(join(bin, 'empty'), '');
  chmodSync(join(bin, 'empty'), 0o444);
  const files: Record<string, string> = {
    passwd: `root:x:0:0:root:/nonexistent:/usr/sbin/nologin\nsandbox:x:${INNER_ID}:${INNER_ID}:sandbox:/tmp:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n`,
    group: `root:x:0:\nsandbox:x:${INNER_ID}:\nnogroup:x:65534:\n`,
    hosts: '127.0.0.1 localhost sandbox\n::1 localhost ip6-localhost ip6-loopback\n',
    'nsswitch.conf': 'passwd: files\ngroup: files\nhosts: files dns\n',
    // slirp4netns's built-in DNS forwarder; unused without network.
    'resolv.conf': network ? 'nameserver 10.0.2.3\n' : '',
  };
  for (const [name, content] of Object.entries(files)) {
    writeFileSync(join(etc, name), content);
    chmodSync(join(etc, name), 0o644);
  }
  // Mount points for the host files bound over the read-only copy.
  for (const mountPoint of ['ssl', 'alternatives']) {
    mkdirSync(join(etc, mountPoint));
    chmodSync(join(etc, mountPoint), 0o755);
  }
  writeFileSync(join(etc, 'matplotlibrc'), '');
  chmodSync(join(etc, 'matplotlibrc'), 0o644);
  if (existsSync('/usr/share/zoneinfo/Etc/UTC')) symlinkSync('/usr/share/zoneinfo/Etc/UTC', join(etc, 'localtime'));
  return dir;
}
