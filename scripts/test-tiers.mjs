#!/usr/bin/env node
// The test tiers, by file name and by what a file reaches:
//
//   host     *.host.test.ts: starts real sandboxes itself (bubblewrap, the sandbox helper, npm in a
//            sandbox), so it needs root and bubblewrap.
//   server   a file with a `// test-database:` line (see scripts/test-databases.mjs): it reaches the
//            database, mostly by starting the real server; when it runs code, through real sandboxes.
//   unit     everything else: no root, no server, no database, no sandbox. Seconds in all.
//
// `node scripts/test-tiers.mjs unit|host|server` prints that tier's files, one a line
// (`make test-unit`, `npm run test:unit`); with no argument it prints nothing and only checks. It
// exits 1, naming them, when a file that starts sandboxes itself (see startsSandboxes) is not named
// *.host.test.ts, or a *.host.test.ts file does not: the unit tier cannot silently start sandboxes.
import { existsSync } from 'node:fs';
import path from 'node:path';
import { directImports, imports, read, repo, testFiles } from './test-graph.mjs';

const DATABASE = 'src/store/database.ts';
const HOST_NAME = /\.host\.test\.ts$/;
const SERVER_MARKER = /^\/\/ test-database:/m;
/** Sandbox modules that start processes on the host: bubblewrap, the helper, npm, network set-up. */
const isLauncher = (file) =>
  file.startsWith('src/sandbox/') && !file.endsWith('.test.ts') && /\bfrom\s+['"]node:child_process['"]/.test(read(file));

/**
 * Whether `file` starts sandboxes: it reaches a launcher through the sandbox's own modules, the test
 * support and the CLI's sandbox command (not through the server's modules: a pure test of a route
 * helper imports them without starting anything), or it runs such a file as a child process
 * (a `src/….ts` path in its text).
 */
function startsSandboxes(file) {
  const seen = new Set();
  const queue = [file, ...childScripts(file)];
  while (queue.length > 0) {
    const next = queue.pop();
    if (seen.has(next)) continue;
    seen.add(next);
    if (isLauncher(next)) return true;
    for (const target of directImports(next)) {
      if (/^src\/(sandbox|test-support)\/|^src\/cli\/sandbox-command\.ts$/.test(target)) queue.push(target);
    }
  }
  return false;
}

function childScripts(file) {
  return [...read(file).matchAll(/['"](src\/[\w./-]+\.ts)['"]/g)].map((m) => m[1]).filter((f) => existsSync(path.join(repo, f)));
}

const tiers = { unit: [], host: [], server: [] };
const problems = [];
for (const file of testFiles()) {
  const reached = imports(file);
  const server = SERVER_MARKER.test(read(file)) || reached.has(DATABASE);
  const launches = startsSandboxes(file);
  const host = HOST_NAME.test(file);
  if (host && !launches) problems.push(`${file}: named *.host.test.ts but starts no sandbox: drop ".host"`);
  else if (!host && launches && !server) problems.push(`${file}: starts sandboxes (needs root and bubblewrap): name it *.host.test.ts`);
  tiers[host ? 'host' : server ? 'server' : 'unit'].push(file);
}
if (problems.length > 0) {
  for (const p of problems) console.error(`test-tiers: ${p}`);
  process.exit(1);
}
const wanted = process.argv[2];
if (wanted !== undefined) {
  if (!(wanted in tiers)) {
    console.error(`test-tiers: unknown tier ${JSON.stringify(wanted)} (unit, host or server)`);
    process.exit(2);
  }
  for (const file of tiers[wanted]) console.log(file);
}
