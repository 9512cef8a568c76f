// test-database: embedded, redaction is the server's, not the database's
// Answers are redacted through the real server in both languages: a large answer (scanned in a
// scan worker while /healthz keeps answering), printed byte lists, and secrets cut short by the
// stdout/stderr cap or by util.inspect. Then history, /healthz and the meter.
// scripts/mutation/mutants.json names the enforcing lines this file must catch.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { DEFAULT_TIERS } from '../core/tiers.js';
import { callOk } from '../test-support/harness.js';
import { startRuleServer, type RuleServer } from '../test-support/spaces.js';
import { sharedScanPool } from './scan-pool.js';

let t: RuleServer;
before(async () => {
  t = await startRuleServer(DEFAULT_TIERS);
});
after(async () => {
  await t?.stop();
});

// 61 bytes: util.inspect shows 50 bytes of a Buffer, so a printed Buffer of it is cut short.
const TOKEN = 'answer-secret-' + 'k3Jx9QpL2vWm7RtY4nBc8HdF6sZa1GeU5oTi0yXq'.repeat(2).slice(0, 47);
const leaks = (text: string) =>
  [
    TOKEN.slice(0, 12),
    Buffer.from(TOKEN.slice(0, 12)).toString('base64').slice(0, 12),
    [...Buffer.from(TOKEN.slice(0, 6))].join(','),
    [...Buffer.from(TOKEN.slice(0, 6))].join(', '),
    Buffer.from(TOKEN.slice(0, 6))
      .toString('hex')
      .replace(/(..)(?!$)/g, '$1 '),
  ].filter((form) => text.includes(form));

describe('answer redaction', () => {
  test('a large answer is redacted in both languages, and /healthz answers while a worker scans it', async () => {
    const s = await t.space([
      {
        name: 'py-big',
        required_env: ['APP_TOKEN', 'OTHER'],
        code: 'import os, base64\ndef main(input_data):\n    t = os.environ["APP_TOKEN"]\n    print("out " + t)\n    return {"text": "x" * 600000 + " " + t + " " + base64.b64encode(t.encode()).decode()}\n',
      },
      {
        name: 'ts-big',
        language: 'typescript',
        required_env: ['APP_TOKEN', 'OTHER'],
        code: 'export default function main() {\n  const t = process.env.APP_TOKEN!;\n  console.log("out " + t);\n  return { text: "x".repeat(600000) + " " + t + " " + Buffer.from(t).toString("base64") };\n}\n',
      },
    ]);
    // A second, larger value makes a larger scanner: the scan is not over in an instant.
    const tools = await s.run('tools', { APP_TOKEN: TOKEN, OTHER: 'o'.repeat(3000) + 'p' });
    for (const tool of ['utils__py-big', 'utils__ts-big']) {
      let settled = false;
      const call = tools.callTool(tool).finally(() => (settled = true));
      let duringScan = 0;
      for (let polls = 0; !settled && polls < 100_000; polls++) {
        const response = await fetch(`${t.server.url}/healthz`);
        assert.equal(response.status, 200);
        await response.body?.cancel();
        if (sharedScanPool.running > 0) duringScan++;
      }
      const answer = await call;
      const text = JSON.stringify(answer);
      assert.equal(answer.isError, undefined, text.slice(0, 300));
      assert.deepEqual(leaks(text), [], tool);
      assert.match(text, /x \[REDACTED_ENV_VALUE\] \[REDACTED_ENV_VALUE\]/, tool);
      assert.match(text, /out \[REDACTED_ENV_VALUE\]/, tool);
      assert.ok(duringScan > 0, `${tool}: /healthz answered while the answer was being scanned`);
    }
    for (const { id } of await callOk(s.create, 'list_executions')) {
      const stored = await callOk(s.create, 'describe_execution', { id });
      assert.deepEqual(leaks(JSON.stringify(stored)), []);
      assert.match(stored.stdout, /out \[REDACTED_ENV_VALUE\]/);
    }
    await t.assertHealthy();
    assert.deepEqual(await t.usage(s.account), { executions: 2, active: 0 });
  });

  test('printed byte lists and secrets cut short by the log cap or util.inspect are redacted (both languages, answer and history)', async () => {
    const pad = 64 * 1024 - 12;
    const s = await t.space([
      {
        name: 'py-bytes',
        required_env: ['APP_TOKEN'],
        code: `import os, sys\ndef main(input_data):\n    t = os.environ["APP_TOKEN"]\n    sys.stderr.write("e" * ${pad} + t + "\\n")\n    print(list(t.encode()))\n    print(bytearray(t.encode()))\n    print(t.encode().hex(" "))\n    return {"list": str(list(t.encode()))}\n`,
      },
      {
        name: 'ts-bytes',
        language: 'typescript',
        required_env: ['APP_TOKEN'],
        code: `export default function main() {\n  const t = process.env.APP_TOKEN!;\n  process.stderr.write("e".repeat(${pad}) + t + "\\n");\n  console.log(Buffer.from(t));\n  return { json: JSON.stringify(Buffer.from(t)), buffer: Buffer.from(t) };\n}\n`,
      },
    ]);
    const tools = await s.run('tools', { APP_TOKEN: TOKEN });
    for (const tool of ['utils__py-bytes', 'utils__ts-bytes']) {
      const answer = await tools.callTool(tool);
      const text = JSON.stringify(answer);
      assert.equal(answer.isError, undefined, text.slice(0, 300));
      assert.deepEqual(leaks(text), [], tool);
      assert.match(text, /REDACTED_ENV_VALUE/, tool);
    }
    const listed = await callOk(s.create, 'list_executions');
    assert.equal(listed.length, 2);
    for (const { id } of listed) {
      const stored = await callOk(s.create, 'describe_execution', { id });
      assert.deepEqual(leaks(JSON.stringify(stored)), [], stored.language);
      assert.match(stored.stderr, /e\[REDACTED_ENV_VALUE\]\n\[output cut: \d+ more bytes not shown\]/, stored.language);
    }
    await t.assertHealthy();
    assert.deepEqual(await t.usage(s.account), { executions: 2, active: 0 });
  });

  test('the end of a secret that starts a traceback cut to its last 16 KB is redacted (both languages)', async () => {
    const s = await t.space([
      {
        name: 'py-trace',
        required_env: ['APP_TOKEN'],
        code: 'import os\ndef main(input_data):\n    raise RuntimeError((os.environ["APP_TOKEN"] + "|") * 400)\n',
      },
      {
        name: 'ts-trace',
        language: 'typescript',
        required_env: ['APP_TOKEN'],
        code: 'export default function main() {\n  throw new Error((process.env.APP_TOKEN! + "|").repeat(400));\n}\n',
      },
    ]);
    const tools = await s.run('tools', { APP_TOKEN: TOKEN });
    for (const tool of ['utils__py-trace', 'utils__ts-trace']) {
      const answer = await tools.callTool(tool);
      assert.equal(answer.isError, true);
      const body = JSON.parse((answer.content as Array<{ text: string }>)[0]!.text);
      const after = body.stderr.slice(body.stderr.lastIndexOf('[traceback cut]\n') + '[traceback cut]\n'.length);
      assert.match(body.stderr, /\[traceback cut\]\n/, tool);
      for (let kept = 4; kept < TOKEN.length; kept++)
        assert.ok(!after.startsWith(TOKEN.slice(-kept)), `${tool}: ${kept} characters of the secret's end start the cut traceback`);
      assert.ok(after.startsWith('[REDACTED_ENV_VALUE]') || after.startsWith('|'), `${tool}: ${after.slice(0, 30)}`);
      assert.doesNotMatch(JSON.stringify(answer), new RegExp(TOKEN));
    }
    await t.assertHealthy();
    assert.deepEqual(await t.usage(s.account), { executions: 2, active: 0 });
  });
  test('a token or private key the 16 KB traceback cut splits is not kept in part (both languages)', async () => {
    // Tokens 41 characters apart: of two messages shifted by 20, at least one is cut inside a token.
    const tokens = '" ".join("ghp_%04dAb9Cd8Ef7Gh6Ij5Kl4Mn3Op2Qr1St0Uv" % i for i in range(600))';
    const key = '"-----BEGIN PRIVATE KEY-----\\n" + "\\n".join("L%02d" % i + "Q" * 61 for i in range(26)) + "\\n-----END PRIVATE KEY-----"';
    const tsTokens =
      'Array.from({ length: 600 }, (_, i) => "ghp_" + String(i).padStart(4, "0") + "Ab9Cd8Ef7Gh6Ij5Kl4Mn3Op2Qr1St0Uv").join(" ")';
    const tsKey =
      '"-----BEGIN PRIVATE KEY-----\\n" + Array.from({ length: 26 }, (_, i) => "L" + String(i).padStart(2, "0") + "Q".repeat(61)).join("\\n") + "\\n-----END PRIVATE KEY-----"';
    const s = await t.space([
      { name: 'py-tok0', code: `def main(input_data):\n    raise RuntimeError(${tokens})\n` },
      { name: 'py-tok20', code: `def main(input_data):\n    raise RuntimeError("x" * 20 + ${tokens})\n` },
      { name: 'py-key', code: `def main(input_data):\n    raise RuntimeError("x" * 20000 + "\\n" + ${key} + "\\n" + "y" * 15400)\n` },
      { name: 'ts-tok0', language: 'typescript', code: `export default function main() {\n  throw new Error(${tsTokens});\n}\n` },
      {
        name: 'ts-tok20',
        language: 'typescript',
        code: `export default function main() {\n  throw new Error("x".repeat(20) + ${tsTokens});\n}\n`,
      },
      {
        name: 'ts-key',
        language: 'typescript',
        code: `export default function main() {\n  throw new Error("x".repeat(20000) + "\\n" + ${tsKey} + "\\n" + "y".repeat(15400));\n}\n`,
      },
    ]);
    const tools = await s.run('tools');
    for (const language of ['py', 'ts']) {
      for (const name of ['tok0', 'tok20', 'key']) {
        const tool = `utils__${language}-${name}`;
        const answer = await tools.callTool(tool);
        assert.equal(answer.isError, true, tool);
        const body = JSON.parse((answer.content as Array<{ text: string }>)[0]!.text);
        assert.match(body.stderr, /\[traceback cut\]\n/, tool);
        const kept = body.stderr.slice(body.stderr.lastIndexOf('[traceback cut]\n'));
        if (name === 'key') {
          assert.doesNotMatch(kept, /L\d\dQ{8}|Q{20}/, `${tool}: ${kept.slice(0, 80)}`);
          assert.match(kept, /\[REDACTED_PRIVATE_KEY\]/, tool);
        } else {
          // The end every token shares: no part of a token is kept without its start.
          assert.doesNotMatch(kept, /Qr1St0Uv/, `${tool}: ${kept.slice(0, 80)}`);
          assert.match(kept, /^\[traceback cut\]\n \[REDACTED_GITHUB_TOKEN\]/, tool);
        }
      }
    }
    await t.assertHealthy();
    assert.deepEqual(await t.usage(s.account), { executions: 6, active: 0 });
  });

  test('util.inspect of a long byte array (aligned columns over lines, cut after 100 items) is redacted', async () => {
    const s = await t.space([
      {
        name: 'ts-inspect',
        language: 'typescript',
        required_env: ['APP_TOKEN'],
        code:
          'import { inspect } from "node:util";\nexport default function main() {\n  const b = Buffer.from(process.env.APP_TOKEN!);\n' +
          '  console.log([...b]);\n  console.log(new Uint8Array(b));\n  console.log([...Buffer.concat([Buffer.alloc(90, 65), b])]);\n' +
          '  return { printed: inspect([...b]), cut: inspect([...Buffer.concat([Buffer.alloc(93, 66), b])]), nested: inspect({ a: { b: [...b] } }) };\n}\n',
      },
    ]);
    const tools = await s.run('tools', { APP_TOKEN: TOKEN });
    const answer = await tools.callTool('utils__ts-inspect');
    assert.equal(answer.isError, undefined);
    const texts = (answer.content as Array<{ text: string }>).map((c) => c.text);
    const result = JSON.parse(texts[0]!);
    // Read as lists: every spacing gone, so any run of the secret's bytes shows.
    const listed = (text: string) => text.replace(/\s+/g, '');
    const start = [...Buffer.from(TOKEN.slice(0, 6))].join(',');
    const inside = [...Buffer.from(TOKEN.slice(20, 26))].join(',');
    for (const text of [texts[1]!, result.printed, result.cut, result.nested]) {
      assert.ok(!listed(text).includes(start) && !listed(text).includes(inside), text.slice(0, 200));
    }
    assert.match(texts[1]!, /\[REDACTED_ENV_VALUE\][\s\S]*\[REDACTED_ENV_VALUE\][\s\S]*\[REDACTED_ENV_VALUE\],\n {2}\.\.\. \d+ more items/);
    assert.match(result.cut, /\[REDACTED_ENV_VALUE\],\n {2}\.\.\. \d+ more items/);
    for (const { id } of await callOk(s.create, 'list_executions')) {
      const stored = await callOk(s.create, 'describe_execution', { id });
      assert.ok(!listed(stored.stdout).includes(start), stored.stdout.slice(0, 200));
    }
    await t.assertHealthy();
    assert.deepEqual(await t.usage(s.account), { executions: 1, active: 0 });
  });
});
