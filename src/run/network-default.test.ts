// test-database: embedded, a sandbox setting
// The sandbox network is off by default (MCPWORKS_SANDBOX_NETWORK unset): tool mode, code mode and the bridge, both languages.
// Through the real server and the official SDK clients; each test then checks /healthz and the
// meter. scripts/mutation/mutants.json names the enforcing lines this file must catch.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { DEFAULT_TIERS } from '../core/tiers.js';
import { parseResult } from '../test-support/harness.js';
import { startRuleServer, type RuleServer, execute } from '../test-support/spaces.js';

let t: RuleServer;
before(async () => {
  // The test server takes what an unset environment gives (sandboxFromEnv({})), whatever the developer's shell says.
  t = await startRuleServer(DEFAULT_TIERS);
});
after(async () => {
  await t?.stop();
});

describe('the sandbox network', () => {
  test('is off by default: a run has only its own loopback (tool mode, code mode, both languages)', async () => {
    const s = await t.space([
      {
        name: 'py-net',
        code: 'def main(input_data):\n    return sorted(line.split(":")[0].strip() for line in open("/proc/net/dev").read().splitlines()[2:])\n',
      },
      {
        name: 'ts-net',
        language: 'typescript',
        code: 'import { readFileSync } from "node:fs";\nexport default function main() { return readFileSync("/proc/net/dev", "utf8").split("\\n").slice(2).filter(Boolean).map((l) => l.split(":")[0]!.trim()).sort(); }',
      },
    ]);
    const tools = await s.run('tools');
    assert.deepEqual(parseResult(await tools.callTool('utils__py-net')), ['lo']);
    assert.deepEqual(parseResult(await tools.callTool('utils__ts-net')), ['lo']);
    const code = await s.run('code');
    assert.deepEqual(
      (await execute(code, 'result = sorted(l.split(":")[0].strip() for l in open("/proc/net/dev").read().splitlines()[2:])', 'python'))
        .value,
      ['lo'],
    );
    assert.deepEqual((await execute(code, 'import { ts_net } from "functions";\nresult = await ts_net();', 'typescript')).value, ['lo']);
    // Through the bridge: a Python execute runs the TypeScript function in a sandbox of its own.
    assert.deepEqual((await execute(code, 'from functions import ts_net\nresult = ts_net()', 'python')).value, ['lo']);
    await t.assertHealthy();
    assert.deepEqual(await t.usage(s.account), { executions: 5, active: 0 });
  });
});
