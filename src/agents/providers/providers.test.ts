// The model adapters against the fake LLM server, through the official SDKs: tool calls out, tool
// results back in each vendor's wire shape, usage counted, abort and deadline stop the call in
// flight, refusals typed, and the API key in no error message.
import assert from 'node:assert/strict';
import { createServer, type AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { providerBaseUrl, validateBaseUrl } from '../../core/agent-ai.js';
import { FAKE_LLM_HOST, startFakeLlm, type FakeLlm } from '../../test-support/fake-llm.js';
import { modelGuard } from '../outbound-guard.js';
import { AnthropicProvider } from './anthropic.js';
import { modelProvider } from './index.js';
import { OpenAIProvider } from './openai.js';
import { ProviderError, type ChatMessage, type ModelProvider, type ToolSpec } from './provider.js';

const KEY = 'sk-test-secret-key-do-not-leak-7f3a9c';
const TOOLS: ToolSpec[] = [
  {
    name: 'math__add',
    description: 'Adds two numbers',
    inputSchema: { type: 'object', properties: { a: { type: 'number' }, b: { type: 'number' } } },
  },
  { name: 'state_get', description: 'Reads a state key', inputSchema: { type: 'object', properties: { key: { type: 'string' } } } },
];
const far = () => Date.now() + 60_000;

let llm: FakeLlm;
before(async () => {
  llm = await startFakeLlm();
});
after(async () => {
  await llm.close();
});

/** The ProviderError a one-message turn of `provider` fails with (an answer fails the test). */
async function failedTurn(provider: ModelProvider): Promise<ProviderError> {
  const error = await provider.turn({ messages: [{ role: 'user', content: 'hi' }], tools: [], maxOutputTokens: 64, deadline: far() }).then(
    () => assert.fail('should have failed'),
    (e: unknown) => e,
  );
  assert.ok(error instanceof ProviderError, String(error));
  return error;
}

const adapters: Array<[string, () => ModelProvider]> = [
  ['anthropic', () => new AnthropicProvider({ provider: 'anthropic', model: 'claude-test', apiKey: KEY, baseUrl: llm.anthropicUrl })],
  ['openai', () => new OpenAIProvider({ provider: 'openai', model: 'gpt-test', apiKey: KEY, baseUrl: llm.openaiUrl })],
  ['ollama (OpenAI-compatible)', () => modelProvider({ provider: 'ollama', model: 'llama3', apiKey: KEY, baseUrl: llm.openaiUrl })],
];

for (const [label, make] of adapters) {
  describe(`${label} adapter`, () => {
    test('an answer without usage (some OpenAI-compatible servers) is marked for the loop to estimate', async () => {
      llm.script([{ text: 'hi', omitUsage: true }]);
      const turn = await make().turn({
        messages: [{ role: 'user', content: 'hello' }],
        tools: TOOLS,
        maxOutputTokens: 64,
        deadline: far(),
      });
      assert.deepEqual(turn.usage, { input: 0, output: 0, estimated: true });
    });

    test('two tool calls out, their results back in the wire shape, usage counted', async () => {
      const provider = make();
      llm.script([
        {
          toolCalls: [
            { id: 'c1', name: 'math__add', arguments: { a: 1, b: 2 } },
            { id: 'c2', name: 'state_get', arguments: { key: 'k' } },
          ],
          usage: { input: 120, output: 30 },
        },
        { text: 'The sum is 3.', usage: { input: 200, output: 8 } },
      ]);
      const messages: ChatMessage[] = [{ role: 'user', content: 'add 1 and 2' }];
      const first = await provider.turn({ system: 'You are terse.', messages, tools: TOOLS, maxOutputTokens: 512, deadline: far() });
      assert.deepEqual(
        first.toolCalls.map((c) => [c.id, c.name, c.arguments]),
        [
          ['c1', 'math__add', { a: 1, b: 2 }],
          ['c2', 'state_get', { key: 'k' }],
        ],
      );
      assert.equal(first.stopReason, 'tool_calls');
      assert.deepEqual(first.usage, { input: 120, output: 30 });
      messages.push({ role: 'assistant', content: first.text, toolCalls: first.toolCalls });
      messages.push({
        role: 'tool',
        results: [
          { callId: 'c1', content: '3' },
          { callId: 'c2', content: 'no such key', isError: true },
        ],
      });
      const second = await provider.turn({ system: 'You are terse.', messages, tools: TOOLS, maxOutputTokens: 512, deadline: far() });
      assert.equal(second.text, 'The sum is 3.');
      assert.equal(second.toolCalls.length, 0);
      assert.equal(second.stopReason, 'end');
      assert.deepEqual(second.usage, { input: 200, output: 8 });

      const [one, two] = llm.requests;
      assert.ok(one && two);
      if (one.api === 'anthropic') {
        // This SDK version sends the key as a Bearer token; older ones as x-api-key.
        assert.ok(one.headers['x-api-key'] === KEY || one.headers.authorization === `Bearer ${KEY}`);
        assert.equal(one.body.system, 'You are terse.');
        assert.deepEqual(
          (one.body.tools as Array<{ name: string; input_schema: unknown }>).map((t) => [t.name, t.input_schema]),
          TOOLS.map((t) => [t.name, t.inputSchema]),
        );
        const msgs = two.body.messages as Array<{ role: string; content: Array<Record<string, unknown>> }>;
        assert.deepEqual(
          msgs.map((m) => m.role),
          ['user', 'assistant', 'user'],
        );
        assert.deepEqual(
          msgs[1]!.content.filter((b) => b.type === 'tool_use').map((b) => [b.id, b.name, b.input]),
          [
            ['c1', 'math__add', { a: 1, b: 2 }],
            ['c2', 'state_get', { key: 'k' }],
          ],
        );
        assert.deepEqual(msgs[2]!.content, [
          { type: 'tool_result', tool_use_id: 'c1', content: '3' },
          { type: 'tool_result', tool_use_id: 'c2', content: 'no such key', is_error: true },
        ]);
      } else {
        assert.equal(one.headers.authorization, `Bearer ${KEY}`);
        assert.deepEqual(
          (one.body.tools as Array<{ type: string; function: { name: string; parameters: unknown } }>).map((t) => [
            t.type,
            t.function.name,
            t.function.parameters,
          ]),
          TOOLS.map((t) => ['function', t.name, t.inputSchema]),
        );
        const msgs = two.body.messages as Array<Record<string, unknown>>;
        assert.deepEqual(msgs[0], { role: 'system', content: 'You are terse.' });
        const calls = msgs[2]!.tool_calls as Array<{ id: string; function: { name: string; arguments: string } }>;
        assert.deepEqual(
          calls.map((c) => [c.id, c.function.name, JSON.parse(c.function.arguments)]),
          [
            ['c1', 'math__add', { a: 1, b: 2 }],
            ['c2', 'state_get', { key: 'k' }],
          ],
        );
        assert.deepEqual(msgs.slice(3), [
          { role: 'tool', tool_call_id: 'c1', content: '3' },
          { role: 'tool', tool_call_id: 'c2', content: 'no such key' },
        ]);
      }
    });

    test('an abort stops the call in flight', async () => {
      const provider = make();
      llm.script([{ text: 'too late', delayMs: 120_000 }]);
      const controller = new AbortController();
      const call = provider.turn({
        messages: [{ role: 'user', content: 'hi' }],
        tools: [],
        maxOutputTokens: 64,
        signal: controller.signal,
        deadline: far(),
      });
      await llm.waitForRequests(1);
      controller.abort();
      await assert.rejects(call, (e: unknown) => e instanceof ProviderError && e.kind === 'aborted');
      // The connection itself was closed: the fake never got to answer.
      while (!llm.requests[0]!.aborted) await new Promise((r) => setImmediate(r));
      assert.equal(llm.requests[0]!.answered, false);
    });

    test('the deadline stops the call in flight', async () => {
      const provider = make();
      llm.script([{ text: 'too late', delayMs: 120_000 }]);
      const call = provider.turn({
        messages: [{ role: 'user', content: 'hi' }],
        tools: [],
        maxOutputTokens: 64,
        // 1.5 s, not 300 ms: the request must reach the model before the deadline (on a loaded
        // machine 300 ms could pass first, and no request was there to see aborted).
        deadline: Date.now() + 1500,
      });
      await llm.waitForRequests(1);
      await assert.rejects(call, (e: unknown) => e instanceof ProviderError && e.kind === 'timeout');
      while (!llm.requests[0]!.aborted) await new Promise((r) => setImmediate(r));
      // A deadline already past: refused before any request.
      llm.script([]);
      await assert.rejects(
        provider.turn({ messages: [{ role: 'user', content: 'hi' }], tools: [], maxOutputTokens: 64, deadline: Date.now() - 1 }),
        (e: unknown) => e instanceof ProviderError && e.kind === 'timeout',
      );
      assert.equal(llm.requests.length, 0);
    });

    test('401, 429 and 500 are typed, once each (no retries), and no message carries the key', async () => {
      const provider = make();
      for (const [status, kind] of [
        [401, 'auth'],
        [429, 'rate_limited'],
        [500, 'unavailable'],
      ] as const) {
        llm.script([{ status }]);
        const error = await failedTurn(provider);
        assert.equal(error.kind, kind);
        assert.equal(error.status, status);
        for (const text of [error.message, String(error), JSON.stringify(error), error.stack ?? ''])
          assert.ok(!text.includes(KEY) && !text.includes(KEY.slice(0, 12)), `key in ${text}`);
        assert.equal(llm.requests.length, 1, 'no retry');
      }
    });

    test('an address nothing answers on is `unavailable`, "could not be reached" (not a bad answer)', async () => {
      // A port that was just free: connection refused.
      const closed = await new Promise<number>((resolve) => {
        const probe = createServer().listen(0, '127.0.0.1', () => {
          const { port } = probe.address() as AddressInfo;
          probe.close(() => resolve(port));
        });
      });
      const provider =
        label === 'anthropic'
          ? new AnthropicProvider({ provider: 'anthropic', model: 'claude-test', apiKey: KEY, baseUrl: `http://127.0.0.1:${closed}` })
          : new OpenAIProvider({ provider: 'openai', model: 'gpt-test', apiKey: KEY, baseUrl: `http://127.0.0.1:${closed}/v1` });
      const error = await failedTurn(provider);
      assert.equal(error.kind, 'unavailable');
      assert.match(error.message, /could not be reached/);
    });

    test("through the outbound guard: each call's name resolved, the connection pinned to the address checked; a refused one never leaves", async () => {
      const port = new URL(llm.anthropicUrl).port;
      let answer = FAKE_LLM_HOST;
      const looked: string[] = [];
      const guard = modelGuard({ allow: [FAKE_LLM_HOST], own: null }, async (host) => {
        looked.push(host);
        return [{ address: answer, family: 4 }];
      });
      const provider =
        label === 'anthropic'
          ? new AnthropicProvider({
              provider: 'anthropic',
              model: 'claude-test',
              apiKey: KEY,
              baseUrl: `http://model.test:${port}`,
              fetch: guard.fetch,
            })
          : new OpenAIProvider({
              provider: 'openai',
              model: 'gpt-test',
              apiKey: KEY,
              baseUrl: `http://model.test:${port}/v1`,
              fetch: guard.fetch,
            });
      const ask = () => provider.turn({ messages: [{ role: 'user', content: 'hi' }], tools: [], maxOutputTokens: 64, deadline: far() });
      llm.script([{ text: 'pinned' }, { text: 'never sent' }]);
      assert.equal((await ask()).text, 'pinned');
      assert.equal(llm.requests[0]!.headers.host, `model.test:${port}`, 'the name kept in Host, the connection to the checked address');
      // The name answers loopback now (a rebinding): refused before anything is sent.
      answer = '127.0.0.1';
      const error = await ask().then(
        () => assert.fail('should have been refused'),
        (e: unknown) => e,
      );
      assert.ok(error instanceof ProviderError, String(error));
      assert.equal(error.kind, 'address_refused');
      assert.match(error.message, /refused: model\.test resolves to 127\.0\.0\.1, a loopback address/);
      assert.ok(!error.message.includes(KEY));
      assert.equal(llm.requests.length, 1, 'nothing reached the model');
      assert.deepEqual(looked, ['model.test', 'model.test'], 'resolved on each call');
    });
  });
}

test('providers map to their default base URLs; base_url rules', () => {
  assert.equal(providerBaseUrl('ollama'), 'http://127.0.0.1:11434/v1');
  assert.equal(providerBaseUrl('openrouter'), 'https://openrouter.ai/api/v1');
  assert.equal(providerBaseUrl('groq'), 'https://api.groq.com/openai/v1');
  assert.equal(providerBaseUrl('anthropic'), undefined);
  assert.equal(validateBaseUrl('http://127.0.0.1:11434/v1/'), 'http://127.0.0.1:11434/v1');
  for (const bad of [
    'ftp://example.com/v1',
    'file:///etc/passwd',
    'http://user:pw@example.com/v1',
    'http://example.com/v1?x=1',
    'http://127.0.0.1:8787/mcp/create/ns',
    'http://127.0.0.1:8787/MCP/run/ns',
    'http://ns.create.example.com/v1',
    'not a url',
  ])
    assert.throws(() => validateBaseUrl(bad), { name: 'DomainError' }, bad);
});
