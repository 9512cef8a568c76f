/**
 * What a namespace's Python runs ask of a warm fork-server (SandboxRequest.warm): the namespace as
 * the group (zygotes are never shared between namespaces) and the import names of the allow-listed
 * packages its Python functions declare, computed once per snapshot; and the account that owns it,
 * whose fair share of the zygote slots it counts against.
 */
import { findPythonPackage } from '../core/python-packages.js';
import type { NamespaceSnapshot } from './run-service.js';

const cache = new WeakMap<NamespaceSnapshot, { group: string; imports: readonly string[] }>();

export function warmFor(snapshot: NamespaceSnapshot, owner: string): { group: string; imports: readonly string[]; owner: string } {
  let warm = cache.get(snapshot);
  if (!warm) {
    const imports = new Set<string>();
    for (const fn of snapshot.functions) {
      if (fn.definition.language !== 'python') continue;
      for (const requirement of fn.definition.requirements) {
        const pkg = findPythonPackage(requirement);
        if (pkg?.available) imports.add(pkg.importName);
      }
    }
    warm = { group: snapshot.namespaceId, imports: [...imports].sort() };
    cache.set(snapshot, warm);
  }
  return { ...warm, owner };
}
