/**
 * An agent's AI settings and orchestration limits in agents.config (issue 16): the key sealed with
 * the state cipher under [agentId, 'ai-key'] and opened only when a run needs it; never answered,
 * never logged.
 */
import {
  effectiveLimits,
  providerBaseUrl,
  publicAi,
  validateAiInput,
  validateLimitsInput,
  type OrchestrationLimits,
  type StoredAi,
} from '../core/agent-ai.js';
import { DomainError, invalid } from '../core/errors.js';
import { parseServerUrl, refusal } from '../core/outbound-address.js';
import { validateHeartbeatInput, type StoredHeartbeat } from '../core/agent-orchestration.js';
import { isKnownTier, limitsFor, type TierLimits } from '../core/tiers.js';
import type { AgentsStore } from '../store/agents-store.js';
import type { AgentRow } from '../store/schema.js';
import { openSecret, sealSecret, type StateCipher } from './state-cipher.js';

const KEY_PURPOSE = 'ai-key';

/** Refuses a model's address an agent may not reach (throws with the reason). */
export type ModelAddressCheck = (url: string) => Promise<void>;

/** Without the composition root's check (which resolves names): addresses written in the URL only, nothing allowed. */
const literalCheck: ModelAddressCheck = async (url) => {
  const target = parseServerUrl(url);
  const why = target.literal ? refusal(target, target.literal, { allow: [], purpose: 'model' }) : undefined;
  if (why) throw new Error(why);
};

export interface AgentAiConfig {
  provider: string;
  model: string;
  apiKey: string;
  baseUrl?: string;
  systemPrompt?: string;
}

export class AgentAiSettings {
  constructor(
    private readonly store: AgentsStore,
    private readonly cipher: StateCipher,
    private readonly tiers: Readonly<Record<string, TierLimits>>,
  ) {}

  private limits(tier: string): TierLimits {
    if (!isKnownTier(tier, this.tiers))
      throw new DomainError(
        'forbidden',
        `this account's plan '${tier}' is not configured on this server; ask the operator to add it to MCPWORKS_TIERS`,
      );
    return limitsFor(tier, this.tiers);
  }

  /** Edits the agent's config under its row lock; a destroyed agent is not found. */
  private edit(agent: AgentRow, change: (config: Record<string, unknown>) => Record<string, unknown>): Promise<Record<string, unknown>> {
    return this.store.withAgentLock(agent.id, async (trx, locked) => {
      if (!locked) throw new DomainError('not_found', `agent '${agent.name}' not found`);
      const config = change({ ...(locked.config ?? {}) });
      await this.store.setConfig(trx, locked.id, config);
      return config;
    });
  }

  /**
   * The model's address checked before it is stored (the composition root sets the resolving check
   * with the operator's list and this server's endpoints; every model call is checked again).
   */
  addressCheck: ModelAddressCheck = literalCheck;

  async configure(agent: AgentRow, args: Record<string, unknown>) {
    const input = validateAiInput(args);
    // base_url when given; a provider's default only when it is an address (ollama's loopback one):
    // the vendors' own hosts are not resolved here, their calls are checked like any other.
    const defaultUrl = providerBaseUrl(input.provider);
    const url = input.baseUrl ?? (defaultUrl && parseServerUrl(defaultUrl).literal ? defaultUrl : undefined);
    if (url !== undefined)
      try {
        await this.addressCheck(url);
      } catch (error) {
        const whose = input.baseUrl ? '' : ` (${input.provider}'s default address ${url}; give base_url or ask the operator to allow it)`;
        throw invalid(`base_url refused${whose}: ${(error as Error).message}`, { field: 'base_url' });
      }
    const ai: StoredAi = {
      provider: input.provider,
      model: input.model,
      ...(input.baseUrl ? { base_url: input.baseUrl } : {}),
      ...(input.systemPrompt ? { system_prompt: input.systemPrompt } : {}),
      api_key_sealed: sealSecret(this.cipher, agent.id, KEY_PURPOSE, input.apiKey),
      configured_at: new Date().toISOString(),
    };
    const config = await this.edit(agent, (c) => ({ ...c, ai }));
    return { agent: agent.name, ai: publicAi(config.ai) };
  }

  async remove(agent: AgentRow) {
    let had = false;
    await this.edit(agent, ({ ai, ...rest }) => {
      had = ai !== undefined;
      return rest;
    });
    return { agent: agent.name, removed: had, ai: null };
  }

  async configureLimits(agent: AgentRow, tier: string, args: Record<string, unknown>) {
    const limits = this.limits(tier);
    const given = validateLimitsInput(args, limits, tier);
    const config = await this.edit(agent, (c) => {
      const own = c.orchestration_limits && typeof c.orchestration_limits === 'object' ? c.orchestration_limits : {};
      return { ...c, orchestration_limits: { ...own, ...given } };
    });
    return { agent: agent.name, orchestration_limits: effectiveLimits(config.orchestration_limits, limits) };
  }

  /**
   * configure_heartbeat: a periodic reason_first run with the heartbeat's instructions (on a running
   * agent with an AI configured; the first one an interval from now). Off keeps the settings.
   */
  async configureHeartbeat(agent: AgentRow, tier: string, args: Record<string, unknown>) {
    const limits = this.limits(tier);
    const input = validateHeartbeatInput(args, limits.scheduleMinIntervalSeconds, tier);
    const config = await this.edit(agent, (c) => {
      if (input.enabled && !c.ai)
        throw new DomainError('validation_error', `agent '${agent.name}' has no AI to run a heartbeat: configure_agent_ai first`, {
          field: 'enabled',
        });
      const before = (c.heartbeat ?? {}) as Partial<StoredHeartbeat>;
      const interval = input.intervalSeconds ?? before.interval_seconds;
      const instructions = input.instructions ?? before.instructions;
      const heartbeat: StoredHeartbeat = {
        enabled: input.enabled,
        interval_seconds: interval ?? 0,
        ...(instructions ? { instructions } : {}),
        next_at: input.enabled && interval ? new Date(Date.now() + interval * 1000).toISOString() : null,
      };
      return { ...c, heartbeat };
    });
    return { agent: agent.name, heartbeat: config.heartbeat };
  }

  /** The limits a run of this agent gets now: its own, never above its plan's. */
  orchestrationLimits(agent: AgentRow, tier: string): OrchestrationLimits {
    return effectiveLimits(agent.config?.orchestration_limits, this.limits(tier));
  }

  /** For the orchestration loop: the settings with the key opened, or undefined when no AI is configured. */
  open(agent: AgentRow): AgentAiConfig | undefined {
    const ai = agent.config?.ai as StoredAi | undefined;
    if (!ai || typeof ai.api_key_sealed !== 'string') return undefined;
    return {
      provider: ai.provider,
      model: ai.model,
      apiKey: openSecret(this.cipher, agent.id, KEY_PURPOSE, ai.api_key_sealed),
      ...(ai.base_url ? { baseUrl: ai.base_url } : {}),
      ...(ai.system_prompt ? { systemPrompt: ai.system_prompt } : {}),
    };
  }

  /** clone_agent: the key sealed again for the new agent (sealed under the source's id, it would not open there). */
  resealFor(config: Record<string, unknown>, fromId: string, toId: string): Record<string, unknown> {
    const ai = config.ai as StoredAi | undefined;
    if (!ai || typeof ai.api_key_sealed !== 'string') return config;
    const key = openSecret(this.cipher, fromId, KEY_PURPOSE, ai.api_key_sealed);
    return { ...config, ai: { ...ai, api_key_sealed: sealSecret(this.cipher, toId, KEY_PURPOSE, key) } };
  }
}
