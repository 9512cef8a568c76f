import { assertScheduleInterval, validateCron, validateTimezone } from '../core/agents.js';
import { DomainError, invalid } from '../core/errors.js';
import { backoffUntil, nextFireAt, parseScheduleOptions, type FailurePolicy, type ScheduleOptions } from '../core/schedule-plan.js';
import { suggestion } from '../core/suggest.js';
import { DEFAULT_TIERS, isKnownTier, limitsFor, type TierLimits } from '../core/tiers.js';
import type { AgentsStore } from '../store/agents-store.js';
import type { AgentRow, AgentScheduleRow, NamespaceRow } from '../store/schema.js';
import type { SchedulesStore } from '../store/schedules-store.js';
import type { KeyPrincipal } from './accounts.js';
import { agentNameArg, requireScope, type AgentArgs } from './agents.js';
import type { CatalogService } from './catalog.js';

/** An agent has at most this many schedules (each is planned by every node holding one of its replicas). */
export const MAX_SCHEDULES_PER_AGENT = 50;
const LABEL_PATTERN = /^[a-z0-9](?:[a-z0-9_-]{0,62})$/;
const FUNCTION_NAME_PATTERN = /^([^.\s]+)\.([^.\s]+)$/;
const DEFAULT_FIRES_PAGE = 50;
const MAX_FIRES_PAGE = 500;

const iso = (d: Date | string | null): string | null => (d === null ? null : new Date(d).toISOString());

/** A stored schedule's options (config JSON as add_schedule wrote it). */
export function scheduleOptionsOf(row: AgentScheduleRow): ScheduleOptions {
  const c = row.config as Record<string, unknown>;
  return parseScheduleOptions({
    mode: c.mode,
    overlap: c.overlap,
    catch_up: c.catch_up,
    orchestration_mode: c.orchestration_mode,
    failure_policy: c.failure_policy,
  });
}

function policyJson(p: FailurePolicy) {
  return { strategy: p.strategy, max_failures: p.maxFailures, backoff_factor: p.backoffFactor, max_backoff_s: p.maxBackoffS };
}

/** A schedule as the tools show it: its options, whether it is on and why not, its next fire and its failure streak. */
export function scheduleView(row: AgentScheduleRow, agentRunning: boolean, now: Date = new Date()) {
  const options = scheduleOptionsOf(row);
  const streak = { count: row.failure_streak, lastFailedTick: row.last_failed_tick ? new Date(row.last_failed_tick) : null };
  const wait = backoffUntil(row.cron_expression, row.timezone, options.failurePolicy, streak);
  const next = row.enabled && agentRunning ? nextFireAt(row.cron_expression, row.timezone, now, wait) : null;
  return {
    id: row.id,
    schedule_name: row.label,
    function_name: row.function_name,
    cron_expression: row.cron_expression,
    timezone: row.timezone,
    mode: options.mode,
    overlap: options.overlap,
    catch_up: options.catchUp,
    orchestration_mode: options.orchestrationMode,
    failure_policy: policyJson(options.failurePolicy),
    enabled: row.enabled,
    disabled_reason: row.enabled ? null : row.disabled_reason,
    next_fire_at: iso(next),
    ...(row.enabled && !agentRunning ? { waiting: 'the agent is not running: start_agent to run its schedules' } : {}),
    ...(wait && wait.getTime() > now.getTime() ? { backoff_until: iso(wait) } : {}),
    consecutive_failures: row.failure_streak,
    last_failed_tick: iso(row.last_failed_tick),
    created_at: iso(row.created_at),
  };
}

/** add/list/remove_schedule and list_schedule_fires: an agent's schedules on the create endpoint. */
export class ScheduleService {
  constructor(
    private readonly agents: AgentsStore,
    private readonly store: SchedulesStore,
    private readonly catalog: CatalogService,
    private readonly tiers: Readonly<Record<string, TierLimits>> = DEFAULT_TIERS,
  ) {}

  private limits(principal: KeyPrincipal): TierLimits {
    if (!isKnownTier(principal.tier, this.tiers)) {
      throw new DomainError(
        'forbidden',
        `this account's plan '${principal.tier}' is not configured on this server; ask the operator to add it to MCPWORKS_TIERS or change the account's tier`,
      );
    }
    return limitsFor(principal.tier, this.tiers);
  }

  private async agent(principal: KeyPrincipal, nsName: string, args: AgentArgs): Promise<{ ns: NamespaceRow; agent: AgentRow }> {
    const ns = await this.catalog.namespace(principal, nsName);
    const name = agentNameArg(args);
    const agent = await this.agents.findAgent(ns.id, name);
    if (agent) return { ns, agent };
    const hint = suggestion(name, await this.agents.agentNames(ns.id), `agents in namespace '${ns.name}'`);
    throw new DomainError(
      'not_found',
      `agent '${name}' not found in namespace '${ns.name}'; create it with make_agent.${hint.text}`,
      hint.details,
    );
  }

  private async schedule(agent: AgentRow, args: AgentArgs): Promise<AgentScheduleRow> {
    const id = args.schedule_id;
    if (typeof id !== 'string' || id.length === 0 || id.length > 64)
      throw invalid('schedule_id is required: the id add_schedule answered (list_schedules shows them)', { field: 'schedule_id' });
    const row = await this.store.findSchedule(agent.id, id);
    if (!row)
      throw new DomainError('not_found', `schedule '${id}' not found on agent '${agent.name}' (list_schedules shows its schedules)`);
    return row;
  }

  async addSchedule(principal: KeyPrincipal, nsName: string, args: AgentArgs) {
    requireScope(principal, 'write');
    // A schedule runs functions as the agent on its own: the key must be allowed to run code.
    requireScope(principal, 'execute');
    const { ns, agent } = await this.agent(principal, nsName, args);
    const limits = this.limits(principal);
    const now = new Date();
    const fn = args.function_name;
    const parts = typeof fn === 'string' ? FUNCTION_NAME_PATTERN.exec(fn) : null;
    if (!parts)
      throw invalid('function_name must name a function of this namespace as "service.function", e.g. "scrape.sources"', {
        field: 'function_name',
      });
    const label = args.schedule_name ?? null;
    if (label !== null && (typeof label !== 'string' || !LABEL_PATTERN.test(label)))
      throw invalid('schedule_name must be 1-63 lowercase letters, digits, "-" or "_", starting with a letter or digit', {
        field: 'schedule_name',
      });
    const timezone = validateTimezone(args.timezone);
    const cron = validateCron(args.cron_expression, timezone, now);
    const options = parseScheduleOptions(args);
    assertScheduleInterval(cron, timezone, limits, principal.tier, now);
    if (!(await this.store.functionExists(ns.id, parts[1]!, parts[2]!)))
      throw new DomainError(
        'not_found',
        `function '${fn}' not found in namespace '${ns.name}' (make_function first; names are "service.function")`,
        {
          field: 'function_name',
        },
      );
    if ((await this.store.countSchedules(agent.id)) >= MAX_SCHEDULES_PER_AGENT)
      throw new DomainError(
        'limit_exceeded',
        `agent '${agent.name}' has ${MAX_SCHEDULES_PER_AGENT} schedules, the most an agent may have; remove one first`,
        {
          resource: 'schedules_per_agent',
          limit: MAX_SCHEDULES_PER_AGENT,
        },
      );
    const row = await this.store.createSchedule({
      agentId: agent.id,
      label: label as string | null,
      functionName: fn as string,
      cronExpression: cron,
      timezone,
      config: {
        mode: options.mode,
        overlap: options.overlap,
        catch_up: options.catchUp,
        orchestration_mode: options.orchestrationMode,
        failure_policy: policyJson(options.failurePolicy),
      },
      enabled: true,
      nextFireAt: nextFireAt(cron, timezone, now),
      plannedFrom: now,
    });
    if (!row)
      throw new DomainError('conflict', `agent '${agent.name}' already has a schedule named '${label}'`, { field: 'schedule_name' });
    return { agent: agent.name, ...scheduleView(row, agent.status === 'running', now) };
  }

  async listSchedules(principal: KeyPrincipal, nsName: string, args: AgentArgs) {
    requireScope(principal, 'read');
    const { agent } = await this.agent(principal, nsName, args);
    return this.schedulesOf(agent);
  }

  /** The agent's schedules as list_schedules and describe_agent show them. */
  async schedulesOf(agent: AgentRow) {
    const now = new Date();
    return (await this.store.listSchedules(agent.id)).map((row) => scheduleView(row, agent.status === 'running', now));
  }

  async removeSchedule(principal: KeyPrincipal, nsName: string, args: AgentArgs) {
    requireScope(principal, 'write');
    const { agent } = await this.agent(principal, nsName, args);
    const row = await this.schedule(agent, args);
    if (!(await this.store.deleteSchedule(agent.id, row.id)))
      throw new DomainError('not_found', `schedule '${row.id}' not found on agent '${agent.name}'`);
    return { removed: row.id, schedule_name: row.label, agent: agent.name };
  }

  async listFires(principal: KeyPrincipal, nsName: string, args: AgentArgs) {
    requireScope(principal, 'read');
    const { agent } = await this.agent(principal, nsName, args);
    const scheduleId = args.schedule_id === undefined ? undefined : (await this.schedule(agent, args)).id;
    const limit = args.limit ?? DEFAULT_FIRES_PAGE;
    if (typeof limit !== 'number' || !Number.isInteger(limit) || limit < 1 || limit > MAX_FIRES_PAGE)
      throw invalid(`limit must be an integer from 1 to ${MAX_FIRES_PAGE}`, { field: 'limit' });
    const rows = await this.store.listFires(agent.id, { ...(scheduleId ? { scheduleId } : {}), limit });
    return rows.map((f) => ({
      fire_id: f.id,
      schedule_id: f.schedule_id,
      schedule_name: f.label,
      scheduled_for: iso(f.scheduled_for),
      replica: f.replica === '' ? f.run_replica : f.replica,
      status: f.status,
      reason: f.reason,
      run_id: f.run_id,
      node: f.node,
      finished_at: iso(f.finished_at),
    }));
  }
}
