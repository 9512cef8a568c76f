/**
 * How tests start the real `mcpworks` command line as a child process: node's arguments before the
 * command's own. The build (dist/cli/main.js) when it is current for every source file, else the
 * source through tsx, so a test never runs stale code. `make test` builds first; starting from the
 * build costs about half the CPU of tsx, and the suite starts the command some fifty times.
 */
import { readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
let cached: string[] | undefined;

/**
 * `[...cliCommand(), 'serve', '--port', '0']` as the arguments of `spawn(process.execPath, …)`.
 * --liftoff-only: V8's baseline code for the embedded database's WebAssembly, as the test pool runs
 * the test files (see LIFTOFF_ONLY in scripts/test-pool.mjs): the optimising recompiles cost a
 * short-lived command or server more CPU than they save; the results are the same.
 */
export function cliCommand(): string[] {
  cached ??= buildIsCurrent()
    ? ['--liftoff-only', path.join(repoRoot, 'dist', 'cli', 'main.js')]
    : ['--liftoff-only', '--import', 'tsx', path.join(repoRoot, 'src', 'cli', 'main.ts')];
  return cached;
}

/** Every .ts the build compiles (tsconfig: src/**, not tests or test-support) has a newer .js in dist/. */
function buildIsCurrent(): boolean {
  if (process.env.MCPWORKS_TEST_FROM_SOURCE === '1') return false;
  const walk = (dir: string): boolean => {
    for (const entry of readdirSync(path.join(repoRoot, 'src', dir), { withFileTypes: true })) {
      const relative = path.join(dir, entry.name);
      if (entry.isDirectory()) {
        if (entry.name !== 'test-support' && !walk(relative)) return false;
      } else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.test.ts') && !entry.name.endsWith('.d.ts')) {
        try {
          const built = path.join(repoRoot, 'dist', relative.replace(/\.ts$/, '.js'));
          if (statSync(built).mtimeMs < statSync(path.join(repoRoot, 'src', relative)).mtimeMs) return false;
        } catch {
          return false;
        }
      }
    }
    return true;
  };
  return walk('.');
}
