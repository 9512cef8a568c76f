// The suite's scheduler (scripts/test.sh): every test file of both runs (embedded PGlite, and the
// PostgreSQL run) and every extra suite (scripts/test.d/*.sh) as jobs in one pool of slots, the
// longest first (by scripts/test-durations.txt, else the last run's times), so the cores are never
// left idle between the parts and the run does not end on one long file started late.
//
// Each test file runs in its own process (compiled, see --compiled, or `node --test FILE`: the same isolation,
// timeout and force-exit), its output printed in one block when it ends (no interleaving), and
// .build/test-times-<run>.txt written in the usual form (per-file wall time, slowest tests).
//
//   node scripts/test-pool.mjs --slots N [--compiled DIR] [--run LABEL [--database] FILE... | --script FILE...]...
// --compiled DIR: the test files as scripts/build-tests.mjs compiled them into DIR (src/a/b.test.ts
// runs as `node DIR/a/b.test.js`; the locations in its output are mapped back to src/a/b.test.ts
// lines, see toSource) instead of `node --import tsx --test FILE`,
// which cost ~1 s of CPU per file more (tsx's loader in two processes). Without it, as before.
// --database: the run's files get MCPWORKS_TEST_DATABASE_URL (and MCPWORKS_TEST_PG_DIR) from this
// process's environment; every other job runs without them. Exit status 1 if any job failed.
//
// Each job runs in a session (and process group) of its own. When it exits, its output gets
// GRACE_MS more to arrive, then its pipes are closed and whatever it left running in its session is
// killed: a leaked grandchild holding the pipe can neither hold up the run nor outlive it. A job
// past its wall limit (MCPWORKS_TEST_FILE_TIMEOUT seconds for a file, default 15 min; an extra
// suite's `# test-pool-timeout: SECONDS` line, else 20 min) is killed and FAILED with its output so
// far. On SIGINT or SIGTERM the running jobs are killed (SIGTERM, then SIGKILL after
// STOP_WAIT_MS), their output printed, and the pool exits 130 or 143.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { SourceMap } from 'node:module';
import path from 'node:path';

const DATABASE_ENV = ['MCPWORKS_TEST_DATABASE_URL', 'MCPWORKS_TEST_PG_DIR'];
/** Assumed for a file neither scripts/test-durations.txt nor the last run knows: most files are short. */
const UNKNOWN_SECONDS = 20;
const SLOWEST_FILES = 10;
const SLOWEST_TESTS = 5;
const GRACE_MS = 2000;
const STOP_WAIT_MS = 15_000;
const FILE_TIMEOUT_SECONDS = Number(process.env.MCPWORKS_TEST_FILE_TIMEOUT) || 15 * 60;
const EXTRA_TIMEOUT_SECONDS = 20 * 60;
/**
 * Embedded PGlite is PostgreSQL compiled to WebAssembly, and V8 recompiles its hot functions with
 * TurboFan on background threads: for a test server's short life that costs more CPU than it saves
 * (one test server's start and 60 calls: 19.5 s of CPU with it, 12.4 s without). Baseline (Liftoff)
 * code runs the same WebAssembly with the same results; JavaScript keeps all its tiers.
 * src/test-support/cli-command.ts gives the CLI and servers the tests start the same flag.
 */
const LIFTOFF_ONLY = '--liftoff-only';

/**
 * Idle cores take one more job each, up to this many beyond --slots (MCPWORKS_TEST_EXTRA_SLOTS, 0:
 * never): while most jobs wait (on sandboxes, timeouts, child servers) the cores sat idle, and a
 * fixed count high enough to fill them would overload them whenever the jobs all compute at once.
 * A job is let in only when IDLE_TO_ADMIT of the machine's CPU time went unused over the last
 * IDLE_WINDOW_MS, at most one every ADMIT_GAP_MS (a new job's start-up is itself busy); another
 * program's load on the machine counts the same as the jobs', so a shared machine admits none.
 */
const EXTRA_SLOTS = Math.max(0, Number(process.env.MCPWORKS_TEST_EXTRA_SLOTS ?? 2) || 0);
const IDLE_TO_ADMIT = 0.4;
const IDLE_WINDOW_MS = 6000;
const ADMIT_GAP_MS = 12_000;

const jobs = [];
/** Compiled file → its source map (toSource), read once. */
const sourceMaps = new Map();
let slots = 3;
let compiled = null;
{
  let run;
  let database = false;
  const args = process.argv.slice(2);
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === '--slots') slots = Math.max(1, Number(args[++i]) || 1);
    else if (arg === '--compiled') compiled = args[++i];
    else if (arg === '--run') ((run = args[++i]), (database = false));
    else if (arg === '--script') ((run = 'extra'), (database = false));
    else if (arg === '--database') database = true;
    else if (run === 'extra') jobs.push({ run, file: arg, database: false });
    else if (run) jobs.push({ run, file: arg, database });
    else throw new Error(`test-pool: ${arg} before --run or --script`);
  }
}

const durations = knownDurations();
for (const job of jobs) job.weight = durations.get(`${job.run}\t${job.file}`) ?? UNKNOWN_SECONDS;
// Longest first; equal weights in the given order.
const queue = jobs
  .map((job, i) => ({ job, i }))
  .sort((a, b) => b.job.weight - a.job.weight || a.i - b.i)
  .map(({ job }) => job);
const timesDir = path.join('.build', 'test-times.d');
rmSync(timesDir, { recursive: true, force: true });
mkdirSync(timesDir, { recursive: true });

const running = new Set();
let failed = 0;
const started = Date.now();
const runs = [...new Set(jobs.map((job) => job.run))];
console.log(
  `=== tests: ${jobs.length} jobs (${runs.map((run) => `${run}: ${jobs.filter((job) => job.run === run).length}`).join(', ')}), ${slots} at once, longest first`,
);

let stopping = null;
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    if (stopping) return;
    stopping = signal;
    queue.length = 0;
    console.log(`=== tests: ${signal}: stopping the ${running.size} running jobs`);
    const ends = [...running].map((job) => {
      if (!job.exited) job.stopped = signal;
      void terminate(job, STOP_WAIT_MS);
      return job.ended;
    });
    const exit = (how) => {
      console.log(`=== tests: stopped by ${signal} after ${((Date.now() - started) / 1000).toFixed(0)} s${how}: FAILED`);
      process.exit(signal === 'SIGINT' ? 130 : 143);
    };
    void Promise.all(ends).then(() => exit(''));
    // terminate() is bounded; this only guards against a process that even SIGKILL does not end.
    setTimeout(() => exit(`, ${running.size} jobs still not ended (their output lost)`), STOP_WAIT_MS + 15_000).unref();
  });
}

let admittedOnIdle = 0;
await new Promise((resolve) => {
  const next = () => {
    while (!stopping && running.size < slots && queue.length > 0) start(queue.shift(), next);
    if (!stopping && running.size === 0 && queue.length === 0) {
      clearInterval(idleWatch);
      resolve();
    }
  };
  // Samples of the machine's CPU time (/proc/stat); beyond --slots, a job starts when enough of it was idle.
  const samples = [];
  let lastAdmit = Date.now();
  const idleWatch = setInterval(() => {
    const now = Date.now();
    const sample = cpuTimes();
    if (!sample) return;
    samples.push({ at: now, ...sample });
    while (samples.length > 1 && now - samples[0].at > IDLE_WINDOW_MS) samples.shift();
    const first = samples[0];
    if (stopping || queue.length === 0 || running.size < slots || running.size >= slots + EXTRA_SLOTS) return;
    if (now - first.at < IDLE_WINDOW_MS - 1500 || now - lastAdmit < ADMIT_GAP_MS) return;
    const idle = (sample.idle - first.idle) / Math.max(1, sample.total - first.total);
    if (idle < IDLE_TO_ADMIT) return;
    lastAdmit = now;
    admittedOnIdle++;
    start(queue.shift(), next);
  }, 1000);
  next();
});

for (const run of runs.filter((run) => run !== 'extra')) writeTimes(run);
writeFileSync(
  path.join('.build', 'test-durations.txt'),
  jobs
    .filter((job) => job.seconds !== undefined)
    .map((job) => `${job.run}\t${job.file}\t${job.seconds.toFixed(1)}\n`)
    .join(''),
);
const minutes = ((Date.now() - started) / 60_000).toFixed(1);
const extra = admittedOnIdle ? ` (${admittedOnIdle} started beyond ${slots} at once, on idle cores)` : '';
console.log(`=== tests: all jobs done in ${minutes} min: ${jobs.length - failed} passed, ${failed} FAILED${extra}`);
// A CI log is often read from its end only: each failure again, in a few lines, after everything else.
for (const job of jobs.filter((job) => job.ok === false)) {
  console.log(`=== failed: ${job.run === 'extra' ? 'extra' : `[${job.run}]`} ${job.file}`);
  for (const line of failureDigest(job.text ?? '')) console.log(`===   ${line}`);
}
process.exit(failed ? 1 : 0);

/**
 * The failing tests of a job's output, a few lines each (the spec reporter's "failing tests" section:
 * where, which test, the error's first line and its first frame in the project's code); without that
 * section (a crash, a hang killed at its limit), the output's last lines.
 */
function failureDigest(text, { perTest = 4, most = 24, width = 400 } = {}) {
  const clip = (line) => (line.length > width ? `${line.slice(0, width)} …` : line);
  const at = text.lastIndexOf('✖ failing tests:');
  const lines = [];
  if (at >= 0) {
    for (const block of text
      .slice(at)
      .split(/\n(?=test at )/)
      .slice(1)) {
      const rows = block.split('\n');
      const name = rows.find((row) => row.startsWith('✖ '));
      const error = rows.find((row, i) => i > 0 && row.startsWith('  ') && !row.trimStart().startsWith('at ') && !row.startsWith('✖'));
      const frame = rows.find((row) => /^\s+at .*src\//.test(row) && !row.includes('node_modules'));
      lines.push(...[rows[0], name, error?.trim(), frame?.trim()].filter(Boolean).slice(0, perTest).map(clip));
    }
  }
  if (lines.length === 0) lines.push(...text.trimEnd().split('\n').slice(-8).map(clip));
  return lines.length > most ? [...lines.slice(0, most), `… ${lines.length - most} more lines above`] : lines;
}

/**
 * A job's output with each location in a compiled file (`DIR/a/b.test.js:LINE:COLUMN`, in stack
 * traces and the reporters' locations) replaced by its place in the source (`src/a/b.test.ts:L:C`),
 * read from the file's source map (scripts/build-tests.mjs writes one beside each). What no map
 * covers stays as it was.
 */
function toSource(text) {
  if (!text.includes(compiled)) return text;
  // Anchored on the build directory's name (absolute, or as given), so a long line of other text
  // costs one pass, not a search from each of its characters.
  const escape = (literal) => literal.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const root = path.resolve(compiled);
  const location = new RegExp(`(?:file://)?(${escape(root)}|${escape(compiled)})/([^\\s'"():]+?\\.js):(\\d+):(\\d+)`, 'g');
  return text.replace(location, (whole, _dir, file, line, column) => {
    const absolute = path.join(root, file);
    if (!sourceMaps.has(absolute)) {
      let map = null;
      try {
        map = new SourceMap(JSON.parse(readFileSync(`${absolute}.map`, 'utf8')));
      } catch {
        // no map: left as it is
      }
      sourceMaps.set(absolute, map);
    }
    const entry = sourceMaps.get(absolute)?.findEntry(Number(line) - 1, Number(column) - 1);
    if (!entry?.originalSource) return whole;
    const source = path.relative(process.cwd(), path.resolve(path.dirname(absolute), entry.originalSource.replace(/^file:\/\//, '')));
    return `${source}:${entry.originalLine + 1}:${entry.originalColumn + 1}`;
  });
}

/** The machine's CPU time so far in clock ticks (all cores): idle (with iowait) and in all; null without /proc. */
function cpuTimes() {
  try {
    const fields = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0].trim().split(/\s+/).slice(1, 9).map(Number);
    return { idle: fields[3] + fields[4], total: fields.reduce((sum, value) => sum + value, 0) };
  } catch {
    return null;
  }
}

function start(job, done) {
  const env = { ...process.env };
  if (!job.database) for (const name of DATABASE_ENV) delete env[name];
  let command;
  let args;
  if (job.run === 'extra') {
    command = 'bash';
    args = [job.file];
  } else {
    job.times = path.join(timesDir, `${job.run}--${job.file.replaceAll('/', '_')}.txt`);
    env.MCPWORKS_TEST_TIMES = job.times;
    command = process.execPath;
    // As scripts/test.sh ran them before: a hung test fails after 10 minutes, and a file whose tests
    // are done ends even if something it started still holds the event loop. --liftoff-only (passed on
    // to the file's process, see LIFTOFF_ONLY): V8's baseline WebAssembly code only.
    const reporters = [
      '--test-reporter=spec',
      '--test-reporter-destination=stdout',
      '--test-reporter=./scripts/test-times.mjs',
      '--test-reporter-destination=/dev/null',
    ];
    // The compiled copy (see --compiled) when there is one (without --enable-source-maps: reading
    // every module's map at load cost each file ~0.25 s of CPU; toSource maps its output instead),
    // run directly (node FILE): `node --test FILE` ran it in a child of a runner process of its own,
    // which cost ~0.35 s of CPU per file more. Its tests, reporters and force-exit are the same; a
    // hung test is stopped by the file's wall limit here (--test-timeout applies under --test only).
    const file = compiled ? path.join(compiled, path.relative('src', job.file).replace(/\.ts$/, '.js')) : job.file;
    args =
      compiled && existsSync(file)
        ? [LIFTOFF_ONLY, '--test-force-exit', ...reporters, file]
        : [LIFTOFF_ONLY, '--import', 'tsx', '--test', '--test-timeout=600000', '--test-force-exit', ...reporters, job.file];
  }
  const limit = job.run === 'extra' ? extraTimeout(job.file) : FILE_TIMEOUT_SECONDS;
  // A session of its own (setsid): its leftovers can be found and killed (see terminate), and a
  // Ctrl-C at the terminal reaches this process only, which stops the jobs itself.
  const child = spawn(command, args, { env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  job.pid = child.pid;
  job.exited = false;
  running.add(job);
  const output = [];
  child.stdout.on('data', (chunk) => output.push(chunk));
  child.stderr.on('data', (chunk) => output.push(chunk));
  const begun = Date.now();
  let finish;
  job.ended = new Promise((resolve) => (finish = resolve));
  let ended = false;
  const end = (code, signal, note = '') => {
    if (ended) return;
    ended = true;
    clearTimeout(wall);
    running.delete(job);
    job.seconds = (Date.now() - begun) / 1000;
    job.ok = code === 0 && !job.timedOut && !job.stopped;
    if (!job.ok) failed++;
    const why = job.stopped ? `stopped by ${job.stopped}` : job.timedOut ? `killed at its limit of ${limit} s` : (signal ?? `exit ${code}`);
    const verdict = job.ok ? 'passed' : `FAILED (${why})`;
    process.stdout.write(
      `=== ${job.run === 'extra' ? 'extra' : `tests [${job.run}]`}: ${job.file} ${verdict} (${job.seconds.toFixed(1)} s, at ${((Date.now() - started) / 1000).toFixed(0)} s)${note}\n`,
    );
    const text = compiled ? toSource(Buffer.concat(output).toString('utf8')) : Buffer.concat(output).toString('utf8');
    if (!job.ok) job.text = text;
    process.stdout.write(text);
    finish();
    done();
  };
  const wall = setTimeout(() => {
    job.timedOut = true;
    output.push(Buffer.from(`\n=== test-pool: ${job.file} still running after ${limit} s: killing it\n`));
    void terminate(job, 10_000);
  }, limit * 1000);
  child.on('error', (error) => {
    output.push(Buffer.from(`${error.message}\n`));
    end(null, null);
  });
  child.on('exit', (code, signal) => {
    job.exited = true;
    clearTimeout(wall);
    // Output still in the pipes arrives within the grace; a pipe open past it is held by something
    // the job left running, which is killed below.
    const open = [child.stdout, child.stderr].filter((stream) => !stream.closed);
    const grace = new Promise((resolve) => setTimeout(resolve, GRACE_MS).unref());
    void Promise.race([grace, Promise.all(open.map((stream) => new Promise((resolve) => stream.once('close', resolve))))])
      .then(() => {
        for (const stream of [child.stdout, child.stderr]) stream.destroy();
        return terminate(job, 5000);
      })
      .then((left) => end(code, signal, left ? ` (${left} leftover processes killed)` : ''));
  });
}

/**
 * The processes of the job's session (its process group, and groups made inside it such as
 * `timeout`'s), from /proc; null where /proc cannot be read.
 */
function sessionMembers(sid) {
  let names;
  try {
    names = readdirSync('/proc');
  } catch {
    return null;
  }
  const pids = [];
  for (const name of names) {
    if (!/^\d+$/.test(name)) continue;
    let stat;
    try {
      stat = readFileSync(`/proc/${name}/stat`, 'utf8');
    } catch {
      continue;
    }
    // After the command's closing parenthesis: state, ppid, pgrp, session, …
    const [state, , , session] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (Number(session) === sid && state !== 'Z') pids.push(Number(name));
  }
  return pids;
}

function signalSession(sid, signal) {
  const members = sessionMembers(sid);
  let any = false;
  // Without /proc, the process group only (the session's other groups are out of reach).
  if (!members) {
    try {
      process.kill(-sid, signal);
      any = true;
    } catch {}
  }
  for (const pid of members ?? []) {
    try {
      process.kill(pid, signal);
      any = true;
    } catch {}
  }
  return any;
}

/**
 * SIGTERM to everything in the job's session, SIGKILL to what remains after `patience` ms (then up
 * to 3 s more); resolves with the number of processes found in it besides the job's own.
 */
async function terminate(job, patience) {
  const sid = job.pid;
  if (sid === undefined) return 0;
  const left = (sessionMembers(sid) ?? []).filter((pid) => pid !== sid).length;
  if (!signalSession(sid, 'SIGTERM')) return 0;
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  for (const [signal, wait] of [
    ['SIGKILL', patience],
    [null, 3000],
  ]) {
    for (let waited = 0; waited < wait; waited += 100) {
      if (!alive(sid)) return left;
      await sleep(100);
    }
    if (signal) signalSession(sid, signal);
  }
  return left;
}

function alive(sid) {
  const members = sessionMembers(sid);
  if (members) return members.length > 0;
  try {
    process.kill(-sid, 0);
    return true;
  } catch {
    return false;
  }
}

/** An extra suite's own limit: a `# test-pool-timeout: SECONDS` line near its top. */
function extraTimeout(file) {
  const match = /^# test-pool-timeout: (\d+)/m.exec(readFileSync(file, 'utf8').slice(0, 4000));
  return match ? Number(match[1]) : EXTRA_TIMEOUT_SECONDS;
}

/** .build/test-times-<run>.txt as scripts/test-times.mjs writes it, for the whole run; its head printed. */
function writeTimes(run) {
  const mine = jobs.filter((job) => job.run === run && job.seconds !== undefined);
  const files = mine.map((job) => [job.file, job.seconds]).sort((a, b) => b[1] - a[1]);
  const tests = [];
  for (const job of mine) {
    if (!existsSync(job.times)) continue;
    const text = readFileSync(job.times, 'utf8');
    const cpu = /^cpu ([\d.]+) s/m.exec(text);
    if (cpu) job.cpu = Number(cpu[1]);
    for (const line of text.slice(text.indexOf('slowest top-level tests:')).split('\n').slice(1)) {
      const match = /^\s*([\d.]+) s {2}(.+)$/.exec(line);
      if (match) tests.push([match[2], Number(match[1])]);
    }
  }
  tests.sort((a, b) => b[1] - a[1]);
  const sum = files.reduce((total, [, seconds]) => total + seconds, 0);
  const lines = [
    `per-file wall time (${files.length} files, sum ${sum.toFixed(1)} s):`,
    ...files.map(([file, seconds]) => `${seconds.toFixed(1).padStart(7)} s  ${file}`),
  ];
  lines.push('slowest top-level tests:', ...tests.slice(0, 15).map(([name, seconds]) => `${seconds.toFixed(1).padStart(7)} s  ${name}`));
  // CPU (user+sys of each file's processes, from scripts/test-times.mjs): on 2 cores the suite's
  // wall time is about its CPU divided by two, so this is the figure to cut. After the slowest tests,
  // where knownDurations stops reading.
  const cpu = mine.filter((job) => job.cpu !== undefined).sort((a, b) => b.cpu - a.cpu);
  const cpuSum = cpu.reduce((total, job) => total + job.cpu, 0);
  const cpuLines = [
    `per-file CPU, user+sys (${cpu.length} files, sum ${cpuSum.toFixed(1)} s):`,
    ...cpu.map((job) => `${job.cpu.toFixed(1).padStart(7)} s cpu  ${job.file}`),
  ];
  writeFileSync(path.join('.build', `test-times-${run}.txt`), `${[...lines, ...cpuLines].join('\n')}\n`);
  console.log(`=== tests [${run}]: ${mine.filter((job) => job.ok).length} of ${mine.length} files passed; slowest:`);
  const header = lines.indexOf('slowest top-level tests:');
  for (const line of [
    ...lines.slice(0, Math.min(header, SLOWEST_FILES + 1)),
    ...lines.slice(header, header + SLOWEST_TESTS + 1),
    ...cpuLines.slice(0, SLOWEST_FILES + 1),
  ])
    console.log(`=== ${line}`);
}

/**
 * Seconds per `run<TAB>file`: the committed scripts/test-durations.txt (one full run on the CI
 * machine), and for files it does not know, the last run's times in .build. The last run alone
 * would mix scales (a partial run, or one on a loaded machine, beside older figures). Only the
 * order depends on them. Each run writes .build/test-durations.txt in the committed form, to
 * refresh the committed one after a full run on an idle machine.
 */
function knownDurations() {
  const known = new Map();
  const read = (file, run) => {
    if (!existsSync(file)) return;
    for (const line of readFileSync(file, 'utf8').split('\n')) {
      if (line.startsWith('slowest top-level tests:')) break;
      const match = run ? /^\s*([\d.]+) s {2}(\S+)$/.exec(line) : /^(\S+)\t(\S+)\t([\d.]+)$/.exec(line);
      if (!match) continue;
      if (!run) known.set(`${match[1]}\t${match[2]}`, Number(match[3]));
      else if (!known.has(`${run}\t${match[2]}`)) known.set(`${run}\t${match[2]}`, Number(match[1]));
    }
  };
  read(path.join('scripts', 'test-durations.txt'));
  for (const run of new Set(jobs.map((job) => job.run))) read(path.join('.build', `test-times-${run}.txt`), run);
  return known;
}
