/**
 * JSON.parse in slices: one JSON.parse of an 8 MB body within the caps (500,000 short strings)
 * holds the main thread for hundreds of milliseconds. Here a scan (in slices) finds every array or
 * object spanning at least `pieceChars` characters and the commas directly inside it; such a
 * container is built element by element, and runs of its other elements are handed to JSON.parse
 * about `pieceChars` characters at a time, yielding between. The result is what JSON.parse gives
 * (numbers, strings, escapes, `__proto__` keys, duplicate keys: JSON.parse itself reads every
 * piece); text JSON.parse refuses throws a SyntaxError here too. A single long scalar (a large
 * string) is still one JSON.parse.
 */

interface Big {
  close: number;
  /** Commas directly inside, in order. */
  commas: number[];
  /** Open positions of the large containers directly inside, in order. */
  kids: number[];
}

interface Frame {
  open: number;
  kind: number;
  commas: number[];
  kids: number[];
}

const syntax = (what: string) => new SyntaxError(`Invalid JSON: ${what}`);

export function* parseJsonSlices(text: string, pieceChars: number): Generator<void, unknown, void> {
  const big = new Map<number, Big>();
  const stack: Frame[] = [];
  let inString = false;
  let escaped = false;
  for (let from = 0; from < text.length; from += pieceChars) {
    if (from > 0) yield;
    const to = Math.min(text.length, from + pieceChars);
    for (let i = from; i < to; i++) {
      const code = text.charCodeAt(i);
      if (inString) {
        if (escaped) escaped = false;
        else if (code === 0x5c) escaped = true;
        else if (code === 0x22) inString = false;
      } else if (code === 0x22) {
        inString = true;
      } else if (code === 0x2c) {
        stack[stack.length - 1]?.commas.push(i);
      } else if (code === 0x5b || code === 0x7b) {
        stack.push({ open: i, kind: code, commas: [], kids: [] });
      } else if (code === 0x5d || code === 0x7d) {
        const frame = stack.pop();
        if (!frame || frame.kind !== code - 2) throw syntax(`unexpected '${text[i]}' at position ${i}`);
        if (i - frame.open >= pieceChars) {
          big.set(frame.open, { close: i, commas: frame.commas, kids: frame.kids });
          stack[stack.length - 1]?.kids.push(frame.open);
        }
      }
    }
  }
  if (inString || stack.length > 0) throw syntax('unexpected end of the text');
  if (big.size === 0) return JSON.parse(text);
  return yield* build(text, 0, text.length, big, pieceChars);
}

function blank(text: string, from: number, to: number): boolean {
  for (let i = from; i < to; i++) if (!isSpace(text.charCodeAt(i))) return false;
  return true;
}

/** Where the ':' after the object key that starts at `from` is (the key's own text is JSON.parse's). */
function colonAfterKey(text: string, from: number, to: number): number {
  let i = from;
  while (i < to && isSpace(text.charCodeAt(i))) i++;
  if (text.charCodeAt(i) !== 0x22) throw syntax(`an object key is missing at position ${i}`);
  for (i++; i < to; i++) {
    const code = text.charCodeAt(i);
    if (code === 0x5c) i++;
    else if (code === 0x22) break;
  }
  for (i++; i < to && isSpace(text.charCodeAt(i)); i++);
  if (i >= to || text.charCodeAt(i) !== 0x3a) throw syntax(`a ':' is missing at position ${i}`);
  return i;
}

function isSpace(code: number): boolean {
  return code === 0x20 || code === 0x0a || code === 0x0d || code === 0x09;
}

/** The value written in text[start, end), with nothing else but whitespace around it. */
function* build(text: string, start: number, end: number, big: Map<number, Big>, pieceChars: number): Generator<void, unknown, void> {
  while (start < end && isSpace(text.charCodeAt(start))) start++;
  while (end > start && isSpace(text.charCodeAt(end - 1))) end--;
  if (start >= end) throw syntax(`a value is missing at position ${start}`);
  const container = big.get(start);
  yield;
  if (!container) return JSON.parse(text.slice(start, end));
  if (container.close !== end - 1) throw syntax(`unexpected text after position ${container.close}`);
  const isArray = text.charCodeAt(start) === 0x5b;
  const { commas, close } = container;
  const count = commas.length + 1;
  const startOf = (k: number) => (k === 0 ? start + 1 : commas[k - 1]! + 1);
  const endOf = (k: number) => (k < commas.length ? commas[k]! : close);
  if (container.commas.length === 0 && blank(text, start + 1, container.close)) return isArray ? [] : {};
  const result: unknown[] | Record<string, unknown> = isArray ? [] : {};
  const put = (key: string, value: unknown) => {
    // A "__proto__" key is an own property, as JSON.parse makes it, never the prototype.
    if (key === '__proto__') Object.defineProperty(result, key, { value, writable: true, enumerable: true, configurable: true });
    else (result as Record<string, unknown>)[key] = value;
  };
  let groupFirst = -1;
  let kid = 0;
  const flush = function* (last: number): Generator<void, void, void> {
    if (groupFirst < 0) return;
    const first = groupFirst;
    const inner = text.slice(startOf(first), endOf(last));
    groupFirst = -1;
    yield;
    if (first === last && inner.length >= pieceChars) {
      // One long scalar (a large string): parsed where it lies, not copied into a new text.
      if (isArray) (result as unknown[]).push(JSON.parse(inner));
      else {
        const colon = colonAfterKey(text, startOf(first), endOf(last));
        const key: unknown = JSON.parse(text.slice(startOf(first), colon));
        if (typeof key !== 'string') throw syntax(`an object key is not a string at position ${startOf(first)}`);
        put(key, JSON.parse(text.slice(colon + 1, endOf(last))));
      }
      return;
    }
    const parsed: unknown = JSON.parse(isArray ? `[${inner}]` : `{${inner}}`);
    if (isArray) for (const item of parsed as unknown[]) (result as unknown[]).push(item);
    else for (const key of Object.keys(parsed as object)) put(key, (parsed as Record<string, unknown>)[key]);
  };
  for (let k = 0; k < count; k++) {
    const elementStart = startOf(k);
    const elementEnd = endOf(k);
    if (blank(text, elementStart, elementEnd)) throw syntax(`a value is missing at position ${elementStart}`);
    const child = container.kids[kid];
    if (child === undefined || child >= elementEnd) {
      // A small element: parsed with its neighbours.
      if (groupFirst < 0) groupFirst = k;
      if (elementEnd - startOf(groupFirst) >= pieceChars) yield* flush(k);
      continue;
    }
    kid++;
    yield* flush(k - 1);
    if (isArray) {
      (result as unknown[]).push(yield* build(text, elementStart, elementEnd, big, pieceChars));
    } else {
      // `"key" :` before the large value: JSON.parse reads the key.
      const head = text.slice(elementStart, child).trimEnd();
      if (!head.endsWith(':')) throw syntax(`a ':' is missing before position ${child}`);
      const key: unknown = JSON.parse(head.slice(0, -1));
      if (typeof key !== 'string') throw syntax(`an object key is not a string at position ${elementStart}`);
      put(key, yield* build(text, child, elementEnd, big, pieceChars));
    }
  }
  yield* flush(count - 1);
  return result;
}
