import { Ajv } from 'ajv';
import { DomainError } from './errors.js';
import { MAX_SCHEMA_BYTES } from './limits.js';

// strict:false accepts the unknown keywords (title, examples, x-*) that real-world schemas carry.
const ajv = new Ajv({ strict: false, allErrors: true, validateSchema: true });

/** Checks that a value is a usable JSON Schema (an object that ajv accepts and compiles). */
export function validateJsonSchema(schema: unknown, field: string): Record<string, unknown> {
  if (schema === null || typeof schema !== 'object' || Array.isArray(schema)) {
    throw new DomainError('invalid_schema', `${field} must be a JSON Schema object`, { field });
  }
  if (JSON.stringify(schema).length > MAX_SCHEMA_BYTES) {
    throw new DomainError('invalid_schema', `${field} is larger than ${MAX_SCHEMA_BYTES} bytes`, { field });
  }
  try {
    ajv.compile(schema);
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new DomainError('invalid_schema', `${field} is not a valid JSON Schema: ${reason}`, { field });
  } finally {
    ajv.removeSchema(schema as object);
  }
  return schema as Record<string, unknown>;
}

/** Validates data against a schema and returns readable problems (empty when valid). */
export function schemaProblems(schema: Record<string, unknown>, data: unknown): string[] {
  const validate = ajv.compile(schema);
  const ok = validate(data);
  ajv.removeSchema(schema);
  if (ok) return [];
  return (validate.errors ?? []).map((e) => `${e.instancePath || '(root)'} ${e.message ?? 'is invalid'}`);
}
