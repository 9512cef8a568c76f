import { randomUUID } from 'node:crypto';
import { sql, type Kysely, type Transaction } from 'kysely';
import type { FunctionDefinition, FunctionMetadata } from '../core/functions.js';
import { definitionHash } from '../core/functions.js';
import { schemaBytes, storedBytes } from '../core/storage-limits.js';
import type { Db } from './database.js';
import type { Database, FunctionRow, FunctionVersionRow, NamespaceRow, ServiceRow } from './schema.js';

export type Trx = Transaction<Database>;
/** A query executor: the database, or a transaction that is already open. */
type Exec = Kysely<Database>;

export interface ServiceSummary {
  name: string;
  description: string;
  function_count: number;
  call_count: number;
  created_at: Date;
}

export interface FunctionSummary {
  name: string;
  description: string;
  tags: string[];
  language: string;
  active_version: number;
  locked: boolean;
  updated_at: Date;
}

/** Queries for namespaces, services, functions and their immutable versions. */
export class CatalogStore {
  constructor(private readonly db: Db) {}

  /**
   * Runs `work` holding the account row (the lock admission takes too): per-account storage limits
   * count and insert under it, so two parallel creates cannot both pass a limit.
   */
  async withAccountLock<T>(accountId: string, work: (trx: Trx) => Promise<T>): Promise<T> {
    return this.db.transaction().execute(async (trx) => {
      await trx.selectFrom('accounts').select('id').where('id', '=', accountId).forUpdate().executeTakeFirst();
      return work(trx);
    });
  }

  async createNamespace(accountId: string, name: string, description: string, exec: Exec = this.db): Promise<NamespaceRow | undefined> {
    return exec
      .insertInto('namespaces')
      .values({ id: randomUUID(), account_id: accountId, name, description })
      .onConflict((oc) => oc.column('name').doNothing())
      .returningAll()
      .executeTakeFirst();
  }

  listNamespaces(accountId: string): Promise<NamespaceRow[]> {
    return this.db.selectFrom('namespaces').selectAll().where('account_id', '=', accountId).orderBy('name').execute();
  }

  /** Only the caller's own namespace: another account's is indistinguishable from a missing one. */
  findNamespace(accountId: string, name: string): Promise<NamespaceRow | undefined> {
    return this.db.selectFrom('namespaces').selectAll().where('account_id', '=', accountId).where('name', '=', name).executeTakeFirst();
  }

  /**
   * Runs `work` holding the namespace row: every change to a namespace's services and functions
   * takes this lock first (the catalog-version triggers update the same row), so checks such as
   * "is this identifier free" and the write that follows cannot interleave, and locks are always
   * taken in one order (namespace, then function), which rules out deadlocks.
   */
  async withNamespaceLock<T>(namespaceId: string, work: (trx: Trx) => Promise<T>): Promise<T> {
    return this.db.transaction().execute(async (trx) => {
      // The account first (storage limits are per account; admission locks it too), then the
      // namespace: one order everywhere.
      await trx
        .selectFrom('accounts')
        .select('id')
        .where('id', '=', (eb) => eb.selectFrom('namespaces').select('account_id').where('id', '=', namespaceId))
        .forUpdate()
        .executeTakeFirst();
      await trx.selectFrom('namespaces').select('id').where('id', '=', namespaceId).forUpdate().executeTakeFirst();
      return work(trx);
    });
  }

  /** Usage counted for the storage limits; call holding the account's lock. */
  async accountUsage(
    accountId: string,
    exec: Exec,
  ): Promise<{ namespaces: number; services: number; functions: number; storedBytes: number }> {
    const row = await sql<{ namespaces: number; services: number; functions: number; stored_bytes: string | number }>`
      SELECT
        (SELECT count(*)::int FROM namespaces n WHERE n.account_id = ${accountId}) AS namespaces,
        (SELECT count(*)::int FROM services s JOIN namespaces n ON n.id = s.namespace_id WHERE n.account_id = ${accountId}) AS services,
        (SELECT count(*)::int FROM functions f JOIN services s ON s.id = f.service_id JOIN namespaces n ON n.id = s.namespace_id WHERE n.account_id = ${accountId}) AS functions,
        (SELECT coalesce(sum(v.stored_bytes), 0) FROM function_versions v JOIN functions f ON f.id = v.function_id
           JOIN services s ON s.id = f.service_id JOIN namespaces n ON n.id = s.namespace_id WHERE n.account_id = ${accountId}) AS stored_bytes`.execute(
      exec,
    );
    const r = row.rows[0]!;
    return {
      namespaces: Number(r.namespaces),
      services: Number(r.services),
      functions: Number(r.functions),
      storedBytes: Number(r.stored_bytes),
    };
  }

  /** Schema bytes of a namespace's active versions (what its tool list carries). */
  async namespaceSchemaBytes(namespaceId: string, exec: Exec): Promise<number> {
    const row = await exec
      .selectFrom('function_versions as v')
      .innerJoin('functions as f', (join) => join.onRef('f.id', '=', 'v.function_id').onRef('f.active_version', '=', 'v.version'))
      .innerJoin('services as s', 's.id', 'f.service_id')
      .select(sql<string | number>`coalesce(sum(v.schema_bytes), 0)`.as('bytes'))
      .where('s.namespace_id', '=', namespaceId)
      .executeTakeFirstOrThrow();
    return Number(row.bytes);
  }

  async versionCount(functionId: string, exec: Exec): Promise<number> {
    const row = await exec
      .selectFrom('function_versions')
      .select(sql<number>`count(*)::int`.as('n'))
      .where('function_id', '=', functionId)
      .executeTakeFirstOrThrow();
    return Number(row.n);
  }

  async createService(namespaceId: string, name: string, description: string, exec: Exec = this.db): Promise<ServiceRow | undefined> {
    return exec
      .insertInto('services')
      .values({ id: randomUUID(), namespace_id: namespaceId, name, description })
      .onConflict((oc) => oc.doNothing())
      .returningAll()
      .executeTakeFirst();
  }

  findService(namespaceId: string, name: string): Promise<ServiceRow | undefined> {
    return this.db.selectFrom('services').selectAll().where('namespace_id', '=', namespaceId).where('name', '=', name).executeTakeFirst();
  }

  /**
   * Code mode puts services and functions side by side in one package (`functions.utils`,
   * `functions.hello`): the name of whichever already holds this identifier in the namespace.
   */
  async identifierHolder(
    namespaceId: string,
    identifier: string,
    exec: Exec = this.db,
  ): Promise<{ kind: 'service' | 'function'; name: string } | undefined> {
    const service = await exec
      .selectFrom('services')
      .select('name')
      .where('namespace_id', '=', namespaceId)
      .where(sql<string>`replace(name, '-', '_')`, '=', identifier)
      .executeTakeFirst();
    if (service) return { kind: 'service', name: service.name };
    const fn = await exec
      .selectFrom('functions as f')
      .innerJoin('services as s', 's.id', 'f.service_id')
      .select(['f.name', 's.name as service'])
      .where('s.namespace_id', '=', namespaceId)
      .where(sql<string>`replace(f.name, '-', '_')`, '=', identifier)
      .executeTakeFirst();
    return fn ? { kind: 'function', name: `${fn.service}.${fn.name}` } : undefined;
  }

  async listServices(namespaceId: string): Promise<ServiceSummary[]> {
    const rows = await this.db
      .selectFrom('services as s')
      .select([
        's.name',
        's.description',
        's.created_at',
        sql<number>`(SELECT count(*)::int FROM functions f WHERE f.service_id = s.id)`.as('function_count'),
        // Tool-mode runs name their service; code-mode runs list the functions they called.
        sql<number>`(SELECT count(*)::int FROM executions e WHERE e.namespace_id = s.namespace_id AND (e.service_name = s.name
          OR (e.mode = 'code' AND EXISTS (SELECT 1 FROM jsonb_array_elements_text(e.functions) called WHERE split_part(called, '.', 1) = s.name))))`.as(
          'call_count',
        ),
      ])
      .where('s.namespace_id', '=', namespaceId)
      .orderBy('s.name')
      .execute();
    return rows.map((r) => ({ ...r, function_count: Number(r.function_count), call_count: Number(r.call_count) }));
  }

  /** Names of locked functions in a service (they block deleting it). */
  async lockedFunctionNames(serviceId: string, exec: Exec = this.db): Promise<string[]> {
    const rows = await exec.selectFrom('functions').select('name').where('service_id', '=', serviceId).where('locked', '=', true).execute();
    return rows.map((r) => r.name);
  }

  async deleteService(serviceId: string, exec: Exec = this.db): Promise<void> {
    await exec.deleteFrom('services').where('id', '=', serviceId).execute();
  }

  findFunctionByIdentifier(serviceId: string, name: string, exec: Exec = this.db): Promise<FunctionRow | undefined> {
    return exec
      .selectFrom('functions')
      .selectAll()
      .where('service_id', '=', serviceId)
      .where(sql<string>`replace(name, '-', '_')`, '=', name.replace(/-/g, '_'))
      .executeTakeFirst();
  }

  /** Inserts a function and its version 1; call inside withNamespaceLock. */
  async createFunction(
    trx: Trx,
    serviceId: string,
    name: string,
    metadata: FunctionMetadata,
    definition: FunctionDefinition,
  ): Promise<FunctionRow | undefined> {
    {
      const created = await trx
        .insertInto('functions')
        .values({
          id: randomUUID(),
          service_id: serviceId,
          name,
          description: metadata.description,
          tags: JSON.stringify(metadata.tags),
          active_version: 1,
        })
        .onConflict((oc) => oc.doNothing())
        .returningAll()
        .executeTakeFirst();
      if (!created) return undefined;
      await insertVersion(trx, created.id, 1, definition, null);
      return created;
    }
  }

  findFunction(serviceId: string, name: string): Promise<FunctionRow | undefined> {
    return this.db.selectFrom('functions').selectAll().where('service_id', '=', serviceId).where('name', '=', name).executeTakeFirst();
  }

  async listFunctions(serviceId: string, tag?: string): Promise<FunctionSummary[]> {
    let query = this.db
      .selectFrom('functions as f')
      .innerJoin('function_versions as v', (join) => join.onRef('v.function_id', '=', 'f.id').onRef('v.version', '=', 'f.active_version'))
      .select(['f.name', 'f.description', 'f.tags', 'v.language', 'f.active_version', 'f.locked', 'f.updated_at'])
      .where('f.service_id', '=', serviceId);
    if (tag !== undefined) query = query.where(sql<boolean>`f.tags @> ${JSON.stringify([tag])}::jsonb`);
    return query.orderBy('f.name').execute();
  }

  /**
   * An account's namespaces, services and functions (the dashboard's tree) in three queries, however
   * many there are; at most `maxFunctions` functions (name order within each service).
   */
  async accountTree(accountId: string, maxFunctions: number) {
    const [namespaces, services, functions] = await Promise.all([
      this.listNamespaces(accountId),
      this.db
        .selectFrom('services as s')
        .innerJoin('namespaces as n', 'n.id', 's.namespace_id')
        .select(['s.id', 's.namespace_id', 's.name', 's.description'])
        .where('n.account_id', '=', accountId)
        .orderBy('s.name')
        .execute(),
      this.db
        .selectFrom('functions as f')
        .innerJoin('services as s', 's.id', 'f.service_id')
        .innerJoin('namespaces as n', 'n.id', 's.namespace_id')
        .innerJoin('function_versions as v', (join) => join.onRef('v.function_id', '=', 'f.id').onRef('v.version', '=', 'f.active_version'))
        .select(['f.service_id', 'f.name', 'f.description', 'f.tags', 'v.language', 'f.active_version', 'f.locked', 'f.updated_at'])
        .where('n.account_id', '=', accountId)
        .orderBy('n.name')
        .orderBy('s.name')
        .orderBy('f.name')
        .limit(maxFunctions)
        .execute(),
    ]);
    return { namespaces, services, functions: functions as Array<FunctionSummary & { service_id: string }> };
  }

  /** Every function of a namespace with its active version: what the run endpoint serves. */
  /**
   * `known`: active functions read before (a cached snapshot of an older catalog version). A
   * version row never changes, so the definitions (schemas: megabytes in a large namespace) of
   * versions found there are reused, and only the others are read and parsed: one change reads
   * every function's name and version but one function's schemas.
   */
  async listActiveFunctions(namespaceId: string, known?: readonly ActiveFunction[]): Promise<ActiveFunction[]> {
    if (!known || known.length === 0) {
      const rows = await this.activeFunctionsQuery(namespaceId).orderBy('s.name').orderBy('f.name').execute();
      return rows.map(toActiveFunction);
    }
    const heads = await this.db
      .selectFrom('functions as f')
      .innerJoin('services as s', 's.id', 'f.service_id')
      .innerJoin('function_versions as v', (join) => join.onRef('v.function_id', '=', 'f.id').onRef('v.version', '=', 'f.active_version'))
      .select([
        'v.id',
        'v.version',
        'v.definition_hash',
        'v.schema_bytes',
        's.name as service_name',
        'f.name as function_name',
        'f.description',
        'f.tags',
        'f.id as fid',
      ])
      .where('s.namespace_id', '=', namespaceId)
      .orderBy('s.name')
      .orderBy('f.name')
      .execute();
    const definitions = new Map(known.map((fn) => [fn.versionId, fn.definition]));
    const missing = heads.filter((head) => !definitions.has(head.id)).map((head) => head.id);
    if (missing.length > 0) {
      const rows = await this.db
        .selectFrom('function_versions')
        .select(['id', 'language', 'backend', 'config', 'input_schema', 'output_schema', 'requirements', 'required_env', 'optional_env'])
        .where('id', 'in', missing)
        .execute();
      for (const row of rows) definitions.set(row.id, runDefinition(row));
      // A version deleted in between (its function deleted): read the whole list afresh.
      if (rows.length < missing.length) return this.listActiveFunctions(namespaceId);
    }
    return heads.map((head) => ({
      functionId: head.fid,
      versionId: head.id,
      service: head.service_name,
      name: head.function_name,
      description: head.description,
      tags: head.tags,
      version: head.version,
      definition: definitions.get(head.id)!,
      definitionHash: head.definition_hash,
      schemaBytes: Number(head.schema_bytes),
    }));
  }

  // Everything but the code: snapshots stay small however large the functions are; a run loads
  // the code of the version it runs (loadCode).
  private activeFunctionsQuery(namespaceId: string) {
    return this.db
      .selectFrom('functions as f')
      .innerJoin('services as s', 's.id', 'f.service_id')
      .innerJoin('function_versions as v', (join) => join.onRef('v.function_id', '=', 'f.id').onRef('v.version', '=', 'f.active_version'))
      .select([
        'v.id',
        'v.version',
        'v.language',
        'v.backend',
        'v.config',
        'v.input_schema',
        'v.output_schema',
        'v.requirements',
        'v.required_env',
        'v.optional_env',
        'v.definition_hash',
        'v.schema_bytes',
      ])
      .select(['s.name as service_name', 'f.name as function_name', 'f.description', 'f.tags', 'f.id as fid'])
      .where('s.namespace_id', '=', namespaceId);
  }

  /** The code of these (immutable) versions, by version id. */
  async loadCode(versionIds: readonly string[]): Promise<Map<string, string>> {
    if (versionIds.length === 0) return new Map();
    const rows = await this.db
      .selectFrom('function_versions')
      .select(['id', 'code'])
      .where('id', 'in', [...versionIds])
      .execute();
    return new Map(rows.map((r) => [r.id, r.code]));
  }

  /**
   * Every namespace's active functions as the functions package key sees them (name, service,
   * version, hash, description; same order as listActiveFunctions): what package GC keeps.
   */
  async packageIdentities(): Promise<
    Map<string, Array<Pick<ActiveFunction, 'service' | 'name' | 'version' | 'definitionHash' | 'description'>>>
  > {
    const rows = await this.db
      .selectFrom('functions as f')
      .innerJoin('services as s', 's.id', 'f.service_id')
      .innerJoin('namespaces as n', 'n.id', 's.namespace_id')
      .innerJoin('function_versions as v', (join) => join.onRef('v.function_id', '=', 'f.id').onRef('v.version', '=', 'f.active_version'))
      .select(['n.name as namespace', 's.name as service', 'f.name as name', 'v.version', 'v.definition_hash', 'f.description'])
      .orderBy('n.name')
      .orderBy('s.name')
      .orderBy('f.name')
      .execute();
    const out = new Map<string, Array<Pick<ActiveFunction, 'service' | 'name' | 'version' | 'definitionHash' | 'description'>>>();
    for (const r of rows) {
      let list = out.get(r.namespace);
      if (!list) out.set(r.namespace, (list = []));
      list.push({ service: r.service, name: r.name, version: r.version, definitionHash: r.definition_hash, description: r.description });
    }
    return out;
  }

  /** The distinct requirement lists of every stored TypeScript version (history included): what npm install GC keeps. */
  async typescriptRequirementLists(): Promise<string[][]> {
    const rows = await this.db
      .selectFrom('function_versions')
      .select('requirements')
      .distinct()
      .where('language', '=', 'typescript')
      .where(sql<boolean>`jsonb_array_length(requirements) > 0`)
      .execute();
    return rows.map((r) => r.requirements);
  }

  /** A function's versions without their code (its size instead): a long history stays cheap to list. */
  async listVersions(functionId: string): Promise<VersionSummaryRow[]> {
    const rows = await this.db
      .selectFrom('function_versions')
      .select([
        'version',
        'language',
        'requirements',
        'definition_hash',
        'restored_from',
        'created_at',
        sql<number>`octet_length(code)`.as('code_bytes'),
      ])
      .where('function_id', '=', functionId)
      .orderBy('version')
      .execute();
    return rows.map((r) => ({ ...r, code_bytes: Number(r.code_bytes) }));
  }

  findVersion(functionId: string, version: number): Promise<FunctionVersionRow | undefined> {
    return this.db
      .selectFrom('function_versions')
      .selectAll()
      .where('function_id', '=', functionId)
      .where('version', '=', version)
      .executeTakeFirst();
  }

  /**
   * Runs `work` with the function row locked (SELECT … FOR UPDATE), so concurrent updates of one
   * function queue up and each sees the version the previous one wrote.
   */
  async withFunctionLocked<T>(
    namespaceId: string,
    serviceId: string,
    name: string,
    work: (trx: Trx, fn: FunctionRow | undefined) => Promise<T>,
  ): Promise<T> {
    return this.withNamespaceLock(namespaceId, async (trx) => {
      const fn = await trx
        .selectFrom('functions')
        .selectAll()
        .where('service_id', '=', serviceId)
        .where('name', '=', name)
        .forUpdate()
        .executeTakeFirst();
      return work(trx, fn);
    });
  }

  /** Appends the next version (active + 1) and makes it active. Call inside withFunctionLocked. */
  async appendVersion(
    trx: Trx,
    fn: FunctionRow,
    definition: FunctionDefinition,
    metadata: FunctionMetadata,
    restoredFrom: number | null,
  ): Promise<number> {
    const version = fn.active_version + 1;
    await insertVersion(trx, fn.id, version, definition, restoredFrom);
    await trx
      .updateTable('functions')
      .set({ active_version: version, description: metadata.description, tags: JSON.stringify(metadata.tags), updated_at: new Date() })
      .where('id', '=', fn.id)
      .execute();
    return version;
  }

  async updateMetadata(trx: Trx, functionId: string, metadata: FunctionMetadata): Promise<void> {
    await trx
      .updateTable('functions')
      .set({ description: metadata.description, tags: JSON.stringify(metadata.tags), updated_at: new Date() })
      .where('id', '=', functionId)
      .execute();
  }

  async versionInTrx(trx: Trx, functionId: string, version: number): Promise<FunctionVersionRow | undefined> {
    return trx
      .selectFrom('function_versions')
      .selectAll()
      .where('function_id', '=', functionId)
      .where('version', '=', version)
      .executeTakeFirst();
  }

  async setLocked(trx: Trx, functionId: string, locked: boolean): Promise<void> {
    await trx.updateTable('functions').set({ locked, updated_at: new Date() }).where('id', '=', functionId).execute();
  }

  async deleteFunction(trx: Trx, functionId: string): Promise<void> {
    await trx.deleteFrom('functions').where('id', '=', functionId).execute();
  }
}

async function insertVersion(
  trx: Trx,
  functionId: string,
  version: number,
  d: FunctionDefinition,
  restoredFrom: number | null,
): Promise<void> {
  await trx
    .insertInto('function_versions')
    .values({
      id: randomUUID(),
      function_id: functionId,
      version,
      language: d.language,
      backend: d.backend,
      code: d.code,
      config: JSON.stringify(d.config),
      input_schema: JSON.stringify(d.inputSchema),
      output_schema: JSON.stringify(d.outputSchema),
      requirements: JSON.stringify(d.requirements),
      required_env: JSON.stringify(d.requiredEnv),
      optional_env: JSON.stringify(d.optionalEnv),
      definition_hash: definitionHash(d),
      restored_from: restoredFrom,
      schema_bytes: schemaBytes(d),
      stored_bytes: storedBytes(d),
    })
    .execute();
}

export type VersionSummaryRow = Pick<
  FunctionVersionRow,
  'version' | 'language' | 'requirements' | 'definition_hash' | 'restored_from' | 'created_at'
> & { code_bytes: number };

/** A version's definition without its code (loaded by version id when a run needs it). */
export type RunDefinition = Omit<FunctionDefinition, 'code'>;

export interface ActiveFunction {
  functionId: string;
  /** The function_versions row id: the key of its (immutable) code. */
  versionId: string;
  service: string;
  name: string;
  description: string;
  tags: string[];
  version: number;
  definition: RunDefinition;
  definitionHash: string;
  /** input_schema + output_schema bytes as stored: what a snapshot holding it weighs. */
  schemaBytes: number;
}

type ActiveRow = Omit<FunctionVersionRow, 'code' | 'function_id' | 'restored_from' | 'created_at' | 'stored_bytes'> & {
  service_name: string;
  function_name: string;
  description: string;
  tags: string[];
  fid: string;
};

function toActiveFunction(row: ActiveRow): ActiveFunction {
  return {
    functionId: row.fid,
    versionId: row.id,
    service: row.service_name,
    name: row.function_name,
    description: row.description,
    tags: row.tags,
    version: row.version,
    definition: runDefinition(row),
    definitionHash: row.definition_hash,
    schemaBytes: Number(row.schema_bytes),
  };
}

type DefinitionColumns = Pick<
  FunctionVersionRow,
  'language' | 'backend' | 'config' | 'input_schema' | 'output_schema' | 'requirements' | 'required_env' | 'optional_env'
>;

/** A version row's definition without its code: the one place the columns map to the domain's names. */
function runDefinition(row: DefinitionColumns): RunDefinition {
  return {
    language: row.language as FunctionDefinition['language'],
    backend: row.backend as FunctionDefinition['backend'],
    config: row.config,
    inputSchema: row.input_schema,
    outputSchema: row.output_schema,
    requirements: row.requirements,
    requiredEnv: row.required_env,
    optionalEnv: row.optional_env,
  };
}

export function versionToDefinition(row: FunctionVersionRow): FunctionDefinition {
  return { ...runDefinition(row), code: row.code };
}
