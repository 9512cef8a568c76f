/**
 * The machine's floor for bench/abuse (not run by hand): a bare node:http server in a process (and
 * session) of its own answering `GET /healthz` with `{"status":"ok"}`, probed the same way as the
 * server. Its p99 in a phase is what the machine alone gave a trivial answer then (other work on
 * its cores, the attacking clients, the bench's own sampling), so each /healthz figure can be read
 * beside it. Prints `ready <port>` once it listens on 127.0.0.1.
 */
import { createServer } from 'node:http';

const body = JSON.stringify({ status: 'ok' });
const server = createServer((req, res) => {
  const ok = req.method === 'GET' && req.url === '/healthz';
  res.writeHead(ok ? 200 : 404, { 'content-type': 'application/json', 'content-length': ok ? Buffer.byteLength(body) : 0 });
  res.end(ok ? body : undefined);
});
server.listen(0, '127.0.0.1', () => console.log(`ready ${(server.address() as { port: number }).port}`));
// Ends with the bench: its stdin closes when the bench exits, however it exits.
process.stdin.resume().on('end', () => process.exit(0));
