/**
 * bubblewrap's command lines, as data: the layout every sandbox shares and a zygote's. Pure: what
 * they depend on from the host (the runtime directory, the node binary, the /bin and /lib links,
 * the /proc entries to mask) is detected once and passed in as a SandboxLayout.
 */
import { posix } from 'node:path';
import type { SandboxMount } from '../../core/sandbox.js';
import { INNER_ID } from './environment.js';
import { MB } from '../../core/units.js';
import type { ZygoteSpec } from '../zygote/types.js';

/** /proc entries masked in every run (see host.ts, procMasks). */
export interface ProcMasks {
  /** Paths relative to /proc. */
  files: string[];
  dirs: string[];
}

/** What the bubblewrap arguments read from the host, detected once when the sandbox is made. */
export interface SandboxLayout {
  /** The private runtime directory (runner files under bin/, a minimal etc/). */
  runtimeDir: string;
  /** The real path of the node binary TypeScript runs with. */
  nodeBinary: string;
  network: boolean;
  masks: ProcMasks;
  /** Arguments recreating the host's top-level links into /usr, or binding the real directories (host.ts, topLevelSystemDirs). */
  systemDirs: readonly string[];
}

/** True when `path` lies inside `/usr` (already mounted read-only for every run). */
export function isUnderUsr(path: string): boolean {
  return posix.resolve(path).startsWith('/usr/');
}

export function baseBubblewrapArgs(layout: SandboxLayout): string[] {
  const { runtimeDir, nodeBinary, network, masks } = layout;
  const { join } = posix;
  const args = [
    '--unshare-user',
    '--unshare-pid',
    '--unshare-ipc',
    '--unshare-uts',
    '--unshare-cgroup-try',
    // --disable-userns nests a second user namespace, which slirp4netns would join and then lack
    // rights over the network namespace; with network on, seccomp alone (unshare, setns and
    // clone's namespace flags denied, clone3 unavailable) keeps user namespaces out of reach.
    '--unshare-net',
    ...(network ? [] : ['--disable-userns']),
    '--die-with-parent',
    '--new-session',
    '--cap-drop',
    'ALL',
    '--uid',
    String(INNER_ID),
    '--gid',
    String(INNER_ID),
    '--hostname',
    'sandbox',
    '--ro-bind',
    '/usr',
    '/usr',
    ...layout.systemDirs,
    '--ro-bind',
    join(runtimeDir, 'etc'),
    '/etc',
    '--ro-bind-try',
    '/etc/ssl',
    '/etc/ssl',
    // Debian's update-alternatives links (libblas for numpy, among others) resolve through here.
    '--ro-bind-try',
    '/etc/alternatives',
    '/etc/alternatives',
    '--ro-bind-try',
    '/etc/matplotlibrc',
    '/etc/matplotlibrc',
    '--ro-bind',
    join(runtimeDir, 'bin'),
    '/sandbox',
    '--proc',
    '/proc',
    // What /proc tells about the host: an empty read-only file or directory in its place.
    ...masks.files.flatMap((name) => ['--ro-bind', join(runtimeDir, 'bin', 'empty'), `/proc/${name}`]),
    ...masks.dirs.flatMap((name) => ['--size', '4096', '--perms', '0555', '--tmpfs', `/proc/${name}`, '--remount-ro', `/proc/${name}`]),
    // A hand-made /dev rather than --dev: --dev mounts devpts, which makes bubblewrap nest a second
    // user namespace that slirp4netns could not configure the network from. No ptys are needed.
    '--dir',
    '/dev',
    ...['null', 'zero', 'full', 'random', 'urandom'].flatMap((name) => ['--dev-bind', `/dev/${name}`, `/dev/${name}`]),
    // Sized: without a memory cgroup, tmpfs pages escape RLIMIT_AS.
    '--size',
    String(64 * MB),
    '--perms',
    '1777',
    '--tmpfs',
    '/dev/shm',
    '--symlink',
    '/proc/self/fd',
    '/dev/fd',
    '--symlink',
    '/proc/self/fd/0',
    '/dev/stdin',
    '--symlink',
    '/proc/self/fd/1',
    '/dev/stdout',
    '--symlink',
    '/proc/self/fd/2',
    '/dev/stderr',
    '--dir',
    '/function',
  ];
  if (!isUnderUsr(nodeBinary)) args.push('--ro-bind', nodeBinary, nodeBinary);
  return args;
}

/** Read-only binds of a request's mounts, parents before children so a mount inside another lands on top of it. */
export function mountArgs(mounts: readonly SandboxMount[]): string[] {
  return [...mounts].sort((a, b) => a.target.length - b.target.length).flatMap((mount) => ['--ro-bind', mount.source, mount.target]);
}

/** What a zygote's bubblewrap needs besides its spec: the host directories bound into it. */
export interface ZygoteDirs {
  /** Host directories of its cgroups, bound at /sandbox/zygote/cg-memory and cg-pids. */
  memoryDir: string;
  pidsDir: string;
  /** The host socket's directory, bound at /sandbox/zygote/sock. */
  socketDir: string;
}

/**
 * bubblewrap for a zygote: a run's layout, plus CAP_SYS_ADMIN inside its user namespace (to make
 * each child's namespaces), its cgroup and socket directories, and no seccomp of its own (each
 * child loads it).
 */
export function zygoteBubblewrapArgs(
  baseArgs: readonly string[],
  spec: { imports: readonly string[]; preload?: ZygoteSpec['preload']; config: { tmpfsBytes: number }; mounts: readonly SandboxMount[] },
  dirs: ZygoteDirs,
): string[] {
  // --disable-userns would put the zygote in a nested user namespace without rights over the
  // PID namespace its children must leave; seccomp keeps user namespaces from every run instead.
  // No cgroup namespace of its own: under cgroup v2's nsdelegate a child could not leave the
  // zygote's group for its run's, a sibling outside such a namespace. Each child makes its own,
  // rooted at its run's group, before anything of its run happens.
  const args = baseArgs.filter((arg) => arg !== '--disable-userns' && arg !== '--unshare-cgroup-try');
  args.push('--size', String(spec.config.tmpfsBytes), '--perms', '1777', '--tmpfs', '/tmp');
  args.push(...mountArgs(spec.mounts));
  // SYS_ADMIN for the child's namespaces and mounts, NET_ADMIN for its loopback, SETPCAP to
  // empty its bounding set; every child drops all three before anything of its run happens.
  args.push('--cap-add', 'CAP_SYS_ADMIN', '--cap-add', 'CAP_NET_ADMIN', '--cap-add', 'CAP_SETPCAP');
  args.push('--bind', dirs.memoryDir, '/sandbox/zygote/cg-memory', '--bind', dirs.pidsDir, '/sandbox/zygote/cg-pids');
  args.push('--ro-bind', dirs.socketDir, '/sandbox/zygote/sock');
  args.push('--remount-ro', '/', '--chdir', '/tmp', '--');
  args.push(
    '/usr/bin/python3',
    '-I',
    '-S',
    '-B',
    '/sandbox/zygote.py',
    JSON.stringify({ imports: spec.imports, preload: spec.preload ?? null, ...spec.config }),
  );
  return args;
}
