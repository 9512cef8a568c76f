/**
 * Python fork-servers ("zygotes"), host side. A zygote is a long-lived sandbox (runtime/zygote.py)
 * per namespace and sandbox shape that has pre-imported the allow-listed packages the namespace's
 * functions declare; each run is a child it forks into fresh PID, mount, IPC and network
 * namespaces and the run's own cgroups, with capabilities dropped and seccomp loaded before the
 * run's request exists. Children are forked ahead of demand (spares), so a run only sends its
 * request. The zygote holds no secrets: requests, env values included, go straight to the child.
 *
 * Every child connects its stdout, stderr and channel to one host socket with a random per-run
 * token; the zygote reports its exit status. Zygotes are learned from demand (the first run of a
 * key takes the ordinary path while its zygote starts), capped in number and by free memory, and
 * stopped when idle.
 */
import { freemem, totalmem } from 'node:os';
import { backoffMs, memoryReserve, POOL_TICK_MS } from '../policy/capacity.js';
import type { ZygoteChild } from './child.js';
import { HostSocket } from './host-socket.js';
import { Zygote } from './zygote.js';
import type { ZygoteHostHooks, ZygoteOptions, ZygoteSpec, ZygoteStats } from './types.js';
import { MB } from '../../core/units.js';

export type * from './types.js';
export type { ZygoteChild };

/** An owner at its cap replaces one of its own zygotes only once it has been unused this long. */
const OWN_REPLACE_MS = 10_000;
/** A zygote that crashed after serving is retried after 1 s, doubling with each crash of its key, up to a minute. */
const CRASH_BACKOFF = { baseMs: 1000, maxMs: 60_000 };
/** A zygote that never got ready says the host cannot run one: its key waits this long. */
const NEVER_READY_BACKOFF_MS = 60_000;
/** Keys whose back-off is remembered; beyond it, the oldest keys' records go first. */
const BACKOFF_KEYS_CAP = 256;

/** The zygotes of one sandbox instance, by key. */
export class ZygotePool {
  private readonly zygotes = new Map<string, Zygote>();
  private readonly sockets: HostSocket;
  private readonly maxZygotes: number;
  private readonly maxPerOwner: number;
  private readonly idleMs: number;
  private readonly reserveBytes: number;
  private readonly zygoteMemoryBytes: number;
  private readonly spareOptions: { minSpares: number; maxSpares: number };
  private readonly timer: NodeJS.Timeout;
  private readonly failedUntil = new Map<string, number>();
  private readonly crashes = new Map<string, number>();
  private readonly now: () => number;
  private readonly freeMemory: () => number;
  private closed = false;
  private runs = 0;

  constructor(
    runtimeDir: string,
    owner: { uid: number; gid: number } | null,
    private readonly hooks: ZygoteHostHooks,
    options: ZygoteOptions = {},
  ) {
    this.sockets = new HostSocket(runtimeDir, owner);
    this.maxZygotes = options.maxZygotes ?? 4;
    this.maxPerOwner = Math.max(1, Math.min(this.maxZygotes, options.maxZygotesPerOwner ?? Math.floor(this.maxZygotes / 2)));
    this.idleMs = options.idleMs ?? 5 * 60_000;
    this.reserveBytes = options.reserveBytes ?? memoryReserve(totalmem());
    this.now = options.now ?? Date.now;
    this.freeMemory = options.freeMemory ?? freemem;
    this.zygoteMemoryBytes = options.zygoteMemoryBytes ?? 160 * MB;
    this.spareOptions = { minSpares: options.minSpares ?? 2, maxSpares: Math.max(options.minSpares ?? 2, options.maxSpares ?? 12) };
    this.timer = setInterval(() => this.tick(), POOL_TICK_MS);
    this.timer.unref();
  }

  /**
   * A child of this spec's zygote, ready or about to be; null when there is none yet (the zygote
   * is starting, failed, or cannot be started now): the caller takes the ordinary path.
   */
  claim(spec: ZygoteSpec): ZygoteChild | null {
    if (this.closed) return null;
    const existing = this.zygotes.get(spec.key);
    if (existing && existing.state !== 'failed' && existing.state !== 'stopped') {
      // Most recently used last, for eviction.
      this.zygotes.delete(spec.key);
      this.zygotes.set(spec.key, existing);
      const child = existing.claim();
      if (child) this.runs++;
      return child;
    }
    if (existing) this.zygotes.delete(spec.key);
    if ((this.failedUntil.get(spec.key) ?? 0) > this.now()) return null;
    this.startZygote(spec);
    return null;
  }

  private startZygote(spec: ZygoteSpec): void {
    if (this.freeMemory() - this.zygoteMemoryBytes < this.reserveBytes) return;
    // Only an idle zygote (no run in progress) makes room, so no tenant can end another's runs;
    // without one, this key waits (its runs take the ordinary path).
    const idle = (owner?: string) =>
      [...this.zygotes].filter(([, zygote]) => zygote.active === 0 && (owner === undefined || zygote.spec.owner === owner));
    const held = (owner: string) => [...this.zygotes.values()].filter((zygote) => zygote.spec.owner === owner).length;
    if (held(spec.owner) >= this.maxPerOwner) {
      // At its own cap, an owner can only replace one of its own (least recently used first), and
      // not one used in the last moments: its namespaces would take turns ending each other's.
      const own = idle(spec.owner).find(([, zygote]) => this.now() - zygote.lastUsed >= OWN_REPLACE_MS);
      if (!own) return;
      this.evict(own[0]);
    }
    while (this.zygotes.size >= this.maxZygotes) {
      // One of its own, or one of an owner holding more than it does: from the owner holding the
      // most, least recently used first (the map is in that order).
      const mine = held(spec.owner);
      let victim: string | undefined;
      let most = 0;
      for (const [key, zygote] of idle()) {
        const count = held(zygote.spec.owner);
        if ((zygote.spec.owner === spec.owner || count > mine) && count > most) [victim, most] = [key, count];
      }
      if (victim === undefined) return;
      this.evict(victim);
    }
    const zygote = new Zygote(spec, this.hooks, this.sockets, this.spareOptions, this.now);
    this.zygotes.set(spec.key, zygote);
    // Its children connect to the host socket, so that listens first.
    void this.sockets.listening.then(
      () => {
        if (this.closed || zygote.state !== 'starting') return;
        zygote.start();
        if ((zygote.state as string) === 'failed') this.failedUntil.set(spec.key, this.now() + NEVER_READY_BACKOFF_MS);
      },
      (error: Error) => {
        zygote.stop(`the host socket could not listen: ${error.message}`);
      },
    );
  }

  private evict(key: string): void {
    const zygote = this.zygotes.get(key);
    this.zygotes.delete(key);
    zygote?.stop();
  }

  stats(): ZygoteStats {
    return {
      runs: this.runs,
      zygotes: [...this.zygotes.values()].map((zygote) => ({
        label: zygote.spec.label,
        owner: zygote.spec.owner,
        state: zygote.state,
        spares: zygote.spares.length,
        runs: zygote.runs,
        active: zygote.active,
      })),
    };
  }

  private tick(): void {
    const now = this.now();
    for (const [key, zygote] of [...this.zygotes]) {
      if (zygote.state === 'failed') {
        this.zygotes.delete(key);
        // A crash after serving is retried soon (1 s, doubling with each crash of the key, up to a
        // minute); a zygote that never got ready says the host cannot run one: a minute.
        const crashes = (this.crashes.get(key) ?? 0) + (zygote.everReady ? 1 : 0);
        this.crashes.set(key, crashes);
        this.failedUntil.set(key, now + (zygote.everReady ? backoffMs(crashes - 1, CRASH_BACKOFF) : NEVER_READY_BACKOFF_MS));
        // Bounded: the oldest keys' back-off records go first.
        for (const map of [this.failedUntil, this.crashes]) {
          while (map.size > BACKOFF_KEYS_CAP) map.delete(map.keys().next().value as string);
        }
      } else if (now - zygote.lastUsed > this.idleMs && zygote.active === 0) {
        this.zygotes.delete(key);
        zygote.stop();
      } else {
        zygote.refill();
      }
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    const all = [...this.zygotes.values()];
    this.zygotes.clear();
    for (const zygote of all) zygote.stop();
    await Promise.all(all.map((zygote) => zygote.closed()));
    this.sockets.close();
  }
}
