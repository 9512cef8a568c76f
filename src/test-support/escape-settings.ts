import { SANDBOX_DEFAULTS, type SandboxSettings } from '../app/config.js';

/**
 * The sandbox switches the escape suite (src/sandbox/escape.host.test.ts) runs under: a server's
 * defaults, which escape-cold.host.test.ts turns to the pool and the zygote off before it imports
 * the suite. Passed as config, not through process.env (read once, by src/app/config.ts).
 */
export const escapeSuiteSettings: SandboxSettings = { ...SANDBOX_DEFAULTS };
