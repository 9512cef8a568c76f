// Who a run is for: an account, its tier, the namespace it is limited to, its scopes, and the actor
// that started it. An API key is one actor; an agent (a schedule, a webhook, a chat turn) is the
// other, so the run path never needs a key to run code or to record who ran it.
import type { Scope } from './accounts.js';

export type Actor = { kind: 'key'; keyId: string } | { kind: 'agent'; agentId: string };

export interface Principal {
  accountId: string;
  tier: string;
  /** When set, the principal works only in this namespace. */
  namespace: string | null;
  scopes: readonly Scope[];
  actor: Actor;
}

/** An API key's principal (services/accounts.ts KeyPrincipal) as the run path takes it. */
export function keyPrincipal(key: {
  accountId: string;
  keyId: string;
  tier: string;
  namespace: string | null;
  scopes: readonly Scope[];
}): Principal {
  return {
    accountId: key.accountId,
    tier: key.tier,
    namespace: key.namespace,
    scopes: key.scopes,
    actor: { kind: 'key', keyId: key.keyId },
  };
}

/** The execution record's columns naming the actor (exactly one is set). */
export function actorIds(actor: Actor): { keyId: string | null; agentId: string | null } {
  return actor.kind === 'key' ? { keyId: actor.keyId, agentId: null } : { keyId: null, agentId: actor.agentId };
}

/** What started a run: an MCP call (tool mode or code mode), or one of an agent's triggers. */
export const TRIGGERS = ['mcp-tools', 'mcp-code', 'schedule', 'webhook', 'chat', 'heartbeat'] as const;
export type Trigger = (typeof TRIGGERS)[number];
/** The triggers an agent runs on (agent_runs.trigger). */
export type AgentTrigger = Extract<Trigger, 'schedule' | 'webhook' | 'chat' | 'heartbeat'>;

/** An agent's principal: its account's plan, limited to the agent's namespace, acting as the agent. */
export function agentPrincipal(agent: { accountId: string; tier: string; namespace: string; agentId: string }): Principal {
  return {
    accountId: agent.accountId,
    tier: agent.tier,
    namespace: agent.namespace,
    scopes: ['read', 'write', 'execute'],
    actor: { kind: 'agent', agentId: agent.agentId },
  };
}
