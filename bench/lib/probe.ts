/**
 * The /healthz prober of bench/abuse (not run by hand), in a process of its own so that the bench's
 * attack traffic does not delay its probes. Reads commands on stdin, one a line:
 *   `start <label>`: probe GET /healthz at a steady rate (one probe every INTERVAL_MS, started on
 *                    schedule whether or not earlier probes have answered) from 127.0.0.1, each
 *                    with a deadline; a probe that fails or misses the deadline counts as the
 *                    deadline;
 *   `stop`:          stop starting probes, wait for those in flight, and print one JSON line
 *                    {label, latencies, failures}.
 * The steady rate keeps the count proportional to the phase's length, so a p99 is never one slow
 * sample, and a stall of the server's loop is met by every probe scheduled during it (a
 * back-to-back prober would send one probe into a stall and so under-count it).
 * The server URL comes in MCPWORKS_BENCH_URL.
 */
import { request } from 'node:http';
import { createInterface } from 'node:readline';

const url = new URL('/healthz', process.env.MCPWORKS_BENCH_URL ?? '');
const DEADLINE_MS = 10_000;
// 50 probes a second: half the default per-IP request rate (MCPWORKS_REQUESTS_PER_SECOND_PER_IP, 100), so
// that the prober is an ordinary client, not one the per-client pacing holds back.
const INTERVAL_MS = 20;

function probeOnce(): Promise<{ ms: number; ok: boolean }> {
  const started = performance.now();
  return new Promise((resolve) => {
    let settled = false;
    const done = (ok: boolean) => {
      if (settled) return;
      settled = true;
      resolve({ ms: ok ? performance.now() - started : DEADLINE_MS, ok });
    };
    // A new connection per probe: a kept-alive socket would hide what a new client meets (the
    // connection cap, a full accept queue).
    const req = request(url, { agent: false, timeout: DEADLINE_MS, headers: { connection: 'close' } }, (res) => {
      res.resume();
      res.on('end', () => done(res.statusCode === 200));
      res.on('error', () => done(false));
    });
    req.on('timeout', () => {
      req.destroy();
      done(false);
    });
    req.on('error', () => done(false));
    req.end();
  });
}

interface State {
  label: string;
  latencies: number[];
  failures: number;
  timer: NodeJS.Timeout;
  inFlight: Set<Promise<void>>;
}
let running: State | undefined;

function startProbing(label: string): State {
  const state: State = { label, latencies: [], failures: 0, timer: undefined as unknown as NodeJS.Timeout, inFlight: new Set() };
  const fire = () => {
    const probe = probeOnce().then(({ ms, ok }) => {
      state.latencies.push(ms);
      if (!ok) state.failures++;
      state.inFlight.delete(probe);
    });
    state.inFlight.add(probe);
  };
  fire();
  state.timer = setInterval(fire, INTERVAL_MS);
  return state;
}

for await (const line of createInterface({ input: process.stdin })) {
  const [command, ...rest] = line.trim().split(' ');
  if (command === 'start' && !running) {
    running = startProbing(rest.join(' '));
  } else if (command === 'stop' && running) {
    const state = running;
    running = undefined;
    clearInterval(state.timer);
    await Promise.all([...state.inFlight]);
    process.stdout.write(JSON.stringify({ label: state.label, latencies: state.latencies, failures: state.failures }) + '\n');
  }
}
