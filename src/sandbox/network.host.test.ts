// MCPWORKS_SANDBOX_NETWORK=on: public addresses have a route, while the host's networks, cloud
// metadata and every special-purpose range stay refused. Nothing here sends a packet beyond
// loopback: a refused connect() fails on the namespace's own routes, and a UDP connect() only asks
// them. (On this test machine the npm registry resolves into 203.0.113.0/24, a documentation
// range, so real egress cannot be shown without traffic to a non-loopback address.)
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:net';
import { networkInterfaces } from 'node:os';
import { after, before, describe, it } from 'node:test';
import { sandboxLimitsFor, type Sandbox } from '../core/sandbox.js';
import { limitsFor } from '../core/tiers.js';
import { sandboxFromEnv } from '../app/config.js';
import { createBubblewrapSandbox } from './bubblewrap.js';
import { allowedRoutes, hostNetworks, networkAvailable, networkOf, REFUSED_RANGES, refusedRoutes } from './host/network.js';
import { detectSandboxHost } from './host/facts.js';

const pro = sandboxLimitsFor(limitsFor('pro'));
let sandbox: Sandbox;
let server: Server;
let port: number;

before(async () => {
  sandbox = createBubblewrapSandbox({ network: true });
  server = createServer((socket) => socket.end('server secret\n'));
  await new Promise<void>((resolve) => server.listen(0, '0.0.0.0', resolve));
  port = (server.address() as { port: number }).port;
});
after(async () => {
  await sandbox.close();
  await new Promise((resolve) => server.close(resolve));
});

const probe = `
import errno, socket
def attempt(host, port):
    try:
        with socket.create_connection((host, port), timeout=5):
            return "connected"
    except OSError as error:
        return errno.errorcode.get(error.errno, str(error))
result = {f"{h}:{p}": attempt(h, p) for h, p in input_data["targets"]}
`;

describe('network on', { skip: !networkAvailable(detectSandboxHost()) && 'needs root, slirp4netns, nsenter and ip' }, () => {
  it("not the host's ports, its loopback, metadata or private ranges; the run's own loopback answers", async () => {
    const hostAddresses = Object.values(networkInterfaces())
      .flat()
      .filter((entry) => entry && entry.family === 'IPv4' && !entry.internal)
      .map((entry) => entry!.address);
    const targets: Array<[string, number]> = [
      ['127.0.0.1', port],
      ['10.0.2.2', port],
      ['169.254.169.254', 80],
      ['192.168.0.1', 80],
      ...hostAddresses.map((address): [string, number] => [address, port]),
    ];
    const outcome = await sandbox.run({ language: 'python', code: probe, input: { targets }, limits: pro });
    assert.equal(outcome.ok, true, JSON.stringify(outcome));
    const result = (outcome as { result: Record<string, string> }).result;
    // The run's own loopback: nothing listens there.
    assert.equal(result[`127.0.0.1:${port}`], 'ECONNREFUSED');
    for (const [host, target] of targets.slice(1)) assert.equal(result[`${host}:${target}`], 'EACCES', `${host}:${target}`);
  });

  it('every network the host is connected to and every special-purpose range → refused at connect(), before any packet', async () => {
    const routes = refusedRoutes();
    // This host's own networks are among them (and so is its gateway's), IPv4 and IPv6.
    const connected = Object.values(networkInterfaces())
      .flat()
      .filter((entry) => entry && !entry.internal)
      .flatMap((entry) => [
        networkOf(entry!.address, Number(entry!.cidr!.split('/')[1])),
        networkOf(entry!.address, entry!.family === 'IPv4' ? 32 : 128),
      ]);
    for (const network of connected) assert.ok(routes.includes(network), network);
    assert.ok(connected.some((network) => !network.includes(':')) && connected.some((network) => network.includes(':')));
    // Written out here, not taken from the module: the ranges the README promises.
    const special = [
      '0.0.0.0/8',
      '10.0.0.0/8',
      '100.64.0.0/10',
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
      '0:0:0:0:0:ffff:0:0/96',
      '64:ff9b:0:0:0:0:0:0/96',
      '64:ff9b:1:0:0:0:0:0/48',
      '100:0:0:0:0:0:0:0/64',
      '2001:0:0:0:0:0:0:0/23',
      '2001:db8:0:0:0:0:0:0/32',
      '2002:0:0:0:0:0:0:0/16',
      '3fff:0:0:0:0:0:0:0/20',
      '5f00:0:0:0:0:0:0:0/16',
      'fc00:0:0:0:0:0:0:0/7',
      'fe80:0:0:0:0:0:0:0/10',
      'ff00:0:0:0:0:0:0:0/8',
    ];
    for (const range of special) assert.ok(routes.includes(range), range);
    assert.equal(REFUSED_RANGES.length, special.length + 3, 'and loopback: 127.0.0.0/8, ::1/128, ::/128');
    // A UDP connect() sends nothing: it only asks the namespace's routes. One address inside each
    // refused prefix (its first host), less the run's own loopback (:: and 0.0.0.0 mean it too).
    const targets = routes.filter((prefix) => !['127.0.0.0/8', '0:0:0:0:0:0:0:1/128', '0:0:0:0:0:0:0:0/128'].includes(prefix));
    const code = `
import errno, ipaddress, socket, time
# Past duplicate address detection: a link-local address, once there, would be a source for IPv6.
time.sleep(1.5)
def attempt(address, kind):
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, kind) as probe:
            probe.settimeout(5)
            probe.connect((address, 80))
            return "connected"
    except OSError as error:
        return errno.errorcode.get(error.errno, str(error))
def first(prefix):
    network = ipaddress.ip_network(prefix)
    if network.version == 6 and network.is_multicast:
        return "ff0e::1"  # global scope: ff00::1 is reserved (EADDRNOTAVAIL before any route)
    return str(network.network_address + (1 if network.num_addresses > 1 else 0))
result = {
    "udp": {prefix: attempt(first(prefix), socket.SOCK_DGRAM) for prefix in input_data["targets"]},
    "tcp": {prefix: attempt(first(prefix), socket.SOCK_STREAM) for prefix in input_data["targets"] if ":" not in prefix},
    "outside": [attempt("1.1.1.1", socket.SOCK_DGRAM), attempt("10.0.2.3", socket.SOCK_DGRAM)],
    "scoped": [attempt("fe80::2%tap0", socket.SOCK_DGRAM), attempt("ff02::1%tap0", socket.SOCK_DGRAM)],
}
`;
    const outcome = await sandbox.run({ language: 'python', code, input: { targets }, limits: pro });
    assert.equal(outcome.ok, true, JSON.stringify(outcome));
    const result = (
      outcome as { result: { udp: Record<string, string>; tcp: Record<string, string>; outside: string[]; scoped: string[] } }
    ).result;
    // Link-local IPv6 needs a scope (an interface); IPv6 is off on the run's only link.
    const expected = (prefix: string) => (prefix.startsWith('fe80:') ? ['EINVAL'] : ['EACCES']);
    for (const prefix of targets) assert.ok(expected(prefix).includes(result.udp[prefix]!), `udp ${prefix}: ${result.udp[prefix]}`);
    for (const [prefix, answer] of Object.entries(result.tcp)) assert.equal(answer, 'EACCES', `tcp ${prefix}`);
    for (const answer of result.scoped) assert.notEqual(answer, 'connected');
    // Public addresses and slirp's DNS forwarder have a route.
    assert.deepEqual(result.outside, ['connected', 'connected']);
  });

  it('from Node: the host refused, a public address routed; the rest of the isolation is unchanged', async () => {
    const host = hostNetworks()
      .find((network) => network.endsWith('/32'))!
      .split('/')[0];
    const code = `import { createSocket } from "node:dgram";
import { readdirSync } from "node:fs";
import { connect } from "node:net";
export default async function main(input: { host: string; port: number }) {
  const tcp = await new Promise((resolve) => {
    const socket = connect(input.port, input.host, () => { socket.destroy(); resolve("connected"); });
    socket.on("error", (error: any) => resolve(error.code));
  });
  const udp = await new Promise((resolve) => {
    const socket = createSocket("udp4");
    socket.connect(53, "1.1.1.1", () => { socket.close(); resolve("connected"); });
    socket.on("error", (error: any) => resolve(error.code));
  });
  return { tcp, udp, processes: readdirSync("/proc").filter((p) => /^\\d+$/.test(p)).length };
}
`;
    const outcome = await sandbox.run({ language: 'typescript', code, input: { host, port }, limits: pro });
    assert.equal(outcome.ok, true, JSON.stringify(outcome));
    const result = (outcome as { result: { tcp: string; udp: string; processes: number } }).result;
    assert.equal(result.tcp, 'EACCES');
    assert.equal(result.udp, 'connected');
    assert.ok(result.processes >= 1 && result.processes <= 3, String(result.processes));
  });
});

describe(
  'network on: the operator allow-list (MCPWORKS_SANDBOX_NETWORK_ALLOW)',
  { skip: !networkAvailable(detectSandboxHost()) && 'needs root, slirp4netns, nsenter and ip' },
  () => {
    it('opens exactly the allowed prefix of a refused range; the host, loopback and link-local can never be allowed', async () => {
      const host = hostNetworks().find((network) => network.endsWith('/32'))!;
      for (const bad of ['127.0.0.1', '169.254.169.254/32', '10.0.2.2', host, '10.0.0.0/8', 'not-an-address', '203.0.113.0/4']) {
        assert.throws(() => allowedRoutes(bad), /MCPWORKS_SANDBOX_NETWORK_ALLOW/, bad);
      }
      assert.deepEqual(allowedRoutes(' 203.0.113.80 , 198.51.100.0/24'), ['203.0.113.80/32', '198.51.100.0/24']);
      // The allow-list is read once, at start, by the composition root (src/app/config.ts), which passes it in.
      const allowing = createBubblewrapSandbox({
        ...sandboxFromEnv({ MCPWORKS_SANDBOX_NETWORK: 'on', MCPWORKS_SANDBOX_NETWORK_ALLOW: '203.0.113.80/32' }),
        pool: false,
      });
      try {
        // UDP connect() only picks a route: refused prefixes answer EACCES at once, nothing is sent.
        const code = `import errno, socket
def attempt(address):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect((address, 53))
        return "connected"
    except OSError as error:
        return errno.errorcode.get(error.errno, str(error))
    finally:
        s.close()
result = {a: attempt(a) for a in ["203.0.113.80", "203.0.113.81", "169.254.169.254", "10.0.2.2"]}
`;
        const outcome = await allowing.run({ language: 'python', code, input: {}, limits: pro });
        assert.equal(outcome.ok, true, JSON.stringify(outcome));
        assert.deepEqual((outcome as { result: unknown }).result, {
          '203.0.113.80': 'connected',
          '203.0.113.81': 'EACCES',
          '169.254.169.254': 'EACCES',
          '10.0.2.2': 'EACCES',
        });
      } finally {
        await allowing.close();
      }
      // Refused when the server reads it, and by the sandbox itself when given one.
      assert.throws(
        () => sandboxFromEnv({ MCPWORKS_SANDBOX_NETWORK: 'on', MCPWORKS_SANDBOX_NETWORK_ALLOW: host }),
        /MCPWORKS_SANDBOX_NETWORK_ALLOW/,
      );
      assert.throws(() => createBubblewrapSandbox({ network: true, networkAllow: [host] }), /MCPWORKS_SANDBOX_NETWORK_ALLOW/);
    });
  },
);
