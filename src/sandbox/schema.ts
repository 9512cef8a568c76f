/** output_schema checks, with the platform's shared, tenant-safe validator cache. */
import { schemaProblems } from '../core/json-schema.js';

export type SchemaCheck = { ok: true } | { ok: false; message: string };

export function checkAgainstSchema(schema: Record<string, unknown> | boolean, value: unknown): SchemaCheck {
  let problems: string[];
  try {
    problems = schemaProblems(schema, value);
  } catch (error) {
    return { ok: false, message: `output_schema is not a valid JSON Schema: ${(error as Error).message}` };
  }
  return problems.length === 0 ? { ok: true } : { ok: false, message: `the result does not match output_schema: ${problems.join('; ')}` };
}
