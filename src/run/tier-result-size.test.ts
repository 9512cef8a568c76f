// test-database: embedded, a sandbox limit
// The tier table's largest result holds on every path: tool mode, code mode and a cross-language
// bridge call, in both languages, through the real server; then /healthz and the meter.
// scripts/mutation/mutants.json names the enforcing lines this file must catch.
import { after, before, test } from 'node:test';
import { DEFAULT_TIERS } from '../core/tiers.js';
import { startRuleServer, type RuleServer } from '../test-support/spaces.js';
import { limitHoldsOnEveryPath } from '../test-support/tier-limits.js';

let t: RuleServer;
before(async () => {
  const limits = {
    ...DEFAULT_TIERS.pro!,
    monthlyExecutions: null,
    executionsPerMinute: null,
    concurrency: null,
    maxResultBytes: 64 * 1024,
  };
  t = await startRuleServer({ ...DEFAULT_TIERS, limited: limits });
});
after(async () => {
  await t?.stop();
});

test('OutputSizeError on every path', async () => {
  await limitHoldsOnEveryPath(t, 'big', 'limited', 'OutputSizeError');
});
