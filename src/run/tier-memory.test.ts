// test-database: embedded, a sandbox limit
// The tier table's memory limit (out of memory takes the kernel a few seconds on a busy machine, hence
// the long timeout) holds on every path: tool mode, code mode and a cross-language
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
    timeoutSeconds: 60,
    memoryMb: 128,
  };
  t = await startRuleServer({ ...DEFAULT_TIERS, limited: limits });
});
after(async () => {
  await t?.stop();
});

test('MemoryError on every path', async () => {
  await limitHoldsOnEveryPath(t, 'hog', 'limited', 'MemoryError');
});
