import type { Scope } from '../core/accounts.js';
import { DomainError, invalid, notFound } from '../core/errors.js';
import {
  buildDefinition,
  buildMetadata,
  definitionChanged,
  type FunctionDefinition,
  type FunctionDefinitionInput,
} from '../core/functions.js';
import { functionNameRoom, toIdentifier, validateEntityName, validateNamespaceName, validateToolNameBudget } from '../core/names.js';
import { findTemplate, TEMPLATES } from '../core/templates.js';
import { assertWithinLimit, schemaBytes, storedBytes } from '../core/storage-limits.js';
import { DEFAULT_TIERS, isKnownTier, limitsFor, type TierLimits } from '../core/tiers.js';
import { CatalogStore, versionToDefinition, type Trx, type VersionSummaryRow } from '../store/catalog-store.js';
import type { FunctionRow, FunctionVersionRow, NamespaceRow, ServiceRow } from '../store/schema.js';
import type { CompileVerdict } from '../run/schema-guard.js';
import type { KeyPrincipal } from './accounts.js';

/** What namespace lookups need of a caller: its account and the namespace it is limited to (a key's or an agent's principal). */
type NamespaceReach = Pick<KeyPrincipal, 'accountId' | 'namespace'>;
import { checkSyntax } from '../run/syntax-check.js';
import { suggestion } from '../core/suggest.js';
import { networkNeed, NETWORK_OFF_WARNING } from '../core/network-needs.js';

/** Work that must succeed before a version may be stored (e.g. installing a TypeScript function's npm packages, queued per account). */
export type VersionPreparer = (definition: FunctionDefinition, accountId: string) => Promise<void>;

/** Compiles a user's JSON Schema where untrusted work may run (the schema workers), never inline. */
export interface SchemaCompiler {
  compile(schema: Record<string, unknown>, accountId: string): Promise<CompileVerdict>;
}

export interface FunctionInput extends FunctionDefinitionInput {
  service?: unknown;
  name?: unknown;
  description?: unknown;
  tags?: unknown;
  template?: unknown;
  restoreVersion?: unknown;
}

const iso = (d: Date): string => new Date(d).toISOString();
/** The largest version number the store can hold (an INTEGER column). */
const MAX_VERSION = 2_147_483_647;

/**
 * Function not-found errors thrown where a transaction is open (where listing the service's other
 * functions could wait on that transaction); explained() adds the suggestions once it is over.
 */
const missingFunctions = new WeakMap<DomainError, { service: ServiceRow; name: string }>();

function requireScope(principal: KeyPrincipal, scope: Scope): void {
  if (!principal.scopes.includes(scope)) throw new DomainError('forbidden', `this API key lacks the '${scope}' scope`);
}

function versionSummary(v: VersionSummaryRow) {
  return {
    version: v.version,
    language: v.language,
    requirements: v.requirements,
    code_bytes: v.code_bytes,
    definition_hash: v.definition_hash,
    restored_from: v.restored_from,
    created_at: iso(v.created_at),
  };
}

/** Business rules of the create endpoint: namespaces, services, functions and versions. */
export class CatalogService {
  constructor(
    private readonly store: CatalogStore,
    private readonly prepareVersion: VersionPreparer,
    private readonly schemas: SchemaCompiler,
    private readonly tiers: Readonly<Record<string, TierLimits>> = DEFAULT_TIERS,
    private readonly options: {
      /** Refuses code that does not parse in its language (validation_error with the line). */
      syntax?: (definition: FunctionDefinition, accountId: string) => Promise<void>;
      /** Whether runs get network egress (MCPWORKS_SANDBOX_NETWORK; default off): functions that need it are warned about when it is off. */
      sandboxNetwork?: boolean;
    } = {},
  ) {}

  private syntax(definition: FunctionDefinition, accountId: string): Promise<void> {
    return (this.options.syntax ?? checkSyntax)(definition, accountId);
  }

  /** Warnings for a stored definition: it needs the network and the sandbox network is off. */
  private warnings(definition: FunctionDefinition, template?: unknown): { warnings?: string[] } {
    if (this.options.sandboxNetwork ?? false) return {};
    const reason = networkNeed(definition, typeof template === 'string' ? template : undefined);
    return reason ? { warnings: [NETWORK_OFF_WARNING(reason)] } : {};
  }

  /** The caller's plan; one the operator removed from MCPWORKS_TIERS gets a clear refusal. */
  private limits(principal: KeyPrincipal): TierLimits {
    if (!isKnownTier(principal.tier, this.tiers)) {
      throw new DomainError(
        'forbidden',
        `this account's plan '${principal.tier}' is not configured on this server; ask the operator to add it to MCPWORKS_TIERS or change the account's tier`,
      );
    }
    return limitsFor(principal.tier, this.tiers);
  }

  /**
   * Storage limits for a new version (of a new function or an existing one), checked inside the
   * transaction that holds the account and namespace locks, before anything is written.
   */
  private async assertVersionFits(
    trx: Trx,
    principal: KeyPrincipal,
    namespaceId: string,
    next: FunctionDefinition,
    existing: { functionId: string; activeSchemaBytes: number } | null,
  ): Promise<void> {
    const limits = this.limits(principal);
    const usage = await this.store.accountUsage(principal.accountId, trx);
    if (!existing) assertWithinLimit('functions', limits, principal.tier, usage.functions);
    else assertWithinLimit('versionsPerFunction', limits, principal.tier, await this.store.versionCount(existing.functionId, trx));
    assertWithinLimit('storedBytes', limits, principal.tier, usage.storedBytes, storedBytes(next));
    const schemas = (await this.store.namespaceSchemaBytes(namespaceId, trx)) - (existing?.activeSchemaBytes ?? 0);
    assertWithinLimit('schemaBytesPerNamespace', limits, principal.tier, schemas, schemaBytes(next));
  }

  async makeNamespace(principal: KeyPrincipal, nameInput: unknown, description: unknown) {
    requireScope(principal, 'write');
    const name = validateNamespaceName(nameInput);
    if (principal.namespace !== null && principal.namespace !== name) {
      throw new DomainError('forbidden', `this API key is limited to namespace '${principal.namespace}'`);
    }
    const text = description === undefined ? '' : this.description(description);
    const limits = this.limits(principal);
    const row = await this.store.withAccountLock(principal.accountId, async (trx) => {
      assertWithinLimit('namespaces', limits, principal.tier, (await this.store.accountUsage(principal.accountId, trx)).namespaces);
      return this.store.createNamespace(principal.accountId, name, text, trx);
    });
    if (!row) throw new DomainError('conflict', `namespace name '${name}' is not available`, { field: 'name' });
    return { name: row.name, description: row.description, created_at: iso(row.created_at) };
  }

  async listNamespaces(principal: KeyPrincipal) {
    requireScope(principal, 'read');
    const rows = await this.store.listNamespaces(principal.accountId);
    return rows
      .filter((r) => principal.namespace === null || r.name === principal.namespace)
      .map((r) => ({ name: r.name, description: r.description, created_at: iso(r.created_at) }));
  }

  /**
   * The namespaces → services → functions the principal reaches (the dashboard's Functions page):
   * a constant number of queries, at most `maxFunctions` functions.
   */
  async tree(principal: KeyPrincipal, maxFunctions: number) {
    requireScope(principal, 'read');
    const { namespaces, services, functions } = await this.store.accountTree(principal.accountId, maxFunctions);
    const group = <T, K>(rows: T[], key: (row: T) => K) => {
      const groups = new Map<K, T[]>();
      for (const row of rows) {
        const list = groups.get(key(row));
        if (list) list.push(row);
        else groups.set(key(row), [row]);
      }
      return groups;
    };
    const byService = group(functions, (f) => f.service_id);
    const byNamespace = group(services, (s) => s.namespace_id);
    return namespaces
      .filter((ns) => this.keyReaches(principal, ns.name))
      .map((ns) => ({
        name: ns.name,
        description: ns.description,
        services: (byNamespace.get(ns.id) ?? []).map((s) => ({
          name: s.name,
          description: s.description,
          functions: (byService.get(s.id) ?? []).map(({ service_id: _, ...fn }) => ({ ...fn, updated_at: iso(fn.updated_at) })),
        })),
      }));
  }

  /** Every namespace of an account, for its login session (the dashboard's Connect page). */
  async accountNamespaces(accountId: string) {
    const rows = await this.store.listNamespaces(accountId);
    return rows.map((r) => ({ name: r.name, description: r.description, created_at: iso(r.created_at) }));
  }

  /** The caller's namespace; anything else (another account's, another key's limit) is not found. */
  async namespace(principal: NamespaceReach, name: string): Promise<NamespaceRow> {
    const row = this.keyReaches(principal, name) ? await this.store.findNamespace(principal.accountId, name) : undefined;
    if (row) return row;
    // Only the caller's own namespaces (that its key reaches) are named: another account's look absent.
    const own = (await this.store.listNamespaces(principal.accountId)).map((r) => r.name).filter((n) => this.keyReaches(principal, n));
    const hint = suggestion(name, own, 'namespaces');
    throw new DomainError('not_found', `namespace '${name}' not found; create it with make_namespace.${hint.text}`, hint.details);
  }

  /** namespace() for a row the caller already read: the principal's account's namespace called `name`, or none. */
  visibleNamespace<T>(principal: NamespaceReach, name: string, row: T | null | undefined): T {
    if (!row || !this.keyReaches(principal, name))
      throw new DomainError('not_found', `namespace '${name}' not found; create it with make_namespace`);
    return row;
  }

  /** A key limited to one namespace reaches no other. */
  private keyReaches(principal: NamespaceReach, name: string): boolean {
    return principal.namespace === null || principal.namespace === name;
  }

  async makeService(principal: KeyPrincipal, nsName: string, nameInput: unknown, description: unknown) {
    requireScope(principal, 'write');
    const ns = await this.namespace(principal, nsName);
    const name = validateEntityName('service', nameInput);
    const text = description === undefined ? '' : this.description(description);
    const row = await this.store.withNamespaceLock(ns.id, async (trx) => {
      // One lookup answers both: a service with this identifier, or a function that would collide.
      const holder = await this.store.identifierHolder(ns.id, toIdentifier(name), trx);
      if (holder?.kind === 'service') throw this.nameClash('service', name, holder.name);
      if (holder?.kind === 'function') throw this.codeModeClash('service', name, holder);
      assertWithinLimit(
        'services',
        this.limits(principal),
        principal.tier,
        (await this.store.accountUsage(principal.accountId, trx)).services,
      );
      return this.store.createService(ns.id, name, text, trx);
    });
    if (!row) throw new DomainError('conflict', `service '${name}' already exists`, { field: 'name' });
    // Said at make time: how long its functions' names may be for their tool names to fit the budget.
    return { name: row.name, description: row.description, created_at: iso(row.created_at), max_function_name: functionNameRoom(row.name) };
  }

  async listServices(principal: KeyPrincipal, nsName: string) {
    requireScope(principal, 'read');
    const ns = await this.namespace(principal, nsName);
    const rows = await this.store.listServices(ns.id);
    return rows.map((r) => ({ ...r, created_at: iso(r.created_at) }));
  }

  async deleteService(principal: KeyPrincipal, nsName: string, nameInput: unknown) {
    requireScope(principal, 'write');
    const service = await this.service(principal, nsName, nameInput);
    await this.store.withNamespaceLock(service.namespace_id, async (trx) => {
      const locked = await this.store.lockedFunctionNames(service.id, trx);
      if (locked.length > 0) {
        throw new DomainError('locked', `service '${service.name}' has locked functions (${locked.join(', ')}); unlock them first`, {
          functions: locked,
        });
      }
      await this.store.deleteService(service.id, trx);
    });
    return { deleted: service.name };
  }

  async makeFunction(principal: KeyPrincipal, nsName: string, input: FunctionInput) {
    requireScope(principal, 'write');
    const service = await this.service(principal, nsName, input.service);
    const name = validateEntityName('function', input.name);
    validateToolNameBudget(service.name, name);
    let definitionInput: FunctionDefinitionInput = input;
    let metadataInput: { description?: unknown; tags?: unknown } = input;
    if (input.template !== undefined) {
      const template = typeof input.template === 'string' ? findTemplate(input.template) : undefined;
      if (!template) {
        throw invalid(`unknown template ${JSON.stringify(input.template)}; templates: ${TEMPLATES.map((t) => t.name).join(', ')}`, {
          field: 'template',
        });
      }
      definitionInput = {
        language: template.language,
        code: template.code,
        inputSchema: template.inputSchema,
        outputSchema: template.outputSchema,
        requirements: template.requirements,
        ...definedOnly(input as Record<string, unknown>, [
          'language',
          'backend',
          'code',
          'config',
          'inputSchema',
          'outputSchema',
          'requirements',
          'requiredEnv',
          'optionalEnv',
        ]),
      };
      metadataInput = { description: input.description ?? template.description, tags: input.tags ?? template.tags };
    }
    const definition = buildDefinition(definitionInput, null);
    const metadata = buildMetadata(metadataInput, null);
    const fits = async (trx: Trx) => {
      const clash = await this.store.findFunctionByIdentifier(service.id, name, trx);
      if (clash) throw this.nameClash('function', name, clash.name);
      const holder = await this.store.identifierHolder(service.namespace_id, toIdentifier(name), trx);
      if (holder?.kind === 'service') throw this.codeModeClash('function', name, holder);
      await this.assertVersionFits(trx, principal, service.namespace_id, definition, null);
    };
    // Names and limits first: a refused call must not make the server compile schemas or install
    // packages. Checked again where the function is written (something may have changed meanwhile).
    await this.store.withNamespaceLock(service.namespace_id, fits);
    await this.syntax(definition, principal.accountId);
    await this.compileSchemas(principal, definition.inputSchema, definition.outputSchema);
    await this.prepareVersion(definition, principal.accountId);
    const row = await this.store.withNamespaceLock(service.namespace_id, async (trx) => {
      await fits(trx);
      return this.store.createFunction(trx, service.id, name, metadata, definition);
    });
    if (!row) throw new DomainError('conflict', `function '${name}' already exists in service '${service.name}'`, { field: 'name' });
    return {
      service: service.name,
      name: row.name,
      version: 1,
      language: definition.language,
      created: true,
      ...this.warnings(definition, input.template),
    };
  }

  updateFunction(principal: KeyPrincipal, nsName: string, input: FunctionInput) {
    return this.updateFunctionInner(principal, nsName, input).catch(async (error: unknown) => {
      throw await this.explained(error);
    });
  }

  private async updateFunctionInner(principal: KeyPrincipal, nsName: string, input: FunctionInput) {
    requireScope(principal, 'write');
    const service = await this.service(principal, nsName, input.service);
    const name = typeof input.name === 'string' ? input.name : validateEntityName('function', input.name);
    const restore = input.restoreVersion;
    if (restore !== undefined) {
      if (typeof restore !== 'number' || !Number.isInteger(restore) || restore < 1)
        throw invalid('restore_version must be a positive integer', { field: 'restore_version' });
      const conflicting = [
        'code',
        'config',
        'inputSchema',
        'outputSchema',
        'requirements',
        'language',
        'backend',
        'requiredEnv',
        'optionalEnv',
      ].filter((k) => (input as Record<string, unknown>)[k] !== undefined);
      if (conflicting.length > 0)
        throw invalid(`restore_version cannot be combined with ${conflicting.join(', ')}`, { field: 'restore_version' });
    }
    // Exists and is not locked: checked before any work is done for the change, and again where it is written.
    const writable = (fn: FunctionRow | undefined): FunctionRow => {
      if (!fn) throw this.functionNotFound(service, name);
      if (fn.locked) throw this.lockedError(service.name, fn.name);
      return fn;
    };

    // Validate and prepare (npm installs can be slow) against the current version outside the lock;
    // inside it, rebuild against whatever is current then. Only a concurrent change of what needs
    // preparing (language or requirements) sends us round again.
    for (let attempt = 0; attempt < 5; attempt++) {
      const current = await this.activeVersion(service, name);
      const active = versionToDefinition(current.version);
      const draft =
        restore === undefined
          ? buildDefinition(input, active)
          : versionToDefinition(await this.restoreSource(service, current.fn, restore));
      if (restore !== undefined || definitionChanged(active, draft)) {
        // Lock and limits first: a refused call must not make the server compile or install anything.
        await this.store.withFunctionLocked(service.namespace_id, service.id, name, async (trx, row) => {
          const fn = writable(row);
          await this.assertVersionFits(trx, principal, service.namespace_id, draft, await this.activeSizes(trx, fn));
        });
        // New code (or a new language) must parse; a restored version is copied as it was.
        if (restore === undefined && (draft.code !== active.code || draft.language !== active.language))
          await this.syntax(draft, principal.accountId);
        // Only schemas given now are new; stored ones (kept, or restored) were compiled when created.
        if (restore === undefined)
          await this.compileSchemas(
            principal,
            input.inputSchema == null ? null : draft.inputSchema,
            input.outputSchema == null ? null : draft.outputSchema,
          );
        // A restored version's packages may have been collected since (unreferenced): installed again.
        await this.prepareVersion(draft, principal.accountId);
      }
      const prepared = preparationKey(draft);

      const outcome = await this.store.withFunctionLocked(service.namespace_id, service.id, name, async (trx, row) => {
        const fn = writable(row);
        const metadata = buildMetadata(input, { description: fn.description, tags: fn.tags });
        if (restore !== undefined) {
          const source = await this.store.versionInTrx(trx, fn.id, restore);
          if (!source) throw this.versionNotFound(service, fn, restore);
          await this.assertVersionFits(trx, principal, service.namespace_id, versionToDefinition(source), await this.activeSizes(trx, fn));
          const version = await this.store.appendVersion(trx, fn, versionToDefinition(source), metadata, restore);
          return { version, new_version: true, restored_from: restore };
        }
        const activeRow = await this.store.versionInTrx(trx, fn.id, fn.active_version);
        if (!activeRow) throw this.functionNotFound(service, name);
        const active = versionToDefinition(activeRow);
        const next = buildDefinition(input, active);
        if (definitionChanged(active, next)) {
          if (preparationKey(next) !== prepared) return 'retry' as const;
          await this.assertVersionFits(trx, principal, service.namespace_id, next, {
            functionId: fn.id,
            activeSchemaBytes: Number(activeRow.schema_bytes),
          });
          const version = await this.store.appendVersion(trx, fn, next, metadata, null);
          return { version, new_version: true, ...this.warnings(next) };
        }
        await this.store.updateMetadata(trx, fn.id, metadata);
        return { version: fn.active_version, new_version: false };
      });
      if (outcome !== 'retry') return { service: service.name, name, ...outcome };
    }
    throw new DomainError('conflict', `function '${service.name}.${name}' is being updated concurrently; try again`);
  }

  deleteFunction(principal: KeyPrincipal, nsName: string, serviceInput: unknown, nameInput: unknown) {
    return this.deleteFunctionInner(principal, nsName, serviceInput, nameInput).catch(async (error: unknown) => {
      throw await this.explained(error);
    });
  }

  private async deleteFunctionInner(principal: KeyPrincipal, nsName: string, serviceInput: unknown, nameInput: unknown) {
    requireScope(principal, 'write');
    const service = await this.service(principal, nsName, serviceInput);
    const name = String(nameInput ?? '');
    return this.store.withFunctionLocked(service.namespace_id, service.id, name, async (trx, fn) => {
      if (!fn) throw this.functionNotFound(service, name);
      if (fn.locked) throw this.lockedError(service.name, fn.name);
      await this.store.deleteFunction(trx, fn.id);
      return { deleted: `${service.name}.${fn.name}` };
    });
  }

  setLocked(principal: KeyPrincipal, nsName: string, serviceInput: unknown, nameInput: unknown, locked: boolean) {
    return this.setLockedInner(principal, nsName, serviceInput, nameInput, locked).catch(async (error: unknown) => {
      throw await this.explained(error);
    });
  }

  private async setLockedInner(principal: KeyPrincipal, nsName: string, serviceInput: unknown, nameInput: unknown, locked: boolean) {
    requireScope(principal, 'write');
    const service = await this.service(principal, nsName, serviceInput);
    const name = String(nameInput ?? '');
    return this.store.withFunctionLocked(service.namespace_id, service.id, name, async (trx, fn) => {
      if (!fn) throw this.functionNotFound(service, name);
      await this.store.setLocked(trx, fn.id, locked);
      return { service: service.name, name: fn.name, locked };
    });
  }

  async listFunctions(principal: KeyPrincipal, nsName: string, serviceInput: unknown, tag: unknown) {
    requireScope(principal, 'read');
    const service = await this.service(principal, nsName, serviceInput);
    if (tag !== undefined && typeof tag !== 'string') throw invalid('tag must be a string', { field: 'tag' });
    const rows = await this.store.listFunctions(service.id, tag);
    return rows.map((r) => ({ ...r, updated_at: iso(r.updated_at) }));
  }

  describeFunction(principal: KeyPrincipal, nsName: string, serviceInput: unknown, nameInput: unknown, versionInput: unknown) {
    return this.describeFunctionInner(principal, nsName, serviceInput, nameInput, versionInput).catch(async (error: unknown) => {
      throw await this.explained(error);
    });
  }

  private async describeFunctionInner(
    principal: KeyPrincipal,
    nsName: string,
    serviceInput: unknown,
    nameInput: unknown,
    versionInput: unknown,
  ) {
    requireScope(principal, 'read');
    const service = await this.service(principal, nsName, serviceInput);
    const { fn } = await this.activeVersion(service, String(nameInput ?? ''));
    const versions = await this.store.listVersions(fn.id);
    const wanted = versionInput === undefined ? fn.active_version : versionInput;
    const shown = versions.some((v) => v.version === wanted) ? await this.store.findVersion(fn.id, wanted as number) : undefined;
    if (!shown)
      throw new DomainError(
        'not_found',
        `version ${JSON.stringify(wanted)} of '${service.name}.${fn.name}' not found; versions are 1-${fn.active_version}`,
      );
    const d = versionToDefinition(shown);
    return {
      service: service.name,
      name: fn.name,
      description: fn.description,
      tags: fn.tags,
      locked: fn.locked,
      active_version: fn.active_version,
      shown_version: shown.version,
      language: d.language,
      backend: d.backend,
      code: d.code,
      config: d.config,
      input_schema: d.inputSchema,
      output_schema: d.outputSchema,
      requirements: d.requirements,
      required_env: d.requiredEnv,
      optional_env: d.optionalEnv,
      versions: versions.map(versionSummary),
      created_at: iso(fn.created_at),
      updated_at: iso(fn.updated_at),
    };
  }

  /** Refuses a schema that ajv rejects, or whose compiling overruns its worker's deadline or heap. */
  private async compileSchemas(
    principal: KeyPrincipal,
    inputSchema: Record<string, unknown> | null,
    outputSchema: Record<string, unknown> | null,
  ): Promise<void> {
    for (const [field, schema] of [
      ['input_schema', inputSchema],
      ['output_schema', outputSchema],
    ] as const) {
      if (!schema) continue;
      const verdict = await this.schemas.compile(schema, principal.accountId);
      if (verdict.ok) continue;
      if ('invalid' in verdict)
        throw new DomainError('invalid_schema', `${field} is not a valid JSON Schema: ${verdict.invalid}`, { field });
      if (verdict.busy) throw new DomainError('rate_limited', `${field} could not be checked now: ${verdict.stopped}`, { field });
      throw new DomainError('invalid_schema', `compiling ${field} was stopped: ${verdict.stopped}`, { field });
    }
  }

  private async service(principal: KeyPrincipal, nsName: string, nameInput: unknown): Promise<ServiceRow> {
    const ns = await this.namespace(principal, nsName);
    if (typeof nameInput !== 'string' || nameInput === '') throw invalid('service is required', { field: 'service' });
    const service = await this.store.findService(ns.id, nameInput);
    if (!service) {
      const hint = suggestion(
        nameInput,
        (await this.store.listServices(ns.id)).map((r) => r.name),
        `services in namespace '${ns.name}'`,
      );
      throw new DomainError(
        'not_found',
        `service '${nameInput}' not found in namespace '${ns.name}'; create it with make_service.${hint.text}`,
        hint.details,
      );
    }
    return service;
  }

  private async activeVersion(service: ServiceRow, name: string): Promise<{ fn: FunctionRow; version: FunctionVersionRow }> {
    const fn = await this.store.findFunction(service.id, name);
    if (!fn) throw this.functionNotFound(service, name);
    const version = await this.store.findVersion(fn.id, fn.active_version);
    if (!version) throw this.functionNotFound(service, name);
    return { fn, version };
  }

  /** The version a restore copies (versions are immutable; the write reads it again under the lock). */
  private async restoreSource(service: ServiceRow, fn: FunctionRow, restore: number): Promise<FunctionVersionRow> {
    // A number past the column's integer range is no version (the query would fail on it).
    const source = restore <= MAX_VERSION ? await this.store.findVersion(fn.id, restore) : undefined;
    if (!source) throw this.versionNotFound(service, fn, restore);
    return source;
  }

  private functionNotFound(service: ServiceRow, name: string): DomainError {
    const error = notFound('function', `${service.name}.${name}`);
    missingFunctions.set(error, { service, name });
    return error;
  }

  /** A function not-found, with the service's function names and the nearest ones (outside any transaction). */
  private async explained(error: unknown): Promise<unknown> {
    const missing = error instanceof DomainError ? missingFunctions.get(error) : undefined;
    if (!missing) return error;
    const names = (await this.store.listFunctions(missing.service.id)).map((r) => r.name);
    const hint = suggestion(missing.name, names, `functions in service '${missing.service.name}'`);
    return new DomainError('not_found', `function '${missing.service.name}.${missing.name}' not found.${hint.text}`, hint.details);
  }

  private versionNotFound(service: ServiceRow, fn: FunctionRow, version: number): DomainError {
    return new DomainError(
      'not_found',
      `version ${version} of '${service.name}.${fn.name}' not found; versions are 1-${fn.active_version}`,
    );
  }

  private async activeSizes(trx: Trx, fn: FunctionRow): Promise<{ functionId: string; activeSchemaBytes: number }> {
    const active = await this.store.versionInTrx(trx, fn.id, fn.active_version);
    return { functionId: fn.id, activeSchemaBytes: active ? Number(active.schema_bytes) : 0 };
  }

  private description(value: unknown): string {
    return buildMetadata({ description: value }, null).description;
  }

  private nameClash(kind: string, name: string, existing: string): DomainError {
    return new DomainError(
      'conflict',
      existing === name
        ? `${kind} '${name}' already exists`
        : `${kind} '${name}' would have the same identifier as existing ${kind} '${existing}' ('-' becomes '_')`,
      { field: 'name' },
    );
  }

  private codeModeClash(kind: string, name: string, holder: { kind: string; name: string }): DomainError {
    return new DomainError(
      'conflict',
      `${kind} '${name}' would be '${toIdentifier(name)}' in code mode, which ${holder.kind} '${holder.name}' already is (services and functions share the functions package); choose another name`,
      { field: 'name' },
    );
  }

  private lockedError(service: string, name: string): DomainError {
    return new DomainError('locked', `function '${service}.${name}' is locked; call unlock_function first`);
  }
}

/** What a VersionPreparer depends on: two definitions with equal keys need no second preparation. */
function preparationKey(definition: FunctionDefinition): string {
  return JSON.stringify([definition.language, definition.requirements]);
}

function definedOnly(source: Record<string, unknown>, keys: string[]): Record<string, unknown> {
  return Object.fromEntries(keys.filter((k) => source[k] !== undefined).map((k) => [k, source[k]]));
}
