#!/usr/bin/env node
// Compiles src/**/*.ts (tests and test support too) once with esbuild into .build-tests/, beside
// src/ (so every path a module computes from its own location, ../../scripts or the package root,
// is the same as from src/ or dist/), with source maps: the suite (scripts/test-pool.mjs) runs the
// compiled test files and maps the locations in their output back to src/….ts lines with them.
// tsx's loader cost ~1.5 s of CPU per test file (every module resolved and loaded through its
// hooks, in the test runner's process and the file's); this build takes about a second in all.
// Files that are not TypeScript (runner.py, spawner.cjs, …) are copied, for modules that find them
// beside themselves. Each module is compiled on its own (no bundling): imports stay imports.
//   node scripts/build-tests.mjs [OUTDIR]
import { cpSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import * as esbuild from 'esbuild';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const outdir = path.resolve(root, process.argv[2] ?? '.build-tests');
const src = path.join(root, 'src');

const entryPoints = [];
const others = [];
for (const entry of readdirSync(src, { recursive: true, withFileTypes: true })) {
  if (!entry.isFile()) continue;
  const file = path.join(entry.parentPath ?? entry.path, entry.name);
  if (file.endsWith('.ts') && !file.endsWith('.d.ts')) {
    // A test that imports a module outside src (bench/lib's) is not compiled: that import would name
    // a .js file that does not exist, so the pool runs it through tsx (as it runs any uncompiled file).
    if (file.endsWith('.test.ts') && importsOutsideSrc(file)) continue;
    entryPoints.push(file);
  } else if (!entry.name.endsWith('.d.ts')) others.push(file);
}
function importsOutsideSrc(file) {
  for (const [, spec] of readFileSync(file, 'utf8').matchAll(/\bfrom\s+'(\.[^']*)'/g)) {
    if (path.relative(src, path.resolve(path.dirname(file), spec)).startsWith('..')) return true;
  }
  return false;
}
rmSync(outdir, { recursive: true, force: true });
await esbuild.build({
  entryPoints,
  outdir,
  outbase: src,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  sourcemap: 'linked',
  sourcesContent: false,
  logLevel: 'warning',
});
for (const file of others) cpSync(file, path.join(outdir, path.relative(src, file)));
