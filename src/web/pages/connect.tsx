import { useEffect, useState } from 'preact/hooks';
import { api, describeError, type CreatedKey, type Namespace } from '../api';
import { CopyBlock, ErrorMessage, Link, PageTitle } from '../components';
import { claudeMcpAdd, endpoints, KEY_VARIABLE, mcpJson } from '../connect-config';

export function ConnectPage(props: { created: CreatedKey | undefined }) {
  const [namespaces, setNamespaces] = useState<Namespace[]>();
  const [error, setError] = useState<string>();
  // A key limited to a namespace connects to that one; otherwise the first the account has.
  const [chosen, setChosen] = useState<string>(props.created?.namespace ?? '');

  useEffect(() => {
    api<{ namespaces: Namespace[] }>('GET', '/api/namespaces')
      .then((listed) => {
        setNamespaces(listed.namespaces);
        setChosen((current) => current || listed.namespaces[0]?.name || 'myns');
      })
      .catch((e) => setError(describeError(e)));
  }, []);

  const names = [...new Set([...(namespaces ?? []).map((ns) => ns.name), ...(props.created?.namespace ? [props.created.namespace] : [])])];
  const key = props.created?.key;
  const target = { origin: location.origin, namespace: chosen || 'myns', key };
  const urls = endpoints(target);

  return (
    <section>
      <PageTitle>Connect an MCP client</PageTitle>
      <ErrorMessage id="connect-error" message={error} />
      <p>
        Each namespace has two endpoints: <code>{urls.create}</code> to manage functions and <code>{urls.run}</code> to run them. Clients
        send the API key as <code>Authorization: Bearer mcpw_…</code>.
      </p>
      <div class="field">
        <label for="connect-namespace">Namespace</label>
        <input
          id="connect-namespace"
          type="text"
          list="connect-namespace-list"
          value={chosen}
          onInput={(event) => setChosen((event.currentTarget as HTMLInputElement).value.trim())}
          aria-describedby="connect-namespace-hint"
        />
        <datalist id="connect-namespace-list">
          {names.map((name) => (
            <option key={name} value={name} />
          ))}
        </datalist>
      </div>
      <p id="connect-namespace-hint" class="hint">
        {names.length > 0
          ? `Your namespaces: ${names.join(', ')}.`
          : 'You have no namespace yet: name one here, then call make_namespace through its create endpoint.'}
      </p>
      {key ? (
        <p class="warning">
          The key you just created (<code>{props.created!.prefix}</code>) is filled in below. This file then holds a secret: keep it out of
          version control.
        </p>
      ) : (
        <p class="hint">
          The file reads the key from the <code>{KEY_VARIABLE}</code> environment variable. <Link href="/keys">Create a key</Link> to have
          it filled in.
        </p>
      )}
      <h2>Claude Code: the project's .mcp.json</h2>
      <CopyBlock id="mcp-json" label=".mcp.json" text={mcpJson(target)} />
      <h2>Claude Code: user-wide, with claude mcp add</h2>
      <p class="hint">
        The single quotes keep <code>{`\${${KEY_VARIABLE}}`}</code> unexpanded: the key is read from your environment at each start and
        never written to <code>~/.claude.json</code>.
      </p>
      <CopyBlock id="claude-mcp-add" label="Shell" text={claudeMcpAdd(target)} />
    </section>
  );
}
