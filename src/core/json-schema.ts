import { Ajv, type ValidateFunction } from 'ajv';
import { DomainError } from './errors.js';
import { MAX_SCHEMA_BYTES } from './limits.js';

/**
 * Validators compiled from users' schemas. The ajv instance never registers a user's `$id`
 * (addUsedSchema: false), so one tenant's schema can neither collide with another's nor replace
 * ajv's own meta-schemas; and schemas are never removed one by one (removal by `$id` is how a
 * meta-schema could be deleted). The cache is bounded by starting a fresh instance when full.
 * strict:false accepts the unknown keywords (title, examples, x-*) real-world schemas carry.
 */
const CACHE_LIMIT = 256;
let ajv = newAjv();
let compiled = new Map<string, ValidateFunction>();

function newAjv(): Ajv {
  return new Ajv({ strict: false, allErrors: true, validateSchema: true, addUsedSchema: false });
}

/**
 * The same schema object (a namespace snapshot's, shared read-only by every call until its catalog
 * version changes) skips serialising the schema to find its validator.
 */
let byObject = new WeakMap<object, ValidateFunction>();

/** The compiled validator of a schema (throws ajv's error when the schema is invalid). */
export function validatorFor(schema: Record<string, unknown> | boolean): ValidateFunction {
  const seen = typeof schema === 'object' ? byObject.get(schema) : undefined;
  if (seen) return seen;
  const key = JSON.stringify(schema);
  let validate = compiled.get(key);
  if (!validate) {
    if (compiled.size >= CACHE_LIMIT) {
      ajv = newAjv();
      compiled = new Map();
      byObject = new WeakMap();
    }
    validate = ajv.compile(schema);
    compiled.set(key, validate);
  }
  if (typeof schema === 'object') byObject.set(schema, validate);
  return validate;
}

/** Checks that a value is a usable JSON Schema (an object that ajv accepts and compiles). */
export function validateJsonSchema(schema: unknown, field: string): Record<string, unknown> {
  if (schema === null || typeof schema !== 'object' || Array.isArray(schema)) {
    throw new DomainError('invalid_schema', `${field} must be a JSON Schema object`, { field });
  }
  if (JSON.stringify(schema).length > MAX_SCHEMA_BYTES) {
    throw new DomainError('invalid_schema', `${field} is larger than ${MAX_SCHEMA_BYTES} bytes`, { field });
  }
  try {
    validatorFor(schema as Record<string, unknown>);
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new DomainError('invalid_schema', `${field} is not a valid JSON Schema: ${reason}`, { field });
  }
  return schema as Record<string, unknown>;
}

/** Validates data against a schema and returns readable problems (empty when valid). */
export function schemaProblems(schema: Record<string, unknown> | boolean, data: unknown): string[] {
  const validate = validatorFor(schema);
  if (validate(data)) return [];
  return (validate.errors ?? []).map((e) => `${e.instancePath || '(root)'} ${e.message ?? 'is invalid'}`);
}
