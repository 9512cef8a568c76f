// The attached-server rules (pure): every refused range in both families, IPv4 in every spelling
// URL parsing takes, IPv4-mapped IPv6, trailing dots, credentials, ports, the create endpoint in
// every spelling, the operator's list and this server's own run endpoints.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DomainError } from './errors.js';
import {
  formatIp,
  parseAgentMcpAllow,
  parseIp,
  parseServerUrl,
  refusal,
  refusedKind,
  validateMcpServers,
  type AddressPolicy,
} from './mcp-servers.js';

const NONE: AddressPolicy = { allow: [] };

/** The refusal of a URL whose host is an address (names are resolved at connect time, elsewhere). */
function literalRefusal(url: string, policy: AddressPolicy = NONE): string | undefined {
  const target = parseServerUrl(url);
  assert.ok(target.literal, `${url} names an address`);
  return refusal(target, target.literal, policy);
}

function kindOf(address: string): string | undefined {
  const ip = parseIp(address);
  assert.ok(ip, address);
  return refusedKind(ip);
}

test('every refused range, IPv4 and IPv6, and the public addresses around them', () => {
  const cases: Array<[string, string | undefined]> = [
    ['0.0.0.0', 'unspecified'],
    ['0.255.255.255', 'unspecified'],
    ['10.0.0.1', 'private'],
    ['10.255.255.255', 'private'],
    ['11.0.0.1', undefined],
    ['100.64.0.1', 'CGNAT'],
    ['100.127.255.255', 'CGNAT'],
    ['100.128.0.0', undefined],
    ['100.100.100.200', 'metadata'],
    ['127.0.0.1', 'loopback'],
    ['127.255.255.254', 'loopback'],
    ['169.254.169.254', 'metadata'],
    ['169.254.170.2', 'metadata'],
    ['169.254.0.1', 'link-local'],
    ['172.15.255.255', undefined],
    ['172.16.0.1', 'private'],
    ['172.31.255.255', 'private'],
    ['172.32.0.0', undefined],
    ['192.0.0.8', 'reserved'],
    ['192.0.2.1', 'documentation'],
    ['192.88.99.1', 'reserved'],
    ['192.168.1.1', 'private'],
    ['198.18.0.1', 'reserved'],
    ['198.51.100.7', 'documentation'],
    ['203.0.113.9', 'documentation'],
    ['224.0.0.1', 'multicast'],
    ['239.255.255.250', 'multicast'],
    ['240.0.0.1', 'reserved'],
    ['255.255.255.255', 'broadcast'],
    ['8.8.8.8', undefined],
    ['93.184.216.34', undefined],
    ['::', 'unspecified'],
    ['::1', 'loopback'],
    ['::ffff:127.0.0.1', 'loopback'],
    ['::ffff:7f00:1', 'loopback'],
    ['::ffff:a9fe:a9fe', 'metadata'],
    ['0:0:0:0:0:ffff:10.1.2.3', 'private'],
    ['::ffff:8.8.8.8', undefined],
    ['::127.0.0.1', 'reserved'],
    ['64:ff9b::7f00:1', 'reserved'],
    ['64:ff9b::808:808', 'reserved'],
    ['100::1', 'reserved'],
    ['2001::1', 'reserved'],
    ['2001:db8::1', 'documentation'],
    ['2002:7f00:1::1', 'reserved'],
    ['3fff::1', 'documentation'],
    ['fc00::1', 'private'],
    ['fd12:3456::1', 'private'],
    ['fd00:ec2::254', 'metadata'],
    ['fe80::1', 'link-local'],
    ['febf::1', 'link-local'],
    ['fec0::1', 'private'],
    ['ff02::1', 'multicast'],
    ['4000::1', 'reserved'],
    ['2606:4700:4700::1111', undefined],
    ['2a00:1450:4001::200e', undefined],
  ];
  for (const [address, kind] of cases) assert.equal(kindOf(address), kind, address);
});

test('IPv4 in decimal, octal, hex and short spellings, with a trailing dot or in IPv6 form, is the address it names', () => {
  for (const url of [
    'http://127.0.0.1/mcp',
    'http://2130706433/mcp',
    'http://0x7f000001/mcp',
    'http://0x7f.1/mcp',
    'http://017700000001/mcp',
    'http://0177.0.0.1/mcp',
    'http://127.1/mcp',
    'http://127.0.0.1./mcp',
    'http://[::ffff:127.0.0.1]/mcp',
    'http://[::ffff:7f00:1]:8080/mcp',
    'http://[0:0:0:0:0:ffff:7f00:0001]/mcp',
  ])
    assert.match(literalRefusal(url) ?? '', /is a loopback address/, url);
  for (const url of ['http://0xa9fea9fe/', 'http://2852039166/', 'http://0251.0376.0251.0376/', 'http://[::ffff:169.254.169.254]/'])
    assert.match(literalRefusal(url) ?? '', /is a metadata address/, url);
  for (const url of ['http://10.1.2.3/', 'http://0xa010203/', 'http://012.1.2.3/', 'http://[fd00::1]/', 'http://[::1]:9/'])
    assert.ok(literalRefusal(url), url);
  assert.equal(literalRefusal('http://8.8.8.8:8080/mcp'), undefined);
  assert.equal(literalRefusal('https://[2606:4700:4700::1111]/mcp'), undefined);
  assert.equal(parseServerUrl('http://LocalHost./mcp').host, 'localhost', 'names compare without case or trailing dot');
  assert.equal(parseServerUrl('http://[::1]/').literal?.family, 6);
  assert.equal(formatIp(parseIp('fd00:ec2:0:0:0:0:0:254')!), 'fd00:ec2::254');
  assert.equal(formatIp(parseIp('::ffff:1.2.3.4')!), '1.2.3.4');
});

test('urls: http(s) only, no credentials, no fragment; the port is kept', () => {
  const refused = (url: unknown) => assert.throws(() => parseServerUrl(url), DomainError, String(url));
  refused('ftp://example.com/mcp');
  refused('file:///etc/passwd');
  refused('stdio:node server.js');
  refused('http://user:pass@example.com/mcp');
  refused('http://user@example.com/mcp');
  refused('http://evil.example@127.0.0.1/mcp');
  refused('https://example.com/mcp#x');
  refused('https://example.com/ mcp');
  refused('https://exa\nmple.com/');
  refused('/mcp/run/x');
  refused('http://1.2.3.08/');
  refused(42);
  refused('https://example.com/' + 'a'.repeat(2100));
  assert.equal(parseServerUrl('https://example.com:8443/mcp?x=1').port, 8443);
  assert.equal(parseServerUrl('https://example.com/mcp').port, 443);
  assert.equal(parseServerUrl('http://example.com/mcp').port, 80);
});

test('the create endpoint is refused in every spelling; run endpoints are not', () => {
  for (const url of [
    'http://127.0.0.1:8787/mcp/create/ns',
    'http://127.0.0.1:8787/MCP/Create/ns',
    'http://127.0.0.1:8787/mcp%2Fcreate%2Fns',
    'http://127.0.0.1:8787/mcp%2fcreate/ns',
    'http://127.0.0.1:8787/%6dcp/%63reate/ns',
    'http://127.0.0.1:8787/mcp/%2563reate/ns',
    'http://127.0.0.1:8787/mcp/%252563reate/ns',
    'http://127.0.0.1:8787/mcp//create/ns',
    'http://127.0.0.1:8787//mcp//create//ns',
    'http://127.0.0.1:8787/mcp/./create/ns',
    'http://127.0.0.1:8787/mcp/%2e/create/ns',
    'http://127.0.0.1:8787/mcp/run/../create/ns',
    'http://127.0.0.1:8787/mcp/run/%2e%2e/create/ns',
    'http://127.0.0.1:8787/mcp\\create\\ns',
    'http://127.0.0.1:8787/mcp%5Ccreate%5Cns',
    'http://127.0.0.1:8787/mcp/create',
    'http://127.0.0.1:8787/mcp/create/ns?mode=tools',
    'https://ns.create.example.com/',
    'https://ns.CREATE.example.com/anything',
    'https://ns.create.example.com./',
    'https://ns.%63reate.example.com/',
    'https://ns.ｃｒｅａｔｅ.example.com/',
    'https://proxy.example.com/prefix/mcp/create/ns',
  ])
    assert.throws(() => parseServerUrl(url), /create endpoint/, url);
  assert.equal(parseServerUrl('http://127.0.0.1:8787/mcp/run/ns?mode=tools').runPath, true);
  assert.equal(parseServerUrl('http://127.0.0.1:8787/mcp/run/ns/').runPath, true);
  assert.equal(parseServerUrl('http://127.0.0.1:8787/mcp/run/ns/x').runPath, false);
  assert.equal(parseServerUrl('http://127.0.0.1:8787/mcp/run/%6es').runPath, false, 'an encoded run path is not taken as ours');
  assert.equal(parseServerUrl('https://tools.example.com/mcp').runPath, false);
});

test("this server's own run endpoint (its address, its port, the run path) is allowed; nothing else there is", () => {
  const own: AddressPolicy = { allow: [], own: { addresses: [parseIp('127.0.0.1')!, parseIp('::1')!], port: 8787 } };
  assert.equal(literalRefusal('http://127.0.0.1:8787/mcp/run/other?mode=tools', own), undefined);
  assert.equal(literalRefusal('http://[::1]:8787/mcp/run/other', own), undefined);
  assert.equal(literalRefusal('http://[::ffff:127.0.0.1]:8787/mcp/run/other', own), undefined);
  assert.ok(literalRefusal('http://127.0.0.1:8787/healthz', own), 'another path of ours');
  assert.ok(literalRefusal('http://127.0.0.1:8788/mcp/run/other', own), 'another port');
  assert.ok(literalRefusal('http://127.0.0.2:8787/mcp/run/other', own), 'another address');
  assert.ok(literalRefusal('http://127.0.0.1:8787/mcp/run/other', NONE), 'without knowing our address');
  // By name: {ns}.run.{base} on the base's port, whatever it resolves to.
  const named: AddressPolicy = { allow: [], own: { addresses: [], port: 8787, baseHost: 'mcp.example.com' } };
  const target = parseServerUrl('https://other.run.mcp.example.com/');
  assert.equal(refusal(target, parseIp('10.0.0.5')!, named), undefined);
  assert.ok(refusal(parseServerUrl('http://other.run.mcp.example.com:81/'), parseIp('10.0.0.5')!, named));
  assert.ok(refusal(parseServerUrl('https://other.run.evil.example.com/'), parseIp('10.0.0.5')!, named));
  const withPort: AddressPolicy = { allow: [], own: { addresses: [], port: 8787, baseHost: 'localhost:8787' } };
  assert.equal(refusal(parseServerUrl('http://other.run.localhost:8787/'), parseIp('127.0.0.1')!, withPort), undefined);
});

test("a model's address: this server itself is refused whatever the operator allows; its run endpoints are no exception", () => {
  const ours = { addresses: [parseIp('127.0.0.1')!, parseIp('::1')!, parseIp('203.0.113.7')!], port: 8787, baseHost: 'mcp.example.com' };
  const model = (allow: string): AddressPolicy => ({ allow: parseAgentMcpAllow(allow), own: ours, purpose: 'model' });
  const wide = model('127.0.0.0/8,::1,203.0.113.0/24,10.0.0.0/8');
  for (const url of [
    'http://127.0.0.1:8787/v1',
    'http://127.0.0.1:8787/mcp/run/other',
    'http://127.0.0.9:8787/v1', // any loopback address reaches a server listening on 0.0.0.0
    'http://[::1]:8787/v1',
    'http://[::ffff:127.0.0.1]:8787/v1',
    'http://0.0.0.0:8787/v1',
    'http://203.0.113.7:8787/v1',
  ])
    assert.match(literalRefusal(url, wide) ?? '', /this server's own address/, url);
  // By name: the base host and every name under it on its port, whatever they resolve to.
  for (const url of ['https://mcp.example.com/v1', 'https://other.run.mcp.example.com/v1', 'https://x.y.mcp.example.com/v1'])
    assert.match(refusal(parseServerUrl(url), parseIp('10.0.0.5')!, wide) ?? '', /own address/, url);
  // Elsewhere the operator's list decides as for an attached server.
  assert.equal(literalRefusal('http://127.0.0.1:11434/v1', wide), undefined);
  assert.equal(refusal(parseServerUrl('https://mcp.example.com:8443/v1'), parseIp('10.0.0.5')!, wide), undefined);
  assert.match(literalRefusal('http://127.0.0.1:11434/v1', model('')) ?? '', /loopback address: agents may not reach it unless/);
  assert.equal(literalRefusal('http://203.0.113.8:8787/v1', model('203.0.113.0/24')), undefined);
  assert.match(literalRefusal('http://169.254.169.254/v1', model('169.254.0.0/16')) ?? '', /metadata/);
  // The same URL is this server's run endpoint for an attached server (allowed), never a model.
  assert.equal(literalRefusal('http://127.0.0.1:8787/mcp/run/other', { allow: [], own: ours }), undefined);
  assert.ok(literalRefusal('http://127.0.0.1:8787/mcp/run/other', { allow: [], own: ours, purpose: 'model' }));
});

test('MCPWORKS_AGENT_MCP_ALLOW: addresses, ranges and names the operator opens; metadata only by its own entry', () => {
  const allow = parseAgentMcpAllow(' 10.0.0.0/8, fd00::/8 ,127.0.0.1, Tools.Internal., ::ffff:192.168.0.0/112 ');
  const policy: AddressPolicy = { allow };
  assert.equal(literalRefusal('http://10.9.8.7/mcp', policy), undefined);
  assert.equal(literalRefusal('http://0x0a090807/mcp', policy), undefined);
  assert.equal(literalRefusal('http://[fd12::1]/mcp', policy), undefined);
  assert.equal(literalRefusal('http://127.0.0.1:9/mcp', policy), undefined);
  assert.equal(literalRefusal('http://[::ffff:127.0.0.1]:9/mcp', policy), undefined);
  assert.equal(literalRefusal('http://192.168.3.4/mcp', policy), undefined);
  assert.ok(literalRefusal('http://127.0.0.2/mcp', policy));
  assert.ok(literalRefusal('http://172.16.0.1/mcp', policy));
  assert.ok(literalRefusal('http://[fd00:ec2::254]/', policy), 'fd00::/8 does not open the metadata address');
  const tools = parseServerUrl('http://tools.internal/mcp');
  assert.equal(refusal(tools, parseIp('10.1.1.1')!, { allow: parseAgentMcpAllow('tools.internal') }), undefined);
  assert.equal(
    refusal(parseServerUrl('http://TOOLS.internal./mcp'), parseIp('192.168.1.1')!, { allow: parseAgentMcpAllow('tools.internal') }),
    undefined,
  );
  assert.match(
    refusal(parseServerUrl('http://localhost/mcp'), parseIp('127.0.0.1')!, NONE) ?? '',
    /localhost resolves to 127\.0\.0\.1, a loopback/,
  );
  assert.ok(refusal(parseServerUrl('http://other.internal/mcp'), parseIp('10.1.1.1')!, { allow: parseAgentMcpAllow('tools.internal') }));
  assert.ok(refusal(tools, parseIp('169.254.169.254')!, { allow: parseAgentMcpAllow('tools.internal,169.254.0.0/16,0.0.0.0/0') }));
  assert.equal(literalRefusal('http://169.254.169.254/', { allow: parseAgentMcpAllow('169.254.169.254') }), undefined);
  assert.equal(literalRefusal('http://[fd00:ec2::254]/', { allow: parseAgentMcpAllow('fd00:ec2::254/128') }), undefined);
  for (const bad of ['10.0.0.0/33', '0x7f000001', '2130706433', '010.0.0.1', '127.1', 'http://x', 'a b', '::1/129', 'x/8', '[::1'])
    assert.throws(() => parseAgentMcpAllow(bad), /MCPWORKS_AGENT_MCP_ALLOW/, bad);
  assert.deepEqual(parseAgentMcpAllow(undefined), []);
  assert.deepEqual(parseAgentMcpAllow(' , '), []);
});

test('servers: Streamable HTTP only (any stdio field refused), names, headers checked without echoing values', () => {
  const ok = validateMcpServers([{ name: 'tools', url: 'https://example.com/mcp', headers: { Authorization: 'Bearer s3cret' } }]);
  assert.deepEqual(ok, [{ name: 'tools', url: 'https://example.com/mcp', headers: { Authorization: 'Bearer s3cret' } }]);
  assert.deepEqual(validateMcpServers([]), []);
  const refused = (servers: unknown, pattern: RegExp) => assert.throws(() => validateMcpServers(servers), pattern);
  refused([{ name: 'x', command: 'rm', args: ['-rf', '/'] }], /stdio servers are not supported/);
  refused([{ name: 'x', url: 'https://example.com/mcp', command: 'node' }], /stdio servers are not supported/);
  refused([{ name: 'x', transport: 'stdio' }], /stdio servers are not supported/);
  refused([{ name: 'x', url: 'https://example.com/mcp', env: {} }], /stdio/);
  refused([{ name: 'x', url: 'https://example.com/sse', transport: 'sse' }], /only Streamable HTTP/);
  refused([{ name: 'x' }], /url is required/);
  refused([{ name: 'Bad Name', url: 'https://example.com/mcp' }], /name must be/);
  refused([{ name: 'x', url: 'https://example.com/mcp', other: 1 }], /unknown field/);
  refused(
    [
      { name: 'x', url: 'https://a.example.com/mcp' },
      { name: 'x', url: 'https://b.example.com/mcp' },
    ],
    /given twice/,
  );
  refused(
    Array.from({ length: 11 }, (_, i) => ({ name: `s${i}`, url: 'https://example.com/mcp' })),
    /at most 10/,
  );
  refused({ name: 'x' }, /must be a list/);
  refused([{ name: 'x', url: 'https://example.com/mcp', headers: { Host: 'internal' } }], /set by the transport/);
  refused([{ name: 'x', url: 'https://example.com/mcp', headers: { 'bad name': 'v' } }], /not an HTTP header name/);
  refused([{ name: 'x', url: 'https://example.com/mcp', headers: { a: 'v', A: 'w' } }], /given twice/);
  for (const value of ['line\r\nX-Injected: 1', 7])
    assert.throws(
      () => validateMcpServers([{ name: 'x', url: 'https://example.com/mcp', headers: { Authorization: value } }]),
      (error: Error) => /without line breaks/.test(error.message) && !error.message.includes('Injected'),
    );
});
