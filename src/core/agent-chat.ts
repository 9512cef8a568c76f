/**
 * Chat with an agent (issue 16): the rules, no I/O. Which replica answers a chat, what a chat
 * message and a conversation id may be, and how a conversation's stored history becomes what the
 * model is sent (whole turns, tool calls paired with their results, within a budget; the oldest
 * turns folded into a summary).
 */
import { DomainError, invalid } from './errors.js';
import { REPLICA_NAME_PATTERN } from './agents.js';

/** A tool call a model made (the providers read it from each vendor's wire format). */
export interface ToolCall {
  /** The vendor's id for the call; the result goes back under it. */
  id: string;
  name: string;
  /** Parsed arguments; a call whose arguments are not a JSON object gets `{}` and `argumentsError`. */
  arguments: Record<string, unknown>;
  argumentsError?: string;
}

export interface ToolResult {
  callId: string;
  /** What the model reads (already capped and passed through the secret scanner by the loop). */
  content: string;
  isError?: boolean;
}

/** One message of a model conversation, whatever the vendor (src/agents/providers speak it in each wire format). */
export type ChatMessage =
  | { role: 'user'; content: string }
  | { role: 'assistant'; content: string; toolCalls?: ToolCall[] }
  | { role: 'tool'; results: ToolResult[] };

/** The longest chat message accepted, in characters (the guide gives none; this keeps one turn's prompt bounded). */
export const CHAT_MESSAGE_MAX_CHARS = 32_000;
/** The history a chat turn is sent, in characters of its JSON (summary included); older turns are folded into the summary. */
export const CHAT_HISTORY_BUDGET_CHARS = 60_000;
/** The summary of folded turns keeps at most this many characters (its newest part). */
export const CHAT_SUMMARY_MAX_CHARS = 8_000;
/** How much of each folded message the summary keeps. */
const DIGEST_TEXT_CHARS = 280;

const CONVERSATION_ID = /^[A-Za-z0-9-]{1,64}$/;
const CONTROL = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/;

export function chatMessageArg(value: unknown): string {
  if (typeof value !== 'string' || value.trim() === '')
    throw invalid('message is required: what you want to tell the agent', { field: 'message' });
  if (value.length > CHAT_MESSAGE_MAX_CHARS)
    throw invalid(`message is ${value.length} characters; at most ${CHAT_MESSAGE_MAX_CHARS} are accepted`, {
      field: 'message',
      limit: CHAT_MESSAGE_MAX_CHARS,
    });
  if (CONTROL.test(value)) throw invalid('message may not contain control characters (tabs and newlines are fine)', { field: 'message' });
  return value;
}

/** `conversation_id`: an id an earlier chat_with_agent answered (undefined: a new conversation). */
export function conversationIdArg(value: unknown): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string' || !CONVERSATION_ID.test(value))
    throw invalid('conversation_id must be the conversation_id of an earlier chat_with_agent answer', { field: 'conversation_id' });
  return value;
}

/** `replica`: a replica's verb-animal name (undefined: none given). */
export function replicaArg(value: unknown): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string' || !REPLICA_NAME_PATTERN.test(value))
    throw invalid('replica must be a replica name as describe_agent lists them, e.g. "daring-duck"', { field: 'replica' });
  return value;
}

/** One of the agent's replicas as the chat sees it: its row's status, whether this node runs it, its queued jobs here. */
export interface ReplicaCandidate {
  name: string;
  status: string;
  local: boolean;
  load: number;
  /** Its lease is live (false: its node stopped renewing it, dead until the replica is re-placed). */
  leased?: boolean;
}

/**
 * The replica that answers: the named one, which must be running (here, or on another node, which
 * then answers through the database); else the least loaded of the replicas this node runs (ties:
 * the oldest), or, with none here, the oldest running on another node (a live lease first). A name the agent does not
 * have is not_found; a replica that is not running is a conflict naming it.
 */
export function pickReplica(agent: string, replicas: readonly ReplicaCandidate[], wanted: string | undefined): string {
  const kept = replicas.filter((r) => r.status !== 'draining');
  if (wanted !== undefined) {
    const r = kept.find((c) => c.name === wanted);
    if (!r) {
      const names = kept.map((c) => c.name);
      throw new DomainError(
        'not_found',
        `agent '${agent}' has no replica '${wanted}'${names.length > 0 ? `; its replicas: ${names.join(', ')}` : ''}`,
        { field: 'replica' },
      );
    }
    return usable(agent, r);
  }
  const local = kept.filter((c) => c.local && c.status === 'running');
  if (local.length === 0) {
    // A running row whose lease lapsed is on a dead node: one with a live lease answers first.
    const running = kept.filter((c) => c.status === 'running');
    const elsewhere = running.find((c) => c.leased !== false) ?? running[0];
    if (elsewhere) return elsewhere.name;
    // Pending (not started yet) or crashed (restarting): being started, not stopped.
    if (kept.some((c) => c.status === 'pending' || c.status === 'crashed'))
      throw new DomainError(
        'unavailable',
        `agent '${agent}' has no replica running yet: its replicas are starting; retry in a few seconds`,
        {
          reason: 'replica_starting',
        },
      );
    throw new DomainError('conflict', `agent '${agent}' has no running replica: start it with start_agent`, { reason: 'replica_stopped' });
  }
  let best = local[0]!;
  for (const c of local) if (c.load < best.load) best = c;
  return best.name;
}

/** The named replica if it can take the chat (here or on its own node), else why not (it is named in every message). */
export function usable(agent: string, r: ReplicaCandidate): string {
  if (r.status === 'running') return r.name;
  if (r.status === 'pending' || r.status === 'crashed')
    throw new DomainError('unavailable', `replica '${r.name}' of agent '${agent}' is starting (${r.status}); retry in a few seconds`, {
      replica: r.name,
      reason: 'replica_starting',
    });
  throw new DomainError(
    'conflict',
    `replica '${r.name}' of agent '${agent}' is ${r.status}: start it with start_agent(name: '${agent}', replica: '${r.name}')`,
    { replica: r.name, reason: 'replica_stopped' },
  );
}

/** A stored message of a conversation, oldest first. */
export interface StoredChatMessage {
  seq: number;
  message: ChatMessage;
}

export interface HistoryPlan {
  /** What the model is sent before the new message (the summary first, as a user message). */
  history: ChatMessage[];
  /** When the budget was passed: the new summary, and the last seq it covers (those rows are deleted). */
  fold?: { summary: string; throughSeq: number };
}

const size = (m: ChatMessage) => JSON.stringify(m).length;

/**
 * Whole turns (a user message and what followed it), each assistant tool call paired with its
 * result (a call without one keeps only its text; a result without its call is dropped: vendors
 * refuse either). Leading messages before the first user message (their turn was pruned) are dropped.
 */
export function turnsOf(messages: readonly StoredChatMessage[]): Array<{ lastSeq: number; messages: ChatMessage[] }> {
  const turns: Array<{ lastSeq: number; messages: ChatMessage[] }> = [];
  for (let i = 0; i < messages.length; i++) {
    const { seq, message } = messages[i]!;
    if (message.role === 'user') {
      turns.push({ lastSeq: seq, messages: [message] });
      continue;
    }
    const turn = turns[turns.length - 1];
    if (!turn) continue;
    turn.lastSeq = seq;
    if (message.role === 'assistant') {
      const calls = message.toolCalls ?? [];
      const next = messages[i + 1]?.message;
      const answered = next?.role === 'tool' ? new Set(next.results.map((r) => r.callId)) : new Set<string>();
      if (calls.length > 0 && calls.every((c) => answered.has(c.id))) {
        turn.messages.push(message, { role: 'tool', results: (next as Extract<ChatMessage, { role: 'tool' }>).results });
        turn.lastSeq = messages[i + 1]!.seq;
        i++;
      } else if (message.content !== '') turn.messages.push({ role: 'assistant', content: message.content });
    }
    // A tool message not taken with its call above has no call before it: dropped.
  }
  return turns;
}

export function summaryMessage(summary: string): ChatMessage {
  return { role: 'user', content: `Summary of the earlier part of this conversation (condensed by the server):\n${summary}` };
}

/**
 * What the model is sent: the summary and the newest whole turns within `budget` characters. When
 * they do not fit, the oldest turns are folded into the summary (a deterministic digest: no extra
 * model call, nothing a message can steer) until they do; the newest turn is always kept.
 */
export function planHistory(
  summary: string | null,
  messages: readonly StoredChatMessage[],
  budget = CHAT_HISTORY_BUDGET_CHARS,
): HistoryPlan {
  const turns = turnsOf(messages);
  const turnSize = turns.map((t) => t.messages.reduce((n, m) => n + size(m), 0));
  const summarySize = (s: string | null) => (s ? size(summaryMessage(s)) : 0);
  let total = summarySize(summary) + turnSize.reduce((a, b) => a + b, 0);
  if (total <= budget) return { history: [...(summary ? [summaryMessage(summary)] : []), ...turns.flatMap((t) => t.messages)] };
  let folded = 0;
  let next = summary;
  while (folded < turns.length - 1 && total > budget) {
    next = appendDigest(next, turns[folded]!.messages);
    total = summarySize(next) + turnSize.slice(folded + 1).reduce((a, b) => a + b, 0);
    folded++;
  }
  if (folded === 0) return { history: [...(summary ? [summaryMessage(summary)] : []), ...turns.flatMap((t) => t.messages)] };
  const kept = turns.slice(folded);
  return {
    history: [summaryMessage(next!), ...kept.flatMap((t) => t.messages)],
    fold: { summary: next!, throughSeq: turns[folded - 1]!.lastSeq },
  };
}

const clip = (text: string, n: number) => (text.length <= n ? text : `${text.slice(0, n)}…`);
const oneLine = (text: string) => text.replace(/\s+/g, ' ').trim();

/** The summary with one more turn's digest: who said what (clipped), which tools were called; its newest part kept. */
export function appendDigest(summary: string | null, turn: readonly ChatMessage[]): string {
  const lines: string[] = [];
  for (const m of turn) {
    if (m.role === 'user') lines.push(`- user: ${clip(oneLine(m.content), DIGEST_TEXT_CHARS)}`);
    else if (m.role === 'assistant') {
      const calls = (m.toolCalls ?? []).map((c: ToolCall) => c.name);
      if (calls.length > 0) lines.push(`- assistant called ${calls.join(', ')}`);
      if (m.content !== '') lines.push(`- assistant: ${clip(oneLine(m.content), DIGEST_TEXT_CHARS)}`);
    }
  }
  const text = summary ? `${summary}\n${lines.join('\n')}` : lines.join('\n');
  if (text.length <= CHAT_SUMMARY_MAX_CHARS) return text;
  const cut = text.slice(text.length - CHAT_SUMMARY_MAX_CHARS);
  const at = cut.indexOf('\n');
  return `(older turns omitted)\n${at >= 0 ? cut.slice(at + 1) : cut}`;
}

/** A message as stored: the role beside it, the message itself as JSON (tool calls and results included). */
export function storedRole(message: ChatMessage): string {
  return message.role;
}

/** A stored row back as a message; a row that is not one (a newer format, damage) is left out. */
export function messageOf(content: unknown): ChatMessage | undefined {
  if (!content || typeof content !== 'object') return undefined;
  const m = content as Record<string, unknown>;
  if (m.role === 'user' && typeof m.content === 'string') return { role: 'user', content: m.content };
  if (m.role === 'assistant' && typeof m.content === 'string') {
    const calls = Array.isArray(m.toolCalls) ? (m.toolCalls as ToolCall[]).filter((c) => c && typeof c.id === 'string') : [];
    return calls.length > 0 ? { role: 'assistant', content: m.content, toolCalls: calls } : { role: 'assistant', content: m.content };
  }
  if (m.role === 'tool' && Array.isArray(m.results))
    return { role: 'tool', results: m.results as Extract<ChatMessage, { role: 'tool' }>['results'] };
  return undefined;
}
