// test-database: embedded, the dashboard's Agents routes over HTTP; nothing here races or depends on the database
// The Agents page's JSON routes on the real server, reached by a login session: they call the agent
// tools' own code, so the plan's agent slots, the replicas cap, the outbound rules of an AI base_url
// and the sealing of the AI key hold as on the MCP endpoint. Another account's agent is not found
// on every route; bad input is a JSON 400 with error and error_type and changes nothing. One server
// for the file; one agent started (real replica workers) to chat with the fake LLM.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { fakeLlmAllow, startFakeLlm, type FakeLlm } from '../test-support/fake-llm.js';
import { callError, callOk, postJson, startTestServer, type TestServer } from '../test-support/harness.js';
import { newOwner, until, type Owner } from '../test-support/owners.js';
import { STATE_VIEW_MAX_CHARS } from './dashboard-agents.js';

let server: TestServer;
let llm: FakeLlm;
before(async () => {
  llm = await startFakeLlm();
  server = await startTestServer({ agentMcpAllow: fakeLlmAllow() });
});
after(async () => {
  await server?.stop();
  await llm?.close();
});

const AI_KEY = 'sk-ant-dashboard-secret-0123456789';
const sessionOf = (o: Owner) => ({ authorization: `Bearer ${o.account.token}` });
const get = async (path: string, headers: Record<string, string>) => {
  const response = await fetch(`${server.url}${path}`, { headers });
  return { status: response.status, body: await response.json() };
};
const post = (path: string, body: unknown, headers: Record<string, string>) => postJson(`${server.url}${path}`, body, headers);

describe('dashboard: agents (session routes)', () => {
  test("make, scale within the plan's slots, AI settings never showing the key; bad input is a 400 that changes nothing", async () => {
    const a = await newOwner(server, 'dag');
    const auth = sessionOf(a);
    const base = `/api/agents/${a.ns}/bot`;
    assert.equal((await post(`/api/agents/${a.ns}`, { name: 'bot', description: 'the page made me' }, auth)).status, 201);
    const listed = await get('/api/agents', auth);
    assert.equal(listed.status, 200);
    assert.deepEqual(
      listed.body.namespaces.find((n: { name: string }) => n.name === a.ns).agents.map((x: { name: string }) => x.name),
      ['bot'],
    );
    assert.ok(listed.body.ai_providers.includes('anthropic'));

    const scaled = await post(`${base}/scale`, { replicas: 2 }, auth);
    assert.equal(scaled.status, 200, JSON.stringify(scaled.body));
    const described = await get(base, auth);
    assert.equal(described.body.desired_replicas, 2);
    assert.equal(described.body.replicas.length, 2);
    for (const r of described.body.replicas) assert.match(r.name, /^[a-z]+-[a-z]+$/);

    // The plan's agent slots (pro_trial: 5) and the replicas cap hold here as in scale_agent.
    for (const [body, type] of [
      [{ replicas: 6 }, 'limit_exceeded'],
      [{ replicas: 100000 }, 'validation_error'],
      [{ replicas: -1 }, 'validation_error'],
      [{ replicas: '2' }, 'validation_error'],
      [{}, 'validation_error'],
    ] as const) {
      const refused = await post(`${base}/scale`, body, auth);
      assert.ok(refused.status === 400 || refused.status === 403 || refused.status === 429, `${JSON.stringify(body)}: ${refused.status}`);
      assert.equal(refused.body.error_type, type, JSON.stringify(refused.body));
      assert.equal(typeof refused.body.error, 'string');
    }
    assert.equal((await post(`${base}/scale`, '{oops', auth)).status, 400);
    assert.equal((await post(`${base}/start`, { replica: 'Not A Name' }, auth)).body.error_type, 'validation_error');
    assert.equal((await get(base, auth)).body.desired_replicas, 2, 'nothing changed');
    assert.equal((await get(base, auth)).body.status, 'stopped', 'nothing changed');
    // The path names the agent: a body naming another one is not followed.
    await callOk(a.create, 'make_agent', { name: 'other' });
    assert.equal((await post(`${base}/scale`, { replicas: 1, name: 'other', agent_name: 'other' }, auth)).status, 200);
    assert.equal((await get(base, auth)).body.desired_replicas, 1);
    assert.equal((await get(`/api/agents/${a.ns}/other`, auth)).body.desired_replicas, 1);

    // AI: the key sealed, never answered (not even a prefix); a refused base_url or provider changes nothing.
    const configured = await post(
      `${base}/ai`,
      { provider: 'anthropic', model: 'claude-test', api_key: AI_KEY, base_url: llm.anthropicUrl },
      auth,
    );
    assert.equal(configured.status, 200, JSON.stringify(configured.body));
    for (const bad of [
      { provider: 'nobody', model: 'm', api_key: 'k' },
      { provider: 'openai', model: 'm', api_key: 'k', base_url: 'http://10.1.2.3:8080/v1' },
      { provider: 'openai', model: 'm' },
    ]) {
      const refused = await post(`${base}/ai`, bad, auth);
      assert.equal(refused.status, 400, JSON.stringify(refused.body));
      assert.equal(refused.body.error_type, 'validation_error');
    }
    const ai = (await get(base, auth)).body;
    assert.equal(ai.config.ai.provider, 'anthropic');
    assert.equal(ai.config.ai.model, 'claude-test');
    assert.equal(ai.config.ai.base_url, llm.anthropicUrl);
    for (const shown of [JSON.stringify(configured.body), JSON.stringify(ai)])
      assert.ok(!shown.includes(AI_KEY.slice(0, 10)) && !shown.includes(AI_KEY.slice(-10)), 'the key is never shown');

    // State: keys listed, a value shown on its own and cut at the cap with a marker.
    const big = 'x'.repeat(STATE_VIEW_MAX_CHARS * 2);
    await callOk(a.create, 'set_agent_state', { name: 'bot', key: 'feeds/hn', value: { items: [1, 2] } });
    await callOk(a.create, 'set_agent_state', { name: 'bot', key: 'big', value: big });
    const keys = (await get(`${base}/state`, auth)).body.keys.map((k: { key: string }) => k.key);
    assert.deepEqual(keys, ['big', 'feeds/hn']);
    const small = (await get(`${base}/state-value?key=${encodeURIComponent('feeds/hn')}`, auth)).body;
    assert.deepEqual(JSON.parse(small.text), { items: [1, 2] });
    assert.equal(small.truncated, false);
    const cut = (await get(`${base}/state-value?key=big`, auth)).body;
    assert.equal(cut.truncated, true);
    assert.ok(cut.text.length < STATE_VIEW_MAX_CHARS + 100 && /cut at/.test(cut.text));
    for (const path of [
      `${base}/state-value`,
      `${base}/state-value?key=`,
      `${base}/state?limit=x`,
      `${base}/runs?limit=0`,
      `${base}/fires?limit=-1`,
    ]) {
      const bad = await get(path, auth);
      assert.equal(bad.status, 400, path);
      assert.equal(bad.body.error_type, 'validation_error', path);
    }
    assert.equal((await get(`${base}/state-value?key=nope`, auth)).status, 404);

    // Only a login session: none, or an API key, is 401.
    assert.equal((await get('/api/agents', {})).status, 401);
    assert.equal((await get(base, { authorization: `Bearer ${a.account.key}` })).status, 401);
    assert.equal((await post(`${base}/scale`, { replicas: 1 }, { authorization: `Bearer ${a.account.key}` })).status, 401);
  });

  test('what the database cannot hold (NUL, a lone surrogate, a year past its range, a made-up cursor) is a 400 on the page and on MCP, never a 500; long texts the tools take are taken', async () => {
    const a = await newOwner(server, 'dag-text');
    await callOk(a.create, 'make_agent', { name: 'bot' });
    const auth = sessionOf(a);
    const base = `/api/agents/${a.ns}/bot`;
    const ai = { provider: 'anthropic', model: 'm', api_key: 'k', base_url: llm.anthropicUrl };
    for (const body of [
      { ...ai, system_prompt: 'hi\u0000there' },
      { ...ai, model: 'm\ud800' },
      { ...ai, system_prompt: 'tail \udc00' },
    ]) {
      const refused = await post(`${base}/ai`, body, auth);
      assert.equal(refused.status, 400, JSON.stringify(body));
      assert.equal(refused.body.error_type, 'validation_error');
      const tool = await callError(a.create, 'configure_agent_ai', { name: 'bot', ...body });
      assert.equal(tool.type, 'validation_error', JSON.stringify(body));
    }
    assert.equal((await callOk(a.create, 'describe_agent', { name: 'bot' })).config.ai, undefined, 'nothing stored');
    const cursor = (startedAt: string, id: string) => Buffer.from(JSON.stringify([startedAt, id])).toString('base64url');
    for (const [path, tool, args] of [
      ['/api/executions?since=-271821-04-20T00:00:00.000Z', 'list_executions', { since: '-271821-04-20T00:00:00.000Z' }],
      ['/api/security-events?since=%2B275760-09-13T00:00:00.000Z', 'list_security_events', { since: '+275760-09-13T00:00:00.000Z' }],
      [
        `${base}/runs?before=${cursor('-271821-04-20T00:00:00.000Z', 'x')}`,
        'list_agent_runs',
        { name: 'bot', before: cursor('-271821-04-20T00:00:00.000Z', 'x') },
      ],
      [
        `${base}/runs?before=${cursor(new Date().toISOString(), 'x\u0000')}`,
        'list_agent_runs',
        { name: 'bot', before: cursor(new Date().toISOString(), 'x\u0000') },
      ],
    ] as const) {
      const refused = await get(path, auth);
      assert.equal(refused.status, 400, path);
      assert.equal(refused.body.error_type, 'validation_error', path);
      assert.equal((await callError(a.create, tool, args)).type, 'validation_error', `${tool} ${JSON.stringify(args)}`);
    }
    // 30,000 characters of three UTF-8 bytes each (90 KB): within the tools' 32,000, so taken on the page too.
    const long = await post(`${base}/ai`, { ...ai, system_prompt: '\u4e2d'.repeat(30_000) }, auth);
    assert.equal(long.status, 200, JSON.stringify(long.body));
  });

  test("another account's agent is not found on every route, and nothing of it changes", async () => {
    const a = await newOwner(server, 'dag-a');
    const b = await newOwner(server, 'dag-b');
    await callOk(a.create, 'make_agent', { name: 'mine' });
    await callOk(a.create, 'set_agent_state', { name: 'mine', key: 'k', value: 1 });
    const base = `/api/agents/${a.ns}/mine`;
    const other = sessionOf(b);
    for (const path of [base, `${base}/state`, `${base}/state-value?key=k`, `${base}/runs`, `${base}/runs/some-run`, `${base}/fires`]) {
      const seen = await get(path, other);
      assert.equal(seen.status, 404, path);
      assert.equal(seen.body.error_type, 'not_found', path);
      assert.doesNotMatch(JSON.stringify(seen.body), /mine/, `${path}: the agent is not named`);
    }
    for (const [verb, body] of [
      ['start', {}],
      ['stop', {}],
      ['scale', { replicas: 3 }],
      ['ai', { provider: 'anthropic', model: 'm', api_key: 'k', base_url: llm.anthropicUrl }],
      ['chat', { message: 'hi' }],
    ] as const) {
      const refused = await post(`${base}/${verb}`, body, other);
      assert.equal(refused.status, 404, verb);
    }
    assert.equal((await post(`/api/agents/${a.ns}`, { name: 'intruder' }, other)).status, 404);
    const listed = (await get('/api/agents', other)).body.namespaces.map((n: { name: string }) => n.name);
    assert.deepEqual(listed, [b.ns]);
    const mine = await callOk(a.create, 'describe_agent', { name: 'mine' });
    assert.equal(mine.desired_replicas, 1);
    assert.equal(mine.status, 'stopped');
    assert.equal(mine.config.ai, undefined);
    assert.deepEqual(
      (await callOk(a.create, 'list_agents', {})).map((x: { name: string }) => x.name),
      ['mine'],
    );
  });

  test('a cross-site POST with the session cookie is refused on every Agents write, and changes nothing', async () => {
    const a = await newOwner(server, 'dag-csrf');
    await callOk(a.create, 'make_agent', { name: 'target' });
    const login = await post('/api/login', { email: a.account.email, password: a.account.password, session: 'cookie' }, {});
    const cookie = login.headers.get('set-cookie')!.split(';')[0]!;
    const base = `/api/agents/${a.ns}/target`;
    const writes: Array<[string, unknown]> = [
      [`/api/agents/${a.ns}`, { name: 'forged' }],
      [`${base}/scale`, { replicas: 3 }],
      [`${base}/start`, {}],
      [`${base}/ai`, { provider: 'anthropic', model: 'm', api_key: 'k', base_url: llm.anthropicUrl }],
      [`${base}/chat`, { message: 'hi' }],
    ];
    const forged: Array<Record<string, string>> = [
      { origin: 'http://evil.example', 'content-type': 'application/json' },
      { 'sec-fetch-site': 'cross-site', 'content-type': 'application/json' },
      { 'content-type': 'text/plain' },
    ];
    for (const headers of forged) {
      for (const [path, body] of writes) {
        const response = await fetch(`${server.url}${path}`, {
          method: 'POST',
          headers: { cookie, ...headers },
          body: JSON.stringify(body),
        });
        assert.ok(response.status === 403 || response.status === 415, `${path} ${JSON.stringify(headers)}: ${response.status}`);
      }
    }
    const target = await callOk(a.create, 'describe_agent', { name: 'target' });
    assert.equal(target.desired_replicas, 1);
    assert.equal(target.status, 'stopped');
    assert.equal(target.config.ai, undefined);
    assert.deepEqual(
      (await callOk(a.create, 'list_agents', {})).map((x: { name: string }) => x.name),
      ['target'],
    );
    // The same request from the page's own origin goes through.
    const own = await fetch(`${server.url}${base}/scale`, {
      method: 'POST',
      headers: { cookie, origin: new URL(server.url).origin, 'content-type': 'application/json' },
      body: JSON.stringify({ replicas: 2 }),
    });
    assert.equal(own.status, 200);
  });

  test('start, chat naming the replica that answered (a named one, or the least busy), the run with its tool calls, stop', async () => {
    const a = await newOwner(server, 'dag-chat');
    const auth = sessionOf(a);
    const base = `/api/agents/${a.ns}/talker`;
    await callOk(a.create, 'make_agent', { name: 'talker' });
    await post(`${base}/scale`, { replicas: 2 }, auth);
    await post(`${base}/ai`, { provider: 'anthropic', model: 'claude-test', api_key: AI_KEY, base_url: llm.anthropicUrl }, auth);
    const started = await post(`${base}/start`, {}, auth);
    assert.equal(started.status, 200, JSON.stringify(started.body));
    const names: string[] = started.body.replicas.map((r: { name: string }) => r.name);
    assert.equal(names.length, 2);

    llm.script([{ text: 'hello from the least busy' }, { text: 'hello from the named one' }]);
    const any = await post(`${base}/chat`, { message: 'who are you?' }, auth);
    assert.equal(any.status, 200, JSON.stringify(any.body));
    assert.equal(any.body.response, 'hello from the least busy');
    assert.ok(names.includes(any.body.replica));
    const named = names.find((n) => n !== any.body.replica)!;
    const chosen = await post(`${base}/chat`, { message: 'and you?', replica: named }, auth);
    assert.equal(chosen.status, 200, JSON.stringify(chosen.body));
    assert.equal(chosen.body.replica, named);
    // The page's key never reached the page, and it reached the model.
    const sent = llm.requests.at(-1)!.headers;
    assert.ok([sent['x-api-key'], sent.authorization].some((h) => h === AI_KEY || h === `Bearer ${AI_KEY}`));
    assert.equal((await post(`${base}/chat`, { message: '' }, auth)).body.error_type, 'validation_error');

    const runs = (await get(`${base}/runs`, auth)).body.runs;
    const run = runs.find((r: { run_id: string }) => r.run_id === chosen.body.run_id);
    assert.equal(run.trigger, 'chat');
    assert.equal(run.replica, named);
    const detail = (await get(`${base}/runs/${run.run_id}`, auth)).body;
    assert.deepEqual(detail.tool_calls, []);
    assert.equal(detail.answer, 'hello from the named one');

    const stopped = await post(`${base}/stop`, {}, auth);
    assert.equal(stopped.body.status, 'stopped');
    await until(
      'every replica stopped',
      async () => (await get(base, auth)).body.replicas as Array<{ status: string }>,
      (replicas) => replicas.every((r) => r.status === 'stopped'),
    );
  });
});
