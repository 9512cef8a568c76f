// test-database: embedded, attached servers are one agent row's config; the data-dir scan reads the embedded files
// configure_mcp_servers and the AttachedToolSource through the real server and the official MCP
// client: another account's run endpoint (tools mode, so its function runs in a real sandbox)
// attached with a Bearer header, listed and called; forbidden addresses refused when configured
// and again at connect time (literal, by name, by redirect), allowed once the operator lists them;
// the create endpoint refused in every spelling; stdio refused; the headers in no answer, no log
// line and not in plain text in the data dir. One server for the file, plus a small MCP server
// of the official SDK on 127.0.0.1 and 127.0.0.2 (loopback only).
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { z } from 'zod';
import { createLogger } from '../app/logger.js';
import { FAKE_LLM_HOST, startFakeLlm, type FakeLlm } from '../test-support/fake-llm.js';
import { assertNotInFiles } from '../test-support/owners.js';
import { parseAgentMcpAllow } from '../core/mcp-servers.js';
import {
  callError,
  callOk,
  connect,
  createAccount,
  createKey,
  startTestServer,
  type McpTestClient,
  type TestServer,
} from '../test-support/harness.js';
import { McpServerSource } from './mcp-servers.js';
import { OutboundAddressGuard, type Resolver } from './outbound-guard.js';

const TINY_SECRET = `tiny-${Math.random().toString(36).slice(2, 14)}-never-shown`;

/** A small MCP server (the official SDK's, stateless): one `echo` tool; redirects on two paths; it records what reached it. */
interface Tiny {
  /** The addresses whose make_function was called (never, if the rule holds). */
  authored: string[];
  /** port per listening address */
  port: Record<string, number>;
  seen: Array<{ local: string; path: string; auth: string | undefined; key: string | undefined }>;
  close(): Promise<void>;
}

async function startTiny(addresses: string[]): Promise<Tiny> {
  const seen: Tiny['seen'] = [];
  const authored: string[] = [];
  const port: Record<string, number> = {};
  const servers: http.Server[] = [];
  for (const address of addresses) {
    const httpServer = http.createServer(async (req, res) => {
      seen.push({
        local: req.socket.localAddress ?? '',
        path: req.url ?? '',
        auth: req.headers.authorization,
        key: req.headers['x-api-key'] as string | undefined,
      });
      if (req.url === '/redirect-out') {
        res.writeHead(307, { location: `http://127.0.0.1:${port['127.0.0.1']}/mcp` }).end();
        return;
      }
      if (req.url === '/redirect-create') {
        res.writeHead(307, { location: `http://${address}:${port[address]}/mcp/create/victim` }).end();
        return;
      }
      const server = new McpServer({ name: 'tiny', version: '1.0.0' });
      server.registerTool('echo', { description: 'Echoes its text', inputSchema: { text: z.string() } }, async ({ text }) => ({
        content: [{ type: 'text', text: `echo: ${text}` }],
      }));
      // A server that exposes a management tool's name: an agent's model must never get to call it.
      server.registerTool('make_function', { description: 'Creates a function', inputSchema: { code: z.string() } }, async () => {
        authored.push(address);
        return { content: [{ type: 'text', text: 'created' }] };
      });
      const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true });
      await server.connect(transport);
      await transport.handleRequest(req, res);
    });
    await new Promise<void>((resolve) => httpServer.listen(0, address, resolve));
    port[address] = (httpServer.address() as AddressInfo).port;
    servers.push(httpServer);
  }
  return {
    authored,
    port,
    seen,
    close: () => Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve())))).then(() => undefined),
  };
}

const lines: string[] = [];
const answers: unknown[] = [];
let server: TestServer;
let tiny: Tiny;
before(async () => {
  tiny = await startTiny(['127.0.0.1', '127.0.0.2']);
  const logs = new Writable({ write: (chunk, _encoding, done) => (lines.push(String(chunk)), done()) });
  // The operator lets agents reach 127.0.0.2 and the fake LLM (and nothing else in a refused range).
  server = await startTestServer({ agentMcpAllow: parseAgentMcpAllow(`127.0.0.2,${FAKE_LLM_HOST}`) }, logs);
});
after(async () => {
  await server?.stop();
  await tiny?.close();
});

const ok = async (client: McpTestClient, tool: string, args: Record<string, unknown>) => {
  const answer = await callOk(client, tool, args);
  answers.push(answer);
  return answer;
};
const refused = async (client: McpTestClient, tool: string, args: Record<string, unknown>) => {
  const error = await callError(client, tool, args);
  answers.push(error);
  return error;
};
const signal = () => new AbortController().signal;

interface Side {
  ns: string;
  create: McpTestClient;
  accountId: string;
  key: string;
  account: Awaited<ReturnType<typeof createAccount>>;
}

async function side(prefix: string): Promise<Side> {
  const account = await createAccount(server.url);
  const ns = `${prefix}-${Math.random().toString(36).slice(2, 10)}`;
  const create = await connect(`${server.url}/mcp/create/${ns}`, account.key);
  await callOk(create, 'make_namespace', { name: ns });
  return { ns, create, accountId: account.accountId, key: account.key, account };
}

async function agentId(s: Side, name: string): Promise<string> {
  const principal = { accountId: s.accountId, keyId: 'test', tier: 'pro_trial', namespace: null, scopes: ['read' as const] };
  return (await server.server.services.agents.resolve(principal, s.ns, { name }, 'read')).id;
}

describe('attached MCP servers', () => {
  let owner: Side;
  let peer: Side;
  let peerKey: string;
  let runUrl: string;
  before(async () => {
    owner = await side('own');
    peer = await side('peer');
    await callOk(peer.create, 'make_service', { name: 'utils' });
    await callOk(peer.create, 'make_function', { service: 'utils', name: 'hello', template: 'hello-world' });
    // The peer's key for its run endpoint only: execute, nothing else.
    peerKey = await createKey(server.url, peer.account, { scopes: ['execute'] });
    runUrl = `${server.url}/mcp/run/${peer.ns}?mode=tools`;
    await callOk(owner.create, 'make_agent', { name: 'helper' });
  });

  test("another account's run endpoint, attached with a Bearer header: its tools listed and called through the source", async () => {
    const { tools } = await owner.create.listTools();
    assert.ok((tools.find((t) => t.name === 'configure_mcp_servers')?.description ?? '').length > 80);
    const answer = await ok(owner.create, 'configure_mcp_servers', {
      agent_name: 'helper',
      servers: [{ name: 'peer', url: runUrl, headers: { Authorization: `Bearer ${peerKey}` } }],
    });
    assert.deepEqual(
      answer.mcp_servers.map((s: Record<string, unknown>) => [s.name, s.url, s.header_names]),
      [['peer', runUrl, ['Authorization']]],
    );
    const described = await ok(owner.create, 'describe_agent', { name: 'helper' });
    assert.deepEqual(described.config.mcp_servers[0].header_names, ['Authorization']);
    assert.equal(described.config.mcp_servers[0].headers, 'set (encrypted; never shown)');
    assert.ok(!JSON.stringify(described).includes(peerKey) && !JSON.stringify(described).includes('headers_sealed'));

    const source = server.server.services.attachedTools;
    const id = await agentId(owner, 'helper');
    const listed = await source.list(id, signal());
    const hello = listed.find((t) => t.tool === 'utils__hello');
    assert.ok(hello, JSON.stringify(listed));
    assert.equal(hello.server, 'peer');
    assert.equal((hello.inputSchema.properties as Record<string, { type: string }>).name!.type, 'string');
    const called = await source.call(id, 'peer', 'utils__hello', { name: 'agent' }, signal());
    assert.equal(called.isError, false, called.content);
    assert.match(called.content, /Hello, agent/);
    // The server ends the cached connection's session (idle expiry, or evicted by the key's cap): the next listing and call reconnect.
    const store = (server.server.services.accountsStore as unknown as { db: { deleteFrom(t: string): any } }).db;
    const ended = await store.deleteFrom('mcp_sessions').where('account_id', '=', peer.accountId).executeTakeFirst();
    assert.ok(Number(ended.numDeletedRows) >= 1, 'the connection had a session');
    assert.deepEqual(
      (await source.list(id, signal())).map((t) => t.tool),
      listed.map((t) => t.tool),
    );
    await store.deleteFrom('mcp_sessions').where('account_id', '=', peer.accountId).execute();
    assert.match((await source.call(id, 'peer', 'utils__hello', { name: 'again' }, signal())).content, /Hello, again/);
    const unknown = await source.call(id, 'nobody', 'x', {}, signal());
    assert.deepEqual(unknown, { content: "no MCP server 'nobody' is attached to this agent", isError: true });

    // The header is what lets the agent in: without it the server is left out (and logged).
    await ok(owner.create, 'configure_mcp_servers', { name: 'helper', servers: [{ name: 'peer', url: runUrl }] });
    assert.deepEqual(await source.list(id, signal()), []);
    assert.ok(lines.some((l) => l.includes('attached MCP server left out') && l.includes('"mcp_server":"peer"')));
    // A clone's headers are sealed again for it, and open there.
    await ok(owner.create, 'configure_mcp_servers', {
      name: 'helper',
      servers: [{ name: 'peer', url: runUrl, headers: { Authorization: `Bearer ${peerKey}` } }],
    });
    await ok(owner.create, 'clone_agent', { name: 'helper', new_name: 'helper-copy' });
    const copied = await source.call(await agentId(owner, 'helper-copy'), 'peer', 'utils__hello', { name: 'copy' }, signal());
    assert.match(copied.content, /Hello, copy/);
  });

  test('forbidden addresses are refused (literal, by name, in every spelling) and nothing changes; the listed one is allowed', async () => {
    const before = (await ok(owner.create, 'describe_agent', { name: 'helper' })).config;
    const t1 = tiny.port['127.0.0.1']!;
    const port = new URL(server.url).port;
    const forbidden: Array<[string, RegExp]> = [
      [`http://127.0.0.1:${t1}/mcp`, /127\.0\.0\.1 is a loopback address/],
      [`http://localhost:${t1}/mcp`, /localhost resolves to (127\.0\.0\.1|::1), a loopback address/],
      [`http://2130706433:${t1}/mcp`, /loopback/],
      [`http://0x7f.0.0.1:${t1}/mcp`, /loopback/],
      [`http://[::ffff:127.0.0.1]:${t1}/mcp`, /loopback/],
      [`http://[::1]:${t1}/mcp`, /loopback/],
      [`http://127.0.0.1:${port}/healthz`, /loopback/],
      [`http://10.1.2.3/mcp`, /private/],
      [`http://192.168.0.10:8080/mcp`, /private/],
      ['http://169.254.169.254/latest/meta-data/', /metadata/],
      ['http://[fd00:ec2::254]/', /metadata/],
      ['http://100.64.0.1/mcp', /CGNAT/],
    ];
    for (const [url, pattern] of forbidden) {
      const error = await refused(owner.create, 'configure_mcp_servers', { name: 'helper', servers: [{ name: 'x', url }] });
      assert.equal(error.type, 'validation_error', url);
      assert.match(error.message, pattern, url);
      assert.match(error.message, /MCPWORKS_AGENT_MCP_ALLOW/, url);
    }
    assert.deepEqual((await ok(owner.create, 'describe_agent', { name: 'helper' })).config, before, 'nothing changed');

    // 127.0.0.2 is listed by the operator: attached, listed and called, the header delivered.
    const listedUrl = `http://127.0.0.2:${tiny.port['127.0.0.2']}/mcp`;
    await ok(owner.create, 'configure_mcp_servers', {
      name: 'helper',
      servers: [{ name: 'tiny', url: listedUrl, headers: { 'X-Api-Key': TINY_SECRET } }],
    });
    const id = await agentId(owner, 'helper');
    const source = server.server.services.attachedTools;
    assert.deepEqual(
      (await source.list(id, signal())).map((t) => `${t.server}/${t.tool}`),
      // The source lists what the server exposes; keeping management names from the model is the toolbox's.
      ['tiny/echo', 'tiny/make_function'],
    );
    assert.deepEqual(await source.call(id, 'tiny', 'echo', { text: 'hi' }, signal()), { content: 'echo: hi', isError: false });
    assert.ok(tiny.seen.some((s) => s.local === '127.0.0.2' && s.key === TINY_SECRET));

    // Checked again at connect time: a server whose operator did not list 127.0.0.2 refuses the stored server.
    const strict = new McpServerSource({
      guard: new OutboundAddressGuard({ allow: [], own: () => undefined }),
      servers: async (agent) =>
        server.server.services.agents.mcp.open(
          (await server.server.services.agents.resolve(
            { accountId: owner.accountId, keyId: 't', tier: 'pro_trial', namespace: null, scopes: ['read'] },
            owner.ns,
            { name: 'helper' },
            'read',
          ))!,
        ),
      logger: createLogger('info', new Writable({ write: (chunk, _e, done) => (lines.push(String(chunk)), done()) })),
      version: 'test',
    });
    const seenBefore = tiny.seen.length;
    assert.deepEqual(await strict.list(id, signal()), []);
    const call = await strict.call(id, 'tiny', 'echo', { text: 'hi' }, signal());
    assert.equal(call.isError, true);
    assert.match(call.content, /127\.0\.0\.2 is a loopback address/);
    assert.equal(tiny.seen.length, seenBefore, 'no request left');
    await strict.close();
  });

  test('names are resolved per request and the connection goes to the address checked; redirects are not followed out', async () => {
    const t2 = tiny.port['127.0.0.2']!;
    // A name whose answers change between requests (DNS rebinding): each request checks its own answer and connects to it.
    let answer = '127.0.0.2';
    const rebinding: Resolver = async () => [{ address: answer, family: 4 }];
    const guard = new OutboundAddressGuard({ allow: parseAgentMcpAllow('127.0.0.2'), own: () => undefined, resolve: rebinding });
    const seen = () => tiny.seen.filter((s) => s.local === '127.0.0.1').length;
    const onLoopback = seen();
    const first = await guard.fetch(`http://rebind.test:${t2}/mcp`, { method: 'GET' });
    assert.ok(first.status >= 200, 'the checked address answered');
    await first.body?.cancel();
    answer = '127.0.0.1';
    await assert.rejects(guard.fetch(`http://rebind.test:${tiny.port['127.0.0.1']}/mcp`, { method: 'GET' }), /loopback/);
    // One public answer and one private: refused (every answer is checked, not only the first).
    const mixed = new OutboundAddressGuard({
      allow: [],
      own: () => undefined,
      resolve: async () => [
        { address: '93.184.216.34', family: 4 },
        { address: '10.0.0.1', family: 4 },
      ],
    });
    await assert.rejects(mixed.check('http://mixed.test/mcp'), /10\.0\.0\.1, a private address/);

    // Redirects: to a refused address (not followed), and same-origin to a create path (checked again, refused).
    await ok(owner.create, 'configure_mcp_servers', {
      name: 'helper',
      servers: [
        { name: 'out', url: `http://127.0.0.2:${t2}/redirect-out` },
        { name: 'mgmt', url: `http://127.0.0.2:${t2}/redirect-create` },
      ],
    });
    const id = await agentId(owner, 'helper');
    assert.deepEqual(await server.server.services.attachedTools.list(id, signal()), []);
    assert.equal(seen(), onLoopback, 'nothing reached 127.0.0.1');
    assert.ok(!tiny.seen.some((s) => s.path.includes('/mcp/create')), 'the create path was never requested');
    assert.ok(
      lines.some((l) => l.includes('"mcp_server":"mgmt"') && /create endpoint/.test(l)),
      'refused as a create endpoint',
    );
  });

  test('the create endpoint is refused in every spelling, by path and by host', async () => {
    const base = server.url;
    const port = new URL(base).port;
    for (const url of [
      `${base}/mcp/create/${owner.ns}`,
      `${base}/MCP/Create/${owner.ns}`,
      `${base}/mcp%2Fcreate%2F${owner.ns}`,
      `${base}/mcp/%63reate/${owner.ns}`,
      `${base}/mcp/%2563reate/${owner.ns}`,
      `${base}/mcp//create/${owner.ns}`,
      `${base}/mcp/./create/${owner.ns}`,
      `${base}/mcp/run/../create/${owner.ns}`,
      `${base}/mcp\\create\\${owner.ns}`,
      `http://localhost:${port}/mcp/create/${owner.ns}`,
      `http://[::ffff:127.0.0.1]:${port}/mcp/create/${owner.ns}`,
      `http://${owner.ns}.create.localhost:${port}/`,
      `http://${owner.ns}.CREATE.localhost.:${port}/mcp`,
    ]) {
      const error = await refused(owner.create, 'configure_mcp_servers', { name: 'helper', servers: [{ name: 'mgmt', url }] });
      assert.equal(error.type, 'validation_error', url);
      assert.match(error.message, /create endpoint/, url);
    }
  });

  test('stdio servers are refused; [] detaches all; the tool needs write and execute', async () => {
    for (const server of [
      { name: 'shell', command: 'sh', args: ['-c', 'touch /tmp/mcpworks-pwned'] },
      { name: 'shell', url: 'https://example.com/mcp', command: 'node' },
      { name: 'shell', transport: 'stdio', url: 'https://example.com/mcp' },
    ]) {
      const error = await refused(owner.create, 'configure_mcp_servers', { name: 'helper', servers: [server] });
      assert.equal(error.type, 'validation_error');
      assert.match(error.message, /stdio servers are not supported: no command ever runs on this host/);
    }
    for (const scopes of [['read'], ['write'], ['read', 'execute']]) {
      const limited = await connect(`${server.url}/mcp/create/${owner.ns}`, await createKey(server.url, owner.account, { scopes }));
      const error = await refused(limited, 'configure_mcp_servers', { name: 'helper', servers: [] });
      assert.equal(error.type, 'forbidden', String(scopes));
      await limited.close();
    }
    const missing = await refused(owner.create, 'configure_mcp_servers', { name: 'nobody', servers: [] });
    assert.equal(missing.type, 'not_found');
    const detached = await ok(owner.create, 'configure_mcp_servers', { name: 'helper', servers: [] });
    assert.deepEqual([detached.mcp_servers, detached.detached], [[], true]);
    assert.equal((await ok(owner.create, 'describe_agent', { name: 'helper' })).config.mcp_servers, undefined);
    assert.deepEqual(await server.server.services.attachedTools.list(await agentId(owner, 'helper'), signal()), []);
  });

  test("an agent's model calls an attached server's tool (another account's run endpoint) in a real run; an attached make_function is never offered nor called", async () => {
    const llm: FakeLlm = await startFakeLlm();
    try {
      await ok(owner.create, 'make_agent', { name: 'caller' });
      await ok(owner.create, 'configure_agent_ai', {
        name: 'caller',
        provider: 'openai',
        model: 'gpt-test',
        api_key: `sk-caller-${Math.random().toString(36).slice(2, 14)}`,
        base_url: llm.openaiUrl,
      });
      await ok(owner.create, 'configure_mcp_servers', {
        name: 'caller',
        servers: [
          { name: 'peer', url: runUrl, headers: { Authorization: `Bearer ${peerKey}` } },
          { name: 'tiny', url: `http://127.0.0.2:${tiny.port['127.0.0.2']}/mcp`, headers: { 'X-Api-Key': TINY_SECRET } },
        ],
      });
      await callOk(owner.create, 'make_service', { name: 'hooks' });
      await callOk(owner.create, 'make_function', { service: 'hooks', name: 'noop', template: 'hello-world' });
      await ok(owner.create, 'add_webhook', {
        name: 'caller',
        path: 'ask',
        handler_function_name: 'hooks.noop',
        orchestration_mode: 'reason_first',
      });
      await ok(owner.create, 'start_agent', { name: 'caller' });
      llm.script([
        {
          toolCalls: [
            { id: 'c1', name: 'mcp__peer__utils__hello', arguments: { name: 'loop' } },
            { id: 'c2', name: 'mcp__tiny__make_function', arguments: { code: 'import os' } },
            // The server echoes its own credential: the model reads it redacted (attached headers are run secrets).
            { id: 'c3', name: 'mcp__tiny__echo', arguments: { text: `mine is ${TINY_SECRET} and ${peerKey}` } },
          ],
        },
        { text: 'The peer said hello.' },
      ]);
      const peerBefore = (await callOk(peer.create, 'list_executions', {})) as unknown[];
      const response = await fetch(`${server.url}/mcp/agent/${owner.ns}/caller/webhook/ask?wait=true`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ ask: 'greet the loop, then call make_function on tiny' }),
      });
      const delivered = (await response.json()) as { run_id: string };
      answers.push(delivered);
      assert.equal(response.status, 200, JSON.stringify(delivered));
      let run: Record<string, any> = {};
      for (let i = 0; i < 600; i++) {
        run = await ok(owner.create, 'describe_agent_run', { name: 'caller', run_id: delivered.run_id });
        if (run.status !== 'running') break;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      assert.equal(run.stop_reason, 'answered', JSON.stringify(run));
      assert.deepEqual(
        run.tool_calls.map((c: { name: string; kind: string; outcome: string }) => [c.name, c.kind, c.outcome]),
        [
          ['mcp__peer__utils__hello', 'mcp', 'ok'],
          ['mcp__tiny__make_function', 'refused', 'refused_forbidden'],
          ['mcp__tiny__echo', 'mcp', 'ok'],
        ],
      );
      const offered = ((llm.requests[0]!.body.tools ?? []) as Array<{ function: { name: string } }>).map((t) => t.function.name);
      assert.ok(offered.includes('mcp__peer__utils__hello') && offered.includes('mcp__tiny__echo'), offered.join(', '));
      assert.ok(!offered.some((n) => /make_function/.test(n)), offered.join(', '));
      const results = (llm.requests[1]!.body.messages as Array<{ role: string; content: string }>)
        .filter((m) => m.role === 'tool')
        .map((m) => m.content);
      assert.match(results[0]!, /Hello, loop/);
      assert.match(results[1]!, /refused/);
      assert.match(results[2]!, /^echo: mine is/);
      assert.ok(!results[2]!.includes(TINY_SECRET) && !results[2]!.includes(peerKey), results[2]);
      assert.deepEqual(tiny.authored, [], "the attached server's make_function was never called");
      // The peer's function ran on the peer's run endpoint: recorded (and metered) there.
      assert.equal(((await callOk(peer.create, 'list_executions', {})) as unknown[]).length, peerBefore.length + 1);
      await ok(owner.create, 'stop_agent', { name: 'caller' });
    } finally {
      await llm.close();
    }
  });

  test('the headers are in no answer, no log line, and not in plain text in the data dir', async () => {
    const secrets = [peerKey, TINY_SECRET];
    const text = JSON.stringify(answers);
    const log = lines.join('');
    assert.ok(lines.length > 3, 'the log was captured');
    for (const secret of secrets) {
      assert.ok(!text.includes(secret), 'a header value in an answer');
      assert.ok(!log.includes(secret), 'a header value in the log');
    }
    const dataDir = server.dataDir;
    const stopped = server;
    await stopped.server.close();
    assertNotInFiles(dataDir, secrets);
    server = undefined as never;
    await stopped.stop().catch(() => undefined);
  });
});
