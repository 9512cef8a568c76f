/**
 * The /healthz prober of bench/abuse (not run by hand), in a process of its own so that the bench's
 * attack traffic does not delay its probes. Reads commands on stdin, one a line:
 *   `start <label>`: probe GET /healthz back to back (a 20 ms pause between probes) from
 *                    127.0.0.1, each with a deadline; a probe that fails or misses the deadline
 *                    counts as the deadline;
 *   `stop`:          stop probing and print one JSON line {label, latencies, failures}.
 * The server URL comes in MCPWORKS_BENCH_URL.
 */
import { request } from 'node:http';
import { createInterface } from 'node:readline';

const url = new URL('/healthz', process.env.MCPWORKS_BENCH_URL ?? '');
const DEADLINE_MS = 10_000;
const PAUSE_MS = 20;

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

let running: { label: string; latencies: number[]; failures: number; stop: boolean; finished: Promise<void> } | undefined;

async function loop(state: NonNullable<typeof running>): Promise<void> {
  while (!state.stop) {
    const { ms, ok } = await probeOnce();
    state.latencies.push(ms);
    if (!ok) state.failures++;
    await new Promise((resolve) => setTimeout(resolve, PAUSE_MS));
  }
}

for await (const line of createInterface({ input: process.stdin })) {
  const [command, ...rest] = line.trim().split(' ');
  if (command === 'start' && !running) {
    const state = { label: rest.join(' '), latencies: [] as number[], failures: 0, stop: false, finished: Promise.resolve() };
    state.finished = loop(state);
    running = state;
  } else if (command === 'stop' && running) {
    const state = running;
    running = undefined;
    state.stop = true;
    await state.finished;
    process.stdout.write(JSON.stringify({ label: state.label, latencies: state.latencies, failures: state.failures }) + '\n');
  }
}
