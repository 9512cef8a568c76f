// test-database: postgres, seen signatures and Idempotency-Keys are unique rows claimed by parallel deliveries
// Agent webhooks through the real server, the official SDK client for the tools and plain HTTP for
// deliveries: signed (node:crypto and the openssl command the README shows), bad, stale, replayed and
// missing signatures; no secret; Idempotency-Key; the plan's body cap (Content-Length and chunked);
// the per-webhook rate; 503 while stopped; 202 and ?wait=true; the subdomain form; runs recorded.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { request } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { sql } from 'kysely';
import { DomainError } from '../core/errors.js';
import { applyTierOverrides } from '../core/tiers.js';
import type { Db } from '../store/database.js';
import { WebhooksStore } from '../store/webhooks-store.js';
import {
  callError,
  callOk,
  connect,
  createAccount,
  startTestServer,
  type McpTestClient,
  type TestServer,
} from '../test-support/harness.js';
import { until } from '../test-support/processes.js';

const BASE_HOST = 'hooks.test';
// small: a 2 KB body cap and 5 deliveries a minute per webhook (the defaults are 1 MB and 60).
// thrifty: one execution a month (a keyed delivery over the quota, then the plan raised).
const TIERS = applyTierOverrides(
  '{"small":{"webhook_payload_bytes":2048,"webhook_requests_per_minute":5},"thrifty":{"monthly_executions":1}}',
);
const SECRET = 'test-webhook-secret-0123456789abcdef';
const ECHO = 'def main(input_data):\n    return {"got": input_data}\n';

let server: TestServer;
let create: McpTestClient;
let ns: string;

interface Answer {
  status: number;
  body: any;
  headers: Record<string, string | string[] | undefined>;
}

/** One POST through node:http (fetch cannot set Host or send a chunked body of our choosing). */
function post(
  path: string,
  body: string | Buffer | Buffer[],
  headers: Record<string, string> = {},
  options: { host?: string; chunked?: boolean } = {},
): Promise<Answer> {
  const url = new URL(server.url);
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: url.hostname,
        port: url.port,
        path,
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          ...(options.host ? { host: options.host } : {}),
          ...(options.chunked ? { 'transfer-encoding': 'chunked' } : {}),
          ...headers,
        },
      },
      (res) => {
        let data = '';
        res.on('data', (chunk) => (data += chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: data ? JSON.parse(data) : null, headers: res.headers }));
      },
    );
    // A refused upload may end the connection before the body is sent: the answer still arrives.
    req.on('error', (error: NodeJS.ErrnoException) => (error.code === 'EPIPE' || error.code === 'ECONNRESET' ? undefined : reject(error)));
    for (const part of Array.isArray(body) ? body : [body]) req.write(part);
    req.end();
  });
}

const hookPath = (agent: string, path: string, query = '') => `/mcp/agent/${ns}/${agent}/webhook/${path}${query}`;
const now = () => Math.floor(Date.now() / 1000);
/** Signs as a sender does with node:crypto: HMAC-SHA256 of "timestamp.body". */
function signed(body: string, ts = now(), secret = SECRET): Record<string, string> {
  const hex = createHmac('sha256', secret).update(`${ts}.${body}`).digest('hex');
  return { 'x-mcpworks-timestamp': String(ts), 'x-mcpworks-signature': `sha256=${hex}` };
}

async function runsOf(agent: string): Promise<any[]> {
  const answer = await callOk(create, 'list_agent_runs', { name: agent, limit: 200 });
  return Array.isArray(answer) ? answer : answer.runs;
}

async function healthy(): Promise<void> {
  const response = await fetch(`${server.url}/healthz`);
  assert.equal(response.status, 200);
}

before(async () => {
  server = await startTestServer({ tiers: TIERS, baseHost: BASE_HOST });
  const account = await createAccount(server.url);
  ns = `hooks-${Math.random().toString(36).slice(2, 8)}`;
  create = await connect(`${server.url}/mcp/create/${ns}`, account.key);
  await callOk(create, 'make_namespace', { name: ns });
  await callOk(create, 'make_service', { name: 'hooks' });
  await callOk(create, 'make_function', { service: 'hooks', name: 'echo', code: ECHO });
  for (const agent of ['open', 'signed']) await callOk(create, 'make_agent', { name: agent, description: 'webhook tests' });
});
after(async () => {
  await create?.close();
  await server?.stop();
});

describe('agent webhooks', () => {
  test('add_webhook, list_webhooks, remove_webhook: rules, aliases, full URLs, the secret never shown', async () => {
    const { tools } = await create.listTools();
    for (const name of ['add_webhook', 'list_webhooks', 'remove_webhook']) {
      const tool = tools.find((t) => t.name === name);
      assert.ok(tool && (tool.description ?? '').length > 40, `${name} is listed with a description`);
      assert.equal(typeof tool.annotations?.readOnlyHint, 'boolean');
    }
    const open = await callOk(create, 'add_webhook', { name: 'open', path: 'inbox', handler_function_name: 'hooks.echo' });
    assert.match(open.warning, /anyone who has its URL can call it/);
    assert.equal(open.signed, false);
    assert.equal(open.url, `http://${BASE_HOST}/mcp/agent/${ns}/open/webhook/inbox`);
    assert.equal(open.subdomain_url, `http://${ns}.agent.${BASE_HOST}/open/webhook/inbox`);
    const signedHook = await callOk(create, 'add_webhook', {
      agent_name: 'signed',
      path: '/github',
      function_name: 'hooks.echo',
      secret: SECRET,
      orchestration_mode: 'direct',
    });
    assert.equal(signedHook.path, 'github');
    assert.equal(signedHook.signed, true);
    assert.match(signedHook.signing, /X-MCPWorks-Signature/);
    const listed = await callOk(create, 'list_webhooks', { name: 'signed' });
    assert.deepEqual(
      listed.webhooks.map((w: any) => [w.path, w.handler_function_name, w.signed]),
      [['github', 'hooks.echo', true]],
    );
    const described = await callOk(create, 'describe_agent', { name: 'signed' });
    assert.deepEqual(described.webhooks, listed.webhooks, 'describe_agent lists them with their URLs');
    assert.ok(!JSON.stringify([open, signedHook, listed, described]).includes(SECRET), 'the secret is never answered');
    // Stored sealed: the secret's text is nowhere in the table.
    const db = (server.server.services.accountsStore as unknown as { db: Db }).db;
    const stored = await sql<{ secret_sealed: string }>`SELECT secret_sealed FROM agent_webhooks WHERE path = 'github'`.execute(db);
    assert.ok(stored.rows[0]!.secret_sealed.startsWith('v1:') && !stored.rows[0]!.secret_sealed.includes(SECRET));

    const refusal = async (args: Record<string, unknown>, type: string, pattern: RegExp) => {
      const error = await callError(create, 'add_webhook', { name: 'open', handler_function_name: 'hooks.echo', ...args });
      assert.equal(error.type, type, JSON.stringify(error));
      assert.match(error.message, pattern);
    };
    await refusal({ path: 'inbox' }, 'conflict', /already has a webhook/);
    await refusal({ path: '../etc' }, 'validation_error', /invalid webhook path/);
    await refusal({ path: 'x', handler_function_name: 'hooks.missing' }, 'not_found', /missing/);
    await refusal({ path: 'x', handler_function_name: 'echo' }, 'validation_error', /service\.function/);
    await refusal({ path: 'x', secret: 'short' }, 'validation_error', /16-256/);
    await refusal({ path: 'x', orchestration_mode: 'reason_later' }, 'validation_error', /orchestration_mode/);
    assert.equal(
      (await callError(create, 'add_webhook', { name: 'nobody', path: 'x', handler_function_name: 'hooks.echo' })).type,
      'not_found',
    );
    assert.equal((await callOk(create, 'list_webhooks', { name: 'open' })).webhooks.length, 1, 'refused adds changed nothing');

    await callOk(create, 'add_webhook', { name: 'open', path: 'temporary', handler_function_name: 'hooks.echo' });
    assert.deepEqual(await callOk(create, 'remove_webhook', { name: 'open', path: 'temporary' }), { removed: 'temporary', agent: 'open' });
    assert.equal((await callError(create, 'remove_webhook', { name: 'open', path: 'temporary' })).type, 'not_found');
    assert.equal((await post(hookPath('open', 'temporary'), '{}')).status, 404);
  });

  test('503 while the agent is stopped; unknown namespace, agent or path: 404; GET: 405', async () => {
    const stopped = await post(hookPath('open', 'inbox'), '{"a":1}');
    assert.equal(stopped.status, 503);
    assert.equal(stopped.body.error_type, 'unavailable');
    assert.match(stopped.body.error, /start_agent/);
    for (const path of [
      `/mcp/agent/no-such-ns/open/webhook/inbox`,
      `/mcp/agent/${ns}/nobody/webhook/inbox`,
      `/mcp/agent/${ns}/open/webhook/nothing`,
      `/mcp/agent/${ns}/open/webhook/..%2f`,
    ]) {
      const answer = await post(path, '{}');
      assert.equal(answer.status, 404, path);
      assert.equal(answer.body.error_type, 'not_found', 'plain JSON, not a JSON-RPC error');
    }
    const get = await fetch(`${server.url}${hookPath('open', 'inbox')}`);
    assert.equal(get.status, 405);
    await callOk(create, 'start_agent', { name: 'open' });
    await callOk(create, 'start_agent', { name: 'signed' });
  });

  test('no secret: 202 {run_id}, ?wait=true gives the result; the handler gets body, headers, query, path; runs recorded', async () => {
    const accepted = await post(hookPath('open', 'inbox'), '{"n":1}', { authorization: 'Bearer not-for-the-handler' });
    assert.equal(accepted.status, 202, JSON.stringify(accepted.body));
    assert.match(accepted.body.run_id, /^[0-9a-f-]{36}$/);
    const waited = await post(hookPath('open', 'inbox', '?wait=true&x=1&x=2'), '{"n":2}', { 'x-custom': 'yes', cookie: 'c=1' });
    assert.equal(waited.status, 200, JSON.stringify(waited.body));
    assert.equal(waited.body.status, 'succeeded', JSON.stringify(waited.body));
    const got = waited.body.result.got;
    assert.deepEqual(got.body, { n: 2 });
    assert.equal(got.path, 'inbox');
    assert.deepEqual(got.query, { wait: 'true', x: '2' });
    assert.equal(got.headers['x-custom'], 'yes');
    assert.equal(got.headers.cookie, undefined);
    assert.equal(got.headers.authorization, undefined);
    const text = await post(hookPath('open', 'inbox', '?wait=1'), 'plain words', { 'content-type': 'text/plain' });
    assert.equal(text.body.result.got.body, 'plain words');
    const binary = await post(hookPath('open', 'inbox'), Buffer.from([0x7b, 0xff, 0x7d]));
    assert.equal(binary.status, 400);
    assert.match(binary.body.error, /not UTF-8/);
    // The 202's run happened too: every delivery is a run of the agent, trigger webhook.
    const runs = await runsOf('open');
    const ids = runs.map((r) => r.run_id ?? r.id);
    for (const id of [accepted.body.run_id, waited.body.run_id]) assert.ok(ids.includes(id), `run ${id} is listed`);
    assert.ok(runs.every((r) => r.trigger === 'webhook'));

    // Delivered while the agent's only replica restarts (its process killed, the next not up yet): the delivery waits for it, bounded.
    const supervisor = server.server.services.replicas;
    const lone = supervisor.processes().find((p) => p.agent === 'open')!;
    process.kill(lone.pid!, 'SIGKILL');
    await until(
      "the 'open' replica restarting",
      async () => supervisor.processes().find((p) => p.agent === 'open'),
      (p) => p !== undefined && (p.pid !== lone.pid || p.phase !== 'up'),
    );
    const restarting = await post(hookPath('open', 'inbox', '?wait=true'), '{"n":3}');
    assert.equal(restarting.status, 200, JSON.stringify(restarting.body));
    assert.deepEqual(restarting.body.result.got.body, { n: 3 });
  });

  test('signed: good (node:crypto and openssl), bad, stale, missing and replayed signatures', async () => {
    const body = '{"ref":"main"}';
    const good = signed(body);
    const ok = await post(hookPath('signed', 'github', '?wait=true'), body, good);
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    assert.deepEqual(ok.body.result.got.body, { ref: 'main' });
    assert.equal(ok.body.result.got.headers['x-mcpworks-signature'], undefined, 'the signature is not handed on');

    // As the README shows it: openssl computes the HMAC of "timestamp.body".
    // (Another body: the same body in the same second would be the same signature, a replay.)
    const viaBody = '{"ref":"openssl"}';
    const ts = String(now());
    const hex = execFileSync('openssl', ['dgst', '-sha256', '-hmac', SECRET], { input: `${ts}.${viaBody}` })
      .toString()
      .trim()
      .split(' ')
      .pop()!;
    const viaOpenssl = await post(hookPath('signed', 'github', '?wait=true'), viaBody, {
      'x-mcpworks-timestamp': ts,
      'x-mcpworks-signature': `sha256=${hex}`,
      'x-delivery': 'openssl',
    });
    assert.equal(viaOpenssl.status, 200, JSON.stringify(viaOpenssl.body));
    assert.deepEqual(viaOpenssl.body.result.got.body, { ref: 'openssl' });

    const replay = await post(hookPath('signed', 'github'), body, good);
    assert.equal(replay.status, 409);
    assert.equal(replay.body.reason, 'replayed');
    const cases: Array<[string, Record<string, string>, string]> = [
      ['bad', signed(body, now(), 'another-secret-0123456789abcdef'), 'mismatch'],
      ['body changed', signed('{"ref":"evil"}'), 'mismatch'],
      ['stale', signed(body, now() - 301), 'stale'],
      ['future', signed(body, now() + 400), 'stale'],
      ['missing', {}, 'missing_signature'],
      ['no timestamp', { 'x-mcpworks-signature': good['x-mcpworks-signature']! }, 'missing_timestamp'],
    ];
    const before = (await runsOf('signed')).length;
    for (const [name, headers, reason] of cases) {
      const answer = await post(hookPath('signed', 'github'), body, headers);
      assert.equal(answer.status, 401, name);
      assert.equal(answer.body.reason, reason, name);
    }
    assert.equal((await runsOf('signed')).length, before, 'refused deliveries are not runs');
    const events = await callOk(create, 'list_security_events', {});
    const refused = events.filter((e: any) => e.type === 'webhook_refused').map((e: any) => e.detection);
    for (const reason of ['replayed', 'mismatch', 'stale', 'missing_signature']) assert.ok(refused.includes(reason), reason);
    await healthy();
  });

  test('clone_agent copies the webhooks, the secret still usable (sealed again for the copy)', async () => {
    await callOk(create, 'clone_agent', { name: 'signed', new_name: 'signed-copy' });
    const listed = await callOk(create, 'list_webhooks', { name: 'signed-copy' });
    assert.deepEqual(
      listed.webhooks.map((w: any) => [w.path, w.handler_function_name, w.signed]),
      [['github', 'hooks.echo', true]],
    );
    await callOk(create, 'start_agent', { name: 'signed-copy' });
    const body = '{"copy":true}';
    const answer = await post(hookPath('signed-copy', 'github', '?wait=true'), body, signed(body));
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    assert.equal((await post(hookPath('signed-copy', 'github'), body, signed(body, now(), 'not-the-secret-0123456789'))).status, 401);
    // The copy shares the secret: a delivery signed for one is accepted once across both (no replay to the other).
    const once = '{"once-across":"clones"}';
    const headers = signed(once);
    assert.equal((await post(hookPath('signed', 'github', '?wait=true'), once, headers)).status, 200);
    const replayed = await post(hookPath('signed-copy', 'github'), once, headers);
    assert.deepEqual([replayed.status, replayed.body.reason], [409, 'replayed']);
    const other = '{"once-across":"the other way"}';
    const otherHeaders = signed(other);
    assert.equal((await post(hookPath('signed-copy', 'github', '?wait=true'), other, otherHeaders)).status, 200);
    assert.equal((await post(hookPath('signed', 'github'), other, otherHeaders)).status, 409);
  });

  test('a delivery its replica refuses before the run (stopped meanwhile): 503 + Retry-After, key and signature let go, the retry runs', async () => {
    const supervisor = server.server.services.replicas;
    const realRun = supervisor.run.bind(supervisor);
    const body = '{"refused":"first"}';
    const headers = { ...signed(body), 'idempotency-key': `refused-${Math.random().toString(36).slice(2)}` };
    for (const query of ['', '?wait=true']) {
      // The race: the replica ends between the trigger's pick (localReplicas) and its run.
      let refusals = 0;
      supervisor.run = (agentId, replica) => {
        refusals++;
        return Promise.reject(new DomainError('unavailable', `replica '${replica}' is not running on this server`, { agentId }));
      };
      let refused;
      try {
        refused = await post(hookPath('signed', 'github', query), body, headers);
      } finally {
        supervisor.run = realRun;
      }
      assert.equal(refusals, 1);
      assert.equal(refused.status, 503, `${query}: ${JSON.stringify(refused.body)}`);
      assert.ok(Number(refused.headers['retry-after']) > 0);
      const run = (await runsOf('signed')).find((r: any) => r.run_id === refused.body.run_id || r.id === refused.body.run_id);
      assert.ok(run, 'the refused run is recorded');
      assert.equal(run.status, 'rejected', JSON.stringify(run));
    }
    // The sender's retry of the very same delivery (same signature, same key) runs.
    const retry = await post(hookPath('signed', 'github', '?wait=true'), body, headers);
    assert.equal(retry.status, 200, JSON.stringify(retry.body));
    assert.deepEqual(retry.body.result.got.body, { refused: 'first' });
  });

  test('Idempotency-Key: a second delivery answers the first run (and its result), never runs again', async () => {
    const key = `delivery-${Math.random().toString(36).slice(2)}`;
    const first = await post(hookPath('open', 'inbox', '?wait=true'), '{"once":true}', { 'idempotency-key': key });
    assert.equal(first.status, 200);
    const before = (await runsOf('open')).length;
    const again = await post(hookPath('open', 'inbox', '?wait=true'), '{"once":"again"}', { 'idempotency-key': key });
    assert.equal(again.status, 200);
    assert.equal(again.body.run_id, first.body.run_id);
    assert.deepEqual(again.body.result, first.body.result);
    assert.equal(again.body.duplicate, true);
    const quick = await post(hookPath('open', 'inbox'), '{}', { 'idempotency-key': key });
    assert.deepEqual([quick.status, quick.body.run_id], [202, first.body.run_id]);
    assert.equal((await runsOf('open')).length, before, 'no new run');
    // Parallel first deliveries with one new key: one run between them.
    const fresh = `parallel-${Math.random().toString(36).slice(2)}`;
    const answers = await Promise.all(Array.from({ length: 4 }, () => post(hookPath('open', 'inbox'), '{}', { 'idempotency-key': fresh })));
    assert.equal(new Set(answers.map((a) => a.body.run_id)).size, 1, JSON.stringify(answers.map((a) => a.body)));
    // The claim itself (what holds when two deliveries pass the look-up at once, on two nodes say):
    // a second claim of a held key gets the holder's run, never its own.
    const db = (server.server.services.accountsStore as unknown as { db: Db }).db;
    const hooks = new WebhooksStore(db);
    const inbox = (
      await sql<{
        id: string;
      }>`SELECT w.id FROM agent_webhooks w JOIN agents a ON a.id = w.agent_id WHERE a.name = 'open' AND w.path = 'inbox'`.execute(db)
    ).rows[0]!.id;
    assert.deepEqual(await hooks.claimKey(inbox, 'claimed-once', 'run-a', 24), { claimed: true });
    const second = await hooks.claimKey(inbox, 'claimed-once', 'run-b', 24);
    assert.equal('existing' in second && second.existing.run_id, 'run-a');
    // A node whose clock runs 20 min ahead of the database's computes an expiry the database already
    // passed: the seen signature still lives 2 windows on the database's clock, so the replay is refused.
    const skewed = `sha256=${'ab'.repeat(32)}`;
    const aheadExpiry = now() - 600;
    assert.equal(await hooks.rememberSignature(inbox, skewed, aheadExpiry, 601, 'run-skewed'), true);
    assert.equal(
      await hooks.rememberSignature(inbox, skewed, aheadExpiry, 601, 'run-skewed-again'),
      false,
      'a replay inside the window is refused',
    );
    // The same signed delivery sent twice in parallel: one runs, the other is a replay.
    const body = '{"twice":true}';
    const headers = signed(body);
    const pair = await Promise.all([post(hookPath('signed', 'github'), body, headers), post(hookPath('signed', 'github'), body, headers)]);
    assert.deepEqual(pair.map((a) => a.status).sort(), [202, 409]);
  });

  test('Idempotency-Key left running by a node that died: a retry gets the end its run record says, kept under the key', async () => {
    const key = `orphan-${Math.random().toString(36).slice(2)}`;
    const first = await post(hookPath('open', 'inbox', '?wait=true'), '{"orphan":true}', { 'idempotency-key': key });
    assert.equal(first.status, 200, JSON.stringify(first.body));
    const runId = first.body.run_id as string;
    // What a node killed mid-run (after the receiving node stopped following it) leaves: the key still
    // running, and the run's record ended `interrupted` by the other nodes' orphan sweep.
    const db = (server.server.services.accountsStore as unknown as { db: Db }).db;
    await sql`UPDATE agent_webhook_deliveries SET status = 'running', outcome_sealed = NULL WHERE run_id = ${runId}`.execute(db);
    await sql`UPDATE agent_runs SET status = 'failed', error_type = 'interrupted', error_message = 'the server running it stopped before the run ended' WHERE id = ${runId}`.execute(
      db,
    );
    const before = (await runsOf('open')).length;
    const retried = await post(hookPath('open', 'inbox', '?wait=true'), '{"orphan":"again"}', { 'idempotency-key': key });
    assert.equal(retried.status, 200, JSON.stringify(retried.body));
    assert.deepEqual(
      [retried.body.run_id, retried.body.status, retried.body.error?.type, retried.body.duplicate],
      [runId, 'failed', 'interrupted', true],
      JSON.stringify(retried.body),
    );
    const kept = await sql<{ status: string }>`SELECT status FROM agent_webhook_deliveries WHERE run_id = ${runId}`.execute(db);
    assert.deepEqual(
      kept.rows.map((r) => r.status),
      ['failed'],
      'the end kept under the key',
    );
    assert.equal((await runsOf('open')).length, before, 'nothing ran again');
  });

  test('Idempotency-Key whose run was refused before it ran, its receiving node no longer following: the retry (same signature) runs', async () => {
    const db = (server.server.services.accountsStore as unknown as { db: Db }).db;
    // Two states a signed, keyed delivery can be left in when its run was refused on the node of its
    // replica after the node that received it stopped following it (a rolling restart): the key still
    // running with the run recorded `rejected`, and (as an earlier version kept it) the key sealed `rejected`.
    for (const left of ['running', 'rejected']) {
      const body = JSON.stringify({ refused_elsewhere: left });
      const headers = { ...signed(body), 'idempotency-key': `not-run-${left}-${Math.random().toString(36).slice(2)}` };
      const first = await post(hookPath('signed', 'github', '?wait=true'), body, headers);
      assert.equal(first.status, 200, JSON.stringify(first.body));
      const runId = first.body.run_id as string;
      await sql`UPDATE agent_webhook_deliveries SET status = ${left}, outcome_sealed = NULL WHERE run_id = ${runId}`.execute(db);
      await sql`UPDATE agent_runs SET status = 'rejected', error_type = 'unavailable', error_message = 'the server is stopping; the trigger was not run' WHERE id = ${runId}`.execute(
        db,
      );
      const before = (await runsOf('signed')).length;
      // The sender's retry: the very same request (same signature and key), which the refusal asked for.
      const retried = await post(hookPath('signed', 'github', '?wait=true'), body, headers);
      assert.equal(retried.status, 200, `${left}: ${JSON.stringify(retried.body)}`);
      assert.equal(retried.body.status, 'succeeded', JSON.stringify(retried.body));
      assert.notEqual(retried.body.run_id, runId, 'a new run');
      assert.equal(retried.body.duplicate, undefined);
      assert.deepEqual(retried.body.result.got.body, { refused_elsewhere: left });
      assert.equal((await runsOf('signed')).length, before + 1, 'it ran once');
      // It holds the key and the signature now: a further retry answers its run, a replay without the key is refused.
      const again = await post(hookPath('signed', 'github', '?wait=true'), body, headers);
      assert.deepEqual(
        [again.status, again.body.run_id, again.body.duplicate],
        [200, retried.body.run_id, true],
        JSON.stringify(again.body),
      );
      const { 'idempotency-key': _key, ...unkeyed } = headers;
      assert.equal((await post(hookPath('signed', 'github'), body, unkeyed)).status, 409);
      assert.equal((await runsOf('signed')).length, before + 1, 'nothing ran again');
    }
  });

  test('a re-signed retry of a keyed delivery that never ran leaves the first signature used: a copy of it without the key is a replay', async () => {
    const db = (server.server.services.accountsStore as unknown as { db: Db }).db;
    const body = JSON.stringify({ review: 'resigned-retry' });
    const key = `resigned-${Math.random().toString(36).slice(2)}`;
    // The first attempt (S1 + key): recorded, then as a quota/rate refusal leaves it (the key kept `rejected`, S1 kept as seen).
    const first = signed(body, now() - 2);
    const a = await post(hookPath('signed', 'github', '?wait=true'), body, { ...first, 'idempotency-key': key });
    assert.equal(a.status, 200, JSON.stringify(a.body));
    await sql`UPDATE agent_webhook_deliveries SET status = 'rejected' WHERE run_id = ${a.body.run_id}`.execute(db);
    await sql`UPDATE agent_runs SET status = 'rejected', error_type = 'EXECUTION_RATE_EXCEEDED' WHERE id = ${a.body.run_id}`.execute(db);
    const before = (await runsOf('signed')).length;
    // The sender's retry, re-signed (new timestamp: S2) with the same key: runs in its place.
    const retried = await post(hookPath('signed', 'github', '?wait=true'), body, { ...signed(body), 'idempotency-key': key });
    assert.equal(retried.status, 200, JSON.stringify(retried.body));
    assert.equal((await runsOf('signed')).length, before + 1);
    // A captured copy of the first attempt (S1), replayed inside its window without the key: must be a replay (409).
    const replay = await post(hookPath('signed', 'github', '?wait=true'), body, first);
    assert.equal(
      replay.status,
      409,
      `the first signature was freed by the re-signed retry: ${replay.status} ${JSON.stringify(replay.body)}`,
    );
    assert.equal((await runsOf('signed')).length, before + 1, 'the delivery ran once');
  });

  test('a retry waiting (?wait=true) on a keyed run its home node refuses before it ran is told to retry (503), not 202 running', async () => {
    const db = (server.server.services.accountsStore as unknown as { db: Db }).db;
    const hooks = new WebhooksStore(db);
    const webhookId = (
      await sql<{
        id: string;
      }>`SELECT w.id FROM agent_webhooks w JOIN agents a ON a.id = w.agent_id JOIN namespaces n ON n.id = a.namespace_id
        WHERE n.name = ${ns} AND a.name = 'signed' AND w.path = 'github'`.execute(db)
    ).rows[0]!.id;
    const key = `waiting-${Math.random().toString(36).slice(2)}`;
    // The first delivery's run, handed to another node (not followed here): its key running, no record yet.
    const elsewhere = crypto.randomUUID();
    assert.deepEqual(await hooks.claimKey(webhookId, key, elsewhere, 24), { claimed: true });
    const body = JSON.stringify({ review: 'waiting' });
    const before = (await runsOf('signed')).length;
    // Until the delivery has looked its key up and found it running (then it waits on the key's row),
    // not a fixed 800 ms: on a loaded machine the key could go first, and the delivery would run.
    const delivery = WebhooksStore.prototype.delivery;
    let lookedUp = false;
    WebhooksStore.prototype.delivery = async function (this: WebhooksStore, id: string, looked: string) {
      const row = await delivery.call(this, id, looked);
      if (looked === key && row?.status === 'running') lookedUp = true;
      return row;
    };
    let waiting: ReturnType<typeof post>;
    try {
      waiting = post(hookPath('signed', 'github', '?wait=true'), body, { ...signed(body), 'idempotency-key': key });
      for (let i = 0; i < 6000 && !lookedUp; i++) await new Promise((resolve) => setTimeout(resolve, 10));
      assert.ok(lookedUp, 'the delivery looked its key up');
    } finally {
      WebhooksStore.prototype.delivery = delivery;
    }
    // Its home node refuses it before it ran (stopping, replica gone) and lets its key go (keepHandedOverOutcome).
    await hooks.releaseKey(webhookId, key, elsewhere);
    const answer = await waiting;
    assert.equal((await runsOf('signed')).length, before, 'nothing ran');
    assert.equal(await hooks.delivery(webhookId, key), undefined, 'the key is free');
    assert.equal(
      answer.status,
      503,
      `the waiting sender is told the delivery is accepted and running: ${answer.status} ${JSON.stringify(answer.body)}`,
    );
  });

  test("a keyed signed delivery let go (refused before it ran) is not replayable without its key: the sender's retry runs it, once", async () => {
    const supervisor = server.server.services.replicas;
    const realRun = supervisor.run.bind(supervisor);
    const body = JSON.stringify({ review: 'let-go' });
    const first = signed(body, now() - 1);
    const key = `let-go-${Math.random().toString(36).slice(2)}`;
    supervisor.run = (agentId, replica) =>
      Promise.reject(new DomainError('unavailable', `replica '${replica}' is not running on this server`, { agentId }));
    let refused;
    try {
      refused = await post(hookPath('signed', 'github', '?wait=true'), body, { ...first, 'idempotency-key': key });
    } finally {
      supervisor.run = realRun;
    }
    assert.equal(refused.status, 503);
    const before = (await runsOf('signed')).length;
    // A captured copy replayed without the key, then the sender's retry (409 as a replay: it re-signs, same key).
    const replay = await post(hookPath('signed', 'github', '?wait=true'), body, first);
    const retry = await post(hookPath('signed', 'github', '?wait=true'), body, { ...first, 'idempotency-key': key });
    assert.deepEqual(
      [replay.status, retry.status],
      [409, 200],
      `replay ${JSON.stringify(replay.body)}, retry ${JSON.stringify(retry.body)}`,
    );
    assert.deepEqual(retry.body.result.got.body, { review: 'let-go' });
    // Then: a re-signed copy with the key is a duplicate of that run, the first copy without it still a replay.
    const resigned = await post(hookPath('signed', 'github', '?wait=true'), body, { ...signed(body), 'idempotency-key': key });
    assert.deepEqual([resigned.status, resigned.body.run_id, resigned.body.duplicate], [200, retry.body.run_id, true]);
    assert.equal((await post(hookPath('signed', 'github', '?wait=true'), body, first)).status, 409);
    assert.equal((await runsOf('signed')).length, before + 1, 'the delivery ran once');
  });

  test("a keyed delivery refused by the account's quota holds no answer: the sender's retry with the key runs once the plan allows it", async () => {
    const owner = await createAccount(server.url);
    await server.server.services.accounts.setTier(owner.email, 'thrifty');
    const thriftyNs = `thrifty-${Math.random().toString(36).slice(2, 8)}`;
    const thrifty = await connect(`${server.url}/mcp/create/${thriftyNs}`, owner.key);
    try {
      await callOk(thrifty, 'make_namespace', { name: thriftyNs });
      await callOk(thrifty, 'make_service', { name: 'hooks' });
      await callOk(thrifty, 'make_function', { service: 'hooks', name: 'echo', code: ECHO });
      await callOk(thrifty, 'make_agent', { name: 'frugal' });
      await callOk(thrifty, 'add_webhook', { name: 'frugal', path: 'pay', handler_function_name: 'hooks.echo', secret: SECRET });
      await callOk(thrifty, 'start_agent', { name: 'frugal' });
      const url = `/mcp/agent/${thriftyNs}/frugal/webhook/pay?wait=true`;
      const spent = JSON.stringify({ spends: 'the month' });
      assert.equal((await post(url, spent, signed(spent))).status, 200);
      const body = JSON.stringify({ invoice: 'paid' });
      const headers = { ...signed(body), 'idempotency-key': `quota-${Math.random().toString(36).slice(2)}` };
      const refused = await post(url, body, headers);
      assert.deepEqual(
        [refused.status, refused.body.status, refused.body.error?.type],
        [200, 'rejected', 'QUOTA_EXCEEDED'],
        JSON.stringify(refused.body),
      );
      // Asked again before anything changed: refused again by the quota (it runs, nothing is replayed).
      const again = await post(url, body, headers);
      assert.deepEqual([again.body.status, again.body.duplicate], ['rejected', undefined], JSON.stringify(again.body));
      assert.notEqual(again.body.run_id, refused.body.run_id);
      // The plan raised: the sender's retry of the very same request (same signature, same key) runs, once.
      await server.server.services.accounts.setTier(owner.email, 'pro');
      const retry = await post(url, body, headers);
      assert.deepEqual([retry.status, retry.body.status], [200, 'succeeded'], JSON.stringify(retry.body));
      assert.deepEqual(retry.body.result.got.body, { invoice: 'paid' });
      const duplicate = await post(url, body, headers);
      assert.deepEqual([duplicate.body.run_id, duplicate.body.duplicate], [retry.body.run_id, true]);
      // A copy of the signed request without its key is a replay, before and after.
      const { 'idempotency-key': _key, ...unkeyed } = headers;
      assert.equal((await post(url, body, unkeyed)).status, 409);
    } finally {
      await thrifty.close();
    }
  });

  test("the plan's body cap: by Content-Length and while a chunked body streams; the server stays up", async () => {
    const owner = await createAccount(server.url);
    await server.server.services.accounts.setTier(owner.email, 'small');
    const smallNs = `small-${Math.random().toString(36).slice(2, 8)}`;
    const small = await connect(`${server.url}/mcp/create/${smallNs}`, owner.key);
    await callOk(small, 'make_namespace', { name: smallNs });
    await callOk(small, 'make_service', { name: 'hooks' });
    await callOk(small, 'make_function', { service: 'hooks', name: 'echo', code: ECHO });
    await callOk(small, 'make_agent', { name: 'tiny' });
    await callOk(small, 'add_webhook', { name: 'tiny', path: 'cap', handler_function_name: 'hooks.echo' });
    await callOk(small, 'add_webhook', { name: 'tiny', path: 'rate', handler_function_name: 'hooks.echo' });
    await callOk(small, 'start_agent', { name: 'tiny' });
    const url = (p: string) => `/mcp/agent/${smallNs}/tiny/webhook/${p}`;

    const fits = await post(url('cap'), JSON.stringify({ pad: 'x'.repeat(1900) }));
    assert.equal(fits.status, 202, JSON.stringify(fits.body));
    const declared = await post(url('cap'), JSON.stringify({ pad: 'x'.repeat(2100) }));
    assert.equal(declared.status, 413);
    assert.equal(declared.body.limit, 2048);
    // Declared too large and never sent: refused on the header alone (nothing waits for the body).
    const unsent = await post(url('cap'), [], { 'content-length': '1000000' });
    assert.equal(unsent.status, 413);
    const chunked = await post(
      url('cap'),
      Array.from({ length: 8 }, () => Buffer.alloc(1024, 0x20)),
      {},
      { chunked: true },
    );
    assert.equal(chunked.status, 413);
    await healthy();

    // 5 a minute per webhook: the 6th in one minute is refused (a minute that turns over meanwhile restarts the count: try again).
    let refused: Answer | undefined;
    for (let round = 0; round < 3 && !refused; round++) {
      const answers: Answer[] = [];
      for (let i = 0; i < 6; i++) answers.push(await post(url('rate'), '{}'));
      if (answers[5]!.status === 429) refused = answers[5];
    }
    assert.ok(refused, 'the 6th delivery of a minute is refused');
    assert.equal(refused.body.error_type, 'rate_limited');
    assert.ok(refused.body.retry_after >= 1 && refused.body.retry_after <= 60);
    assert.equal(refused.headers['retry-after'], String(refused.body.retry_after));
    // Another webhook of the same agent has its own count.
    assert.equal((await post(url('cap'), '{}')).status, 202);
    // Signed: badly signed deliveries never use up the sender's rate; a valid one still runs after them.
    await callOk(small, 'add_webhook', { name: 'tiny', path: 'signed-rate', handler_function_name: 'hooks.echo', secret: SECRET });
    for (let i = 0; i < 6; i++) {
      const bad = await post(url('signed-rate'), '{}', signed('{}', now(), 'not-the-secret-0123456789'));
      assert.equal(bad.status, 401, `bad ${i}: ${JSON.stringify(bad.body)}`);
    }
    const good = await post(url('signed-rate'), '{"good":1}', signed('{"good":1}'));
    assert.equal(good.status, 202, JSON.stringify(good.body));
    await small.close();
  });

  test('the subdomain form {ns}.agent.{base}/{agent}/webhook/{path}', async () => {
    const answer = await post('/open/webhook/inbox?wait=true', '{"via":"subdomain"}', {}, { host: `${ns}.agent.${BASE_HOST}` });
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    assert.deepEqual(answer.body.result.got.body, { via: 'subdomain' });
    const elsewhere = await post('/open/webhook/inbox', '{}', {}, { host: `other-ns.agent.${BASE_HOST}` });
    assert.equal(elsewhere.status, 404);
  });
});
