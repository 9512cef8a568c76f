// node:test reporter for scripts/test.sh: each test file's wall time (its process, from start to
// exit), slowest first, and the slowest single tests, so the suite's budget (15 minutes on 2 cores)
// can be watched file by file; and the CPU the run used (user+sys of this process and of the
// processes it waited for: the test file's and, through it, the servers and CLIs it ran), since on
// 2 cores the suite's wall time is its CPU divided by two.
//
// The report goes to the file named by MCPWORKS_TEST_TIMES and is rewritten synchronously each time
// a file finishes: under --test-force-exit the runner exits as soon as the last file is done, before
// a reporter's stream reaches its end, so anything yielded at the end (or written asynchronously)
// was lost and the report came out empty. Without MCPWORKS_TEST_TIMES it is yielded at the end.
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

const SLOWEST_TESTS = 15;

export default async function* fileTimes(source) {
  const out = process.env.MCPWORKS_TEST_TIMES;
  const files = new Map();
  const tests = [];
  for await (const event of source) {
    // A file run directly (node FILE, as scripts/test-pool.mjs runs compiled files) has no entry of
    // its own: its summary's diagnostics come last, after its after() hooks, and carry the CPU figure.
    if (event.type === 'test:diagnostic' && event.data.nesting === 0 && out) writeFileSync(out, report(files, tests));
    if (event.type !== 'test:complete' || event.data.nesting !== 0) continue;
    const file = event.data.file ? sourceOf(path.relative(process.cwd(), event.data.file)) : '?';
    const ms = event.data.details?.duration_ms ?? 0;
    // A file's own entry is the test named by its path; its duration is its process's wall time.
    if (event.data.name === event.data.file) {
      files.set(file, ms);
      if (out) writeFileSync(out, report(files, tests));
    } else {
      tests.push([`${file}: ${event.data.name}`, ms]);
      if (out) writeFileSync(out, report(files, tests));
    }
  }
  if (out) writeFileSync(out, report(files, tests));
  else yield report(files, tests);
}

/** A compiled test file (scripts/build-tests.mjs: .build-tests/a/b.test.js) by its source's name (src/a/b.test.ts). */
function sourceOf(file) {
  const match = /^\.build-tests\/(.+)\.js$/.exec(file.split(path.sep).join('/'));
  return match ? `src/${match[1]}.ts` : file;
}

function report(files, tests) {
  const sorted = [...files].sort((a, b) => b[1] - a[1]);
  const total = sorted.reduce((sum, [, ms]) => sum + ms, 0);
  const cpu = cpuSeconds();
  const lines = cpu === null ? [] : [`cpu ${cpu.toFixed(1)} s (user+sys, with the processes waited for)`];
  lines.push(`per-file wall time (${sorted.length} files, sum ${(total / 1000).toFixed(1)} s):`);
  for (const [file, ms] of sorted) lines.push(`${seconds(ms)}  ${file}`);
  lines.push(`slowest top-level tests:`);
  for (const [name, ms] of [...tests].sort((a, b) => b[1] - a[1]).slice(0, SLOWEST_TESTS)) lines.push(`${seconds(ms)}  ${name}`);
  return `${lines.join('\n')}\n`;
}

/**
 * utime+stime+cutime+cstime of this process from /proc/self/stat (null without it). A file's
 * process has exited and been waited for when its entry is reported, so its CPU is in cutime/cstime.
 */
function cpuSeconds() {
  try {
    const stat = readFileSync('/proc/self/stat', 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // Clock ticks (USER_HZ, 100 on Linux): fields 14-17 of proc(5), here from the state (field 3).
    return fields.slice(11, 15).reduce((sum, ticks) => sum + Number(ticks), 0) / 100;
  } catch {
    return null;
  }
}

function seconds(ms) {
  return `${(ms / 1000).toFixed(1).padStart(7)} s`;
}
