import { DomainError } from './errors.js';
import { MAX_SCHEMA_BYTES, MAX_SCHEMA_DEPTH } from './limits.js';

/**
 * Shape rules for users' JSON Schemas and for the values checked against them. Compiling and
 * applying a schema is untrusted work and happens only in worker threads (src/run/schema-guard.ts);
 * what is here is cheap, iterative and bounded, so a deep or huge value cannot overflow the stack or
 * hold the main thread before a worker ever sees it.
 */

export type ShapeExcess = { limit: 'depth'; max: number } | { limit: 'values'; max: number };

/**
 * Walks a JSON value without recursion and reports the first cap it exceeds: containers nested
 * deeper than `maxDepth`, or more than `maxValues` values in all. Stops as soon as one is exceeded.
 * Only containers go on the walk's stack, and nothing is allocated per value (this runs on the main
 * thread for every checked input and result).
 */
export function shapeExcess(value: unknown, caps: { maxDepth: number; maxValues: number }): ShapeExcess | null {
  return runSlices(shapeExcessSlices(value, caps, Infinity));
}

/**
 * shapeExcess as slices: the generator yields after about every `sliceValues` values it has
 * walked, so a caller can give the event loop a turn between slices (src/run/schema-guard.ts does
 * for every checked value); it returns what shapeExcess returns.
 */
export function* shapeExcessSlices(
  value: unknown,
  caps: { maxDepth: number; maxValues: number },
  sliceValues: number,
): Generator<void, ShapeExcess | null, void> {
  if (value === null || typeof value !== 'object') return null;
  if (caps.maxDepth < 1) return { limit: 'depth', max: caps.maxDepth };
  const containers: object[] = [value];
  const depths: number[] = [1];
  let values = 1;
  // Values looked at in this slice (one long array may hold several slices).
  let work = 0;
  while (containers.length > 0) {
    const current = containers.pop() as Record<string, unknown> | unknown[];
    const childDepth = depths.pop()! + 1;
    if (Array.isArray(current)) {
      values += current.length;
      if (values > caps.maxValues) return { limit: 'values', max: caps.maxValues };
      for (let i = 0; i < current.length; i++) {
        if (++work >= sliceValues) {
          work = 0;
          yield;
        }
        const child = current[i];
        if (child === null || typeof child !== 'object') continue;
        if (childDepth > caps.maxDepth) return { limit: 'depth', max: caps.maxDepth };
        containers.push(child);
        depths.push(childDepth);
      }
    } else {
      for (const key in current) {
        if (++work >= sliceValues) {
          work = 0;
          yield;
        }
        if (!Object.hasOwn(current, key)) continue;
        if (++values > caps.maxValues) return { limit: 'values', max: caps.maxValues };
        const child = current[key];
        if (child === null || typeof child !== 'object') continue;
        if (childDepth > caps.maxDepth) return { limit: 'depth', max: caps.maxDepth };
        containers.push(child);
        depths.push(childDepth);
      }
    }
  }
  return null;
}

/** Runs sliced work to its end without pausing. */
export function runSlices<T>(slices: Generator<void, T, void>): T {
  for (;;) {
    const step = slices.next();
    if (step.done) return step.value;
  }
}

/** `what` is a noun phrase: "the input", "the result", "input_schema". */
export function describeExcess(what: string, excess: ShapeExcess): string {
  return excess.limit === 'depth'
    ? `${what} is nested deeper than ${excess.max} levels`
    : `${what} holds more than ${excess.max} JSON values`;
}

/**
 * The cheap checks of a user's schema: a JSON object, at most MAX_SCHEMA_DEPTH levels deep and
 * MAX_SCHEMA_BYTES long. Whether ajv accepts it is decided by compiling it in a worker.
 */
export function validateJsonSchema(schema: unknown, field: string): Record<string, unknown> {
  if (schema === null || typeof schema !== 'object' || Array.isArray(schema)) {
    throw new DomainError('invalid_schema', `${field} must be a JSON Schema object`, { field });
  }
  // Depth first: JSON.stringify below recurses.
  const excess = shapeExcess(schema, { maxDepth: MAX_SCHEMA_DEPTH, maxValues: MAX_SCHEMA_BYTES });
  if (excess) throw new DomainError('invalid_schema', describeExcess(field, excess), { field });
  if (JSON.stringify(schema).length > MAX_SCHEMA_BYTES) {
    throw new DomainError('invalid_schema', `${field} is larger than ${MAX_SCHEMA_BYTES} bytes`, { field });
  }
  return schema as Record<string, unknown>;
}
