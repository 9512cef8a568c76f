/**
 * The host's side of an orchestration run's tools: what the model is offered (the namespace's
 * functions, the agent's state, its attached servers' tools; never a management tool) and every
 * call it makes. Functions run through src/run as the agent (admitted, metered, sandboxed, recorded);
 * every result is capped and passed through the secret scanner before the model reads it. A forbidden
 * or unknown name is refused to the model; a forbidden one is a security event.
 */
import {
  capText,
  isForbiddenToolName,
  mcpToolName,
  TOOL_NAME_MAX_CHARS,
  TOOL_RESULT_MAX_CHARS,
  TOOL_SCHEMA_MAX_BYTES,
  TOOLS_MAX_BYTES,
  TOOLS_OFFERED_MAX,
  ToolTable,
  type SkipReason,
  type ToolTarget,
} from '../../core/agent-orchestration.js';
import type { OrchestrationLimits } from '../../core/agent-ai.js';
import type { AgentStateAccess } from '../../core/agent-state-access.js';
import { DomainError } from '../../core/errors.js';
import { toolName as toolNameOf } from '../../core/names.js';
import type { Logger } from '../../core/logger.js';
import { agentPrincipal, type AgentTrigger } from '../../core/principal.js';
import { SecretScanner, type Finding } from '../../core/secret-scanner.js';
import type { RunContext, RunService } from '../../run/run-service.js';
import type { AgentRunsStore } from '../../store/agent-runs-store.js';
import type { AgentToolCall } from '../../store/schema.js';
import { functionOutcome } from '../dispatcher.js';
import { storableText } from '../../core/storable-text.js';
import type { CallAnswer, OfferedTool } from './loop.js';

/** An attached MCP server's tool as its source lists it (src/agents/mcp-servers.ts implements the source). */
export interface AttachedTool {
  server: string;
  tool: string;
  description: string;
  inputSchema: Record<string, unknown>;
}

export interface AttachedToolSource {
  /** The agent's attached servers' tools (unreachable servers left out and logged, never thrown). */
  list(agentId: string, signal: AbortSignal): Promise<AttachedTool[]>;
  /** One tool call; content is the tool result's text (joined), isError its flag. */
  call(
    agentId: string,
    server: string,
    tool: string,
    args: Record<string, unknown>,
    signal: AbortSignal,
  ): Promise<{ content: string; isError: boolean }>;
  /** What the agent's servers are sent that the model must never read back (their header values). */
  secrets?(agentId: string): Promise<string[]>;
}

export interface ToolboxDeps {
  run: Pick<RunService, 'invoke' | 'snapshot'>;
  state?: ((agentId: string, tier: string) => AgentStateAccess) | undefined;
  attached?: AttachedToolSource | undefined;
  runs: Pick<AgentRunsStore, 'recordForbiddenTool'>;
  logger: Logger;
}

/** The run a session serves. */
export interface ToolRun {
  runId: string;
  agentId: string;
  agentName: string;
  accountId: string;
  namespaceId: string;
  namespace: string;
  tier: string;
  trigger: AgentTrigger;
  limits: OrchestrationLimits;
  /** Values never shown to the model even if a tool answers them (the AI key, attached servers' headers). */
  secrets: string[];
}

const DESCRIPTION_MAX_CHARS = 2_000;

/** A promise, or a rejection as soon as `signal` fires (for a source that may not heed it). */
function untilAborted<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}
/** What is scanned of a result before it is capped for the model (the rest is cut unscanned: never sent). */
const SCAN_MAX_CHARS = 64_000;

const STATE_TOOLS: Array<{ name: 'state_get' | 'state_set' | 'state_list' | 'state_delete'; description: string; schema: object }> = [
  {
    name: 'state_get',
    description: "Reads one key of this agent's state: its value and version, or null when it is not set.",
    schema: { type: 'object', properties: { key: { type: 'string' } }, required: ['key'] },
  },
  {
    name: 'state_set',
    description:
      "Writes one key of this agent's state (any JSON value). if_version: only if the key is at that version now (0: not set yet).",
    schema: {
      type: 'object',
      properties: { key: { type: 'string' }, value: {}, if_version: { type: 'integer', minimum: 0 } },
      required: ['key', 'value'],
    },
  },
  {
    name: 'state_list',
    description: "Lists this agent's state keys in order, a page at a time (cursor: the previous page's next_cursor).",
    schema: {
      type: 'object',
      properties: { prefix: { type: 'string' }, cursor: { type: 'string' }, limit: { type: 'integer', minimum: 1, maximum: 1000 } },
    },
  },
  {
    name: 'state_delete',
    description: "Removes one key of this agent's state. if_version as for state_set.",
    schema: { type: 'object', properties: { key: { type: 'string' }, if_version: { type: 'integer', minimum: 0 } }, required: ['key'] },
  },
];

export class Toolbox {
  constructor(private readonly deps: ToolboxDeps) {}

  /** The source of the agents' attached servers' tools (set once the server has one). */
  attach(source: AttachedToolSource): void {
    this.deps.attached = source;
  }

  /** The tools offered to one run, and the session that answers its calls. */
  async open(run: ToolRun, signal: AbortSignal): Promise<ToolSession> {
    const table = new ToolTable();
    const offered: OfferedTool[] = [];
    const leftOut: string[] = [];
    let bytes = 0;
    // Within what a vendor takes and a replica's job carries: past the count or the bytes, a tool is
    // left out (and the model told which), never the whole run refused.
    const offer = (name: string, target: ToolTarget, description: string, inputSchema: Record<string, unknown>) => {
      const text = capText(description, DESCRIPTION_MAX_CHARS);
      const size = Buffer.byteLength(JSON.stringify(inputSchema)) + Buffer.byteLength(text);
      if (offered.length >= TOOLS_OFFERED_MAX || size > TOOL_SCHEMA_MAX_BYTES || bytes + size > TOOLS_MAX_BYTES) {
        if (!isForbiddenToolName(name)) leftOut.push(name);
        return;
      }
      const given = table.add(name, target);
      if (given) {
        offered.push({ name: given, kind: target.kind, description: text, inputSchema });
        bytes += size;
      }
    };
    const ctx = this.context(run);
    const snapshot = await this.deps.run.snapshot(ctx);
    // State first: an agent with many functions still has its own state.
    if (this.deps.state)
      for (const t of STATE_TOOLS) offer(t.name, { kind: 'state', op: t.name }, t.description, t.schema as Record<string, unknown>);
    for (const fn of snapshot.functions) {
      const schema = fn.definition.inputSchema;
      offer(
        toolNameOf(fn),
        { kind: 'function', service: fn.service, name: fn.name },
        `${fn.description || `${fn.service}.${fn.name}`} [function ${fn.service}.${fn.name}, ${fn.definition.language}]`,
        schema && schema.type === 'object' ? schema : { type: 'object', additionalProperties: true },
      );
    }
    if (this.deps.attached) {
      let attached: AttachedTool[] = [];
      try {
        // The run's deadline holds here too, whether or not a source heeds its signal.
        attached = await untilAborted(this.deps.attached.list(run.agentId, signal), signal);
      } catch (error) {
        this.deps.logger.warn(
          { agent: run.agentName, run_id: run.runId, err: error instanceof Error ? error.message : String(error) },
          "agent run: the attached servers' tools could not be listed",
        );
      }
      // A server that echoes its own credential (or the run endpoint's key in an error) is redacted like the AI key.
      const secrets = this.deps.attached.secrets ? await untilAborted(this.deps.attached.secrets(run.agentId), signal).catch(() => []) : [];
      if (secrets.length) run = { ...run, secrets: [...run.secrets, ...secrets] };
      for (const t of attached) {
        // A server may list a management tool's name: it is neither offered nor callable (the table refuses it).
        offer(
          mcpToolName(t.server, t.tool),
          { kind: 'mcp', server: t.server, tool: t.tool },
          `${t.description} [tool ${t.tool} of attached server ${t.server}]`,
          t.inputSchema && t.inputSchema.type === 'object' ? t.inputSchema : { type: 'object', additionalProperties: true },
        );
      }
    }
    if (leftOut.length)
      this.deps.logger.warn(
        { agent: run.agentName, run_id: run.runId, left_out: leftOut.length, offered: offered.length },
        'agent run: tools left out (too many, or their schemas too large)',
      );
    return new ToolSession(this.deps, run, ctx, table, offered, leftOut);
  }

  private context(run: ToolRun): RunContext {
    const principal = agentPrincipal({ accountId: run.accountId, tier: run.tier, namespace: run.namespace, agentId: run.agentId });
    return {
      principal,
      namespace: run.namespace,
      env: {},
      ...(this.deps.state ? { agentState: this.deps.state(run.agentId, run.tier) } : {}),
    };
  }
}

/**
 * Management-tool attempts of one run recorded one by one (security event and log line); past
 * them, a model asking in a loop adds one summary event with the count when the run ends.
 */
export const FORBIDDEN_EVENTS_PER_RUN = 5;

export class ToolSession {
  /** Every call the model made, in order, as the run's record keeps it. */
  readonly calls: AgentToolCall[] = [];
  functionsCalled = 0;
  /** Management tools asked for in this run, and the last one's name. */
  private forbiddenAttempts = 0;
  /** Of those, the ones recorded as an event each (at most FORBIDDEN_EVENTS_PER_RUN). */
  private forbiddenRecorded = 0;
  private lastForbidden = '';
  private readonly pending = new Set<Promise<unknown>>();
  private readonly scanner: SecretScanner;

  constructor(
    private readonly deps: ToolboxDeps,
    private readonly run: ToolRun,
    private readonly ctx: RunContext,
    private readonly table: ToolTable,
    readonly offered: OfferedTool[],
    /** Tools not offered for the caps (names as the model would have had them). */
    readonly leftOut: string[] = [],
  ) {
    this.scanner = new SecretScanner(run.secrets);
  }

  /** A text as the model (or the run's record) may see it: scanned for secrets, then capped. */
  scan(text: string, max = TOOL_RESULT_MAX_CHARS): string {
    const findings: Finding[] = [];
    const out = this.scanner.scanString(capText(text, SCAN_MAX_CHARS), findings);
    if (findings.length > 0)
      this.deps.logger.warn(
        { security_event: 'secret_redacted', agent: this.run.agentName, run_id: this.run.runId, detections: findings.map((f) => f.type) },
        'secret redacted from what an agent run sends its model',
      );
    return capText(out, max);
  }

  /**
   * Resolves once every call in flight has ended (a call stopped by the run's deadline or cancel is
   * still unwinding its sandbox when the loop ends): the run's record is written after, with them.
   */
  async settled(ms = 30_000): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.allSettled([...this.pending]),
      new Promise((resolve) => {
        timer = setTimeout(resolve, ms);
        timer.unref();
      }),
    ]);
    clearTimeout(timer);
  }

  /**
   * A turn's calls the loop never sent (past the per-turn cap, after a limit or a cancel, unreadable):
   * recorded with why, so the record has every call the model asked for; `more` past the ones named.
   */
  skipped(calls: Array<{ name: string; reason: SkipReason }>, more: number, moreForbidden = 0): void {
    for (const c of calls) {
      // A management tool asked for is an attempt whether or not the loop sent it: refused and counted.
      const forbidden = !this.table.get(c.name) && isForbiddenToolName(c.name);
      this.calls.push({
        name: c.name.slice(0, TOOL_NAME_MAX_CHARS),
        kind: this.table.get(c.name)?.kind ?? 'refused',
        duration_ms: 0,
        outcome: forbidden ? 'refused_forbidden' : c.reason,
        execution_id: null,
      });
      if (forbidden) this.track(this.forbidden(c.name));
    }
    // Those past the ones named: counted only (the run's summary event carries the count).
    if (moreForbidden > 0) this.forbiddenAttempts += Math.min(moreForbidden, more);
    if (more > 0)
      this.calls.push({
        name:
          moreForbidden > 0
            ? `(${more} more calls of this turn, ${Math.min(moreForbidden, more)} of them management tools)`
            : `(${more} more calls of this turn)`,
        kind: 'refused',
        duration_ms: 0,
        outcome: calls[calls.length - 1]?.reason ?? 'skipped: per-turn cap',
        execution_id: null,
      });
  }

  /** One tool call of the model: refused, or run and answered (capped, scanned). Never throws. */
  call(name: string, args: Record<string, unknown>, signal: AbortSignal): Promise<CallAnswer> {
    return this.track(this.callNow(name, args, signal));
  }

  private track<T>(running: Promise<T>): Promise<T> {
    this.pending.add(running);
    void running.finally(() => this.pending.delete(running));
    return running;
  }

  private async callNow(name: string, args: Record<string, unknown>, signal: AbortSignal): Promise<CallAnswer> {
    const t0 = Date.now();
    const target = this.table.get(name);
    const record = (call: Omit<AgentToolCall, 'duration_ms' | 'name'>) =>
      // (The store makes what it records storable: a NUL in a model's tool name does not lose the run.)
      this.calls.push({ name: name.slice(0, TOOL_NAME_MAX_CHARS), duration_ms: Date.now() - t0, ...call });
    if (!target) {
      if (isForbiddenToolName(name)) {
        record({ kind: 'refused', outcome: 'refused_forbidden', execution_id: null });
        await this.forbidden(name);
        return {
          content: `refused: '${this.scan(name, 100)}' is a management tool; an agent cannot create, change or delete functions, services or agents`,
          isError: true,
        };
      }
      record({ kind: 'refused', outcome: 'refused_unknown', execution_id: null });
      return { content: `refused: there is no tool named '${this.scan(name, 100)}' in this run`, isError: true };
    }
    if (signal.aborted) {
      record({ kind: target.kind, outcome: 'cancelled', execution_id: null });
      return { content: 'not run: the run stopped', isError: true };
    }
    try {
      if (target.kind === 'function') return await this.callFunction(target, args, signal, record);
      if (target.kind === 'state') {
        const value = await this.callState(target.op, args);
        record({ kind: 'state', outcome: 'ok', execution_id: null });
        return { content: this.scan(JSON.stringify(value ?? null)), isError: false };
      }
      const answer = await this.deps.attached!.call(this.run.agentId, target.server, target.tool, args, signal);
      record({ kind: 'mcp', outcome: answer.isError ? 'error' : 'ok', execution_id: null });
      return { content: this.scan(String(answer.content)), isError: answer.isError };
    } catch (error) {
      const typed = error instanceof DomainError ? { type: error.type, message: error.message } : undefined;
      if (!typed)
        this.deps.logger.warn(
          {
            agent: this.run.agentName,
            run_id: this.run.runId,
            tool: storableText(name.slice(0, TOOL_NAME_MAX_CHARS)),
            // An attached server's or a function's error may quote a secret: scanned as a result is.
            err: this.scan(error instanceof Error ? error.message : String(error), 2_000),
          },
          'agent run: a tool call failed',
        );
      record({
        kind: target.kind,
        outcome: signal.aborted ? 'cancelled' : 'error',
        execution_id: null,
        error_type: typed?.type ?? 'internal_error',
      });
      return {
        content: this.scan(
          JSON.stringify({ error: typed ?? { type: 'internal_error', message: 'the tool call failed inside the server' } }),
        ),
        isError: true,
      };
    }
  }

  private async callFunction(
    target: Extract<ToolTarget, { kind: 'function' }>,
    args: Record<string, unknown>,
    signal: AbortSignal,
    record: (call: Omit<AgentToolCall, 'duration_ms' | 'name'>) => void,
  ): Promise<CallAnswer> {
    // The host counts too: a worker that asks past the limit gets a refusal, never a run.
    const max = this.run.limits.max_functions_called;
    if (max !== null && this.functionsCalled >= max) {
      record({ kind: 'function', outcome: 'refused_limit', execution_id: null });
      return { content: `not run: the run reached its limit of ${max} function calls`, isError: true };
    }
    this.functionsCalled++;
    const fullName = `${target.service}.${target.name}`;
    const t0 = Date.now();
    const answer = await this.deps.run.invoke(
      this.ctx,
      { kind: 'function', service: target.service, name: target.name },
      args,
      this.run.trigger,
      {
        signal,
      },
    );
    const outcome = functionOutcome(fullName, answer, Date.now() - t0);
    record({
      kind: 'function',
      outcome: outcome.status === 'succeeded' ? 'ok' : outcome.status === 'failed' ? 'error' : outcome.status,
      execution_id: outcome.call.execution_id,
      ...(outcome.error ? { error_type: outcome.error.type } : {}),
    });
    if (outcome.status === 'succeeded') return { content: this.scan(JSON.stringify(outcome.result ?? null)), isError: false };
    return { content: this.scan(JSON.stringify({ status: outcome.status, error: outcome.error })), isError: true };
  }

  private async callState(op: 'state_get' | 'state_set' | 'state_list' | 'state_delete', args: Record<string, unknown>): Promise<unknown> {
    const access = this.ctx.agentState;
    if (!access) throw new DomainError('unavailable', 'state is not available to this run');
    const key = () => {
      if (typeof args.key !== 'string') throw new DomainError('validation_error', 'key must be a string', { field: 'key' });
      return args.key;
    };
    const version = () => {
      const v = args.if_version;
      if (v === undefined) return {};
      if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0)
        throw new DomainError('validation_error', 'if_version must be an integer ≥ 0', { field: 'if_version' });
      return { ifVersion: v };
    };
    switch (op) {
      case 'state_get':
        return access.get(key());
      case 'state_set':
        if (!('value' in args)) throw new DomainError('validation_error', 'value is required', { field: 'value' });
        return access.set(key(), args.value, version());
      case 'state_delete':
        return access.delete(key(), version());
      case 'state_list': {
        const options: { prefix?: string; cursor?: string; limit?: number } = {};
        if (typeof args.prefix === 'string') options.prefix = args.prefix;
        if (typeof args.cursor === 'string') options.cursor = args.cursor;
        if (typeof args.limit === 'number') options.limit = args.limit;
        return access.keys(options);
      }
    }
  }

  /**
   * A management tool asked for: a security event of the namespace (stored and logged), never the
   * arguments; past FORBIDDEN_EVENTS_PER_RUN in one run only counted (finish() sums them up).
   */
  private async forbidden(name: string): Promise<void> {
    const tool = storableText(name.slice(0, TOOL_NAME_MAX_CHARS));
    this.forbiddenAttempts++;
    this.lastForbidden = tool;
    if (this.forbiddenAttempts > FORBIDDEN_EVENTS_PER_RUN) return;
    this.forbiddenRecorded++;
    await this.securityEvent(tool);
  }

  /**
   * The run is over: attempts not recorded one by one (past the per-run cap, or skipped unnamed past a
   * turn's SKIPPED_RECORDED_PER_TURN) become one summary event with the run's count.
   */
  async finish(): Promise<void> {
    if (this.forbiddenAttempts > this.forbiddenRecorded)
      await this.securityEvent(this.lastForbidden || '(not named)', this.forbiddenAttempts);
  }

  private async securityEvent(tool: string, attempts?: number): Promise<void> {
    const summary = attempts !== undefined ? { attempts, recorded_singly: this.forbiddenRecorded } : {};
    this.deps.logger.warn(
      {
        security_event: 'agent_forbidden_tool',
        agent: this.run.agentName,
        tool,
        trigger: this.run.trigger,
        run_id: this.run.runId,
        ...summary,
      },
      attempts !== undefined
        ? `an agent run asked for management tools ${attempts} times; all refused`
        : 'an agent run asked for a management tool; refused',
    );
    await this.deps.runs
      .recordForbiddenTool({
        accountId: this.run.accountId,
        namespaceId: this.run.namespaceId,
        agent: this.run.agentName,
        tool,
        trigger: this.run.trigger,
        runId: this.run.runId,
        ...(attempts !== undefined ? { attempts } : {}),
      })
      .catch((error: unknown) =>
        this.deps.logger.error(
          { err: error instanceof Error ? error.message : String(error), run_id: this.run.runId },
          'could not record a security event',
        ),
      );
  }
}
