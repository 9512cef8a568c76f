import { createHash } from 'node:crypto';
import { invalid } from './errors.js';

/** Namespace names, exactly as the guide: lowercase alphanumeric and hyphens, 1–63, alphanumeric at both ends. */
export const NAMESPACE_PATTERN = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/**
 * Service and function names become Python/TypeScript identifiers (`-` → `_`) and MCP tool names
 * (`{service}__{function}`, see TOOL_NAME_BUDGET), so they start with a letter, use no double
 * underscore, and stay ≤ 31 characters each.
 */
export const ENTITY_NAME_PATTERN = /^[a-z](?:[a-z0-9]|[-_](?=[a-z0-9])){0,30}$/;
export const ENTITY_NAME_MAX = 31;

// Words that cannot be Python or JavaScript identifiers once `-` becomes `_`.
const RESERVED_IDENTIFIERS = new Set([
  'false',
  'none',
  'true',
  'and',
  'as',
  'assert',
  'async',
  'await',
  'break',
  'class',
  'continue',
  'def',
  'del',
  'elif',
  'else',
  'except',
  'finally',
  'for',
  'from',
  'global',
  'if',
  'import',
  'in',
  'is',
  'lambda',
  'nonlocal',
  'not',
  'or',
  'pass',
  'raise',
  'return',
  'try',
  'while',
  'with',
  'yield',
  'case',
  'catch',
  'const',
  'debugger',
  'default',
  'delete',
  'do',
  'enum',
  'export',
  'extends',
  'function',
  'instanceof',
  'let',
  'new',
  'null',
  'super',
  'switch',
  'this',
  'throw',
  'typeof',
  'var',
  'void',
  'implements',
  'interface',
  'package',
  'private',
  'protected',
  'public',
  'static',
  // Object.prototype members and JavaScript specials: as package keys they would shadow built-ins.
  'constructor',
  'prototype',
  'eval',
  'arguments',
]);

/**
 * The longest tool name tool mode lists. Clients put a prefix before it and the model API refuses
 * names over 64 characters: Claude Code's `mcp__{server}__` is the longest common one, so 40 leaves
 * 24 characters, a server name of up to 17 (`mcp__` + 17 + `__`).
 */
export const TOOL_NAME_BUDGET = 40;
export const MODEL_TOOL_NAME_MAX = 64;
/** The longest server name a client may give an endpoint so that every `mcp__{server}__{tool}` fits in 64. */
export const CLIENT_SERVER_NAME_MAX = MODEL_TOOL_NAME_MAX - TOOL_NAME_BUDGET - 'mcp____'.length;

/**
 * A function's tool-mode name. Functions made before the budget may exceed it: their names are
 * cut and end in `__` and a hash of the full name, so the name stays within the budget and stays
 * unique. Entity names hold no `__`, so a legal `{service}__{function}` has exactly one and can
 * never equal a cut name (which has two): a new function cannot take an old one's tool name.
 */
export function toolName(fn: { service: string; name: string }): string {
  const full = `${fn.service}__${fn.name}`;
  if (full.length <= TOOL_NAME_BUDGET) return full;
  const hash = createHash('sha256').update(full).digest('hex').slice(0, 8);
  // Both names stay readable: the service keeps at most 14 characters, the function the rest.
  return `${`${fn.service.slice(0, 14)}__${fn.name}`.slice(0, TOOL_NAME_BUDGET - hash.length - 2)}__${hash}`;
}

/** How long a function name may be in `service` for its tool name to stay within the budget. */
export function functionNameRoom(service: string): number {
  return Math.min(ENTITY_NAME_MAX, TOOL_NAME_BUDGET - service.length - 2);
}

/** Refuses a function name whose tool name (`{service}__{function}`) would exceed the budget, saying how much to cut. */
export function validateToolNameBudget(service: string, name: string, field = 'name'): void {
  const length = service.length + 2 + name.length;
  if (length <= TOOL_NAME_BUDGET) return;
  const room = functionNameRoom(service);
  throw invalid(
    `function name '${name}' is too long for service '${service}': its tool name '${service}__${name}' would be ${length} characters, ` +
      `and tool names are limited to ${TOOL_NAME_BUDGET} so that a client's prefix (Claude Code's mcp__{server}__) still fits the model's ${MODEL_TOOL_NAME_MAX}: ` +
      `use a function name of at most ${room} characters in this service, or a shorter service name`,
    { field, limit: TOOL_NAME_BUDGET, length, max_function_name: room },
  );
}

export function validateNamespaceName(name: unknown): string {
  if (typeof name !== 'string' || !NAMESPACE_PATTERN.test(name)) {
    throw invalid(
      `invalid namespace name ${JSON.stringify(name)}: use 1-63 lowercase letters, digits and hyphens, starting and ending with a letter or digit`,
      { field: 'name' },
    );
  }
  return name;
}

export function isValidNamespaceName(name: string): boolean {
  return NAMESPACE_PATTERN.test(name);
}

/** The identifier a service or function gets in the generated `functions` package. */
export function toIdentifier(name: string): string {
  return name.replace(/-/g, '_');
}

export function validateEntityName(kind: 'service' | 'function', name: unknown, field = 'name'): string {
  if (typeof name !== 'string' || !ENTITY_NAME_PATTERN.test(name)) {
    throw invalid(
      `invalid ${kind} name ${JSON.stringify(name)}: use 1-${ENTITY_NAME_MAX} lowercase letters, digits, '-' or '_', starting with a letter, ending with a letter or digit, with no '__'`,
      { field },
    );
  }
  if (RESERVED_IDENTIFIERS.has(toIdentifier(name))) {
    throw invalid(`invalid ${kind} name '${name}': it is a reserved word in Python or TypeScript`, { field });
  }
  return name;
}
