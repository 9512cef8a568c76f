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
import { imports, read, testFiles } from './test-graph.mjs';

const DATABASE = 'src/store/database.ts';
const MARKER = /^\/\/ test-database: (postgres|embedded), \S/m;
const ANY_MARKER = /^\/\/ test-database:/m;

const tests = testFiles();
const postgres = [];
const problems = [];
for (const file of tests) {
  const text = read(file);
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
