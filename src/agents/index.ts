// The agent runtime as app/ and api/ see it: replicas, the dispatcher every trigger ends in, and the
// runs record. Built once per server (app/start-server.ts) on the server's database and RunService.
import type { AgentStateAccess } from '../core/agent-state-access.js';
import type { Logger } from '../core/logger.js';
import { DEFAULT_TIER, DEFAULT_TIERS, type TierLimits } from '../core/tiers.js';
import type { PendingWrites } from '../store/pending-writes.js';
import type { RunService } from '../run/run-service.js';
import { AgentRunsStore } from '../store/agent-runs-store.js';
import { AgentsStore } from '../store/agents-store.js';
import type { Db } from '../store/database.js';
import { ReplicasStore } from '../store/replicas-store.js';
import { AgentDispatcher, type AgentRunOutcome, type TriggerJob } from './dispatcher.js';
import { ReplicaDirectory } from './replicas.js';
import { replicaRunner, ReplicaSupervisor } from './supervisor.js';
import { AgentRuns } from './runs.js';
import { Toolbox, type AttachedToolSource } from './orchestration/toolbox.js';
import type { OutboundPolicyWire } from './outbound-guard.js';
import { HeartbeatLoop } from './triggers/heartbeat.js';
import type { AgentAiSettings } from '../services/agent-ai.js';
import { AgentChat } from './chat.js';
import { ChatStore, type ChatSealer } from '../store/chat-store.js';
import { HandoffStore } from '../store/handoff-store.js';
import type { NotifyListener } from '../store/notify-listener.js';
import { ReplicaRouter } from './handoff.js';
import { CHAT_REPLICA_START_WAIT_MS } from './chat.js';

export { AgentDispatcher, type AgentRunOutcome, type TriggerJob, ORCHESTRATION_MODES } from './dispatcher.js';
export { ReplicaDirectory, type ReplicaView } from './replicas.js';
export { AgentRuns } from './runs.js';
export { AgentChat } from './chat.js';
export { ReplicaSupervisor } from './supervisor.js';
export { Toolbox, type AttachedTool, type AttachedToolSource } from './orchestration/toolbox.js';

/** How often ended runs past their plan's retention are deleted, and the first time after start. */
const PRUNE_INTERVAL_MS = 60 * 60 * 1000;
const FIRST_PRUNE_MS = 60 * 1000;

export class AgentRuntime {
  readonly replicas: ReplicaDirectory;
  /** This node's replica processes and leases (started after the server listens, stopped first at shutdown). */
  readonly supervisor: ReplicaSupervisor;
  readonly runs: AgentRuns;
  readonly dispatcher: AgentDispatcher;
  /** The tools of the agents' AI runs (attach() gives it the attached MCP servers' source). */
  readonly toolbox: Toolbox;
  /** Where triggers hand their jobs: the dispatcher for a local replica, the replica's home node (through the database) for another. */
  readonly router: ReplicaRouter;
  /** chat_with_agent: conversations bound to a replica, answered in order through the dispatcher. */
  readonly chat: AgentChat;
  private readonly runsStore: AgentRunsStore;
  /** Heartbeats of the agents this node holds replicas of (configure_heartbeat). */
  private readonly heartbeats: HeartbeatLoop;
  /** The conversations (tests read them through it; sealed at rest). */
  readonly chatStore: ChatStore;
  private readonly timers: NodeJS.Timeout[] = [];
  private sweeping: Promise<unknown> | undefined;
  private started = false;

  constructor(
    private readonly deps: {
      db: Db;
      run: Pick<RunService, 'invoke' | 'snapshot'>;
      nodeId: string;
      tiers: Readonly<Record<string, TierLimits>>;
      logger: Logger;
      /** The server instance lease: runs of a node whose lease lapsed are ended this often. */
      leaseMs: number;
      /** Most replica processes this node runs (MCPWORKS_MAX_REPLICAS_PER_NODE). */
      maxReplicas?: number | undefined;
      pending?: Pick<PendingWrites, 'add'>;
      /** The agent's state for its runs' `mcpworks.state` (AgentService.stateAccess). */
      state?: (agentId: string, tier: string) => AgentStateAccess;
      /** The agents' AI settings (keys opened just before a run): without them every trigger runs `direct`. */
      ai?: Pick<AgentAiSettings, 'open' | 'orchestrationLimits'>;
      /** The agents' attached MCP servers' tools, offered to their AI runs. */
      attached?: AttachedToolSource;
      /** Where the agents' models may be reached (the operator's list, this server's endpoints): each model call is checked on its replica. */
      outbound?: () => OutboundPolicyWire;
      /** Seals chat conversations' content at rest (the state cipher's BoundCipher); also jobs handed to another node. */
      chatSealer: ChatSealer;
      /** LISTEN on the database: jobs handed over between nodes (without it, only the poll finds them). */
      notifications?: NotifyListener;
      /** No other node can share the database (the embedded one): no idle poll for handed-over jobs. */
      soleNode?: boolean;
      /** Told the outcome of each job another node handed to this one (webhook Idempotency-Keys: triggers/webhook.ts). */
      servedHere?: (job: TriggerJob, outcome: AgentRunOutcome) => Promise<void>;
    },
  ) {
    const agents = new AgentsStore(deps.db);
    this.runsStore = new AgentRunsStore(deps.db);
    const replicas = new ReplicasStore(deps.db);
    this.supervisor = new ReplicaSupervisor({
      store: replicas,
      nodeId: deps.nodeId,
      leaseMs: deps.leaseMs,
      logger: deps.logger,
      tiers: deps.tiers,
      ...(deps.maxReplicas !== undefined ? { maxReplicas: deps.maxReplicas } : {}),
    });
    this.replicas = new ReplicaDirectory({ agents, replicas, nodeId: deps.nodeId, supervisor: this.supervisor });
    this.runs = new AgentRuns(this.runsStore);
    this.toolbox = new Toolbox({ run: deps.run, state: deps.state, attached: deps.attached, runs: this.runsStore, logger: deps.logger });
    // `direct` jobs run on their replica's worker process, which asks this process to run the function.
    this.dispatcher = new AgentDispatcher({
      agents,
      runs: this.runsStore,
      run: deps.run,
      nodeId: deps.nodeId,
      logger: deps.logger,
      runner: replicaRunner(() => this.supervisor),
      ...(deps.pending ? { pending: deps.pending } : {}),
      ...(deps.state ? { state: deps.state } : {}),
      ...(deps.ai
        ? {
            orchestration: {
              open: (agent) => deps.ai!.open(agent),
              limits: (agent, tier) => deps.ai!.orchestrationLimits(agent, tier),
              toolbox: this.toolbox,
              ...(deps.outbound ? { outbound: deps.outbound } : {}),
            },
          }
        : {}),
    });
    this.heartbeats = new HeartbeatLoop({
      db: deps.db,
      nodeId: deps.nodeId,
      dispatcher: this.dispatcher,
      local: () => {
        const agents = new Map<string, Map<string, number>>();
        for (const p of this.supervisor.processes())
          if (p.phase === 'up' && !agents.has(p.agentId)) agents.set(p.agentId, this.supervisor.load(p.agentId));
        return agents;
      },
      logger: deps.logger,
    });
    const aliveMs = Math.max(5_000, deps.leaseMs);
    this.router = new ReplicaRouter({
      store: new HandoffStore(deps.db),
      dispatcher: () => this.dispatcher,
      local: this.supervisor,
      sealer: deps.chatSealer,
      nodeId: deps.nodeId,
      logger: deps.logger,
      aliveMs,
      ...(deps.soleNode ? { soleNode: true } : {}),
      ...(deps.servedHere ? { servedHere: deps.servedHere } : {}),
    });
    this.chatStore = new ChatStore(deps.db, deps.chatSealer);
    this.chat = new AgentChat({
      store: this.chatStore,
      replicas,
      supervisor: this.supervisor,
      // A chat waits for the replica's node to take its turn as long as for a replica being started.
      dispatcher: () => ({ start: (job) => this.router.start(job, { claimMs: CHAT_REPLICA_START_WAIT_MS }) }),
      logger: deps.logger,
      aliveMs,
    });
  }

  /**
   * Ends runs a dead node left running (now, and every lease period: a node killed while this one
   * runs has its runs ended once its lease lapses), and sweeps runs past retention soon after start
   * and hourly.
   */
  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    await this.endOrphans();
    await this.router.listen(this.deps.notifications);
    // Heartbeats are AI runs: a server without the agents' AI settings has none.
    if (this.deps.ai) this.heartbeats.start();
    const every = (ms: number, work: () => Promise<unknown>) => {
      const timer = setInterval(() => {
        this.sweeping ??= work().finally(() => (this.sweeping = undefined));
      }, ms);
      timer.unref();
      this.timers.push(timer);
    };
    every(Math.max(1000, this.deps.leaseMs), () => this.endOrphans());
    every(PRUNE_INTERVAL_MS, () => this.prune());
    const first = setTimeout(() => {
      this.sweeping ??= this.prune().finally(() => (this.sweeping = undefined));
    }, FIRST_PRUNE_MS);
    first.unref();
    this.timers.push(first);
  }

  /** Ends the runs of nodes that are gone (see start); a failure is logged, never thrown. */
  async endOrphans(): Promise<void> {
    try {
      const orphans = await this.runsStore.failOrphans();
      if (orphans > 0) this.deps.logger.warn({ runs: orphans }, 'agent runs left running by a stopped server were recorded as interrupted');
    } catch (error) {
      this.deps.logger.warn({ err: error instanceof Error ? error.message : String(error) }, 'could not end the runs of stopped servers');
    }
  }

  /** Deletes ended runs older than their account's plan keeps them (agentRunRetentionDays; an unknown plan: the default plan's). */
  async prune(now = new Date()): Promise<number> {
    const days = new Map(Object.entries(this.deps.tiers).map(([tier, limits]) => [tier, limits.agentRunRetentionDays]));
    const fallback = (this.deps.tiers[DEFAULT_TIER] ?? DEFAULT_TIERS[DEFAULT_TIER]!).agentRunRetentionDays;
    try {
      // Conversations go with the runs that answered them (the same plan's retention).
      await this.chatStore.prune(days, fallback, now).catch((error: unknown) => {
        this.deps.logger.warn({ err: error instanceof Error ? error.message : String(error) }, 'could not prune old agent conversations');
      });
      return await this.runsStore.pruneEnded(days, fallback, now);
    } catch (error) {
      this.deps.logger.warn({ err: error instanceof Error ? error.message : String(error) }, 'could not prune old agent runs');
      return 0;
    }
  }

  /** Stops the sweeps and the runs in flight (recorded as cancelled), waiting for their records. */
  async stop(): Promise<void> {
    for (const timer of this.timers.splice(0)) clearTimeout(timer);
    await this.heartbeats.stop();
    this.chat.close();
    // The router's runs for other nodes end with the dispatcher's (cancelled); its outcomes are written back first.
    await Promise.all([this.router.close(), this.dispatcher.close()]);
    await this.sweeping;
    this.started = false;
  }
}
