#!/usr/bin/env node
// Mutation measure of the security rules: breaks one enforcing line at a time (mutants.json) in a
// scratch copy of the tree, runs the test files that should catch it, and scores killed/survived.
//
//   node scripts/mutation/run.mjs [--only ID|MODULE[,…]] [--timeout SECONDS] [--list | --check]
//                                 [--no-baseline] [--min-score PERCENT] [--report FILE] [--keep]
//
// Never touches the working tree: the scratch copy lives under /tmp (tracked and untracked files,
// .build and dist copied, node_modules linked) and is removed at the end (--keep leaves it).
// Mutants marked "postgres" run their tests against a throwaway PostgreSQL (scripts/postgres-test.sh,
// or MCPWORKS_TEST_DATABASE_URL if set), the others on embedded PGlite. A snippet that no longer
// matches exactly once is "stale" and fails the run, as does a test set that fails unmutated.
// Optional per mutant: "pattern" (--test-name-pattern: only the named tests of a large file) and
// "build" (a command that rebuilds compiled code, e.g. the sandbox helper and its seccomp filter).
import { execFileSync, spawn } from 'node:child_process';
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  realpathSync,
  rmSync,
  symlinkSync,
  writeFileSync,
  chmodSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

// Output of a test run that could not load its modules (not a verdict on the mutant).
const BROKEN_RUN = /ERR_MODULE_NOT_FOUND|Cannot find (module|package)|ERR_PACKAGE_PATH_NOT_EXPORTED|Error \[ERR_LOAD_URL\]/;
const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const args = parseArgs(process.argv.slice(2));
const { mutants } = JSON.parse(readFileSync(path.join(repo, 'scripts/mutation/mutants.json'), 'utf8'));

const only = args.only
  ? args.only
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean)
  : [];
const selected = mutants.filter((m) => only.length === 0 || only.some((o) => m.id === o || m.module === o || m.id.startsWith(o)));
if (selected.length === 0) fail(`no mutant matches --only ${args.only}`);
if (args.list || args.check) {
  // --check: only whether each snippet still matches exactly once (read from the working tree, unchanged).
  let stale = 0;
  for (const m of selected) {
    const count = existsSync(path.join(repo, m.file)) ? matches(readFileSync(path.join(repo, m.file), 'utf8'), m) : 0;
    if (count !== 1) stale++;
    if (args.list || count !== 1)
      console.log(`${count === 1 ? '' : `STALE(${count}) `}${m.id.padEnd(34)} ${m.module.padEnd(12)} ${m.file}  ${m.description}`);
  }
  console.log(`${selected.length} mutants, ${stale} stale`);
  process.exit(stale > 0 ? 1 : 0);
}
const timeoutMs = Number(args.timeout ?? 900) * 1000;

const scratch = mkdtempSync(path.join(tmpdir(), 'mcpworks-mutation-'));
chmodSync(scratch, 0o755);
let pg = null;
/** The test run in progress (its own process group), ended with the script. */
let current = null;
const cleanup = () => {
  if (current) killGroup(current.pid);
  if (pg?.started) spawnSyncQuiet(path.join(repo, 'scripts/postgres-test.sh'), ['stop', pg.dir]);
  if (!args.keep) rmSync(scratch, { recursive: true, force: true });
};
for (const [signal, code] of [
  ['SIGINT', 130],
  ['SIGTERM', 143],
]) {
  process.on(signal, () => {
    cleanup();
    process.exit(code);
  });
}

try {
  copyTree();
  const stale = [];
  const runnable = [];
  for (const m of selected) {
    const text = readFileSync(path.join(scratch, m.file), 'utf8');
    const count = matches(text, m);
    if (count === 1) runnable.push(m);
    else stale.push({ ...m, reason: count === 0 ? 'snippet not found' : `snippet found ${count} times` });
  }
  if (runnable.some((m) => m.postgres)) pg = startPostgres();

  const baselineFailures = new Set();
  if (!args['no-baseline']) {
    for (const key of new Set(runnable.map(testKey))) {
      const sample = runnable.find((m) => testKey(m) === key);
      const outcome = await runTests(sample);
      log(`baseline ${key}: ${outcome.passed ? 'passes' : `FAILS (${outcome.reason})`}`);
      if (!outcome.passed) {
        baselineFailures.add(key);
        process.stdout.write(outcome.tail);
      }
    }
  }

  const results = [];
  for (const m of runnable) {
    if (baselineFailures.has(testKey(m))) {
      results.push({ ...m, status: 'not scored (tests fail unmutated)' });
      continue;
    }
    const file = path.join(scratch, m.file);
    const original = readFileSync(file, 'utf8');
    writeFileSync(file, mutate(original, m));
    let outcome;
    try {
      const built = build(m);
      outcome = built ?? (await runTests(m));
    } finally {
      writeFileSync(file, original);
      if (m.build && build(m)) fail(`${m.id}: the unmutated tree no longer builds (${m.build})`);
    }
    // A run that could not load its modules (node_modules being reinstalled underneath us) says
    // nothing about the mutant: not scored, and listed so it can be run again.
    const broken = !outcome.passed && (outcome.reason === 'build' || BROKEN_RUN.test(outcome.tail));
    const status =
      outcome.reason === 'build'
        ? 'error (the mutant does not build)'
        : broken
          ? 'error (the tests could not load)'
          : outcome.passed
            ? 'SURVIVED'
            : outcome.reason === 'timeout'
              ? 'killed (timeout)'
              : 'killed';
    results.push({ ...m, status, seconds: outcome.seconds, ...(broken ? { tail: outcome.tail } : {}) });
    log(`${status.padEnd(16)} ${m.id}  (${outcome.seconds} s) ${m.description}`);
  }

  report(results, stale);
  const scored = results.filter((r) => r.status === 'SURVIVED' || r.status.startsWith('killed'));
  const killed = scored.filter((r) => r.status.startsWith('killed')).length;
  const score = scored.length ? (100 * killed) / scored.length : 0;
  if (args.report) writeFileSync(args.report, JSON.stringify({ score, results, stale }, null, 2));
  const below = args['min-score'] !== undefined && score < Number(args['min-score']);
  const errors = results.filter((r) => r.status.startsWith('error'));
  if (errors.length > 0) console.log(`\n=== not scored, run again: ${errors.map((r) => r.id).join(',')}`);
  process.exitCode = stale.length > 0 || baselineFailures.size > 0 || errors.length > 0 || below ? 1 : 0;
} finally {
  cleanup();
}

function testKey(m) {
  return `${m.postgres ? 'postgres' : 'pglite'}: ${[...m.tests].sort().join(' ')}${m.pattern ? ` /${m.pattern}/` : ''}`;
}

/**
 * A mutant of compiled code (the sandbox helper's C) names the command that rebuilds it (`build`,
 * run in the scratch tree after the mutant is applied and again after it is undone). Answers an
 * outcome when the build fails, else undefined.
 */
function build(m) {
  if (!m.build) return undefined;
  const started = Date.now();
  try {
    execFileSync('bash', ['-c', m.build], { cwd: scratch, stdio: ['ignore', 'pipe', 'pipe'] });
    return undefined;
  } catch (error) {
    return {
      passed: false,
      reason: 'build',
      seconds: Math.round((Date.now() - started) / 1000),
      tail: String(error.stderr ?? error.message).slice(-4000),
    };
  }
}

/** Runs a mutant's test files in the scratch tree, one at a time, bounded by the timeout. */
function runTests(m) {
  const env = { ...process.env, TEST_LOG_LEVEL: 'silent' };
  delete env.MCPWORKS_TEST_DATABASE_URL;
  if (m.postgres) env.MCPWORKS_TEST_DATABASE_URL = pg.url;
  const started = Date.now();
  return new Promise((resolve) => {
    // `pattern`: only the tests whose names match run (--test-name-pattern), for a large file.
    const only = m.pattern ? [`--test-name-pattern=${m.pattern}`] : [];
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', '--test', '--test-concurrency=1', '--test-reporter=dot', ...only, ...m.tests],
      { cwd: scratch, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    current = child;
    let output = '';
    const keep = (chunk) => {
      output = (output + chunk).slice(-20_000);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup(child.pid);
    }, timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      current = null;
      // The group may still hold stragglers (a test's server); end them.
      killGroup(child.pid);
      const seconds = Math.round((Date.now() - started) / 1000);
      resolve({ passed: !timedOut && code === 0, reason: timedOut ? 'timeout' : `exit ${code}`, seconds, tail: output.slice(-4000) });
    });
  });
}

function copyTree() {
  const files = execFileSync('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], { cwd: repo })
    .toString()
    .split('\0')
    .filter(Boolean);
  for (const file of files) {
    if (file === 'node_modules' || file.startsWith('node_modules/')) continue;
    const source = path.join(repo, file);
    if (!existsSync(source)) continue;
    mkdirSync(path.dirname(path.join(scratch, file)), { recursive: true });
    cpSync(source, path.join(scratch, file), { dereference: false });
  }
  for (const built of ['.build', 'dist']) {
    if (existsSync(path.join(repo, built))) cpSync(path.join(repo, built), path.join(scratch, built), { recursive: true });
  }
  symlinkSync(realpathSync(path.join(repo, 'node_modules')), path.join(scratch, 'node_modules'));
}

function startPostgres() {
  if (process.env.MCPWORKS_TEST_DATABASE_URL) return { url: process.env.MCPWORKS_TEST_DATABASE_URL, started: false };
  const out = execFileSync(path.join(repo, 'scripts/postgres-test.sh'), ['start'], {
    env: { ...process.env, MCPWORKS_TEST_PG_OWNER: String(process.pid) },
    stdio: ['ignore', 'pipe', 'inherit'],
  }).toString();
  const value = (name) => new RegExp(`${name}=['"]?([^'"\\n]+)`).exec(out)?.[1];
  const url = value('MCPWORKS_TEST_DATABASE_URL');
  const dir = value('MCPWORKS_TEST_PG_DIR');
  if (!url || !dir) fail(`could not start PostgreSQL: ${out}`);
  return { url, dir, started: true };
}

function report(results, stale) {
  const modules = new Map();
  for (const r of results) {
    const entry = modules.get(r.module) ?? { killed: 0, survived: [], unscored: 0 };
    if (r.status.startsWith('killed')) entry.killed++;
    else if (r.status === 'SURVIVED') entry.survived.push(r.id);
    else entry.unscored++;
    modules.set(r.module, entry);
  }
  console.log('\n=== mutation score per module');
  let killed = 0;
  let total = 0;
  for (const [module, e] of [...modules].sort()) {
    const n = e.killed + e.survived.length;
    killed += e.killed;
    total += n;
    console.log(
      `${module.padEnd(14)} ${String(e.killed).padStart(3)}/${String(n).padEnd(3)} ${pct(e.killed, n)}${e.survived.length ? `  survived: ${e.survived.join(', ')}` : ''}${e.unscored ? `  not scored: ${e.unscored}` : ''}`,
    );
  }
  console.log(`${'TOTAL'.padEnd(14)} ${String(killed).padStart(3)}/${String(total).padEnd(3)} ${pct(killed, total)}`);
  if (stale.length > 0) {
    console.log('\n=== stale (the snippet no longer matches exactly once: update mutants.json)');
    for (const s of stale) console.log(`${s.id}: ${s.file}: ${s.reason}`);
  }
}

function pct(a, b) {
  return b === 0 ? '  -  ' : `${((100 * a) / b).toFixed(1).padStart(5)} %`;
}

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (!arg.startsWith('--')) fail(`unexpected argument ${arg}`);
    const [name, inline] = arg.slice(2).split('=', 2);
    if (['list', 'check', 'no-baseline', 'keep'].includes(name)) out[name] = true;
    else if (['only', 'timeout', 'min-score', 'report'].includes(name)) out[name] = inline ?? argv[++i];
    else fail(`unknown option --${name}`);
  }
  return out;
}

function killGroup(pid) {
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

function spawnSyncQuiet(command, argv) {
  try {
    execFileSync(command, argv, { stdio: 'ignore' });
  } catch {
    // best effort
  }
}

function log(line) {
  console.log(line);
}

function fail(message) {
  console.error(`mutation: ${message}`);
  process.exit(2);
}

/** `after`: the snippet is looked for only past the first occurrence of this text (e.g. the newest migration of a function). */
function region(text, m) {
  if (!m.after) return 0;
  const at = text.indexOf(m.after);
  return at < 0 ? -1 : at;
}
function matches(text, m) {
  const at = region(text, m);
  return at < 0 ? 0 : text.slice(at).split(m.find).length - 1;
}
function mutate(text, m) {
  const at = region(text, m);
  return text.slice(0, at) + text.slice(at).replace(m.find, () => m.replace);
}
