// test-database: postgres, quota, rate and concurrency races through the server over parallel connections
// Metering in code mode and under races: quota, per-minute rate and concurrency through the real
// server. scripts/test.sh re-runs this file on PostgreSQL, where the parallel clients go over
// parallel connections and the races can happen (the admission row lock is what stops them);
// src/store/metering-store.test.ts races admission itself harder. Each test then checks /healthz
// and the meter. scripts/mutation/mutants.json names the lines it must catch.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { DEFAULT_TIERS, type TierLimits } from '../core/tiers.js';
import { startRuleServer, type RuleServer } from '../test-support/spaces.js';
import { until } from '../test-support/processes.js';

const pro = DEFAULT_TIERS.pro!;
const unlimited = { monthlyExecutions: null, executionsPerMinute: null, concurrency: null };
const TIERS: Record<string, TierLimits> = {
  ...DEFAULT_TIERS,
  quota2: { ...pro, ...unlimited, monthlyExecutions: 2 },
  rate2: { ...pro, ...unlimited, executionsPerMinute: 2 },
  solo: { ...pro, ...unlimited, concurrency: 1 },
  quota6: { ...pro, ...unlimited, monthlyExecutions: 6 },
  four: { ...pro, ...unlimited, concurrency: 4 },
  quota10: { ...pro, ...unlimited, monthlyExecutions: 10 },
};

let t: RuleServer;
before(async () => {
  t = await startRuleServer(TIERS);
});
after(async () => {
  await t?.stop();
});

describe('metering in code mode', () => {
  test('quota, per-minute rate and concurrency hold in code mode as in tool mode', async () => {
    const quota = await t.space([{ name: 'one', code: 'result = 1' }], 'quota2');
    const answers = [
      await t.rawCall(quota, 'code', 'execute', { code: 'result = 1' }),
      await t.rawCall(quota, 'tools', 'utils__one', {}),
      await t.rawCall(quota, 'code', 'execute', { code: 'result = 1' }),
    ];
    assert.deepEqual(
      answers.map((a) => a.status),
      [200, 200, 429],
      JSON.stringify(answers.map((a) => a.body)),
    );
    assert.equal(answers[2]!.body.code, 'QUOTA_EXCEEDED');
    assert.deepEqual(await t.usage(quota.account), { executions: 2, active: 0 });

    // Three calls inside one minute window. Calls that straddle a window's end (the clock read before
    // the first and after the last differ) prove nothing: made again with a fresh account, instead
    // of waiting for a window to start or trusting the calls to take under 10 s on a loaded machine.
    let rate = await t.space([], 'rate2');
    let rated: Array<Awaited<ReturnType<typeof t.rawCall>>> = [];
    for (let attempt = 1; attempt <= 3; attempt++) {
      if (attempt > 1) rate = await t.space([], 'rate2');
      const minute = Math.floor(Date.now() / 60_000);
      rated = [];
      for (let i = 0; i < 3; i++) rated.push(await t.rawCall(rate, 'code', 'execute', { code: 'result = 1' }));
      if (Math.floor(Date.now() / 60_000) === minute) break;
    }
    assert.deepEqual(
      rated.map((r) => r.status),
      [200, 200, 429],
    );
    assert.equal(rated[2]!.body.code, 'EXECUTION_RATE_EXCEEDED');
    assert.ok(Number(rated[2]!.headers.get('retry-after')) >= 1);
    assert.deepEqual(await t.usage(rate.account), { executions: 2, active: 0 });

    const solo = await t.space([], 'solo');
    const holding = t.rawCall(solo, 'code', 'execute', { code: 'import time\ntime.sleep(3)\nresult = "held"' });
    await until(
      'the first run holds the slot',
      () => t.usage(solo.account),
      (usage) => usage.active > 0,
    );
    const second = await t.rawCall(solo, 'code', 'execute', { code: 'result = 2' });
    assert.equal(second.status, 429);
    assert.equal(second.body.code, 'CONCURRENCY_LIMIT_EXCEEDED');
    assert.equal((await holding).status, 200);
    await t.assertHealthy();
    assert.deepEqual(await t.usage(solo.account), { executions: 1, active: 0 });
  });
});

describe('metering races (many parallel clients)', () => {
  const quotaRaces = [
    {
      calls: 30,
      quota: 6,
      tier: 'quota6',
      mode: 'code',
      what: 'executes',
      functions: [],
      tool: 'execute',
      args: (i: number) => ({ code: `result = ${i}` }),
    },
    {
      calls: 50,
      quota: 10,
      tier: 'quota10',
      mode: 'tools',
      what: 'tool-mode calls',
      functions: [{ name: 'hello', template: 'hello-world' }],
      tool: 'utils__hello',
      args: () => ({ name: 'x' }),
    },
  ] as const;
  for (const race of quotaRaces) {
    test(`${race.calls} parallel ${race.what} against a quota of ${race.quota} get exactly ${race.quota} successes`, async () => {
      const s = await t.space([...race.functions], race.tier);
      const answers = await Promise.all(Array.from({ length: race.calls }, (_, i) => t.rawCall(s, race.mode, race.tool, race.args(i))));
      assert.equal(answers.filter((a) => a.status === 200 && !a.body.result?.isError).length, race.quota);
      const refused = answers.filter((a) => a.status === 429);
      assert.equal(refused.length, race.calls - race.quota);
      assert.ok(refused.every((a) => a.body.code === 'QUOTA_EXCEEDED'));
      await t.assertHealthy();
      assert.deepEqual(await t.usage(s.account), { executions: race.quota, active: 0 });
    });
  }

  test('30 parallel executes against a concurrency of 4 never run more than 4 at once', async () => {
    const s = await t.space([], 'four');
    // Each run reports when it ran; the runs that were admitted must never overlap more than 4 deep.
    const code = 'import time\nstart = time.time()\ntime.sleep(2)\nresult = [start, time.time()]';
    const answers = await Promise.all(Array.from({ length: 30 }, () => t.rawCall(s, 'code', 'execute', { code })));
    const ran = answers.filter((a) => a.status === 200).map((a) => JSON.parse(a.body.result.content[0].text) as [number, number]);
    const refused = answers.filter((a) => a.status === 429);
    assert.ok(ran.length >= 4, `at least the 4 slots ran (${ran.length})`);
    assert.ok(refused.length > 0 && refused.every((a) => a.body.code === 'CONCURRENCY_LIMIT_EXCEEDED'));
    const deepest = Math.max(...ran.map(([start]) => ran.filter(([s2, e2]) => s2 <= start && start < e2).length));
    assert.ok(deepest <= 4, `${deepest} runs at once`);
    await t.assertHealthy();
    assert.deepEqual(await t.usage(s.account), { executions: ran.length, active: 0 });
  });
});
