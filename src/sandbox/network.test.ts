// MCPWORKS_SANDBOX_NETWORK=on: egress works, while the host, cloud metadata and private ranges stay refused.
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:net';
import { networkInterfaces } from 'node:os';
import { after, before, describe, it } from 'node:test';
import { sandboxLimitsFor, type Sandbox } from '../core/sandbox.js';
import { limitsFor } from '../core/tiers.js';
import { createBubblewrapSandbox } from './bubblewrap.js';
import { networkAvailable } from './network.js';

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

describe('network on', { skip: !networkAvailable() && 'needs root, slirp4netns, nsenter and ip' }, () => {
  it("reaches the outside, but not the host's ports, its loopback, metadata or private ranges", async () => {
    const hostAddresses = Object.values(networkInterfaces())
      .flat()
      .filter((entry) => entry && entry.family === 'IPv4' && !entry.internal)
      .map((entry) => entry!.address);
    const targets: Array<[string, number]> = [
      ['registry.npmjs.org', 443],
      ['127.0.0.1', port],
      ['10.0.2.2', port],
      ['169.254.169.254', 80],
      ['192.168.0.1', 80],
      ...hostAddresses.map((address): [string, number] => [address, port]),
    ];
    const outcome = await sandbox.run({ language: 'python', code: probe, input: { targets }, limits: pro });
    assert.equal(outcome.ok, true, JSON.stringify(outcome));
    const result = (outcome as { result: Record<string, string> }).result;
    assert.equal(result['registry.npmjs.org:443'], 'connected');
    // The run's own loopback: nothing listens there.
    assert.equal(result[`127.0.0.1:${port}`], 'ECONNREFUSED');
    for (const [host, target] of targets.slice(2)) assert.equal(result[`${host}:${target}`], 'EACCES', `${host}:${target}`);
  });

  it('Node fetch gets out with the host CA store; the rest of the isolation is unchanged', async () => {
    const code = 'import { readdirSync } from "node:fs";\nexport default async function main() {\n  const response = await fetch("https://registry.npmjs.org/is-odd");\n  return { status: response.status, processes: readdirSync("/proc").filter((p) => /^\\d+$/.test(p)).length };\n}\n';
    const outcome = await sandbox.run({ language: 'typescript', code, input: {}, limits: pro });
    assert.equal(outcome.ok, true, JSON.stringify(outcome));
    const result = (outcome as { result: { status: number; processes: number } }).result;
    assert.equal(result.status, 200);
    assert.ok(result.processes >= 1 && result.processes <= 3, String(result.processes));
  });
});
