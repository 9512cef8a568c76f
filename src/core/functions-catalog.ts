/**
 * The catalog of a namespace as code mode presents it: identifiers, signatures derived from input
 * schemas, and the text of `functions.__doc__`. Pure data; the run layer writes it to disk as JSON,
 * so nothing here is ever spliced into generated source code.
 */
import { toIdentifier } from './names.js';

export interface CatalogFunction {
  service: string;
  name: string;
  description: string;
  language: 'python' | 'typescript';
  version: number;
  inputSchema: Record<string, unknown> | null;
  outputSchema: Record<string, unknown> | null;
}

export interface CatalogEntry {
  service: string;
  name: string;
  serviceIdentifier: string;
  identifier: string;
  language: 'python' | 'typescript';
  version: number;
  /** Python and TypeScript signatures, e.g. `hello(*, name: str = "World") -> {greeting, message}`. */
  pythonSignature: string;
  typescriptSignature: string;
  /** The Python wrapper's keyword parameters, for its real `inspect.signature` (data, never code). */
  parameters: CatalogParameter[];
  /** The return annotation of the Python signature. */
  returns: string;
  description: string;
}

export interface CatalogParameter {
  name: string;
  /** Python type text: `str`, `int`, `"a" | "b"`, `Any`. */
  annotation: string;
  required: boolean;
  /** Present when the input schema gives a default (the value, as JSON). */
  default?: unknown;
}

const PY_TYPES: Record<string, string> = {
  string: 'str',
  integer: 'int',
  number: 'float',
  boolean: 'bool',
  array: 'list',
  object: 'dict',
  null: 'None',
};
const TS_TYPES: Record<string, string> = {
  string: 'string',
  integer: 'number',
  number: 'number',
  boolean: 'boolean',
  array: 'unknown[]',
  object: 'Record<string, unknown>',
  null: 'null',
};

function typeOf(schema: unknown, table: Record<string, string>, fallback: string): string {
  if (!schema || typeof schema !== 'object') return fallback;
  const type = (schema as { type?: unknown }).type;
  const enumValues = (schema as { enum?: unknown }).enum;
  if (Array.isArray(enumValues) && enumValues.length > 0 && enumValues.length <= 8)
    return enumValues.map((v) => JSON.stringify(v)).join(' | ');
  if (typeof type === 'string') return table[type] ?? fallback;
  if (Array.isArray(type)) return type.map((t) => (typeof t === 'string' ? (table[t] ?? fallback) : fallback)).join(' | ');
  return fallback;
}

/** A JSON value as Python source text (True/False/None), for signatures shown to users. */
export function pythonLiteral(value: unknown): string {
  if (value === null || value === undefined) return 'None';
  if (value === true) return 'True';
  if (value === false) return 'False';
  if (typeof value === 'number' || typeof value === 'string') return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(pythonLiteral).join(', ')}]`;
  if (typeof value === 'object')
    return `{${Object.entries(value)
      .map(([key, item]) => `${JSON.stringify(key)}: ${pythonLiteral(item)}`)
      .join(', ')}}`;
  return 'None';
}

function defaultOf(schema: unknown): { has: boolean; value?: unknown } {
  return schema && typeof schema === 'object' && 'default' in schema
    ? { has: true, value: (schema as { default: unknown }).default }
    : { has: false };
}

function properties(schema: Record<string, unknown> | null): Array<[string, unknown, boolean]> {
  const props = schema && typeof schema.properties === 'object' && schema.properties ? (schema.properties as Record<string, unknown>) : {};
  const required = new Set(Array.isArray(schema?.required) ? (schema!.required as string[]) : []);
  return Object.entries(props).map(([name, value]) => [name, value, required.has(name)]);
}

function resultShape(schema: Record<string, unknown> | null, table: Record<string, string>, fallback: string): string {
  if (!schema) return fallback;
  const keys = properties(schema).map(([name]) => name);
  return keys.length > 0 && schema.type === 'object' ? `{${keys.join(', ')}}` : typeOf(schema, table, fallback);
}

/** Required parameters first; an optional one shows its schema default (else None: not sent). */
export function pythonParameters(fn: CatalogFunction): CatalogParameter[] {
  return properties(fn.inputSchema)
    .sort((a, b) => Number(b[2]) - Number(a[2]))
    .map(([name, schema, required]) => {
      const fallback = defaultOf(schema);
      return {
        name,
        annotation: typeOf(schema, PY_TYPES, 'Any'),
        required,
        ...(!required && fallback.has ? { default: fallback.value } : {}),
      };
    });
}

export function pythonSignature(fn: CatalogFunction): string {
  const params = pythonParameters(fn).map((p) => `${p.name}: ${p.annotation}${p.required ? '' : ` = ${pythonLiteral(p.default)}`}`);
  return `${toIdentifier(fn.name)}(${params.length ? `*, ${params.join(', ')}` : '**kwargs'}) -> ${resultShape(fn.outputSchema, PY_TYPES, 'Any')}`;
}

export function typescriptSignature(fn: CatalogFunction): string {
  const params = properties(fn.inputSchema).map(([name, schema, required]) => {
    const fallback = defaultOf(schema);
    return `${name}${required ? '' : '?'}: ${typeOf(schema, TS_TYPES, 'unknown')}${!required && fallback.has ? ` /* default ${JSON.stringify(fallback.value)} */` : ''}`;
  });
  return `${toIdentifier(fn.name)}(input${params.length ? `: { ${params.join('; ')} }` : '?: Record<string, unknown>'}): Promise<${resultShape(fn.outputSchema, TS_TYPES, 'unknown')}>`;
}

export function catalogEntries(functions: readonly CatalogFunction[]): CatalogEntry[] {
  return functions.map((fn) => ({
    service: fn.service,
    name: fn.name,
    serviceIdentifier: toIdentifier(fn.service),
    identifier: toIdentifier(fn.name),
    language: fn.language,
    version: fn.version,
    pythonSignature: pythonSignature(fn),
    typescriptSignature: typescriptSignature(fn),
    parameters: pythonParameters(fn),
    returns: resultShape(fn.outputSchema, PY_TYPES, 'Any'),
    description: fn.description,
  }));
}

/** Function identifiers that exist in more than one service: only reachable through their service. */
export function ambiguousIdentifiers(entries: readonly CatalogEntry[]): Set<string> {
  const seen = new Map<string, number>();
  for (const entry of entries) seen.set(entry.identifier, (seen.get(entry.identifier) ?? 0) + 1);
  return new Set([...seen].filter(([, count]) => count > 1).map(([identifier]) => identifier));
}

/** The text of `functions.__doc__` (Python) and `functions.__doc__` (TypeScript). */
export function renderCatalogDoc(namespace: string, entries: readonly CatalogEntry[], language: 'python' | 'typescript'): string {
  const lines: string[] = [];
  if (language === 'python') {
    lines.push(`Functions of MCPWorks namespace "${namespace}". Call with keyword arguments; each returns a JSON value.`);
    lines.push('  from functions import NAME            # or: from functions.SERVICE import NAME');
    lines.push('  result = NAME(arg=value)              # set `result` to return data from execute');
  } else {
    lines.push(`Functions of MCPWorks namespace "${namespace}". Each takes one input object and returns a Promise of a JSON value.`);
    lines.push('  import { NAME } from "functions";      // or: import { NAME } from "functions/SERVICE"');
    lines.push('  result = await NAME({ arg: value });   // assign `result` to return data from execute');
  }
  if (entries.length === 0) lines.push('', '(no functions yet: create some on the create endpoint)');
  const ambiguous = ambiguousIdentifiers(entries);
  let service = '';
  for (const entry of [...entries].sort((a, b) => a.service.localeCompare(b.service) || a.name.localeCompare(b.name))) {
    if (entry.service !== service) {
      service = entry.service;
      lines.push('', `service ${entry.serviceIdentifier}${entry.service !== entry.serviceIdentifier ? ` ("${entry.service}")` : ''}:`);
    }
    const signature = language === 'python' ? entry.pythonSignature : entry.typescriptSignature;
    lines.push(
      `  ${signature}    [${entry.language} v${entry.version}${ambiguous.has(entry.identifier) ? `; also in another service: use functions.${entry.serviceIdentifier}.${entry.identifier}` : ''}]`,
    );
    if (entry.description) for (const line of entry.description.split('\n').slice(0, 6)) lines.push(`      ${line}`);
  }
  return `${lines.join('\n')}\n`;
}
