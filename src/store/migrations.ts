/**
 * Versioned schema migrations, applied in order on start inside one transaction each.
 * Never edit a shipped migration: add the next one.
 */
export interface Migration {
  version: number;
  name: string;
  statements: string[];
}

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'accounts, keys, namespaces, services, functions, versions',
    statements: [
      `CREATE TABLE accounts (
        id TEXT PRIMARY KEY,
        email TEXT NOT NULL UNIQUE,
        password_hash TEXT NOT NULL,
        tier TEXT NOT NULL,
        trial_ends_at TIMESTAMPTZ,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now()
      )`,
      `CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        prefix TEXT NOT NULL UNIQUE,
        key_hash TEXT NOT NULL,
        namespace TEXT,
        scopes JSONB NOT NULL,
        expires_at TIMESTAMPTZ,
        revoked_at TIMESTAMPTZ,
        last_used_at TIMESTAMPTZ,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now()
      )`,
      `CREATE INDEX api_keys_account ON api_keys(account_id)`,
      `CREATE TABLE web_sessions (
        token_hash TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        expires_at TIMESTAMPTZ NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now()
      )`,
      `CREATE TABLE mcp_sessions (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        key_id TEXT NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
        endpoint TEXT NOT NULL,
        namespace TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now()
      )`,
      `CREATE TABLE namespaces (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        name TEXT NOT NULL UNIQUE,
        description TEXT NOT NULL DEFAULT '',
        created_at TIMESTAMPTZ NOT NULL DEFAULT now()
      )`,
      `CREATE INDEX namespaces_account ON namespaces(account_id)`,
      `CREATE TABLE services (
        id TEXT PRIMARY KEY,
        namespace_id TEXT NOT NULL REFERENCES namespaces(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        created_at TIMESTAMPTZ NOT NULL DEFAULT now()
      )`,
      // Names that differ only by '-' vs '_' would be one identifier in the generated package.
      `CREATE UNIQUE INDEX services_identifier ON services(namespace_id, (replace(name, '-', '_')))`,
      `CREATE TABLE functions (
        id TEXT PRIMARY KEY,
        service_id TEXT NOT NULL REFERENCES services(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        tags JSONB NOT NULL DEFAULT '[]',
        active_version INTEGER NOT NULL,
        locked BOOLEAN NOT NULL DEFAULT false,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
      )`,
      `CREATE UNIQUE INDEX functions_identifier ON functions(service_id, (replace(name, '-', '_')))`,
      `CREATE TABLE function_versions (
        id TEXT PRIMARY KEY,
        function_id TEXT NOT NULL REFERENCES functions(id) ON DELETE CASCADE,
        version INTEGER NOT NULL,
        language TEXT NOT NULL,
        backend TEXT NOT NULL,
        code TEXT NOT NULL,
        config JSONB,
        input_schema JSONB,
        output_schema JSONB,
        requirements JSONB NOT NULL,
        required_env JSONB NOT NULL,
        optional_env JSONB NOT NULL,
        definition_hash TEXT NOT NULL,
        restored_from INTEGER,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        UNIQUE (function_id, version)
      )`,
      `CREATE TABLE executions (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        namespace_id TEXT NOT NULL REFERENCES namespaces(id) ON DELETE CASCADE,
        service_name TEXT,
        function_name TEXT,
        function_id TEXT REFERENCES functions(id) ON DELETE SET NULL,
        version INTEGER,
        mode TEXT NOT NULL,
        status TEXT NOT NULL,
        error_type TEXT,
        duration_ms INTEGER NOT NULL,
        bytes_out INTEGER NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now()
      )`,
      `CREATE INDEX executions_namespace ON executions(namespace_id, created_at)`,
      `CREATE INDEX executions_account ON executions(account_id, created_at)`,
    ],
  },
  {
    version: 2,
    name: 'metering, execution history, security events',
    statements: [
      // One row per account and calendar month (UTC): the monthly quota counter.
      `CREATE TABLE usage_months (
        account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        month TEXT NOT NULL,
        executions INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (account_id, month)
      )`,
      // Fixed one-minute windows for executions-per-minute.
      `CREATE TABLE rate_windows (
        account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        window_start TIMESTAMPTZ NOT NULL,
        executions INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (account_id, window_start)
      )`,
      // Runs in flight, for the concurrency limit; expires_at frees the slot of a node that died.
      `CREATE TABLE active_executions (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        expires_at TIMESTAMPTZ NOT NULL
      )`,
      `CREATE INDEX active_executions_account ON active_executions(account_id)`,
      `ALTER TABLE executions ADD COLUMN key_id TEXT`,
      `ALTER TABLE executions ADD COLUMN functions JSONB NOT NULL DEFAULT '[]'`,
      `ALTER TABLE executions ADD COLUMN error_message TEXT`,
      `ALTER TABLE executions ADD COLUMN stdout TEXT NOT NULL DEFAULT ''`,
      `ALTER TABLE executions ADD COLUMN stderr TEXT NOT NULL DEFAULT ''`,
      `ALTER TABLE executions ADD COLUMN language TEXT`,
      `CREATE INDEX executions_function ON executions(namespace_id, service_name, function_name, created_at)`,
      `CREATE TABLE security_events (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        namespace_id TEXT NOT NULL REFERENCES namespaces(id) ON DELETE CASCADE,
        execution_id TEXT,
        service_name TEXT,
        function_name TEXT,
        event_type TEXT NOT NULL,
        detail JSONB NOT NULL DEFAULT '{}',
        created_at TIMESTAMPTZ NOT NULL DEFAULT now()
      )`,
      `CREATE INDEX security_events_namespace ON security_events(namespace_id, created_at)`,
    ],
  },
  {
    version: 3,
    name: 'keep the key order of schemas and config',
    statements: [
      // jsonb reorders object keys; a schema's property order is what users and models read.
      `ALTER TABLE function_versions ALTER COLUMN input_schema TYPE json USING input_schema::json`,
      `ALTER TABLE function_versions ALTER COLUMN output_schema TYPE json USING output_schema::json`,
      `ALTER TABLE function_versions ALTER COLUMN config TYPE json USING config::json`,
    ],
  },
  {
    version: 4,
    name: 'catalog version per namespace',
    statements: [
      // Bumped by triggers on every change to a namespace's services or functions, so any node can
      // cache what the run endpoint serves and see, in the namespace row it reads anyway, when it is stale.
      `ALTER TABLE namespaces ADD COLUMN catalog_version INTEGER NOT NULL DEFAULT 0`,
      `CREATE FUNCTION mcpworks_bump_catalog_from_service() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          UPDATE namespaces SET catalog_version = catalog_version + 1 WHERE id = COALESCE(NEW.namespace_id, OLD.namespace_id);
          RETURN NULL;
        END $$`,
      `CREATE TRIGGER services_bump_catalog AFTER INSERT OR UPDATE OR DELETE ON services
        FOR EACH ROW EXECUTE FUNCTION mcpworks_bump_catalog_from_service()`,
      `CREATE FUNCTION mcpworks_bump_catalog_from_function() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          UPDATE namespaces SET catalog_version = catalog_version + 1
            WHERE id = (SELECT namespace_id FROM services WHERE id = COALESCE(NEW.service_id, OLD.service_id));
          RETURN NULL;
        END $$`,
      `CREATE TRIGGER functions_bump_catalog AFTER INSERT OR UPDATE OR DELETE ON functions
        FOR EACH ROW EXECUTE FUNCTION mcpworks_bump_catalog_from_function()`,
    ],
  },
  {
    version: 5,
    name: 'execution history outlives deleted functions',
    statements: [
      // A function deleted while one of its runs is in flight must not make that run's record fail.
      `ALTER TABLE executions DROP CONSTRAINT IF EXISTS executions_function_id_fkey`,
    ],
  },
  {
    version: 6,
    name: 'admission in one round trip',
    statements: [
      // MeteringStore.admit's checks in one call (one round trip). The account row is locked
      // first; in a VOLATILE function each later statement takes a fresh snapshot, so it sees
      // everything the previous holder of the lock committed.
      // The answer: rejected = null and used = the month's count with this call, or the code of
      // the limit that refused it and the count it found.
      `CREATE FUNCTION mcpworks_admit(
          p_ticket TEXT, p_account TEXT, p_now TIMESTAMPTZ, p_month TEXT, p_window TIMESTAMPTZ,
          p_monthly INTEGER, p_per_minute INTEGER, p_concurrency INTEGER, p_expires_at TIMESTAMPTZ)
        RETURNS TABLE (rejected TEXT, used INTEGER) LANGUAGE plpgsql VOLATILE AS $$
        DECLARE
          slot RECORD;
          n INTEGER;
        BEGIN
          PERFORM 1 FROM accounts WHERE id = p_account FOR UPDATE;
          -- Slots whose call never settled (its node died, or it never reached a handler) free
          -- themselves here, and give back their quota unit unless the call was recorded.
          FOR slot IN DELETE FROM active_executions WHERE account_id = p_account AND expires_at < p_now RETURNING id, started_at LOOP
            IF NOT EXISTS (SELECT 1 FROM executions WHERE id = slot.id) THEN
              UPDATE usage_months SET executions = greatest(executions - 1, 0)
                WHERE account_id = p_account AND month = to_char(slot.started_at AT TIME ZONE 'UTC', 'YYYY-MM');
            END IF;
          END LOOP;
          IF p_concurrency IS NOT NULL THEN
            SELECT count(*)::int INTO n FROM active_executions WHERE account_id = p_account;
            IF n >= p_concurrency THEN
              RETURN QUERY SELECT 'CONCURRENCY_LIMIT_EXCEEDED'::text, n;
              RETURN;
            END IF;
          END IF;
          IF p_per_minute IS NOT NULL THEN
            SELECT coalesce(max(executions), 0) INTO n FROM rate_windows WHERE account_id = p_account AND window_start = p_window;
            IF n >= p_per_minute THEN
              RETURN QUERY SELECT 'EXECUTION_RATE_EXCEEDED'::text, n;
              RETURN;
            END IF;
          END IF;
          SELECT coalesce(max(executions), 0) INTO n FROM usage_months WHERE account_id = p_account AND month = p_month;
          IF p_monthly IS NOT NULL AND n >= p_monthly THEN
            RETURN QUERY SELECT 'QUOTA_EXCEEDED'::text, n;
            RETURN;
          END IF;
          INSERT INTO usage_months (account_id, month, executions) VALUES (p_account, p_month, 1)
            ON CONFLICT (account_id, month) DO UPDATE SET executions = usage_months.executions + 1;
          DELETE FROM rate_windows WHERE account_id = p_account AND window_start < p_window - interval '1 minute';
          INSERT INTO rate_windows (account_id, window_start, executions) VALUES (p_account, p_window, 1)
            ON CONFLICT (account_id, window_start) DO UPDATE SET executions = rate_windows.executions + 1;
          INSERT INTO active_executions (id, account_id, started_at, expires_at) VALUES (p_ticket, p_account, p_now, p_expires_at);
          RETURN QUERY SELECT NULL::text, n + 1;
        END $$`,
    ],
  },
  {
    version: 7,
    name: 'API keys under a keyed hash; sign-in throttle',
    statements: [
      // API keys move from scrypt to HMAC-SHA256 under the server secret. The raw key is needed
      // to compute that, so rows are rewritten by the server on each key's first successful use
      // (the 'scrypt$' / 'hmac-sha256$' prefix of key_hash says which a row holds).
      // Failed sign-ins per email (known or not), shared by every node: attempts count here before
      // the password KDF runs, a success deletes the row, and locked_until is the back-off.
      `CREATE TABLE login_throttle (
        email TEXT PRIMARY KEY,
        failures INTEGER NOT NULL,
        locked_until TIMESTAMPTZ,
        updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
      )`,
      `CREATE INDEX login_throttle_updated ON login_throttle(updated_at)`,
    ],
  },
  {
    version: 8,
    name: 'storage accounting and MCP session idle expiry',
    statements: [
      // Per-version sizes, so per-account storage limits sum small columns instead of reading code.
      // Both sums match src/core/storage-limits.ts (json columns keep the JSON text we inserted).
      `ALTER TABLE function_versions ADD COLUMN schema_bytes BIGINT NOT NULL DEFAULT 0`,
      `ALTER TABLE function_versions ADD COLUMN stored_bytes BIGINT NOT NULL DEFAULT 0`,
      `UPDATE function_versions SET
         schema_bytes = coalesce(octet_length(input_schema::text), 4) + coalesce(octet_length(output_schema::text), 4),
         stored_bytes = octet_length(code) + coalesce(octet_length(config::text), 4)
           + coalesce(octet_length(input_schema::text), 4) + coalesce(octet_length(output_schema::text), 4)`,
      // A session lives while it is used: idle past MCP_SESSION_IDLE_MS it expires and is swept.
      `ALTER TABLE mcp_sessions ADD COLUMN last_seen_at TIMESTAMPTZ NOT NULL DEFAULT now()`,
      `CREATE INDEX mcp_sessions_account ON mcp_sessions(account_id, last_seen_at)`,
      `CREATE INDEX mcp_sessions_last_seen ON mcp_sessions(last_seen_at)`,
    ],
  },
  {
    version: 9,
    name: 'server instances and slot leases; interrupted runs',
    statements: [
      // Each running server is an instance with a lease it renews while it lives. A slot names the
      // instance that runs its call: once that instance's lease has expired (kill -9, a lost node)
      // the slot is released and its run recorded as interrupted.
      `CREATE TABLE server_instances (
        id TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        lease_until TIMESTAMPTZ NOT NULL
      )`,
      `ALTER TABLE active_executions ADD COLUMN instance_id TEXT`,
      // When the call ends at the latest (its time limit): what retry_after is computed from.
      `ALTER TABLE active_executions ADD COLUMN deadline_at TIMESTAMPTZ`,
      // What an interrupted run's record needs (namespace, key, function), known at admission.
      `ALTER TABLE active_executions ADD COLUMN run JSONB`,
      `CREATE INDEX active_executions_instance ON active_executions(instance_id)`,
      // Releases stale slots (of one account, or all when p_account is null): expired ones, those
      // of instances whose lease has expired or that are gone, and the slots of the instances in p_dead
      // whatever their lease (p_dead null: every slot, for the embedded database at start). A released slot whose call was not recorded gives back its
      // quota unit, and when its run had begun it is recorded as interrupted. Exactly once: the
      // DELETE ... RETURNING hands each slot to one caller.
      // p_self: the calling instance, alive by definition: its own slots are never released for its
      // lease (it may have lapsed while the database was away), only past their expiry.
      `CREATE FUNCTION mcpworks_release_stale(p_account TEXT, p_now TIMESTAMPTZ, p_dead TEXT[], p_self TEXT)
        RETURNS INTEGER LANGUAGE plpgsql VOLATILE AS $$
        DECLARE
          slot RECORD;
          n INTEGER := 0;
        BEGIN
          FOR slot IN DELETE FROM active_executions a
              WHERE (p_account IS NULL OR a.account_id = p_account)
                AND (p_dead IS NULL OR a.expires_at < p_now
                  OR a.instance_id = ANY (p_dead)
                  OR (a.instance_id IS NOT NULL AND a.instance_id IS DISTINCT FROM p_self AND NOT EXISTS (
                    SELECT 1 FROM server_instances i WHERE i.id = a.instance_id AND i.lease_until >= p_now)))
              RETURNING a.id, a.account_id, a.started_at, a.run LOOP
            n := n + 1;
            IF NOT EXISTS (SELECT 1 FROM executions WHERE id = slot.id) THEN
              UPDATE usage_months SET executions = greatest(executions - 1, 0)
                WHERE account_id = slot.account_id AND month = to_char(slot.started_at AT TIME ZONE 'UTC', 'YYYY-MM');
              IF slot.run IS NOT NULL AND EXISTS (SELECT 1 FROM namespaces WHERE id = slot.run->>'namespace_id') THEN
                INSERT INTO executions (id, account_id, namespace_id, key_id, mode, service_name, function_name, function_id,
                    version, functions, language, status, error_type, error_message, duration_ms, bytes_out, created_at)
                  VALUES (slot.id, slot.account_id, slot.run->>'namespace_id', slot.run->>'key_id', slot.run->>'mode',
                    slot.run->>'service_name', slot.run->>'function_name', slot.run->>'function_id',
                    (slot.run->>'version')::int, coalesce(slot.run->'functions', '[]'::jsonb), slot.run->>'language',
                    'interrupted', 'interrupted', 'the server stopped before the run finished; it was not counted',
                    greatest(0, floor(extract(epoch FROM (p_now - slot.started_at)) * 1000))::int, 0, p_now)
                  ON CONFLICT (id) DO NOTHING;
              END IF;
            END IF;
          END LOOP;
          RETURN n;
        END $$`,
      `DROP FUNCTION mcpworks_admit(TEXT, TEXT, TIMESTAMPTZ, TEXT, TIMESTAMPTZ, INTEGER, INTEGER, INTEGER, TIMESTAMPTZ)`,
      // As in migration 6, and: stale slots are released through mcpworks_release_stale; the slot
      // carries its instance, deadline and run; a concurrency refusal says when the earliest of
      // the account's slots frees (its call's time limit), in whole seconds.
      `CREATE FUNCTION mcpworks_admit(
          p_ticket TEXT, p_account TEXT, p_now TIMESTAMPTZ, p_month TEXT, p_window TIMESTAMPTZ,
          p_monthly INTEGER, p_per_minute INTEGER, p_concurrency INTEGER, p_expires_at TIMESTAMPTZ,
          p_instance TEXT, p_deadline TIMESTAMPTZ, p_run JSONB)
        RETURNS TABLE (rejected TEXT, used INTEGER, retry_after INTEGER) LANGUAGE plpgsql VOLATILE AS $$
        DECLARE
          n INTEGER;
          frees TIMESTAMPTZ;
        BEGIN
          PERFORM 1 FROM accounts WHERE id = p_account FOR UPDATE;
          PERFORM mcpworks_release_stale(p_account, p_now, ARRAY[]::text[], p_instance);
          IF p_concurrency IS NOT NULL THEN
            -- A slot past its call's deadline (held longer: an install, a queue) frees by its expiry at the latest.
            SELECT count(*)::int, min(CASE WHEN deadline_at > p_now THEN least(deadline_at, expires_at) ELSE expires_at END) INTO n, frees
              FROM active_executions WHERE account_id = p_account;
            IF n >= p_concurrency THEN
              RETURN QUERY SELECT 'CONCURRENCY_LIMIT_EXCEEDED'::text, n,
                greatest(1, ceil(extract(epoch FROM (coalesce(frees, p_now) - p_now))))::int;
              RETURN;
            END IF;
          END IF;
          IF p_per_minute IS NOT NULL THEN
            SELECT coalesce(max(executions), 0) INTO n FROM rate_windows WHERE account_id = p_account AND window_start = p_window;
            IF n >= p_per_minute THEN
              RETURN QUERY SELECT 'EXECUTION_RATE_EXCEEDED'::text, n, NULL::int;
              RETURN;
            END IF;
          END IF;
          SELECT coalesce(max(executions), 0) INTO n FROM usage_months WHERE account_id = p_account AND month = p_month;
          IF p_monthly IS NOT NULL AND n >= p_monthly THEN
            RETURN QUERY SELECT 'QUOTA_EXCEEDED'::text, n, NULL::int;
            RETURN;
          END IF;
          INSERT INTO usage_months (account_id, month, executions) VALUES (p_account, p_month, 1)
            ON CONFLICT (account_id, month) DO UPDATE SET executions = usage_months.executions + 1;
          DELETE FROM rate_windows WHERE account_id = p_account AND window_start < p_window - interval '1 minute';
          INSERT INTO rate_windows (account_id, window_start, executions) VALUES (p_account, p_window, 1)
            ON CONFLICT (account_id, window_start) DO UPDATE SET executions = rate_windows.executions + 1;
          INSERT INTO active_executions (id, account_id, started_at, expires_at, instance_id, deadline_at, run)
            VALUES (p_ticket, p_account, p_now, p_expires_at, p_instance, p_deadline, p_run);
          RETURN QUERY SELECT NULL::text, n + 1, NULL::int;
        END $$`,
    ],
  },
  {
    version: 10,
    name: 'cancellation of calls in progress',
    statements: [
      // A client's notifications/cancelled may reach any node: that node marks the call's slot
      // (found by the account and the run's cancel_key: session and request id) and NOTIFYs
      // mcpworks_cancel with its id; the node running it kills it. The mark outlives a missed
      // notification (a listener reconnecting looks for marks on its own slots).
      `ALTER TABLE active_executions ADD COLUMN cancel_requested_at TIMESTAMPTZ`,
      `CREATE INDEX active_executions_cancel_key ON active_executions(account_id, (run->>'cancel_key'))`,
    ],
  },
  {
    version: 11,
    name: 'catalog changes notify every node',
    statements: [
      // Every bump of a namespace's catalog version (the triggers of migration 4) is announced on
      // this channel with the namespace's name, delivered at commit to every node that LISTENs
      // (PostgreSQL folds repeats within one transaction): the run endpoint's streams then send
      // notifications/tools/list_changed. See src/api/list-changed.ts.
      `CREATE FUNCTION mcpworks_notify_catalog() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          PERFORM pg_notify('mcpworks_catalog', NEW.name);
          RETURN NULL;
        END $$`,
      `CREATE TRIGGER namespaces_notify_catalog AFTER UPDATE OF catalog_version ON namespaces
        FOR EACH ROW WHEN (NEW.catalog_version IS DISTINCT FROM OLD.catalog_version) EXECUTE FUNCTION mcpworks_notify_catalog()`,
      // What a 2025-era session negotiated at initialize: whether it may send JSON-RPC batches.
      `ALTER TABLE mcp_sessions ADD COLUMN protocol_version TEXT`,
    ],
  },
  {
    version: 12,
    name: 'slot expiry and instance leases on the database clock',
    statements: [
      // Nodes' clocks may disagree; the database's is the one they share. A slot's expiry and
      // deadline are the caller's durations from the database's now(), and every comparison of a
      // lease or an expiry is against now(), so a node whose clock is ahead never takes a live
      // node's slots for a dead one's (and one that is behind never keeps a dead node's).
      // (p_now still dates the call: its month, its minute window, its record.)
      `CREATE OR REPLACE FUNCTION mcpworks_release_stale(p_account TEXT, p_now TIMESTAMPTZ, p_dead TEXT[], p_self TEXT)
        RETURNS INTEGER LANGUAGE plpgsql VOLATILE AS $$
        DECLARE
          slot RECORD;
          n INTEGER := 0;
        BEGIN
          FOR slot IN DELETE FROM active_executions a
              WHERE (p_account IS NULL OR a.account_id = p_account)
                AND (p_dead IS NULL OR a.expires_at < now()
                  OR a.instance_id = ANY (p_dead)
                  OR (a.instance_id IS NOT NULL AND a.instance_id IS DISTINCT FROM p_self AND NOT EXISTS (
                    SELECT 1 FROM server_instances i WHERE i.id = a.instance_id AND i.lease_until >= now())))
              RETURNING a.id, a.account_id, a.started_at, a.run LOOP
            n := n + 1;
            IF NOT EXISTS (SELECT 1 FROM executions WHERE id = slot.id) THEN
              UPDATE usage_months SET executions = greatest(executions - 1, 0)
                WHERE account_id = slot.account_id AND month = to_char(slot.started_at AT TIME ZONE 'UTC', 'YYYY-MM');
              IF slot.run IS NOT NULL AND EXISTS (SELECT 1 FROM namespaces WHERE id = slot.run->>'namespace_id') THEN
                INSERT INTO executions (id, account_id, namespace_id, key_id, mode, service_name, function_name, function_id,
                    version, functions, language, status, error_type, error_message, duration_ms, bytes_out, created_at)
                  VALUES (slot.id, slot.account_id, slot.run->>'namespace_id', slot.run->>'key_id', slot.run->>'mode',
                    slot.run->>'service_name', slot.run->>'function_name', slot.run->>'function_id',
                    (slot.run->>'version')::int, coalesce(slot.run->'functions', '[]'::jsonb), slot.run->>'language',
                    'interrupted', 'interrupted', 'the server stopped before the run finished; it was not counted',
                    greatest(0, floor(extract(epoch FROM (p_now - slot.started_at)) * 1000))::int, 0, p_now)
                  ON CONFLICT (id) DO NOTHING;
              END IF;
            END IF;
          END LOOP;
          RETURN n;
        END $$`,
      `CREATE OR REPLACE FUNCTION mcpworks_admit(
          p_ticket TEXT, p_account TEXT, p_now TIMESTAMPTZ, p_month TEXT, p_window TIMESTAMPTZ,
          p_monthly INTEGER, p_per_minute INTEGER, p_concurrency INTEGER, p_expires_at TIMESTAMPTZ,
          p_instance TEXT, p_deadline TIMESTAMPTZ, p_run JSONB)
        RETURNS TABLE (rejected TEXT, used INTEGER, retry_after INTEGER) LANGUAGE plpgsql VOLATILE AS $$
        DECLARE
          n INTEGER;
          frees TIMESTAMPTZ;
        BEGIN
          PERFORM 1 FROM accounts WHERE id = p_account FOR UPDATE;
          PERFORM mcpworks_release_stale(p_account, p_now, ARRAY[]::text[], p_instance);
          IF p_concurrency IS NOT NULL THEN
            -- A slot past its call's deadline (held longer: an install, a queue) frees by its expiry at the latest.
            SELECT count(*)::int, min(CASE WHEN deadline_at > now() THEN least(deadline_at, expires_at) ELSE expires_at END) INTO n, frees
              FROM active_executions WHERE account_id = p_account;
            IF n >= p_concurrency THEN
              RETURN QUERY SELECT 'CONCURRENCY_LIMIT_EXCEEDED'::text, n,
                greatest(1, ceil(extract(epoch FROM (coalesce(frees, now()) - now()))))::int;
              RETURN;
            END IF;
          END IF;
          IF p_per_minute IS NOT NULL THEN
            SELECT coalesce(max(executions), 0) INTO n FROM rate_windows WHERE account_id = p_account AND window_start = p_window;
            IF n >= p_per_minute THEN
              RETURN QUERY SELECT 'EXECUTION_RATE_EXCEEDED'::text, n, NULL::int;
              RETURN;
            END IF;
          END IF;
          SELECT coalesce(max(executions), 0) INTO n FROM usage_months WHERE account_id = p_account AND month = p_month;
          IF p_monthly IS NOT NULL AND n >= p_monthly THEN
            RETURN QUERY SELECT 'QUOTA_EXCEEDED'::text, n, NULL::int;
            RETURN;
          END IF;
          INSERT INTO usage_months (account_id, month, executions) VALUES (p_account, p_month, 1)
            ON CONFLICT (account_id, month) DO UPDATE SET executions = usage_months.executions + 1;
          DELETE FROM rate_windows WHERE account_id = p_account AND window_start < p_window - interval '1 minute';
          INSERT INTO rate_windows (account_id, window_start, executions) VALUES (p_account, p_window, 1)
            ON CONFLICT (account_id, window_start) DO UPDATE SET executions = rate_windows.executions + 1;
          INSERT INTO active_executions (id, account_id, started_at, expires_at, instance_id, deadline_at, run)
            VALUES (p_ticket, p_account, p_now, now() + (p_expires_at - p_now), p_instance, now() + (p_deadline - p_now), p_run);
          RETURN QUERY SELECT NULL::text, n + 1, NULL::int;
        END $$`,
    ],
  },
  {
    version: 13,
    name: 'the submitted code of an execute is kept in its history',
    statements: [
      // The first MAX_RECORDED_CODE characters of an execute's code, redacted like its output; null for tool-mode runs.
      `ALTER TABLE executions ADD COLUMN code TEXT`,
    ],
  },
  {
    version: 14,
    name: 'a cancel that arrives before its call is admitted is kept for the admission',
    statements: [
      // A notifications/cancelled may reach node B before node A's admission of the call commits:
      // it then marks no slot. Both sides take the account's row lock (as mcpworks_admit does), so
      // either the cancel sees the slot, or the admission sees this row. Rows live a minute.
      `CREATE TABLE call_cancels (
        account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        cancel_key TEXT NOT NULL,
        requested_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        PRIMARY KEY (account_id, cancel_key))`,
      `CREATE FUNCTION mcpworks_cancel(p_account TEXT, p_key TEXT, p_now TIMESTAMPTZ)
        RETURNS TABLE (marked_id TEXT) LANGUAGE plpgsql VOLATILE AS $$
        DECLARE
          v_id TEXT;
          marked BOOLEAN := false;
        BEGIN
          PERFORM 1 FROM accounts WHERE accounts.id = p_account FOR UPDATE;
          FOR v_id IN UPDATE active_executions a SET cancel_requested_at = p_now
              WHERE a.account_id = p_account AND a.run->>'cancel_key' = p_key AND a.cancel_requested_at IS NULL
              RETURNING a.id LOOP
            PERFORM pg_notify('mcpworks_cancel', v_id);
            marked := true;
            marked_id := v_id;
            RETURN NEXT;
          END LOOP;
          IF NOT marked THEN
            DELETE FROM call_cancels c WHERE c.account_id = p_account AND c.requested_at < now() - interval '1 minute';
            -- Bounded per account: a flood of cancels for calls that never come keeps no more.
            IF (SELECT count(*) FROM call_cancels c WHERE c.account_id = p_account) < 1000 THEN
              INSERT INTO call_cancels (account_id, cancel_key) VALUES (p_account, p_key)
                ON CONFLICT (account_id, cancel_key) DO UPDATE SET requested_at = now();
            END IF;
          END IF;
        END $$`,
      // mcpworks_admit, then (still under the account's lock) a cancel kept for this call is taken.
      `CREATE FUNCTION mcpworks_admit_call(
          p_ticket TEXT, p_account TEXT, p_now TIMESTAMPTZ, p_month TEXT, p_window TIMESTAMPTZ,
          p_monthly INTEGER, p_per_minute INTEGER, p_concurrency INTEGER, p_expires_at TIMESTAMPTZ,
          p_instance TEXT, p_deadline TIMESTAMPTZ, p_run JSONB)
        RETURNS TABLE (rejected TEXT, used INTEGER, retry_after INTEGER, cancelled BOOLEAN) LANGUAGE plpgsql VOLATILE AS $$
        DECLARE
          r RECORD;
          taken INTEGER := 0;
        BEGIN
          SELECT * INTO r FROM mcpworks_admit(p_ticket, p_account, p_now, p_month, p_window, p_monthly, p_per_minute,
            p_concurrency, p_expires_at, p_instance, p_deadline, p_run);
          IF r.rejected IS NULL AND p_run->>'cancel_key' IS NOT NULL THEN
            DELETE FROM call_cancels c WHERE c.account_id = p_account AND c.cancel_key = p_run->>'cancel_key'
              AND c.requested_at >= now() - interval '1 minute';
            GET DIAGNOSTICS taken = ROW_COUNT;
            IF taken > 0 THEN
              UPDATE active_executions SET cancel_requested_at = p_now WHERE active_executions.id = p_ticket;
            END IF;
          END IF;
          RETURN QUERY SELECT r.rejected, r.used, r.retry_after, taken > 0;
        END $$`,
    ],
  },
  {
    version: 15,
    name: 'MCP sessions in use',
    statements: [
      // One row per node that holds the session in use (an open GET stream, a request still being
      // answered), its `until` on the database's clock, renewed while the hold lasts; a node ends
      // only its own row. A key at its session cap ends its least recently used session only among
      // those no node holds (src/api/session-activity.ts).
      `CREATE TABLE mcp_session_holds (
        session_id TEXT NOT NULL REFERENCES mcp_sessions(id) ON DELETE CASCADE,
        node_id TEXT NOT NULL,
        until TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (session_id, node_id)
      )`,
      `CREATE INDEX mcp_session_holds_node ON mcp_session_holds(node_id)`,
    ],
  },
  {
    version: 16,
    name: 'what started each execution (trigger), and runs by an agent',
    statements: [
      // mcp-tools, mcp-code, schedule, webhook or chat (core/principal.ts TRIGGERS); rows before
      // this migration were all MCP calls, told apart by their mode.
      `ALTER TABLE executions ADD COLUMN trigger TEXT`,
      `UPDATE executions SET trigger = CASE WHEN mode = 'code' THEN 'mcp-code' ELSE 'mcp-tools' END`,
      `ALTER TABLE executions ALTER COLUMN trigger SET NOT NULL`,
      // An agent's run has no API key (key_id is nullable already): the agent is recorded instead.
      `ALTER TABLE executions ADD COLUMN agent_id TEXT`,
      // As in migration 12, and the interrupted record also names the trigger and agent its
      // admission kept in the slot's run (a slot admitted by an older node: told by its mode).
      `CREATE OR REPLACE FUNCTION mcpworks_release_stale(p_account TEXT, p_now TIMESTAMPTZ, p_dead TEXT[], p_self TEXT)
        RETURNS INTEGER LANGUAGE plpgsql VOLATILE AS $$
        DECLARE
          slot RECORD;
          n INTEGER := 0;
        BEGIN
          FOR slot IN DELETE FROM active_executions a
              WHERE (p_account IS NULL OR a.account_id = p_account)
                AND (p_dead IS NULL OR a.expires_at < now()
                  OR a.instance_id = ANY (p_dead)
                  OR (a.instance_id IS NOT NULL AND a.instance_id IS DISTINCT FROM p_self AND NOT EXISTS (
                    SELECT 1 FROM server_instances i WHERE i.id = a.instance_id AND i.lease_until >= now())))
              RETURNING a.id, a.account_id, a.started_at, a.run LOOP
            n := n + 1;
            IF NOT EXISTS (SELECT 1 FROM executions WHERE id = slot.id) THEN
              UPDATE usage_months SET executions = greatest(executions - 1, 0)
                WHERE account_id = slot.account_id AND month = to_char(slot.started_at AT TIME ZONE 'UTC', 'YYYY-MM');
              IF slot.run IS NOT NULL AND EXISTS (SELECT 1 FROM namespaces WHERE id = slot.run->>'namespace_id') THEN
                INSERT INTO executions (id, account_id, namespace_id, key_id, agent_id, mode, trigger, service_name, function_name, function_id,
                    version, functions, language, status, error_type, error_message, duration_ms, bytes_out, created_at)
                  VALUES (slot.id, slot.account_id, slot.run->>'namespace_id', slot.run->>'key_id', slot.run->>'agent_id', slot.run->>'mode',
                    coalesce(slot.run->>'trigger', CASE WHEN slot.run->>'mode' = 'code' THEN 'mcp-code' ELSE 'mcp-tools' END),
                    slot.run->>'service_name', slot.run->>'function_name', slot.run->>'function_id',
                    (slot.run->>'version')::int, coalesce(slot.run->'functions', '[]'::jsonb), slot.run->>'language',
                    'interrupted', 'interrupted', 'the server stopped before the run finished; it was not counted',
                    greatest(0, floor(extract(epoch FROM (p_now - slot.started_at)) * 1000))::int, 0, p_now)
                  ON CONFLICT (id) DO NOTHING;
              END IF;
            END IF;
          END LOOP;
          RETURN n;
        END $$`,
    ],
  },
  {
    version: 17,
    name: 'agents and their encrypted state',
    statements: [
      // An agent lives in the namespace of the create endpoint it was made on; its name is unique there.
      // desired_replicas: what scale_agent sets (each takes a tier slot); state_bytes: the sum of its
      // state's sizes, kept beside the rows under the agent's row lock (the per-agent cap reads it).
      `CREATE TABLE agents (
        id TEXT PRIMARY KEY,
        namespace_id TEXT NOT NULL REFERENCES namespaces(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL DEFAULT 'stopped',
        desired_replicas INTEGER NOT NULL DEFAULT 1 CHECK (desired_replicas >= 0),
        config JSONB NOT NULL DEFAULT '{}',
        state_bytes BIGINT NOT NULL DEFAULT 0,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
      )`,
      `CREATE UNIQUE INDEX agents_name ON agents(namespace_id, name)`,
      // value: AES-256-GCM ciphertext of the value's JSON text (never the text itself); size_bytes: that text's length.
      `CREATE TABLE agent_state (
        agent_id TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        version INTEGER NOT NULL,
        size_bytes INTEGER NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        PRIMARY KEY (agent_id, key)
      )`,
    ],
  },
  {
    version: 18,
    name: 'agent replicas and agent runs',
    statements: [
      // A replica keeps its verb-animal name for life; seq orders them for LIFO scale-down. node_id and
      // lease_expires_at: the serve process holding it (null: unplaced), so two nodes never run one replica.
      `CREATE TABLE agent_replicas (
        id TEXT PRIMARY KEY,
        agent_id TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        seq BIGINT NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending',
        node_id TEXT,
        lease_expires_at TIMESTAMPTZ,
        started_at TIMESTAMPTZ,
        restarts INTEGER NOT NULL DEFAULT 0,
        last_exit TEXT,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        UNIQUE (agent_id, name),
        UNIQUE (agent_id, seq)
      )`,
      // One row per trigger run (schedule fire, webhook delivery, chat turn, heartbeat): what started it,
      // which replica ran it, the function executions it made (calls) and how it ended.
      `CREATE TABLE agent_runs (
        id TEXT PRIMARY KEY,
        agent_id TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
        account_id TEXT NOT NULL,
        replica TEXT,
        node_id TEXT,
        trigger TEXT NOT NULL,
        trigger_name TEXT,
        trigger_ref TEXT,
        orchestration_mode TEXT NOT NULL DEFAULT 'direct',
        function_name TEXT,
        calls JSONB NOT NULL DEFAULT '[]',
        status TEXT NOT NULL,
        error_type TEXT,
        error_message TEXT,
        started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        finished_at TIMESTAMPTZ,
        duration_ms INTEGER
      )`,
      `CREATE INDEX agent_runs_agent_started ON agent_runs(agent_id, started_at DESC, id DESC)`,
      `CREATE INDEX agent_runs_started ON agent_runs(started_at)`,
      // The orphan sweep looks only at running rows.
      `CREATE INDEX agent_runs_running ON agent_runs(node_id) WHERE status = 'running'`,
    ],
  },
  {
    version: 19,
    name: 'agent schedules and their fires',
    statements: [
      // config: mode, failure_policy, overlap, catch_up, orchestration_mode (core/schedule-plan.ts).
      // last_planned_tick: planning starts after it when no fire row of the schedule (and replica)
      // is newer: set when the schedule is made, and moved to now while its agent is stopped, so
      // ticks of a stopped agent are neither run nor counted as missed. failure_streak and
      // last_failed_tick change in the transaction that records a fire's end.
      `CREATE TABLE agent_schedules (
        id TEXT PRIMARY KEY,
        agent_id TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
        label TEXT,
        function_name TEXT NOT NULL,
        cron_expression TEXT NOT NULL,
        timezone TEXT NOT NULL,
        config JSONB NOT NULL,
        enabled BOOLEAN NOT NULL DEFAULT true,
        disabled_reason TEXT,
        next_fire_at TIMESTAMPTZ,
        failure_streak INTEGER NOT NULL DEFAULT 0,
        last_failed_tick TIMESTAMPTZ,
        last_planned_tick TIMESTAMPTZ NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now()
      )`,
      `CREATE INDEX agent_schedules_agent ON agent_schedules(agent_id)`,
      `CREATE UNIQUE INDEX agent_schedules_label ON agent_schedules(agent_id, label) WHERE label IS NOT NULL`,
      // One row per (schedule, tick, replica) ('' for a single-mode schedule): the node whose
      // INSERT ... ON CONFLICT DO NOTHING made it runs the fire, so every tick runs once however
      // many nodes plan it. status: fired (running) | succeeded | failed | skipped (with reason).
      // run_replica: the replica a single-mode fire ran on; node: the server instance running it.
      `CREATE TABLE agent_schedule_fires (
        id TEXT PRIMARY KEY,
        schedule_id TEXT NOT NULL REFERENCES agent_schedules(id) ON DELETE CASCADE,
        scheduled_for TIMESTAMPTZ NOT NULL,
        replica TEXT NOT NULL,
        run_replica TEXT,
        status TEXT NOT NULL,
        reason TEXT,
        run_id TEXT,
        node TEXT,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        finished_at TIMESTAMPTZ,
        UNIQUE (schedule_id, replica, scheduled_for)
      )`,
      `CREATE INDEX agent_schedule_fires_running ON agent_schedule_fires(schedule_id) WHERE status = 'fired'`,
      `CREATE INDEX agent_schedule_fires_recent ON agent_schedule_fires(schedule_id, scheduled_for)`,
      // Fire records are kept 30 days (agents/triggers/schedule.ts FIRE_RETENTION_DAYS).
      `CREATE INDEX agent_schedule_fires_scheduled ON agent_schedule_fires(scheduled_for)`,
    ],
  },
  {
    version: 20,
    name: 'agent webhooks: secrets sealed, seen signatures, idempotency keys, per-webhook rate',
    statements: [
      // path: one URL segment (core/webhooks.ts), unique per agent. secret_sealed: the HMAC key sealed
      // with the state cipher (services/state-cipher.ts BoundCipher, bound to the webhook's id); null:
      // anyone with the URL may call it.
      `CREATE TABLE agent_webhooks (
        id TEXT PRIMARY KEY,
        agent_id TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
        path TEXT NOT NULL,
        handler_function TEXT NOT NULL,
        secret_sealed TEXT,
        orchestration_mode TEXT NOT NULL DEFAULT 'direct',
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        UNIQUE (agent_id, path)
      )`,
      // A signature accepted once is refused again until its timestamp leaves the window (expires_at);
      // the row is inserted before the run, so of two nodes given the same delivery one runs it.
      `CREATE TABLE agent_webhook_signatures (
        webhook_id TEXT NOT NULL REFERENCES agent_webhooks(id) ON DELETE CASCADE,
        signature TEXT NOT NULL,
        expires_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (webhook_id, signature)
      )`,
      // Idempotency-Key → the first delivery's run for 24 h; its outcome (result sealed) once it ended.
      `CREATE TABLE agent_webhook_deliveries (
        webhook_id TEXT NOT NULL REFERENCES agent_webhooks(id) ON DELETE CASCADE,
        idempotency_key TEXT NOT NULL,
        run_id TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'running',
        outcome_sealed TEXT,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        expires_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (webhook_id, idempotency_key)
      )`,
      // Deliveries in the current minute (database clock), shared by every node on the database.
      `CREATE TABLE agent_webhook_rates (
        webhook_id TEXT PRIMARY KEY REFERENCES agent_webhooks(id) ON DELETE CASCADE,
        window_start TIMESTAMPTZ NOT NULL,
        count INTEGER NOT NULL
      )`,
    ],
  },
  {
    version: 21,
    name: 'seen webhook signatures looked up by signature alone',
    statements: [
      // A signature is accepted once across all webhooks (a clone shares its source's secret): the
      // replay check finds it by the signature alone.
      `CREATE INDEX agent_webhook_signatures_signature ON agent_webhook_signatures(signature)`,
    ],
  },
  {
    version: 22,
    name: "agent runs: the AI loop's record",
    statements: [
      // Model turns, tokens (input, output) counted from every answer, why the run stopped (answered,
      // a limit, cancelled, provider_error, fallback_direct), each tool call (name, kind, duration,
      // outcome, execution id), the final answer (scanned, capped) and the chat conversation it served.
      `ALTER TABLE agent_runs ADD COLUMN iterations INTEGER`,
      `ALTER TABLE agent_runs ADD COLUMN input_tokens INTEGER`,
      `ALTER TABLE agent_runs ADD COLUMN output_tokens INTEGER`,
      `ALTER TABLE agent_runs ADD COLUMN stop_reason TEXT`,
      `ALTER TABLE agent_runs ADD COLUMN tool_calls JSONB NOT NULL DEFAULT '[]'`,
      `ALTER TABLE agent_runs ADD COLUMN answer TEXT`,
      `ALTER TABLE agent_runs ADD COLUMN conversation_id TEXT`,
    ],
  },
  {
    version: 23,
    name: 'agent chat: conversations, their messages, and the turn queue that keeps one conversation in order',
    statements: [
      // A conversation belongs to one replica of one agent for life (affinity). summary: the oldest
      // turns folded into a digest (core/agent-chat.ts). next_seq / next_ticket are handed out under
      // the row's lock. Deleted with the agent; idle ones go with the plan's run retention.
      `CREATE TABLE agent_conversations (
        id TEXT PRIMARY KEY,
        agent_id TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
        replica TEXT NOT NULL,
        summary TEXT,
        next_seq BIGINT NOT NULL DEFAULT 0,
        next_ticket BIGINT NOT NULL DEFAULT 0,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
      )`,
      `CREATE INDEX agent_conversations_agent ON agent_conversations(agent_id, replica)`,
      `CREATE INDEX agent_conversations_updated ON agent_conversations(updated_at)`,
      // content: the provider-neutral message (user text, assistant text and tool calls, tool results as the model saw them).
      `CREATE TABLE agent_messages (
        conversation_id TEXT NOT NULL REFERENCES agent_conversations(id) ON DELETE CASCADE,
        seq BIGINT NOT NULL,
        role TEXT NOT NULL,
        content JSONB NOT NULL,
        run_id TEXT,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        PRIMARY KEY (conversation_id, seq)
      )`,
      `CREATE INDEX agent_messages_created ON agent_messages(created_at)`,
      // One row per chat message waiting for or holding its conversation (any node): the lowest live
      // ticket holds it; alive_until is renewed while its node waits or runs (a dead node's lapses).
      `CREATE TABLE agent_chat_turns (
        conversation_id TEXT NOT NULL REFERENCES agent_conversations(id) ON DELETE CASCADE,
        ticket BIGINT NOT NULL,
        run_id TEXT NOT NULL,
        alive_until TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (conversation_id, ticket)
      )`,
    ],
  },
  {
    version: 24,
    name: "agent runs: whether the run's tokens were estimated; chat turns a client's cancel reaches from any node",
    statements: [
      // A provider that omits `usage` in an answer (some OpenAI-compatible servers) has the loop estimate
      // the turn's tokens (a byte per four of what was sent and received): the record says so.
      `ALTER TABLE agent_runs ADD COLUMN usage_estimated BOOLEAN NOT NULL DEFAULT false`,
      // A 2025-era notifications/cancelled names a chat_with_agent call by account, session and request
      // id; the node that gets it marks the turn, and the node answering it reads the mark as it renews.
      `ALTER TABLE agent_chat_turns ADD COLUMN cancel_key TEXT`,
      `ALTER TABLE agent_chat_turns ADD COLUMN cancel_requested BOOLEAN NOT NULL DEFAULT false`,
      `CREATE INDEX agent_chat_turns_cancel_key ON agent_chat_turns(cancel_key) WHERE cancel_key IS NOT NULL`,
    ],
  },
  {
    version: 25,
    name: "executions keep their redacted result (bounded); an account's security events listed in one query",
    statements: [
      // What the caller got back (after the secret scan), cut at 64 KB characters with a marker: the
      // dashboard's execution detail shows it. Never the raw result.
      `ALTER TABLE executions ADD COLUMN result TEXT`,
      // The dashboard lists every namespace's events of an account at once.
      `CREATE INDEX security_events_account ON security_events(account_id, created_at)`,
    ],
  },
  {
    version: 26,
    name: 'OAuth sign-in from MCP clients: registered clients, authorization requests and codes, tokens of a grant',
    statements: [
      // Dynamic client registration (RFC 7591): every client is public (PKCE, no secret to keep).
      `CREATE TABLE oauth_clients (
        client_id TEXT PRIMARY KEY,
        metadata JSONB NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now()
      )`,
      // A grant is an API key row (one auth path for both): scopes, namespace, expiry, revocation, last use.
      `ALTER TABLE api_keys ADD COLUMN oauth_client_id TEXT REFERENCES oauth_clients(client_id) ON DELETE CASCADE`,
      // One row per /authorize request: the consent page decides it, then its code (stored hashed) is redeemed once.
      `CREATE TABLE oauth_authorizations (
        id TEXT PRIMARY KEY,
        client_id TEXT NOT NULL REFERENCES oauth_clients(client_id) ON DELETE CASCADE,
        redirect_uri TEXT NOT NULL,
        code_challenge TEXT NOT NULL,
        state TEXT,
        scopes JSONB NOT NULL,
        resource TEXT,
        expires_at TIMESTAMPTZ NOT NULL,
        account_id TEXT REFERENCES accounts(id) ON DELETE CASCADE,
        namespace TEXT,
        granted_scopes JSONB,
        code_hash TEXT UNIQUE,
        code_expires_at TIMESTAMPTZ,
        used_at TIMESTAMPTZ,
        key_id TEXT REFERENCES api_keys(id) ON DELETE CASCADE,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now()
      )`,
      `CREATE INDEX oauth_authorizations_expires ON oauth_authorizations(expires_at)`,
      // Access and refresh tokens (SHA-256 of 256 random bits); a refresh token is used once (rotation).
      `CREATE TABLE oauth_tokens (
        token_hash TEXT PRIMARY KEY,
        key_id TEXT NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
        kind TEXT NOT NULL,
        expires_at TIMESTAMPTZ NOT NULL,
        used_at TIMESTAMPTZ,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now()
      )`,
      `CREATE INDEX oauth_tokens_key ON oauth_tokens(key_id)`,
    ],
  },
  {
    version: 27,
    name: "agent jobs handed to their replica's home node: a chat turn or webhook run received by another node",
    statements: [
      // One row per job a node received for a replica another node runs (the id is the run's id). The
      // home node claims it (FOR UPDATE SKIP LOCKED), renews alive_until while the run goes, and writes
      // the outcome; the receiving node waits on the row (woken by NOTIFY, polled as a fallback).
      // job and result are sealed under the server secret (a chat's message and history, a webhook's body).
      `CREATE TABLE replica_handoffs (
        id TEXT PRIMARY KEY,
        agent_id TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
        replica TEXT NOT NULL,
        job TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending',
        node_id TEXT,
        alive_until TIMESTAMPTZ,
        cancel_requested BOOLEAN NOT NULL DEFAULT false,
        result TEXT,
        claim_until TIMESTAMPTZ NOT NULL,
        expires_at TIMESTAMPTZ NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now()
      )`,
      `CREATE INDEX replica_handoffs_pending ON replica_handoffs(agent_id, replica) WHERE status = 'pending'`,
      `CREATE INDEX replica_handoffs_expires ON replica_handoffs(expires_at)`,
    ],
  },
  {
    version: 28,
    name: "a node's replica leases found by index",
    statements: [
      // Every node reads and renews the rows it holds each supervisor round and each schedule pass
      // (schedules are planned from the lease rows): by node, not by a scan of every agent's replicas.
      `CREATE INDEX agent_replicas_node ON agent_replicas(node_id) WHERE node_id IS NOT NULL`,
    ],
  },
  {
    version: 29,
    name: "a call's month and minute window on the database's clock",
    statements: [
      // As in migration 12, and the month and the minute window a call counts in are the
      // database's (now()), no longer the admitting node's p_now: two calls at one instant count
      // in one month and one window whatever the nodes' clocks say. The slot's started_at is the
      // database's too, so a refund (settling, a released slot) finds the month the unit was
      // counted in. p_month and p_window stay in the signature, unused, for a node not yet
      // upgraded (its call still matches); p_now still dates what the node records.
      `CREATE OR REPLACE FUNCTION mcpworks_admit(
          p_ticket TEXT, p_account TEXT, p_now TIMESTAMPTZ, p_month TEXT, p_window TIMESTAMPTZ,
          p_monthly INTEGER, p_per_minute INTEGER, p_concurrency INTEGER, p_expires_at TIMESTAMPTZ,
          p_instance TEXT, p_deadline TIMESTAMPTZ, p_run JSONB)
        RETURNS TABLE (rejected TEXT, used INTEGER, retry_after INTEGER) LANGUAGE plpgsql VOLATILE AS $$
        DECLARE
          n INTEGER;
          frees TIMESTAMPTZ;
          v_month TEXT := to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM');
          v_window TIMESTAMPTZ := date_trunc('minute', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
        BEGIN
          PERFORM 1 FROM accounts WHERE id = p_account FOR UPDATE;
          PERFORM mcpworks_release_stale(p_account, p_now, ARRAY[]::text[], p_instance);
          IF p_concurrency IS NOT NULL THEN
            -- A slot past its call's deadline (held longer: an install, a queue) frees by its expiry at the latest.
            SELECT count(*)::int, min(CASE WHEN deadline_at > now() THEN least(deadline_at, expires_at) ELSE expires_at END) INTO n, frees
              FROM active_executions WHERE account_id = p_account;
            IF n >= p_concurrency THEN
              RETURN QUERY SELECT 'CONCURRENCY_LIMIT_EXCEEDED'::text, n,
                greatest(1, ceil(extract(epoch FROM (coalesce(frees, now()) - now()))))::int;
              RETURN;
            END IF;
          END IF;
          IF p_per_minute IS NOT NULL THEN
            SELECT coalesce(max(executions), 0) INTO n FROM rate_windows WHERE account_id = p_account AND window_start = v_window;
            IF n >= p_per_minute THEN
              -- Until the database's minute ends.
              RETURN QUERY SELECT 'EXECUTION_RATE_EXCEEDED'::text, n,
                greatest(1, ceil(extract(epoch FROM (v_window + interval '1 minute' - now()))))::int;
              RETURN;
            END IF;
          END IF;
          SELECT coalesce(max(executions), 0) INTO n FROM usage_months WHERE account_id = p_account AND month = v_month;
          IF p_monthly IS NOT NULL AND n >= p_monthly THEN
            RETURN QUERY SELECT 'QUOTA_EXCEEDED'::text, n, NULL::int;
            RETURN;
          END IF;
          INSERT INTO usage_months (account_id, month, executions) VALUES (p_account, v_month, 1)
            ON CONFLICT (account_id, month) DO UPDATE SET executions = usage_months.executions + 1;
          DELETE FROM rate_windows WHERE account_id = p_account AND window_start < v_window - interval '1 minute';
          INSERT INTO rate_windows (account_id, window_start, executions) VALUES (p_account, v_window, 1)
            ON CONFLICT (account_id, window_start) DO UPDATE SET executions = rate_windows.executions + 1;
          INSERT INTO active_executions (id, account_id, started_at, expires_at, instance_id, deadline_at, run)
            VALUES (p_ticket, p_account, now(), now() + (p_expires_at - p_now), p_instance, now() + (p_deadline - p_now), p_run);
          RETURN QUERY SELECT NULL::text, n + 1, NULL::int;
        END $$`,
      // As in migration 16, and an interrupted run's duration is the database's now() less its
      // slot's started_at (both the database's clock now), not a node's clock less the database's.
      `CREATE OR REPLACE FUNCTION mcpworks_release_stale(p_account TEXT, p_now TIMESTAMPTZ, p_dead TEXT[], p_self TEXT)
        RETURNS INTEGER LANGUAGE plpgsql VOLATILE AS $$
        DECLARE
          slot RECORD;
          n INTEGER := 0;
        BEGIN
          FOR slot IN DELETE FROM active_executions a
              WHERE (p_account IS NULL OR a.account_id = p_account)
                AND (p_dead IS NULL OR a.expires_at < now()
                  OR a.instance_id = ANY (p_dead)
                  OR (a.instance_id IS NOT NULL AND a.instance_id IS DISTINCT FROM p_self AND NOT EXISTS (
                    SELECT 1 FROM server_instances i WHERE i.id = a.instance_id AND i.lease_until >= now())))
              RETURNING a.id, a.account_id, a.started_at, a.run LOOP
            n := n + 1;
            IF NOT EXISTS (SELECT 1 FROM executions WHERE id = slot.id) THEN
              UPDATE usage_months SET executions = greatest(executions - 1, 0)
                WHERE account_id = slot.account_id AND month = to_char(slot.started_at AT TIME ZONE 'UTC', 'YYYY-MM');
              IF slot.run IS NOT NULL AND EXISTS (SELECT 1 FROM namespaces WHERE id = slot.run->>'namespace_id') THEN
                INSERT INTO executions (id, account_id, namespace_id, key_id, agent_id, mode, trigger, service_name, function_name, function_id,
                    version, functions, language, status, error_type, error_message, duration_ms, bytes_out, created_at)
                  VALUES (slot.id, slot.account_id, slot.run->>'namespace_id', slot.run->>'key_id', slot.run->>'agent_id', slot.run->>'mode',
                    coalesce(slot.run->>'trigger', CASE WHEN slot.run->>'mode' = 'code' THEN 'mcp-code' ELSE 'mcp-tools' END),
                    slot.run->>'service_name', slot.run->>'function_name', slot.run->>'function_id',
                    (slot.run->>'version')::int, coalesce(slot.run->'functions', '[]'::jsonb), slot.run->>'language',
                    'interrupted', 'interrupted', 'the server stopped before the run finished; it was not counted',
                    greatest(0, floor(extract(epoch FROM (now() - slot.started_at)) * 1000))::int, 0, p_now)
                  ON CONFLICT (id) DO NOTHING;
              END IF;
            END IF;
          END LOOP;
          RETURN n;
        END $$`,
    ],
  },
  {
    version: 30,
    name: "an interrupted run's record dated by the database's clock",
    statements: [
      // As in migration 29, and the record of a call a dead node left is dated by the database's
      // now(), as every other execution record is (its column's default), not by the clock of the
      // node that released it: the dashboard's day buckets and the history's order are the database's.
      // p_now stays in the signature for a node not yet upgraded.
      `CREATE OR REPLACE FUNCTION mcpworks_release_stale(p_account TEXT, p_now TIMESTAMPTZ, p_dead TEXT[], p_self TEXT)
        RETURNS INTEGER LANGUAGE plpgsql VOLATILE AS $$
        DECLARE
          slot RECORD;
          n INTEGER := 0;
        BEGIN
          FOR slot IN DELETE FROM active_executions a
              WHERE (p_account IS NULL OR a.account_id = p_account)
                AND (p_dead IS NULL OR a.expires_at < now()
                  OR a.instance_id = ANY (p_dead)
                  OR (a.instance_id IS NOT NULL AND a.instance_id IS DISTINCT FROM p_self AND NOT EXISTS (
                    SELECT 1 FROM server_instances i WHERE i.id = a.instance_id AND i.lease_until >= now())))
              RETURNING a.id, a.account_id, a.started_at, a.run LOOP
            n := n + 1;
            IF NOT EXISTS (SELECT 1 FROM executions WHERE id = slot.id) THEN
              UPDATE usage_months SET executions = greatest(executions - 1, 0)
                WHERE account_id = slot.account_id AND month = to_char(slot.started_at AT TIME ZONE 'UTC', 'YYYY-MM');
              IF slot.run IS NOT NULL AND EXISTS (SELECT 1 FROM namespaces WHERE id = slot.run->>'namespace_id') THEN
                INSERT INTO executions (id, account_id, namespace_id, key_id, agent_id, mode, trigger, service_name, function_name, function_id,
                    version, functions, language, status, error_type, error_message, duration_ms, bytes_out, created_at)
                  VALUES (slot.id, slot.account_id, slot.run->>'namespace_id', slot.run->>'key_id', slot.run->>'agent_id', slot.run->>'mode',
                    coalesce(slot.run->>'trigger', CASE WHEN slot.run->>'mode' = 'code' THEN 'mcp-code' ELSE 'mcp-tools' END),
                    slot.run->>'service_name', slot.run->>'function_name', slot.run->>'function_id',
                    (slot.run->>'version')::int, coalesce(slot.run->'functions', '[]'::jsonb), slot.run->>'language',
                    'interrupted', 'interrupted', 'the server stopped before the run finished; it was not counted',
                    greatest(0, floor(extract(epoch FROM (now() - slot.started_at)) * 1000))::int, 0, now())
                  ON CONFLICT (id) DO NOTHING;
              END IF;
            END IF;
          END LOOP;
          RETURN n;
        END $$`,
    ],
  },
  {
    version: 31,
    name: 'admission in one function, its statements fewer',
    statements: [
      // mcpworks_admit_call as in migrations 14 and 29, the same rules in fewer statements (each
      // is a pass through the executor, and a metered call runs this once): mcpworks_admit inline
      // rather than called; the account's slots counted in the same scan that tells whether any
      // is stale, so mcpworks_release_stale (migration 30, unchanged) runs only when one is; the
      // minute's and the month's counts read in one statement; the two counters and the slot
      // written in one. mcpworks_admit stays for a node not yet upgraded.
      `CREATE OR REPLACE FUNCTION mcpworks_admit_call(
          p_ticket TEXT, p_account TEXT, p_now TIMESTAMPTZ, p_month TEXT, p_window TIMESTAMPTZ,
          p_monthly INTEGER, p_per_minute INTEGER, p_concurrency INTEGER, p_expires_at TIMESTAMPTZ,
          p_instance TEXT, p_deadline TIMESTAMPTZ, p_run JSONB)
        RETURNS TABLE (rejected TEXT, used INTEGER, retry_after INTEGER, cancelled BOOLEAN) LANGUAGE plpgsql VOLATILE AS $$
        DECLARE
          n INTEGER;
          v_used INTEGER;
          frees TIMESTAMPTZ;
          stale BOOLEAN;
          taken INTEGER := 0;
          v_month TEXT := to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM');
          v_window TIMESTAMPTZ := date_trunc('minute', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
        BEGIN
          PERFORM 1 FROM accounts WHERE id = p_account FOR UPDATE;
          -- The account's slots, and whether any is stale as mcpworks_release_stale judges one for
          -- an admission: expired, or held by another instance whose lease has lapsed (the
          -- database's clock).
          -- Only a gate: mcpworks_release_stale decides what goes (a slot wrongly seen stale costs a
          -- call; one wrongly seen live would stay). The second pass counts what it left.
          FOR pass IN 1..2 LOOP
            SELECT count(*)::int, min(CASE WHEN deadline_at > now() THEN least(deadline_at, expires_at) ELSE expires_at END),
                coalesce(bool_or(a.expires_at < now() OR (a.instance_id IS NOT NULL AND a.instance_id IS DISTINCT FROM p_instance
                  AND NOT EXISTS (SELECT 1 FROM server_instances i WHERE i.lease_until >= now() AND i.id = a.instance_id))), false)
              INTO n, frees, stale FROM active_executions a WHERE a.account_id = p_account;
            EXIT WHEN NOT stale OR pass = 2;
            PERFORM mcpworks_release_stale(p_account, p_now, ARRAY[]::text[], p_instance);
          END LOOP;
          IF p_concurrency IS NOT NULL THEN
            -- A slot past its call's deadline (held longer: an install, a queue) frees by its expiry at the latest.
            IF n >= p_concurrency THEN
              RETURN QUERY SELECT 'CONCURRENCY_LIMIT_EXCEEDED'::text, n,
                greatest(1, ceil(extract(epoch FROM (coalesce(frees, now()) - now()))))::int, false;
              RETURN;
            END IF;
          END IF;
          SELECT coalesce((SELECT w.executions FROM rate_windows w WHERE w.account_id = p_account AND w.window_start = v_window), 0),
              coalesce((SELECT u.executions FROM usage_months u WHERE u.account_id = p_account AND u.month = v_month), 0)
            INTO n, v_used;
          IF p_per_minute IS NOT NULL THEN
            IF n >= p_per_minute THEN
              -- Until the database's minute ends.
              RETURN QUERY SELECT 'EXECUTION_RATE_EXCEEDED'::text, n,
                greatest(1, ceil(extract(epoch FROM (v_window + interval '1 minute' - now()))))::int, false;
              RETURN;
            END IF;
          END IF;
          n := v_used;
          IF p_monthly IS NOT NULL AND n >= p_monthly THEN
            RETURN QUERY SELECT 'QUOTA_EXCEEDED'::text, n, NULL::int, false;
            RETURN;
          END IF;
          WITH month_unit AS (
              INSERT INTO usage_months (account_id, month, executions) VALUES (p_account, v_month, 1)
                ON CONFLICT (account_id, month) DO UPDATE SET executions = usage_months.executions + 1),
            minute_unit AS (
              INSERT INTO rate_windows (account_id, window_start, executions) VALUES (p_account, v_window, 1)
                ON CONFLICT (account_id, window_start) DO UPDATE SET executions = rate_windows.executions + 1),
            past_windows AS (
              DELETE FROM rate_windows WHERE account_id = p_account AND window_start < v_window - interval '1 minute')
          INSERT INTO active_executions (id, account_id, started_at, expires_at, instance_id, deadline_at, run)
            VALUES (p_ticket, p_account, now(), now() + (p_expires_at - p_now), p_instance, now() + (p_deadline - p_now), p_run);
          -- Still under the account's lock: a cancel kept for this call (migration 14) is taken.
          IF p_run->>'cancel_key' IS NOT NULL THEN
            DELETE FROM call_cancels c WHERE c.account_id = p_account AND c.cancel_key = p_run->>'cancel_key'
              AND c.requested_at >= now() - interval '1 minute';
            GET DIAGNOSTICS taken = ROW_COUNT;
            IF taken > 0 THEN
              UPDATE active_executions SET cancel_requested_at = p_now WHERE active_executions.id = p_ticket;
            END IF;
          END IF;
          RETURN QUERY SELECT NULL::text, n + 1, NULL::int, taken > 0;
        END $$`,
    ],
  },
  {
    version: 36,
    name: "a seen webhook signature names its delivery's run",
    statements: [
      // So that the signature of a delivery that never ran is let go by its run, never by its text: a
      // retry of it taken meanwhile (on any node) keeps the row it made. Rows of nodes not yet
      // upgraded have none and are let go only by expiry (their sender re-signs after a 409).
      `ALTER TABLE agent_webhook_signatures ADD COLUMN run_id TEXT`,
    ],
  },
  {
    version: 37,
    name: "a keyed delivery's let-go signature is kept for its key",
    statements: [
      // A keyed delivery's signature let go is kept, `released` to a delivery with its key only (the
      // sender's retry), not to a copy sent without it. Found by run when let go.
      `ALTER TABLE agent_webhook_signatures ADD COLUMN idempotency_key TEXT, ADD COLUMN released BOOLEAN NOT NULL DEFAULT false`,
      `CREATE INDEX agent_webhook_signatures_run ON agent_webhook_signatures(webhook_id, run_id)`,
    ],
  },
  {
    version: 38,
    name: 'admission in fewer statements; a cached key checked by its admission',
    statements: [
      // mcpworks_admit_call as in migration 31, the same rules and the same row lock, in fewer
      // passes through the executor (issue 18: server CPU per metered call): the minute's and the
      // month's counts read in the scan of the account's slots; the windows before the last one
      // deleted only by the first admission of a minute (until then none can have appeared); the
      // answer assigned rather than queried.
      `CREATE OR REPLACE FUNCTION mcpworks_admit_call(
          p_ticket TEXT, p_account TEXT, p_now TIMESTAMPTZ, p_month TEXT, p_window TIMESTAMPTZ,
          p_monthly INTEGER, p_per_minute INTEGER, p_concurrency INTEGER, p_expires_at TIMESTAMPTZ,
          p_instance TEXT, p_deadline TIMESTAMPTZ, p_run JSONB)
        RETURNS TABLE (rejected TEXT, used INTEGER, retry_after INTEGER, cancelled BOOLEAN) LANGUAGE plpgsql VOLATILE AS $$
        DECLARE
          n INTEGER;
          v_minute INTEGER;
          v_used INTEGER;
          frees TIMESTAMPTZ;
          stale BOOLEAN;
          taken INTEGER := 0;
          v_month TEXT := to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM');
          v_window TIMESTAMPTZ := date_trunc('minute', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
        BEGIN
          -- First and alone: the reads below take their snapshot after the lock is held.
          PERFORM 1 FROM accounts WHERE id = p_account FOR UPDATE;
          -- As in migration 31: the account's slots, whether any is stale (only a gate:
          -- mcpworks_release_stale decides what goes), and, in the same statement, the counts.
          FOR pass IN 1..2 LOOP
            SELECT count(*)::int, min(CASE WHEN deadline_at > now() THEN least(deadline_at, expires_at) ELSE expires_at END),
                coalesce(bool_or(a.expires_at < now() OR (a.instance_id IS NOT NULL AND a.instance_id IS DISTINCT FROM p_instance
                  AND NOT EXISTS (SELECT 1 FROM server_instances i WHERE i.lease_until >= now() AND i.id = a.instance_id))), false),
                coalesce((SELECT w.executions FROM rate_windows w WHERE w.account_id = p_account AND w.window_start = v_window), 0),
                coalesce((SELECT u.executions FROM usage_months u WHERE u.account_id = p_account AND u.month = v_month), 0)
              INTO n, frees, stale, v_minute, v_used FROM active_executions a WHERE a.account_id = p_account;
            EXIT WHEN NOT stale OR pass = 2;
            PERFORM mcpworks_release_stale(p_account, p_now, ARRAY[]::text[], p_instance);
          END LOOP;
          IF p_concurrency IS NOT NULL AND n >= p_concurrency THEN
            -- A slot past its call's deadline (held longer: an install, a queue) frees by its expiry at the latest.
            RETURN QUERY SELECT 'CONCURRENCY_LIMIT_EXCEEDED'::text, n,
              greatest(1, ceil(extract(epoch FROM (coalesce(frees, now()) - now()))))::int, false;
            RETURN;
          END IF;
          IF p_per_minute IS NOT NULL AND v_minute >= p_per_minute THEN
            -- Until the database's minute ends.
            RETURN QUERY SELECT 'EXECUTION_RATE_EXCEEDED'::text, v_minute,
              greatest(1, ceil(extract(epoch FROM (v_window + interval '1 minute' - now()))))::int, false;
            RETURN;
          END IF;
          IF p_monthly IS NOT NULL AND v_used >= p_monthly THEN
            RETURN QUERY SELECT 'QUOTA_EXCEEDED'::text, v_used, NULL::int, false;
            RETURN;
          END IF;
          IF v_minute = 0 THEN
            -- The minute's first unit here (takeRateUnit's units count too): older windows go.
            DELETE FROM rate_windows WHERE account_id = p_account AND window_start < v_window - interval '1 minute';
          END IF;
          WITH month_unit AS (
              INSERT INTO usage_months (account_id, month, executions) VALUES (p_account, v_month, 1)
                ON CONFLICT (account_id, month) DO UPDATE SET executions = usage_months.executions + 1),
            minute_unit AS (
              INSERT INTO rate_windows (account_id, window_start, executions) VALUES (p_account, v_window, 1)
                ON CONFLICT (account_id, window_start) DO UPDATE SET executions = rate_windows.executions + 1)
          INSERT INTO active_executions (id, account_id, started_at, expires_at, instance_id, deadline_at, run)
            VALUES (p_ticket, p_account, now(), now() + (p_expires_at - p_now), p_instance, now() + (p_deadline - p_now), p_run);
          -- Still under the account's lock: a cancel kept for this call (migration 14) is taken.
          IF p_run->>'cancel_key' IS NOT NULL THEN
            DELETE FROM call_cancels c WHERE c.account_id = p_account AND c.cancel_key = p_run->>'cancel_key'
              AND c.requested_at >= now() - interval '1 minute';
            GET DIAGNOSTICS taken = ROW_COUNT;
            IF taken > 0 THEN
              UPDATE active_executions SET cancel_requested_at = p_now WHERE active_executions.id = p_ticket;
            END IF;
          END IF;
          rejected := NULL;
          used := v_used + 1;
          retry_after := NULL;
          cancelled := taken > 0;
          RETURN NEXT;
        END $$`,
      // The admission of a call whose key was taken from a node's cache of verified keys (no
      // lookup of its own, see AccountService.cachedRunKey): the key is checked here, in the same
      // round trip, as its lookup would have checked it (not revoked, not expired, its account's
      // plan the one whose limits are passed), and the namespace the call's functions were read
      // from is still at that catalog version. Otherwise KEY_CHANGED, nothing taken: the node
      // looks the key up and starts again. A key's scopes and namespace limit never change.
      `CREATE FUNCTION mcpworks_admit_key_call(
          p_key TEXT, p_tier TEXT, p_namespace TEXT, p_catalog_version INTEGER,
          p_ticket TEXT, p_account TEXT, p_now TIMESTAMPTZ,
          p_monthly INTEGER, p_per_minute INTEGER, p_concurrency INTEGER, p_expires_at TIMESTAMPTZ,
          p_instance TEXT, p_deadline TIMESTAMPTZ, p_run JSONB)
        RETURNS TABLE (rejected TEXT, used INTEGER, retry_after INTEGER, cancelled BOOLEAN) LANGUAGE plpgsql VOLATILE AS $$
        BEGIN
          IF NOT EXISTS (SELECT 1 FROM api_keys k JOIN accounts a ON a.id = k.account_id
              WHERE k.id = p_key AND k.revoked_at IS NULL
                AND (k.expires_at IS NULL OR k.expires_at > now()) AND a.tier = p_tier)
            OR NOT EXISTS (SELECT 1 FROM namespaces n
              WHERE n.id = p_namespace AND n.catalog_version = p_catalog_version) THEN
            RETURN QUERY SELECT 'KEY_CHANGED'::text, 0, NULL::int, false;
            RETURN;
          END IF;
          RETURN QUERY SELECT * FROM mcpworks_admit_call(p_ticket, p_account, p_now, NULL::text, NULL::timestamptz,
            p_monthly, p_per_minute, p_concurrency, p_expires_at, p_instance, p_deadline, p_run);
        END $$`,
    ],
  },
  {
    version: 39,
    name: "a key's revocation or new expiry notifies every node",
    statements: [
      // Every node drops the key from its cache of verified keys (AccountService.forgetKey) at
      // once, not after a minute. The payload is the key's id only: any database session may
      // LISTEN, so never its secret or hash. The admission (migration 38) stays the guard: a
      // notification is delivered after commit and may be missed (its listener resyncs then).
      `CREATE FUNCTION mcpworks_notify_api_key() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF TG_OP = 'DELETE' THEN
            PERFORM pg_notify('mcpworks_api_keys', OLD.id::text);
          ELSIF NEW.revoked_at IS DISTINCT FROM OLD.revoked_at OR NEW.expires_at IS DISTINCT FROM OLD.expires_at THEN
            PERFORM pg_notify('mcpworks_api_keys', NEW.id::text);
          END IF;
          RETURN NULL;
        END $$`,
      `CREATE TRIGGER api_keys_notify AFTER UPDATE OF revoked_at, expires_at OR DELETE ON api_keys
        FOR EACH ROW EXECUTE FUNCTION mcpworks_notify_api_key()`,
    ],
  },
  {
    version: 40,
    name: "a cached key's admission checks its 2025-era session too",
    statements: [
      // A 2025-era call (Mcp-Session-Id) whose key and session this node verified lately skips
      // their lookup, as a sessionless call does since migration 38: its admission checks the
      // session is still live and this account's, for this endpoint and namespace (`p_live_*`:
      // the oldest creation and last use a live session may have, as AccountsStore.findMcpSession
      // reads them), beside the key and the catalog version. Otherwise KEY_CHANGED, nothing taken:
      // the request is looked up again, and a session gone meanwhile answers 404.
      `CREATE FUNCTION mcpworks_admit_session_call(
          p_key TEXT, p_tier TEXT, p_namespace TEXT, p_catalog_version INTEGER,
          p_session TEXT, p_endpoint TEXT, p_namespace_name TEXT, p_live_created TIMESTAMPTZ, p_live_seen TIMESTAMPTZ,
          p_ticket TEXT, p_account TEXT, p_now TIMESTAMPTZ,
          p_monthly INTEGER, p_per_minute INTEGER, p_concurrency INTEGER, p_expires_at TIMESTAMPTZ,
          p_instance TEXT, p_deadline TIMESTAMPTZ, p_run JSONB)
        RETURNS TABLE (rejected TEXT, used INTEGER, retry_after INTEGER, cancelled BOOLEAN) LANGUAGE plpgsql VOLATILE AS $$
        BEGIN
          IF NOT EXISTS (SELECT 1 FROM mcp_sessions s
              WHERE s.id = p_session AND s.account_id = p_account AND s.endpoint = p_endpoint
                AND s.namespace = p_namespace_name AND s.created_at >= p_live_created AND s.last_seen_at >= p_live_seen) THEN
            RETURN QUERY SELECT 'KEY_CHANGED'::text, 0, NULL::int, false;
            RETURN;
          END IF;
          RETURN QUERY SELECT * FROM mcpworks_admit_key_call(p_key, p_tier, p_namespace, p_catalog_version,
            p_ticket, p_account, p_now, p_monthly, p_per_minute, p_concurrency, p_expires_at, p_instance, p_deadline, p_run);
        END $$`,
    ],
  },
  {
    version: 41,
    name: "a start-up release takes each account's row first, as an admission does",
    statements: [
      // Which slot mcpworks_release_stale releases, as in migration 30, in one place: its sweep of
      // every account picks the accounts to lock by it, and deletes by it.
      `CREATE FUNCTION mcpworks_slot_stale(a active_executions, p_dead TEXT[], p_self TEXT)
        RETURNS BOOLEAN LANGUAGE sql STABLE AS $$
          SELECT p_dead IS NULL OR a.expires_at < now()
            OR a.instance_id = ANY (p_dead)
            OR (a.instance_id IS NOT NULL AND a.instance_id IS DISTINCT FROM p_self AND NOT EXISTS (
              SELECT 1 FROM server_instances i WHERE i.id = a.instance_id AND i.lease_until >= now()))
        $$`,
      // As in migration 30, and a release for every account (a node's start, p_account NULL) takes
      // the row lock of each account with a stale slot (in id order) before touching its slots and
      // counts, the order an admission (which holds its account's row from its first statement)
      // takes them in. Without it, the release held the account's month count and then waited for
      // the account's row (its interrupted record's foreign key) that an admission held while
      // waiting for that count: a deadlock, one of the two aborted (a call answered 500, seen in
      // the cluster test when a killed node restarted beside calls of its account). An account
      // whose slot goes stale after the lock is left for its next admission or the next start.
      `CREATE OR REPLACE FUNCTION mcpworks_release_stale(p_account TEXT, p_now TIMESTAMPTZ, p_dead TEXT[], p_self TEXT)
        RETURNS INTEGER LANGUAGE plpgsql VOLATILE AS $$
        DECLARE
          slot RECORD;
          account TEXT;
          n INTEGER := 0;
        BEGIN
          IF p_account IS NULL THEN
            FOR account IN SELECT DISTINCT a.account_id FROM active_executions a
                WHERE mcpworks_slot_stale(a, p_dead, p_self) ORDER BY a.account_id LOOP
              PERFORM 1 FROM accounts WHERE id = account FOR UPDATE;
              n := n + mcpworks_release_stale(account, p_now, p_dead, p_self);
            END LOOP;
            RETURN n;
          END IF;
          FOR slot IN DELETE FROM active_executions a
              WHERE a.account_id = p_account AND mcpworks_slot_stale(a, p_dead, p_self)
              RETURNING a.id, a.account_id, a.started_at, a.run LOOP
            n := n + 1;
            IF NOT EXISTS (SELECT 1 FROM executions WHERE id = slot.id) THEN
              UPDATE usage_months SET executions = greatest(executions - 1, 0)
                WHERE account_id = slot.account_id AND month = to_char(slot.started_at AT TIME ZONE 'UTC', 'YYYY-MM');
              IF slot.run IS NOT NULL AND EXISTS (SELECT 1 FROM namespaces WHERE id = slot.run->>'namespace_id') THEN
                INSERT INTO executions (id, account_id, namespace_id, key_id, agent_id, mode, trigger, service_name, function_name, function_id,
                    version, functions, language, status, error_type, error_message, duration_ms, bytes_out, created_at)
                  VALUES (slot.id, slot.account_id, slot.run->>'namespace_id', slot.run->>'key_id', slot.run->>'agent_id', slot.run->>'mode',
                    coalesce(slot.run->>'trigger', CASE WHEN slot.run->>'mode' = 'code' THEN 'mcp-code' ELSE 'mcp-tools' END),
                    slot.run->>'service_name', slot.run->>'function_name', slot.run->>'function_id',
                    (slot.run->>'version')::int, coalesce(slot.run->'functions', '[]'::jsonb), slot.run->>'language',
                    'interrupted', 'interrupted', 'the server stopped before the run finished; it was not counted',
                    greatest(0, floor(extract(epoch FROM (now() - slot.started_at)) * 1000))::int, 0, now())
                  ON CONFLICT (id) DO NOTHING;
              END IF;
            END IF;
          END LOOP;
          RETURN n;
        END $$`,
    ],
  },
];
