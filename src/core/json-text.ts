/**
 * JSON text of a value in slices: the same text as JSON.stringify(value), yielded in pieces of about
 * `sliceValues` values each (a string counts as one value more per 256 characters), none when
 * JSON.stringify writes nothing (undefined, a function). A caller can give the event loop a turn
 * between pieces, so serialising a tenant's input of 500,000 values never holds the main thread for
 * more than a slice.
 *
 * The text itself is made by JSON.stringify, one run of siblings at a time: each run holds at most
 * a slice of values (weighed first, cheaply, without recursion); a child too large for a run of its
 * own is opened and its children written the same way. So the cost stays close to one
 * JSON.stringify of the whole, and a value small enough for one slice is one JSON.stringify call.
 * Values must be within the depth cap (checked before: see shapeExcessSlices).
 */

type Frame = { array: unknown[]; index: number } | { object: Record<string, unknown>; keys: string[]; index: number; wrote: boolean };

/** Characters of a string counted as one more value toward a slice. */
const STRING_CHARS_PER_VALUE = 256;

const leafWeight = (item: unknown): number => (typeof item === 'string' ? 1 + Math.floor(item.length / STRING_CHARS_PER_VALUE) : 1);

/** The weight of `value` (values, long strings weighing more), counted only until it exceeds `limit`. */
export function weightUpTo(value: unknown, limit: number): number {
  if (value === null || typeof value !== 'object') return leafWeight(value);
  // A container counts when it is found, so a long array of containers is not all stacked first;
  // the stack is made only for a container that holds containers (this runs once per element).
  let pending: object[] | undefined;
  let current: object | undefined = value;
  let weight = 1;
  while (current !== undefined && weight <= limit) {
    if (Array.isArray(current)) {
      for (let i = 0; i < current.length && weight <= limit; i++) {
        const child: unknown = current[i];
        if (child !== null && typeof child === 'object') {
          weight++;
          (pending ??= []).push(child);
        } else weight += leafWeight(child);
      }
    } else {
      const members = current as Record<string, unknown>;
      for (const key in members) {
        if (weight > limit) break;
        if (!Object.hasOwn(members, key)) continue;
        const child = members[key];
        if (child !== null && typeof child === 'object') {
          weight++;
          (pending ??= []).push(child);
        } else weight += leafWeight(child);
      }
    }
    current = pending?.pop();
  }
  return weight;
}

/** A plain array or object (what JSON.parse makes), which can be written a run of children at a time. */
function frameOf(item: unknown): Frame | undefined {
  if (item === null || typeof item !== 'object') return undefined;
  const proto = Object.getPrototypeOf(item);
  if (proto === Array.prototype && !('toJSON' in item)) return { array: item as unknown[], index: 0 };
  if ((proto === Object.prototype || proto === null) && typeof (item as { toJSON?: unknown }).toJSON !== 'function') {
    return { object: item as Record<string, unknown>, keys: Object.keys(item), index: 0, wrote: false };
  }
  return undefined;
}

export function* jsonTextPieces(value: unknown, sliceValues: number): Generator<string, void, void> {
  const slice = Math.max(1, sliceValues);
  const root = weightUpTo(value, slice) <= slice ? undefined : frameOf(value);
  if (!root) {
    const text = JSON.stringify(value);
    if (text !== undefined) yield text;
    return;
  }
  let parts: string[] = [];
  let budget = slice;
  const stack: Frame[] = [root];
  parts.push('array' in root ? '[' : '{');
  while (stack.length > 0) {
    if (budget <= 0) {
      yield parts.join('');
      parts = [];
      budget = slice;
    }
    const frame = stack[stack.length - 1]!;
    if ('array' in frame) {
      const { array } = frame;
      if (frame.index >= array.length) {
        parts.push(']');
        stack.pop();
        continue;
      }
      // A run of elements that together weigh at most a slice, written by one JSON.stringify.
      const start = frame.index;
      let weight = 0;
      while (frame.index < array.length) {
        const next = weightUpTo(array[frame.index], slice - weight);
        if (weight + next > slice) break;
        weight += next;
        frame.index++;
      }
      if (frame.index > start) {
        const text = JSON.stringify(array.slice(start, frame.index));
        parts.push(start > 0 ? ',' : '', text.slice(1, -1));
        budget -= weight;
        continue;
      }
      // This element alone weighs more than a slice: opened, or (not a plain container) written whole.
      const item = array[frame.index++];
      if (start > 0) parts.push(',');
      budget--;
      const child = frameOf(item);
      if (child) {
        parts.push('array' in child ? '[' : '{');
        stack.push(child);
      } else {
        parts.push(JSON.stringify(item) ?? 'null');
        budget -= slice;
      }
    } else {
      if (frame.index >= frame.keys.length) {
        parts.push('}');
        stack.pop();
        continue;
      }
      const key = frame.keys[frame.index++]!;
      const item = frame.object[key];
      const weight = weightUpTo(item, slice);
      const child = weight > slice ? frameOf(item) : undefined;
      if (child) {
        parts.push(frame.wrote ? ',' : '', JSON.stringify(key), ':', 'array' in child ? '[' : '{');
        frame.wrote = true;
        stack.push(child);
        budget--;
        continue;
      }
      const text = JSON.stringify(item);
      // What JSON.stringify leaves out of an object (undefined, a function, a symbol) is left out.
      if (text === undefined) continue;
      parts.push(frame.wrote ? ',' : '', JSON.stringify(key), ':', text);
      frame.wrote = true;
      budget -= Math.min(weight, slice);
    }
  }
  yield parts.join('');
}
