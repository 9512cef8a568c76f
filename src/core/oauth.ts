// Sign-in from MCP clients (OAuth 2.1): the rules that need no I/O. The protocol itself (request
// parsing, PKCE, client registration, error answers) is the MCP SDK's (src/api/oauth-server.ts).
import { SCOPES, type Scope } from './accounts.js';
import { isValidNamespaceName } from './names.js';

/** Lifetimes: an access token is short-lived; a refresh token (rotated at each use) keeps the grant alive. */
export const OAUTH_LIFETIMES = {
  accessTokenSeconds: 3600,
  refreshTokenSeconds: 30 * 86_400,
  codeSeconds: 120,
  /** How long the consent page may take to be decided. */
  requestSeconds: 600,
} as const;

/** Requested scopes (the authorize request's space-separated list): known ones only, all when none is asked for. */
export function requestedScopes(scopes: readonly string[] | undefined): Scope[] | undefined {
  const asked = (scopes ?? []).filter((s) => s !== '');
  if (asked.length === 0) return [...SCOPES];
  if (asked.some((s) => !(SCOPES as readonly string[]).includes(s))) return undefined;
  return [...new Set(asked as Scope[])];
}

/**
 * What an RFC 8707 resource indicator names here: an MCP endpoint's namespace, `null` for this
 * server as a whole (the root metadata's resource; the owner picks the namespace), or undefined
 * for anything else (another server, another path), which no token is issued for.
 */
export function namespaceOfResource(resource: URL, origin: string, baseHost?: string): string | null | undefined {
  if (resource.search || resource.hash) return undefined;
  const path = resource.pathname.replace(/\/$/, '');
  if (resource.origin === origin) {
    if (path === '') return null;
    const match = /^\/mcp\/(?:create|run)\/([^/]+)$/.exec(path);
    return match && isValidNamespaceName(match[1]!) ? match[1]! : undefined;
  }
  // `{ns}.create.{base}` and `{ns}.run.{base}`: the whole host is the endpoint.
  if (!baseHost || path !== '') return undefined;
  const base = baseHost.replace(/:\d+$/, '').toLowerCase();
  for (const kind of ['create', 'run']) {
    const suffix = `.${kind}.${base}`;
    if (resource.hostname.endsWith(suffix)) {
      const namespace = resource.hostname.slice(0, -suffix.length);
      return isValidNamespaceName(namespace) ? namespace : undefined;
    }
  }
  return undefined;
}

/**
 * A client's registered name as the consent page and key list show it: untrusted text, so plain
 * (rendered as text, never markup), single-line and bounded.
 */
export function clientDisplayName(metadata: Record<string, unknown>): string {
  const name = typeof metadata.client_name === 'string' ? metadata.client_name : '';
  // eslint-disable-next-line no-control-regex
  const clean = name.replace(/[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u202a-\u202e\u2066-\u2069]/g, ' ').trim();
  return clean === '' ? 'Unnamed client' : clean.length > 80 ? `${clean.slice(0, 79)}…` : clean;
}
