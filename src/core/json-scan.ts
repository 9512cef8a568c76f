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
export function* textShapeExcessSlices(
  text: string,
  caps: { maxDepth: number; maxValues: number },
  sliceChars: number,
): Generator<void, ShapeExcess | null, void> {
  const state = startState();
  for (let from = 0; from < text.length; from += sliceChars) {
    if (from > 0) yield;
    const excess = scanRange(text, from, Math.min(text.length, from + sliceChars), state, caps);
    if (excess) return excess;
  }
  return null;
}

/**
 * As textShapeExcessSlices, for a text that comes in pieces (a large value's UTF-8 bytes decoded a
 * piece at a time): each piece is taken from `pieces` within a slice of its own, and scanned in
 * slices of about `sliceChars`. A string or escape may run across pieces.
 */
export function* piecesShapeExcessSlices(
  pieces: Iterable<string>,
  caps: { maxDepth: number; maxValues: number },
  sliceChars: number,
): Generator<void, ShapeExcess | null, void> {
  const state = startState();
  for (const piece of pieces) {
    for (let from = 0; from < piece.length; from += sliceChars) {
      const excess = scanRange(piece, from, Math.min(piece.length, from + sliceChars), state, caps);
      if (excess) return excess;
      yield;
    }
  }
  return null;
}

function startState(): ScanState {
  return { depth: 0, values: 1, opened: false, inString: false, escaped: false };
}

interface ScanState {
  depth: number;
  values: number;
  /** Just after an opening bracket: a non-empty container adds one value more than its commas. */
  opened: boolean;
  /** Inside a string (which may span slices), and just after a backslash in it. */
  inString: boolean;
  escaped: boolean;
}

// A plain function per slice, not the generator's own loop: V8 optimises it within the first
// slice of the first large body (a generator's loop stayed interpreted for ~50 ms of 8 MB).
function scanRange(
  text: string,
  from: number,
  to: number,
  state: ScanState,
  caps: { maxDepth: number; maxValues: number },
): ShapeExcess | null {
  let { depth, values, opened, inString, escaped } = state;
  let excess: ShapeExcess | null = null;
  for (let i = from; i < to; i++) {
    const code = text.charCodeAt(i);
    if (inString) {
      // To the next quote no backslash escapes.
      if (escaped) escaped = false;
      else if (code === 0x5c) escaped = true;
      else if (code === 0x22) inString = false;
      continue;
    }
    if (isSpace(code)) continue;
    if (opened) {
      opened = false;
      if (code !== 0x5d && code !== 0x7d && ++values > caps.maxValues) {
        excess = { limit: 'values', max: caps.maxValues };
        break;
      }
    }
    if (code === 0x22) {
      inString = true;
    } else if (code === 0x2c) {
      if (++values > caps.maxValues) {
        excess = { limit: 'values', max: caps.maxValues };
        break;
      }
    } else if (code === 0x5b || code === 0x7b) {
      if (++depth > caps.maxDepth) {
        excess = { limit: 'depth', max: caps.maxDepth };
        break;
      }
      opened = true;
    } else if (code === 0x5d || code === 0x7d) {
      if (depth > 0) depth--;
    }
  }
  Object.assign(state, { depth, values, opened, inString, escaped });
  return excess;
}

function isSpace(code: number): boolean {
  return code === 0x20 || code === 0x0a || code === 0x0d || code === 0x09;
}
