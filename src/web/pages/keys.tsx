import { useEffect, useRef, useState } from 'preact/hooks';
import { api, describeError, type CreatedKey, type KeyListing, type Namespace } from '../api';
import { CopyBlock, DataTable, ErrorMessage, HiddenHead, Link, PageTitle, useSubmit } from '../components';
import { SignedInClients } from './oauth-grants';

const SCOPES = [
  { id: 'read', hint: 'list and describe' },
  { id: 'write', hint: 'make, update, delete, lock' },
  { id: 'execute', hint: 'the run endpoint' },
] as const;

const EXPIRY_DAYS = [
  { value: '', label: 'Never' },
  { value: '7', label: 'In 7 days' },
  { value: '30', label: 'In 30 days' },
  { value: '90', label: 'In 90 days' },
  { value: '365', label: 'In a year' },
];

const when = (iso: string | null, none: string) => (iso ? new Date(iso).toLocaleString() : none);

export function KeysPage(props: { created: CreatedKey | undefined; onCreated: (key: CreatedKey | undefined) => void }) {
  const [keys, setKeys] = useState<KeyListing[]>();
  const [namespaces, setNamespaces] = useState<Namespace[]>([]);
  const [listError, setListError] = useState<string>();
  const [confirming, setConfirming] = useState<string>();
  const creating = useSubmit();

  const reload = async () => {
    try {
      const [listed, owned] = await Promise.all([
        api<{ keys: KeyListing[] }>('GET', '/api/keys'),
        api<{ namespaces: Namespace[] }>('GET', '/api/namespaces'),
      ]);
      setKeys(listed.keys);
      setNamespaces(owned.namespaces);
      setListError(undefined);
    } catch (e) {
      setListError(describeError(e));
    }
  };
  useEffect(() => {
    void reload();
  }, []);

  const create = creating.submit(async (formElement) => {
    const form = new FormData(formElement);
    const namespace = String(form.get('namespace') ?? '').trim();
    const days = String(form.get('expiry') ?? '');
    const key = await api<CreatedKey>('POST', '/api/keys', {
      name: String(form.get('name') ?? '').trim() || undefined,
      scopes: form.getAll('scopes').map(String),
      ...(namespace ? { namespace } : {}),
      ...(days ? { expires_in_days: Number(days) } : {}),
    });
    props.onCreated(key);
    formElement.reset();
    await reload();
  });

  const revoke = async (id: string) => {
    setConfirming(undefined);
    try {
      await api('DELETE', `/api/keys/${encodeURIComponent(id)}`);
      // A revoked key is not offered any more, here or on the Connect page.
      if (props.created?.id === id) props.onCreated(undefined);
      await reload();
    } catch (e) {
      setListError(describeError(e));
    }
  };

  return (
    <section>
      <PageTitle>API keys</PageTitle>
      {props.created && (
        <div class="new-key" role="region" aria-labelledby="new-key-title">
          <h2 id="new-key-title">Your new key “{props.created.name}”</h2>
          <p class="warning">
            <strong>Copy it now: it is shown only once.</strong> The server keeps only a hash of it; lose it and you make a new one.
          </p>
          <CopyBlock id="new-key-value" label="API key" text={props.created.key} />
          <p>
            <Link href="/connect">Connect a client with this key</Link>
          </p>
        </div>
      )}

      <h2>Create a key</h2>
      <form onSubmit={create} class="key-form" aria-describedby="create-key-error" noValidate>
        <label for="key-name">Name</label>
        <input id="key-name" name="name" type="text" maxLength={100} placeholder="laptop" />
        <label for="key-namespace">Namespace (empty: every namespace)</label>
        <input id="key-namespace" name="namespace" type="text" list="key-namespace-list" autoComplete="off" placeholder="myns" />
        <datalist id="key-namespace-list">
          {namespaces.map((ns) => (
            <option key={ns.name} value={ns.name} />
          ))}
        </datalist>
        <fieldset>
          <legend>Scopes</legend>
          {SCOPES.map((scope) => (
            <label key={scope.id} class="check">
              <input type="checkbox" name="scopes" value={scope.id} defaultChecked />
              {scope.id} <span class="hint">({scope.hint})</span>
            </label>
          ))}
        </fieldset>
        <label for="key-expiry">Expires</label>
        <select id="key-expiry" name="expiry">
          {EXPIRY_DAYS.map((option) => (
            <option key={option.value} value={option.value}>
              {option.label}
            </option>
          ))}
        </select>
        <ErrorMessage id="create-key-error" message={creating.error} />
        <button type="submit" disabled={creating.busy}>
          Create key
        </button>
      </form>

      <h2>Your keys</h2>
      <ErrorMessage id="keys-error" message={listError} />
      <DataTable
        caption="API keys of this account"
        rows={keys}
        empty="No keys yet."
        rowKey={(key) => key.id}
        rowAttributes={(key) => ({ 'data-key-id': key.id })}
        columns={[
          { head: 'Name', cell: (key) => key.name, rowHeader: true },
          { head: 'Prefix', cell: (key) => <code>{key.prefix}</code> },
          { head: 'Namespace', cell: (key) => key.namespace ?? 'all' },
          { head: 'Scopes', cell: (key) => key.scopes.join(', ') },
          { head: 'Created', cell: (key) => when(key.created_at, '') },
          { head: 'Last used', cell: (key) => when(key.last_used_at, 'never') },
          { head: 'Expires', cell: (key) => when(key.expires_at, 'never') },
          {
            head: <HiddenHead>Actions</HiddenHead>,
            class: () => 'actions',
            cell: (key) =>
              confirming === key.id ? (
                <ConfirmRevoke name={key.name} onRevoke={() => revoke(key.id)} onCancel={() => setConfirming(undefined)} />
              ) : (
                <button type="button" onClick={() => setConfirming(key.id)} aria-label={`Revoke key ${key.name}`}>
                  Revoke
                </button>
              ),
          },
        ]}
      />
      <SignedInClients />
    </section>
  );
}

/** The second step of a revoke; it takes the focus, so that Enter, Enter revokes from the keyboard. */
function ConfirmRevoke(props: { name: string; onRevoke: () => void; onCancel: () => void }) {
  const ref = useRef<HTMLButtonElement>(null);
  useEffect(() => ref.current?.focus(), []);
  return (
    <span role="group" aria-label={`Revoke key ${props.name}?`}>
      <button type="button" class="danger" ref={ref} onClick={props.onRevoke}>
        Revoke {props.name} now
      </button>{' '}
      <button type="button" onClick={props.onCancel}>
        Cancel
      </button>
    </span>
  );
}
