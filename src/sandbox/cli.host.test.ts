// `mcpworks sandbox run`: the local runner over the real sandbox.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runSandboxCommand } from '../cli/sandbox-command.js';

let dir: string;

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'mcpworks-cli-test-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

async function cli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const code = await runSandboxCommand(args, {
    stdout: { write: (text: string) => (stdout += text) },
    stderr: { write: (text: string) => (stderr += text) },
    env,
  });
  return { code, stdout, stderr };
}

function file(name: string, content: string): string {
  const path = join(dir, name);
  writeFileSync(path, content);
  return path;
}

describe('mcpworks sandbox run', () => {
  it('prints the result as JSON on stdout and the logs on stderr', async () => {
    const path = file(
      'hello.py',
      'import os\ndef main(input_data):\n    print("working")\n    return {"greeting": "Hello, " + input_data["name"], "key": os.environ["API_KEY"]}\n',
    );
    const { code, stdout, stderr } = await cli([path, '--input', '{"name":"Ada"}', '--env', 'API_KEY=k-123']);
    assert.equal(code, 0, stderr);
    assert.deepEqual(JSON.parse(stdout), { greeting: 'Hello, Ada', key: 'k-123' });
    assert.equal(stderr, 'working\n');
  });

  it('takes --env NAME without a value from the caller environment, and infers TypeScript from .ts', async () => {
    const path = file('env.ts', 'export default function main() {\n  return process.env.TOKEN;\n}\n');
    const { code, stdout } = await cli([path, '--env', 'TOKEN', '--tier', 'enterprise'], { TOKEN: 'from-environment' });
    assert.equal(code, 0);
    assert.equal(JSON.parse(stdout), 'from-environment');
  });

  it('a typed failure prints {"error": message, "error_type": T} and exits non-zero, traceback on stderr', async () => {
    const path = file('fails.py', 'def main(input_data):\n    raise KeyError("missing")\n');
    const { code, stdout, stderr } = await cli([path]);
    assert.equal(code, 1);
    assert.deepEqual(JSON.parse(stdout), { error: "'missing'", error_type: 'KeyError' });
    assert.match(stderr, /main\.py", line 2, in main/);
  });

  it('honours --language over the extension', async () => {
    const path = file('script.txt', 'result = 40 + 2\n');
    const { code, stdout } = await cli([path, '--language', 'python']);
    assert.equal(code, 0);
    assert.equal(JSON.parse(stdout), 42);
  });

  it('usage errors exit 2 without running anything', async () => {
    const path = file('ok.py', 'result = 1\n');
    for (const args of [
      [],
      [path, '--tier', 'platinum'],
      [path, '--input', '{not json'],
      [path, '--env', 'PATH=/evil'],
      [path, '--env', 'UNSET_NAME'],
      [join(dir, 'missing.py')],
      [file('x.rb', '')],
    ]) {
      const { code, stdout, stderr } = await cli(args);
      assert.equal(code, 2, `${args.join(' ')} → ${stderr}`);
      assert.equal(stdout, '');
      assert.match(stderr, /usage: mcpworks sandbox run/);
    }
  });

  it('a setting that leaves no usable sandbox exits 2 with its message, without running anything', async () => {
    const path = file('never.py', 'result = 1\n');
    const { code, stdout, stderr } = await cli([path], { MCPWORKS_SANDBOX_NETWORK: 'on', MCPWORKS_SANDBOX_NETWORK_ALLOW: 'example.com' });
    assert.equal(code, 2, stderr);
    assert.equal(stdout, '');
    assert.equal(stderr, 'mcpworks sandbox: MCPWORKS_SANDBOX_NETWORK_ALLOW: "example.com" is not an IPv4 address or prefix of /8 to /32\n');
  });
});
