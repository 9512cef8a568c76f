/**
 * Deepest nesting of arrays and objects in one message from a sandbox (answer or bridge call).
 * Python's encoder stops near 1,000 levels anyway; Node's does not, and a deeper value would
 * overflow the recursion of whatever handles it next on the server (serialisers, the MCP layer).
 */
export const MAX_MESSAGE_DEPTH = 1000;

/** True when `text` (JSON) nests arrays and objects deeper than `max`: one pass, strings skipped. */
export function nestedDeeperThan(text: string, max: number): boolean {
  let depth = 0;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code === 0x22) {
      // Skip the string: to the next quote that no backslash escapes.
      for (i++; i < text.length; i++) {
        const inner = text.charCodeAt(i);
        if (inner === 0x5c) i++;
        else if (inner === 0x22) break;
      }
    } else if (code === 0x5b || code === 0x7b) {
      if (++depth > max) return true;
    } else if (code === 0x5d || code === 0x7d) {
      depth--;
    }
  }
  return false;
}
