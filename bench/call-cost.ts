/**
 * Server CPU and wall time per metered call, by thread (issue 18: server CPU per metered call).
 *
 *   bench/call-cost [--tool hello|execute|env_status] [--seconds S] [--clients C] [--era v1|v2] [--warmup W] [--rounds R] [--json]
 *   (defaults: hello, 8 s a round, 1 client calling back to back, v2, 1000 warm-up calls, 1 round)
 *
 * The real server in this process (bench/lib/server.ts: embedded PGlite, or PostgreSQL when
 * MCPWORKS_TEST_DATABASE_URL is set) with `utils.hello` (Python, the hello-world template, whose
 * input and output schemas are checked on every call); the client (the official SDK) in a process of
 * its own (bench/lib/load.ts), so its work is not counted. Per call: the server process's CPU
 * (getrusage: every thread, kernel time included), split by thread from
 * /proc/self/task/TID/schedstat (nanoseconds on a CPU: the event loop, the embedded database's
 * thread at nice 5, the schema launcher's thread, libuv's pool, V8's helpers; worker threads keep
 * the process's name, so a thread is named with its nice value), every process under the server
 * (zygotes and their runs, helpers, schema workers, kernel time included) counted whole by a
 * control group of the bench's own (bench/lib/cgroup-cpu.ts: its usage less the server process's),
 * beside the /proc tree walk's figure (utime + stime with reaped children's, which loses the
 * workers the kernel reaps when a run's PID namespace is killed), and the calls' wall time. `--tool execute`: the
 * same function called from code mode (`execute` on /mcp/run/NS, `from functions import hello`), whose
 * call takes two bridge round trips (its input check, then its output_schema check). `--tool env_status`: the namespace's `_env_status` instead (unmetered, no
 * sandbox, no schema check: the MCP layer's own cost, beside the official SDK's no-op server). CPU counts are steadier than wall times on a shared machine: compare them,
 * alternating the builds compared. Prints figures; exits non-zero only if the bench cannot run.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { connect, type ClientEra } from '../src/test-support/harness.js';
import { openCgroupCpu } from './lib/cgroup-cpu.js';
import { startLoadClients } from './lib/load.js';
import { median, ms, printTable } from './lib/measure.js';
import { call, makeNamespace, startBenchServer, type CallSpec } from './lib/server.js';
import { treeCpu } from './lib/tree.js';

const { values } = parseArgs({
  options: {
    tool: { type: 'string', default: 'hello' },
    seconds: { type: 'string', default: '8' },
    clients: { type: 'string', default: '1' },
    era: { type: 'string', default: 'v2' },
    // V8 keeps compiling the request path's code for hundreds of calls: after 30 calls its compiler
    // threads still took 3-5 ms a call (and the event loop 2-3 ms more) that a server in steady
    // state does not spend. A long-running server is what the figures are about.
    warmup: { type: 'string', default: '1000' },
    rounds: { type: 'string', default: '1' },
    json: { type: 'boolean', default: false },
    label: { type: 'string', default: '' },
  },
});
const seconds = Number(values.seconds);
const clients = Number(values.clients);
const warmup = Number(values.warmup);
const rounds = Number(values.rounds);
const era = values.era as ClientEra;
if (!Number.isFinite(seconds) || seconds <= 0) throw new Error('--seconds must be a positive number');
if (!Number.isInteger(clients) || clients < 1) throw new Error('--clients must be a positive integer');
if (!Number.isInteger(warmup) || warmup < 0) throw new Error('--warmup must be a non-negative integer');
if (!Number.isInteger(rounds) || rounds < 1) throw new Error('--rounds must be a positive integer');
if (values.tool !== 'hello' && values.tool !== 'execute' && values.tool !== 'env_status')
  throw new Error('--tool must be hello, execute or env_status');
if (era !== 'v1' && era !== 'v2') throw new Error('--era must be v1 (2025, sessions) or v2 (2026)');

/** Nanoseconds on CPU of each live thread of this process, by thread id, with its name. */
function threadTimes(): Map<number, { name: string; ns: number }> {
  const times = new Map<number, { name: string; ns: number }>();
  for (const entry of readdirSync('/proc/self/task')) {
    try {
      const ns = Number(readFileSync(`/proc/self/task/${entry}/schedstat`, 'utf8').split(' ')[0]);
      const name = readFileSync(`/proc/self/task/${entry}/comm`, 'utf8').trim();
      // Worker threads keep the process's name; their nice value tells them apart (the database's 5, scan and schema workers 10).
      const stat = readFileSync(`/proc/self/task/${entry}/stat`, 'utf8');
      const nice = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]);
      times.set(Number(entry), { name: nice === 0 ? name : `${name} (nice ${nice})`, ns });
    } catch {
      // The thread ended between the listing and the read.
    }
  }
  return times;
}

/**
 * The threads this process had before the server started: V8's helpers (its compilers and the
 * garbage collector's parallel and concurrent work, shared by every thread's heap) and libuv's
 * pool (file system calls). Threads started since are the server's worker threads.
 */
const processThreads = new Set(readdirSync('/proc/self/task').map(Number));

/** The thread's group: the event loop (this process's main thread), V8's helpers and libuv's pool, or a worker thread by its nice value. */
function groupOf(tid: number, name: string): string {
  if (tid === process.pid) return 'event loop (main thread)';
  if (processThreads.has(tid)) return "V8's helpers (JIT, GC), libuv's pool";
  if (name.endsWith('(nice 5)')) return 'database thread (nice 5)';
  return `worker thread: ${name}`;
}

// Before the server forks anything: every process under it is then born in the group.
const cgroup = openCgroupCpu();
const group = 'unavailable' in cgroup ? undefined : cgroup;
const server = await startBenchServer();
let exitCode = 0;
try {
  const account = await makeNamespace(server, 'bench', 'utils', [{ name: 'hello', template: 'hello-world' }]);
  // Code mode is the run endpoint's default: `execute` is only listed without ?mode=tools.
  const url = `${server.url}/mcp/run/bench${values.tool === 'execute' ? '' : '?mode=tools'}`;
  const spec: CallSpec =
    values.tool === 'hello'
      ? { tool: 'utils__hello', args: { name: 'bench' }, expect: { greeting: 'Hello, bench!' } }
      : values.tool === 'execute'
        ? {
            tool: 'execute',
            args: { language: 'python', code: 'from functions import hello\nresult = hello(name="bench")' },
            expect: { greeting: 'Hello, bench!' },
          }
        : { tool: '_env_status', args: {}, expect: { ready: true } };
  const warm = await connect(url, account.key, era);
  for (let i = 0; i < warmup; i++) await call(warm, spec);
  await warm.close();

  for (let round = 0; round < rounds; round++) {
    const load = await startLoadClients({ url, key: account.key, era, clients, seconds, call: spec });
    group?.setApart(load.pid, 'clients');
    // The idle server's own background work (its supervisor's ticks, pool and zygote upkeep) over
    // as long as the calls will take: counted apart, so that a slow (loaded) round, whose fewer
    // calls each carry more of it, still shows what a call itself costs.
    const idleCpuBefore = process.cpuUsage();
    const idleThreadsBefore = threadTimes();
    const idleStarted = performance.now();
    await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
    const idleCpu = process.cpuUsage(idleCpuBefore);
    const idleThreads = threadTimes();
    const idleMs = performance.now() - idleStarted;
    const treeBefore = await treeCpu(process.pid, [load.pid]);
    const wholeBefore = group?.usageMs();
    const cpuBefore = process.cpuUsage();
    const threadsBefore = threadTimes();
    const result = await load.go();
    const cpu = process.cpuUsage(cpuBefore);
    const wholeAfter = group?.usageMs();
    const threadsAfter = threadTimes();
    const treeAfter = await treeCpu(process.pid, [load.pid]);
    await load.exited();
    const calls = result.latencies.length;
    const groups = new Map<string, number>();
    for (const [tid, after] of threadsAfter) {
      const group = groupOf(tid, after.name);
      groups.set(group, (groups.get(group) ?? 0) + (after.ns - (threadsBefore.get(tid)?.ns ?? 0)) / 1e6);
    }
    const serverMs = (cpu.user + cpu.system) / 1000;
    // The idle rate of CPU, scaled to the calls' time, less: what the calls added.
    const idleShare = result.elapsedMs / idleMs;
    const idleServerMs = ((idleCpu.user + idleCpu.system) / 1000) * idleShare;
    const idleGroups = new Map<string, number>();
    for (const [tid, after] of idleThreads) {
      const group = groupOf(tid, after.name);
      idleGroups.set(group, (idleGroups.get(group) ?? 0) + ((after.ns - (idleThreadsBefore.get(tid)?.ns ?? 0)) / 1e6) * idleShare);
    }
    const figures = {
      label: values.label,
      tool: spec.tool,
      era,
      clients,
      calls,
      errors: result.errors,
      perSecond: (calls * 1000) / result.elapsedMs,
      wallMedianMs: median(result.latencies),
      serverMsPerCall: serverMs / calls,
      serverUserMsPerCall: cpu.user / 1000 / calls,
      serverSystemMsPerCall: cpu.system / 1000 / calls,
      threadsMsPerCall: Object.fromEntries([...groups].sort((a, b) => b[1] - a[1]).map(([name, value]) => [name, value / calls])),
      idleServerMsPerCall: idleServerMs / calls,
      netServerMsPerCall: (serverMs - idleServerMs) / calls,
      netThreadsMsPerCall: Object.fromEntries(
        [...groups].sort((a, b) => b[1] - a[1]).map(([name, value]) => [name, (value - (idleGroups.get(name) ?? 0)) / calls]),
      ),
      // The group's usage less the server process's (rusage, read beside it): every process under it, whole.
      underWholeMsPerCall:
        wholeBefore !== undefined && wholeAfter !== undefined ? (wholeAfter - wholeBefore - serverMs) / calls : undefined,
      underMsPerCall: (treeAfter.restMs - treeBefore.restMs) / calls,
      clientMsPerCall: result.cpuMs / calls,
    };
    if (values.json) {
      console.log(JSON.stringify(figures));
      continue;
    }
    console.log(
      `call-cost: ${spec.tool} (${{ hello: 'Python, tool mode', execute: 'Python code mode calling hello', env_status: 'unmetered, no sandbox' }[values.tool]}), ${clients} client(s), ${era}, ${seconds} s: ${calls} calls, ${result.errors} errors, ` +
        `${figures.perSecond.toFixed(1)}/s, wall median ${ms(figures.wallMedianMs)}`,
    );
    const net = (name: string, value: number) => ((value - (idleGroups.get(name) ?? 0)) / calls).toFixed(2);
    printTable([
      ['CPU per call, ms', 'measured', 'less idle'],
      ['server process (getrusage)', figures.serverMsPerCall.toFixed(2), figures.netServerMsPerCall.toFixed(2)],
      ['  of it user / system', `${figures.serverUserMsPerCall.toFixed(2)} / ${figures.serverSystemMsPerCall.toFixed(2)}`, ''],
      ...[...groups]
        .sort((a, b) => b[1] - a[1])
        .filter(([, value]) => value / calls >= 0.01)
        .map(([name, value]) => [`  thread: ${name}`, (value / calls).toFixed(2), net(name, value)]),
      [
        group ? `every process under it (${group.kind}, whole)` : 'every process under it (no control group)',
        figures.underWholeMsPerCall?.toFixed(2) ?? '',
        '',
      ],
      ['  the same by the /proc tree walk (old: no killed workers)', figures.underMsPerCall.toFixed(2), ''],
      ['client process', figures.clientMsPerCall.toFixed(2), ''],
    ]);
    console.log(
      `less idle: the server's CPU while idle for ${seconds} s before the calls, at the same rate over the calls' time, taken off. ` +
        (group
          ? "whole: the control group's usage (every process as it runs, whoever reaps it) less the server process's."
          : `no control group (${(cgroup as { unavailable: string }).unavailable}): only the tree walk, which undercounts.`),
    );
  }
} catch (error) {
  console.error(`bench failed: ${(error as Error).stack ?? error}`);
  exitCode = 1;
} finally {
  await server.stop();
  await group?.close();
}
process.exit(exitCode);
