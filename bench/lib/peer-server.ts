/**
 * A peer MCP server for the benches (issue 18's peers; not run by hand; started by peers.ts), in a
 * process of its own: the official SDK's server (`createMcpHandler`, the same SDK and entry our
 * server uses, so it answers both protocol eras: 2026-07-28 and the 2025 stateless fallback) on
 * node:http, loopback, with one tool. Its kind is the first argument:
 *   noop     (a) `noop` answers {"ok": true}: the MCP floor, nothing run;
 *   spawn    (b) `hello` runs the hello-world function in a new `/usr/bin/python3 -c` per call: the
 *                naive peer;
 *   pyodide  (c) `hello` runs the hello-world function in a warm Pyodide (CPython in WebAssembly,
 *                loaded once from node_modules/pyodide, no network), fresh globals per call: what a
 *                user of an mcp-run-python-like server gets.
 * Prints `ready <port>` on stdout once it listens (and, for pyodide, has loaded), or `failed
 * <reason>` and exits 1.
 */
import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import { toNodeHandler } from '@modelcontextprotocol/node';
import { createMcpHandler, McpServer } from '@modelcontextprotocol/server';
import { z } from 'zod';
import { PEER_KINDS, type PeerKind } from './peers.js';

// The hello-world template's function (src/core/templates.ts), with the call and the JSON answer.
const HELLO = `def main(input_data):
    name = input_data.get("name") or "World"
    return {
        "greeting": f"Hello, {name}!",
        "message": "MCPWorks is up: this function ran in a sandbox.",
    }
`;
const SPAWN_PROGRAM = `${HELLO}
import json, sys
print(json.dumps(main(json.loads(sys.argv[1]))))
`;

type Run = (input: Record<string, unknown>) => Promise<unknown>;

function spawnPython(input: Record<string, unknown>): Promise<unknown> {
  return new Promise((resolve, reject) => {
    // A clean environment, as the bare baseline and our sandbox get.
    const child = spawn('/usr/bin/python3', ['-c', SPAWN_PROGRAM, JSON.stringify(input)], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { PATH: '/usr/local/bin:/usr/bin:/bin', HOME: '/tmp', LANG: 'C.UTF-8' },
    });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (err += chunk));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) return reject(new Error(`python3 exited ${code}: ${err.slice(0, 300)}`));
      try {
        resolve(JSON.parse(out));
      } catch (error) {
        reject(error as Error);
      }
    });
  });
}

async function pyodideRunner(): Promise<Run> {
  const { loadPyodide } = await import('pyodide');
  // indexURL defaults to the package's own directory: the interpreter and stdlib load from disk.
  const pyodide = await loadPyodide();
  const dict = pyodide.globals.get('dict');
  return async (input) => {
    // Fresh globals per call, so no state carries from call to call (as a code-running server must).
    const globals = dict();
    try {
      globals.set('input_json', JSON.stringify(input));
      const text = await pyodide.runPythonAsync(`${HELLO}\nimport json\njson.dumps(main(json.loads(input_json)))`, { globals });
      return JSON.parse(String(text));
    } finally {
      globals.destroy();
    }
  };
}

async function main(): Promise<void> {
  const kind = process.argv[2] as PeerKind;
  if (!PEER_KINDS.includes(kind)) throw new Error(`peer kind must be one of ${PEER_KINDS.join(', ')}`);
  const run: Run | undefined = kind === 'noop' ? undefined : kind === 'spawn' ? spawnPython : await pyodideRunner();
  const inputSchema = z.object({ name: z.string().optional() });
  const handler = createMcpHandler(() => {
    const server = new McpServer({ name: `bench-peer-${kind}`, version: '1.0.0' });
    if (!run) {
      server.registerTool('noop', { description: 'Does nothing.', inputSchema: z.object({}) }, async () => ({
        content: [{ type: 'text', text: JSON.stringify({ ok: true }) }],
      }));
    } else {
      server.registerTool('hello', { description: 'Greets by name (Python).', inputSchema }, async (args) => ({
        content: [{ type: 'text', text: JSON.stringify(await run(args)) }],
      }));
    }
    return server;
  });
  const node = toNodeHandler(handler);
  const http = createServer((req, res) => void node(req, res));
  await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
  process.stdout.write(`ready ${(http.address() as { port: number }).port}\n`);
}

main().catch((error: unknown) => {
  process.stdout.write(`failed ${String((error as Error)?.message ?? error).replace(/\s+/g, ' ')}\n`);
  process.exit(1);
});
