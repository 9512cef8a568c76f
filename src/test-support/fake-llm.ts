/**
 * A fake LLM on loopback: the only thing the agent tests fake. It speaks the real wire formats of
 * Anthropic Messages (POST /v1/messages) and OpenAI Chat Completions (POST /v1/chat/completions),
 * non-streaming, tool calls included; replays a script of turns in order; records every request
 * (so a test can assert what the model was offered and sent); can delay a turn (until the client
 * gives up, for deadline and abort tests) or hold it until a gate opens (a run in flight for as long
 * as a test needs) and answer errors (401, 429, 500). Reached only through
 * the official SDKs with a base URL: `anthropicUrl` / `openaiUrl`. It listens on FAKE_LLM_HOST,
 * a loopback address the agents' outbound rules refuse unless the operator allows it: a test server
 * whose agents reach it is started with `agentMcpAllow: fakeLlmAllow()`.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { parseAgentMcpAllow, type AllowEntry } from '../core/outbound-address.js';

/** Where the fake LLM listens by default (127.0.0.1 is this server's own loopback address in tests). */
export const FAKE_LLM_HOST = '127.0.0.3';

/** MCPWORKS_AGENT_MCP_ALLOW as a test server needs it for its agents to reach the fake LLM. */
export function fakeLlmAllow(): AllowEntry[] {
  return parseAgentMcpAllow(FAKE_LLM_HOST);
}

export interface FakeToolCall {
  id?: string;
  name: string;
  arguments: Record<string, unknown>;
}

export interface FakeTurn {
  text?: string;
  toolCalls?: FakeToolCall[];
  usage?: { input: number; output: number };
  /** Leave `usage` out of the answer, as some OpenAI-compatible servers do. */
  omitUsage?: boolean;
  /** Answer only after this many ms (the client may give up first: the request is then marked aborted). */
  delayMs?: number;
  /** Answer only once this settles (after `delayMs` if both): a run held in flight until the test lets it go. */
  gate?: Promise<unknown>;
  /** Answer this HTTP status with the vendor's error body instead (401, 429, 500, ...). */
  status?: number;
  /** Answer 307 to this address instead (a redirect the client must not follow). */
  redirect?: string;
}

export interface RecordedRequest {
  api: 'anthropic' | 'openai';
  path: string;
  headers: Record<string, string | string[] | undefined>;
  body: Record<string, unknown>;
  /** The client closed the connection before the answer was sent. */
  aborted: boolean;
  answered: boolean;
}

export interface FakeLlm {
  /** Anthropic SDK base URL (it appends /v1/messages). */
  anthropicUrl: string;
  /** OpenAI SDK base URL (it appends /chat/completions). */
  openaiUrl: string;
  /** Replaces the script: each request takes the next turn; past the end, the server answers 500. */
  script(turns: FakeTurn[]): void;
  requests: RecordedRequest[];
  /** Resolves when `n` requests have arrived (bounded by the test's own timeout). */
  waitForRequests(n: number): Promise<void>;
  close(): Promise<void>;
}

const ERROR_TYPES: Record<number, [string, string]> = {
  401: ['authentication_error', 'invalid_api_key'],
  403: ['permission_error', 'permission_denied'],
  429: ['rate_limit_error', 'rate_limit_exceeded'],
  500: ['api_error', 'server_error'],
  529: ['overloaded_error', 'overloaded'],
};

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

/** The key as the client sent it: real vendors echo part of it in their 401 text, so the fake echoes all of it. */
function sentKey(req: IncomingMessage): string {
  const bearer = String(req.headers.authorization ?? '').replace(/^Bearer\s+/i, '');
  return String(req.headers['x-api-key'] ?? bearer);
}

function anthropicAnswer(turn: FakeTurn, model: unknown, n: number) {
  const content: Array<Record<string, unknown>> = [];
  if (turn.text) content.push({ type: 'text', text: turn.text });
  (turn.toolCalls ?? []).forEach((c, i) =>
    content.push({ type: 'tool_use', id: c.id ?? `toolu_${n}_${i}`, name: c.name, input: c.arguments }),
  );
  return {
    id: `msg_fake_${n}`,
    type: 'message',
    role: 'assistant',
    model,
    content,
    stop_reason: turn.toolCalls?.length ? 'tool_use' : 'end_turn',
    stop_sequence: null,
    ...(turn.omitUsage ? {} : { usage: { input_tokens: turn.usage?.input ?? 0, output_tokens: turn.usage?.output ?? 0 } }),
  };
}

function openaiAnswer(turn: FakeTurn, model: unknown, n: number) {
  const calls = (turn.toolCalls ?? []).map((c, i) => ({
    id: c.id ?? `call_${n}_${i}`,
    type: 'function',
    function: { name: c.name, arguments: JSON.stringify(c.arguments) },
  }));
  const input = turn.usage?.input ?? 0;
  const output = turn.usage?.output ?? 0;
  return {
    id: `chatcmpl-fake-${n}`,
    object: 'chat.completion',
    created: Math.floor(Date.now() / 1000),
    model,
    choices: [
      {
        index: 0,
        message: { role: 'assistant', content: turn.text ?? null, ...(calls.length ? { tool_calls: calls } : {}) },
        finish_reason: calls.length ? 'tool_calls' : 'stop',
        logprobs: null,
      },
    ],
    ...(turn.omitUsage ? {} : { usage: { prompt_tokens: input, completion_tokens: output, total_tokens: input + output } }),
  };
}

function errorBody(api: RecordedRequest['api'], status: number, key: string) {
  const [type, code] = ERROR_TYPES[status] ?? ['api_error', 'error'];
  const message = status === 401 ? `Incorrect API key provided: ${key}` : `fake ${type} for key ${key}`;
  return api === 'anthropic' ? { type: 'error', error: { type, message } } : { error: { message, type, code, param: null } };
}

export async function startFakeLlm(host = FAKE_LLM_HOST): Promise<FakeLlm> {
  let turns: FakeTurn[] = [];
  let next = 0;
  const requests: RecordedRequest[] = [];
  const waiters: Array<{ n: number; resolve: () => void }> = [];
  const sockets = new Set<Socket>();
  const timers = new Set<NodeJS.Timeout>();

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '').split('?')[0] ?? '';
    const api = path === '/v1/messages' ? 'anthropic' : path === '/v1/chat/completions' ? 'openai' : undefined;
    const text = await readBody(req);
    if (req.method !== 'POST' || !api) {
      res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ error: { message: `no route ${path}` } }));
      return;
    }
    let body: Record<string, unknown> = {};
    try {
      body = JSON.parse(text) as Record<string, unknown>;
    } catch {
      res.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify({ error: { message: 'body is not JSON' } }));
      return;
    }
    const record: RecordedRequest = { api, path, headers: { ...req.headers }, body, aborted: false, answered: false };
    requests.push(record);
    for (const w of waiters.splice(0))
      if (requests.length >= w.n) w.resolve();
      else waiters.push(w);
    const n = next++;
    const turn: FakeTurn = turns[n] ?? { status: 500 };
    res.on('close', () => {
      if (!record.answered) record.aborted = true;
    });
    const answer = () => {
      if (record.aborted || res.destroyed) return;
      record.answered = true;
      if (turn.redirect) {
        res.writeHead(307, { location: turn.redirect, 'content-type': 'application/json' }).end('{}');
        return;
      }
      if (turn.status && turn.status >= 400) {
        const headers: Record<string, string> = { 'content-type': 'application/json' };
        if (turn.status === 429) headers['retry-after'] = '0';
        res.writeHead(turn.status, headers).end(JSON.stringify(errorBody(api, turn.status, sentKey(req))));
        return;
      }
      const out = api === 'anthropic' ? anthropicAnswer(turn, body.model, n) : openaiAnswer(turn, body.model, n);
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(out));
    };
    const gated = () => (turn.gate ? void turn.gate.then(answer, answer) : answer());
    if (turn.delayMs) {
      const timer = setTimeout(() => {
        timers.delete(timer);
        gated();
      }, turn.delayMs);
      timers.add(timer);
    } else gated();
  };

  const server: Server = createServer((req, res) => {
    handle(req, res).catch(() => res.destroy());
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  const origin = `http://${host}:${(server.address() as AddressInfo).port}`;
  return {
    anthropicUrl: origin,
    openaiUrl: `${origin}/v1`,
    script(list) {
      turns = list;
      next = 0;
      requests.length = 0;
    },
    requests,
    waitForRequests(n) {
      return requests.length >= n ? Promise.resolve() : new Promise((resolve) => waiters.push({ n, resolve }));
    },
    async close() {
      for (const t of timers) clearTimeout(t);
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
