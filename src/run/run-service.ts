import { randomUUID } from 'node:crypto';
import { DomainError } from '../core/errors.js';
import { sandboxLimitsFor, type Sandbox, type SandboxOutcome, type SandboxRequest } from '../core/sandbox.js';
import { findingTypes, type Finding } from '../core/secret-scanner.js';
import { sharedScanPool, type ScanPool } from './scan-pool.js';
import { RawJson, type RenderedToolResult } from '../core/raw-json.js';
import { isKnownTier, limitsFor, type TierLimits } from '../core/tiers.js';
import type { KeyPrincipal } from '../services/accounts.js';
import type { CatalogService } from '../services/catalog.js';
import type { NamespaceRef } from '../store/accounts-store.js';
import type { ActiveFunction, CatalogStore } from '../store/catalog-store.js';
import { recordedCode, type ExecutionRecord, type ExecutionsStore } from '../store/executions-store.js';
import type { InterruptedRun, MeteringStore, Rejection } from '../store/metering-store.js';
import { DatabaseUnavailableError, isRetryableStoreError } from '../store/db-health.js';
import type { PendingWrites } from '../store/pending-writes.js';
import type { CancelStore } from '../store/cancel-store.js';
import type { TypescriptDependencies } from './typescript-dependencies.js';
import type { SchemaGuard, SchemaVerdict } from './schema-guard.js';
import { CodeCache } from './code-cache.js';
import { warmFor } from './warm.js';
import { functionKey, NODE_LIBRARY, PACKAGE_MOUNT, PYTHON_LIBRARY, type FunctionsPackageBuilder } from './functions-package.js';
import { validateCode } from '../core/functions.js';
import { callInputProblem } from '../core/call-input.js';
import { explainMissingImport, explainNetworkOff } from './import-hints.js';
import { toIdentifier } from '../core/names.js';
import { BRIDGE_ERROR_TYPES, SANDBOX_ERROR_TYPES, type SandboxLanguage, type SandboxMount } from '../core/sandbox.js';

/** A unit of quota and a concurrency slot, held from admission until the call settles. */
export interface Ticket {
  id: string;
  accountId: string;
  admittedAt: Date;
  /** Set when a tool handler took the call over (it then always settles the ticket). */
  started: boolean;
  settled: boolean;
  /** Aborted when the client cancels the call (notifications/cancelled, or its connection closed). */
  cancel: AbortController;
  /** What a 2025-era client's notifications/cancelled names the call by (session and request id). */
  cancelKey?: string | undefined;
}

/**
 * What a run answers, before the MCP layer shapes it. Already scanned for secrets. A large answer
 * arrives with `rendered` (its MCP tool result as JSON bytes, made in a scan worker) and no `result`.
 */
export type RunResult = (
  | { ok: true; result: unknown; stdout: string; stderr: string }
  | { ok: false; error: string; error_type: string; stderr: string; stdout: string; missing?: string[] }
) & { rendered?: RenderedToolResult };

export interface RunContext {
  principal: KeyPrincipal;
  namespace: string;
  /** Values from X-MCPWorks-Env for this request; never stored or logged. */
  env: Readonly<Record<string, string>>;
}

/** A namespace's functions as of one catalog version; shared read-only between requests. */
export interface NamespaceSnapshot {
  namespaceId: string;
  catalogVersion: number;
  functions: readonly ActiveFunction[];
}

const SNAPSHOT_CACHE_SIZE = 1000;
/** Schema bytes the cached snapshots may hold in all (they hold no code); least recently used go first. */
const SNAPSHOT_CACHE_BYTES = 256 * 1024 * 1024;
const snapshotBytes = (s: NamespaceSnapshot) => s.functions.reduce((sum, fn) => sum + fn.schemaBytes, 0);
/** Function calls one execute may make through the bridge (same- and other-language). */
const MAX_BRIDGE_CALLS = 10_000;
/** Calls kept in an execution's history row. */
const MAX_RECORDED_CALLS = 100;

/** The error type of a run the server stopped before it ended (shutdown): recorded, never counted. */
export const INTERRUPTED = 'interrupted';
/** The error type (and status) of a run the client cancelled: killed, recorded, never counted. */
export const CANCELLED = 'cancelled';
/** The abort reason of a run's signal when its client cancelled it (any other reason: shutdown). */
const CANCEL_REASON = Symbol('cancelled by the client');

/** A 2025-era call's name in notifications/cancelled: its session and its JSON-RPC id (1 and "1" differ). */
export function cancelKeyOf(sessionId: string, requestId: unknown): string {
  return `${sessionId}:${JSON.stringify(requestId)}`;
}

export class RunService {
  private readonly snapshots = new Map<string, NamespaceSnapshot>();
  /** Runs in progress, each with what aborts its sandboxes when the server stops. */
  private readonly running = new Set<AbortController>();
  /**
   * Calls admitted (or being admitted) whose ticket is not settled yet: between admission and its
   * run handler a call is not in `running`, but a shutdown waits for it all the same.
   */
  private readonly admitted = new Set<Ticket>();
  private admitting = 0;
  private idle: Array<() => void> = [];
  /** Set once the grace period of a shutdown is over: runs still going are stopped. */
  private interrupting = false;
  private snapshotsBytes = 0;
  private readonly code: CodeCache;
  /** Admitted calls not yet settled, by ticket id and by account and cancel key: what a cancel reaches on this node. */
  private readonly calls = new Map<string, Ticket>();
  private readonly callsByKey = new Map<string, Ticket>();

  constructor(
    private readonly deps: {
      catalog: CatalogService;
      catalogStore: CatalogStore;
      metering: MeteringStore;
      executions: ExecutionsStore;
      sandbox: Sandbox;
      dependencies: TypescriptDependencies;
      packages: FunctionsPackageBuilder;
      /** Where every input_schema and output_schema check runs (worker threads, fail closed). */
      schemas: SchemaGuard;
      tiers: Readonly<Record<string, TierLimits>>;
      accountTier: (accountId: string) => Promise<string>;
      /** Where answers are scanned for secrets (large ones off the main thread); one per process by default. */
      scans?: ScanPool;
      /** Security events are logged as well as stored: kind and place, never the value. */
      securityLog?: (event: { namespaceId: string; service: string | null; function: string | null; detections: string[] }) => void;
      /** Where a call's last writes wait while the database is unreachable or full (never lost, never billed unrecorded). */
      pending?: PendingWrites;
      /** Cancellations through the database, for calls running on other nodes. */
      cancels?: CancelStore;
      /** Whether runs get network egress (MCPWORKS_SANDBOX_NETWORK; default off); when off, network failures say so. */
      sandboxNetwork?: boolean;
    },
  ) {
    this.code = new CodeCache((ids) => deps.catalogStore.loadCode(ids));
  }

  tierLimits(principal: KeyPrincipal): TierLimits {
    return this.limitsOf(principal.tier);
  }

  /** An account whose plan the operator removed from MCPWORKS_TIERS gets a clear refusal, not a 500. */
  private limitsOf(tier: string): TierLimits {
    if (!isKnownTier(tier, this.deps.tiers)) {
      throw new DomainError('forbidden', `this account's plan '${tier}' is not configured on this server; ask the operator to add it to MCPWORKS_TIERS or change the account's tier`);
    }
    return limitsFor(tier, this.deps.tiers);
  }

  /**
   * The namespace and its functions' active versions as one request sees them (not found for other
   * accounts). Cached per namespace and catalog version: the namespace row is read anyway, and its
   * catalog_version (bumped by triggers on every change) says whether the cache is current.
   * `addressed` is that row when the request already read it (with its key); else it is read here.
   */
  async snapshot(ctx: RunContext, addressed?: NamespaceRef | null): Promise<NamespaceSnapshot> {
    if (!ctx.principal.scopes.includes('execute')) throw new DomainError('forbidden', "this API key lacks the 'execute' scope");
    const ns = addressed === undefined ? await this.deps.catalog.namespace(ctx.principal, ctx.namespace) : this.deps.catalog.visibleNamespace(ctx.principal, ctx.namespace, addressed);
    const cached = this.snapshots.get(ns.id);
    if (cached && cached.catalogVersion === ns.catalog_version) {
      this.snapshots.delete(ns.id);
      this.snapshots.set(ns.id, cached);
      return cached;
    }
    // Versions the older snapshot holds are not read again (see listActiveFunctions).
    const snapshot: NamespaceSnapshot = { namespaceId: ns.id, catalogVersion: ns.catalog_version, functions: await this.deps.catalogStore.listActiveFunctions(ns.id, cached?.functions) };
    const replaced = this.snapshots.get(ns.id);
    if (replaced) this.snapshotsBytes -= snapshotBytes(replaced);
    this.snapshots.delete(ns.id);
    this.snapshots.set(ns.id, snapshot);
    this.snapshotsBytes += snapshotBytes(snapshot);
    for (const [id, oldest] of this.snapshots) {
      if (this.snapshots.size <= SNAPSHOT_CACHE_SIZE && this.snapshotsBytes <= SNAPSHOT_CACHE_BYTES) break;
      this.snapshots.delete(id);
      this.snapshotsBytes -= snapshotBytes(oldest);
    }
    return snapshot;
  }

  /** `call`: what the call will run, so that its record can be written if its server dies first. */
  async admit(
    principal: KeyPrincipal,
    call?: { namespace: NamespaceSnapshot; mode: 'code' | 'tools'; fn?: ActiveFunction | undefined; language?: unknown; cancelKey?: string | undefined },
  ): Promise<{ ticket: Ticket } | { rejection: Rejection; tier: string }> {
    // Past the grace period nothing is admitted: the call would only be interrupted.
    if (this.interrupting) throw new DomainError('unavailable', 'the server is shutting down; retry shortly', { retry_after: 5 });
    const now = new Date();
    const ticket: Ticket = { id: randomUUID(), accountId: principal.accountId, admittedAt: now, started: false, settled: false, cancel: new AbortController(), cancelKey: call?.cancelKey };
    let run: InterruptedRun | undefined;
    if (call) {
      const fn = call.fn;
      run = {
        namespace_id: call.namespace.namespaceId,
        key_id: principal.keyId,
        mode: call.mode,
        service_name: fn?.service ?? null,
        function_name: fn?.name ?? null,
        function_id: fn?.functionId ?? null,
        version: fn?.version ?? null,
        functions: fn ? [`${fn.service}.${fn.name}@${fn.version}`] : [],
        language: fn ? fn.definition.language : call.language === 'typescript' ? 'typescript' : 'python',
        ...(call.cancelKey ? { cancel_key: call.cancelKey } : {}),
      };
    }
    // Known here before the slot exists: a cancel that finds the slot finds the call on this node.
    this.track(ticket);
    let rejection: Rejection | undefined;
    this.admitting++;
    try {
      // A cancel that reached another node before this admission committed was kept for it.
      const onCancelled = () => ticket.cancel.abort(CANCEL_REASON);
      rejection = await this.deps.metering.admit({ ticketId: ticket.id, accountId: principal.accountId, limits: this.tierLimits(principal), now, run, onCancelled });
      if (!rejection) this.admitted.add(ticket);
    } catch (error) {
      // The connection broke after the admission was sent: it may have committed, so its slot and
      // unit are given back once the database answers (a no-op when it never got there).
      if (error instanceof DatabaseUnavailableError && error.ambiguous) {
        await this.settle(ticket, false).catch(() => undefined);
      }
      this.untrack(ticket);
      throw error;
    } finally {
      this.admitting--;
      this.wakeIfIdle();
    }
    if (rejection) this.untrack(ticket);
    return rejection ? { rejection, tier: principal.tier } : { ticket };
  }

  private callKey(accountId: string, cancelKey: string): string {
    return `${accountId}\n${cancelKey}`;
  }

  private track(ticket: Ticket): void {
    this.calls.set(ticket.id, ticket);
    if (ticket.cancelKey) this.callsByKey.set(this.callKey(ticket.accountId, ticket.cancelKey), ticket);
  }

  private untrack(ticket: Ticket): void {
    this.calls.delete(ticket.id);
    if (ticket.cancelKey && this.callsByKey.get(this.callKey(ticket.accountId, ticket.cancelKey)) === ticket) {
      this.callsByKey.delete(this.callKey(ticket.accountId, ticket.cancelKey));
    }
  }

  /** Cancels a call of this node by its id (a client gone, or a cancel that came through the database). */
  cancelTicket(ticketId: string): boolean {
    const ticket = this.calls.get(ticketId);
    if (!ticket || ticket.cancel.signal.aborted) return false;
    ticket.cancel.abort(CANCEL_REASON);
    return true;
  }

  /**
   * A client's notifications/cancelled: the call is killed on this node when it runs here (the fast
   * path), else marked in the database, whose NOTIFY reaches the node that runs it. Unknown or
   * finished calls are ignored, as the protocol says.
   */
  async cancelCall(accountId: string, cancelKey: string): Promise<void> {
    const local = this.callsByKey.get(this.callKey(accountId, cancelKey));
    if (local) {
      this.cancelTicket(local.id);
      return;
    }
    await this.deps.cancels?.request(accountId, cancelKey);
  }

  /** A node's listener (re)connected: calls of this node marked cancelled meanwhile are killed. */
  async cancelMarked(): Promise<void> {
    for (const id of (await this.deps.cancels?.requested()) ?? []) this.cancelTicket(id);
  }

  /** The ticket's slot and unit are settled (or handed to the outbox): the call no longer holds shutdown. */
  private released(ticket: Ticket): void {
    ticket.settled = true;
    this.admitted.delete(ticket);
    this.wakeIfIdle();
  }

  private get busy(): boolean {
    return this.running.size > 0 || this.admitted.size > 0 || this.admitting > 0;
  }

  private wakeIfIdle(): void {
    if (!this.busy) for (const resolve of this.idle.splice(0)) resolve();
  }

  /** Calls in progress, admitted or running (for shutdown). */
  get inProgress(): number {
    return Math.max(this.running.size, this.admitted.size + this.admitting);
  }

  /** Settles when no call is admitted, being admitted or running, or after `ms`; true when none is. */
  async drained(ms: number): Promise<boolean> {
    if (!this.busy) return true;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([new Promise<void>((resolve) => this.idle.push(resolve)), new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)))]);
    clearTimeout(timer);
    return !this.busy;
  }

  /**
   * The grace period is over: runs still in progress are stopped, answer an `interrupted` error
   * and are recorded as such, uncounted; runs not yet begun do not begin.
   */
  interrupt(): void {
    this.interrupting = true;
    for (const run of this.running) run.abort();
  }

  /** Wraps a run: tracked for shutdown and for its client's cancel, with the signal that stops its sandboxes. */
  private async tracked<T>(ticket: Ticket, body: (signal: AbortSignal) => Promise<T>): Promise<T> {
    const controller = new AbortController();
    const cancelled = () => controller.abort(CANCEL_REASON);
    if (this.interrupting) controller.abort();
    else if (ticket.cancel.signal.aborted) cancelled();
    else ticket.cancel.signal.addEventListener('abort', cancelled, { once: true });
    this.running.add(controller);
    try {
      return await body(controller.signal);
    } finally {
      ticket.cancel.signal.removeEventListener('abort', cancelled);
      this.running.delete(controller);
      this.untrack(ticket);
      this.wakeIfIdle();
    }
  }

  async settle(ticket: Ticket, successful: boolean): Promise<void> {
    this.untrack(ticket);
    if (ticket.settled) return;
    ticket.settled = true;
    const settle = () => this.deps.metering.settle(ticket.id, ticket.accountId, ticket.admittedAt, successful);
    try {
      await settle();
    } catch (error) {
      // Unreachable or full database: settled once it is back (settling is idempotent).
      if (!isRetryableStoreError(error) || !this.deps.pending?.add({ what: `settlement of call ${ticket.id}`, bytes: 256, run: settle })) throw error;
    } finally {
      this.released(ticket);
    }
  }

  async usage(accountId: string, knownTier?: string) {
    const tier = knownTier ?? (await this.deps.accountTier(accountId));
    const limits = this.limitsOf(tier);
    const now = new Date();
    const usage = await this.deps.metering.usage(accountId, now);
    return {
      tier,
      month: usage.month,
      executions: usage.executions,
      limit: limits.monthlyExecutions,
      remaining: limits.monthlyExecutions === null ? null : Math.max(0, limits.monthlyExecutions - usage.executions),
      resets_at: new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1)).toISOString(),
      executions_per_minute: { used: usage.lastMinute, limit: limits.executionsPerMinute },
      concurrency: { active: usage.active, limit: limits.concurrency },
    };
  }

  /**
   * Code mode: run `code` with the namespace's `functions` package. Same-language functions run
   * inside this sandbox; the bridge validates every call, pins it to the version the run started
   * with, and runs other-language functions in sandboxes of their own.
   */
  execute(ctx: RunContext, ticket: Ticket, namespace: NamespaceSnapshot, codeInput: unknown, languageInput: unknown): Promise<RunResult> {
    return this.tracked(ticket, (signal) => this.executeTracked(ctx, ticket, namespace, codeInput, languageInput, signal));
  }

  private async executeTracked(ctx: RunContext, ticket: Ticket, namespace: NamespaceSnapshot, codeInput: unknown, languageInput: unknown, signal: AbortSignal): Promise<RunResult> {
    const started = performance.now();
    const snapshot = namespace.functions;
    const language = (languageInput ?? 'python') as SandboxLanguage;
    if (language !== 'python' && language !== 'typescript') throw new DomainError('validation_error', 'language must be "python" or "typescript"', { field: 'language' });
    const code = validateCode(codeInput);
    const limits = sandboxLimitsFor(this.tierLimits(ctx.principal));
    const pkg = await this.deps.packages.build(ctx.namespace, snapshot, (fn) => this.code.codeOf(fn, { remember: false }));
    const byKey = new Map(snapshot.map((fn) => [functionKey(fn.service, fn.name), fn]));

    const declared = new Set(snapshot.flatMap((fn) => [...fn.definition.requiredEnv, ...fn.definition.optionalEnv]));
    const env = Object.fromEntries(Object.entries(ctx.env).filter(([name]) => declared.has(name)));
    const mounts: SandboxMount[] = [{ source: pkg.dir, target: PACKAGE_MOUNT }];
    if (language === 'typescript') {
      for (const fn of snapshot) {
        const modules = await this.deps.dependencies.nodeModulesFor(fn.definition, ctx.principal.accountId);
        if (modules) mounts.push({ source: modules, target: `${NODE_LIBRARY}/functions/_code/${toIdentifier(fn.service)}__${toIdentifier(fn.name)}/node_modules` });
      }
    }

    const calls: string[] = [];
    const deadline = Date.now() + limits.timeoutSeconds * 1000;
    let finished = false;
    let bridgeCalls = 0;
    /** The minute (since the epoch) in which this run was refused a rate unit, if any. */
    let rateRefusedIn: number | undefined;
    /** Same-language calls answered whose results the sandbox will send back for their output_schema check. */
    const resultChecksOwed = new Map<string, number>();
    const bridge = async (message: unknown): Promise<unknown> => {
      // Requests queued by code that already ended, or beyond the per-run budget, start nothing.
      if (finished || Date.now() >= deadline) return { ok: false, error_type: BRIDGE_ERROR_TYPES.bridge, error: 'the run has ended' };
      if (++bridgeCalls > MAX_BRIDGE_CALLS) return { ok: false, error_type: BRIDGE_ERROR_TYPES.bridge, error: `at most ${MAX_BRIDGE_CALLS} function calls per execute` };
      const request = (message ?? {}) as { op?: unknown; service?: unknown; function?: unknown; input?: unknown; result?: unknown; inputProblem?: unknown };
      if ((request.op !== 'call' && request.op !== 'result') || typeof request.service !== 'string' || typeof request.function !== 'string') {
        return { ok: false, error_type: BRIDGE_ERROR_TYPES.bridge, error: 'unknown bridge request' };
      }
      const fn = byKey.get(functionKey(request.service, request.function));
      if (!fn) return { ok: false, error_type: BRIDGE_ERROR_TYPES.notFound, error: `function ${request.service}.${request.function} not found` };
      if (request.op === 'result') {
        // The result of a same-language call that ran in the sandbox: its output_schema is checked
        // here, as in tool mode. Only as many checks as such calls were answered.
        const key = functionKey(fn.service, fn.name);
        const owed = resultChecksOwed.get(key) ?? 0;
        if (owed === 0) return { ok: false, error_type: BRIDGE_ERROR_TYPES.bridge, error: 'no call of this function awaits a result check' };
        resultChecksOwed.set(key, owed - 1);
        const checked = await this.checkOutput(ctx, fn, { ok: true, result: request.result ?? null, stdout: '', stderr: '' });
        return checked.ok ? { ok: true } : { ok: false, error_type: checked.error_type, error: checked.error };
      }
      if (calls.length < MAX_RECORDED_CALLS) calls.push(`${fn.service}.${fn.name}@${fn.version}`);
      const input = request.input ?? {};
      // As at the endpoint: an input no function could receive is the caller's error, before any cost.
      // A large call's input arrives as bytes (RawJson), checked in the scan worker that read it.
      const problem = input instanceof RawJson ? (typeof request.inputProblem === 'string' ? request.inputProblem : undefined) : callInputProblem(input);
      if (problem) return { ok: false, error_type: 'validation_error', error: `${fn.service}.${fn.name}: ${problem}` };
      const missing = fn.definition.requiredEnv.filter((name) => ctx.env[name] === undefined);
      if (missing.length > 0) {
        return { ok: false, error_type: BRIDGE_ERROR_TYPES.missingEnv, error: `${fn.service}.${fn.name} needs environment variables ${missing.join(', ')} (send them in the X-MCPWorks-Env header)` };
      }
      const sameLanguage = fn.definition.language === language;
      // A call that costs the server work (a schema check in its workers, or a sandbox of its own)
      // takes one unit of the account's per-minute rate before that work, as a tool call does (not
      // of the monthly quota, which counts the execute once). Only a same-language call to a
      // function without input_schema or output_schema costs the server nothing and takes nothing.
      if (fn.definition.inputSchema || fn.definition.outputSchema || !sameLanguage) {
        const perMinute = this.tierLimits(ctx.principal).executionsPerMinute;
        const now = new Date();
        // Within a minute the window only fills up: once refused, later calls are refused without the database.
        if (rateRefusedIn === Math.floor(now.getTime() / 60_000) || !(await this.deps.metering.takeRateUnit(ctx.principal.accountId, perMinute, now))) {
          rateRefusedIn = Math.floor(now.getTime() / 60_000);
          return {
            ok: false,
            error_type: 'EXECUTION_RATE_EXCEEDED',
            error: `Execution rate limit (${perMinute}/min) exceeded: each call to a function with an input_schema or of the other language counts against it`,
          };
        }
      }
      const refused = await this.checkInput(ctx, fn, input);
      if (refused) return { ok: false, error_type: refused.error_type, error: refused.error };
      if (sameLanguage) {
        const transpileError = pkg.transpileErrors.get(functionKey(fn.service, fn.name));
        if (transpileError) return { ok: false, error_type: SANDBOX_ERROR_TYPES.transpile, error: transpileError };
        if (!fn.definition.outputSchema) return { ok: true };
        const key = functionKey(fn.service, fn.name);
        resultChecksOwed.set(key, (resultChecksOwed.get(key) ?? 0) + 1);
        return { ok: true, check: true };
      }
      const nodeModulesDir = await this.deps.dependencies.nodeModulesFor(fn.definition, ctx.principal.accountId);
      // The callee may use what is left of the caller's time, no more.
      const remaining = Math.max(1, Math.ceil((deadline - Date.now()) / 1000));
      const outcome = await this.runSandbox(signal, {
        code: await this.code.codeOf(fn),
        language: fn.definition.language,
        input,
        env: declaredEnv(fn, ctx.env),
        limits: { ...limits, timeoutSeconds: Math.min(limits.timeoutSeconds, remaining), cpuSeconds: Math.min(limits.cpuSeconds, remaining) },
        ...(nodeModulesDir ? { nodeModulesDir } : {}),
        ...(fn.definition.language === 'python' ? { warm: warmFor(namespace, ctx.principal.accountId) } : {}),
      });
      const checked = await this.checkOutput(ctx, fn, fromOutcome(outcome));
      return checked.ok ? { ok: true, result: checked.result } : { ok: false, error_type: checked.error_type, error: checked.error };
    };

    let outcome: SandboxOutcome;
    try {
      outcome = await this.runSandbox(signal, {
        code,
        language,
        input: {},
        env,
        limits,
        entry: 'script',
        mounts,
        libraryPaths: [language === 'python' ? PYTHON_LIBRARY : NODE_LIBRARY],
        bridge,
        ...(language === 'python' ? { warm: warmFor(namespace, ctx.principal.accountId) } : {}),
      });
    } finally {
      finished = true;
    }
    return this.finish(ctx, ticket, namespace.namespaceId, started, explainMissingImport(fromOutcome(outcome, signal), snapshot), !platformFailed(outcome), {
      mode: 'code',
      serviceName: null,
      functionName: null,
      functionId: null,
      version: null,
      functions: calls,
      language,
      code,
    });
  }

  /** The input check of a call (tool mode and every bridge call): undefined when it may run. */
  private async checkInput(ctx: RunContext, fn: ActiveFunction, input: unknown): Promise<{ error_type: string; error: string } | undefined> {
    if (!fn.definition.inputSchema) return undefined;
    // A large bridge call's input (RawJson) goes to the schema worker as bytes, never parsed here.
    const verdict = await this.deps.schemas.check(fn.definition.inputSchema, input, ctx.principal.accountId, 'the input');
    return refusal(verdict, `input does not match the input_schema of ${fn.service}.${fn.name}`, `the input_schema check of ${fn.service}.${fn.name} was stopped`);
  }

  /** output_schema is checked here, in the schema workers, rather than on the sandbox's answer path. */
  private async checkOutput(ctx: RunContext, fn: ActiveFunction, result: RunResult): Promise<RunResult> {
    if (!result.ok || !fn.definition.outputSchema) return result;
    let verdict: SchemaVerdict;
    try {
      // A large result (RawJson) goes to the schema worker as bytes, never parsed here.
      verdict = await this.deps.schemas.check(fn.definition.outputSchema, result.result, ctx.principal.accountId, 'the result');
    } catch (error) {
      // The code ran: a check that could not finish withholds the result (fails closed) but never
      // keeps the call from being recorded and counted.
      const why = error instanceof DomainError ? error.message : 'the check could not be completed';
      return { ok: false, error: `the output_schema check was stopped: ${why}`, error_type: SCHEMA_LIMIT_ERROR, stderr: result.stderr, stdout: result.stdout };
    }
    const refused = refusal(verdict, 'the result does not match output_schema', 'the output_schema check was stopped');
    return refused ? { ok: false, ...refused, stderr: result.stderr, stdout: result.stdout } : result;
  }

  /**
   * Scans what a run produced, settles its ticket and records it. `counted`: the call's code ran
   * in a sandbox, whatever it returned or raised (errors are not a free channel); false when it was
   * refused before any sandbox or the host saw the platform fail (SandboxFailure.platform) — never
   * decided from the run's answer. Once code ran, nothing after it keeps the call from counting.
   */
  private async finish(
    ctx: RunContext,
    ticket: Ticket,
    namespaceId: string,
    started: number,
    result: RunResult,
    counted: boolean,
    what: Pick<ExecutionRecord, 'mode' | 'serviceName' | 'functionName' | 'functionId' | 'version' | 'functions' | 'language' | 'code'>,
    objectOutputSchema = false,
  ): Promise<RunResult> {
    result = explainNetworkOff(result, this.deps.sandboxNetwork ?? false);
    let findings: Finding[] = [];
    let scanned: RunResult;
    let bytesOut: number;
    try {
      // A large answer comes back rendered (RunResult.rendered), its result never parsed here.
      const outcome = await (this.deps.scans ?? sharedScanPool).scan(Object.values(ctx.env), result, { objectOutputSchema, codeMode: what.mode === 'code' });
      scanned = outcome.value as RunResult;
      findings = outcome.findings;
      bytesOut = outcome.bytes;
    } catch {
      // An output the server cannot scan is withheld, not passed on unscanned; the call still counts.
      findings = [];
      scanned = { ok: false, error: 'the output could not be checked for secrets and was withheld', error_type: 'internal_error', stderr: '', stdout: '' };
      bytesOut = 0;
    }
    // An execute's code is kept bounded and redacted like its output (secrets in it are no findings: it is the caller's own input).
    if (what.code != null) {
      // Scanned as a run's log (scan() takes a run's answer, inline or in a worker), so both paths redact it the same way.
      const asLog = { ok: true, result: null, stdout: recordedCode(what.code), stderr: '' };
      what = { ...what, code: await (this.deps.scans ?? sharedScanPool).scan(Object.values(ctx.env), asLog).then((o) => (o.value as { stdout: string }).stdout, () => null) };
    }
    const settlement = ticket.settled ? null : { ticketId: ticket.id, accountId: ticket.accountId, admittedAt: ticket.admittedAt, counted };
    const record: ExecutionRecord = {
      id: ticket.id,
      accountId: ctx.principal.accountId,
      namespaceId,
      keyId: ctx.principal.keyId,
      ...what,
      status: scanned.ok ? 'success' : !counted && scanned.error_type === INTERRUPTED ? 'interrupted' : !counted && scanned.error_type === CANCELLED ? 'cancelled' : 'error',
      errorType: scanned.ok ? null : scanned.error_type,
      errorMessage: scanned.ok ? null : scanned.error,
      durationMs: performance.now() - started,
      bytesOut,
      stdout: scanned.stdout,
      stderr: scanned.stderr,
    };
    const write = () => this.deps.executions.finish(settlement, record, findingTypes(findings));
    try {
      // Settling and recording are one statement: one round trip and one commit per call.
      await write();
    } catch (error) {
      // Already recorded (another node released this slot as a dead server's and recorded the run
      // as interrupted): the record stands, the code ran, so the answer still goes out.
      if (isUniqueViolation(error)) {
        this.released(ticket);
        return scanned;
      }
      // The code ran but the database is unreachable or full: the answer goes out, and the record
      // and settlement wait in the outbox (a retry that finds the record written is done).
      const held =
        isRetryableStoreError(error) &&
        this.deps.pending?.add({
          what: `record of call ${ticket.id}`,
          bytes: 1024 + record.stdout.length + record.stderr.length + (record.errorMessage?.length ?? 0) + (record.code?.length ?? 0),
          run: () => write().catch((retry: unknown) => {
            if (!isUniqueViolation(retry)) throw retry;
          }),
        });
      if (!held) {
        // Not recorded (the database failed it): the call is still settled as what it was, never
        // left to the endpoint's refund.
        await this.settle(ticket, counted);
        throw error;
      }
    }
    this.released(ticket);
    if (findings.length > 0) {
      this.deps.securityLog?.({ namespaceId, service: what.serviceName, function: what.functionName, detections: findingTypes(findings) });
    }
    return scanned;
  }

  /** Tool mode: run one function's active version with `args` as its input. */
  runFunction(ctx: RunContext, ticket: Ticket, namespace: NamespaceSnapshot, service: string, name: string, args: unknown): Promise<RunResult> {
    return this.tracked(ticket, (signal) => this.runFunctionTracked(ctx, ticket, namespace, service, name, args, signal));
  }

  /** A sandbox run, unless the server is stopping: then an interrupted run, without starting one. */
  private runSandbox(signal: AbortSignal, request: SandboxRequest): Promise<SandboxOutcome> {
    if (signal.aborted) {
      return Promise.resolve({ ok: false, error: { type: SANDBOX_ERROR_TYPES.sandbox, message: 'the run was interrupted: the server is shutting down', stderr: '', platform: true }, stdout: '', durationMs: 0 });
    }
    return this.deps.sandbox.run({ ...request, signal });
  }

  private async runFunctionTracked(ctx: RunContext, ticket: Ticket, namespace: NamespaceSnapshot, service: string, name: string, args: unknown, signal: AbortSignal): Promise<RunResult> {
    const started = performance.now();
    const fn = namespace.functions.find((f) => f.service === service && f.name === name);
    if (!fn) throw new DomainError('not_found', `function '${service}.${name}' not found`);
    let result: RunResult;
    let counted = false;
    const missing = fn.definition.requiredEnv.filter((variable) => ctx.env[variable] === undefined);
    const refused = missing.length === 0 ? await this.checkInput(ctx, fn, args ?? {}) : undefined;
    if (missing.length > 0) {
      result = { ok: false, error: `missing required environment variables: ${missing.join(', ')} (send them in the X-MCPWorks-Env header)`, error_type: BRIDGE_ERROR_TYPES.missingEnv, missing, stderr: '', stdout: '' };
    } else if (refused) {
      result = { ok: false, ...refused, stderr: '', stdout: '' };
    } else {
      const nodeModulesDir = await this.deps.dependencies.nodeModulesFor(fn.definition, ctx.principal.accountId);
      const outcome = await this.runSandbox(signal, {
        ...(nodeModulesDir ? { nodeModulesDir } : {}),
        code: await this.code.codeOf(fn),
        language: fn.definition.language,
        input: args ?? {},
        env: declaredEnv(fn, ctx.env),
        limits: sandboxLimitsFor(this.tierLimits(ctx.principal)),
        ...(fn.definition.language === 'python' ? { warm: warmFor(namespace, ctx.principal.accountId) } : {}),
      });
      counted = !platformFailed(outcome);
      result = await this.checkOutput(ctx, fn, fromOutcome(outcome, signal));
    }
    return this.finish(ctx, ticket, namespace.namespaceId, started, result, counted, {
      mode: 'tools',
      serviceName: service,
      functionName: name,
      functionId: fn.functionId,
      version: fn.version,
      functions: [`${service}.${name}@${fn.version}`],
      language: fn.definition.language,
    }, fn.definition.outputSchema?.type === 'object');
  }
}

/** Only the variables a function declared reach its sandbox. */
export function declaredEnv(fn: ActiveFunction, env: Readonly<Record<string, string>>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of [...fn.definition.requiredEnv, ...fn.definition.optionalEnv]) if (env[name] !== undefined) out[name] = env[name]!;
  return out;
}

/** Only the host's own observation makes a failure the platform's (see SandboxFailure.platform). */
function platformFailed(outcome: SandboxOutcome): boolean {
  return !outcome.ok && outcome.error.platform === true;
}

/**
 * A schema check that failed: `SchemaError` when the value does not match, `SchemaLimitError` when
 * the check was stopped (too deep, too big, too slow, too much memory, checkers busy): fail closed.
 */
function refusal(verdict: SchemaVerdict, mismatch: string, stopped: string): { error_type: string; error: string } | undefined {
  if (verdict.ok) return undefined;
  if ('problems' in verdict) return { error_type: SANDBOX_ERROR_TYPES.schema, error: `${mismatch}: ${verdict.problems.join('; ')}` };
  return { error_type: SCHEMA_LIMIT_ERROR, error: `${stopped}: ${verdict.stopped}` };
}

/** The error type of a call refused because its schema check was stopped. */
export const SCHEMA_LIMIT_ERROR = 'SchemaLimitError';

function fromOutcome(outcome: SandboxOutcome, signal?: AbortSignal): RunResult {
  if (outcome.ok) return { ok: true, result: outcome.result, stdout: outcome.stdout, stderr: outcome.stderr };
  // Stopped by its client's cancel, or by the server's shutdown (the host's own observation).
  if (signal?.aborted && outcome.error.platform === true && signal.reason === CANCEL_REASON) {
    return { ok: false, error: 'the client cancelled the call; it was stopped and not counted', error_type: CANCELLED, stderr: '', stdout: '' };
  }
  if (signal?.aborted && outcome.error.platform === true) return { ok: false, error: outcome.error.message, error_type: INTERRUPTED, stderr: '', stdout: '' };
  return { ok: false, error: outcome.error.message, error_type: outcome.error.type, stderr: outcome.error.stderr, stdout: outcome.stdout };
}

/** PostgreSQL's unique_violation: the row is there already. */
function isUniqueViolation(error: unknown): boolean {
  return (error as { code?: unknown } | null)?.code === '23505';
}
