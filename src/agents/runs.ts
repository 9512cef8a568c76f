// The trigger runs of an agent as the create endpoint's tools show them (list_agent_runs,
// describe_agent_run, describe_agent's recent runs).
import { DomainError, invalid } from '../core/errors.js';
import { storableDate } from '../core/storable-text.js';
import type { AgentRunsStore } from '../store/agent-runs-store.js';
import type { AgentRow, AgentRunRow } from '../store/schema.js';

const iso = (d: Date | null) => (d ? new Date(d).toISOString() : null);
const STATUSES = ['running', 'succeeded', 'failed', 'cancelled', 'rejected'];
const TRIGGERS = ['schedule', 'webhook', 'chat', 'heartbeat'];
const DEFAULT_PAGE = 20;
const MAX_PAGE = 200;

export function runView(row: AgentRunRow) {
  return {
    run_id: row.id,
    trigger: row.trigger,
    trigger_name: row.trigger_name,
    replica: row.replica,
    function_name: row.function_name,
    orchestration_mode: row.orchestration_mode,
    status: row.status,
    error_type: row.error_type,
    error: row.error_message,
    started_at: iso(row.started_at),
    finished_at: iso(row.finished_at),
    duration_ms: row.duration_ms,
    // AI runs: model turns, tokens, why it stopped (answered, a limit, cancelled, provider_error, fallback_direct).
    iterations: row.iterations ?? null,
    // estimated: a model answer did not say what it cost (some OpenAI-compatible servers omit it); counted from the bytes sent and received.
    usage:
      row.input_tokens === null && row.output_tokens === null
        ? null
        : { input_tokens: row.input_tokens, output_tokens: row.output_tokens, ...(row.usage_estimated ? { estimated: true } : {}) },
    stop_reason: row.stop_reason ?? null,
    conversation_id: row.conversation_id ?? null,
  };
}

/** A page cursor: the last run's start and id (opaque to callers). */
function cursorOf(row: AgentRunRow): string {
  return Buffer.from(JSON.stringify([new Date(row.started_at).toISOString(), row.id])).toString('base64url');
}

function parseCursor(value: unknown): { startedAt: Date; id: string } {
  try {
    if (typeof value !== 'string' || value.length > 512) throw new Error();
    const parsed = JSON.parse(Buffer.from(value, 'base64url').toString('utf8')) as unknown;
    if (!Array.isArray(parsed) || typeof parsed[0] !== 'string' || typeof parsed[1] !== 'string') throw new Error();
    const startedAt = new Date(parsed[0]);
    // Our cursors hold a run's start and its UUID: anything else (a year the database cannot hold, a NUL) was made up.
    if (!storableDate(startedAt) || !/^[0-9a-f-]{36}$/.test(parsed[1])) throw new Error();
    return { startedAt, id: parsed[1] };
  } catch {
    throw invalid('before must be the next_before of an earlier list_agent_runs answer', { field: 'before' });
  }
}

export class AgentRuns {
  constructor(private readonly store: AgentRunsStore) {}

  async list(agent: AgentRow, args: Record<string, unknown>) {
    const limit = args.limit ?? DEFAULT_PAGE;
    if (typeof limit !== 'number' || !Number.isInteger(limit) || limit < 1 || limit > MAX_PAGE)
      throw invalid(`limit must be an integer from 1 to ${MAX_PAGE}`, { field: 'limit' });
    const status = args.status;
    if (status !== undefined && (typeof status !== 'string' || !STATUSES.includes(status)))
      throw invalid(`status must be one of ${STATUSES.join(', ')}`, { field: 'status' });
    const trigger = args.trigger;
    if (trigger !== undefined && (typeof trigger !== 'string' || !TRIGGERS.includes(trigger)))
      throw invalid(`trigger must be one of ${TRIGGERS.join(', ')}`, { field: 'trigger' });
    const rows = await this.store.listRuns(agent.id, {
      limit: limit + 1,
      ...(args.before !== undefined ? { before: parseCursor(args.before) } : {}),
      ...(status !== undefined ? { status } : {}),
      ...(trigger !== undefined ? { trigger } : {}),
    });
    const page = rows.slice(0, limit);
    return {
      agent: agent.name,
      runs: page.map(runView),
      ...(rows.length > limit ? { next_before: cursorOf(page[page.length - 1]!) } : {}),
    };
  }

  async recent(agent: AgentRow, count = 5) {
    return (await this.store.listRuns(agent.id, { limit: count })).map(runView);
  }

  async describe(agent: AgentRow, args: Record<string, unknown>) {
    const runId = args.run_id;
    if (typeof runId !== 'string' || runId === '' || runId.length > 128)
      throw invalid('run_id is required: a run id from list_agent_runs (at most 128 characters)', { field: 'run_id' });
    const row = await this.store.getRun(agent.id, runId);
    if (!row) throw new DomainError('not_found', `run '${runId}' not found for agent '${agent.name}'`, { field: 'run_id' });
    return { agent: agent.name, ...runView(row), calls: row.calls, tool_calls: row.tool_calls ?? [], answer: row.answer ?? null };
  }
}
