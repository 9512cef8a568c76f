// The code-mode bridge: what answers a running execute's `functions.x()` calls. One per execute. It
// validates every call, pins it to the namespace snapshot the run started with, keeps the run's
// call budget and deadline, records what was called, and runs other-language functions in
// sandboxes of their own. The AI loop reuses it for a model's tool calls.
import { callInputProblem } from '../core/call-input.js';
import { RawJson } from '../core/raw-json.js';
import { BRIDGE_ERROR_TYPES, SANDBOX_ERROR_TYPES, type Sandbox, type SandboxLanguage, type SandboxLimits } from '../core/sandbox.js';
import type { ActiveFunction } from '../store/catalog-store.js';
import type { MeteringStore } from '../store/metering-store.js';
import { functionKey } from './functions-package.js';
import { checkEnv, checkInput, checkOutput, functionRequest, type SchemaChecks } from './function-request.js';
import { fromOutcome, runInSandbox } from './run-result.js';
import type { NamespaceSnapshot } from './run-service.js';
import type { SchemaGuard } from './schema-guard.js';
import { isStateRequest, type StateBridge } from './state-bridge.js';
import { NOT_AGENT_RUN_MESSAGE, STATE_ERROR_TYPES } from '../core/agent-state-access.js';

/** Function calls one execute may make through the bridge (same- and other-language). */
export const MAX_BRIDGE_CALLS = 10_000;
/** Calls kept in an execution's history row. */
export const MAX_RECORDED_CALLS = 100;

/** What a bridge needs of the server: schema workers, the rate meter, code and npm installs, a sandbox. */
export interface BridgeDeps {
  sandbox: Sandbox;
  schemas: Pick<SchemaGuard, 'check'>;
  metering: Pick<MeteringStore, 'takeRateUnit'>;
  codeOf: (fn: ActiveFunction) => Promise<string>;
  nodeModulesFor: (fn: ActiveFunction) => Promise<string | undefined>;
}

/** The execute a bridge serves. */
export interface BridgeRun {
  namespace: NamespaceSnapshot;
  /** The execute's language: functions of it run inside its sandbox, the others in their own. */
  language: SandboxLanguage;
  accountId: string;
  /** The request's env (every function gets only what it declares). */
  env: Readonly<Record<string, string>>;
  /** The execute's sandbox limits; a callee gets what is left of its time, no more. */
  limits: SandboxLimits;
  /** The account's per-minute execution rate (null: unlimited). */
  perMinute: number | null;
  /** Same-language functions whose TypeScript did not transpile, by functionKey. */
  transpileErrors: ReadonlyMap<string, string>;
  /** Stops the other-language sandboxes this run started (cancel, shutdown). */
  signal: AbortSignal;
  /** Milliseconds since the epoch (injected by tests). */
  now?: () => number;
  /** The `mcpworks` module's state requests (its agent's state; none for a run not started by an agent). */
  state?: StateBridge;
}

type BridgeRequest = { op?: unknown; service?: unknown; function?: unknown; input?: unknown; result?: unknown; inputProblem?: unknown };

const refused = (error_type: string, error: string) => ({ ok: false, error_type, error });

export class CodeModeBridge {
  /** `service.function@version` of each call made, the first MAX_RECORDED_CALLS of them (for the history row). */
  readonly calls: string[] = [];
  private readonly byKey: Map<string, ActiveFunction>;
  private readonly deadline: number;
  private readonly now: () => number;
  private readonly checks: SchemaChecks;
  private finished = false;
  private count = 0;
  /** Until when (this.now()) a refused rate unit is refused again without asking the database. */
  private rateRefusedUntil: number | undefined;
  /** Same-language calls answered whose results the sandbox will send back for their output_schema check. */
  private readonly resultChecksOwed = new Map<string, number>();

  constructor(
    private readonly run: BridgeRun,
    private readonly deps: BridgeDeps,
  ) {
    this.byKey = new Map(run.namespace.functions.map((fn) => [functionKey(fn.service, fn.name), fn]));
    this.now = run.now ?? Date.now;
    this.deadline = this.now() + run.limits.timeoutSeconds * 1000;
    this.checks = { schemas: deps.schemas, accountId: run.accountId };
  }

  /** The run ended: requests its code queued before it ended start nothing. */
  finish(): void {
    this.finished = true;
  }

  /** The SandboxRequest.bridge of the execute. */
  readonly handle = async (message: unknown): Promise<unknown> => {
    // Requests queued by code that already ended, or beyond the per-run budget, start nothing.
    if (this.finished || this.now() >= this.deadline) return refused(BRIDGE_ERROR_TYPES.bridge, 'the run has ended');
    if (++this.count > MAX_BRIDGE_CALLS)
      return refused(
        BRIDGE_ERROR_TYPES.bridge,
        `at most ${MAX_BRIDGE_CALLS} bridge requests per execute (a function call is one, its output_schema check one more, a state request one)`,
      );
    const request = (message ?? {}) as BridgeRequest;
    // State requests count against the same budget as calls, then keep their own (state-bridge.ts).
    if (isStateRequest(request))
      return this.run.state ? this.run.state.handle(request) : refused(STATE_ERROR_TYPES.notAgentRun, NOT_AGENT_RUN_MESSAGE);
    if ((request.op !== 'call' && request.op !== 'result') || typeof request.service !== 'string' || typeof request.function !== 'string') {
      return refused(BRIDGE_ERROR_TYPES.bridge, 'unknown bridge request');
    }
    const fn = this.byKey.get(functionKey(request.service, request.function));
    if (!fn) return refused(BRIDGE_ERROR_TYPES.notFound, `function ${request.service}.${request.function} not found`);
    return request.op === 'result' ? this.checkResult(fn, request.result) : this.call(fn, request);
  };

  /**
   * The result of a same-language call that ran in the sandbox: its output_schema is checked here,
   * as in tool mode. Only as many checks as such calls were answered.
   */
  private async checkResult(fn: ActiveFunction, result: unknown): Promise<unknown> {
    const key = functionKey(fn.service, fn.name);
    const owed = this.resultChecksOwed.get(key) ?? 0;
    if (owed === 0) return refused(BRIDGE_ERROR_TYPES.bridge, 'no call of this function awaits a result check');
    this.resultChecksOwed.set(key, owed - 1);
    const checked = await checkOutput(fn, { ok: true, result: result ?? null, stdout: '', stderr: '' }, this.checks);
    return checked.ok ? { ok: true } : refused(checked.error_type, checked.error);
  }

  private async call(fn: ActiveFunction, request: BridgeRequest): Promise<unknown> {
    if (this.calls.length < MAX_RECORDED_CALLS) this.calls.push(`${fn.service}.${fn.name}@${fn.version}`);
    const input = request.input ?? {};
    // As at the endpoint: an input no function could receive is the caller's error, before any cost.
    // A large call's input arrives as bytes (RawJson), checked in the scan worker that read it.
    const problem =
      input instanceof RawJson ? (typeof request.inputProblem === 'string' ? request.inputProblem : undefined) : callInputProblem(input);
    if (problem) return refused(BRIDGE_ERROR_TYPES.validation, `${fn.service}.${fn.name}: ${problem}`);
    // checkCallable in two halves: missing env is refused before the rate unit (it costs nothing), the input check after it.
    const missing = checkEnv(fn, this.run.env);
    if (missing) return refused(missing.error_type, `${fn.service}.${fn.name}: ${missing.error}`);
    const sameLanguage = fn.definition.language === this.run.language;
    // A call that costs the server work (a schema check in its workers, or a sandbox of its own)
    // takes one unit of the account's per-minute rate before that work, as a tool call does (not
    // of the monthly quota, which counts the execute once). Only a same-language call to a
    // function without input_schema or output_schema costs the server nothing and takes nothing.
    if ((fn.definition.inputSchema || fn.definition.outputSchema || !sameLanguage) && !(await this.takeRateUnit())) {
      return refused(
        BRIDGE_ERROR_TYPES.rateExceeded,
        `Execution rate limit (${this.run.perMinute}/min) exceeded: each call to a function with an input_schema or of the other language counts against it`,
      );
    }
    const inputRefused = await checkInput(fn, input, this.checks);
    if (inputRefused) return refused(inputRefused.error_type, inputRefused.error);
    if (sameLanguage) {
      const key = functionKey(fn.service, fn.name);
      const transpileError = this.run.transpileErrors.get(key);
      if (transpileError) return refused(SANDBOX_ERROR_TYPES.transpile, transpileError);
      if (!fn.definition.outputSchema) return { ok: true };
      this.resultChecksOwed.set(key, (this.resultChecksOwed.get(key) ?? 0) + 1);
      return { ok: true, check: true };
    }
    return this.runOtherLanguage(fn, input);
  }

  /**
   * Within a minute the window only fills up: once refused, later calls are refused without the
   * database until its window ends (the database's minute, told as a duration: no clock compared).
   */
  private async takeRateUnit(): Promise<boolean> {
    if (this.rateRefusedUntil !== undefined && this.now() < this.rateRefusedUntil) return false;
    const unit = await this.deps.metering.takeRateUnit(this.run.accountId, this.run.perMinute);
    if (unit.taken) return true;
    this.rateRefusedUntil = this.now() + unit.windowEndsInMs;
    return false;
  }

  /** An other-language callee runs in a sandbox of its own, with what is left of the caller's time. */
  private async runOtherLanguage(fn: ActiveFunction, input: unknown): Promise<unknown> {
    const nodeModulesDir = await this.deps.nodeModulesFor(fn);
    const remaining = Math.max(1, Math.ceil((this.deadline - this.now()) / 1000));
    const { limits } = this.run;
    const outcome = await runInSandbox(
      this.deps.sandbox,
      this.run.signal,
      functionRequest(fn, input, {
        code: await this.deps.codeOf(fn),
        nodeModulesDir,
        limits: {
          ...limits,
          timeoutSeconds: Math.min(limits.timeoutSeconds, remaining),
          cpuSeconds: Math.min(limits.cpuSeconds, remaining),
        },
        env: this.run.env,
        namespace: this.run.namespace,
        accountId: this.run.accountId,
        // The callee is the same agent's run: its `mcpworks.state` reaches the same state, in the same budget.
        ...(this.run.state?.available ? { bridge: this.run.state.handleOnly } : {}),
      }),
    );
    const checked = await checkOutput(fn, fromOutcome(outcome), this.checks);
    return checked.ok ? { ok: true, result: checked.result } : refused(checked.error_type, checked.error);
  }
}
