import { sql } from 'kysely';
import { configFromEnv } from '../app/config.js';
import { observeDatabaseClock } from '../core/database-clock.js';
import { AccountService } from '../services/accounts.js';
import { ApiKeyHasher } from '../services/credential-hashing.js';
import { loadServerSecret } from '../services/server-secret.js';
import { AccountsStore } from '../store/accounts-store.js';
import { acquireDataDirLock } from '../store/data-dir-lock.js';
import { openDatabase, type Db } from '../store/database.js';

/** Readings of the database's clock tried before the command goes on on its own host's clock. */
const CLOCK_READINGS = 3;

/**
 * The database's clock, read until a round trip is quick enough to say when it was read (the first
 * one also opens the connection). Never taken: the command says so and uses its host's clock.
 */
async function readDatabaseClock(db: Db): Promise<void> {
  for (let reading = 0; reading < CLOCK_READINGS; reading++) {
    const sentAt = Date.now();
    const { rows } = await sql<{ db_now: Date }>`SELECT now() AS db_now`.execute(db);
    if (observeDatabaseClock(new Date(rows[0]!.db_now).getTime(), sentAt, Date.now())) return;
  }
  process.stderr.write(`mcpworks: warning: the database answered too slowly to read its clock; expiry is computed on this host's clock\n`);
}

export interface OperatorServices {
  accounts: AccountService;
  accountsStore: AccountsStore;
}

/**
 * Opens the same database the server uses for one operator command. With the embedded database
 * it takes the data-dir lock first, so it refuses (rather than corrupts) while a server runs.
 */
export async function withOperatorServices(
  dataDirFlag: string | undefined,
  work: (services: OperatorServices) => Promise<number>,
): Promise<number> {
  const config = configFromEnv();
  const dataDir = dataDirFlag ?? config.dataDir;
  const release = config.databaseUrl ? () => undefined : acquireDataDirLock(dataDir, 'mcpworks CLI');
  try {
    // The same secret the server uses, so the keys this creates verify there.
    const keys = new ApiKeyHasher(loadServerSecret({ secretKey: config.secretKey, databaseUrl: config.databaseUrl, dataDir }).secret);
    const database = await openDatabase({ databaseUrl: config.databaseUrl, dataDir, cacheMb: config.dbCacheMb });
    try {
      // Expiry the command computes (a key's --expires-in-days, a trial's end) is on the database's
      // clock, as the servers compare it: the operator's host may be a day off.
      await readDatabaseClock(database.db);
      const accountsStore = new AccountsStore(database.db);
      return await work({ accounts: new AccountService(accountsStore, config.tiers, { keys }), accountsStore });
    } finally {
      await database.close();
    }
  } finally {
    release();
  }
}
