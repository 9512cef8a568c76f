// An agent's replicas: which exist (rows, names for life), which run, and which this node holds.
// Starting and stopping write rows under the agent's row lock; triggers ask localReplicas which of
// the agent's running replicas this node may run a job on.
import { DomainError } from '../core/errors.js';
import { replicaName } from '../core/agents.js';
import type { AgentsStore } from '../store/agents-store.js';
import type { ReplicasStore } from '../store/replicas-store.js';
import type { AgentReplicaRow, AgentRow } from '../store/schema.js';

const iso = (d: Date | null) => (d ? new Date(d).toISOString() : null);

export interface ReplicaView {
  name: string;
  status: string;
  node: string | null;
  started_at: string | null;
  restarts: number;
  last_exit: string | null;
}

export class ReplicaDirectory {
  constructor(private readonly deps: { agents: AgentsStore; replicas: ReplicasStore; nodeId: string }) {}

  /**
   * Starts the agent (all its replicas, creating rows up to desired_replicas) or one named replica.
   * Answers the replicas as they are now.
   */
  async start(agent: AgentRow, replica?: string): Promise<{ status: string; replicas: ReplicaView[] }> {
    const { agents, replicas, nodeId } = this.deps;
    await agents.withAgentLock(agent.id, async (trx, locked) => {
      if (!locked) throw new DomainError('not_found', `agent '${agent.name}' not found`);
      if (locked.status === 'cloning')
        throw new DomainError('conflict', `agent '${agent.name}' is still being cloned; start it when clone_agent has answered`);
      const now = new Date();
      const rows = await replicas.list(agent.id, trx);
      if (replica !== undefined) {
        named(rows, agent, replica);
        await replicas.setStatus(trx, agent.id, [replica], { status: 'running', nodeId, now });
      } else {
        const taken = new Set(rows.map((r) => r.name));
        const names: string[] = [];
        for (let i = rows.length; i < locked.desired_replicas; i++) {
          const next = replicaName(taken);
          taken.add(next);
          names.push(next);
        }
        await replicas.setStatus(trx, agent.id, null, { status: 'running', nodeId, now });
        await replicas.add(trx, agent.id, names, { status: 'running', nodeId, now });
      }
      if (locked.status !== 'running') await agents.setStatus(trx, agent.id, 'running');
    });
    return { status: 'running', replicas: await this.list(agent.id) };
  }

  /** Stops the agent (every replica) or one named replica (the agent keeps running on the others). */
  async stop(agent: AgentRow, replica?: string): Promise<{ status: string; replicas: ReplicaView[] }> {
    const { agents, replicas } = this.deps;
    const status = await agents.withAgentLock(agent.id, async (trx, locked) => {
      if (!locked) throw new DomainError('not_found', `agent '${agent.name}' not found`);
      const now = new Date();
      if (replica !== undefined) {
        named(await replicas.list(agent.id, trx), agent, replica);
        await replicas.setStatus(trx, agent.id, [replica], { status: 'stopped', nodeId: null, now });
        return locked.status;
      }
      await replicas.setStatus(trx, agent.id, null, { status: 'stopped', nodeId: null, now });
      if (locked.status === 'running') await agents.setStatus(trx, agent.id, 'stopped');
      return locked.status === 'running' ? 'stopped' : locked.status;
    });
    return { status, replicas: await this.list(agent.id) };
  }

  async list(agentId: string): Promise<ReplicaView[]> {
    return (await this.deps.replicas.list(agentId)).map(view);
  }

  /** The agent's running replicas this node holds (names, oldest first): where its triggers may run here. */
  localReplicas(agentId: string): Promise<string[]> {
    return this.deps.replicas.localRunning(agentId, this.deps.nodeId);
  }
}

function named(rows: readonly AgentReplicaRow[], agent: AgentRow, replica: string): AgentReplicaRow {
  const row = rows.find((r) => r.name === replica);
  if (row) return row;
  const names = rows.map((r) => r.name);
  throw new DomainError(
    'not_found',
    `agent '${agent.name}' has no replica '${replica}'${names.length > 0 ? `; its replicas: ${names.join(', ')}` : ' (it has no replicas yet: start it)'}`,
    { field: 'replica' },
  );
}

function view(row: AgentReplicaRow): ReplicaView {
  return {
    name: row.name,
    status: row.status,
    node: row.node_id,
    started_at: iso(row.started_at),
    restarts: row.restarts,
    last_exit: row.last_exit,
  };
}
