/**
 * Network egress for MCPWORKS_SANDBOX_NETWORK=on. The run still gets its own network namespace;
 * slirp4netns gives it a user-mode NAT to the outside (host loopback disabled), and "prohibit"
 * routes inside the namespace refuse the host's own addresses (so the server's listening ports),
 * link-local (cloud metadata, 169.254.169.254) and private ranges. bubblewrap waits on --block-fd
 * until this is in place, so the function never runs with a half-configured network.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { networkInterfaces } from 'node:os';

export interface NetworkAttachment {
  close(): void;
}

const SLIRP = '/usr/bin/slirp4netns';
const NSENTER = '/usr/bin/nsenter';
const IP = ['/usr/sbin/ip', '/usr/bin/ip', '/sbin/ip'].find((candidate) => existsSync(candidate)) ?? '/usr/sbin/ip';

/** Refused destinations besides the host's own addresses. 10.0.2.0/24 is slirp's own net (DNS at .3). */
const REFUSED_RANGES = ['169.254.0.0/16', '10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '100.64.0.0/10', '10.0.2.2/32'];

export function networkAvailable(): boolean {
  return existsSync(SLIRP) && existsSync(NSENTER) && existsSync(IP) && process.getuid?.() === 0;
}

function hostAddresses(): string[] {
  const found: string[] = [];
  for (const entries of Object.values(networkInterfaces())) {
    for (const entry of entries ?? []) {
      if (entry.family === 'IPv4' && !entry.internal) found.push(`${entry.address}/32`);
    }
  }
  return found;
}

function readInfo(stream: NodeJS.ReadableStream): Promise<number> {
  return new Promise((resolve, reject) => {
    let text = '';
    const onData = (chunk: Buffer) => {
      text += chunk.toString('utf8');
      const match = /"child-pid"\s*:\s*(\d+)/.exec(text);
      if (match) {
        stream.off('data', onData);
        resolve(Number(match[1]));
      }
    };
    stream.on('data', onData);
    stream.once('end', () => reject(new Error('bubblewrap exited before reporting its pid')));
  });
}

function runQuiet(command: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`${command} ${args.join(' ')}: ${stderr.trim()}`))));
  });
}

/**
 * Gives the sandbox started as `child` (spawned with bubblewrap's --info-fd 5 --block-fd 6) its
 * network, then releases it.
 */
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitFor(condition: () => boolean, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      if (condition()) return;
    } catch {
      // not there yet
    }
    if (Date.now() > deadline) throw new Error('the sandbox did not become ready');
    await sleep(1);
  }
}

/** slirp4netns attached to the namespace of `pid`, resolved once it reports the tap device ready. */
function startSlirp(pid: number): Promise<ChildProcess> {
  const slirp = spawn(SLIRP, ['--configure', '--mtu=65520', '--disable-host-loopback', `--userns-path=/proc/${pid}/ns/user`, '--ready-fd=3', String(pid), 'tap0'], {
    stdio: ['ignore', 'ignore', 'pipe', 'pipe'],
  });
  let errors = '';
  slirp.stderr!.on('data', (chunk: Buffer) => {
    if (errors.length < 4000) errors += chunk.toString('utf8');
  });
  return new Promise((resolve, reject) => {
    (slirp.stdio[3] as NodeJS.ReadableStream).once('data', () => resolve(slirp));
    slirp.once('error', reject);
    slirp.once('exit', () => reject(new Error(`slirp4netns exited during set-up: ${errors.trim()}`)));
  });
}

export async function attachNetwork(child: ChildProcess): Promise<NetworkAttachment> {
  if (!networkAvailable()) throw new Error('network=on needs root, slirp4netns, nsenter and ip');
  const streams = child.stdio as unknown as Array<NodeJS.ReadableStream & NodeJS.WritableStream>;
  const pid = await readInfo(streams[5]);
  // bubblewrap reports the pid before it has written the namespace's uid map; joining earlier fails.
  await waitFor(() => readFileSync(`/proc/${pid}/uid_map`, 'utf8').trim().length > 0, 2000);
  let slirp: ChildProcess | null = null;
  const attachment = {
    close: () => {
      if (slirp && slirp.exitCode === null) slirp.kill('SIGKILL');
    },
  };
  try {
    for (let attempt = 1; ; attempt++) {
      try {
        slirp = await startSlirp(pid);
        break;
      } catch (error) {
        if (attempt >= 3) throw error;
        await sleep(10 * attempt);
      }
    }
    const target = String(pid);
    for (const range of [...REFUSED_RANGES, ...hostAddresses()]) {
      await runQuiet(NSENTER, ['-t', target, '-n', IP, 'route', 'add', 'prohibit', range]);
    }
    streams[6].end('1');
    return attachment;
  } catch (error) {
    attachment.close();
    throw error;
  }
}
