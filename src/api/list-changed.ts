import { AsyncLocalStorage } from 'node:async_hooks';
import type { ServerEvent, ServerEventBus } from '@modelcontextprotocol/server';
import type { NotifyListener } from '../store/notify-listener.js';
import type { Logger } from '../core/logger.js';
import type { SessionActivity } from './session-activity.js';
import { SSE_HEADERS, SSE_KEEP_ALIVE_FRAME, SSE_KEEP_ALIVE_MS, sseMessage } from './sse.js';

/** The channel the catalog triggers NOTIFY on (migration 11), with the namespace's name. */
export const CATALOG_CHANNEL = 'mcpworks_catalog';
/** Open 2026-era listen streams one account may hold on one node (2025-era streams are one per session). */
export const MAX_LISTEN_STREAMS_PER_ACCOUNT = 32;
const LIST_CHANGED_FRAME = sseMessage(JSON.stringify({ jsonrpc: '2.0', method: 'notifications/tools/list_changed' }));

interface StreamOwner {
  namespace: string;
  accountId: string;
}

/**
 * Delivers `notifications/tools/list_changed` to the run endpoint's open streams of a namespace
 * whenever its catalog changes on any node: the database announces each change (LISTEN/NOTIFY,
 * src/store/notify-listener.ts) and this node fans it out to its streams of that namespace:
 * - 2025 era: the standalone GET stream of a session (`legacyStream`);
 * - 2026-07-28: `subscriptions/listen` streams, served by the SDK over `bus` (the namespace of
 *   the stream is the one of the request that opened it, carried in `within`).
 * When the listening connection was lost and is back, every stream is told (a change may have
 * been missed; a client re-lists).
 */
export class ListChangedHub {
  private readonly listeners = new Map<string, Set<() => void>>();
  private readonly closers = new Set<() => void>();
  private readonly sessions = new Map<string, () => void>();
  private readonly perAccount = new Map<string, number>();
  private readonly scope = new AsyncLocalStorage<StreamOwner>();

  constructor(
    private readonly logger: Logger,
    /** An open GET stream holds its session in use (kept alive, never ended for its key's cap). */
    private readonly activity?: SessionActivity,
  ) {}

  async start(notifications: NotifyListener): Promise<void> {
    await notifications.listen(CATALOG_CHANNEL, {
      notify: (namespace) => this.changed(namespace),
      resync: () => {
        this.logger.info(
          { streams: this.closers.size },
          'catalog notifications reconnected: every open stream is told its tool list may have changed',
        );
        for (const namespace of [...this.listeners.keys()]) this.changed(namespace);
      },
    });
  }

  /** Tells this node's streams of `namespace` (the NOTIFY handler; also usable directly). */
  changed(namespace: string): void {
    for (const listener of [...(this.listeners.get(namespace) ?? [])]) listener();
  }

  private subscribe(namespace: string, listener: () => void): () => void {
    let set = this.listeners.get(namespace);
    if (!set) this.listeners.set(namespace, (set = new Set()));
    set.add(listener);
    return () => {
      set.delete(listener);
      if (set.size === 0 && this.listeners.get(namespace) === set) this.listeners.delete(namespace);
    };
  }

  /** Open streams on this node (tests wait on it; operators may log it). */
  get openStreams(): number {
    return this.closers.size;
  }

  /** Whether `accountId` may open another 2026-era listen stream on this node. */
  mayListen(accountId: string): boolean {
    return (this.perAccount.get(accountId) ?? 0) < MAX_LISTEN_STREAMS_PER_ACCOUNT;
  }

  /** subscriptions/listen requests being served through `within` (their stream not yet subscribed). */
  private settingUp = 0;

  /**
   * Serves a subscriptions/listen request with its namespace known to `bus.subscribe`, which the
   * SDK calls as it makes the stream, before the answer: so the scope ends when the answer is
   * there. An enabled AsyncLocalStorage makes Node 20 run a hook for every promise of the process
   * (several times the cost of a promise, on every request), so it is enabled only meanwhile.
   */
  async within<T>(owner: StreamOwner, fn: () => Promise<T>): Promise<T> {
    this.settingUp++;
    try {
      return await this.scope.run(owner, fn);
    } finally {
      if (--this.settingUp === 0) this.scope.disable();
    }
  }

  /** The bus of the run endpoint's modern handler: a stream subscribes to its request's namespace. */
  readonly bus: ServerEventBus = {
    publish: (event: ServerEvent) => {
      const owner = this.scope.getStore();
      if (owner && event.kind === 'tools_list_changed') this.changed(owner.namespace);
    },
    subscribe: (listener: (event: ServerEvent) => void) => {
      const owner = this.scope.getStore();
      // Not opened through `within` (cannot happen on the run endpoint): such a stream hears nothing.
      if (!owner) return () => undefined;
      let open = true;
      this.perAccount.set(owner.accountId, (this.perAccount.get(owner.accountId) ?? 0) + 1);
      const unsubscribe = this.subscribe(owner.namespace, () => listener({ kind: 'tools_list_changed' }));
      const close = () => {
        if (!open) return;
        open = false;
        unsubscribe();
        this.closers.delete(close);
        const n = (this.perAccount.get(owner.accountId) ?? 1) - 1;
        if (n <= 0) this.perAccount.delete(owner.accountId);
        else this.perAccount.set(owner.accountId, n);
      };
      this.closers.add(close);
      return close;
    },
  };

  /**
   * The 2025 era's standalone GET stream of a session: server-to-client messages only, here
   * `notifications/tools/list_changed` (`notify` false: the create endpoint, whose tools never
   * change, holds the stream open with nothing to say). One per session on this node: a second
   * answers undefined (the caller refuses it with 409, as the SDK's transports do).
   */
  legacyStream(sessionId: string, namespace: string, notify: boolean, signal: AbortSignal | undefined): Response | undefined {
    if (this.sessions.has(sessionId)) return undefined;
    const encoder = new TextEncoder();
    let controller!: ReadableStreamDefaultController<Uint8Array>;
    let closed = false;
    let unsubscribe = () => undefined as void;
    let keepAlive: NodeJS.Timeout | undefined;
    let release: (() => void) | undefined;
    const write = (frame: string) => {
      if (closed) return;
      try {
        controller.enqueue(encoder.encode(frame));
      } catch {
        close();
      }
    };
    const close = () => {
      if (closed) return;
      closed = true;
      unsubscribe();
      if (keepAlive) clearInterval(keepAlive);
      signal?.removeEventListener('abort', close);
      release?.();
      this.closers.delete(close);
      if (this.sessions.get(sessionId) === close) this.sessions.delete(sessionId);
      try {
        controller.close();
      } catch {
        // already closed or errored by the reader going away
      }
    };
    const body = new ReadableStream<Uint8Array>({
      start: (c) => {
        controller = c;
        // A first frame (a comment, which clients ignore) sends the headers at once.
        c.enqueue(encoder.encode(': stream open\n\n'));
        if (notify) unsubscribe = this.subscribe(namespace, () => write(LIST_CHANGED_FRAME));
        keepAlive = setInterval(() => write(SSE_KEEP_ALIVE_FRAME), SSE_KEEP_ALIVE_MS);
        keepAlive.unref();
      },
      cancel: () => close(),
    });
    this.closers.add(close);
    this.sessions.set(sessionId, close);
    release = this.activity?.hold(sessionId, { markNow: true });
    if (signal?.aborted) close();
    else signal?.addEventListener('abort', close, { once: true });
    return new Response(body, { status: 200, headers: SSE_HEADERS });
  }

  /** Ends the GET stream of a session that was deleted (DELETE with its Mcp-Session-Id). */
  endSession(sessionId: string): void {
    this.sessions.get(sessionId)?.();
  }

  /** Shutdown: every stream ends, so none holds the server open. */
  closeAll(): void {
    for (const close of [...this.closers]) close();
  }
}
