/**
 * Whole numbers in a run's answer must arrive exactly as the function wrote them. JSON.parse reads
 * every number as a 64-bit float, so an integer literal beyond ±(2^53 - 1) (a Python int such as
 * 2**63 + 1, or a large id) would silently change; such an answer is refused instead. Decided on
 * the text, where integers and floats still differ (1e+20 and 6.02e+23 are floats and pass).
 */

const LARGEST_EXACT = '9007199254740991';

/** The first integer literal (outside strings) of `json` beyond ±(2^53 - 1), or undefined. */
export function inexactIntegerIn(json: string): string | undefined {
  // Nearly every answer has no run of 16 digits at all: one regular-expression pass decides that.
  if (!/\d{16}/.test(json)) return undefined;
  for (let i = 0; i < json.length; i++) {
    const code = json.charCodeAt(i);
    if (code === 0x22) {
      for (i++; i < json.length; i++) {
        const inner = json.charCodeAt(i);
        if (inner === 0x5c) i++;
        else if (inner === 0x22) break;
      }
    } else if ((code >= 0x30 && code <= 0x39) || code === 0x2d) {
      const start = i;
      if (code === 0x2d) i++;
      const digitsFrom = i;
      while (i < json.length && json.charCodeAt(i) >= 0x30 && json.charCodeAt(i) <= 0x39) i++;
      const next = json.charCodeAt(i);
      const isFloat = next === 0x2e || next === 0x65 || next === 0x45;
      const digits = json.slice(digitsFrom, i);
      if (!isFloat && (digits.length > LARGEST_EXACT.length || (digits.length === LARGEST_EXACT.length && digits > LARGEST_EXACT)))
        return json.slice(start, i);
      // Skip the rest of a float (fraction and exponent hold no integer of their own).
      while (i < json.length && /[0-9.eE+-]/.test(json[i]!)) i++;
      i--;
    }
  }
  return undefined;
}

/** A successful answer holding such an integer becomes the run's SerializationError; others pass. */
export function refuseInexactResult(message: unknown, line: string): unknown {
  if (message === null || typeof message !== 'object' || (message as { ok?: unknown }).ok !== true) return message;
  const literal = inexactIntegerIn(line);
  if (literal === undefined) return message;
  return {
    ok: false,
    type: 'SerializationError',
    message: `the result holds the integer ${literal.length > 40 ? `${literal.slice(0, 40)}…` : literal}, beyond ±${LARGEST_EXACT} (2^53 - 1), which JSON numbers cannot carry exactly to every client; return it as a string`,
  };
}
