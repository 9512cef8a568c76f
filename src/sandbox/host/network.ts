/**
 * Network egress for MCPWORKS_SANDBOX_NETWORK=on. The run still gets its own network namespace;
 * slirp4netns gives it a user-mode NAT to the outside (host loopback disabled), and "prohibit"
 * routes inside the namespace refuse every network the host is directly connected to (each
 * address and prefix of each interface: the server's ports, its neighbours, its gateway) and every
 * special-purpose range, IPv4 and IPv6 (loopback, link-local with cloud metadata at
 * 169.254.169.254, private, CGNAT, multicast, reserved, benchmarking, documentation, NAT64, 6to4).
 * A refused destination fails at connect() (EACCES) before any packet leaves the namespace.
 * bubblewrap waits on --block-fd until this is in place, so the function never runs with a
 * half-configured network.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { isIPv4 } from 'node:net';
import { networkInterfaces } from 'node:os';

export interface NetworkAttachment {
  close(): void;
}

const SLIRP = '/usr/bin/slirp4netns';
const NSENTER = '/usr/bin/nsenter';
const IP_CANDIDATES = ['/usr/sbin/ip', '/usr/bin/ip', '/sbin/ip'];

/** The network set-up's tools on this host, found once at start (detectNetworkTools, a host fact passed down). */
export interface NetworkTools {
  /** slirp4netns, nsenter and ip; null when one of them is missing. */
  paths: { slirp: string; nsenter: string; ip: string } | null;
  /** The kernel has IPv6: only then are IPv6 routes refused and IPv6 turned off on the run's link. */
  ipv6: boolean;
}

export function detectNetworkTools(): NetworkTools {
  const ip = IP_CANDIDATES.find((candidate) => existsSync(candidate));
  return {
    paths: existsSync(SLIRP) && existsSync(NSENTER) && ip !== undefined ? { slirp: SLIRP, nsenter: NSENTER, ip } : null,
    // Without IPv6 in the kernel there is no IPv6 route to refuse (nor to add).
    ipv6: existsSync('/proc/net/if_inet6'),
  };
}

/**
 * Special-purpose ranges (IANA's IPv4 and IPv6 special-purpose registries, less the globally
 * reachable ones). 10.0.2.0/24 is slirp's own net: its connected route is more specific than
 * 10.0.0.0/8, so its DNS forwarder (10.0.2.3) stays reachable, and its gateway (10.0.2.2, the host)
 * is refused by a route of its own.
 */
export const REFUSED_RANGES: readonly string[] = [
  '0.0.0.0/8',
  '10.0.0.0/8',
  '100.64.0.0/10',
  '127.0.0.0/8',
  '169.254.0.0/16',
  '172.16.0.0/12',
  '192.0.0.0/24',
  '192.0.2.0/24',
  '192.88.99.0/24',
  '192.168.0.0/16',
  '198.18.0.0/15',
  '198.51.100.0/24',
  '203.0.113.0/24',
  '224.0.0.0/4',
  '240.0.0.0/4',
  '10.0.2.2/32',
  '::/128',
  '::1/128',
  '::ffff:0:0/96',
  '64:ff9b::/96',
  '64:ff9b:1::/48',
  '100::/64',
  '2001::/23',
  '2001:db8::/32',
  '2002::/16',
  '3fff::/20',
  '5f00::/16',
  'fc00::/7',
  'fe80::/10',
  'ff00::/8',
];
/** slirp4netns's own network inside the namespace: a route for it exists already. */
const SLIRP_NETWORK = '10.0.2.0/24';
/** The tap device's MTU: the largest slirp4netns takes, which its manual recommends for throughput. */
const SLIRP_MTU = 65520;
/** Starts of slirp4netns tried before the run's set-up fails, 10 ms, then 20 ms apart. */
const SLIRP_ATTEMPTS = 3;
const SLIRP_RETRY_STEP_MS = 10;
/** Characters of slirp4netns's stderr kept for the set-up failure's message. */
const SLIRP_ERRORS_CAP = 4000;
/** How long bubblewrap may take, after reporting its pid, to write the namespace's uid map. */
const UID_MAP_WAIT_MS = 2000;
/** How often the uid map is looked at meanwhile. */
const UID_MAP_POLL_MS = 1;

/** Whether runs can get a network on this host (the facts detected at start): root and the three tools. */
export function networkAvailable(host: { isRoot: boolean; networkTools: NetworkTools }): boolean {
  return host.isRoot && host.networkTools.paths !== null;
}

/** The network of `address/length` (host bits cleared), as ip(8) accepts it. */
export function networkOf(address: string, length: number): string {
  if (isIPv4(address)) {
    const value = address.split('.').reduce((sum, part) => sum * 256 + Number(part), 0);
    const masked = length === 0 ? 0 : (value & (~0 << (32 - length))) >>> 0;
    return `${[24, 16, 8, 0].map((shift) => (masked >>> shift) & 255).join('.')}/${length}`;
  }
  const value = ipv6Value(address);
  const mask = length === 0 ? 0n : ((1n << 128n) - 1n) ^ ((1n << BigInt(128 - length)) - 1n);
  const masked = value & mask;
  const groups = Array.from({ length: 8 }, (_, index) => ((masked >> BigInt(112 - 16 * index)) & 0xffffn).toString(16));
  return `${groups.join(':')}/${length}`;
}

function ipv6Value(address: string): bigint {
  const plain = address.split('%')[0]!;
  const [head, tail] = plain.includes('::') ? plain.split('::') : [plain, undefined];
  const parse = (part: string | undefined) =>
    (part ? part.split(':') : []).flatMap((group) => {
      if (!group.includes('.')) return [group];
      const [a, b, c, d] = group.split('.').map(Number) as [number, number, number, number];
      return [((a << 8) | b).toString(16), ((c << 8) | d).toString(16)];
    });
  const first = parse(head);
  const last = tail === undefined ? [] : parse(tail);
  const groups = tail === undefined ? first : [...first, ...Array(8 - first.length - last.length).fill('0'), ...last];
  return groups.reduce((sum, group) => (sum << 16n) | BigInt(parseInt(group, 16)), 0n);
}

/** Every network the host is directly connected to, and each of its own addresses. */
export function hostNetworks(): string[] {
  const found: string[] = [];
  for (const entries of Object.values(networkInterfaces())) {
    for (const entry of entries ?? []) {
      if (entry.internal) continue;
      const bits = entry.family === 'IPv4' ? 32 : 128;
      const length = Number(entry.cidr?.split('/')[1] ?? bits);
      found.push(networkOf(entry.address, length), networkOf(entry.address, bits));
    }
  }
  return found;
}

/** The prohibit routes a run's namespace gets: each prefix once, never slirp's own network. */
export function refusedRoutes(): string[] {
  const normal = (prefix: string) => {
    const [address, length] = prefix.split('/') as [string, string];
    return networkOf(address, Number(length));
  };
  return [...new Set([...REFUSED_RANGES, ...hostNetworks()].map(normal))].filter((prefix) => prefix !== SLIRP_NETWORK);
}

/** Where an IPv4 prefix starts and how many addresses it holds, as numbers. */
function ipv4Span(prefix: string): [number, number] {
  const [address, length] = prefix.split('/') as [string, string];
  const start = networkOf(address, Number(length))
    .split('/')[0]!
    .split('.')
    .reduce((sum, part) => sum * 256 + Number(part), 0);
  return [start, 2 ** (32 - Number(length))];
}

/** Never open to a run, whatever the operator allows: loopback, link-local, slirp's gateway (the host). */
const NEVER_ALLOWED = ['0.0.0.0/8', '127.0.0.0/8', '169.254.0.0/16', '10.0.2.0/24', '224.0.0.0/4', '240.0.0.0/4'];

/**
 * MCPWORKS_SANDBOX_NETWORK_ALLOW: IPv4 prefixes in refused ranges that the operator opens to runs
 * (an internal package mirror or API on a private network, say), routed past the prohibit routes by
 * being more specific. A prefix that overlaps loopback, link-local, slirp's gateway or any network
 * this host is connected to (the server's own ports) is refused, so the server stays unreachable.
 */
export function allowedRoutes(value: string | undefined): string[] {
  const entries = (value ?? '')
    .split(',')
    .map((entry) => entry.trim())
    .filter(Boolean);
  const forbidden = [...NEVER_ALLOWED, ...hostNetworks().filter((prefix) => !prefix.includes(':'))].map(ipv4Span);
  return entries.map((entry) => {
    const [address, length = '32'] = entry.split('/') as [string, string | undefined];
    if (!isIPv4(address) || !/^\d{1,2}$/.test(length) || Number(length) < 8 || Number(length) > 32) {
      throw new Error(`MCPWORKS_SANDBOX_NETWORK_ALLOW: ${JSON.stringify(entry)} is not an IPv4 address or prefix of /8 to /32`);
    }
    const prefix = networkOf(address, Number(length));
    const [start, size] = ipv4Span(prefix);
    if (forbidden.some(([from, count]) => start < from + count && from < start + size)) {
      throw new Error(
        `MCPWORKS_SANDBOX_NETWORK_ALLOW: ${prefix} overlaps loopback, link-local, the sandbox gateway or a network of this host, which runs may never reach`,
      );
    }
    return prefix;
  });
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

function runQuiet(command: string, args: string[], input = ''): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['pipe', 'ignore', 'pipe'] });
    child.stdin!.on('error', () => {});
    child.stdin!.end(input);
    let stderr = '';
    child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`${command} ${args.join(' ')}: ${stderr.trim()}`))));
  });
}

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
    await sleep(UID_MAP_POLL_MS);
  }
}

/** slirp4netns attached to the namespace of `pid`, resolved once it reports the tap device ready. */
function startSlirp(slirpPath: string, pid: number): Promise<ChildProcess> {
  const slirp = spawn(
    slirpPath,
    [
      '--configure',
      `--mtu=${SLIRP_MTU}`,
      '--disable-host-loopback',
      `--userns-path=/proc/${pid}/ns/user`,
      '--ready-fd=3',
      String(pid),
      'tap0',
    ],
    {
      stdio: ['ignore', 'ignore', 'pipe', 'pipe'],
    },
  );
  let errors = '';
  slirp.stderr!.on('data', (chunk: Buffer) => {
    if (errors.length < SLIRP_ERRORS_CAP) errors += chunk.toString('utf8');
  });
  return new Promise((resolve, reject) => {
    (slirp.stdio[3] as NodeJS.ReadableStream).once('data', () => resolve(slirp));
    slirp.once('error', reject);
    slirp.once('exit', () => reject(new Error(`slirp4netns exited during set-up: ${errors.trim()}`)));
  });
}

/**
 * Gives the sandbox started as `child` (spawned with bubblewrap's --info-fd 5 --block-fd 6) its
 * network, then releases it.
 */
export async function attachNetwork(child: ChildProcess, allowed: readonly string[], tools: NetworkTools): Promise<NetworkAttachment> {
  // Checked once at start (createBubblewrapSandbox refuses network=on without them).
  const { paths, ipv6 } = tools;
  if (paths === null) throw new Error('network=on needs root, slirp4netns, nsenter and ip');
  const streams = child.stdio as unknown as Array<NodeJS.ReadableStream & NodeJS.WritableStream>;
  const pid = await readInfo(streams[5]);
  // bubblewrap reports the pid before it has written the namespace's uid map; joining earlier fails.
  await waitFor(() => readFileSync(`/proc/${pid}/uid_map`, 'utf8').trim().length > 0, UID_MAP_WAIT_MS);
  let slirp: ChildProcess | null = null;
  const attachment = {
    close: () => {
      if (slirp && slirp.exitCode === null) slirp.kill('SIGKILL');
    },
  };
  try {
    for (let attempt = 1; ; attempt++) {
      try {
        slirp = await startSlirp(paths.slirp, pid);
        break;
      } catch (error) {
        if (attempt >= SLIRP_ATTEMPTS) throw error;
        await sleep(SLIRP_RETRY_STEP_MS * attempt);
      }
    }
    // slirp4netns gives no IPv6 (no --enable-ipv6); with IPv6 off on its link, no IPv6 packet can
    // leave (IPv6 multicast, say, follows the local table to an interface, past any prohibit route).
    // Then one ip process adds every route; it stops at the first that fails, and so does the set-up.
    const routes =
      refusedRoutes()
        .filter((prefix) => ipv6 || !prefix.includes(':'))
        .map((prefix) => `route add prohibit ${prefix}\n`)
        .join('') + allowed.map((prefix) => `route add ${prefix} via 10.0.2.2 dev tap0 onlink\n`).join('');
    const script = `${ipv6 ? 'echo 1 > /proc/sys/net/ipv6/conf/tap0/disable_ipv6 && ' : ''}exec "$0" -batch -`;
    await runQuiet(paths.nsenter, ['-t', String(pid), '-n', '/bin/sh', '-c', script, paths.ip], routes);
    streams[6].end('1');
    return attachment;
  } catch (error) {
    attachment.close();
    throw error;
  }
}
