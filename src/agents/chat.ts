/**
 * chat_with_agent (issue 16): a chat message goes to one replica of the agent (named, or the least
 * loaded one this node runs) and is answered by an orchestration run on that replica's worker, on
 * whichever node runs it (the run is handed to that node through the database: ./handoff.ts). A
 * conversation belongs to its replica for life: its history is persisted (migration 23), sent back
 * with each message (folded into a digest past a budget), and seen by no other replica. Messages of
 * one conversation are answered one after the other, in the order they arrived, on any node: each
 * takes a ticket under the conversation's row lock and waits until no live lower ticket is left.
 */
import { randomUUID } from 'node:crypto';
import {
  chatMessageArg,
  conversationIdArg,
  messageOf,
  pickReplica,
  replicaArg,
  planHistory,
  type ChatMessage,
  type StoredChatMessage,
} from '../core/agent-chat.js';
import { LIMIT_STOPS } from '../core/agent-orchestration.js';
import { DomainError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import type { ChatStore } from '../store/chat-store.js';
import type { ReplicasStore } from '../store/replicas-store.js';
import type { AgentRow } from '../store/schema.js';

/** The dispatcher job of a chat turn (src/agents/dispatcher.ts TriggerJob with trigger 'chat'). */
export interface ChatJob {
  agentId: string;
  replica: string;
  trigger: 'chat';
  triggerName: string;
  triggerRef?: string;
  input: null;
  orchestrationMode: 'reason_first';
  message: string;
  history: ChatMessage[];
  conversationId: string;
  runId: string;
  /** The caller's request: aborted, the run is cancelled (recorded as such). */
  signal?: AbortSignal;
}

/** What a chat turn's run answered (src/agents/dispatcher.ts AgentRunOutcome). */
export interface ChatRunOutcome {
  runId: string;
  replica: string;
  status: string;
  error?: { type: string; message: string };
  answer?: string;
  usage?: { input_tokens: number; output_tokens: number };
  iterations?: number;
  stopReason?: string;
  transcript?: ChatMessage[];
}

export interface ChatDispatcher {
  start(job: ChatJob): { runId: string; began: Promise<void>; done: Promise<ChatRunOutcome> };
}

/** The node's replica processes as the chat needs them (ReplicaSupervisor). */
export interface ChatReplicas {
  localReplicas(agentId: string): string[];
  load(agentId: string): Map<string, number>;
  /** The agent's replicas up here (the named one), after waiting up to `ms` for one being started or restarted here. */
  upReplicas(agentId: string, ms: number, options?: { replica?: string; signal?: AbortSignal }): Promise<string[]>;
}

export interface ChatAnswer {
  response: string;
  replica: string;
  conversation_id: string;
  run_id: string;
  usage: { input_tokens: number; output_tokens: number };
  status: string;
  stop_reason?: string;
  iterations?: number;
}

/** How long a message waits for the ones before it in its conversation (each is bounded by the agent's run time). */
export const CHAT_WAIT_MS = 10 * 60_000;
/** How long a message waits for a replica being started or restarted (after start_agent, scale_agent, a crash) before it is refused as starting. */
export const CHAT_REPLICA_START_WAIT_MS = 30_000;

export class AgentChat {
  private readonly closing = new AbortController();
  /** This node's chat calls by what a client's cancel names them (account, session, request id). */
  private readonly cancellable = new Map<string, AbortController>();
  /** The same calls by their run id: what another node's cancel NOTIFYs (requestCancel). */
  private readonly byRun = new Map<string, AbortController>();

  constructor(
    private readonly deps: {
      store: ChatStore;
      replicas: Pick<ReplicasStore, 'list'>;
      supervisor: ChatReplicas;
      dispatcher: () => ChatDispatcher;
      logger: Logger;
      /** A waiting or answering message's ticket lives this long past its last renewal (a dead node's lapses). */
      aliveMs: number;
      /** The history budget in characters (default CHAT_HISTORY_BUDGET_CHARS). */
      historyBudgetChars?: number;
    },
  ) {}

  /** Stops waiting messages (they answer unavailable); a run in flight is the dispatcher's to stop. */
  close(): void {
    this.closing.abort();
  }

  /**
   * A 2025-era client's notifications/cancelled for a chat_with_agent call (it comes on another
   * request, maybe to another node): stopped at once when this node answers it, else its turn is
   * marked in the database, whose notification reaches the node answering it (cancelRun); that node
   * also reads the mark as it renews the turn or waits for it.
   */
  async cancel(accountId: string, cancelKey: string): Promise<void> {
    const key = chatCancelKey(accountId, cancelKey);
    const local = this.cancellable.get(key);
    if (local) local.abort();
    else await this.deps.store.requestCancel(accountId, key);
  }

  /** Another node's cancel reached a call of this node (its run id, NOTIFYed): false when it is not this node's. */
  cancelRun(runId: string): boolean {
    const call = this.byRun.get(runId);
    if (!call || call.signal.aborted) return false;
    call.abort();
    return true;
  }

  /** The listener (re)connected: this node's calls marked cancelled meanwhile are stopped. */
  async cancelMarked(): Promise<void> {
    for (const runId of await this.deps.store.markedRuns([...this.byRun.keys()])) this.cancelRun(runId);
  }

  /**
   * `signal`: the caller's request (cancelled, or its connection closed). A message still waiting for
   * its turn stops waiting and gives its ticket back (no run is made); one being answered has its run
   * cancelled. `cancel`: what a 2025-era client's notifications/cancelled names this call by (cancel()).
   */
  async send(
    agent: AgentRow,
    args: Record<string, unknown>,
    callerSignal?: AbortSignal,
    cancel?: { accountId: string; key: string },
  ): Promise<ChatAnswer> {
    const message = chatMessageArg(args.message);
    const wanted = replicaArg(args.replica);
    const conversationId = conversationIdArg(args.conversation_id);
    if (agent.status !== 'running')
      throw new DomainError('conflict', `agent '${agent.name}' is ${agent.status}: start it with start_agent before chatting`, {
        reason: 'agent_stopped',
      });
    if (!agent.config || typeof agent.config !== 'object' || !('ai' in agent.config) || !agent.config.ai)
      throw new DomainError('conflict', `agent '${agent.name}' has no AI configured: give it a model with configure_agent_ai`, {
        reason: 'no_ai',
      });
    const { store } = this.deps;
    let replica: string;
    let id: string;
    let made = false;
    if (conversationId !== undefined) {
      const found = await store.conversation(agent.id, conversationId);
      // Another agent's or another replica's conversation is not found: it is not this one's to see.
      if (!found || (wanted !== undefined && found.replica !== wanted))
        throw new DomainError(
          'not_found',
          `conversation '${conversationId}' not found for agent '${agent.name}'${wanted !== undefined ? ` on replica '${wanted}'` : ''}`,
          { field: 'conversation_id' },
        );
      replica = pickReplica(agent.name, await this.candidates(agent.id, found.replica, callerSignal), found.replica);
      id = found.id;
    } else {
      replica = pickReplica(agent.name, await this.candidates(agent.id, wanted, callerSignal), wanted);
      id = randomUUID();
      await store.createConversation(id, agent.id, replica);
      made = true;
    }
    const runId = randomUUID();
    // The caller's signal, or a cancel naming this call (here, or marked in the database by another node).
    const cancelled = new AbortController();
    const cancelKey = cancel ? chatCancelKey(cancel.accountId, cancel.key) : undefined;
    const signal = callerSignal ? AbortSignal.any([callerSignal, cancelled.signal]) : cancelled.signal;
    let ticket: number | undefined;
    try {
      ticket = await store.enqueue(id, runId, this.deps.aliveMs, cancelKey);
    } catch (error) {
      // Nothing of this message was kept: a conversation made for it goes too (no partial write).
      if (made) await store.dropIfEmpty(id).catch(() => undefined);
      throw error;
    }
    if (ticket === undefined) throw new DomainError('not_found', `agent '${agent.name}' no longer exists`);
    if (cancelKey) {
      this.cancellable.set(cancelKey, cancelled);
      this.byRun.set(runId, cancelled);
    }
    let answered = false;
    const keepAlive = setInterval(
      () =>
        void store.renew(id, ticket, this.deps.aliveMs).then(
          (marked) => marked && cancelled.abort(),
          () => undefined,
        ),
      Math.max(100, Math.floor(this.deps.aliveMs / 3)),
    );
    keepAlive.unref();
    try {
      await this.waitTurn(agent, id, ticket, signal);
      const answer = await this.answer(agent, id, replica, runId, message, signal);
      answered = true;
      return answer;
    } finally {
      clearInterval(keepAlive);
      if (cancelKey && this.cancellable.get(cancelKey) === cancelled) this.cancellable.delete(cancelKey);
      this.byRun.delete(runId);
      await store.release(id, ticket).catch((error: unknown) => {
        // Its ticket lapses after aliveMs: the next message waits that long at most.
        this.deps.logger.warn(
          { err: error instanceof Error ? error.message : String(error), run_id: runId },
          'could not release a chat turn',
        );
      });
      // A new conversation whose first message was refused before anything was kept: its id was never answered.
      if (made && !answered) await store.dropIfEmpty(id).catch(() => undefined);
    }
  }

  /** The agent's replicas with whether this node runs each and its queued jobs here (once one on its way here is up, bounded). */
  private async candidates(agentId: string, replica: string | undefined, signal: AbortSignal | undefined) {
    const stop = signal ? AbortSignal.any([signal, this.closing.signal]) : this.closing.signal;
    await this.deps.supervisor.upReplicas(agentId, CHAT_REPLICA_START_WAIT_MS, { replica, signal: stop });
    const rows = await this.deps.replicas.list(agentId);
    const local = new Set(this.deps.supervisor.localReplicas(agentId));
    const load = this.deps.supervisor.load(agentId);
    return rows.map((r) => ({ name: r.name, status: r.status, local: local.has(r.name), load: load.get(r.name) ?? 0, leased: r.leased }));
  }

  /** Waits until the message's ticket is the conversation's lowest live one (state polled, bounded). */
  private async waitTurn(agent: AgentRow, id: string, ticket: number, signal: AbortSignal | undefined): Promise<void> {
    const until = Date.now() + CHAT_WAIT_MS;
    const stop = signal ? AbortSignal.any([signal, this.closing.signal]) : this.closing.signal;
    let pause = 20;
    for (;;) {
      if (this.closing.signal.aborted) throw new DomainError('unavailable', 'the server is stopping; the message was not answered');
      if (signal?.aborted) throw new DomainError('unavailable', 'the request was cancelled while the message waited for its turn');
      const held = await this.deps.store.tryHold(id, ticket, this.deps.aliveMs);
      if (held === 'cancelled') throw new DomainError('unavailable', 'the request was cancelled while the message waited for its turn');
      if (held) return;
      if (Date.now() > until)
        throw new DomainError(
          'unavailable',
          `the earlier messages of conversation '${id}' of agent '${agent.name}' are still being answered; send this one again later`,
        );
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          stop.removeEventListener('abort', done);
          resolve();
        };
        const timer = setTimeout(done, pause);
        stop.addEventListener('abort', done, { once: true });
      });
      pause = Math.min(250, pause * 2);
    }
  }

  /** Holding the conversation: its history, the run on the replica, its messages kept. */
  private async answer(
    agent: AgentRow,
    id: string,
    replica: string,
    runId: string,
    message: string,
    signal: AbortSignal | undefined,
  ): Promise<ChatAnswer> {
    const { store } = this.deps;
    const conversation = await store.conversation(agent.id, id);
    if (!conversation) throw new DomainError('not_found', `conversation '${id}' not found for agent '${agent.name}'`);
    const stored: StoredChatMessage[] = [];
    let unreadable = 0;
    for (const row of await store.messages(id)) {
      const m = messageOf(row.content);
      if (m) stored.push({ seq: row.seq, message: m });
      else unreadable++;
    }
    const summary = store.summaryOf(conversation);
    // A row that does not open (moved from another conversation, tampered, another server secret, or
    // kept unsealed before content was sealed) is left out of the history, never sent as it stands.
    if (unreadable > 0 || summary === undefined)
      this.deps.logger.warn(
        { conversation_id: id, messages: unreadable, summary: summary === undefined },
        'chat history rows that do not open under this server secret were left out',
      );
    const plan = planHistory(summary ?? null, stored, this.deps.historyBudgetChars);
    if (plan.fold) await store.fold(id, plan.fold.summary, plan.fold.throughSeq);
    const started = this.deps.dispatcher().start({
      agentId: agent.id,
      replica,
      trigger: 'chat',
      triggerName: id,
      input: null,
      orchestrationMode: 'reason_first',
      message,
      history: plan.history,
      conversationId: id,
      runId,
      ...(signal ? { signal } : {}),
    });
    const outcome = await started.done;
    // What happened is kept even when the run stopped early (functions it called did run); a run
    // refused before it began left nothing to keep.
    const transcript = outcome.transcript ?? [];
    if (transcript.length > 0)
      await store
        .append(
          id,
          outcome.runId,
          transcript.map((m) => ({ role: m.role, content: m })),
        )
        .catch((error: unknown) => {
          // The answer still goes back; the conversation's next message is sent without this exchange.
          this.deps.logger.warn(
            { err: error instanceof Error ? error.message : String(error), run_id: outcome.runId },
            'could not keep a chat exchange in its conversation',
          );
        });
    const usage = outcome.usage ?? { input_tokens: 0, output_tokens: 0 };
    if (outcome.status !== 'succeeded' && (outcome.answer === undefined || outcome.answer === '')) {
      const error = outcome.error ?? { type: 'internal_error', message: 'the chat run ended without an answer' };
      throw new DomainError(typeOf(error.type), `${error.message} (run ${outcome.runId})`, {
        run_id: outcome.runId,
        replica,
        conversation_id: id,
        ...(outcome.stopReason ? { stop_reason: outcome.stopReason } : {}),
      });
    }
    return {
      response: outcome.answer ?? '',
      replica: outcome.replica || replica,
      conversation_id: id,
      run_id: outcome.runId,
      usage,
      status: outcome.status,
      ...(outcome.stopReason ? { stop_reason: outcome.stopReason } : {}),
      ...(outcome.iterations !== undefined ? { iterations: outcome.iterations } : {}),
    };
  }
}

/** A chat call as a cancel names it: its account, then the session and request id (run-service cancelKeyOf). */
function chatCancelKey(accountId: string, cancelKey: string): string {
  return `${accountId} ${cancelKey}`;
}

const TYPES = new Set([
  'validation_error',
  'not_found',
  'conflict',
  'forbidden',
  'quota_exceeded',
  'limit_exceeded',
  'rate_limited',
  'unavailable',
  'internal_error',
]);

/** The loop's limits: a run they stopped is the agent's limit, not a fault to retry. */
const LIMITS: ReadonlySet<string> = new Set(LIMIT_STOPS);

/** A run's error type as a tool error's (a limit is limit_exceeded; the loop's other kinds, e.g. provider errors, unavailable). */
function typeOf(type: string): DomainError['type'] {
  if (TYPES.has(type)) return type as DomainError['type'];
  if (LIMITS.has(type)) return 'limit_exceeded';
  if (type === 'QUOTA_EXCEEDED') return 'quota_exceeded';
  if (type === 'EXECUTION_RATE_EXCEEDED' || type === 'CONCURRENCY_LIMIT_EXCEEDED') return 'rate_limited';
  return 'unavailable';
}
