import { diffLines } from 'diff';
import hljs from 'highlight.js/lib/core';
import python from 'highlight.js/lib/languages/python';
import typescript from 'highlight.js/lib/languages/typescript';
import { useEffect, useState } from 'preact/hooks';
import { api, describeError } from '../api';
import { DataTable, ErrorMessage, HiddenHead, PageTitle, useSubmit } from '../components';

// Only the two languages functions are written in (the core alone keeps the bundle small).
hljs.registerLanguage('python', python);
hljs.registerLanguage('typescript', typescript);

interface FunctionSummary {
  name: string;
  description: string;
  tags: string[];
  language: string;
  active_version: number;
  locked: boolean;
}
interface Tree {
  namespaces: Array<{ name: string; services: Array<{ name: string; functions: FunctionSummary[] }> }>;
}
interface VersionSummary {
  version: number;
  language: string;
  code_bytes: number;
  restored_from: number | null;
  created_at: string;
}
interface FunctionDetail {
  service: string;
  name: string;
  description: string;
  tags: string[];
  locked: boolean;
  active_version: number;
  shown_version: number;
  language: string;
  code: string;
  input_schema: Record<string, any> | null;
  output_schema: Record<string, any> | null;
  requirements: string[];
  required_env: string[];
  optional_env: string[];
  versions: VersionSummary[];
}
interface Selected {
  ns: string;
  service: string;
  name: string;
}

const fnPath = (s: Selected) => `/api/functions/${encodeURIComponent(s.ns)}/${encodeURIComponent(s.service)}/${encodeURIComponent(s.name)}`;

/** Code, highlighted by highlight.js (its output escapes the code: only its own span elements are markup). */
export function Code(props: { code: string; language: string; label: string }) {
  const language = hljs.getLanguage(props.language) ? props.language : 'plaintext';
  const html = language === 'plaintext' ? undefined : hljs.highlight(props.code, { language }).value;
  return (
    <pre class="code" tabIndex={0} aria-label={props.label}>
      {html === undefined ? <code>{props.code}</code> : <code class="hljs" dangerouslySetInnerHTML={{ __html: html }} />}
    </pre>
  );
}

export function FunctionsPage() {
  const [tree, setTree] = useState<Tree>();
  const [error, setError] = useState<string>();
  const [selected, setSelected] = useState<Selected>();
  const reload = () =>
    api<Tree>('GET', '/api/functions')
      .then(setTree)
      .catch((e) => setError(describeError(e)));
  useEffect(() => void reload(), []);

  return (
    <section class="functions">
      <PageTitle>Functions</PageTitle>
      <ErrorMessage id="functions-error" message={error} />
      {tree && tree.namespaces.length === 0 && (
        <p>No namespaces yet. Create one and its functions through the create endpoint (see Connect).</p>
      )}
      <div class="split">
        <nav aria-label="Functions" class="tree">
          {tree?.namespaces.map((ns) => (
            <div key={ns.name}>
              <h2>{ns.name}</h2>
              {ns.services.length === 0 && <p class="hint">No services.</p>}
              {ns.services.map((service) => (
                <div key={service.name} class="service">
                  <h3>{service.name}</h3>
                  <ul>
                    {service.functions.map((fn) => {
                      const current = selected?.ns === ns.name && selected.service === service.name && selected.name === fn.name;
                      return (
                        <li key={fn.name}>
                          <button
                            type="button"
                            class="link"
                            aria-current={current ? 'true' : undefined}
                            onClick={() => setSelected({ ns: ns.name, service: service.name, name: fn.name })}
                          >
                            {fn.name}
                          </button>{' '}
                          <span class="hint">
                            v{fn.active_version} · {fn.language}
                            {fn.locked ? ' · locked' : ''}
                          </span>
                        </li>
                      );
                    })}
                  </ul>
                </div>
              ))}
            </div>
          ))}
        </nav>
        <div class="detail">
          {selected ? <FunctionView key={fnPath(selected)} selected={selected} onChanged={reload} /> : <p>Choose a function.</p>}
        </div>
      </div>
    </section>
  );
}

function FunctionView(props: { selected: Selected; onChanged: () => void }) {
  const [fn, setFn] = useState<FunctionDetail>();
  const [status, setStatus] = useState('');
  const { error, setError, run } = useSubmit();
  const load = () =>
    api<FunctionDetail>('GET', fnPath(props.selected))
      .then(setFn)
      .catch((e) => setError(describeError(e)));
  useEffect(() => void load(), []);

  const restore = (version: number) =>
    run(async () => {
      setStatus('');
      const restored = await api<{ version: number }>('POST', `${fnPath(props.selected)}/restore`, { version });
      setStatus(`Version ${version} restored as version ${restored.version}.`);
      await load();
      props.onChanged();
    });

  if (!fn) return <ErrorMessage id="function-error" message={error} />;
  const title = `${fn.service}.${fn.name}`;
  return (
    <article aria-labelledby="function-title">
      <h2 id="function-title">{title}</h2>
      <ErrorMessage id="function-error" message={error} />
      <p class="ok" role="status">
        {status}
      </p>
      {fn.description && <p>{fn.description}</p>}
      <dl class="facts">
        <dt>Language</dt>
        <dd>{fn.language}</dd>
        <dt>Active version</dt>
        <dd>{fn.active_version}</dd>
        <dt>Lock</dt>
        <dd data-lock>{fn.locked ? 'locked: updates, restores and deletes are refused' : 'unlocked'}</dd>
        <dt>Tags</dt>
        <dd>{fn.tags.length ? fn.tags.join(', ') : 'none'}</dd>
        <dt>Requirements</dt>
        <dd>{fn.requirements.length ? fn.requirements.join(', ') : 'none'}</dd>
        <dt>Required env</dt>
        <dd>{fn.required_env.length ? fn.required_env.join(', ') : 'none'}</dd>
        <dt>Optional env</dt>
        <dd>{fn.optional_env.length ? fn.optional_env.join(', ') : 'none'}</dd>
      </dl>
      <h3>Code (version {fn.shown_version})</h3>
      <Code code={fn.code} language={fn.language} label={`Code of ${title}, version ${fn.shown_version}`} />
      <h3>Input schema</h3>
      <pre tabIndex={0}>{fn.input_schema ? JSON.stringify(fn.input_schema, null, 2) : 'none'}</pre>
      <h3>Output schema</h3>
      <pre tabIndex={0}>{fn.output_schema ? JSON.stringify(fn.output_schema, null, 2) : 'none'}</pre>
      <Versions fn={fn} selected={props.selected} onRestore={restore} />
      <TryIt fn={fn} selected={props.selected} />
    </article>
  );
}

/** One of a function's versions, newest first. */
function VersionSelect(props: { id: string; label: string; versions: VersionSummary[]; value: string; onChange: (value: string) => void }) {
  return (
    <div class="field">
      <label for={props.id}>{props.label}</label>
      <select id={props.id} value={props.value} onChange={(e) => props.onChange((e.target as HTMLSelectElement).value)}>
        {props.versions.map((v) => (
          <option key={v.version} value={String(v.version)}>
            {v.version}
          </option>
        ))}
      </select>
    </div>
  );
}

function Versions(props: { fn: FunctionDetail; selected: Selected; onRestore: (version: number) => void }) {
  const { fn } = props;
  const versions = [...fn.versions].sort((a, b) => b.version - a.version);
  const [from, setFrom] = useState(String(Math.max(1, fn.active_version - 1)));
  const [to, setTo] = useState(String(fn.active_version));
  const [diff, setDiff] = useState<{ from: number; to: number; parts: ReturnType<typeof diffLines> }>();
  const { error, submit } = useSubmit();

  const compare = submit(async () => {
    const [a, b] = await Promise.all(
      [from, to].map((v) => api<FunctionDetail>('GET', `${fnPath(props.selected)}?version=${encodeURIComponent(v)}`)),
    );
    setDiff({ from: a!.shown_version, to: b!.shown_version, parts: diffLines(a!.code, b!.code) });
  });

  return (
    <section aria-labelledby="versions-title">
      <h3 id="versions-title">Versions</h3>
      <DataTable
        caption={`Versions of ${fn.service}.${fn.name}, newest first`}
        class="versions"
        rows={versions}
        empty="No versions."
        rowKey={(v) => String(v.version)}
        rowAttributes={(v) => ({ 'data-version': String(v.version) })}
        columns={[
          { head: 'Version', cell: (v) => `${v.version}${v.version === fn.active_version ? ' (active)' : ''}` },
          { head: 'Created', cell: (v) => new Date(v.created_at).toLocaleString() },
          { head: 'Code', cell: (v) => `${v.code_bytes} bytes` },
          { head: 'Restored from', cell: (v) => v.restored_from ?? '' },
          {
            head: <HiddenHead>Actions</HiddenHead>,
            cell: (v) =>
              v.version !== fn.active_version && (
                <button type="button" disabled={fn.locked} onClick={() => props.onRestore(v.version)}>
                  Restore version {v.version}
                </button>
              ),
          },
        ]}
      />
      {fn.locked && <p class="hint">The function is locked: unlock it (unlock_function) to restore a version.</p>}
      <form class="diff-form" onSubmit={compare}>
        <VersionSelect id="diff-from" label="Compare version" versions={versions} value={from} onChange={setFrom} />
        <VersionSelect id="diff-to" label="with version" versions={versions} value={to} onChange={setTo} />
        <button type="submit">Show diff</button>
      </form>
      <ErrorMessage id="diff-error" message={error} />
      {diff && (
        <pre class="diff" tabIndex={0} aria-label={`Changes from version ${diff.from} to version ${diff.to}`}>
          {diff.parts.flatMap((part, i) =>
            part.value
              .replace(/\n$/, '')
              .split('\n')
              .map((line, j) => (
                <span key={`${i}-${j}`} class={part.added ? 'added' : part.removed ? 'removed' : 'same'}>
                  {part.added ? '+ ' : part.removed ? '- ' : '  '}
                  {line}
                  {'\n'}
                </span>
              )),
          )}
        </pre>
      )}
    </section>
  );
}

type Field = { name: string; type: string; required: boolean; enum?: unknown[]; description?: string };

/** The form's fields from the input schema's top-level properties (anything nested is entered as JSON). */
function fieldsOf(schema: Record<string, any> | null): Field[] | undefined {
  if (!schema || schema.type !== 'object' || typeof schema.properties !== 'object' || schema.properties === null) return undefined;
  const required: string[] = Array.isArray(schema.required) ? schema.required : [];
  return Object.entries(schema.properties as Record<string, any>).map(([name, prop]) => ({
    name,
    type: typeof prop?.type === 'string' ? prop.type : 'json',
    required: required.includes(name),
    ...(Array.isArray(prop?.enum) ? { enum: prop.enum } : {}),
    ...(typeof prop?.description === 'string' ? { description: prop.description } : {}),
  }));
}

function TryIt(props: { fn: FunctionDetail; selected: Selected }) {
  const fields = fieldsOf(props.fn.input_schema);
  const [values, setValues] = useState<Record<string, string | boolean>>({});
  const [raw, setRaw] = useState('{}');
  const [answer, setAnswer] = useState<{ execution_id: string; is_error: boolean; texts: string[] }>();
  const { busy, error, setError, submit } = useSubmit();

  const input = (): Record<string, unknown> => {
    if (!fields) {
      const parsed = JSON.parse(raw);
      if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new Error('the input must be a JSON object');
      return parsed;
    }
    const out: Record<string, unknown> = {};
    for (const f of fields) {
      const value = values[f.name];
      if (f.type === 'boolean') {
        if (value !== undefined) out[f.name] = value;
        continue;
      }
      if (value === undefined || value === '') continue;
      const text = String(value);
      if (f.type === 'integer' || f.type === 'number') out[f.name] = Number(text);
      else if (f.type === 'string' && !f.enum) out[f.name] = text;
      else out[f.name] = f.enum && f.type === 'string' ? text : JSON.parse(text);
    }
    return out;
  };

  const run = submit(async () => {
    setAnswer(undefined);
    let body: Record<string, unknown>;
    try {
      body = input();
    } catch (e) {
      setError(`The input is not valid: ${e instanceof Error ? e.message : String(e)}`);
      return;
    }
    setAnswer(await api('POST', `${fnPath(props.selected)}/run`, { input: body }));
  });

  const set = (name: string, value: string | boolean) => setValues((v) => ({ ...v, [name]: value }));
  return (
    <section aria-labelledby="try-title">
      <h3 id="try-title">Try it</h3>
      <p class="hint">Runs the active version like any call: it counts against this month's executions and the rate limit.</p>
      <form onSubmit={run} class="try-it">
        {fields?.map((f) => {
          const id = `try-${f.name}`;
          const label = `${f.name}${f.required ? ' (required)' : ''}`;
          if (f.type === 'boolean')
            return (
              <label class="check" key={f.name}>
                <input
                  type="checkbox"
                  checked={values[f.name] === true}
                  onChange={(e) => set(f.name, (e.target as HTMLInputElement).checked)}
                />{' '}
                {label}
              </label>
            );
          return (
            <div class="field" key={f.name}>
              <label for={id}>{label}</label>
              {f.enum ? (
                <select id={id} value={String(values[f.name] ?? '')} onChange={(e) => set(f.name, (e.target as HTMLSelectElement).value)}>
                  <option value="">(none)</option>
                  {f.enum.map((option) => (
                    <option key={String(option)} value={typeof option === 'string' ? option : JSON.stringify(option)}>
                      {String(option)}
                    </option>
                  ))}
                </select>
              ) : f.type === 'string' || f.type === 'integer' || f.type === 'number' ? (
                <input
                  id={id}
                  type={f.type === 'string' ? 'text' : 'number'}
                  step={f.type === 'integer' ? '1' : 'any'}
                  required={f.required}
                  value={String(values[f.name] ?? '')}
                  onInput={(e) => set(f.name, (e.target as HTMLInputElement).value)}
                />
              ) : (
                <textarea
                  id={id}
                  rows={3}
                  required={f.required}
                  value={String(values[f.name] ?? '')}
                  onInput={(e) => set(f.name, (e.target as HTMLTextAreaElement).value)}
                  aria-describedby={`${id}-hint`}
                />
              )}
              {f.description && <span class="hint">{f.description}</span>}
              {!f.enum && f.type !== 'string' && f.type !== 'integer' && f.type !== 'number' && (
                <span class="hint" id={`${id}-hint`}>
                  JSON
                </span>
              )}
            </div>
          );
        })}
        {!fields && (
          <div class="field">
            <label for="try-input">Input (a JSON object)</label>
            <textarea id="try-input" rows={4} value={raw} onInput={(e) => setRaw((e.target as HTMLTextAreaElement).value)} />
          </div>
        )}
        <button type="submit" disabled={busy}>
          {busy ? 'Running…' : 'Run'}
        </button>
      </form>
      <ErrorMessage id="try-error" message={error} />
      {answer && (
        <div class="try-answer" role="status">
          <p class={answer.is_error ? 'error' : 'ok'}>
            {answer.is_error ? 'The run failed' : 'Result'} (execution <code>{answer.execution_id}</code>)
          </p>
          <pre tabIndex={0} id="try-result">
            {answer.texts.join('\n\n')}
          </pre>
        </div>
      )}
    </section>
  );
}
