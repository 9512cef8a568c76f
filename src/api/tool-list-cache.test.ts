// test-database: postgres, two nodes on one database see each other's catalog changes
/**
 * The run endpoint's rendered catalog (tool mode's serialised tools/list, code mode's execute
 * description) is cached per namespace and catalog version: every change (make, update, delete,
 * restore) shows at once, in every session and on every node sharing the database.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { RenderedCache } from './rendered-cache.js';
import {
  callOk,
  connect,
  createAccount,
  startTestServer,
  type ClientEra,
  type McpTestClient,
  type TestServer,
} from '../test-support/harness.js';

const code = 'def main(input_data):\n    return {"ok": True}\n';
const schema = (field: string) => ({ type: 'object', properties: { [field]: { type: 'string' } } });

type Listed = Array<{ name: string; description?: string; inputSchema: any }>;

/** Tool mode: name -> description and property names; code mode: the execute tool's description. */
async function toolsView(client: McpTestClient): Promise<Map<string, string>> {
  const { tools } = (await client.listTools()) as { tools: Listed };
  return new Map(tools.map((t) => [t.name, `${t.description} ${Object.keys(t.inputSchema.properties ?? {}).join(',')}`]));
}

async function executeDescription(client: McpTestClient): Promise<string> {
  const { tools } = (await client.listTools()) as { tools: Listed };
  assert.deepEqual(
    tools.map((t) => t.name),
    ['execute'],
  );
  return tools[0]!.description ?? '';
}

describe('rendered catalog cache', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
  });
  after(async () => {
    await server?.stop();
  });

  test('tools/list and the execute description follow make, update, delete and restore, in every session and both eras', async () => {
    const account = await createAccount(server.url);
    const ns = `cache-${Math.random().toString(36).slice(2, 8)}`;
    const create = await connect(`${server.url}/mcp/create/${ns}`, account.key);
    await callOk(create, 'make_namespace', { name: ns });
    await callOk(create, 'make_service', { name: 'utils' });
    await callOk(create, 'make_function', {
      service: 'utils',
      name: 'alpha',
      language: 'python',
      code,
      description: 'first alpha',
      input_schema: schema('a1'),
    });

    const eras: ClientEra[] = ['v2', 'v1', 'v2-legacy'];
    const toolClients = await Promise.all(eras.map((era) => connect(`${server.url}/mcp/run/${ns}?mode=tools`, account.key, era)));
    const codeClients = await Promise.all(eras.slice(0, 2).map((era) => connect(`${server.url}/mcp/run/${ns}`, account.key, era)));
    const expectEverywhere = async (step: string, tools: Record<string, string>, codeNames: string[]) => {
      for (const client of toolClients) {
        // Twice: the second list is served from the cache.
        for (let round = 0; round < 2; round++) {
          const view = await toolsView(client);
          assert.deepEqual(
            Object.fromEntries([...view].filter(([name]) => name !== '_env_status')),
            tools,
            `${step}: tool mode (${client.era}, list ${round + 1})`,
          );
          assert.ok(view.has('_env_status'), `${step}: _env_status listed`);
        }
      }
      for (const client of codeClients) {
        const description = await executeDescription(client);
        assert.match(
          description,
          new RegExp(`Functions: ${codeNames.length ? codeNames.join(', ') : '\\(none yet\\)'}\\.$`),
          `${step}: code mode (${client.era})`,
        );
      }
    };
    try {
      await expectEverywhere('made', { utils__alpha: 'first alpha [python, v1] a1' }, ['utils.alpha']);

      await callOk(create, 'make_function', {
        service: 'utils',
        name: 'beta',
        language: 'python',
        code,
        description: 'the beta',
        input_schema: schema('b1'),
      });
      await expectEverywhere('second made', { utils__alpha: 'first alpha [python, v1] a1', utils__beta: 'the beta [python, v1] b1' }, [
        'utils.alpha',
        'utils.beta',
      ]);

      await callOk(create, 'update_function', { service: 'utils', name: 'alpha', input_schema: schema('a2'), description: 'second alpha' });
      await expectEverywhere('updated', { utils__alpha: 'second alpha [python, v2] a2', utils__beta: 'the beta [python, v1] b1' }, [
        'utils.alpha',
        'utils.beta',
      ]);

      // Metadata only: no new version, but the listed description changes.
      await callOk(create, 'update_function', { service: 'utils', name: 'beta', description: 'beta renamed' });
      await expectEverywhere('described', { utils__alpha: 'second alpha [python, v2] a2', utils__beta: 'beta renamed [python, v1] b1' }, [
        'utils.alpha',
        'utils.beta',
      ]);

      await callOk(create, 'update_function', { service: 'utils', name: 'alpha', restore_version: 1 });
      await expectEverywhere('restored', { utils__alpha: 'second alpha [python, v3] a1', utils__beta: 'beta renamed [python, v1] b1' }, [
        'utils.alpha',
        'utils.beta',
      ]);

      await callOk(create, 'delete_function', { service: 'utils', name: 'beta' });
      await expectEverywhere('deleted', { utils__alpha: 'second alpha [python, v3] a1' }, ['utils.alpha']);

      await callOk(create, 'delete_service', { name: 'utils' });
      await expectEverywhere('service deleted', {}, []);
    } finally {
      await Promise.all([...toolClients, ...codeClients, create].map((c) => c.close().catch(() => {})));
    }
    const health = await fetch(`${server.url}/healthz`);
    assert.equal(health.status, 200);
  });

  test('another account never gets the cached list of a namespace it does not own', async () => {
    const owner = await createAccount(server.url);
    const ns = `cache-${Math.random().toString(36).slice(2, 8)}`;
    const create = await connect(`${server.url}/mcp/create/${ns}`, owner.key);
    await callOk(create, 'make_namespace', { name: ns });
    await callOk(create, 'make_service', { name: 'utils' });
    await callOk(create, 'make_function', { service: 'utils', name: 'secret-tool', language: 'python', code });
    const ownerClient = await connect(`${server.url}/mcp/run/${ns}?mode=tools`, owner.key);
    assert.ok((await toolsView(ownerClient)).has('utils__secret-tool'), 'the owner lists it (and fills the cache)');
    const stranger = await createAccount(server.url);
    const strangerClient = await connect(`${server.url}/mcp/run/${ns}?mode=tools`, stranger.key);
    // The stranger's own namespace, built the same way, is at the same catalog version.
    const own = `${ns}-own`;
    const strangerCreate = await connect(`${server.url}/mcp/create/${own}`, stranger.key);
    await callOk(strangerCreate, 'make_namespace', { name: own });
    await callOk(strangerCreate, 'make_service', { name: 'utils' });
    await callOk(strangerCreate, 'make_function', { service: 'utils', name: 'other-tool', language: 'python', code });
    const strangerOwn = await connect(`${server.url}/mcp/run/${own}?mode=tools`, stranger.key);
    try {
      assert.deepEqual([...(await toolsView(strangerClient)).keys()], ['_env_status']);
      assert.deepEqual([...(await toolsView(strangerOwn)).keys()], ['utils__other-tool', '_env_status']);
      assert.deepEqual([...(await toolsView(ownerClient)).keys()], ['utils__secret-tool', '_env_status']);
    } finally {
      await Promise.all([ownerClient, strangerClient, strangerOwn, strangerCreate, create].map((c) => c.close().catch(() => {})));
    }
  });
});

describe(
  'rendered catalog cache on two nodes',
  { skip: !process.env.MCPWORKS_TEST_DATABASE_URL && 'needs PostgreSQL (MCPWORKS_TEST_DATABASE_URL)' },
  () => {
    let first: TestServer;
    let second: TestServer;
    before(async () => {
      first = await startTestServer();
      second = await startTestServer({ databaseUrl: first.databaseUrl });
    });
    after(async () => {
      await second?.stop();
      await first?.stop();
    });

    test('a change made through one node shows in the lists of the other', async () => {
      const account = await createAccount(first.url);
      const ns = `nodes-${Math.random().toString(36).slice(2, 8)}`;
      const createOnSecond = await connect(`${second.url}/mcp/create/${ns}`, account.key);
      await callOk(createOnSecond, 'make_namespace', { name: ns });
      await callOk(createOnSecond, 'make_service', { name: 'utils' });
      await callOk(createOnSecond, 'make_function', {
        service: 'utils',
        name: 'alpha',
        language: 'python',
        code,
        input_schema: schema('a1'),
      });
      const onFirst = await connect(`${first.url}/mcp/run/${ns}?mode=tools`, account.key);
      const codeOnFirst = await connect(`${first.url}/mcp/run/${ns}`, account.key, 'v1');
      try {
        assert.equal((await toolsView(onFirst)).get('utils__alpha'), 'utils.alpha [python, v1] a1');
        assert.match(await executeDescription(codeOnFirst), /Functions: utils\.alpha\.$/);
        await callOk(createOnSecond, 'update_function', { service: 'utils', name: 'alpha', input_schema: schema('a2') });
        await callOk(createOnSecond, 'make_function', { service: 'utils', name: 'beta', language: 'python', code });
        const view = await toolsView(onFirst);
        assert.equal(view.get('utils__alpha'), 'utils.alpha [python, v2] a2', 'the first node lists the version the second node made');
        assert.ok(view.has('utils__beta'));
        assert.match(await executeDescription(codeOnFirst), /Functions: utils\.alpha, utils\.beta\.$/);
        await callOk(createOnSecond, 'delete_function', { service: 'utils', name: 'beta' });
        assert.ok(!(await toolsView(onFirst)).has('utils__beta'));
      } finally {
        await Promise.all([onFirst, codeOnFirst, createOnSecond].map((c) => c.close().catch(() => {})));
      }
    });
  },
);

describe('RenderedCache', () => {
  test('serves a key only at its version, replaces older versions and stays within its bytes', () => {
    const cache = new RenderedCache<string>(10, (value) => value.length);
    let renders = 0;
    const render = (value: string) => () => {
      renders++;
      return value;
    };
    assert.equal(cache.get('a', 1, render('aaaa')), 'aaaa');
    assert.equal(cache.get('a', 1, render('zzzz')), 'aaaa', 'a hit at the same version');
    assert.equal(cache.get('a', 2, render('AAAA')), 'AAAA', 'another version is rendered again');
    assert.equal(cache.get('a', 1, render('aaaa')), 'aaaa', 'never an entry of another version');
    assert.deepEqual(cache.size, { entries: 1, bytes: 4 });
    cache.get('b', 1, render('bbbb'));
    cache.get('a', 1, render('x'));
    cache.get('c', 1, render('cccc'));
    // 4 (a) + 4 (b) + 4 (c) > 10: the least recently used (b) goes.
    assert.deepEqual(cache.size, { entries: 2, bytes: 8 });
    const before = renders;
    cache.get('a', 1, render('x'));
    cache.get('c', 1, render('x'));
    assert.equal(renders, before, 'a and c stayed');
    cache.get('b', 1, render('bbbb'));
    assert.equal(renders, before + 1, 'b was evicted');
    assert.equal(cache.get('huge', 1, render('0123456789ab')), '0123456789ab', 'a value larger than the cache is served');
    assert.ok(cache.size.bytes <= 10);
  });
});
