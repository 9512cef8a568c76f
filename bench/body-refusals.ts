/**
 * What one refused upload costs the server (bench/abuse's bodies attack, per request): loops of
 * 400 MB POSTs to an MCP endpoint with a valid key, for S seconds, against `mcpworks serve` (this
 * tree's dist/) in a process of its own, from 127.0.0.2; then, per request, what the server process
 * read (rchar in /proc/PID/io), its CPU (utime + stime) and its main thread's time on a CPU
 * (/proc/PID/task/PID/schedstat), with each outcome counted. Per-request figures move less with a
 * shared machine's load than latencies do: compare two trees by running it in each, alternating.
 *
 *   npx tsx bench/body-refusals.ts [--seconds S] [--mix AACC]
 *
 * --mix: one loop per letter, A announcing its length (Content-Length), C chunked.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { callOk, connect, createAccount } from '../src/test-support/harness.js';

const { values } = parseArgs({ options: { seconds: { type: 'string', default: '8' }, mix: { type: 'string', default: 'AACC' } } });
const seconds = Number(values.seconds);
if (!Number.isFinite(seconds) || seconds <= 0) throw new Error('--seconds must be a positive number');
if (!/^[AC]+$/.test(values.mix!)) throw new Error('--mix is letters A (announced) and C (chunked)');
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const MB = 1024 * 1024;

const dataDir = mkdtempSync(path.join(tmpdir(), 'mcpworks-body-refusals-'));
const port = 20_000 + Math.floor(Math.random() * 20_000);
const server = spawn(
  process.execPath,
  [path.join(root, 'dist', 'cli', 'main.js'), 'serve', '--port', String(port), '--data-dir', dataDir],
  {
    stdio: ['ignore', 'ignore', 'inherit'],
    env: { ...process.env, LOG_LEVEL: 'error' },
    detached: true,
  },
);
const pid = server.pid!;
const url = `http://127.0.0.1:${port}`;
const deadlineUp = Date.now() + 120_000;
while (
  !(await fetch(`${url}/healthz`).then(
    (response) => response.ok,
    () => false,
  ))
) {
  if (Date.now() > deadlineUp || server.exitCode !== null) throw new Error('the server did not start');
  await new Promise((resolve) => setTimeout(resolve, 200));
}

const readBytes = () => Number(/^rchar: (\d+)$/m.exec(readFileSync(`/proc/${pid}/io`, 'utf8'))![1]);
const cpuMs = () => {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10;
};
const mainThreadMs = () => Number(readFileSync(`/proc/${pid}/task/${pid}/schedstat`, 'utf8').split(' ')[0]) / 1e6;

const account = await createAccount(url);
const create = await connect(`${url}/mcp/create/refusals`, account.key);
await callOk(create, 'make_namespace', { name: 'refusals' });
await create.close();

const piece = Buffer.alloc(MB, 0x20);
/** One 400 MB POST, sent as fast as the socket takes it until an answer or a close: its outcome. */
const post = (announced: boolean) =>
  new Promise<string>((resolve) => {
    const headers: Record<string, string | number> = {
      authorization: `Bearer ${account.key}`,
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
    };
    if (announced) headers['content-length'] = 400 * MB;
    const req = request({
      host: '127.0.0.1',
      port,
      localAddress: '127.0.0.2',
      agent: false,
      method: 'POST',
      path: '/mcp/run/refusals',
      headers,
    });
    let sent = 0;
    let status = 0;
    let settled = false;
    const finish = (how: string) => {
      if (settled) return;
      settled = true;
      resolve(`${announced ? 'announced' : 'chunked'} ${status || how}`);
    };
    req.on('response', (res) => {
      status = res.statusCode ?? 0;
      res.resume();
      res.on('end', () => (req.destroy(), finish('end')));
    });
    req.on('error', (error: NodeJS.ErrnoException) => finish(error.code ?? 'error'));
    req.on('close', () => finish('closed'));
    const pump = () => {
      while (sent < 400 * MB && status === 0 && !req.destroyed) {
        sent += piece.length;
        if (!req.write(piece)) return void req.once('drain', pump);
      }
      if (sent >= 400 * MB && !req.destroyed) req.end();
    };
    pump();
  });

const before = { read: readBytes(), cpu: cpuMs(), main: mainThreadMs() };
const outcomes = new Map<string, number>();
const deadline = Date.now() + seconds * 1000;
await Promise.all(
  [...values.mix!].map(async (letter) => {
    while (Date.now() < deadline) {
      const outcome = await post(letter === 'A');
      outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
    }
  }),
);
const requests = [...outcomes.values()].reduce((sum, count) => sum + count, 0);
console.log(
  `${requests} requests in ${seconds} s (${[...outcomes].map(([outcome, count]) => `${count}× ${outcome}`).join(', ')}); per request: ` +
    `server read ${((readBytes() - before.read) / MB / requests).toFixed(3)} MB, server CPU ${((cpuMs() - before.cpu) / requests).toFixed(2)} ms, ` +
    `main thread on a CPU ${((mainThreadMs() - before.main) / requests).toFixed(2)} ms; load average ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}`,
);
server.kill('SIGTERM');
await new Promise((resolve) => server.once('exit', resolve));
rmSync(dataDir, { recursive: true, force: true });
