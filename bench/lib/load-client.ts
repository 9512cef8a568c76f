/**
 * The load-client process of load.ts (not run by hand): connects its clients, prints `ready`,
 * waits for a line on stdin, calls back to back until the deadline, prints one JSON LoadResult.
 */
import { connect, type ClientEra } from '../../src/test-support/harness.js';
import type { LoadResult } from './load.js';
import { call, type CallSpec } from './server.js';

const {
  url,
  era,
  clients,
  seconds,
  call: spec,
} = JSON.parse(process.env.MCPWORKS_BENCH_LOAD ?? '{}') as {
  url: string | string[];
  era: ClientEra;
  clients: number;
  seconds: number;
  call: CallSpec;
};
const key = process.env.MCPWORKS_BENCH_KEY || undefined;
const urls = Array.isArray(url) ? url : [url];
const loadClients = await Promise.all(Array.from({ length: clients }, (_, i) => connect(urls[i % urls.length]!, key, era)));
process.stdout.write('ready\n');
await new Promise<void>((resolve) => process.stdin.once('data', () => resolve()));
const latencies: number[] = [];
let errors = 0;
let firstError: string | undefined;
const cpuBefore = process.cpuUsage();
const started = performance.now();
const deadline = started + seconds * 1000;
await Promise.all(
  loadClients.map(async (client) => {
    while (performance.now() < deadline) {
      const callStarted = performance.now();
      try {
        await call(client, spec);
        latencies.push(performance.now() - callStarted);
      } catch (error) {
        errors++;
        firstError ??= (error as Error).message;
      }
    }
  }),
);
const elapsedMs = performance.now() - started;
const cpu = process.cpuUsage(cpuBefore);
const result: LoadResult = { latencies, errors, cpuMs: (cpu.user + cpu.system) / 1000, elapsedMs, ...(firstError ? { firstError } : {}) };
process.stdout.write(`${JSON.stringify(result)}\n`);
await Promise.all(loadClients.map((client) => client.close()));
process.exit(0);
