/** Where a server's runs' CPU group is, for host tests that read it (escape suite, tenant-idle). */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

/** A process's group in the host's cpu hierarchy (v1 `cpu`, else the unified one), as a directory; null without one. */
export function cpuGroupOf(pid: number | 'self'): string | null {
  const lines = readFileSync(`/proc/${pid}/cgroup`, 'utf8');
  const v1 = /^\d+:(?:[^:]*,)?cpu(?:,[^:]*)?:(.*)$/m.exec(lines)?.[1];
  if (v1 !== undefined) return existsSync('/sys/fs/cgroup/cpu/cpu.shares') ? join('/sys/fs/cgroup/cpu', v1).replace(/\/$/, '') : null;
  const v2 = /^0::(.*)$/m.exec(lines)?.[1];
  const mount = existsSync('/sys/fs/cgroup/cgroup.controllers') ? '/sys/fs/cgroup' : '/sys/fs/cgroup/unified';
  return v2 === undefined ? null : join(mount, v2).replace(/\/$/, '');
}

/** Where this process's instance groups are made: its own cpu group, or on cgroup v2 the group its leaf is in. */
export function serverSide(): string | null {
  const own = cpuGroupOf('self');
  return own !== null && basename(own) === 'mcpworks-server' ? dirname(own) : own;
}

/** This process's sandbox instance's CPU group (its one live sandbox's), or null when it has none. */
export function instanceCpuGroup(): string | null {
  const server = serverSide();
  if (server === null || !existsSync(server)) return null;
  const name = readdirSync(server).find(
    (entry) => entry.startsWith('mcpworks-sandbox-instance-') && existsSync(join(server, entry, `owner-${process.pid}`)),
  );
  return name === undefined ? null : join(server, name);
}
