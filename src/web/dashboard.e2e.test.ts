// test-database: embedded, one browser session against the real server; nothing here races
// The dashboard end to end, in Debian's headless Chromium (scripts/apt-packages-test.txt) driven by
// playwright-core; nothing downloads a browser. Sign up, create a key, copy the `.mcp.json`, connect
// the MCP SDK client with it and make a function of two versions; see it, diff the two, restore one,
// run it from the try-it form, see that run and a run-endpoint call appear in the open Executions
// page, see the Usage page chart a bar over the day of those runs (read from its canvas); make an
// agent through the client, scale it to 2, configure its AI (the fake LLM of the agents tests),
// start it and chat from the Agents page, which names the replica that answered; revoke the key in the page: the client then gets 401. The server runs
// code in real sandboxes, reached through the server (the server tier: scripts/test-tiers.mjs).
// Any console error, page error or request to another origin fails the run. Screenshots of each
// page at 1280×800 go to docs/screenshots/ (MCPWORKS_SCREENSHOTS_DIR elsewhere), shown in the README.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import { chromium, type Browser, type Page } from 'playwright-core';
import { fakeLlmAllow, startFakeLlm, type FakeLlm } from '../test-support/fake-llm.js';
import { callOk, connect, startTestServer, type TestServer } from '../test-support/harness.js';
import { shootPage } from '../test-support/page-shot.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const CHROMIUM = process.env.MCPWORKS_CHROMIUM ?? '/usr/bin/chromium';
const SCREENSHOTS = process.env.MCPWORKS_SCREENSHOTS_DIR ?? path.join(REPO, 'docs', 'screenshots');

let server: TestServer;
let llm: FakeLlm;
let browser: Browser;
let page: Page;
const built = mkdtempSync(path.join(tmpdir(), 'mcpworks-web-'));
/** What the page must never do: log an error, throw, or reach another origin. */
const problems: string[] = [];
/** HTTP statuses of refusals the test provokes next, each excused once from the console check. */
const expectedFailures: number[] = [];

before(async () => {
  assert.ok(existsSync(CHROMIUM), `no Chromium at ${CHROMIUM}: \`make test\` installs Debian's chromium (scripts/apt-packages-test.txt)`);
  // The app as `npm run build` makes it, from these sources (a stale dist/web is not what is tested).
  execFileSync(process.execPath, [path.join(REPO, 'scripts', 'build-web.mjs'), '--out', built], { stdio: 'inherit' });
  llm = await startFakeLlm();
  // The agents' model is the fake LLM on 127.0.0.3, which the operator allows here (as the agents tests do).
  server = await startTestServer({ dashboardDir: built, agentMcpAllow: fakeLlmAllow() });
  const origin = new URL(server.url).origin;
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, colorScheme: 'light' });
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin });
  page = await context.newPage();
  page.on('console', (message) => {
    if (message.type() !== 'error') return;
    // The one error a test provokes on purpose (a refused sign-in: Chromium logs the failed request).
    const allowed = expectedFailures.findIndex((status) => message.text().includes(`status of ${status}`));
    if (allowed >= 0) expectedFailures.splice(allowed, 1);
    else problems.push(`console error: ${message.text()}`);
  });
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('request', (request) => {
    const url = new URL(request.url());
    if (url.protocol !== 'data:' && url.origin !== origin) problems.push(`request to another origin: ${request.url()}`);
  });
  mkdirSync(SCREENSHOTS, { recursive: true });
});

after(async () => {
  await browser?.close();
  await server?.stop();
  await llm?.close();
  rmSync(built, { recursive: true, force: true });
});

/** Each page as it is: every control labelled, then its screenshot. */
const shoot = (name: string) => shootPage(page, SCREENSHOTS, name);

test('sign up, create a key, copy .mcp.json, call a tool with it, revoke it in the page: 401', async () => {
  const email = 'ada@example.com';
  const password = 'a long enough password';

  // Sign up: / sends a signed-out visitor to log in, which links to sign up.
  await page.goto(`${server.url}/`);
  await page.getByRole('heading', { name: 'Log in' }).waitFor();
  await shoot('login');
  await page.getByRole('link', { name: 'Sign up' }).first().click();
  await page.getByRole('heading', { name: 'Sign up' }).waitFor();
  // Keyboard only: every control is labelled and reached by Tab.
  await page.getByLabel('Email').fill(email);
  await page.keyboard.press('Tab');
  await page.keyboard.type(password);
  await page.keyboard.press('Enter');
  await page.getByRole('heading', { name: 'API keys' }).waitFor();

  // Create a key limited to a namespace.
  await page.getByLabel('Name', { exact: true }).fill('laptop');
  await page.getByLabel('Namespace (empty: every namespace)').fill('demo');
  await page.getByLabel('Expires').selectOption('30');
  await page.getByRole('button', { name: 'Create key' }).click();
  const shown = page.locator('#new-key-value');
  await shown.waitFor();
  const key = (await shown.textContent())!.trim();
  assert.match(key, /^mcpw_[0-9a-f]{64}$/);
  await page.getByRole('row', { name: /laptop/ }).waitFor();
  const row = await page.getByRole('row', { name: /laptop/ }).textContent();
  assert.ok(row!.includes(key.slice(0, 17)) && !row!.includes(key), 'the list shows the prefix, never the key');
  await shoot('keys');

  // Connect: the .mcp.json with the key filled in, copied with its button.
  await page.getByRole('link', { name: 'Connect a client with this key' }).click();
  await page.getByRole('heading', { name: 'Connect an MCP client' }).waitFor();
  await page.locator('button[data-copy="mcp-json"]').click();
  await page.getByText('Copied.').first().waitFor();
  const copied = JSON.parse(await page.evaluate(() => navigator.clipboard.readText()));
  const servers = copied.mcpServers;
  assert.deepEqual(Object.keys(servers), ['demo-create', 'demo-run']);
  assert.equal(servers['demo-create'].url, `${server.url}/mcp/create/demo`);
  assert.equal(servers['demo-run'].url, `${server.url}/mcp/run/demo`);
  assert.equal(servers['demo-create'].headers.Authorization, `Bearer ${key}`);
  const lines = await page.locator('#claude-mcp-add').textContent();
  assert.match(
    lines!,
    /claude mcp add --scope user --transport http demo-create http:\/\/127\.0\.0\.1:\d+\/mcp\/create\/demo \\\n {2}--header 'Authorization: Bearer \$\{MCPWORKS_API_KEY\}'/,
  );
  await shoot('connect');

  // The MCP SDK client, configured from the copied file, calls a tool.
  const create = servers['demo-create'];
  const client = await connect(create.url, create.headers.Authorization.replace(/^Bearer /, ''), 'v2');
  const made = await callOk(client, 'make_namespace', { name: 'demo' });
  assert.equal(made.name ?? made.namespace?.name ?? 'demo', 'demo');

  // A function made through the MCP client, then changed: versions 1 and 2.
  await callOk(client, 'make_service', { name: 'math' });
  await callOk(client, 'make_function', {
    service: 'math',
    name: 'double',
    code: 'def main(input_data):\n    return {"doubled": input_data["x"] * 2}\n',
    tags: ['demo'],
    input_schema: { type: 'object', properties: { x: { type: 'integer', description: 'the number to double' } }, required: ['x'] },
  });
  await callOk(client, 'update_function', {
    service: 'math',
    name: 'double',
    code: 'def main(input_data):\n    # v2: ten times\n    return {"doubled": input_data["x"] * 10}\n',
  });

  // Functions: namespaces → services → functions; the code highlighted, the versions listed.
  await page.getByRole('link', { name: 'Functions' }).click();
  await page.getByRole('heading', { name: 'Functions', exact: true }).waitFor();
  await page.getByRole('button', { name: 'double' }).click();
  await page.getByRole('heading', { name: 'math.double' }).waitFor();
  await page.locator('pre.code .hljs-keyword').first().waitFor();
  assert.match((await page.locator('pre.code').textContent())!, /ten times/);
  await page.locator('tr[data-version="1"]').waitFor();
  assert.equal(await page.locator('table.versions tbody tr').count(), 2);
  await shoot('functions');

  // Diff versions 1 and 2, then restore version 1 (a new version 3 with its code).
  await page.getByLabel('Compare version').selectOption('1');
  await page.getByLabel('with version').selectOption('2');
  await page.getByRole('button', { name: 'Show diff' }).click();
  await page.locator('pre.diff .removed').filter({ hasText: '* 2' }).waitFor();
  await page.locator('pre.diff .added').filter({ hasText: '* 10' }).waitFor();
  await shoot('functions-diff');
  await page.getByRole('button', { name: 'Restore version 1' }).click();
  await page.getByText('Version 1 restored as version 3.').waitFor();
  await page.locator('tr[data-version="3"]').filter({ hasText: '(active)' }).waitFor();
  assert.doesNotMatch((await page.locator('pre.code').textContent())!, /ten times/);

  // Try it: the form built from the input schema runs the active version (3: doubles).
  await page.getByLabel('x (required)').fill('21');
  await page.getByRole('button', { name: 'Run' }).click();
  const result = page.locator('#try-result');
  await result.waitFor();
  assert.deepEqual(JSON.parse((await result.textContent())!), { doubled: 42 });
  await shoot('functions-try-it');

  // Executions: the try-it run is listed (trigger dashboard); a call through the run endpoint appears without a reload.
  await page.getByRole('link', { name: 'Executions' }).click();
  await page.getByRole('heading', { name: 'Executions' }).waitFor();
  const tried = page.locator('table.executions tbody tr').filter({ hasText: 'dashboard' });
  await tried.waitFor();
  assert.equal(await page.locator('table.executions tbody tr').count(), 1);
  const runner = await connect(`${servers['demo-run'].url}?mode=tools`, key, 'v2');
  const tool = (await runner.listTools()).tools.find((t) => /double/.test(t.name))!;
  assert.deepEqual(await callOk(runner, tool.name, { x: 5 }), { doubled: 10 });
  await runner.close();
  await page.locator('table.executions tbody tr').filter({ hasText: 'mcp-tools' }).waitFor();
  assert.equal(await page.locator('table.executions tbody tr').count(), 2, 'the new call appeared in the open page');
  await tried.getByRole('button', { name: /^Details of execution/ }).click();
  await page.getByRole('heading', { name: /^Execution / }).waitFor();
  await page.locator('#execution-stdout').waitFor();
  assert.deepEqual(JSON.parse((await page.locator('#execution-result').textContent())!), { doubled: 42 }, 'the stored result');
  await shoot('executions');

  // Usage: this month's two executions against the quota (a bar), the per-day chart, the tier's limits.
  await page.getByRole('link', { name: 'Usage' }).click();
  await page.getByRole('heading', { name: 'Usage' }).waitFor();
  await page.getByText(/^2 of [\d,]+ executions/).waitFor();
  assert.equal(await page.locator('progress.quota').getAttribute('value'), '2');
  // The chart (uPlot, a canvas) is drawn with a bar over each day the table counts executions on,
  // and over no other day: read back from the canvas's pixels in the accent colour.
  const table = await page
    .locator('table[aria-label="Executions per day"] tbody tr')
    .evaluateAll((rows) => rows.map((row) => [...row.querySelectorAll('td')].map((cell) => cell.textContent ?? '')));
  const busyDays = table.flatMap(([day, count]) => (Number(count) > 0 ? [Number(day!.slice(8))] : []));
  // The chart's x axis is the whole month: YYYY-MM of the table's first day, and its length.
  const [year, month] = table[0]![0]!.split('-').map(Number) as [number, number];
  const monthLength = new Date(Date.UTC(year, month, 0)).getUTCDate();
  assert.ok(busyDays.length >= 1, `a day with executions in the table: ${JSON.stringify(table)}`);
  assert.match((await page.locator('div.chart[role=img]').getAttribute('aria-label'))!, /^Executions per day this month/);
  await page.locator('div.chart canvas').waitFor();
  const drawn = await page.locator('div.chart').evaluate((holder, days) => {
    const canvas = holder.querySelector('canvas')!;
    const over = holder.querySelector<HTMLElement>('.u-over')!.getBoundingClientRect();
    const box = canvas.getBoundingClientRect();
    const scale = canvas.width / box.width;
    const accent = getComputedStyle(document.documentElement).getPropertyValue('--accent').trim();
    const [r, g, b] = [1, 3, 5].map((at) => parseInt(accent.slice(at, at + 2), 16));
    // One row of pixels just above the x axis: a bar of any height crosses it.
    const y = Math.floor((over.bottom - box.top - 2) * scale);
    const row = canvas.getContext('2d')!.getImageData(0, y, canvas.width, 1).data;
    const bars: number[] = [];
    const middles: number[] = [];
    let start = -1;
    for (let x = 0; x <= canvas.width; x++) {
      const hit = x < canvas.width && Math.abs(row[x * 4]! - r!) + Math.abs(row[x * 4 + 1]! - g!) + Math.abs(row[x * 4 + 2]! - b!) < 24;
      if (hit && start < 0) start = x;
      if (!hit && start >= 0) {
        // The bar's middle, as a day: the x scale runs from day 0.5 to the month's last + 0.5.
        const middle = (start + x) / 2 / scale + box.left - over.left;
        bars.push(Math.round(0.5 + (middle / over.width) * days));
        middles.push(over.left + middle);
        start = -1;
      }
    }
    return { width: box.width, height: box.height, bars, middles, low: over.bottom - 4 };
  }, monthLength);
  assert.ok(drawn.width > 0 && drawn.height > 0, `the chart's canvas has a size: ${JSON.stringify(drawn)}`);
  assert.deepEqual(drawn.bars, busyDays, 'a bar over each day with executions, none elsewhere');
  // Hovering a bar names its day and count in the chart's legend.
  await page.mouse.move(drawn.middles[0]!, drawn.low);
  const [hoveredDay, hoveredCount] = table.find(([, count]) => Number(count) > 0)!;
  await page
    .locator('div.chart .u-legend')
    .filter({ hasText: hoveredDay! })
    .filter({ hasText: `Executions${hoveredCount}` })
    .waitFor();
  assert.match((await page.locator('#tier-limits').textContent())!, /Agent slots/);
  await shoot('usage');

  // Agents: one made through the MCP client, scaled to 2 from the page, its AI pointed at the fake
  // LLM, started, and a chat from the page answered by a named replica.
  await callOk(client, 'make_agent', { name: 'helper', description: 'answers questions' });
  await callOk(client, 'add_schedule', {
    name: 'helper',
    function_name: 'math.double',
    cron_expression: '0 0 1 1 *',
    schedule_name: 'yearly',
  });
  await callOk(client, 'add_webhook', { name: 'helper', path: 'hook', handler_function_name: 'math.double' });
  await callOk(client, 'set_agent_state', { name: 'helper', key: 'notes/greeting', value: { text: 'hi there' } });
  await page.getByRole('link', { name: 'Agents' }).click();
  await page.getByRole('heading', { name: 'Agents', exact: true }).waitFor();
  await page.getByRole('button', { name: 'Open agent helper' }).click();
  await page.getByRole('heading', { name: 'demo / helper' }).waitFor();
  await page.getByLabel('Replicas', { exact: true }).fill('2');
  await page.getByRole('button', { name: 'Scale' }).click();
  await page.getByText('Scaled to 2 replicas.').waitFor();
  await page.locator('table.replicas tbody tr').nth(1).waitFor();
  const replicas = await page.locator('table.replicas tbody tr').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-replica')));
  assert.equal(replicas.length, 2);
  const aiKey = 'sk-ant-e2e-secret-key-4f1d';
  await page.getByLabel('Provider').selectOption('anthropic');
  await page.getByLabel('Model').fill('claude-test');
  await page.getByLabel(/^API key/).fill(aiKey);
  await page.getByLabel(/^Base URL/).fill(llm.anthropicUrl);
  await page.getByRole('button', { name: 'Save AI settings' }).click();
  await page.getByText('AI settings saved.').waitFor();
  await page.locator('#ai-settings').filter({ hasText: 'claude-test' }).waitFor();
  assert.doesNotMatch((await page.content())!, /e2e-secret/, 'the AI key is never shown');
  await page.getByRole('button', { name: 'Start', exact: true }).click();
  await page.getByText('Started.').waitFor();
  // Its schedule's next fire (running now), its webhook's full URL, a state value on click.
  await page
    .getByRole('row', { name: /yearly/ })
    .filter({ hasText: /2027|2028/ })
    .waitFor();
  await page.getByText(`${server.url}/mcp/agent/demo/helper/webhook/hook`).waitFor();
  await page.getByRole('button', { name: 'Show the value of notes/greeting' }).click();
  assert.deepEqual(JSON.parse((await page.locator('#state-value').textContent())!), { text: 'hi there' });
  llm.script([{ text: 'Hello from your agent.' }]);
  await page.getByLabel('Message').fill('Hello, who answers?');
  await page.getByRole('button', { name: 'Send' }).click();
  const answeredBy = page.locator('.chat-log .replica-name').first();
  await answeredBy.waitFor({ timeout: 60_000 });
  assert.ok(replicas.includes(await answeredBy.textContent()), 'the answer names one of the two replicas');
  await page.locator('.chat-log').filter({ hasText: 'Hello from your agent.' }).waitFor();
  await page.locator('table.runs tbody tr').filter({ hasText: 'chat' }).waitFor();
  await page.evaluate(() => document.getElementById('agent-title')!.scrollIntoView());
  await shoot('agents');
  await page.getByRole('button', { name: 'Stop', exact: true }).click();
  await page.getByText('Stopped.').waitFor();

  // Account page (password change form), then revoke the key on the keys page.
  await page.getByRole('link', { name: 'Account' }).click();
  await page.getByRole('heading', { name: 'Account' }).waitFor();
  await page.getByLabel('Current password').fill(password);
  await page.getByLabel('New password (at least 8 characters)').fill(`${password} 2`);
  await page.getByRole('button', { name: 'Change password' }).click();
  await page.getByText('Password changed. Every other login session has been logged out.').waitFor();
  await shoot('account');
  await page.getByRole('link', { name: 'API keys' }).click();
  // By keyboard: Enter on Revoke moves the focus to the confirmation, and Enter again revokes.
  await page.getByRole('button', { name: 'Revoke key laptop' }).focus();
  await page.keyboard.press('Enter');
  await page.getByRole('button', { name: 'Revoke laptop now' }).and(page.locator(':focus')).waitFor();
  await page.keyboard.press('Enter');
  await page.getByText('No keys yet.').waitFor();
  assert.equal(await page.locator('#new-key-value').count(), 0, 'the revoked key is no longer shown');

  // The client's next call is refused, and the endpoint answers 401 to that key.
  await assert.rejects(client.callTool('list_namespaces', {}));
  const refused = await fetch(create.url, {
    method: 'POST',
    headers: {
      authorization: create.headers.Authorization,
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
    },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }),
  });
  assert.equal(refused.status, 401);
  await client.close().catch(() => undefined);

  // Log out: the page is back at log in, and the session is gone on the server.
  await page.getByRole('button', { name: 'Log out' }).click();
  await page.getByRole('heading', { name: 'Log in' }).waitFor();
  const after = await page.evaluate(async () => (await (await fetch('/api/session')).json()).signed_in);
  assert.equal(after, false);
  assert.deepEqual(problems, []);
});

test('errors show inline: wrong password, duplicate email, throttled sign-ins', async () => {
  const email = 'ada@example.com';
  const login = async (password: string, status: number) => {
    expectedFailures.push(status);
    await page.getByLabel('Email').fill(email);
    await page.getByLabel('Password').fill(password);
    await page.getByRole('button', { name: 'Log in' }).click();
    const alert = page.locator('#login-error');
    await alert.filter({ hasText: status === 429 ? /retry/ : /wrong email or password/ }).waitFor();
    return alert.textContent();
  };
  await page.goto(`${server.url}/login`);
  await page.getByRole('heading', { name: 'Log in' }).waitFor();
  assert.match((await login('not the password', 401))!, /wrong email or password/);
  await shoot('login-error');

  await page.getByRole('link', { name: 'Sign up' }).first().click();
  expectedFailures.push(409);
  await page.getByLabel('Email').fill(email);
  await page.getByLabel(/^Password/).fill('a long enough password');
  await page.getByRole('button', { name: 'Sign up' }).click();
  await page.locator('#register-error').filter({ hasText: 'already exists' }).waitFor();
  assert.equal(await page.getByLabel('Email').getAttribute('aria-invalid'), 'true', 'the field named by the error is marked');

  // Five failures for one email: the next sign-in waits, and the page says for how long.
  await page.getByRole('link', { name: 'Log in' }).first().click();
  for (let attempt = 2; attempt <= 5; attempt++) await login(`wrong password ${attempt}`, 401);
  assert.match((await login('wrong password 6', 429))!, /too many failed sign-ins for this email; retry in \d+ s/);
  assert.deepEqual(expectedFailures, []);
  assert.deepEqual(problems, []);
});
