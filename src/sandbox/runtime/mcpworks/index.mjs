// The ES module face of `mcpworks` (code-mode scripts); the CommonJS file is the module.
import mcpworks from './index.cjs';

export default mcpworks;
export const state = mcpworks.state;
export const StateError = mcpworks.StateError;
export const StateConflictError = mcpworks.StateConflictError;
export const StateTooLargeError = mcpworks.StateTooLargeError;
export const NotAgentRunError = mcpworks.NotAgentRunError;
