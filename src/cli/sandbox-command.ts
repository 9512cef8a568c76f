/**
 * `mcpworks sandbox run FILE`: runs a function file through exactly the sandbox the server uses,
 * so users can test locally before uploading. The result goes to stdout as JSON, the function's
 * logs to stderr; a typed failure prints {"error": message, "error_type": T} and exits 1.
 */
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { extname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { isDomainError, isPlatformError, PlatformError } from '../core/errors.js';
import { validateEnvName } from '../core/env-names.js';
import { isSandboxLanguage, sandboxLimitsFor, type SandboxLanguage } from '../core/sandbox.js';
import { DEFAULT_TIER, isKnownTier, limitsFor, tierNames } from '../core/tiers.js';
import { sandboxFromEnv } from '../app/config.js';
import {
  createBubblewrapSandbox,
  DependencyInstallError,
  npmPassThrough,
  prepareTypescriptDependencies,
  SandboxUnavailableError,
  sandboxUidsFromEnvironment,
} from '../sandbox/index.js';

export interface SandboxCommandIo {
  stdout: { write(text: string): unknown };
  stderr: { write(text: string): unknown };
  /** Where `--env NAME` (without a value) reads NAME from, and the sandbox's and npm's settings, as `serve` reads them. */
  env: NodeJS.ProcessEnv;
}

const USAGE = `usage: mcpworks sandbox run FILE [--language python|typescript] [--input JSON|@FILE]
         [--env NAME=VALUE | --env NAME ...] [--requirement NPM_SPEC ...] [--tier T]
  --env NAME without a value takes NAME's value from your environment (keeps secrets out of argv).
  --requirement installs npm packages for a TypeScript function, as the server does at build time.`;

/** Bad arguments: the command prints the message and its usage, and exits 2. */
class UsageError extends PlatformError {
  constructor(message: string) {
    super('cli_usage', message);
  }
}

function languageOf(file: string, given: string | undefined): SandboxLanguage {
  if (given !== undefined) {
    if (!isSandboxLanguage(given)) throw new UsageError(`--language must be python or typescript, not '${given}'`);
    return given;
  }
  const extension = extname(file).toLowerCase();
  if (extension === '.py') return 'python';
  if (['.ts', '.mts', '.cts', '.js', '.cjs', '.mjs'].includes(extension)) return 'typescript';
  throw new UsageError(`cannot tell the language of '${file}': pass --language python|typescript`);
}

function parseInput(text: string | undefined): unknown {
  if (text === undefined) return {};
  const source = text.startsWith('@') ? readFileSync(text.slice(1), 'utf8') : text;
  try {
    return JSON.parse(source);
  } catch (error) {
    throw new UsageError(`--input is not JSON: ${(error as Error).message}`);
  }
}

function parseEnv(entries: string[], callerEnv: NodeJS.ProcessEnv): Record<string, string> {
  const env: Record<string, string> = {};
  for (const entry of entries) {
    const equals = entry.indexOf('=');
    const name = equals === -1 ? entry : entry.slice(0, equals);
    validateEnvName(name, '--env');
    const value = equals === -1 ? callerEnv[name] : entry.slice(equals + 1);
    if (value === undefined) throw new UsageError(`--env ${name}: ${name} is not set in your environment`);
    env[name] = value;
  }
  return env;
}

export async function runSandboxCommand(
  args: string[],
  io: SandboxCommandIo = { stdout: process.stdout, stderr: process.stderr, env: process.env },
): Promise<number> {
  let request;
  let requirements: string[];
  try {
    const { values, positionals } = parseArgs({
      args,
      allowPositionals: true,
      strict: true,
      options: {
        language: { type: 'string' },
        input: { type: 'string' },
        env: { type: 'string', multiple: true },
        requirement: { type: 'string', multiple: true },
        tier: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
    if (values.help) {
      io.stdout.write(`${USAGE}\n`);
      return 0;
    }
    if (positionals.length !== 1) throw new UsageError('give exactly one FILE');
    const file = positionals[0];
    const tier = values.tier ?? DEFAULT_TIER;
    if (!isKnownTier(tier)) throw new UsageError(`unknown tier '${tier}' (one of ${tierNames().join(', ')})`);
    const language = languageOf(file, values.language);
    requirements = values.requirement ?? [];
    if (requirements.length > 0 && language !== 'typescript') {
      throw new UsageError('--requirement is for TypeScript; Python packages come from the allow-list');
    }
    let code: string;
    try {
      code = readFileSync(file, 'utf8');
    } catch (error) {
      throw new UsageError(`cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
    }
    request = {
      code,
      language,
      input: parseInput(values.input),
      env: parseEnv(values.env ?? [], io.env),
      limits: sandboxLimitsFor(limitsFor(tier)),
    };
  } catch (error) {
    if (isPlatformError(error, 'cli_usage') || isDomainError(error) || (error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      io.stderr.write(`mcpworks sandbox: ${(error as Error).message}\n${USAGE}\n`);
      return 2;
    }
    throw error;
  }

  let nodeModulesDir: string | undefined;
  if (requirements.length > 0) {
    try {
      nodeModulesDir =
        (
          await prepareTypescriptDependencies(requirements, join(tmpdir(), 'mcpworks-cli-dependencies'), {
            environment: npmPassThrough(io.env),
            ...(io.env.PATH ? { searchPath: io.env.PATH } : {}),
          })
        ).dir ?? undefined;
    } catch (error) {
      if (!(error instanceof DependencyInstallError)) throw error;
      io.stdout.write(`${JSON.stringify({ error: error.message, error_type: 'DependencyInstallError' })}\n`);
      if (error.data.detail) io.stderr.write(`${error.data.detail}\n`);
      return 1;
    }
  }

  let sandbox;
  try {
    // One run: pre-starting launchers, or a spawner process (it spares a large server's event
    // loop, not this small process), would only cost time.
    sandbox = createBubblewrapSandbox({ ...sandboxSettings(io.env), launcherPool: 0, pool: false, spawner: false });
  } catch (error) {
    if (!(error instanceof SandboxUnavailableError)) throw error;
    io.stderr.write(`mcpworks sandbox: ${error.message}\n`);
    return 2;
  }
  try {
    const outcome = await sandbox.run({ ...request, nodeModulesDir });
    // The function's logs go to stderr so stdout stays parseable JSON.
    if (outcome.stdout) io.stderr.write(outcome.stdout.endsWith('\n') ? outcome.stdout : `${outcome.stdout}\n`);
    if (outcome.ok) {
      if (outcome.stderr) io.stderr.write(outcome.stderr.endsWith('\n') ? outcome.stderr : `${outcome.stderr}\n`);
      io.stdout.write(`${JSON.stringify(outcome.result)}\n`);
      return 0;
    }
    if (outcome.error.stderr) io.stderr.write(outcome.error.stderr.endsWith('\n') ? outcome.error.stderr : `${outcome.error.stderr}\n`);
    io.stdout.write(`${JSON.stringify({ error: outcome.error.message, error_type: outcome.error.type })}\n`);
    return 1;
  } finally {
    await sandbox.close();
  }
}

/** The sandbox's switches from the caller's environment, as `serve` reads them; a bad one makes the sandbox unavailable. */
function sandboxSettings(env: NodeJS.ProcessEnv) {
  try {
    return {
      ...sandboxFromEnv(env),
      ...(process.getuid?.() === 0 ? { sandboxUids: sandboxUidsFromEnvironment(env.MCPWORKS_SANDBOX_UIDS) } : {}),
    };
  } catch (error) {
    throw error instanceof SandboxUnavailableError ? error : new SandboxUnavailableError((error as Error).message);
  }
}
