import { useEffect, useState } from 'preact/hooks';
import { api, describeError } from '../api';
import { ErrorMessage, PageTitle } from '../components';
import type { ConsentRequest } from '../../core/dashboard-types.js';

const SCOPE_HINTS: Record<string, string> = {
  read: 'list and describe functions',
  write: 'make, update, delete and lock functions',
  execute: 'run functions and code',
};

// Schemes that would run in this page rather than leave it (the registration refuses them too).
const UNSAFE_SCHEMES = new Set(['javascript:', 'data:', 'vbscript:', 'blob:', 'file:']);

/** The browser leaves for the client's redirect URI (with the code, or access_denied). */
function leaveFor(url: string): void {
  if (UNSAFE_SCHEMES.has(new URL(url).protocol)) throw new Error('the client’s redirect address is not allowed');
  location.assign(url);
}

/**
 * Sign-in from an MCP client (/oauth/authorize sends the owner here): the client, by the name it
 * registered (untrusted text, shown as text), the namespace and the scopes; approve or deny.
 */
export function ConsentPage() {
  const requestId = new URLSearchParams(location.search).get('request') ?? '';
  const [request, setRequest] = useState<ConsentRequest>();
  const [loadError, setLoadError] = useState<string>();
  const [error, setError] = useState<string>();
  const [busy, setBusy] = useState(false);
  const [done, setDone] = useState<string>();

  useEffect(() => {
    api<ConsentRequest>('GET', `/api/oauth/requests/${encodeURIComponent(requestId)}`)
      .then(setRequest)
      .catch((e) => setLoadError(describeError(e)));
  }, [requestId]);

  const decide = async (approve: boolean, form?: HTMLFormElement) => {
    setBusy(true);
    setError(undefined);
    try {
      const data = form ? new FormData(form) : undefined;
      const answer = await api<{ redirect_to: string }>('POST', `/api/oauth/requests/${encodeURIComponent(requestId)}`, {
        approve,
        ...(data ? { namespace: String(data.get('namespace') ?? ''), scopes: data.getAll('scopes').map(String) } : {}),
      });
      setDone(approve ? 'Approved: returning to the client…' : 'Denied: returning to the client…');
      leaveFor(answer.redirect_to);
    } catch (e) {
      setError(describeError(e));
      setBusy(false);
    }
  };

  if (loadError) {
    return (
      <section class="narrow">
        <PageTitle>Sign-in request</PageTitle>
        <ErrorMessage id="consent-load-error" message={loadError} />
      </section>
    );
  }
  if (!request) return <p class="loading">Loading…</p>;
  return (
    <section class="narrow consent">
      <PageTitle>Allow “{request.client_name}” to use MCPWorks?</PageTitle>
      <p>
        The client <strong class="client-name">{request.client_name}</strong> (it returns to <code>{request.redirect_host}</code>) asks to
        use this account’s MCP endpoints. Its name is what it registered itself with: approve only a client you just started.
      </p>
      <form
        aria-describedby="consent-error"
        onSubmit={(event) => {
          event.preventDefault();
          void decide(true, event.currentTarget as HTMLFormElement);
        }}
      >
        {request.namespace ? (
          <p>
            Namespace: <strong>{request.namespace}</strong>
            <input type="hidden" name="namespace" value={request.namespace} />
          </p>
        ) : (
          <>
            <label for="consent-namespace">Namespace</label>
            <select id="consent-namespace" name="namespace" required>
              {request.namespaces.map((name) => (
                <option key={name} value={name}>
                  {name}
                </option>
              ))}
            </select>
            {request.namespaces.length === 0 && <p class="hint">This account has no namespace yet: make one first (make_namespace).</p>}
          </>
        )}
        <fieldset>
          <legend>Scopes</legend>
          {request.scopes.map((scope) => (
            <label key={scope} class="check">
              <input type="checkbox" name="scopes" value={scope} defaultChecked />
              {scope} <span class="hint">({SCOPE_HINTS[scope] ?? scope})</span>
            </label>
          ))}
        </fieldset>
        <p class="hint">The client gets a token for this namespace and these scopes only; revoke it any time on the API keys page.</p>
        <ErrorMessage id="consent-error" message={error} />
        <p role="status" hidden={!done}>
          {done}
        </p>
        <div>
          <button type="submit" disabled={busy}>
            Approve
          </button>{' '}
          <button type="button" disabled={busy} onClick={() => void decide(false)}>
            Deny
          </button>
        </div>
      </form>
    </section>
  );
}
