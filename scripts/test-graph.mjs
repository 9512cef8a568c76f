// The test files and the relative-import graph of the repository's sources, shared by
// scripts/test-databases.mjs and scripts/test-tiers.mjs.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** Every `*.test.ts` under src, sorted, as repository paths. */
export function testFiles() {
  return walk('src')
    .filter((f) => f.endsWith('.test.ts'))
    .sort();
}

export function read(file) {
  return readFileSync(path.join(repo, file), 'utf8');
}

const memo = new Map();
/** Every repository file `file` imports, directly or transitively (relative imports only). */
export function imports(file) {
  const known = memo.get(file);
  if (known) return known;
  const found = new Set();
  memo.set(file, found);
  for (const target of directImports(file)) {
    found.add(target);
    for (const next of imports(target)) found.add(next);
  }
  return found;
}

/** The repository files `file` imports itself (relative imports only). */
export function directImports(file) {
  const text = read(file);
  // Static imports and re-exports (not `import type`: erased), and dynamic import('…').
  const statics = [...text.matchAll(/\b(?:import|export)\s+(type\s+)?(?:[^'";]*?\bfrom\s*)?['"](\.{1,2}\/[^'"]+)['"]/g)]
    .filter((m) => !m[1])
    .map((m) => m[2]);
  const dynamics = [...text.matchAll(/\bimport\s*\(\s*['"](\.{1,2}\/[^'"]+)['"]\s*\)/g)].map((m) => m[1]);
  return [...statics, ...dynamics]
    .map((spec) => resolve(path.posix.join(path.posix.dirname(file), spec)))
    .filter((target) => target !== undefined);
}

/** A relative import as TypeScript resolves it here (`./x.js` names `./x.ts`). */
function resolve(spec) {
  const candidates = [spec, spec.replace(/\.js$/, '.ts'), spec.replace(/\.mjs$/, '.mts'), `${spec}.ts`, `${spec}/index.ts`];
  return candidates.find((c) => /\.[cm]?[jt]s$/.test(c) && existsSync(path.join(repo, c)));
}

export function walk(dir) {
  return readdirSync(path.join(repo, dir), { withFileTypes: true }).flatMap((entry) => {
    const child = path.posix.join(dir, entry.name);
    return entry.isDirectory() ? walk(child) : [child];
  });
}
