/**
 * The `mcpworks` command line's commands: `main(argv)` runs one and returns its exit status
 * (src/cli/main.ts is the executable). A module of its own so that a test can run several
 * commands in one process (src/test-support/cli-command.ts, cliBatch).
 */
import { parseArgs } from 'node:util';
import { configFromEnv, parsePort } from '../app/config.js';
import { createLogger } from '../app/logger.js';
import { detectHost } from '../app/host-facts.js';
import { isDomainError, isPlatformError } from '../core/errors.js';
import { describeError } from '../store/database.js';

/** The operator commands' services, loaded only by the commands that open the data dir. */
const operator = () => import('./operator.js');

const HELP = `mcpworks — self-hostable code execution for AI assistants over MCP

Usage:
  mcpworks serve [--port N] [--host H] [--data-dir DIR]
      Serve HTTP + MCP. Env: PORT (8787), HOST (127.0.0.1), MCPWORKS_DATA_DIR (./data),
      DATABASE_URL (a real PostgreSQL; default: embedded PostgreSQL in the data dir),
      MCPWORKS_BASE_HOST (enables {ns}.create.{host} / {ns}.run.{host} routing), LOG_LEVEL.
  mcpworks account create --email E --password P [--tier T]
  mcpworks account set-tier --email E --tier T
  mcpworks account list
      One JSON line per account: id, email, tier, namespaces, live keys.
  mcpworks key create --email E [--name N] [--namespace NS] [--scopes read,write,execute] [--expires-in-days D]
      Prints only the raw API key on stdout.
  mcpworks key list --email E
      One JSON line per key of the account (prefix, scopes, last use; never the key).
  mcpworks key revoke --email E --id KEY_ID
  mcpworks sandbox run FILE [--language python|typescript] [--input JSON] [--env NAME=VALUE ...] [--tier T]
      Run a function file through the same sandbox the server uses; prints the result as JSON.
  mcpworks cluster [--nodes 3] [--port 8787] [--database-url URL]
      Try scale-out on this machine (\`make cluster\`): PostgreSQL from Debian's package in a temp dir
      (or URL), that many serve nodes on it, and a round-robin proxy on --port. Ctrl-C stops all.
  mcpworks --help

Operator commands use the same data dir (--data-dir / MCPWORKS_DATA_DIR) or DATABASE_URL as the
server. With the embedded database they refuse to run while a server holds the data dir.`;

function fail(message: string): number {
  process.stderr.write(`mcpworks: ${message}\n`);
  return 1;
}

async function serveCommand(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: { port: { type: 'string' }, host: { type: 'string' }, 'data-dir': { type: 'string' } },
    strict: true,
  });
  // The host and the environment, each read once; everything below is given them.
  const host = detectHost();
  const config = configFromEnv(process.env, host);
  if (values.port !== undefined) config.port = parsePort(values.port);
  if (values.host !== undefined) config.host = values.host;
  if (values['data-dir'] !== undefined) config.dataDir = values['data-dir'];
  const logger = createLogger(config.logLevel);
  // Loaded here: the server's modules cost a second of CPU that the operator commands do not need.
  const { startServer } = await import('../app/start-server.js');
  const server = await startServer(config, logger, host);
  const failure = await new Promise<string | undefined>((resolve) => {
    const stop = (signal: string) => {
      logger.info({ signal }, 'shutting down');
      server.close().then(
        () => resolve(undefined),
        () => resolve(undefined),
      );
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
    // The embedded database cannot be kept safe (see PGlitePool): stop cleanly, exit non-zero.
    void server.failed.then((message) =>
      server.close().then(
        () => resolve(message),
        () => resolve(message),
      ),
    );
  });
  return failure === undefined ? 0 : fail(failure);
}

async function accountCommand(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  const { values } = parseArgs({
    args: rest,
    options: { email: { type: 'string' }, password: { type: 'string' }, tier: { type: 'string' }, 'data-dir': { type: 'string' } },
    strict: true,
  });
  if (sub === 'create') {
    const password = values.password ?? process.env.MCPWORKS_PASSWORD;
    if (!values.email || !password) return fail('account create needs --email and --password (or MCPWORKS_PASSWORD)');
    return (await operator()).withOperatorServices(values['data-dir'], async ({ accounts }) => {
      const account = await accounts.register(values.email, password, values.tier);
      process.stdout.write(`${JSON.stringify({ account_id: account.id, email: account.email, tier: account.tier })}\n`);
      return 0;
    });
  }
  if (sub === 'set-tier') {
    if (!values.email || !values.tier) return fail('account set-tier needs --email and --tier');
    return (await operator()).withOperatorServices(values['data-dir'], async ({ accounts }) => {
      const account = await accounts.setTier(values.email, values.tier);
      process.stdout.write(`${JSON.stringify({ account_id: account.id, email: account.email, tier: account.tier })}\n`);
      return 0;
    });
  }
  if (sub === 'list') {
    return (await operator()).withOperatorServices(values['data-dir'], async ({ accountsStore }) => {
      for (const account of await accountsStore.listAccounts()) {
        const iso = (value: Date | null) => (value === null ? null : new Date(value).toISOString());
        const line = {
          account_id: account.id,
          email: account.email,
          tier: account.tier,
          trial_ends_at: iso(account.trial_ends_at),
          created_at: iso(account.created_at),
          namespaces: account.namespaces,
          keys: account.keys,
        };
        process.stdout.write(`${JSON.stringify(line)}\n`);
      }
      return 0;
    });
  }
  return fail(`unknown account command ${JSON.stringify(sub ?? '')}; see mcpworks --help`);
}

async function keyCommand(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  const { values } = parseArgs({
    args: rest,
    options: {
      email: { type: 'string' },
      name: { type: 'string' },
      namespace: { type: 'string' },
      scopes: { type: 'string' },
      'expires-in-days': { type: 'string' },
      id: { type: 'string' },
      'data-dir': { type: 'string' },
    },
    strict: true,
  });
  if (sub !== 'create' && sub !== 'list' && sub !== 'revoke')
    return fail(`unknown key command ${JSON.stringify(sub ?? '')}; see mcpworks --help`);
  if (!values.email) return fail(`key ${sub} needs --email`);
  if (sub === 'revoke' && !values.id) return fail('key revoke needs --id (the id `mcpworks key list` shows)');
  return (await operator()).withOperatorServices(values['data-dir'], async ({ accounts, accountsStore }) => {
    const account = await accountsStore.findAccountByEmail(values.email!.trim().toLowerCase());
    if (!account) return fail(`no account with email ${values.email}`);
    if (sub === 'list') {
      for (const key of await accounts.listKeys(account.id)) process.stdout.write(`${JSON.stringify(key)}\n`);
      return 0;
    }
    if (sub === 'revoke') {
      await accounts.revokeKey(account.id, values.id!);
      process.stdout.write(`${JSON.stringify({ revoked: values.id })}\n`);
      return 0;
    }
    const created = await accounts.createKey(account.id, {
      name: values.name,
      namespace: values.namespace,
      scopes: values.scopes?.split(',').map((s) => s.trim()),
      expires_in_days: values['expires-in-days'] === undefined ? undefined : Number(values['expires-in-days']),
    });
    process.stdout.write(`${created.key}\n`);
    return 0;
  });
}

async function sandboxCommand(args: string[]): Promise<number> {
  // Loaded on demand: serving never pays for the sandbox runner's start-up.
  const modulePath = './sandbox-command.js';
  const { runSandboxCommand } = (await import(modulePath)) as { runSandboxCommand: (args: string[]) => Promise<number> };
  return runSandboxCommand(args);
}

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case 'serve':
        return await serveCommand(rest);
      case 'account':
        return await accountCommand(rest);
      case 'key':
        return await keyCommand(rest);
      case 'cluster':
        return await (await import('./cluster-command.js')).runClusterCommand(rest);
      case 'sandbox':
        if (rest[0] !== 'run') return fail('usage: mcpworks sandbox run FILE [options]');
        return await sandboxCommand(rest.slice(1));
      case undefined:
      case '--help':
      case '-h':
      case 'help':
        process.stdout.write(`${HELP}\n`);
        return 0;
      default:
        return fail(`unknown command ${JSON.stringify(command)}; see mcpworks --help`);
    }
  } catch (error) {
    if (isDomainError(error)) return fail(`${error.type}: ${error.message}`);
    // A local failure (a held data dir, a bad setting, no sandbox): its message is for the operator.
    if (isPlatformError(error)) return fail(error.message);
    if (error instanceof Error && 'code' in error && String((error as { code: unknown }).code).startsWith('ERR_PARSE_ARGS'))
      return fail(error.message);
    // Every start-up error prints its message, whatever was thrown.
    return fail(describeError(error));
  }
}
