// The suite's scheduler (scripts/test.sh): every test file of both runs (embedded PGlite, and the
// PostgreSQL run) and every extra suite (scripts/test.d/*.sh) as jobs in one pool of slots, the
// longest first (by scripts/test-durations.txt, else the last run's times), so the cores are never
// left idle between the parts and the run does not end on one long file started late.
//
// Each test file still runs as `node --test FILE` (its own process, as before: the same isolation,
// timeout and force-exit), its output printed in one block when it ends (no interleaving), and
// .build/test-times-<run>.txt written in the usual form (per-file wall time, slowest tests).
//
//   node scripts/test-pool.mjs --slots N [--run LABEL [--database] FILE... | --script FILE...]...
// --database: the run's files get MCPWORKS_TEST_DATABASE_URL (and MCPWORKS_TEST_PG_DIR) from this
// process's environment; every other job runs without them. Exit status 1 if any job failed.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';

const DATABASE_ENV = ['MCPWORKS_TEST_DATABASE_URL', 'MCPWORKS_TEST_PG_DIR'];
/** Assumed for a file neither scripts/test-durations.txt nor the last run knows: most files are short. */
const UNKNOWN_SECONDS = 20;
const SLOWEST_FILES = 10;
const SLOWEST_TESTS = 5;

const jobs = [];
let slots = 3;
{
  let run;
  let database = false;
  const args = process.argv.slice(2);
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === '--slots') slots = Math.max(1, Number(args[++i]) || 1);
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

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    for (const child of running) child.kill('SIGTERM');
    process.exit(signal === 'SIGINT' ? 130 : 143);
  });
}

await new Promise((resolve) => {
  const next = () => {
    while (running.size < slots && queue.length > 0) start(queue.shift(), next);
    if (running.size === 0 && queue.length === 0) resolve();
  };
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
console.log(`=== tests: all jobs done in ${minutes} min: ${jobs.length - failed} passed, ${failed} FAILED`);
process.exit(failed ? 1 : 0);

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
    // are done ends even if something it started still holds the event loop.
    args = [
      '--import',
      'tsx',
      '--test',
      '--test-timeout=600000',
      '--test-force-exit',
      '--test-reporter=spec',
      '--test-reporter-destination=stdout',
      '--test-reporter=./scripts/test-times.mjs',
      '--test-reporter-destination=/dev/null',
      job.file,
    ];
  }
  const child = spawn(command, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(child);
  const output = [];
  child.stdout.on('data', (chunk) => output.push(chunk));
  child.stderr.on('data', (chunk) => output.push(chunk));
  const begun = Date.now();
  let ended = false;
  const end = (code, signal) => {
    if (ended) return;
    ended = true;
    running.delete(child);
    job.seconds = (Date.now() - begun) / 1000;
    job.ok = code === 0;
    if (!job.ok) failed++;
    const verdict = job.ok ? 'passed' : `FAILED (${signal ?? `exit ${code}`})`;
    process.stdout.write(
      `=== ${job.run === 'extra' ? 'extra' : `tests [${job.run}]`}: ${job.file} ${verdict} (${job.seconds.toFixed(1)} s, at ${((Date.now() - started) / 1000).toFixed(0)} s)\n`,
    );
    process.stdout.write(Buffer.concat(output));
    done();
  };
  child.on('error', (error) => {
    output.push(Buffer.from(`${error.message}\n`));
    end(null, null);
  });
  child.on('close', end);
}

/** .build/test-times-<run>.txt as scripts/test-times.mjs writes it, for the whole run; its head printed. */
function writeTimes(run) {
  const mine = jobs.filter((job) => job.run === run && job.seconds !== undefined);
  const files = mine.map((job) => [job.file, job.seconds]).sort((a, b) => b[1] - a[1]);
  const tests = [];
  for (const job of mine) {
    if (!existsSync(job.times)) continue;
    const text = readFileSync(job.times, 'utf8');
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
  writeFileSync(path.join('.build', `test-times-${run}.txt`), `${lines.join('\n')}\n`);
  console.log(`=== tests [${run}]: ${mine.filter((job) => job.ok).length} of ${mine.length} files passed; slowest:`);
  const header = lines.indexOf('slowest top-level tests:');
  for (const line of [...lines.slice(0, Math.min(header, SLOWEST_FILES + 1)), ...lines.slice(header, header + SLOWEST_TESTS + 1)])
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
