/**
 * What this host is, detected once at start by the composition root and passed down: whether the
 * server runs as root (sandbox users, the cache dir, its OOM score) and the host's users (which the
 * sandbox uid range must not take in). The sandbox detects its own tools and cgroups when it opens.
 */
import { hostPasswd } from '../sandbox/uid-range.js';

export interface HostFacts {
  isRoot: boolean;
  /** The text of /etc/passwd. */
  passwd: string;
}

export function detectHost(): HostFacts {
  return { isRoot: process.getuid?.() === 0, passwd: hostPasswd() };
}
