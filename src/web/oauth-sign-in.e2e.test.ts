// test-database: embedded, one sign-in through real clients; nothing here races
// Sign-in from an MCP client, end to end: mcp-remote (the pinned devDependency, as Claude Desktop
// and Cursor run it) pointed at a run endpoint with no key starts the OAuth flow and prints the
// authorization URL; Debian's headless Chromium (playwright-core) opens it, logs in on the consent
// page, approves; mcp-remote gets its tokens on its loopback callback and calls `execute`. Revoked
// on the API-keys page, the sign-in stops working: mcp-remote's next call fails with the key error.
// Any console or page error, or a request to an origin other than the server and the client's
// callback, fails the run.
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import { chromium, type Browser, type Page } from 'playwright-core';
import { callOk, connect, createAccount, startTestServer, type TestAccount, type TestServer } from '../test-support/harness.js';
import { shootPage } from '../test-support/page-shot.js';
import { freePort } from '../test-support/processes.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const CHROMIUM = process.env.MCPWORKS_CHROMIUM ?? '/usr/bin/chromium';
const MCP_REMOTE = path.join(REPO, 'node_modules', 'mcp-remote', 'dist', 'proxy.js');
const SCREENSHOTS = process.env.MCPWORKS_SCREENSHOTS_DIR ?? path.join(REPO, 'docs', 'screenshots');

let server: TestServer;
let browser: Browser;
let page: Page;
let account: TestAccount;
const ns = `signin-${Math.random().toString(36).slice(2, 8)}`;
const work = mkdtempSync(path.join(tmpdir(), 'mcpworks-oauth-e2e-'));
const built = path.join(work, 'web');
const problems: string[] = [];
let callbackPort = 0;

before(async () => {
  assert.ok(existsSync(CHROMIUM), `no Chromium at ${CHROMIUM}: \`make test\` installs Debian's chromium (scripts/apt-packages-test.txt)`);
  assert.ok(existsSync(MCP_REMOTE), `no mcp-remote at ${MCP_REMOTE}: run npm ci`);
  execFileSync(process.execPath, [path.join(REPO, 'scripts', 'build-web.mjs'), '--out', built], { stdio: 'inherit' });
  server = await startTestServer({ dashboardDir: built });
  account = await createAccount(server.url);
  const create = await connect(`${server.url}/mcp/create/${ns}`, account.key);
  await callOk(create, 'make_namespace', { name: ns });
  await create.close();
  callbackPort = await freePort();
  const allowed = new Set([new URL(server.url).origin, `http://localhost:${callbackPort}`]);
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
  page = await (await browser.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
  page.on('console', (message) => {
    // A failed load is reported with its URL below (mcp-remote's callback page has no favicon).
    if (message.type() === 'error' && !message.text().startsWith('Failed to load resource'))
      problems.push(`console error: ${message.text()}`);
  });
  page.on('response', (response) => {
    const url = new URL(response.url());
    const callbackIcon = url.origin === `http://localhost:${callbackPort}` && url.pathname === '/favicon.ico';
    if (response.status() >= 400 && !callbackIcon) problems.push(`${response.status()} for ${response.url()}`);
  });
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('request', (request) => {
    const url = new URL(request.url());
    if (url.protocol !== 'data:' && !allowed.has(url.origin)) problems.push(`request to another origin: ${request.url()}`);
  });
});

after(async () => {
  await browser?.close();
  await server?.stop();
  rmSync(work, { recursive: true, force: true });
});

/** mcp-remote as a desktop app starts it (no key), spoken to over stdio. */
function mcpRemote(url: string) {
  const child: ChildProcessWithoutNullStreams = spawn(process.execPath, [MCP_REMOTE, url, String(callbackPort), '--allow-http'], {
    // BROWSER: its opener "succeeds" without opening anything; this test's Chromium opens the URL.
    env: { PATH: process.env.PATH ?? '', HOME: work, MCP_REMOTE_CONFIG_DIR: path.join(work, 'mcp-auth'), BROWSER: '/bin/true' },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stderr = '';
  let buffered = '';
  const waiting = new Map<number, (message: any) => void>();
  const said: Array<() => void> = [];
  child.stderr.on('data', (d) => {
    stderr += d;
    for (const wake of said.splice(0)) wake();
  });
  child.stdout.on('data', (d) => {
    buffered += d;
    let newline;
    while ((newline = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, newline);
      buffered = buffered.slice(newline + 1);
      try {
        const message = JSON.parse(line);
        waiting.get(message.id)?.(message);
      } catch {
        // not a message
      }
    }
  });
  const exited = new Promise<void>((resolve) => child.on('close', () => resolve()));
  let nextId = 1;
  return {
    request(method: string, params: unknown, timeoutMs = 120_000): Promise<any> {
      const id = nextId++;
      child.stdin.write(`${JSON.stringify({ jsonrpc: '2.0', id, method, params })}\n`);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no answer to ${method}; mcp-remote said:\n${stderr.slice(-3000)}`)), timeoutMs);
        waiting.set(id, (message) => (clearTimeout(timer), resolve(message)));
        void exited.then(
          () => (clearTimeout(timer), reject(new Error(`mcp-remote ended before answering ${method}:\n${stderr.slice(-3000)}`))),
        );
      });
    },
    notify(method: string) {
      child.stdin.write(`${JSON.stringify({ jsonrpc: '2.0', method })}\n`);
    },
    /** Resolves with the first match of `pattern` in what mcp-remote writes to stderr. */
    async waitFor(pattern: RegExp, timeoutMs = 120_000, from = 0): Promise<RegExpExecArray> {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const match = pattern.exec(stderr.slice(from));
        if (match) return match;
        if (Date.now() > deadline || child.exitCode !== null) throw new Error(`mcp-remote never said ${pattern}:\n${stderr.slice(-3000)}`);
        await new Promise<void>((resolve) => {
          said.push(resolve);
          setTimeout(resolve, 1000).unref();
        });
      }
    },
    stderr: () => stderr,
    stop: () => child.kill('SIGKILL'),
  };
}

/** The tokens (and client id) mcp-remote keeps in its config dir (`<hash>_tokens.json`, `<hash>_client_info.json`). */
function tokensOf(dir: string): { access_token: string; refresh_token: string; client_id: string } {
  const files = readdirSync(dir, { recursive: true }).map(String);
  const read = (suffix: string) =>
    JSON.parse(
      readFileSync(
        path.join(
          dir,
          files.find((f) => f.endsWith(suffix))!,
        ),
        'utf8',
      ),
    );
  return { ...read('_tokens.json'), client_id: read('_client_info.json').client_id };
}

/** The page as it is: every control labelled, then its screenshot (1280×800, as the dashboard's). */
const shoot = (name: string) => shootPage(page, SCREENSHOTS, name);

const INIT = { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'claude-desktop-like', version: '1' } };

test('mcp-remote with no key: browser sign-in on the consent page, then execute; revoked on the keys page, its next call fails', async () => {
  const remote = mcpRemote(`${server.url}/mcp/run/${ns}`);
  try {
    const initialized = remote.request('initialize', INIT);
    initialized.catch(() => undefined);
    const [, url] = await remote.waitFor(/Please authorize this client by visiting:\s*\n(\S+)/);
    const authorization = new URL(url!);
    assert.equal(authorization.origin + authorization.pathname, `${server.url}/oauth/authorize`);
    assert.equal(authorization.searchParams.get('code_challenge_method'), 'S256');

    // Signed out: the consent page asks to log in first, then shows the request on the same page.
    await page.goto(authorization.href);
    await page.getByRole('heading', { name: 'Log in' }).waitFor();
    assert.match(page.url(), /\/consent\?request=[0-9a-f]{64}$/);
    await page.getByLabel('Email').fill(account.email);
    await page.getByLabel('Password').fill(account.password);
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.getByRole('heading', { name: /^Allow “MCP CLI Proxy”/ }).waitFor();
    assert.match((await page.locator('main').textContent())!, new RegExp(`Namespace: ${ns}`));
    await shoot('consent');
    await page.getByRole('button', { name: 'Approve' }).click();
    // The browser is sent back to mcp-remote's loopback callback, which takes the code.
    await page.waitForURL(new RegExp(`^http://localhost:${callbackPort}/oauth/callback`));

    const init = await initialized;
    assert.ok(init.result?.serverInfo?.name?.startsWith('mcpworks-run'), JSON.stringify(init));
    remote.notify('notifications/initialized');
    const call = await remote.request('tools/call', { name: 'execute', arguments: { code: 'result = 6 * 7' } });
    assert.ok(!call.result?.isError && /42/.test(JSON.stringify(call.result?.content)), JSON.stringify(call).slice(0, 600));

    // What it holds (it forgets its tokens once they are refused).
    const held = tokensOf(path.join(work, 'mcp-auth'));
    assert.match(held.access_token, /^mcpwat_[0-9a-f]{64}$/);

    // Revoked on the API-keys page: the next call fails with the key error.
    await page.goto(`${server.url}/keys`);
    const row = page.getByRole('row', { name: /MCP CLI Proxy/ });
    await row.waitFor();
    assert.match((await row.textContent())!, new RegExp(ns));
    await row.scrollIntoViewIfNeeded();
    await shoot('keys-signed-in-clients');
    await row.getByRole('button', { name: /Revoke sign-in of/ }).click();
    await page.getByText('No client has signed in.').waitFor();
    // mcp-remote's next call gets the 401 (its refresh is refused too) and it asks for a new sign-in
    // instead of answering; the token it holds gets the key error from the server.
    const before = remote.stderr().length;
    void remote.request('tools/call', { name: 'execute', arguments: { code: 'result = 1' } }).catch(() => undefined);
    await remote.waitFor(/Error from remote server: UnauthorizedError/, 60_000, before);
    assert.match(remote.stderr().slice(before), /Please authorize this client by visiting/);
    const answer = await fetch(`${server.url}/mcp/run/${ns}`, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${held.access_token}`,
        'content-type': 'application/json',
        accept: 'application/json, text/event-stream',
      },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list', params: {} }),
    });
    assert.equal(answer.status, 401);
    assert.match(await answer.text(), /invalid, revoked or expired API key/);
    const refreshed = await fetch(`${server.url}/oauth/token`, {
      method: 'POST',
      body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: held.refresh_token, client_id: held.client_id }),
    });
    assert.equal((await refreshed.json()).error, 'invalid_grant');
  } finally {
    remote.stop();
  }
  assert.deepEqual(problems, []);
});
