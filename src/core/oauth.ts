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
  // Controls, zero-width and direction marks (line/paragraph separators, BOM, invisible operators too).
  const clean = name.replace(/[\u0000-\u001f\u007f-\u009f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u2069\ufeff]/g, ' ').trim();
  // By code points: a cut never leaves half a surrogate pair.
  const points = [...clean];
  return clean === '' ? 'Unnamed client' : points.length > 80 ? `${points.slice(0, 79).join('')}…` : clean;
}

/** What a registration may keep: a public client needs a name and its redirect URIs (RFC 7591's others are dropped). */
export const CLIENT_LIMITS = { nameChars: 200, redirectUris: 10, redirectUriChars: 2048, scopeChars: 200 } as const;

const LOOPBACK_HOSTNAMES = new Set(['localhost', '[::1]']);

/**
 * The stored form of a client's registration, or why it is refused. Registration is open to anyone:
 * only the fields a public client uses are kept (no jwks, software_statement, contacts…), bounded,
 * storable (unstorableReason), and redirect URIs are https, loopback http, or an app's own scheme
 * (the MCP authorization spec: plain http only to localhost).
 */
export function publicClientMetadata(
  metadata: Record<string, unknown>,
): { ok: true; metadata: Record<string, unknown> } | { ok: false; problem: string } {
  const kept: Record<string, unknown> = {};
  if (metadata.client_name !== undefined) {
    if (typeof metadata.client_name !== 'string' || [...metadata.client_name].length > CLIENT_LIMITS.nameChars) {
      return { ok: false, problem: `client_name must be text of at most ${CLIENT_LIMITS.nameChars} characters` };
    }
    kept.client_name = metadata.client_name;
  }
  if (metadata.scope !== undefined) {
    if (typeof metadata.scope !== 'string' || metadata.scope.length > CLIENT_LIMITS.scopeChars) {
      return { ok: false, problem: `scope must be text of at most ${CLIENT_LIMITS.scopeChars} characters` };
    }
    kept.scope = metadata.scope;
  }
  const uris = metadata.redirect_uris;
  if (!Array.isArray(uris) || uris.length === 0 || uris.length > CLIENT_LIMITS.redirectUris) {
    return { ok: false, problem: `redirect_uris must list 1 to ${CLIENT_LIMITS.redirectUris} URIs` };
  }
  for (const uri of uris) {
    if (typeof uri !== 'string' || uri.length > CLIENT_LIMITS.redirectUriChars || !URL.canParse(uri)) {
      return { ok: false, problem: `each redirect URI must be a URL of at most ${CLIENT_LIMITS.redirectUriChars} characters` };
    }
    const url = new URL(uri);
    if (url.protocol === 'http:' && !LOOPBACK_HOSTNAMES.has(url.hostname) && !/^127\.\d+\.\d+\.\d+$/.test(url.hostname)) {
      return { ok: false, problem: `redirect URI ${url.origin}: plain http is for localhost only; use https` };
    }
  }
  kept.redirect_uris = [...uris];
  return { ok: true, metadata: kept };
}

/**
 * Where the consent page says a client returns to: scheme and host, so an app's own scheme
 * (`com.example.app:`) or plain http looks different from https at a glance.
 */
export function redirectShown(redirectUri: string): string {
  const url = new URL(redirectUri);
  return url.host ? `${url.protocol}//${url.host}` : `${url.protocol}${url.pathname.split('/')[0] ?? ''}`;
}
