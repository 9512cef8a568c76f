#!/usr/bin/env node
// Which test files scripts/test.sh runs again on a real PostgreSQL. Every test file that reaches the
// database (it imports src/store/database.ts, directly or through any chain of relative imports, or
// starts the server's command line)
// must say which run it needs, in a line of its own:
//
//   // test-database: postgres, <why>   (races on parallel connections, admission locks, several
//                                         nodes on one database, migrations, PostgreSQL-only paths)
//   // test-database: embedded, <why>   (its rules do not depend on the database's behaviour)
//
// Prints the postgres files, one a line. Exits 1, naming them, when a file that reaches the database
// has no such line, or when a file that does not reach it has one: a new test cannot silently stay
// out of the PostgreSQL run.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const DATABASE = 'src/store/database.ts';
const MARKER = /^\/\/ test-database: (postgres|embedded), \S/m;
const ANY_MARKER = /^\/\/ test-database:/m;

const tests = walk('src').filter((f) => f.endsWith('.test.ts')).sort();
const memo = new Map();
const postgres = [];
const problems = [];
for (const file of tests) {
  const text = readFileSync(path.join(repo, file), 'utf8');
  const marker = MARKER.exec(text)?.[1];
  // A test that starts the server's own command line (dist/cli/main.js, or through
  // src/test-support/cli-command.ts) reaches it as well.
  const reaches = imports(file).has(DATABASE) || /\bcli\/main\.[jt]s\b|\bcli-command\.js\b/.test(text);
  if (reaches && !marker) problems.push(`${file}: reaches the database but has no "// test-database: postgres|embedded, <why>" line`);
  else if (!reaches && ANY_MARKER.test(text)) problems.push(`${file}: has a test-database line but never reaches ${DATABASE}`);
  else if (marker === 'postgres') postgres.push(file);
}
if (problems.length > 0) {
  for (const p of problems) console.error(`test-databases: ${p}`);
  process.exit(1);
}
for (const file of postgres) console.log(file);

/** Every repository file `file` imports, directly or transitively (relative imports only). */
function imports(file) {
  const known = memo.get(file);
  if (known) return known;
  const found = new Set();
  memo.set(file, found);
  const text = readFileSync(path.join(repo, file), 'utf8');
  // Static imports and re-exports (not `import type`: erased), and dynamic import('…').
  const statics = [...text.matchAll(/\b(?:import|export)\s+(type\s+)?(?:[^'";]*?\bfrom\s*)?['"](\.{1,2}\/[^'"]+)['"]/g)].filter((m) => !m[1]).map((m) => m[2]);
  const dynamics = [...text.matchAll(/\bimport\s*\(\s*['"](\.{1,2}\/[^'"]+)['"]\s*\)/g)].map((m) => m[1]);
  for (const spec of [...statics, ...dynamics]) {
    const target = resolve(path.posix.join(path.posix.dirname(file), spec));
    if (!target) continue;
    found.add(target);
    for (const next of imports(target)) found.add(next);
  }
  return found;
}

/** A relative import as TypeScript resolves it here (`./x.js` names `./x.ts`). */
function resolve(spec) {
  const candidates = [spec, spec.replace(/\.js$/, '.ts'), spec.replace(/\.mjs$/, '.mts'), `${spec}.ts`, `${spec}/index.ts`];
  return candidates.find((c) => /\.[cm]?[jt]s$/.test(c) && existsSync(path.join(repo, c)));
}

function walk(dir) {
  return readdirSync(path.join(repo, dir), { withFileTypes: true }).flatMap((entry) => {
    const child = path.posix.join(dir, entry.name);
    return entry.isDirectory() ? walk(child) : [child];
  });
}
