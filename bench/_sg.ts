import { readdirSync, readFileSync } from 'node:fs';
import { SchemaGuard } from '../src/run/schema-guard.js';
function times() {
  const m = new Map<number, number>();
  for (const e of readdirSync('/proc/self/task')) {
    try { m.set(Number(e), Number(readFileSync(`/proc/self/task/${e}/schedstat`, 'utf8').split(' ')[0])); } catch {}
  }
  return m;
}
const g = new SchemaGuard();
const schema = { type: 'object', properties: { name: { type: 'string' } }, required: ['name'] };
for (let i = 0; i < 2000; i++) await g.check(schema, { name: 'bench' }, 'acct', 'the input');
const n = 2000;
const b = times(); const c0 = process.cpuUsage(); const t0 = performance.now();
for (let i = 0; i < n; i++) await g.check(schema, { name: 'bench' }, 'acct', 'the input');
const el = performance.now() - t0; const c = process.cpuUsage(c0); const a = times();
console.log('wall per check ms', (el / n).toFixed(3), 'process cpu per check ms', ((c.user + c.system) / 1000 / n).toFixed(3));
for (const [tid, ns] of a) { const d = (ns - (b.get(tid) ?? 0)) / 1e6 / n; if (d > 0.005) console.log(tid === process.pid ? 'MAIN' : tid, d.toFixed(3)); }
await g.close();
