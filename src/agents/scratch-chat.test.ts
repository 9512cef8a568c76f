// test-database: postgres, scratch
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { callOk, connect, createAccount, startTestServer, type TestServer } from '../test-support/harness.js';
import { AgentChat, type ChatJob } from './chat.js';
import { ChatStore } from '../store/chat-store.js';
import { ReplicasStore } from '../store/replicas-store.js';
import type { Db } from '../store/database.js';
import { pino } from 'pino';

let server: TestServer;
before(async () => { server = await startTestServer(); });
after(async () => { await server?.stop(); });

test('scratch: store and ordering on this database', async () => {
  const account = await createAccount(server.url);
  const ns = `c-${Math.random().toString(36).slice(2, 8)}`;
  const create = await connect(`${server.url}/mcp/create/${ns}`, account.key);
  await callOk(create, 'make_namespace', { name: ns });
  await callOk(create, 'make_agent', { name: 'x' });
  await callOk(create, 'start_agent', { name: 'x' });
  const db = (server.server.services.accountsStore as unknown as { db: Db }).db;
  const agent = await db.selectFrom('agents').innerJoin('namespaces', 'namespaces.id', 'agents.namespace_id').where('agents.name', '=', 'x').where('namespaces.name', '=', ns).select('agents.id as aid').executeTakeFirstOrThrow();
  const rows = await new ReplicasStore(db).list(agent.aid);
  const replica = rows[0]!.name;
  const seen: string[] = [];
  const mk = () => new AgentChat({
    store: new ChatStore(db), replicas: new ReplicasStore(db),
    supervisor: { localReplicas: () => [replica], load: () => new Map() },
    logger: pino({ level: 'silent' }), aliveMs: 5000,
    dispatcher: () => ({ start(job: ChatJob) {
      const done = (async () => {
        seen.push(`start ${job.message} h=${job.history.map((m) => (m.role === 'user' || m.role === 'assistant' ? m.content : 'tool')).join('|')}`);
        await new Promise((r) => setTimeout(r, job.message === 'one' ? 300 : 10));
        seen.push(`end ${job.message}`);
        return { runId: job.runId, replica: job.replica, status: 'succeeded', answer: `re ${job.message}`, transcript: [{ role: 'user' as const, content: job.message }, { role: 'assistant' as const, content: `re ${job.message}` }] };
      })();
      return { runId: job.runId, began: Promise.resolve(), done };
    } }),
  });
  const row = { ...(agent as any), id: agent.aid, status: 'running', config: { ai: { provider: 'x' } }, name: 'x' };
  const a = await mk().send(row, { message: 'zero' });
  const [one, two] = await Promise.all([mk().send(row, { message: 'one', conversation_id: a.conversation_id }), mk().send(row, { message: 'two', conversation_id: a.conversation_id })]);
  console.log(seen);
  assert.equal(one.response, 're one'); assert.equal(two.response, 're two');
  assert.deepEqual(seen.filter((x) => x.startsWith('end')).length, 3);
  for (let i = 0; i < seen.length; i += 2) assert.match(seen[i]!, /^start/);
  const msgs = await new ChatStore(db).messages(a.conversation_id);
  assert.equal(msgs.length, 6);
  assert.deepEqual(await db.selectFrom('agent_chat_turns' as any).selectAll().execute(), []);
});
