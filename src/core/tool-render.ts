/**
 * How a run's answer becomes an MCP tool result: the one rule, used by the main thread for small
 * answers and by the scan workers for large ones (which render the same text off the main thread).
 */
export interface ToolRenderInput {
  ok: boolean;
  result?: unknown;
  error?: string;
  error_type?: string;
  stdout: string;
  stderr: string;
  missing?: string[];
}

export interface ToolRender {
  isError: boolean;
  texts: string[];
  /** Present when the call sends structuredContent (the function has an object output_schema and the result is an object). */
  structured?: Record<string, unknown>;
}

/** The note beside an execute whose result is null. */
export const NULL_RESULT_HINT =
  'hint: the result is null because nothing was assigned to `result` (or it was set to None/null). To return a value, assign it: ' +
  'Python `result = hello(name="World")`, TypeScript `result = await hello({ name: "World" });` (printed output comes back as stdout, not as the result).';

/** `codeMode`: the answer of an execute (not of one function's tool), which gets the null-result hint. */
export function renderToolResult(result: ToolRenderInput, objectOutputSchema: boolean, codeMode = false): ToolRender {
  if (!result.ok) {
    const body: Record<string, unknown> = { error: result.error, error_type: result.error_type, stderr: result.stderr };
    if (result.missing) body.missing = result.missing;
    if (result.stdout) body.stdout = result.stdout;
    return { isError: true, texts: [JSON.stringify(body)] };
  }
  const texts = [JSON.stringify(result.result)];
  if (result.stdout) texts.push(`stdout:\n${result.stdout}`);
  // stderr is a log too (warnings, progress lines): returned beside stdout, not only kept in history.
  if (result.stderr) texts.push(`stderr:\n${result.stderr}`);
  // Code mode: a null result is most often a program that never assigned `result`.
  if (codeMode && (result.result ?? null) === null) texts.push(NULL_RESULT_HINT);
  const structured = objectOutputSchema && result.result !== null && typeof result.result === 'object' && !Array.isArray(result.result);
  return structured ? { isError: false, texts, structured: result.result as Record<string, unknown> } : { isError: false, texts };
}
