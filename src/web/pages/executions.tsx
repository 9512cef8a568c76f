import { useEffect, useState } from 'preact/hooks';
import { api, describeError } from '../api';
import { DataTable, ErrorMessage, HiddenHead, PageTitle } from '../components';
import { Code } from './functions';

interface Execution {
  namespace: string;
  id: string;
  mode: string;
  trigger: string;
  service: string | null;
  function: string | null;
  version: number | null;
  functions: string[];
  language: string | null;
  status: string;
  error_type: string | null;
  duration_ms: number;
  created_at: string;
}
interface ExecutionDetail extends Execution {
  error_message: string | null;
  stdout: string;
  stderr: string;
  /** The result as the caller got it: redacted, cut at 64 KB with a marker; null when the run failed. */
  result: string | null;
  code?: string | null;
}

/** A stored result indented when it is whole JSON; as stored otherwise (cut, or not JSON). */
function shownResult(result: string): string {
  try {
    return JSON.stringify(JSON.parse(result), null, 2);
  } catch {
    return result;
  }
}
interface SecurityEvent {
  namespace: string;
  id: string;
  type: string;
  detection: string | undefined;
  service: string | null;
  function: string | null;
  execution_id: string | null;
  created_at: string;
}

/**
 * Polled, not streamed: the list is one small indexed query, a poll every few seconds holds no
 * connection open (SSE would take one per open tab, counted against the server's connection
 * limits, and need its own session check on a long-lived response), and it pauses while the tab is hidden.
 */
export const POLL_MS = 2000;

const what = (e: Execution) =>
  e.function ? `${e.service}.${e.function}` : e.functions.length ? `execute (${e.functions.join(', ')})` : 'execute';

export function ExecutionsPage() {
  const [rows, setRows] = useState<Execution[]>();
  const [events, setEvents] = useState<SecurityEvent[]>();
  const [error, setError] = useState<string>();
  const [open, setOpen] = useState<{ ns: string; id: string }>();

  useEffect(() => {
    let stopped = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const poll = async () => {
      if (!document.hidden) {
        try {
          const [listed, security] = await Promise.all([
            api<{ executions: Execution[] }>('GET', '/api/executions?limit=50'),
            api<{ events: SecurityEvent[] }>('GET', '/api/security-events?limit=20'),
          ]);
          if (stopped) return;
          setRows(listed.executions);
          setEvents(security.events);
          setError(undefined);
        } catch (e) {
          if (!stopped) setError(describeError(e));
        }
      }
      if (!stopped) timer = setTimeout(poll, POLL_MS);
    };
    void poll();
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
  }, []);

  return (
    <section>
      <PageTitle>Executions</PageTitle>
      <ErrorMessage id="executions-error" message={error} />
      <p class="hint">Updated every {POLL_MS / 1000} s while this tab is visible.</p>
      <DataTable
        caption="Executions, newest first"
        class="executions"
        rows={rows}
        empty="No executions yet."
        rowKey={(e) => e.id}
        rowAttributes={(e) => ({ 'data-execution': e.id, 'aria-selected': open?.id === e.id ? 'true' : undefined })}
        columns={[
          { head: 'Time', cell: (e) => new Date(e.created_at).toLocaleString() },
          { head: 'Namespace', cell: (e) => e.namespace },
          { head: 'Function', cell: what },
          { head: 'Version', cell: (e) => e.version ?? '' },
          { head: 'Duration', cell: (e) => `${e.duration_ms} ms` },
          {
            head: 'Status',
            class: (e) => (e.status === 'success' ? 'ok' : 'error'),
            cell: (e) => `${e.status}${e.error_type ? ` (${e.error_type})` : ''}`,
          },
          { head: 'Trigger', cell: (e) => e.trigger },
          {
            head: <HiddenHead>Details</HiddenHead>,
            cell: (e) => (
              <button type="button" onClick={() => setOpen({ ns: e.namespace, id: e.id })} aria-label={`Details of execution ${e.id}`}>
                Details
              </button>
            ),
          },
        ]}
      />
      {open && <ExecutionView key={open.id} ns={open.ns} id={open.id} />}
      <h2>Security events</h2>
      <DataTable
        caption="Security events, newest first"
        rows={events}
        empty="No security events."
        rowKey={(e) => e.id}
        columns={[
          { head: 'Time', cell: (e) => new Date(e.created_at).toLocaleString() },
          { head: 'Namespace', cell: (e) => e.namespace },
          { head: 'Type', cell: (e) => e.type },
          { head: 'Detection', cell: (e) => e.detection ?? '' },
          { head: 'Function', cell: (e) => (e.function ? `${e.service}.${e.function}` : '') },
          { head: 'Execution', cell: (e) => e.execution_id ?? '' },
        ]}
      />
    </section>
  );
}

function ExecutionView(props: { ns: string; id: string }) {
  const [detail, setDetail] = useState<ExecutionDetail>();
  const [error, setError] = useState<string>();
  useEffect(() => {
    api<ExecutionDetail>('GET', `/api/executions/${encodeURIComponent(props.ns)}/${encodeURIComponent(props.id)}`)
      .then(setDetail)
      .catch((e) => setError(describeError(e)));
  }, []);
  if (!detail) return <ErrorMessage id="execution-error" message={error} />;
  return (
    <article aria-labelledby="execution-title" class="execution">
      <h2 id="execution-title">Execution {detail.id}</h2>
      <dl class="facts">
        <dt>Function</dt>
        <dd>{what(detail)}</dd>
        <dt>Status</dt>
        <dd>
          {detail.status}
          {detail.error_type ? ` (${detail.error_type})` : ''}
        </dd>
        <dt>Trigger</dt>
        <dd>{detail.trigger}</dd>
        <dt>Duration</dt>
        <dd>{detail.duration_ms} ms</dd>
      </dl>
      <p class="hint">
        The result, logs, errors and code are shown as recorded: secrets the scan found are redacted, as in the MCP answers.
      </p>
      {detail.error_message && (
        <>
          <h3>Error</h3>
          <pre tabIndex={0}>{detail.error_message}</pre>
        </>
      )}
      {detail.result != null && (
        <>
          <h3>Result</h3>
          <pre tabIndex={0} id="execution-result">
            {shownResult(detail.result)}
          </pre>
        </>
      )}
      <h3>stdout</h3>
      <pre tabIndex={0} id="execution-stdout">
        {detail.stdout || '(empty)'}
      </pre>
      <h3>stderr</h3>
      <pre tabIndex={0}>{detail.stderr || '(empty)'}</pre>
      {detail.code != null && (
        <>
          <h3>Submitted code</h3>
          <Code code={detail.code} language={detail.language ?? 'python'} label={`Code submitted to execution ${detail.id}`} />
        </>
      )}
    </article>
  );
}
