/**
 * A byte-level look at a JSON text's shape before it is parsed: how many values it holds and how
 * deep it nests, counted the way shapeExcess (json-schema.ts) counts a parsed value (the root, each
 * array element, each object property). Parsing 8 MB of `[0,0,...]` holds the main thread for
 * hundreds of milliseconds; this scan refuses such a text before any parse, in slices.
 */
import type { ShapeExcess } from './json-schema.js';

/**
 * Whether `text` holds more than `caps.maxValues` values or nests deeper than `caps.maxDepth`
 * levels; yields after about every `sliceChars` characters. Strings (keys and values) are skipped,
 * escapes included. Values = 1 + commas + non-empty containers, outside strings. The text is not
 * validated: malformed JSON is counted as written (the parse that follows refuses it).
 */
export function* textShapeExcessSlices(text: string, caps: { maxDepth: number; maxValues: number }, sliceChars: number): Generator<void, ShapeExcess | null, void> {
  let depth = 0;
  let values = 1;
  // Just after an opening bracket: a non-empty container adds one value more than its commas.
  let opened = false;
  let sliceEnd = sliceChars;
  const length = text.length;
  for (let i = 0; i < length; i++) {
    if (i >= sliceEnd) {
      sliceEnd = i + sliceChars;
      yield;
    }
    const code = text.charCodeAt(i);
    if (isSpace(code)) continue;
    if (opened) {
      opened = false;
      if (code !== 0x5d && code !== 0x7d && ++values > caps.maxValues) return { limit: 'values', max: caps.maxValues };
    }
    if (code === 0x22) {
      // Skip the string: to the next quote no backslash escapes (a string may span slices).
      for (i++; i < length; i++) {
        const inner = text.charCodeAt(i);
        if (inner === 0x5c) i++;
        else if (inner === 0x22) break;
        if (i >= sliceEnd) {
          sliceEnd = i + sliceChars;
          yield;
        }
      }
    } else if (code === 0x2c) {
      if (++values > caps.maxValues) return { limit: 'values', max: caps.maxValues };
    } else if (code === 0x5b || code === 0x7b) {
      if (++depth > caps.maxDepth) return { limit: 'depth', max: caps.maxDepth };
      opened = true;
    } else if (code === 0x5d || code === 0x7d) {
      if (depth > 0) depth--;
    }
  }
  return null;
}

function isSpace(code: number): boolean {
  return code === 0x20 || code === 0x0a || code === 0x0d || code === 0x09;
}
