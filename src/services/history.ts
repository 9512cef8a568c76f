import { DomainError, invalid } from '../core/errors.js';
import { storableDate } from '../core/storable-text.js';
import type { ExecutionScope, ExecutionsStore } from '../store/executions-store.js';
import type { ExecutionRow } from '../store/schema.js';
import type { KeyPrincipal } from './accounts.js';
import type { CatalogService } from './catalog.js';

const MAX_LIST = 200;

function parseSince(since: unknown): Date | undefined {
  if (since === undefined) return undefined;
  const date = typeof since === 'string' ? new Date(since) : new Date(NaN);
  // A date JavaScript accepts but the database's timestamps do not (year 275760) is as wrong as none.
  if (!storableDate(date)) throw invalid('since must be an ISO 8601 date-time, e.g. 2026-11-01T00:00:00Z', { field: 'since' });
  return date;
}

function summary(row: ExecutionRow) {
  return {
    id: row.id,
    mode: row.mode,
    trigger: row.trigger,
    service: row.service_name,
    function: row.function_name,
    version: row.version,
    functions: row.functions,
    language: row.language,
    status: row.status,
    error_type: row.error_type,
    duration_ms: row.duration_ms,
    bytes_out: row.bytes_out,
    created_at: new Date(row.created_at).toISOString(),
  };
}

/** Execution history and security events of a namespace, for its owner (create endpoint). */
export class ExecutionHistory {
  constructor(
    private readonly catalog: CatalogService,
    private readonly store: ExecutionsStore,
  ) {}

  private requireRead(principal: KeyPrincipal): void {
    if (!principal.scopes.includes('read')) throw new DomainError('forbidden', "this API key lacks the 'read' scope");
  }

  private async namespaceId(principal: KeyPrincipal, ns: string): Promise<string> {
    this.requireRead(principal);
    return (await this.catalog.namespace(principal, ns)).id;
  }

  /**
   * One namespace, or (ns undefined) every namespace the principal reaches: the account's, in one
   * query, or the one namespace its key is limited to.
   */
  private async scope(principal: KeyPrincipal, ns: string | undefined): Promise<ExecutionScope> {
    if (ns === undefined && principal.namespace === null) {
      this.requireRead(principal);
      return { accountId: principal.accountId };
    }
    return { namespaceId: await this.namespaceId(principal, ns ?? principal.namespace!) };
  }

  /** Executions of one namespace, or of every one the principal reaches (ns undefined); each names its namespace. */
  async list(
    principal: KeyPrincipal,
    ns: string | undefined,
    filter: { function?: unknown; status?: unknown; since?: unknown; limit?: unknown },
  ) {
    const scope = await this.scope(principal, ns);
    let serviceName: string | undefined;
    let functionName: string | undefined;
    if (filter.function !== undefined) {
      if (typeof filter.function !== 'string' || filter.function === '')
        throw invalid('function must be "name" or "service.name"', { field: 'function' });
      const dot = filter.function.indexOf('.');
      if (dot >= 0) {
        serviceName = filter.function.slice(0, dot);
        functionName = filter.function.slice(dot + 1);
      } else {
        functionName = filter.function;
      }
    }
    if (filter.status !== undefined && !['success', 'error', 'interrupted', 'cancelled'].includes(filter.status as string))
      throw invalid('status must be "success", "error", "interrupted" or "cancelled"', { field: 'status' });
    const limit = filter.limit === undefined ? 50 : Number(filter.limit);
    if (!Number.isInteger(limit) || limit < 1 || limit > MAX_LIST) throw invalid(`limit must be 1-${MAX_LIST}`, { field: 'limit' });
    const rows = await this.store.list(scope, {
      serviceName,
      functionName,
      status: filter.status as string | undefined,
      since: parseSince(filter.since),
      limit,
    });
    // Across namespaces, each row says whose it is (one namespace's answer stays as it was).
    return rows.map((r) => (ns === undefined ? { namespace: r.namespace, ...summary(r) } : summary(r)));
  }

  async describe(principal: KeyPrincipal, ns: string, id: unknown) {
    const namespaceId = await this.namespaceId(principal, ns);
    const row = typeof id === 'string' ? await this.store.find(namespaceId, id) : undefined;
    if (!row) throw new DomainError('not_found', `execution ${JSON.stringify(id)} not found`);
    return {
      ...summary(row),
      error_message: row.error_message,
      stdout: row.stdout,
      stderr: row.stderr,
      // The answer's result as the caller got it (redacted, bounded); null when the run failed.
      result: row.result ?? null,
      ...(row.mode === 'code' ? { code: row.code } : {}),
    };
  }

  /** The account's executions per UTC day since `since` (its owner's dashboard; every namespace). */
  dailyCounts(accountId: string, since: Date) {
    return this.store.dailyCounts(accountId, since);
  }

  async securityEvents(principal: KeyPrincipal, ns: string | undefined, since: unknown, limit: unknown) {
    const scope = await this.scope(principal, ns);
    const max = limit === undefined ? 50 : Number(limit);
    if (!Number.isInteger(max) || max < 1 || max > MAX_LIST) throw invalid(`limit must be 1-${MAX_LIST}`, { field: 'limit' });
    const rows = await this.store.listSecurityEvents(scope, parseSince(since), max);
    return rows.map((r) => ({
      ...(ns === undefined ? { namespace: r.namespace } : {}),
      id: r.id,
      type: r.event_type,
      detection: r.detail.detection,
      service: r.service_name,
      function: r.function_name,
      execution_id: r.execution_id,
      // An agent run that asked for a management tool: which agent, tool, trigger and run (never the arguments).
      ...(r.event_type === 'agent_forbidden_tool'
        ? {
            agent: r.detail.agent ?? null,
            tool: r.detail.tool ?? null,
            trigger: r.detail.trigger ?? null,
            run_id: r.detail.run_id ?? null,
            // A run's summary past its per-run cap: how many times it asked in all.
            ...(typeof r.detail.attempts === 'number' ? { attempts: r.detail.attempts } : {}),
          }
        : {}),
      created_at: new Date(r.created_at).toISOString(),
    }));
  }
}
