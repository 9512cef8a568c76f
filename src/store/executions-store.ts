import { randomUUID } from 'node:crypto';
import type { QueryCreator } from 'kysely';
import { withSettlement, type Settlement } from './metering-store.js';
import type { Db } from './database.js';
import type { Database, ExecutionRow, SecurityEventRow } from './schema.js';

export interface ExecutionRecord {
  id: string;
  accountId: string;
  namespaceId: string;
  keyId: string | null;
  mode: 'tools' | 'code';
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
}

export interface ExecutionFilter {
  functionName?: string | undefined;
  serviceName?: string | undefined;
  status?: string | undefined;
  since?: Date | undefined;
  limit: number;
}

/** Execution history and security events (what was redacted, never the value). */
export class ExecutionsStore {
  constructor(private readonly db: Db) {}

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

  list(namespaceId: string, filter: ExecutionFilter): Promise<ExecutionRow[]> {
    let query = this.db.selectFrom('executions').selectAll().where('namespace_id', '=', namespaceId);
    if (filter.functionName !== undefined) query = query.where('function_name', '=', filter.functionName);
    if (filter.serviceName !== undefined) query = query.where('service_name', '=', filter.serviceName);
    if (filter.status !== undefined) query = query.where('status', '=', filter.status);
    if (filter.since !== undefined) query = query.where('created_at', '>=', filter.since);
    return query.orderBy('created_at', 'desc').orderBy('id').limit(filter.limit).execute();
  }

  find(namespaceId: string, id: string): Promise<ExecutionRow | undefined> {
    return this.db.selectFrom('executions').selectAll().where('namespace_id', '=', namespaceId).where('id', '=', id).executeTakeFirst();
  }

  listSecurityEvents(namespaceId: string, since: Date | undefined, limit: number): Promise<SecurityEventRow[]> {
    let query = this.db.selectFrom('security_events').selectAll().where('namespace_id', '=', namespaceId);
    if (since) query = query.where('created_at', '>=', since);
    return query.orderBy('created_at', 'desc').limit(limit).execute();
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
    mode: execution.mode,
    service_name: execution.serviceName,
    function_name: execution.functionName,
    function_id: execution.functionId,
    version: execution.version,
    functions: JSON.stringify(execution.functions),
    language: execution.language,
    status: execution.status,
    error_type: execution.errorType,
    error_message: execution.errorMessage === null ? null : storable(execution.errorMessage),
    duration_ms: Math.round(execution.durationMs),
    bytes_out: execution.bytesOut,
    stdout: storable(execution.stdout),
    stderr: storable(execution.stderr),
  });
}

/** PostgreSQL text cannot hold NUL; a function that prints one must not lose its record. */
function storable(text: string): string {
  return text.includes('\u0000') ? text.replace(/\u0000/g, '\uFFFD') : text;
}
