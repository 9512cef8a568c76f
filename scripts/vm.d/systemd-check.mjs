#!/usr/bin/env node
// The checks of scripts/vm-test.sh's `systemd` step, inside the Debian 12 VM, against the nodes
// scripts/vm.d/systemd.sh started as mcpworks@PORT units (deploy/systemd/) on Debian's PostgreSQL:
//   node scripts/vm.d/systemd-check.mjs PORT_A PORT_B
// Over HTTP with the official MCP SDK clients (2026 era on A, 2025 era on B), and from the host side
// through systemctl, /proc, /sys/fs/cgroup and journalctl. One `PASS name` / `FAIL name: why` line
// per check; exits 1 if any failed. Never prints a secret (this output goes to the journal too).
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { Client as ClientV2, StreamableHTTPClientTransport as TransportV2 } from '@modelcontextprotocol/client';
import { Client as ClientV1 } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport as TransportV1 } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

const ports = process.argv.slice(2).map(Number);
if (ports.length !== 2 || ports.some((p) => !Number.isInteger(p))) {
  console.error('usage: systemd-check.mjs PORT_A PORT_B');
  process.exit(2);
}
const [A, B] = ports;
const url = (port) => `http://127.0.0.1:${port}`;
const unit = (port) => `mcpworks@${port}.service`;
/** Under TCG (software emulation) a start or a cold sandbox takes tens of seconds: generous bounds, awaited by polling. */
const START_S = 300;
const CALL_TIMEOUT_MS = 240_000;
const HELLO = 'def main(input_data):\n    return {"greeting": "hello " + input_data.get("name", "nobody")}\n';
const NAP = 'import subprocess\n\ndef main(input_data):\n    subprocess.run(["/bin/sleep", input_data["marker"]])\n    return "woke"\n';

let failures = 0;
function report(name, ok, why = '') {
  if (ok) console.log(`PASS ${name}`);
  else {
    failures++;
    console.log(`FAIL ${name}${why ? `: ${why}` : ''}`);
  }
  return ok;
}
async function check(name, fn) {
  const t0 = Date.now();
  try {
    const why = await fn();
    return report(`${name} (${((Date.now() - t0) / 1000).toFixed(1)} s)`, !why, why || '');
  } catch (error) {
    return report(`${name} (${((Date.now() - t0) / 1000).toFixed(1)} s)`, false, error instanceof Error ? error.message : String(error));
  }
}
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
async function until(what, seconds, probe) {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${seconds} s`);
    await sleep(500);
  }
}

// --- systemd, /proc and cgroup v2, read from the host side ---
function show(port, ...props) {
  const out = execFileSync('systemctl', ['show', unit(port), ...props.map((p) => `-p${p}`)], { encoding: 'utf8' });
  return Object.fromEntries(
    out
      .trim()
      .split('\n')
      .map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]),
  );
}
const read = (file) => {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return null;
  }
};
const cgroupOf = (pid) => /^0::(.*)$/m.exec(read(`/proc/${pid}/cgroup`) ?? '')?.[1] ?? null;
const argvOf = (pid) => (read(`/proc/${pid}/cmdline`) ?? '').split('\0').filter(Boolean);
const parentOf = (pid) => Number(/^PPid:\s+(\d+)/m.exec(read(`/proc/${pid}/status`) ?? '')?.[1] ?? 0);
const uidOf = (pid) => Number(/^Uid:\s+(\d+)/m.exec(read(`/proc/${pid}/status`) ?? '')?.[1] ?? -1);
const allPids = () =>
  readdirSync('/proc')
    .filter((n) => /^\d+$/.test(n))
    .map(Number);
/** Every group under `dir` (itself included) with the pids it holds. */
function groupsUnder(dir) {
  const found = [];
  const walk = (d) => {
    const procs = (read(join(d, 'cgroup.procs')) ?? '').split('\n').filter(Boolean).map(Number);
    found.push({ dir: d, procs });
    for (const entry of readdirSync(d, { withFileTypes: true })) if (entry.isDirectory()) walk(join(d, entry.name));
  };
  walk(dir);
  return found;
}
const unitGroup = (port) => join('/sys/fs/cgroup', show(port, 'ControlGroup').ControlGroup);
/** A zygote (runtime/zygote.py) or one of its forked children: they keep its argv. */
const isZygote = (pid) => {
  const argv = argvOf(pid);
  return argv[0] === '/usr/bin/python3' && argv.includes('/sandbox/zygote.py');
};

/** The delegation rules: the unit's group holds no process, hands memory and pids down, the server is in its leaf, every other process in a sandbox group. */
function layoutProblems(port) {
  const group = unitGroup(port);
  const main = Number(show(port, 'MainPID').MainPID);
  const problems = [];
  if ((read(join(group, 'cgroup.procs')) ?? 'unreadable').trim() !== '') problems.push("the unit's own group holds processes");
  const handed = (read(join(group, 'cgroup.subtree_control')) ?? '').trim().split(/\s+/);
  for (const c of ['memory', 'pids']) if (!handed.includes(c)) problems.push(`${c} not handed down (subtree_control: ${handed.join(' ')})`);
  if (join('/sys/fs/cgroup', cgroupOf(main) ?? '') !== join(group, 'mcpworks-server'))
    problems.push(`MainPID ${main} is in ${cgroupOf(main)}, not the unit's mcpworks-server leaf`);
  for (const { dir, procs } of groupsUnder(group)) {
    const rel = dir.slice(group.length + 1);
    if (procs.length && !(rel === 'mcpworks-server' || /^mcpworks-sandbox(-instance-[0-9a-f]{16})?(\/|$)/.test(rel)))
      problems.push(`processes in ${rel || '(the unit group)'}`);
  }
  return problems.join('; ');
}

// --- HTTP and MCP ---
function parse(text) {
  try {
    return text ? JSON.parse(text) : null;
  } catch {
    return text;
  }
}
async function getJson(u, headers = {}) {
  const response = await fetch(u, { headers });
  return { status: response.status, body: parse(await response.text()) };
}
/** A POST, retried (like the MCP calls below) while the server answers 503 `unavailable`. */
function postJson(u, body, headers = {}) {
  return retrying(`POST ${u}`, async () => {
    const answer = await postOnce(u, body, headers);
    if (answer.status === 503 && answer.body?.error_type === 'unavailable') throw new Error(JSON.stringify(answer.body));
    return answer;
  });
}
async function postOnce(u, body, headers = {}) {
  const response = await fetch(u, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
  return { status: response.status, body: parse(await response.text()) };
}
const healthy = async (port) => {
  try {
    const h = await getJson(`${url(port)}/healthz`);
    return h.status === 200 && h.body.status === 'ok' && h.body.database === 'postgres' && h.body;
  } catch {
    return false; // not listening yet
  }
};
/**
 * `unavailable` (503, or a tool error) with `retry_after`: the server's answer while it finds the
 * database unreachable, which says to retry. Under TCG a statement or a fresh connection can take
 * longer than the server's 2 s probe allows, so a client that honours it is what this step needs;
 * each retry is counted and printed.
 */
let retries = 0;
async function retrying(what, fn) {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      // (The v2 SDK's version probe reports the status only.)
      if (attempt >= 6 || !/"(error_)?type":"unavailable"|HTTP 503\b/.test(message)) throw error;
      retries++;
      console.log(`  ${what}: 'unavailable' (database probe), retry ${attempt} in 5 s`);
      await sleep(5000);
    }
  }
}
/** era 'v2': the v2 SDK pinned to the 2026-07-28 protocol (stateless); 'v1': the v1 SDK's 2025 session. */
function mcp(u, key, era) {
  return retrying(`connect ${u}`, () => connectMcp(u, key, era));
}
async function connectMcp(u, key, era) {
  const requestInit = { headers: { authorization: `Bearer ${key}` } };
  const sdk =
    era === 'v1'
      ? new ClientV1({ name: 'vm-systemd-v1', version: '1.0.0' })
      : new ClientV2({ name: 'vm-systemd-v2', version: '1.0.0' }, { versionNegotiation: { mode: { pin: '2026-07-28' } } });
  await sdk.connect(era === 'v1' ? new TransportV1(new URL(u), { requestInit }) : new TransportV2(new URL(u), { requestInit }));
  const options = { timeout: CALL_TIMEOUT_MS };
  return {
    call: (name, args = {}) => retrying(`${name} on ${u}`, () => callOnce(name, args)),
    close: () => sdk.close(),
  };
  async function callOnce(name, args) {
    const params = { name, arguments: args };
    const result = era === 'v1' ? await sdk.callTool(params, undefined, options) : await sdk.callTool(params, options);
    const text = result.content.find((c) => c.type === 'text')?.text ?? '';
    if (result.isError) throw new Error(`${name}: ${text.slice(0, 300)}`);
    return JSON.parse(text);
  }
}

// --- the checks ---
const secrets = {
  password: `vm ${randomBytes(9).toString('hex')}`,
  token: null,
  key: null,
  wrongKey: `mcpw_${randomBytes(32).toString('hex')}`,
};
const email = `vm-${randomBytes(4).toString('hex')}@example.com`;
const ns = 'vmsys';
const clients = [];

await check(`both units active and /healthz ok on PostgreSQL (${unit(A)}, ${unit(B)})`, async () => {
  for (const port of ports) await until(`${unit(port)} healthy`, START_S, () => healthy(port));
  const states = ports.map((p) => show(p, 'ActiveState', 'SubState'));
  return states.every((s) => s.ActiveState === 'active' && s.SubState === 'running') ? '' : JSON.stringify(states);
});
await check("register on A, sign in on B, make a key on A with B's token (one database)", async () => {
  const registered = await postJson(`${url(A)}/api/register`, { email, password: secrets.password });
  if (registered.status !== 201) return `register: ${registered.status} ${JSON.stringify(registered.body)}`;
  const login = await postJson(`${url(B)}/api/login`, { email, password: secrets.password });
  if (login.status !== 200) return `login: ${login.status}`;
  secrets.token = login.body.token;
  const key = await postJson(`${url(A)}/api/keys`, { name: 'vm' }, { authorization: `Bearer ${secrets.token}` });
  if (key.status !== 201 || !/^mcpw_[0-9a-f]{64}$/.test(key.body.key)) return `key: ${key.status}`;
  secrets.key = key.body.key;
  return '';
});
await check('make a namespace and two Python functions on A over /mcp/create (2026 era)', async () => {
  const create = await mcp(`${url(A)}/mcp/create/${ns}`, secrets.key, 'v2');
  clients.push(create);
  await create.call('make_namespace', { name: ns });
  await create.call('make_service', { name: 'svc' });
  await create.call('make_function', { service: 'svc', name: 'hello', language: 'python', code: HELLO });
  await create.call('make_function', { service: 'svc', name: 'nap', language: 'python', code: NAP });
  // A key-shaped wrong key on the other node: refused, and (checked at the end) never logged.
  const wrong = await postJson(
    `${url(B)}/mcp/run/${ns}`,
    { jsonrpc: '2.0', id: 1, method: 'tools/list' },
    { authorization: `Bearer ${secrets.wrongKey}`, accept: 'application/json, text/event-stream' },
  );
  return wrong.status === 401 ? '' : `a wrong key got ${wrong.status}`;
});
const runs = {};
for (const [port, era] of [
  [A, 'v2'],
  [B, 'v1'],
]) {
  await check(`run a Python function through /mcp/run on ${unit(port)} (${era === 'v2' ? '2026' : '2025'} era)`, async () => {
    runs[port] = await mcp(`${url(port)}/mcp/run/${ns}?mode=tools`, secrets.key, era);
    clients.push(runs[port]);
    const answer = await runs[port].call('svc__hello', { name: String(port) });
    return answer?.greeting === `hello ${port}` ? '' : JSON.stringify(answer);
  });
}

/**
 * A run of `nap` on `port` whose `/bin/sleep` is found from the host side while it sleeps: its
 * cgroup and whether a zygote forked it. Retried while the namespace's zygote is still starting
 * (its first runs take the ordinary path meanwhile).
 */
async function zygoteRun(port) {
  if (!runs[port]) return 'no run client (its first run failed above)';
  const group = unitGroup(port);
  const zygotesOfUnit = () =>
    groupsUnder(group)
      .flatMap((g) => g.procs)
      .filter(isZygote);
  // Ready: a zygote with a spare child forked (a child of a zygote keeps its argv).
  await until(`a zygote with a spare child in ${unit(port)}`, START_S, () => zygotesOfUnit().some((pid) => isZygote(parentOf(pid))));
  let last = '';
  for (let attempt = 1; attempt <= 3; attempt++) {
    const marker = `1${attempt}.${port}`;
    const answer = runs[port].call('svc__nap', { marker });
    const sleeper = await until(`the run's /bin/sleep ${marker}`, START_S, () =>
      allPids().find((pid) => {
        const argv = argvOf(pid);
        return argv[0] === '/bin/sleep' && argv[1] === marker;
      }),
    );
    const chain = [];
    for (let pid = parentOf(sleeper); pid > 1; pid = parentOf(pid)) chain.push(pid);
    const cgroup = cgroupOf(sleeper);
    const viaZygote = chain.some(isZygote);
    const runDir = join('/sys/fs/cgroup', cgroup ?? '');
    const limits = { memory: read(join(runDir, 'memory.max'))?.trim(), pids: read(join(runDir, 'pids.max'))?.trim() };
    const result = await answer;
    if (result !== 'woke') return `nap answered ${JSON.stringify(result)}`;
    last = `sleep in ${cgroup}, ${viaZygote ? 'forked by a zygote' : 'not under a zygote'}, memory.max ${limits.memory}, pids.max ${limits.pids}`;
    if (!viaZygote) continue;
    const rel = runDir.slice(group.length + 1);
    const problems = [];
    if (!runDir.startsWith(`${group}/`)) problems.push('not under the unit');
    if (!/^mcpworks-sandbox(-instance-[0-9a-f]{16})?\/(.+\/)?run-[^/]+$/.test(rel)) problems.push(`not a run group of the sandbox: ${rel}`);
    if (!/^\d+$/.test(limits.memory ?? '') || !/^\d+$/.test(limits.pids ?? '')) problems.push('no memory or pids limit');
    if (problems.length) return `${problems.join('; ')} (${last})`;
    console.log(`  ${unit(port)}: run ${attempt}: ${last}`);
    return '';
  }
  return `no run of three went through a zygote (${last})`;
}
for (const port of ports) {
  await check(`${unit(port)}: a Python run is a zygote's child, in a run group with memory and pids limits under the unit`, () =>
    zygoteRun(port),
  );
  await check(
    `${unit(port)}: cgroup layout follows the delegation rules (empty unit group, server in mcpworks-server, sandboxes beside it)`,
    () => layoutProblems(port),
  );
}

await check(`systemctl kill -s KILL ${unit(B)}: systemd restarts it and it serves again with the same key`, async () => {
  const before = show(B, 'MainPID', 'NRestarts');
  execFileSync('systemctl', ['kill', '-s', 'KILL', unit(B)]);
  const after = await until('the restart', START_S, () => {
    const now = show(B, 'MainPID', 'NRestarts', 'ActiveState');
    return now.ActiveState === 'active' && now.MainPID !== '0' && now.MainPID !== before.MainPID && now;
  });
  if (Number(after.NRestarts) !== Number(before.NRestarts) + 1) return `NRestarts ${before.NRestarts} -> ${after.NRestarts}`;
  await until(`${unit(B)} healthy again`, START_S, () => healthy(B));
  const again = await mcp(`${url(B)}/mcp/run/${ns}?mode=tools`, secrets.key, 'v2');
  clients.push(again);
  const answer = await again.call('svc__hello', { name: 'again' });
  console.log(`  MainPID ${before.MainPID} -> ${after.MainPID}, NRestarts ${before.NRestarts} -> ${after.NRestarts}`);
  return answer?.greeting === 'hello again' ? '' : JSON.stringify(answer);
});
await check(`${unit(B)} after the restart: cgroup layout follows the delegation rules`, () => layoutProblems(B));
await check(`${unit(A)} kept serving meanwhile`, async () => {
  const answer = await runs[A].call('svc__hello', { name: 'still' });
  return answer?.greeting === 'hello still' ? '' : JSON.stringify(answer);
});

for (const c of clients) await c.close().catch(() => {});
await check(`systemctl stop: both exit cleanly on SIGTERM, their groups and sandbox uids are gone`, async () => {
  const groups = ports.map(unitGroup);
  execFileSync('systemctl', ['stop', unit(A), unit(B)]);
  const problems = [];
  for (const port of ports) {
    const s = show(port, 'Result', 'ExecMainCode', 'ExecMainStatus', 'ActiveState', 'ControlGroup');
    if (s.Result !== 'success' || s.ActiveState !== 'inactive') problems.push(`${unit(port)}: ${JSON.stringify(s)}`);
  }
  const left = groups.filter((dir) => existsSync(dir));
  if (left.length) problems.push(`groups left: ${left.join(' ')}`);
  const sandboxed = allPids().filter((pid) => uidOf(pid) >= 2_000_000_000 && uidOf(pid) < 2_000_043_690);
  if (sandboxed.length) problems.push(`sandbox processes left: ${sandboxed.join(' ')}`);
  return problems.join('; ');
});
await check(
  'the journal (start, runs, kill and stop of the nodes) holds no secret (API key, a wrong key, login token, password, MCPWORKS_SECRET_KEY, database password)',
  () => {
    const env = readFileSync('/etc/mcpworks/cluster.env', 'utf8');
    const secretKey = /^MCPWORKS_SECRET_KEY=(.+)$/m.exec(env)?.[1];
    const dbPassword = /^DATABASE_URL=postgres:\/\/[^:]+:([^@]+)@/m.exec(env)?.[1];
    execFileSync('journalctl', ['--sync']);
    const journal = execFileSync('journalctl', ['-b', '--no-pager', '-o', 'cat'], { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024 });
    const nodeLines = execFileSync('journalctl', ['-b', '--no-pager', '-o', 'cat', '-u', unit(A), '-u', unit(B)], {
      encoding: 'utf8',
      maxBuffer: 64 * 1024 * 1024,
    })
      .split('\n')
      .filter((line) => line.startsWith('{')).length;
    const found = Object.entries({ ...secrets, secretKey, dbPassword, keyHex: secrets.key?.slice(5) })
      .filter(([name, value]) => (value ? journal.includes(value) : name))
      .map(([name]) => name);
    if (found.length) return `found (or unknown): ${found.join(', ')}`;
    if (journal.includes('Python zygotes are off')) return 'a node logged that its zygotes are off';
    // How often a node found PostgreSQL unreachable (its probe allows 2 s; under TCG that is short).
    const unreachable = journal.split('\n').filter((line) => line.includes('"msg":"database unreachable')).length;
    console.log(`  ${journal.split('\n').length} journal lines searched, ${nodeLines} of them JSON log lines of the two units`);
    console.log(`  'database unreachable' logged ${unreachable} times by the nodes`);
    return nodeLines > 0 ? '' : 'no log line of the units in the journal (nothing was searched)';
  },
);
console.log(`systemd checks: ${failures ? `${failures} failed` : 'all passed'}; ${retries} retries after 'unavailable'`);
process.exit(failures ? 1 : 0);
