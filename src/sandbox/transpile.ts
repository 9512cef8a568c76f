/**
 * TypeScript → JavaScript for the in-sandbox Node runner, with an inline source map so stack traces
 * show the user's own lines: CommonJS for functions (main), an ES module for code-mode scripts
 * (top-level await). Results are cached by source text: the same version runs many times.
 */
import { createHash } from 'node:crypto';
import { transform } from 'esbuild';

export const USER_TS_FILE = '/function/main.ts';

export type TranspileResult = { ok: true; code: string } | { ok: false; message: string; detail: string };

const CACHE_LIMIT = 256;
const cache = new Map<string, TranspileResult>();

/**
 * Put before scripts (on their first line, so the source map's lines stay true): reads
 * `result`/`output` whether declared in the module or assigned as globals (typeof never throws on
 * an undeclared name; a declaration not yet reached does, hence the try). Being first, it exists
 * even when the code ends early with process.exit(0).
 */
const SCRIPT_CAPTURE =
  "globalThis.__mcpworksCapture = () => { const read = (f) => { try { return f(); } catch { return undefined; } }; return { result: read(() => typeof result === 'undefined' ? undefined : result), output: read(() => typeof output === 'undefined' ? undefined : output) }; };";

export async function transpileTypescript(source: string, entry: 'main' | 'script' = 'main'): Promise<TranspileResult> {
  const key = createHash('sha256').update(entry).update('\0').update(source).digest('hex');
  const cached = cache.get(key);
  if (cached) {
    // Refresh recency: Map iteration order is insertion order, so the oldest entry goes first.
    cache.delete(key);
    cache.set(key, cached);
    return cached;
  }
  let result: TranspileResult;
  try {
    const output = await transform(source, {
      loader: 'ts',
      format: entry === 'script' ? 'esm' : 'cjs',
      target: 'node20',
      sourcemap: 'inline',
      sourcefile: USER_TS_FILE,
      logLevel: 'silent',
    });
    let code = output.code;
    if (entry === 'script') {
      // After a hashbang line, which must stay first.
      const at = code.startsWith('#!') ? code.indexOf('\n') + 1 : 0;
      code = code.slice(0, at) + SCRIPT_CAPTURE + code.slice(at);
    }
    result = { ok: true, code };
  } catch (error) {
    const errors = (error as { errors?: Array<{ text: string; location?: { line: number; column: number; lineText: string } | null }> })
      .errors;
    if (!Array.isArray(errors) || errors.length === 0) throw error;
    const lines = errors.map((entry) =>
      entry.location ? `main.ts:${entry.location.line}:${entry.location.column + 1}: ${entry.text}` : `main.ts: ${entry.text}`,
    );
    const first = errors[0];
    const detail = errors
      .map((entry, index) =>
        entry.location ? `${lines[index]}\n    ${entry.location.lineText}\n    ${' '.repeat(entry.location.column)}^` : lines[index],
      )
      .join('\n');
    result = { ok: false, message: first.location ? `${first.text} (line ${first.location.line})` : first.text, detail };
  }
  if (cache.size >= CACHE_LIMIT) cache.delete(cache.keys().next().value as string);
  cache.set(key, result);
  return result;
}
