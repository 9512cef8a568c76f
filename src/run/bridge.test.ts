// The code-mode bridge's rules without a sandbox or a server: a fake Sandbox and fake schema and
// rate checks stand in for the real ones (the host suites, bridge-rules.host and run-code, drive
// the same bridge through real sandboxes).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { sandboxLimitsFor, type Sandbox, type SandboxRequest } from '../core/sandbox.js';
import type { ActiveFunction, RunDefinition } from '../store/catalog-store.js';
import { CodeModeBridge, MAX_BRIDGE_CALLS, MAX_RECORDED_CALLS, type BridgeRun } from './bridge.js';
import type { NamespaceSnapshot } from './run-service.js';

function fn(name: string, definition: Partial<RunDefinition> = {}): ActiveFunction {
  return {
    functionId: `f-${name}`,
    versionId: `v-${name}`,
    service: 'utils',
    name,
    description: '',
    tags: [],
    version: 3,
    definition: {
      language: 'python',
      backend: 'code_sandbox',
      config: null,
      inputSchema: null,
      outputSchema: null,
      requirements: [],
      requiredEnv: [],
      optionalEnv: [],
      ...definition,
    } as RunDefinition,
    definitionHash: name,
    schemaBytes: 0,
  };
}

const namespace: NamespaceSnapshot = {
  namespaceId: 'ns-1',
  catalogVersion: 1,
  functions: [
    fn('plain'),
    fn('typed', { inputSchema: { type: 'object', required: ['n'] }, outputSchema: { type: 'object' } }),
    fn('needs', { requiredEnv: ['TOKEN'], optionalEnv: ['EXTRA'] }),
    fn('node', { language: 'typescript', requiredEnv: [], optionalEnv: ['EXTRA'] }),
    fn('broken-ts', { language: 'typescript' }),
    fn('node-typed', { language: 'typescript', outputSchema: { type: 'object', required: ['n'] } }),
  ],
};

/** A bridge over fakes; `clock` moves time, `runs` records what reached the sandbox. */
function setup(overrides: Partial<BridgeRun> = {}, rateUnits = Infinity) {
  const runs: SandboxRequest[] = [];
  let clock = 1_000_000;
  let units = rateUnits;
  const sandbox: Sandbox = {
    async run(request) {
      runs.push(request);
      return { ok: true, result: { echoed: request.input }, stdout: '', stderr: '', durationMs: 1 };
    },
    async close() {},
  };
  const bridge = new CodeModeBridge(
    {
      namespace,
      language: 'python',
      accountId: 'acct',
      env: { TOKEN: 't', EXTRA: 'e', UNDECLARED: 'u' },
      limits: sandboxLimitsFor({ timeoutSeconds: 30, memoryMb: 256, maxResultBytes: 1024 }),
      perMinute: 60,
      transpileErrors: new Map([['utils.broken-ts', 'does not transpile']]),
      signal: new AbortController().signal,
      now: () => clock,
      ...overrides,
    },
    {
      sandbox,
      schemas: {
        async check(schema, value) {
          const required = (schema.required as string[] | undefined) ?? [];
          const missing = required.filter((key) => (value as Record<string, unknown>)[key] === undefined);
          return missing.length ? { ok: false, problems: missing.map((key) => `${key} is required`) } : { ok: true };
        },
      },
      metering: { takeRateUnit: async () => (units-- > 0 ? { taken: true } : { taken: false, windowEndsInMs: 60_000 }) },
      codeOf: async (f) => `code of ${f.name}`,
      nodeModulesFor: async () => undefined,
    },
  );
  return { bridge, runs, tick: (ms: number) => (clock += ms) };
}

const call = (service: string, fnName: string, input?: unknown) => ({ op: 'call', service, function: fnName, input });

describe('the code-mode bridge (CodeModeBridge, fake sandbox)', () => {
  test('a same-language call without schemas is answered in the sandbox; unknown requests and functions are refused', async () => {
    const { bridge, runs } = setup();
    assert.deepEqual(await bridge.handle(call('utils', 'plain')), { ok: true });
    assert.deepEqual(await bridge.handle({ op: 'nope' }), { ok: false, error_type: 'BridgeError', error: 'unknown bridge request' });
    assert.deepEqual(await bridge.handle(call('utils', 'ghost')), {
      ok: false,
      error_type: 'NotFound',
      error: 'function utils.ghost not found',
    });
    assert.deepEqual(bridge.calls, ['utils.plain@3']);
    assert.equal(runs.length, 0);
  });

  test('missing env and a bad input are refused before any run, with the shared checks', async () => {
    const { bridge } = setup({ env: {} });
    const missing = (await bridge.handle(call('utils', 'needs'))) as { error_type: string; error: string };
    assert.equal(missing.error_type, 'missing_env');
    assert.match(missing.error, /^utils\.needs: missing required environment variables: TOKEN/);
    const bad = (await bridge.handle(call('utils', 'typed', {}))) as { error_type: string };
    assert.equal(bad.error_type, 'SchemaError');
    assert.deepEqual(await bridge.handle(call('utils', 'typed', { n: 1 })), { ok: true, check: true });
  });

  test('a same-language result is checked against output_schema only as often as such calls were answered', async () => {
    const { bridge } = setup();
    const result = { op: 'result', service: 'utils', function: 'typed', result: { a: 1 } };
    assert.equal(((await bridge.handle(result)) as { error_type: string }).error_type, 'BridgeError');
    await bridge.handle(call('utils', 'typed', { n: 1 }));
    assert.deepEqual(await bridge.handle(result), { ok: true });
    assert.equal(((await bridge.handle(result)) as { error_type: string }).error_type, 'BridgeError');
  });

  test('a same-language function whose TypeScript did not transpile answers its transpile error', async () => {
    const { bridge, runs } = setup({ language: 'typescript' });
    assert.deepEqual(await bridge.handle(call('utils', 'broken-ts')), {
      ok: false,
      error_type: 'TranspileError',
      error: 'does not transpile',
    });
    assert.equal(runs.length, 0);
  });

  test('an other-language call runs in a sandbox of its own with its declared env and the time left', async () => {
    const { bridge, runs, tick } = setup();
    tick(12_500);
    assert.deepEqual(await bridge.handle(call('utils', 'node', { x: 1 })), { ok: true, result: { echoed: { x: 1 } } });
    assert.equal(runs.length, 1);
    assert.equal(runs[0]!.language, 'typescript');
    assert.equal(runs[0]!.code, 'code of node');
    assert.deepEqual(runs[0]!.env, { EXTRA: 'e' });
    assert.equal(runs[0]!.limits.timeoutSeconds, 18);
    assert.equal(runs[0]!.limits.maxResultBytes, 1024, "the caller's tier limits, not another's");
    assert.ok(runs[0]!.signal, "the run carries the execute's signal");
  });

  test("an other-language callee's result is checked against its output_schema", async () => {
    const { bridge, runs } = setup();
    const answer = (await bridge.handle(call('utils', 'node-typed', { x: 1 }))) as { ok: boolean; error_type: string; error: string };
    assert.equal(runs.length, 1);
    assert.equal(answer.ok, false);
    assert.equal(answer.error_type, 'SchemaError');
    assert.match(answer.error, /does not match output_schema: n is required/);
  });

  test('a call that costs the server work takes a rate unit; once refused, the minute refuses without asking again', async () => {
    const { bridge } = setup({}, 1);
    assert.deepEqual(await bridge.handle(call('utils', 'node')), { ok: true, result: { echoed: {} } });
    assert.equal(((await bridge.handle(call('utils', 'node'))) as { error_type: string }).error_type, 'EXECUTION_RATE_EXCEEDED');
    // A free call (same language, no schemas) is not metered.
    assert.deepEqual(await bridge.handle(call('utils', 'plain')), { ok: true });
  });

  test('past the deadline or after finish() nothing starts; the call budget and the recorded calls are bounded', async () => {
    const late = setup();
    late.tick(30_000);
    assert.deepEqual(await late.bridge.handle(call('utils', 'plain')), {
      ok: false,
      error_type: 'BridgeError',
      error: 'the run has ended',
    });
    const ended = setup();
    ended.bridge.finish();
    assert.deepEqual(await ended.bridge.handle(call('utils', 'plain')), {
      ok: false,
      error_type: 'BridgeError',
      error: 'the run has ended',
    });
    const busy = setup();
    for (let i = 0; i < MAX_BRIDGE_CALLS; i++) await busy.bridge.handle(call('utils', 'plain'));
    assert.deepEqual(await busy.bridge.handle(call('utils', 'plain')), {
      ok: false,
      error_type: 'BridgeError',
      error: `at most ${MAX_BRIDGE_CALLS} bridge requests per execute (a function call is one, its output_schema check one more, a state request one)`,
    });
    assert.equal(busy.bridge.calls.length, MAX_RECORDED_CALLS);
  });

  test('an aborted run starts no other-language sandbox', async () => {
    const controller = new AbortController();
    controller.abort();
    const { bridge, runs } = setup({ signal: controller.signal });
    const answer = (await bridge.handle(call('utils', 'node'))) as { ok: boolean; error_type: string };
    assert.equal(answer.ok, false);
    assert.equal(runs.length, 0);
  });
});
