// node:test reporter for scripts/test.sh: each test file's wall time (its process, from start to
// exit), slowest first, so the suite's budget (15 minutes on 2 cores) can be watched file by file.
import path from 'node:path';

export default async function* fileTimes(source) {
  const times = new Map();
  for await (const event of source) {
    // A file's own entry is the test named by its path; its duration is its process's wall time.
    if (event.type === 'test:complete' && event.data.nesting === 0 && event.data.name === event.data.file) {
      times.set(path.relative(process.cwd(), event.data.file), event.data.details?.duration_ms ?? 0);
    }
  }
  const sorted = [...times].sort((a, b) => b[1] - a[1]);
  const total = sorted.reduce((sum, [, ms]) => sum + ms, 0);
  yield `per-file wall time (${sorted.length} files, sum ${(total / 1000).toFixed(1)} s):\n`;
  for (const [file, ms] of sorted) yield `${(ms / 1000).toFixed(1).padStart(7)} s  ${file}\n`;
}
