import { randomUUID } from 'node:crypto';
import { sql, type QueryCreator } from 'kysely';
import { withSettlement, type Settlement } from './metering-store.js';
import type { Db } from './database.js';
import { storableText } from '../core/storable-text.js';
import type { Trigger } from '../core/principal.js';
import type { Database, ExecutionRow, SecurityEventRow } from './schema.js';

export interface ExecutionRecord {
  id: string;
  accountId: string;
  namespaceId: string;
  keyId: string | null;
  /** The agent that ran it (an agent's trigger), when no API key did. */
  agentId?: string | null;
  mode: 'tools' | 'code';
  /** What started the run (core/principal.ts TRIGGERS); without one, the MCP call of its mode. */
  trigger?: Trigger;
  serviceName: string | null;
  functionName: string | null;
  functionId: string | null;
  version: number | null;
  /** Every function the run called (`service.function@version`). */
  functions: string[];
  language: string | null;
  /** interrupted: the server stopped before the run ended (not counted). */
  status: 'success' | 'error' | 'interrupted' | 'cancelled';
  errorType: string | null;
  errorMessage: string | null;
  durationMs: number;
  bytesOut: number;
  stdout: string;
  stderr: string;
  /** An execute's submitted code, already bounded and redacted (tool mode: absent). */
  code?: string | null;
  /** The answer's result as the caller got it (redacted), bounded by recordedResult; null for a failed run. */
  result?: string | null;
}

export { MAX_RECORDED_CODE, MAX_RECORDED_RESULT, recordedCode, recordedResult } from '../core/recorded-text.js';

export interface ExecutionFilter {
  functionName?: string | undefined;
  serviceName?: string | undefined;
  status?: string | undefined;
  since?: Date | undefined;
  limit: number;
}

/** One namespace, or every namespace of an account (a key limited to one namespace gives `namespaceId`). */
export type ExecutionScope = { namespaceId: string } | { accountId: string };

function scopeWhere(table: 'executions' | 'security_events', scope: ExecutionScope) {
  return 'namespaceId' in scope
    ? sql<boolean>`${sql.ref(`${table}.namespace_id`)} = ${scope.namespaceId}`
    : sql<boolean>`${sql.ref(`${table}.account_id`)} = ${scope.accountId}`;
}

/** Execution history and security events (what was redacted, never the value). */
export class ExecutionsStore {
  constructor(private readonly db: Db) {}

  /**
   * An account's recorded executions per UTC day since `since` (the dashboard's Usage chart):
   * interrupted and cancelled runs are left out, as the monthly count leaves them out.
   */
  async dailyCounts(accountId: string, since: Date): Promise<Array<{ day: string; executions: number }>> {
    const day = sql<string>`to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')`;
    const rows = await this.db
      .selectFrom('executions')
      .select([day.as('day'), (eb) => eb.fn.countAll<string>().as('executions')])
      .where('account_id', '=', accountId)
      .where('created_at', '>=', since)
      .where('status', 'not in', ['interrupted', 'cancelled'])
      .groupBy(day)
      .orderBy(day)
      .execute();
    return rows.map((r) => ({ day: r.day, executions: Number(r.executions) }));
  }

  async record(execution: ExecutionRecord, securityEventTypes: string[]): Promise<void> {
    await recordingStatement(this.db, execution, securityEventTypes).execute();
  }

  /**
   * The end of a metered call in one statement (so one commit, and no transaction held open
   * across round trips): the settlement frees its slot (refunding the quota unit of a call that
   * does not count), and the call is recorded with its security events. Without a settlement
   * (the ticket was settled before), only the record.
   */
  async finish(settlement: Settlement | null, execution: ExecutionRecord, securityEventTypes: string[]): Promise<void> {
    await recordingStatement(settlement ? withSettlement(this.db, settlement) : this.db, execution, securityEventTypes).execute();
  }

  /**
   * One namespace's executions, or (`{ accountId }`) every namespace's of an account in one query
   * (the dashboard's list); each row names its namespace.
   */
  list(scope: ExecutionScope, filter: ExecutionFilter): Promise<Array<ExecutionRow & { namespace: string }>> {
    let query = this.db
      .selectFrom('executions')
      .innerJoin('namespaces as n', 'n.id', 'executions.namespace_id')
      .selectAll('executions')
      .select('n.name as namespace')
      .where(scopeWhere('executions', scope));
    const { functionName, serviceName } = filter;
    if (functionName !== undefined) {
      // The function's own runs, and code-mode runs that called it (recorded as `service.name@version`).
      const called =
        serviceName === undefined
          ? sql<boolean>`EXISTS (SELECT 1 FROM jsonb_array_elements_text(executions.functions) AS called(entry) WHERE split_part(split_part(called.entry, '@', 1), '.', 2) = ${functionName})`
          : sql<boolean>`EXISTS (SELECT 1 FROM jsonb_array_elements_text(executions.functions) AS called(entry) WHERE split_part(called.entry, '@', 1) = ${`${serviceName}.${functionName}`})`;
      query = query.where((eb) =>
        eb.or([
          serviceName === undefined
            ? eb('function_name', '=', functionName)
            : eb.and([eb('function_name', '=', functionName), eb('service_name', '=', serviceName)]),
          called,
        ]),
      );
    } else if (serviceName !== undefined) query = query.where('service_name', '=', serviceName);
    if (filter.status !== undefined) query = query.where('status', '=', filter.status);
    if (filter.since !== undefined) query = query.where('executions.created_at', '>=', filter.since);
    return query.orderBy('executions.created_at', 'desc').orderBy('executions.id').limit(filter.limit).execute();
  }

  find(namespaceId: string, id: string): Promise<ExecutionRow | undefined> {
    return this.db.selectFrom('executions').selectAll().where('namespace_id', '=', namespaceId).where('id', '=', id).executeTakeFirst();
  }

  /** Security events of one namespace, or of every namespace of an account in one query; each names its namespace. */
  listSecurityEvents(
    scope: ExecutionScope,
    since: Date | undefined,
    limit: number,
  ): Promise<Array<SecurityEventRow & { namespace: string }>> {
    let query = this.db
      .selectFrom('security_events')
      .innerJoin('namespaces as n', 'n.id', 'security_events.namespace_id')
      .selectAll('security_events')
      .select('n.name as namespace')
      .where(scopeWhere('security_events', scope));
    if (since) query = query.where('security_events.created_at', '>=', since);
    return query.orderBy('security_events.created_at', 'desc').limit(limit).execute();
  }
}

/** Inserts the execution, its security events in a CTE in front: one statement, atomic. */
function recordingStatement(db: QueryCreator<Database>, execution: ExecutionRecord, securityEventTypes: string[]) {
  const events = securityEventTypes.map((type) => ({
    id: randomUUID(),
    account_id: execution.accountId,
    namespace_id: execution.namespaceId,
    execution_id: execution.id,
    service_name: execution.serviceName,
    function_name: execution.functionName,
    event_type: 'secret_redacted',
    detail: JSON.stringify({ detection: type }),
  }));
  const creator = events.length > 0 ? db.with('security', (qb) => qb.insertInto('security_events').values(events)) : db;
  return creator.insertInto('executions').values({
    id: execution.id,
    account_id: execution.accountId,
    namespace_id: execution.namespaceId,
    key_id: execution.keyId,
    agent_id: execution.agentId ?? null,
    mode: execution.mode,
    trigger: execution.trigger ?? (execution.mode === 'code' ? 'mcp-code' : 'mcp-tools'),
    service_name: execution.serviceName,
    function_name: execution.functionName,
    function_id: execution.functionId,
    version: execution.version,
    functions: JSON.stringify(execution.functions),
    language: execution.language,
    status: execution.status,
    error_type: execution.errorType,
    error_message: execution.errorMessage === null ? null : storableText(execution.errorMessage),
    duration_ms: Math.round(execution.durationMs),
    bytes_out: execution.bytesOut,
    stdout: storableText(execution.stdout),
    stderr: storableText(execution.stderr),
    code: execution.code == null ? null : storableText(execution.code),
    result: execution.result == null ? null : storableText(execution.result),
  });
}
