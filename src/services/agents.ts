import type { Scope } from '../core/accounts.js';
import {
  agentSlots,
  assertAgentSlots,
  assertStateFits,
  STATE_VALUE_MAX_BYTES,
  stateValueText,
  validateAgentName,
  validateStateKey,
} from '../core/agents.js';
import { STATE_KEYS_MAX_PAGE, STATE_KEYS_PAGE, type AgentStateAccess } from '../core/agent-state-access.js';
import { DomainError, invalid } from '../core/errors.js';
import { RawJson } from '../core/raw-json.js';
import { buildMetadata } from '../core/functions.js';
import { suggestion } from '../core/suggest.js';
import { DEFAULT_TIERS, isKnownTier, limitsFor, type TierLimits } from '../core/tiers.js';
import type { AgentsStore, Trx } from '../store/agents-store.js';
import type { AgentRow, NamespaceRow } from '../store/schema.js';
import type { KeyPrincipal } from './accounts.js';
import type { CatalogService } from './catalog.js';
import { StateCipher, StateCipherError } from './state-cipher.js';
import { AgentAiSettings } from './agent-ai.js';
import { AgentMcpServers } from './agent-mcp-servers.js';
import { effectiveLimits, publicConfig } from '../core/agent-ai.js';

/** Tool arguments as they arrive (already of the right JSON types; the rules are checked here). */
export type AgentArgs = Record<string, unknown>;

const iso = (d: Date): string => new Date(d).toISOString();
/** clone_agent copies state in pages of at most this much value text (at least one key, so up to one 1 MB value). */
export const CLONE_PAGE_BYTES = 1024 * 1024;
const CLONE_SIZE_SCAN = 1000;
/** The status of an agent whose state clone_agent is still copying in. */
const CLONING = 'cloning';
const DEFAULT_KEY_PAGE = 100;
const MAX_KEY_PAGE = 1000;

/** The state tools and clone_agent refuse an agent still being cloned into (destroy_agent cancels the clone). */
function ready(agent: AgentRow): void {
  if (agent.status === CLONING)
    throw new DomainError(
      'conflict',
      `agent '${agent.name}' is still being cloned (status '${CLONING}'); try again when clone_agent has answered, or destroy it`,
    );
}

export function requireScope(principal: KeyPrincipal, scope: Scope): void {
  if (!principal.scopes.includes(scope)) throw new DomainError('forbidden', `this API key lacks the '${scope}' scope`);
}

/**
 * `name`, or the hosted original's `agent_name` (the same value when both are given). Only the
 * spelling is aliased: the rules are the agent name's.
 */
export function agentNameArg(args: AgentArgs, name = 'name', alias = 'agent_name'): string {
  const value = args[name];
  const aliased = args[alias];
  if (value !== undefined && aliased !== undefined && value !== aliased)
    throw invalid(`give the agent as '${name}' or '${alias}', not two different names`, { field: name });
  const chosen = value ?? aliased;
  if (chosen === undefined) throw invalid(`'${name}' is required: the agent's name`, { field: name });
  return validateAgentName(chosen, value !== undefined ? name : alias);
}

/** `description`, or the hosted original's `display_name`. */
function descriptionArg(args: AgentArgs): string | undefined {
  const value = args.description;
  const aliased = args.display_name;
  if (value !== undefined && aliased !== undefined && value !== aliased)
    throw invalid("give either 'description' or 'display_name', not two different texts", { field: 'description' });
  const chosen = value ?? aliased;
  return chosen === undefined ? undefined : buildMetadata({ description: chosen }, null).description;
}

function ifVersionArg(args: AgentArgs): number | undefined {
  const value = args.if_version;
  if (value === undefined) return undefined;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0)
    throw invalid('if_version must be an integer ≥ 0 (0: only if the key does not exist yet)', { field: 'if_version' });
  return value;
}

/** Compare-and-swap: with if_version, the key must be at that version now (0: absent). */
function checkVersion(key: string, expected: number | undefined, current: number | undefined): void {
  if (expected !== undefined && expected !== (current ?? 0)) throw casConflict(key, expected, current);
}

function casConflict(key: string, expected: number, current: number | undefined): DomainError {
  return new DomainError(
    'conflict',
    current === undefined
      ? `state key '${key}' does not exist, so it is not at version ${expected}; nothing was changed`
      : `state key '${key}' is at version ${current}, not ${expected}; nothing was changed (read it again and retry)`,
    { field: 'if_version', key, expected_version: expected, current_version: current ?? 0 },
  );
}

/**
 * Agents of a namespace and their state, for the create endpoint. Scopes and namespace visibility
 * as CatalogService: a namespace the key does not reach, and so another account's agent, is not found.
 */
export class AgentService {
  constructor(
    private readonly store: AgentsStore,
    private readonly catalog: CatalogService,
    private readonly cipher: StateCipher,
    private readonly tiers: Readonly<Record<string, TierLimits>> = DEFAULT_TIERS,
    /** Resolves on the account's next fair turn of the event loop (run/fair-share.ts): clone pages wait for it. */
    private readonly turn: (accountId: string) => Promise<void> = () => new Promise((resolve) => setImmediate(resolve)),
  ) {
    this.ai = new AgentAiSettings(store, cipher, tiers);
    this.mcp = new AgentMcpServers(store, cipher);
  }

  /** Attached MCP servers (configure_mcp_servers): their headers sealed. */
  readonly mcp: AgentMcpServers;

  /** AI settings and orchestration limits (configure_agent_ai, configure_orchestration_limits). */
  readonly ai: AgentAiSettings;

  /** The caller's plan limits (agent slots for scale_agent); an unconfigured plan is refused as everywhere here. */
  planLimits(principal: KeyPrincipal): TierLimits {
    return this.limits(principal);
  }

  /** The caller's plan; one the operator removed from MCPWORKS_TIERS gets a clear refusal. */
  private limits(principal: Pick<KeyPrincipal, 'tier'>): TierLimits {
    if (!isKnownTier(principal.tier, this.tiers)) {
      throw new DomainError(
        'forbidden',
        `this account's plan '${principal.tier}' is not configured on this server; ask the operator to add it to MCPWORKS_TIERS or change the account's tier`,
      );
    }
    return limitsFor(principal.tier, this.tiers);
  }

  private async agent(ns: NamespaceRow, name: string): Promise<AgentRow> {
    const row = await this.store.findAgent(ns.id, name);
    if (row) return row;
    const hint = suggestion(name, await this.store.agentNames(ns.id), `agents in namespace '${ns.name}'`);
    throw new DomainError(
      'not_found',
      `agent '${name}' not found in namespace '${ns.name}'; create it with make_agent.${hint.text}`,
      hint.details,
    );
  }

  /**
   * The agent a tool names, for the runtime's tools (start, stop, runs, ...): the key's scopes and
   * namespace checked as every agent tool does (another account's agent is not found).
   */
  async resolve(principal: KeyPrincipal, nsName: string, args: AgentArgs, ...scopes: Scope[]): Promise<AgentRow> {
    for (const scope of scopes) requireScope(principal, scope);
    const ns = await this.catalog.namespace(principal, nsName);
    return this.agent(ns, agentNameArg(args));
  }

  async makeAgent(principal: KeyPrincipal, nsName: string, args: AgentArgs) {
    requireScope(principal, 'write');
    const ns = await this.catalog.namespace(principal, nsName);
    const name = agentNameArg(args);
    const description = descriptionArg(args) ?? '';
    const limits = this.limits(principal);
    const desiredReplicas = 1;
    const made = await this.store.withAccountLock(principal.accountId, async (trx) => {
      const used = await this.store.slotsInUse(principal.accountId, trx);
      if (await this.store.findAgent(ns.id, name, trx))
        throw new DomainError('conflict', `agent '${name}' already exists in namespace '${ns.name}'`, { field: 'name' });
      assertAgentSlots(limits, principal.tier, used, agentSlots(desiredReplicas));
      const row = await this.store.createAgent({ namespaceId: ns.id, name, description, desiredReplicas, config: {} }, trx);
      return row ? { row, used: used + agentSlots(desiredReplicas) } : undefined;
    });
    if (!made) throw new DomainError('conflict', `agent '${name}' already exists in namespace '${ns.name}'`, { field: 'name' });
    return { ...this.summary(made.row), agent_slots: { used: made.used, limit: limits.agents } };
  }

  async listAgents(principal: KeyPrincipal, nsName: string) {
    requireScope(principal, 'read');
    const ns = await this.catalog.namespace(principal, nsName);
    const rows = await this.store.listAgents(ns.id);
    return rows.map((r) => ({ ...r, created_at: iso(r.created_at) }));
  }

  /** Every agent of every namespace the principal reaches, by namespace, in one query (the dashboard's list). */
  async accountAgents(principal: KeyPrincipal) {
    requireScope(principal, 'read');
    const rows = (await this.store.listAccountAgents(principal.accountId)).filter(
      (r) => principal.namespace === null || r.namespace === principal.namespace,
    );
    return rows.map((r) => ({ ...r, created_at: iso(r.created_at) }));
  }

  async describeAgent(principal: KeyPrincipal, nsName: string, args: AgentArgs) {
    requireScope(principal, 'read');
    const ns = await this.catalog.namespace(principal, nsName);
    const agent = await this.agent(ns, agentNameArg(args));
    const limits = this.limits(principal);
    const [keys, slots] = await Promise.all([this.store.stateKeyCount(agent.id), this.store.slotsInUse(principal.accountId)]);
    return {
      ...this.summary(agent),
      // The AI part without its key (sealed or not): provider, model, base_url, whether a system prompt is set.
      config: publicConfig(agent.config),
      orchestration_limits: effectiveLimits(agent.config?.orchestration_limits, limits),
      state: { keys, bytes: Number(agent.state_bytes) },
      limits: {
        agent_slots: { used: slots, limit: limits.agents, this_agent: agentSlots(agent.desired_replicas) },
        state_bytes_per_agent: limits.agentStateBytes,
        state_value_max_bytes: STATE_VALUE_MAX_BYTES,
        schedule_min_interval_s: limits.scheduleMinIntervalSeconds,
      },
      updated_at: iso(agent.updated_at),
    };
  }

  async destroyAgent(principal: KeyPrincipal, nsName: string, args: AgentArgs) {
    requireScope(principal, 'write');
    const ns = await this.catalog.namespace(principal, nsName);
    const agent = await this.agent(ns, agentNameArg(args));
    const keys = await this.store.deleteAgent(agent.id);
    if (keys === undefined) throw new DomainError('not_found', `agent '${agent.name}' not found in namespace '${ns.name}'`);
    return { destroyed: agent.name, state_keys_deleted: keys };
  }

  async cloneAgent(principal: KeyPrincipal, nsName: string, args: AgentArgs) {
    requireScope(principal, 'write');
    const ns = await this.catalog.namespace(principal, nsName);
    const sourceName = agentNameArg(args);
    const newName = validateAgentName(args.new_name, 'new_name');
    const includeState = args.include_state ?? false;
    if (typeof includeState !== 'boolean') throw invalid('include_state must be true or false', { field: 'include_state' });
    const found = await this.agent(ns, sourceName);
    const limits = this.limits(principal);
    const gone = () => new DomainError('not_found', `agent '${sourceName}' not found in namespace '${ns.name}'`);
    // A short transaction: the slot and the new row under the account's lock, the source's row and
    // config read under its share lock (order: account, then agent), so the config copied is one version.
    const made = await this.store.withAccountLock(principal.accountId, async (trx) => {
      const source = await this.store.agentForShare(found.id, trx);
      if (!source) throw gone();
      ready(source);
      const used = await this.store.slotsInUse(principal.accountId, trx);
      if (await this.store.findAgent(ns.id, newName, trx))
        throw new DomainError('conflict', `agent '${newName}' already exists in namespace '${ns.name}'`, { field: 'new_name' });
      const adding = agentSlots(source.desired_replicas);
      assertAgentSlots(limits, principal.tier, used, adding);
      const row = await this.store.createAgent(
        {
          namespaceId: ns.id,
          name: newName,
          description: source.description,
          desiredReplicas: source.desired_replicas,
          config: source.config,
          status: includeState ? CLONING : 'stopped',
        },
        trx,
      );
      if (!row) throw new DomainError('conflict', `agent '${newName}' already exists in namespace '${ns.name}'`, { field: 'new_name' });
      const config = this.mcp.resealFor(this.ai.resealFor(source.config, source.id, row.id), source.id, row.id);
      if (config !== source.config) await this.store.setConfig(trx, row.id, config);
      for (const copy of this.cloneHooks) await copy(trx, source.id, row.id);
      return { row, used: used + adding };
    });
    let keys = 0;
    let row = made.row;
    if (includeState) {
      try {
        keys = await this.copyState(principal, limits, found.id, made.row.id, gone);
        row = await this.store.withAgentLock(made.row.id, async (trx, locked) => {
          if (!locked) throw new DomainError('conflict', `agent '${newName}' was destroyed while its state was being copied`);
          await this.store.setStatus(trx, locked.id, 'stopped');
          return { ...locked, status: 'stopped' };
        });
      } catch (error) {
        // No half-made clone: the copy and its slot go (destroying an absent agent is a no-op).
        await this.store.deleteAgent(made.row.id);
        throw error;
      }
    }
    return {
      ...this.summary(row),
      cloned_from: found.name,
      state_keys_copied: keys,
      agent_slots: { used: made.used, limit: limits.agents },
    };
  }

  /**
   * Run inside clone_agent's transaction once the copy's row exists: other parts of the agent that a
   * clone copies (its webhooks) copy themselves from the source's id to the copy's.
   */
  readonly cloneHooks: Array<(trx: Trx, sourceId: string, cloneId: string) => Promise<void>> = [];

  /** For tests: awaited between clone pages (outside any transaction) with each page's size. */
  onClonePage: ((page: { clone: string; index: number; keys: number; bytes: number }) => Promise<void> | void) | undefined;

  /**
   * Copies the source's state into the new agent in pages of at most CLONE_PAGE_BYTES of value text
   * (at least one key), each its own short transaction holding the new agent's row lock and the
   * source's share lock (writes to the source wait for the page, not for the whole copy), with a
   * fair-share turn of the event loop between pages. Each key is copied at its version as of its page.
   */
  private async copyState(
    principal: KeyPrincipal,
    limits: TierLimits,
    sourceId: string,
    cloneId: string,
    gone: () => DomainError,
  ): Promise<number> {
    let keys = 0;
    for (let after: string | undefined, index = 0; ; index++) {
      await this.turn(principal.accountId);
      const page = await this.store.withAgentLock(cloneId, async (trx, clone) => {
        if (!clone) throw new DomainError('conflict', 'the clone was destroyed while its state was being copied');
        if (!(await this.store.agentForShare(sourceId, trx))) throw gone();
        const sizes = await this.store.stateSizes(sourceId, after, CLONE_SIZE_SCAN, trx);
        if (sizes.length === 0) return undefined;
        let take = 1;
        let bytes = sizes[0]!.size_bytes;
        while (take < sizes.length && bytes + sizes[take]!.size_bytes <= CLONE_PAGE_BYTES) bytes += sizes[take++]!.size_bytes;
        const last = sizes[take - 1]!.key;
        const source = await this.store.stateRange(sourceId, after, last, trx);
        const rows = source.map((r) => ({
          key: r.key,
          // Opened under the source's (agent, key, version), sealed again for the clone's version 1.
          value: this.cipher.seal(cloneId, r.key, 1, this.open(sourceId, r.key, r.version, r.value)),
          version: 1,
          size: r.size_bytes,
        }));
        const pageBytes = rows.reduce((sum, r) => sum + r.size, 0);
        assertStateFits(limits, principal.tier, Number(clone.state_bytes), 0, pageBytes);
        await this.store.insertStateRows(trx, cloneId, rows);
        return { last, keys: rows.length, bytes: pageBytes };
      });
      if (!page) return keys;
      keys += page.keys;
      after = page.last;
      await this.onClonePage?.({ clone: cloneId, index, keys: page.keys, bytes: page.bytes });
    }
  }

  async getState(principal: KeyPrincipal, nsName: string, args: AgentArgs) {
    requireScope(principal, 'read');
    const ns = await this.catalog.namespace(principal, nsName);
    const agent = await this.agent(ns, agentNameArg(args));
    const key = validateStateKey(args.key);
    ready(agent);
    const row = await this.store.getState(agent.id, key);
    if (!row) throw new DomainError('not_found', `state key '${key}' not found for agent '${agent.name}'`, { key });
    return {
      key,
      value: JSON.parse(this.open(agent.id, key, row.version, row.value)) as unknown,
      version: row.version,
      size_bytes: row.size_bytes,
      updated_at: iso(row.updated_at),
    };
  }

  async setState(principal: KeyPrincipal, nsName: string, args: AgentArgs) {
    requireScope(principal, 'write');
    const ns = await this.catalog.namespace(principal, nsName);
    const name = agentNameArg(args);
    const key = validateStateKey(args.key);
    const text = stateValueText(args.value);
    const ifVersion = ifVersionArg(args);
    const limits = this.limits(principal);
    const agent = await this.agent(ns, name);
    const gone = () => new DomainError('not_found', `agent '${name}' not found in namespace '${ns.name}'`);
    const written = await this.writeState(agent.id, key, text, ifVersion, limits, principal.tier, gone);
    return {
      key,
      version: written.version,
      size_bytes: written.size,
      state_bytes: written.total,
      state_bytes_limit: limits.agentStateBytes,
    };
  }

  /** One key written under the agent's row lock: compare-and-swap, the per-agent cap, sealed under its version. */
  private writeState(
    agentId: string,
    key: string,
    text: string,
    ifVersion: number | undefined,
    limits: TierLimits,
    tier: string,
    gone: () => DomainError,
  ): Promise<{ version: number; size: number; total: number }> {
    const size = Buffer.byteLength(text, 'utf8');
    return this.store.withAgentLock(agentId, async (trx, locked) => {
      if (!locked) throw gone();
      ready(locked);
      const current = await this.store.getState(agentId, key, trx);
      checkVersion(key, ifVersion, current?.version);
      assertStateFits(limits, tier, Number(locked.state_bytes), current?.size_bytes ?? 0, size);
      const version = (current?.version ?? 0) + 1;
      // Sealed under its version too, so an older ciphertext put back in its place does not open.
      const sealed = this.cipher.seal(agentId, key, version, text);
      const total = await this.store.putState(trx, agentId, { key, value: sealed, version, size }, current?.size_bytes ?? 0);
      return { version, size, total };
    });
  }

  async deleteState(principal: KeyPrincipal, nsName: string, args: AgentArgs) {
    requireScope(principal, 'write');
    const ns = await this.catalog.namespace(principal, nsName);
    const name = agentNameArg(args);
    const key = validateStateKey(args.key);
    const ifVersion = ifVersionArg(args);
    const agent = await this.agent(ns, name);
    const gone = () => new DomainError('not_found', `agent '${name}' not found in namespace '${ns.name}'`);
    const total = await this.removeStateKey(agent.id, key, ifVersion, gone);
    if (total === undefined) throw new DomainError('not_found', `state key '${key}' not found for agent '${name}'`, { key });
    return { deleted: key, state_bytes: total };
  }

  /** One key removed under the agent's row lock (compare-and-swap first): the new total, undefined when the key was not set. */
  private removeStateKey(
    agentId: string,
    key: string,
    ifVersion: number | undefined,
    gone: () => DomainError,
  ): Promise<number | undefined> {
    return this.store.withAgentLock(agentId, async (trx, locked) => {
      if (!locked) throw gone();
      ready(locked);
      const current = await this.store.getState(agentId, key, trx);
      checkVersion(key, ifVersion, current?.version);
      if (!current) return undefined;
      return this.store.removeState(trx, agentId, key, current.size_bytes);
    });
  }

  async listStateKeys(principal: KeyPrincipal, nsName: string, args: AgentArgs) {
    requireScope(principal, 'read');
    const ns = await this.catalog.namespace(principal, nsName);
    const agent = await this.agent(ns, agentNameArg(args));
    ready(agent);
    const after = args.after === undefined ? undefined : validateStateKey(args.after, 'after');
    const prefix = args.prefix === undefined || args.prefix === '' ? undefined : validateStateKey(args.prefix, 'prefix');
    const limit = args.limit ?? DEFAULT_KEY_PAGE;
    if (typeof limit !== 'number' || !Number.isInteger(limit) || limit < 1 || limit > MAX_KEY_PAGE)
      throw invalid(`limit must be an integer from 1 to ${MAX_KEY_PAGE}`, { field: 'limit' });
    const rows = await this.store.listStateKeys(agent.id, {
      limit: limit + 1,
      ...(after !== undefined ? { after } : {}),
      ...(prefix !== undefined ? { prefix } : {}),
    });
    const page = rows.slice(0, limit);
    return {
      agent: agent.name,
      keys: page.map((r) => ({ key: r.key, version: r.version, size_bytes: r.size_bytes, updated_at: iso(r.updated_at) })),
      ...(rows.length > limit ? { next_after: page[page.length - 1]!.key } : {}),
      state_bytes: Number(agent.state_bytes),
    };
  }

  /**
   * One agent's state as the runs it starts see it (the `mcpworks` module, through the run's
   * bridge): the state tools' rules and locks (key and value caps, the tier's per-agent cap,
   * compare-and-swap, sealing), for the agent a trigger runs as; `tier` is its account's plan. An
   * agent destroyed before or during a call is not found.
   */
  stateAccess(agentId: string, tier: string): AgentStateAccess {
    const gone = () => new DomainError('not_found', "this run's agent no longer exists (it was destroyed)");
    const usable = async (): Promise<void> => {
      const agent = await this.store.agentById(agentId);
      if (!agent) throw gone();
      ready(agent);
    };
    return {
      agentId,
      get: async (key, options = {}) => {
        validateStateKey(key);
        await usable();
        const row = await this.store.getState(agentId, key);
        if (!row) return null;
        const text = this.open(agentId, key, row.version, row.value);
        // raw: the JSON text goes back to the sandbox as it is, never parsed on the server.
        return { value: options.raw ? new RawJson(Buffer.from(text, 'utf8')) : (JSON.parse(text) as unknown), version: row.version };
      },
      set: async (key, value, options = {}) => {
        validateStateKey(key);
        const text = stateValueText(value);
        const ifVersion = ifVersionArg({ if_version: options.ifVersion });
        const written = await this.writeState(agentId, key, text, ifVersion, this.limits({ tier }), tier, gone);
        return { version: written.version };
      },
      delete: async (key, options = {}) => {
        validateStateKey(key);
        const ifVersion = ifVersionArg({ if_version: options.ifVersion });
        return { deleted: (await this.removeStateKey(agentId, key, ifVersion, gone)) !== undefined };
      },
      keys: async (options = {}) => {
        const prefix = options.prefix === undefined || options.prefix === '' ? undefined : validateStateKey(options.prefix, 'prefix');
        const cursor = options.cursor === undefined ? undefined : validateStateKey(options.cursor, 'cursor');
        const limit = options.limit ?? STATE_KEYS_PAGE;
        if (typeof limit !== 'number' || !Number.isInteger(limit) || limit < 1 || limit > STATE_KEYS_MAX_PAGE)
          throw invalid(`limit must be an integer from 1 to ${STATE_KEYS_MAX_PAGE}`, { field: 'limit' });
        await usable();
        const rows = await this.store.listStateKeys(agentId, {
          limit: limit + 1,
          ...(cursor !== undefined ? { after: cursor } : {}),
          ...(prefix !== undefined ? { prefix } : {}),
        });
        const page = rows.slice(0, limit).map((r) => r.key);
        return { keys: page, next_cursor: rows.length > limit ? page[page.length - 1]! : null };
      },
    };
  }

  private open(agentId: string, key: string, version: number, sealed: string): string {
    try {
      return this.cipher.open(agentId, key, version, sealed);
    } catch (error) {
      if (error instanceof StateCipherError)
        throw new DomainError(
          'internal_error',
          `${error.message}: was MCPWORKS_SECRET_KEY (or the data dir's secret_key) changed, or the row altered in the database?`,
        );
      throw error;
    }
  }

  private summary(row: AgentRow) {
    return {
      name: row.name,
      description: row.description,
      status: row.status,
      desired_replicas: row.desired_replicas,
      created_at: iso(row.created_at),
    };
  }
}
