"""MCPWorks inside the sandbox. `from mcpworks import state` reads and writes the state of the agent
whose trigger (schedule, webhook, ...) started this run, through the run's bridge to the host:

    count = state.get("count", 0)
    state.set("count", count + 1)
    entry = state.get_entry("count")          # {"value": ..., "version": N} or None
    state.set("count", 7, if_version=entry["version"])   # compare-and-swap; 0: only if absent
    state.delete("count")                      # True when it was set
    state.keys(prefix="user:")                 # every key, in order

Errors are StateError subclasses: StateConflictError (the version moved), StateTooLargeError (a
value over 1 MB, or the agent's state cap), NotAgentRunError (this run was not started by an agent).
"""
import sys

__all__ = ["state", "StateError", "StateConflictError", "StateTooLargeError", "NotAgentRunError"]

# The host's cap on one value (core/agents.ts STATE_VALUE_MAX_BYTES), checked here too so that a
# value too large for the bridge is refused before it is sent.
_VALUE_MAX_BYTES = 1024 * 1024
_NOT_AGENT_RUN = (
    "mcpworks.state is only available to runs started by an agent (a schedule, webhook or other agent trigger); "
    "this run has no agent"
)


class StateError(Exception):
    """A state operation was refused; `type` is the host's error type, `details` its particulars."""

    def __init__(self, message, type="state_error", details=None):
        super().__init__(message)
        self.type = type
        self.details = details or {}


class StateConflictError(StateError):
    """Compare-and-swap: the key is not at the version given (or the agent is being cloned)."""


class StateTooLargeError(StateError):
    """A value larger than one value may be, or a write past the agent's state cap."""


class NotAgentRunError(StateError):
    """This run was not started by an agent, so it has no agent state."""


_BY_TYPE = {"conflict": StateConflictError, "limit_exceeded": StateTooLargeError, "not_agent_run": NotAgentRunError}
_MISSING = object()


def _request(verb, args, value=_MISSING):
    bridge = sys.modules.get("_mcpworks_bridge")
    if bridge is None:
        raise NotAgentRunError(_NOT_AGENT_RUN, "not_agent_run")
    message = {"op": "state", "function": verb, "args": args}
    if value is not _MISSING:
        message["input"] = value
    answer = bridge.call(message)
    if not answer.get("ok"):
        kind = answer.get("error_type") or "state_error"
        raise _BY_TYPE.get(kind, StateError)(answer.get("error") or "the state operation failed", kind, answer.get("details"))
    return answer.get("result")


def _encoded_size(value):
    import json
    try:
        text = json.dumps(value, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError) as error:
        raise TypeError(f"a state value must be JSON: {error}") from None
    return len(text.encode("utf-8", "backslashreplace"))


class _State:
    """The agent's state: JSON values by key, each with a version that every write moves on."""

    def get(self, key, default=None):
        """The key's value, or `default` when it is not set."""
        found = _request("get", {"key": key})
        return default if found is None else found["value"]

    def get_entry(self, key):
        """{"value": ..., "version": N} for the key, or None when it is not set."""
        return _request("get", {"key": key})

    def set(self, key, value, if_version=None):
        """Writes the key; answers its new version. `if_version`: only if the key is at that version
        now (0: only if it does not exist yet), else StateConflictError and nothing changes."""
        size = _encoded_size(value)
        if size > _VALUE_MAX_BYTES:
            raise StateTooLargeError(
                f"state value is {size} bytes; one value may be at most {_VALUE_MAX_BYTES} bytes",
                "limit_exceeded",
                {"resource": "state_value_bytes", "limit": _VALUE_MAX_BYTES, "size": size},
            )
        return _request("set", {"key": key, "if_version": if_version}, value)["version"]

    def delete(self, key, if_version=None):
        """Removes the key; True when it was set. `if_version` as for set."""
        return _request("delete", {"key": key, "if_version": if_version})["deleted"]

    def keys(self, prefix=None):
        """Every key (starting with `prefix`, when given), in order."""
        keys, cursor = [], None
        while True:
            page = _request("keys", {"prefix": prefix, "cursor": cursor, "limit": 1000})
            keys.extend(page["keys"])
            cursor = page["next_cursor"]
            if cursor is None:
                return keys

    def __repr__(self):
        return "<mcpworks.state>"


state = _State()
