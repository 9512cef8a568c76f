/** The schema worker pool on its own: real worker processes, real ajv. */
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { getPriority } from 'node:os';
import { after, test } from 'node:test';
import { RawJson } from '../core/raw-json.js';
import type { ActiveFunction } from '../store/catalog-store.js';
import { checkInput, checkOutput } from './function-request.js';
import { isSchemaWorker, schedIdleHere, schedulingPolicy, schemaWorkers, threadChildren } from '../test-support/processes.js';
import { REMEMBERED_VALUE_CHARS, SCHEMA_GUARD_DEFAULTS, SchemaGuard } from './schema-guard.js';

const guards: SchemaGuard[] = [];
const guard = (options: ConstructorParameters<typeof SchemaGuard>[0] = {}) => {
  const made = new SchemaGuard(options);
  guards.push(made);
  return made;
};
after(async () => {
  await Promise.all(guards.map((g) => g.close()));
});

const RECURSIVE = {
  type: 'object',
  properties: { a: { $ref: '#/$defs/n' } },
  $defs: {
    n: {
      anyOf: [
        { type: 'array', items: { $ref: '#/$defs/n' } },
        { type: 'array', items: { $ref: '#/$defs/n' } },
      ],
    },
  },
};
const UNIQUE = { type: 'array', uniqueItems: true };
/**
 * Quadratic: ajv compares every pair (about 20 s of CPU time for 120,000 items on a 2-core EPYC guest).
 * Sized far past every deadline below on any machine: at 40,000 items (about 1 s) a faster CI host
 * finished the check inside the default 1-second deadline, and the test of that deadline failed.
 */
const SLOW_ITEMS = Array.from({ length: 120_000 }, (_, i) => i);

test('compiles and checks with readable problems; bad schemas are refused', async () => {
  const g = guard();
  const schema = { type: 'object', properties: { n: { type: 'integer' } }, required: ['n'] };
  assert.deepEqual(await g.compile(schema, 'a'), { ok: true });
  assert.deepEqual(await g.check(schema, { n: 1 }, 'a', 'the input'), { ok: true });
  assert.deepEqual(await g.check(schema, { n: 'x' }, 'a', 'the input'), { ok: false, problems: ['/n must be integer'] });
  const invalid = await g.compile({ type: 'nonsense' }, 'a');
  assert.equal(invalid.ok, false);
  assert.match((invalid as { invalid: string }).invalid, /schema is invalid/);
  assert.equal((await g.compile({ properties: { a: { minimum: 'low' } } }, 'a')).ok, false);
});

test("one user's schema can neither replace ajv's meta-schema nor collide with another's $id", async () => {
  const g = guard({ workers: 1 });
  await g.compile({ $id: 'http://json-schema.org/draft-07/schema', type: 'object' }, 'a');
  assert.deepEqual(await g.compile({ type: 'object', properties: { n: { type: 'integer' } } }, 'b'), { ok: true });
  assert.equal((await g.compile({ type: 'nonsense' }, 'b')).ok, false, 'the meta-schema still applies');
  const shared = { $id: 'https://example.com/person.schema.json', type: 'object', required: ['name'] };
  assert.deepEqual(await g.compile({ ...shared }, 'a'), { ok: true });
  assert.deepEqual(await g.compile({ ...shared, required: ['age'] }, 'b'), { ok: true });
  assert.deepEqual(await g.check({ ...shared, required: ['age'] }, {}, 'b', 'the input'), {
    ok: false,
    problems: ["(root) must have required property 'age'"],
  });
  assert.deepEqual(await g.check({ ...shared }, { name: 'x' }, 'a', 'the input'), { ok: true });
});

test('an $async schema is refused (its validator would pass any value), and never checks a value', async () => {
  const g = guard({ workers: 1 });
  const schema = { $async: true, type: 'integer' };
  assert.deepEqual(await g.compile(schema, 'a'), { ok: false, invalid: '$async schemas are not supported' });
  for (let i = 0; i < 2; i++) {
    assert.deepEqual(await g.check(schema, 'not an integer', 'a', 'the input'), {
      ok: false,
      problems: ['the schema could not be applied: $async schemas are not supported'],
    });
  }
  assert.equal(g.stats().remembered, 0);
});

test("a nested $id in one tenant's schema decides nothing for another's $ref (nor for a remembered pass)", async () => {
  const g = guard({ workers: 1 });
  // a's schema: its root id, and a nested $id that ajv records (as a path into a's schema).
  const planted = { $id: 'https://example.com/root', type: 'object', properties: { p: { $id: 'https://example.com/p', type: 'string' } } };
  assert.deepEqual(await g.compile(planted, 'a'), { ok: true });
  // b's schema, the same root id, a $ref to a's nested id: it must not resolve into b's own /properties/p.
  const probe = { $id: 'https://example.com/root', properties: { p: { type: 'integer' } }, $ref: 'https://example.com/p' };
  const compiled = await g.compile(probe, 'b');
  assert.equal(compiled.ok, false, "b's $ref resolved through a's schema");
  assert.match((compiled as { invalid: string }).invalid, /can't resolve reference https:\/\/example\.com\/p/);
  // So no check of b's can pass on it (and no pass is remembered).
  for (let i = 0; i < 2; i++) assert.equal((await g.check(probe, 5, 'b', 'the input')).ok, false);
  assert.equal(g.stats().remembered, 0);
  // A schema's own nested $id still resolves within it, compiled and checked again after.
  const own = {
    $id: 'https://example.com/own',
    type: 'object',
    properties: { q: { $ref: 'https://example.com/q' } },
    $defs: { q: { $id: 'https://example.com/q', type: 'integer' } },
  };
  assert.deepEqual(await g.compile(own, 'b'), { ok: true });
  assert.deepEqual(await g.check(own, { q: 1 }, 'b', 'the input'), { ok: true });
  assert.deepEqual(await g.check(own, { q: 'x' }, 'b', 'the input'), { ok: false, problems: ['/q must be integer'] });
});

test('a large value is measured, serialised and sent in slices with a turn of the event loop after each', async () => {
  const g = guard({ sliceValues: 1000 });
  await g.check({ type: 'object' }, {}, 'a', 'the input');
  const value = Array.from({ length: 100_000 }, (_, i) => i);
  // Counts turns of the event loop taken while the value is prepared and while it is sent (one per
  // slice or piece: each, like this counter, continues from setImmediate).
  const turns = { preparing: 0, sending: 0 };
  let done = false;
  const count = () => {
    const { preparing, sending } = g.stats();
    if (preparing > 0) turns.preparing++;
    if (sending > 0) turns.sending++;
    if (!done) setImmediate(count);
  };
  const pending = g.check({ type: 'array', items: { type: 'integer' } }, value, 'a', 'the input').finally(() => (done = true));
  setImmediate(count);
  assert.deepEqual(await pending, { ok: true });
  // About 100 slices measuring, 100 serialising and 100 pieces sent: none of the three in one go.
  assert.ok(turns.preparing >= 190, `${turns.preparing} turns while the value was prepared`);
  assert.ok(turns.sending >= 95, `${turns.sending} turns while the value was sent`);
  assert.deepEqual([g.stats().preparing, g.stats().sending], [0, 0]);
});

test('a raw value (bytes) past the caps gets the cap message from a scan before any parse; no worker is replaced', async () => {
  const g = guard();
  const schema = { type: 'array' };
  await g.check(schema, [], 'a', 'the result');
  const replaced = g.stats().replaced;
  const raw = (text: string) => new RawJson(Buffer.from(text));
  // 1.4 M values (4.2 MB, under the largest tiers' result caps): a full parse in the worker would
  // overrun its CPU deadline and cost a worker; the scan answers with the cap instead.
  const wide = `[${'[],'.repeat(1_400_000)}[]]`;
  const deep = `${'['.repeat(129)}${']'.repeat(129)}`;
  const valuesCap = { ok: false, stopped: 'the result holds more than 500000 JSON values' };
  const depthCap = { ok: false, stopped: 'the result is nested deeper than 128 levels' };
  assert.deepEqual(await g.check(schema, raw(wide), 'a', 'the result'), valuesCap);
  assert.deepEqual(await g.check(schema, raw(deep), 'a', 'the result'), depthCap);
  assert.deepEqual(await g.check(schema, JSON.parse(deep), 'a', 'the result'), depthCap, 'the parsed path says the same');
  assert.equal(g.stats().replaced, replaced, 'no worker was killed');
  // Just within the caps, and a string full of brackets that runs across the scan's pieces: checked as usual.
  assert.deepEqual(await g.check(schema, raw(`[${'0,'.repeat(499_998)}0]`), 'a', 'the result'), { ok: true });
  assert.deepEqual(await g.check(schema, raw(`["${'[{,'.repeat(200_000)}"]`), 'a', 'the result'), { ok: true });
  assert.deepEqual(await g.check(schema, raw(`${'['.repeat(128)}${']'.repeat(128)}`), 'a', 'the result'), { ok: true });
  // No bytes at all is no JSON value (not null); neither is malformed text.
  assert.deepEqual(await g.check({}, raw(''), 'a', 'the result'), {
    ok: false,
    stopped: 'the result could not be read as JSON: it is empty',
  });
  assert.deepEqual(await g.check({}, raw('  '), 'a', 'the result'), { ok: false, stopped: 'the result could not be read as JSON' });
  assert.equal(g.stats().replaced, replaced);
});

test('a check that exhausts its heap kills only its worker, however long the deadline', async () => {
  const g = guard({ deadlineMs: 120_000 });
  const verdict = await g.check(RECURSIVE, { a: JSON.parse(`${'['.repeat(26)}1${']'.repeat(26)}`) }, 'a', 'the input');
  assert.deepEqual(verdict, { ok: false, stopped: 'it needed more than 64 MB of memory' });
  assert.equal(g.stats().replaced, 1);
  assert.deepEqual(await g.check(RECURSIVE, { a: [[]] }, 'a', 'the input'), { ok: true }, 'a fresh worker takes over');
});

test("the worker's heap limit is the guard's, not V8's default", async () => {
  const g = guard({ heapMb: 8, deadlineMs: 120_000 });
  // About 20 MB once parsed in the worker: harmless under a default heap, too much for 8 MB.
  const big = Array.from({ length: 150_000 }, (_, i) => ({ s: `${i}`.padStart(120, '.') }));
  assert.deepEqual(await g.check({ type: 'array' }, big, 'a', 'the input'), { ok: false, stopped: 'it needed more than 8 MB of memory' });
});

test('a check past its deadline is stopped, whatever memory it would still get', async () => {
  const g = guard({ heapMb: 256 });
  assert.deepEqual(await g.check(UNIQUE, SLOW_ITEMS, 'a', 'the result'), {
    ok: false,
    stopped: 'it needed more than 1000 ms of CPU time',
  });
  assert.deepEqual(await g.check(UNIQUE, [1, 2], 'a', 'the result'), { ok: true });
});

test('one account never holds every worker: another account is served meanwhile', async () => {
  // The attacker's checks are stopped after 250 ms of CPU time: the order, not the deadline, is the subject.
  const g = guard({ deadlineMs: 250 });
  await g.check(UNIQUE, [1], 'warm-up', 'the input');
  for (let i = 0; i < 2000 && g.stats().ready < 2; i++) await new Promise((resolve) => setTimeout(resolve, 5));
  const order: string[] = [];
  const slow = [1, 2, 3].map((i) => g.check(UNIQUE, SLOW_ITEMS, 'attacker', 'the input').then(() => order.push(`attacker ${i}`)));
  const quick = g.check(UNIQUE, [1, 1], 'bystander', 'the input').then((verdict) => {
    order.push('bystander');
    return verdict;
  });
  assert.equal((await quick).ok, false);
  await Promise.all(slow);
  // The bystander is served before any of the attacker's checks ends; the attacker's own checks may
  // end in any order (their values are prepared and sent in slices, interleaved).
  assert.equal(order[0], 'bystander', JSON.stringify(order));
  assert.deepEqual(order.slice(1).sort(), ['attacker 1', 'attacker 2', 'attacker 3']);
});

test('the queue is bounded per account; beyond it a check fails at once as busy', async () => {
  // A wait long enough for a loaded machine (the niced worker gets little CPU there): the bound is the subject, not the deadline.
  const g = guard({ workers: 1, maxWaitingPerAccount: 2, maxWaitMs: 120_000, deadlineMs: 250 });
  const running = g.check(UNIQUE, SLOW_ITEMS, 'a', 'the input');
  for (let i = 0; i < 2000 && g.stats().busy === 0; i++) await new Promise((resolve) => setTimeout(resolve, 5));
  const waiting = [g.check(UNIQUE, [1], 'a', 'the input'), g.check(UNIQUE, [2], 'a', 'the input')];
  assert.deepEqual(await g.check(UNIQUE, [3], 'a', 'the input'), {
    ok: false,
    stopped: 'too many schema checks are waiting on this server; try again shortly',
    busy: true,
  });
  assert.equal((await running).ok, false);
  assert.deepEqual(await Promise.all(waiting), [{ ok: true }, { ok: true }]);
});

test('a worker that dropped a schema from its cache gets its text again', async () => {
  const g = guard({ workers: 1 });
  const first = { type: 'object', required: ['k'] };
  assert.deepEqual(await g.compile(first, 'a'), { ok: true });
  // More schemas than the worker keeps: it starts a fresh cache and forgets `first`.
  for (let i = 0; i < 300; i++) assert.deepEqual(await g.compile({ const: i }, 'a'), { ok: true });
  assert.deepEqual(await g.check(first, {}, 'a', 'the input'), { ok: false, problems: ["(root) must have required property 'k'"] });
});

/** Waits (bounded) until `ready` holds. */
async function until(ready: () => boolean): Promise<void> {
  for (let i = 0; i < 6000 && !ready(); i++) await new Promise((resolve) => setTimeout(resolve, 5));
}

test("waiting jobs take turns by account: a newcomer goes before the flooders' next jobs", async () => {
  // A wait long enough for a loaded machine: the order is the subject here, not the deadline.
  const g = guard({ maxWaitMs: 120_000, deadlineMs: 250 });
  await g.check(UNIQUE, [1], 'warm-up', 'the input');
  await until(() => g.stats().ready === 2);
  const order: string[] = [];
  const flood = (who: string) => [1, 2].map((i) => g.check(UNIQUE, SLOW_ITEMS, who, 'the input').then(() => order.push(`${who} ${i}`)));
  const floods = [...flood('a'), ...flood('c')];
  await until(() => g.waitingOf('a') === 1 && g.waitingOf('c') === 1 && g.stats().busy === 2);
  const quick = g.check(UNIQUE, [1, 1], 'b', 'the input').then((verdict) => (order.push('b'), verdict));
  const verdict = await quick;
  assert.ok(!verdict.ok && 'problems' in verdict, JSON.stringify(verdict));
  await Promise.all(floods);
  // Served as soon as the first worker is free (the other one may finish just before its answer).
  assert.ok(order.indexOf('b') <= 2, order.join(', '));
});

test('a job that waits past its deadline fails closed as busy, and leaves the queue', async () => {
  const g = guard({ workers: 1, maxWaitMs: 200 });
  // Starting a worker counts as waiting (it may take longer than 200 ms here): start it first.
  await g.check(UNIQUE, [1], 'warm-up', 'the input');
  await until(() => g.stats().ready === 1);
  const running = g.check(UNIQUE, SLOW_ITEMS, 'a', 'the input');
  await until(() => g.stats().busy === 1);
  // The worker is held for at least a second of CPU time: longer than the wait allowed.
  assert.deepEqual(await g.check(UNIQUE, [1], 'b', 'the input'), {
    ok: false,
    stopped: 'no schema checker was free within 200 ms (the server is busy); try again shortly',
    busy: true,
  });
  assert.equal(g.stats().waiting, 0);
  assert.equal(g.waitingOf('b'), 0);
  assert.equal((await running).ok, false);
  await until(() => g.stats().ready === 1);
  assert.deepEqual(await g.check(UNIQUE, [1], 'b', 'the input'), { ok: true }, 'a worker is free again: b is served');
});

test('workers run below the server in scheduling priority (idle: SCHED_IDLE, and niced), and are forked off the main thread', async () => {
  // Other tests' guards keep their workers until the file ends: this guard's are the new ones.
  const earlier = new Set(schemaWorkers());
  const g = guard({ workers: 2, idle: true });
  await g.check(UNIQUE, [1], 'a', 'the input');
  await until(() => g.stats().ready === 2);
  // A fork on the main thread (whose task id is the process id) would hold its event loop until the child had exec'd.
  assert.deepEqual(threadChildren(process.pid).filter(isSchemaWorker), [], 'no schema worker was forked by the main thread');
  const workers = schemaWorkers().filter((pid) => !earlier.has(pid));
  const idle = schedIdleHere();
  assert.ok(workers.length >= 2, `schema workers found: ${workers.length}`);
  // Every thread of each: V8's GC threads, started before the worker was lowered, do a schema's heap work.
  for (const pid of workers) {
    const tids = readdirSync(`/proc/${pid}/task`).map(Number);
    assert.ok(tids.length > 1, `threads of ${pid}: ${tids.length}`);
    for (const tid of tids) {
      assert.equal(getPriority(tid), getPriority() + SCHEMA_GUARD_DEFAULTS.nice, `worker ${pid}, thread ${tid}`);
      assert.equal(schedulingPolicy(pid, tid), idle, `worker ${pid}, thread ${tid}: its policy`);
    }
  }
});

test('by default (idle: false) workers are niced only (SCHED_OTHER)', async () => {
  // Other tests' guards keep their workers until the file ends: this guard's is the new one.
  const before = new Set(schemaWorkers());
  const g = guard({ workers: 1 });
  await g.check(UNIQUE, [1], 'a', 'the input');
  await until(() => g.stats().ready === 1);
  const workers = schemaWorkers().filter((pid) => !before.has(pid));
  assert.equal(workers.length, 1);
  for (const tid of readdirSync(`/proc/${workers[0]}/task`).map(Number)) {
    assert.equal(schedulingPolicy(workers[0]!, tid), 0, `thread ${tid}`);
    assert.equal(getPriority(tid), getPriority() + SCHEMA_GUARD_DEFAULTS.nice, `thread ${tid}`);
  }
});

test("a small value's pass is remembered for its account, schema and exact text only; failures never", async () => {
  const g = guard({ workers: 1 });
  const schema = { type: 'object', properties: { n: { type: 'integer' } }, required: ['n'] };
  const other = { type: 'object', properties: { n: { type: 'integer', maximum: 5 } }, required: ['n'] };
  const remembered = () => g.stats().remembered;
  assert.deepEqual(await g.check(schema, { n: 7 }, 'a', 'the input'), { ok: true });
  assert.equal(remembered(), 0);
  assert.deepEqual(await g.check(schema, { n: 7 }, 'a', 'the input'), { ok: true });
  assert.equal(remembered(), 1, 'the same account, schema and value: answered without a worker');
  // Another account's identical check goes to a worker: a tenant learns nothing of another's checks.
  assert.deepEqual(await g.check(schema, { n: 7 }, 'b', 'the input'), { ok: true });
  assert.equal(remembered(), 1, "another account's check is not answered from a's passes");
  // Another schema, the same account and value: checked, and here refused.
  assert.deepEqual(await g.check(other, { n: 7 }, 'a', 'the input'), { ok: false, problems: ['/n must be <= 5'] });
  assert.equal(remembered(), 1);
  // Another value: checked.
  assert.deepEqual(await g.check(schema, { n: 'x' }, 'a', 'the input'), { ok: false, problems: ['/n must be integer'] });
  // A failure is never remembered (as a pass or at all): refused again, by a worker.
  assert.deepEqual(await g.check(schema, { n: 'x' }, 'a', 'the input'), { ok: false, problems: ['/n must be integer'] });
  assert.equal(remembered(), 1);
});

test("a remembered pass is one function's: another function of the account (maybe another namespace's) with the same schema is checked", async () => {
  const g = guard({ workers: 1 });
  const schema = { type: 'object', properties: { user: { type: 'string' } } };
  // The same template's schemas in two namespaces: a key limited to one must not time the other's checks.
  const fn = (functionId: string) =>
    ({
      functionId,
      service: 's',
      name: functionId,
      definition: { inputSchema: schema, outputSchema: schema },
    }) as unknown as ActiveFunction;
  const checks = { schemas: g, accountId: 'a' };
  const ran = { ok: true as const, result: { user: 'bob' }, stdout: '', stderr: '' };
  assert.equal(await checkInput(fn('f1'), { user: 'alice' }, checks), undefined);
  assert.equal((await checkOutput(fn('f1'), ran, checks)).ok, true);
  assert.equal(await checkInput(fn('f2'), { user: 'alice' }, checks), undefined);
  assert.equal((await checkOutput(fn('f2'), ran, checks)).ok, true);
  assert.equal(g.stats().remembered, 0, "f1's passes answered f2's checks");
  assert.equal(await checkInput(fn('f1'), { user: 'alice' }, checks), undefined);
  assert.equal((await checkOutput(fn('f1'), ran, checks)).ok, true);
  assert.equal(g.stats().remembered, 2, "f1's own checks again: remembered");
  // At the guard: the scope is part of the key, however the account and scope split.
  await g.check(schema, { v: 1 }, 'a', 'the input', 'x');
  await g.check(schema, { v: 1 }, 'a', 'the input', 'y');
  await g.check(schema, { v: 1 }, 'ax', 'the input', '');
  assert.equal(g.stats().remembered, 2);
});

test('only a value of at most REMEMBERED_VALUE_CHARS of JSON text is remembered; the passes are bounded, least recently used first out', async () => {
  const g = guard({ workers: 1, rememberedPasses: 2 });
  const schema = { type: 'object' };
  const long = { s: 'x'.repeat(REMEMBERED_VALUE_CHARS) };
  assert.ok(JSON.stringify(long).length > REMEMBERED_VALUE_CHARS);
  const edge = { s: 'x'.repeat(REMEMBERED_VALUE_CHARS - 8) };
  assert.equal(JSON.stringify(edge).length, REMEMBERED_VALUE_CHARS);
  await g.check(schema, long, 'a', 'the input');
  await g.check(schema, long, 'a', 'the input');
  assert.equal(g.stats().remembered, 0, 'a longer value goes to a worker every time');
  await g.check(schema, edge, 'a', 'the input');
  await g.check(schema, edge, 'a', 'the input');
  assert.equal(g.stats().remembered, 1, 'a value of exactly the limit is remembered');
  // Two more passes: with room for two, the least recently used (edge) goes.
  await g.check(schema, { v: 1 }, 'a', 'the input');
  await g.check(schema, { v: 2 }, 'a', 'the input');
  await g.check(schema, edge, 'a', 'the input');
  assert.equal(g.stats().remembered, 1, 'dropped: checked again');
  await g.check(schema, { v: 2 }, 'a', 'the input');
  assert.equal(g.stats().remembered, 2, 'the most recent pass stays');
});

test("each account's remembered passes are its own share: another account filling far beyond its share pushes out none of them", async () => {
  const g = guard({ workers: 1, rememberedPasses: 4, rememberedAccounts: 4 });
  const schema = { type: 'object' };
  await g.check(schema, { b: 1 }, 'b', 'the input');
  // a passes twenty distinct values: five times its share.
  for (let v = 0; v < 20; v++) await g.check(schema, { v }, 'a', 'the input');
  assert.deepEqual(g.stats().held, { passes: 5, accounts: 2 }, 'a holds its share, b its one pass');
  const before = g.stats().remembered;
  assert.deepEqual(await g.check(schema, { b: 1 }, 'b', 'the input'), { ok: true });
  assert.equal(g.stats().remembered, before + 1, "b's pass is answered without a worker after a's flood");
  // a's own oldest passes went (its list is bounded), its latest stay.
  await g.check(schema, { v: 0 }, 'a', 'the input');
  assert.equal(g.stats().remembered, before + 1, "a's oldest pass was dropped from a's own list");
  await g.check(schema, { v: 19 }, 'a', 'the input');
  assert.equal(g.stats().remembered, before + 2);
});

test('the accounts whose passes are held are bounded: past it, the least recently used account goes whole', async () => {
  const g = guard({ workers: 1, rememberedPasses: 3, rememberedAccounts: 2 });
  const schema = { type: 'object' };
  const remembered = () => g.stats().remembered;
  for (const v of [1, 2, 3]) await g.check(schema, { v }, 'a', 'the input');
  await g.check(schema, { v: 1 }, 'b', 'the input');
  assert.deepEqual(g.stats().held, { passes: 4, accounts: 2 });
  // a is used again (answered from its list), so b is now the least recently used account.
  await g.check(schema, { v: 1 }, 'a', 'the input');
  assert.equal(remembered(), 1);
  await g.check(schema, { v: 1 }, 'c', 'the input');
  assert.deepEqual(g.stats().held, { passes: 4, accounts: 2 }, 'never more than rememberedAccounts lists');
  await g.check(schema, { v: 2 }, 'a', 'the input');
  assert.equal(remembered(), 2, 'a, used more recently than b, kept its list');
  await g.check(schema, { v: 1 }, 'b', 'the input');
  assert.equal(remembered(), 2, 'b, the least recently used account, went whole');
  // b's new pass pushed out c; d and e push out a, then b.
  for (const account of ['d', 'e']) await g.check(schema, { v: 1 }, account, 'the input');
  assert.deepEqual(g.stats().held, { passes: 2, accounts: 2 });
  for (const v of [1, 2, 3]) await g.check(schema, { v }, 'a', 'the input');
  assert.equal(remembered(), 2, "a's whole list went");
  // a coming back pushed out d (then the least recently used); e's list stays.
  await g.check(schema, { v: 1 }, 'e', 'the input');
  assert.equal(remembered(), 3, "e's pass is still held");
  await g.check(schema, { v: 1 }, 'd', 'the input');
  assert.equal(remembered(), 3, 'd went when a came back');
});

test('a small value past the depth cap is stopped before any worker, and never remembered', async () => {
  const g = guard({ workers: 1 });
  let deep: unknown = 1;
  for (let i = 0; i < 200; i++) deep = [deep];
  const first = await g.check({}, deep, 'a', 'the input');
  assert.equal(first.ok, false);
  assert.match((first as { stopped: string }).stopped, /deeper than/);
  assert.equal((await g.check({}, deep, 'a', 'the input')).ok, false);
  assert.equal(g.stats().remembered, 0);
});
