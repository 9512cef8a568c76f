// The loop against the fake LLM through the official SDK (in-process, no server): two tool calls
// then an answer; each limit stops it with its reason (time mid-call, in a model call and in a tool
// call); provider errors typed; the function-call limit counts functions only.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startFakeLlm, type FakeLlm } from '../../test-support/fake-llm.js';
import { modelProvider } from '../providers/index.js';
import { TOOL_CALLS_PER_TURN, TOOL_NAME_MAX_CHARS } from '../../core/agent-orchestration.js';
import { CallOp, LoopResultShape } from '../worker/protocol.js';
import { runLoop, type CallAnswer, type LoopInput, type OfferedTool } from './loop.js';

const KEY = 'sk-loop-test-key-0b1d';
const TOOLS: OfferedTool[] = [
  { name: 'math__add', kind: 'function', description: 'adds', inputSchema: { type: 'object' } },
  { name: 'state_get', kind: 'state', description: 'reads', inputSchema: { type: 'object' } },
];
const LIMITS = { max_iterations: 5, max_ai_tokens: 10_000, max_execution_seconds: 30, max_functions_called: 5 };

let llm: FakeLlm;
before(async () => {
  llm = await startFakeLlm();
});
after(async () => {
  await llm.close();
});

const provider = () => modelProvider({ provider: 'openai', model: 'gpt-test', apiKey: KEY, baseUrl: llm.openaiUrl });
const input = (over: Partial<LoopInput> = {}): LoopInput => ({
  message: 'add 1 and 2',
  tools: TOOLS,
  limits: LIMITS,
  startedAt: Date.now(),
  ...over,
});
function host(answers: Record<string, (args: Record<string, unknown>, signal: AbortSignal) => Promise<CallAnswer>> = {}) {
  const calls: string[] = [];
  return {
    calls,
    callTool: async (name: string, args: Record<string, unknown>, signal: AbortSignal) => {
      calls.push(name);
      const answer = answers[name];
      return answer ? answer(args, signal) : { content: JSON.stringify({ ok: name }), isError: false };
    },
  };
}
const addCall = (id: string) => ({ id, name: 'math__add', arguments: { a: 1, b: 2 } });

describe('the loop', () => {
  test('two tool calls, their results back, then the answer; usage and transcript kept', async () => {
    llm.script([
      { toolCalls: [addCall('c1'), { id: 'c2', name: 'state_get', arguments: { key: 'k' } }], usage: { input: 100, output: 20 } },
      { text: 'It is 3.', usage: { input: 150, output: 5 } },
    ]);
    const h = host({ math__add: async () => ({ content: '{"sum":3}', isError: false }) });
    const out = await runLoop(input({ system: 'be brief' }), { provider: provider(), callTool: h.callTool });
    assert.equal(out.stopReason, 'answered');
    assert.equal(out.answer, 'It is 3.');
    assert.equal(out.iterations, 2);
    assert.deepEqual(out.usage, { input_tokens: 250, output_tokens: 25 });
    assert.deepEqual(h.calls, ['math__add', 'state_get']);
    assert.equal(out.functionsCalled, 1, 'state calls are not function calls');
    assert.deepEqual(
      out.transcript.map((m) => m.role),
      ['user', 'assistant', 'tool', 'assistant'],
    );
    const second = llm.requests[1]!.body.messages as Array<Record<string, unknown>>;
    assert.deepEqual(
      second.filter((m) => m.role === 'tool').map((m) => m.content),
      ['{"sum":3}', '{"ok":"state_get"}'],
    );
    assert.equal((llm.requests[0]!.body.tools as unknown[]).length, 2);
  });

  test('max_iterations stops it before the turn past the limit', async () => {
    llm.script(Array.from({ length: 5 }, (_, i) => ({ toolCalls: [{ id: `s${i}`, name: 'state_get', arguments: {} }] })));
    const out = await runLoop(input({ limits: { ...LIMITS, max_iterations: 2 } }), { provider: provider(), callTool: host().callTool });
    assert.equal(out.stopReason, 'max_iterations');
    assert.equal(out.iterations, 2);
    assert.equal(llm.requests.length, 2);
    assert.match(out.error!.message, /2 model turns/);
  });

  test('max_ai_tokens: counted from each answer; the calls of the answer that passed it are not run', async () => {
    llm.script([
      { toolCalls: [addCall('a')], usage: { input: 400, output: 100 } },
      { toolCalls: [addCall('b')], usage: { input: 450, output: 100 } },
      { text: 'never' },
    ]);
    const h = host();
    const out = await runLoop(input({ limits: { ...LIMITS, max_ai_tokens: 1000 } }), { provider: provider(), callTool: h.callTool });
    assert.equal(out.stopReason, 'max_ai_tokens');
    assert.deepEqual(h.calls, ['math__add']);
    assert.equal(llm.requests.length, 2);
    assert.equal(llm.requests[1]!.body.max_completion_tokens, 500, 'a turn asks for no more than the budget has left');
  });

  test('the transcript after max_ai_tokens gives every call of the last turn a result (chat sends it again)', async () => {
    llm.script([{ toolCalls: [addCall('t1'), addCall('t2')], usage: { input: 900, output: 200 } }, { text: 'never' }]);
    const h = host();
    const out = await runLoop(input({ limits: { ...LIMITS, max_ai_tokens: 1000 } }), { provider: provider(), callTool: h.callTool });
    assert.equal(out.stopReason, 'max_ai_tokens');
    assert.deepEqual(h.calls, []);
    const last = out.transcript.at(-1)!;
    assert.equal(last.role, 'tool');
    assert.deepEqual(last.role === 'tool' ? last.results.map((r) => [r.callId, r.isError]) : [], [
      ['t1', true],
      ['t2', true],
    ]);
  });

  test('a model that sends a huge name, a huge id, no name or too many calls: clipped before the host, the outcome fits the replica messages', async () => {
    const long = 'A'.repeat(600);
    llm.script([
      {
        toolCalls: [
          { id: 'x1', name: long, arguments: {} },
          { id: 'I'.repeat(600), name: 'math__add', arguments: { a: 1, b: 2 } },
          { id: 'x3', name: '', arguments: {} },
          ...Array.from({ length: 1200 }, (_, i) => addCall(`m${i}`)),
        ],
      },
      { text: 'done' },
    ]);
    const h = host();
    const out = await runLoop(input({ limits: { ...LIMITS, max_functions_called: 100 } }), { provider: provider(), callTool: h.callTool });
    assert.equal(out.stopReason, 'answered');
    assert.ok(LoopResultShape.safeParse({ loop: out }).success, 'the done message carries it');
    assert.equal(h.calls.length, TOOL_CALLS_PER_TURN - 1, 'the nameless call never reaches the host; past 16, none');
    assert.ok(h.calls.every((n) => n.length <= TOOL_NAME_MAX_CHARS));
    assert.equal(h.calls[0], 'A'.repeat(TOOL_NAME_MAX_CHARS));
    const turn = out.transcript[1]!;
    assert.ok(turn.role === 'assistant' && turn.toolCalls!.length === TOOL_CALLS_PER_TURN);
    const results = out.transcript[2]!;
    assert.ok(results.role === 'tool' && results.results.length === TOOL_CALLS_PER_TURN);
    assert.match(results.results[2]!.content, /no name/);
    // The next request paired every call with its result.
    const sent = llm.requests[1]!.body.messages as Array<{ role: string; tool_call_id?: string }>;
    assert.equal(sent.filter((m) => m.role === 'tool').length, TOOL_CALLS_PER_TURN);
  });

  test('max_functions_called: the call past it is not run and the run stops', async () => {
    llm.script([{ toolCalls: [addCall('a'), addCall('b'), addCall('c')] }, { text: 'never' }]);
    const h = host();
    const out = await runLoop(input({ limits: { ...LIMITS, max_functions_called: 2 } }), { provider: provider(), callTool: h.callTool });
    assert.equal(out.stopReason, 'max_functions_called');
    assert.deepEqual(h.calls, ['math__add', 'math__add']);
    assert.equal(llm.requests.length, 1);
  });

  test('max_execution_time inside a model call: the call in flight is abandoned at the deadline', { timeout: 30_000 }, async () => {
    llm.script([{ text: 'too late', delayMs: 20_000 }]);
    const out = await runLoop(input({ limits: { ...LIMITS, max_execution_seconds: 1 } }), {
      provider: provider(),
      callTool: host().callTool,
    });
    assert.equal(out.stopReason, 'max_execution_time');
    assert.equal(out.error!.type, 'max_execution_time');
    await llm.waitForRequests(1);
    assert.equal(llm.requests[0]!.answered, false);
  });

  test('max_execution_time inside a tool call: its signal fires at the deadline', { timeout: 30_000 }, async () => {
    llm.script([{ toolCalls: [addCall('slow')] }, { text: 'never' }]);
    let aborted = false;
    const h = host({
      math__add: (_args, signal) =>
        new Promise((resolve) =>
          signal.addEventListener('abort', () => {
            aborted = true;
            resolve({ content: 'cancelled', isError: true });
          }),
        ),
    });
    const out = await runLoop(input({ limits: { ...LIMITS, max_execution_seconds: 1 } }), { provider: provider(), callTool: h.callTool });
    assert.equal(out.stopReason, 'max_execution_time');
    assert.ok(aborted);
    assert.equal(llm.requests.length, 1);
  });

  test('a cancel stops a model call in flight: cancelled', { timeout: 30_000 }, async () => {
    llm.script([{ text: 'late', delayMs: 20_000 }]);
    const controller = new AbortController();
    const running = runLoop(input({ signal: controller.signal }), { provider: provider(), callTool: host().callTool });
    await llm.waitForRequests(1);
    controller.abort();
    const out = await running;
    assert.equal(out.stopReason, 'cancelled');
  });

  test('provider errors are typed and never carry the key', async () => {
    for (const [status, kind] of [
      [401, 'provider_auth'],
      [429, 'provider_rate_limited'],
      [500, 'provider_unavailable'],
    ] as const) {
      llm.script([{ status }]);
      const out = await runLoop(input(), { provider: provider(), callTool: host().callTool });
      assert.equal(out.stopReason, 'provider_error');
      assert.equal(out.error!.type, kind);
      assert.ok(!JSON.stringify(out).includes(KEY));
    }
  });

  test('calls never sent are reported with why: after a limit, and past the per-turn cap (64 named, the rest counted)', async () => {
    llm.script([{ toolCalls: Array.from({ length: 100 }, (_, i) => addCall(`c${i}`)) }, { text: 'never asked' }]);
    const reports: Array<{ calls: Array<{ name: string; reason: string }>; more: number }> = [];
    const h = host();
    const out = await runLoop(input({ limits: { ...LIMITS, max_functions_called: 2 } }), {
      provider: provider(),
      callTool: h.callTool,
      onSkipped: (calls, more) => reports.push({ calls, more }),
    });
    assert.equal(out.stopReason, 'max_functions_called');
    assert.equal(h.calls.length, 2);
    assert.equal(reports.length, 1);
    const [{ calls, more }] = reports as [{ calls: Array<{ name: string; reason: string }>; more: number }];
    assert.equal(calls.length, 64);
    assert.ok(calls.slice(0, TOOL_CALLS_PER_TURN - 2).every((c) => c.reason === 'skipped: limit'));
    assert.ok(calls.slice(TOOL_CALLS_PER_TURN - 2).every((c) => c.reason === 'skipped: per-turn cap'));
    assert.equal(more, 100 - 2 - 64);
    // What the worker sends the host fits the protocol (a message that did not would end the worker).
    assert.ok(CallOp.safeParse({ op: 'skipped', calls, more }).success);
  });

  test('an answer without usage is estimated from the bytes sent and received, and marked', async () => {
    llm.script([{ text: 'x'.repeat(4000), omitUsage: true }]);
    const out = await runLoop(input(), { provider: provider(), callTool: host().callTool });
    assert.equal(out.stopReason, 'answered');
    assert.equal(out.usageEstimated, true);
    assert.ok(out.usage.output_tokens >= 1000, JSON.stringify(out.usage));
    assert.ok(out.usage.input_tokens > 0, JSON.stringify(out.usage));
    assert.ok(LoopResultShape.safeParse({ loop: out }).success);
  });
});
