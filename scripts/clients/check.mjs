#!/usr/bin/env node
// Runs the README's client snippets with the real clients against a running server.
//
//   node scripts/clients/check.mjs        (Node 22; started by scripts/test.d/clients.sh)
//
// Environment: MCPWORKS_CHECK_URL (the server), MCPWORKS_API_KEY (a live key), CLIENTS_TOOLS (the
// node_modules holding the clients), CLIENTS_WORK (a private scratch dir). The README marks each
// snippet it shows for a client with `<!-- client-check: NAME -->` on the line before its fence;
// this script reads them from the README itself, so what it runs is what the README says, with
// `http://127.0.0.1:8787` replaced by the server's URL and `mcpw_…` by the key.
// Every check prints one line; the last line is `clients: N passed, N failed`. CLIENTS_ONLY=REGEX
// runs only the checks whose name matches.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');
const URL_BASE = process.env.MCPWORKS_CHECK_URL;
const KEY = process.env.MCPWORKS_API_KEY;
const TOOLS = process.env.CLIENTS_TOOLS;
const WORK = process.env.CLIENTS_WORK;
if (!URL_BASE || !KEY || !TOOLS || !WORK) {
  console.error('check.mjs: set MCPWORKS_CHECK_URL, MCPWORKS_API_KEY, CLIENTS_TOOLS and CLIENTS_WORK');
  process.exit(2);
}
const BAD_KEY = `mcpw_${'0'.repeat(64)}`;
const KEY_ERROR = /invalid, revoked or expired API key/;
const CLAUDE = path.join(TOOLS, '@anthropic-ai/claude-code-linux-x64/claude');
const MCP_REMOTE = path.join(TOOLS, 'mcp-remote/dist/proxy.js');
const INSPECTOR = path.join(TOOLS, '@modelcontextprotocol/inspector/clients/launcher/build/index.js');

// --- the README's snippets ---
const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
function snippet(name) {
  const match = new RegExp(`<!-- client-check: ${name} -->\\n\`\`\`[a-z]*\\n([\\s\\S]*?)\\n\`\`\``).exec(readme);
  if (!match) throw new Error(`README.md has no snippet marked client-check: ${name}`);
  return match[1].replaceAll('http://127.0.0.1:8787', URL_BASE);
}

let passed = 0;
let failed = 0;
const ONLY = process.env.CLIENTS_ONLY ? new RegExp(process.env.CLIENTS_ONLY) : undefined;
async function check(name, body) {
  if (ONLY && !ONLY.test(name)) return;
  const started = Date.now();
  try {
    await body();
    passed++;
    console.log(`clients: ok   ${name} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
  } catch (error) {
    failed++;
    console.log(`clients: FAIL ${name}: ${error instanceof Error ? error.message : String(error)}`);
  }
}
function expect(condition, message) {
  if (!condition) throw new Error(message);
}

// Loopback only: Claude Code is told to leave out auto-updates, telemetry and error reports.
const QUIET = {
  CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1',
  DISABLE_AUTOUPDATER: '1',
  DISABLE_TELEMETRY: '1',
  DISABLE_ERROR_REPORTING: '1',
};

/** Runs a command to its end (bounded), answering its status and output. */
function run(command, args, { env = {}, cwd = WORK, input, timeoutMs = 60_000 } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd, env: { PATH: process.env.PATH, ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (error) => (clearTimeout(timer), reject(error)));
    child.on('close', (status, signal) => (clearTimeout(timer), resolve({ status, signal, stdout, stderr, output: stdout + stderr })));
    child.stdin.end(input ?? '');
  });
}

/** A fresh HOME per client run: nothing leaks between checks or from the machine's own config. */
let homes = 0;
function freshHome() {
  const home = path.join(WORK, `home-${++homes}`);
  fs.mkdirSync(home, { recursive: true });
  return home;
}

/**
 * Shell snippets run in bash with `claude` and `npx <client>` standing for the pinned clients,
 * so `npx @modelcontextprotocol/inspector …` runs the Inspector installed for these checks.
 */
function shellPrelude() {
  return [
    `claude() { ${JSON.stringify(CLAUDE)} "$@"; }`,
    'npx() {',
    '  [ "$1" = -y ] && shift',
    '  case "$1" in',
    `    @modelcontextprotocol/inspector|@modelcontextprotocol/inspector@2.12.0) shift; ${JSON.stringify(process.execPath)} ${JSON.stringify(INSPECTOR)} "$@" ;;`,
    `    mcp-remote) shift; ${JSON.stringify(process.execPath)} ${JSON.stringify(MCP_REMOTE)} "$@" ;;`,
    '    *) echo "npx $1: not one of the pinned clients" >&2; return 127 ;;',
    '  esac',
    '}',
    'set -e',
  ].join('\n');
}
const shell = (script, env, options = {}) => run('bash', ['-c', `${shellPrelude()}\n${script}`], { env: { ...QUIET, ...env }, ...options });

// --- MCP Inspector CLI (first: its snippet makes the namespace the others use) ---
await check(
  'Inspector CLI (--transport http): tools/call on the create endpoint, tools/list and tools/call in code and tool mode; a bad key shows the key error',
  async () => {
    const home = freshHome();
    const result = await shell(snippet('inspector'), { HOME: home, MCPWORKS_API_KEY: KEY }, { timeoutMs: 120_000 });
    expect(result.status === 0, `the Inspector commands failed:\n${result.output.slice(-3000)}`);
    const out = result.stdout;
    expect(/"name": "execute"/.test(out), 'code mode lists execute');
    expect(/"name": "utils__hello"/.test(out), 'tool mode lists utils__hello');
    expect(/42/.test(out), 'execute answered 42');
    expect(/Hello, Ada!/.test(out), 'utils__hello answered');
    const bad = await shell(snippet('inspector'), { HOME: freshHome(), MCPWORKS_API_KEY: BAD_KEY }, { timeoutMs: 60_000 });
    expect(bad.status !== 0 && KEY_ERROR.test(bad.output), `a bad key should show the key error:\n${bad.output.slice(-2000)}`);
  },
);

// --- Claude Code ---
const claudeList = async (home, cwd, key, extraEnv = {}) => {
  const result = await run(CLAUDE, ['mcp', 'list'], { cwd, env: { ...QUIET, HOME: home, MCPWORKS_API_KEY: key, ...extraEnv } });
  return result.output;
};
function connectedServers(output) {
  return [...output.matchAll(/^([\w-]+): .*✔ Connected/gm)].map((m) => m[1]).sort();
}

// The project's .mcp.json, with the approval a person gives at the first `claude` in the folder:
// the trust prompt (recorded in ~/.claude.json) and the servers enabled in .claude/settings.local.json.
function claudeProject(home, mcpJson) {
  const project = path.join(WORK, `project-${homes}`);
  fs.mkdirSync(path.join(project, '.claude'), { recursive: true });
  fs.writeFileSync(path.join(project, '.mcp.json'), mcpJson);
  fs.writeFileSync(path.join(project, '.claude/settings.local.json'), snippet('claude-approval'));
  fs.writeFileSync(path.join(home, '.claude.json'), JSON.stringify({ projects: { [project]: { hasTrustDialogAccepted: true } } }));
  return project;
}

await check(
  'Claude Code: .mcp.json (create, run, run in tool mode with ${MCPWORKS_ENV_B64:-} unset), claude mcp list shows all connected, also with the header unexpanded',
  async () => {
    const servers = { ...JSON.parse(snippet('claude-mcp-json')).mcpServers, ...JSON.parse(`{${snippet('claude-env-header')}}`) };
    expect(Object.keys(servers).length === 3, `three servers expected in the README snippets, got ${Object.keys(servers)}`);
    const home = freshHome();
    const project = claudeProject(home, JSON.stringify({ mcpServers: servers }, null, 2));
    const output = await claudeList(home, project, KEY);
    expect(connectedServers(output).join(',') === Object.keys(servers).sort().join(','), `not all connected:\n${output}`);
    // The same with the env variable set, as the README says to export it.
    const env = Buffer.from(JSON.stringify({ APP_TOKEN: 'check-token-value' })).toString('base64');
    const withEnv = await claudeList(home, project, KEY, { MCPWORKS_ENV_B64: env });
    expect(connectedServers(withEnv).length === 3, `not all connected with MCPWORKS_ENV_B64 set:\n${withEnv}`);
    const bad = await claudeList(home, project, BAD_KEY);
    expect(connectedServers(bad).length === 0 && KEY_ERROR.test(bad), `a bad key should show the key error:\n${bad}`);
    // Without the :- default, an unset variable is sent as the text ${MCPWORKS_ENV_B64}: the server
    // still connects (calls then say what is wrong with the header).
    fs.writeFileSync(
      path.join(project, '.mcp.json'),
      fs.readFileSync(path.join(project, '.mcp.json'), 'utf8').replace('${MCPWORKS_ENV_B64:-}', '${MCPWORKS_ENV_B64}'),
    );
    const literal = await claudeList(home, project, KEY);
    expect(connectedServers(literal).length === 3, `not all connected with an unexpanded env header:\n${literal}`);
  },
);

await check('Claude Code: claude mcp add --scope user for both servers, claude mcp list shows them connected', async () => {
  const home = freshHome();
  const added = await shell(snippet('claude-mcp-add'), { HOME: home, MCPWORKS_API_KEY: KEY });
  expect(added.status === 0, `claude mcp add failed:\n${added.output}`);
  const config = fs.readFileSync(path.join(home, '.claude.json'), 'utf8');
  expect(!config.includes(KEY), 'the key itself must not be written to ~/.claude.json');
  const output = await claudeList(home, home, KEY);
  expect(connectedServers(output).join(',') === 'myns-create,myns-run', `not both connected:\n${output}`);
  const bad = await claudeList(home, home, BAD_KEY);
  expect(KEY_ERROR.test(bad), `a bad key should show the key error:\n${bad}`);
});

// --- mcp-remote (Claude Desktop, Cursor) over stdio ---
/** Starts the README's mcp-remote entry as those apps do, and speaks MCP to it over stdio. */
function mcpRemote(entry, key, home) {
  expect(entry.command === 'npx' && entry.args[0] === '-y' && entry.args[1] === 'mcp-remote', 'the entry runs npx -y mcp-remote');
  const env = Object.fromEntries(Object.entries(entry.env ?? {}).map(([k, v]) => [k, v.replace('mcpw_…', key)]));
  const child = spawn(process.execPath, [MCP_REMOTE, ...entry.args.slice(2)], {
    cwd: WORK,
    env: { PATH: process.env.PATH, HOME: home, MCP_REMOTE_CONFIG_DIR: path.join(home, '.mcp-auth'), ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stderr = '';
  let buffered = '';
  const waiting = new Map();
  child.stderr.on('data', (d) => (stderr += d));
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
  const exited = new Promise((resolve) => child.on('close', resolve));
  let nextId = 1;
  return {
    request(method, params, timeoutMs = 30_000) {
      const id = nextId++;
      child.stdin.write(`${JSON.stringify({ jsonrpc: '2.0', id, method, params })}\n`);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`no answer to ${method} in ${timeoutMs} ms; mcp-remote said:\n${stderr.slice(-2000)}`)),
          timeoutMs,
        );
        waiting.set(id, (message) => (clearTimeout(timer), resolve(message)));
        exited.then(() => (clearTimeout(timer), reject(new Error(`mcp-remote ended before answering ${method}:\n${stderr.slice(-3000)}`))));
      });
    },
    notify(method) {
      child.stdin.write(`${JSON.stringify({ jsonrpc: '2.0', method })}\n`);
    },
    stderr: () => stderr,
    exited,
    stop: () => child.kill('SIGKILL'),
  };
}
const INIT = { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'claude-desktop-like', version: '1' } };

await check(
  'mcp-remote (Claude Desktop / Cursor entry) over stdio: initialize, tools/list, execute; a bad key starts the browser sign-in',
  async () => {
    const entry = Object.values(JSON.parse(snippet('mcp-remote-json')).mcpServers)[0];
    const remote = mcpRemote(entry, KEY, freshHome());
    try {
      const init = await remote.request('initialize', INIT);
      expect(init.result?.serverInfo?.name?.startsWith('mcpworks-run'), `initialize: ${JSON.stringify(init)}`);
      remote.notify('notifications/initialized');
      const list = await remote.request('tools/list', {});
      expect(
        list.result?.tools?.some((t) => t.name === 'execute'),
        `tools/list: ${JSON.stringify(list).slice(0, 300)}`,
      );
      const call = await remote.request('tools/call', { name: 'execute', arguments: { code: 'result = 6 * 7' } });
      expect(!call.result?.isError && /42/.test(JSON.stringify(call.result?.content)), `execute: ${JSON.stringify(call).slice(0, 500)}`);
    } finally {
      remote.stop();
    }
    const bad = mcpRemote(entry, BAD_KEY, freshHome());
    try {
      bad.request('initialize', INIT, 30_000).catch(() => undefined);
      await Promise.race([bad.exited, new Promise((resolve) => setTimeout(resolve, 30_000))]);
      const said = bad.stderr();
      // A refused key: mcp-remote signs in through the browser instead (the server's own authorization server).
      expect(
        /Please authorize this client by visiting:\s*\n\S+\/oauth\/authorize\?/.test(said),
        `mcp-remote should offer the browser sign-in:\n${said.slice(-3000)}`,
      );
      expect(!/email must be a valid address/.test(said), 'an account-registration error reached the user');
    } finally {
      bad.stop();
    }
  },
);

// --- VS Code and Codex: their request shapes replayed (neither client is installed here) ---
/** What those clients send: initialize, initialized, tools/list, with the headers their config yields. */
async function replay(url, headers) {
  const post = (message, session) =>
    fetch(url, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        accept: 'application/json, text/event-stream',
        'mcp-protocol-version': '2025-06-18',
        ...headers,
        ...(session ? { 'mcp-session-id': session } : {}),
      },
      body: JSON.stringify(message),
    });
  const parse = async (response) => {
    const text = await response.text();
    return JSON.parse(text.includes('data:') ? text.split('data:').pop().trim() : text);
  };
  const init = await post({ jsonrpc: '2.0', id: 1, method: 'initialize', params: INIT });
  const initText = await init.text();
  expect(init.status === 200, `initialize: ${init.status} ${initText}`);
  const session = init.headers.get('mcp-session-id');
  await (await post({ jsonrpc: '2.0', method: 'notifications/initialized' }, session)).text();
  const list = await parse(await post({ jsonrpc: '2.0', id: 2, method: 'tools/list' }, session));
  await fetch(url, { method: 'DELETE', headers: { ...headers, 'mcp-session-id': session } });
  return list.result.tools.map((t) => t.name);
}

await check('VS Code .vscode/mcp.json (servers, type http, ${input:…} and ${env:…}) replayed', async () => {
  const config = JSON.parse(snippet('vscode-json'));
  expect(config.servers && !config.mcpServers, 'VS Code reads "servers"');
  const expand = (value) =>
    value.replace(/\$\{input:[^}]+\}/g, KEY).replace(/\$\{env:([A-Z0-9_]+)\}/g, (_, name) => (name === 'MCPWORKS_API_KEY' ? KEY : ''));
  for (const [name, server] of Object.entries(config.servers)) {
    expect(server.type === 'http', `${name}: type http`);
    const headers = Object.fromEntries(Object.entries(server.headers).map(([k, v]) => [k, expand(v)]));
    const tools = await replay(server.url, headers);
    expect(tools.length > 0, `${name}: no tools`);
  }
});

await check('Codex CLI (codex mcp add --bearer-token-env-var, env_http_headers) replayed', async () => {
  const add = snippet('codex-add');
  const url = /--url (\S+)/.exec(add)?.[1];
  const tokenVar = /--bearer-token-env-var (\S+)/.exec(add)?.[1];
  expect(url && tokenVar === 'MCPWORKS_API_KEY', `codex mcp add: ${add}`);
  expect((await replay(url, { authorization: `Bearer ${KEY}` })).includes('execute'), 'code mode lists execute');
  const toml = snippet('codex-toml');
  const tomlUrl = /^url = "([^"]+)"/m.exec(toml)?.[1];
  const headerVar = /env_http_headers = \{ "X-MCPWorks-Env" = "([A-Z0-9_]+)" \}/.exec(toml)?.[1];
  expect(tomlUrl && headerVar === 'MCPWORKS_ENV_B64' && /bearer_token_env_var = "MCPWORKS_API_KEY"/.test(toml), `config.toml: ${toml}`);
  const env = Buffer.from(JSON.stringify({ APP_TOKEN: 'x' })).toString('base64');
  expect(
    (await replay(tomlUrl, { authorization: `Bearer ${KEY}`, 'x-mcpworks-env': env })).includes('utils__hello'),
    'tool mode lists utils__hello',
  );
});

console.log(`clients: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
