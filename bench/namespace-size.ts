/**
 * Cost of a large namespace (issue 10, item 8): FUNCTIONS functions with CODE_KB of code and
 * SCHEMA_KB of input_schema each (storage limits lifted so they fit), then tool-mode tools/list
 * time and size, and the server's RSS (this process: the server runs in-process) before and after.
 * Prints figures only; compare a run on the old tree with one on this one.
 *   FUNCTIONS=150 CODE_KB=1000 SCHEMA_KB=60 bench/namespace-size
 */
import { applyTierOverrides } from '../src/core/tiers.js';
import { connect, createAccount, parseResult, startTestServer } from '../src/test-support/harness.js';
import { median } from './lib/measure.js';

process.env.TEST_LOG_LEVEL ??= 'silent';
const FUNCTIONS = Number(process.env.FUNCTIONS ?? 150);
const CODE_KB = Number(process.env.CODE_KB ?? 1000);
const SCHEMA_KB = Number(process.env.SCHEMA_KB ?? 60);
const LISTS = Number(process.env.LISTS ?? 10);

const lifted = { monthly_executions: -1, executions_per_minute: -1, concurrency: -1 };
const storage = { functions: -1, stored_bytes: -1, schema_bytes_per_namespace: -1, versions_per_function: -1 };
let tiers;
try {
  tiers = applyTierOverrides(JSON.stringify({ pro_trial: { ...lifted, ...storage } }));
} catch {
  tiers = applyTierOverrides(JSON.stringify({ pro_trial: lifted })); // a tree without storage limits
}

const rssMb = () => {
  globalThis.gc?.();
  return Math.round(process.memoryUsage().rss / 1048576);
};

const server = await startTestServer({ tiers });
try {
  const account = await createAccount(server.url);
  const create = await connect(`${server.url}/mcp/create/big`, account.key);
  const ok = async (tool: string, args: Record<string, unknown>) => {
    const r = await create.callTool(tool, args);
    if (r.isError) throw new Error(`${tool}: ${JSON.stringify(parseResult(r)).slice(0, 300)}`);
  };
  await ok('make_namespace', { name: 'big' });
  await ok('make_service', { name: 'svc' });
  const idle = rssMb();
  const filler = 'x'.repeat(CODE_KB * 1024 - 80);
  for (let i = 0; i < FUNCTIONS; i++) {
    const properties: Record<string, unknown> = {};
    for (let p = 0; p * 1024 < SCHEMA_KB * 1024; p++) properties[`p${i}_${p}`] = { type: 'string', description: 'd'.repeat(990) };
    await ok('make_function', {
      service: 'svc',
      name: `f${i}`,
      language: 'python',
      code: `# ${filler}\ndef main(input):\n    return {"i": ${i}}\n`,
      input_schema: { type: 'object', properties },
    });
  }
  await create.close();
  const made = rssMb();

  const run = await connect(`${server.url}/mcp/run/big?mode=tools`, account.key, 'v1');
  const times: number[] = [];
  let bytes = 0;
  for (let i = 0; i < LISTS; i++) {
    const started = performance.now();
    const listed = await run.listTools();
    times.push(performance.now() - started);
    bytes = JSON.stringify(listed).length;
    if (listed.tools.length !== FUNCTIONS + 1) throw new Error(`listed ${listed.tools.length} tools`);
  }
  const afterLists = rssMb();
  const called = parseResult(await run.callTool(`svc__f${FUNCTIONS - 1}`, {}));
  if (called?.i !== FUNCTIONS - 1) throw new Error(`call returned ${JSON.stringify(called)}`);
  const afterCall = rssMb();
  await run.close();

  console.log(`namespace: ${FUNCTIONS} functions, ${CODE_KB} KB code and ~${SCHEMA_KB} KB input_schema each`);
  console.log(
    `tools/list: first ${times[0]!.toFixed(0)} ms, median of ${LISTS} ${median(times).toFixed(0)} ms, ${(bytes / 1048576).toFixed(1)} MB`,
  );
  console.log(
    `RSS (MB): idle ${idle}, after creates ${made}, after ${LISTS} tools/list ${afterLists} (+${afterLists - idle} over idle), after one call ${afterCall}`,
  );
} finally {
  await server.stop();
}
