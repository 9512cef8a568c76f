import { invalid } from './errors.js';
import { MAX_ENV_DECLARATIONS } from './limits.js';

export const ENV_NAME_PATTERN = /^[A-Z][A-Z0-9_]{0,127}$/;

// Names that would change how the interpreter or the platform behaves inside the sandbox.
const RESERVED_PREFIXES = ['LD_', 'PYTHON', 'NODE_', 'SSL_', 'MCPWORKS_'];
const RESERVED_NAMES = new Set(['PATH', 'HOME', 'USER', 'SHELL', 'TMPDIR']);

export function reservedEnvReason(name: string): string | undefined {
  if (RESERVED_NAMES.has(name)) return `'${name}' is set by the sandbox`;
  const prefix = RESERVED_PREFIXES.find((p) => name.startsWith(p));
  return prefix ? `names starting with '${prefix}' would change the runtime` : undefined;
}

export function validateEnvName(name: unknown, field: string): string {
  if (typeof name !== 'string' || !ENV_NAME_PATTERN.test(name)) {
    throw invalid(`invalid environment variable name ${JSON.stringify(name)} in ${field}: use A-Z, 0-9 and '_', starting with a letter`, {
      field,
    });
  }
  const reason = reservedEnvReason(name);
  if (reason) throw invalid(`environment variable name '${name}' is not allowed in ${field}: ${reason}`, { field });
  return name;
}

/** Validates the two declaration lists together: valid names, no duplicates, no name in both. */
export function validateEnvDeclarations(
  required: readonly unknown[],
  optional: readonly unknown[],
): { required: string[]; optional: string[] } {
  if (required.length + optional.length > MAX_ENV_DECLARATIONS) {
    throw invalid(`a function may declare at most ${MAX_ENV_DECLARATIONS} environment variables`, { field: 'required_env' });
  }
  const requiredNames = [...new Set(required.map((n) => validateEnvName(n, 'required_env')))].sort();
  const optionalNames = [...new Set(optional.map((n) => validateEnvName(n, 'optional_env')))].sort();
  const both = requiredNames.filter((n) => optionalNames.includes(n));
  if (both.length > 0)
    throw invalid(`environment variables declared both required and optional: ${both.join(', ')}`, { field: 'optional_env' });
  return { required: requiredNames, optional: optionalNames };
}
