// One function's call, built once for every way it is called (tool mode, the code-mode bridge and,
// through invoke, every other trigger): what env reaches it, whether it may run (required env,
// input_schema), its output_schema check and the SandboxRequest that runs it.
import { DomainError } from '../core/errors.js';
import { BRIDGE_ERROR_TYPES, SANDBOX_ERROR_TYPES, type SandboxBridge, type SandboxLimits, type SandboxRequest } from '../core/sandbox.js';
import type { ActiveFunction } from '../store/catalog-store.js';
import type { RunResult } from './run-result.js';
import type { SchemaGuard, SchemaVerdict } from './schema-guard.js';
import { warmFor } from './warm.js';
import type { NamespaceSnapshot } from './run-service.js';

/** The error type of a call refused because its schema check was stopped. */
export const SCHEMA_LIMIT_ERROR = 'SchemaLimitError';

/** Why a call may not run (before any sandbox): missing env, or an input its input_schema refuses. */
export interface CallRefusal {
  error_type: string;
  error: string;
  /** missing_env: the required variables the request did not send. */
  missing?: string[];
}

/** Where the schema checks run, and whose fair turn a large value is parsed in. */
export interface SchemaChecks {
  schemas: Pick<SchemaGuard, 'check'>;
  accountId: string;
}

/** Only the variables a function declared reach its sandbox. */
export function declaredEnv(fn: ActiveFunction, env: Readonly<Record<string, string>>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of [...fn.definition.requiredEnv, ...fn.definition.optionalEnv]) if (env[name] !== undefined) out[name] = env[name]!;
  return out;
}

/** The env of a code-mode sandbox: the request's variables that some function of the namespace declared. */
export function namespaceEnv(functions: readonly ActiveFunction[], env: Readonly<Record<string, string>>): Record<string, string> {
  const declared = new Set(functions.flatMap((fn) => [...fn.definition.requiredEnv, ...fn.definition.optionalEnv]));
  return Object.fromEntries(Object.entries(env).filter(([name]) => declared.has(name)));
}

/**
 * Whether `fn` may run with `input` and `env`: undefined when it may, else the refusal (missing
 * required env first, then the input_schema check in the schema workers). No sandbox is started.
 */
export async function checkCallable(
  fn: ActiveFunction,
  input: unknown,
  env: Readonly<Record<string, string>>,
  checks: SchemaChecks,
): Promise<CallRefusal | undefined> {
  return checkEnv(fn, env) ?? (await checkInput(fn, input, checks));
}

/** The required-env half of checkCallable (the bridge takes a rate unit between the two halves). */
export function checkEnv(fn: ActiveFunction, env: Readonly<Record<string, string>>): CallRefusal | undefined {
  const missing = fn.definition.requiredEnv.filter((variable) => env[variable] === undefined);
  if (missing.length === 0) return undefined;
  return {
    error_type: BRIDGE_ERROR_TYPES.missingEnv,
    error: `missing required environment variables: ${missing.join(', ')} (send them in the X-MCPWorks-Env header)`,
    missing,
  };
}

/** The input check of a call (tool mode and every bridge call): undefined when it may run. */
export async function checkInput(fn: ActiveFunction, input: unknown, checks: SchemaChecks): Promise<CallRefusal | undefined> {
  if (!fn.definition.inputSchema) return undefined;
  // A large bridge call's input (RawJson) goes to the schema worker as bytes, never parsed here.
  const verdict = await checks.schemas.check(fn.definition.inputSchema, input, checks.accountId, 'the input', fn.functionId);
  return refusal(
    verdict,
    `input does not match the input_schema of ${fn.service}.${fn.name}`,
    `the input_schema check of ${fn.service}.${fn.name} was stopped`,
  );
}

/** output_schema is checked here, in the schema workers, rather than on the sandbox's answer path. */
export async function checkOutput(fn: ActiveFunction, result: RunResult, checks: SchemaChecks): Promise<RunResult> {
  if (!result.ok || !fn.definition.outputSchema) return result;
  let verdict: SchemaVerdict;
  try {
    // A large result (RawJson) goes to the schema worker as bytes, never parsed here.
    verdict = await checks.schemas.check(fn.definition.outputSchema, result.result, checks.accountId, 'the result', fn.functionId);
  } catch (error) {
    // The code ran: a check that could not finish withholds the result (fails closed) but never
    // keeps the call from being recorded and counted.
    const why = error instanceof DomainError ? error.message : 'the check could not be completed';
    return {
      ok: false,
      error: `the output_schema check was stopped: ${why}`,
      error_type: SCHEMA_LIMIT_ERROR,
      stderr: result.stderr,
      stdout: result.stdout,
    };
  }
  const refused = refusal(verdict, 'the result does not match output_schema', 'the output_schema check was stopped');
  return refused ? { ok: false, ...refused, stderr: result.stderr, stdout: result.stdout } : result;
}

/** The sandbox run of one function's active version: its code, its declared env only, the caller's limits. */
export function functionRequest(
  fn: ActiveFunction,
  input: unknown,
  run: {
    code: string;
    nodeModulesDir: string | undefined;
    limits: SandboxLimits;
    env: Readonly<Record<string, string>>;
    namespace: NamespaceSnapshot;
    accountId: string;
    /** An agent's run: what answers its `mcpworks.state` requests (state only; no function calls). */
    bridge?: SandboxBridge;
  },
): SandboxRequest {
  return {
    ...(run.bridge ? { bridge: run.bridge } : {}),
    ...(run.nodeModulesDir ? { nodeModulesDir: run.nodeModulesDir } : {}),
    code: run.code,
    language: fn.definition.language,
    input,
    env: declaredEnv(fn, run.env),
    limits: run.limits,
    ...(fn.definition.language === 'python' ? { warm: warmFor(run.namespace, run.accountId) } : {}),
  };
}

/**
 * A schema check that failed: `SchemaError` when the value does not match, `SchemaLimitError` when
 * the check was stopped (too deep, too big, too slow, too much memory, checkers busy): fail closed.
 */
function refusal(verdict: SchemaVerdict, mismatch: string, stopped: string): CallRefusal | undefined {
  if (verdict.ok) return undefined;
  if ('problems' in verdict) return { error_type: SANDBOX_ERROR_TYPES.schema, error: `${mismatch}: ${verdict.problems.join('; ')}` };
  return { error_type: SCHEMA_LIMIT_ERROR, error: `${stopped}: ${verdict.stopped}` };
}
