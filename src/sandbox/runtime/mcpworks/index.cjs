// MCPWorks inside the sandbox. `import { state } from 'mcpworks'` reads and writes the state of the
// agent whose trigger (schedule, webhook, ...) started this run, through the run's bridge to the
// host. Every call is async, as the `functions` package's calls are:
//
//   const count = await state.get('count', 0);
//   await state.set('count', count + 1);
//   const entry = await state.getEntry('count');            // { value, version } or null
//   await state.set('count', 7, { ifVersion: entry.version }); // compare-and-swap; 0: only if absent
//   await state.delete('count');                             // true when it was set
//   await state.keys({ prefix: 'user:' });                   // every key, in order
//
// Errors are StateError subclasses: StateConflictError (the version moved), StateTooLargeError (a
// value over 1 MB, or the agent's state cap), NotAgentRunError (this run was not started by an agent).
'use strict';

// The host's cap on one value (core/agents.ts STATE_VALUE_MAX_BYTES), checked here too so that a
// value too large for the bridge is refused before it is sent.
const VALUE_MAX_BYTES = 1024 * 1024;
const NOT_AGENT_RUN =
  'mcpworks.state is only available to runs started by an agent (a schedule, webhook or other agent trigger); this run has no agent';

class StateError extends Error {
  constructor(message, type = 'state_error', details = {}) {
    super(message);
    this.name = new.target.name;
    this.type = type;
    this.details = details || {};
  }
}
class StateConflictError extends StateError {}
class StateTooLargeError extends StateError {}
class NotAgentRunError extends StateError {}

const BY_TYPE = { conflict: StateConflictError, limit_exceeded: StateTooLargeError, not_agent_run: NotAgentRunError };

function request(verb, args, value) {
  // Provided by the sandbox runner to runs that have a bridge: a blocking request/answer channel to the host.
  const call = globalThis.__mcpworksBridge;
  if (typeof call !== 'function') throw new NotAgentRunError(NOT_AGENT_RUN, 'not_agent_run');
  const message = { op: 'state', function: verb, args };
  if (arguments.length > 2) message.input = value;
  const answer = call(message);
  if (!answer.ok) {
    const type = answer.error_type || 'state_error';
    const Kind = Object.prototype.hasOwnProperty.call(BY_TYPE, type) ? BY_TYPE[type] : StateError;
    throw new Kind(answer.error || 'the state operation failed', type, answer.details);
  }
  return answer.result;
}

function versionOf(options) {
  if (options === undefined || options === null) return null;
  if (typeof options !== 'object') throw new TypeError('the options are an object: { ifVersion }');
  return options.ifVersion === undefined ? null : options.ifVersion;
}

const state = Object.freeze({
  /** The key's value, or `fallback` (null) when it is not set. */
  async get(key, fallback = null) {
    const found = request('get', { key });
    return found === null ? fallback : found.value;
  },
  /** { value, version } for the key, or null when it is not set. */
  async getEntry(key) {
    return request('get', { key });
  },
  /** Writes the key; its new version. `{ ifVersion }`: only if the key is at that version now (0: only if absent). */
  async set(key, value, options) {
    if (value === undefined) throw new TypeError('state.set needs a value (any JSON value; null too)');
    let text;
    try {
      text = JSON.stringify(value);
    } catch (error) {
      throw new TypeError(`a state value must be JSON: ${error.message}`);
    }
    if (text === undefined) throw new TypeError(`a state value must be JSON, not a ${typeof value}`);
    const size = Buffer.byteLength(text);
    if (size > VALUE_MAX_BYTES)
      throw new StateTooLargeError(`state value is ${size} bytes; one value may be at most ${VALUE_MAX_BYTES} bytes`, 'limit_exceeded', {
        resource: 'state_value_bytes',
        limit: VALUE_MAX_BYTES,
        size,
      });
    return request('set', { key, if_version: versionOf(options) }, value).version;
  },
  /** Removes the key; true when it was set. `{ ifVersion }` as for set. */
  async delete(key, options) {
    return request('delete', { key, if_version: versionOf(options) }).deleted;
  },
  /** Every key (starting with `prefix`, when given), in order. */
  async keys(options) {
    const prefix = typeof options === 'string' ? options : options && options.prefix !== undefined ? options.prefix : null;
    const keys = [];
    for (let cursor = null; ;) {
      const page = request('keys', { prefix, cursor, limit: 1000 });
      keys.push(...page.keys);
      cursor = page.next_cursor;
      if (cursor === null) return keys;
    }
  },
});

module.exports = { state, StateError, StateConflictError, StateTooLargeError, NotAgentRunError };
