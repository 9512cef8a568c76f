import { PGlite } from '@electric-sql/pglite';
import { execSync } from 'node:child_process';
import { rmSync } from 'node:fs';
const db = await PGlite.create('/tmp/i11db-fs/pg');
await db.exec("create table if not exists t (x text)");
execSync('fallocate -l 12M /tmp/i11db-fs/filler || dd if=/dev/zero of=/tmp/i11db-fs/filler bs=1M count=12');
console.log(execSync('df -k /tmp/i11db-fs').toString());
try {
  for (let i = 0; i < 100000; i++) {
    await db.query("insert into t select repeat('x', 1000) from generate_series(1,1000)");
  }
} catch (e) { console.log('ERR', e instanceof Error, e?.message, e?.code); }
console.log(execSync('df -k /tmp/i11db-fs').toString());
rmSync('/tmp/i11db-fs/filler');
console.log('freed');
const t = setInterval(()=>console.log('tick'), 1000);
try { const r = await db.query('select count(*) from t'); console.log(r.rows); } catch (e) { console.log('ERR2', e?.message, e?.code); }
try { await db.query("insert into t values ('a')"); console.log('small insert ok'); } catch (e) { console.log('ERR3', e?.message, e?.code); }
clearInterval(t);
await db.close();
console.log('closed');
