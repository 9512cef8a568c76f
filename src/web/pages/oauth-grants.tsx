import { useEffect, useState } from 'preact/hooks';
import { api, describeError } from '../api';
import { ErrorMessage } from '../components';

/** GET /api/oauth/grants: the clients signed in with OAuth (src/services/oauth.ts OAuthGrantListing). */
export interface OAuthGrant {
  id: string;
  client_name: string;
  namespace: string | null;
  scopes: string[];
  created_at: string;
  last_used_at: string | null;
  expires_at: string | null;
}

const when = (iso: string | null, none: string) => (iso ? new Date(iso).toLocaleString() : none);

/**
 * The API-keys page's section of signed-in MCP clients: each is a token pair for one namespace and
 * chosen scopes; revoking one (as a key is revoked) ends its access at once.
 */
export function SignedInClients() {
  const [grants, setGrants] = useState<OAuthGrant[]>();
  const [error, setError] = useState<string>();

  const reload = async () => {
    try {
      setGrants((await api<{ grants: OAuthGrant[] }>('GET', '/api/oauth/grants')).grants);
      setError(undefined);
    } catch (e) {
      setError(describeError(e));
    }
  };
  useEffect(() => {
    void reload();
  }, []);

  const revoke = async (grant: OAuthGrant) => {
    try {
      await api('DELETE', `/api/keys/${encodeURIComponent(grant.id)}`);
      await reload();
    } catch (e) {
      setError(describeError(e));
    }
  };

  return (
    <>
      <h2 id="signed-in-clients">Signed-in clients</h2>
      <p class="hint">MCP clients that signed in through the browser (OAuth). Their names are what they registered themselves with.</p>
      <ErrorMessage id="grants-error" message={error} />
      {grants && grants.length === 0 && <p>No client has signed in.</p>}
      {grants && grants.length > 0 && (
        <table class="keys grants" aria-labelledby="signed-in-clients">
          <thead>
            <tr>
              <th scope="col">Client</th>
              <th scope="col">Namespace</th>
              <th scope="col">Scopes</th>
              <th scope="col">Created</th>
              <th scope="col">Last used</th>
              <th scope="col">Expires</th>
              <th scope="col">
                <span class="visually-hidden">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {grants.map((grant) => (
              <tr key={grant.id} data-grant-id={grant.id}>
                <th scope="row">{grant.client_name}</th>
                <td>{grant.namespace ?? 'all'}</td>
                <td>{grant.scopes.join(', ')}</td>
                <td>{when(grant.created_at, '')}</td>
                <td>{when(grant.last_used_at, 'never')}</td>
                <td>{when(grant.expires_at, 'never')}</td>
                <td class="actions">
                  <button
                    type="button"
                    class="danger"
                    onClick={() => void revoke(grant)}
                    aria-label={`Revoke sign-in of ${grant.client_name}`}
                  >
                    Revoke
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </>
  );
}
