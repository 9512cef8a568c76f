// test-database: postgres, LISTEN/NOTIFY on a real PostgreSQL and two server nodes sharing it
// Issue 12, item 3: `listChanged: true` is delivered. A client holding a session (2025 era: the
// standalone GET stream; 2026-07-28: subscriptions/listen) gets notifications/tools/list_changed
// when another client creates, updates or deletes a function of its namespace, on both run modes
// (tool mode's list; code mode's execute description), and only for its own namespace. On
// PostgreSQL the change is made on one node and heard on another's stream.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Client as ClientV2, StreamableHTTPClientTransport as TransportV2 } from '@modelcontextprotocol/client';
import { Client as ClientV1 } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport as TransportV1 } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import {
  callOk,
  connect,
  createAccount,
  EMBEDDED_RUN_ONLY,
  MODERN_PROTOCOL,
  parseResult,
  startTestServer,
  type ClientEra,
  type McpTestClient,
  type TestAccount,
  type TestServer,
} from '../test-support/harness.js';
import { until } from '../test-support/processes.js';
import { MAX_LISTEN_STREAMS_PER_ACCOUNT } from './list-changed.js';
import { MCP_SESSION_IDLE_MS } from '../store/accounts-store.js';
import type { Db } from '../store/database.js';
import { startPrivatePostgres, type PrivatePostgres } from '../test-support/private-postgres.js';

const HELLO = 'def main(input_data):\n    return {"n": 1}\n';
type Tool = { name: string; description?: string; outputSchema?: any };

interface Watcher {
  /** Every tool list the client re-read after a list_changed, in order. */
  lists: Tool[][];
  close(): Promise<void>;
}

/** An official SDK client of `era` on `url` whose listChanged handler records each refreshed list. */
async function watch(url: string, key: string, era: ClientEra): Promise<Watcher> {
  const lists: Tool[][] = [];
  const listChanged = {
    tools: { debounceMs: 0, onChanged: (error: unknown, tools: Tool[] | null) => void (!error && tools && lists.push(tools)) },
  };
  const headers = { authorization: `Bearer ${key}` };
  if (era === 'v1') {
    const client = new ClientV1({ name: 'watcher-v1', version: '1.0.0' }, { listChanged } as never);
    await client.connect(new TransportV1(new URL(url), { requestInit: { headers } }));
    return { lists, close: () => client.close() };
  }
  const client = new ClientV2({ name: 'watcher-v2', version: '1.0.0' }, {
    listChanged,
    ...(era === 'v2' ? { versionNegotiation: { mode: { pin: MODERN_PROTOCOL } } } : {}),
  } as never);
  await client.connect(new TransportV2(new URL(url), { requestInit: { headers } }));
  return { lists, close: () => client.close() };
}

const openStreams = (server: TestServer) => server.server.services.listChanged.openStreams;

async function waitForStreams(server: TestServer, n: number): Promise<void> {
  await until(
    `${n} open change streams`,
    async () => openStreams(server),
    (open) => open >= n,
  );
}

async function namespaceWith(base: string, account: TestAccount, fn: string): Promise<{ ns: string; create: McpTestClient }> {
  const ns = `lc-${Math.random().toString(36).slice(2, 10)}`;
  const create = await connect(`${base}/mcp/create/${ns}`, account.key);
  await callOk(create, 'make_namespace', { name: ns });
  await callOk(create, 'make_service', { name: 'm' });
  await callOk(create, 'make_function', { service: 'm', name: fn, code: HELLO });
  return { ns, create };
}

describe('notifications/tools/list_changed on one node', () => {
  let server: TestServer;
  let account: TestAccount;
  before(async () => {
    server = await startTestServer();
    account = await createAccount(server.url);
  });
  after(() => server.stop());

  for (const era of ['v1', 'v2-legacy', 'v2'] as const) {
    test(`${era}: update, create and delete reach tool mode and code mode; other namespaces hear nothing`, async () => {
      const { ns, create } = await namespaceWith(server.url, account, 'hello');
      const other = await namespaceWith(server.url, account, 'other');
      const before = openStreams(server);
      const tools = await watch(`${server.url}/mcp/run/${ns}?mode=tools`, account.key, era);
      const code = await watch(`${server.url}/mcp/run/${ns}`, account.key, era);
      const bystander = await watch(`${server.url}/mcp/run/${other.ns}?mode=tools`, account.key, era);
      await waitForStreams(server, before + 3);

      // update_function changes the output_schema: the re-read list carries the new one.
      await callOk(create, 'update_function', {
        service: 'm',
        name: 'hello',
        output_schema: { type: 'object', properties: { n: { type: 'integer' } } },
      });
      const updated = await until(
        'the tool-mode list after update_function',
        async () => tools.lists.at(-1),
        (list) => !!list?.find((t) => t.name === 'm__hello')?.outputSchema,
      );
      assert.deepEqual(updated!.find((t) => t.name === 'm__hello')!.outputSchema, {
        type: 'object',
        properties: { n: { type: 'integer' } },
      });

      // make_function: code mode's execute description now names it.
      await callOk(create, 'make_function', { service: 'm', name: 'added', code: HELLO });
      const described = await until(
        'the execute description after make_function',
        async () => code.lists.at(-1),
        (list) => !!list?.[0]?.description?.includes('m.added'),
      );
      assert.equal(described!.length, 1);

      // delete_function: the tool is gone from tool mode's list.
      await callOk(create, 'delete_function', { service: 'm', name: 'added' });
      await until(
        'the tool-mode list after delete_function',
        async () => tools.lists.at(-1),
        (list) => !!list && !list.some((t) => t.name === 'm__added') && list.some((t) => t.name === 'm__hello'),
      );

      // The other namespace's stream heard none of that: its first notification is its own change.
      await callOk(other.create, 'update_function', { service: 'm', name: 'other', description: 'changed' });
      await until(
        'the bystander notified of its own change',
        async () => bystander.lists.length,
        (n) => n >= 1,
      );
      assert.equal(bystander.lists.length, 1, 'one notification: its own change only');
      assert.match(bystander.lists[0]!.find((t) => t.name === 'm__other')!.description!, /^changed/);

      for (const c of [tools, code, bystander, create, other.create]) await c.close();
    });
  }

  test('the GET stream: a session is required, owned, accepting SSE, one stream per session; refusals are JSON-RPC errors', async () => {
    const { ns, create } = await namespaceWith(server.url, account, 'hello');
    const url = `${server.url}/mcp/run/${ns}`;
    const get = (headers: Record<string, string>) =>
      fetch(url, { headers: { authorization: `Bearer ${account.key}`, accept: 'text/event-stream', ...headers } });
    const expectRefusal = async (response: Response, status: number) => {
      assert.equal(response.status, status);
      const body = (await response.json()) as any;
      assert.equal(body.jsonrpc, '2.0');
      assert.equal(body.id, null);
      assert.equal(typeof body.error.code, 'number');
      assert.equal(typeof body.error.message, 'string');
    };
    await expectRefusal(await get({}), 400);
    await expectRefusal(await get({ 'mcp-session-id': 'not-a-session' }), 404);
    const session = await connect(url, account.key, 'v2-legacy');
    const id = session.sessionId()!;
    // The SDK client opened its GET stream already: a second on the same session is a conflict.
    await waitForStreams(server, 1);
    await expectRefusal(await get({ 'mcp-session-id': id }), 409);
    await expectRefusal(await get({ 'mcp-session-id': id, accept: 'application/json' }), 406);
    // Another account's key cannot attach to this session: not found.
    const stranger = await createAccount(server.url);
    const foreign = await fetch(url, {
      headers: { authorization: `Bearer ${stranger.key}`, accept: 'text/event-stream', 'mcp-session-id': id },
    });
    await expectRefusal(foreign, 404);
    await session.close();
    await create.close();
  });

  for (const era of ['v1', 'v2-legacy'] as const) {
    test(`${era}: an open GET stream keeps its session alive past the idle hour; a closed one does not`, async () => {
      const { ns, create } = await namespaceWith(server.url, account, 'hello');
      const store = server.server.services.accountsStore;
      const db = (store as unknown as { db: Db }).db;
      const client = await connect(`${server.url}/mcp/run/${ns}?mode=tools`, account.key, era);
      const id = client.sessionId()!;
      const idle = new Date(Date.now() - MCP_SESSION_IDLE_MS + 60_000);
      await until(
        'the GET stream of the session',
        async () => openStreams(server),
        (open) => open >= 1,
      );
      // The client has been quiet 59 minutes but listens: the stream's touch starts its hour again.
      await db.updateTable('mcp_sessions').set({ last_seen_at: idle }).where('id', '=', id).execute();
      await server.server.services.sessionActivity.refresh();
      const seen = (await store.findMcpSession(id))!.last_seen_at;
      assert.ok(new Date(seen).getTime() > Date.now() - 60_000, `${era}: the session was marked used (${new Date(seen).toISOString()})`);
      assert.equal(parseResult(await client.callTool('m__hello', {})).n, 1);
      // Closed: its session is no longer marked by the streams.
      const other = await connect(`${server.url}/mcp/run/${ns}?mode=tools`, account.key, era);
      await until(
        'the second GET stream',
        async () => openStreams(server),
        (open) => open >= 2,
      );
      // The stream's hold is written (it marks the session used) before the test makes it look idle.
      await until(
        "the second stream's hold",
        async () =>
          (await db.selectFrom('mcp_session_holds').select('node_id').where('session_id', '=', other.sessionId()!).execute()).length,
        (holds) => holds >= 1,
      );
      await db.updateTable('mcp_sessions').set({ last_seen_at: idle }).where('id', '=', other.sessionId()!).execute();
      await other.close();
      await until(
        'the second stream closed',
        async () => openStreams(server),
        (open) => open <= 1,
      );
      await server.server.services.sessionActivity.refresh();
      assert.equal(
        new Date(
          (await db.selectFrom('mcp_sessions').select('last_seen_at').where('id', '=', other.sessionId()!).executeTakeFirst())
            ?.last_seen_at ?? idle,
        ).getTime(),
        idle.getTime(),
      );
      await client.close();
      await create.close();
    });
  }
});

// Counted in the node's memory: skipped, with its server, in the PostgreSQL run (it ran, the same, in the embedded run).
describe('subscriptions/listen streams are capped per account', { skip: EMBEDDED_RUN_ONLY }, () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
  });
  after(() => server.stop());

  test(`${MAX_LISTEN_STREAMS_PER_ACCOUNT} open per account and node; one more is a JSON-RPC 429; other accounts and a freed place are served`, async () => {
    const account = await createAccount(server.url);
    const { ns, create } = await namespaceWith(server.url, account, 'hello');
    const url = `${server.url}/mcp/run/${ns}?mode=tools`;
    const modern = async (key: string) => {
      const client = new ClientV2({ name: 'listener', version: '1.0.0' }, {
        versionNegotiation: { mode: { pin: MODERN_PROTOCOL } },
      } as never);
      await client.connect(new TransportV2(new URL(url), { requestInit: { headers: { authorization: `Bearer ${key}` } } }));
      return client;
    };
    const client = await modern(account.key);
    const subscriptions = [];
    for (let i = 0; i < MAX_LISTEN_STREAMS_PER_ACCOUNT; i++) subscriptions.push(await client.listen({ toolsListChanged: true }));
    await assert.rejects(client.listen({ toolsListChanged: true }));
    const raw = await fetch(url, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${account.key}`,
        'content-type': 'application/json',
        accept: 'application/json, text/event-stream',
        'mcp-protocol-version': MODERN_PROTOCOL,
      },
      body: JSON.stringify({
        jsonrpc: '2.0',
        id: 'l',
        method: 'subscriptions/listen',
        params: {
          notifications: { toolsListChanged: true },
          _meta: {
            'io.modelcontextprotocol/protocolVersion': MODERN_PROTOCOL,
            'io.modelcontextprotocol/clientInfo': { name: 'raw', version: '1' },
            'io.modelcontextprotocol/clientCapabilities': {},
          },
        },
      }),
    });
    assert.equal(raw.status, 429);
    const body = (await raw.json()) as any;
    assert.equal(body.jsonrpc, '2.0');
    assert.equal(typeof body.error.code, 'number');
    const other = await createAccount(server.url);
    const otherClient = await modern(other.key);
    const otherSubscription = await otherClient.listen({ toolsListChanged: true });
    await subscriptions.pop()!.close();
    await until(
      'the closed stream frees its place',
      async () =>
        client.listen({ toolsListChanged: true }).then(
          (s) => subscriptions.push(s),
          () => undefined,
        ),
      (ok) => ok !== undefined,
    );
    for (const s of [...subscriptions, otherSubscription]) await s.close();
    for (const c of [client, otherClient, create]) await c.close();
  });
});

describe(
  'across nodes (PostgreSQL): a change on node A reaches the stream on node B',
  { skip: !process.env.MCPWORKS_TEST_DATABASE_URL },
  () => {
    let nodeA: TestServer;
    let nodeB: TestServer;
    let account: TestAccount;
    before(async () => {
      nodeA = await startTestServer();
      nodeB = await startTestServer({ databaseUrl: nodeA.databaseUrl });
      account = await createAccount(nodeA.url);
    });
    after(async () => {
      await nodeB?.stop();
      await nodeA?.stop();
    });

    for (const era of ['v1', 'v2'] as const) {
      test(`${era}: update_function on A; B's stream is told and B's tools/list (its rendered cache) is current`, async () => {
        const { ns, create } = await namespaceWith(nodeA.url, account, 'hello');
        const onB = await watch(`${nodeB.url}/mcp/run/${ns}?mode=tools`, account.key, era);
        // B renders and caches the list before the change.
        const direct = await connect(`${nodeB.url}/mcp/run/${ns}?mode=tools`, account.key, era);
        assert.equal((await direct.listTools()).tools.find((t) => t.name === 'm__hello')!.description?.startsWith('v2 text'), false);
        await waitForStreams(nodeB, 1);
        await callOk(create, 'update_function', {
          service: 'm',
          name: 'hello',
          description: 'v2 text',
          output_schema: { type: 'object', properties: { n: { type: 'integer' } } },
        });
        const seen = await until(
          "B's list after A's update",
          async () => onB.lists.at(-1),
          (list) => !!list?.find((t) => t.name === 'm__hello')?.outputSchema,
        );
        assert.match(seen!.find((t) => t.name === 'm__hello')!.description!, /^v2 text/);
        assert.ok((await direct.listTools()).tools.find((t) => t.name === 'm__hello')!.description!.startsWith('v2 text'));
        for (const c of [onB, direct, create]) await c.close();
      });
    }
  },
);

describe('the listening connection survives a PostgreSQL restart', { skip: !process.env.MCPWORKS_TEST_DATABASE_URL }, () => {
  let database: PrivatePostgres;
  let server: TestServer;
  before(async () => {
    database = startPrivatePostgres();
    server = await startTestServer({ databaseUrl: database.url });
  });
  after(async () => {
    await server?.stop();
    database?.remove();
  });

  test('stopped and started: the streams are told to re-list (changes meanwhile were not announced), then hear changes again', async () => {
    const account = await createAccount(server.url);
    const { ns, create } = await namespaceWith(server.url, account, 'hello');
    const watcher = await watch(`${server.url}/mcp/run/${ns}?mode=tools`, account.key, 'v2-legacy');
    await waitForStreams(server, 1);
    database.stop('fast');
    database.start();
    // The reconnected listener tells every stream; the client re-reads its list.
    await until(
      'the resync after the restart',
      async () => watcher.lists.length,
      (n) => n >= 1,
    );
    await until(
      'a change made after the restart',
      async () => {
        const made = await create.callTool('update_function', { service: 'm', name: 'hello', description: 'after restart' });
        return !made.isError;
      },
      (ok) => ok,
    );
    await until(
      'the change heard',
      async () => watcher.lists.at(-1),
      (list) => !!list?.find((t) => t.name === 'm__hello')?.description?.startsWith('after restart'),
    );
    for (const c of [watcher, create]) await c.close();
  });
});
