// An agent's replicas: which exist (rows, names for life), which should run, and which this node
// runs. Start, stop, scale and remove write rows under the agent's row lock (scale and remove under
// the account's lock first: they move slots); every node's ReplicaSupervisor (./supervisor.ts)
// claims the rows of running agents by lease and runs each as its own worker process. Triggers ask
// localReplicas which of the agent's replicas this node may run a job on.
import { agentSlots, assertAgentSlots, replicaName } from '../core/agents.js';
import { DomainError } from '../core/errors.js';
import { scalePlan } from '../core/replicas.js';
import type { TierLimits } from '../core/tiers.js';
import type { AgentsStore, Trx } from '../store/agents-store.js';
import type { ReplicaRow, ReplicasStore } from '../store/replicas-store.js';
import { resumePlanning } from '../store/schedules-store.js';
import type { AgentRow } from '../store/schema.js';
import type { ReplicaSupervisor } from './supervisor.js';

const iso = (d: Date | null) => (d ? new Date(d).toISOString() : null);

export interface ReplicaView {
  name: string;
  status: string;
  node: string | null;
  started_at: string | null;
  restarts: number;
  last_exit: string | null;
}

/** What scale and remove need of the caller: the account whose slots they move, and its plan. */
export interface SlotOwner {
  accountId: string;
  tier?: string;
  limits: TierLimits;
}

export class ReplicaDirectory {
  constructor(private readonly deps: { agents: AgentsStore; replicas: ReplicasStore; nodeId: string; supervisor: ReplicaSupervisor }) {}

  /**
   * Starts the agent (all its replicas, creating rows up to desired_replicas) or one named replica.
   * This node claims what no node holds at once and answers when their processes are up (bounded);
   * replicas another node took show as it has them.
   */
  async start(agent: AgentRow, replica?: string): Promise<{ status: string; replicas: ReplicaView[] }> {
    const { agents, replicas } = this.deps;
    await agents.withAgentLock(agent.id, async (trx, locked) => {
      if (!locked) throw new DomainError('not_found', `agent '${agent.name}' not found`);
      if (locked.status === 'cloning')
        throw new DomainError('conflict', `agent '${agent.name}' is still being cloned; start it when clone_agent has answered`);
      // Replicas missing from the count are made now: all to run, or (one named) stopped beside it.
      const all = await fill(replicas, trx, agent.id, locked.desired_replicas, replica === undefined ? 'pending' : 'stopped');
      if (replica !== undefined) named(all, agent, replica);
      if (replica === undefined || locked.status !== 'running') {
        // Starting one replica of a stopped agent starts only that one.
        if (replica !== undefined) await replicas.end(agent.id, undefined, 'stopped', trx);
        await replicas.setAgent(agent.id, { status: 'running' }, trx);
        if (locked.status !== 'running') await resumePlanning(trx, agent.id);
      }
      await replicas.wake(agent.id, replica === undefined ? undefined : [replica], trx);
    });
    await this.deps.supervisor.settle(agent.id);
    return { status: 'running', replicas: await this.list(agent.id) };
  }

  /**
   * Stops the agent (every replica) or one named replica (the agent keeps running on the others).
   * A replica running a job finishes it first ('stopping'), then its process ends ('stopped').
   */
  async stop(agent: AgentRow, replica?: string): Promise<{ status: string; replicas: ReplicaView[] }> {
    const { agents, replicas } = this.deps;
    const status = await agents.withAgentLock(agent.id, async (trx, locked) => {
      if (!locked) throw new DomainError('not_found', `agent '${agent.name}' not found`);
      if (replica !== undefined) named(await replicas.list(agent.id, trx), agent, replica);
      else if (locked.status === 'running') await replicas.setAgent(agent.id, { status: 'stopped' }, trx);
      await replicas.end(agent.id, replica === undefined ? undefined : [replica], 'stopped', trx);
      // The agent's status as this stop leaves it (a clone in progress stays 'cloning').
      return replica === undefined && locked.status === 'running' ? 'stopped' : locked.status;
    });
    await this.deps.supervisor.settle(agent.id);
    return { status, replicas: await this.list(agent.id) };
  }

  /**
   * Sets the agent's replica count (≥ 0; each takes a slot of the plan, checked under the account's
   * lock). Scaling down removes the newest first (LIFO); each finishes its current run, then ends.
   */
  async scale(agent: AgentRow, desired: number, owner: SlotOwner) {
    const { agents, replicas } = this.deps;
    const made = await agents.withAccountLock(owner.accountId, async (trx) => {
      const locked = await this.lock(agent, trx);
      const used = await agents.slotsInUse(owner.accountId, trx);
      const adding = agentSlots(desired) - agentSlots(locked.desired_replicas);
      if (adding > 0) assertAgentSlots(owner.limits, owner.tier ?? 'this', used, adding);
      const { remove } = scalePlan(await replicas.list(agent.id, trx), desired);
      await replicas.end(agent.id, remove, 'removed', trx);
      await fill(replicas, trx, agent.id, desired, locked.status === 'running' ? 'pending' : 'stopped');
      await replicas.setAgent(agent.id, { desired }, trx);
      return { removed: remove, used: used + adding, status: locked.status };
    });
    await this.deps.supervisor.settle(agent.id);
    return {
      name: agent.name,
      status: made.status,
      desired_replicas: desired,
      removed: made.removed,
      replicas: await this.list(agent.id),
      agent_slots: { used: made.used, limit: owner.limits.agents },
    };
  }

  /** Removes one replica (after its current run) and lowers the agent's count by one (destroy_agent with `replica`). */
  async remove(agent: AgentRow, replica: string, owner: SlotOwner) {
    const { agents, replicas } = this.deps;
    const made = await agents.withAccountLock(owner.accountId, async (trx) => {
      const locked = await this.lock(agent, trx);
      named(await replicas.list(agent.id, trx), agent, replica);
      await replicas.end(agent.id, [replica], 'removed', trx);
      const desired = Math.max(0, locked.desired_replicas - 1);
      await replicas.setAgent(agent.id, { desired }, trx);
      return { desired, used: await agents.slotsInUse(owner.accountId, trx) };
    });
    await this.deps.supervisor.settle(agent.id);
    return {
      destroyed_replica: replica,
      name: agent.name,
      desired_replicas: made.desired,
      replicas: await this.list(agent.id),
      agent_slots: { used: made.used, limit: owner.limits.agents },
    };
  }

  private async lock(agent: AgentRow, trx: Trx) {
    const locked = await this.deps.replicas.lockAgent(agent.id, trx);
    if (!locked) throw new DomainError('not_found', `agent '${agent.name}' not found`);
    if (locked.status === 'cloning')
      throw new DomainError('conflict', `agent '${agent.name}' is still being cloned; try again when clone_agent has answered`);
    return locked;
  }

  async list(agentId: string): Promise<ReplicaView[]> {
    return (await this.deps.replicas.list(agentId)).map(view);
  }

  /** The agent's replicas this node runs with their process up (names, oldest first): where its triggers may run here. */
  async localReplicas(agentId: string): Promise<string[]> {
    return this.deps.supervisor.localReplicas(agentId);
  }

  /** The same, after waiting up to `ms` for one being started or restarted here (a delivery right after start_agent or a crash). */
  async upReplicas(agentId: string, ms: number): Promise<string[]> {
    return this.deps.supervisor.upReplicas(agentId, ms);
  }

  /**
   * The agent's running replicas another node holds (live lease first, then oldest first): where a
   * trigger received here may hand its job; a lapsed lease is a dead node's until it is re-placed.
   */
  async runningElsewhere(agentId: string): Promise<string[]> {
    const local = new Set(this.deps.supervisor.localReplicas(agentId));
    const running = (await this.deps.replicas.list(agentId)).filter((r) => r.status === 'running' && !local.has(r.name));
    return [...running.filter((r) => r.leased !== false), ...running.filter((r) => r.leased === false)].map((r) => r.name);
  }
}

/** New rows up to `desired` kept replicas (those being removed do not count), named verb-animal, unique in the agent for life. */
async function fill(replicas: ReplicasStore, trx: Trx, agentId: string, desired: number, status: string): Promise<ReplicaRow[]> {
  const rows = await replicas.list(agentId, trx);
  const { add } = scalePlan(rows, desired);
  if (add === 0) return rows;
  const taken = new Set(rows.map((r) => r.name));
  const names: string[] = [];
  for (let i = 0; i < add; i++) {
    const next = replicaName(taken);
    taken.add(next);
    names.push(next);
  }
  await replicas.add(agentId, names, status, trx);
  return replicas.list(agentId, trx);
}

/** The named replica (not one being removed), or not_found listing the agent's replicas. */
function named(rows: readonly ReplicaRow[], agent: AgentRow, replica: string): ReplicaRow {
  const row = rows.find((r) => r.name === replica && r.status !== 'draining');
  if (row) return row;
  const names = rows.filter((r) => r.status !== 'draining').map((r) => r.name);
  throw new DomainError(
    'not_found',
    `agent '${agent.name}' has no replica '${replica}'${names.length > 0 ? `; its replicas: ${names.join(', ')}` : ' (it has no replicas yet: start or scale it)'}`,
    { field: 'replica' },
  );
}

function view(row: ReplicaRow): ReplicaView {
  return {
    name: row.name,
    status: row.status,
    node: row.node_id,
    started_at: iso(row.started_at),
    restarts: row.restarts,
    last_exit: row.last_exit,
  };
}
