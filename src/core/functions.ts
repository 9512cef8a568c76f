import { createHash } from 'node:crypto';
import { DomainError, invalid } from './errors.js';
import { validateEnvDeclarations } from './env-names.js';
import { describeExcess, shapeExcess, validateJsonSchema } from './json-schema.js';
import {
  MAX_CODE_BYTES,
  MAX_CONFIG_BYTES,
  MAX_DESCRIPTION_CHARS,
  MAX_REQUIREMENTS,
  MAX_SCHEMA_DEPTH,
  MAX_TAG_CHARS,
  MAX_TAGS,
} from './limits.js';
import { resolvePythonRequirements, validateNpmRequirements } from './python-packages.js';

export const LANGUAGES = ['python', 'typescript'] as const;
export type Language = (typeof LANGUAGES)[number];
export const BACKENDS = ['code_sandbox'] as const;
export type Backend = (typeof BACKENDS)[number];

/** Everything that, when changed, makes a new immutable version. */
export interface FunctionDefinition {
  language: Language;
  backend: Backend;
  code: string;
  config: Record<string, unknown> | null;
  inputSchema: Record<string, unknown> | null;
  outputSchema: Record<string, unknown> | null;
  requirements: string[];
  requiredEnv: string[];
  optionalEnv: string[];
}

/** Metadata that can change without a new version. */
export interface FunctionMetadata {
  description: string;
  tags: string[];
}

/** Raw, user-supplied fields (MCP tool arguments); undefined = not given. */
export interface FunctionDefinitionInput {
  language?: unknown;
  backend?: unknown;
  code?: unknown;
  config?: unknown;
  inputSchema?: unknown;
  outputSchema?: unknown;
  requirements?: unknown;
  requiredEnv?: unknown;
  optionalEnv?: unknown;
}

function oneOf<T extends string>(value: unknown, allowed: readonly T[], field: string): T {
  if (typeof value !== 'string' || !(allowed as readonly string[]).includes(value)) {
    throw invalid(`${field} must be one of ${allowed.join(', ')}; got ${JSON.stringify(value)}`, { field });
  }
  return value as T;
}

function stringList(value: unknown, field: string, max: number): string[] {
  if (!Array.isArray(value) || value.some((v) => typeof v !== 'string')) throw invalid(`${field} must be a list of strings`, { field });
  if (value.length > max) throw invalid(`${field} may have at most ${max} entries`, { field });
  return value as string[];
}

export function validateCode(code: unknown): string {
  if (typeof code !== 'string' || code.trim() === '') throw invalid('code must be a non-empty string', { field: 'code' });
  const bytes = Buffer.byteLength(code, 'utf8');
  if (bytes > MAX_CODE_BYTES) {
    throw new DomainError('code_too_large', `code is ${bytes} bytes; the limit is ${MAX_CODE_BYTES} bytes (1 MB)`, {
      field: 'code',
      limit: MAX_CODE_BYTES,
    });
  }
  if (code.includes('\u0000')) throw invalid('code must not contain NUL characters', { field: 'code' });
  return code;
}

function validateConfig(config: unknown): Record<string, unknown> | null {
  if (config === null || config === undefined) return null;
  if (typeof config !== 'object' || Array.isArray(config)) throw invalid('config must be a JSON object', { field: 'config' });
  // Depth first (iteratively): JSON.stringify below, and the definition hash, recurse.
  const excess = shapeExcess(config, { maxDepth: MAX_SCHEMA_DEPTH, maxValues: MAX_CONFIG_BYTES });
  if (excess) throw invalid(describeExcess('config', excess), { field: 'config' });
  if (JSON.stringify(config).length > MAX_CONFIG_BYTES)
    throw invalid(`config is larger than ${MAX_CONFIG_BYTES} bytes`, { field: 'config' });
  return config as Record<string, unknown>;
}

/**
 * Builds the definition of a new version: `base` supplies fields the caller did not give
 * (the current version on update, defaults on make).
 */
export function buildDefinition(input: FunctionDefinitionInput, base: FunctionDefinition | null): FunctionDefinition {
  const language = input.language === undefined ? (base?.language ?? 'python') : oneOf(input.language, LANGUAGES, 'language');
  const backend = input.backend === undefined ? (base?.backend ?? 'code_sandbox') : oneOf(input.backend, BACKENDS, 'backend');
  if (input.code === undefined && !base) throw invalid('code is required (or give a template)', { field: 'code' });
  const code = input.code === undefined ? base!.code : validateCode(input.code);
  const config = input.config === undefined ? (base?.config ?? null) : validateConfig(input.config);
  const inputSchema =
    input.inputSchema === undefined
      ? (base?.inputSchema ?? null)
      : input.inputSchema === null
        ? null
        : validateJsonSchema(input.inputSchema, 'input_schema');
  const outputSchema =
    input.outputSchema === undefined
      ? (base?.outputSchema ?? null)
      : input.outputSchema === null
        ? null
        : validateJsonSchema(input.outputSchema, 'output_schema');

  // Requirements are re-checked against the (possibly new) language even when not given again.
  const rawRequirements =
    input.requirements === undefined ? (base?.requirements ?? []) : stringList(input.requirements, 'requirements', MAX_REQUIREMENTS);
  const requirements = language === 'python' ? resolvePythonRequirements(rawRequirements) : validateNpmRequirements(rawRequirements);

  const env = validateEnvDeclarations(
    input.requiredEnv === undefined ? (base?.requiredEnv ?? []) : stringList(input.requiredEnv, 'required_env', 64),
    input.optionalEnv === undefined ? (base?.optionalEnv ?? []) : stringList(input.optionalEnv, 'optional_env', 64),
  );
  return { language, backend, code, config, inputSchema, outputSchema, requirements, requiredEnv: env.required, optionalEnv: env.optional };
}

export function buildMetadata(input: { description?: unknown; tags?: unknown }, base: FunctionMetadata | null): FunctionMetadata {
  let description = base?.description ?? '';
  if (input.description !== undefined) {
    if (typeof input.description !== 'string') throw invalid('description must be a string', { field: 'description' });
    if (input.description.length > MAX_DESCRIPTION_CHARS)
      throw invalid(`description may have at most ${MAX_DESCRIPTION_CHARS} characters`, { field: 'description' });
    if (input.description.includes('\u0000')) throw invalid('description must not contain NUL characters', { field: 'description' });
    description = input.description;
  }
  let tags = base?.tags ?? [];
  if (input.tags !== undefined) {
    const list = stringList(input.tags, 'tags', MAX_TAGS).map((t) => t.trim());
    for (const tag of list) {
      if (tag === '' || tag.length > MAX_TAG_CHARS || tag.includes('\u0000'))
        throw invalid(`each tag must have 1-${MAX_TAG_CHARS} characters, without NUL`, { field: 'tags' });
    }
    tags = [...new Set(list)];
  }
  return { description, tags };
}

/** Stable JSON (sorted keys) so that equal definitions compare and hash equal. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
}

/** Versioning rule of the guide: a change to code/config/schemas/requirements (or language, env) is a new version. */
export function definitionChanged(current: FunctionDefinition, next: FunctionDefinition): boolean {
  // Field by field: what an update does not give is the current value itself (the same string or
  // object), so a metadata-only update never serialises megabytes of code and schemas.
  for (const key of new Set([...Object.keys(current), ...Object.keys(next)]) as Set<keyof FunctionDefinition>) {
    const a = current[key];
    const b = next[key];
    if (a === b) continue;
    if (canonicalJson(a) !== canonicalJson(b)) return true;
  }
  return false;
}

export function definitionHash(definition: FunctionDefinition): string {
  return createHash('sha256').update(canonicalJson(definition)).digest('hex');
}
