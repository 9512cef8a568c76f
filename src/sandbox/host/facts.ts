/**
 * What the sandbox must know of its host, all facts that do not change while the server runs:
 * detected once at start (detectSandboxHost, called by the composition root's detectHost) and
 * passed into createBubblewrapSandbox, so no module here probes the host at import time or per run.
 */
import { availableParallelism, totalmem } from 'node:os';
import { procMasks, topLevelSystemDirs, type ProcMasks } from '../host.js';
import { detectCgroupLayout, NO_CGROUPS, type CgroupLayout } from './cgroup.js';
import { detectNetworkTools, type NetworkTools } from './network.js';

export interface SandboxHostFacts {
  /** The server runs as root: sandbox users, cgroups, network set-up and zygotes need it. */
  isRoot: boolean;
  /** Where this process's cgroups are (only read as root, where they can be used). */
  cgroups: CgroupLayout;
  /** slirp4netns, nsenter and ip, and whether the kernel has IPv6 (the network-on set-up). */
  networkTools: NetworkTools;
  /** bubblewrap arguments recreating the host's top-level /bin, /lib, … links (topLevelSystemDirs). */
  systemDirs: string[];
  /** The /proc entries this kernel has that each run's /proc masks (procMasks). */
  procMasks: ProcMasks;
  /** The machine's memory: both pools keep memoryReserve(totalMemoryBytes) free, computed once. */
  totalMemoryBytes: number;
  /** CPUs this process may use: the most sandboxes the pool starts at once. */
  cpus: number;
}

export function detectSandboxHost(): SandboxHostFacts {
  const isRoot = process.getuid?.() === 0;
  return {
    isRoot,
    cgroups: isRoot ? detectCgroupLayout() : NO_CGROUPS,
    networkTools: detectNetworkTools(),
    systemDirs: topLevelSystemDirs(),
    procMasks: procMasks(),
    totalMemoryBytes: totalmem(),
    cpus: availableParallelism(),
  };
}
