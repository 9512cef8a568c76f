/**
 * A code-mode call's bridge round trips, by stage, in both languages (issue 18: `execute` calling one
 * function). Each execute calls the hello function once (Python: the hello-world template; TypeScript:
 * the same function and schemas): trip 1 (op "call": the host counts it, checks env and input_schema,
 * takes a unit of the per-minute rate, answers "run it here"), the function run in the sandbox, trip 2
 * (op "result": the host checks output_schema). Timed inside the sandbox around the runner's bridge
 * call, so each trip is its whole wall (write, the host's work, the answer read back); on the host,
 * only the rate unit's statement is timed (the bench wraps the database's query executor). Then,
 * in one execute per language, a loop of 200 requests the host refuses at once (an unknown op: no
 * statement, no schema): the round trip's floor, the wire and the host's parse and answer only.
 *
 *   bench/bridge-trips [--runs N] [--warmup W] [--vary]   (defaults: 60 executes per language after 10)
 *
 * Without --vary every call sends the same input and gets the same result, so after the warm-up the
 * schema guard answers both checks from its remembered passes (no worker); with --vary each call's
 * input (and so its result) is new, and both checks go to the schema workers, as most real calls do.
 *
 * The real server in this process (bench/lib/server.ts, the trial tier's limits lifted), real
 * sandboxes (zygotes for Python), the official SDK client. Wall times: the load average is printed
 * with them; compare builds alternately. Prints figures; exits non-zero only if the bench cannot run.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { connect, parseResult } from '../src/test-support/harness.js';
import { median, printTable, quantile } from './lib/measure.js';
import { makeNamespace, startBenchServer } from './lib/server.js';

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '60' },
    warmup: { type: 'string', default: '10' },
    vary: { type: 'boolean', default: false },
  },
});
const runs = Number(values.runs);
const warmup = Number(values.warmup);
if (!Number.isInteger(runs) || runs < 1) throw new Error('--runs must be a positive integer');
if (!Number.isInteger(warmup) || warmup < 0) throw new Error('--warmup must be a non-negative integer');

const SCHEMAS = {
  input_schema: { type: 'object', properties: { name: { type: 'string' } } },
  output_schema: {
    type: 'object',
    properties: { greeting: { type: 'string' }, message: { type: 'string' } },
    required: ['greeting', 'message'],
  },
};
const HELLO_TS = `export function main(input: { name?: string }) {
  return { greeting: \`Hello, \${input.name || 'World'}!\`, message: 'MCPWorks is up: this function ran in a sandbox.' };
}
`;

// Each execute answers {trips: [[op, ms]...], call: ms}: the runner's bridge call wrapped for the timing.
const PYTHON_CALL = `import time
import _mcpworks_bridge as _b
trips = []
_call = _b.call
def _timed(message):
    started = time.perf_counter_ns()
    answer = _call(message)
    trips.append([message.get("op"), (time.perf_counter_ns() - started) / 1e6])
    return answer
_b.call = _timed
from functions import hello
started = time.perf_counter_ns()
hello(name=NAME)
result = {"trips": trips, "call": (time.perf_counter_ns() - started) / 1e6}
`;
const TYPESCRIPT_CALL = `import { hello_ts } from 'functions';
const g = globalThis as any;
const call = g.__mcpworksBridge;
const trips: [string, number][] = [];
g.__mcpworksBridge = (message: any) => {
  const started = performance.now();
  const answer = call(message);
  trips.push([message.op, performance.now() - started]);
  return answer;
};
const started = performance.now();
await hello_ts({ name: NAME });
result = { trips, call: performance.now() - started };
`;
const PYTHON_FLOOR = `import time, _mcpworks_bridge as _b
times = []
for _ in range(200):
    started = time.perf_counter_ns()
    _b.call({"op": "none"})
    times.append((time.perf_counter_ns() - started) / 1e6)
result = times
`;
const TYPESCRIPT_FLOOR = `const call = (globalThis as any).__mcpworksBridge;
const times: number[] = [];
for (let i = 0; i < 200; i++) {
  const started = performance.now();
  call({ op: 'none' });
  times.push(performance.now() - started);
}
result = times;
`;

const loadavg = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
const server = await startBenchServer();
let exitCode = 0;
try {
  const account = await makeNamespace(server, 'bench', 'utils', [
    { name: 'hello', template: 'hello-world' },
    { name: 'hello_ts', language: 'typescript', code: HELLO_TS, ...SCHEMAS } as never,
  ]);
  // The rate unit's statement, timed where the server sends it (observed only: the query goes on as it was).
  const executor = server.server.services.db.getExecutor() as unknown as {
    executeQuery: (query: { sql: string }, ...rest: unknown[]) => Promise<unknown>;
  };
  const executeQuery = executor.executeQuery.bind(executor);
  const rateUnits: number[] = [];
  executor.executeQuery = async (query, ...rest) => {
    if (!query.sql.includes('INSERT INTO rate_windows')) return executeQuery(query, ...rest);
    const started = performance.now();
    try {
      return await executeQuery(query, ...rest);
    } finally {
      rateUnits.push(performance.now() - started);
    }
  };
  const client = await connect(`${server.url}/mcp/run/bench`, account.key);
  const execute = async (language: string, code: string): Promise<any> => {
    const response = await client.callTool('execute', { language, code });
    const value = parseResult(response);
    if (response.isError) throw new Error(`execute (${language}) failed: ${JSON.stringify(value).slice(0, 300)}`);
    return value;
  };
  const loadBefore = loadavg();
  const rows: string[][] = [
    [
      'ms (median / p90)',
      'trip 1: call',
      'run in sandbox',
      'trip 2: result',
      'whole call',
      'rate unit statement',
      'trip floor (refused op)',
    ],
  ];
  const cell = (samples: number[]) => `${median(samples).toFixed(3)} / ${quantile(samples, 0.9).toFixed(3)}`;
  for (const [language, call, floor] of [
    ['python', PYTHON_CALL, PYTHON_FLOOR],
    ['typescript', TYPESCRIPT_CALL, TYPESCRIPT_FLOOR],
  ] as const) {
    const first: number[] = [];
    const second: number[] = [];
    const local: number[] = [];
    const whole: number[] = [];
    const units: number[] = [];
    for (let i = 0; i < warmup + runs; i++) {
      rateUnits.length = 0;
      // The name as a literal in the code: a new one per call with --vary.
      const name = JSON.stringify(values.vary ? `bench-${i}-${Math.random().toString(36).slice(2)}` : 'bench');
      const { trips, call: ms } = (await execute(language, call.replace('NAME', name))) as { trips: [string, number][]; call: number };
      if (i < warmup) continue;
      units.push(...rateUnits);
      const [callTrip, resultTrip] = trips;
      if (callTrip?.[0] !== 'call' || resultTrip?.[0] !== 'result') throw new Error(`unexpected trips: ${JSON.stringify(trips)}`);
      first.push(callTrip[1]);
      second.push(resultTrip[1]);
      local.push(ms - callTrip[1] - resultTrip[1]);
      whole.push(ms);
    }
    const floorTimes = ((await execute(language, floor)) as number[]).slice(20);
    rows.push([language, cell(first), cell(local), cell(second), cell(whole), cell(units), cell(floorTimes)]);
  }
  await client.close();
  console.log(
    `bridge-trips: ${runs} executes per language (after ${warmup}), each calling hello once (input_schema and output_schema), ` +
      (values.vary ? 'a new input each call (checks in the schema workers)' : 'the same input each call (remembered passes)'),
  );
  printTable(rows);
  console.log(
    `load average before ${loadBefore}, after ${loadavg()} (${readFileSync('/proc/cpuinfo', 'utf8').match(/^processor/gm)?.length ?? '?'} CPUs)`,
  );
} catch (error) {
  console.error(`bench failed: ${(error as Error).stack ?? error}`);
  exitCode = 1;
} finally {
  await server.stop();
}
process.exit(exitCode);
