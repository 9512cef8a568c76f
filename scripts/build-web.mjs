#!/usr/bin/env node
// Builds the web dashboard (src/web) into dist/web: one bundled, minified script and one stylesheet
// under content-hashed names in assets/, and index.html naming them. esbuild bundles Preact in; the
// page loads nothing from another origin and runs no inline script (see src/api/dashboard.ts's CSP).
// Usage: node scripts/build-web.mjs [--out DIR]   (default dist/web)
import { build } from 'esbuild';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const outFlag = process.argv.indexOf('--out');
const outDir = outFlag >= 0 ? path.resolve(process.argv[outFlag + 1]) : path.join(repo, 'dist', 'web');

rmSync(outDir, { recursive: true, force: true });
mkdirSync(path.join(outDir, 'assets'), { recursive: true });
const result = await build({
  entryPoints: { app: path.join(repo, 'src/web/main.tsx'), style: path.join(repo, 'src/web/style.css') },
  outdir: path.join(outDir, 'assets'),
  entryNames: '[name]-[hash]',
  bundle: true,
  minify: true,
  format: 'esm',
  target: ['chrome110', 'firefox110', 'safari16'],
  jsx: 'automatic',
  jsxImportSource: 'preact',
  tsconfig: path.join(repo, 'src/web/tsconfig.json'),
  metafile: true,
  logLevel: 'warning',
});
const outputs = Object.keys(result.metafile.outputs).map((file) => path.basename(file));
const script = outputs.find((name) => name.startsWith('app-') && name.endsWith('.js'));
const style = outputs.find((name) => name.startsWith('style-') && name.endsWith('.css'));
if (!script || !style) throw new Error(`build-web: unexpected outputs ${outputs.join(', ')}`);
writeFileSync(
  path.join(outDir, 'index.html'),
  `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>MCPWorks</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/assets/${style}">
<script type="module" src="/assets/${script}"></script>
</head>
<body>
<div id="app"></div>
<noscript>The MCPWorks dashboard needs JavaScript. The HTTP API works without it: see the README.</noscript>
</body>
</html>
`,
);
