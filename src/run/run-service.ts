import { createHash, randomUUID } from 'node:crypto';
import { DomainError } from '../core/errors.js';
import { sandboxLimitsFor, type Sandbox, type SandboxLanguage, type SandboxMount, type SandboxOutcome } from '../core/sandbox.js';
import { findingTypes, type Finding } from '../core/secret-scanner.js';
import { sharedScanPool, type ScanPool } from './scan-pool.js';
import { isKnownTier, limitsFor, type TierLimits } from '../core/tiers.js';
import { actorIds, type Principal, type Trigger } from '../core/principal.js';
import { callInputProblem } from '../core/call-input.js';
import type { CatalogService } from '../services/catalog.js';
import type { NamespaceRef } from '../store/accounts-store.js';
import type { ActiveFunction, CatalogStore } from '../store/catalog-store.js';
import { recordedCode, recordedResult, type ExecutionRecord, type ExecutionsStore } from '../store/executions-store.js';
import type { CachedKeyCheck, InterruptedRun, MeteringStore, Rejection } from '../store/metering-store.js';
import { DatabaseUnavailableError, isRetryableStoreError, isUniqueViolation } from '../store/db-health.js';
import type { PendingWrites } from '../store/pending-writes.js';
import type { CancelStore } from '../store/cancel-store.js';
import type { TypescriptDependencies } from './typescript-dependencies.js';
import type { SchemaGuard } from './schema-guard.js';
import { CodeCache } from './code-cache.js';
import { warmFor } from './warm.js';
import { NODE_LIBRARY, PACKAGE_MOUNT, PYTHON_LIBRARY, type FunctionsPackageBuilder } from './functions-package.js';
import { validateCode } from '../core/functions.js';
import { explainMissingImport, explainNetworkOff } from './import-hints.js';
import { toIdentifier } from '../core/names.js';
import { CodeModeBridge } from './bridge.js';
import { RawJson } from '../core/raw-json.js';
import { StateBridge } from './state-bridge.js';
import type { AgentStateAccess } from '../core/agent-state-access.js';
import { checkCallable, checkOutput, functionRequest, namespaceEnv, type CallRefusal } from './function-request.js';
import {
  CANCEL_REASON,
  CANCELLED,
  fromOutcome,
  INTERNAL_ERROR,
  INTERRUPTED,
  platformFailed,
  runInSandbox,
  type RunResult,
} from './run-result.js';

export { CANCELLED, INTERRUPTED, type RunResult } from './run-result.js';
export type { Rejection } from '../store/metering-store.js';
/** A cached key's admission found the key or its namespace changed (nothing taken): for the run endpoint. */
export { KeyChangedError } from '../store/metering-store.js';
export type { Principal, Trigger } from '../core/principal.js';

/**
 * What invoke runs: one function's active version (with the call's input), or a code-mode script
 * with the namespace's `functions` package. `code` and `language` are checked when the run starts
 * (a caller's raw values are refused there as a validation_error).
 */
export type InvokeTarget = { kind: 'function'; service: string; name: string } | { kind: 'code'; code: unknown; language?: unknown };

/**
 * A function call's checks (required env, input_schema) begun while its admission is in flight
 * (RunService.precheck): they do not depend on it, and the run takes their verdict only for this
 * very function and input value, so what was checked is what runs.
 */
export interface PrecheckedInput {
  readonly fn: ActiveFunction;
  readonly input: unknown;
  readonly refusal: Promise<CallRefusal | undefined>;
}

/** The trigger of an MCP call by its endpoint's mode. */
export const mcpTrigger = (mode: 'tools' | 'code'): Trigger => (mode === 'code' ? 'mcp-code' : 'mcp-tools');
export { declaredEnv, SCHEMA_LIMIT_ERROR } from './function-request.js';

/** A unit of quota and a concurrency slot, held from admission until the call settles. */
export interface Ticket {
  id: string;
  accountId: string;
  /** Set when a tool handler took the call over (it then always settles the ticket). */
  started: boolean;
  settled: boolean;
  /** Aborted when the client cancels the call (notifications/cancelled, or its connection closed). */
  cancel: AbortController;
  /** What a 2025-era client's notifications/cancelled names the call by (session and request id). */
  cancelKey?: string | undefined;
}

export interface RunContext {
  /** Who runs: an API key's principal (keyPrincipal) or an agent's. */
  principal: Principal;
  namespace: string;
  /** Values from X-MCPWorks-Env for this request; never stored or logged. */
  env: Readonly<Record<string, string>>;
  /** An agent's run: its agent's state, reached from the sandbox by the `mcpworks` module (only when the principal is that agent). */
  agentState?: AgentStateAccess;
}

/** The run's state bridge: only a run whose principal is the agent the access belongs to reaches state. */
function stateBridgeFor(ctx: RunContext, signal: AbortSignal): StateBridge {
  const { actor } = ctx.principal;
  const access = actor.kind === 'agent' && ctx.agentState?.agentId === actor.agentId ? ctx.agentState : undefined;
  return new StateBridge(access, signal);
}

/** A namespace's functions as of one catalog version; shared read-only between requests. */
export interface NamespaceSnapshot {
  namespaceId: string;
  catalogVersion: number;
  functions: readonly ActiveFunction[];
}

const SNAPSHOT_CACHE_SIZE = 1000;
/** At most this many checks begun beside admissions at once per account (fewer with a lower concurrency limit). */
const MAX_PRECHECKS = 16;
/**
 * Records written behind their answers (see finish) at most at once: past it, an answer waits for
 * its record's commit again. A backstop: on the embedded database a sent record holds the one
 * connection until its commit, so the next record waits for it and about one is ever behind.
 */
export const MAX_RECORDS_BEHIND = 64;
/** Accounts remembered as refused at their last admission (precheck): beyond it, the oldest is forgotten. */
const REFUSED_ACCOUNTS_KEPT = 10_000;
/** Schema bytes the cached snapshots may hold in all (they hold no code); least recently used go first. */
const SNAPSHOT_CACHE_BYTES = 256 * 1024 * 1024;
const snapshotBytes = (s: NamespaceSnapshot) => s.functions.reduce((sum, fn) => sum + fn.schemaBytes, 0);

/**
 * A 2025-era call's name in notifications/cancelled: its session and its JSON-RPC id (1 and "1" differ).
 * The id is the client's and of any length: hashed, so the key fits the indexes it is stored in.
 */
export function cancelKeyOf(sessionId: string, requestId: unknown): string {
  return `${sessionId}:${createHash('sha256').update(JSON.stringify(requestId)).digest('base64url')}`;
}

/**
 * A run's result as its history keeps it: the scanned (redacted) answer the caller got, as JSON text,
 * bounded by recordedResult; never the raw one. A large answer was rendered in a scan worker, which
 * made its recorded text too. Null for a failed run (its error is recorded).
 */
function recordableResult(scanned: RunResult): string | null {
  if (!scanned.ok) return null;
  try {
    // A large answer's is made in the scan worker that rendered it (it sets one for every successful run):
    // 64 KB of text, never the answer's bytes decoded here.
    if (scanned.rendered) return scanned.rendered.recorded ?? null;
    const value = scanned.result instanceof RawJson ? scanned.result.bytes.toString('utf8') : JSON.stringify(scanned.result ?? null);
    return recordedResult(value);
  } catch {
    // A result that cannot be written as JSON (a cycle cannot come from a sandbox; a defect would) is not kept.
    return null;
  }
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
  /** Records sent and not committed yet (answered before their commit): a shutdown waits for them. */
  private recordsBehind = 0;
  /** Set once the grace period of a shutdown is over: runs still going are stopped. */
  private interrupting = false;
  private snapshotsBytes = 0;
  private readonly code: CodeCache;
  /** Admitted calls not yet settled, by ticket id and by account and cancel key: what a cancel reaches on this node. */
  private readonly calls = new Map<string, Ticket>();
  private readonly callsByKey = new Map<string, Ticket>();
  /** Checks begun beside admissions and not done yet, by account (see precheck). */
  private readonly prechecking = new Map<string, number>();
  /** Accounts whose last admission on this node was refused (see precheck); forgotten at their next success. */
  private readonly refusedLast = new Set<string>();
  /** Tickets tracked on this node (being admitted, or admitted and not settled), by account (see precheck). */
  private readonly heldBy = new Map<string, number>();

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
      /**
       * Answer a call once its record (and settlement) is sent, before its commit: only where this
       * node is the database's one client and its statements run in the order they are asked for
       * (the embedded database), so every later read or admission sees it (see finish).
       */
      answerBeforeRecord?: boolean;
      /** For a record that failed after its call was answered. */
      log?: { error: (fields: Record<string, unknown>, message: string) => void };
    },
  ) {
    this.code = new CodeCache((ids) => deps.catalogStore.loadCode(ids));
  }

  tierLimits(principal: Pick<Principal, 'tier'>): TierLimits {
    return this.limitsOf(principal.tier);
  }

  /** An account whose plan the operator removed from MCPWORKS_TIERS gets a clear refusal, not a 500. */
  private limitsOf(tier: string): TierLimits {
    if (!isKnownTier(tier, this.deps.tiers)) {
      throw new DomainError(
        'forbidden',
        `this account's plan '${tier}' is not configured on this server; ask the operator to add it to MCPWORKS_TIERS or change the account's tier`,
      );
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
    const ns =
      addressed === undefined
        ? await this.deps.catalog.namespace(ctx.principal, ctx.namespace)
        : this.deps.catalog.visibleNamespace(ctx.principal, ctx.namespace, addressed);
    const cached = this.snapshots.get(ns.id);
    if (cached && cached.catalogVersion === ns.catalog_version) {
      this.snapshots.delete(ns.id);
      this.snapshots.set(ns.id, cached);
      return cached;
    }
    // Versions the older snapshot holds are not read again (see listActiveFunctions).
    const snapshot: NamespaceSnapshot = {
      namespaceId: ns.id,
      catalogVersion: ns.catalog_version,
      functions: await this.deps.catalogStore.listActiveFunctions(ns.id, cached?.functions),
    };
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

  /**
   * Begins `fn`'s checks of `input` (required env, then input_schema in the schema workers) so
   * that they run beside the admission's round trip instead of after it. No sandbox starts here;
   * should the admission refuse the call, the verdict is dropped.
   */
  precheck(ctx: RunContext, fn: ActiveFunction, input: unknown): PrecheckedInput | undefined {
    const { accountId } = ctx.principal;
    // A check begun for a call the admission then refuses is work no rate unit paid for: none
    // begins while the account's last admission here was refused (until one succeeds), nor more
    // at once than the account may run calls, so refused calls cannot make the server check
    // inputs without limit. Such a call is checked after its admission, as before.
    const inFlight = this.prechecking.get(accountId) ?? 0;
    const concurrency = this.tierLimits(ctx.principal).concurrency;
    if (this.refusedLast.has(accountId) || inFlight >= Math.min(concurrency ?? MAX_PRECHECKS, MAX_PRECHECKS)) return undefined;
    // An account whose calls on this node alone fill its concurrency limit: this call's admission
    // will be refused, and each slot freed would otherwise buy a fresh burst of free checks.
    if (concurrency !== null && (this.heldBy.get(accountId) ?? 0) >= concurrency) return undefined;
    this.prechecking.set(accountId, inFlight + 1);
    const refusal = checkCallable(fn, input ?? {}, ctx.env, { schemas: this.deps.schemas, accountId }).finally(() => {
      const left = (this.prechecking.get(accountId) ?? 1) - 1;
      if (left > 0) this.prechecking.set(accountId, left);
      else this.prechecking.delete(accountId);
    });
    // Awaited by the run; a call the admission refused never reads it.
    refusal.catch(() => undefined);
    return { fn, input, refusal };
  }

  /** `call`: what the call will run, so that its record can be written if its server dies first. */
  async admit(
    principal: Principal,
    call?: {
      namespace: NamespaceSnapshot;
      mode: 'code' | 'tools';
      fn?: ActiveFunction | undefined;
      language?: unknown;
      cancelKey?: string | undefined;
      trigger?: Trigger;
      /** The key came from the node's cache: the admission checks it (throws KeyChangedError, nothing taken). */
      cachedKey?: CachedKeyCheck | undefined;
    },
  ): Promise<{ ticket: Ticket } | { rejection: Rejection; tier: string }> {
    // Past the grace period nothing is admitted: the call would only be interrupted.
    if (this.interrupting) throw new DomainError('unavailable', 'the server is shutting down; retry shortly', { retry_after: 5 });
    const now = new Date();
    const ticket: Ticket = {
      id: randomUUID(),
      accountId: principal.accountId,
      started: false,
      settled: false,
      cancel: new AbortController(),
      cancelKey: call?.cancelKey,
    };
    let run: InterruptedRun | undefined;
    if (call) {
      const fn = call.fn;
      run = {
        namespace_id: call.namespace.namespaceId,
        key_id: actorIds(principal.actor).keyId,
        ...(principal.actor.kind === 'agent' ? { agent_id: principal.actor.agentId } : {}),
        mode: call.mode,
        trigger: call.trigger ?? mcpTrigger(call.mode),
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
      rejection = await this.deps.metering.admit({
        ticketId: ticket.id,
        accountId: principal.accountId,
        limits: this.tierLimits(principal),
        now,
        run,
        onCancelled,
        cachedKey: call?.cachedKey,
      });
      if (!rejection) this.admitted.add(ticket);
      this.noteAdmission(principal.accountId, rejection !== undefined);
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

  private noteAdmission(accountId: string, refused: boolean): void {
    if (!refused) return void this.refusedLast.delete(accountId);
    // Bounded: past the cap the oldest entry goes (that account may get one more precheck).
    if (this.refusedLast.size >= REFUSED_ACCOUNTS_KEPT) this.refusedLast.delete(this.refusedLast.values().next().value!);
    this.refusedLast.add(accountId);
  }

  private callKey(accountId: string, cancelKey: string): string {
    return `${accountId}\n${cancelKey}`;
  }

  private track(ticket: Ticket): void {
    this.calls.set(ticket.id, ticket);
    this.heldBy.set(ticket.accountId, (this.heldBy.get(ticket.accountId) ?? 0) + 1);
    if (ticket.cancelKey) this.callsByKey.set(this.callKey(ticket.accountId, ticket.cancelKey), ticket);
  }

  private untrack(ticket: Ticket): void {
    if (this.calls.delete(ticket.id)) {
      const held = (this.heldBy.get(ticket.accountId) ?? 1) - 1;
      if (held > 0) this.heldBy.set(ticket.accountId, held);
      else this.heldBy.delete(ticket.accountId);
    }
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
    return this.running.size > 0 || this.admitted.size > 0 || this.admitting > 0 || this.recordsBehind > 0;
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
    await Promise.race([
      new Promise<void>((resolve) => this.idle.push(resolve)),
      new Promise<void>((resolve) => (timer = setTimeout(resolve, ms))),
    ]);
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
    try {
      await this.settleInStore(ticket, successful);
    } finally {
      this.released(ticket);
    }
  }

  private async settleInStore(ticket: Ticket, successful: boolean): Promise<void> {
    const settle = () => this.deps.metering.settle(ticket.id, ticket.accountId, successful);
    try {
      await settle();
    } catch (error) {
      // Unreachable or full database: settled once it is back (settling is idempotent).
      if (!isRetryableStoreError(error) || !this.deps.pending?.add({ what: `settlement of call ${ticket.id}`, bytes: 256, run: settle }))
        throw error;
    }
  }

  async usage(accountId: string, knownTier?: string) {
    const tier = knownTier ?? (await this.deps.accountTier(accountId));
    const limits = this.limitsOf(tier);
    // The month and minute are the database's, as admission counts them.
    const usage = await this.deps.metering.usage(accountId);
    const [year, month] = usage.month.split('-').map(Number) as [number, number];
    return {
      tier,
      month: usage.month,
      executions: usage.executions,
      limit: limits.monthlyExecutions,
      remaining: limits.monthlyExecutions === null ? null : Math.max(0, limits.monthlyExecutions - usage.executions),
      // `month` is 1-based: as a 0-based month index it is the next one.
      resets_at: new Date(Date.UTC(year, month, 1)).toISOString(),
      executions_per_minute: { used: usage.lastMinute, limit: limits.executionsPerMinute },
      concurrency: { active: usage.active, limit: limits.concurrency },
    };
  }

  /**
   * The one entry for running code: admission (quota, rate, concurrency), the namespace snapshot the
   * run is pinned to, the sandbox run, output check, secret scan, settlement and record. Answers the
   * admission's refusal, or what the run answered. `signal` cancels the run: it is stopped, answers
   * and is recorded as `cancelled`, and is not counted (as an MCP client's cancel).
   */
  async invoke(
    ctx: RunContext,
    target: InvokeTarget,
    input: unknown,
    trigger: Trigger,
    options: { signal?: AbortSignal } = {},
  ): Promise<{ rejected: Rejection; tier: string } | (RunResult & { executionId: string })> {
    const namespace = await this.snapshot(ctx);
    const fn =
      target.kind === 'function' ? namespace.functions.find((f) => f.service === target.service && f.name === target.name) : undefined;
    // As at the MCP endpoint: an unknown function or an input no function could receive is refused unmetered.
    if (target.kind === 'function' && !fn) throw new DomainError('not_found', `function '${target.service}.${target.name}' not found`);
    const problem = target.kind === 'function' ? callInputProblem(input) : undefined;
    if (problem) throw new DomainError('validation_error', problem, { field: 'input' });
    const mode = target.kind === 'function' ? 'tools' : 'code';
    const prechecked = fn ? this.precheck(ctx, fn, input) : undefined;
    const admission = await this.admit(ctx.principal, {
      namespace,
      mode,
      fn,
      language: target.kind === 'code' ? target.language : undefined,
      trigger,
    });
    if ('rejection' in admission) return { rejected: admission.rejection, tier: admission.tier };
    const { ticket } = admission;
    ticket.started = true;
    const cancel = () => ticket.cancel.abort(CANCEL_REASON);
    if (options.signal?.aborted) cancel();
    else options.signal?.addEventListener('abort', cancel, { once: true });
    try {
      // The execution's id (its record's) travels with the answer, for callers that link to it (agent runs).
      return { ...(await this.runAdmitted(ctx, ticket, namespace, target, input, trigger, prechecked)), executionId: ticket.id };
    } finally {
      options.signal?.removeEventListener('abort', cancel);
      // A run that threw before it settled gives its slot and unit back (a no-op once settled).
      await this.settle(ticket, false).catch(() => undefined);
    }
  }

  /**
   * Runs a call admitted by admit() (the MCP endpoint admits before dispatch, to answer 429 as
   * HTTP): `target` against the snapshot the call was admitted with. The ticket is settled and the
   * run recorded as what it was; a call refused before any sandbox is not counted. `prechecked`:
   * the checks precheck() began for this call (used only when they were of this function and input).
   */
  runAdmitted(
    ctx: RunContext,
    ticket: Ticket,
    namespace: NamespaceSnapshot,
    target: InvokeTarget,
    input: unknown,
    trigger: Trigger,
    prechecked?: PrecheckedInput,
  ): Promise<RunResult> {
    return target.kind === 'function'
      ? this.runFunction(ctx, ticket, namespace, target.service, target.name, input, trigger, prechecked)
      : this.execute(ctx, ticket, namespace, target.code, target.language, trigger);
  }

  /**
   * Code mode: run `code` with the namespace's `functions` package. Same-language functions run
   * inside this sandbox; the bridge validates every call, pins it to the version the run started
   * with, and runs other-language functions in sandboxes of their own.
   */
  execute(
    ctx: RunContext,
    ticket: Ticket,
    namespace: NamespaceSnapshot,
    codeInput: unknown,
    languageInput: unknown,
    trigger: Trigger,
  ): Promise<RunResult> {
    return this.tracked(ticket, (signal) => this.executeTracked(ctx, ticket, namespace, codeInput, languageInput, trigger, signal));
  }

  private async executeTracked(
    ctx: RunContext,
    ticket: Ticket,
    namespace: NamespaceSnapshot,
    codeInput: unknown,
    languageInput: unknown,
    trigger: Trigger,
    signal: AbortSignal,
  ): Promise<RunResult> {
    const started = performance.now();
    const snapshot = namespace.functions;
    const language = (languageInput ?? 'python') as SandboxLanguage;
    if (language !== 'python' && language !== 'typescript')
      throw new DomainError('validation_error', 'language must be "python" or "typescript"', { field: 'language' });
    const code = validateCode(codeInput);
    const limits = sandboxLimitsFor(this.tierLimits(ctx.principal));
    const pkg = await this.deps.packages.build(ctx.namespace, snapshot, (fn) => this.code.codeOf(fn, { remember: false }));
    const env = namespaceEnv(snapshot, ctx.env);
    const mounts: SandboxMount[] = [{ source: pkg.dir, target: PACKAGE_MOUNT }];
    if (language === 'typescript') {
      for (const fn of snapshot) {
        const modules = await this.deps.dependencies.nodeModulesFor(fn.definition, ctx.principal.accountId);
        if (modules)
          mounts.push({
            source: modules,
            target: `${NODE_LIBRARY}/functions/_code/${toIdentifier(fn.service)}__${toIdentifier(fn.name)}/node_modules`,
          });
      }
    }

    const state = stateBridgeFor(ctx, signal);
    const bridge = new CodeModeBridge(
      {
        namespace,
        language,
        accountId: ctx.principal.accountId,
        env: ctx.env,
        limits,
        perMinute: this.tierLimits(ctx.principal).executionsPerMinute,
        transpileErrors: pkg.transpileErrors,
        signal,
        state,
      },
      {
        sandbox: this.deps.sandbox,
        schemas: this.deps.schemas,
        metering: this.deps.metering,
        codeOf: (fn) => this.code.codeOf(fn),
        nodeModulesFor: (fn) => this.deps.dependencies.nodeModulesFor(fn.definition, ctx.principal.accountId),
      },
    );

    let outcome: SandboxOutcome;
    try {
      outcome = await runInSandbox(this.deps.sandbox, signal, {
        code,
        language,
        input: {},
        env,
        limits,
        entry: 'script',
        mounts,
        libraryPaths: [language === 'python' ? PYTHON_LIBRARY : NODE_LIBRARY],
        bridge: bridge.handle,
        ...(language === 'python' ? { warm: { ...warmFor(namespace, ctx.principal.accountId), preload: 'functions' } } : {}),
      });
    } finally {
      bridge.finish();
      state.finish();
    }
    return this.finish(
      ctx,
      ticket,
      namespace.namespaceId,
      started,
      explainMissingImport(fromOutcome(outcome, signal), snapshot),
      !platformFailed(outcome),
      {
        mode: 'code',
        trigger,
        serviceName: null,
        functionName: null,
        functionId: null,
        version: null,
        functions: bridge.calls,
        language,
        code,
      },
    );
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
    what: Pick<
      ExecutionRecord,
      'mode' | 'trigger' | 'serviceName' | 'functionName' | 'functionId' | 'version' | 'functions' | 'language' | 'code'
    >,
    objectOutputSchema = false,
  ): Promise<RunResult> {
    result = explainNetworkOff(result, this.deps.sandboxNetwork ?? false);
    let findings: Finding[] = [];
    let scanned: RunResult;
    let bytesOut: number;
    try {
      // A large answer comes back rendered (RunResult.rendered), its result never parsed here.
      const outcome = await (this.deps.scans ?? sharedScanPool).scan(Object.values(ctx.env), result, {
        objectOutputSchema,
        codeMode: what.mode === 'code',
      });
      scanned = outcome.value as RunResult;
      findings = outcome.findings;
      bytesOut = outcome.bytes;
    } catch {
      // An output the server cannot scan is withheld, not passed on unscanned; the call still counts.
      findings = [];
      scanned = {
        ok: false,
        error: 'the output could not be checked for secrets and was withheld',
        error_type: INTERNAL_ERROR,
        stderr: '',
        stdout: '',
      };
      bytesOut = 0;
    }
    // An execute's code is kept bounded and redacted like its output (secrets in it are no findings: it is the caller's own input).
    if (what.code != null) {
      // Scanned as a run's log (scan() takes a run's answer, inline or in a worker), so both paths redact it the same way.
      const asLog = { ok: true, result: null, stdout: recordedCode(what.code), stderr: '' };
      what = {
        ...what,
        code: await (this.deps.scans ?? sharedScanPool).scan(Object.values(ctx.env), asLog).then(
          (o) => (o.value as { stdout: string }).stdout,
          () => null,
        ),
      };
    }
    const settlement = ticket.settled ? null : { ticketId: ticket.id, accountId: ticket.accountId, counted };
    const record: ExecutionRecord = {
      id: ticket.id,
      accountId: ctx.principal.accountId,
      namespaceId,
      ...actorIds(ctx.principal.actor),
      ...what,
      status: scanned.ok
        ? 'success'
        : !counted && scanned.error_type === INTERRUPTED
          ? 'interrupted'
          : !counted && scanned.error_type === CANCELLED
            ? 'cancelled'
            : 'error',
      errorType: scanned.ok ? null : scanned.error_type,
      errorMessage: scanned.ok ? null : scanned.error,
      durationMs: performance.now() - started,
      bytesOut,
      stdout: scanned.stdout,
      stderr: scanned.stderr,
      result: recordableResult(scanned),
    };
    const events = findingTypes(findings);
    const write = () => this.deps.executions.finish(settlement, record, events);
    // The code ran but the database is unreachable or full: the answer goes out, and the record
    // and settlement wait in the outbox (a retry that finds the record written is done).
    const hold = (error: unknown) =>
      isRetryableStoreError(error) &&
      this.deps.pending?.add({
        what: `record of call ${ticket.id}`,
        bytes:
          1024 +
          record.stdout.length +
          record.stderr.length +
          (record.errorMessage?.length ?? 0) +
          (record.code?.length ?? 0) +
          (record.result?.length ?? 0),
        run: () =>
          write().catch((retry: unknown) => {
            if (!isUniqueViolation(retry)) throw retry;
          }),
      });
    try {
      if (this.deps.answerBeforeRecord && this.recordsBehind < MAX_RECORDS_BEHIND) {
        // Settling and recording are one statement; once it is sent, the answer goes out without
        // waiting for its commit. On the embedded database every statement asked for after this
        // one (this account's next admission, its usage, its history) runs after it.
        const { issued, committed } = this.deps.executions.finishIssued(settlement, record, events);
        committed.catch(() => undefined);
        await issued;
        this.recordBehind(ticket, committed, hold, counted);
      } else {
        // Settling and recording are one statement: one round trip and one commit per call.
        await write();
      }
    } catch (error) {
      // Already recorded (another node released this slot as a dead server's and recorded the run
      // as interrupted): the record stands, the code ran, so the answer still goes out.
      if (isUniqueViolation(error)) {
        this.released(ticket);
        return scanned;
      }
      if (!hold(error)) {
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

  /**
   * A record sent, its commit still to come (the answer goes out meanwhile): a shutdown waits for
   * it, and a failure meets what a failure before the answer met (kept: already recorded, or in the
   * outbox), except that the answer is out: a record the database failed leaves the call settled as
   * what it was, and is logged.
   */
  private recordBehind(ticket: Ticket, committed: Promise<void>, hold: (error: unknown) => unknown, counted: boolean): void {
    this.recordsBehind++;
    void committed
      .catch(async (error: unknown) => {
        if (isUniqueViolation(error) || hold(error)) return;
        this.deps.log?.error(
          { call: ticket.id, err: error instanceof Error ? error.message : String(error) },
          'the record of an answered call failed: the call is settled unrecorded',
        );
        await this.settleInStore(ticket, counted);
      })
      .catch(() => undefined)
      .finally(() => {
        this.recordsBehind--;
        this.wakeIfIdle();
      });
  }

  /** Tool mode: run one function's active version with `args` as its input. */
  runFunction(
    ctx: RunContext,
    ticket: Ticket,
    namespace: NamespaceSnapshot,
    service: string,
    name: string,
    args: unknown,
    trigger: Trigger,
    prechecked?: PrecheckedInput,
  ): Promise<RunResult> {
    return this.tracked(ticket, (signal) =>
      this.runFunctionTracked(ctx, ticket, namespace, service, name, args, trigger, signal, prechecked),
    );
  }

  private async runFunctionTracked(
    ctx: RunContext,
    ticket: Ticket,
    namespace: NamespaceSnapshot,
    service: string,
    name: string,
    args: unknown,
    trigger: Trigger,
    signal: AbortSignal,
    prechecked?: PrecheckedInput,
  ): Promise<RunResult> {
    const started = performance.now();
    const fn = namespace.functions.find((f) => f.service === service && f.name === name);
    if (!fn) throw new DomainError('not_found', `function '${service}.${name}' not found`);
    let result: RunResult;
    let counted = false;
    const checks = { schemas: this.deps.schemas, accountId: ctx.principal.accountId };
    // Checked already (beside the admission) only if of this very function and value; else now.
    const refused =
      prechecked?.fn === fn && prechecked.input === args ? await prechecked.refusal : await checkCallable(fn, args ?? {}, ctx.env, checks);
    if (refused) {
      result = { ok: false, ...refused, stderr: '', stdout: '' };
    } else {
      // An agent's run gets a bridge for its `mcpworks.state`; any other run has none (the module says so).
      const state = stateBridgeFor(ctx, signal);
      let outcome: SandboxOutcome;
      try {
        outcome = await runInSandbox(
          this.deps.sandbox,
          signal,
          functionRequest(fn, args ?? {}, {
            code: await this.code.codeOf(fn),
            nodeModulesDir: await this.deps.dependencies.nodeModulesFor(fn.definition, ctx.principal.accountId),
            limits: sandboxLimitsFor(this.tierLimits(ctx.principal)),
            env: ctx.env,
            namespace,
            accountId: ctx.principal.accountId,
            ...(state.available ? { bridge: state.handleOnly } : {}),
          }),
        );
      } finally {
        state.finish();
      }
      counted = !platformFailed(outcome);
      result = await checkOutput(fn, fromOutcome(outcome, signal), checks);
    }
    return this.finish(
      ctx,
      ticket,
      namespace.namespaceId,
      started,
      result,
      counted,
      {
        mode: 'tools',
        trigger,
        serviceName: service,
        functionName: name,
        functionId: fn.functionId,
        version: fn.version,
        functions: [`${service}.${name}@${fn.version}`],
        language: fn.definition.language,
      },
      fn.definition.outputSchema?.type === 'object',
    );
  }
}
