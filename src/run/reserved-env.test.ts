// test-database: embedded, env names are checked in the core
// Reserved environment variable names are refused in declarations (create endpoint) and in the X-MCPWorks-Env header (run endpoint, both modes).
// Through the real server and the official SDK clients; each test then checks /healthz and the
// meter. scripts/mutation/mutants.json names the enforcing lines this file must catch.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { encodeEnvHeader } from '../core/env-header.js';
import { DEFAULT_TIERS } from '../core/tiers.js';
import { callError, callOk, parseResult } from '../test-support/harness.js';
import { startRuleServer, type RuleServer } from '../test-support/spaces.js';

let t: RuleServer;
before(async () => {
  t = await startRuleServer(DEFAULT_TIERS);
});
after(async () => {
  await t?.stop();
});

describe('reserved environment variable names', () => {
  const RESERVED = [
    'LD_PRELOAD',
    'LD_LIBRARY_PATH',
    'PYTHONPATH',
    'PYTHONSTARTUP',
    'PYTHON',
    'NODE_OPTIONS',
    'NODE_PATH',
    'SSL_CERT_FILE',
    'SSL_CERT_DIR',
    'MCPWORKS_SECRET_KEY',
    'PATH',
    'HOME',
    'USER',
    'SHELL',
    'TMPDIR',
  ];
  // Neighbours of the reserved names that are ordinary variables.
  const ORDINARY = ['LDAP_URL', 'PY_MODE', 'NODES', 'SSLMODE', 'MCPWORKSPACE', 'PATHS', 'HOMEPAGE', 'USERNAME', 'SHELLY', 'TMPDIR_NAME'];

  test('each reserved prefix and name is refused in declarations (create endpoint) and in the header (run endpoint)', async () => {
    const s = await t.space([{ name: 'plain', code: 'result = 1' }]);
    // One name per task, in parallel: each is refused on its own.
    await Promise.all(
      RESERVED.map(async (name) => {
        for (const field of ['required_env', 'optional_env']) {
          const made = await callError(s.create, 'make_function', { service: 'utils', name: 'probe', code: 'result = 1', [field]: [name] });
          assert.equal(made.type, 'validation_error', `${field} ${name}`);
          assert.match(made.message, new RegExp(`'${name}' is not allowed`));
          const updated = await callError(s.create, 'update_function', { service: 'utils', name: 'plain', [field]: [name] });
          assert.equal(updated.type, 'validation_error', `update ${field} ${name}`);
        }
        for (const mode of ['tools', 'code'] as const) {
          const response = await t.rawCall(
            s,
            mode,
            mode === 'tools' ? 'utils__plain' : 'execute',
            { code: 'result = 1' },
            { 'x-mcpworks-env': encodeEnvHeader({ [name]: 'reserved-value-123' }) },
          );
          // A tool error of the call (the connection stays usable), unmetered.
          assert.equal(response.status, 200, `header ${name} (${mode})`);
          assert.equal(response.body.result.isError, true, `header ${name} (${mode})`);
          assert.match(response.body.result.content[0].text, new RegExp(`variable ${name} is not allowed`));
          assert.doesNotMatch(JSON.stringify(response.body), /reserved-value-123/);
        }
      }),
    );
    // The neighbours are accepted both ways.
    await callOk(s.create, 'make_function', {
      service: 'utils',
      name: 'neighbours',
      code: 'import os\nresult = sorted(k for k in os.environ if k in input_data["names"])',
      optional_env: ORDINARY,
    });
    const env = Object.fromEntries(ORDINARY.map((n) => [n, `value-of-${n}`]));
    const run = await s.run('tools', env);
    assert.deepEqual(parseResult(await run.callTool('utils__neighbours', { names: ORDINARY })), [...ORDINARY].sort());
    assert.equal(
      (await callOk(s.create, 'describe_function', { service: 'utils', name: 'plain' })).active_version,
      1,
      'refused updates changed nothing',
    );
    await t.assertHealthy();
    assert.deepEqual(await t.usage(s.account), { executions: 1, active: 0 });
  });
});
