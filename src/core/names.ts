import { invalid } from './errors.js';

/** Namespace names, exactly as the guide: lowercase alphanumeric and hyphens, 1–63, alphanumeric at both ends. */
export const NAMESPACE_PATTERN = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/**
 * Service and function names become Python/TypeScript identifiers (`-` → `_`) and MCP tool names
 * (`{service}__{function}` ≤ 64 chars), so they start with a letter, use no double underscore,
 * and stay ≤ 31 characters each.
 */
export const ENTITY_NAME_PATTERN = /^[a-z](?:[a-z0-9]|[-_](?=[a-z0-9])){0,30}$/;
export const ENTITY_NAME_MAX = 31;

// Words that cannot be Python or JavaScript identifiers once `-` becomes `_`.
const RESERVED_IDENTIFIERS = new Set([
  'false', 'none', 'true', 'and', 'as', 'assert', 'async', 'await', 'break', 'class', 'continue', 'def', 'del',
  'elif', 'else', 'except', 'finally', 'for', 'from', 'global', 'if', 'import', 'in', 'is', 'lambda', 'nonlocal',
  'not', 'or', 'pass', 'raise', 'return', 'try', 'while', 'with', 'yield', 'case', 'catch', 'const', 'debugger',
  'default', 'delete', 'do', 'enum', 'export', 'extends', 'function', 'instanceof', 'let', 'new', 'null', 'super',
  'switch', 'this', 'throw', 'typeof', 'var', 'void', 'implements', 'interface', 'package', 'private', 'protected',
  'public', 'static',
  // Object.prototype members and JavaScript specials: as package keys they would shadow built-ins.
  'constructor', 'prototype', 'eval', 'arguments',
]);

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
