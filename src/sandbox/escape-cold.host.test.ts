// The escape suite once more with the pool and the zygote off (as MCPWORKS_SANDBOX_POOL=off and
// MCPWORKS_ZYGOTE=off configure a server): every attempt in a sandbox started on the request path,
// as a server configured that way runs them.
import { escapeSuiteSettings } from '../test-support/escape-settings.js';

escapeSuiteSettings.pool = false;
escapeSuiteSettings.zygote = false;
// And a CPU weight of its own (MCPWORKS_SANDBOX_CPU_WEIGHT=30, so not idle): the runs' group must read it.
escapeSuiteSettings.cpuWeight = 30;
escapeSuiteSettings.cpuIdle = false;
// The suite creates its sandbox in before(), which runs after this module has set the switches.
await import('./escape.host.test.js');
