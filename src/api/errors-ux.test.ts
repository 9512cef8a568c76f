// test-database: embedded, create and run tools one call at a time
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { encodeEnvHeader } from '../core/env-header.js';
import { DomainError } from '../core/errors.js';
import {
  callError,
  callOk,
  connect,
  createAccount,
  parseResult,
  postJson,
  startTestServer,
  type McpTestClient,
  type TestServer,
} from '../test-support/harness.js';

let server: TestServer;
before(async () => {
  server = await startTestServer();
});
after(async () => {
  await server?.stop();
});

interface Space {
  create: McpTestClient;
  key: string;
  ns: string;
  run(mode?: 'code' | 'tools'): Promise<McpTestClient>;
}

async function space(): Promise<Space> {
  const account = await createAccount(server.url);
  const ns = `ux-${Math.random().toString(36).slice(2, 10)}`;
  const create = await connect(`${server.url}/mcp/create/${ns}`, account.key);
  await callOk(create, 'make_namespace', { name: ns });
  await callOk(create, 'make_service', { name: 'math' });
  return {
    create,
    key: account.key,
    ns,
    run: (mode = 'code') => connect(`${server.url}/mcp/run/${ns}${mode === 'tools' ? '?mode=tools' : ''}`, account.key, 'v2'),
  };
}

const TS_MAIN = 'export default function main(input: { n: number }): number {\n  const twice: number = input.n * 2;\n  return twice;\n}\n';

describe('code that does not parse is refused when it is stored', () => {
  test('Python that does not compile: make_function and update_function refuse it with the line; nothing is stored', async () => {
    const s = await space();
    const bad = await callError(s.create, 'make_function', {
      service: 'math',
      name: 'half',
      code: 'def main(input_data):\n    x = (1,\n    return x\n',
    });
    assert.equal(bad.type, 'validation_error');
    assert.equal(bad.field, 'code');
    assert.equal(typeof bad.line, 'number');
    assert.match(bad.message, /not valid Python .* line \d+/);
    assert.deepEqual(await callOk(s.create, 'list_functions', { service: 'math' }), [], 'nothing was stored');

    await callOk(s.create, 'make_function', { service: 'math', name: 'half', code: 'def main(input_data):\n    return 1\n' });
    const update = await callError(s.create, 'update_function', {
      service: 'math',
      name: 'half',
      code: 'def main(input_data):\n    return 1\n  oops\n',
    });
    assert.equal(update.type, 'validation_error');
    assert.equal(update.line, 3);
    assert.equal((await callOk(s.create, 'describe_function', { service: 'math', name: 'half' })).active_version, 1, 'no new version');
    // Compiled, never run: code whose import would fail at run time is stored (it parses).
    await callOk(s.create, 'update_function', {
      service: 'math',
      name: 'half',
      code: 'import no_such_module_here\ndef main(input_data):\n    return 2\n',
    });
  });

  test('TypeScript sent without language is refused as Python, saying it looks like TypeScript; with language it is stored', async () => {
    const s = await space();
    const error = await callError(s.create, 'make_function', { service: 'math', name: 'twice', code: TS_MAIN });
    assert.equal(error.type, 'validation_error');
    assert.equal(error.looks_like, 'typescript');
    assert.match(error.message, /looks like TypeScript: pass language: "typescript"/);
    await callOk(s.create, 'make_function', { service: 'math', name: 'twice', language: 'typescript', code: TS_MAIN });
    // Switching the language alone re-checks the stored code against the new language.
    const switched = await callError(s.create, 'update_function', { service: 'math', name: 'twice', language: 'python' });
    assert.equal(switched.looks_like, 'typescript');
  });

  test('TypeScript that does not parse is refused with its line; Python sent as TypeScript is named', async () => {
    const s = await space();
    const error = await callError(s.create, 'make_function', {
      service: 'math',
      name: 'bad',
      language: 'typescript',
      code: 'export default function main() {\n  const x: number = ;\n}\n',
    });
    assert.equal(error.type, 'validation_error');
    assert.equal(error.line, 2);
    assert.match(error.message, /not valid TypeScript: main\.ts:2:/);
    const python = await callError(s.create, 'make_function', {
      service: 'math',
      name: 'py',
      language: 'typescript',
      code: 'def main(input_data):\n    return {"ok": True}\n',
    });
    assert.equal(python.looks_like, 'python');
  });
});

describe('unknown names list the available ones and the nearest', () => {
  test('create endpoint: function, service, namespace and template not found', async () => {
    const s = await space();
    await callOk(s.create, 'make_function', { service: 'math', name: 'is-prime', code: 'def main(input_data):\n    return True\n' });
    await callOk(s.create, 'make_function', { service: 'math', name: 'fib', code: 'def main(input_data):\n    return 1\n' });
    for (const [tool, args] of [
      ['update_function', { service: 'math', name: 'is-primes', code: 'result = 1' }],
      ['delete_function', { service: 'math', name: 'is-primes' }],
      ['describe_function', { service: 'math', name: 'is-primes' }],
      ['lock_function', { service: 'math', name: 'is-primes' }],
    ] as const) {
      const error = await callError(s.create, tool, args);
      assert.equal(error.type, 'not_found', tool);
      assert.deepEqual(error.did_you_mean, ['is-prime'], tool);
      assert.deepEqual(error.available, ['fib', 'is-prime'], tool);
      assert.match(error.message, /Did you mean 'is-prime'\? Available functions in service 'math': fib, is-prime\./, tool);
    }
    const service = await callError(s.create, 'list_functions', { service: 'maths' });
    assert.equal(service.type, 'not_found');
    assert.deepEqual(service.did_you_mean, ['math']);
    const template = await callError(s.create, 'describe_template', { name: 'hello_world' });
    assert.deepEqual(template.did_you_mean, ['hello-world']);
    // Only the caller's own namespaces are named.
    const other = await space();
    const wrong = await connect(`${server.url}/mcp/create/${s.ns}x`, s.key, 'v2');
    const namespace = await callError(wrong, 'list_services');
    assert.equal(namespace.type, 'not_found');
    assert.deepEqual(namespace.available, [s.ns]);
    assert.deepEqual(namespace.did_you_mean, [s.ns]);
    assert.ok(!namespace.message.includes(other.ns));
  });

  test('code mode: importing an unknown function names the available ones, in Python and TypeScript', async () => {
    const s = await space();
    await callOk(s.create, 'make_function', { service: 'math', name: 'csv-analyzer', template: 'csv-analyzer' });
    await callOk(s.create, 'make_function', { service: 'math', name: 'hello', template: 'hello-world' });
    const run = await s.run();
    for (const code of [
      'from functions import analyze_csv',
      'import functions\nfunctions.analyze_csv()',
      'from functions.math import analyze_csv',
      'def f():\n    from functions import (hello, analyze_csv)\nf()',
      'import functions\ngetattr(functions.math, "analyze_csv")',
    ]) {
      const answer = await run.callTool('execute', { code });
      assert.equal(answer.isError, true);
      const body = parseResult(answer);
      assert.equal(body.error_type, 'FunctionNotFoundError', code);
      assert.match(
        body.error,
        /has no function or service 'analyze_csv'\. Did you mean 'csv_analyzer'\? Available in functions(\.math)?: .*csv_analyzer, hello/,
        code,
      );
    }
    // hasattr() and getattr() with a default answer as for any module: attribute access raises an
    // AttributeError (named FunctionNotFoundError), `from … import` an ImportError, both with the names.
    const probes = [
      'hasattr(functions, "__wrapped__")',
      'hasattr(functions, "analyze_csv")',
      'hasattr(functions.math, "analyze_csv")',
      'getattr(functions, "analyze_csv", "none") == "none"',
      'hasattr(functions, "csv_analyzer") and hasattr(functions.math, "hello")',
    ];
    const code = `import functions\nresult = [${probes.join(', ')}]\ntry:\n    functions.nope\nexcept AttributeError as e:\n    result.append(type(e).__name__)\ntry:\n    from functions import nope\nexcept ImportError as e:\n    result.append(isinstance(e, functions.FunctionNotFoundError))`;
    assert.deepEqual(parseResult(await run.callTool('execute', { code })), [
      false,
      false,
      false,
      true,
      true,
      'FunctionNotFoundError',
      true,
    ]);
    for (const code of [
      'import { analyze_csv } from "functions";\nresult = await analyze_csv({});',
      'import { analyze_csv } from "functions/math";\nresult = await analyze_csv({});',
    ]) {
      const answer = await run.callTool('execute', { code, language: 'typescript' });
      assert.equal(answer.isError, true);
      const body = parseResult(answer);
      assert.equal(body.error_type, 'FunctionNotFoundError', code);
      assert.match(
        body.error,
        /has no function or service 'analyze_csv'\. Did you mean 'csv_analyzer'\? Available in 'functions(\/math)?': .*csv_analyzer, hello/,
        code,
      );
    }
  });
});

describe('unknown tool names on the MCP endpoints', () => {
  test('tool mode, code mode and the create endpoint, every era: the protocol error lists the tools and the nearest names', async () => {
    const s = await space();
    await callOk(s.create, 'make_function', { service: 'math', name: 'csv-analyzer', template: 'csv-analyzer' });
    await callOk(s.create, 'make_function', { service: 'math', name: 'hello', template: 'hello-world' });
    for (const era of ['v1', 'v2-legacy', 'v2'] as const) {
      const tools = await connect(`${server.url}/mcp/run/${s.ns}?mode=tools`, s.key, era);
      const code = await connect(`${server.url}/mcp/run/${s.ns}`, s.key, era);
      try {
        await assert.rejects(tools.callTool('math__csv_analyser', {}), (error: any) => {
          assert.match(
            error.message,
            /Tool math__csv_analyser not found in namespace '[^']+'\. Did you mean 'math__csv-analyzer'[^?]*\? Available tools: _env_status, math__csv-analyzer, math__hello\./,
            era,
          );
          if (error.data !== undefined) assert.equal(error.data.did_you_mean[0], 'math__csv-analyzer', era);
          return true;
        });
        await assert.rejects(
          code.callTool('exec', { code: 'result = 1' }),
          /Tool exec not found .*Did you mean 'execute'\? Available tools: execute\./,
        );
        // The create endpoint answers an unknown tool the same way.
        const create = await connect(`${server.url}/mcp/create/${s.ns}`, s.key, era);
        try {
          await assert.rejects(
            create.callTool('make_functoin', {}),
            /Tool make_functoin not found in namespace '[^']+'\. Did you mean 'make_function'[^?]*\? Available tools: .*list_functions.*make_function/,
          );
          assert.ok(Array.isArray(await callOk(create, 'list_services')));
        } finally {
          await create.close();
        }
        // A known tool is unaffected.
        assert.equal(parseResult(await code.callTool('execute', { code: 'result = 2' })), 2);
      } finally {
        await tools.close();
        await code.close();
      }
    }
  });
});

describe('one error shape on the run endpoint', () => {
  test('refusals before a run have the shape of a failed run: {error, error_type, stderr}', async () => {
    const s = await space();
    await callOk(s.create, 'make_function', { service: 'math', name: 'boom', code: 'def main(input_data):\n    raise ValueError("no")\n' });
    const run = await s.run();
    const failed = parseResult(await run.callTool('execute', { code: 'raise ValueError("no")' }));
    const refused = parseResult(await run.callTool('execute', { code: 'result = 1', language: 'ruby' }));
    for (const body of [failed, refused]) {
      assert.equal(typeof body.error, 'string', JSON.stringify(body));
      assert.equal(typeof body.error_type, 'string');
      assert.equal(typeof body.stderr, 'string');
    }
    assert.equal(refused.error_type, 'validation_error');
    assert.equal(refused.field, 'language');
    // A namespace the key does not have: not_found in the same shape, in both modes.
    const elsewhere = await connect(`${server.url}/mcp/run/${s.ns}-nope?mode=tools`, s.key, 'v2');
    const missing = parseResult(await elsewhere.callTool('_env_status'));
    assert.equal(missing.error_type, 'not_found');
    assert.equal(typeof missing.error, 'string');
    const tools = await s.run('tools');
    const raised = parseResult(await tools.callTool('math__boom'));
    assert.deepEqual([typeof raised.error, raised.error_type], ['string', 'ValueError']);
  });
});

describe('one error shape everywhere', () => {
  const assertShape = (body: any, type: string, what: string) => {
    assert.equal(typeof body?.error, 'string', `${what}: ${JSON.stringify(body)}`);
    assert.equal(body.error_type, type, `${what}: ${JSON.stringify(body)}`);
  };

  test('create tools, the run endpoint, the HTTP API and HTTP refusals all answer {"error": message, "error_type": T, …}', async () => {
    const s = await space();
    const created = await s.create.callTool('make_function', { service: 'math', name: 'rb', code: 'result = 1', language: 'ruby' });
    assert.equal(created.isError, true);
    assertShape(parseResult(created), 'validation_error', 'create tool error');
    assert.match(parseResult(created).error, /language/);
    const ran = await (await s.run()).callTool('execute', { code: 'result = 1', language: 'ruby' });
    assertShape(parseResult(ran), 'validation_error', 'run tool error');

    const account = await createAccount(server.url);
    const duplicate = await postJson(`${server.url}/register`, { email: account.email, password: account.password });
    assert.equal(duplicate.status, 409);
    assertShape(duplicate.body, 'conflict', 'duplicate registration');
    const badLogin = await postJson(`${server.url}/login`, { email: account.email, password: 'not the password at all' });
    assert.equal(badLogin.status, 401);
    assertShape(badLogin.body, 'unauthorized', 'bad login');
    const unknown = await fetch(`${server.url}/no-such-route`);
    assert.equal(unknown.status, 404);
    assertShape(await unknown.json(), 'not_found', 'unknown route');
  });

  test('a detail never overwrites error or error_type', () => {
    const body = new DomainError('conflict', 'the message', { error: 'forged', error_type: 'forged', field: 'name' }).toJSON();
    assert.deepEqual(body, { error: 'the message', error_type: 'conflict', field: 'name' });
  });
});

describe('execute without a result', () => {
  test('a null result comes with a hint to assign `result`, in both languages; a real result has none', async () => {
    const s = await space();
    const run = await s.run();
    for (const [code, language] of [
      ['x = 1 + 1\nprint(x)', 'python'],
      ['const x = 1 + 1;\nconsole.log(x);', 'typescript'],
    ] as const) {
      const answer = await run.callTool('execute', { code, language });
      assert.equal(answer.isError, undefined);
      assert.equal(parseResult(answer), null);
      const texts = (answer.content as Array<{ text: string }>).map((c) => c.text);
      assert.equal(texts[1], 'stdout:\n2\n', language);
      assert.match(texts[2] ?? '', /^hint: the result is null because nothing was assigned to `result`/, language);
    }
    const answered = await run.callTool('execute', { code: 'result = 2' });
    assert.deepEqual(
      (answered.content as Array<{ text: string }>).map((c) => c.text),
      ['2'],
    );
    // A large answer is rendered in a scan worker: the hint is there too.
    const large = await run.callTool('execute', { code: 'print("y" * 40000)' });
    const largeTexts = (large.content as Array<{ text: string }>).map((c) => c.text);
    assert.equal(largeTexts[0], 'null');
    assert.match(largeTexts[2] ?? '', /^hint: the result is null because nothing was assigned to `result`/);
    // A function's own tool never gets it.
    await callOk(s.create, 'make_function', { service: 'math', name: 'nothing', code: 'def main(input_data):\n    return None\n' });
    const tools = await s.run('tools');
    assert.deepEqual(
      ((await tools.callTool('math__nothing')).content as Array<{ text: string }>).map((c) => c.text),
      ['null'],
    );
  });
});

describe("make_namespace from another namespace's URL", () => {
  test("answers the new namespace's create and run URLs, and says this connection still acts on its own", async () => {
    const s = await space();
    const other = `${s.ns}-two`;
    const made = await callOk(s.create, 'make_namespace', { name: other });
    assert.equal(made.create_url, `${server.url}/mcp/create/${other}`);
    assert.equal(made.run_url, `${server.url}/mcp/run/${other}`);
    assert.match(made.note, new RegExp(`still acts on namespace '${s.ns}'`));
    // The URLs work, and the old connection still acts on its own namespace.
    const next = await connect(made.create_url, s.key, 'v1');
    assert.deepEqual(await callOk(next, 'list_services'), []);
    assert.deepEqual(
      (await callOk(s.create, 'list_services')).map((x: { name: string }) => x.name),
      ['math'],
    );
    const fresh = await connect(`${server.url}/mcp/create/${s.ns}-three`, s.key, 'v2');
    const own = await callOk(fresh, 'make_namespace', { name: `${s.ns}-three` });
    assert.equal(own.note, undefined, 'no note when the URL names the new namespace');
    assert.equal(own.run_url, `${server.url}/mcp/run/${s.ns}-three`);
  });
});

describe('sandbox network off', () => {
  test('create warns when a function will need the network; a network failure names the cause and MCPWORKS_SANDBOX_NETWORK=on', async () => {
    const s = await space();
    const api = await callOk(s.create, 'make_function', { service: 'math', name: 'api', template: 'api-connector' });
    assert.equal(api.warnings.length, 1);
    assert.match(api.warnings[0], /sandbox network is off.*template 'api-connector'.*MCPWORKS_SANDBOX_NETWORK=on/);
    const requests = await callOk(s.create, 'make_function', {
      service: 'math',
      name: 'fetcher',
      requirements: ['requests'],
      code: 'def main(input_data):\n    return 1\n',
    });
    assert.match(requests.warnings[0], /requirement requests is for reaching other hosts/);
    const plain = await callOk(s.create, 'make_function', { service: 'math', name: 'hello', template: 'hello-world' });
    assert.equal(plain.warnings, undefined);
    const updated = await callOk(s.create, 'update_function', { service: 'math', name: 'hello', requirements: ['httpx'] });
    assert.match(updated.warnings[0], /requirement httpx/);

    const tools = await s.run('tools');
    const failed = parseResult(await tools.callTool('math__api', { url: 'http://nowhere.invalid/', method: 'GET' }));
    assert.match(failed.error, /sandbox network is off on this server.*MCPWORKS_SANDBOX_NETWORK=on/s, JSON.stringify(failed));
    const run = await s.run();
    for (const [code, language] of [
      ['import socket\nresult = socket.getaddrinfo("nowhere.invalid", 80)', 'python'],
      ['result = await fetch("http://nowhere.invalid/");', 'typescript'],
    ] as const) {
      const body = parseResult(await run.callTool('execute', { code, language }));
      assert.match(
        body.error,
        /sandbox network is off on this server.*MCPWORKS_SANDBOX_NETWORK=on/s,
        `${language}: ${JSON.stringify(body)}`,
      );
    }
    // Other failures are left as they are.
    assert.doesNotMatch(parseResult(await run.callTool('execute', { code: 'raise ValueError("no")' })).error, /network/);
  });
});

describe('history', () => {
  test("list_executions(function=X) includes code-mode runs that called X; describe_execution keeps an execute's code, bounded", async () => {
    const s = await space();
    await callOk(s.create, 'make_function', { service: 'math', name: 'is-prime', code: 'def main(input_data):\n    return True\n' });
    await callOk(s.create, 'make_function', { service: 'math', name: 'other', code: 'def main(input_data):\n    return 1\n' });
    const tools = await s.run('tools');
    await tools.callTool('math__is-prime');
    const run = await s.run();
    const code = '# find primes\nfrom functions import is_prime\nresult = is_prime(n=7)';
    await run.callTool('execute', { code });
    await run.callTool('execute', { code: 'from functions import other\nresult = other()' });
    for (const filter of ['is-prime', 'math.is-prime']) {
      const listed = await callOk(s.create, 'list_executions', { function: filter });
      assert.deepEqual(
        listed.map((e: { mode: string }) => e.mode),
        ['code', 'tools'],
        filter,
      );
    }
    assert.equal((await callOk(s.create, 'list_executions', { function: 'other.is-prime' })).length, 0);
    const [latest] = await callOk(s.create, 'list_executions', { function: 'is-prime', limit: 1 });
    const described = await callOk(s.create, 'describe_execution', { id: latest.id });
    assert.equal(described.code, code);
    const [toolRun] = (await callOk(s.create, 'list_executions', { function: 'is-prime' })).slice(-1);
    assert.equal(
      (await callOk(s.create, 'describe_execution', { id: toolRun.id })).code,
      undefined,
      'tool-mode runs have no code of their own',
    );
    // Bounded: longer code is cut at 64 KB with a marker; secrets in it are redacted like output.
    const long = `# sk-proj-${'a'.repeat(48)}\nresult = 1\n${'#'.repeat(70 * 1024)}`;
    await run.callTool('execute', { code: long });
    const [big] = await callOk(s.create, 'list_executions', { limit: 1 });
    const kept = (await callOk(s.create, 'describe_execution', { id: big.id })).code as string;
    assert.match(kept, /\[… code cut at 65536 characters of \d+\]$/);
    assert.ok(kept.length < 65536 + 100);
    assert.ok(kept.includes('[REDACTED_API_KEY]') && !kept.includes('aaaaaaaa'), kept.slice(0, 80));

    // Over 1 KB of env values sends the scan to a worker: the code is redacted there the same way,
    // and the run still answers and is recorded.
    await callOk(s.create, 'make_function', {
      service: 'math',
      name: 'needs-token',
      code: 'def main(input_data):\n    return 1\n',
      required_env: ['BIG_TOKEN'],
    });
    const token = `tok${'x9Y'.repeat(700)}`;
    const withEnv = await connect(`${server.url}/mcp/run/${s.ns}`, s.key, 'v2', {
      'x-mcpworks-env': encodeEnvHeader({ BIG_TOKEN: token }),
    });
    const answered = await withEnv.callTool('execute', { code: `# ${token}\nresult = 2` });
    assert.equal(parseResult(answered), 2);
    const [withToken] = await callOk(s.create, 'list_executions', { limit: 1 });
    const keptCode = (await callOk(s.create, 'describe_execution', { id: withToken.id })).code as string;
    assert.ok(keptCode.includes('[REDACTED_ENV_VALUE]') && !keptCode.includes('x9Yx9Y'), keptCode.slice(0, 80));
  });
});
