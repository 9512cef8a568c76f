/**
 * Load clients in a process of their own, so that their SDK work does not share (and inflate) the
 * server's event loop, as with real remote clients. Protocol on stdio: the child (load-client.ts)
 * connects C clients (each its own SDK client and session) and prints `ready`; on `go` each calls
 * the given tool back to back for S seconds, then the child prints one JSON line of results. The
 * key travels in the environment, not argv.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { ClientEra } from '../../src/test-support/harness.js';
import type { CallSpec } from './server.js';

export interface LoadResult {
  latencies: number[];
  errors: number;
  firstError?: string;
  /** CPU of the client process during the load, ms. */
  cpuMs: number;
  elapsedMs: number;
}

export interface LoadOptions {
  /** Several: client i connects to url[i % n] (bench/cluster: straight to each node). */
  url: string | string[];
  /** Empty for a server without keys (a peer). */
  key: string;
  /** The clients' protocol era (harness `connect`): v1 = 2025 with sessions, as Claude Code; v2 = 2026-07-28, stateless. */
  era: ClientEra;
  clients: number;
  seconds: number;
  call: CallSpec;
}

export interface LoadClients {
  /** The client process, so that a bench can leave it out of the server's CPU. */
  pid: number;
  /** Runs the load; resolves with its result while the process is still alive (it then closes its clients and exits). */
  go(): Promise<LoadResult>;
  /** Resolves once the process has exited. */
  exited(): Promise<void>;
}

/** Starts the client process and resolves once its clients are connected; `go()` runs the load. */
export async function startLoadClients(options: LoadOptions): Promise<LoadClients> {
  const entry = fileURLToPath(new URL('./load-client.ts', import.meta.url));
  const child = spawn(process.execPath, [...process.execArgv, entry], {
    env: {
      ...process.env,
      MCPWORKS_BENCH_KEY: options.key,
      MCPWORKS_BENCH_LOAD: JSON.stringify({
        url: options.url,
        era: options.era,
        clients: options.clients,
        seconds: options.seconds,
        call: options.call,
      }),
    },
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const lines: string[] = [];
  let buffered = '';
  let waiting: (() => void) | undefined;
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    buffered += chunk;
    for (let newline = buffered.indexOf('\n'); newline >= 0; newline = buffered.indexOf('\n')) {
      lines.push(buffered.slice(0, newline));
      buffered = buffered.slice(newline + 1);
    }
    waiting?.();
  });
  const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
  const nextLine = async (): Promise<string> => {
    while (lines.length === 0) {
      const more = new Promise<void>((resolve) => (waiting = resolve));
      const code = await Promise.race([more.then(() => undefined), exited]);
      if (code !== undefined && lines.length === 0) throw new Error(`load client process exited (${code}) early`);
    }
    return lines.shift()!;
  };
  if ((await nextLine()) !== 'ready') throw new Error('load client process did not get ready');
  return {
    pid: child.pid!,
    async go() {
      child.stdin.end('go\n');
      return JSON.parse(await nextLine()) as LoadResult;
    },
    async exited() {
      await exited;
    },
  };
}
