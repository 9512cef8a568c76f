/**
 * A TypeScript execute that imports a name the `functions` package does not export fails while
 * Node links the module, before any of our code runs: the host adds the available names and the
 * nearest ones to that error (Python's package raises its own FunctionNotFoundError).
 */
import { toIdentifier } from '../core/names.js';
import { suggestion } from '../core/suggest.js';
import type { ActiveFunction } from '../store/catalog-store.js';
import type { RunResult } from './run-result.js';
import { BRIDGE_ERROR_TYPES } from '../core/sandbox.js';
import { looksLikeNetworkFailure, NETWORK_OFF_CAUSE } from '../core/network-needs.js';

const MISSING_EXPORT = /The requested module '(functions(?:\/([a-z][a-z0-9_]*))?)' does not provide an export named '([^']+)'/;

export function explainMissingImport(result: RunResult, functions: readonly ActiveFunction[]): RunResult {
  if (result.ok) return result;
  const match = MISSING_EXPORT.exec(result.error) ?? MISSING_EXPORT.exec(result.stderr);
  if (!match) return result;
  const [, module, service, name] = match as unknown as [string, string, string | undefined, string];
  const names = service
    ? functions.filter((fn) => toIdentifier(fn.service) === service).map((fn) => toIdentifier(fn.name))
    : [...new Set([...functions.map((fn) => toIdentifier(fn.service)), ...functions.map((fn) => toIdentifier(fn.name))])];
  const hint = suggestion(name, names, `in '${module}'`);
  return {
    ...result,
    error_type: BRIDGE_ERROR_TYPES.functionNotFound,
    error: `'${module}' has no function or service '${name}'.${hint.text} Print functions.__doc__ (import functions from "functions") to see them with their signatures.`,
  };
}

/**
 * A run that failed reaching another host while the sandbox network is off: the error says so,
 * and how to turn it on, instead of looking like broken DNS.
 */
export function explainNetworkOff(result: RunResult, sandboxNetwork: boolean): RunResult {
  if (result.ok || sandboxNetwork) return result;
  if (!looksLikeNetworkFailure(result.error) && !looksLikeNetworkFailure(result.stderr)) return result;
  return { ...result, error: `${result.error}\n${NETWORK_OFF_CAUSE}` };
}
