// test-database: embedded, an agent's state written from real sandboxes through the run's bridge and read back by the state tools
// The `mcpworks` module inside real sandboxes: functions and scripts run as an agent (RunService.invoke
// with an agent principal and the AgentService-made state access, as the dispatcher passes them)
// read and write their agent's state in both languages, tool mode and code mode, Python through a
// zygote child and cold; compare-and-swap, the caps, the per-run bound and a run without an agent
// get their typed errors; what a run wrote is what get_agent_state answers over MCP.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { MAX_STATE_CALLS } from '../core/agent-state-access.js';
import { applyTierOverrides } from '../core/tiers.js';
import {
  callOk,
  connect,
  createAccount,
  startTestServer,
  type McpTestClient,
  type TestAccount,
  type TestServer,
} from '../test-support/harness.js';
import type { Db } from '../store/database.js';
import type { RunContext, RunResult } from './run-service.js';

// statey: 300,000 bytes of state per agent, so the cap is reached by a value below the 1 MB one.
const TIER = 'statey';
const TIERS = applyTierOverrides(`{"${TIER}":{"agents":5,"agent_state_bytes":300000}}`);

const PYTHON = `
from mcpworks import state, StateError

def caught(work):
    try:
        return {"ok": work()}
    except StateError as error:
        return {"class": type(error).__name__, "type": error.type, "message": str(error), "details": error.details}

def main(input_data):
    op = input_data["op"]
    if op == "roundtrip":
        before = state.get("py:count", 0)
        version = state.set("py:count", before + 1)
        state.set("py:doc", {"list": [1, 2.5, "\u00fc"], "none": None})
        state.set("py:tmp", True)
        return {
            "before": before,
            "version": version,
            "entry": state.get_entry("py:count"),
            "doc": state.get("py:doc"),
            "missing": state.get("py:nope", "fallback"),
            "deleted": [state.delete("py:tmp"), state.delete("py:tmp")],
            "keys": state.keys(prefix="py:"),
        }
    if op == "cas":
        entry = state.get_entry("py:count")
        return {
            "stale": caught(lambda: state.set("py:count", -1, if_version=entry["version"] - 1)),
            "only_if_absent": caught(lambda: state.set("py:count", -1, if_version=0)),
            "fresh": caught(lambda: state.set("py:fresh", 1, if_version=0)),
            "delete_stale": caught(lambda: state.delete("py:count", if_version=entry["version"] + 5)),
            "good": state.set("py:count", 100, if_version=entry["version"]),
            "after": state.get("py:count"),
        }
    if op == "big":
        return {
            "agent_cap": caught(lambda: state.set("py:big", "x" * 400000)),
            "value_cap": caught(lambda: state.set("py:huge", "x" * (1024 * 1024 + 1))),
            "bad_key": caught(lambda: state.get("")),
            "absent": state.get("py:big"),
        }
    if op == "large":
        # Past the bridge's 32 KB line: sent and answered as bytes (decoded in a worker thread).
        value = {"text": "y" * 150000, "n": 7}
        version = state.set("py:large", value)
        back = state.get("py:large")
        return {"version": version, "same": back == value, "deleted": state.delete("py:large")}
    if op == "flood":
        answers = [caught(lambda: state.get("py:nope")) for _ in range(input_data["n"])]
        return {"ok": sum(1 for a in answers if "ok" in a), "refused": [a for a in answers if "ok" not in a][:1]}
    if op == "ping":
        state.set("py:ping", "pong")
        return state.get("py:ping")
    return caught(lambda: state.get("anything"))
`;

const TYPESCRIPT = `
import { state, StateError } from 'mcpworks';

async function caught(work: () => Promise<unknown>) {
  try {
    return { ok: await work() };
  } catch (error: any) {
    if (!(error instanceof StateError)) throw error;
    return { class: error.name, type: (error as any).type, message: error.message, details: (error as any).details };
  }
}

export default async function main(input: { op: string }) {
  if (input.op === 'roundtrip') {
    const before = (await state.get('ts:count', 0)) as number;
    const version = await state.set('ts:count', before + 1);
    await state.set('ts:doc', { list: [1, 2.5, '\u00fc'], none: null });
    await state.set('ts:tmp', true);
    return {
      before,
      version,
      entry: await state.getEntry('ts:count'),
      doc: await state.get('ts:doc'),
      missing: await state.get('ts:nope', 'fallback'),
      deleted: [await state.delete('ts:tmp'), await state.delete('ts:tmp')],
      keys: await state.keys({ prefix: 'ts:' }),
    };
  }
  if (input.op === 'cas') {
    const entry = (await state.getEntry('ts:count')) as { version: number };
    return {
      stale: await caught(() => state.set('ts:count', -1, { ifVersion: entry.version - 1 })),
      only_if_absent: await caught(() => state.set('ts:count', -1, { ifVersion: 0 })),
      fresh: await caught(() => state.set('ts:fresh', 1, { ifVersion: 0 })),
      delete_stale: await caught(() => state.delete('ts:count', { ifVersion: entry.version + 5 })),
      good: await state.set('ts:count', 100, { ifVersion: entry.version }),
      after: await state.get('ts:count'),
    };
  }
  if (input.op === 'big') {
    return {
      agent_cap: await caught(() => state.set('ts:big', 'x'.repeat(400000))),
      value_cap: await caught(() => state.set('ts:huge', 'x'.repeat(1024 * 1024 + 1))),
      bad_key: await caught(() => state.get('')),
      absent: await state.get('ts:big'),
    };
  }
  if (input.op === 'large') {
    // Past the bridge's 32 KB line: sent and answered as bytes (decoded in a worker thread).
    const value = { text: 'y'.repeat(150000), n: 7 };
    const version = await state.set('ts:large', value);
    const back = (await state.get('ts:large')) as typeof value;
    return { version, same: back.text === value.text && back.n === 7, deleted: await state.delete('ts:large') };
  }
  if (input.op === 'ping') {
    await state.set('ts:ping', 'pong');
    return state.get('ts:ping');
  }
  return caught(() => state.get('anything'));
}
`;

let server: TestServer;
let account: TestAccount;
let create: McpTestClient;
let ns: string;
let agentId: string;
const AGENT = 'stateful';

before(async () => {
  server = await startTestServer({ tiers: TIERS });
  account = await createAccount(server.url);
  await server.server.services.accounts.setTier(account.email, TIER);
  ns = `st-${Math.random().toString(36).slice(2, 10)}`;
  create = await connect(`${server.url}/mcp/create/${ns}`, account.key);
  await callOk(create, 'make_namespace', { name: ns });
  await callOk(create, 'make_service', { name: 'svc' });
  await callOk(create, 'make_function', { service: 'svc', name: 'state-py', code: PYTHON });
  await callOk(create, 'make_function', { service: 'svc', name: 'state-ts', language: 'typescript', code: TYPESCRIPT });
  await callOk(create, 'make_agent', { name: AGENT });
  // Triggers name agents by id: read from the database, as src/agents/runtime.host.test.ts does.
  const db = (server.server.services.accountsStore as unknown as { db: Db }).db;
  const row = await db
    .selectFrom('agents')
    .innerJoin('namespaces', 'namespaces.id', 'agents.namespace_id')
    .select('agents.id')
    .where('namespaces.name', '=', ns)
    .where('agents.name', '=', AGENT)
    .executeTakeFirstOrThrow();
  agentId = row.id;
});
after(async () => {
  await create?.close();
  await server?.stop();
});

/** The context the dispatcher gives an agent's run: the agent as actor and its state access. */
function agentContext(id = agentId): RunContext {
  return {
    principal: {
      accountId: account.accountId,
      tier: TIER,
      namespace: null,
      scopes: ['read', 'write', 'execute'],
      actor: { kind: 'agent', agentId: id },
    },
    namespace: ns,
    env: {},
    agentState: server.server.services.agents.stateAccess(agentId, TIER),
  };
}

async function run(
  ctx: RunContext,
  target: Parameters<TestServer['server']['services']['runs']['invoke']>[1],
  input?: unknown,
): Promise<any> {
  const outcome = await server.server.services.runs.invoke(ctx, target, input, 'schedule');
  assert.ok(!('rejected' in outcome), JSON.stringify(outcome));
  const result = outcome as RunResult;
  assert.ok(result.ok, JSON.stringify(result));
  return result.result;
}

const fn = (language: 'py' | 'ts') => ({ kind: 'function' as const, service: 'svc', name: `state-${language}` });

async function stored(key: string): Promise<{ value: unknown; version: number }> {
  const got = await callOk(create, 'get_agent_state', { name: AGENT, key });
  return { value: got.value, version: got.version };
}

async function healthy(): Promise<void> {
  const response = await fetch(`${server.url}/healthz`);
  assert.equal(response.status, 200);
}

describe('mcpworks.state from inside the sandbox', () => {
  // First: the namespace's first Python run starts its zygote and runs cold (an account's zygotes
  // are few, so a namespace of its own later in the file might get none).
  test('Python reaches state from a cold sandbox and from a zygote child', async () => {
    const sandbox = server.server.services.sandbox as {
      zygoteStats?: () => { runs: number; zygotes: Array<{ state: string; spares: number }> } | null;
    };
    const stats = () => sandbox.zygoteStats?.() ?? null;
    const before = stats()?.runs ?? 0;
    assert.equal(await run(agentContext(), fn('py'), { op: 'ping' }), 'pong');
    assert.equal(stats()?.runs ?? 0, before, 'the first run was cold');
    if (stats() === null) return; // zygotes are off on this host (they need root and cgroup v1 memory and pids)
    await waitFor(() => stats()!.zygotes.some((z) => z.state === 'ready' && z.spares > 0));
    await callOk(create, 'delete_agent_state', { name: AGENT, key: 'py:ping' });
    assert.equal(await run(agentContext(), fn('py'), { op: 'ping' }), 'pong');
    assert.equal(stats()!.runs, before + 1, 'the second ran in a zygote child');
    assert.deepEqual(await stored('py:ping'), { value: 'pong', version: 1 });
    await callOk(create, 'delete_agent_state', { name: AGENT, key: 'py:ping' });
  });

  test('round trip in both languages (tool mode); the values are what get_agent_state answers over MCP', async () => {
    for (const language of ['py', 'ts'] as const) {
      const first = await run(agentContext(), fn(language), { op: 'roundtrip' });
      assert.equal(first.before, 0, language);
      assert.equal(first.version, 1);
      assert.deepEqual(first.entry, { value: 1, version: 1 });
      assert.deepEqual(first.doc, { list: [1, 2.5, 'ü'], none: null });
      assert.equal(first.missing, 'fallback');
      assert.deepEqual(first.deleted, [true, false]);
      assert.deepEqual(first.keys, [`${language}:count`, `${language}:doc`]);
      const second = await run(agentContext(), fn(language), { op: 'roundtrip' });
      assert.equal(second.before, 1, `${language}: the second run reads what the first wrote`);
      assert.deepEqual(second.entry, { value: 2, version: 2 });
      assert.deepEqual(await stored(`${language}:count`), { value: 2, version: 2 });
      assert.deepEqual((await stored(`${language}:doc`)).value, { list: [1, 2.5, 'ü'], none: null });
    }
    await healthy();
  });

  test('compare-and-swap: a stale or absent-only version is a StateConflictError and changes nothing', async () => {
    for (const language of ['py', 'ts'] as const) {
      const cas = await run(agentContext(), fn(language), { op: 'cas' });
      for (const refused of [cas.stale, cas.only_if_absent, cas.delete_stale]) {
        assert.equal(refused.class, 'StateConflictError', `${language}: ${JSON.stringify(cas)}`);
        assert.equal(refused.type, 'conflict');
        assert.match(refused.message, /nothing was changed/);
      }
      assert.equal(cas.stale.details.current_version, 2);
      assert.deepEqual(cas.fresh, { ok: 1 });
      assert.equal(cas.good, 3);
      assert.equal(cas.after, 100);
      assert.deepEqual(await stored(`${language}:count`), { value: 100, version: 3 });
    }
  });

  test("caps: past the agent's state cap (host) and over one value's cap (module) is a StateTooLargeError; a bad key a StateError; a large value round-trips", async () => {
    for (const language of ['py', 'ts'] as const) {
      const big = await run(agentContext(), fn(language), { op: 'big' });
      assert.equal(big.agent_cap.class, 'StateTooLargeError', `${language}: ${JSON.stringify(big)}`);
      assert.equal(big.agent_cap.type, 'limit_exceeded');
      assert.match(big.agent_cap.message, /allows 300000 bytes of state per agent/);
      assert.equal(big.value_cap.class, 'StateTooLargeError');
      assert.equal(big.value_cap.details.resource, 'state_value_bytes');
      assert.equal(big.bad_key.class, 'StateError');
      assert.equal(big.bad_key.type, 'validation_error');
      assert.equal(big.absent, null, 'nothing was written');
      const large = await run(agentContext(), fn(language), { op: 'large' });
      assert.deepEqual(large, { version: 1, same: true, deleted: true }, language);
    }
    const keys = await callOk(create, 'list_agent_state_keys', { name: AGENT });
    assert.ok(!keys.keys.some((k: { key: string }) => /big|huge/.test(k.key)), JSON.stringify(keys));
    await healthy();
  });

  test("a trigger's run through the dispatcher reaches its agent's state (the dispatcher passes the access)", async () => {
    for (const language of ['py', 'ts'] as const) {
      await callOk(create, 'delete_agent_state', { name: AGENT, key: `${language}:ping` }).catch(() => undefined);
      const outcome = await server.server.services.agentRuntime.dispatcher.dispatch({
        agentId,
        replica: 'test-replica',
        trigger: 'schedule',
        triggerName: 'state-test',
        functionName: `svc.state-${language}`,
        input: { op: 'ping' },
        orchestrationMode: 'direct',
      });
      assert.equal(outcome.status, 'succeeded', JSON.stringify(outcome));
      assert.equal(outcome.result, 'pong');
      assert.deepEqual(await stored(`${language}:ping`), { value: 'pong', version: 1 });
    }
  });

  test('code mode: scripts in both languages, a same-language callee and an other-language callee reach the same state', async () => {
    const python = await run(
      agentContext(),
      {
        kind: 'code',
        language: 'python',
        code: 'from mcpworks import state\nfrom functions import state_ts\nstate.set("code:py", [1, 2])\nresult = {"mine": state.get("code:py"), "callee": state_ts(op="ping")}\n',
      },
      undefined,
    );
    assert.deepEqual(python, { mine: [1, 2], callee: 'pong' });
    const typescript = await run(
      agentContext(),
      {
        kind: 'code',
        language: 'typescript',
        code: "import { state } from 'mcpworks';\nimport { state_ts } from 'functions';\nawait state.set('code:ts', { n: 1 });\nresult = { mine: await state.get('code:ts'), callee: await state_ts({ op: 'ping' }) };\n",
      },
      undefined,
    );
    assert.deepEqual(typescript, { mine: { n: 1 }, callee: 'pong' });
    assert.deepEqual((await stored('code:py')).value, [1, 2]);
    assert.deepEqual((await stored('code:ts')).value, { n: 1 });
    assert.equal((await stored('ts:ping')).value, 'pong');
  });

  test('a run not started by an agent gets NotAgentRunError on first use, in both modes and languages', async () => {
    const principal = await server.server.services.accounts.authenticateKey(account.key);
    const keyContext: RunContext = {
      principal: { ...principal!, actor: { kind: 'key', keyId: principal!.keyId } },
      namespace: ns,
      env: {},
    };
    // An access handed to a run whose principal is another agent (or a key) reaches nothing either.
    const otherAgent = agentContext('some-other-agent');
    const withKey: RunContext = { ...keyContext, agentState: server.server.services.agents.stateAccess(agentId, TIER) };
    for (const ctx of [keyContext, otherAgent, withKey]) {
      for (const language of ['py', 'ts'] as const) {
        const none = await run(ctx, fn(language), { op: 'none' });
        assert.equal(none.class, 'NotAgentRunError', `${language}: ${JSON.stringify(none)}`);
        assert.equal(none.type, 'not_agent_run');
        assert.match(none.message, /only available to runs started by an agent/);
      }
      const script = await run(
        ctx,
        {
          kind: 'code',
          language: 'python',
          code: 'from mcpworks import state, NotAgentRunError\ntry:\n    state.set("x", 1)\n    result = "written"\nexcept NotAgentRunError as error:\n    result = error.type\n',
        },
        undefined,
      );
      assert.equal(script, 'not_agent_run');
    }
    const keys = await callOk(create, 'list_agent_state_keys', { name: AGENT });
    assert.ok(!keys.keys.some((k: { key: string }) => k.key === 'x' || k.key === 'anything'));
  });

  test(`at most ${MAX_STATE_CALLS} state operations per run; the rest are refused and the server still answers`, async () => {
    const flood = await run(agentContext(), fn('py'), { op: 'flood', n: MAX_STATE_CALLS + 2 });
    assert.equal(flood.ok, MAX_STATE_CALLS);
    assert.equal(flood.refused[0].type, 'BridgeError', JSON.stringify(flood));
    assert.match(flood.refused[0].message, new RegExp(`at most ${MAX_STATE_CALLS} state operations per run`));
    await healthy();
  });
});

async function waitFor(condition: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !condition(); i++) await new Promise((resolve) => setTimeout(resolve, 50));
}
