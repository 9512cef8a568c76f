// The agent runtime as app/ and api/ see it: replicas, the dispatcher every trigger ends in, and the
// runs record. Built once per server (app/start-server.ts) on the server's database and RunService.
import type { Logger } from '../core/logger.js';
import type { TierLimits } from '../core/tiers.js';
import type { RunService } from '../run/run-service.js';
import { AgentRunsStore } from '../store/agent-runs-store.js';
import { AgentsStore } from '../store/agents-store.js';
import type { Db } from '../store/database.js';
import { ReplicasStore } from '../store/replicas-store.js';
import { AgentDispatcher } from './dispatcher.js';
import { ReplicaDirectory } from './replicas.js';
import { AgentRuns } from './runs.js';

export { AgentDispatcher, type AgentRunOutcome, type TriggerJob, ORCHESTRATION_MODES } from './dispatcher.js';
export { ReplicaDirectory, type ReplicaView } from './replicas.js';
export { AgentRuns } from './runs.js';

/** How often ended runs past their plan's retention are deleted. */
const PRUNE_INTERVAL_MS = 60 * 60 * 1000;

export class AgentRuntime {
  readonly replicas: ReplicaDirectory;
  readonly runs: AgentRuns;
  readonly dispatcher: AgentDispatcher;
  private readonly runsStore: AgentRunsStore;
  private pruneTimer: NodeJS.Timeout | undefined;
  private pruning: Promise<unknown> | undefined;

  constructor(
    private readonly deps: {
      db: Db;
      run: Pick<RunService, 'invoke'>;
      nodeId: string;
      tiers: Readonly<Record<string, TierLimits>>;
      logger: Logger;
    },
  ) {
    const agents = new AgentsStore(deps.db);
    this.runsStore = new AgentRunsStore(deps.db);
    this.replicas = new ReplicaDirectory({ agents, replicas: new ReplicasStore(deps.db), nodeId: deps.nodeId });
    this.runs = new AgentRuns(this.runsStore);
    this.dispatcher = new AgentDispatcher({ agents, runs: this.runsStore, run: deps.run, nodeId: deps.nodeId, logger: deps.logger });
  }

  /** Ends runs a dead node left running, and starts the hourly retention sweep. */
  async start(): Promise<void> {
    const orphans = await this.runsStore.failOrphans(new Date());
    if (orphans > 0) this.deps.logger.warn({ runs: orphans }, 'agent runs left running by a stopped server were recorded as interrupted');
    this.pruneTimer = setInterval(() => {
      this.pruning ??= this.prune().finally(() => (this.pruning = undefined));
    }, PRUNE_INTERVAL_MS);
    this.pruneTimer.unref();
  }

  /** Deletes ended runs older than their account's plan keeps them (agentRunRetentionDays). */
  async prune(now = new Date()): Promise<number> {
    const days = new Map(Object.entries(this.deps.tiers).map(([tier, limits]) => [tier, limits.agentRunRetentionDays]));
    try {
      return await this.runsStore.pruneEnded(days, now);
    } catch (error) {
      this.deps.logger.warn({ err: error instanceof Error ? error.message : String(error) }, 'could not prune old agent runs');
      return 0;
    }
  }

  async stop(): Promise<void> {
    if (this.pruneTimer) clearInterval(this.pruneTimer);
    await this.pruning;
  }
}
