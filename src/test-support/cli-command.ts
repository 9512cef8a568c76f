/**
 * How tests start the real `mcpworks` command line as a child process: node's arguments before the
 * command's own. The build (dist/cli/main.js) when it is current for every source file, else the
 * source through tsx, so a test never runs stale code. `make test` builds first; starting from the
 * build costs about half the CPU of tsx, and the suite starts the command some fifty times.
 */
import { spawn } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

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

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs several commands one after the other in one child process, through the command line's own
 * `main` (src/cli/commands.ts): what each wrote to stdout and stderr and the status it returned.
 * A process per command costs ~0.5 s of CPU to start and ~0.4 s more to open the embedded
 * database the first time; checks of many refusals need neither. Tests that the process itself
 * exits with the status, and what a whole run prints, start the real command (cliCommand).
 */
export function cliBatch(cases: string[][], env: NodeJS.ProcessEnv): Promise<CliResult[]> {
  const current = cliCommand()[1]!.endsWith('main.js');
  const module = current ? path.join(repoRoot, 'dist', 'cli', 'commands.js') : path.join(repoRoot, 'src', 'cli', 'commands.ts');
  // Each command's writes are collected (the patched writes are the only way `main` prints); the
  // results go out on the real stdout as one JSON line at the end.
  const program = `
const { main } = await import(${JSON.stringify(pathToFileURL(module).href)});
const write = { out: process.stdout.write, err: process.stderr.write };
const results = [];
for (const args of JSON.parse(process.env.MCPWORKS_CLI_BATCH)) {
  const result = { code: null, stdout: '', stderr: '' };
  process.stdout.write = (chunk) => ((result.stdout += chunk), true);
  process.stderr.write = (chunk) => ((result.stderr += chunk), true);
  try {
    result.code = await main(args);
  } catch (error) {
    result.stderr += 'thrown: ' + String(error?.stack ?? error);
  } finally {
    process.stdout.write = write.out;
    process.stderr.write = write.err;
  }
  results.push(result);
}
process.stdout.write(JSON.stringify(results) + '\\n');
`;
  const args = ['--liftoff-only', ...(current ? [] : ['--import', 'tsx']), '--input-type=module', '-e', program];
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, {
      cwd: repoRoot,
      env: { ...process.env, LOG_LEVEL: 'warn', ...env, MCPWORKS_CLI_BATCH: JSON.stringify(cases) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => {
      const last = stdout.trim().split('\n').pop() ?? '';
      if (code !== 0 || !last.startsWith('[')) reject(new Error(`the command batch failed (exit ${code}):\n${stdout}\n${stderr}`));
      else resolve(JSON.parse(last) as CliResult[]);
    });
  });
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
