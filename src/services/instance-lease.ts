/**
 * This server process as an instance in the database, with a lease it renews while it lives. The
 * concurrency slots of its calls name it, so when it dies without settling them (kill -9, a lost
 * node) any node releases them once the lease has expired, and records their runs as interrupted.
 * At start: on the embedded database no other server can hold a slot (the data dir is locked), so
 * every slot is stale; on PostgreSQL, instances of this host whose process is gone are dead at
 * once, and the others' slots are kept until their lease expires.
 */
import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync, readlinkSync } from 'node:fs';
import { hostname } from 'node:os';
import { sql } from 'kysely';
import { observeDatabaseClock } from '../core/database-clock.js';
import type { Logger } from '../core/logger.js';
import { configInvalid } from '../core/errors.js';
import type { Db } from '../store/database.js';
import type { MeteringStore } from '../store/metering-store.js';
import type { DatabaseHealth } from '../store/db-health.js';

export const DEFAULT_LEASE_MS = 30_000;

/** This host's pid space, across restarts of its processes but not of its kernel (pids restart with it). */
function hostIdentity(): string {
  let boot = '';
  try {
    boot = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    // no procfs: only the lease frees this host's dead instances
  }
  // Containers may share a host name and boot id but not pids: the pid namespace is part of it.
  let pids = '';
  try {
    pids = readlinkSync('/proc/self/ns/pid');
  } catch {
    // no procfs: as above
  }
  return `${hostname()}/${boot}/${pids}`;
}

export class InstanceLease {
  readonly id = randomUUID();
  private readonly host = hostIdentity();
  private timer: NodeJS.Timeout | undefined;
  private renewing: Promise<void> | undefined;
  private unsubscribe: (() => void) | undefined;

  constructor(
    private readonly deps: {
      db: Db;
      metering: () => MeteringStore;
      embedded: boolean;
      leaseMs: number;
      logger: Logger;
      health?: DatabaseHealth;
    },
  ) {}

  /** Registers this instance, releases what dead ones left, and starts renewing the lease. */
  async start(): Promise<{ released: number }> {
    const { db, leaseMs } = this.deps;
    const now = new Date();
    // Leases are set and compared on the database's clock, the one every node shares: a node
    // whose own clock runs ahead never sees a live node's lease as lapsed.
    const sentAt = Date.now();
    const row = await db
      .insertInto('server_instances')
      .values({ id: this.id, host: this.host, pid: process.pid, started_at: sql<Date>`now()`, lease_until: leaseFromNow(leaseMs) })
      .returning(sql<Date>`now()`.as('db_now'))
      .executeTakeFirstOrThrow();
    observeDatabaseClock(new Date(row.db_now).getTime(), sentAt, Date.now());
    let released: number;
    try {
      const others = await db
        .selectFrom('server_instances')
        .select(['id', 'host', 'pid', sql<boolean>`lease_until < now()`.as('lapsed')])
        .where('id', '<>', this.id)
        .execute();
      const dead = others
        .filter((other) => this.deps.embedded || (other.host === this.host && !existsSync(`/proc/${other.pid}`)) || other.lapsed)
        .map((other) => other.id);
      released = await this.deps.metering().releaseStale(now, this.deps.embedded ? null : dead);
      if (dead.length > 0) await db.deleteFrom('server_instances').where('id', 'in', dead).execute();
      if (released > 0)
        this.deps.logger.warn(
          { released, deadInstances: dead.length },
          'released the concurrency slots of stopped servers; their runs are recorded as interrupted and not counted',
        );
    } catch (error) {
      // A start that fails leaves no instance behind (best effort: the database may be what failed).
      await db
        .deleteFrom('server_instances')
        .where('id', '=', this.id)
        .execute()
        .catch(() => undefined);
      throw error;
    }
    this.timer = setInterval(
      () => {
        this.renewing ??= this.renew().finally(() => (this.renewing = undefined));
      },
      Math.max(50, Math.floor(leaseMs / 3)),
    );
    this.timer.unref();
    // Renewals fail while the database is away: renew the moment it is back, before other nodes
    // take the lapsed lease for a dead server's.
    this.unsubscribe = this.deps.health?.onChange((state) => {
      if (state === 'ok') this.renewing ??= this.renew().finally(() => (this.renewing = undefined));
    });
    return { released };
  }

  private async renew(): Promise<void> {
    const { db, leaseMs } = this.deps;
    try {
      // Re-inserted if another node removed it (this one looked dead: its lease had expired).
      // Its answer also gives this node the database's clock (core/database-clock.ts), every renewal.
      const sentAt = Date.now();
      const row = await db
        .insertInto('server_instances')
        .values({ id: this.id, host: this.host, pid: process.pid, started_at: sql<Date>`now()`, lease_until: leaseFromNow(leaseMs) })
        .onConflict((oc) => oc.column('id').doUpdateSet({ lease_until: leaseFromNow(leaseMs) }))
        .returning(sql<Date>`now()`.as('db_now'))
        .executeTakeFirst();
      if (row) observeDatabaseClock(new Date(row.db_now).getTime(), sentAt, Date.now());
    } catch (error) {
      this.deps.logger.warn({ err: error instanceof Error ? error.message : String(error) }, 'could not renew the server instance lease');
    }
  }

  /** Stops renewing and removes the instance (after its calls are settled). */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.unsubscribe?.();
    await this.renewing;
    await this.deps.db
      .deleteFrom('server_instances')
      .where('id', '=', this.id)
      .execute()
      .catch(() => undefined);
  }
}

/** now() + the lease, on the database's clock. */
const leaseFromNow = (leaseMs: number) => sql<Date>`now() + make_interval(secs => ${leaseMs / 1000}::float8)`;

/** MCPWORKS_INSTANCE_LEASE_MS: how long a server's slots outlive its last sign of life (default 30 s). */
export function leaseMsFromEnvironment(value: string | undefined): number {
  if (value === undefined || value === '') return DEFAULT_LEASE_MS;
  const ms = Number(value);
  if (!Number.isInteger(ms) || ms < 1000 || ms > 3_600_000)
    throw configInvalid(`MCPWORKS_INSTANCE_LEASE_MS must be an integer from 1000 to 3600000, not ${JSON.stringify(value.slice(0, 32))}`);
  return ms;
}
