/**
 * Issue 18's peers, each in a process of its own (peer-server.ts), reached by the benches with the
 * official client over Streamable HTTP as our server is: (a) the SDK's server with a no-op tool,
 * (b) the same server spawning `python3 -c` per call, (c) the same server running the code in a
 * warm Pyodide.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const PEER_KINDS = ['noop', 'spawn', 'pyodide'] as const;
export type PeerKind = (typeof PEER_KINDS)[number];

export const PEER_LABEL: Record<PeerKind, string> = {
  noop: 'peer (a): SDK server, no-op tool',
  spawn: 'peer (b): SDK server, python3 -c per call',
  pyodide: 'peer (c): SDK server, warm Pyodide',
};

export interface Peer {
  kind: PeerKind;
  /** The MCP endpoint (any path: the peer serves MCP on every path). */
  url: string;
  pid: number;
  stop(): Promise<void>;
}

/** Starts a peer; rejects with its reason when it cannot start (e.g. Pyodide missing). */
export function startPeer(kind: PeerKind, timeoutMs = 120_000): Promise<Peer> {
  const entry = fileURLToPath(new URL('./peer-server.ts', import.meta.url));
  const child: ChildProcess = spawn(process.execPath, [...process.execArgv, entry, kind], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr = (stderr + chunk).slice(-2000)));
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await exited;
  };
  return new Promise((resolve, reject) => {
    let buffered = '';
    // Pyodide takes seconds to load on a busy machine; a peer that never answers is a failure.
    const timer = setTimeout(() => {
      void stop();
      reject(new Error(`${kind} peer not ready within ${timeoutMs / 1000} s`));
    }, timeoutMs);
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      buffered += chunk;
      const newline = buffered.indexOf('\n');
      if (newline < 0) return;
      clearTimeout(timer);
      const [word, ...rest] = buffered.slice(0, newline).split(' ');
      if (word === 'ready') resolve({ kind, url: `http://127.0.0.1:${rest[0]}/mcp`, pid: child.pid!, stop });
      else reject(new Error(`${kind} peer failed: ${rest.join(' ') || stderr.slice(-300)}`));
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      reject(new Error(`${kind} peer exited (${code}) before it was ready: ${stderr.slice(-300)}`));
    });
  });
}
