// The pure rules of chat_with_agent: message and id arguments, which replica answers, and how a
// stored conversation becomes the history a turn is sent (paired tool calls, budget, digest).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  appendDigest,
  CHAT_MESSAGE_MAX_CHARS,
  CHAT_SUMMARY_MAX_CHARS,
  chatMessageArg,
  conversationIdArg,
  messageOf,
  pickReplica,
  planHistory,
  replicaArg,
  turnsOf,
  type ChatMessage,
  type StoredChatMessage,
} from './agent-chat.js';
import { DomainError } from './errors.js';

const typed = (type: string, pattern?: RegExp) => (e: unknown) =>
  e instanceof DomainError && e.type === type && (pattern === undefined || pattern.test(e.message));

describe('chat arguments', () => {
  test('a message is non-empty text within the cap, without control characters', () => {
    assert.equal(chatMessageArg('hello\nthere\t!'), 'hello\nthere\t!');
    assert.equal(chatMessageArg('x'.repeat(CHAT_MESSAGE_MAX_CHARS)).length, CHAT_MESSAGE_MAX_CHARS);
    assert.throws(() => chatMessageArg('x'.repeat(CHAT_MESSAGE_MAX_CHARS + 1)), typed('validation_error', /at most 32000/));
    for (const bad of [undefined, '', '   ', 5, 'a\u0000b', 'a\u001bb'])
      assert.throws(() => chatMessageArg(bad), typed('validation_error'));
  });

  test('a conversation id and a replica name have their shapes', () => {
    assert.equal(conversationIdArg(undefined), undefined);
    assert.equal(conversationIdArg('0b6f3c1e-9b9a-4f7e-8f55-0c2a4c1a2b3c'), '0b6f3c1e-9b9a-4f7e-8f55-0c2a4c1a2b3c');
    for (const bad of ['', 'a b', 'x'.repeat(65), '../x', 7]) assert.throws(() => conversationIdArg(bad), typed('validation_error'));
    assert.equal(replicaArg('daring-duck'), 'daring-duck');
    assert.throws(() => replicaArg('Daring Duck'), typed('validation_error'));
  });
});

describe('which replica answers', () => {
  const rows = [
    { name: 'daring-duck', status: 'running', local: true, load: 2 },
    { name: 'brave-bear', status: 'running', local: true, load: 0 },
    { name: 'calm-cat', status: 'stopped', local: false, load: 0 },
    { name: 'eager-eel', status: 'running', local: false, load: 0 },
    { name: 'fond-fox', status: 'draining', local: true, load: 0 },
  ];

  test('none named: the least loaded running here; ties the oldest', () => {
    assert.equal(pickReplica('a', rows, undefined), 'brave-bear');
    assert.equal(
      pickReplica(
        'a',
        rows.map((r) => ({ ...r, load: 0 })),
        undefined,
      ),
      'daring-duck',
    );
  });

  test('none here: a running replica elsewhere under a live lease before an older one whose lease lapsed (a dead node)', () => {
    const elsewhere = [
      { name: 'old-owl', status: 'running', local: false, load: 0, leased: false },
      { name: 'new-newt', status: 'running', local: false, load: 0, leased: true },
    ];
    assert.equal(pickReplica('a', elsewhere, undefined), 'new-newt');
    assert.equal(pickReplica('a', [elsewhere[0]!], undefined), 'old-owl', 'none live: the oldest (its node may come back)');
  });

  test('named: running here or on another node is taken; unknown or draining is not found; stopped is a conflict naming it', () => {
    assert.equal(pickReplica('a', rows, 'daring-duck'), 'daring-duck');
    assert.throws(() => pickReplica('a', rows, 'lazy-lynx'), typed('not_found', /no replica 'lazy-lynx'.*daring-duck/));
    assert.throws(() => pickReplica('a', rows, 'fond-fox'), typed('not_found'));
    assert.throws(() => pickReplica('a', rows, 'calm-cat'), typed('conflict', /replica 'calm-cat' of agent 'a' is stopped/));
    // Another node's: it answers through the database (agents/handoff.ts).
    assert.equal(pickReplica('a', rows, 'eager-eel'), 'eager-eel');
    assert.throws(
      () => pickReplica('a', [{ name: 'x-y', status: 'crashed', local: true, load: 0 }], 'x-y'),
      typed('unavailable', /starting/),
    );
  });

  test('none running: a conflict; running only on another node: the oldest there; pending or crashed (starting): unavailable, not "start it"', () => {
    assert.throws(() => pickReplica('a', [rows[2]!], undefined), typed('conflict', /no running replica/));
    assert.equal(pickReplica('a', [rows[2]!, rows[3]!], undefined), rows[3]!.name);
    for (const status of ['pending', 'crashed']) {
      const starting = [rows[2]!, { name: 'x-y', status, local: false, load: 0 }];
      assert.throws(
        () => pickReplica('a', starting, undefined),
        typed('unavailable', /^agent 'a' has no replica running yet: its replicas are starting; retry/),
      );
    }
  });
});

const user = (content: string): ChatMessage => ({ role: 'user', content });
const said = (content: string): ChatMessage => ({ role: 'assistant', content });
const calls = (...ids: string[]): ChatMessage => ({
  role: 'assistant',
  content: '',
  toolCalls: ids.map((id) => ({ id, name: `svc__f${id}`, arguments: {} })),
});
const results = (...ids: string[]): ChatMessage => ({ role: 'tool', results: ids.map((id) => ({ callId: id, content: `r${id}` })) });
const stored = (...messages: ChatMessage[]): StoredChatMessage[] => messages.map((message, i) => ({ seq: i + 1, message }));

describe('history', () => {
  test('turns: tool calls kept only with their results; orphans and a turn without its user message dropped', () => {
    const turns = turnsOf(
      stored(
        results('0'), // its call was pruned
        said('orphan answer'),
        user('q1'),
        calls('1', '2'),
        results('1', '2'),
        said('a1'),
        user('q2'),
        calls('3'), // the run stopped before the result
        user('q3'),
        results('9'),
        said('a3'),
      ),
    );
    assert.deepEqual(
      turns.map((t) => t.messages),
      [[user('q1'), calls('1', '2'), results('1', '2'), said('a1')], [user('q2')], [user('q3'), said('a3')]],
    );
    assert.deepEqual(
      turns.map((t) => t.lastSeq),
      [6, 8, 11],
    );
  });

  test('within the budget the history is the turns as stored, after the summary', () => {
    const messages = stored(user('q1'), said('a1'));
    assert.deepEqual(planHistory(null, messages), { history: [user('q1'), said('a1')] });
    const plan = planHistory('earlier', messages);
    assert.equal(plan.fold, undefined);
    assert.match((plan.history[0] as { content: string }).content, /earlier/);
  });

  test('past the budget the oldest turns are folded into a digest; the newest turn always kept', () => {
    const long = 'x'.repeat(400);
    const messages = stored(
      user(`first ${long}`),
      calls('1'),
      results('1'),
      said('one'),
      user('second'),
      said('two'),
      user('third'),
      said('three'),
    );
    const plan = planHistory(null, messages, 200);
    assert.ok(plan.fold);
    assert.equal(plan.fold.throughSeq, 6);
    assert.match(plan.fold.summary, /- user: first x+…\n- assistant called svc__f1\n- assistant: one\n- user: second\n- assistant: two/);
    assert.deepEqual(plan.history.slice(1), [user('third'), said('three')]);
    assert.equal(plan.history[0]!.role, 'user');
    // One turn larger than the budget is still sent whole.
    const alone = planHistory(null, stored(user(long), said(long)), 100);
    assert.equal(alone.fold, undefined);
    assert.equal(alone.history.length, 2);
  });

  test('the summary keeps its newest part within its cap', () => {
    let summary: string | null = null;
    for (let i = 0; i < 100; i++) summary = appendDigest(summary, [user(`question ${i} ${'y'.repeat(200)}`), said(`answer ${i}`)]);
    assert.ok(summary!.length <= CHAT_SUMMARY_MAX_CHARS + 30);
    assert.match(summary!, /^\(older turns omitted\)/);
    assert.match(summary!, /answer 99$/);
    assert.doesNotMatch(summary!, /question 0 /);
  });

  test('stored rows read back as messages; anything else is left out', () => {
    assert.deepEqual(messageOf(calls('1')), calls('1'));
    assert.deepEqual(messageOf(results('1')), results('1'));
    for (const bad of [null, 'x', { role: 'system', content: 'x' }, { role: 'user' }]) assert.equal(messageOf(bad), undefined);
  });
});
