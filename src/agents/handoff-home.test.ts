// test-database: postgres, two server nodes on one PostgreSQL database hand chats and webhooks over through it
/**
 * The home node's side of a hand-over (agents/handoff.ts) with real parts: two servers on one
 * PostgreSQL database, real agents whose replica processes all run on the home node (it started them
 * before the receiving node joined: their live lease rows keep them there), the fake LLM holding a
 * turn on a gate so that a run is in flight for as long as a test needs, chats through the official
 * MCP client and webhook deliveries over HTTP, all sent to the receiving node. The rules: a row
 * pointed at another tenant's agent is refused, a run whose row is gone is stopped, a receiving node
 * that shuts down stops following its runs without cancelling them. One set for the file; the last
 * test shuts the receiving node down. Jobs no node takes are tested in handoff.test.ts, three nodes
 * in src/cli/cluster.test.ts.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { callError, callOk, connect, startTestServer, type McpTestClient, type TestServer } from '../test-support/harness.js';
import { fakeLlmAllow, startFakeLlm, type FakeLlm } from '../test-support/fake-llm.js';
import { newOwner, until, type Owner } from '../test-support/owners.js';

const ON_POSTGRES = process.env.MCPWORKS_TEST_DATABASE_URL ? false : 'two nodes share a database on PostgreSQL only';
const ECHO = 'def main(input_data):\n    return input_data\n';
/**
 * The nodes' lease (30 s by default): a home node renews its claim on a handed-over job every third
 * of it (at least 5 s), which is when it notices that the job's row is gone. 8 s, not less: a live
 * node whose renewal times out (half the lease) on a loaded machine fences its own replicas.
 */
const NODE = { agentMcpAllow: fakeLlmAllow(), leaseMs: 8000 };

interface Agent {
  id: string;
  replica: string;
}

/** A turn the model answers only once `open` is called. */
function gate(): { opened: Promise<void>; open(): void } {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => (open = resolve));
  return { opened, open };
}

describe('the home node of a replica, with a receiving node on the same database', { skip: ON_POSTGRES }, () => {
  let home: TestServer;
  let receiver: TestServer | undefined;
  let db: pg.Pool;
  /** The model of `talker`, the agent every job is sent to. */
  let llm: FakeLlm;
  /** The model of another tenant's agent: nothing may ever reach it. */
  let victimLlm: FakeLlm;
  let owner: Owner;
  let talker: Agent;
  let victim: Agent;
  /** `owner`'s create endpoint on the receiving node. */
  let viaReceiver: McpTestClient;
  const clients: McpTestClient[] = [];
  const gates: Array<ReturnType<typeof gate>> = [];

  /** An agent on `model` with one replica, started on the home node; its id and replica's name once it runs there. */
  async function agent(on: Owner, name: string, model: FakeLlm): Promise<Agent> {
    await callOk(on.create, 'make_agent', { name });
    await callOk(on.create, 'configure_agent_ai', {
      name,
      provider: 'anthropic',
      model: 'claude-test',
      api_key: `sk-ant-${name}`,
      base_url: model.anthropicUrl,
    });
    await callOk(on.create, 'start_agent', { name });
    const [replica] = await until(
      `${name}'s replica running on the home node`,
      async () => (await callOk(on.create, 'describe_agent', { name })).replicas as Array<{ name: string; status: string; node: string }>,
      (rows) => rows.length === 1 && rows[0]!.status === 'running' && rows[0]!.node === home.server.services.replicas.nodeId,
    );
    const id = (
      await db.query<{ id: string }>(
        'SELECT a.id FROM agents a JOIN namespaces n ON n.id = a.namespace_id WHERE n.name = $1 AND a.name = $2',
        [on.ns, name],
      )
    ).rows[0]!.id;
    // The home node's process for it is up: the node claims its jobs from now on.
    await until(
      `${name}'s process up`,
      async () => home.server.services.replicas.localReplicas(id),
      (names) => names.includes(replica!.name),
    );
    return { id, replica: replica!.name };
  }

  const runOf = async (id: string) =>
    (
      await db.query<{ status: string; node_id: string; agent_id: string }>(
        'SELECT status, node_id, agent_id FROM agent_runs WHERE id = $1',
        [id],
      )
    ).rows[0];
  const handoffOf = async (id: string) =>
    (
      await db.query<{ status: string; cancel_requested: boolean }>('SELECT status, cancel_requested FROM replica_handoffs WHERE id = $1', [
        id,
      ])
    ).rows[0];

  /** The handed-over jobs the home node's replica took (their run began or is queued there). */
  const taken = async () =>
    (await db.query<{ id: string; node_id: string }>("SELECT id, node_id FROM replica_handoffs WHERE status = 'began' ORDER BY created_at"))
      .rows;

  before(async () => {
    llm = await startFakeLlm();
    victimLlm = await startFakeLlm();
    home = await startTestServer(NODE);
    db = new pg.Pool({ connectionString: home.databaseUrl, max: 2 });
    owner = await newOwner(home, 'home');
    clients.push(owner.create);
    talker = await agent(owner, 'talker', llm);
    // A webhook whose deliveries the model reads first (no function runs unless the model asks for one).
    await callOk(owner.create, 'make_service', { name: 'hooks' });
    await callOk(owner.create, 'make_function', { service: 'hooks', name: 'echo', code: ECHO });
    await callOk(owner.create, 'add_webhook', {
      name: 'talker',
      path: 'inbox',
      handler_function_name: 'hooks.echo',
      orchestration_mode: 'reason_first',
    });
    const other = await newOwner(home, 'home-b');
    clients.push(other.create);
    victim = await agent(other, 'victim', victimLlm);
    // The receiving node joins once every replica is leased to the home node.
    receiver = await startTestServer({ ...NODE, databaseUrl: home.databaseUrl });
    viaReceiver = await connect(`${receiver.url}/mcp/create/${owner.ns}`, owner.account.key);
    clients.push(viaReceiver);
  });

  after(async () => {
    for (const g of gates) g.open();
    for (const c of clients) await c.close().catch(() => undefined);
    await receiver?.stop();
    await home?.stop();
    await db?.end();
    await llm?.close();
    await victimLlm?.close();
  });

  test("a job whose row was pointed at another tenant's agent is refused by the home node (forbidden, nothing ran), not run as that agent", async () => {
    llm.script([{ text: 'never asked' }]);
    victimLlm.script([{ text: 'never asked' }]);
    // Someone with write access to the database but not the server secret points every job for
    // talker at the victim's replica as it is written (the home node runs both replicas).
    const literal = pg.escapeLiteral;
    await db.query(`CREATE FUNCTION repoint_handoff() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN NEW.agent_id := ${literal(victim.id)}; NEW.replica := ${literal(victim.replica)}; RETURN NEW; END $$`);
    await db.query(`CREATE TRIGGER repoint_handoff BEFORE INSERT ON replica_handoffs FOR EACH ROW
      WHEN (NEW.agent_id = ${literal(talker.id)}) EXECUTE FUNCTION repoint_handoff()`);
    let refused: Awaited<ReturnType<typeof callError>>;
    try {
      refused = await callError(viaReceiver, 'chat_with_agent', { name: 'talker', message: 'moved' });
    } finally {
      await db.query('DROP TRIGGER repoint_handoff ON replica_handoffs');
      await db.query('DROP FUNCTION repoint_handoff()');
    }
    assert.equal(refused.type, 'forbidden', JSON.stringify(refused));
    assert.match(refused.message, /does not belong to the agent or replica its row names; nothing ran/);
    assert.equal(victimLlm.requests.length, 0, "the other tenant's model was asked nothing");
    assert.equal(llm.requests.length, 0, "talker's model was asked nothing");
    const runs = await db.query('SELECT id FROM agent_runs WHERE agent_id = $1 OR agent_id = $2', [victim.id, talker.id]);
    assert.deepEqual(runs.rows, [], 'no run recorded for either agent');
  });

  test('a run whose row is deleted (its sender gave up) is stopped on the home node', async () => {
    const held = gate();
    gates.push(held);
    llm.script([{ text: 'too late', gate: held.opened }]);
    const answer = callError(viaReceiver, 'chat_with_agent', { name: 'talker', message: 'abandoned' });
    await llm.waitForRequests(1);
    const [row] = await until(
      'its job taken on the home node',
      () => taken(),
      (rows) => rows.length === 1,
    );
    assert.equal(row?.node_id, home.server.services.replicas.nodeId, 'the home node runs it');
    assert.equal((await runOf(row!.id))?.status, 'running');
    await db.query('DELETE FROM replica_handoffs WHERE id = $1', [row!.id]);
    const refused = await answer;
    assert.equal(refused.type, 'unavailable', JSON.stringify(refused));
    assert.match(refused.message, /is gone/);
    // The home node noticed as it renewed its claim: the model call is dropped, the run recorded cancelled there.
    await until(
      'the model call dropped',
      async () => llm.requests[0]!.aborted,
      (aborted) => aborted,
    );
    const run = await until(
      'the run recorded cancelled',
      () => runOf(row!.id),
      (r) => r?.status === 'cancelled',
    );
    assert.equal(run?.node_id, home.server.services.replicas.nodeId);
  });

  // Last: it shuts the receiving node down.
  test('a receiving node that shuts down does not cancel the runs its home node took: its callers are told it stopped following them; they finish on the home node', async () => {
    const held = gate();
    gates.push(held);
    llm.script([
      { text: 'the chat, answered at home', gate: held.opened },
      { text: 'the delivery, answered at home', gate: held.opened },
      { text: 'the waited delivery, answered at home', gate: held.opened },
    ]);
    const chat = callError(viaReceiver, 'chat_with_agent', { name: 'talker', message: 'rolling restart' });
    await llm.waitForRequests(1);
    const hook = `${receiver!.url}/mcp/agent/${owner.ns}/talker/webhook/inbox`;
    // Each with an Idempotency-Key: how its run ended must be kept under the key by the home node.
    const post = (query: string, key: string, url = hook) =>
      fetch(`${url}${query}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'idempotency-key': key },
        body: '{"note":"rolling restart"}',
      });
    // A delivery answered 202 once the replica took it (queued behind the chat), and one whose sender waits.
    const delivered = await post('', 'restart-202');
    const delivery = (await delivered.json()) as { run_id: string };
    assert.equal(delivered.status, 202, JSON.stringify(delivery));
    const waited = post('?wait=true', 'restart-waited');
    const rows = await until(
      'the three jobs taken on the home node',
      () => taken(),
      (r) => r.length === 3,
    );
    assert.ok(rows.every((r) => r.node_id === home.server.services.replicas.nodeId));

    // The receiving node stops as on SIGTERM (a rolling restart), all three runs in flight on the home node.
    const stopping = receiver!.stop();
    receiver = undefined;
    const stopped = await chat;
    assert.equal(stopped.type, 'unavailable', JSON.stringify(stopped));
    assert.match(stopped.message, /this server stopped following the run, which goes on on the node of replica/);
    const waitedAnswer = await waited;
    const waitedBody = (await waitedAnswer.json()) as { run_id: string; status: string; error?: { type: string; message: string } };
    assert.equal(waitedAnswer.status, 200, JSON.stringify(waitedBody));
    assert.deepEqual([waitedBody.status, waitedBody.error?.type], ['failed', 'unavailable'], JSON.stringify(waitedBody));
    assert.match(waitedBody.error!.message, /stopped following the run, which goes on/);
    await stopping;
    const ids = [stopped.run_id as string, delivery.run_id, waitedBody.run_id];
    assert.deepEqual([...ids].sort(), rows.map((r) => r.id).sort(), 'the chat and both deliveries');
    for (const id of ids) assert.deepEqual(await handoffOf(id), { status: 'began', cancel_requested: false }, `${id}: no cancel passed on`);
    assert.equal(llm.requests[0]!.aborted, false, 'the chat is still in flight on its home node');
    // Meanwhile a retry is told the run is running (its key not marked failed by the node that stopped).
    const keyStates = await db.query<{ idempotency_key: string; status: string }>(
      "SELECT idempotency_key, status FROM agent_webhook_deliveries WHERE idempotency_key LIKE 'restart-%' ORDER BY idempotency_key",
    );
    assert.deepEqual(
      keyStates.rows.map((r) => [r.idempotency_key, r.status]),
      [
        ['restart-202', 'running'],
        ['restart-waited', 'running'],
      ],
    );

    held.open();
    for (const id of ids) {
      const run = await until(
        `run ${id} finished`,
        () => runOf(id),
        (r) => r?.status !== 'running',
      );
      assert.deepEqual(run, { status: 'succeeded', node_id: home.server.services.replicas.nodeId, agent_id: talker.id }, id);
    }
    assert.deepEqual(
      llm.requests.map((r) => [r.answered, r.aborted]),
      [
        [true, false],
        [true, false],
        [true, false],
      ],
      'the three model calls answered',
    );

    // A sender retrying either delivery with its key (here through the home node) gets how the run
    // really ended, not "stopped following" (which the receiving node could only say), and nothing runs again.
    const homeHook = `${home.url}/mcp/agent/${owner.ns}/talker/webhook/inbox`;
    for (const [key, runId, answer] of [
      ['restart-202', delivery.run_id, 'the delivery, answered at home'],
      ['restart-waited', waitedBody.run_id, 'the waited delivery, answered at home'],
    ] as const) {
      const retried = await post('?wait=true', key, homeHook);
      const body = (await retried.json()) as Record<string, unknown>;
      assert.equal(retried.status, 200, JSON.stringify(body));
      assert.equal(retried.headers.get('idempotent-replayed'), 'true');
      assert.deepEqual(
        [body.run_id, body.status, body.answer, body.duplicate],
        [runId, 'succeeded', answer, true],
        `${key}: ${JSON.stringify(body)}`,
      );
    }
    assert.equal(llm.requests.length, 3, 'no delivery ran again');
  });
});
