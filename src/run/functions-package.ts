/**
 * Writes the `functions` package code mode imports: a Python package and a Node package generated
 * from a snapshot of the namespace's active versions. Static loader code plus JSON data and the
 * functions' own source files: names, descriptions and schemas are data, never spliced into code.
 * A package is content-addressed by what it contains, built once and reused by every run.
 */
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  copyFileSync,
  existsSync,
  linkSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  unlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import path from 'node:path';
import { transform } from 'esbuild';
import { ambiguousIdentifiers, catalogEntries, renderCatalogDoc, type CatalogEntry } from '../core/functions-catalog.js';
import type { ActiveFunction } from '../store/catalog-store.js';
import { defaultHostPaths, packageRoot } from '../sandbox/host.js';
import { madeByDeadProcess, ownerTag } from '../sandbox/owner-tag.js';

/** Where a package is mounted inside the sandbox. */
export const PACKAGE_MOUNT = '/opt/mcpworks';
export const PYTHON_LIBRARY = `${PACKAGE_MOUNT}/python`;
export const NODE_LIBRARY = `${PACKAGE_MOUNT}/node/node_modules`;

// Bump when the layout or the loaders change, so old cached packages are not reused.
const GENERATOR_VERSION = 8;
const COMPLETE = '.complete';
const IDENTIFIER = /^[a-z][a-z0-9_]*$/;

export interface PackageEntry extends CatalogEntry {
  /** Code file under _code/ for functions that run inside the caller's sandbox. */
  file?: string;
  display: string;
  module: string;
}

export interface FunctionsPackage {
  key: string;
  dir: string;
  /** TypeScript functions whose source did not transpile: calling them fails with this message. */
  transpileErrors: Map<string, string>;
}

export function functionKey(service: string, name: string): string {
  return `${service}.${name}`;
}

/** Loads a function's code (only when a package is written). */
export type CodeLoader = (fn: ActiveFunction) => Promise<string>;

/** What a package key is made of: a namespace's active functions without their code. */
export type PackageIdentity = Pick<ActiveFunction, 'service' | 'name' | 'version' | 'definitionHash' | 'description'>;

/** Packages remembered in memory (their transpile errors); older ones are looked up again on disk. */
const KNOWN_PACKAGES = 1000;

export function packageKey(namespace: string, functions: readonly PackageIdentity[]): string {
  const content = functions.map((f) => [f.service, f.name, f.version, f.definitionHash, f.description]);
  return createHash('sha256')
    .update(JSON.stringify([GENERATOR_VERSION, namespace, content]))
    .digest('hex')
    .slice(0, 40);
}

function runtimeFile(...parts: string[]): string {
  return path.join(packageRoot(), 'src', 'run', 'runtime', ...parts);
}

/** The Python loader compiled by the sandbox's interpreter: its bytecode and its name under __pycache__. */
interface CompiledLoader {
  source: string;
  pyc: Buffer;
  name: string;
}

export class FunctionsPackageBuilder {
  private readonly building = new Map<string, Promise<FunctionsPackage>>();
  private readonly transpileErrors = new Map<string, Map<string, string>>();
  private compiledLoader: Promise<CompiledLoader | undefined> | undefined;

  /**
   * Code files, content-addressed per namespace and hard-linked into every package that has them:
   * a catalog change writes only the code that changed (and the catalog), not the whole namespace
   * again. Keyed by namespace too, so a file's link count tells a tenant nothing about other tenants.
   */
  private readonly codeStore: string;

  /** `python`: the interpreter the sandbox runs (the loader's bytecode is its). */
  constructor(
    private readonly cacheRoot: string,
    private readonly python = defaultHostPaths().python,
  ) {
    this.codeStore = path.join(cacheRoot, 'package-code');
  }

  /**
   * The static Python loader compiled once per process by the sandbox's interpreter: compiling it
   * cost each execute ~3 ms of CPU (the sandbox cannot write __pycache__). A hash-checked .pyc, so
   * Python reads it only while it matches the __init__.py beside it. Undefined if the interpreter
   * cannot compile it: the sandbox then compiles the source as before.
   */
  private loader(): Promise<CompiledLoader | undefined> {
    this.compiledLoader ??= (async () => {
      const source = readFileSync(runtimeFile('python', 'functions', '__init__.py'), 'utf8');
      mkdirSync(this.codeStore, { recursive: true, mode: 0o755 });
      const output = path.join(this.codeStore, `loader-${randomBytes(4).toString('hex')}.tmp`);
      try {
        const name = await new Promise<string>((resolve, reject) =>
          execFile(
            this.python,
            [
              '-I',
              '-S',
              '-c',
              COMPILE_LOADER,
              runtimeFile('python', 'functions', '__init__.py'),
              output,
              `${PYTHON_LIBRARY}/functions/__init__.py`,
            ],
            { timeout: 30_000 },
            (error, stdout) => (error ? reject(error) : resolve(stdout.trim())),
          ),
        );
        if (!/^__init__\.[a-z0-9_.-]+\.pyc$/.test(name)) return undefined;
        return { source, pyc: readFileSync(output), name };
      } catch {
        return undefined;
      } finally {
        rmSync(output, { force: true });
      }
    })();
    return this.compiledLoader;
  }

  /** Links the stored file `key` at `target`, producing and storing it first when it is not there. */
  private async placeCode(target: string, key: string, produce: () => Promise<string | Buffer>): Promise<void> {
    const stored = path.join(this.codeStore, key);
    let content: string | Buffer | undefined;
    // A collector may remove an unlinked stored file between our check and our link: then again.
    for (let attempt = 0; attempt < 3; attempt++) {
      if (!existsSync(stored)) {
        content ??= await produce();
        mkdirSync(this.codeStore, { recursive: true, mode: 0o755 });
        const temporary = `${stored}.${randomBytes(4).toString('hex')}.tmp`;
        writeFileSync(temporary, content, { mode: 0o644 });
        renameSync(temporary, stored);
      }
      try {
        // A link made before a collector removed the stored name (then ENOENT from utimes) stands.
        if (!existsSync(target)) linkSync(stored, target);
        const now = new Date();
        utimesSync(stored, now, now);
        return;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      }
    }
    writeFileSync(target, content ?? (await produce()));
  }

  /** The namespace's package; `code` loads a function's code when the package must be written. */
  async build(namespace: string, functions: readonly ActiveFunction[], code: CodeLoader): Promise<FunctionsPackage> {
    const key = packageKey(namespace, functions);
    const dir = path.join(this.cacheRoot, 'packages', key);
    const known = this.transpileErrors.get(key);
    if (known && markUsed(dir)) return { key, dir, transpileErrors: known };
    let pending = this.building.get(key);
    if (!pending) {
      pending = this.write(key, dir, namespace, functions, code).finally(() => this.building.delete(key));
      this.building.set(key, pending);
    }
    return pending;
  }

  private async write(
    key: string,
    dir: string,
    namespace: string,
    functions: readonly ActiveFunction[],
    code: CodeLoader,
  ): Promise<FunctionsPackage> {
    const entries = catalogEntries(
      functions.map((f) => ({
        service: f.service,
        name: f.name,
        description: f.description,
        language: f.definition.language,
        version: f.version,
        inputSchema: f.definition.inputSchema,
        outputSchema: f.definition.outputSchema,
      })),
    );
    for (const entry of entries) {
      if (!IDENTIFIER.test(entry.identifier) || !IDENTIFIER.test(entry.serviceIdentifier))
        throw new Error(`unexpected identifier in ${entry.service}.${entry.name}`);
    }
    const ambiguous = [...ambiguousIdentifiers(entries)];
    const doc = { python: renderCatalogDoc(namespace, entries, 'python'), typescript: renderCatalogDoc(namespace, entries, 'typescript') };
    const transpileErrors = new Map<string, string>();

    const staging = path.join(this.cacheRoot, 'packages', `.staging-${ownerTag()}-${key}-${randomBytes(4).toString('hex')}`);
    const python = path.join(staging, 'python', 'functions');
    const node = path.join(staging, 'node', 'node_modules', 'functions');
    mkdirSync(path.join(python, '_code'), { recursive: true, mode: 0o755 });
    mkdirSync(path.join(node, '_code'), { recursive: true, mode: 0o755 });
    mkdirSync(path.join(node, 'services'), { recursive: true, mode: 0o755 });
    try {
      const pythonEntries: PackageEntry[] = [];
      const nodeEntries: PackageEntry[] = [];
      for (const [index, entry] of entries.entries()) {
        const fn = functions[index]!;
        const base = `${entry.serviceIdentifier}__${entry.identifier}`;
        const source = await code(fn);
        if (fn.definition.language === 'python') {
          await this.placeCode(path.join(python, '_code', `${base}.py`), storeKey(namespace, 'py', '', source), async () => source);
          pythonEntries.push({ ...entry, file: `${base}.py`, display: `${fn.service}/${fn.name}.py`, module: `functions.${base}` });
          nodeEntries.push({ ...entry, display: `${fn.service}/${fn.name}.py`, module: base });
        } else {
          const display = `${fn.service}/${fn.name}.ts`;
          pythonEntries.push({ ...entry, display, module: base });
          try {
            mkdirSync(path.join(node, '_code', base, 'node_modules'), { recursive: true, mode: 0o755 });
            // Transpiled once per source and display name (the inline source map carries it).
            await this.placeCode(path.join(node, '_code', base, 'index.cjs'), storeKey(namespace, 'cjs', display, source), async () => {
              const output = await transform(source, {
                loader: 'ts',
                format: 'cjs',
                target: 'node20',
                sourcemap: 'inline',
                sourcefile: display,
                logLevel: 'silent',
              });
              return output.code;
            });
            nodeEntries.push({ ...entry, file: `${base}/index.cjs`, display, module: base });
          } catch (error) {
            const first = (error as { errors?: Array<{ text: string; location?: { line: number } | null }> }).errors?.[0];
            transpileErrors.set(
              functionKey(fn.service, fn.name),
              first
                ? `${display}: ${first.text}${first.location ? ` (line ${first.location.line})` : ''}`
                : `${display} does not transpile`,
            );
            nodeEntries.push({ ...entry, display, module: base });
          }
        }
      }

      const loader = await this.loader();
      if (loader) {
        writeFileSync(path.join(python, '__init__.py'), loader.source, { mode: 0o644 });
        mkdirSync(path.join(python, '__pycache__'), { mode: 0o755 });
        await this.placeCode(
          path.join(python, '__pycache__', loader.name),
          storeKey(namespace, 'pyc', loader.name, loader.source),
          async () => loader.pyc,
        );
      } else {
        copyFileSync(runtimeFile('python', 'functions', '__init__.py'), path.join(python, '__init__.py'));
      }
      writeFileSync(path.join(python, '_catalog.json'), JSON.stringify({ namespace, doc, ambiguous, functions: pythonEntries }));

      copyFileSync(runtimeFile('node', 'index.cjs'), path.join(node, 'index.cjs'));
      writeFileSync(path.join(node, '_catalog.json'), JSON.stringify({ namespace, doc, ambiguous, functions: nodeEntries }));
      writeFileSync(
        path.join(node, 'package.json'),
        JSON.stringify({
          name: 'functions',
          private: true,
          exports: {
            '.': { import: './index.mjs', require: './index.cjs' },
            './*': { import: './services/*.mjs', require: './services/*.cjs' },
          },
        }),
      );
      // ES modules need their export names written out; identifiers were checked against IDENTIFIER above.
      const services = [...new Set(entries.map((e) => e.serviceIdentifier))];
      const topLevel = [...new Set(entries.map((e) => e.identifier).filter((id) => !ambiguous.includes(id) && !services.includes(id)))];
      // Through require, not `import … from './index.cjs'`: an ES import of CommonJS starts Node's
      // CommonJS export scanner (~3 ms of CPU per run); the export names are written out anyway.
      const esm = [
        "import { createRequire } from 'node:module';",
        "const functions = createRequire(import.meta.url)('./index.cjs');",
        'export default functions;',
        'export const __doc__ = functions.__doc__;',
        'export const FunctionError = functions.FunctionError;',
      ];
      for (const name of [...topLevel, ...services]) esm.push(`export const ${name} = functions.${name};`);
      writeFileSync(path.join(node, 'index.mjs'), `${esm.join('\n')}\n`);
      for (const service of services) {
        const members = entries.filter((e) => e.serviceIdentifier === service).map((e) => e.identifier);
        writeFileSync(path.join(node, 'services', `${service}.cjs`), `module.exports = require('../index.cjs').__services.${service};\n`);
        const lines = [
          "import { createRequire } from 'node:module';",
          "const functions = createRequire(import.meta.url)('../index.cjs');",
          `const service = functions.__services.${service};`,
          'export default service;',
        ];
        for (const member of members) lines.push(`export const ${member} = service.${member};`);
        writeFileSync(path.join(node, 'services', `${service}.mjs`), `${lines.join('\n')}\n`);
      }
      writeFileSync(path.join(staging, COMPLETE), new Date().toISOString());
      try {
        renameSync(staging, dir);
      } catch (error) {
        // The same package finished elsewhere first (another node or request): identical, keep it.
        if (!existsSync(path.join(dir, COMPLETE))) throw error;
        rmSync(staging, { recursive: true, force: true });
      }
    } catch (error) {
      rmSync(staging, { recursive: true, force: true });
      throw error;
    }
    markUsed(dir);
    this.transpileErrors.delete(key);
    this.transpileErrors.set(key, transpileErrors);
    if (this.transpileErrors.size > KNOWN_PACKAGES) this.transpileErrors.delete(this.transpileErrors.keys().next().value as string);
    return { key, dir, transpileErrors };
  }

  /**
   * Deletes packages that no namespace's current catalog uses (`referenced`: keys computed from the
   * database) and that no run has used for `graceMs` (a run marks its package used when it starts,
   * and lasts at most its timeout; the grace also outlasts an idle zygote holding the mount), plus
   * staging leftovers. The mark is the directory's mtime, so it works across nodes that share the
   * cache dir; a package is renamed away before it is removed, so two collectors never race on one.
   * Answers how many packages it removed.
   */
  collectGarbage(referenced: ReadonlySet<string>, graceMs: number, now = Date.now()): number {
    const root = path.join(this.cacheRoot, 'packages');
    let names: string[];
    try {
      names = readdirSync(root);
    } catch {
      return 0;
    }
    let removed = 0;
    for (const name of names) {
      const dir = path.join(root, name);
      const leftover = name.startsWith('.staging-') || name.startsWith('.trash-');
      if (!leftover && referenced.has(name)) continue;
      let mtime: number;
      try {
        mtime = statSync(dir).mtimeMs;
      } catch {
        continue;
      }
      // A staging dir of a process of this host that has ended (a crash) goes at once.
      if (now - mtime < graceMs && !(leftover && madeByDeadProcess(name))) continue;
      if (leftover) {
        rmSync(dir, { recursive: true, force: true });
        continue;
      }
      const trash = path.join(root, `.trash-${name}-${randomBytes(4).toString('hex')}`);
      try {
        renameSync(dir, trash);
      } catch {
        continue; // another collector took it
      }
      rmSync(trash, { recursive: true, force: true });
      this.transpileErrors.delete(name);
      removed++;
    }
    // Stored code no package links any more, unused for the grace. Links are found in the packages
    // themselves, not by the file's link count: other hard links to the same file (the sandbox's
    // mount mirrors) must not keep stored code forever.
    const linked = linkedInodes(root);
    let stored: string[] = [];
    try {
      stored = readdirSync(this.codeStore);
    } catch {
      // No code stored yet.
    }
    for (const name of stored) {
      const file = path.join(this.codeStore, name);
      try {
        const stat = statSync(file);
        if ((!linked.has(stat.ino) || name.endsWith('.tmp')) && now - stat.mtimeMs >= graceMs) unlinkSync(file);
      } catch {
        // Removed by another collector.
      }
    }
    return removed;
  }
}

/**
 * argv: the loader's source, where its .pyc goes, and its path in the sandbox (for tracebacks);
 * prints the name the sandbox's interpreter looks for under __pycache__.
 */
const COMPILE_LOADER = [
  'import importlib.util, os, py_compile, sys',
  'py_compile.compile(sys.argv[1], cfile=sys.argv[2], dfile=sys.argv[3], doraise=True, invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)',
  'print(os.path.basename(importlib.util.cache_from_source(sys.argv[3])))',
].join('\n');

function storeKey(namespace: string, kind: 'py' | 'cjs' | 'pyc', display: string, source: string): string {
  return `${createHash('sha256')
    .update(JSON.stringify([GENERATOR_VERSION, namespace, kind, display]))
    .update('\0')
    .update(source)
    .digest('hex')}.${kind}`;
}

/** The inodes of every file under `root` (packages, staging ones included); a vanishing entry is skipped. */
function linkedInodes(root: string): Set<number> {
  const inodes = new Set<number>();
  const walk = (dir: string) => {
    let entries;
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch {
      return; // removed meanwhile
    }
    for (const entry of entries) {
      const entryPath = path.join(dir, entry.name);
      if (entry.isDirectory()) walk(entryPath);
      else if (entry.isFile()) {
        try {
          inodes.add(statSync(entryPath).ino);
        } catch {
          // removed meanwhile
        }
      }
    }
  };
  walk(root);
  return inodes;
}

/** Marks a complete package as used now (its mtime); false when it is not (or no longer) there. */
function markUsed(dir: string): boolean {
  if (!existsSync(path.join(dir, COMPLETE))) return false;
  try {
    const now = new Date();
    utimesSync(dir, now, now);
    return true;
  } catch {
    return false;
  }
}
