import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { hotStatement, runHot, type HotStatement } from './hot-statements.js';
import { settleOn, settlementCtes, settlementParameters, type Settlement } from './metering-store.js';
import type { Db } from './database.js';
import { isUniqueViolation } from './db-health.js';
import { storableText } from '../core/storable-text.js';
import type { Trigger } from '../core/principal.js';
import type { ExecutionRow, SecurityEventRow } from './schema.js';

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
    await this.finish(null, execution, securityEventTypes);
  }

  /**
   * The end of a metered call in one statement (so one commit, and no transaction held open
   * across round trips): the settlement frees its slot (refunding the quota unit of a call that
   * does not count), and the call is recorded with its security events. Without a settlement
   * (the ticket was settled before), only the record.
   */
  async finish(settlement: Settlement | null, execution: ExecutionRecord, securityEventTypes: string[]): Promise<void> {
    const { statement, parameters } = finishing(settlement, execution, securityEventTypes);
    await runHot(this.db, statement, parameters);
  }

  /**
   * finish() in two steps: `issued` once the statement has its connection and is sent (on the
   * embedded database: its turn in the one connection's queue, so every statement asked for after
   * it runs after it), `committed` once it is done. `issued` fails only when it never got there.
   */
  finishIssued(
    settlement: Settlement | null,
    execution: ExecutionRecord,
    securityEventTypes: string[],
  ): { issued: Promise<void>; committed: Promise<void> } {
    let sent!: () => void;
    const onSent = new Promise<void>((resolve) => (sent = resolve));
    const { statement, parameters } = finishing(settlement, execution, securityEventTypes);
    const committed = this.db.connection().execute(async (db) => {
      const running = runHot(db, statement, parameters);
      sent();
      try {
        await running;
      } catch (error) {
        // Refused with its settlement in it: settled here, before the connection goes to a statement
        // asked for meanwhile (the client's next admission must not find the answered call's slot held).
        // Already recorded (unique_violation): the slot went with that record. Settling twice changes nothing.
        if (settlement && !isUniqueViolation(error)) await settleOn(db, settlement).catch(() => undefined);
        throw error;
      }
    });
    // Before it is sent, only its connection can fail: then `issued` fails with that error.
    return { issued: Promise.race([onSent, committed]), committed };
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

/** finish()'s statement for this shape, with its parameters. */
function finishing(settlement: Settlement | null, execution: ExecutionRecord, securityEventTypes: string[]) {
  const statement =
    RECORDING[settlement === null ? 'none' : settlement.counted ? 'counted' : 'uncounted'][securityEventTypes.length > 0 ? 1 : 0];
  const parameters = [...(settlement ? settlementParameters(settlement) : []), ...recordValues(execution)];
  if (securityEventTypes.length > 0)
    parameters.push(
      securityEventTypes.map(() => randomUUID()),
      securityEventTypes,
    );
  return { statement, parameters };
}

/** The executions columns a record writes, in the order of recordValues. */
const RECORD_COLUMNS = [
  'id',
  'account_id',
  'namespace_id',
  'key_id',
  'agent_id',
  'mode',
  'trigger',
  'service_name',
  'function_name',
  'function_id',
  'version',
  'functions',
  'language',
  'status',
  'error_type',
  'error_message',
  'duration_ms',
  'bytes_out',
  'stdout',
  'stderr',
  'code',
  'result',
] as const;

function recordValues(execution: ExecutionRecord): unknown[] {
  return [
    execution.id,
    execution.accountId,
    execution.namespaceId,
    execution.keyId,
    execution.agentId ?? null,
    execution.mode,
    execution.trigger ?? (execution.mode === 'code' ? 'mcp-code' : 'mcp-tools'),
    execution.serviceName,
    execution.functionName,
    execution.functionId,
    execution.version,
    JSON.stringify(execution.functions),
    execution.language,
    execution.status,
    execution.errorType,
    execution.errorMessage === null ? null : storableText(execution.errorMessage),
    Math.round(execution.durationMs),
    execution.bytesOut,
    storableText(execution.stdout),
    storableText(execution.stderr),
    execution.code == null ? null : storableText(execution.code),
    execution.result == null ? null : storableText(execution.result),
  ];
}

/**
 * Inserts the execution, its security events (one per redaction, ids made here) in a CTE in front,
 * behind the settlement's CTEs when there is one: one statement, atomic. A fixed text per shape
 * (a hot statement): the settlement's parameters first, then the record's, then the events' ids
 * and detections as two arrays.
 */
function recordingStatement(settlement: 'none' | 'counted' | 'uncounted', events: boolean): HotStatement {
  const ctes = settlement === 'none' ? [] : settlementCtes(settlement === 'counted');
  const first = settlement === 'none' ? 1 : settlement === 'counted' ? 2 : 3;
  const column = (name: (typeof RECORD_COLUMNS)[number]) => `$${first + RECORD_COLUMNS.indexOf(name)}`;
  if (events) {
    const ids = first + RECORD_COLUMNS.length;
    ctes.push(`security AS (INSERT INTO security_events (id, account_id, namespace_id, execution_id, service_name, function_name, event_type, detail)
      SELECT event.id, ${column('account_id')}::text, ${column('namespace_id')}::text, ${column('id')}::text, ${column('service_name')}::text,
        ${column('function_name')}::text, 'secret_redacted', jsonb_build_object('detection', event.detection)
      FROM unnest($${ids}::text[], $${ids + 1}::text[]) AS event(id, detection))`);
  }
  const text = `${ctes.length > 0 ? `WITH ${ctes.join(', ')} ` : ''}INSERT INTO executions (${RECORD_COLUMNS.join(', ')})
    VALUES (${RECORD_COLUMNS.map((name) => column(name)).join(', ')})`;
  return hotStatement(`mcpworks_record_${settlement}${events ? '_events' : ''}`, text);
}

const RECORDING = {
  none: [recordingStatement('none', false), recordingStatement('none', true)],
  counted: [recordingStatement('counted', false), recordingStatement('counted', true)],
  uncounted: [recordingStatement('uncounted', false), recordingStatement('uncounted', true)],
} as const;
