import { spawn } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { statfsSync } from 'node:fs';
import { callOk, connect, createAccount } from './src/test-support/harness.js';
const mnt = '/tmp/i11db-fatal';
execFileSync('mkdir', ['-p', mnt]);
execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=100m', 'tmpfs', mnt]);
const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'serve', '--port', '18934', '--data-dir', `${mnt}/data`], { env: { ...process.env, MCPWORKS_DISK_RESERVE_MB: '1', LOG_LEVEL: 'warn' }, stdio: ['ignore', 'pipe', 'pipe'] });
let out = '';
child.stdout!.on('data', (c) => (out += c));
child.stderr!.on('data', (c) => (out += c));
const exited = new Promise((r) => child.once('exit', (code) => r(code)));
const url = 'http://127.0.0.1:18934';
for (let i = 0; i < 400; i++) { try { if ((await fetch(`${url}/healthz`)).ok) break; } catch {} await new Promise((r) => setTimeout(r, 500)); }
console.log('started');
const account = await createAccount(url);
const create = await connect(`${url}/mcp/create/fatal`, account.key);
await callOk(create, 'make_namespace', { name: 'fatal' });
await callOk(create, 'make_service', { name: 'm' });
const s = statfsSync(mnt); const free = Number(s.bavail) * Number(s.bsize);
execFileSync('fallocate', ['-l', String(free - 3 * 1024 * 1024), `${mnt}/filler`]);
let i = 0;
const t0 = Date.now();
for (; i < 60; i++) {
  const code = `def main(input_data):\n    return 1\n# ${randomBytes(600_000).toString('base64')}\n`;
  const r = await Promise.race([create.callTool('make_function', { service: 'm', name: `f${i}`, code }).catch((e) => ({ thrown: String(e) })), exited.then(() => ({ exited: true }))]);
  const text = JSON.stringify(r).slice(0, 200);
  if (!text.includes('"version"')) console.log(i, text);
  if ((r as any).exited) break;
}
console.log('exit code', await Promise.race([exited, new Promise((r) => setTimeout(() => r('still running after 60s'), 60_000))]), 'after', Date.now() - t0, 'ms');
console.log(out.split('\n').filter((l) => /fatal|stopping|mcpworks:|stopped/.test(l)).map((l) => l.slice(0, 400)).join('\n'));
if (child.exitCode === null) child.kill('SIGKILL');
execFileSync('umount', ['-l', mnt]);
