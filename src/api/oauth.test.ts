// test-database: postgres, parallel redemptions of one code race on real connections (the row lock of the code's conditional update)
// Sign-in from MCP clients (OAuth 2.1, the MCP authorization spec): metadata, registration, the
// consent API, PKCE, redirect URIs, codes, refresh rotation and reuse, revocation, and the tokens
// going through the API keys' checks (namespace, scopes, tenancy, expiry), against the real server:
// the official v2 SDK client's OAuth support for the whole flow, plain HTTP for each refusal.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { request } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { sql } from 'kysely';
import { Client, StreamableHTTPClientTransport, UnauthorizedError, type OAuthClientProvider } from '@modelcontextprotocol/client';
import {
  callOk,
  createAccount,
  parseResult,
  postJson,
  startTestServer,
  type TestAccount,
  type TestServer,
} from '../test-support/harness.js';
import { sha256Hex } from '../services/credential-hashing.js';

let server: TestServer;
let owner: TestAccount;
let ns: string;
let otherNs: string;
before(async () => {
  // Behind a proxy (loopback here): the rate limits count each forwarded client, not the proxy.
  server = await startTestServer({ http: { trustedProxies: ['127.0.0.1'] } });
  owner = await createAccount(server.url);
  ns = `oa-${randomBytes(4).toString('hex')}`;
  otherNs = `ob-${randomBytes(4).toString('hex')}`;
  for (const name of [ns, otherNs]) {
    const made = await mcpCall(`${server.url}/mcp/create/${name}`, owner.key, 'make_namespace', { name });
    assertWorks(made);
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

/** A tool call that was answered (not refused at the door) and succeeded. */
function assertWorks(result: any, what = 'the call works'): void {
  assert.ok(result.status === undefined && Array.isArray(result.content) && !result.isError, `${what}: ${JSON.stringify(result)}`);
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

/** An /authorize error answered by this server (400 JSON), never a redirect to the client's URI. */
function assertAnsweredHere(answer: { status: number; location: string | null; body: string }, error: string): void {
  assert.equal(answer.status, 400, answer.body);
  assert.equal(answer.location, null);
  assert.equal(JSON.parse(answer.body).error, error);
}

const asOwner = (account: TestAccount) => ({ authorization: `Bearer ${account.token}` });

async function decide(account: TestAccount, requestId: string, decision: Record<string, unknown>) {
  return postJson(`${server.url}/api/oauth/requests/${requestId}`, decision, asOwner(account));
}

async function token(form: Record<string, string>): Promise<{ status: number; body: any }> {
  const response = await fetch(`${server.url}/oauth/token`, { method: 'POST', body: new URLSearchParams(form) });
  return { status: response.status, body: await response.json() };
}

/** What a client asks /authorize for: each field left out of the request when undefined. */
interface Ask {
  clientId?: string;
  resource?: string;
  scope?: string[];
  state?: string;
}

/** A client (registered unless given) starts a sign-in with PKCE: the consent page's request id. */
async function consentRequest(ask: Ask = {}): Promise<{ clientId: string; verifier: string; requestId: string }> {
  const clientId = ask.clientId ?? (await register());
  const { verifier, challenge } = pkce();
  const started = await authorize({
    response_type: 'code',
    client_id: clientId,
    redirect_uri: REDIRECT,
    code_challenge: challenge,
    code_challenge_method: 'S256',
    ...(ask.state === undefined ? {} : { state: ask.state }),
    ...(ask.scope === undefined ? {} : { scope: ask.scope.join(' ') }),
    ...(ask.resource === undefined ? {} : { resource: ask.resource }),
  });
  assert.equal(started.status, 302, started.body);
  const consent = new URL(started.location!, server.url);
  assert.equal(consent.pathname, '/consent');
  return { clientId, verifier, requestId: consent.searchParams.get('request')! };
}

/**
 * register -> authorize -> approve as `account` (the owner unless given) -> the code, not yet
 * redeemed. `namespace` goes into the decision only when given (else the resource's namespace).
 */
async function approvedCode(
  options: Ask & { account?: TestAccount; namespace?: string; scopes: string[] },
): Promise<{ clientId: string; code: string; verifier: string }> {
  const { clientId, verifier, requestId } = await consentRequest(options);
  const approved = await decide(options.account ?? owner, requestId, {
    approve: true,
    ...(options.namespace === undefined ? {} : { namespace: options.namespace }),
    scopes: options.scopes,
  });
  assert.equal(approved.status, 200, JSON.stringify(approved.body));
  const back = new URL(approved.body.redirect_to);
  assert.equal(back.searchParams.get('state'), options.state ?? null);
  const code = back.searchParams.get('code');
  assert.ok(code, approved.body.redirect_to);
  return { clientId, code, verifier };
}

/** The whole browser-less flow: register, authorize, approve as `account`, redeem. */
async function signIn(
  options: { account?: TestAccount; namespace?: string; scopes?: string[]; resource?: string } = {},
): Promise<{ clientId: string; code: string; verifier: string; tokens: any }> {
  const namespace = options.namespace ?? ns;
  const scopes = options.scopes ?? ['read', 'write', 'execute'];
  const { clientId, code, verifier } = await approvedCode({
    ...(options.account ? { account: options.account } : {}),
    namespace,
    scopes,
    scope: scopes,
    state: 'st-1',
    // The run endpoint of the namespace unless told; '' asks for no resource.
    resource: options.resource === undefined ? `${server.url}/mcp/run/${namespace}` : options.resource || undefined,
  });
  const tokens = await token({
    grant_type: 'authorization_code',
    code,
    code_verifier: verifier,
    client_id: clientId,
    redirect_uri: REDIRECT,
  });
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

  test('the authorization server metadata gets the DNS-rebinding guard: a foreign Host or Origin is refused', async () => {
    const url = `${server.url}/.well-known/oauth-authorization-server`;
    // fetch cannot set Host: a plain node:http request does.
    const withHost = await new Promise<number>((resolve, reject) =>
      request(url, { headers: { host: 'evil.example.com' } }, (res) => resolve(res.resume().statusCode!))
        .on('error', reject)
        .end(),
    );
    assert.equal(withHost, 403);
    assert.equal((await fetch(url, { headers: { origin: 'http://evil.example.com' } })).status, 403);
    assert.equal((await fetch(url)).status, 200);
  });

  test('rate limits count each client behind a trusted proxy (X-Forwarded-For), not the proxy they share', async () => {
    const registerAs = (client: string) =>
      postJson(`${server.url}/oauth/register`, { client_name: 'Paced', redirect_uris: [REDIRECT] }, { 'x-forwarded-for': client });
    // 60 registrations per client per 15 minutes (oauth-server.ts).
    for (let i = 0; i < 60; i++) assert.equal((await registerAs('198.51.100.1')).status, 201, `registration ${i}`);
    const limited = await registerAs('198.51.100.1');
    assert.equal(limited.status, 429);
    assert.equal((await registerAs('198.51.100.2')).status, 201, 'another client behind the same proxy still registers');
  });

  test('registration keeps only what a public client needs, bounded and storable; bad metadata is a 400, never a 500', async () => {
    const post = (body: unknown) => postJson(`${server.url}/oauth/register`, body);
    const refused = async (body: unknown, what: string) => {
      const answer = await post(body);
      assert.equal(answer.status, 400, `${what}: ${JSON.stringify(answer.body)}`);
      assert.equal(answer.body.error, 'invalid_client_metadata', what);
    };
    await refused(`{"client_name":"a\\ud800b","redirect_uris":["${REDIRECT}"]}`, 'a lone surrogate in client_name');
    await refused(`{"client_name":"x","redirect_uris":["${REDIRECT}#\\udc00"]}`, 'a lone surrogate in a redirect URI');
    await refused({ client_name: 'n'.repeat(201), redirect_uris: [REDIRECT] }, 'a 201-character name');
    await refused({ redirect_uris: Array.from({ length: 11 }, (_, i) => `${REDIRECT}${i}`) }, '11 redirect URIs');
    await refused({ redirect_uris: [`https://app.example/${'p'.repeat(2048)}`] }, 'a redirect URI over 2 KB');
    await refused({ redirect_uris: ['http://app.example/cb'] }, 'plain http to another host');
    // Fields a public client has no use for are dropped, however odd (a lone surrogate, deep nesting).
    const deep = `${'['.repeat(7000)}${']'.repeat(7000)}`;
    const kept = await post(
      `{"client_name":"Kept","redirect_uris":["${REDIRECT}","https://app.example/cb","com.example.app:/cb"],"jwks":{"keys":${deep}},"software_statement":"\\ud800","contacts":["a@b.c"]}`,
    );
    assert.equal(kept.status, 201, JSON.stringify(kept.body));
    assert.equal(kept.body.jwks, undefined);
    assert.equal(kept.body.software_statement, undefined);
    assert.equal(kept.body.contacts, undefined);
    assert.equal(kept.body.client_name, 'Kept');
    // 16 KB bodies at most.
    const large = await post({ client_name: 'x', redirect_uris: [REDIRECT], padding: 'p'.repeat(17_000) });
    assert.equal(large.status, 413);
    assert.equal(large.body.error, 'invalid_request');
    const deeper = await post(`{"client_name":"x","redirect_uris":["${REDIRECT}"],"jwks":${'['.repeat(20_000)}${']'.repeat(20_000)}}`);
    assert.equal(deeper.status, 413);
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
    assert.equal(described.redirect_host, 'http://127.0.0.1:9');
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

describe('the authorization server refuses', () => {
  test('a redirect URI not registered (no redirect, a JSON error); a loopback one on another port is the same client (RFC 8252)', async () => {
    const clientId = await register(['http://127.0.0.1:4000/callback', 'https://app.example/cb']);
    const { challenge } = pkce();
    const base = { response_type: 'code', client_id: clientId, code_challenge: challenge, code_challenge_method: 'S256' };
    for (const uri of ['https://evil.example/cb', 'https://app.example/cb/', 'https://app.example/cb?x=1', 'http://127.0.0.1:4000/other']) {
      const refused = await authorize({ ...base, redirect_uri: uri });
      assert.equal(refused.status, 400, uri);
      assert.equal(refused.location, null, `${uri}: never sent there`);
      assert.equal(JSON.parse(refused.body).error, 'invalid_request', uri);
    }
    const loopback = await authorize({ ...base, redirect_uri: 'http://127.0.0.1:5999/callback' });
    assert.equal(loopback.status, 302);
    assert.match(loopback.location!, /^\/consent\?request=[0-9a-f]{64}$/);
    const unknown = await authorize({ ...base, client_id: 'no-such-client', redirect_uri: REDIRECT });
    assert.equal(unknown.status, 400);
    assert.equal(JSON.parse(unknown.body).error, 'invalid_client');
  });

  test('no open redirect: /authorize errors for a registered client are answered here, never sent to its redirect URI', async () => {
    const evil = 'https://evil.example/landing';
    const clientId = await register([evil]);
    const { challenge } = pkce();
    assertAnsweredHere(await authorize({ client_id: clientId, response_type: 'token' }), 'invalid_request');
    assertAnsweredHere(await authorize({ client_id: clientId, response_type: 'token', redirect_uri: evil }), 'invalid_request');
    const s256 = { code_challenge: challenge, code_challenge_method: 'S256' };
    assertAnsweredHere(await authorize({ client_id: clientId, response_type: 'code', ...s256, scope: 'admin' }), 'invalid_scope');
    // A valid request still goes to the consent page only.
    const started = await authorize({ client_id: clientId, response_type: 'code', ...s256 });
    assert.match(started.location!, /^\/consent\?request=/);
  });

  test('PKCE: plain or missing challenges are refused (here, not redirected); a wrong verifier gets invalid_grant and the code stays unused', async () => {
    const clientId = await register();
    const plain = pkce().verifier;
    for (const params of [{ code_challenge: plain, code_challenge_method: 'plain' }, {}] as Array<Record<string, string>>) {
      const refused = await authorize({ response_type: 'code', client_id: clientId, redirect_uri: REDIRECT, state: 'keep-me', ...params });
      assertAnsweredHere(refused, 'invalid_request');
    }
    const { code, verifier } = await approvedCode({ clientId, resource: `${server.url}/mcp/run/${ns}`, scopes: ['read'] });
    const wrong = await token({ grant_type: 'authorization_code', code, code_verifier: pkce().verifier, client_id: clientId });
    assert.equal(wrong.status, 400);
    assert.equal(wrong.body.error, 'invalid_grant');
    const otherClient = await token({ grant_type: 'authorization_code', code, code_verifier: verifier, client_id: await register() });
    assert.equal(otherClient.body.error, 'invalid_grant');
    const otherRedirect = await token({
      grant_type: 'authorization_code',
      code,
      code_verifier: verifier,
      client_id: clientId,
      redirect_uri: 'http://127.0.0.1:9/other',
    });
    assert.equal(otherRedirect.body.error, 'invalid_grant');
    const right = await token({ grant_type: 'authorization_code', code, code_verifier: verifier, client_id: clientId });
    assert.equal(right.status, 200, JSON.stringify(right.body));
  });

  test('a code works once: its second use is refused and revokes the tokens the first one gave', async () => {
    const { clientId, code, verifier, tokens } = await signIn();
    assertWorks(await mcpCall(createUrl(ns), tokens.access_token, 'list_services'));
    const again = await token({ grant_type: 'authorization_code', code, code_verifier: verifier, client_id: clientId });
    assert.equal(again.status, 400);
    assert.equal(again.body.error, 'invalid_grant');
    assert.equal((await mcpCall(createUrl(ns), tokens.access_token, 'list_services')).status, 401);
    assert.equal(
      (await token({ grant_type: 'refresh_token', refresh_token: tokens.refresh_token, client_id: clientId })).body.error,
      'invalid_grant',
    );
  });

  test('parallel redemptions of one code: one wins, and the loser always revokes what the winner got (one transaction)', async () => {
    // Pairs, not a crowd: with many, one late loser revokes anyway; a pair shows whether a loser
    // that lands between the winner's "used" and its grant being recorded still finds the grant.
    for (let round = 0; round < 12; round++) {
      const { clientId, code, verifier } = await approvedCode({ namespace: ns, scopes: ['read'] });
      const redeem = () => token({ grant_type: 'authorization_code', code, code_verifier: verifier, client_id: clientId });
      const answers = await Promise.all([redeem(), redeem()]);
      const won = answers.filter((a) => a.status === 200);
      assert.equal(won.length, 1, JSON.stringify(answers));
      assert.ok(answers.some((a) => a.body.error === 'invalid_grant'));
      const used = await mcpCall(createUrl(ns), won[0]!.body.access_token, 'list_services');
      assert.equal(used.status, 401, `round ${round}: the winner's grant is revoked`);
    }
  });

  test('an expired code or access token is refused', async () => {
    const { clientId, code, verifier } = await approvedCode({ namespace: ns, scopes: ['read'] });
    await sql`UPDATE oauth_authorizations SET code_expires_at = now() - interval '1 second' WHERE code_hash = ${sha256Hex(code)}`.execute(
      server.server.services.db,
    );
    assert.equal(
      (await token({ grant_type: 'authorization_code', code, code_verifier: verifier, client_id: clientId })).body.error,
      'invalid_grant',
    );

    const { tokens } = await signIn({ scopes: ['read'] });
    assertWorks(await mcpCall(createUrl(ns), tokens.access_token, 'list_services'));
    await sql`UPDATE oauth_tokens SET expires_at = now() - interval '1 second' WHERE token_hash = ${sha256Hex(tokens.access_token)}`.execute(
      server.server.services.db,
    );
    const expired = await mcpCall(createUrl(ns), tokens.access_token, 'list_services');
    assert.equal(expired.status, 401);
  });

  test('refresh: rotation gives new tokens once; a used refresh token revokes the whole grant', async () => {
    const { clientId, tokens } = await signIn({ scopes: ['read', 'write'] });
    const rotated = await token({ grant_type: 'refresh_token', refresh_token: tokens.refresh_token, client_id: clientId });
    assert.equal(rotated.status, 200, JSON.stringify(rotated.body));
    assert.notEqual(rotated.body.refresh_token, tokens.refresh_token);
    assert.equal(rotated.body.scope, 'read write');
    assertWorks(await mcpCall(createUrl(ns), rotated.body.access_token, 'list_services'));
    // A refresh token is no access token.
    assert.equal((await mcpCall(createUrl(ns), rotated.body.refresh_token, 'list_services')).status, 401);
    const wider = await token({
      grant_type: 'refresh_token',
      refresh_token: rotated.body.refresh_token,
      client_id: clientId,
      scope: 'read write execute',
    });
    assert.equal(wider.body.error, 'invalid_scope');
    const replayed = await token({ grant_type: 'refresh_token', refresh_token: tokens.refresh_token, client_id: clientId });
    assert.equal(replayed.status, 400);
    assert.equal(replayed.body.error, 'invalid_grant');
    // The whole family: the newest tokens too.
    assert.equal((await mcpCall(createUrl(ns), rotated.body.access_token, 'list_services')).status, 401);
    assert.equal(
      (await token({ grant_type: 'refresh_token', refresh_token: rotated.body.refresh_token, client_id: clientId })).body.error,
      'invalid_grant',
    );
  });

  test('revocation (RFC 7009): the client revokes its grant; another client cannot; unknown tokens are no error', async () => {
    const { clientId, tokens } = await signIn({ scopes: ['read'] });
    const revoke = (form: Record<string, string>) =>
      fetch(`${server.url}/oauth/revoke`, { method: 'POST', body: new URLSearchParams(form) });
    assert.equal((await revoke({ token: tokens.refresh_token, client_id: await register() })).status, 200);
    assertWorks(await mcpCall(createUrl(ns), tokens.access_token, 'list_services'), 'another client revoked nothing');
    assert.equal((await revoke({ token: 'mcpwat_' + '0'.repeat(64), client_id: clientId })).status, 200);
    assert.equal((await revoke({ token: tokens.refresh_token, client_id: clientId })).status, 200);
    assert.equal((await mcpCall(createUrl(ns), tokens.access_token, 'list_services')).status, 401);
  });

  test('resource indicators: another server or path is refused; a token for one namespace is not found in another account`s', async () => {
    const clientId = await register();
    const { challenge } = pkce();
    const base = {
      response_type: 'code',
      client_id: clientId,
      redirect_uri: REDIRECT,
      code_challenge: challenge,
      code_challenge_method: 'S256',
    };
    for (const resource of ['https://elsewhere.example/mcp/run/x', `${server.url}/api/keys`]) {
      const refused = await authorize({ ...base, resource });
      assertAnsweredHere(refused, 'invalid_target');
    }
    const stranger = await createAccount(server.url);
    const theirs = `oc-${randomBytes(4).toString('hex')}`;
    await mcpCall(createUrl(theirs), stranger.key, 'make_namespace', { name: theirs });
    // The owner cannot approve a client for a namespace that is not the owner's.
    const { requestId } = await consentRequest({ clientId, resource: `${server.url}/mcp/run/${theirs}` });
    const refused = await decide(owner, requestId, { approve: true, scopes: ['read'] });
    assert.equal(refused.status, 400);
    assert.equal(refused.body.field, 'namespace');
    // The owner's token (for ns) on the stranger's namespace: not found.
    const { tokens } = await signIn({ scopes: ['read'] });
    const across = await mcpCall(createUrl(theirs), tokens.access_token, 'list_services');
    assert.equal(parseResult(across).error_type, 'not_found');
  });

  test('bad input gets an OAuth error, never a server error: NUL in metadata, state or client_id; a body that is not JSON', async () => {
    const nul = await postJson(`${server.url}/oauth/register`, { client_name: 'a\u0000b', redirect_uris: [REDIRECT] });
    assert.equal(nul.status, 400);
    assert.equal(nul.body.error, 'invalid_client_metadata');
    const broken = await postJson(`${server.url}/oauth/register`, '{"client_name":');
    assert.equal(broken.status, 400);
    assert.equal(broken.body.error, 'invalid_request');
    const clientId = await register();
    const { challenge } = pkce();
    const base = {
      response_type: 'code',
      client_id: clientId,
      redirect_uri: REDIRECT,
      code_challenge: challenge,
      code_challenge_method: 'S256',
    };
    const badState = await authorize({ ...base, state: 'a\u0000b' });
    assertAnsweredHere(badState, 'invalid_request');
    const badClient = await authorize({ ...base, client_id: 'x\u0000y' });
    assert.equal(badClient.status, 400);
    assert.equal(JSON.parse(badClient.body).error, 'invalid_client');
    assert.equal(
      (await token({ grant_type: 'refresh_token', refresh_token: 'mcpwrt_\u0000', client_id: clientId })).body.error,
      'invalid_grant',
    );
    // The protocol endpoints read and cap their own bodies (Express, 100 kB): one over the account
    // routes' 64 KB still gets their OAuth answer, not the app's body-limit 413.
    const padded = await token({
      grant_type: 'refresh_token',
      refresh_token: 'mcpwrt_x',
      client_id: clientId,
      padding: 'p'.repeat(80_000),
    });
    assert.equal(padded.status, 400, JSON.stringify(padded.body).slice(0, 200));
    assert.equal(padded.body.error, 'invalid_grant');
  });

  test('consent: needs the session, is decided once, a denial goes back as access_denied; no cross-origin decision', async () => {
    const { clientId, requestId } = await consentRequest({ state: 's' });
    assert.equal((await fetch(`${server.url}/api/oauth/requests/${requestId}`)).status, 401);
    const forged = await postJson(
      `${server.url}/api/oauth/requests/${requestId}`,
      { approve: true, namespace: ns, scopes: ['read'] },
      { ...asOwner(owner), origin: 'https://evil.example' },
    );
    assert.equal(forged.status, 403);
    const unasked = await postJson(
      `${server.url}/api/oauth/requests/${requestId}`,
      { approve: true, namespace: ns, scopes: ['admin'] },
      asOwner(owner),
    );
    assert.equal(unasked.status, 400);
    assert.equal(unasked.body.field, 'scopes');
    const denied = await decide(owner, requestId, { approve: false });
    const back = new URL(denied.body.redirect_to);
    assert.equal(back.searchParams.get('error'), 'access_denied');
    assert.equal(back.searchParams.get('state'), 's');
    assert.equal(back.searchParams.get('code'), null);
    const twice = await decide(owner, requestId, { approve: true, namespace: ns, scopes: ['read'] });
    assert.equal(twice.status, 404);
    assert.equal((await fetch(`${server.url}/api/oauth/requests/${'0'.repeat(64)}`, { headers: asOwner(owner) })).status, 404);
    // Bad token requests: RFC 6749 JSON errors.
    const bad = await token({ grant_type: 'password', client_id: clientId });
    assert.equal(bad.body.error, 'unsupported_grant_type');
    const noClient = await token({ grant_type: 'authorization_code', code: 'x', code_verifier: 'y' });
    assert.equal(noClient.body.error, 'invalid_request');
  });
});

describe('housekeeping', () => {
  // Last in the file: it sweeps as of 8 days from now.
  test('a registered client no one signed in with is removed after 7 days; one with a grant stays', async () => {
    const unused = await register();
    const { clientId: used } = await signIn({ scopes: ['read'] });
    const { challenge } = pkce();
    const ask = (clientId: string) =>
      authorize({
        response_type: 'code',
        client_id: clientId,
        redirect_uri: REDIRECT,
        code_challenge: challenge,
        code_challenge_method: 'S256',
      });
    assert.equal((await server.server.services.housekeeping.sweep()).oauthClients, 0, 'nothing younger than 7 days');
    const swept = await server.server.services.housekeeping.sweep(Date.now() + 8 * 86_400_000);
    assert.ok(swept.oauthClients >= 1);
    assert.equal(JSON.parse((await ask(unused)).body).error, 'invalid_client');
    assert.equal((await ask(used)).status, 302, 'the signed-in client stays');
  });
});
