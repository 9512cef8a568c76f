/**
 * What OAuth-speaking MCP clients are told. The MCP endpoints take an API key or an OAuth access
 * token (src/api/oauth-server.ts): a client whose credential is missing or refused gets a Bearer
 * challenge (RFC 6750, as the MCP authorization spec asks of a protected resource) naming the
 * protected-resource metadata (RFC 9728), which names this server's authorization server. A
 * client-registration request (RFC 7591) at `/register` (the account sign-up) gets an OAuth error
 * pointing to the registration endpoint, never an account.
 */
import { SCOPES } from '../core/accounts.js';

/** The fields of RFC 7591 client metadata; an account sign-up has none of them. */
const CLIENT_METADATA_FIELDS = [
  'redirect_uris',
  'client_name',
  'grant_types',
  'response_types',
  'token_endpoint_auth_method',
  'client_uri',
  'logo_uri',
  'scope',
  'contacts',
  'tos_uri',
  'policy_uri',
  'jwks_uri',
  'jwks',
  'software_id',
  'software_version',
  'software_statement',
  'application_type',
];

export function isClientRegistration(body: Record<string, unknown>): boolean {
  return CLIENT_METADATA_FIELDS.some((field) => Object.hasOwn(body, field));
}

const KEY_HINT =
  'MCPWorks MCP endpoints take an API key (send Authorization: Bearer mcpw_..., create one with POST /api/keys or mcpworks key create) or an OAuth sign-in (see resource_metadata)';

/** RFC 7591 section 3.2.2: an error the client shows, and nothing registered. */
export function clientRegistrationRefusal(): Response {
  const body = {
    error: 'invalid_client_metadata',
    error_description: `/register makes accounts; OAuth clients register at /oauth/register (RFC 8414 metadata: /.well-known/oauth-authorization-server). ${KEY_HINT}.`,
  };
  return new Response(JSON.stringify(body), { status: 400, headers: { 'content-type': 'application/json', 'cache-control': 'no-store' } });
}

export const METADATA_PATH = '/.well-known/oauth-protected-resource';

/** The metadata document's URL for an MCP endpoint URL (RFC 9728 section 3.1: inserted after the host). */
export function resourceMetadataUrl(resource: URL): string {
  return `${resource.origin}${METADATA_PATH}${resource.pathname === '/' ? '' : resource.pathname}`;
}

/**
 * The WWW-Authenticate value of a 401 on an MCP endpoint. Only ASCII without quotes or
 * backslashes may stand in a quoted parameter (RFC 6750 section 3).
 */
export function bearerChallenge(resource: URL, reason: 'missing' | 'invalid'): string {
  const description =
    reason === 'missing' ? `an API key or sign-in is required. ${KEY_HINT}` : `invalid, revoked or expired API key or token. ${KEY_HINT}`;
  const error = reason === 'invalid' ? ', error="invalid_token"' : '';
  return `Bearer realm="mcpworks"${error}, error_description="${description}", resource_metadata="${resourceMetadataUrl(resource)}"`;
}

/** RFC 9728 metadata: bearer tokens in the header, issued by the authorization server at `authorizationServer` (an origin). */
export function protectedResourceMetadata(resource: string, authorizationServer: string): Record<string, unknown> {
  return {
    resource,
    authorization_servers: [authorizationServer],
    bearer_methods_supported: ['header'],
    scopes_supported: [...SCOPES],
    resource_name: 'MCPWorks',
  };
}
