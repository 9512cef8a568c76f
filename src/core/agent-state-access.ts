/**
 * An agent's state as a run of that agent sees it: the operations the `mcpworks` module inside the
 * sandbox reaches through the host bridge. Made by AgentService (src/services/agents.ts) for one
 * agent, with the same rules as the state tools (key and value caps, per-agent cap, compare-and-swap,
 * encryption); the bridge (src/run/state-bridge.ts) bounds and answers the sandbox's requests.
 */
import type { RawJson } from './raw-json.js';

export interface AgentStateAccess {
  /** The agent whose state this is. */
  readonly agentId: string;
  /**
   * The key's value and version, or null when it is not set. `raw`: the value as its JSON text's
   * bytes (a RawJson), never parsed (the bridge hands it on as it is).
   */
  get(key: string, options?: { raw?: boolean }): Promise<{ value: unknown; version: number } | null>;
  /**
   * Writes the key (any JSON value; a RawJson is taken as the JSON text it holds). `ifVersion`:
   * only if the key is at that version now (0: only if it does not exist yet), else a conflict.
   */
  set(key: string, value: unknown, options?: { ifVersion?: number }): Promise<{ version: number }>;
  /** Removes the key; `deleted` false when it was not set. `ifVersion` as for set. */
  delete(key: string, options?: { ifVersion?: number }): Promise<{ deleted: boolean }>;
  /** Keys in order, a page at a time: `cursor` is the previous page's next_cursor (null: the last page). */
  keys(options?: { prefix?: string; cursor?: string; limit?: number }): Promise<{ keys: string[]; next_cursor: string | null }>;
}

/** Keys one `keys` call answers when it names no limit, and the most it may name. */
export const STATE_KEYS_PAGE = 100;
export const STATE_KEYS_MAX_PAGE = 1000;

/** A state request's arguments besides the value (key, if_version, prefix, cursor, limit) may take this many bytes of JSON. */
export const STATE_ARGS_MAX_BYTES = 4096;

/** State operations one run may make through the bridge (each is a database transaction). */
export const MAX_STATE_CALLS = 1000;

/**
 * Error types the `mcpworks` module turns into its StateError subclasses (besides the domain's own
 * validation_error, not_found and internal_error, which arrive as they are).
 */
export const STATE_ERROR_TYPES = Object.freeze({
  /** Compare-and-swap found another version (or the agent is still being cloned). */
  conflict: 'conflict',
  /** A value over the per-value cap, or a write past the agent's state cap. */
  tooLarge: 'limit_exceeded',
  /** The run was not started by an agent: it has no state. */
  notAgentRun: 'not_agent_run',
  /** The request is not one the state bridge takes, or comes too late or too often. */
  bridge: 'BridgeError',
} as const);

/** What a run not started by an agent is told when it uses `mcpworks.state`. */
export const NOT_AGENT_RUN_MESSAGE =
  'mcpworks.state is only available to runs started by an agent (a schedule, webhook or other agent trigger); this run has no agent';
