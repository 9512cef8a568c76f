/**
 * A run's read-only mounts from host directories (code mode's `functions` package, a TypeScript
 * function's node_modules) are made from a hard-linked mirror under the sandbox's runtime
 * directory: /proc/self/mountinfo names the source path of every bind mount, and the mirror's path
 * (a random name) tells nothing of the server's data or cache directories. Linking shares the
 * files (no copy) and is done once per source directory (as identified by its inode and times);
 * across filesystems the files are copied.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, copyFileSync, linkSync, lstatSync, mkdirSync, readdirSync, readlinkSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';

/** Mirrors kept; beyond this, ones not handed out for RETAIN_MS go (none a run could still use). */
const MAX_VIEWS = 256;
/** Longer than any run and any wait of a pre-started sandbox or zygote for a claim. */
const RETAIN_MS = 60 * 60_000;

interface View {
  dir: string;
  lastUsed: number;
}

export class MountViews {
  private readonly views = new Map<string, View>();

  constructor(private readonly root: string) {
    mkdirSync(root, { recursive: true, mode: 0o755 });
    chmodSync(root, 0o755);
  }

  /** The mirror of `source` to mount in its place (made now if there is none for its current state). */
  viewOf(source: string): string {
    const key = `${source}\0${identity(source)}`;
    const known = this.views.get(key);
    const now = Date.now();
    if (known) {
      known.lastUsed = now;
      // Most recently used last.
      this.views.delete(key);
      this.views.set(key, known);
      return known.dir;
    }
    this.prune(now);
    const dir = join(this.root, randomBytes(9).toString('base64url'));
    try {
      mirror(source, dir);
    } catch (error) {
      rmSync(dir, { recursive: true, force: true });
      throw error;
    }
    this.views.set(key, { dir, lastUsed: now });
    return dir;
  }

  private prune(now: number): void {
    for (const [key, view] of this.views) {
      if (this.views.size < MAX_VIEWS) return;
      if (now - view.lastUsed < RETAIN_MS) return; // oldest first: the rest are newer
      this.views.delete(key);
      rmSync(view.dir, { recursive: true, force: true });
    }
  }
}

function identity(path: string): string {
  const stat = statSync(path, { bigint: true });
  // Not ctime: marking a package used (utimes) changes it on every run, and a new mirror per run
  // would also be a new zygote and pool shape per run. What is mirrored is immutable once made.
  return `${stat.dev}:${stat.ino}:${stat.birthtimeNs}`;
}

/** Recreates the tree at `source` under `target`: directories made, files linked, symlinks copied. */
function mirror(source: string, target: string): void {
  const stat = statSync(source);
  if (!stat.isDirectory()) throw new Error(`${source} is not a directory`);
  mkdirSync(target);
  chmodSync(target, stat.mode & 0o7777);
  for (const entry of readdirSync(source, { withFileTypes: true })) {
    const from = join(source, entry.name);
    const to = join(target, entry.name);
    if (entry.isDirectory()) {
      mirror(from, to);
    } else if (entry.isSymbolicLink()) {
      symlinkSync(readlinkSync(from), to);
    } else if (entry.isFile()) {
      try {
        linkSync(from, to);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EXDEV') throw error;
        copyFileSync(from, to);
        chmodSync(to, lstatSync(from).mode & 0o7777);
      }
    }
    // Sockets, fifos and devices are left out: a package holds none.
  }
}
