/**
 * Storage that no one will use again: expired MCP sessions (database, all accounts), functions
 * packages no namespace's catalog uses any more and npm installs no stored version asks for (cache
 * dir). Runs at start and every few minutes on every node; each step is safe on several at once.
 */
import { databaseClockOffsetMs } from '../core/database-clock.js';
import type { Logger } from '../core/logger.js';
import { packageKey, type FunctionsPackageBuilder } from '../run/functions-package.js';
import type { TypescriptDependencies } from '../run/typescript-dependencies.js';
import { dependencyKey } from '../sandbox/index.js';
import type { AccountsStore } from '../store/accounts-store.js';
import type { CatalogStore } from '../store/catalog-store.js';

export const HOUSEKEEPING_INTERVAL_MS = 5 * 60 * 1000;

/** A registered OAuth client with no grant is removed after this many days (a client registers again). */
export const UNUSED_OAUTH_CLIENT_DAYS = 7;

/**
 * How long an unreferenced package stays after its last use: twice the longest run timeout of any
 * plan (a run marks its package when it starts) plus 15 minutes (an idle zygote that mounted it is
 * stopped after 5).
 */
export function packageGraceMs(maxTimeoutSeconds: number): number {
  return 2 * maxTimeoutSeconds * 1000 + 15 * 60 * 1000;
}

export class Housekeeping {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<unknown> | undefined;

  constructor(
    private readonly deps: {
      accounts: AccountsStore;
      catalogStore: CatalogStore;
      packages: FunctionsPackageBuilder;
      dependencies: TypescriptDependencies;
      graceMs: number;
      logger: Logger;
      /** Agent webhooks' seen signatures and Idempotency-Keys past their expiry. */
      webhooks?: { purgeExpired(): Promise<number> };
      /** OAuth client registrations no one signed in with (registration is open: each is a stored row). */
      oauthClients?: { deleteUnusedClients(before: Date, now: Date): Promise<number> };
    },
  ) {}

  start(intervalMs = HOUSEKEEPING_INTERVAL_MS): void {
    const tick = () => {
      this.running ??= this.sweep()
        .catch((error: unknown) => this.deps.logger.error({ err: error }, 'housekeeping failed'))
        .finally(() => (this.running = undefined));
    };
    tick();
    this.timer = setInterval(tick, intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.running;
  }

  /** One pass; `now` lets an operator task (or a test) collect as of a later time. */
  async sweep(now = Date.now()): Promise<{ sessions: number; packages: number; installs: number; oauthClients: number }> {
    // `now` is this node's clock (local files' ages); rows other nodes wrote are aged on the database's.
    const databaseMs = now + databaseClockOffsetMs();
    const sessions = await this.deps.accounts.deleteExpiredMcpSessions(databaseMs);
    const referenced = new Set<string>();
    for (const [namespace, functions] of await this.deps.catalogStore.packageIdentities()) referenced.add(packageKey(namespace, functions));
    const packages = this.deps.packages.collectGarbage(referenced, this.deps.graceMs, now);
    // npm installs no stored TypeScript version asks for any more (stored lists were valid when made).
    const requirementKeys = new Set<string>();
    for (const list of await this.deps.catalogStore.typescriptRequirementLists()) {
      try {
        requirementKeys.add(dependencyKey(list));
      } catch {
        // Not a list npm would install: nothing of it is kept.
      }
    }
    const installs = this.deps.dependencies.collectGarbage(requirementKeys, this.deps.graceMs, now).removed;
    const webhookRows = (await this.deps.webhooks?.purgeExpired()) ?? 0;
    const oauthClients =
      (await this.deps.oauthClients?.deleteUnusedClients(
        new Date(databaseMs - UNUSED_OAUTH_CLIENT_DAYS * 86_400_000),
        new Date(databaseMs),
      )) ?? 0;
    if (oauthClients > 0)
      this.deps.logger.info({ oauth_clients: oauthClients }, 'housekeeping removed OAuth clients no one signed in with');
    if (webhookRows > 0)
      this.deps.logger.info({ webhook_rows: webhookRows }, 'housekeeping removed expired webhook signatures and idempotency keys');
    if (sessions > 0 || packages > 0 || installs > 0)
      this.deps.logger.info(
        { sessions, packages, installs },
        'housekeeping removed expired sessions, unused functions packages and unused npm installs',
      );
    return { sessions, packages, installs, oauthClients };
  }
}
