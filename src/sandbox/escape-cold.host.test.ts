// The escape suite once more with the pool and the zygote off (MCPWORKS_SANDBOX_POOL=off,
// MCPWORKS_ZYGOTE=off): every attempt in a sandbox started on the request path, as a server
// configured that way runs them.
process.env.MCPWORKS_SANDBOX_POOL = 'off';
process.env.MCPWORKS_ZYGOTE = 'off';
// The suite creates its sandbox in before(), which runs after this module has set the switch.
await import('./escape.host.test.js');
