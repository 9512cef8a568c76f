/**
 * How a run's history bounds what it keeps of long texts (an execute's code, a run's result): pure,
 * so that a scan worker can make a large answer's recorded result where it renders the answer.
 */

/** Characters of an execute's code kept in its history; longer code is cut with a marker. */
export const MAX_RECORDED_CODE = 64 * 1024;

/** Characters of a run's (redacted) result kept in its history; a longer one is cut with a marker. */
export const MAX_RECORDED_RESULT = 64 * 1024;

/**
 * At most `max` characters of `text` (not splitting a surrogate pair), then a marker naming what was
 * cut. `length`: the length of the whole text when `text` is only its first max characters or more.
 */
function bounded(text: string, max: number, what: string, length = text.length): string {
  if (length <= max) return text;
  let end = max;
  if (/[\uD800-\uDBFF]/.test(text[end - 1]!)) end--;
  return `${text.slice(0, end)}\n[… ${what} cut at ${max} characters of ${length}]`;
}

/** The code as history keeps it: at most MAX_RECORDED_CODE characters, then a marker. */
export function recordedCode(code: string): string {
  return bounded(code, MAX_RECORDED_CODE, 'code');
}

/** A result's JSON text as history keeps it: at most MAX_RECORDED_RESULT characters, then a marker. */
export function recordedResult(json: string): string {
  return bounded(json, MAX_RECORDED_RESULT, 'result');
}

/**
 * recordedResult of `texts` joined by newlines, joining only the part history keeps: a large
 * answer's texts are megabytes, of which 64 KB are kept.
 */
export function recordedTexts(texts: readonly string[]): string {
  const length = texts.reduce((sum, text) => sum + text.length, Math.max(0, texts.length - 1));
  if (length <= MAX_RECORDED_RESULT) return texts.join('\n');
  let head = '';
  for (const [index, text] of texts.entries()) {
    if (head.length >= MAX_RECORDED_RESULT) break;
    head += (index > 0 ? '\n' : '') + text.slice(0, MAX_RECORDED_RESULT - head.length);
  }
  return bounded(head, MAX_RECORDED_RESULT, 'result', length);
}
