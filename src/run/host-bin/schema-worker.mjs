// Worker process that compiles and applies users' JSON Schemas: the only place ajv runs. A schema is
// untrusted code (a pattern can backtrack, `uniqueItems` is quadratic, a recursive `anyOf` is
// exponential), so the host gives each job a deadline and this process a heap limit, and kills it
// on overrun. Plain JavaScript so that it loads the same way from the source tree and from a build.
//
// The ajv options live here and nowhere else. No user `$id` is ever registered (addUsedSchema:
// false), so one tenant's schema can neither shadow another's nor replace ajv's meta-schemas.
// strict:false accepts the unknown keywords (title, examples, x-*) real-world schemas carry.
import { Ajv } from 'ajv';

/** Compiled validators kept, by count and by schema text; a fresh ajv instance when either is full. */
const CACHE_ENTRIES = 256;
const CACHE_TEXT_BYTES = 4 * 1024 * 1024;
/** Problems reported per failed check: enough to fix the input, bounded for a huge one. */
const MAX_PROBLEMS = 20;
const MAX_PROBLEM_CHARS = 300;

let ajv = fresh();
let compiled = new Map();
let cachedBytes = 0;

function fresh() {
  return new Ajv({ strict: false, allErrors: true, validateSchema: true, addUsedSchema: false });
}

/** The validator of `key`; `text` (the schema's canonical JSON) is sent only when the host thinks we lack it. */
function validatorFor(key, text) {
  const known = compiled.get(key);
  if (known) return known;
  if (text === undefined) return undefined;
  if (compiled.size >= CACHE_ENTRIES || cachedBytes + text.length > CACHE_TEXT_BYTES) {
    ajv = fresh();
    compiled = new Map();
    cachedBytes = 0;
  }
  const validate = compiledAlone(JSON.parse(text));
  compiled.set(key, validate);
  cachedBytes += text.length;
  return validate;
}

/**
 * Compiles `schema`, then drops every id the compile registered in ajv.refs. Even with
 * addUsedSchema:false ajv records a nested `$id` there (as a path into its schema), and a later
 * schema with the same root `$id` resolves a `$ref` to it: one schema's (one tenant's) compile
 * would decide whether another compiles and how it checks. The validator made is complete already.
 */
function compiledAlone(schema) {
  const before = new Set(Object.keys(ajv.refs));
  try {
    const validate = ajv.compile(schema);
    // An `$async` schema's validator answers a promise, which reads as a pass for any value.
    if (validate.$async) throw new Error('$async schemas are not supported');
    return validate;
  } finally {
    for (const id of Object.keys(ajv.refs)) if (!before.has(id)) delete ajv.refs[id];
  }
}

/** Pieces of a large value's JSON text, sent before its job (one per message, so the host never holds its loop to send megabytes). */
let pieces = [];
let piecesOf = -1;

process.on('message', (message) => {
  if ('piece' in message) {
    if (message.id !== piecesOf) {
      pieces = [];
      piecesOf = message.id;
    }
    pieces.push(message.piece);
    return;
  }
  const { id, op, key, text } = message;
  // No text is no JSON value (it fails to parse below), never null.
  const data = message.data ?? (piecesOf === id ? pieces.join('') : '');
  pieces = [];
  piecesOf = -1;
  let validate;
  try {
    validate = validatorFor(key, text);
  } catch (error) {
    process.send({ id, invalid: error instanceof Error ? error.message : String(error) });
    return;
  }
  if (!validate) {
    process.send({ id, unknown: true });
    return;
  }
  if (op === 'compile') {
    process.send({ id, ok: true });
    return;
  }
  // The instance comes as JSON text: cheaper for the host than a structured clone.
  let instance;
  try {
    instance = JSON.parse(data);
  } catch {
    process.send({ id, unreadable: true });
    return;
  }
  if (validate(instance)) {
    process.send({ id, ok: true });
    return;
  }
  const errors = validate.errors ?? [];
  const problems = errors.slice(0, MAX_PROBLEMS).map((e) => clip(`${e.instancePath || '(root)'} ${e.message ?? 'is invalid'}`));
  if (errors.length > MAX_PROBLEMS) problems.push(`… ${errors.length - MAX_PROBLEMS} more`);
  process.send({ id, problems });
});

function clip(text) {
  return text.length > MAX_PROBLEM_CHARS ? `${text.slice(0, MAX_PROBLEM_CHARS)}…` : text;
}

// The server is gone (or let go of us): so are we.
process.on('disconnect', () => process.exit(0));
// Compiling the first schema compiles ajv's meta-schema too: done before any job's deadline starts.
ajv.compile({ type: 'object' });
process.send({ ready: true });
