// test-database: postgres, two server processes on one database claim replicas at once (leases, SKIP LOCKED)
// Agent replicas as worker processes, through the official SDK client on a real server: start,
// LIFO scale-down, a SIGKILLed replica restarted with its name, slots (Pro 5, unlimited), stop
// draining a running job, bad input that changes nothing; on PostgreSQL, two nodes never holding
// the same replica and one node's replicas moving to the other when it stops.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { callError, callOk, connect, startTestServer, type TestServer, embeddedRunOnly } from '../test-support/harness.js';
import { newOwner, until, type Owner } from '../test-support/owners.js';
import type { ReplicaSupervisor } from './supervisor.js';

let server: TestServer;

before(async () => {
  server = await startTestServer();
});
after(async () => {
  await server?.stop();
});

const owner = (on: TestServer, tier?: string): Promise<Owner> => newOwner(on, 'r', tier);

interface ReplicaView {
  name: string;
  status: string;
  node: string | null;
  started_at: string | null;
  restarts: number;
  last_exit: string | null;
}

const replicasOf = async (o: Owner, name: string): Promise<ReplicaView[]> => (await callOk(o.create, 'describe_agent', { name })).replicas;

const allRunning = (n: number) => (rows: ReplicaView[]) => rows.length === n && rows.every((r) => r.status === 'running');
const processesOf = (supervisor: ReplicaSupervisor, agent: string) => supervisor.processes().filter((p) => p.agent === agent);
const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe('agent replicas', () => {
  test('the running tools are listed; scaling down removes the newest (LIFO) and ends their processes', async (t) => {
    if (embeddedRunOnly(t)) return;
    const o = await owner(server);
    const { tools } = await o.create.listTools();
    for (const name of ['start_agent', 'stop_agent', 'scale_agent']) assert.ok(tools.find((t) => t.name === name)?.description, name);
    assert.ok(tools.find((t) => t.name === 'destroy_agent')!.inputSchema.properties!.replica, 'destroy_agent takes a replica');

    await callOk(o.create, 'make_agent', { name: 'lifo' });
    // `count` is an alias of the guide's `replicas`; a stopped agent's replicas wait, stopped.
    const scaled = await callOk(o.create, 'scale_agent', { agent_name: 'lifo', count: 3 });
    assert.equal(scaled.replicas.length, 3);
    assert.ok(scaled.replicas.every((r: ReplicaView) => r.status === 'stopped'));
    const oldest = scaled.replicas.map((r: ReplicaView) => r.name) as string[];
    assert.equal(new Set(oldest).size, 3, 'names are unique in the agent');
    await callOk(o.create, 'start_agent', { name: 'lifo' });
    const running = await until('three replicas running', () => replicasOf(o, 'lifo'), allRunning(3));
    assert.deepEqual(
      running.map((r) => r.name),
      oldest,
      'the names are kept',
    );
    assert.ok(running.every((r) => r.node === server.server.services.replicas.nodeId && r.started_at));
    const pids = new Map(processesOf(server.server.services.replicas, 'lifo').map((p) => [p.replica, p.pid!]));
    assert.equal(pids.size, 3);
    for (const pid of pids.values()) assert.ok(alive(pid));

    const down = await callOk(o.create, 'scale_agent', { name: 'lifo', replicas: 1 });
    assert.deepEqual(down.removed, [oldest[2], oldest[1]], 'the newest go first');
    const left = await until(
      'one replica left',
      () => replicasOf(o, 'lifo'),
      (rows) => rows.length === 1,
    );
    assert.equal(left[0]!.name, oldest[0], 'the oldest stays');
    await until(
      'the removed processes ended',
      async () => [pids.get(oldest[1]!)!, pids.get(oldest[2]!)!].map(alive),
      (a) => !a.some(Boolean),
    );
    assert.ok(alive(pids.get(oldest[0]!)!), 'the kept replica runs on in its process');
    // Scaling up again gives new names, never the removed ones back as if nothing happened.
    const up = await callOk(o.create, 'scale_agent', { name: 'lifo', replicas: 2 });
    assert.equal(up.replicas[0].name, oldest[0]);
    await until('two running', () => replicasOf(o, 'lifo'), allRunning(2));
    await callOk(o.create, 'stop_agent', { name: 'lifo' });
    await until(
      'stopped',
      () => replicasOf(o, 'lifo'),
      (rows) => rows.every((r) => r.status === 'stopped' && r.node === null),
    );
    assert.equal(processesOf(server.server.services.replicas, 'lifo').length, 0);
  });

  test('a SIGKILLed replica process comes back with its name, restarts + 1 and its last exit recorded', async (t) => {
    if (embeddedRunOnly(t)) return;
    const o = await owner(server);
    await callOk(o.create, 'make_agent', { name: 'crashy' });
    await callOk(o.create, 'start_agent', { name: 'crashy' });
    const [first] = await until('running', () => replicasOf(o, 'crashy'), allRunning(1));
    const before = processesOf(server.server.services.replicas, 'crashy')[0]!;
    process.kill(before.pid!, 'SIGKILL');
    const [back] = await until(
      'restarted',
      () => replicasOf(o, 'crashy'),
      (rows) => rows[0]?.restarts === 1 && rows[0].status === 'running',
    );
    assert.equal(back!.name, first!.name);
    assert.match(back!.last_exit ?? '', /SIGKILL/);
    const after = processesOf(server.server.services.replicas, 'crashy')[0]!;
    assert.notEqual(after.pid, before.pid);
    assert.ok(alive(after.pid!));
    await callOk(o.create, 'stop_agent', { name: 'crashy' });
  });

  test('a hung lease renewal (half-open connection, a lock): the watchdog ends the local replicas; they come back once renewals do', async () => {
    const o = await owner(server);
    await callOk(o.create, 'make_agent', { name: 'hung' });
    await callOk(o.create, 'start_agent', { name: 'hung' });
    await until('running', () => replicasOf(o, 'hung'), allRunning(1));
    const supervisor = server.server.services.replicas;
    const inside = supervisor as unknown as { options: { store: { renew: (...a: unknown[]) => Promise<unknown> } }; lastRenewed: number };
    const store = inside.options.store;
    const realRenew = store.renew;
    let release!: (error: Error) => void;
    const hung = new Promise<never>((_, reject) => (release = reject));
    hung.catch(() => undefined);
    store.renew = () => hung;
    const [before] = processesOf(supervisor, 'hung');
    try {
      // The lease's age as if the rounds had hung for most of it (no renewal lands while renew hangs).
      await until(
        'the replica ended by the watchdog',
        async () => {
          inside.lastRenewed = Date.now() - 60_000;
          return processesOf(supervisor, 'hung');
        },
        (ps) => ps.length === 0,
      );
    } finally {
      store.renew = realRenew;
      release(new Error('the hung renewal ends'));
    }
    await until(
      'gone',
      async () => alive(before!.pid!),
      (up) => !up,
    );
    await until(
      'back once renewals land',
      async () => processesOf(supervisor, 'hung'),
      (ps) => ps.length === 1 && ps[0]!.phase === 'up',
    );
    await callOk(o.create, 'stop_agent', { name: 'hung' });
  });

  test('a replica whose row could not be marked running is not offered to triggers until a round marks it', async (t) => {
    if (embeddedRunOnly(t)) return;
    const o = await owner(server);
    await callOk(o.create, 'make_agent', { name: 'unmarked' });
    const supervisor = server.server.services.replicas;
    const store = (supervisor as unknown as { options: { store: { markRunning: (id: string, node: string) => Promise<boolean> } } }).options
      .store;
    const realMark = store.markRunning;
    let refusals = 0;
    store.markRunning = async () => {
      refusals++;
      return false;
    };
    let starting: Promise<unknown> | undefined;
    try {
      // Not awaited here: start_agent waits for its replicas' rows to say running.
      starting = callOk(o.create, 'start_agent', { name: 'unmarked' });
      const [p] = await until(
        'its process started and the mark refused',
        async () => processesOf(supervisor, 'unmarked'),
        (ps) => ps.length === 1 && ps[0]!.pid !== undefined && refusals > 0,
      );
      assert.deepEqual(supervisor.localReplicas(p!.agentId), [], 'not offered while its row does not say running');
      assert.notEqual(processesOf(supervisor, 'unmarked')[0]!.phase, 'up');
    } finally {
      store.markRunning = realMark;
    }
    await starting;
    const [up] = await until(
      'marked by a round, then offered',
      async () => processesOf(supervisor, 'unmarked'),
      (ps) => ps[0]?.phase === 'up',
    );
    assert.deepEqual(supervisor.localReplicas(up!.agentId), [up!.replica]);
    await until('its row running', () => replicasOf(o, 'unmarked'), allRunning(1));
    await callOk(o.create, 'stop_agent', { name: 'unmarked' });
  });

  test('start_agent while a round that looked for free replicas before the start committed is still going: it answers with its replica up', async (t) => {
    if (embeddedRunOnly(t)) return;
    const o = await owner(server);
    await callOk(o.create, 'make_agent', { name: 'eager' });
    const supervisor = server.server.services.replicas;
    const store = (supervisor as unknown as { options: { store: { claim: (...a: unknown[]) => Promise<unknown[]> } } }).options.store;
    const realClaim = store.claim;
    const realSettle = supervisor.settle;
    let looked!: () => void;
    const lookedFirst = new Promise<void>((resolve) => (looked = resolve));
    let settling!: () => void;
    const settleCalled = new Promise<void>((resolve) => (settling = resolve));
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    // The next round's claim looks (the agent still stopped: nothing of it is free), then the round stays in flight.
    store.claim = async (...args: unknown[]) => {
      store.claim = realClaim;
      const rows = await realClaim.apply(store, args);
      looked();
      await gate;
      return rows;
    };
    supervisor.settle = (agentId: string, ms?: number) => {
      const settled = realSettle.call(supervisor, agentId, ms);
      settling();
      return settled;
    };
    let started;
    try {
      await lookedFirst;
      const starting = callOk(o.create, 'start_agent', { name: 'eager' });
      // start_agent committed and is settling while that round, which could not see its replica, is still going.
      await settleCalled;
      release();
      started = await starting;
    } finally {
      release();
      store.claim = realClaim;
      supervisor.settle = realSettle;
    }
    assert.deepEqual(
      started.replicas.map((r: ReplicaView) => r.status),
      ['running'],
      'answered once a round that began after the start claimed and started its replica',
    );
    const [p] = processesOf(supervisor, 'eager');
    assert.deepEqual(supervisor.localReplicas(p!.agentId), [p!.replica], 'a chat or webhook sent now finds it');
    await callOk(o.create, 'stop_agent', { name: 'eager' });
  });

  test("the node's replica process cap: replicas past it stay unplaced (pending) until there is room", async (t) => {
    if (embeddedRunOnly(t)) return;
    const o = await owner(server);
    await callOk(o.create, 'make_agent', { name: 'capped' });
    await callOk(o.create, 'scale_agent', { name: 'capped', replicas: 3 });
    const supervisor = server.server.services.replicas;
    const options = (supervisor as unknown as { options: { maxReplicas?: number } }).options;
    const before = options.maxReplicas;
    options.maxReplicas = supervisor.processes().length + 2;
    let starting: Promise<unknown> | undefined;
    try {
      // Not awaited here: start_agent waits for its replicas' rows to say running.
      starting = callOk(o.create, 'start_agent', { name: 'capped' });
      const rows = await until(
        'two placed, one unplaced',
        () => replicasOf(o, 'capped'),
        (r) => r.filter((x) => x.status === 'running').length === 2 && r.length === 3,
      );
      for (let round = 0; round < 3; round++) await supervisor.tick();
      assert.equal(processesOf(supervisor, 'capped').length, 2, 'no process past the cap');
      assert.equal((await replicasOf(o, 'capped')).filter((x) => x.status === 'running').length, 2, JSON.stringify(rows));
    } finally {
      if (before === undefined) delete options.maxReplicas;
      else options.maxReplicas = before;
    }
    await starting;
    await until('the third placed once there is room', () => replicasOf(o, 'capped'), allRunning(3));
    await callOk(o.create, 'stop_agent', { name: 'capped' });
  });

  test('slots: Pro refuses a 6th replica and changes nothing; scaling to 0 frees them; Dedicated takes 30 (stopped, no processes)', async (t) => {
    if (embeddedRunOnly(t)) return;
    const pro = await owner(server, 'pro');
    await callOk(pro.create, 'make_agent', { name: 'many' });
    assert.deepEqual((await callOk(pro.create, 'scale_agent', { name: 'many', replicas: 5 })).agent_slots, { used: 5, limit: 5 });
    const refused = await callError(pro.create, 'scale_agent', { name: 'many', replicas: 6 });
    assert.equal(refused.type, 'limit_exceeded');
    assert.deepEqual([refused.resource, refused.limit, refused.usage], ['agents', 5, 5]);
    assert.equal((await replicasOf(pro, 'many')).length, 5, 'nothing was added');
    assert.equal((await callError(pro.create, 'make_agent', { name: 'other' })).type, 'limit_exceeded');
    // An agent scaled to 0 runs nothing and takes no slot.
    assert.deepEqual((await callOk(pro.create, 'scale_agent', { name: 'many', replicas: 0 })).agent_slots, { used: 0, limit: 5 });
    assert.equal((await replicasOf(pro, 'many')).length, 0);
    await callOk(pro.create, 'make_agent', { name: 'other' });

    const big = await owner(server, 'dedicated');
    await callOk(big.create, 'make_agent', { name: 'fleet' });
    const fleet = await callOk(big.create, 'scale_agent', { name: 'fleet', replicas: 30 });
    assert.deepEqual(fleet.agent_slots, { used: 30, limit: null });
    assert.equal(new Set(fleet.replicas.map((r: ReplicaView) => r.name)).size, 30);
    await callOk(big.create, 'make_agent', { name: 'fleet-two' });
    assert.equal((await callOk(big.create, 'describe_agent', { name: 'fleet' })).limits.agent_slots.used, 31);
  });

  test('bad input changes nothing: counts, replica names, unknown replicas; destroy_agent with replica removes just that one', async (t) => {
    if (embeddedRunOnly(t)) return;
    const o = await owner(server);
    await callOk(o.create, 'make_agent', { name: 'tidy' });
    await callOk(o.create, 'scale_agent', { name: 'tidy', replicas: 2 });
    const before = await replicasOf(o, 'tidy');
    for (const args of [
      { name: 'tidy', replicas: -1 },
      { name: 'tidy', replicas: 1.5 },
      { name: 'tidy' },
      { name: 'tidy', replicas: 1, count: 2 },
    ])
      assert.equal((await callError(o.create, 'scale_agent', args)).type, 'validation_error', JSON.stringify(args));
    assert.equal((await callError(o.create, 'stop_agent', { name: 'tidy', replica: 'Not A Name' })).type, 'validation_error');
    assert.equal((await callError(o.create, 'start_agent', { name: 'tidy', replica: 'absent-animal' })).type, 'not_found');
    assert.equal((await callError(o.create, 'scale_agent', { name: 'nobody', replicas: 1 })).type, 'not_found');
    assert.deepEqual(await replicasOf(o, 'tidy'), before);
    const gone = await callOk(o.create, 'destroy_agent', { name: 'tidy', replica: before[0]!.name });
    assert.equal(gone.desired_replicas, 1);
    assert.deepEqual(
      (await replicasOf(o, 'tidy')).map((r) => r.name),
      [before[1]!.name],
    );
    // Another tenant cannot reach the agent at all.
    const stranger = await owner(server);
    const foreign = await connect(`${server.url}/mcp/create/${o.ns}`, stranger.account.key);
    assert.equal((await callError(foreign, 'start_agent', { name: 'tidy' })).type, 'not_found');
  });

  test('stop drains: a replica running a job finishes it, then stops', async (t) => {
    if (embeddedRunOnly(t)) return;
    const o = await owner(server);
    await callOk(o.create, 'make_agent', { name: 'drainer' });
    await callOk(o.create, 'start_agent', { name: 'drainer' });
    const [replica] = await until('running', () => replicasOf(o, 'drainer'), allRunning(1));
    const supervisor = server.server.services.replicas;
    const { agentId } = processesOf(supervisor, 'drainer')[0]!;
    let release!: (value: unknown) => void;
    const gate = new Promise((resolve) => (release = resolve));
    let asked!: () => void;
    const invoked = new Promise<void>((resolve) => (asked = resolve));
    const outcome = supervisor.run(
      agentId,
      replica!.name,
      { runId: 'drain-run', trigger: 'webhook', triggerName: 'hook', functionName: 'svc.slow', input: { x: 1 } },
      {
        invoke: async (fn, input) => {
          asked();
          await gate;
          return { fn, input };
        },
      },
    );
    await invoked;
    await callOk(o.create, 'stop_agent', { name: 'drainer' });
    await until(
      'stopping',
      () => replicasOf(o, 'drainer'),
      (rows) => rows[0]?.status === 'stopping',
    );
    // Once its node has seen the stop, it takes no new job while it drains.
    await until(
      'no longer offered',
      async () => supervisor.localReplicas(agentId),
      (names) => names.length === 0,
    );
    await assert.rejects(
      supervisor.run(
        agentId,
        replica!.name,
        { runId: 'late', trigger: 'webhook', triggerName: 'hook', functionName: 'svc.slow', input: 1 },
        {
          invoke: async () => assert.fail('a draining replica takes no new job'),
        },
      ),
      (error: { type?: string }) => error.type === 'unavailable',
    );
    release(undefined);
    assert.deepEqual(await outcome, { ok: true, result: { fn: 'svc.slow', input: { x: 1 } } });
    const [stopped] = await until(
      'stopped',
      () => replicasOf(o, 'drainer'),
      (rows) => rows[0]?.status === 'stopped',
    );
    assert.equal(stopped!.name, replica!.name);
    assert.equal(stopped!.restarts, 0, 'a stop is not a crash');
  });
});

describe(
  'two server processes on one PostgreSQL database',
  { skip: process.env.MCPWORKS_TEST_DATABASE_URL ? false : 'PostgreSQL only' },
  () => {
    test('never hold the same replica; when one stops, the other takes its replicas', async () => {
      const first = await startTestServer();
      const second = await startTestServer({ databaseUrl: first.databaseUrl });
      try {
        const o = await owner(first);
        await callOk(o.create, 'make_agent', { name: 'pair' });
        await callOk(o.create, 'scale_agent', { name: 'pair', replicas: 4 });
        await callOk(o.create, 'start_agent', { name: 'pair' });
        const rows = await until('four running', () => replicasOf(o, 'pair'), allRunning(4));
        const a = first.server.services.replicas;
        const b = second.server.services.replicas;
        const mine = (s: ReplicaSupervisor) => processesOf(s, 'pair').map((p) => p.replica);
        await until(
          'both nodes run what the rows say',
          async () => [mine(a), mine(b)],
          ([x, y]) => x!.length + y!.length === 4,
        );
        // Rounds of both nodes at once (renew, settle, claim): neither takes what the other holds, so
        // no process is started again anywhere and each replica stays on one node.
        for (let round = 0; round < 3; round++) await Promise.all([a.tick(), b.tick(), a.tick(), b.tick()]);
        const onA = new Set(mine(a));
        const onB = new Set(mine(b));
        assert.equal([...onA].filter((n) => onB.has(n)).length, 0, 'no replica on both nodes');
        assert.equal(onA.size + onB.size, 4);
        const later = await replicasOf(o, 'pair');
        for (const row of later) {
          assert.equal(row.node, onA.has(row.name) ? a.nodeId : b.nodeId, row.name);
          assert.equal(row.started_at, rows.find((r) => r.name === row.name)!.started_at, `${row.name} was not started again`);
          assert.equal(row.restarts, 0);
        }
        await first.stop();
        // The first let go of its leases as it stopped: the second takes them without waiting for them to lapse.
        const viaSecond = { ...o, create: await connect(`${second.url}/mcp/create/${o.ns}`, o.account.key) };
        const moved = await until('all four on the second node', () => replicasOf(viaSecond, 'pair'), allRunning(4));
        assert.ok(moved.every((r) => r.node === b.nodeId));
        assert.deepEqual(mine(b).sort(), rows.map((r) => r.name).sort(), 'the same names, now on the second node');
      } finally {
        await second.stop();
        await first.stop().catch(() => undefined);
      }
    });
  },
);
