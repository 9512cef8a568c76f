// The README's dependency rules (Architecture), checked on the import graph of src: a wrong arrow,
// a reach past the sandbox's public surface, a process.env read below the composition root or a
// sandbox module that probes the host when imported fails here. Source reading (and importing the
// sandbox's modules); no server, no database.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { createRequire, syncBuiltinESMExports } from 'node:module';
import { pathToFileURL } from 'node:url';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

/** This file's directory: src/, or the suite's compiled copy of it beside src/ (scripts/build-tests.mjs). */
const HERE = dirname(fileURLToPath(import.meta.url));
/** The sources read: src/ in either case. */
const SRC = join(HERE, '..', 'src');

/** What each folder may import of ours (besides itself). `app`, the composition root, may import everything. */
const MAY_IMPORT: Record<string, readonly string[]> = {
  core: [],
  store: ['core'],
  services: ['core', 'store'],
  sandbox: ['core'],
  run: ['core', 'store', 'services', 'sandbox'],
  // agents never reach the sandbox: every run they start goes through run's invoke.
  agents: ['core', 'store', 'services', 'run'],
  api: ['core', 'store', 'services', 'run', 'agents', 'sandbox'],
  cli: ['core', 'store', 'services', 'sandbox', 'app'],
  app: ['core', 'store', 'services', 'run', 'agents', 'sandbox', 'api'],
  // The dashboard is bundled for the browser: it reaches the server over HTTP only, and shares the
  // answers' types (core/dashboard-types.ts, type-only imports: see the test below).
  web: ['core'],
};

/** Node modules that do I/O: core (domain rules) imports none of them. */
const IO_MODULES =
  /^(node:)?(fs|fs\/promises|child_process|net|http|https|http2|dgram|dns|dns\/promises|os|tls|cluster|worker_threads|readline)$/;

/** The only files that read the server's environment: the composition root's config, and the command line. */
const READS_ENV = (file: string) => file === 'app/config.ts' || file.startsWith('cli/');

/**
 * Arrows that break the rules today, each with its reason (`*`: any file of that folder). They are
 * listed so that no new one can join them unnoticed; an entry no arrow matches fails too, so the
 * list only shrinks.
 */
const KNOWN_EXCEPTIONS: Record<string, string> = {
  'services/catalog.ts -> run/schema-guard.ts': "the catalog compiles schemas in the run layer's worker pool (a type only)",
  'services/catalog.ts -> run/syntax-check.ts': 'the catalog refuses code that does not parse; the check runs interpreters',
  'services/housekeeping.ts -> run/functions-package.ts': "housekeeping removes the run layer's unused packages",
  'services/housekeeping.ts -> run/typescript-dependencies.ts': 'housekeeping removes unused npm installs',
  'services/housekeeping.ts -> sandbox/index.ts': 'dependencyKey names npm installs',
  'services/* -> sandbox/host.ts': 'packageRoot (where the worker programs are), a platform helper that lives in sandbox',
  'run/* -> sandbox/host.ts': 'packageRoot (where the worker programs are), a platform helper that lives in sandbox',
  'run/functions-package.ts -> sandbox/owner-tag.ts': 'owner tags of staging dirs, a platform helper that lives in sandbox',
  'run/syntax-check.ts -> sandbox/transpile.ts': "TypeScript is checked with the sandbox's own transpiler",
  'sandbox/bubblewrap.ts -> run/scan-pool.ts': "large answer lines are decoded in the run layer's worker threads",
  'sandbox/wire/channel.ts -> run/scan-pool.ts': "large answer lines are decoded in the run layer's worker threads",
};

interface Arrow {
  from: string;
  to: string;
}

/** Server modules: not tests, test support, or the programs in runtime/ that run on their own (in the sandbox or as workers). */
function sourceFiles(dir = SRC): string[] {
  const files: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) {
      if (!['runtime', 'native', 'test-support'].includes(entry.name)) files.push(...sourceFiles(path));
    } else if (/\.(ts|mjs|cjs)$/.test(entry.name) && !entry.name.endsWith('.test.ts') && path !== join(SRC, 'architecture.test.ts')) {
      files.push(path);
    }
  }
  return files;
}

const layerOf = (file: string) => (file.includes('/') ? file.slice(0, file.indexOf('/')) : '');

/** The KNOWN_EXCEPTIONS entry that lets `from -> to` through, if any. */
function exceptionFor(from: string, to: string): string | undefined {
  return [`${from} -> ${to}`, `${layerOf(from)}/* -> ${to}`].find((name) => name in KNOWN_EXCEPTIONS);
}

/**
 * Every import of every module (type-only ones too: an arrow in the design is one whether or not it
 * survives compilation), and the modules that read process.env. Static imports are read from the
 * source (they open a line); esbuild, which parses it, adds the dynamic ones and finds process.env
 * in code, not in strings or comments.
 */
async function readGraph(): Promise<{ arrows: Arrow[]; builtins: Arrow[]; envReaders: string[] }> {
  const files = sourceFiles();
  const arrows: Arrow[] = [];
  const builtins: Arrow[] = [];
  const add = (importer: string, specifier: string) => {
    const from = relative(SRC, importer).split(sep).join('/');
    if (specifier.startsWith('.')) {
      const to = relative(SRC, resolve(dirname(importer), specifier))
        .split(sep)
        .join('/')
        .replace(/\.js$/, '.ts');
      arrows.push({ from, to });
    } else {
      builtins.push({ from, to: specifier });
    }
  };
  for (const file of files) {
    const text = readFileSync(file, 'utf8');
    for (const match of text.matchAll(/^(?:import|export)\b[^;'"]*?\bfrom\s*['"]([^'"]+)['"]|^import\s*['"]([^'"]+)['"]/gm))
      add(file, match[1] ?? match[2]!);
  }
  const result = await esbuild.build({
    entryPoints: files,
    bundle: true,
    write: false,
    metafile: true,
    format: 'esm',
    platform: 'node',
    outbase: SRC,
    outdir: join(SRC, '.architecture-out'),
    logLevel: 'silent',
    define: { 'process.env': '__READS_PROCESS_ENV__' },
    plugins: [
      {
        name: 'record-imports',
        setup(build) {
          build.onResolve({ filter: /.*/ }, (args) => {
            if (args.kind === 'entry-point') return undefined;
            if (args.kind === 'dynamic-import' || args.kind === 'require-call') add(args.importer, args.path);
            return { path: args.path, external: true };
          });
        },
      },
    ],
  });
  const envReaders: string[] = [];
  for (const output of result.outputFiles) {
    if (!output.text.includes('__READS_PROCESS_ENV__')) continue;
    const entry = result.metafile.outputs[relative(process.cwd(), output.path)]?.entryPoint;
    envReaders.push(entry ? relative(SRC, resolve(process.cwd(), entry)).split(sep).join('/') : output.path);
  }
  return { arrows, builtins, envReaders };
}

const graph = readGraph();

test('each folder imports only the folders the README allows (core nothing, store core, services core and store, ...)', async () => {
  const { arrows } = await graph;
  const wrong: string[] = [];
  const used = new Set<string>();
  for (const { from, to } of arrows) {
    const [source, target] = [layerOf(from), layerOf(to)];
    if (source === target || !(source in MAY_IMPORT)) continue;
    const exception = exceptionFor(from, to);
    if (exception) {
      used.add(exception);
      continue;
    }
    if (!(target in MAY_IMPORT) || !MAY_IMPORT[source]!.includes(target)) wrong.push(`${from} -> ${to}`);
  }
  assert.deepEqual(wrong, [], "imports against the README's dependency rules (Architecture)");
  assert.deepEqual(
    Object.keys(KNOWN_EXCEPTIONS).filter((name) => !used.has(name)),
    [],
    'listed exceptions that no longer exist: remove them from KNOWN_EXCEPTIONS',
  );
});

test('the dashboard (src/web) imports of core only the JSON types it shares with the server, as types', async () => {
  const { arrows } = await graph;
  const reached = arrows.filter(({ from, to }) => layerOf(from) === 'web' && layerOf(to) === 'core');
  assert.deepEqual(
    reached.filter(({ to }) => to !== 'core/dashboard-types.ts').map(({ from, to }) => `${from} -> ${to}`),
    [],
    'web reaches the server over HTTP; only core/dashboard-types.ts is shared',
  );
  for (const { from } of reached) {
    const text = readFileSync(join(SRC, from), 'utf8');
    assert.doesNotMatch(text, /^(?:import|export)\s+(?!type\b)[^;]*from\s*['"][./]*core\//m, `${from} imports core as types only`);
  }
});

test('outside the sandbox, only its public surface (sandbox/index.ts) is imported; the composition root may wire its parts', async () => {
  const { arrows } = await graph;
  const deep = arrows
    .filter(({ from, to }) => layerOf(to) === 'sandbox' && to !== 'sandbox/index.ts' && !['sandbox', 'app'].includes(layerOf(from)))
    .filter(({ from, to }) => !exceptionFor(from, to))
    .map(({ from, to }) => `${from} -> ${to}`);
  assert.deepEqual(deep, []);
});

/**
 * Code that starts runs (the MCP run endpoint, agents' triggers) goes through run's invoke, or
 * admit + runAdmitted: it never meters, records or starts a sandbox by itself.
 */
const STARTS_RUNS = (file: string) => file === 'api/run-endpoint.ts' || file.startsWith('agents/');
const RUN_INTERNALS = (file: string) =>
  file === 'store/metering-store.ts' || file === 'store/executions-store.ts' || layerOf(file) === 'sandbox';

test('code that starts runs does it through src/run alone: no metering store, executions store or sandbox module', async () => {
  const { arrows } = await graph;
  const around = arrows.filter(({ from, to }) => STARTS_RUNS(from) && RUN_INTERNALS(to)).map(({ from, to }) => `${from} -> ${to}`);
  assert.ok(
    arrows.some(({ from }) => from === 'api/run-endpoint.ts'),
    'the check finds the run endpoint',
  );
  assert.deepEqual(around, []);
});

test('core does no I/O: it imports no file, process, network or OS module', async () => {
  const { builtins } = await graph;
  const io = builtins.filter(({ from, to }) => layerOf(from) === 'core' && IO_MODULES.test(to)).map(({ from, to }) => `${from} -> ${to}`);
  assert.deepEqual(io, []);
});

test("only the composition root's config (src/app/config.ts) and the command line read process.env", async () => {
  const { envReaders } = await graph;
  assert.ok(envReaders.includes('app/config.ts'), `the check finds no process.env at all: ${JSON.stringify(envReaders)}`);
  assert.deepEqual(envReaders.filter((file) => !READS_ENV(file)).sort(), []);
});

/** Node functions that read facts of the host: files, users, memory, CPUs, interfaces. */
const HOST_PROBES: Record<string, readonly string[]> = {
  'node:fs': ['existsSync', 'statSync', 'lstatSync', 'readFileSync', 'readdirSync', 'readlinkSync', 'realpathSync', 'accessSync'],
  'node:os': ['totalmem', 'freemem', 'cpus', 'availableParallelism', 'networkInterfaces', 'userInfo'],
};

test('no sandbox module probes the host when it is imported: host facts are detected once at start (sandbox/host/facts.ts) and passed down', async () => {
  const require = createRequire(import.meta.url);
  const probes = new Set<string>();
  const restore: Array<() => void> = [];
  /** Counts a call made from a sandbox module (a frame in src/sandbox, not a test). */
  // A frame names src/sandbox (from source, or from the compiled copy through its source map) or, without source maps, the copy itself.
  const sandboxDirs = [join(SRC, 'sandbox') + sep, join(HERE, 'sandbox') + sep];
  const watch = (target: Record<string, unknown>, name: string, label: string) => {
    const original = target[name] as (...args: unknown[]) => unknown;
    target[name] = function (this: unknown, ...args: unknown[]) {
      const frame = new Error().stack
        ?.split('\n')
        .slice(2)
        .find((line) => sandboxDirs.some((dir) => line.includes(dir)) && !/\.test\.[jt]s\b/.test(line));
      if (frame) probes.add(`${label}(${typeof args[0] === 'string' ? args[0] : ''}) ${frame.trim()}`);
      return original.apply(this, args);
    };
    restore.push(() => (target[name] = original));
  };
  for (const [module, names] of Object.entries(HOST_PROBES)) for (const name of names) watch(require(module), name, `${module}.${name}`);
  watch(process as unknown as Record<string, unknown>, 'getuid', 'process.getuid');
  syncBuiltinESMExports();
  try {
    const modules = sourceFiles(join(SRC, 'sandbox')).filter((file) => file.endsWith('.ts'));
    assert.ok(modules.length > 20, `found ${modules.length} sandbox modules`);
    // The compiled copies when this file is one (plain node cannot load .ts).
    const loaded = HERE === SRC ? modules : modules.map((file) => join(HERE, relative(SRC, file)).replace(/\.ts$/, '.js'));
    for (const file of loaded) await import(pathToFileURL(file).href);
  } finally {
    for (const undo of restore) undo();
    syncBuiltinESMExports();
  }
  assert.deepEqual([...probes], []);
});
