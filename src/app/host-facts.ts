/**
 * What this host is, detected once at start by the composition root and passed down: whether the
 * server runs as root (sandbox users, the cache dir, its OOM score), the host's users (which the
 * sandbox uid range must not take in) and the sandbox's own host facts (cgroup layout, network
 * tools, /proc masks, system dir links; see sandbox/host/facts.ts), handed to the sandbox and npm.
 */
import { detectSandboxHost, type SandboxHostFacts } from '../sandbox/index.js';
import { hostPasswd } from '../sandbox/uid-range.js';

export interface HostFacts {
  isRoot: boolean;
  /** The text of /etc/passwd. */
  passwd: string;
  /** What the sandbox and npm builds need to know of the host. */
  sandbox: SandboxHostFacts;
}

export function detectHost(): HostFacts {
  const sandbox = detectSandboxHost();
  return { isRoot: sandbox.isRoot, passwd: hostPasswd(), sandbox };
}
