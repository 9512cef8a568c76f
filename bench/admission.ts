/**
 * The database's CPU per admission (issue 18: server CPU per metered call): migration 38's
 * mcpworks_admit_call beside the one it replaced (migration 31's), in one embedded database
 * (PGlite) in this process, alternating; and migration 38's admission of a call whose key came
 * from a node's cache (mcpworks_admit_key_call: the key and the namespace's catalog version checked
 * in the same statement, in place of the key's lookup, a round trip of its own).
 *
 *   bench/admission [--rounds R] [--calls N]   (defaults: 8 rounds of 300 admissions each)
 *
 * Each admission runs as the server's database thread runs a statement (src/store/pglite-worker.ts:
 * a named prepared statement, then bind, execute and sync), followed by the DELETE of its
 * slot (as the record does), so every admission finds the account with no slot held. CPU is this
 * process's (getrusage), nothing else runs in it. Prints the median and the fastest round of each;
 * compare the two within one run.
 */
import { randomUUID } from 'node:crypto';
import { parseArgs } from 'node:util';
import { PGlite, protocol } from '@electric-sql/pglite';
import { MIGRATIONS } from '../src/store/migrations.js';
import { median, printTable } from './lib/measure.js';

const { values } = parseArgs({
  options: { rounds: { type: 'string', default: '8' }, calls: { type: 'string', default: '300' } },
});
const rounds = Number(values.rounds);
const calls = Number(values.calls);
if (!Number.isInteger(rounds) || rounds < 1) throw new Error('--rounds must be a positive integer');
if (!Number.isInteger(calls) || calls < 1) throw new Error('--calls must be a positive integer');

const NEW = 38;
const newest = MIGRATIONS.find((m) => m.version === NEW);
if (!newest) throw new Error(`no migration ${NEW}`);
const db = await PGlite.create();
for (const migration of MIGRATIONS) if (migration.version < NEW) for (const statement of migration.statements) await db.exec(statement);
// Migration 38's functions under other names, so that they and 31's can be called in one database.
for (const statement of newest.statements)
  await db.exec(
    statement
      .replace('FUNCTION mcpworks_admit_call(', 'FUNCTION bench_admit_call_38(')
      .replace('FUNCTION mcpworks_admit_key_call(', 'FUNCTION bench_admit_key_call_38(')
      .replace('FROM mcpworks_admit_call(', 'FROM bench_admit_call_38('),
  );
await db.query(`INSERT INTO accounts (id, email, password_hash, tier) VALUES ('bench', 'bench@example.com', 'x', 'pro')`);
// What a cached key's admission checks (migration 38): the key and the namespace at its catalog version.
await db.query(
  `INSERT INTO api_keys (id, account_id, name, prefix, key_hash, scopes) VALUES ('key', 'bench', 'k', 'mcpw_0000', 'x', '["execute"]')`,
);
await db.query(`INSERT INTO namespaces (id, account_id, name) VALUES ('ns', 'bench', 'bench')`);

const concat = (parts: Uint8Array[]): Uint8Array => Buffer.concat(parts);

const prepared = new Map<string, string>();
async function run(text: string, parameters: Array<string | null>): Promise<void> {
  let name = prepared.get(text);
  if (!name) {
    name = `bench_${prepared.size + 1}`;
    await db.execProtocolStream(concat([protocol.serialize.parse({ name, text }), protocol.serialize.sync()]), { syncToFs: false });
    prepared.set(text, name);
  }
  await db.execProtocolStream(
    concat([protocol.serialize.bind({ statement: name, values: parameters }), protocol.serialize.execute({}), protocol.serialize.sync()]),
    { syncToFs: false },
  );
}

// What a tool-mode call's admission carries (metering-store.ts), limits that never refuse.
const slotRun = JSON.stringify({
  namespace_id: 'ns',
  key_id: 'key',
  mode: 'tools',
  trigger: 'mcp-tools',
  service_name: 'utils',
  function_name: 'hello',
  function_id: 'fn',
  version: 1,
  functions: ['utils.hello@1'],
  language: 'python',
});
async function admitOnce(fn: string): Promise<void> {
  const ticket = randomUUID();
  const now = Date.now();
  const at = (ms: number) => new Date(now + ms).toISOString();
  const limits = ['1000000000', '1000000', '10', at(420_000), 'bench-node', at(302_000), slotRun];
  const answer =
    fn === 'bench_admit_key_call_38'
      ? `SELECT rejected, used, retry_after, cancelled FROM ${fn}($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14::jsonb)`
      : `SELECT rejected, used, retry_after, cancelled FROM ${fn}($1, $2, $3, NULL::text, NULL::timestamptz, $4, $5, $6, $7, $8, $9, $10::jsonb)`;
  const key = fn === 'bench_admit_key_call_38' ? ['key', 'pro', 'ns', '0'] : [];
  await run(answer, [...key, ticket, 'bench', at(0), ...limits]);
  await run('DELETE FROM active_executions WHERE id = $1', [ticket]);
}

const builds = [
  ['migration 31 (before)', 'mcpworks_admit_call'],
  ['migration 38', 'bench_admit_call_38'],
  ['migration 38, a cached key checked', 'bench_admit_key_call_38'],
] as const;
const perRound = new Map<string, number[]>(builds.map(([label]) => [label, []]));
for (let round = 0; round < rounds; round++) {
  for (const [label, fn] of builds) {
    for (let i = 0; i < 50; i++) await admitOnce(fn);
    const before = process.cpuUsage();
    for (let i = 0; i < calls; i++) await admitOnce(fn);
    const cpu = process.cpuUsage(before);
    perRound.get(label)!.push((cpu.user + cpu.system) / 1000 / calls);
  }
}
console.log(`admission: ${rounds} rounds of ${calls} admissions each, alternating; CPU per admission and its slot's DELETE, ms`);
printTable([
  ['function', 'median', 'fastest round'],
  ...builds.map(([label]) => {
    const samples = perRound.get(label)!;
    return [label, median(samples).toFixed(3), Math.min(...samples).toFixed(3)];
  }),
]);
await db.close();
