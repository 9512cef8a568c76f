// test-database: embedded, redaction happens before the write
// Execution history stores error messages, stderr and stdout redacted like the answer: tool mode, code mode, both languages.
// Through the real server and the official SDK clients; each test then checks /healthz and the
// meter. scripts/mutation/mutants.json names the enforcing lines this file must catch.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { DEFAULT_TIERS } from '../core/tiers.js';
import { callOk } from '../test-support/harness.js';
import { startRuleServer, type RuleServer } from '../test-support/spaces.js';

let t: RuleServer;
before(async () => {
  t = await startRuleServer(DEFAULT_TIERS);
});
after(async () => {
  await t?.stop();
});

describe('execution history', () => {
  test('stores error messages, stderr and stdout redacted, like the answer (tool mode, code mode, both languages)', async () => {
    const secret = 'history-env-secret-93b1';
    const uri = 'postgres://admin:hunter22@db.internal/app';
    const s = await t.space([
      {
        name: 'py-leak',
        required_env: ['APP_TOKEN'],
        code: `import os, sys\ndef main(input_data):\n    token = os.environ["APP_TOKEN"]\n    print("out " + token)\n    print("err " + token, file=sys.stderr)\n    raise RuntimeError("boom " + token + " ${uri}")\n`,
      },
      {
        name: 'ts-leak',
        language: 'typescript',
        required_env: ['APP_TOKEN'],
        code: `export default function main() {\n  const token = process.env.APP_TOKEN!;\n  console.log("out " + token);\n  console.error("err " + token);\n  throw new RangeError("boom " + token + " ${uri}");\n}`,
      },
    ]);
    const env = { APP_TOKEN: secret };
    const tools = await s.run('tools', env);
    const code = await s.run('code', env);
    const answers = [
      await tools.callTool('utils__py-leak'),
      await tools.callTool('utils__ts-leak'),
      await code.callTool('execute', {
        code: `import os, sys\nprint("out " + os.environ["APP_TOKEN"])\nprint("err " + os.environ["APP_TOKEN"], file=sys.stderr)\nraise ValueError("boom " + os.environ["APP_TOKEN"] + " ${uri}")`,
        language: 'python',
      }),
      await code.callTool('execute', {
        code: `console.log("out " + process.env.APP_TOKEN);\nconsole.error("err " + process.env.APP_TOKEN);\nthrow new TypeError("boom " + process.env.APP_TOKEN + " ${uri}");`,
        language: 'typescript',
      }),
    ];
    for (const answer of answers) {
      assert.equal(answer.isError, true);
      assert.doesNotMatch(JSON.stringify(answer), /history-env-secret|hunter22/);
    }
    const listed = await callOk(s.create, 'list_executions');
    assert.equal(listed.length, 4);
    for (const { id } of listed) {
      const stored = await callOk(s.create, 'describe_execution', { id });
      const where = `${stored.mode} ${stored.language}`;
      assert.doesNotMatch(JSON.stringify(stored), /history-env-secret|hunter22/, where);
      assert.match(stored.error_message, /^boom \[REDACTED_ENV_VALUE\] \[REDACTED_CONNECTION_URI\]/, where);
      assert.match(stored.stderr, /err \[REDACTED_ENV_VALUE\]/, where);
      assert.match(stored.stdout, /out \[REDACTED_ENV_VALUE\]/, where);
    }
    assert.equal((await callOk(s.create, 'list_security_events')).length, 8, 'an env value and a URI per run');
    await t.assertHealthy();
    assert.deepEqual(await t.usage(s.account), { executions: 4, active: 0 });
  });

  test('stores the result as the caller got it: redacted, and cut at 64 KB with a marker (small and large answers)', async () => {
    const secret = 'history-result-secret-5c2e';
    const code = `import os\ndef main(input_data):\n    print("log " + os.environ["APP_TOKEN"])\n    return {"token": os.environ["APP_TOKEN"], "pad": "x" * input_data["n"]}\n`;
    const s = await t.space([
      { name: 'py-result', required_env: ['APP_TOKEN'], code },
      // An object output_schema: the answer carries structuredContent, which is what history keeps.
      { name: 'py-structured', required_env: ['APP_TOKEN'], code, output_schema: { type: 'object' } },
    ]);
    const tools = await s.run('tools', { APP_TOKEN: secret });
    // A small answer (scanned inline) and ones past the history's cap (scanned and rendered in a
    // worker, which also makes the history's text of them), with and without structured content.
    const answers: Array<{ content: Array<{ text: string }>; structuredContent?: unknown }> = [];
    for (const [name, n] of [
      ['py-result', 10],
      ['py-result', 300_000],
      ['py-structured', 300_000],
    ] as const) {
      const answer = await tools.callTool(`utils__${name}`, { n });
      assert.notEqual(answer.isError, true, JSON.stringify(answer).slice(0, 300));
      assert.doesNotMatch(JSON.stringify(answer), /history-result-secret/);
      answers.push(answer as (typeof answers)[number]);
    }
    const listed = await callOk(s.create, 'list_executions');
    const stored = await Promise.all(listed.map(({ id }: { id: string }) => callOk(s.create, 'describe_execution', { id })));
    const [structured, large, small] = stored;
    assert.deepEqual(JSON.parse(small.result), { token: '[REDACTED_ENV_VALUE]', pad: 'x'.repeat(10) });
    // Exactly what the caller got, cut: the texts joined by newlines (the result, then its stdout),
    // or the structured content's JSON.
    const cut = (text: string) => `${text.slice(0, 65536)}\n[… result cut at 65536 characters of ${text.length}]`;
    assert.equal(large.result, cut(answers[1]!.content.map((item) => item.text).join('\n')));
    assert.ok(answers[2]!.structuredContent, 'the structured answer has structuredContent');
    assert.equal(structured.result, cut(JSON.stringify(answers[2]!.structuredContent)));
    for (const record of [large, structured]) {
      assert.doesNotMatch(record.result, /history-result-secret/);
      assert.match(record.result, /REDACTED_ENV_VALUE/);
    }
    await t.assertHealthy();
  });
});
