import { z } from 'zod';
import type { KeyPrincipal } from '../services/accounts.js';
import type { ScheduleService } from '../services/schedules.js';
import { agentFields, DESTRUCTIVE, READ_ONLY, type ToolRegistrar, WRITE } from './tool-kit.js';

const scheduleId = z.string().describe('The schedule id add_schedule answered (list_schedules shows them)');

/** add/list/remove_schedule and list_schedule_fires on the create endpoint. */
export function registerScheduleTools(
  tool: ToolRegistrar,
  ctx: { principal: KeyPrincipal; namespace: string; schedules: ScheduleService },
): void {
  const { principal, namespace: ns, schedules } = ctx;
  tool(
    'add_schedule',
    {
      description:
        `Run a function of namespace "${ns}" on a cron schedule while the agent is running. Each tick runs exactly once (mode single: on one replica; cluster: once on every running replica, which gets its replica name in the input), ` +
        'across restarts and several servers. The function gets {trigger: "schedule", schedule_id, schedule_name, scheduled_for, replica, fire_id}. ' +
        "Your plan's shortest interval between fires applies (Pro 30 s), measured on the real gap, DST included. Ticks skipped (overlap, back-off, missed while the server was down) are recorded with the reason: see list_schedule_fires.",
      input: z.object({
        ...agentFields,
        function_name: z.string().describe('"service.function" of this namespace, e.g. "scrape.sources"'),
        cron_expression: z.string().describe('5 fields (minute hour day month weekday) or 6 (seconds first), e.g. "*/15 * * * *"'),
        timezone: z
          .string()
          .optional()
          .describe('IANA time zone the cron is read in, e.g. "Europe/Berlin" (default UTC; an unknown zone is an error)'),
        mode: z
          .enum(['single', 'cluster'])
          .optional()
          .describe('single (default): one replica runs each tick; cluster: every running replica runs it'),
        failure_policy: z
          .object({
            strategy: z
              .enum(['continue', 'auto_disable', 'backoff'])
              .optional()
              .describe(
                'continue (default): keep firing; auto_disable: turn off after max_failures consecutive failures; backoff: after k consecutive failures wait interval·backoff_factor^k',
              ),
            max_failures: z
              .number()
              .int()
              .optional()
              .describe('auto_disable: consecutive failures that turn the schedule off (1-1000, default 5)'),
            backoff_factor: z.number().optional().describe('backoff: the wait grows by this factor per failure (1-100, default 2)'),
            max_backoff_s: z.number().int().optional().describe('backoff: the longest wait in seconds (default 3600)'),
          })
          .optional()
          .describe('What consecutive failures do'),
        overlap: z
          .enum(['skip', 'allow'])
          .optional()
          .describe('skip (default): a tick whose previous run is still going is recorded skipped; allow: runs overlap'),
        catch_up: z
          .enum(['none', 'once'])
          .optional()
          .describe('Ticks missed while no server ran: none (default) records them skipped; once runs one of them'),
        orchestration_mode: z
          .enum(['direct', 'run_then_reason', 'reason_first'])
          .optional()
          .describe(
            "direct (default): run the function; run_then_reason: run it, then the agent's model gets its outcome; reason_first: the model gets the tick and decides. Without configure_agent_ai the AI modes run direct (the run record says fallback_direct)",
          ),
        schedule_name: z.string().optional().describe('An optional name for this schedule, unique for the agent, e.g. "hourly-scrape"'),
      }),
      annotations: WRITE,
    },
    (a) => schedules.addSchedule(principal, ns, a),
  );
  tool(
    'list_schedules',
    {
      description:
        "An agent's schedules: id, name, function, cron and zone, mode, policies, whether enabled (and why not: auto-disabled after failures), the next fire, and the consecutive failures.",
      input: z.object(agentFields),
      annotations: READ_ONLY,
    },
    (a) => schedules.listSchedules(principal, ns, a),
  );
  tool(
    'remove_schedule',
    {
      description: "Remove one of an agent's schedules (by id); a run it started finishes. Its fire records go with it.",
      input: z.object({ ...agentFields, schedule_id: scheduleId }),
      annotations: DESTRUCTIVE,
    },
    (a) => schedules.removeSchedule(principal, ns, a),
  );
  tool(
    'list_schedule_fires',
    {
      description:
        "Recent fires of an agent's schedules, newest first: scheduled_for, replica, status (fired = running, succeeded, failed, skipped), the reason of a skip or failure, and the run_id (see describe_agent_run).",
      input: z.object({
        ...agentFields,
        schedule_id: scheduleId.optional(),
        limit: z.number().int().min(1).max(500).optional().describe('At most this many (1-500, default 50)'),
      }),
      annotations: READ_ONLY,
    },
    (a) => schedules.listFires(principal, ns, a),
  );
}
