// The Connect page's snippets are the README's (its client sections, run against the real clients by
// scripts/test.d/clients.sh): the same shapes for the same origin and namespace, the key filled in
// only where the page says so.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { claudeMcpAdd, endpoints, mcpJson } from './connect-config.js';

const README = readFileSync(path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'README.md'), 'utf8');
/** The fenced block after `<!-- client-check: NAME -->`. */
function readmeBlock(name: string): string {
  const match = new RegExp(`<!-- client-check: ${name} -->\\n\`\`\`\\w*\\n([\\s\\S]*?)\`\`\``).exec(README);
  assert.ok(match, `README has no client-check block ${name}`);
  return match[1]!;
}
const target = { origin: 'http://127.0.0.1:8787', namespace: 'myns' };

test(".mcp.json is the README's Claude Code file, reading the key from the environment", () => {
  assert.deepEqual(JSON.parse(mcpJson(target)), JSON.parse(readmeBlock('claude-mcp-json')));
});

test("claude mcp add lines are the README's", () => {
  assert.equal(claudeMcpAdd(target), readmeBlock('claude-mcp-add'));
});

test('a key just created is filled into .mcp.json; the claude lines keep the variable and export it first', () => {
  const key = `mcpw_${'a'.repeat(64)}`;
  const file = JSON.parse(mcpJson({ ...target, key }));
  assert.equal(file.mcpServers['myns-create'].headers.Authorization, `Bearer ${key}`);
  assert.equal(file.mcpServers['myns-run'].headers.Authorization, `Bearer ${key}`);
  const lines = claudeMcpAdd({ ...target, key });
  assert.equal(lines.split('\n')[0], `export MCPWORKS_API_KEY=${key}`);
  assert.equal(lines.split('\n').slice(1).join('\n'), readmeBlock('claude-mcp-add'));
  assert.deepEqual(endpoints({ origin: 'https://mcp.example.com', namespace: 'a-b' }), {
    create: 'https://mcp.example.com/mcp/create/a-b',
    run: 'https://mcp.example.com/mcp/run/a-b',
  });
});
