/**
 * The record behind its answer (README: "Right after an answer") on and off in one server on the
 * embedded database, in alternating blocks of calls, so that a shared machine's drifting load
 * touches both alike: one official-SDK client calling the Python hello function, its wall time a
 * call, the median saving of the block pairs, and how long after its statement was sent each
 * record committed (the wait taken off the answer). Toggles RunService's switch in-process (a
 * bench's reach into the server, not an option).
 *
 *   node --import tsx bench/record-behind.ts   (env: ERA=v2|v1, MODE=tools|code, PAUSE=ms between calls (0),
 *                                               BLOCKS=pairs (20), PER=calls a block (50))
 */
import { connect } from '../src/test-support/harness.js';
import { call, makeNamespace, startBenchServer } from './lib/server.js';

const BLOCKS = Number(process.env.BLOCKS ?? 20);
const PER = Number(process.env.PER ?? 50);
const PAUSE = Number(process.env.PAUSE ?? 0);
const server = await startBenchServer();
const account = await makeNamespace(server, 'bench', 'utils', [{ name: 'hello', template: 'hello-world' }]);
const code = process.env.MODE === 'code';
const client = await connect(
  `${server.url}/mcp/run/bench${code ? '' : '?mode=tools'}`,
  account.key,
  (process.env.ERA as 'v1' | 'v2') ?? 'v2',
);
const spec = code
  ? { tool: 'execute', args: { code: 'from functions import hello\nresult = hello(name="bench")' }, expect: { greeting: 'Hello, bench!' } }
  : { tool: 'utils__hello', args: { name: 'bench' }, expect: { greeting: 'Hello, bench!' } };
const deps = (server.server.services.runs as unknown as { deps: { answerBeforeRecord?: boolean } }).deps;
// How long each record's commit comes after the statement was sent (the answer goes out meanwhile).
const executions = (
  deps as unknown as { executions: { finishIssued: (...a: unknown[]) => { issued: Promise<void>; committed: Promise<void> } } }
).executions;
const finishIssued = executions.finishIssued.bind(executions);
const behind: number[] = [];
executions.finishIssued = (...a: unknown[]) => {
  const r = finishIssued(...a);
  let sentAt = 0;
  void r.issued.then(() => (sentAt = performance.now()));
  void r.committed.then(() => behind.push(performance.now() - sentAt));
  return r;
};
for (let i = 0; i < 1000; i++) await call(client, spec);
behind.length = 0;
const walls: Record<string, number[]> = { on: [], off: [] };
const medians: Record<string, number[]> = { on: [], off: [] };
const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
for (let b = 0; b < BLOCKS * 2; b++) {
  const mode = b % 4 === 0 || b % 4 === 3 ? 'on' : 'off';
  deps.answerBeforeRecord = mode === 'on';
  const block: number[] = [];
  for (let i = 0; i < PER; i++) {
    const t = performance.now();
    await call(client, spec);
    block.push(performance.now() - t);
    // A client that does not call back to back (a model thinks between calls): the commit is done by its next call.
    if (PAUSE) await new Promise((resolve) => setTimeout(resolve, PAUSE));
  }
  walls[mode]!.push(...block);
  medians[mode]!.push(med(block));
}
const usage = await (await fetch(`${server.url}/api/usage`, { headers: { authorization: `Bearer ${account.key}` } })).json();
const diffs = medians.on!.map((x, i) => medians.off![i]! - x);
console.log(
  `${code ? 'execute' : 'tool mode'} ${process.env.ERA ?? 'v2'} pause ${PAUSE} ms: calls ${walls.on!.length} on / ${walls.off!.length} off; wall median on ${med(walls.on!).toFixed(2)} ms, off ${med(walls.off!).toFixed(2)} ms; ` +
    `per-block pairs: median saving ${med(diffs).toFixed(2)} ms (${diffs.filter((d) => d > 0).length}/${diffs.length} blocks faster on); ` +
    `record committed after its statement was sent: median ${med(behind).toFixed(2)} ms (${behind.length} records); ` +
    `usage.executions ${usage.executions} (expected ${1000 + walls.on!.length + walls.off!.length}), active ${usage.concurrency.active}`,
);
await client.close();
await server.stop();
process.exit(0);
