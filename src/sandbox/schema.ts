/** output_schema checks with ajv; compiled validators are cached by schema text. */
import { Ajv, type ValidateFunction } from 'ajv';

const ajv = new Ajv({ allErrors: true, strict: false });
const CACHE_LIMIT = 256;
const validators = new Map<string, ValidateFunction>();

export type SchemaCheck = { ok: true } | { ok: false; message: string };

export function checkAgainstSchema(schema: Record<string, unknown> | boolean, value: unknown): SchemaCheck {
  const key = JSON.stringify(schema);
  let validate = validators.get(key);
  if (!validate) {
    try {
      validate = ajv.compile(schema);
    } catch (error) {
      return { ok: false, message: `output_schema is not a valid JSON Schema: ${(error as Error).message}` };
    }
    if (validators.size >= CACHE_LIMIT) validators.delete(validators.keys().next().value as string);
    validators.set(key, validate);
  }
  if (validate(value)) return { ok: true };
  const problems = (validate.errors ?? []).map((error) => `${error.instancePath || '(root)'} ${error.message ?? 'is invalid'}`);
  return { ok: false, message: `the result does not match output_schema: ${problems.join('; ')}` };
}
