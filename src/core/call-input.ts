/**
 * The shape every call's input must have before it is admitted (tool calls, `execute`, and calls
 * made through the code-mode bridge): checked here, cheaply and iteratively, so that an input no
 * function could receive is the caller's `validation_error` (never metered) rather than a crash
 * blamed on the function or the server, or a number the function would receive changed.
 */
import { MAX_CHECKED_DEPTH, MAX_CHECKED_VALUES } from './limits.js';
import { runSlices, shapeExcessSlices } from './json-schema.js';

/** Why `input` may not be passed to a function (a sentence), or undefined when it may. */
export function callInputProblem(input: unknown): string | undefined {
  return runSlices(callInputProblemSlices(input, Infinity));
}

/**
 * callInputProblem as slices: yields after about every `sliceValues` values walked, so the main
 * thread can serve other requests between slices (a large input takes it tens of milliseconds).
 */
export function* callInputProblemSlices(input: unknown, sliceValues: number): Generator<void, string | undefined, void> {
  // The same caps as a schema check: what passes here can always be checked, parsed and run.
  const excess = yield* shapeExcessSlices(input, { maxDepth: MAX_CHECKED_DEPTH, maxValues: MAX_CHECKED_VALUES }, sliceValues);
  if (excess?.limit === 'depth') return `the input is nested deeper than ${MAX_CHECKED_DEPTH} levels`;
  if (excess) return `the input holds more than ${MAX_CHECKED_VALUES} JSON values`;
  const inexact = yield* inexactNumberInSlices(input, sliceValues);
  if (inexact !== undefined) {
    return `the input holds the number ${inexact}, a whole number beyond ±${Number.MAX_SAFE_INTEGER} (2^53 - 1): JSON numbers reach the server as 64-bit floats, so it may already have been rounded; send it as a string`;
  }
  return undefined;
}

/**
 * The first whole number in `value` too large to be exact as a 64-bit float (any integer beyond
 * 2^53 - 1 parses to one). Parsed JSON cannot tell 1e300 from a rounded integer, so both are
 * refused rather than one passed on changed. Iterative: `value` is already within the depth cap.
 */
export function inexactNumberIn(value: unknown): number | undefined {
  return runSlices(inexactNumberInSlices(value, Infinity));
}

function* inexactNumberInSlices(value: unknown, sliceValues: number): Generator<void, number | undefined, void> {
  const stack: unknown[] = [value];
  let work = 0;
  while (stack.length > 0) {
    const current = stack.pop();
    if (typeof current === 'number') {
      if (Number.isInteger(current) && !Number.isSafeInteger(current)) return current;
    } else if (Array.isArray(current)) {
      for (const item of current) {
        if (++work >= sliceValues) {
          work = 0;
          yield;
        }
        if (item !== null && typeof item === 'object' ? true : typeof item === 'number') stack.push(item);
      }
    } else if (current !== null && typeof current === 'object') {
      for (const key in current) {
        if (++work >= sliceValues) {
          work = 0;
          yield;
        }
        if (!Object.hasOwn(current, key)) continue;
        const item = (current as Record<string, unknown>)[key];
        if (item !== null && typeof item === 'object' ? true : typeof item === 'number') stack.push(item);
      }
    }
  }
  return undefined;
}
