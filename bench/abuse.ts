/**
 * Resource attacks against the real server (issue 10, "Checks"): for each attack, the /healthz p99,
 * the memory and the CPU of the server's whole process tree under attack beside the idle figures
 * measured just before it, in the same run. Targets: p99 within 3× idle, memory growth under 200 MB.
 *
 *   bench/abuse [--seconds S] [--only schemas,scanner,bodies,connections,login,catalog,runs] [--cpu-prof DIR] [--no-floor] [--threads] [--attacker-nice N]
 *
 * The server is `node dist/cli/main.js serve` in a process of its own (embedded PGlite in a fresh
 * data dir; the trial tier's execution limits lifted, so that the attacks are limited by what the
 * server does with them, not by the meter). /healthz is probed from a third process
 * (bench/lib/probe.ts) from 127.0.0.1 at a steady rate (a probe every 20 ms whether or not the last
 * one answered, so several hundred per phase), a new connection per probe; each phase prints the
 * probes' p50, p99, max and count. Attack traffic comes from this
 * process, where it can from 127.0.0.2 (a per-IP limit must not shelter the probe by accident of
 * sharing the attacker's address). Memory and CPU are those of the server process and all its
 * descendants (KDF and schema workers, spawner, zygotes, helpers, sandboxes; bench/lib/tree.ts):
 * memory is their summed PSS, sampled every 250 ms (growth: the attack's peak less the idle
 * median); CPU is their utime + stime, reaped children's included, per second of the phase. Each
 * attack is bounded in count and time. A server that dies is reported and started again for the
 * next attack. Targets are information, never the exit code. Unless --no-floor, a bare node:http
 * server in a process and session of its own (bench/lib/floor-server.ts) is probed the same way in
 * every phase: its p99 is the machine's floor then, what a trivial answer got.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { connect as netConnect, createServer, type Socket } from 'node:net';
import { availableParallelism, cpus, loadavg, setPriority, tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import {
  connect,
  createAccount,
  createKey,
  parseResult,
  postJson,
  type McpTestClient,
  type TestAccount,
} from '../src/test-support/harness.js';
import { median, ms, p99, printTable, quantile } from './lib/measure.js';
import { sampleTree, threadSchedstats, watchTree, type ThreadSched, type TreeSample } from './lib/tree.js';

const ATTACKS = ['schemas', 'scanner', 'bodies', 'connections', 'login', 'catalog', 'runs'] as const;
type AttackName = (typeof ATTACKS)[number];

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '8' },
    only: { type: 'string' },
    'cpu-prof': { type: 'string' },
    'no-floor': { type: 'boolean', default: false },
    threads: { type: 'boolean', default: false },
    'attacker-nice': { type: 'string' },
  },
});
// --threads: every thread of the server's tree (main thread, PGlite, workers, libuv pool, helpers,
// sandboxes) with its ms on a CPU and ms waiting for one per second of each phase
// (/proc/PID/task/TID/schedstat), printed after the table: what shares the cores with the loop.
const perThread = values.threads;
// --attacker-nice N (1-19): the attacking clients (this process and its session) run at a lower
// priority, for each attack phase only: a real attacker's CPU is on other machines, while here it
// takes the same two cores as the server. Not the default: the figures without it are the honest
// worst case; with it, what the server alone does under the same traffic. Its autogroup's nice is
// set too (/proc/self/autogroup): under autogroup scheduling a process's own nice only ranks it
// within its session, and the server and the prober each have a session of their own.
const attackerNice = values['attacker-nice'] === undefined ? undefined : Number(values['attacker-nice']);
if (attackerNice !== undefined && !(Number.isInteger(attackerNice) && attackerNice >= 1 && attackerNice <= 19))
  throw new Error('--attacker-nice must be an integer from 1 to 19');
/** Sets this process's (and its autogroup's) nice value; false where not permitted. */
function setAttackerNice(nice: number): boolean {
  try {
    setPriority(nice);
    writeFileSync('/proc/self/autogroup', String(nice));
    return true;
  } catch {
    return false;
  }
}
// --cpu-prof DIR: the server runs under `node --cpu-prof` and writes its profile into DIR when it
// stops, with phases.json (each phase's span); bench/loop-holds.ts reads them: what held the
// server's event loop, hold by hold, in a phase.
const cpuProfDir = values['cpu-prof'] ? path.resolve(values['cpu-prof']) : undefined;
const seconds = Number(values.seconds);
if (!Number.isFinite(seconds) || seconds <= 0) throw new Error('--seconds must be a positive number');
const only = values.only ? values.only.split(',').map((name) => name.trim()) : [...ATTACKS];
for (const name of only)
  if (!(ATTACKS as readonly string[]).includes(name)) throw new Error(`unknown attack '${name}' (known: ${ATTACKS.join(', ')})`);

// Idle long enough for several hundred probes (one every 20 ms), so that the baseline p99 is not one sample.
const IDLE_SECONDS = 6;
const ATTACKER = '127.0.0.2';
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const MB = 1024 * 1024;

// ---------------------------------------------------------------- the server, in its own process

interface ServerProcess {
  url: string;
  port: number;
  child: ChildProcess;
  dataDir: string;
  exited: boolean;
  stderrTail: string[];
}

async function freePort(): Promise<number> {
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const port = (probe.address() as { port: number }).port;
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

async function startServerProcess(): Promise<ServerProcess> {
  const port = await freePort();
  const dataDir = mkdtempSync(path.join(tmpdir(), 'mcpworks-abuse-'));
  const child = spawn(
    process.execPath,
    [
      ...(cpuProfDir ? ['--cpu-prof', '--cpu-prof-dir', cpuProfDir] : []),
      path.join(root, 'dist', 'cli', 'main.js'),
      'serve',
      '--port',
      String(port),
      '--data-dir',
      dataDir,
    ],
    {
      env: {
        ...process.env,
        LOG_LEVEL: process.env.LOG_LEVEL ?? 'error',
        MCPWORKS_TIERS: '{"pro_trial":{"monthly_executions":-1,"executions_per_minute":-1,"concurrency":-1}}',
      },
      stdio: ['ignore', 'ignore', 'pipe'],
      // A session of its own, as a deployed server has (a service, a terminal): with autogroup
      // scheduling (Linux's default on desktops and many servers) a session's threads share one
      // group's CPU weight, and the attacking clients below must not be billed to the server's.
      detached: true,
    },
  );
  const server: ServerProcess = { url: `http://127.0.0.1:${port}`, port, child, dataDir, exited: false, stderrTail: [] };
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
    server.stderrTail.push(chunk);
    if (server.stderrTail.length > 20) server.stderrTail.shift();
  });
  child.on('exit', () => (server.exited = true));
  // A loaded machine can take long to start the server (PGlite, migrations, warm sandboxes).
  const deadline = Date.now() + 120_000;
  while (Date.now() < deadline) {
    if (server.exited) throw new Error(`the server exited at start: ${server.stderrTail.join('').slice(-500)}`);
    const up = await fetch(`${server.url}/healthz`).then(
      (r) => r.ok,
      () => false,
    );
    if (up) return server;
    await sleep(100);
  }
  await stopServerProcess(server);
  throw new Error('the server did not answer /healthz within 120 s');
}

async function stopServerProcess(server: ServerProcess): Promise<void> {
  if (!server.exited) {
    server.child.kill('SIGTERM');
    const deadline = Date.now() + 15_000;
    while (!server.exited && Date.now() < deadline) await sleep(100);
    if (!server.exited) server.child.kill('SIGKILL');
  }
  rmSync(server.dataDir, { recursive: true, force: true });
}

// ---------------------------------------------------------------- the prober, in its own process

class Prober {
  private readonly child: ChildProcess;
  private readonly lines: string[] = [];
  private waiting: (() => void) | undefined;

  constructor(url: string) {
    this.child = spawn(process.execPath, [...process.execArgv, path.join(root, 'bench', 'lib', 'probe.ts')], {
      env: { ...process.env, MCPWORKS_BENCH_URL: url },
      stdio: ['pipe', 'pipe', 'inherit'],
      // Its own session too: a probe's time must not include waiting behind the attacking clients.
      detached: true,
    });
    createInterface({ input: this.child.stdout! }).on('line', (line) => {
      this.lines.push(line);
      this.waiting?.();
    });
  }

  start(label: string): void {
    this.child.stdin!.write(`start ${label}\n`);
  }

  async stop(): Promise<{ latencies: number[]; failures: number }> {
    this.child.stdin!.write('stop\n');
    while (this.lines.length === 0) await new Promise<void>((resolve) => (this.waiting = resolve));
    return JSON.parse(this.lines.shift()!);
  }

  close(): void {
    this.child.kill();
  }
}

/** The machine's floor (bench/lib/floor-server.ts) in a process and session of its own, and its URL. */
async function startFloorServer(): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(process.execPath, [...process.execArgv, path.join(root, 'bench', 'lib', 'floor-server.ts')], {
    stdio: ['pipe', 'pipe', 'inherit'],
    detached: true,
  });
  const line = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout! }).once('line', resolve);
    child.once('exit', (code) => reject(new Error(`the floor server exited at start (code ${code})`)));
  });
  return { child, url: `http://127.0.0.1:${line.split(' ')[1]}` };
}

// ---------------------------------------------------------------- measuring one phase

interface Phase {
  latencies: number[];
  failures: number;
  /** The floor server's probe latencies in the same phase (none with --no-floor). */
  floor: number[];
  /** The server's process tree, sampled through the phase (the first at its start, the last at its end). */
  tree: TreeSample[];
  died: boolean;
  /** The server's main thread (its event loop): ms on a CPU and ms runnable but waiting for one, per second of the phase. */
  loop: { runMs: number; waitMs: number } | undefined;
  /** What the server process read (rchar: sockets, files, pipes), MB per second of the phase. */
  readMbPerSecond: number | undefined;
  /** This process's CPU (the attacking clients), seconds per second of the phase. */
  attackerCpu: number;
  /** With --threads: per thread label, ms on a CPU and ms waiting for one, per second of the phase. */
  threads?: Map<string, { runMs: number; waitMs: number }>;
}

/** Per-label sums of what each thread ran and waited between two snapshots, per second of `seconds`. */
function threadRates(
  before: Map<string, ThreadSched>,
  after: Map<string, ThreadSched>,
  seconds: number,
): Map<string, { runMs: number; waitMs: number }> {
  const rates = new Map<string, { runMs: number; waitMs: number }>();
  for (const [key, end] of after) {
    const start = before.get(key);
    const entry = rates.get(end.label) ?? { runMs: 0, waitMs: 0 };
    entry.runMs += (end.runNs - (start?.runNs ?? 0)) / 1e6 / seconds;
    entry.waitMs += (end.waitNs - (start?.waitNs ?? 0)) / 1e6 / seconds;
    rates.set(end.label, entry);
  }
  return rates;
}

/** /proc/PID/schedstat of the server's main thread: ns on a CPU, ns waiting on a run queue. */
function loopSchedstat(pid: number): { at: number; runNs: number; waitNs: number } | undefined {
  try {
    const [run, wait] = readFileSync(`/proc/${pid}/task/${pid}/schedstat`, 'utf8').split(' ').map(Number);
    return { at: performance.now(), runNs: run!, waitNs: wait! };
  } catch {
    return undefined;
  }
}

/**
 * /proc/PID/io rchar of the server process (all its threads): bytes its read-like calls returned,
 * sockets included, so a request body read and then refused shows here.
 */
function bytesRead(pid: number): { at: number; bytes: number } | undefined {
  try {
    const match = /^rchar: (\d+)$/m.exec(readFileSync(`/proc/${pid}/io`, 'utf8'));
    return match ? { at: performance.now(), bytes: Number(match[1]) } : undefined;
  } catch {
    return undefined;
  }
}

/** Probes /healthz and samples the server's process tree while `work` runs. */
async function measure(
  server: ServerProcess,
  prober: Prober,
  floorProber: Prober | undefined,
  label: string,
  work: () => Promise<void>,
): Promise<Phase> {
  const watcher = watchTree(server.child.pid!);
  // Its first sample reads the server's smaps_rollup (the watch's only such read, see bench/lib/tree.ts): before any probe.
  await watcher.ready;
  const schedBefore = loopSchedstat(server.child.pid!);
  const readBefore = bytesRead(server.child.pid!);
  const threadsBefore = perThread ? await threadSchedstats(server.child.pid!) : undefined;
  const threadsFrom = performance.now();
  prober.start(label);
  floorProber?.start(label);
  let tree: TreeSample[];
  const startUs = monotonicUs();
  const ownBefore = process.cpuUsage();
  const ownStart = performance.now();
  try {
    await work();
  } finally {
    tree = await watcher.stop();
    if (cpuProfDir) phases.push({ label, startUs, endUs: monotonicUs() });
  }
  const threadsAfter = threadsBefore ? await threadSchedstats(server.child.pid!) : undefined;
  const threads =
    threadsBefore && threadsAfter ? threadRates(threadsBefore, threadsAfter, (performance.now() - threadsFrom) / 1000) : undefined;
  const own = process.cpuUsage(ownBefore);
  const attackerCpu = (own.user + own.system) / 1000 / (performance.now() - ownStart);
  const probed = await prober.stop();
  const floor = floorProber ? (await floorProber.stop()).latencies : [];
  const schedAfter = loopSchedstat(server.child.pid!);
  const readAfter = bytesRead(server.child.pid!);
  const readMbPerSecond =
    readBefore && readAfter && readAfter.at > readBefore.at
      ? (readAfter.bytes - readBefore.bytes) / MB / ((readAfter.at - readBefore.at) / 1000)
      : undefined;
  const loop =
    schedBefore && schedAfter && schedAfter.at > schedBefore.at
      ? {
          runMs: (schedAfter.runNs - schedBefore.runNs) / 1e6 / ((schedAfter.at - schedBefore.at) / 1000),
          waitMs: (schedAfter.waitNs - schedBefore.waitNs) / 1e6 / ((schedAfter.at - schedBefore.at) / 1000),
        }
      : undefined;
  return { ...probed, floor, tree, died: server.exited, loop, readMbPerSecond, attackerCpu, ...(threads ? { threads } : {}) };
}

/**
 * With --cpu-prof, each phase's span on the monotonic clock, in µs: the clock V8 stamps its
 * profiles with (CLOCK_MONOTONIC on Linux), so bench/loop-holds.ts --phase can pick a phase's holds.
 */
const phases: Array<{ label: string; startUs: number; endUs: number }> = [];
const monotonicUs = () => Number(process.hrtime.bigint() / 1000n);

/**
 * Waits (at most 30 s) until the server's tree is quiet: two half-seconds in a row using under 0.3
 * CPU seconds a second, with the same processes. A fresh server warms its sandboxes, and a
 * prepare's calls leave work behind; an idle baseline taken over that is no baseline.
 */
async function settle(server: ServerProcess): Promise<void> {
  const deadline = Date.now() + 30_000;
  let previous = await sampleTree(server.child.pid!);
  let quiet = 0;
  while (previous && quiet < 2 && Date.now() < deadline && !server.exited) {
    await sleep(500);
    const next = await sampleTree(server.child.pid!);
    if (!next) return;
    const perSecond = (next.cpuMs - previous.cpuMs) / (next.at - previous.at);
    quiet = perSecond < 0.3 && next.processes === previous.processes ? quiet + 1 : 0;
    previous = next;
  }
}

/** CPU seconds the tree used per second of the phase (undefined without two samples). */
function cpuPerSecond(tree: TreeSample[]): number | undefined {
  if (tree.length < 2) return undefined;
  const first = tree[0]!;
  const last = tree[tree.length - 1]!;
  return last.at > first.at ? (last.cpuMs - first.cpuMs) / (last.at - first.at) : undefined;
}

// ---------------------------------------------------------------- attack helpers

const sleep = (milliseconds: number) => new Promise((resolve) => setTimeout(resolve, milliseconds));

/** Runs `body` in `parallel` loops until the deadline; counts outcomes by the label each returns. */
async function loops(parallel: number, deadline: number, body: (index: number) => Promise<string>): Promise<Map<string, number>> {
  const outcomes = new Map<string, number>();
  await Promise.all(
    Array.from({ length: parallel }, async (_, index) => {
      while (Date.now() < deadline) {
        let outcome: string;
        try {
          outcome = await body(index);
        } catch (error) {
          outcome = `error: ${String((error as Error).message ?? error).slice(0, 60)}`;
        }
        outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
      }
    }),
  );
  return outcomes;
}

function describeOutcomes(outcomes: Map<string, number>): string {
  return [...outcomes.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, 3)
    .map(([outcome, count]) => `${count}× ${outcome}`)
    .join('; ');
}

/** A tool call's outcome as a short label: `ok`, or the error type. */
async function callOutcome(client: McpTestClient, tool: string, args: Record<string, unknown>): Promise<string> {
  const response = await client.callTool(tool, args);
  if (!response.isError) return 'ok';
  const value = parseResult(response);
  return String(value?.error_type ?? value?.error ?? 'error').slice(0, 40);
}

async function makeFunctions(
  server: ServerProcess,
  account: TestAccount,
  ns: string,
  service: string,
  functions: Array<Record<string, unknown>>,
): Promise<number> {
  const create = await connect(`${server.url}/mcp/create/${ns}`, account.key);
  let made = 0;
  try {
    for (const [tool, args] of [
      ['make_namespace', { name: ns }],
      ['make_service', { name: service }],
    ] as const) {
      const response = await create.callTool(tool, args);
      if (response.isError) throw new Error(`${tool} failed: ${JSON.stringify(parseResult(response)).slice(0, 200)}`);
    }
    for (const fn of functions) {
      const response = await create.callTool('make_function', { service, backend: 'code_sandbox', language: 'python', ...fn });
      if (!response.isError) made++;
    }
  } finally {
    await create.close();
  }
  return made;
}

/** An HTTP request from the attacker's address; resolves with the status (0 when cut off). */
function attackerRequest(
  server: ServerProcess,
  options: { method: string; path: string; headers: Record<string, string | number>; body?: string },
): Promise<number> {
  return new Promise((resolve) => {
    const req = request(
      {
        host: '127.0.0.1',
        port: server.port,
        localAddress: ATTACKER,
        agent: false,
        method: options.method,
        path: options.path,
        headers: options.headers,
        timeout: 30_000,
      },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
        res.on('error', () => resolve(res.statusCode ?? 0));
      },
    );
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(0));
    req.end(options.body);
  });
}

// ---------------------------------------------------------------- the attacks

interface Attack {
  /** Sets up what the attack needs (not measured); returns the attack itself. */
  prepare(server: ServerProcess): Promise<() => Promise<string>>;
}

const attacks: Record<AttackName, Attack> = {
  // Item 1: tenant JSON Schemas that cost exponential time or heap, and uniqueItems over large arrays.
  schemas: {
    async prepare(server) {
      const account = await createAccount(server.url);
      const branch = { type: 'array', items: { $ref: '#/$defs/n' } };
      await makeFunctions(server, account, 'abuse-schemas', 's', [
        {
          name: 'deep',
          code: 'def main(input_data):\n    return {"ok": True}\n',
          input_schema: { type: 'object', properties: { x: { $ref: '#/$defs/n' } }, $defs: { n: { anyOf: [branch, { ...branch }] } } },
        },
        {
          name: 'uniq',
          code: 'def main(input_data):\n    return {"ok": True}\n',
          input_schema: { type: 'object', properties: { items: { type: 'array', uniqueItems: true } } },
        },
        {
          name: 'uniqout',
          code: 'def main(input_data):\n    return {"items": [{"a": i} for i in range(20000)]}\n',
          output_schema: { type: 'object', properties: { items: { type: 'array', uniqueItems: true } } },
        },
      ]);
      const nested = (depth: number): unknown => (depth === 0 ? 1 : [nested(depth - 1)]);
      const calls: Array<[string, Record<string, unknown>]> = [
        ['s__deep', { x: nested(19) }],
        ['s__uniq', { items: Array.from({ length: 40_000 }, (_, i) => ({ a: i })) }],
        ['s__uniqout', {}],
        ['s__deep', { x: nested(26) }],
      ];
      const clients = await Promise.all(
        Array.from({ length: 4 }, () => connect(`${server.url}/mcp/run/abuse-schemas?mode=tools`, account.key)),
      );
      return async () => {
        const outcomes = await loops(clients.length, Date.now() + seconds * 1000, async (index) => {
          const [tool, args] = calls[(index + Math.floor(Math.random() * calls.length)) % calls.length]!;
          return `${tool.slice(3)}: ${await callOutcome(clients[index]!, tool, args)}`;
        });
        await Promise.all(clients.map((client) => client.close().catch(() => {})));
        return describeOutcomes(outcomes);
      };
    },
  },

  // Item 3: scanning a 1 MB result against two 5 KB env values (two of 6 KB do not fit the 16 KB
  // header limit once base64-encoded), and an answer nested 400,000 deep.
  scanner: {
    async prepare(server) {
      const account = await createAccount(server.url);
      await makeFunctions(server, account, 'abuse-scanner', 'x', [
        {
          name: 'leak',
          required_env: ['K1', 'K2'],
          code: 'import os\ndef main(input_data):\n    v = os.environ["K1"]\n    near = v[:-1] + "!"\n    return {"text": (near * (1048000 // len(near)))}\n',
        },
        {
          name: 'deep',
          code: 'import os\nos.write(3, b\'{"ok":true,"result":\' + b"[" * 400000 + b"]" * 400000 + b"}\\n")\nos._exit(0)\n',
        },
      ]);
      const value = (seed: string) =>
        Array.from({ length: 5000 }, (_, i) => 'abcdefghijklmnopqrstuvwxyz0123456789'[(i * 7 + seed.charCodeAt(0)) % 36]).join('');
      const env = Buffer.from(JSON.stringify({ K1: value('a'), K2: value('b') })).toString('base64');
      const clients = await Promise.all(
        Array.from({ length: 4 }, () =>
          connect(`${server.url}/mcp/run/abuse-scanner?mode=tools`, account.key, 'v2', { 'X-MCPWorks-Env': env }),
        ),
      );
      return async () => {
        const outcomes = await loops(clients.length, Date.now() + seconds * 1000, async (index) => {
          const tool = index === 0 ? 'x__deep' : 'x__leak';
          return `${tool.slice(3)}: ${await callOutcome(clients[index]!, tool, {})}`;
        });
        await Promise.all(clients.map((client) => client.close().catch(() => {})));
        return describeOutcomes(outcomes);
      };
    },
  },

  // Item 4: 400 MB POSTs with a valid key (two loops announcing it by Content-Length, two chunked),
  // each loop sending its next POST as soon as the last one ends, for the whole phase.
  bodies: {
    async prepare(server) {
      const account = await createAccount(server.url);
      await makeFunctions(server, account, 'abuse-bodies', 'x', []);
      const size = 400 * MB;
      const chunk = Buffer.alloc(MB, 0x20);
      const post = (announced: boolean) =>
        new Promise<string>((resolve) => {
          let sent = 0;
          const headers: Record<string, string | number> = {
            authorization: `Bearer ${account.key}`,
            'content-type': 'application/json',
            accept: 'application/json, text/event-stream',
          };
          if (announced) headers['content-length'] = size;
          const req = request({
            host: '127.0.0.1',
            port: server.port,
            localAddress: ATTACKER,
            agent: false,
            method: 'POST',
            path: '/mcp/run/abuse-bodies',
            headers,
            timeout: 60_000,
          });
          let status = 0;
          const finish = () => resolve(`${status || 'cut'} after ${Math.round(sent / MB)} MB`);
          req.on('response', (res) => {
            status = res.statusCode ?? 0;
            res.resume();
            res.on('end', () => {
              req.destroy();
              finish();
            });
          });
          req.on('timeout', () => req.destroy());
          req.on('error', finish);
          req.on('close', finish);
          const pump = () => {
            while (sent < size && status === 0 && !req.destroyed) {
              sent += chunk.length;
              if (!req.write(chunk)) return void req.once('drain', pump);
            }
            if (sent >= size && !req.destroyed) req.end();
          };
          pump();
        });
      return async () => {
        const outcomes = await loops(4, Date.now() + seconds * 1000, async (index) =>
          (await post(index < 2)).replace(/after \d+ MB/, (sent) => (Number(sent.split(' ')[1]) <= 16 ? 'after ≤ 16 MB' : 'after > 16 MB')),
        );
        return describeOutcomes(outcomes);
      };
    },
  },

  // Item 5: thousands of idle, half-sent requests without authentication.
  connections: {
    async prepare(server) {
      const target = 15_000;
      return async () => {
        const sockets: Socket[] = [];
        let opened = 0;
        let refused = 0;
        let closedByServer = 0;
        const deadline = Date.now() + seconds * 1000;
        while (opened + refused < target && Date.now() < deadline) {
          const batch = Array.from(
            { length: Math.min(500, target - opened - refused) },
            () =>
              new Promise<void>((resolve) => {
                const socket = netConnect({ host: '127.0.0.1', port: server.port, localAddress: ATTACKER });
                socket.on('connect', () => {
                  opened++;
                  sockets.push(socket);
                  socket.write('POST /mcp/run/abuse HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n');
                  resolve();
                });
                socket.on('error', () => {
                  refused++;
                  resolve();
                });
                // Read what the server sends (a 503, a 408), so its close is seen.
                socket.resume();
                socket.on('end', () => closedByServer++);
              }),
          );
          await Promise.all(batch);
        }
        while (Date.now() < deadline) await sleep(200);
        const stillOpen = sockets.filter((socket) => !socket.readableEnded).length;
        for (const socket of sockets) socket.destroy();
        return `${opened} opened, ${refused} refused at connect, ${closedByServer} closed by the server, ${stillOpen} still open at the end`;
      };
    },
  },

  // Item 6: 100 unauthenticated /login loops while a real user logs in and uses a new key.
  login: {
    async prepare(server) {
      const victim = await createAccount(server.url);
      const user = await createAccount(server.url);
      return async () => {
        const deadline = Date.now() + seconds * 1000;
        const realLogins: number[] = [];
        const realStatuses = new Map<number, number>();
        const real = (async () => {
          while (Date.now() < deadline) {
            const started = performance.now();
            const login = await postJson(`${server.url}/login`, { email: user.email, password: user.password }).catch(() => ({
              status: 0,
              body: null,
            }));
            let status = login.status;
            if (status === 200) {
              // A key's first use: the check the issue saw answer 429.
              const key = await createKey(server.url, { ...user, token: login.body.token }, {}).catch(() => '');
              status = key
                ? (await fetch(`${server.url}/api/usage`, { headers: { authorization: `Bearer ${key}` } }).catch(() => ({ status: 0 })))
                    .status
                : 0;
            }
            realLogins.push(performance.now() - started);
            realStatuses.set(status, (realStatuses.get(status) ?? 0) + 1);
            await sleep(300);
          }
        })();
        const outcomes = await loops(100, deadline, async (index) => {
          const email = index % 2 === 0 ? victim.email : `nobody-${index}@example.com`;
          const body = JSON.stringify({ email, password: `wrong-${Math.random()}` });
          const status = await attackerRequest(server, {
            method: 'POST',
            path: '/login',
            headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
            body,
          });
          return `login ${status}`;
        });
        await real;
        const statuses = [...realStatuses.entries()].map(([status, count]) => `${count}× ${status}`).join(', ');
        return `attacker: ${describeOutcomes(outcomes)}; real user (login + new key's first use): ${statuses}, p99 ${ms(p99(realLogins))}`;
      };
    },
  },

  // Busy tenant code: 8 calls at a time of a Python function that spins for 2 s,
  // each run a session of its own: the cores the sandboxes take are the server's loop's to lose.
  runs: {
    async prepare(server) {
      const account = await createAccount(server.url);
      await makeFunctions(server, account, 'abuse-runs', 'x', [
        {
          name: 'spin',
          code: 'import time\ndef main(input_data):\n    end = time.time() + 2\n    while time.time() < end:\n        pass\n    return 1\n',
        },
      ]);
      const clients = await Promise.all(
        Array.from({ length: 8 }, () => connect(`${server.url}/mcp/run/abuse-runs?mode=tools`, account.key)),
      );
      return async () => {
        const outcomes = await loops(
          clients.length,
          Date.now() + seconds * 1000,
          async (index) => `spin: ${await callOutcome(clients[index]!, 'x__spin', {})}`,
        );
        await Promise.all(clients.map((client) => client.close().catch(() => {})));
        return describeOutcomes(outcomes);
      };
    },
  },

  // Item 8: 150 functions with large code and schemas, then tools/list in tool mode in a loop.
  catalog: {
    async prepare(server) {
      const account = await createAccount(server.url);
      const code = `def main(input_data):\n    return {"n": 1}\n# ${'x'.repeat(200_000)}\n`;
      const properties = Object.fromEntries(
        Array.from({ length: 300 }, (_, i) => [`field_${i}`, { type: 'string', description: 'd'.repeat(100) }]),
      );
      const made = await makeFunctions(
        server,
        account,
        'abuse-catalog',
        'big',
        Array.from({ length: 150 }, (_, i) => ({ name: `f${i}`, code, input_schema: { type: 'object', properties } })),
      );
      const clients = await Promise.all(
        Array.from({ length: 4 }, () => connect(`${server.url}/mcp/run/abuse-catalog?mode=tools`, account.key)),
      );
      return async () => {
        const latencies: number[] = [];
        const outcomes = await loops(clients.length, Date.now() + seconds * 1000, async (index) => {
          const started = performance.now();
          const listed = await clients[index]!.listTools();
          latencies.push(performance.now() - started);
          return `tools/list ${listed.tools.length} tools`;
        });
        await Promise.all(clients.map((client) => client.close().catch(() => {})));
        return `${made} of 150 functions made; ${describeOutcomes(outcomes)}, median ${ms(median(latencies))}`;
      };
    },
  },
};

// ---------------------------------------------------------------- the run

/** The main thread's ms on a CPU / ms waiting for one, per second of the phase. */
const loopFigures = (phase: Phase) => (phase.loop ? `${phase.loop.runMs.toFixed(0)}/${phase.loop.waitMs.toFixed(0)}` : '—');

/** A phase's probe latencies as `p50 / p99 / max ms (count)`. */
const spread = (latencies: number[]) =>
  `${quantile(latencies, 0.5).toFixed(1)} / ${p99(latencies).toFixed(1)} / ${Math.max(...latencies).toFixed(1)} ms (${latencies.length})`;

console.log(
  `abuse bench: each attack for up to ${seconds} s against \`mcpworks serve\` in its own process (embedded PGlite, trial tier's execution limits lifted); ` +
    `/healthz probed from another process (127.0.0.1, new connection each), attack traffic from ${ATTACKER}; ` +
    `${availableParallelism()} cores (${cpus()[0]?.model.trim() ?? 'unknown CPU'}); ${new Date().toISOString()}; load average ${loadavg()
      .map((load) => load.toFixed(2))
      .join(' ')}`,
);
const rows: string[][] = [
  [
    'attack',
    'idle p50/p99/max (probes)',
    'attack p50/p99/max (probes)',
    'p99 ratio',
    'floor p99 idle → attack',
    'probe failures',
    'idle mem',
    'peak mem',
    'growth',
    'idle CPU',
    'attack CPU',
    'procs',
    'loop run / wait for CPU',
    'server read',
    'clients CPU',
    'targets',
    'what the attack got',
  ],
];
let rssFallbacks = 0;
const threadLines: string[] = [];
const floorServer = values['no-floor'] ? undefined : await startFloorServer();
const floorProber = floorServer ? new Prober(floorServer.url) : undefined;
let server = await startServerProcess();
let prober = new Prober(server.url);
try {
  for (const name of only as AttackName[]) {
    if (server.exited) {
      prober.close();
      await stopServerProcess(server);
      server = await startServerProcess();
      prober = new Prober(server.url);
    }
    let got = '';
    let run: () => Promise<string>;
    try {
      run = await attacks[name].prepare(server);
    } catch (error) {
      rows.push([
        name,
        '—',
        '—',
        '—',
        '—',
        '—',
        '—',
        '—',
        '—',
        '—',
        '—',
        '—',
        '—',
        '—',
        '—',
        '—',
        `could not prepare: ${(error as Error).message.slice(0, 120)}`,
      ]);
      continue;
    }
    await settle(server);
    const idle = await measure(server, prober, floorProber, `${name} idle`, async () => void (await sleep(IDLE_SECONDS * 1000)));
    // Lowered for the attack only (raising it back needs root; where not permitted, the bench says so).
    if (attackerNice !== undefined && !setAttackerNice(attackerNice)) throw new Error('--attacker-nice: cannot set this process priority');
    const attack = await measure(server, prober, floorProber, `${name} attack`, async () => {
      got = await run().catch((error: Error) => `attack failed: ${error.message.slice(0, 120)}`);
    });
    if (attackerNice !== undefined) setAttackerNice(0);
    const idleP99 = p99(idle.latencies);
    const attackP99 = p99(attack.latencies);
    const idleMemory = median(idle.tree.map((sample) => sample.memoryMb));
    const peakMemory = Math.max(...attack.tree.map((sample) => sample.memoryMb));
    const ratio = attackP99 / idleP99;
    const growth = peakMemory - idleMemory;
    const met = !attack.died && ratio <= 3 && growth < 200;
    const cpu = (phase: Phase) => {
      const perSecond = cpuPerSecond(phase.tree);
      return perSecond === undefined ? '—' : `${perSecond.toFixed(2)} s/s`;
    };
    rssFallbacks = Math.max(
      rssFallbacks,
      ...idle.tree.map((sample) => sample.rssFallbacks),
      ...attack.tree.map((sample) => sample.rssFallbacks),
    );
    if (idle.threads && attack.threads) {
      // The threads that ran or waited most under attack, with their idle figures beside.
      const busiest = [...attack.threads.entries()]
        .sort((a, b) => b[1].runMs + b[1].waitMs - (a[1].runMs + a[1].waitMs))
        .slice(0, 16)
        .map(([label, rate]) => {
          const before = idle.threads!.get(label);
          return `${label} ${before ? `${before.runMs.toFixed(0)}/${before.waitMs.toFixed(0)}` : '—'} → ${rate.runMs.toFixed(0)}/${rate.waitMs.toFixed(0)}`;
        });
      threadLines.push(`${name}: ${busiest.join('; ')}`);
    }
    rows.push([
      name,
      spread(idle.latencies),
      spread(attack.latencies),
      `${ratio.toFixed(1)}×`,
      floorProber ? `${p99(idle.floor).toFixed(1)} → ${p99(attack.floor).toFixed(1)} ms` : '—',
      `${attack.failures} of ${attack.latencies.length}`,
      `${idleMemory.toFixed(0)} MB`,
      `${peakMemory.toFixed(0)} MB`,
      `${growth.toFixed(0)} MB`,
      cpu(idle),
      cpu(attack),
      `${Math.max(...idle.tree.map((sample) => sample.processes))}→${Math.max(...attack.tree.map((sample) => sample.processes))}`,
      `${loopFigures(idle)} → ${loopFigures(attack)}`,
      attack.readMbPerSecond === undefined ? '—' : `${attack.readMbPerSecond.toFixed(1)} MB/s`,
      `${attack.attackerCpu.toFixed(2)} s/s`,
      attack.died ? 'SERVER DIED' : met ? 'met' : 'missed',
      got,
    ]);
    // Let the server settle (runs finish, memory returns) before the next attack's idle figures.
    if (!server.exited) {
      const settle = Date.now() + 30_000;
      while (
        !server.exited &&
        Date.now() < settle &&
        !(await fetch(`${server.url}/healthz`, { signal: AbortSignal.timeout(2000) }).then(
          (r) => r.ok,
          () => false,
        ))
      )
        await sleep(200);
      await sleep(1000);
    }
  }
} finally {
  prober.close();
  floorProber?.close();
  floorServer?.child.kill();
  await stopServerProcess(server);
  if (cpuProfDir) writeFileSync(path.join(cpuProfDir, 'phases.json'), JSON.stringify(phases, null, 1));
}
printTable(rows);
console.log(
  'mem: PSS summed over the server and all its descendants (median idle, peak under attack); CPU: their utime+stime, reaped children included, ' +
    `in CPU seconds per second of the phase (${availableParallelism()} cores: at most ${availableParallelism()}.00); procs: most processes in the tree, idle→attack; ` +
    "loop run / wait for CPU: the server main thread's ms on a CPU / ms runnable but waiting for a CPU (its run-queue wait: a loaded machine, or busy sandboxes), per second of the phase, idle → attack (/proc/PID/task/PID/schedstat). " +
    'server read: what the server process read during the attack (rchar in /proc/PID/io: sockets, files, pipes), MB per second.' +
    (floorServer
      ? ' floor p99: the same probes, in the same phases, against a bare node:http server in a process and session of its own (what the machine alone gave a trivial answer).'
      : '') +
    ` clients CPU: this process's (the attacking clients') CPU seconds per second of the attack${attackerNice !== undefined ? `, at nice ${attackerNice} (--attacker-nice, its autogroup too)` : ''}; the server and the prober each run in a session of their own. Load average at the end: ${loadavg()
      .map((load) => load.toFixed(2))
      .join(' ')}.` +
    (rssFallbacks > 0 ? ` Up to ${rssFallbacks} process(es) per sample counted with RSS (smaps_rollup unreadable).` : ''),
);
if (threadLines.length > 0) {
  console.log(
    "\nthreads of the server's tree, ms on a CPU / ms waiting for one per second of the phase, idle → attack (process/thread; same names summed; threads that ended within a phase are missing from it):",
  );
  for (const line of threadLines) console.log(`  ${line}`);
}
