// test-database: postgres, two messages to one conversation race for its turn queue (row lock + tickets) on parallel connections
// chat_with_agent through the official MCP client on a real server, real replicas (worker
// processes) and real sandboxes; the model is the fake LLM reached through the vendor SDKs.
// Refusals (scope, agent stopped, no AI, replica unknown or stopped, message too long, a
// conversation that is not this agent's or replica's) change nothing. One server for the file.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { CHAT_MESSAGE_MAX_CHARS } from '../core/agent-chat.js';
import { startFakeLlm, type FakeLlm } from '../test-support/fake-llm.js';
import { callError, callOk, connect, createKey, errorOf, type TestServer } from '../test-support/harness.js';
import { startRuleServer, type RuleServer, type Space } from '../test-support/spaces.js';
import { DEFAULT_TIERS } from '../core/tiers.js';

let rules: RuleServer;
let server: TestServer;
let llm: FakeLlm;
before(async () => {
  llm = await startFakeLlm();
  rules = await startRuleServer(DEFAULT_TIERS);
  server = rules.server;
});
after(async () => {
  await rules?.stop();
  await llm?.close();
});

const FUNCTIONS = [
  { name: 'double', code: 'def main(input_data):\n    return {"twice": input_data["n"] * 2}\n', description: 'Doubles n' },
  {
    name: 'greet',
    language: 'typescript',
    code: 'export default function main(input: { who: string }) {\n  return { hi: input.who };\n}\n',
    description: 'Greets someone',
  },
];

/** A namespace with the functions and an agent (started, with an AI on the fake LLM unless told otherwise). */
async function agentSpace(name: string, options: { ai?: boolean; start?: boolean; replicas?: number } = {}): Promise<Space> {
  const s = await rules.space(FUNCTIONS);
  await callOk(s.create, 'make_agent', { name });
  if (options.replicas !== undefined) await callOk(s.create, 'scale_agent', { name, replicas: options.replicas });
  if (options.ai !== false)
    await callOk(s.create, 'configure_agent_ai', {
      name,
      provider: 'anthropic',
      model: 'claude-test',
      api_key: 'sk-ant-chat-test-key',
      base_url: llm.anthropicUrl,
    });
  if (options.start !== false) await callOk(s.create, 'start_agent', { name });
  return s;
}

const replicaNames = async (s: Space, name: string): Promise<string[]> =>
  (await callOk(s.create, 'describe_agent', { name })).replicas.map((r: { name: string }) => r.name);

describe('chat_with_agent refusals', () => {
  test('listed with its contract; needs the execute scope; another account gets not found', async () => {
    const s = await agentSpace('talker', { start: false });
    const { tools } = await s.create.listTools();
    const chat = tools.find((t) => t.name === 'chat_with_agent');
    assert.ok(chat, 'chat_with_agent is offered');
    assert.match(chat.description ?? '', /conversation_id/);
    assert.deepEqual(Object.keys((chat.inputSchema as { properties: object }).properties).sort(), [
      'agent_name',
      'conversation_id',
      'message',
      'name',
      'replica',
    ]);
    const key = await createKey(server.url, s.account, { name: 'no-exec', scopes: ['read', 'write'] });
    const writer = await connect(`${server.url}/mcp/create/${s.ns}`, key);
    const refused = errorOf(await callError(writer, 'chat_with_agent', { name: 'talker', message: 'hi' }));
    assert.equal(refused.type, 'forbidden');
    assert.match(refused.message, /execute/);
    const other = await rules.space([]);
    const hidden = errorOf(await callError(other.create, 'chat_with_agent', { name: 'talker', message: 'hi' }));
    assert.equal(hidden.type, 'not_found');
  });

  test('a stopped agent, an agent without AI, a replica unknown or stopped, a message too long: clear errors, nothing recorded', async () => {
    const stopped = await agentSpace('sleeper', { start: false });
    const asleep = errorOf(await callError(stopped.create, 'chat_with_agent', { name: 'sleeper', message: 'hi' }));
    assert.equal(asleep.type, 'conflict');
    assert.equal(asleep.reason, 'agent_stopped');
    assert.match(asleep.message, /start_agent/);

    const plain = await agentSpace('plain', { ai: false });
    const noAi = errorOf(await callError(plain.create, 'chat_with_agent', { agent_name: 'plain', message: 'hi' }));
    assert.equal(noAi.type, 'conflict');
    assert.equal(noAi.reason, 'no_ai');
    assert.match(noAi.message, /configure_agent_ai/);

    const s = await agentSpace('pair', { replicas: 2 });
    const [first, second] = await replicaNames(s, 'pair');
    await callOk(s.create, 'stop_agent', { name: 'pair', replica: second });
    const unknown = errorOf(await callError(s.create, 'chat_with_agent', { name: 'pair', message: 'hi', replica: 'lazy-yak' }));
    assert.equal(unknown.type, 'not_found');
    assert.match(unknown.message, new RegExp(`no replica 'lazy-yak'.*${first}`));
    const off = errorOf(await callError(s.create, 'chat_with_agent', { name: 'pair', message: 'hi', replica: second }));
    assert.equal(off.type, 'conflict');
    assert.equal(off.replica, second);
    assert.match(off.message, new RegExp(`replica '${second}' of agent 'pair' is stopped`));
    const long = errorOf(await callError(s.create, 'chat_with_agent', { name: 'pair', message: 'x'.repeat(CHAT_MESSAGE_MAX_CHARS + 1) }));
    assert.equal(long.type, 'validation_error');
    assert.ok(long.message.length < 200, 'the message is not echoed back');
    const gone = errorOf(
      await callError(s.create, 'chat_with_agent', {
        name: 'pair',
        message: 'hi',
        conversation_id: '0b6f3c1e-9b9a-4f7e-8f55-0c2a4c1a2b3c',
      }),
    );
    assert.equal(gone.type, 'not_found');
    assert.deepEqual((await callOk(s.create, 'list_agent_runs', { name: 'pair' })).runs, [], 'no run was recorded');
    assert.equal(llm.requests.length, 0, 'the model was never called');
  });
});
