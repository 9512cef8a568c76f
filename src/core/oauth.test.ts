import assert from 'node:assert/strict';
import { test } from 'node:test';
import { clientDisplayName, namespaceOfResource, publicClientMetadata, redirectShown, requestedScopes } from './oauth.js';

test('a resource indicator names one of this server`s endpoints (its namespace), the server itself (null), or nothing here', () => {
  const origin = 'https://mcp.example.com';
  const of = (url: string, base?: string) => namespaceOfResource(new URL(url), origin, base);
  assert.equal(of('https://mcp.example.com/mcp/run/alpha'), 'alpha');
  assert.equal(of('https://mcp.example.com/mcp/create/alpha/'), 'alpha');
  assert.equal(of('https://mcp.example.com'), null);
  assert.equal(of('https://mcp.example.com/'), null);
  for (const foreign of [
    'https://evil.example/mcp/run/alpha',
    'https://mcp.example.com/api/keys',
    'https://mcp.example.com/mcp/run/alpha?x=1',
    'https://mcp.example.com/mcp/run/Not_Valid',
    'http://mcp.example.com/mcp/run/alpha',
    'https://alpha.run.mcp.example.com/',
  ]) {
    assert.equal(of(foreign), undefined, foreign);
  }
  assert.equal(of('https://alpha.run.mcp.example.com/', 'mcp.example.com'), 'alpha');
  assert.equal(of('https://alpha.create.mcp.example.com', 'mcp.example.com'), 'alpha');
  assert.equal(of('https://alpha.run.mcp.example.com/x', 'mcp.example.com'), undefined);
  assert.equal(of('https://alpha.run.other.example/', 'mcp.example.com'), undefined);
});

test('scopes: the API keys` names only, all when none is asked for', () => {
  assert.deepEqual(requestedScopes(undefined), ['read', 'write', 'execute']);
  assert.deepEqual(requestedScopes(['']), ['read', 'write', 'execute']);
  assert.deepEqual(requestedScopes(['read', 'read']), ['read']);
  assert.equal(requestedScopes(['read', 'admin']), undefined);
});

test('a client`s registered name is shown as one bounded line of text', () => {
  assert.equal(clientDisplayName({ client_name: 'VS Code' }), 'VS Code');
  assert.equal(clientDisplayName({}), 'Unnamed client');
  assert.equal(clientDisplayName({ client_name: 'a\nb\u202etxt.exe' }), 'a b txt.exe');
  assert.equal(clientDisplayName({ client_name: 'x'.repeat(200) }).length, 80);
  assert.equal(clientDisplayName({ client_name: 42 }), 'Unnamed client');
});

test('a registration keeps a public client`s name, scope and redirect URIs, bounded; plain http only to loopback', () => {
  const kept = publicClientMetadata({ client_name: 'A', redirect_uris: ['https://a.example/cb'], jwks: { keys: [] }, contacts: ['x'] });
  assert.deepEqual(kept, { ok: true, metadata: { client_name: 'A', redirect_uris: ['https://a.example/cb'] } });
  for (const uri of ['http://localhost:3000/cb', 'http://127.0.0.1/cb', 'http://[::1]:9/cb', 'com.example.app:/cb']) {
    assert.equal(publicClientMetadata({ redirect_uris: [uri] }).ok, true, uri);
  }
  for (const bad of [
    { redirect_uris: ['http://a.example/cb'] },
    { redirect_uris: ['http://localhost.evil.example/cb'] },
    { redirect_uris: [] },
    { redirect_uris: 'https://a.example/cb' },
    { redirect_uris: Array(11).fill('https://a.example/cb') },
    { redirect_uris: [`https://a.example/${'x'.repeat(2048)}`] },
    { client_name: 'n'.repeat(201), redirect_uris: ['https://a.example/cb'] },
    { client_name: 7, redirect_uris: ['https://a.example/cb'] },
  ]) {
    assert.equal(publicClientMetadata(bad).ok, false, JSON.stringify(bad).slice(0, 80));
  }
  // Code points, not UTF-16 units: 200 emoji are a 200-character name.
  assert.equal(publicClientMetadata({ client_name: '😀'.repeat(200), redirect_uris: ['https://a.example/cb'] }).ok, true);
});

test('the display name hides invisible and line-breaking characters and is cut by code points; the return address shows its scheme', () => {
  for (const mark of ['\u2028', '\u2029', '\ufeff', '\u2060', '\u2064', '\u061c']) {
    assert.equal(clientDisplayName({ client_name: `a${mark}b` }), 'a b', JSON.stringify(mark));
  }
  const cut = clientDisplayName({ client_name: '😀'.repeat(100) });
  assert.equal(cut, `${'😀'.repeat(79)}…`);
  assert.equal(redirectShown('https://app.example/cb'), 'https://app.example');
  assert.equal(redirectShown('http://127.0.0.1:9/callback'), 'http://127.0.0.1:9');
  assert.equal(redirectShown('com.example.app:/cb'), 'com.example.app:');
});
