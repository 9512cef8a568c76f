import { useEffect, useState } from 'preact/hooks';
import { api, describeError } from '../api';
import { DataTable, ErrorMessage, HiddenHead, PageTitle, useSubmit } from '../components';

interface AgentSummary {
  name: string;
  description: string;
  status: string;
  desired_replicas: number;
  state_keys?: number;
}
interface Listing {
  namespaces: Array<{ name: string; agents: AgentSummary[] }>;
  ai_providers: string[];
}
interface Replica {
  name: string;
  status: string;
  started_at: string | null;
  restarts: number;
  last_exit: string | null;
}
interface Schedule {
  id: string;
  schedule_name: string | null;
  function_name: string;
  cron_expression: string;
  timezone: string;
  enabled: boolean;
  disabled_reason: string | null;
  next_fire_at: string | null;
  waiting?: string;
}
interface Webhook {
  path: string;
  handler_function_name: string;
  signed: boolean;
  url: string;
  subdomain_url?: string;
}
interface Run {
  run_id: string;
  trigger: string;
  trigger_name: string | null;
  replica: string | null;
  function_name: string | null;
  status: string;
  error: string | null;
  started_at: string | null;
  duration_ms: number | null;
  usage: { input_tokens: number | null; output_tokens: number | null } | null;
}
interface AgentDetail extends AgentSummary {
  config: { ai?: { provider: string; model: string; base_url: string | null; system_prompt_set: boolean } | null };
  state: { keys: number; bytes: number };
  limits: { agent_slots: { used: number; limit: number | null } };
  replicas: Replica[];
  schedules?: Schedule[];
  webhooks?: Webhook[];
}
interface Fire {
  fire_id: string;
  schedule_name: string | null;
  scheduled_for: string | null;
  replica: string | null;
  status: string;
  reason: string | null;
}
interface StateKey {
  key: string;
  version: number;
  size_bytes: number;
  updated_at: string;
}
interface RunDetail extends Run {
  calls: Array<{ function: string; execution_id: string | null; status: string; duration_ms: number }>;
  tool_calls: Array<{ name: string; kind: string; outcome: string; duration_ms: number; execution_id: string | null }>;
  answer: string | null;
}
interface ChatAnswer {
  response: string;
  replica: string;
  conversation_id: string;
  run_id: string;
}
interface Selected {
  ns: string;
  name: string;
}

const when = (iso: string | null | undefined) => (iso ? new Date(iso).toLocaleString() : '');
const agentPath = (s: Selected) => `/api/agents/${encodeURIComponent(s.ns)}/${encodeURIComponent(s.name)}`;

export function AgentsPage() {
  const [listing, setListing] = useState<Listing>();
  const [error, setError] = useState<string>();
  const [selected, setSelected] = useState<Selected>();
  const making = useSubmit();
  const reload = () =>
    api<Listing>('GET', '/api/agents')
      .then(setListing)
      .catch((e) => setError(describeError(e)));
  useEffect(() => void reload(), []);

  const make = making.submit(async (form) => {
    const data = new FormData(form);
    const ns = String(data.get('namespace') ?? '');
    const name = String(data.get('name') ?? '').trim();
    await api('POST', `/api/agents/${encodeURIComponent(ns)}`, { name, description: String(data.get('description') ?? '') });
    form.reset();
    await reload();
    setSelected({ ns, name });
  });

  const rows = listing?.namespaces.flatMap((ns) => ns.agents.map((agent) => ({ ns: ns.name, agent })));
  return (
    <section class="agents">
      <PageTitle>Agents</PageTitle>
      <ErrorMessage id="agents-error" message={error} />
      <DataTable
        caption="Agents of this account"
        rows={rows}
        empty="No agents yet. Make one below, or with make_agent through the create endpoint."
        rowKey={(r) => `${r.ns}/${r.agent.name}`}
        rowAttributes={(r) => ({
          'data-agent': r.agent.name,
          'aria-selected': selected?.ns === r.ns && selected.name === r.agent.name ? 'true' : undefined,
        })}
        columns={[
          { head: 'Agent', cell: (r) => r.agent.name, rowHeader: true },
          { head: 'Namespace', cell: (r) => r.ns },
          { head: 'Status', cell: (r) => r.agent.status },
          { head: 'Replicas', cell: (r) => r.agent.desired_replicas },
          { head: 'Description', cell: (r) => r.agent.description },
          {
            head: <HiddenHead>Open</HiddenHead>,
            cell: (r) => (
              <button type="button" onClick={() => setSelected({ ns: r.ns, name: r.agent.name })} aria-label={`Open agent ${r.agent.name}`}>
                Open
              </button>
            ),
          },
        ]}
      />
      {listing && listing.namespaces.length > 0 && (
        <details class="make-agent">
          <summary>Make an agent</summary>
          <form onSubmit={make} class="inline-form" aria-describedby="make-agent-error">
            <div class="field">
              <label for="agent-namespace">Namespace</label>
              <select id="agent-namespace" name="namespace">
                {listing.namespaces.map((ns) => (
                  <option key={ns.name} value={ns.name}>
                    {ns.name}
                  </option>
                ))}
              </select>
            </div>
            <div class="field">
              <label for="agent-name">Name</label>
              <input id="agent-name" name="name" type="text" required maxLength={31} placeholder="news-bot" />
            </div>
            <div class="field">
              <label for="agent-description">Description</label>
              <input id="agent-description" name="description" type="text" maxLength={500} />
            </div>
            <button type="submit" disabled={making.busy}>
              Make agent
            </button>
          </form>
          <ErrorMessage id="make-agent-error" message={making.error} />
        </details>
      )}
      {selected && listing && (
        <AgentView key={agentPath(selected)} selected={selected} providers={listing.ai_providers} onChanged={reload} />
      )}
    </section>
  );
}

function AgentView(props: { selected: Selected; providers: string[]; onChanged: () => void }) {
  const path = agentPath(props.selected);
  const [agent, setAgent] = useState<AgentDetail>();
  const [status, setStatus] = useState('');
  // Bumped after a chat: the runs list is read again (the chat's run is in it).
  const [answered, setAnswered] = useState(0);
  const action = useSubmit();
  const load = () =>
    api<AgentDetail>('GET', path)
      .then(setAgent)
      .catch((e) => action.setError(describeError(e)));
  useEffect(() => void load(), []);

  /** A lifecycle change (start, stop, scale): the answer's replicas shown, the list refreshed. */
  const change = (verb: 'start' | 'stop' | 'scale', body: Record<string, unknown>, done: string) =>
    action.run(async () => {
      setStatus('');
      await api('POST', `${path}/${verb}`, body);
      setStatus(done);
      await load();
      props.onChanged();
    });
  const scale = action.submit(async (form) => {
    const replicas = Number(new FormData(form).get('replicas'));
    await change('scale', { replicas }, `Scaled to ${replicas} replica${replicas === 1 ? '' : 's'}.`);
  });

  if (!agent) return <ErrorMessage id="agent-error" message={action.error} />;
  const title = `${props.selected.ns} / ${agent.name}`;
  return (
    <article aria-labelledby="agent-title" class="agent">
      <h2 id="agent-title">{title}</h2>
      {agent.description && <p>{agent.description}</p>}
      <dl class="facts">
        <dt>Status</dt>
        <dd data-agent-status>{agent.status}</dd>
        <dt>Replicas wanted</dt>
        <dd>{agent.desired_replicas}</dd>
        <dt>Agent slots (account)</dt>
        <dd>
          {agent.limits.agent_slots.used} of {agent.limits.agent_slots.limit ?? 'unlimited'}
        </dd>
        <dt>State</dt>
        <dd>
          {agent.state.keys} {agent.state.keys === 1 ? 'key' : 'keys'}, {agent.state.bytes} bytes
        </dd>
      </dl>
      <ErrorMessage id="agent-error" message={action.error} />
      <p class="ok" role="status">
        {status}
      </p>

      <h3>Replicas</h3>
      <div class="controls">
        <button type="button" disabled={action.busy} onClick={() => change('start', {}, 'Started.')}>
          Start
        </button>
        <button type="button" disabled={action.busy} onClick={() => change('stop', {}, 'Stopped.')}>
          Stop
        </button>
        <form onSubmit={scale} class="inline-form">
          <label for="agent-replicas">Replicas</label>
          <input
            id="agent-replicas"
            name="replicas"
            type="number"
            min={0}
            step={1}
            required
            defaultValue={String(agent.desired_replicas)}
          />
          <button type="submit" disabled={action.busy}>
            Scale
          </button>
        </form>
      </div>
      <DataTable
        caption={`Replicas of ${agent.name}`}
        class="replicas"
        rows={agent.replicas}
        empty="No replicas (scaled to 0)."
        rowKey={(r) => r.name}
        rowAttributes={(r) => ({ 'data-replica': r.name })}
        columns={[
          { head: 'Name', cell: (r) => r.name, rowHeader: true },
          { head: 'Status', cell: (r) => r.status },
          { head: 'Started', cell: (r) => when(r.started_at) },
          { head: 'Restarts', cell: (r) => r.restarts },
          { head: 'Last exit', cell: (r) => r.last_exit ?? '' },
          {
            head: <HiddenHead>Actions</HiddenHead>,
            cell: (r) =>
              r.status === 'running' || r.status === 'starting' ? (
                <button type="button" onClick={() => change('stop', { replica: r.name }, `Replica ${r.name} stopped.`)}>
                  Stop {r.name}
                </button>
              ) : (
                <button type="button" onClick={() => change('start', { replica: r.name }, `Replica ${r.name} started.`)}>
                  Start {r.name}
                </button>
              ),
          },
        ]}
      />

      <Chat
        path={path}
        replicas={agent.replicas.map((r) => r.name)}
        hasAi={!!agent.config.ai}
        onAnswered={() => {
          setAnswered((n) => n + 1);
          void load();
        }}
      />
      <AiSettings path={path} ai={agent.config.ai ?? null} providers={props.providers} onSaved={load} />
      <Schedules path={path} schedules={agent.schedules ?? []} />

      <h3>Webhooks</h3>
      <DataTable
        caption={`Webhooks of ${agent.name}`}
        rows={agent.webhooks ?? []}
        empty="No webhooks (add_webhook adds one)."
        rowKey={(w) => w.path}
        columns={[
          { head: 'Path', cell: (w) => w.path, rowHeader: true },
          { head: 'Handler', cell: (w) => w.handler_function_name },
          { head: 'Signed', cell: (w) => (w.signed ? 'yes' : 'no: anyone with the URL can call it') },
          {
            head: 'URL',
            cell: (w) => (
              <>
                <code>{w.url}</code>
                {w.subdomain_url && (
                  <>
                    <br />
                    <code>{w.subdomain_url}</code>
                  </>
                )}
              </>
            ),
          },
        ]}
      />

      <StateKeys path={path} />
      <Runs key={answered} path={path} />
    </article>
  );
}

function Chat(props: { path: string; replicas: string[]; hasAi: boolean; onAnswered: () => void }) {
  const [replica, setReplica] = useState('');
  const [conversation, setConversation] = useState<string>();
  const [exchanges, setExchanges] = useState<Array<{ message: string; answer: ChatAnswer }>>([]);
  const sending = useSubmit();
  const send = sending.submit(async (form) => {
    const message = String(new FormData(form).get('message') ?? '');
    const answer = await api<ChatAnswer>('POST', `${props.path}/chat`, {
      message,
      ...(replica ? { replica } : {}),
      ...(conversation ? { conversation_id: conversation } : {}),
    });
    setConversation(answer.conversation_id);
    setExchanges((list) => [...list, { message, answer }]);
    form.reset();
    props.onAnswered();
  });
  return (
    <section aria-labelledby="chat-title">
      <h3 id="chat-title">Chat</h3>
      {!props.hasAi && <p class="hint">Configure the agent's AI below, and start it, to chat with it.</p>}
      <ol class="chat-log" aria-live="polite">
        {exchanges.map((x) => (
          <li key={x.answer.run_id} data-run={x.answer.run_id}>
            <p class="said">
              <strong>You:</strong> {x.message}
            </p>
            <p class="answer">
              <strong>
                Replica <span class="replica-name">{x.answer.replica}</span>:
              </strong>{' '}
              {x.answer.response}
            </p>
          </li>
        ))}
      </ol>
      <form onSubmit={send} class="chat-form" aria-describedby="chat-error">
        <div class="field">
          <label for="chat-replica">Replica</label>
          <select id="chat-replica" value={replica} onChange={(e) => setReplica((e.target as HTMLSelectElement).value)}>
            <option value="">the least busy</option>
            {props.replicas.map((name) => (
              <option key={name} value={name}>
                {name}
              </option>
            ))}
          </select>
        </div>
        <div class="field">
          <label for="chat-message">Message</label>
          <textarea id="chat-message" name="message" rows={2} required />
        </div>
        <button type="submit" disabled={sending.busy}>
          {sending.busy ? 'Waiting for the answer…' : 'Send'}
        </button>
        {conversation && (
          <button type="button" onClick={() => (setConversation(undefined), setExchanges([]))}>
            New conversation
          </button>
        )}
      </form>
      <ErrorMessage id="chat-error" message={sending.error} />
    </section>
  );
}

function AiSettings(props: {
  path: string;
  ai: NonNullable<AgentDetail['config']['ai']> | null;
  providers: string[];
  onSaved: () => void;
}) {
  const saving = useSubmit();
  const [saved, setSaved] = useState(false);
  const save = saving.submit(async (form) => {
    setSaved(false);
    const data = new FormData(form);
    const text = (name: string) => String(data.get(name) ?? '').trim();
    await api('POST', `${props.path}/ai`, {
      provider: text('provider'),
      model: text('model'),
      api_key: String(data.get('api_key') ?? ''),
      ...(text('base_url') ? { base_url: text('base_url') } : {}),
      ...(text('system_prompt') ? { system_prompt: text('system_prompt') } : {}),
    });
    form.reset();
    setSaved(true);
    props.onSaved();
  });
  return (
    <section aria-labelledby="ai-title">
      <h3 id="ai-title">AI settings</h3>
      <dl class="facts" id="ai-settings">
        <dt>Provider</dt>
        <dd>{props.ai?.provider ?? 'none'}</dd>
        <dt>Model</dt>
        <dd>{props.ai?.model ?? ''}</dd>
        <dt>Base URL</dt>
        <dd>{props.ai?.base_url ?? ''}</dd>
        <dt>API key</dt>
        <dd>{props.ai ? 'set (encrypted at rest; never shown)' : 'none'}</dd>
      </dl>
      <form onSubmit={save} class="ai-form" aria-describedby="ai-error">
        <div class="field">
          <label for="ai-provider">Provider</label>
          <select id="ai-provider" name="provider" defaultValue={props.ai?.provider ?? props.providers[0]}>
            {props.providers.map((p) => (
              <option key={p} value={p}>
                {p}
              </option>
            ))}
          </select>
        </div>
        <div class="field">
          <label for="ai-model">Model</label>
          <input id="ai-model" name="model" type="text" required defaultValue={props.ai?.model ?? ''} />
        </div>
        <div class="field">
          <label for="ai-key">API key (stored encrypted, never shown again)</label>
          <input id="ai-key" name="api_key" type="password" autoComplete="off" required />
        </div>
        <div class="field">
          <label for="ai-base-url">Base URL (optional)</label>
          <input id="ai-base-url" name="base_url" type="url" defaultValue={props.ai?.base_url ?? ''} />
        </div>
        <div class="field">
          <label for="ai-prompt">System prompt (optional)</label>
          <textarea id="ai-prompt" name="system_prompt" rows={2} />
        </div>
        <button type="submit" disabled={saving.busy}>
          Save AI settings
        </button>
      </form>
      <ErrorMessage id="ai-error" message={saving.error} />
      <p class="ok" role="status">
        {saved ? 'AI settings saved.' : ''}
      </p>
    </section>
  );
}

function Schedules(props: { path: string; schedules: Schedule[] }) {
  const [fires, setFires] = useState<Fire[]>();
  const [error, setError] = useState<string>();
  useEffect(() => {
    api<{ fires: Fire[] }>('GET', `${props.path}/fires?limit=20`)
      .then((f) => setFires(f.fires))
      .catch((e) => setError(describeError(e)));
  }, []);
  return (
    <section aria-labelledby="schedules-title">
      <h3 id="schedules-title">Schedules</h3>
      <DataTable
        caption="Schedules"
        rows={props.schedules}
        empty="No schedules (add_schedule adds one)."
        rowKey={(s) => s.id}
        columns={[
          { head: 'Name', cell: (s) => s.schedule_name ?? s.id, rowHeader: true },
          { head: 'Function', cell: (s) => s.function_name },
          { head: 'Cron', cell: (s) => <code>{`${s.cron_expression} (${s.timezone})`}</code> },
          { head: 'Enabled', cell: (s) => (s.enabled ? 'yes' : `no${s.disabled_reason ? `: ${s.disabled_reason}` : ''}`) },
          { head: 'Next fire', cell: (s) => (s.next_fire_at ? when(s.next_fire_at) : (s.waiting ?? '')) },
        ]}
      />
      <h4>Recent fires</h4>
      <ErrorMessage id="fires-error" message={error} />
      <DataTable
        caption="Recent fires, newest first"
        rows={fires}
        empty="No fires yet."
        rowKey={(f) => f.fire_id}
        columns={[
          { head: 'Scheduled for', cell: (f) => when(f.scheduled_for) },
          { head: 'Schedule', cell: (f) => f.schedule_name ?? '' },
          { head: 'Replica', cell: (f) => f.replica ?? '' },
          { head: 'Status', cell: (f) => f.status },
          { head: 'Reason', cell: (f) => f.reason ?? '' },
        ]}
      />
    </section>
  );
}

function StateKeys(props: { path: string }) {
  const [keys, setKeys] = useState<StateKey[]>();
  const [more, setMore] = useState<string>();
  const [shown, setShown] = useState<{ key: string; version: number; text: string; truncated: boolean }>();
  const { error, setError, run } = useSubmit();
  const page = (after?: string) =>
    api<{ keys: StateKey[]; next_after?: string }>(
      'GET',
      `${props.path}/state?limit=50${after ? `&after=${encodeURIComponent(after)}` : ''}`,
    )
      .then((p) => {
        setKeys((list) => [...(after ? (list ?? []) : []), ...p.keys]);
        setMore(p.next_after);
      })
      .catch((e) => setError(describeError(e)));
  useEffect(() => void page(), []);
  const show = (key: string) => run(async () => setShown(await api('GET', `${props.path}/state-value?key=${encodeURIComponent(key)}`)));
  return (
    <section aria-labelledby="state-title">
      <h3 id="state-title">State</h3>
      <ErrorMessage id="state-error" message={error} />
      <DataTable
        caption="State keys"
        rows={keys}
        empty="No state keys."
        rowKey={(k) => k.key}
        columns={[
          { head: 'Key', cell: (k) => <code>{k.key}</code>, rowHeader: true },
          { head: 'Version', cell: (k) => k.version },
          { head: 'Size', cell: (k) => `${k.size_bytes} bytes` },
          { head: 'Updated', cell: (k) => when(k.updated_at) },
          {
            head: <HiddenHead>Value</HiddenHead>,
            cell: (k) => (
              <button type="button" onClick={() => show(k.key)} aria-label={`Show the value of ${k.key}`}>
                Show value
              </button>
            ),
          },
        ]}
      />
      {more && (
        <button type="button" onClick={() => page(more)}>
          More keys
        </button>
      )}
      {shown && (
        <>
          <h4>
            <code>{shown.key}</code> (version {shown.version}){shown.truncated ? ': cut, too long to show whole' : ''}
          </h4>
          <pre tabIndex={0} id="state-value">
            {shown.text}
          </pre>
        </>
      )}
    </section>
  );
}

function Runs(props: { path: string }) {
  const [runs, setRuns] = useState<Run[]>();
  const [open, setOpen] = useState<RunDetail>();
  const { error, setError, run } = useSubmit();
  useEffect(() => {
    api<{ runs: Run[] }>('GET', `${props.path}/runs?limit=20`)
      .then((r) => setRuns(r.runs))
      .catch((e) => setError(describeError(e)));
  }, []);
  const details = (id: string) => run(async () => setOpen(await api<RunDetail>('GET', `${props.path}/runs/${encodeURIComponent(id)}`)));
  return (
    <section aria-labelledby="runs-title">
      <h3 id="runs-title">Runs</h3>
      <ErrorMessage id="runs-error" message={error} />
      <DataTable
        caption="Runs, newest first"
        class="runs"
        rows={runs}
        empty="No runs yet."
        rowKey={(r) => r.run_id}
        rowAttributes={(r) => ({ 'data-run': r.run_id })}
        columns={[
          { head: 'Started', cell: (r) => when(r.started_at) },
          { head: 'Trigger', cell: (r) => `${r.trigger}${r.trigger_name ? ` (${r.trigger_name})` : ''}` },
          { head: 'Replica', cell: (r) => r.replica ?? '' },
          { head: 'Function', cell: (r) => r.function_name ?? '' },
          { head: 'Status', cell: (r) => `${r.status}${r.error ? `: ${r.error}` : ''}` },
          { head: 'Duration', cell: (r) => (r.duration_ms === null ? '' : `${r.duration_ms} ms`) },
          { head: 'Tokens', cell: (r) => (r.usage ? `${r.usage.input_tokens ?? 0} in, ${r.usage.output_tokens ?? 0} out` : '') },
          {
            head: <HiddenHead>Tool calls</HiddenHead>,
            cell: (r) => (
              <button type="button" onClick={() => details(r.run_id)} aria-label={`Tool calls of run ${r.run_id}`}>
                Tool calls
              </button>
            ),
          },
        ]}
      />
      {open && (
        <div class="run-detail">
          <h4>Run {open.run_id}</h4>
          <DataTable
            caption={`Tool calls of run ${open.run_id}`}
            class="tool-calls"
            rows={open.tool_calls}
            empty="The model called no tool in this run."
            rowKey={(t) => `${t.name}-${t.execution_id ?? ''}-${t.duration_ms}`}
            columns={[
              { head: 'Tool', cell: (t) => t.name, rowHeader: true },
              { head: 'Kind', cell: (t) => t.kind },
              { head: 'Outcome', cell: (t) => t.outcome },
              { head: 'Duration', cell: (t) => `${t.duration_ms} ms` },
              { head: 'Execution', cell: (t) => t.execution_id ?? '' },
            ]}
          />
          {open.answer && (
            <>
              <h4>Answer</h4>
              <pre tabIndex={0}>{open.answer}</pre>
            </>
          )}
        </div>
      )}
    </section>
  );
}
