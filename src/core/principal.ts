// Who a run is for: an account, its tier, the namespace it is limited to, its scopes, and the actor
// that started it. An API key is one actor; an agent (a schedule, a webhook, a chat turn) is the
// other, so the run path never needs a key to run code or to record who ran it.
import type { Scope } from './accounts.js';

// The account's owner, signed in to the dashboard (a login session, no key): recorded with neither id.
export type Actor = { kind: 'key'; keyId: string } | { kind: 'agent'; agentId: string } | { kind: 'owner' };

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

/** The execution record's columns naming the actor (one is set, or none for the owner's dashboard run). */
export function actorIds(actor: Actor): { keyId: string | null; agentId: string | null } {
  if (actor.kind === 'key') return { keyId: actor.keyId, agentId: null };
  return actor.kind === 'agent' ? { keyId: null, agentId: actor.agentId } : { keyId: null, agentId: null };
}

/** What started a run: an MCP call (tool mode or code mode), one of an agent's triggers, or the dashboard's "try it". */
export const TRIGGERS = ['mcp-tools', 'mcp-code', 'schedule', 'webhook', 'chat', 'heartbeat', 'dashboard'] as const;
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

/** The account's owner in the dashboard (a login session): every namespace and scope of the account. */
export function ownerPrincipal(account: { accountId: string; tier: string }): Principal {
  return {
    accountId: account.accountId,
    tier: account.tier,
    namespace: null,
    scopes: ['read', 'write', 'execute'],
    actor: { kind: 'owner' },
  };
}
