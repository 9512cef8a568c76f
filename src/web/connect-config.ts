/**
 * What the Connect page offers to paste: the shapes README.md documents for Claude Code (its
 * "Connect an MCP client" section, checked against the real client by scripts/test.d/clients.sh).
 * Pure, so that it is tested without a browser (connect-config.test.ts).
 */

export const KEY_VARIABLE = 'MCPWORKS_API_KEY';

export interface ConnectTarget {
  /** The server's origin as the browser reaches it, e.g. http://127.0.0.1:8787. */
  origin: string;
  namespace: string;
  /** A key just created (shown once): filled in; otherwise the file reads it from the environment. */
  key?: string | undefined;
}

const authorization = (key: string | undefined) => `Bearer ${key ?? `\${${KEY_VARIABLE}}`}`;

export function endpoints(target: ConnectTarget): { create: string; run: string } {
  const ns = encodeURIComponent(target.namespace);
  return { create: `${target.origin}/mcp/create/${ns}`, run: `${target.origin}/mcp/run/${ns}` };
}

/** A project's `.mcp.json`: the namespace's create and run endpoints. */
export function mcpJson(target: ConnectTarget): string {
  const urls = endpoints(target);
  const headers = { Authorization: authorization(target.key) };
  const servers = {
    [`${target.namespace}-create`]: { type: 'http', url: urls.create, headers },
    [`${target.namespace}-run`]: { type: 'http', url: urls.run, headers },
  };
  return `${JSON.stringify({ mcpServers: servers }, null, 2)}\n`;
}

/**
 * `claude mcp add` for both endpoints, user-wide. The header stays `${MCPWORKS_API_KEY}` in single
 * quotes (the key is read from the environment at each start, never written to ~/.claude.json); a
 * key just created comes first as the `export` that sets it.
 */
export function claudeMcpAdd(target: ConnectTarget): string {
  const urls = endpoints(target);
  const header = `--header 'Authorization: Bearer \${${KEY_VARIABLE}}'`;
  const lines = [
    ...(target.key ? [`export ${KEY_VARIABLE}=${target.key}`] : []),
    `claude mcp add --scope user --transport http ${target.namespace}-create ${urls.create} \\`,
    `  ${header}`,
    `claude mcp add --scope user --transport http ${target.namespace}-run ${urls.run} \\`,
    `  ${header}`,
  ];
  return `${lines.join('\n')}\n`;
}
