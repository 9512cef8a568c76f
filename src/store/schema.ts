import type { ColumnType, Selectable } from 'kysely';

type Timestamp = ColumnType<Date, Date | string | undefined, Date | string>;
type Json<T> = ColumnType<T, string, string>;

export interface AccountsTable {
  id: string;
  email: string;
  password_hash: string;
  tier: string;
  trial_ends_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  created_at: Timestamp;
}

export interface ApiKeysTable {
  id: string;
  account_id: string;
  name: string;
  prefix: string;
  key_hash: string;
  namespace: string | null;
  scopes: Json<string[]>;
  expires_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  revoked_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  last_used_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  created_at: Timestamp;
  /** Set on a grant of an OAuth client (its tokens are in oauth_tokens); null on a key. */
  oauth_client_id: ColumnType<string | null, string | null | undefined, string | null>;
}

export interface OAuthClientsTable {
  client_id: string;
  metadata: Json<Record<string, unknown>>;
  created_at: Timestamp;
}

type NullableTime = ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;

export interface OAuthAuthorizationsTable {
  id: string;
  client_id: string;
  redirect_uri: string;
  code_challenge: string;
  state: string | null;
  scopes: Json<string[]>;
  resource: string | null;
  expires_at: ColumnType<Date, Date | string, Date | string>;
  account_id: string | null;
  namespace: string | null;
  granted_scopes: ColumnType<string[] | null, string | null | undefined, string | null>;
  code_hash: string | null;
  code_expires_at: NullableTime;
  used_at: NullableTime;
  key_id: string | null;
  created_at: Timestamp;
}

export interface OAuthTokensTable {
  token_hash: string;
  key_id: string;
  kind: 'access' | 'refresh';
  expires_at: ColumnType<Date, Date | string, Date | string>;
  used_at: NullableTime;
  created_at: Timestamp;
}

export interface WebSessionsTable {
  token_hash: string;
  account_id: string;
  expires_at: Timestamp;
  created_at: Timestamp;
}

export interface McpSessionsTable {
  id: string;
  account_id: string;
  key_id: string;
  endpoint: string;
  namespace: string;
  created_at: Timestamp;
  last_seen_at: Timestamp;
  /** The 2025-era protocol version negotiated at initialize (null: a session from before migration 11). */
  protocol_version: string | null;
}

/** A node's hold on a session in use (migration 15): `until` past, the hold has lapsed. */
export interface McpSessionHoldsTable {
  session_id: string;
  node_id: string;
  until: Timestamp;
}

export interface NamespacesTable {
  id: string;
  account_id: string;
  name: string;
  description: string;
  catalog_version: ColumnType<number, number | undefined, number>;
  created_at: Timestamp;
}

export interface ServicesTable {
  id: string;
  namespace_id: string;
  name: string;
  description: string;
  created_at: Timestamp;
}

export interface FunctionsTable {
  id: string;
  service_id: string;
  name: string;
  description: string;
  tags: Json<string[]>;
  active_version: number;
  locked: ColumnType<boolean, boolean | undefined, boolean>;
  created_at: Timestamp;
  updated_at: Timestamp;
}

export interface FunctionVersionsTable {
  id: string;
  function_id: string;
  version: number;
  language: string;
  backend: string;
  code: string;
  config: Json<Record<string, unknown> | null>;
  input_schema: Json<Record<string, unknown> | null>;
  output_schema: Json<Record<string, unknown> | null>;
  requirements: Json<string[]>;
  required_env: Json<string[]>;
  optional_env: Json<string[]>;
  definition_hash: string;
  restored_from: number | null;
  created_at: Timestamp;
  /** BIGINT: the driver may answer a string. */
  schema_bytes: ColumnType<string | number, number | undefined, number>;
  stored_bytes: ColumnType<string | number, number | undefined, number>;
}

export interface ExecutionsTable {
  id: string;
  account_id: string;
  namespace_id: string;
  service_name: string | null;
  function_name: string | null;
  function_id: string | null;
  version: number | null;
  mode: string;
  status: string;
  error_type: string | null;
  duration_ms: number;
  bytes_out: number;
  key_id: string | null;
  /** The agent that ran it, when no API key did (migration 16). */
  agent_id: string | null;
  /** What started it: core/principal.ts TRIGGERS (migration 16). */
  trigger: string;
  functions: Json<string[]>;
  error_message: string | null;
  stdout: string;
  stderr: string;
  /** An execute's submitted code (bounded, redacted); null for tool-mode runs. */
  code: string | null;
  /** The run's redacted result (JSON text, bounded: executions-store.ts recordedResult); null when it failed. */
  result: ColumnType<string | null, string | null | undefined, string | null>;
  language: string | null;
  created_at: Timestamp;
}

export interface UsageMonthsTable {
  account_id: string;
  month: string;
  executions: number;
}

export interface RateWindowsTable {
  account_id: string;
  window_start: Timestamp;
  executions: number;
}

export interface ActiveExecutionsTable {
  id: string;
  account_id: string;
  started_at: Timestamp;
  expires_at: Timestamp;
  instance_id: string | null;
  deadline_at: Timestamp | null;
  run: unknown;
  cancel_requested_at: Timestamp | null;
}

/** A cancel that found no slot yet (its call's admission had not committed): taken by that admission. */
export interface CallCancelsTable {
  account_id: string;
  cancel_key: string;
  requested_at: Timestamp;
}

export interface ServerInstancesTable {
  id: string;
  host: string;
  pid: number;
  started_at: Timestamp;
  lease_until: Timestamp;
}

export interface SecurityEventsTable {
  id: string;
  account_id: string;
  namespace_id: string;
  execution_id: string | null;
  service_name: string | null;
  function_name: string | null;
  event_type: string;
  detail: Json<Record<string, unknown>>;
  created_at: Timestamp;
}

export interface SchemaMigrationsTable {
  version: number;
  name: string;
  applied_at: Timestamp;
}

export interface AgentsTable {
  id: string;
  namespace_id: string;
  name: string;
  description: string;
  status: ColumnType<string, string | undefined, string>;
  desired_replicas: ColumnType<number, number | undefined, number>;
  config: Json<Record<string, unknown>>;
  state_bytes: ColumnType<string | number, number | undefined, number>;
  created_at: Timestamp;
  updated_at: Timestamp;
}

export interface AgentReplicasTable {
  id: string;
  agent_id: string;
  name: string;
  /** BIGINT: the driver may answer a string. */
  seq: ColumnType<string | number, number, number>;
  /** pending | running | draining | stopped | crashed */
  status: ColumnType<string, string | undefined, string>;
  node_id: string | null;
  lease_expires_at: Timestamp | null;
  started_at: Timestamp | null;
  restarts: ColumnType<number, number | undefined, number>;
  last_exit: string | null;
  created_at: Timestamp;
}

export interface AgentRunCall {
  function: string;
  execution_id: string | null;
  status: string;
  duration_ms: number;
  error_type: string | null;
}

export interface AgentRunsTable {
  id: string;
  agent_id: string;
  account_id: string;
  replica: string | null;
  /** The serve process running it (server_instances.id): a run left running by a dead node is ended. */
  node_id: string | null;
  trigger: string;
  trigger_name: string | null;
  trigger_ref: string | null;
  orchestration_mode: ColumnType<string, string | undefined, string>;
  function_name: string | null;
  calls: Json<AgentRunCall[]>;
  /** running | succeeded | failed | cancelled | rejected */
  status: string;
  error_type: string | null;
  error_message: string | null;
  started_at: Timestamp;
  finished_at: Timestamp | null;
  duration_ms: number | null;
  /** AI runs (migration 22): model turns, tokens, why it stopped, its tool calls, its answer, its chat conversation. */
  iterations: ColumnType<number | null, number | null | undefined, number | null>;
  input_tokens: ColumnType<number | null, number | null | undefined, number | null>;
  output_tokens: ColumnType<number | null, number | null | undefined, number | null>;
  stop_reason: ColumnType<string | null, string | null | undefined, string | null>;
  tool_calls: ColumnType<AgentToolCall[], string | undefined, string>;
  answer: ColumnType<string | null, string | null | undefined, string | null>;
  conversation_id: ColumnType<string | null, string | null | undefined, string | null>;
  /** Migration 27: some model answer of the run did not say what it cost, and its tokens were estimated. */
  usage_estimated: ColumnType<boolean, boolean | undefined, boolean>;
}

/** One tool call of an AI run as its record keeps it. */
export interface AgentToolCall {
  name: string;
  kind: 'function' | 'mcp' | 'state' | 'refused';
  duration_ms: number;
  /** ok, error, refused_forbidden, refused_unknown, refused_limit, cancelled, rejected, or a SKIP_REASONS entry (never sent: 'skipped: per-turn cap', ...) */
  outcome: string;
  execution_id: string | null;
  error_type?: string | null;
}

export interface AgentStateTable {
  agent_id: string;
  key: string;
  /** AES-256-GCM ciphertext (services/state-cipher.ts), never the value's text. */
  value: string;
  version: number;
  size_bytes: number;
  updated_at: Timestamp;
}

export interface AgentSchedulesTable {
  id: string;
  agent_id: string;
  /** Optional name given by add_schedule's schedule_name (unique per agent). */
  label: string | null;
  function_name: string;
  cron_expression: string;
  timezone: string;
  config: Json<Record<string, unknown>>;
  enabled: ColumnType<boolean, boolean | undefined, boolean>;
  disabled_reason: string | null;
  next_fire_at: Date | null;
  failure_streak: ColumnType<number, number | undefined, number>;
  last_failed_tick: Date | null;
  last_planned_tick: Date;
  created_at: Timestamp;
}

export interface AgentScheduleFiresTable {
  id: string;
  schedule_id: string;
  scheduled_for: Date;
  /** The replica of a cluster-mode fire; '' for single mode. */
  replica: string;
  run_replica: string | null;
  status: string;
  reason: string | null;
  run_id: string | null;
  node: string | null;
  created_at: Timestamp;
  finished_at: Date | null;
}

export interface Database {
  accounts: AccountsTable;
  api_keys: ApiKeysTable;
  oauth_clients: OAuthClientsTable;
  oauth_authorizations: OAuthAuthorizationsTable;
  oauth_tokens: OAuthTokensTable;
  web_sessions: WebSessionsTable;
  mcp_sessions: McpSessionsTable;
  mcp_session_holds: McpSessionHoldsTable;
  namespaces: NamespacesTable;
  services: ServicesTable;
  functions: FunctionsTable;
  function_versions: FunctionVersionsTable;
  executions: ExecutionsTable;
  usage_months: UsageMonthsTable;
  rate_windows: RateWindowsTable;
  active_executions: ActiveExecutionsTable;
  call_cancels: CallCancelsTable;
  server_instances: ServerInstancesTable;
  security_events: SecurityEventsTable;
  schema_migrations: SchemaMigrationsTable;
  agents: AgentsTable;
  agent_state: AgentStateTable;
  agent_replicas: AgentReplicasTable;
  agent_runs: AgentRunsTable;
  agent_schedules: AgentSchedulesTable;
  agent_schedule_fires: AgentScheduleFiresTable;
}

export type AccountRow = Selectable<AccountsTable>;
export type ApiKeyRow = Selectable<ApiKeysTable>;
export type NamespaceRow = Selectable<NamespacesTable>;
export type ServiceRow = Selectable<ServicesTable>;
export type FunctionRow = Selectable<FunctionsTable>;
export type FunctionVersionRow = Selectable<FunctionVersionsTable>;
export type ExecutionRow = Selectable<ExecutionsTable>;
export type SecurityEventRow = Selectable<SecurityEventsTable>;
export type AgentRow = Selectable<AgentsTable>;
export type AgentReplicaRow = Selectable<AgentReplicasTable>;
export type AgentRunRow = Selectable<AgentRunsTable>;
export type AgentScheduleRow = Selectable<AgentSchedulesTable>;
export type AgentScheduleFireRow = Selectable<AgentScheduleFiresTable>;
