// test-database: embedded, starts its own PostgreSQL the way `make cluster` does (never the run's database): once is enough
/**
 * `mcpworks cluster` (`make cluster`) as a user runs it: the command starts PostgreSQL from Debian's
 * package, three `serve` nodes on it and the round-robin proxy; everything below goes through the
 * proxy, which names the answering node (x-cluster-node), with the official SDK clients. A 2025-era
 * session is opened on one node and used on the others (and after one of them is killed); 2026-era
 * calls are stateless; a change made on one node reaches a GET stream held on another through the
 * proxy unbuffered; a key revoked on one node is refused by all; cancels of both eras cross nodes;
 * quota and concurrency are exact with calls spread over the nodes. Then a node is SIGKILLed with a
 * run in flight (the proxy passes it over; its slot is released once its lease is over) and SIGINT
 * stops the rest, PostgreSQL included, leaving no process or file behind.
 * The proxy's own refusals (no node takes the connection) are tested in-process.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Client as ClientV2, StreamableHTTPClientTransport as TransportV2 } from '@modelcontextprotocol/client';
import { Client as ClientV1 } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport as TransportV1 } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { createAccountOverHttp, MODERN_PROTOCOL, parseResult, type TestAccount } from '../test-support/harness.js';
import { cliCommand } from '../test-support/cli-command.js';
import { freePort, processesWith, RUN_MARK } from '../test-support/processes.js';
import { rawCall } from '../test-support/raw-call.js';
import { NODE_HEADER, startProxy } from './cluster-proxy.js';
import pg from 'pg';
import { FAKE_LLM_HOST, startFakeLlm, type FakeLlm } from '../test-support/fake-llm.js';
import { signatureHeader, SIGNATURE_HEADER, TIMESTAMP_HEADER } from '../core/webhook-signature.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const HELLO = 'def main(input_data):\n    return {"greeting": "hello " + input_data.get("name", "nobody")}\n';
const NAP = 'import subprocess\n\ndef main(input_data):\n    subprocess.run(["/bin/sleep", input_data["marker"]])\n    return "woke"\n';
const NODES = 3;
// Short enough to wait for a dead node's lapse, long enough for a live node on a loaded CI machine:
// with 3 s its renewal (timed out after half the lease) failed under load and it fenced its own
// replicas, which then moved (seen in CI: a live node's replica fired by another node).
const LEASE_MS = 8000;
/** Given to the launcher (its nodes) and to the operator command that sets tiers on its database. */
const SECRET = 'mcpworks-cluster-test-secret-0123456789abcdef';
/** Plans for the exactness races: a monthly quota of 10, a concurrency of 4 (no per-minute cap in either). */
const QUOTA = 10;
const TIERS = JSON.stringify({
  quota10: { monthly_executions: QUOTA, executions_per_minute: -1, concurrency: 64 },
  four: { concurrency: 4, executions_per_minute: -1 },
});

interface Launched {
  child: ChildProcess;
  proxy: string;
  databaseUrl: string;
  nodes: Array<{ url: string; pid: number; dataDir: string }>;
  postgresDir: string;
  exited: Promise<number | null>;
  output(): string;
}

/** `mcpworks cluster --port 0` (a free port), until it prints the proxy's URL. */
async function launch(): Promise<Launched> {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    LOG_LEVEL: 'warn',
    // Fewer processes per node: this file runs a handful of calls.
    MCPWORKS_SANDBOX_POOL: 'off',
    MCPWORKS_ZYGOTE: 'off',
    MCPWORKS_SECRET_KEY: SECRET,
    MCPWORKS_TIERS: TIERS,
    // A killed node's slots go to the others after this (30 s by default).
    MCPWORKS_INSTANCE_LEASE_MS: String(LEASE_MS),
    // The agents' model is the fake LLM (the operator allows its loopback address).
    MCPWORKS_AGENT_MCP_ALLOW: FAKE_LLM_HOST,
  };
  for (const name of ['DATABASE_URL', 'MCPWORKS_DATA_DIR', 'PORT', 'MCPWORKS_SANDBOX_UIDS']) delete env[name];
  const child = spawn(process.execPath, [...cliCommand(), 'cluster', '--nodes', String(NODES), '--port', '0'], {
    cwd: REPO,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  launchedChild = child;
  let out = '';
  let err = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (err += d));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const deadline = Date.now() + 240_000;
  let gone = false;
  void exited.then(() => (gone = true));
  // Up once the .mcp.json to paste is printed too (it comes after the proxy's line, maybe in another chunk).
  while (!/proxy (http:\/\/\S+)/.test(out) || !/\/mcp\/run\/myns"/.test(out)) {
    if (gone || Date.now() > deadline) throw new Error(`mcpworks cluster did not start:\n${out}\n${err.slice(-4000)}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const nodes = [...out.matchAll(/node \d+ (http:\/\/\S+) \(pid (\d+), data dir (\S+)\)/g)].map((m) => ({
    url: m[1]!,
    pid: Number(m[2]),
    dataDir: m[3]!,
  }));
  return {
    child,
    proxy: /proxy (http:\/\/\S+)/.exec(out)![1]!,
    nodes,
    databaseUrl: /PostgreSQL (\S+) \(/.exec(out)?.[1] ?? '',
    postgresDir: /PostgreSQL \S+ \((\S+)\)/.exec(out)?.[1] ?? '',
    exited,
    output: () => `${out}\n${err.slice(-4000)}`,
  };
}
/**
 * Runs a test's body; when it fails, the error carries the nodes' logged errors and warnings (an
 * answer of 500 says only that the server log has the details), so a failure in a CI run can be
 * read from its output.
 */
async function withNodeErrors(output: () => string, body: () => Promise<void>): Promise<void> {
  try {
    await body();
  } catch (error) {
    const logged = output()
      .split('\n')
      .filter((line) => /"level":(40|50|60)|error/i.test(line))
      .slice(-40);
    if (error instanceof Error) error.message += `\nthe nodes' errors and warnings (last 40):\n${logged.join('\n')}`;
    throw error;
  }
}
let launchedChild: ChildProcess | undefined;

/**
 * A fetch for the SDK transports that notes which node answered each request (method, node); with
 * `cancelsTo`, a notifications/cancelled goes to that base URL instead (another node: the session is in the database).
 */
function recordingFetch(log: Client['log'], cancelsTo?: { from: string; to: string }) {
  return async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    let rpc = '';
    try {
      rpc = typeof init?.body === 'string' ? String(JSON.parse(init.body).method ?? 'response') : '';
    } catch {
      // not one JSON-RPC message
    }
    const target = cancelsTo && rpc === 'notifications/cancelled' ? String(input).replace(cancelsTo.from, cancelsTo.to) : input;
    const response = await fetch(target, init);
    log.push({ method: init?.method ?? 'GET', rpc, node: Number(response.headers.get(NODE_HEADER)), status: response.status });
    return response;
  };
}

type Era = 'v1' | 'v2';
interface Client {
  call(name: string, args?: Record<string, unknown>, signal?: AbortSignal): Promise<any>;
  tools(): Promise<Array<{ name: string; description?: string }>>;
  close(): Promise<void>;
  log: Array<{ method: string; rpc: string; node: number; status: number }>;
  /** The refreshed tool lists a listChanged handler got, in order. */
  lists: Array<Array<{ name: string; description?: string }>>;
}

/** v1: the v1 SDK on the 2025 protocol (a session); v2: the v2 SDK pinned to 2026-07-28 (stateless). */
async function client(url: string, key: string, era: Era, cancelsTo?: { from: string; to: string }): Promise<Client> {
  const log: Client['log'] = [];
  const lists: Client['lists'] = [];
  const listChanged = { tools: { debounceMs: 0, onChanged: (e: unknown, tools: any[] | null) => void (!e && tools && lists.push(tools)) } };
  const options = { requestInit: { headers: { authorization: `Bearer ${key}` } }, fetch: recordingFetch(log, cancelsTo) };
  const sdk: any =
    era === 'v1'
      ? new ClientV1({ name: 'cluster-v1', version: '1.0.0' }, { listChanged } as never)
      : new ClientV2({ name: 'cluster-v2', version: '1.0.0' }, {
          listChanged,
          versionNegotiation: { mode: { pin: MODERN_PROTOCOL } },
        } as never);
  await sdk.connect(era === 'v1' ? new TransportV1(new URL(url), options) : new TransportV2(new URL(url), options as never));
  return {
    log,
    lists,
    call: async (name, args = {}, signal) => {
      const result =
        era === 'v1'
          ? await sdk.callTool({ name, arguments: args }, undefined, signal ? { signal } : undefined)
          : await sdk.callTool({ name, arguments: args }, signal ? { signal } : undefined);
      if (result.isError) throw new Error(`${name}: ${JSON.stringify(parseResult(result))}`);
      return parseResult(result);
    },
    tools: async () => (await sdk.listTools()).tools,
    close: () => sdk.close(),
  };
}

/** `mcpworks account set-tier` on the cluster's database, as an operator would run it beside the nodes. */
function setTier(databaseUrl: string, email: string, tier: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...cliCommand(), 'account', 'set-tier', '--email', email, '--tier', tier], {
      cwd: REPO,
      env: { ...process.env, DATABASE_URL: databaseUrl, MCPWORKS_SECRET_KEY: SECRET, MCPWORKS_TIERS: TIERS, LOG_LEVEL: 'warn' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let err = '';
    child.stderr!.on('data', (d) => (err += d));
    child.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`set-tier: ${err}`))));
  });
}

async function usage(proxy: string, account: TestAccount): Promise<{ executions: number; active: number }> {
  const response = await fetch(`${proxy}/api/usage`, { headers: { authorization: `Bearer ${account.token}` } });
  assert.equal(response.status, 200);
  const body = await response.json();
  return { executions: body.executions, active: body.concurrency.active };
}

async function waitFor(what: string, check: () => boolean | Promise<boolean>, ms = 60_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

const nodesOf = (c: Client, method?: string) => new Set(c.log.filter((l) => !method || l.method === method).map((l) => l.node));

describe('mcpworks cluster: three nodes on one PostgreSQL behind the round-robin proxy', () => {
  let cluster: Launched;
  let account: TestAccount;
  const ns = `cl-${Math.random().toString(36).slice(2, 8)}`;
  let tag = 0;
  const clients: Client[] = [];
  /** The account of the exactness races. */
  let owner: TestAccount;
  /** The 2025-era session of the third test, used again after a node is killed. */
  let session: Client;
  /** The agents' model, shared by the replicas of every node. */
  let llm: FakeLlm;
  /** The cluster's database, read where no tool shows it (which node ran a run, holds a replica). */
  let db: pg.Client;
  before(async () => {
    llm = await startFakeLlm();
    cluster = await launch();
    db = new pg.Client({ connectionString: cluster.databaseUrl });
    // The last test stops PostgreSQL under it.
    db.on('error', () => undefined);
    await db.connect();
  });
  after(async () => {
    for (const c of clients) await c.close().catch(() => undefined);
    await db?.end().catch(() => undefined);
    await llm?.close();
    // A failed test left it running: stop it the way a user would (the last test checks that path).
    if (cluster && cluster.child.exitCode === null) {
      cluster.child.kill('SIGINT');
      await cluster.exited;
    }
  });

  test('it printed three nodes, a PostgreSQL dir and the proxy; register, sign in and make a key through the proxy', async () => {
    assert.equal(cluster.nodes.length, NODES, cluster.output());
    assert.ok(existsSync(cluster.postgresDir), cluster.output());
    assert.match(cluster.output(), /"url": "http:\/\/127\.0\.0\.1:\d+\/mcp\/run\/myns"/, 'the .mcp.json to paste');
    // Register, login and key creation: three requests, three nodes (the password hash is the one stored row).
    account = await createAccountOverHttp(cluster.proxy);
    const seen = new Set<string>();
    for (let i = 0; i < NODES; i++) seen.add((await fetch(`${cluster.proxy}/healthz`)).headers.get(NODE_HEADER)!);
    assert.deepEqual([...seen].sort(), ['1', '2', '3'], 'round-robin reaches every node');
  });

  test('2026 era (stateless): make a namespace and functions, list and run them, each request on the next node', async () => {
    const create = await client(`${cluster.proxy}/mcp/create/${ns}`, account.key, 'v2');
    clients.push(create);
    await create.call('make_namespace', { name: ns });
    await create.call('make_service', { name: 'svc' });
    await create.call('make_function', { service: 'svc', name: 'hello', language: 'python', code: HELLO });
    await create.call('make_function', { service: 'svc', name: 'nap', language: 'python', code: NAP });
    const run = await client(`${cluster.proxy}/mcp/run/${ns}?mode=tools`, account.key, 'v2');
    clients.push(run);
    for (let i = 0; i < NODES; i++) assert.deepEqual(await run.call('svc__hello', { name: `n${i}` }), { greeting: `hello n${i}` });
    assert.ok((await run.tools()).some((t) => t.name === 'svc__nap'));
    assert.equal(nodesOf(create, 'POST').size, NODES, `creates landed on every node: ${JSON.stringify(create.log)}`);
    assert.equal(nodesOf(run, 'POST').size, NODES, `runs landed on every node: ${JSON.stringify(run.log)}`);
  });

  test('2025 era: a session opened on one node serves its calls on every node; the GET stream on one node hears a change made on another', async () => {
    const watcher = await client(`${cluster.proxy}/mcp/run/${ns}?mode=tools`, account.key, 'v1');
    clients.push(watcher);
    session = watcher;
    // The standalone GET stream is open (its headers came back through the proxy) before any change.
    await waitFor('the GET stream', () => watcher.log.some((l) => l.method === 'GET' && l.status === 200));
    const streamNode = watcher.log.find((l) => l.method === 'GET')!.node;
    for (let i = 0; i < NODES; i++) assert.deepEqual(await watcher.call('svc__hello', { name: 's' }), { greeting: 'hello s' });
    assert.equal(nodesOf(watcher, 'POST').size, NODES, `the session's POSTs landed on every node: ${JSON.stringify(watcher.log)}`);

    const create = await client(`${cluster.proxy}/mcp/create/${ns}`, account.key, 'v1');
    clients.push(create);
    // Until an update lands on a node other than the stream's: that one must be heard through the database.
    let heardFromElsewhere = false;
    for (let i = 1; i <= NODES && !heardFromElsewhere; i++) {
      const before = create.log.length;
      await create.call('update_function', { service: 'svc', name: 'hello', description: `version ${i}` });
      const node = create.log.slice(before).find((l) => l.method === 'POST')!.node;
      await waitFor(`the stream on node ${streamNode} hears update ${i} made on node ${node}`, () =>
        watcher.lists.some((list) => list.find((t) => t.name === 'svc__hello')?.description?.startsWith(`version ${i}`)),
      );
      heardFromElsewhere = node !== streamNode;
    }
    assert.ok(heardFromElsewhere, `an update made on another node was heard: ${JSON.stringify(create.log)}`);
  });

  test('a key made through one node works on every node; revoked through one, every node refuses it on the next request', async () => {
    const made = await fetch(`${cluster.proxy}/api/keys`, {
      method: 'POST',
      headers: { authorization: `Bearer ${account.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'short-lived' }),
    });
    assert.equal(made.status, 201);
    const { id, key } = await made.json();
    const usageWith = async () => {
      const r = await fetch(`${cluster.proxy}/api/usage`, { headers: { authorization: `Bearer ${key}` } });
      await r.arrayBuffer();
      return { status: r.status, node: r.headers.get(NODE_HEADER) };
    };
    const before = await Promise.all(Array.from({ length: NODES }, usageWith));
    assert.deepEqual(
      before.map((r) => r.status),
      [200, 200, 200],
    );
    const revoked = await fetch(`${cluster.proxy}/api/keys/${id}`, {
      method: 'DELETE',
      headers: { authorization: `Bearer ${account.token}` },
    });
    assert.equal(revoked.status, 200);
    const by = revoked.headers.get(NODE_HEADER);
    const after: Array<{ status: number; node: string | null }> = [];
    for (let i = 0; i < NODES; i++) after.push(await usageWith());
    assert.deepEqual(
      after.map((r) => r.status),
      [401, 401, 401],
      `revoked on node ${by}: ${JSON.stringify(after)}`,
    );
    assert.equal(new Set(after.map((r) => r.node)).size, NODES);
  });

  for (const era of ['v1', 'v2'] as const) {
    test(`${era === 'v1' ? '2025 era: notifications/cancelled' : '2026 era: the closed call stream'} through the proxy stops the run, whichever node holds it`, async () => {
      const run = await client(`${cluster.proxy}/mcp/run/${ns}?mode=tools`, account.key, era);
      clients.push(run);
      const marker = `100.${RUN_MARK}${++tag}`;
      const abort = new AbortController();
      const answer = run.call('svc__nap', { marker }, abort.signal);
      answer.catch(() => undefined);
      await waitFor('the run', () => processesWith(`/bin/sleep ${marker}`).length > 0);
      const started = Date.now();
      abort.abort('the user pressed stop');
      await assert.rejects(answer);
      await waitFor('the run stopped', () => processesWith(`/bin/sleep ${marker}`).length === 0);
      // Diagnostic only (no timed assertion): the issue asks for under 1 s across nodes.
      const stopped = Date.now() - started;
      // The 2026 call's answer never came (its stream was closed); the 2025 cancel is answered 202.
      if (era === 'v1') await waitFor('the cancel answered', () => run.log.some((l) => l.rpc === 'notifications/cancelled'));
      const on = (rpc: string) => run.log.find((l) => l.rpc === rpc)?.node ?? '-';
      // Round-robin sends the cancel, the next request, to the next node: it reaches the run through the database.
      if (era === 'v1') assert.notEqual(on('notifications/cancelled'), on('tools/call'), JSON.stringify(run.log));
      process.stdout.write(
        `# ${era}: stopped ${stopped} ms after the cancel; call on node ${on('tools/call')}, cancel on node ${on('notifications/cancelled')}\n`,
      );
    });
  }

  test(`limits are exact across the nodes: 50 parallel calls, round-robin, against a quota of ${QUOTA} get exactly ${QUOTA} successes`, async () => {
    owner = await createAccountOverHttp(cluster.proxy);
    await setTier(cluster.databaseUrl, owner.email, 'quota10');
    const space = `${ns}-q`;
    const create = await client(`${cluster.proxy}/mcp/create/${space}`, owner.key, 'v2');
    clients.push(create);
    await create.call('make_namespace', { name: space });
    await create.call('make_service', { name: 'svc' });
    await create.call('make_function', { service: 'svc', name: 'hello', language: 'python', code: HELLO });
    const url = `${cluster.proxy}/mcp/run/${space}?mode=tools`;
    const answers = await Promise.all(Array.from({ length: 50 }, (_, i) => rawCall(url, owner.key, 'svc__hello', { name: `c${i}` })));
    const ok = answers.filter((a) => a.status === 200 && !a.body?.result?.isError);
    const refused = answers.filter((a) => a.status === 429);
    assert.equal(ok.length, QUOTA, JSON.stringify(answers.filter((a) => a.status !== 429 && a.status !== 200)));
    assert.equal(refused.length, 50 - QUOTA);
    assert.ok(
      refused.every((a) => a.body.code === 'QUOTA_EXCEEDED'),
      JSON.stringify(refused[0]),
    );
    assert.deepEqual(new Set(answers.map((a) => a.node)).size, NODES, 'the calls were admitted and refused on every node');
    assert.deepEqual(await usage(cluster.proxy, owner), { executions: QUOTA, active: 0 });
  });

  test('limits are exact across the nodes: 16 parallel runs against a concurrency of 4 never run more than 4 at once', async () => {
    // The quota race's account (one sign-up fewer), on a plan of 4 at once now: its 10 executions so far stay counted.
    const before = await usage(cluster.proxy, owner);
    await setTier(cluster.databaseUrl, owner.email, 'four');
    const space = `${ns}-c`;
    const create = await client(`${cluster.proxy}/mcp/create/${space}`, owner.key, 'v2');
    clients.push(create);
    await create.call('make_namespace', { name: space });
    // Each run says when it ran (one host, one clock): those admitted must never overlap more than 4 deep.
    const code = 'import time\nstart = time.time()\ntime.sleep(1)\nresult = [start, time.time()]';
    const url = `${cluster.proxy}/mcp/run/${space}`;
    const answers = await Promise.all(Array.from({ length: 16 }, () => rawCall(url, owner.key, 'execute', { code })));
    const ran = answers.filter((a) => a.status === 200).map((a) => JSON.parse(a.body.result.content[0].text) as [number, number]);
    const refused = answers.filter((a) => a.status === 429);
    assert.ok(ran.length >= 4, `at least the 4 slots ran (${ran.length})`);
    assert.ok(refused.length > 0 && refused.every((a) => a.body.code === 'CONCURRENCY_LIMIT_EXCEEDED'), JSON.stringify(refused[0]));
    assert.equal(ran.length + refused.length, 16);
    const deepest = Math.max(...ran.map(([start]) => ran.filter(([s2, e2]) => s2 <= start && start < e2).length));
    assert.ok(deepest <= 4, `${deepest} runs at once`);
    assert.equal(new Set(answers.map((a) => a.node)).size, NODES, 'the calls went to every node');
    assert.deepEqual(await usage(cluster.proxy, owner), { executions: before.executions + ran.length, active: 0 });
  });

  /** The node (as launched) holding each replica of the agent, by the pid of its server_instances row. */
  async function homes(agent: string): Promise<Map<string, { url: string; index: number; instance: string }>> {
    const rows = await db.query<{ name: string; node_id: string; pid: number }>(
      `SELECT r.name, r.node_id, i.pid FROM agent_replicas r JOIN agents a ON a.id = r.agent_id JOIN namespaces n ON n.id = a.namespace_id
       JOIN server_instances i ON i.id = r.node_id WHERE n.name = $1 AND a.name = $2 AND r.status = 'running'`,
      [ns, agent],
    );
    const found = new Map<string, { url: string; index: number; instance: string }>();
    // The launcher writes each node's pid to its data dir at every start (a restarted node has a new one).
    const pids = cluster.nodes.map((n) => Number(readFileSync(path.join(n.dataDir, 'node.pid'), 'utf8')));
    for (const row of rows.rows) {
      const index = pids.indexOf(Number(row.pid));
      if (index >= 0) found.set(row.name, { url: cluster.nodes[index]!.url, index, instance: row.node_id });
    }
    return found;
  }

  /** The agent's runs: replica, node, status, trigger, oldest first. */
  async function runsOf(agent: string) {
    const rows = await db.query<{ id: string; replica: string; node_id: string; status: string; trigger: string }>(
      `SELECT r.id, r.replica, r.node_id, r.status, r.trigger FROM agent_runs r JOIN agents a ON a.id = r.agent_id
       JOIN namespaces n ON n.id = a.namespace_id WHERE n.name = $1 AND a.name = $2 ORDER BY r.started_at`,
      [ns, agent],
    );
    return rows.rows;
  }

  /** An agent on the fake LLM with `replicas` replicas, started through `via` (that node claims them first). */
  async function chatAgent(name: string, replicas: number, via = cluster.proxy) {
    const create = await client(`${via}/mcp/create/${ns}`, account.key, 'v2');
    clients.push(create);
    await create.call('make_agent', { name });
    await create.call('scale_agent', { name, replicas });
    await create.call('configure_agent_ai', {
      name,
      provider: 'anthropic',
      model: 'claude-test',
      api_key: 'sk-ant-cluster',
      base_url: llm.anthropicUrl,
    });
    await create.call('start_agent', { name });
    await waitFor(`${name}'s ${replicas} replicas running`, async () => (await homes(name)).size === replicas);
    return create;
  }

  const userTexts = (body: Record<string, unknown>) =>
    (body.messages as Array<{ role: string; content: unknown }>).map((m) =>
      typeof m.content === 'string' ? m.content : (m.content as Array<{ text?: string }>).map((c) => c.text ?? '').join(''),
    );

  test('chat: a conversation with each replica, its messages round-robin over the nodes, is answered by that replica on its home node with its history', async () => {
    const create = await chatAgent('talker', 3);
    const names = [...(await homes('talker')).keys()].sort();
    assert.equal(names.length, 3);
    llm.script(Array.from({ length: 9 }, (_, i) => ({ text: `answer ${i}`, usage: { input: 1, output: 1 } })));
    const first = llm.requests.length;
    let n = 0;
    for (const replica of names) {
      const before = create.log.length;
      let conversation: string | undefined;
      for (let m = 0; m < 3; m++) {
        const answer = await create.call('chat_with_agent', {
          name: 'talker',
          message: `message ${m} to ${replica}`,
          ...(conversation ? { conversation_id: conversation } : { replica }),
        });
        assert.equal(answer.replica, replica, JSON.stringify(answer));
        assert.equal(answer.response, `answer ${n++}`);
        conversation ??= answer.conversation_id;
        assert.equal(answer.conversation_id, conversation);
      }
      // Each message of the conversation came to another node: two of them to nodes that do not run the replica.
      assert.equal(nodesOf({ ...create, log: create.log.slice(before) }, 'POST').size, NODES, JSON.stringify(create.log.slice(before)));
      // The third message's model call carried the conversation so far (whichever node took the first two).
      const third = userTexts(llm.requests[first + n - 1]!.body);
      assert.deepEqual(
        third.filter((t) => t.startsWith('message ') || t.startsWith('answer ')),
        [`message 0 to ${replica}`, `answer ${n - 3}`, `message 1 to ${replica}`, `answer ${n - 2}`, `message 2 to ${replica}`],
      );
    }
    // Every run ran on its replica's home node (recorded by the node that ran it).
    const home = await homes('talker');
    const runs = (await runsOf('talker')).filter((r) => r.trigger === 'chat');
    assert.equal(runs.length, 9);
    for (const run of runs) {
      assert.equal(run.status, 'succeeded', JSON.stringify(run));
      assert.equal(run.node_id, home.get(run.replica)!.instance, `run of ${run.replica} on its home node`);
    }
    // An unnamed chat still picks a replica and answers.
    llm.script([{ text: 'unnamed', usage: { input: 1, output: 1 } }]);
    const unnamed = await create.call('chat_with_agent', { name: 'talker', message: 'anyone' });
    assert.ok(names.includes(unnamed.replica) && unnamed.response === 'unnamed', JSON.stringify(unnamed));
  });

  for (const era of ['v1', 'v2'] as const) {
    test(`chat: ${era === 'v1' ? 'a 2025 notifications/cancelled on a third node' : 'a closed 2026 call stream'} for a call on a node that does not run the replica stops its run on the home node`, async () => {
      const home = await homes('talker');
      const [replica, at] = [...home.entries()].sort()[0]!;
      const [elsewhere, third] = cluster.nodes.filter((_, i) => i !== at.index);
      // The 2025 cancel goes to the third node: neither the one answering the call nor the replica's.
      const chat = await client(`${elsewhere!.url}/mcp/create/${ns}`, account.key, era, { from: elsewhere!.url, to: third!.url });
      clients.push(chat);
      llm.script([{ text: 'too late', delayMs: 120_000 }]);
      const asked = llm.requests.length;
      const abort = new AbortController();
      const answer = chat.call('chat_with_agent', { name: 'talker', replica, message: `cancel me (${era})` }, abort.signal);
      answer.catch(() => undefined);
      await llm.waitForRequests(asked + 1);
      const started = Date.now();
      abort.abort('the user pressed stop');
      await assert.rejects(answer);
      // The home node's replica gave up its model call, and the run is recorded cancelled there.
      await waitFor('the model call dropped', () => llm.requests[asked]!.aborted);
      // Diagnostic only (no timed assertion): the issue asks for under 1 s across nodes.
      const stopped = Date.now() - started;
      await waitFor('the run recorded cancelled', async () => {
        const last = (await runsOf('talker')).at(-1)!;
        return last.status === 'cancelled' && last.node_id === at.instance;
      });
      // The cancel was sent (to the third node, by the fetch above) and accepted there.
      if (era === 'v1')
        await waitFor('the cancel accepted', () => chat.log.some((l) => l.rpc === 'notifications/cancelled' && l.status === 202));
      process.stdout.write(
        `# chat ${era}: the model call dropped ${stopped} ms after the cancel; call on node ${cluster.nodes.indexOf(elsewhere!) + 1}, replica on node ${at.index + 1}${era === 'v1' ? `, cancel on node ${cluster.nodes.indexOf(third!) + 1}` : ''}\n`,
      );
    });
  }

  test('webhooks: deliveries through every node run once each on the replica’s home node; Idempotency-Keys and signatures hold across nodes', async () => {
    const create = await client(`${cluster.proxy}/mcp/create/${ns}`, account.key, 'v2');
    clients.push(create);
    await create.call('make_agent', { name: 'hooked' });
    const secret = 'cluster-webhook-secret-0123456789';
    await create.call('add_webhook', { name: 'hooked', path: 'open', handler_function_name: 'svc.hello' });
    await create.call('add_webhook', { name: 'hooked', path: 'signed', handler_function_name: 'svc.hello', secret });
    await create.call('start_agent', { name: 'hooked' });
    await waitFor('its replica running', async () => (await homes('hooked')).size === 1);
    const home = [...(await homes('hooked')).values()][0]!;
    const deliver = async (
      path: string,
      headers: Record<string, string> = {},
      query = '?wait=true',
      body = '{"n":1}',
      via = cluster.proxy,
    ) => {
      const response = await fetch(`${via}/mcp/agent/${ns}/hooked/webhook/${path}${query}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...headers },
        body,
      });
      return { status: response.status, body: await response.json(), node: Number(response.headers.get(NODE_HEADER)) };
    };
    const waited = [];
    for (let i = 0; i < 2 * NODES; i++) waited.push(await deliver('open', { 'idempotency-key': `key-${i}` }));
    for (const a of waited)
      assert.deepEqual([a.status, a.body.status, a.body.result], [200, 'succeeded', { greeting: 'hello nobody' }], JSON.stringify(a));
    assert.equal(new Set(waited.map((a) => a.node)).size, NODES, 'delivered to every node');
    // The same keys again, each through another node than before: the earlier run's outcome, no new run.
    for (let i = 0; i < NODES; i++) {
      const again = await deliver('open', { 'idempotency-key': `key-${i}` });
      assert.equal(again.status, 200, JSON.stringify(again));
      assert.deepEqual([again.body.run_id, again.body.duplicate], [waited[i]!.body.run_id, true]);
    }
    // Without ?wait: 202 once the home node's replica took it, on every node.
    const accepted = [];
    for (let i = 0; i < NODES; i++) accepted.push(await deliver('open', {}, ''));
    for (const a of accepted) assert.equal(a.status, 202, JSON.stringify(a));
    // Signed: checked on the receiving node (a bad signature is 401 there), run on the home node.
    const signed: Array<{ headers: Record<string, string>; body: string; node: number }> = [];
    for (let i = 0; i < NODES; i++) {
      const ts = String(Math.floor(Date.now() / 1000));
      const body = `{"signed":${i}}`;
      const good = await deliver(
        'signed',
        { [TIMESTAMP_HEADER]: ts, [SIGNATURE_HEADER]: signatureHeader(secret, ts, Buffer.from(body)) },
        '?wait=true',
        body,
      );
      assert.equal(good.status, 200, JSON.stringify(good));
      signed.push({
        headers: { [TIMESTAMP_HEADER]: ts, [SIGNATURE_HEADER]: signatureHeader(secret, ts, Buffer.from(body)) },
        body,
        node: good.node,
      });
      const bad = await deliver(
        'signed',
        { [TIMESTAMP_HEADER]: ts, [SIGNATURE_HEADER]: signatureHeader('not-the-secret-0123', ts, Buffer.from(body)) },
        '?wait=true',
        body,
      );
      assert.equal(bad.status, 401, JSON.stringify(bad));
    }
    assert.equal(new Set(signed.map((d) => d.node)).size, NODES, 'signed deliveries reached every node');
    // A replay sent to another node than the first delivery (node N is cluster.nodes[N - 1]): still refused (the signature's row is shared).
    const other = cluster.nodes[signed[0]!.node % NODES]!.url;
    const replay = await deliver('signed', signed[0]!.headers, '?wait=true', signed[0]!.body, other);
    assert.equal(replay.status, 409, JSON.stringify(replay));
    const total = 2 * NODES + NODES + NODES;
    await waitFor('every run ended', async () => (await runsOf('hooked')).filter((r) => r.status === 'succeeded').length === total);
    const runs = await runsOf('hooked');
    assert.equal(runs.length, total, 'each delivery ran once');
    assert.ok(
      runs.every((r) => r.node_id === home.instance),
      `all on the home node: ${JSON.stringify(runs)}`,
    );
    // Nothing handed over is left behind.
    await waitFor(
      'no handed-over job left',
      async () => (await db.query('SELECT count(*)::int AS n FROM replica_handoffs')).rows[0].n === 0,
    );
  });

  test('a node SIGKILLed with a run in flight: the proxy passes it over, the 2025 session goes on, its slot is released within a lease, its run recorded interrupted and not counted; restarted, it rejoins', () =>
    withNodeErrors(
      () => cluster.output(),
      async () => {
        const victim = cluster.nodes[1]!;
        // A run in flight on node 2 (called on it directly), a slot of the account's held there.
        const marker = `100.${RUN_MARK}${++tag}`;
        const inFlight = rawCall(`${victim.url}/mcp/run/${ns}?mode=tools`, account.key, 'svc__nap', { marker });
        inFlight.catch(() => undefined);
        await waitFor('the run on node 2', () => processesWith(`/bin/sleep ${marker}`).length > 0);
        assert.equal((await usage(cluster.proxy, account)).active, 1);
        const executions = (await usage(cluster.proxy, account)).executions;
        process.kill(victim.pid, 'SIGKILL');
        await assert.rejects(inFlight, 'the call to the dead node is cut, never answered');
        // Its sandbox ends with its server (the helper watches it).
        await waitFor('the run on node 2 gone', () => processesWith(`/bin/sleep ${marker}`).length === 0);
        await waitFor('the launcher noticed', () => /node 2 \(pid \d+\) exited/.test(cluster.output()));
        const answered: string[] = [];
        for (let i = 0; i < 2 * NODES; i++) {
          const response = await fetch(`${cluster.proxy}/healthz`);
          assert.equal(response.status, 200);
          answered.push(response.headers.get(NODE_HEADER)!);
        }
        assert.ok(!answered.includes('2'), `node 2 answered nothing: ${answered}`);
        for (let i = 0; i < NODES; i++) assert.deepEqual(await session.call('svc__hello', { name: 'after' }), { greeting: 'hello after' });
        // The dead node's slot is released by an admission on another node once its lease is over; its
        // run is recorded interrupted and its unit given back (the calls since are counted).
        let calls = NODES;
        await waitFor(
          "the dead node's slot released",
          async () => {
            await session.call('svc__hello', { name: 'poke' });
            calls++;
            return (await usage(cluster.proxy, account)).active === 0;
          },
          LEASE_MS * 10,
        );
        assert.equal((await usage(cluster.proxy, account)).executions, executions - 1 + calls, 'the cut run is not counted');
        const create = await client(`${cluster.proxy}/mcp/create/${ns}`, account.key, 'v2');
        clients.push(create);
        const listed = await create.call('list_executions', { limit: 100 });
        const interrupted = (
          (Array.isArray(listed) ? listed : listed.executions) as Array<{ status: string; error_type: string | null }>
        ).filter((r) => r.status === 'interrupted');
        assert.equal(interrupted.length, 1, JSON.stringify(listed).slice(0, 2000));
        // The launcher starts it again (as a supervisor would) on its port and data dir: it rejoins.
        await waitFor('node 2 restarted', () => /node 2 restarted/.test(cluster.output()));
        // The proxy passes a node over for 2 s after it refused a connection, so it may answer a moment later.
        const seen = new Set<string>();
        await waitFor(
          'node 2 answering through the proxy again',
          async () => {
            seen.add((await fetch(`${cluster.proxy}/healthz`)).headers.get(NODE_HEADER)!);
            return seen.has('2');
          },
          10_000,
        );
        const from = session.log.length;
        for (let i = 0; i < NODES; i++) assert.deepEqual(await session.call('svc__hello', { name: 'back' }), { greeting: 'hello back' });
        assert.ok(
          session.log.slice(from).some((l) => l.node === 2),
          `the 2025 session is served by the restarted node: ${JSON.stringify(session.log.slice(from))}`,
        );
      },
    ));

  test('chat: the replica’s home node SIGKILLed mid-chat: the chat sent through another node gets a typed error within a lease, never a hang; the node restarts', async () => {
    const create = await chatAgent('doomed', 1);
    const [replica, at] = [...(await homes('doomed')).entries()][0]!;
    const victim = cluster.nodes[at.index]!;
    const chat = await client(`${cluster.nodes[(at.index + 1) % NODES]!.url}/mcp/create/${ns}`, account.key, 'v2');
    clients.push(chat, create);
    llm.script([{ text: 'never', delayMs: 120_000 }]);
    const asked = llm.requests.length;
    const answer = chat.call('chat_with_agent', { name: 'doomed', replica, message: 'are you there?' });
    answer.catch(() => undefined);
    await llm.waitForRequests(asked + 1);
    process.kill(Number(readFileSync(path.join(victim.dataDir, 'node.pid'), 'utf8')), 'SIGKILL');
    // Bounded here (not by the file's timeout): a hang is a failure of its own.
    let settled = false;
    void answer.then(
      () => (settled = true),
      () => (settled = true),
    );
    await waitFor('the chat answered', () => settled, 60_000);
    await assert.rejects(answer, (e: Error) => /unavailable/.test(e.message) && /stopped during the run/.test(e.message));
    // The launcher starts it again on its port.
    await waitFor(`node ${at.index + 1} back`, async () => (await fetch(`${victim.url}/healthz`).catch(() => undefined))?.status === 200);
  });

  test('SIGINT stops the proxy, the nodes and PostgreSQL, and removes their files', async () => {
    for (const c of clients.splice(0)) await c.close().catch(() => undefined);
    cluster.child.kill('SIGINT');
    assert.equal(await cluster.exited, 0, cluster.output());
    for (const node of cluster.nodes) assert.deepEqual(processesWith(node.dataDir), [], `no process of ${node.dataDir}`);
    assert.deepEqual(processesWith(cluster.postgresDir), [], 'no postgres process left');
    assert.equal(existsSync(cluster.postgresDir), false);
    assert.equal(existsSync(path.dirname(cluster.nodes[0]!.dataDir)), false);
    await assert.rejects(fetch(`${cluster.proxy}/healthz`));
  });
});

describe('the proxy on its own', () => {
  test(
    'no node takes the connection: 502 in the one error shape; a node that does is used, and streams unbuffered',
    { timeout: 30_000 },
    async () => {
      const dead = [`http://127.0.0.1:${await freePort()}`, `http://127.0.0.1:${await freePort()}`];
      const none = await startProxy({ targets: dead });
      try {
        const refused = await fetch(`${none.url}/mcp/run/x`, { method: 'POST', body: '{"jsonrpc":"2.0"}' });
        assert.equal(refused.status, 502);
        assert.deepEqual(Object.keys(await refused.json()).sort(), ['error', 'error_type']);
      } finally {
        await none.close();
      }
      // One event written, the stream held open: the client must read it while the node still holds it.
      let release!: () => void;
      const held = new Promise<void>((resolve) => (release = resolve));
      const node = http.createServer((req, res) => {
        let body = '';
        req.on('data', (d) => (body += d));
        req.on('end', async () => {
          res.writeHead(200, { 'content-type': 'text/event-stream' });
          res.write(`data: ${body}\n\n`);
          await held;
          res.end('data: end\n\n');
        });
      });
      await new Promise<void>((resolve) => node.listen(0, '127.0.0.1', resolve));
      const live = `http://127.0.0.1:${(node.address() as { port: number }).port}`;
      const proxy = await startProxy({ targets: [dead[0]!, live] });
      try {
        for (let i = 0; i < 2; i++) {
          const response = await fetch(`${proxy.url}/stream`, { method: 'POST', body: `hello ${i}` });
          assert.equal(response.headers.get(NODE_HEADER), '2', 'the dead node is passed over, the body sent once to the live one');
          const reader = response.body!.getReader();
          const first = new TextDecoder().decode((await reader.read()).value);
          assert.equal(first, `data: hello ${i}\n\n`, 'the first event arrives while the stream is open');
          await reader.cancel();
        }
        assert.deepEqual(proxy.forwarded(), [0, 2]);
      } finally {
        release();
        await proxy.close();
        await new Promise<void>((resolve) => node.close(() => resolve()));
      }
    },
  );
});

process.on('exit', () => {
  if (launchedChild && launchedChild.exitCode === null) launchedChild.kill('SIGINT');
});
