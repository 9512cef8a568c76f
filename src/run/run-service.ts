import { randomUUID } from 'node:crypto';
import { DomainError } from '../core/errors.js';
import { schemaProblems } from '../core/json-schema.js';
import { sandboxLimitsFor, type Sandbox, type SandboxOutcome } from '../core/sandbox.js';
import { findingTypes, SecretScanner, type Finding } from '../core/secret-scanner.js';
import { limitsFor, type TierLimits } from '../core/tiers.js';
import type { KeyPrincipal } from '../services/accounts.js';
import type { CatalogService } from '../services/catalog.js';
import type { ActiveFunction, CatalogStore } from '../store/catalog-store.js';
import type { ExecutionsStore } from '../store/executions-store.js';
import type { MeteringStore, Rejection } from '../store/metering-store.js';
import type { TypescriptDependencies } from './typescript-dependencies.js';

/** A unit of quota and a concurrency slot, held from admission until the call settles. */
export interface Ticket {
  id: string;
  accountId: string;
  admittedAt: Date;
  settled: boolean;
}

/** What a run answers, before the MCP layer shapes it. Already scanned for secrets. */
export type RunResult =
  | { ok: true; result: unknown; stdout: string; stderr: string }
  | { ok: false; error: string; error_type: string; stderr: string; stdout: string; missing?: string[] };

export interface RunContext {
  principal: KeyPrincipal;
  namespace: string;
  /** Values from X-MCPWorks-Env for this request; never stored or logged. */
  env: Readonly<Record<string, string>>;
}

export class RunService {
  constructor(
    private readonly deps: {
      catalog: CatalogService;
      catalogStore: CatalogStore;
      metering: MeteringStore;
      executions: ExecutionsStore;
      sandbox: Sandbox;
      dependencies: TypescriptDependencies;
      tiers: Readonly<Record<string, TierLimits>>;
      accountTier: (accountId: string) => Promise<string>;
    },
  ) {}

  tierLimits(principal: KeyPrincipal): TierLimits {
    return limitsFor(principal.tier, this.deps.tiers);
  }

  /** The namespace's functions with their active versions (not found for other accounts). */
  async activeFunctions(ctx: RunContext): Promise<ActiveFunction[]> {
    if (!ctx.principal.scopes.includes('execute')) throw new DomainError('forbidden', "this API key lacks the 'execute' scope");
    const ns = await this.deps.catalog.namespace(ctx.principal, ctx.namespace);
    return this.deps.catalogStore.listActiveFunctions(ns.id);
  }

  async admit(principal: KeyPrincipal): Promise<{ ticket: Ticket } | { rejection: Rejection; tier: string }> {
    const now = new Date();
    const ticket: Ticket = { id: randomUUID(), accountId: principal.accountId, admittedAt: now, settled: false };
    const rejection = await this.deps.metering.admit({ ticketId: ticket.id, accountId: principal.accountId, limits: this.tierLimits(principal), now });
    return rejection ? { rejection, tier: principal.tier } : { ticket };
  }

  async settle(ticket: Ticket, successful: boolean): Promise<void> {
    if (ticket.settled) return;
    ticket.settled = true;
    await this.deps.metering.settle(ticket.id, ticket.accountId, ticket.admittedAt, successful);
  }

  async usage(accountId: string, knownTier?: string) {
    const tier = knownTier ?? (await this.deps.accountTier(accountId));
    const limits = limitsFor(tier, this.deps.tiers);
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

  /** Tool mode: run one function's active version with `args` as its input. */
  async runFunction(ctx: RunContext, ticket: Ticket, service: string, name: string, args: unknown): Promise<RunResult> {
    const started = performance.now();
    const ns = await this.deps.catalog.namespace(ctx.principal, ctx.namespace);
    const fn = await this.deps.catalogStore.findActiveFunction(ns.id, service, name);
    if (!fn) throw new DomainError('not_found', `function '${service}.${name}' not found`);
    const scanner = new SecretScanner(Object.values(ctx.env));
    let result: RunResult;
    const missing = fn.definition.requiredEnv.filter((variable) => ctx.env[variable] === undefined);
    const problems = missing.length === 0 && fn.definition.inputSchema ? schemaProblems(fn.definition.inputSchema, args ?? {}) : [];
    if (missing.length > 0) {
      result = { ok: false, error: `missing required environment variables: ${missing.join(', ')} (send them in the X-MCPWorks-Env header)`, error_type: 'missing_env', missing, stderr: '', stdout: '' };
    } else if (problems.length > 0) {
      result = { ok: false, error: `input does not match the input_schema of ${service}.${name}: ${problems.join('; ')}`, error_type: 'SchemaError', stderr: '', stdout: '' };
    } else {
      const nodeModulesDir = await this.deps.dependencies.nodeModulesFor(fn.definition);
      const outcome = await this.deps.sandbox.run({
        ...(nodeModulesDir ? { nodeModulesDir } : {}),
        code: fn.definition.code,
        language: fn.definition.language,
        input: args ?? {},
        env: declaredEnv(fn, ctx.env),
        limits: sandboxLimitsFor(this.tierLimits(ctx.principal)),
        ...(fn.definition.outputSchema ? { outputSchema: fn.definition.outputSchema } : {}),
      });
      result = fromOutcome(outcome);
    }
    const findings: Finding[] = [];
    const scanned = scanner.scanValue(result, findings) as RunResult;
    await this.settle(ticket, scanned.ok);
    await this.deps.executions.record(
      {
        id: ticket.id,
        accountId: ctx.principal.accountId,
        namespaceId: ns.id,
        keyId: ctx.principal.keyId,
        mode: 'tools',
        serviceName: service,
        functionName: name,
        functionId: fn.functionId,
        version: fn.version,
        functions: [`${service}.${name}@${fn.version}`],
        language: fn.definition.language,
        status: scanned.ok ? 'success' : 'error',
        errorType: scanned.ok ? null : scanned.error_type,
        errorMessage: scanned.ok ? null : scanned.error,
        durationMs: performance.now() - started,
        bytesOut: Buffer.byteLength(JSON.stringify(scanned)),
        stdout: scanned.stdout,
        stderr: scanned.stderr,
      },
      findingTypes(findings),
    );
    return scanned;
  }
}

/** Only the variables a function declared reach its sandbox. */
export function declaredEnv(fn: ActiveFunction, env: Readonly<Record<string, string>>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of [...fn.definition.requiredEnv, ...fn.definition.optionalEnv]) if (env[name] !== undefined) out[name] = env[name]!;
  return out;
}

function fromOutcome(outcome: SandboxOutcome): RunResult {
  if (outcome.ok) return { ok: true, result: outcome.result, stdout: outcome.stdout, stderr: outcome.stderr };
  return { ok: false, error: outcome.error.message, error_type: outcome.error.type, stderr: outcome.error.stderr, stdout: outcome.stdout };
}
