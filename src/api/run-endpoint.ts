import { randomBytes } from 'node:crypto';
import { fromJsonSchema, McpServer, type CallToolResult } from '@modelcontextprotocol/server';
import { refuseUnknownTools } from './unknown-tools.js';
import { DomainError, isDomainError } from '../core/errors.js';
import { renderToolResult } from '../core/tool-render.js';
import { toolName as budgetedToolName } from '../core/names.js';
import { liveSince, type McpSessionRef, type NamespaceRef } from '../store/accounts-store.js';
import type { KeyPrincipal } from '../services/accounts.js';
import type { ActiveFunction } from '../store/catalog-store.js';
import {
  cancelKeyOf,
  KeyChangedError,
  mcpTrigger,
  type NamespaceSnapshot,
  type PrecheckedInput,
  type Rejection,
  type RunContext,
  type RunResult,
  type RunService,
  type Ticket,
} from '../run/run-service.js';
import type { Logger } from '../core/logger.js';
import { isRetryableStoreError } from '../store/db-health.js';
import { jsonRpcError, type CheckedDispatch, type RequestScope as McpRequestScope } from './mcp-endpoint.js';
import { keyPrincipal } from '../core/principal.js';

import { RenderedCache } from './rendered-cache.js';
import { runToolError } from './tool-results.js';
import { bodyOfPieces, inOneWrite } from './one-write.js';
import { callInputProblemSlices } from '../core/call-input.js';
import { MAIN_THREAD_SLICE_VALUES, sharedFairShare } from '../run/fair-share.js';

export type RunMode = 'code' | 'tools';

/** A run endpoint request's scope: its extra is the run endpoint's own (set by app.ts). */
type RequestScope = McpRequestScope<RunScopeExtra>;

/** What the run endpoint attaches to a request scope. */
export interface RunScopeExtra {
  mode: RunMode;
  env: Record<string, string>;
  /** The namespace row as read with the request's key (null: the account has none of that name). */
  addressed?: NamespaceRef | null;
  /** Loaded once per request; the run is pinned to it. */
  snapshot?: NamespaceSnapshot;
  ticket?: Ticket;
  /** The call's input may not be passed to any function (too deep, too large): refused, never admitted. */
  inputRefused?: DomainError;
  /** The X-MCPWorks-Env header is malformed: every call that would run (or report env) gets this as its tool error. */
  envRefused?: DomainError;
  /** Tool names this request calls (set before dispatch): only those are registered as handlers. */
  calledTools?: ReadonlySet<string>;
  /** The request is a tool-mode tools/list: its answer carries LISTED_MARK, replaced by `listing`. */
  listsTools?: boolean;
  /** The serialised tools array the tools/list handler answered with (from the rendered cache). */
  listing?: readonly Buffer[];
  /** The HTTP request's signal: aborted when the client closes the connection before the answer. */
  signal?: AbortSignal;
  /** Tool results rendered in a scan worker, by the number of the placeholder standing for them. */
  rendered?: Map<number, Buffer>;
  /** A tool call's checks, begun beside its admission (RunService.precheck); its handler runs that input. */
  prechecked?: PrecheckedInput;
  /**
   * The key came from this node's cache (AccountService.cachedRunKey), unchecked by the database
   * so far; `confirm` looks it up (a 401 to answer when it no longer works), once a request (a
   * batch's parts share it).
   */
  cachedKey?: {
    confirm(): Promise<
      { principal: KeyPrincipal; addressed: NamespaceRef | null | undefined; session: McpSessionRef | null | undefined } | Response
    >;
  };
  /** The call's admission checked the cached key (mcpworks_admit_key_call). */
  keyChecked?: boolean;
}

/** What the MCP layer hands a tool handler: the request's id, _meta, abort signal and notifier. */
interface HandlerContext {
  mcpReq?: {
    signal?: AbortSignal;
    _meta?: { progressToken?: unknown };
    notify?: (notification: { method: string; params: Record<string, unknown> }) => Promise<void>;
  };
}

/** MCPWORKS_PROGRESS_INTERVAL_MS: how often a call with a progressToken is told it is still running (at most 10 s). */
export const DEFAULT_PROGRESS_INTERVAL_MS = 10_000;

type ListedTool = Record<string, unknown> & { name: string };

const ENV_STATUS_TOOL = '_env_status';
const EXECUTE_TOOL = 'execute';
const acceptEverything = {
  getValidator: () => (input: unknown) => ({ valid: true as const, data: input as never, errorMessage: undefined }),
};

/** `{service}__{function}`, within the tool-name budget (core/names.ts). */
export const toolName = (fn: Pick<ActiveFunction, 'service' | 'name'>): string => budgetedToolName(fn);

function isObjectSchema(schema: Record<string, unknown> | null): schema is Record<string, unknown> {
  return !!schema && schema.type === 'object';
}

export function rejectionResponse(rejection: Rejection, tier: string): Response {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  let body: Record<string, unknown>;
  if (rejection.code === 'QUOTA_EXCEEDED') {
    body = {
      code: rejection.code,
      message: `Monthly execution limit (${rejection.limit}) exceeded`,
      usage: rejection.usage,
      limit: rejection.limit,
      tier,
    };
  } else {
    headers['retry-after'] = String(rejection.retryAfter);
    const message =
      rejection.code === 'EXECUTION_RATE_EXCEEDED'
        ? `Execution rate limit (${rejection.limit}/min) exceeded`
        : `Concurrent execution limit (${rejection.limit}) reached`;
    body = { code: rejection.code, message, limit: rejection.limit, tier, retry_after: rejection.retryAfter };
  }
  return new Response(JSON.stringify(body), { status: 429, headers });
}

const TOOL_ANNOTATIONS = { readOnlyHint: false, destructiveHint: false, openWorldHint: true };
const ENV_STATUS_DESCRIPTION =
  'Which environment variables each function declares, and which of them this request configured (via the X-MCPWorks-Env header) or is missing; `dropped` names header variables no function declares. Values are never shown. Not metered.';
const ENV_STATUS_INPUT = { type: 'object', properties: {} };
const ENV_STATUS_ANNOTATIONS = { readOnlyHint: true, destructiveHint: false, idempotentHint: true, openWorldHint: false };

/** What tool mode lists for one function (name, description with language, version and env, schemas). */
function functionTool(fn: ActiveFunction): {
  name: string;
  description: string;
  inputSchema: Record<string, unknown>;
  outputSchema?: Record<string, unknown>;
} {
  const env = [...fn.definition.requiredEnv.map((n) => `${n} (required)`), ...fn.definition.optionalEnv.map((n) => `${n} (optional)`)];
  const outputSchema = isObjectSchema(fn.definition.outputSchema) ? fn.definition.outputSchema : undefined;
  return {
    name: toolName(fn),
    description: `${fn.description || `${fn.service}.${fn.name}`} [${fn.definition.language}, v${fn.version}${env.length ? `; env: ${env.join(', ')}` : ''}]`,
    inputSchema: isObjectSchema(fn.definition.inputSchema) ? fn.definition.inputSchema : { type: 'object', additionalProperties: true },
    ...(outputSchema ? { outputSchema } : {}),
  };
}

const envStatusTool = (): ListedTool => ({
  name: ENV_STATUS_TOOL,
  description: ENV_STATUS_DESCRIPTION,
  inputSchema: ENV_STATUS_INPUT,
  annotations: ENV_STATUS_ANNOTATIONS,
});

function renderToolList(snapshot: NamespaceSnapshot | undefined): ListedTool[] {
  const tools: ListedTool[] = (snapshot?.functions ?? []).map((fn) => ({ ...functionTool(fn), annotations: TOOL_ANNOTATIONS }));
  tools.push(envStatusTool());
  return tools;
}

/**
 * A namespace's serialised tools array as parts (`[`, one tool, `,`, …, `]`), with each function's
 * part by what it renders from: a version (immutable) and the function's name and description.
 */
interface ToolListing {
  parts: Buffer[];
  byKey: Map<string, Buffer>;
  bytes: number;
}

const OPEN = Buffer.from('[');
const COMMA = Buffer.from(',');
const CLOSE = Buffer.from(']');
const ENV_STATUS_PART = Buffer.from(JSON.stringify(envStatusTool()), 'utf8');
const partKey = (fn: ActiveFunction) => `${fn.versionId}\u0000${fn.service}\u0000${fn.name}\u0000${fn.description}`;

/**
 * Renders a namespace's tool list at a new catalog version, serialising only the functions that
 * changed since `stale` (one change in a large namespace costs that function, not all of them).
 */
function renderToolListing(snapshot: NamespaceSnapshot, stale: ToolListing | undefined): ToolListing {
  const byKey = new Map<string, Buffer>();
  const parts: Buffer[] = [OPEN];
  for (const fn of snapshot.functions) {
    const key = partKey(fn);
    const part =
      byKey.get(key) ??
      stale?.byKey.get(key) ??
      Buffer.from(JSON.stringify({ ...functionTool(fn), annotations: TOOL_ANNOTATIONS }), 'utf8');
    byKey.set(key, part);
    parts.push(part, COMMA);
  }
  parts.push(ENV_STATUS_PART, CLOSE);
  return { parts, byKey, bytes: parts.reduce((sum, part) => sum + part.length, 0) };
}

/** Bytes of rendered catalog text one node keeps (the largest tier's tool list is 32 MB of schemas). */
export const RENDERED_CACHE_BYTES = 64 * 1024 * 1024;

/**
 * A tool-mode tools/list answers a placeholder whose JSON is this per-process random string; once
 * the MCP layer has framed the (now small) answer, for either protocol era and as JSON or SSE, the
 * placeholder is replaced by the cached serialised tools array. Serialising a namespace's schemas
 * (megabytes) on every list blocked the event loop; this costs a lookup and a write. Our tools never
 * carry what the SDK's codecs rewrite in a tools/list (an `execution` field, a non-object
 * outputSchema), so the cached bytes are what the SDK would have sent.
 */
const LISTED_MARK = `mcpworks-listed-tools-${randomBytes(16).toString('hex')}`;
const LISTED_MARK_JSON = JSON.stringify(LISTED_MARK);
const listedPlaceholder = { toJSON: () => LISTED_MARK };

/**
 * The answer with every placeholder replaced by `listing` (a batch may hold more than one list).
 * The MCP layer's part is small; it is read whole (the handler has run once it is complete).
 */
async function spliceListing(response: Response, listingOf: () => readonly Buffer[] | undefined): Promise<Response> {
  const text = await response.text();
  // Read once the body is complete: on a streamed (SSE) answer the handler that sets it may run late.
  const listing = listingOf();
  const parts = listing ? text.split(LISTED_MARK_JSON) : [text];
  const headers = new Headers(response.headers);
  headers.delete('content-length');
  if (parts.length === 1) return new Response(text, { status: response.status, statusText: response.statusText, headers });
  const chunks: Buffer[] = [];
  parts.forEach((part, index) => {
    if (index > 0) chunks.push(...listing!);
    chunks.push(Buffer.from(part, 'utf8'));
  });
  // A small list goes out in one write; a large one's cached bytes are written as they are:
  // neither encoded again nor copied into one buffer.
  const { body, length } = bodyOfPieces(chunks);
  headers.set('content-length', String(length));
  return new Response(body, { status: response.status, statusText: response.statusText, headers });
}

/** Code mode's one tool, described with the namespace's function names (the first 40). */
function executeDescription(names: string[]): string {
  const listed = names.length > 40 ? `${names.slice(0, 40).join(', ')}, … (${names.length} in all)` : names.join(', ') || '(none yet)';
  return (
    `Run Python (default) or TypeScript code in a secure sandbox with this namespace's functions importable as the \`functions\` package. ` +
    'Python: `import functions; print(functions.__doc__)` lists every function with its signature and description; call one with keyword arguments: ' +
    '`from functions import hello` (or `from functions.SERVICE import hello`), `result = hello(name="World")`. ' +
    'TypeScript (language="typescript", an async module body: top-level await works): `import { hello } from "functions"; result = await hello({ name: "World" });`. ' +
    'Return data by assigning `result` (JSON-serialisable); printed output is returned too. Hyphens in names become underscores. ' +
    'Intermediate data stays in the sandbox, so filter and aggregate there and return only what is needed. ' +
    `Functions: ${listed}.`
  );
}

/**
 * A large run answer comes rendered by a scan worker (RunResult.rendered): the tool result holds a
 * placeholder string per text (and for structuredContent) whose JSON is `"<RENDERED_MARK>-<n>"`,
 * and the answer's bytes are swapped in as they stream out (spliceRendered). The main thread
 * neither serialises the large texts nor copies them into one buffer.
 */
const RENDERED_MARK = `mcpworks-rendered-${randomBytes(16).toString('hex')}`;
const RENDERED_PREFIX = Buffer.from(`"${RENDERED_MARK}-`);
let renderedCount = 0;

export function renderedToTool(rendered: NonNullable<RunResult['rendered']>, extra: RunScopeExtra): CallToolResult {
  const place = (bytes: Buffer) => {
    const number = ++renderedCount;
    (extra.rendered ??= new Map()).set(number, bytes);
    return `${RENDERED_MARK}-${number}`;
  };
  const content = rendered.texts.map((text) => ({ type: 'text' as const, text: place(text) }));
  const out: CallToolResult = rendered.isError ? { isError: true, content } : { content };
  if (rendered.structured) {
    const mark = place(rendered.structured);
    out.structuredContent = { toJSON: () => mark } as never;
  }
  return out;
}

/** How many of the last bytes (after `from`) are the start of RENDERED_PREFIX, unfinished. */
function heldTail(bytes: Buffer, from: number): number {
  for (let keep = Math.min(bytes.length - from, RENDERED_PREFIX.length - 1); keep > 0; keep--) {
    if (bytes.subarray(bytes.length - keep).equals(RENDERED_PREFIX.subarray(0, keep))) return keep;
  }
  return 0;
}

/**
 * The pieces of `bytes` with each whole placeholder replaced by its bytes, into `out`; answers the
 * unfinished end (a placeholder's start, or one that goes on past `bytes`) held for what follows.
 */
function spliceScan(bytes: Buffer, take: (number: number) => Buffer | undefined, out: Buffer[]): Buffer {
  let from = 0;
  for (let at = bytes.indexOf(RENDERED_PREFIX, from); at !== -1; at = bytes.indexOf(RENDERED_PREFIX, from)) {
    let end = at + RENDERED_PREFIX.length;
    while (end < bytes.length && bytes[end]! >= 0x30 && bytes[end]! <= 0x39) end++;
    if (end >= bytes.length) {
      // The placeholder goes on in the next chunk.
      out.push(bytes.subarray(from, at));
      return Buffer.from(bytes.subarray(at));
    }
    const replacement = bytes[end] === 0x22 ? take(Number(bytes.subarray(at + RENDERED_PREFIX.length, end).toString('latin1'))) : undefined;
    if (replacement) {
      out.push(bytes.subarray(from, at), replacement);
      from = end + 1;
    } else {
      out.push(bytes.subarray(from, end));
      from = end;
    }
  }
  // Only an end that is a placeholder's start waits for the next chunk: everything else (a
  // progress notification on the call's stream) goes out at once.
  const keep = heldTail(bytes, from);
  out.push(bytes.subarray(from, bytes.length - keep));
  return Buffer.from(bytes.subarray(bytes.length - keep));
}

/** A whole answer's bytes with each rendered placeholder replaced by its bytes: the pieces to send, none copied. */
export function spliceRenderedBytes(bytes: Buffer, take: (number: number) => Buffer | undefined): Buffer[] {
  // Most answers carry no placeholder: the bytes as they are.
  if (bytes.indexOf(RENDERED_PREFIX) === -1) return [bytes];
  const out: Buffer[] = [];
  out.push(spliceScan(bytes, take, out));
  return out.filter((piece) => piece.length > 0);
}

/** The answer's body with each rendered placeholder replaced by its bytes, as it streams (JSON or SSE). */
export function spliceRendered(response: Response, take: (number: number) => Buffer | undefined): Response {
  if (!response.body) return response;
  let carry: Buffer = Buffer.alloc(0);
  const splice = new TransformStream<Uint8Array, Uint8Array>({
    transform(chunk, controller) {
      const bytes = carry.length > 0 ? Buffer.concat([carry, chunk]) : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
      const out: Buffer[] = [];
      carry = spliceScan(bytes, take, out);
      for (const piece of out) controller.enqueue(piece);
    },
    flush(controller) {
      if (carry.length > 0) controller.enqueue(carry);
    },
  });
  const headers = new Headers(response.headers);
  headers.delete('content-length');
  return new Response(response.body.pipeThrough(splice), { status: response.status, statusText: response.statusText, headers });
}

function runResultToTool(result: RunResult, fn: ActiveFunction | undefined, extra: RunScopeExtra): CallToolResult {
  if (result.rendered) return renderedToTool(result.rendered, extra);
  const rendered = renderToolResult(result, !!fn && isObjectSchema(fn.definition.outputSchema), !fn);
  const content: CallToolResult['content'] = rendered.texts.map((text) => ({ type: 'text', text }));
  if (rendered.isError) return { isError: true, content };
  return rendered.structured ? { content, structuredContent: rendered.structured } : { content };
}

/** The run endpoint's pieces: admission before dispatch, and the per-request MCP server. */
export function runEndpointParts(
  runs: RunService,
  logger: Logger,
  version: string,
  cacheBytes = RENDERED_CACHE_BYTES,
  progressIntervalMs = DEFAULT_PROGRESS_INTERVAL_MS,
) {
  // Keyed by mode and namespace id; the value is the catalog version's rendering.
  const rendered = new RenderedCache<ToolListing | string>(cacheBytes, (value) =>
    typeof value === 'string' ? value.length * 2 : value.bytes,
  );

  function cachedToolList(snapshot: NamespaceSnapshot): readonly Buffer[] {
    const render = (stale: ToolListing | string | undefined) => renderToolListing(snapshot, typeof stale === 'object' ? stale : undefined);
    return (rendered.get(`tools:${snapshot.namespaceId}`, snapshot.catalogVersion, render) as ToolListing).parts;
  }

  function cachedExecuteDescription(snapshot: NamespaceSnapshot | undefined): string {
    const render = () => executeDescription((snapshot?.functions ?? []).map((fn) => `${fn.service}.${fn.name}`));
    return snapshot ? (rendered.get(`code:${snapshot.namespaceId}`, snapshot.catalogVersion, render) as string) : render();
  }

  function context(scope: RequestScope): RunContext & { extra: RunScopeExtra } {
    const extra = scope.extra!;
    return { principal: keyPrincipal(scope.principal), namespace: scope.namespace, env: extra.env, extra };
  }

  async function snapshotOf(scope: RequestScope): Promise<NamespaceSnapshot> {
    const ctx = context(scope);
    ctx.extra.snapshot ??= await runs.snapshot(ctx, ctx.extra.addressed);
    return ctx.extra.snapshot;
  }

  async function functionsOf(scope: RequestScope): Promise<readonly ActiveFunction[]> {
    return (await snapshotOf(scope)).functions;
  }

  /**
   * The handler takes its call's ticket over; one already given back (the handler started too late,
   * see afterDispatch) is not used, so nothing runs without its slot and quota unit.
   */
  function takeOver(ticket: Ticket | undefined): Ticket | undefined {
    // Taken once: a second handler of the same request (an answer dispatched beside a cached
    // key's lookup, then discarded: CheckedDispatch) never runs the call a second time.
    if (!ticket || ticket.settled || ticket.started) return undefined;
    ticket.started = true;
    return ticket;
  }

  /** The same key as the cache had it: its account, plan, namespace limit and scopes. */
  function samePrincipal(a: KeyPrincipal, b: KeyPrincipal): boolean {
    return (
      a.accountId === b.accountId &&
      a.keyId === b.keyId &&
      a.tier === b.tier &&
      a.namespace === b.namespace &&
      a.scopes.length === b.scopes.length &&
      a.scopes.every((scope, i) => scope === b.scopes[i])
    );
  }

  /** The same namespace at the same catalog version (or none, either way). */
  function sameRef(a: NamespaceRef | null | undefined, b: NamespaceRef | null | undefined): boolean {
    return (a ?? null) === (b ?? null) || (!!a && !!b && a.id === b.id && a.catalog_version === b.catalog_version);
  }

  /** The 2025-era session this request holds (ours, of this endpoint and namespace), if any. */
  function sessionOf(scope: RequestScope): string | undefined {
    const owner = scope.session?.owner;
    const owned =
      !!owner && owner.account_id === scope.principal.accountId && owner.endpoint === 'run' && owner.namespace === scope.namespace;
    return owned ? scope.session!.id : undefined;
  }

  /**
   * notifications/cancelled of a 2025-era client (the 2026 era cancels by closing the call's
   * stream): it names the call by its request id within the session. Best effort, as the protocol
   * says: a cancel that cannot be delivered is logged and the notification still accepted.
   */
  async function deliverCancels(messages: unknown[], scope: RequestScope): Promise<void> {
    const session = sessionOf(scope);
    if (!session) return;
    for (const message of messages) {
      const m = message as { method?: unknown; id?: unknown; params?: { requestId?: unknown } } | null;
      if (!m || typeof m !== 'object' || m.method !== 'notifications/cancelled' || m.id !== undefined) continue;
      const requestId = m.params?.requestId;
      if (typeof requestId !== 'string' && typeof requestId !== 'number') continue;
      await runs.cancelCall(scope.principal.accountId, cancelKeyOf(session, requestId)).catch((error: unknown) => {
        logger.warn({ err: error instanceof Error ? error.message : String(error) }, 'a cancel could not be delivered');
      });
    }
  }

  /**
   * While a call runs: its client's cancel (connection closed, or the MCP layer's own abort) stops
   * it; a cancelled call gets no answer (closing its MCP exchange drops the handler's result); and
   * with a progressToken, notifications/progress go out on the call's stream every interval.
   * Answers what undoes it, for when the handler ends.
   */
  function watchCall(scope: RequestScope, server: McpServer, ticket: Ticket, handler: HandlerContext | undefined): () => void {
    const undo: Array<() => void> = [];
    const cancel = () => runs.cancelTicket(ticket.id);
    for (const signal of [context(scope).extra.signal, handler?.mcpReq?.signal]) {
      if (!signal) continue;
      if (signal.aborted) cancel();
      signal.addEventListener('abort', cancel, { once: true });
      undo.push(() => signal.removeEventListener('abort', cancel));
    }
    const silence = () => void server.close().catch(() => undefined);
    if (ticket.cancel.signal.aborted) silence();
    ticket.cancel.signal.addEventListener('abort', silence, { once: true });
    undo.push(() => ticket.cancel.signal.removeEventListener('abort', silence));
    const token = handler?.mcpReq?._meta?.progressToken;
    const notify = handler?.mcpReq?.notify;
    if ((typeof token === 'string' || typeof token === 'number') && notify) {
      const started = Date.now();
      let progress = 0;
      const timer = setInterval(() => {
        const seconds = Math.round((Date.now() - started) / 1000);
        notify({
          method: 'notifications/progress',
          params: { progressToken: token, progress: ++progress, message: `running for ${seconds} s` },
        }).catch(() => undefined);
      }, progressIntervalMs);
      undo.push(() => clearInterval(timer));
    }
    return () => {
      for (const step of undo) step();
    };
  }

  /**
   * A request whose key came from the node's cache goes on only once the database has checked the
   * key: a tools/call's admission checks it (and the catalog version its functions were read at);
   * anything else, or a call not admitted, or one whose key or namespace changed, has its key
   * looked up (the request is then prepared again with what the lookup found).
   */
  async function beforeDispatch(body: unknown, scope: RequestScope): Promise<Response | CheckedDispatch | undefined> {
    const extra = context(scope).extra;
    const cached = extra.cachedKey;
    if (!cached) return prepareCall(body, scope);
    const m = body as { method?: unknown; id?: unknown } | null;
    const method = !!m && typeof m === 'object' && !Array.isArray(m) ? m.method : undefined;
    const single = method !== undefined && m!.id !== undefined && m!.id !== null;
    if (single && method === 'tools/call') {
      try {
        const early = await prepareCall(body, scope);
        if (extra.keyChecked) return early;
        // Not admitted (_env_status, an unknown tool, an input refused): nothing of it runs or
        // changes anything, so the MCP layer may answer it while the key is looked up; its answer
        // goes out only if the lookup finds what the cache said.
        if (!early) return { check: confirmed(body, scope, cached) };
      } catch (error) {
        if (!(error instanceof KeyChangedError)) throw error;
      }
    } else if (single && method === 'tools/list') {
      // A listing changes nothing either (read with the cached key, kept until the lookup agrees).
      const early = await prepareCall(body, scope);
      if (!early) return { check: confirmed(body, scope, cached) };
    }
    const looked = await lookedUp(scope, cached, true, method === 'initialize');
    return looked === 'same' || looked === 'changed' ? prepareCall(body, scope) : looked;
  }

  /**
   * A CheckedDispatch's check: the key looked up. The answer read with the cached key stands when
   * the lookup found the same key, plan, namespace and session; otherwise the request is prepared
   * again with what it found and answered afresh ('again'), or refused.
   */
  async function confirmed(
    body: unknown,
    scope: RequestScope,
    cached: NonNullable<RunScopeExtra['cachedKey']>,
  ): Promise<Response | undefined | 'again'> {
    const looked = await lookedUp(scope, cached, false);
    if (looked === 'same') return undefined;
    if (looked !== 'changed') return looked;
    return (await prepareCall(body, scope)) ?? 'again';
  }

  /**
   * The request's key (and session) looked up, as a request with a cached key is before it goes
   * on: refused (401, or 404 for a session gone), or the scope now holds what the lookup found,
   * 'same' as the cache said or 'changed'. What was read or decided with the cached key is dropped
   * when it changed, or always with `reset` (the request is then prepared again).
   */
  async function lookedUp(
    scope: RequestScope,
    cached: NonNullable<RunScopeExtra['cachedKey']>,
    reset: boolean,
    initializing = false,
  ): Promise<Response | 'same' | 'changed'> {
    const extra = context(scope).extra;
    const found = await cached.confirm();
    if (found instanceof Response) return found;
    const same = samePrincipal(found.principal, scope.principal) && sameRef(found.addressed, extra.addressed);
    scope.principal = found.principal;
    if (scope.session) {
      // Its session was the cached one: looked up now with the key, it must still be this key's
      // account's, for this endpoint and namespace (ended or expired meanwhile: "not found").
      // Except for an initialize, which is in no session (mcp-endpoint.ts): it starts a new one.
      scope.session = { id: scope.session.id, owner: found.session ?? null };
      if (!sessionOf(scope) && !initializing) return jsonRpcError(404, -32001, 'Session not found');
    }
    if (same && !reset) return 'same';
    // What was read or decided with the cached key goes.
    for (const field of ['cachedKey', 'keyChecked', 'snapshot', 'prechecked', 'inputRefused', 'addressed'] as const) delete extra[field];
    if (found.addressed !== undefined) extra.addressed = found.addressed;
    return same ? 'same' : 'changed';
  }

  /** A metered call is a tools/call of a function tool; its quota unit is taken before it runs. */
  async function prepareCall(body: unknown, scope: RequestScope): Promise<Response | undefined> {
    const messages = Array.isArray(body) ? body : [body];
    await deliverCancels(messages, scope);
    if (context(scope).extra.mode === 'tools') {
      context(scope).extra.listsTools = messages.some(
        (m) => m && typeof m === 'object' && (m as { method?: unknown }).method === 'tools/list',
      );
    }
    const calls = messages.filter((m) => m && typeof m === 'object' && (m as { method?: unknown }).method === 'tools/call') as Array<{
      params?: { name?: unknown };
    }>;
    context(scope).extra.calledTools = new Set(calls.map((c) => c.params?.name).filter((n): n is string => typeof n === 'string'));
    if (calls.length === 0) {
      // tools/list and the rest read the snapshot too: with the database away, 503 rather than an empty list.
      await snapshotOf(scope).catch((error: unknown) => {
        if (isRetryableStoreError(error)) throw error;
      });
      return undefined;
    }
    if (calls.length > 1 || messages.length > 1) {
      // Batches are split before they get here (mcp-endpoint.ts); should one arrive, it is refused as JSON-RPC.
      return new Response(
        JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: -32600, message: 'Invalid Request: send one tools/call per request' } }),
        { status: 400, headers: { 'content-type': 'application/json' } },
      );
    }
    const call = calls[0] as { id?: unknown; params?: { name?: unknown } };
    // A notification (no id) gets no answer and runs nothing: never metered.
    if (call.id === undefined || call.id === null) return undefined;
    const name = call.params?.name;
    let metered = false;
    try {
      const functions = await functionsOf(scope);
      metered = context(scope).extra.mode === 'code' ? name === EXECUTE_TOOL : functions.some((fn) => toolName(fn) === name);
    } catch (error) {
      // A database that is away answers the request (503 / 507), not a tool error about a missing tool.
      if (!isDomainError(error) || isRetryableStoreError(error)) throw error;
      // Not found / forbidden: the MCP layer reports it as a tool error, nothing is metered.
    }
    if (!metered) return undefined;
    // A malformed env header: the call says what is wrong with it, unmetered; listing still works.
    const { envRefused } = context(scope).extra;
    if (envRefused) {
      context(scope).extra.inputRefused = envRefused;
      return undefined;
    }
    // Checked before admission: an input no function could receive is the caller's error, unmetered.
    // Walking a large input takes the main thread tens of milliseconds: in fair turns (fair-share.ts).
    const input = (call.params as { arguments?: unknown } | undefined)?.arguments;
    const problem = await sharedFairShare.run(scope.principal.accountId, callInputProblemSlices(input, MAIN_THREAD_SLICE_VALUES));
    if (problem) {
      context(scope).extra.inputRefused = new DomainError('validation_error', problem, { field: 'arguments' });
      return undefined;
    }
    // What the call runs, for its record should this server die before the call ends.
    const { snapshot, mode } = context(scope).extra;
    const language = (call.params as { arguments?: { language?: unknown } } | undefined)?.arguments?.language;
    const session = sessionOf(scope);
    const cancelKey = session && (typeof call.id === 'string' || typeof call.id === 'number') ? cancelKeyOf(session, call.id) : undefined;
    const fn = mode === 'tools' ? snapshot?.functions.find((f) => toolName(f) === name) : undefined;
    // A cached key is checked by the admission against the catalog version this call was read at
    // (a metered call's functions were read: its snapshot is there).
    const { keyId, tier } = scope.principal;
    // A 2025-era call's session came from the cache with its key: the admission checks it too.
    const checkedSession = scope.session && { id: scope.session.id, endpoint: 'run', namespace: scope.namespace, live: liveSince() };
    const cachedKey = context(scope).extra.cachedKey
      ? {
          keyId,
          tier,
          namespaceId: snapshot!.namespaceId,
          catalogVersion: snapshot!.catalogVersion,
          ...(checkedSession ? { session: checkedSession } : {}),
        }
      : undefined;
    // The call's env and input_schema checks need nothing the admission decides: they run while it
    // is in flight (in the schema workers), and the handler takes their verdict. No code runs before
    // the admission says yes.
    const prechecked = fn && runs.precheck(context(scope), fn, input);
    if (prechecked) context(scope).extra.prechecked = prechecked;
    const admission = await runs.admit(
      keyPrincipal(scope.principal),
      snapshot && { namespace: snapshot, mode, trigger: mcpTrigger(mode), fn, language, cancelKey, cachedKey },
    );
    if (cachedKey) context(scope).extra.keyChecked = true;
    if ('rejection' in admission) return rejectionResponse(admission.rejection, admission.tier);
    context(scope).extra.ticket = admission.ticket;
    return undefined;
  }

  async function buildServer(scope: RequestScope): Promise<McpServer> {
    return context(scope).extra.mode === 'code' ? buildCodeServer(scope) : buildToolsServer(scope);
  }

  async function buildCodeServer(scope: RequestScope): Promise<McpServer> {
    const ctx = context(scope);
    const server = new McpServer(
      { name: `mcpworks-run-${scope.namespace}`, version },
      {
        instructions: `Run endpoint of MCPWorks namespace "${scope.namespace}" (code mode): one execute tool that runs Python or TypeScript with the namespace's functions importable as the \`functions\` package.`,
      },
    );
    let snapshot: NamespaceSnapshot | undefined;
    try {
      snapshot = await snapshotOf(scope);
    } catch (error) {
      if (!isDomainError(error)) throw error;
    }
    server.registerTool(
      EXECUTE_TOOL,
      {
        description: cachedExecuteDescription(snapshot),
        inputSchema: fromJsonSchema(
          {
            type: 'object',
            properties: {
              code: { type: 'string', description: 'The program. Set `result` to the value to return.' },
              language: { type: 'string', enum: ['python', 'typescript'], default: 'python' },
            },
            required: ['code'],
          } as never,
          acceptEverything,
        ),
        annotations: { readOnlyHint: false, destructiveHint: false, openWorldHint: true },
      },
      (async (args: { code?: unknown; language?: unknown }, handler?: HandlerContext): Promise<CallToolResult> => {
        const ticket = takeOver(ctx.extra.ticket);
        const unwatch = ticket ? watchCall(scope, server, ticket, handler) : () => undefined;
        try {
          if (ctx.extra.inputRefused) throw ctx.extra.inputRefused;
          if (!ticket) {
            // Not admitted because the key may not run here: say why (forbidden, not found).
            await snapshotOf(scope);
            throw new DomainError('internal_error', 'the call was not admitted');
          }
          return runResultToTool(
            await runs.runAdmitted(
              ctx,
              ticket,
              await snapshotOf(scope),
              { kind: 'code', code: args?.code, language: args?.language },
              undefined,
              'mcp-code',
            ),
            undefined,
            ctx.extra,
          );
        } catch (error) {
          return runToolError(error, logger, EXECUTE_TOOL);
        } finally {
          unwatch();
          if (ticket) await runs.settle(ticket, false).catch(() => undefined);
        }
      }) as never,
    );
    refuseUnknownTools(server, scope.namespace, ctx.extra.calledTools ?? [], [EXECUTE_TOOL]);
    return server;
  }

  async function buildToolsServer(scope: RequestScope): Promise<McpServer> {
    const ctx = context(scope);
    const server = new McpServer(
      { name: `mcpworks-run-${scope.namespace}`, version },
      {
        instructions: `Run endpoint of MCPWorks namespace "${scope.namespace}" (tool mode): one tool per function, named {service}__{function}.`,
      },
    );
    let snapshot: NamespaceSnapshot | undefined;
    try {
      snapshot = await snapshotOf(scope);
    } catch (error) {
      if (!isDomainError(error)) throw error;
      // An unknown namespace serves no tools; calls explain why.
    }
    // Handlers only for the tools this request calls (all when it was not read before dispatch).
    const called = ctx.extra.calledTools;
    for (const fn of snapshot?.functions ?? []) {
      if (called && !called.has(toolName(fn))) continue;
      const tool = functionTool(fn);
      server.registerTool(
        tool.name,
        {
          description: tool.description,
          inputSchema: fromJsonSchema(tool.inputSchema as never, acceptEverything),
          ...(tool.outputSchema ? { outputSchema: fromJsonSchema(tool.outputSchema as never, acceptEverything) } : {}),
          annotations: TOOL_ANNOTATIONS,
        },
        (async (args: unknown, handler?: HandlerContext): Promise<CallToolResult> => {
          const ticket = takeOver(ctx.extra.ticket);
          const unwatch = ticket ? watchCall(scope, server, ticket, handler) : () => undefined;
          try {
            if (ctx.extra.inputRefused) throw ctx.extra.inputRefused;
            if (!ticket) throw new DomainError('internal_error', 'the call was not admitted');
            // The input checked beside the admission is the one that runs: the request's own
            // arguments (the MCP layer hands the handler a copy of them).
            const prechecked = ctx.extra.prechecked?.fn === fn ? ctx.extra.prechecked : undefined;
            return runResultToTool(
              await runs.runAdmitted(
                ctx,
                ticket,
                await snapshotOf(scope),
                { kind: 'function', service: fn.service, name: fn.name },
                prechecked ? prechecked.input : args,
                'mcp-tools',
                prechecked,
              ),
              fn,
              ctx.extra,
            );
          } catch (error) {
            return runToolError(error, logger, toolName(fn));
          } finally {
            unwatch();
            if (ticket) await runs.settle(ticket, false).catch(() => undefined);
          }
        }) as never,
      );
    }
    server.registerTool(
      ENV_STATUS_TOOL,
      {
        description: ENV_STATUS_DESCRIPTION,
        inputSchema: fromJsonSchema(ENV_STATUS_INPUT as never, acceptEverything),
        annotations: ENV_STATUS_ANNOTATIONS,
      },
      (async (): Promise<CallToolResult> => {
        try {
          if (ctx.extra.envRefused) throw ctx.extra.envRefused;
          const all = await functionsOf(scope);
          // Only functions that declare env: the others take none, whatever the header holds.
          const declaring = all.filter((fn) => fn.definition.requiredEnv.length + fn.definition.optionalEnv.length > 0);
          const status = declaring.map((fn) => {
            const declared = [...fn.definition.requiredEnv, ...fn.definition.optionalEnv];
            return {
              tool: toolName(fn),
              required: fn.definition.requiredEnv,
              optional: fn.definition.optionalEnv,
              configured: declared.filter((n) => ctx.env[n] !== undefined),
              missing: fn.definition.requiredEnv.filter((n) => ctx.env[n] === undefined),
            };
          });
          // Header variables no function declares reach no sandbox: name them (a typo shows here).
          const declaredAnywhere = new Set(declaring.flatMap((fn) => [...fn.definition.requiredEnv, ...fn.definition.optionalEnv]));
          const dropped = Object.keys(ctx.env)
            .filter((n) => !declaredAnywhere.has(n))
            .sort();
          const answer = {
            functions: status,
            ready: status.every((s) => s.missing.length === 0),
            dropped,
            ...(dropped.length
              ? {
                  hint: 'dropped: sent in X-MCPWorks-Env but declared by no function (required_env / optional_env), so no function receives them',
                }
              : {}),
          };
          return { content: [{ type: 'text', text: JSON.stringify(answer, null, 2) }] };
        } catch (error) {
          return runToolError(error, logger, ENV_STATUS_TOOL);
        }
      }) as never,
    );
    server.server.setRequestHandler('tools/list', () => {
      // No namespace (not found, not allowed): the one static tool, not worth a cache entry.
      if (!snapshot) return { tools: renderToolList(undefined) } as never;
      ctx.extra.listing = cachedToolList(snapshot);
      return { tools: listedPlaceholder } as never;
    });
    // A namespace this key cannot see has no tools to suggest (its tools/list is the one static tool).
    if (snapshot) refuseUnknownTools(server, scope.namespace, called ?? [], [...snapshot.functions.map(toolName), ENV_STATUS_TOOL]);
    return server;
  }

  /**
   * The MCP layer may refuse a request before any tool handler runs (a bad Accept header, an
   * unsupported protocol version): then its quota unit and slot are given back at once.
   */
  async function afterDispatch(scope: RequestScope, response: Response): Promise<Response> {
    const extra = context(scope).extra;
    const ticket = extra.ticket;
    if (ticket && !ticket.started && !ticket.settled && response.status !== 200) {
      // The MCP layer refused the request (406, 400, 500): no handler will start.
      await runs.settle(ticket, false);
    } else if (ticket && !ticket.started && !ticket.settled) {
      // Handlers start on a later tick of the same dispatch; give them that tick, and on a loaded
      // server up to a second more (a handler that starts after the settle does not run: see takeOver).
      await new Promise((resolve) => setImmediate(resolve));
      for (let waited = 0; !ticket.started && waited < 1000; waited += 10) await new Promise((resolve) => setTimeout(resolve, 10));
      if (!ticket.started) await runs.settle(ticket, false);
    }
    if (extra.listsTools) return spliceListing(response, () => extra.listing);
    if (extra.calledTools && extra.calledTools.size > 0) {
      const take = (number: number) => {
        const bytes = extra.rendered?.get(number);
        extra.rendered?.delete(number);
        return bytes;
      };
      // Read whole first (most answers), the placeholders are replaced in the bytes read, with no
      // stream set up per call; a long or large answer streams through spliceRendered.
      return inOneWrite(response, extra.signal, {
        whole: (bytes) => spliceRenderedBytes(bytes, take),
        streamed: (streaming) => spliceRendered(streaming, take),
      });
    }
    return response;
  }

  return { beforeDispatch, afterDispatch, buildServer };
}
