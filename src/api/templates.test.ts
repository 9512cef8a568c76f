// test-database: embedded, the templates run end to end
// The five templates, executed end to end through the run endpoint. api-connector and
// slack-notifier need egress, so this server gives its sandboxes network (MCPWORKS_SANDBOX_NETWORK=on);
// the only outside host reachable from this build's machines is the npm registry, so they call it.
// Where the registry's address lies in a range runs are refused (on these build machines it is in
// a documentation range), the operator's allow-list (MCPWORKS_SANDBOX_NETWORK_ALLOW) opens exactly it.
import assert from 'node:assert/strict';
import { lookup } from 'node:dns/promises';
import { after, before, test } from 'node:test';
import { sandboxFromEnv } from '../app/config.js';
import {
  callOk,
  connect,
  createAccount,
  parseResult,
  startTestServer,
  type McpTestClient,
  type TestServer,
} from '../test-support/harness.js';

let server: TestServer;
let run: McpTestClient;

before(async () => {
  const registry = await lookup('registry.npmjs.org', { all: true, family: 4 });
  // The switches as `serve` reads them from these variables (passed as config, not through process.env).
  const sandbox = sandboxFromEnv({
    MCPWORKS_SANDBOX_NETWORK: 'on',
    MCPWORKS_SANDBOX_NETWORK_ALLOW: registry.map((entry) => `${entry.address}/32`).join(','),
  });
  server = await startTestServer({ sandbox });
  const account = await createAccount(server.url);
  const create = await connect(`${server.url}/mcp/create/templates`, account.key);
  await callOk(create, 'make_namespace', { name: 'templates' });
  await callOk(create, 'make_service', { name: 'starter' });
  for (const template of ['hello-world', 'csv-analyzer', 'api-connector', 'slack-notifier', 'scheduled-report']) {
    await callOk(create, 'make_function', { service: 'starter', name: template, backend: 'code_sandbox', template });
  }
  run = await connect(`${server.url}/mcp/run/templates?mode=tools`, account.key);
});
after(async () => {
  await server?.stop();
});

const call = async (tool: string, args: Record<string, unknown>) => {
  const result = await run.callTool(`starter__${tool}`, args);
  assert.notEqual(result.isError, true, JSON.stringify(result));
  return parseResult(result);
};

test('hello-world greets', async () => {
  assert.deepEqual(await call('hello-world', { name: 'MCPWorks' }), {
    greeting: 'Hello, MCPWorks!',
    message: 'MCPWorks is up: this function ran in a sandbox.',
  });
  assert.equal((await call('hello-world', {})).greeting, 'Hello, World!');
});

test('csv-analyzer summarises numeric and text columns; empty input is an error value', async () => {
  const stats = await call('csv-analyzer', { csv_data: 'name,age,city\nAlice,30,Paris\nBob,25,Oslo\nCleo,35,Paris\n' });
  assert.equal(stats.row_count, 3);
  assert.deepEqual(stats.columns, ['name', 'age', 'city']);
  assert.deepEqual(stats.stats.age, { type: 'numeric', min: 25, max: 35, mean: 30, median: 30 });
  assert.deepEqual(stats.stats.city, { type: 'text', unique_count: 2, sample_values: ['Paris', 'Oslo'] });
  assert.deepEqual(await call('csv-analyzer', { csv_data: '' }), { error: 'csv_data is empty' });
});

test('api-connector calls an external API and returns status, headers and body', async () => {
  const response = await call('api-connector', { url: 'https://registry.npmjs.org/is-number', method: 'GET' });
  assert.equal(response.status_code, 200);
  assert.equal(response.ok, true);
  assert.match(response.headers['content-type'], /json/);
  assert.ok(response.body.length <= 10000);
  assert.match(response.body.slice(0, 200), /"name":\s*"is-number"/);
});

test('slack-notifier posts JSON to a webhook URL and reports what came back', async () => {
  const response = await call('slack-notifier', {
    webhook_url: 'https://registry.npmjs.org/-/mcpworks-webhook-test',
    text: 'hello',
    channel: '#general',
  });
  assert.equal(typeof response.status_code, 'number');
  assert.equal(response.sent, response.status_code >= 200 && response.status_code < 300);
  assert.ok(response.response.length <= 500);
});

test('scheduled-report renders markdown and JSON', async () => {
  const markdown = await call('scheduled-report', { title: 'Weekly', sections: [{ heading: 'Sales', content: 'Up 5%' }] });
  assert.equal(markdown.format, 'markdown');
  assert.match(markdown.report, /^# Weekly\n\n_Generated .+_\n\n## Sales\n\nUp 5%\n$/);
  assert.ok(!Number.isNaN(Date.parse(markdown.generated_at)));
  const json = await call('scheduled-report', { title: 'Weekly', sections: [], format: 'json' });
  assert.deepEqual(JSON.parse(json.report).sections, []);
});
