// test-database: both, codes, rotation and revocation are conditional SQL updates
// Sign-in from MCP clients (OAuth 2.1, the MCP authorization spec): metadata, registration, the
// consent API, PKCE, redirect URIs, codes, refresh rotation and reuse, revocation, and the tokens
// going through the API keys' checks (namespace, scopes, tenancy, expiry), against the real server:
// the official v2 SDK client's OAuth support for the whole flow, plain HTTP for each refusal.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { sql } from 'kysely';
import { Client, StreamableHTTPClientTransport, UnauthorizedError, type OAuthClientProvider } from '@modelcontextprotocol/client';
import { callOk, createAccount, parseResult, postJson, startTestServer, type TestAccount, type TestServer } from '../test-support/harness.js';
import { sha256Hex } from '../services/credential-hashing.js';

let server: TestServer;
let owner: TestAccount;
let ns: string;
let otherNs: string;
before(async () => {
  server = await startTestServer();
  owner = await createAccount(server.url);
  ns = `oa-${randomBytes(4).toString('hex')}`;
  otherNs = `ob-${randomBytes(4).toString('hex')}`;
  for (const name of [ns, otherNs]) {
    const made = await mcpCall(`${server.url}/mcp/create/${name}`, owner.key, 'make_namespace', { name });
    assert.equal(made.isError, undefined, JSON.stringify(made));
  }
});
after(async () => {
  await server?.stop();
});

const REDIRECT = 'http://127.0.0.1:9/callback';

/** One tools/call over plain JSON-RPC (2025 era, no session kept): what a bearer gets. */
async function mcpCall(url: string, bearer: string, name: string, args: Record<string, unknown> = {}): Promise<any> {
  const response = await fetch(url, {
    method: 'POST',
    headers: {
      authorization: `Bearer ${bearer}`,
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
      'mcp-protocol-version': '2025-06-18',
    },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name, arguments: args } }),
  });
  const text = await response.text();
  if (response.status !== 200) return { status: response.status, body: text ? JSON.parse(text) : null };
  const data = text.startsWith('{') ? text : (text.split('\n').find((l) => l.startsWith('data: ')) ?? '').slice(6);
  return JSON.parse(data).result;
}

const pkce = () => {
  const verifier = randomBytes(32).toString('base64url');
  return { verifier, challenge: createHash('sha256').update(verifier).digest('base64url') };
};

async function register(redirectUris = [REDIRECT], name = 'Test client'): Promise<string> {
  const registered = await postJson(`${server.url}/oauth/register`, {
    client_name: name,
    redirect_uris: redirectUris,
    token_endpoint_auth_method: 'client_secret_post',
  });
  assert.equal(registered.status, 201, JSON.stringify(registered.body));
  return registered.body.client_id;
}

/** GET /oauth/authorize without following: its redirect (consent page, or an error back to the client). */
async function authorize(params: Record<string, string>): Promise<{ status: number; location: string | null; body: string }> {
  const response = await fetch(`${server.url}/oauth/authorize?${new URLSearchParams(params)}`, { redirect: 'manual' });
  return { status: response.status, location: response.headers.get('location'), body: await response.text() };
}

const asOwner = (account: TestAccount) => ({ authorization: `Bearer ${account.token}` });

async function decide(account: TestAccount, requestId: string, decision: Record<string, unknown>) {
  return postJson(`${server.url}/api/oauth/requests/${requestId}`, decision, asOwner(account));
}

async function token(form: Record<string, string>): Promise<{ status: number; body: any }> {
  const response = await fetch(`${server.url}/oauth/token`, { method: 'POST', body: new URLSearchParams(form) });
  return { status: response.status, body: await response.json() };
}

/** The whole browser-less flow: register, authorize, approve as `account`, redeem. */
async function signIn(
  options: { account?: TestAccount; namespace?: string; scopes?: string[]; resource?: string } = {},
): Promise<{ clientId: string; code: string; verifier: string; tokens: any }> {
  const account = options.account ?? owner;
  const clientId = await register();
  const { verifier, challenge } = pkce();
  const started = await authorize({
    response_type: 'code',
    client_id: clientId,
    redirect_uri: REDIRECT,
    code_challenge: challenge,
    code_challenge_method: 'S256',
    state: 'st-1',
    scope: (options.scopes ?? ['read', 'write', 'execute']).join(' '),
    ...(options.resource === undefined ? { resource: `${server.url}/mcp/run/${options.namespace ?? ns}` } : options.resource ? { resource: options.resource } : {}),
  });
  assert.equal(started.status, 302, started.body);
  const requestId = new URL(started.location!, server.url).searchParams.get('request')!;
  const approved = await decide(account, requestId, { approve: true, namespace: options.namespace ?? ns, scopes: options.scopes ?? ['read', 'write', 'execute'] });
  assert.equal(approved.status, 200, JSON.stringify(approved.body));
  const back = new URL(approved.body.redirect_to);
  assert.equal(back.searchParams.get('state'), 'st-1');
  const code = back.searchParams.get('code')!;
  const tokens = await token({ grant_type: 'authorization_code', code, code_verifier: verifier, client_id: clientId, redirect_uri: REDIRECT });
  assert.equal(tokens.status, 200, JSON.stringify(tokens.body));
  return { clientId, code, verifier, tokens: tokens.body };
}

const runUrl = (namespace: string) => `${server.url}/mcp/run/${namespace}?mode=tools`;
const createUrl = (namespace: string) => `${server.url}/mcp/create/${namespace}`;

describe('metadata', () => {
  test('each MCP endpoint names its protected-resource metadata, which names this server as the authorization server', async () => {
    const refused = await fetch(runUrl(ns), { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
    assert.equal(refused.status, 401);
    const challenge = refused.headers.get('www-authenticate')!;
    assert.match(challenge, new RegExp(`resource_metadata="${server.url}/\\.well-known/oauth-protected-resource/mcp/run/${ns}"`));
    for (const [path, resource] of [
      [`/mcp/run/${ns}`, `${server.url}/mcp/run/${ns}`],
      [`/mcp/create/${ns}`, `${server.url}/mcp/create/${ns}`],
      ['', server.url],
    ]) {
      const document = await (await fetch(`${server.url}/.well-known/oauth-protected-resource${path}`)).json();
      assert.equal(document.resource, resource);
      assert.deepEqual(document.authorization_servers, [server.url]);
      assert.deepEqual(document.scopes_supported, ['read', 'write', 'execute']);
    }
    const as = await (await fetch(`${server.url}/.well-known/oauth-authorization-server`)).json();
    assert.equal(as.issuer, server.url);
    assert.deepEqual(as.code_challenge_methods_supported, ['S256']);
    assert.equal(as.token_endpoint, `${server.url}/oauth/token`);
    assert.equal(as.registration_endpoint, `${server.url}/oauth/register`);
    assert.equal(as.revocation_endpoint, `${server.url}/oauth/revoke`);
  });

  test('registration makes a public client (no secret kept); client metadata at /register is no sign-up', async () => {
    const registered = await postJson(`${server.url}/oauth/register`, {
      client_name: 'Secretive',
      redirect_uris: [REDIRECT],
      token_endpoint_auth_method: 'client_secret_basic',
    });
    assert.equal(registered.status, 201);
    assert.equal(registered.body.token_endpoint_auth_method, 'none');
    assert.equal(registered.body.client_secret, undefined);
    const bad = await postJson(`${server.url}/oauth/register`, { client_name: 'x', redirect_uris: ['not a url'] });
    assert.equal(bad.status, 400);
    assert.equal(bad.body.error, 'invalid_client_metadata');
    const signUp = await postJson(`${server.url}/register`, { client_name: 'x', redirect_uris: [REDIRECT] });
    assert.equal(signUp.status, 400);
    assert.equal(signUp.body.error, 'invalid_client_metadata');
    assert.match(signUp.body.error_description, /\/oauth\/register/);
  });
});

describe('the official SDK client signs in', () => {
  test('v2 client: 401, discovery, registration, consent, code with PKCE, then tools with the token; a token for namespace A finds nothing in B', async () => {
    let authorizationUrl: URL | undefined;
    let verifier = '';
    let saved: any;
    let info: any;
    const provider: OAuthClientProvider = {
      redirectUrl: REDIRECT,
      clientMetadata: { client_name: 'SDK <b>client</b>', redirect_uris: [REDIRECT] },
      clientInformation: () => info,
      saveClientInformation: (i) => void (info = i),
      tokens: () => saved,
      saveTokens: (t) => void (saved = t),
      redirectToAuthorization: (url) => void (authorizationUrl = url),
      saveCodeVerifier: (v) => void (verifier = v),
      codeVerifier: () => verifier,
    };
    const url = new URL(createUrl(ns));
    const transport = new StreamableHTTPClientTransport(url, { authProvider: provider });
    await assert.rejects(new Client({ name: 'oauth-test', version: '1.0.0' }).connect(transport), UnauthorizedError);
    assert.ok(authorizationUrl, 'the client was sent to sign in');
    assert.equal(authorizationUrl.searchParams.get('code_challenge_method'), 'S256');
    assert.equal(authorizationUrl.searchParams.get('resource'), url.href);

    // The browser: /authorize sends it to the consent page, which names the client (as text) and the namespace.
    const started = await fetch(authorizationUrl, { redirect: 'manual' });
    assert.equal(started.status, 302);
    const consent = new URL(started.headers.get('location')!, server.url);
    assert.equal(consent.pathname, '/consent');
    const requestId = consent.searchParams.get('request')!;
    const shown = await fetch(`${server.url}/api/oauth/requests/${requestId}`, { headers: asOwner(owner) });
    const described = await shown.json();
    assert.equal(described.client_name, 'SDK <b>client</b>');
    assert.equal(described.namespace, ns);
    assert.equal(described.redirect_host, '127.0.0.1:9');
    assert.deepEqual(described.scopes, ['read', 'write', 'execute']);
    const approved = await decide(owner, requestId, { approve: true, scopes: ['read', 'write'] });
    assert.equal(approved.status, 200, JSON.stringify(approved.body));
    const code = new URL(approved.body.redirect_to).searchParams.get('code')!;

    await transport.finishAuth(code);
    assert.match(saved.access_token, /^mcpwat_/);
    assert.equal(saved.scope, 'read write');
    const client = new Client({ name: 'oauth-test', version: '1.0.0' });
    await client.connect(new StreamableHTTPClientTransport(url, { authProvider: provider }));
    const made = parseResult((await client.callTool({ name: 'make_service', arguments: { name: 'svc' } })) as never);
    assert.equal(made.name ?? made.service ?? 'svc', 'svc');
    await client.close();

    // Bound to one namespace: the other one of the same account is not found; so is another account's.
    const elsewhere = await mcpCall(createUrl(otherNs), saved.access_token, 'make_service', { name: 'svc' });
    assert.equal(elsewhere.isError, true);
    assert.equal(parseResult(elsewhere).error_type, 'not_found');
    // Scopes as chosen on the consent page: no execute.
    const run = await mcpCall(runUrl(ns), saved.access_token, '_env_status');
    assert.equal(run.isError, true, JSON.stringify(run));
    assert.equal(parseResult(run).error_type, 'forbidden');

    // Listed with the API keys' page, not among the keys; revoked there like a key.
    const grants = await (await fetch(`${server.url}/api/oauth/grants`, { headers: asOwner(owner) })).json();
    const grant = grants.grants.find((g: any) => g.client_name === 'SDK <b>client</b>');
    assert.ok(grant, JSON.stringify(grants));
    assert.equal(grant.namespace, ns);
    assert.deepEqual(grant.scopes, ['read', 'write']);
    assert.ok(grant.last_used_at, 'its use is recorded');
    const keys = await (await fetch(`${server.url}/api/keys`, { headers: asOwner(owner) })).json();
    assert.ok(!keys.keys.some((k: any) => k.id === grant.id));
    const revoked = await fetch(`${server.url}/api/keys/${grant.id}`, { method: 'DELETE', headers: asOwner(owner) });
    assert.equal(revoked.status, 200);
    const after = await mcpCall(createUrl(ns), saved.access_token, 'list_services');
    assert.equal(after.status, 401);
    assert.match(JSON.stringify(after.body), /invalid, revoked or expired/);
  });
});
