/**
 * A PostgreSQL of a test's own (scripts/postgres-test.sh), which the test may stop and start again
 * on the same port: fault tests must not take the suite's shared server down under other files.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const SCRIPT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../scripts/postgres-test.sh');

export interface PrivatePostgres {
  url: string;
  stop(mode: 'immediate' | 'fast'): void;
  start(): void;
  /** SIGSTOP to the postmaster and every backend: connections stay open and nothing answers (a black hole). */
  pause(): void;
  /** SIGCONT to them again. */
  resume(): void;
  remove(): void;
}

/** The postmaster (first line of postmaster.pid) and its children. */
function postgresProcesses(dataDir: string): number[] {
  const postmaster = Number(readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
  const children: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === postmaster) children.push(Number(entry));
    } catch {
      // ended meanwhile
    }
  }
  return [postmaster, ...children];
}

export function startPrivatePostgres(): PrivatePostgres {
  const exports = execFileSync('bash', [SCRIPT, 'start'], {
    env: { ...process.env, MCPWORKS_TEST_PG_OWNER: String(process.pid) },
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  const value = (name: string) => new RegExp(`${name}='([^']*)'`).exec(exports)?.[1] ?? '';
  const url = value('MCPWORKS_TEST_DATABASE_URL');
  const dir = value('MCPWORKS_TEST_PG_DIR');
  if (!url || !dir) throw new Error('scripts/postgres-test.sh start printed no URL');
  const bin = readFileSync(path.join(dir, 'bindir'), 'utf8').trim();
  const port = readFileSync(path.join(dir, 'port'), 'utf8').trim();
  const asOwner = (args: string[]) =>
    process.getuid?.() === 0
      ? execFileSync('runuser', ['-u', 'postgres', '--', ...args], { stdio: 'ignore' })
      : execFileSync(args[0]!, args.slice(1), { stdio: 'ignore' });
  return {
    url,
    stop: (mode) => asOwner([`${bin}/pg_ctl`, '-D', `${dir}/data`, '-m', mode, '-w', '-t', '60', 'stop']),
    start: () =>
      asOwner([
        `${bin}/pg_ctl`,
        '-D',
        `${dir}/data`,
        '-l',
        `${dir}/run/server.log`,
        '-w',
        '-t',
        '60',
        '-o',
        `-c listen_addresses=127.0.0.1 -p ${port} -k ${dir}/run -c max_connections=200 -c fsync=off -c shared_buffers=32MB`,
        'start',
      ]),
    pause: () => {
      for (const pid of postgresProcesses(`${dir}/data`)) process.kill(pid, 'SIGSTOP');
    },
    resume: () => {
      for (const pid of postgresProcesses(`${dir}/data`)) process.kill(pid, 'SIGCONT');
    },
    remove: () => execFileSync('bash', [SCRIPT, 'stop', dir], { stdio: 'ignore' }),
  };
}
