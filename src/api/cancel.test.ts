// test-database: postgres, a cancel must reach the run through the database from a second node (skipped on PGlite)
/**
 * Cancellation and progress through the official SDK clients, in every protocol era:
 * - 2025 era (v1 SDK, v2 SDK's 2025 handshake): an aborted callTool sends notifications/cancelled
 *   on another POST; closing the client closes the call's stream;
 * - 2026 era (v2 SDK pinned to 2026-07-28): an aborted callTool closes the call's own stream.
 * Each run sleeps in a child process named by a marker (`/bin/sleep SECONDS.MARKER`), so the test
 * sees its own sandbox's processes. A cancelled run's processes are gone, its slot is free, it is
 * recorded `cancelled`, it does not count, and its request gets no answer.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { processesWith, RUN_MARK } from '../test-support/processes.js';
import { after, before, describe, test } from 'node:test';
import { Client as ClientV2, StreamableHTTPClientTransport as TransportV2 } from '@modelcontextprotocol/client';
import { Client as ClientV1 } from '@modelcontextprotocol/sdk/client/index.js';
import { LATEST_PROTOCOL_VERSION } from '@modelcontextprotocol/sdk/types.js';
import { StreamableHTTPClientTransport as TransportV1 } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { applyTierOverrides } from '../core/tiers.js';
import { cancelKeyOf, type RunContext } from '../run/run-service.js';
import {
  callOk,
  connect,
  createAccount,
  EMBEDDED_RUN_ONLY,
  MODERN_PROTOCOL,
  startTestServer,
  type ClientEra,
  type McpTestClient,
  type TestAccount,
  type TestServer,
} from '../test-support/harness.js';

const NAP_PY = 'import subprocess\n\ndef main(input_data):\n    subprocess.run(["/bin/sleep", input_data["marker"]])\n    return "woke"\n';
const NAP_TS =
  'import { execFileSync } from "node:child_process";\nexport default function main(input: { marker: string }) {\n  execFileSync("/bin/sleep", [input.marker]);\n  return "woke";\n}\n';
const TIERS = applyTierOverrides(JSON.stringify({ pro_trial: { timeout_s: 120, concurrency: 4, executions_per_minute: -1 } }));
/**
 * Progress every 100 ms here (10 s by default, 100 ms at least), so a test need not wait 10 s. The
 * 1.5 s client timeout below must be reset by each: 15 intervals of margin for a loaded host's late
 * timers (7.5 at 200 ms).
 */
const PROGRESS_MS = 100;

type Kind = 'tools-python' | 'tools-typescript' | 'code-python' | 'code-typescript' | 'bridge';

/** What a call of `kind` runs: it sleeps SECONDS.MARKER (a bridge call: in the TypeScript callee's own sandbox). */
function callOf(kind: Kind, marker: string): { mode: 'code' | 'tools'; name: string; args: Record<string, unknown> } {
  switch (kind) {
    case 'tools-python':
      return { mode: 'tools', name: 'svc__nap_py', args: { marker } };
    case 'tools-typescript':
      return { mode: 'tools', name: 'svc__nap_ts', args: { marker } };
    case 'code-python':
      return {
        mode: 'code',
        name: 'execute',
        args: { code: `import subprocess\nsubprocess.run(["/bin/sleep", "${marker}"])\nresult = "woke"\n` },
      };
    case 'code-typescript':
      return {
        mode: 'code',
        name: 'execute',
        args: {
          language: 'typescript',
          code: `import { execFileSync } from "node:child_process";\nexecFileSync("/bin/sleep", ["${marker}"]);\nresult = "woke";\n`,
        },
      };
    case 'bridge':
      return { mode: 'code', name: 'execute', args: { code: `from functions import nap_ts\nresult = nap_ts(marker="${marker}")\n` } };
  }
}

async function waitFor(what: string, check: () => boolean | Promise<boolean>, ms = 60_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

interface RawClient {
  callTool(name: string, args: Record<string, unknown>, options?: Record<string, unknown>): Promise<any>;
  close(): Promise<void>;
  sessionId(): string | undefined;
  /** The JSON-RPC ids of the tools/call requests sent, in order. */
  callIds: Array<string | number>;
  /** The full text of each tools/call POST's response stream, once it ended. */
  streams: Array<Promise<string>>;
}

/**
 * An official SDK client whose fetch records each tools/call's response stream; `route` may send
 * a POST elsewhere (another node) by its body.
 */
async function rawClient(
  url: string,
  key: string,
  era: ClientEra,
  route?: (body: string) => string | undefined,
  hooks: { hold?: (body: string) => Promise<void> | undefined; answered?: (body: string) => void } = {},
): Promise<RawClient> {
  const callIds: Array<string | number> = [];
  const streams: Array<Promise<string>> = [];
  const recording = async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const body = typeof init?.body === 'string' ? init.body : '';
    const target = (body && route?.(body)) || input;
    await (body && hooks.hold?.(body));
    // Recorded as it is sent: the run can start (and a test look for its id) before the answer's headers come.
    const call = body.includes('"tools/call"');
    if (call) callIds.push(JSON.parse(body).id);
    const response = await fetch(target, init);
    if (body) hooks.answered?.(body);
    if (!call || !response.body) return response;
    const [mine, theirs] = response.body.tee();
    streams.push(new Response(mine).text().catch(() => ''));
    return new Response(theirs, { status: response.status, statusText: response.statusText, headers: response.headers });
  };
  const headers = { authorization: `Bearer ${key}` };
  if (era === 'v1') {
    const transport = new TransportV1(new URL(url), { requestInit: { headers }, fetch: recording as never });
    const client = new ClientV1({ name: 'cancel-test-v1', version: '1.0.0' });
    await client.connect(transport);
    return {
      callTool: (name, args, options) => client.callTool({ name, arguments: args }, undefined, options as never),
      close: () => client.close(),
      sessionId: () => transport.sessionId,
      callIds,
      streams,
    };
  }
  const transport = new TransportV2(new URL(url), { requestInit: { headers }, fetch: recording as never });
  const client = new ClientV2(
    { name: 'cancel-test-v2', version: '1.0.0' },
    era === 'v2' ? { versionNegotiation: { mode: { pin: MODERN_PROTOCOL } } } : {},
  );
  await client.connect(transport);
  return {
    callTool: (name, args, options) => client.callTool({ name, arguments: args }, options as never),
    close: () => client.close(),
    sessionId: () => transport.sessionId,
    callIds,
    streams,
  };
}

let server: TestServer;
let second: TestServer | undefined;
let account: TestAccount;
let create: McpTestClient;
const ns = `cancel-${Math.random().toString(36).slice(2, 8)}`;
let tag = 0;

before(async () => {
  server = await startTestServer({ tiers: TIERS, progressIntervalMs: PROGRESS_MS });
  account = await createAccount(server.url);
  create = await connect(`${server.url}/mcp/create/${ns}`, account.key);
  await callOk(create, 'make_namespace', { name: ns });
  await callOk(create, 'make_service', { name: 'svc' });
  await callOk(create, 'make_function', { service: 'svc', name: 'nap_py', code: NAP_PY });
  await callOk(create, 'make_function', { service: 'svc', name: 'nap_ts', code: NAP_TS, language: 'typescript' });
});
after(async () => {
  await create?.close().catch(() => undefined);
  await second?.stop();
  await server?.stop();
});

const runUrl = (base: string, mode: 'code' | 'tools') => `${base}/mcp/run/${ns}${mode === 'tools' ? '?mode=tools' : ''}`;

async function usage(): Promise<{ executions: number; active: number }> {
  const body = await (await fetch(`${server.url}/api/usage`, { headers: { authorization: `Bearer ${account.token}` } })).json();
  return { executions: body.executions, active: body.concurrency.active };
}

async function history(status?: string): Promise<
  Array<{
    id: string;
    status: string;
    error_type: string | null;
    mode: string;
    trigger: string;
    function: string | null;
    language: string | null;
  }>
> {
  const listed = await callOk(create, 'list_executions', { limit: 200, ...(status ? { status } : {}) });
  return Array.isArray(listed) ? listed : listed.executions;
}

/**
 * Starts a call of `kind` that would sleep 100 s, waits until its process runs, cancels it with
 * `cancel`, and checks what a cancel must do. Answers the response stream's text (when the
 * client's fetch saw it end) for the caller's own checks.
 */
async function cancelledRun(client: RawClient, kind: Kind, cancel: (abort: AbortController) => Promise<void> | void): Promise<string> {
  const marker = `100.${RUN_MARK}${++tag}`;
  const call = callOf(kind, marker);
  const before = await usage();
  const cancelledBefore = (await history('cancelled')).length;
  const abort = new AbortController();
  const answer = client.callTool(call.name, call.args, { signal: abort.signal, timeout: 300_000 });
  answer.catch(() => undefined);
  await waitFor(`the ${kind} run's process`, () => processesWith(`/bin/sleep ${marker}`).length > 0);
  const cancelledAt = performance.now();
  await cancel(abort);
  await waitFor(`the ${kind} run's processes killed`, () => processesWith(`/bin/sleep ${marker}`).length === 0);
  // Indicative only (the machine is shared): the requirement is within 1 s.
  const killedMs = Math.round(performance.now() - cancelledAt);
  await assert.rejects(answer, 'the client sees its own cancel, not a result');
  await waitFor('the cancelled run recorded', async () => (await history('cancelled')).length === cancelledBefore + 1);
  const [row] = await history('cancelled');
  assert.equal(row!.status, 'cancelled');
  assert.equal(row!.error_type, 'cancelled');
  assert.equal(row!.mode, call.mode);
  const now = await usage();
  assert.equal(now.active, 0, 'the slot is free');
  assert.equal(now.executions, before.executions, 'a cancelled run does not count');
  const health = await fetch(`${server.url}/healthz`);
  assert.equal(health.status, 200);
  process.stdout.write(`# ${client.sessionId() ? '2025' : '2026'} era ${kind}: processes gone ${killedMs} ms after the cancel\n`);
  const stream = client.streams.at(-1);
  return stream ? await stream : '';
}

/** The stream of a cancelled call carries no answer to it (progress notifications may be there). */
function assertNoAnswer(stream: string, id: string | number): void {
  const answers = stream
    .split('\n')
    .filter((line) => line.startsWith('data:'))
    .map((line) => JSON.parse(line.slice(5)))
    .filter((message) => message.id === id);
  assert.deepEqual(answers, [], 'the cancelled request gets no answer');
}

describe('cancellation', () => {
  for (const [era, kinds] of [
    ['v1', ['tools-python', 'tools-typescript', 'code-python', 'code-typescript', 'bridge']],
    ['v2-legacy', ['tools-typescript', 'bridge']],
  ] as Array<[ClientEra, Kind[]]>) {
    test(`2025 era (${era}): notifications/cancelled on another POST kills the run (${kinds.join(', ')})`, async () => {
      for (const kind of kinds) {
        const client = await rawClient(runUrl(server.url, callOf(kind, '').mode), account.key, era);
        try {
          const stream = await cancelledRun(client, kind, (abort) => abort.abort('the user pressed stop'));
          assertNoAnswer(stream, client.callIds.at(-1)!);
        } finally {
          await client.close();
        }
      }
    });
  }

  test('2026 era (v2): an aborted call closes its stream, which kills the run (tools-python, code-typescript, bridge)', async () => {
    for (const kind of ['tools-python', 'code-typescript', 'bridge'] as Kind[]) {
      const client = await rawClient(runUrl(server.url, callOf(kind, '').mode), account.key, 'v2');
      try {
        await cancelledRun(client, kind, (abort) => abort.abort('the user pressed stop'));
      } finally {
        await client.close();
      }
    }
  });

  test('2025 era: a client that closes its connection mid-call has its run killed (tools-typescript, code-python)', async () => {
    for (const kind of ['tools-typescript', 'code-python'] as Kind[]) {
      const client = await rawClient(runUrl(server.url, callOf(kind, '').mode), account.key, 'v1');
      await cancelledRun(client, kind, () => client.close());
    }
  });

  test("a cancel that comes through the database (another node's notifications/cancelled) kills the run", async () => {
    const client = await rawClient(runUrl(server.url, 'tools'), account.key, 'v1');
    try {
      const marker = `${100}.${RUN_MARK}${tag + 1}`;
      const stream = await cancelledRun(client, 'tools-python', async (abort) => {
        // What a node that does not run the call does: mark its slot and NOTIFY; never this node's map.
        const marked = await server.server.services.cancels.request(
          account.accountId,
          cancelKeyOf(client.sessionId()!, client.callIds.at(-1)!),
        );
        assert.equal(marked.length, 1);
        await waitFor('the run killed by the NOTIFY alone', () => processesWith(`/bin/sleep ${marker}`).length === 0);
        // The server ended the call's stream without an answer; this client gives up on it now.
        abort.abort('done');
      });
      assertNoAnswer(stream, client.callIds.at(-1)!);
    } finally {
      await client.close();
    }
  });

  test('2026 era: a POSTed notifications/cancelled names no call (no session scopes its id): accepted, ignored; the call with that id runs on', async () => {
    // The 2026-07-28 revision cancels over HTTP by closing the call's stream; request ids are the
    // client's own, so honouring this would cancel whichever call of the account has that id.
    const client = await rawClient(runUrl(server.url, 'tools'), account.key, 'v2');
    try {
      const marker = `2.${RUN_MARK}${++tag}`;
      const answer = client.callTool('svc__nap_py', { marker });
      await waitFor('the run', () => processesWith(`/bin/sleep ${marker}`).length > 0);
      const meta = {
        'io.modelcontextprotocol/protocolVersion': MODERN_PROTOCOL,
        'io.modelcontextprotocol/clientInfo': { name: 'raw', version: '1' },
        'io.modelcontextprotocol/clientCapabilities': {},
      };
      const cancel = await fetch(runUrl(server.url, 'tools'), {
        method: 'POST',
        headers: {
          authorization: `Bearer ${account.key}`,
          'content-type': 'application/json',
          accept: 'application/json, text/event-stream',
          'mcp-protocol-version': MODERN_PROTOCOL,
          'mcp-method': 'notifications/cancelled',
        },
        body: JSON.stringify({
          jsonrpc: '2.0',
          method: 'notifications/cancelled',
          params: { requestId: client.callIds.at(-1), reason: 'stop', _meta: meta },
        }),
      });
      assert.equal(cancel.status, 202, await cancel.text());
      const result = await answer;
      assert.equal(result.isError, undefined, JSON.stringify(result));
    } finally {
      await client.close();
    }
  });

  test("2025 era: a call whose JSON-RPC id is thousands of characters (the client's to choose) is answered, and a cancel naming that id kills it", async () => {
    // The id ends up in the run's cancel key, which indexed columns hold: random, so it does not compress.
    const client = await rawClient(runUrl(server.url, 'tools'), account.key, 'v1');
    try {
      const post = (message: Record<string, unknown>) =>
        fetch(runUrl(server.url, 'tools'), {
          method: 'POST',
          headers: {
            authorization: `Bearer ${account.key}`,
            'content-type': 'application/json',
            accept: 'application/json, text/event-stream',
            'mcp-session-id': client.sessionId()!,
            'mcp-protocol-version': LATEST_PROTOCOL_VERSION,
          },
          body: JSON.stringify({ jsonrpc: '2.0', ...message }),
        });
      const call = (id: string, marker: string) =>
        post({ id, method: 'tools/call', params: { name: 'svc__nap_py', arguments: { marker } } });
      const quick = await call(randomBytes(4000).toString('hex'), '0');
      const text = await quick.text();
      assert.equal(quick.status, 200, text);
      assert.match(text, /woke/);
      assert.doesNotMatch(text, /"isError":true/);

      const marker = `4.${RUN_MARK}${++tag}`;
      const id = randomBytes(4000).toString('hex');
      const answer = call(id, marker).then((response) => response.text());
      await waitFor('the run', () => processesWith(`/bin/sleep ${marker}`).length > 0);
      const cancel = await post({ method: 'notifications/cancelled', params: { requestId: id, reason: 'stop' } });
      assert.equal(cancel.status, 202, await cancel.text());
      await waitFor("the run's processes killed", () => processesWith(`/bin/sleep ${marker}`).length === 0);
      await answer.catch(() => '');
    } finally {
      await client.close();
    }
    // The create endpoint's calls (chat_with_agent among them) take their cancel key the same way.
    const create = await rawClient(`${server.url}/mcp/create/${ns}`, account.key, 'v1');
    try {
      const listed = await fetch(`${server.url}/mcp/create/${ns}`, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${account.key}`,
          'content-type': 'application/json',
          accept: 'application/json, text/event-stream',
          'mcp-session-id': create.sessionId()!,
          'mcp-protocol-version': LATEST_PROTOCOL_VERSION,
        },
        body: JSON.stringify({
          jsonrpc: '2.0',
          id: randomBytes(4000).toString('hex'),
          method: 'tools/call',
          params: { name: 'list_services', arguments: {} },
        }),
      });
      const text = await listed.text();
      assert.equal(listed.status, 200, text);
      assert.match(text, /svc/);
      assert.doesNotMatch(text, /"isError":true/);
    } finally {
      await create.close();
    }
  });

  test('a cancel names a call of its own account and session only', async () => {
    const client = await rawClient(runUrl(server.url, 'tools'), account.key, 'v1');
    const other = await createAccount(server.url);
    try {
      const marker = `3.${RUN_MARK}${++tag}`;
      const answer = client.callTool('svc__nap_py', { marker });
      await waitFor('the run', () => processesWith(`/bin/sleep ${marker}`).length > 0);
      const key = cancelKeyOf(client.sessionId()!, client.callIds.at(-1)!);
      assert.deepEqual(await server.server.services.cancels.request(other.accountId, key), [], "another account's cancel marks nothing");
      assert.deepEqual(
        await server.server.services.cancels.request(account.accountId, cancelKeyOf('another-session', client.callIds.at(-1)!)),
        [],
      );
      const result = await answer;
      assert.equal(result.isError, undefined, JSON.stringify(result));
    } finally {
      await client.close();
    }
  });

  test(
    'two nodes on one PostgreSQL: the cancel reaches node B, the run on node A is killed',
    { skip: !process.env.MCPWORKS_TEST_DATABASE_URL && 'needs PostgreSQL (MCPWORKS_TEST_DATABASE_URL)' },
    async () => {
      second ??= await startTestServer({ databaseUrl: server.databaseUrl, tiers: TIERS, progressIntervalMs: PROGRESS_MS });
      const nodeB = second.url;
      // The session lives in the database: node B serves it. Only the cancel goes there.
      const toB = (body: string) => (body.includes('"notifications/cancelled"') ? runUrl(nodeB, 'tools') : undefined);
      for (const era of ['v1', 'v2-legacy'] as ClientEra[]) {
        let cancelsSentToB = 0;
        const client = await rawClient(runUrl(server.url, 'tools'), account.key, era, (body) => {
          const target = toB(body);
          if (target) cancelsSentToB++;
          return target;
        });
        try {
          const stream = await cancelledRun(client, era === 'v1' ? 'tools-python' : 'tools-typescript', (abort) => abort.abort('stop'));
          assert.equal(cancelsSentToB, 1, 'the cancel went to node B');
          assertNoAnswer(stream, client.callIds.at(-1)!);
        } finally {
          await client.close();
        }
      }
    },
  );
  test(
    'two nodes on one PostgreSQL: a cancel that reaches node B before node A admits the call still cancels it',
    { skip: !process.env.MCPWORKS_TEST_DATABASE_URL && 'needs PostgreSQL (MCPWORKS_TEST_DATABASE_URL)' },
    async () => {
      second ??= await startTestServer({ databaseUrl: server.databaseUrl, tiers: TIERS, progressIntervalMs: PROGRESS_MS });
      const nodeB = second.url;
      for (const era of ['v1', 'v2-legacy'] as ClientEra[]) {
        // The tools/call POST is held until node B has answered the cancel: B finds no slot to mark.
        let release!: () => void;
        const released = new Promise<void>((resolve) => (release = resolve));
        let held!: () => void;
        const callHeld = new Promise<void>((resolve) => (held = resolve));
        const client = await rawClient(
          runUrl(server.url, 'tools'),
          account.key,
          era,
          (body) => (body.includes('"notifications/cancelled"') ? runUrl(nodeB, 'tools') : undefined),
          {
            hold: (body) => (body.includes('"tools/call"') ? (held(), released) : undefined),
            answered: (body) => (body.includes('"notifications/cancelled"') ? release() : undefined),
          },
        );
        try {
          const marker = `100.${RUN_MARK}${++tag}`;
          const before = await usage();
          const recorded = (await history()).length;
          const abort = new AbortController();
          const answer = client.callTool(
            era === 'v1' ? 'svc__nap_py' : 'svc__nap_ts',
            { marker },
            { signal: abort.signal, timeout: 300_000 },
          );
          answer.catch(() => undefined);
          await callHeld;
          abort.abort('the user pressed stop before the call arrived');
          await assert.rejects(answer);
          await released;
          // Node A admits the call after the cancel: the kept cancel is taken and the call never runs.
          await waitFor('the call recorded', async () => (await history()).length === recorded + 1);
          const [row] = await history();
          assert.equal(row!.status, 'cancelled', `${era}: ${JSON.stringify(row)}`);
          assert.equal(processesWith(`/bin/sleep ${marker}`).length, 0);
          const now = await usage();
          assert.equal(now.active, 0, 'the slot is free');
          assert.equal(now.executions, before.executions, 'a cancelled call does not count');
          assertNoAnswer(await client.streams.at(-1)!, client.callIds.at(-1)!);
        } finally {
          await client.close();
        }
      }
    },
  );
});

describe('progress', () => {
  for (const era of ['v1', 'v2-legacy', 'v2'] as ClientEra[]) {
    // Progress is a timer of the node serving the call: skipped in the PostgreSQL run (it ran, the same, in the embedded run).
    test(
      `${era}: with a progressToken, notifications/progress keep a call alive past the client's request timeout`,
      { skip: EMBEDDED_RUN_ONLY },
      async () => {
        for (const kind of (era === 'v1' ? ['tools-python', 'code-typescript'] : ['tools-typescript']) as Kind[]) {
          const marker = `3.${RUN_MARK}${++tag}`;
          const call = callOf(kind, marker);
          const client = await rawClient(runUrl(server.url, call.mode), account.key, era);
          try {
            const progress: Array<{ progress: number }> = [];
            // A 3 s run under a 1.5 s timeout: only progress resets it.
            const result = await client.callTool(call.name, call.args, {
              timeout: 1500,
              resetTimeoutOnProgress: true,
              onprogress: (p: { progress: number }) => progress.push(p),
            });
            assert.equal(result.isError, undefined, JSON.stringify(result));
            assert.ok(progress.length >= 2, `progress notifications arrived (${progress.length})`);
            assert.ok(
              progress.every((p, i) => i === 0 || p.progress > progress[i - 1]!.progress),
              'progress increases',
            );
          } finally {
            await client.close();
          }
        }
      },
    );
  }

  test('without progress the same call times out at the client', async () => {
    const marker = `3.${RUN_MARK}${++tag}`;
    const client = await rawClient(runUrl(server.url, 'tools'), account.key, 'v1');
    try {
      await assert.rejects(client.callTool('svc__nap_py', { marker }, { timeout: 1500 }), /timed out/i);
      // The client's timeout cancels the call: the run does not go on for nothing.
      await waitFor('the timed-out run killed', () => processesWith(`/bin/sleep ${marker}`).length === 0);
      await waitFor('no slot held', async () => (await usage()).active === 0);
    } finally {
      await client.close();
    }
  });
});

describe("invoke: the one entry for every trigger (called directly, as an agent's schedule would)", () => {
  test('a function and a script run with trigger schedule are recorded with it and counted; a run cancelled by its AbortSignal is recorded cancelled and not counted', async () => {
    const runs = server.server.services.runs;
    // An agent's principal: the account's tier and scopes, no API key.
    const ctx: RunContext = {
      principal: {
        accountId: account.accountId,
        tier: 'pro_trial',
        namespace: null,
        scopes: ['read', 'write', 'execute'],
        actor: { kind: 'agent', agentId: 'agent-schedule-test' },
      },
      namespace: ns,
      env: {},
    };
    const before = await usage();
    const fn = await runs.invoke(ctx, { kind: 'function', service: 'svc', name: 'nap_py' }, { marker: '0' }, 'schedule');
    assert.ok(!('rejected' in fn) && fn.ok, JSON.stringify(fn));
    assert.equal(fn.result, 'woke');
    const script = await runs.invoke(ctx, { kind: 'code', code: 'result = 6 * 7\n' }, undefined, 'schedule');
    assert.ok(!('rejected' in script) && script.ok, JSON.stringify(script));
    assert.equal(script.result, 42);
    assert.equal((await usage()).executions, before.executions + 2, 'both runs count');
    const [last, first] = await history();
    assert.deepEqual([first!.mode, first!.trigger, first!.status], ['tools', 'schedule', 'success']);
    assert.deepEqual([last!.mode, last!.trigger, last!.status], ['code', 'schedule', 'success']);

    const marker = `100.${RUN_MARK}${++tag}`;
    const abort = new AbortController();
    const cancelledBefore = (await history('cancelled')).length;
    const running = runs.invoke(ctx, { kind: 'function', service: 'svc', name: 'nap_ts' }, { marker }, 'schedule', {
      signal: abort.signal,
    });
    await waitFor("the scheduled run's process", () => processesWith(`/bin/sleep ${marker}`).length > 0);
    abort.abort();
    const answer = await running;
    assert.ok(!('rejected' in answer) && !answer.ok && answer.error_type === 'cancelled', JSON.stringify(answer));
    await waitFor("the run's processes killed", () => processesWith(`/bin/sleep ${marker}`).length === 0);
    const cancelled = await history('cancelled');
    assert.equal(cancelled.length, cancelledBefore + 1);
    assert.deepEqual([cancelled[0]!.trigger, cancelled[0]!.error_type], ['schedule', 'cancelled']);
    const now = await usage();
    assert.equal(now.executions, before.executions + 2, 'the cancelled run does not count');
    assert.equal(now.active, 0, 'its slot is free');
  });
});
