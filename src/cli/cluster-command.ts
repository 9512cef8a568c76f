/**
 * `mcpworks cluster` (`make cluster`): several `serve` nodes on one PostgreSQL behind a round-robin
 * proxy, on this machine, to try scale-out. PostgreSQL comes from Debian's package, in a temp dir on
 * a loopback port (scripts/postgres-test.sh, the test suite's way); each node gets a data dir, a
 * port and a sandbox uid range of its own, and all share the database and the server secret.
 * SIGINT/SIGTERM stop the proxy, then the nodes (gracefully), then PostgreSQL, and remove the dir.
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { startProxy, type RunningProxy } from './cluster-proxy.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
/** dist/cli or src/cli: the repository is two levels up either way. */
const REPO = path.resolve(HERE, '../..');
const POSTGRES_SCRIPT = path.join(REPO, 'scripts', 'postgres-test.sh');
/** This command's own temp dirs: a later run finds those of a launcher that was killed by them. */
const DIR_PREFIX = 'mcpworks-cluster.';
/** The sandbox uids `serve` uses by default (MCPWORKS_SANDBOX_UIDS), split between the nodes. */
const DEFAULT_UIDS = { first: 2_000_000_000, count: 65_536 };
const START_TIMEOUT_MS = 180_000;

interface Node {
  index: number;
  url: string;
  dataDir: string;
  child: ChildProcess;
  exited: Promise<number | null>;
}

const say = (line: string) => process.stdout.write(`${line}\n`);
const warn = (line: string) => process.stderr.write(`mcpworks cluster: ${line}\n`);

/** A free loopback port (the OS's pick, released for its new owner to take). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => resolve(port));
    });
  });
}

function run(file: string, args: string[], env: NodeJS.ProcessEnv): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { env, encoding: 'utf8' }, (error, stdout, stderr) => {
      if (error) reject(new Error(`${path.basename(args[0] ?? file)} ${args[1] ?? ''}: ${stderr.trim() || error.message}`));
      else resolve(stdout);
    });
  });
}

/** The node's arguments to node: the build beside this file, or the source through tsx. */
function serveArgs(): string[] {
  const main = path.join(HERE, 'main.js');
  if (existsSync(main)) return [main];
  return ['--import', 'tsx', path.join(HERE, 'main.ts')];
}

/**
 * A launcher killed by SIGKILL left its nodes running: they are found by the pids recorded in its
 * dir (checked against their command line, which names the dir) and killed. Its PostgreSQL is the
 * script's to clean (its owner pid is dead).
 */
function removeStaleClusters(): void {
  for (const name of readdirSync(tmpdir())) {
    if (!name.startsWith(DIR_PREFIX)) continue;
    const dir = path.join(tmpdir(), name);
    let owner = 0;
    try {
      owner = Number(readFileSync(path.join(dir, 'owner.pid'), 'utf8'));
    } catch {
      continue;
    }
    if (owner && alive(owner)) continue;
    for (const entry of readdirSync(dir)) {
      const pidFile = path.join(dir, entry, 'node.pid');
      if (!existsSync(pidFile)) continue;
      const pid = Number(readFileSync(pidFile, 'utf8'));
      try {
        if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(dir)) process.kill(-pid, 'SIGKILL');
      } catch {
        // gone already
      }
    }
    // Its PostgreSQL, by the dir it recorded (the script's own stale check trusts the same dead pid).
    const postgres = path.join(dir, 'postgres.dir');
    if (existsSync(postgres)) {
      try {
        execFileSync('bash', [POSTGRES_SCRIPT, 'stop', readFileSync(postgres, 'utf8').trim()], { stdio: 'ignore' });
      } catch {
        warn(`could not stop the PostgreSQL in ${readFileSync(postgres, 'utf8').trim()}`);
      }
    }
    warn(`removed ${dir}, left by a launcher that is gone`);
    rmSync(dir, { recursive: true, force: true });
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  // A killed launcher not reaped yet is a zombie: it answers signal 0 but is gone.
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

async function waitHealthy(node: Node, output: () => string): Promise<void> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  let exited = false;
  void node.exited.then(() => (exited = true));
  while (Date.now() < deadline) {
    if (exited) throw new Error(`node ${node.index + 1} exited at start:\n${output().slice(-2000)}`);
    try {
      // As the proxy would: the nodes trust loopback as a proxy and want the client named.
      const answer = await fetch(`${node.url}/healthz`, { headers: { 'x-forwarded-for': '127.0.0.1' }, signal: AbortSignal.timeout(2000) });
      if (answer.ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  throw new Error(`node ${node.index + 1} did not answer /healthz within ${START_TIMEOUT_MS / 1000} s:\n${output().slice(-2000)}`);
}

function startNode(index: number, count: number, dir: string, port: number, env: NodeJS.ProcessEnv): { node: Node; output: () => string } {
  const dataDir = path.join(dir, `node-${index + 1}`);
  mkdirSync(dataDir, { recursive: true });
  const share = Math.floor(DEFAULT_UIDS.count / count);
  const uids = `${DEFAULT_UIDS.first + index * share}-${DEFAULT_UIDS.first + (index + 1) * share - 1}`;
  // V8's baseline code only, when this launcher runs so (the tests): see src/test-support/cli-command.ts.
  const flags = process.execArgv.includes('--liftoff-only') ? ['--liftoff-only'] : [];
  const child = spawn(
    process.execPath,
    [...flags, ...serveArgs(), 'serve', '--port', String(port), '--host', '127.0.0.1', '--data-dir', dataDir],
    {
      cwd: REPO,
      // Sandboxes of two nodes on one host never share a uid: each node its own slice of the range.
      env: { ...env, ...(env.MCPWORKS_SANDBOX_UIDS ? {} : { MCPWORKS_SANDBOX_UIDS: uids }) },
      stdio: ['ignore', 'pipe', 'pipe'],
      // A group of its own: a Ctrl-C reaches only this launcher, which stops the nodes in order.
      detached: true,
    },
  );
  writeFileSync(path.join(dataDir, 'node.pid'), String(child.pid));
  let tail = '';
  const prefix = `[node ${index + 1}] `;
  const relay = (chunk: Buffer) => {
    const text = chunk.toString('utf8');
    tail = (tail + text).slice(-8000);
    process.stderr.write(
      text
        .split('\n')
        .filter((l) => l.length > 0)
        .map((l) => `${prefix}${l}\n`)
        .join(''),
    );
  };
  child.stdout!.on('data', relay);
  child.stderr!.on('data', relay);
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { node: { index, url: `http://127.0.0.1:${port}`, dataDir, child, exited }, output: () => tail };
}

export async function runClusterCommand(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      nodes: { type: 'string', default: '3' },
      port: { type: 'string', default: process.env.PORT ?? '8787' },
      'database-url': { type: 'string' },
    },
    strict: true,
  });
  const count = Number(values.nodes);
  if (!Number.isInteger(count) || count < 1 || count > 16)
    throw new Error(`--nodes must be a whole number from 1 to 16, not ${values.nodes}`);
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`--port must be a port number, not ${values.port}`);

  removeStaleClusters();
  const dir = mkdtempSync(path.join(tmpdir(), DIR_PREFIX));
  writeFileSync(path.join(dir, 'owner.pid'), String(process.pid));
  const nodes: Node[] = [];
  let proxy: RunningProxy | undefined;
  let postgresDir: string | undefined;
  let stopping: Promise<void> | undefined;
  let forced = false;
  let stopped!: () => void;
  const done = new Promise<void>((resolve) => (stopped = resolve));

  const stop = (): Promise<void> =>
    (stopping ??= (async () => {
      await proxy?.close().catch(() => undefined);
      // SIGTERM: each node answers its calls in progress (MCPWORKS_SHUTDOWN_GRACE_MS) and exits 0.
      for (const n of nodes) if (n.child.exitCode === null) signalGroup(n, 'SIGTERM');
      const grace = Number(process.env.MCPWORKS_SHUTDOWN_GRACE_MS ?? 5000) + 15_000;
      const late = setTimeout(() => nodes.forEach((n) => signalGroup(n, 'SIGKILL')), grace);
      await Promise.all(nodes.map((n) => n.exited));
      clearTimeout(late);
      if (postgresDir) await run('bash', [POSTGRES_SCRIPT, 'stop', postgresDir], process.env).catch((e) => warn(String(e)));
      rmSync(dir, { recursive: true, force: true });
      stopped();
    })());
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping && !forced) {
      // A second Ctrl-C: no more grace.
      forced = true;
      warn(`${signal} again: killing the nodes`);
      nodes.forEach((n) => signalGroup(n, 'SIGKILL'));
      return;
    }
    warn(`${signal}: stopping the proxy, the nodes, then PostgreSQL`);
    void stop();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  try {
    let databaseUrl = values['database-url'];
    if (!databaseUrl) {
      const exports = await run('bash', [POSTGRES_SCRIPT, 'start'], { ...process.env, MCPWORKS_TEST_PG_OWNER: String(process.pid) });
      const value = (name: string) => new RegExp(`${name}='([^']*)'`).exec(exports)?.[1];
      databaseUrl = value('MCPWORKS_TEST_DATABASE_URL');
      postgresDir = value('MCPWORKS_TEST_PG_DIR');
      if (!databaseUrl || !postgresDir) throw new Error('scripts/postgres-test.sh start printed no database URL');
      writeFileSync(path.join(dir, 'postgres.dir'), postgresDir);
    }
    // The URL as operator commands need it (DATABASE_URL=… mcpworks account set-tier …), never a password.
    const shown = new URL(databaseUrl);
    if (shown.password) shown.password = '***';
    say(`mcpworks cluster: PostgreSQL ${shown.toString()}${postgresDir ? ` (${postgresDir})` : ''}`);
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      DATABASE_URL: databaseUrl,
      MCPWORKS_SECRET_KEY: process.env.MCPWORKS_SECRET_KEY ?? randomBytes(32).toString('hex'),
      // The proxy is on loopback: the nodes take its X-Forwarded-For as the client's address.
      MCPWORKS_TRUSTED_PROXIES: process.env.MCPWORKS_TRUSTED_PROXIES ?? '127.0.0.1',
      LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn',
    };
    for (const name of ['PORT', 'HOST', 'MCPWORKS_DATA_DIR']) delete env[name];
    const started: Array<{ node: Node; output: () => string }> = [];
    for (let i = 0; i < count; i++) {
      const s = startNode(i, count, dir, await freePort(), env);
      nodes.push(s.node);
      started.push(s);
    }
    // In parallel: each node migrates (an advisory lock serialises that) and starts its sandboxes.
    await Promise.all(started.map((s) => waitHealthy(s.node, s.output)));
    if (stopping) {
      await done;
      return 130;
    }
    // As a supervisor would (systemd Restart=on-failure): a node that dies is started again on its
    // port and data dir, and rejoins; one that died 3 times within a minute is left down.
    const deaths: number[][] = nodes.map(() => []);
    const supervise = (n: Node) =>
      void n.exited.then(async (code) => {
        if (stopping) return;
        const now = Date.now();
        deaths[n.index] = [...deaths[n.index]!.filter((t) => t > now - 60_000), now];
        const again = deaths[n.index]!.length <= 3;
        warn(
          `node ${n.index + 1} (pid ${n.child.pid}) exited (${code ?? 'killed'}); the proxy passes it over` +
            (again ? '; starting it again in 1 s' : '; it died 3 times within a minute: left down'),
        );
        if (!again) return;
        await new Promise((resolve) => setTimeout(resolve, 1000));
        if (stopping) return;
        const s = startNode(n.index, count, dir, Number(new URL(n.url).port), env);
        nodes[n.index] = s.node;
        supervise(s.node);
        try {
          await waitHealthy(s.node, s.output);
          warn(`node ${n.index + 1} restarted: ${s.node.url} (pid ${s.node.child.pid})`);
        } catch (error) {
          if (!stopping) warn(error instanceof Error ? error.message : String(error));
        }
      });
    for (const n of nodes) {
      say(`mcpworks cluster: node ${n.index + 1} ${n.url} (pid ${n.child.pid}, data dir ${n.dataDir})`);
      supervise(n);
    }
    proxy = await startProxy({ targets: nodes.map((n) => n.url), host: '127.0.0.1', port, log: warn });
    say(`mcpworks cluster: proxy ${proxy.url} (round-robin over ${count} nodes)`);
    say('');
    say('Register and make a key through the proxy (see the README Quick start), then put this in .mcp.json:');
    say(
      JSON.stringify(
        {
          mcpServers: {
            'myns-create': { type: 'http', url: `${proxy.url}/mcp/create/myns`, headers: { Authorization: 'Bearer ${MCPWORKS_API_KEY}' } },
            'myns-run': { type: 'http', url: `${proxy.url}/mcp/run/myns`, headers: { Authorization: 'Bearer ${MCPWORKS_API_KEY}' } },
          },
        },
        null,
        2,
      ),
    );
    say('Ctrl-C stops the proxy, the nodes and PostgreSQL, and removes their files.');
    await done;
    return 0;
  } catch (error) {
    // A signal during the start: the nodes it stopped fail their start; that is no error.
    if (stopping) {
      await done;
      return 130;
    }
    warn(error instanceof Error ? error.message : String(error));
    await stop();
    return 1;
  }
}

function signalGroup(node: Node, signal: NodeJS.Signals): void {
  try {
    process.kill(-node.child.pid!, signal);
  } catch {
    // the group is gone
  }
}
