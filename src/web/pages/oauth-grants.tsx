import { useEffect, useState } from 'preact/hooks';
import { api, describeError } from '../api';
import { DataTable, ErrorMessage, HiddenHead } from '../components';
import type { OAuthGrantListing } from '../../core/dashboard-types.js';

const when = (iso: string | null, none: string) => (iso ? new Date(iso).toLocaleString() : none);

/**
 * The API-keys page's section of signed-in MCP clients: each is a token pair for one namespace and
 * chosen scopes; revoking one (as a key is revoked) ends its access at once.
 */
export function SignedInClients() {
  const [grants, setGrants] = useState<OAuthGrantListing[]>();
  const [error, setError] = useState<string>();

  const reload = async () => {
    try {
      setGrants((await api<{ grants: OAuthGrantListing[] }>('GET', '/api/oauth/grants')).grants);
      setError(undefined);
    } catch (e) {
      setError(describeError(e));
    }
  };
  useEffect(() => {
    void reload();
  }, []);

  const revoke = async (grant: OAuthGrantListing) => {
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
      <DataTable
        caption="MCP clients signed in to this account"
        class="grants"
        rows={grants}
        empty="No client has signed in."
        rowKey={(grant) => grant.id}
        rowAttributes={(grant) => ({ 'data-grant-id': grant.id })}
        columns={[
          { head: 'Client', cell: (grant) => grant.client_name, rowHeader: true },
          { head: 'Namespace', cell: (grant) => grant.namespace ?? 'all' },
          { head: 'Scopes', cell: (grant) => grant.scopes.join(', ') },
          { head: 'Created', cell: (grant) => when(grant.created_at, '') },
          { head: 'Last used', cell: (grant) => when(grant.last_used_at, 'never') },
          { head: 'Expires', cell: (grant) => when(grant.expires_at, 'never') },
          {
            head: <HiddenHead>Actions</HiddenHead>,
            class: () => 'actions',
            cell: (grant) => (
              <button type="button" class="danger" onClick={() => void revoke(grant)} aria-label={`Revoke sign-in of ${grant.client_name}`}>
                Revoke
              </button>
            ),
          },
        ]}
      />
    </>
  );
}
