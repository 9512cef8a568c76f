import assert from 'node:assert/strict';
import { test } from 'node:test';
import { clientAddress, forwardedAddress, forwardedClient, parseTrustedProxy, trustedProxiesOf } from './client-address.js';
import { isMcpRequest, refusalFor } from './mcp-refusals.js';

test('X-Forwarded-For entries with ports name the client (a.b.c.d:port, [v6]:port), as bare ones do', () => {
  assert.equal(forwardedAddress('203.0.113.5:4711'), '203.0.113.5');
  assert.equal(forwardedAddress(' [2001:DB8::5]:4711 '), '2001:db8::5');
  assert.equal(forwardedAddress('[2001:db8::5]'), '2001:db8::5');
  assert.equal(forwardedAddress('::ffff:203.0.113.5'), '203.0.113.5');
  assert.equal(forwardedAddress('2001:db8::5'), '2001:db8::5');
  for (const bad of ['unknown', '_hidden', '203.0.113.5:port', '[2001:db8::5]:x', '203.0.113.5:4711:1', ''])
    assert.equal(forwardedAddress(bad), undefined, bad);
  const proxies = ['10.0.0.1'];
  assert.equal(clientAddress('10.0.0.1', '198.51.100.1, 203.0.113.5:4711', proxies), '203.0.113.5');
  assert.equal(clientAddress('10.0.0.1', '[2001:db8::5]:4711', proxies), '2001:db8::5');
  // Not from a trusted proxy: the header is ignored, port or not.
  assert.equal(clientAddress('10.0.0.9', '203.0.113.5:4711', proxies), '10.0.0.9');
});

test('trusted proxies match in any written form of an address, and as CIDR ranges', () => {
  const trusted = trustedProxiesOf(['2001:db8:0:0:0:0:0:1', '10.1.0.0/16', 'fd00::/8', '::ffff:192.0.2.7']);
  assert.ok(trusted.has('2001:db8::1'));
  assert.ok(trusted.has('2001:0db8::0001'));
  assert.ok(trusted.has('10.1.200.3'));
  assert.ok(trusted.has('::ffff:10.1.0.9'));
  assert.ok(trusted.has('fd12:3456::1'));
  assert.ok(trusted.has('192.0.2.7'));
  for (const other of ['2001:db8::2', '10.2.0.1', 'fe80::1', '192.0.2.8', 'not-an-ip', undefined])
    assert.equal(trusted.has(other), false, String(other));
  assert.equal(clientAddress('2001:db8::1', '203.0.113.5', ['2001:db8:0:0:0:0:0:1']), '203.0.113.5');
  // A trusted hop in the header (another form, or within a range) is skipped.
  assert.equal(clientAddress('10.1.0.1', '203.0.113.5, 10.1.9.9:80', ['10.1.0.0/16']), '203.0.113.5');
  for (const entry of ['10.0.0.0/8', '2001:db8::/32', '1.2.3.4', '::1', '10.0.0.0/0']) assert.ok(parseTrustedProxy(entry), entry);
  for (const entry of ['proxy.example.com', '10.0.0.0/33', '2001:db8::/129', '10.0.0.0/x', '10.0.0.0/8/8', '10.0.0.0/', ''])
    assert.equal(parseTrustedProxy(entry), undefined, entry);
});

test("a trusted proxy's request naming no usable client stays under the proxy's address, and says why", () => {
  const proxies = ['10.0.0.1'];
  assert.deepEqual(forwardedClient('10.0.0.1', undefined, proxies), { address: '10.0.0.1', problem: { kind: 'missing' } });
  assert.deepEqual(forwardedClient('10.0.0.1', ' ', proxies), { address: '10.0.0.1', problem: { kind: 'missing' } });
  assert.deepEqual(forwardedClient('10.0.0.1', '203.0.113.5, unknown', proxies), {
    address: '10.0.0.1',
    problem: { kind: 'unusable', entry: 'unknown' },
  });
  assert.deepEqual(forwardedClient('10.0.0.9', undefined, proxies), { address: '10.0.0.9' });
  assert.deepEqual(forwardedClient('10.0.0.1', '203.0.113.5', proxies), { address: '203.0.113.5' });
});

test("refusals written from Node's request event take the route's shape: JSON-RPC on /mcp/ and namespace subdomains, the one error shape elsewhere", () => {
  const base = 'mcp.example.com';
  const rpc = (url: string, host: string) =>
    JSON.parse(refusalFor({ url, headers: { host } }, base, 'rate_limited', 'wait', { retry_after: 1 }));
  for (const [url, host] of [
    ['/mcp/run/ns', '127.0.0.1'],
    ['/', 'ns.run.mcp.example.com'],
    ['/anything', 'ns.create.mcp.example.com:443'],
  ] as const) {
    assert.deepEqual(
      rpc(url, host),
      { jsonrpc: '2.0', id: null, error: { code: -32000, message: 'wait', data: { type: 'rate_limited', retry_after: 1 } } },
      `${host}${url}`,
    );
  }
  for (const [url, host] of [
    ['/api/login', '127.0.0.1'],
    ['/healthz', 'mcp.example.com'],
    ['/register', 'ns.other.mcp.example.com'],
    ['/login', 'evil-run.mcp.example.com'],
  ] as const) {
    assert.deepEqual(rpc(url, host), { error: 'wait', error_type: 'rate_limited', retry_after: 1 }, `${host}${url}`);
  }
  assert.equal(isMcpRequest('/api/login', 'ns.run.mcp.example.com', undefined), false);
});
