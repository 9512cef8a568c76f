// test-database: embedded, the meter from host facts, one call at a time
// The meter and the output scanner under attack, through the real server, real sandboxes and the
// official MCP SDK: a run's own word never makes it free (issue 10, item 2); the scanner is one
// linear pass over the forms everyday code writes secrets in, and a run whose code ran is always
// counted and recorded (item 3); code-mode calls that start sandboxes take per-minute rate units
// (item 17). Each case ends by checking that /healthz still answers promptly and the meter is right.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { applyTierOverrides } from '../core/tiers.js';
import { callOk, parseResult, type McpTestClient, type TestServer } from '../test-support/harness.js';
import { startRuleServer, type RuleServer, type Space } from '../test-support/spaces.js';
import { fetchWithin, sandboxRunsStarted, until } from '../test-support/processes.js';
import type { BubblewrapSandbox } from '../sandbox/bubblewrap.js';

let rules: RuleServer;
let server: TestServer;
before(async () => {
  rules = await startRuleServer(
    applyTierOverrides(JSON.stringify({ rate3: { monthly_executions: -1, executions_per_minute: 3, concurrency: -1 } })),
  );
  server = rules.server;
});
after(async () => {
  await rules?.stop();
});

const space = (functions: Array<Record<string, unknown>>, tier?: string) => rules.space(functions, tier);
/** Both modes through the 2025-era SDK client (v1). */
const runAs = (s: Space, mode: 'tools' | 'code', env?: Record<string, string>) => s.run(mode, env, 'v1');
const meterOf = (s: Space) => rules.usageOf(s.account);

/** /healthz answers, and within a bound far above its usual milliseconds (a blocked event loop misses it). */
async function healthzPrompt(): Promise<void> {
  const health = await fetchWithin(2_000, `${server.url}/healthz`);
  assert.equal(health.status, 200);
}

/** Polls /healthz until `pending` settles; every answer must come promptly. */
async function healthzThroughout<T>(pending: Promise<T>): Promise<T> {
  let done = false;
  const watched = pending.finally(() => (done = true));
  let polls = 0;
  while (!done) {
    await healthzPrompt();
    polls++;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  assert.ok(polls > 0);
  return watched;
}

async function execute(client: McpTestClient, code: string, language: 'python' | 'typescript' = 'python') {
  return parseResult(await client.callTool('execute', { code, language }));
}

describe('item 2: the meter decides platform failures from the host alone', () => {
  test("a function's own SandboxError (raised or written on its channel) is metered and recorded as UserSandboxError", async () => {
    const s = await space([
      {
        name: 'py-raise',
        code: 'class SandboxError(Exception):\n    pass\n\ndef main(input_data):\n    print("output anyway")\n    raise SandboxError("not the platform")\n',
      },
      {
        name: 'py-forge',
        code: 'import os\n\ndef main(input_data):\n    print("output anyway")\n    os.write(3, b\'{"ok": false, "type": "SandboxError", "message": "forged"}\\n\')\n    return 1\n',
      },
      {
        name: 'ts-raise',
        language: 'typescript',
        code: 'class SandboxError extends Error {}\nexport default function main() {\n  throw new SandboxError("not the platform");\n}\n',
      },
      {
        name: 'ts-forge',
        language: 'typescript',
        code: 'import { writeSync } from "node:fs";\nexport default function main() {\n  writeSync(3, JSON.stringify({ ok: false, type: "SandboxError", message: "forged" }) + "\\n");\n  return 1;\n}\n',
      },
    ]);
    const tools = await runAs(s, 'tools');
    for (const name of ['py-raise', 'py-forge', 'ts-raise', 'ts-forge']) {
      const answer = parseResult(await tools.callTool(`utils__${name}`));
      assert.equal(answer.error_type, 'UserSandboxError', name);
    }
    assert.match(parseResult(await tools.callTool('utils__py-raise')).stdout, /output anyway/, 'its output is returned, and paid for');
    const code = await runAs(s, 'code');
    assert.equal((await execute(code, 'class SandboxError(Exception):\n    pass\nraise SandboxError("x")')).error_type, 'UserSandboxError');
    assert.equal(
      (await execute(code, 'import os\nos.write(3, b\'{"ok":false,"type":"SandboxError","message":"x"}\\n\')')).error_type,
      'UserSandboxError',
    );
    assert.equal(
      (await execute(code, 'class SandboxError extends Error {}\nthrow new SandboxError("x");', 'typescript')).error_type,
      'UserSandboxError',
    );
    // A cross-language callee's own SandboxError reaches the caller as the callee's failure.
    const callee = await execute(
      code,
      'from functions import ts_raise\ntry:\n    ts_raise()\nexcept Exception as e:\n    result = e.error_type',
    );
    assert.equal(callee, 'UserSandboxError');
    await healthzPrompt();
    const usage = await meterOf(s);
    assert.equal(usage.executions, 9, 'every call whose code ran counts');
    assert.equal(usage.concurrency.active, 0);
    const records = await callOk(s.create, 'list_executions');
    assert.equal(records.length, 9);
    assert.ok(
      records.every((r: { error_type: string | null }) => r.error_type !== 'SandboxError'),
      'nothing looks like a platform failure',
    );
  });
});

/** The server's sandbox spawner processes (host-bin/spawner.cjs, children of this test process). */
function spawners(): number[] {
  const read = (path: string) => {
    try {
      return readFileSync(path, 'utf8');
    } catch {
      return '';
    }
  };
  return readdirSync('/proc')
    .filter((pid) => /^\d+$/.test(pid))
    .filter((pid) => {
      const stat = read(`/proc/${pid}/stat`);
      return (
        Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === process.pid && read(`/proc/${pid}/cmdline`).includes('spawner.cjs')
      );
    })
    .map(Number);
}

describe('item 2: a real platform failure', () => {
  test('a run whose sandbox the host loses (its spawner killed mid-run) is a SandboxError, recorded, not counted', async () => {
    // The run outlives its spawner (killed while it waits), then ends without a word (SIGKILL: no
    // answer from its runner), so only the lost exit status can decide: the platform's failure.
    // Its own SIGKILL with the spawner alive is the user's (ProcessExitError, counted).
    const s = await space([
      {
        name: 'lost',
        language: 'typescript',
        code: "export default async function main() {\n  await new Promise((resolve) => setTimeout(resolve, 8_000));\n  process.kill(process.pid, 'SIGKILL');\n}\n",
      },
    ]);
    const tools = await runAs(s, 'tools');
    // Until the run is handed its sandbox, not a fixed wait that a loaded machine outlasts.
    const sandbox = server.server.services.sandbox as BubblewrapSandbox;
    const before = sandboxRunsStarted(sandbox);
    const pending = tools.callTool('utils__lost');
    await until(
      'the run in its sandbox',
      async () => sandboxRunsStarted(sandbox),
      (started) => started > before,
    );
    const pids = spawners();
    assert.ok(pids.length > 0, 'the server starts sandboxes through a spawner');
    for (const pid of pids) process.kill(pid, 'SIGKILL');
    const answer = parseResult(await pending);
    assert.equal(answer.error_type, 'SandboxError');
    await healthzPrompt();
    const usage = await meterOf(s);
    assert.equal(usage.executions, 0, 'the platform failed: nothing counted');
    assert.equal(usage.concurrency.active, 0);
    const [record] = await callOk(s.create, 'list_executions');
    assert.equal(record.error_type, 'SandboxError');
  });
});

// Values that make every form differ (non-ASCII, both quotes, a backslash, space, slash).
const SECRET = 'pä ss/wö(rd) "q" \\ it\'s~!ÿ??';
const MARKER = '[REDACTED_ENV_VALUE]';
const BASE64_EDGE = /^[A-Za-z0-9+/_=-]{0,4}\[REDACTED_ENV_VALUE\][A-Za-z0-9+/_=-]{0,4}$/;

describe('item 3: the output scanner', () => {
  // Two values of 5.5 KB: well within the header's limits (32 KB decoded, 48 KB of headers in all).
  test('two 5.5 KB env values and a 1 MB result that keeps almost matching them: /healthz answers throughout; counted and recorded', async () => {
    const s = await space([{ name: 'big', code: 'def main(input_data):\n    return "a" * 1_000_000\n', optional_env: ['ONE', 'TWO'] }]);
    const tools = await runAs(s, 'tools', { ONE: 'a'.repeat(5499) + 'b', TWO: 'a'.repeat(5498) + 'c' });
    const result = await healthzThroughout(tools.callTool('utils__big'));
    assert.equal(parseResult(result), 'a'.repeat(1_000_000));
    assert.equal((await meterOf(s)).executions, 1);
    assert.equal((await callOk(s.create, 'list_executions')).length, 1);
  });

  test("env values leak in none of the forms Python's json.dumps, repr, str(bytes), base64 and urllib write", async () => {
    const code = `import base64, json, os, urllib.parse
def main(input_data):
    v = os.environ["SECRET"]
    b = v.encode()
    print(json.dumps({"token": v}), repr(v), [v], b)
    return {
        "json": json.dumps(v)[1:-1], "json_twice": json.dumps(json.dumps({"t": v}))[11:-4], "repr": repr(v)[1:-1], "bytes": str(b)[2:-1],
        "quote": urllib.parse.quote(v), "quote_plus": urllib.parse.quote_plus(v), "hex": b.hex(),
        "b64": [base64.b64encode(b"x" * k + b + b"\\xff").decode() for k in range(3)],
        "b64url": [base64.urlsafe_b64encode(b"\\xfe" * k + b + b"\\xff").decode() for k in range(3)],
    }
`;
    const s = await space([{ name: 'leaky', code, required_env: ['SECRET'] }]);
    const tools = await runAs(s, 'tools', { SECRET });
    const answer = await tools.callTool('utils__leaky');
    const value = parseResult(answer);
    for (const name of ['json', 'json_twice', 'repr', 'bytes', 'quote', 'quote_plus', 'hex']) assert.equal(value[name], MARKER, name);
    for (const encoded of [...value.b64, ...value.b64url]) assert.match(encoded, BASE64_EDGE);
    const stdout = answer.content[1]?.text ?? '';
    assert.equal(stdout.split(MARKER).length - 1, 4, stdout);
    assert.ok(!stdout.includes('ss/w'), stdout);
    await healthzPrompt();
    assert.equal((await meterOf(s)).executions, 1);
  });

  test("env values leak in none of the forms Node's JSON.stringify, util.inspect, Buffer and encodeURIComponent write (code mode too)", async () => {
    const code = `import { inspect } from "node:util";
export default function main() {
  const v = process.env.SECRET!;
  const b = Buffer.from(v);
  console.log(JSON.stringify({ token: v }), { token: v });
  return {
    json: JSON.stringify(v).slice(1, -1), inspect: inspect(v).slice(1, -1), uri: encodeURIComponent(v), hex: b.toString("hex"),
    b64: [0, 1, 2].map((k) => Buffer.concat([Buffer.alloc(k, 120), b, Buffer.from([255])]).toString("base64")),
    b64url: [0, 1, 2].map((k) => Buffer.concat([Buffer.alloc(k, 254), b, Buffer.from([255])]).toString("base64url")),
  };
}
`;
    const s = await space([{ name: 'leaky', language: 'typescript', code, required_env: ['SECRET'] }]);
    const tools = await runAs(s, 'tools', { SECRET });
    const answer = await tools.callTool('utils__leaky');
    const value = parseResult(answer);
    for (const name of ['json', 'inspect', 'uri', 'hex']) assert.equal(value[name], MARKER, name);
    for (const encoded of [...value.b64, ...value.b64url]) assert.match(encoded, BASE64_EDGE);
    const stdout = answer.content[1]?.text ?? '';
    assert.equal(stdout.split(MARKER).length - 1, 2, stdout);
    const code2 = await runAs(s, 'code', { SECRET });
    // Same-language: the function runs inside the execute's sandbox; its output is the execute's.
    const fromCode = await execute(code2, 'import { leaky } from "functions";\nresult = JSON.stringify(await leaky({}));', 'typescript');
    assert.ok(!fromCode.includes('ss/w') && fromCode.includes(MARKER), fromCode);
    await healthzPrompt();
    assert.equal((await meterOf(s)).executions, 2);
  });

  test('an answer nested 400,000 deep is a SerializationError, counted and recorded (both languages, both modes)', async () => {
    const deep = 400_000;
    const s = await space([
      {
        name: 'ts-deep',
        language: 'typescript',
        code: `import { writeSync } from "node:fs";\nexport default function main() {\n  writeSync(3, '{"ok":true,"result":' + "[".repeat(${deep}) + "]".repeat(${deep}) + "}\\n");\n  return 1;\n}\n`,
      },
      {
        name: 'py-deep',
        code: `import os\n\ndef main(input_data):\n    os.write(3, b'{"ok": true, "result": ' + b'[' * ${deep} + b']' * ${deep} + b'}\\n')\n    return 1\n`,
      },
    ]);
    const tools = await runAs(s, 'tools');
    for (const name of ['ts-deep', 'py-deep'])
      assert.equal(parseResult(await healthzThroughout(tools.callTool(`utils__${name}`))).error_type, 'SerializationError', name);
    const code = await runAs(s, 'code');
    assert.equal(
      (await execute(code, `import os\nos.write(3, b'{"ok":true,"result":' + b'[' * ${deep} + b']' * ${deep} + b'}\\n')`)).error_type,
      'SerializationError',
    );
    assert.equal(
      (await execute(code, `let v: unknown = 1;\nfor (let i = 0; i < 5000; i++) v = [v];\nresult = v;`, 'typescript')).error_type,
      'SerializationError',
    );
    await healthzPrompt();
    const usage = await meterOf(s);
    assert.equal(usage.executions, 4);
    const records = await callOk(s.create, 'list_executions');
    assert.deepEqual(
      records.map((r: { error_type: string }) => r.error_type),
      Array(4).fill('SerializationError'),
    );
  });

  test('a run whose code ran is counted and recorded even when its function is deleted while it runs', async () => {
    const s = await space([{ name: 'slow', code: 'import time\n\ndef main(input_data):\n    time.sleep(2)\n    return "done"\n' }]);
    const tools = await runAs(s, 'tools');
    // Until its code is loaded and handed to a sandbox, not a fixed wait that a loaded machine outlasts.
    const sandbox = server.server.services.sandbox as BubblewrapSandbox;
    const before = sandboxRunsStarted(sandbox);
    const pending = tools.callTool('utils__slow');
    await until(
      'the run in its sandbox',
      async () => sandboxRunsStarted(sandbox),
      (started) => started > before,
    );
    await callOk(s.create, 'delete_function', { service: 'utils', name: 'slow' });
    assert.equal(parseResult(await pending), 'done');
    await healthzPrompt();
    const usage = await meterOf(s);
    assert.equal(usage.executions, 1);
    assert.equal(usage.concurrency.active, 0);
    const [record] = await callOk(s.create, 'list_executions');
    assert.equal(record.function, 'slow');
    assert.equal(record.status, 'success');
  });
});

describe('item 17: code-mode calls that start a sandbox', () => {
  test('take a unit of the per-minute rate each (not of the monthly quota); past it they fail inside the run', async () => {
    const program = `from functions import double, same
out = [same() for _ in range(5)]
for i in range(5):
    try:
        out.append(double(n=i))
    except Exception as e:
        out.append(e.error_type)
result = out`;
    // Every rate unit of a try must fall into one minute window: a try that straddles a window's end
    // (the clock read before and after differ) proves nothing and is made again with a fresh
    // account, instead of waiting for a window to start and trusting the try to end within 20 s.
    let seen: { answer: unknown; usage: any; record: any; refused: number } | undefined;
    for (let attempt = 1; attempt <= 3; attempt++) {
      const s = await space(
        [
          {
            name: 'double',
            language: 'typescript',
            code: 'export default function main(input: { n: number }) {\n  return input.n * 2;\n}\n',
          },
          { name: 'same', code: 'def main(input_data):\n    return 1\n' },
        ],
        'rate3',
      );
      const code = await runAs(s, 'code');
      const minute = Math.floor(Date.now() / 60_000);
      const answer = parseResult(await healthzThroughout(code.callTool('execute', { code: program, language: 'python' })));
      const usage = await meterOf(s);
      const [record] = await callOk(s.create, 'list_executions');
      const refused = await fetch(`${server.url}/mcp/run/${s.ns}?mode=code`, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          accept: 'application/json, text/event-stream',
          'mcp-protocol-version': '2025-06-18',
          authorization: `Bearer ${s.account.key}`,
        },
        body: JSON.stringify({
          jsonrpc: '2.0',
          id: 1,
          method: 'tools/call',
          params: { name: 'execute', arguments: { code: 'result = 1' } },
        }),
      });
      seen = { answer, usage, record, refused: refused.status };
      if (Math.floor(Date.now() / 60_000) === minute) break;
    }
    // The execute took one unit; two calls to the TypeScript function took the other two.
    assert.deepEqual(seen!.answer, [1, 1, 1, 1, 1, 0, 2, 'EXECUTION_RATE_EXCEEDED', 'EXECUTION_RATE_EXCEEDED', 'EXECUTION_RATE_EXCEEDED']);
    assert.equal(seen!.usage.executions, 1, 'the monthly quota counts the execute once');
    assert.equal(seen!.usage.executions_per_minute.used, 3);
    assert.equal(seen!.record.status, 'success');
    assert.equal(seen!.refused, 429, 'the next call waits for the next minute');
    await healthzPrompt();
  });
});
