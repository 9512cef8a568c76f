// Worker thread for input-schema checks whose schema has regex patterns: a pathological pattern
// can backtrack for seconds, and here it blocks only this worker, which the host can terminate.
// Plain JavaScript so that it loads the same way from the source tree and from a build. Same ajv
// settings as src/core/json-schema.ts: no user $id is ever registered.
import { parentPort } from 'node:worker_threads';
import { Ajv } from 'ajv';

const CACHE_LIMIT = 256;
let ajv = fresh();
let compiled = new Map();

function fresh() {
  return new Ajv({ strict: false, allErrors: true, validateSchema: true, addUsedSchema: false });
}

function validatorFor(schema) {
  const key = JSON.stringify(schema);
  let validate = compiled.get(key);
  if (!validate) {
    if (compiled.size >= CACHE_LIMIT) {
      ajv = fresh();
      compiled = new Map();
    }
    validate = ajv.compile(schema);
    compiled.set(key, validate);
  }
  return validate;
}

parentPort.on('message', ({ id, schema, data }) => {
  let problems;
  try {
    const validate = validatorFor(schema);
    problems = validate(data) ? [] : (validate.errors ?? []).map((e) => `${e.instancePath || '(root)'} ${e.message ?? 'is invalid'}`);
  } catch (error) {
    problems = [`the schema could not be applied: ${error instanceof Error ? error.message : String(error)}`];
  }
  parentPort.postMessage({ id, problems });
});
