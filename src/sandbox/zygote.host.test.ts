// The Python zygote: runs forked from a warm fork-server, in real bubblewrap sandboxes. What one run
// may see of another (files, globals, env, processes), what a child can do to a sibling, its limits,
// and what happens when a zygote dies. The escape suite (escape.host.test.ts) also runs its Python
// attempts in zygote children.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { getEventListeners } from 'node:events';
import { syncBuiltinESMExports } from 'node:module';
import { after, before, describe, it } from 'node:test';
import { sandboxLimitsFor, type SandboxLimits, type SandboxOutcome, type SandboxRequest } from '../core/sandbox.js';
import { DEFAULT_TIER, limitsFor } from '../core/tiers.js';
import { createBubblewrapSandbox, zygoteFromEnvironment, type BubblewrapSandbox } from './bubblewrap.js';
import { packageRoot } from './host.js';
import { zygoteRunsActive } from '../test-support/processes.js';
import { freshToken } from './zygote/child.js';

const limits = sandboxLimitsFor(limitsFor(DEFAULT_TIER));
const WARM = { group: 'zygote-test', imports: ['numpy'] };
const CANARY = `zygote-canary-${process.pid}`;
let sandbox: BubblewrapSandbox;

function py(code: string, extra: Partial<SandboxRequest> = {}): Promise<SandboxOutcome> {
  return sandbox.run({ language: 'python', code, input: {}, limits, warm: WARM, ...extra });
}

function resultOf(outcome: SandboxOutcome): any {
  assert.equal(outcome.ok, true, `expected success, got ${JSON.stringify(outcome)}`);
  return (outcome as { result: unknown }).result;
}

/** Runs once with these limits (starting their zygote) and waits until it has a child ready. */
async function warmUp(runLimits: SandboxLimits = limits, warm = WARM, on: BubblewrapSandbox = sandbox): Promise<void> {
  const run = () => on.run({ language: 'python', code: 'result = 1', input: {}, limits: runLimits, entry: 'script', warm });
  resultOf(await run());
  for (let waited = 0; waited < 30_000; waited += 50) {
    const before = on.zygoteStats()?.runs ?? 0;
    resultOf(await run());
    if ((on.zygoteStats()?.runs ?? 0) > before) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error('the zygote never became ready');
}

/** Every process's parent, from /proc. */
function processParents(): Map<number, number> {
  const parents = new Map<number, number>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      parents.set(Number(entry), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch {
      // gone
    }
  }
  return parents;
}

/** Zygote processes below this one (not their forked children, which share the command line). */
function zygotePids(): number[] {
  const parents = processParents();
  const below = (pid: number): boolean => {
    for (let current = parents.get(pid); current !== undefined && current > 1; current = parents.get(current)) {
      if (current === process.pid) return true;
    }
    return false;
  };
  const isZygoteCommand = (pid: number) => {
    try {
      // The interpreter itself: bubblewrap's own command lines name the script too.
      const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      return argv[0]!.includes('python') && argv.includes('/sandbox/zygote.py');
    } catch {
      return false;
    }
  };
  return [...parents.keys()].filter((pid) => below(pid) && isZygoteCommand(pid) && !isZygoteCommand(parents.get(pid)!));
}

/** The processes below `roots` (not themselves): a zygote's children (P1) and their workers (P2). */
function descendantsOf(roots: readonly number[]): number[] {
  const parents = processParents();
  const found = new Set<number>();
  let grew = true;
  while (grew) {
    grew = false;
    for (const [pid, parent] of parents) {
      if (!found.has(pid) && (roots.includes(parent) || found.has(parent))) {
        found.add(pid);
        grew = true;
      }
    }
  }
  return [...found];
}

function sigkill(pid: number): boolean {
  try {
    process.kill(pid, 'SIGKILL');
    return true;
  } catch {
    return false; // gone meanwhile
  }
}

/**
 * Kills every zygote and every child it forked, in one synchronous turn: a process with SIGKILL
 * pending never runs its own code again nor forks, and this process's event loop (the host's)
 * cannot send a request before it is done. So no child can have begun a run, and the host has
 * noticed none of it. Returns how many zygotes were killed.
 */
function killZygotesWithChildren(): number {
  const zygotes = zygotePids().filter(sigkill);
  const killed = new Set<number>();
  for (let fresh = descendantsOf(zygotes); fresh.length > 0; fresh = descendantsOf(zygotes).filter((pid) => !killed.has(pid))) {
    for (const pid of fresh) {
      sigkill(pid);
      killed.add(pid);
    }
  }
  return zygotes.length;
}

/** Kills the workers (P2) of every zygote's spare children, and nothing else: their zygotes live on. */
function killSpareWorkers(): number {
  const zygotes = zygotePids();
  const parents = processParents();
  const firsts = new Set([...parents].filter(([, parent]) => zygotes.includes(parent)).map(([pid]) => pid));
  return [...parents].filter(([, parent]) => firsts.has(parent)).filter(([pid]) => sigkill(pid)).length;
}

/**
 * Runs that tell the host, through the bridge, that their code has begun: `count(mark)` is how many
 * times a run's code ran. Half use `entry: 'script'`, half `main(input_data)`.
 */
function countedRuns(count: Map<string, number>, runs: number, extra: Partial<SandboxRequest> = {}) {
  const bridge = async (message: unknown) => {
    const mark = (message as { mark?: unknown } | null)?.mark;
    if (typeof mark === 'string') count.set(mark, (count.get(mark) ?? 0) + 1);
    return { ok: true, result: null };
  };
  return Array.from({ length: runs }, (_, index) => {
    const mark = `run-${index}-${crypto.randomUUID()}`;
    const script = index % 2 === 0;
    const code = script
      ? `import _mcpworks_bridge\n_mcpworks_bridge.call({"mark": ${JSON.stringify(mark)}})\nresult = ${index}\n`
      : `import _mcpworks_bridge\ndef main(input_data):\n    _mcpworks_bridge.call({"mark": ${JSON.stringify(mark)}})\n    return input_data["n"]\n`;
    const outcome = sandbox.run({
      language: 'python',
      code,
      input: { n: index },
      limits,
      warm: WARM,
      bridge,
      ...extra,
      entry: script ? 'script' : 'main',
    });
    return { mark, index, outcome };
  });
}

before(async () => {
  // What the server process holds that neither the zygote nor a run may see.
  process.env.MCPWORKS_ZYGOTE_TEST_CANARY = CANARY;
  sandbox = createBubblewrapSandbox({ network: false, pool: false, zygote: true });
  await warmUp();
});

after(async () => {
  delete process.env.MCPWORKS_ZYGOTE_TEST_CANARY;
  await sandbox.close();
});

describe('python zygote', () => {
  it("is started from the spawner process, not forked from the server's main thread", () => {
    const parentOf = (pid: number) => {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    };
    const zygotes = zygotePids();
    assert.ok(zygotes.length > 0, 'a zygote runs');
    for (const zygote of zygotes) {
      // Its ancestors up to this process: the helper and bubblewrap, then the spawner.
      const chain: string[] = [];
      for (let pid = parentOf(zygote); pid !== process.pid && pid > 1; pid = parentOf(pid))
        chain.push(readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' '));
      assert.ok(
        chain.some((command) => command.includes('host-bin/spawner.cjs')),
        `zygote ${zygote} is below the spawner: ${JSON.stringify(chain)}`,
      );
    }
  });

  it('runs are forked children of a warm zygote, each with only its own env', async () => {
    const before = sandbox.zygoteStats()!.runs;
    const code =
      'import os, sys\ndef main(input_data):\n    return {"env": os.environ.get("TOKEN"), "numpy": "numpy" in sys.modules, "pid": os.getpid()}\n';
    const first = resultOf(await py(code, { env: { TOKEN: 'first' } }));
    const second = resultOf(await py(code, { env: {} }));
    assert.deepEqual(first, { env: 'first', numpy: true, pid: 2 });
    assert.deepEqual(second, { env: null, numpy: true, pid: 2 });
    assert.equal(sandbox.zygoteStats()!.runs, before + 2);
  });

  it("a run cannot see the previous run's files, globals or env", async () => {
    const leave = [
      'import builtins, os, sys, numpy',
      'open("/tmp/left", "w").write("x")',
      'open("/dev/shm/left", "w").write("x")',
      'open("left-in-cwd", "w").write("x")',
      'os.environ["LEFT"] = "x"',
      'numpy.LEFT = 1',
      'builtins.LEFT = 1',
      'sys.modules["left_behind"] = sys',
      'result = "left"',
    ].join('\n');
    assert.equal(resultOf(await py(leave, { entry: 'script', env: { SECRET_TOKEN: 'hunter2' } })), 'left');
    const look = [
      'import builtins, os, sys, numpy',
      'result = {"tmp": os.listdir("/tmp"), "shm": os.listdir("/dev/shm"), "cwd": os.listdir("."), "env": sorted(k for k in os.environ if k in ("LEFT", "SECRET_TOKEN")),',
      '  "numpy": hasattr(numpy, "LEFT"), "builtins": hasattr(builtins, "LEFT"), "module": "left_behind" in sys.modules}',
    ].join('\n');
    assert.deepEqual(resultOf(await py(look, { entry: 'script' })), {
      tmp: [],
      shm: [],
      // Its working directory too: a child that kept the zygote's (the /tmp beneath its own) shares it with every run.
      cwd: [],
      env: [],
      numpy: false,
      builtins: false,
      module: false,
    });
  });

  it("preloads code mode's package from its read-only mount: every run finds it imported, none sees another's changes to it", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'zygote-preload-'));
    try {
      mkdirSync(path.join(dir, 'python', 'preloaded'), { recursive: true });
      writeFileSync(path.join(dir, 'python', 'preloaded', '__init__.py'), 'import sys\nLOADED_BY = sys.argv[0]\nstate = []\n');
      for (const sub of ['', 'python', 'python/preloaded']) chmodSync(path.join(dir, sub), 0o755);
      const request: Partial<SandboxRequest> = {
        entry: 'script',
        mounts: [{ source: dir, target: '/opt/mcpworks' }],
        libraryPaths: ['/opt/mcpworks/python'],
        warm: { group: 'zygote-preload', imports: [], preload: 'preloaded' },
      };
      const code = [
        'import sys',
        'before = "preloaded" in sys.modules',
        'import preloaded',
        'preloaded.state.append(1)',
        'result = [before, len(preloaded.state), preloaded.LOADED_BY]',
      ].join('\n');
      // The first run may start cold while its zygote starts; then runs are its children.
      const EXPECTED = JSON.stringify([true, 1, '/sandbox/zygote.py']);
      let seen: unknown;
      for (let waited = 0; waited < 30_000 && JSON.stringify(seen) !== EXPECTED; waited += 50) {
        seen = resultOf(await py(code, request));
        if (JSON.stringify(seen) !== EXPECTED) await new Promise((resolve) => setTimeout(resolve, 50));
      }
      assert.deepEqual(seen, [true, 1, '/sandbox/zygote.py']);
      assert.deepEqual(resultOf(await py(code, request)), [true, 1, '/sandbox/zygote.py']);
      // Outside the run's mounts nothing is preloaded.
      const outside = { ...request, libraryPaths: ['/tmp'] };
      assert.equal(resultOf(await py('import sys\nresult = "preloaded" in sys.modules', outside)), false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("a run cannot see the previous run's System V IPC objects (shared memory, message queues, semaphores)", async () => {
    // Negative: a child that keeps the zygote's IPC namespace: objects outlive the run that made them.
    const ipc = (make: boolean) =>
      [
        'import ctypes',
        'libc = ctypes.CDLL(None, use_errno=True)',
        'KEY = 0x4D435057',
        'result = [libc.shmget(KEY, 0, 0), libc.msgget(KEY, 0), libc.semget(KEY, 0, 0)]',
        ...(make
          ? [
              'made = [libc.shmget(KEY, 4096, 0o1600), libc.msgget(KEY, 0o1600), libc.semget(KEY, 1, 0o1600)]',
              'assert min(made) >= 0, made',
            ]
          : []),
      ].join('\n');
    const before = sandbox.zygoteStats()!.runs;
    assert.deepEqual(resultOf(await py(ipc(true), { entry: 'script' })), [-1, -1, -1]);
    assert.deepEqual(resultOf(await py(ipc(false), { entry: 'script' })), [-1, -1, -1]);
    assert.equal(sandbox.zygoteStats()!.runs, before + 2, 'both ran in zygote children');
  });

  it('a child cannot see, signal or trace a sibling, its own init or the zygote', async () => {
    const sibling = py('import time\ntime.sleep(1.5)\nresult = "alive"\n', { entry: 'script', env: { SIBLING_SECRET: 'sibling-value' } });
    await zygoteRunsActive(sandbox, 1, 300);
    const probe = `
import ctypes, errno, os, signal
libc = ctypes.CDLL(None, use_errno=True)
me = os.getpid()
alive = []
for pid in range(1, 4096):
    if pid == me:
        continue
    try:
        os.kill(pid, 0)
        alive.append(pid)
    except ProcessLookupError:
        pass
    except PermissionError:
        alive.append(pid)
ctypes.set_errno(0)
traced = libc.ptrace(16, 1, 0, 0)  # PTRACE_ATTACH to this run's init
trace_errno = errno.errorcode.get(ctypes.get_errno(), "")
try:
    open("/proc/1/environ").read()
    init_environ = "read"
except PermissionError:
    init_environ = "PermissionError"
init_program = open("/proc/1/comm").read().strip()
os.kill(1, signal.SIGKILL)  # ignored: init cannot be killed from inside its namespace
status = {line.split(":")[0]: line.split(":")[1].strip() for line in open("/proc/self/status") if ":" in line}
environs = ""
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:
            environs += open(f"/proc/{pid}/environ", "rb").read().decode("latin1")
        except OSError:
            pass
result = {
    "others": alive, "procs": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
    "ptrace": [traced, trace_errno], "init_environ": init_environ, "init_program": init_program,
    "caps": [status["CapEff"], status["CapPrm"], status["CapBnd"], status["CapAmb"]],
    "seccomp": status["Seccomp"], "no_new_privs": status["NoNewPrivs"],
    "sibling_secret_seen": "sibling-value" in environs,
    "zygote_mounts": [os.listdir(d) for d in ("/sandbox/zygote/sock", "/sandbox/zygote/cg-memory", "/sandbox/zygote/cg-pids")],
    "cgroup_paths": sorted({line.strip().split(":", 2)[2] for line in open("/proc/self/cgroup") if line.strip()}),
}
`;
    const seen = resultOf(await py(probe, { entry: 'script' }));
    assert.deepEqual(seen.others, [1], 'only its own init is visible, not a sibling or the zygote');
    assert.deepEqual(seen.procs, [1, 2]);
    assert.deepEqual(seen.ptrace, [-1, 'EPERM']);
    assert.equal(seen.init_environ, 'PermissionError');
    // P1 became the init program (mcpworks-zygote-init.c): undumpable from its exec.
    assert.equal(seen.init_program, 'zygote-init');
    assert.deepEqual(seen.caps, ['0000000000000000', '0000000000000000', '0000000000000000', '0000000000000000']);
    assert.equal(seen.seccomp, '2');
    assert.equal(seen.no_new_privs, '1');
    assert.equal(seen.sibling_secret_seen, false);
    assert.deepEqual(seen.zygote_mounts, [[], [], []], 'the cgroup and socket directories are unmounted before the run');
    // Its own cgroup namespace, rooted at its run's groups: no host cgroup path shows. (v1 cpu: it
    // joined its instance's CPU group after, seen by its random name, never the server's pid.)
    for (const path of seen.cgroup_paths) assert.match(path, /^\/(mcpworks-sandbox-instance-[0-9a-f]{16})?$/);
    assert.equal(resultOf(await sibling), 'alive');
  });

  it("without the init program (a build before it), each child's P1 is forked, waits itself and is undumpable", async () => {
    // Negative: P1 without its prctl is dumpable to its run (same user): its environ reads.
    const forked = createBubblewrapSandbox({ network: false, pool: false, zygote: true, paths: { zygoteInit: null } });
    try {
      const warm = { group: 'zygote-no-init', imports: [] };
      const probe = [
        'import ctypes, errno',
        'libc = ctypes.CDLL(None, use_errno=True)',
        'ctypes.set_errno(0)',
        'traced = libc.ptrace(16, 1, 0, 0)',
        'try:',
        '    open("/proc/1/environ").read()',
        '    environ = "read"',
        'except PermissionError:',
        '    environ = "PermissionError"',
        'result = [open("/proc/1/comm").read().strip(), environ, traced, errno.errorcode.get(ctypes.get_errno(), "")]',
      ].join('\n');
      await warmUp(limits, warm, forked);
      const before = forked.zygoteStats()!.runs;
      const seen = resultOf(await forked.run({ language: 'python', code: probe, input: {}, limits, entry: 'script', warm }));
      assert.equal(forked.zygoteStats()!.runs, before + 1, 'the probe ran in a zygote child');
      assert.deepEqual(seen, ['python3', 'PermissionError', -1, 'EPERM']);
    } finally {
      await forked.close();
    }
  });

  it('a child whose P1 cannot run the init program waits in place, and its zygote forks every later child (suspended for that run only)', async () => {
    // A vforked P1 whose exec fails waits itself, on the zygote's memory: the zygote cannot fork
    // until that run ends. Here every exec fails (not a program); one spare at a time, so a run
    // that finds none waits for the zygote's next fork.
    const dir = mkdtempSync(path.join(tmpdir(), 'zygote-init-'));
    const notProgram = path.join(dir, 'not-a-program');
    writeFileSync(notProgram, 'not a program\n');
    chmodSync(notProgram, 0o755);
    const failing = createBubblewrapSandbox({
      network: false,
      pool: false,
      zygote: { minSpares: 1, maxSpares: 1 },
      paths: { zygoteInit: notProgram },
    });
    try {
      const warm = { group: 'zygote-init-fails', imports: [] };
      const run = (code: string) => failing.run({ language: 'python', code, input: {}, limits, entry: 'script', warm });
      await warmUp(limits, warm, failing);
      const before = failing.zygoteStats()!.runs;
      const started = Date.now();
      const long = run('import time\ntime.sleep(6)\nresult = open("/proc/1/comm").read().strip()').then((outcome) => ({
        comm: resultOf(outcome),
        ms: Date.now() - started,
      }));
      await new Promise((resolve) => setTimeout(resolve, 500));
      const short = await run('result = open("/proc/1/comm").read().strip()').then((outcome) => ({
        comm: resultOf(outcome),
        ms: Date.now() - started,
      }));
      const longDone = await long;
      assert.equal(failing.zygoteStats()!.runs, before + 2, 'both were zygote children');
      // P1 waited itself: the zygote's Python, as it was forked (no init program).
      assert.deepEqual([longDone.comm, short.comm], ['python3', 'python3']);
      // The short run's child was forked while the long run ran: the zygote was not suspended.
      assert.ok(short.ms < longDone.ms - 2000, `short run done at ${short.ms} ms, long one at ${longDone.ms} ms`);
    } finally {
      await failing.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("a child's memory holds no other child's token", async () => {
    // Every token the host can hand out (child.ts cuts them, 16 bytes each, from a pool it fills
    // with randomFillSync), recorded here: each fill's every slice, issued or not yet.
    const tokens = new Set<string>();
    const draw = crypto.randomFillSync;
    (crypto as { randomFillSync: unknown }).randomFillSync = (buffer: Buffer, ...rest: unknown[]) => {
      const filled = (draw as (buffer: Buffer, ...rest: unknown[]) => Buffer)(buffer, ...rest);
      if (Buffer.isBuffer(filled) && filled.length % 16 === 0)
        for (let offset = 0; offset < filled.length; offset += 16) tokens.add(filled.toString('hex', offset, offset + 16));
      return filled;
    };
    syncBuiltinESMExports();
    // Tokens are drawn until the pool is refilled: every child from here on has a recorded token.
    while (tokens.size === 0) freshToken();
    try {
      // A zygote without imports: less memory to scan. Children forked before the scanning one,
      // and spares forked while requests were queued.
      const plain = { group: 'token-scan', imports: [] };
      await warmUp(limits, plain);
      await Promise.all(Array.from({ length: 6 }, () => py('import time\ntime.sleep(0.2)\nresult = 1', { entry: 'script', warm: plain })));
      await warmUp(limits, plain);
      const scan = `import re
found = set()
with open("/proc/self/maps") as maps, open("/proc/self/mem", "rb", buffering=0) as mem:
    for line in maps:
        fields = line.split()
        if "rw" not in fields[1] or (len(fields) > 5 and fields[5] in ("[vvar]", "[vsyscall]", "[vvar_vclock]")):
            continue
        start, end = (int(part, 16) for part in fields[0].split("-"))
        try:
            mem.seek(start)
            chunk = mem.read(end - start)
        except (OSError, OverflowError, ValueError):
            continue
        found.update(match.group().decode() for match in re.finditer(rb"[0-9a-f]{32}", chunk))
        del chunk
result = sorted(found)
`;
      const runs = sandbox.zygoteStats()!.runs;
      const seen: string[] = resultOf(await py(scan, { entry: 'script', warm: plain }));
      assert.equal(sandbox.zygoteStats()!.runs, runs + 1, 'the scan ran in a zygote child');
      // Each run had a child (and a token) of its own: tokens of other children to be found.
      assert.ok(runs >= 6 && tokens.size >= 8, `children forked before the scan: ${runs}; tokens drawn: ${tokens.size}`);
      // Its own token (it connected with it) may be there; no other child's.
      const known = seen.filter((candidate) => tokens.has(candidate));
      assert.ok(known.length <= 1, `tokens of ${known.length - 1} other children found`);
    } finally {
      (crypto as { randomFillSync: unknown }).randomFillSync = draw;
      syncBuiltinESMExports();
    }
  });

  it("a child's rlimits, session, dumpable flag, signal dispositions and stdin are a cold run's", async () => {
    // The worker's process state is set in C before it returns into Python (zygote-child.c); a cold
    // run's by the helper and bubblewrap. Every rlimit, not only those the zygote is given.
    const probe = `import ctypes, os, resource, sys
status = {line.split(":")[0]: line.split(":")[1].strip() for line in open("/proc/self/status") if ":" in line}
result = {
    "limits": {name: list(resource.getrlimit(getattr(resource, name))) for name in sorted(n for n in dir(resource) if n.startswith("RLIMIT_"))},
    "dumpable": ctypes.CDLL(None).prctl(3, 0, 0, 0, 0),
    # Signals 1-31 (above them, glibc's own, and what the server inherited: 32 was ignored in a CI run).
    "signals": [format(int(status[name], 16) & 0x7FFFFFFF, "08x") for name in ("SigIgn", "SigCgt", "SigBlk")],
    "stdin": [os.readlink(f"/proc/self/fd/{sys.stdin.fileno()}"), sys.stdin.read()],
    # Which init: P1 (the zygote's Python) in a zygote child, bubblewrap in a cold run.
    "init": open("/proc/1/comm").read().strip(),
}
# Its restartable sequence (glibc's, which sched_getcpu reads) is registered with the kernel and
# follows it from CPU to CPU (one CPU here: only the x86_64 check below can tell).
libc = ctypes.CDLL(None, use_errno=True)
cpus = sorted(os.sched_getaffinity(0))
result["cpu_followed"] = []
for cpu in cpus + cpus:
    os.sched_setaffinity(0, {cpu})
    result["cpu_followed"].append(libc.sched_getcpu() == cpu)
os.sched_setaffinity(0, cpus)
if os.uname().machine == "x86_64":
    # Registering glibc's area again: EBUSY if it is registered, 0 (registers it) if not.
    thread = ctypes.c_ulong(0)
    libc.syscall(158, 0x1003, ctypes.byref(thread))  # arch_prctl(ARCH_GET_FS): the thread pointer
    area = thread.value + ctypes.c_long.in_dll(libc, "__rseq_offset").value
    ctypes.set_errno(0)
    registered = libc.syscall(334, ctypes.c_void_p(area), max(32, ctypes.c_uint.in_dll(libc, "__rseq_size").value), 0, 0x53053053)
    result["rseq"] = [registered, os.strerror(ctypes.get_errno())]
`;
    const before = sandbox.zygoteStats()!.runs;
    const forked = resultOf(await py(probe, { entry: 'script' }));
    assert.equal(sandbox.zygoteStats()!.runs, before + 1, 'the probe was given to a zygote child');
    const plain = createBubblewrapSandbox({ network: false, pool: false, zygote: false });
    let cold: any;
    try {
      cold = resultOf(await plain.run({ language: 'python', code: probe, input: {}, limits, entry: 'script', warm: WARM }));
    } finally {
      await plain.close();
    }
    const session = 'import os\nresult = [os.getsid(0) == os.getpid(), os.getsid(0) == os.getsid(1)]\n';
    // A child whose set-up failed hands its run to the cold path, which would compare a cold run with itself.
    assert.equal(cold.init, 'bwrap');
    assert.notEqual(forked.init, cold.init, 'the probe ran in a zygote child');
    delete forked.init;
    delete cold.init;
    assert.deepEqual(forked, cold);
    // A session of its own (not its init's, nor the zygote's), where a cold run has bubblewrap's.
    assert.deepEqual(resultOf(await py(session, { entry: 'script' })), [true, false]);
    // And what they are (so that both cannot drift together unnoticed).
    assert.deepEqual(forked.limits.RLIMIT_CPU, [limits.cpuSeconds, limits.cpuSeconds + 1]);
    assert.deepEqual(forked.limits.RLIMIT_FSIZE, [limits.maxFileBytes, limits.maxFileBytes]);
    assert.deepEqual(forked.limits.RLIMIT_CORE, [0, 0]);
    assert.deepEqual(forked.limits.RLIMIT_NOFILE, [1024, 1024]);
    assert.equal(forked.dumpable, 1);
    // A vforked P1 (CLONE_VM) has no rseq registration, nor had the worker it forked, until the
    // worker registered glibc's area again (zygote-child.c): its sched_getcpu read a stale CPU.
    assert.ok(forked.cpu_followed.every(Boolean), JSON.stringify(forked.cpu_followed));
    if (forked.rseq !== undefined) assert.deepEqual(forked.rseq, [-1, 'Device or resource busy']);
    // SIGPIPE (13) and SIGXFSZ (25) ignored, as Python sets them; only SIGINT caught (KeyboardInterrupt): not SIGCHLD.
    assert.deepEqual(forked.signals, ['01001000', '00000002', '00000000']);
    assert.deepEqual(forked.stdin, ['/dev/null', '']);
  });

  it("a child's output is complete, and none of it reaches the next child (stdio made once in the zygote)", async () => {
    const code = 'import sys\nsys.stdout.write("o" * 50000)\nsys.stderr.write("e" * 1000)\nprint("tail", end="")\nresult = 1\n';
    const first = await py(code, { entry: 'script' });
    assert.equal(resultOf(first), 1);
    assert.equal(first.stdout, `${'o'.repeat(50000)}tail`);
    assert.equal(first.ok && first.stderr, 'e'.repeat(1000));
    const next = await py('result = 2', { entry: 'script' });
    assert.equal(resultOf(next), 2);
    assert.equal(next.stdout, '');
    assert.equal(next.ok && next.stderr, '');
  });

  it("a child's output is complete when the host reads its answer first (output in its streams' buffers then)", async () => {
    // epoll can hand the host a run's answer before the output the runner wrote ahead of it: the
    // channel, reported before (level-triggered, so listed first), is polled as the kernel gathers
    // a batch while stdout's and stderr's bytes arriving meanwhile wait for the next. Runs side by
    // side widen that window (2 cores at load 6-12: 1 to 4 of these 240 runs lost output so).
    const code = 'import sys\nsys.stdout.write("o" * 20000)\nsys.stderr.write("e" * 300)\nprint("tail", end="")\nresult = 1\n';
    const incomplete: string[] = [];
    for (let round = 0; round < 60; round++) {
      const outcomes = await Promise.all(Array.from({ length: 4 }, () => py(code, { entry: 'script' })));
      for (const outcome of outcomes) {
        assert.equal(resultOf(outcome), 1);
        const stderr = outcome.ok ? outcome.stderr : '';
        if (outcome.stdout !== `${'o'.repeat(20000)}tail` || stderr !== 'e'.repeat(300))
          incomplete.push(`round ${round}: stdout ${outcome.stdout.length} bytes, stderr ${stderr.length}`);
      }
    }
    assert.deepEqual(incomplete, []);
  });

  it("a run's signal aborted after the run ended stops nothing: its run group may serve a later run by then", async () => {
    // A sandbox of its own (the shared one's zygotes stay as the other tests left them), one spare:
    // a recycled run group is soon another child's.
    const own = createBubblewrapSandbox({ network: false, pool: false, zygote: { minSpares: 1, maxSpares: 1 } });
    const warm = { group: 'zygote-late-abort', imports: [] };
    // Each run renames itself and waits in a bridge call, during which the host reads its run group.
    const groupOf = (marker: string): string => {
      for (const pid of processParents().keys()) {
        try {
          if (readFileSync(`/proc/${pid}/comm`, 'utf8').trim() !== marker) continue;
          const group = /run-[0-9a-f]{16}/.exec(readFileSync(`/proc/${pid}/cgroup`, 'utf8'))?.[0];
          if (group) return group;
        } catch {
          // gone meanwhile
        }
      }
      throw new Error(`no run named ${marker}`);
    };
    const traced = (onCall: (group: string) => void, signal?: AbortSignal) => {
      const marker = `mcpw${crypto.randomBytes(4).toString('hex')}`;
      const code = `import _mcpworks_bridge\nopen("/proc/self/comm", "w").write(${JSON.stringify(marker)})\n_mcpworks_bridge.call({"up": True})\nprint("finished", end="")\nresult = "done"\n`;
      const bridge = async () => {
        onCall(groupOf(marker));
        return { ok: true, result: null };
      };
      return own.run({ language: 'python', code, input: {}, limits, entry: 'script', warm, bridge, ...(signal ? { signal } : {}) });
    };
    try {
      // Until its zygote serves (a run in a zygote child has a run group).
      let zygoteRan = false;
      for (let waited = 0; waited < 30_000 && !zygoteRan; waited += 50) {
        const runs = own.zygoteStats()!.runs;
        resultOf(await own.run({ language: 'python', code: 'result = 1', input: {}, limits, entry: 'script', warm }));
        zygoteRan = own.zygoteStats()!.runs > runs;
        if (!zygoteRan) await new Promise((resolve) => setTimeout(resolve, 50));
      }
      assert.ok(zygoteRan, 'the zygote served');
      // The first run ends; its signal stays live (a code-mode caller's, shared by its callees).
      const first = new AbortController();
      let firstGroup = '';
      const ended = await traced((group) => (firstGroup = group), first.signal);
      assert.equal(resultOf(ended), 'done');
      // Later runs, until one is given the first run's group (recycled: a later fork takes it).
      let reused = false;
      for (let attempt = 0; attempt < 20 && !reused; attempt++) {
        const later = await traced((group) => {
          if (group !== firstGroup) return;
          reused = true;
          // The first run's client goes away now, in the middle of this run.
          first.abort();
        });
        assert.equal(resultOf(later), 'done', `run ${attempt} (${reused ? 'in the first run group' : 'another group'})`);
        assert.equal(later.stdout, 'finished');
      }
      assert.ok(reused, "a later run was given the first run's group");
      // Nor does a live signal keep anything of a run once it has ended: a zygote child's, a cold sandbox's.
      const kept = new AbortController();
      const run = { language: 'python', code: 'result = 1', input: {}, limits, entry: 'script', signal: kept.signal } as const;
      const runs = own.zygoteStats()!.runs;
      resultOf(await own.run({ ...run, warm }));
      assert.equal(own.zygoteStats()!.runs, runs + 1, 'the first ran in a zygote child');
      resultOf(await own.run(run));
      assert.deepEqual(getEventListeners(kept.signal, 'abort'), []);
    } finally {
      await own.close();
    }
  });

  it('a last line of stderr without its newline is sent before the answer (the run ends at its answer)', async () => {
    // The host ends a run's processes once its answer is in: whatever the code left in stderr's
    // buffer must be on its socket by then. A stdout whose second flush (the one after the answer)
    // stalls holds the worker there, as a loaded machine can.
    const code = `import sys, time
class Stalling:
    def __init__(self, real):
        self.real, self.flushes = real, 0
    def write(self, text):
        return self.real.write(text)
    def flush(self):
        self.flushes += 1
        self.real.flush()
        if self.flushes == 2:
            time.sleep(2)
sys.stdout = Stalling(sys.stdout)
sys.stderr.write("partial")
result = 1
`;
    const outcome = await py(code, { entry: 'script' });
    assert.equal(resultOf(outcome), 1);
    assert.equal(outcome.ok && outcome.stderr, 'partial');
    // The same when the code fails (its own exception answers).
    const failed = await py(code.replace('result = 1', 'raise ValueError("no")'), { entry: 'script' });
    assert.equal(failed.ok, false);
    // (the host adds the traceback after what the code wrote)
    assert.match((failed as any).error.stderr, /^partial\n/);
    // What the real stdout holds when the code replaced sys.stdout (the runner flushes sys.stdout).
    const replaced = await py('import io, sys\nprint("x", end="")\nsys.stdout = io.StringIO()\nresult = 2\n', { entry: 'script' });
    assert.equal(resultOf(replaced), 2);
    assert.equal(replaced.stdout, 'x');
    // A stderr the code closed does not stop its answer.
    assert.equal(resultOf(await py('import sys\nsys.stderr.close()\nresult = 3\n', { entry: 'script' })), 3);
  });

  it('each child starts from fresh random state', async () => {
    // Siblings forked from one zygote's memory: every generator a run can reach, the global ones
    // reseeded after the fork (random by its at-fork hook, numpy.random by zygote.py), the others
    // drawn from the kernel, and tempfile's names (its generator keyed by a PID, always 2 here).
    const code = `import os, random, secrets, tempfile, uuid, numpy
result = [random.random(), float(numpy.random.rand()), os.urandom(16).hex(), secrets.token_hex(16), str(uuid.uuid4()),
    str(random.getrandbits(64)), float(numpy.random.default_rng().random()), next(tempfile._get_candidate_names()), os.getpid()]
`;
    const [a, b] = [resultOf(await py(code, { entry: 'script' })), resultOf(await py(code, { entry: 'script' }))];
    assert.equal(a[8], b[8], 'both runs have the same PID (so nothing keyed by the PID tells them apart)');
    for (let i = 0; i < 8; i++) assert.notEqual(a[i], b[i], `value ${i} repeated: ${JSON.stringify([a, b])}`);
  });

  it("each child's network namespace has a TCP hash table of its own, not the host's", async () => {
    // Negative: the namespace shares the host's table (whose whole size the kernel walks when the namespace goes).
    const code = 'result = open("/proc/sys/net/ipv4/tcp_ehash_entries").read().strip()\n';
    assert.equal(resultOf(await py(code, { entry: 'script' })), '128');
  });

  it("keeps each run's limits: wall time, memory, processes", async () => {
    // 8 s: on a loaded machine, filling 128 MB can outlast 2 s, and the memory rule is the subject.
    const tight: SandboxLimits = { ...limits, timeoutSeconds: 8, cpuSeconds: 8, memoryMb: 128, maxProcesses: 16 };
    await warmUp(tight);
    const before = sandbox.zygoteStats()!.runs;
    const spin = await py('import time\nwhile True:\n    time.sleep(0.01)\n', { limits: tight, entry: 'script' });
    assert.equal(spin.ok, false);
    assert.equal(!spin.ok && spin.error.type, 'TimeoutError');
    const hog = await py('block = bytearray(512 * 1024 * 1024)\nresult = len(block)\n', { limits: tight, entry: 'script' });
    assert.equal(!hog.ok && hog.error.type, 'MemoryError');
    const forks = resultOf(
      await py(
        'import os\ncount = 0\nfor _ in range(64):\n    try:\n        pid = os.fork()\n    except OSError:\n        break\n    if pid == 0:\n        import time\n        time.sleep(5)\n        os._exit(0)\n    count += 1\nresult = count\n',
        { limits: tight, entry: 'script' },
      ),
    );
    assert.ok(forks < 16, `forked ${forks} processes under a limit of 16`);
    assert.equal(sandbox.zygoteStats()!.runs, before + 3, 'all three ran in zygote children');
    // The next run is unaffected by the processes the last one left.
    assert.equal(resultOf(await py('result = 2', { limits: tight, entry: 'script' })), 2);
  });

  it("each run's CPU-time limit is its own, in the same zygote; its init ignores its signals", async () => {
    const zygotes = sandbox.zygoteStats()!.zygotes.length;
    const before = sandbox.zygoteStats()!.runs;
    const spin = await py('while True:\n    pass\n', { limits: { ...limits, cpuSeconds: 1 }, entry: 'script' });
    assert.equal(!spin.ok && spin.error.type, 'TimeoutError');
    assert.match(!spin.ok ? spin.error.message : '', /CPU time/);
    const signalled = await py(
      'import os, signal, time\nos.kill(1, signal.SIGINT)\nos.kill(1, signal.SIGTERM)\ntime.sleep(0.2)\nresult = "still here"\n',
      { entry: 'script' },
    );
    assert.equal(resultOf(signalled), 'still here');
    assert.equal(sandbox.zygoteStats()!.runs, before + 2);
    assert.equal(sandbox.zygoteStats()!.zygotes.length, zygotes, 'no zygote of its own for another CPU limit');
  });

  it('a run that sends bridge calls without reading the answers is stopped', async () => {
    const flood =
      'import os, time\nfor _ in range(100000):\n    os.write(3, b\'{"bridge": {"op": "call"}}\\n\')\ntime.sleep(80)\nresult = 1\n';
    for (const warm of [WARM, undefined]) {
      const started = Date.now();
      const outcome = await sandbox.run({
        language: 'python',
        code: flood,
        input: {},
        limits,
        entry: 'script',
        bridge: async () => ({ ok: true }),
        ...(warm ? { warm } : {}),
      });
      assert.equal(!outcome.ok && outcome.error.type, 'ProcessExitError', JSON.stringify(outcome));
      assert.match(!outcome.ok ? outcome.error.message : '', /bridge calls without waiting/);
      // Far from both ends: an 80 s sleep (the tier's 90 s clock would end it otherwise), and 30 s
      // for a cold start and the flood on a loaded host (4 s against a 5 s sleep left too little).
      assert.ok(Date.now() - started < 30_000, 'stopped at once, not at the end of its sleep');
    }
  });

  it('a new zygote never ends the runs of a busy one', async () => {
    const small = createBubblewrapSandbox({ network: false, pool: false, zygote: { maxZygotes: 1 } });
    try {
      const run = (group: string, code: string) =>
        small.run({ language: 'python', code, input: {}, limits, entry: 'script', warm: { group, imports: [] } });
      await run('first', 'result = 0');
      for (
        let waited = 0;
        waited < 30_000 && !small.zygoteStats()!.zygotes.some((zygote) => zygote.state === 'ready' && zygote.spares > 0);
        waited += 50
      ) {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      const long = run('first', 'import time\ntime.sleep(1.5)\nresult = "finished"\n');
      await zygoteRunsActive(small, 1, 300);
      // Another namespace wants the only zygote slot while a run is in progress there.
      assert.equal(resultOf(await run('second', 'result = 2')), 2);
      assert.equal(resultOf(await long), 'finished');
      assert.deepEqual(
        small.zygoteStats()!.zygotes.map((zygote) => zygote.state),
        ['ready'],
      );
    } finally {
      await small.close();
    }
  });

  it('zygote slots are shared fairly between accounts: one holding long runs in 4 namespaces leaves a slot to others', async () => {
    const options = { network: false, pool: false, zygote: { maxZygotes: 3, maxZygotesPerOwner: 2, minSpares: 1 } };
    let shared = createBubblewrapSandbox(options);
    const run = (owner: string, group: string, code: string, bridge?: SandboxRequest['bridge']) =>
      shared.run({
        language: 'python',
        code,
        input: {},
        limits,
        entry: 'script',
        warm: { group, imports: [], owner },
        ...(bridge ? { bridge } : {}),
      });
    const zygotesOf = (owner: string) => shared.zygoteStats()!.zygotes.filter((zygote) => zygote.owner === owner);
    const settle = async () => {
      for (
        let waited = 0;
        waited < 30_000 && shared.zygoteStats()!.zygotes.some((zygote) => zygote.state === 'starting' || zygote.spares === 0);
        waited += 50
      ) {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    };
    try {
      // Whom a newcomer's zygote replaces: an idle one of the account holding the most, not the
      // least recently used one of an account that holds only one.
      resultOf(await run('account-b', 'b1', 'result = 1'));
      await settle();
      for (const group of ['a1', 'a2']) resultOf(await run('account-a', group, 'result = 1'));
      await settle();
      assert.deepEqual([zygotesOf('account-a').length, zygotesOf('account-b').length], [2, 1]);
      resultOf(await run('account-c', 'c1', 'result = 1'));
      await settle();
      assert.deepEqual([zygotesOf('account-a').length, zygotesOf('account-b').length, zygotesOf('account-c').length], [1, 1, 1]);
      // Now each holds its share: A's next namespace takes nobody's slot.
      resultOf(await run('account-a', 'a3', 'result = 1'));
      await settle();
      assert.deepEqual([zygotesOf('account-a').length, zygotesOf('account-b').length, zygotesOf('account-c').length], [1, 1, 1]);
      // A fresh server. Account A holds long runs in four namespaces: at most two of them get
      // zygotes, and B's namespace still finds a slot while they run.
      await shared.close();
      shared = createBubblewrapSandbox(options);
      for (const group of ['a1', 'a2', 'a3', 'a4']) {
        resultOf(await run('account-a', group, 'result = 1'));
        await settle();
      }
      assert.equal(zygotesOf('account-a').length, 2, JSON.stringify(shared.zygoteStats()));
      // A's runs hold until the test lets them go (through the bridge): a fixed sleep ended before
      // B's attempts did on a slow host (an emulated VM).
      let release!: () => void;
      const released = new Promise<void>((resolve) => (release = resolve));
      const hold = async () => {
        await released;
        return { ok: true, result: null };
      };
      const holding = ['a1', 'a2', 'a3', 'a4'].map((group) =>
        run('account-a', group, 'import _mcpworks_bridge\n_mcpworks_bridge.call({})\nresult = "held"', hold),
      );
      // Until A's runs hold both of its zygotes (a fixed wait could end before they start).
      for (let waited = 0; waited < 60_000 && !zygotesOf('account-a').every((zygote) => zygote.active > 0); waited += 20)
        await new Promise((resolve) => setTimeout(resolve, 20));
      let served = false;
      for (let attempt = 0; attempt < 100 && !served; attempt++) {
        const before = zygotesOf('account-b').reduce((sum, zygote) => sum + zygote.runs, 0);
        resultOf(await run('account-b', 'b1', 'result = 2'));
        served = zygotesOf('account-b').reduce((sum, zygote) => sum + zygote.runs, 0) > before;
        if (!served) await new Promise((resolve) => setTimeout(resolve, 100));
      }
      assert.ok(served, `account B's run never got a zygote: ${JSON.stringify(shared.zygoteStats())}`);
      assert.equal(zygotesOf('account-a').length, 2);
      assert.ok(
        zygotesOf('account-a').every((zygote) => zygote.active > 0),
        "A's runs were still in progress",
      );
      release();
      for (const outcome of await Promise.all(holding)) assert.equal(resultOf(outcome), 'held');
    } finally {
      await shared.close();
    }
  });

  it('a child whose code closes, replaces or blocks its own streams answers with its own result, in the child', async () => {
    const before = sandbox.zygoteStats()!.runs;
    for (const first of [
      'import sys\nsys.stdout.close()',
      'import sys\nsys.stdout = None\nsys.stderr = None',
      'import os, sys\nos.set_blocking(1, False)\ntry:\n    sys.stdout.write("x" * 3_000_000)\nexcept BlockingIOError:\n    pass',
    ]) {
      for (const ending of ['result = "kept"', 'import os\nresult = "kept"\nos._exit(0)']) {
        assert.equal(resultOf(await py(`${first}\n${ending}\n`, { entry: 'script' })), 'kept');
      }
    }
    assert.ok(sandbox.zygoteStats()!.runs > before);
  });

  it('the zygote holds none of the server environment', () => {
    let read = 0;
    for (const pid of zygotePids()) {
      let environ: string;
      try {
        environ = readFileSync(`/proc/${pid}/environ`, 'latin1');
      } catch {
        continue; // a child of a finished run, gone meanwhile
      }
      read++;
      assert.ok(!environ.includes(CANARY));
    }
    assert.ok(read > 0);
  });

  it('a zygote killed with its children: runs claimed before the host noticed get their real results, each run once', async () => {
    await warmUp();
    assert.ok(
      sandbox.zygoteStats()!.zygotes.some((zygote) => zygote.spares > 0),
      'spare children waiting',
    );
    const count = new Map<string, number>();
    assert.ok(killZygotesWithChildren() > 0);
    // No pause: these claim the dead zygote's spares before the host has seen any of it die.
    const runs = countedRuns(count, 6);
    for (const { mark, index, outcome } of runs) {
      assert.equal(resultOf(await outcome), index);
      assert.equal(count.get(mark), 1, 'its code ran once');
    }
    const before = sandbox.zygoteStats()!.runs;
    await warmUp();
    assert.ok(sandbox.zygoteStats()!.runs > before, 'the zygote was replaced');
  });

  it('a code-mode zygote (its package preloaded) killed with its children: the runs get their real results, each run once', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'zygote-preload-kill-'));
    try {
      mkdirSync(path.join(dir, 'python', 'preloaded'), { recursive: true });
      writeFileSync(path.join(dir, 'python', 'preloaded', '__init__.py'), 'VALUE = 1\n');
      for (const sub of ['', 'python', 'python/preloaded']) chmodSync(path.join(dir, sub), 0o755);
      const request: Partial<SandboxRequest> = {
        mounts: [{ source: dir, target: '/opt/mcpworks' }],
        libraryPaths: ['/opt/mcpworks/python'],
        warm: { group: 'zygote-preload-kill', imports: [], preload: 'preloaded' },
      };
      const fromZygote = 'import sys\nresult = "preloaded" in sys.modules';
      let warm = false;
      for (let waited = 0; waited < 30_000 && !warm; waited += 50) {
        warm = resultOf(await py(fromZygote, { ...request, entry: 'script' })) === true;
        if (!warm) await new Promise((resolve) => setTimeout(resolve, 50));
      }
      assert.ok(warm, 'runs come from the zygote');
      assert.ok(killZygotesWithChildren() > 0);
      const count = new Map<string, number>();
      const runs = countedRuns(count, 4, request);
      for (const { mark, index, outcome } of runs) {
        assert.equal(resultOf(await outcome), index);
        assert.equal(count.get(mark), 1, 'its code ran once');
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('spare children killed before their start ack (their zygote alive): the runs get their real results, each run once', async () => {
    await warmUp();
    // Live zygotes only: one an earlier test killed stays listed as failed until the pool's next tick.
    const live = () => sandbox.zygoteStats()!.zygotes.filter((zygote) => zygote.state === 'ready' || zygote.state === 'starting').length;
    const zygotes = live();
    // The very processes, too: a count stays the same when a dead zygote is replaced in time.
    const parents = processParents();
    const owners = zygotePids().filter((zygote) => [...parents.values()].includes(zygote));
    assert.ok(killSpareWorkers() > 0, 'spare children waiting');
    const count = new Map<string, number>();
    const runs = countedRuns(count, 6);
    for (const { mark, index, outcome } of runs) {
      assert.equal(resultOf(await outcome), index);
      assert.equal(count.get(mark), 1, 'its code ran once');
    }
    assert.equal(live(), zygotes, 'the zygote itself lives on');
    assert.deepEqual(
      owners.filter((zygote) => !zygotePids().includes(zygote)),
      [],
      'the zygotes whose children were killed live on',
    );
    const before = sandbox.zygoteStats()!.runs;
    await warmUp();
    assert.ok(sandbox.zygoteStats()!.runs > before, 'and serves again');
  });

  it('children killed once their runs were sent but not read: the runs get their real results, each run once', async () => {
    await warmUp();
    // The workers (which read the request and ack it) stopped, so the requests sit unread.
    const parents = processParents();
    const zygotes = zygotePids();
    const firsts = new Set([...parents].filter(([, parent]) => zygotes.includes(parent)).map(([pid]) => pid));
    const workers = [...parents]
      .filter(([, parent]) => firsts.has(parent))
      .map(([pid]) => pid)
      .filter((pid) => {
        try {
          process.kill(pid, 'SIGSTOP');
          return true;
        } catch {
          return false; // a finished run's, gone meanwhile
        }
      });
    assert.ok(workers.length > 0, 'spare children waiting');
    const count = new Map<string, number>();
    const runs = countedRuns(count, 4);
    // One turn of the event loop: the runs that claimed a stopped child have written their requests.
    await new Promise((resolve) => setImmediate(resolve));
    assert.ok(workers.filter(sigkill).length > 0);
    for (const { mark, index, outcome } of runs) {
      assert.equal(resultOf(await outcome), index);
      assert.equal(count.get(mark), 1, 'its code ran once');
    }
  });

  it('a zygote killed alone: each run gets its real result, or, only if its code had begun, an honest platform failure; none runs twice', async () => {
    await warmUp();
    const count = new Map<string, number>();
    let killed = 0;
    for (const pid of zygotePids()) if (sigkill(pid)) killed++;
    assert.ok(killed > 0);
    // No pause. Its children die with its sandbox a moment later: one may begin a run first.
    const runs = countedRuns(count, 6);
    for (const { mark, index, outcome } of runs) {
      const done = await outcome;
      if (done.ok) {
        assert.equal(resultOf(done), index);
        assert.equal(count.get(mark), 1, 'its code ran once');
      } else {
        assert.deepEqual(done.error, {
          type: 'SandboxError',
          message: 'the sandbox stopped before the function finished',
          stderr: '',
          platform: true,
        });
        assert.ok((count.get(mark) ?? 0) <= 1, 'never run again');
      }
    }
    for (let index = 0; index < 3; index++) assert.equal(resultOf(await py(`result = ${index}`, { entry: 'script' })), index);
    const before = sandbox.zygoteStats()!.runs;
    await warmUp();
    assert.ok(sandbox.zygoteStats()!.runs > before, 'the zygote was replaced');
  });

  it("a zygote killed alone during a run takes the run's processes with it; the run answers a platform failure and the server serves on", async () => {
    await warmUp();
    const marker = `mcpw${crypto.randomBytes(4).toString('hex')}`;
    // The run renames itself and forks a process of its own, then sleeps far past the deadline below.
    const held = py(
      `import os, time\nopen("/proc/self/comm", "w").write(${JSON.stringify(marker)})\nif os.fork() == 0:\n    time.sleep(80)\n    os._exit(0)\ntime.sleep(80)\nresult = "ran to its end"\n`,
      { entry: 'script' },
    );
    const named = () =>
      [...processParents().keys()].filter((pid) => {
        try {
          return readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === marker;
        } catch {
          return false;
        }
      });
    for (let waited = 0; waited < 30_000 && named().length < 2; waited += 20) await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(named().length, 2, 'the run and its own child are up');
    // Its P1 (PID 1 of the run's namespace), whose end takes the namespace's every process.
    const parents = processParents();
    const inits = [...new Set(named().map((pid) => parents.get(pid)!))].filter((pid) => named().indexOf(pid) === -1);
    assert.equal(inits.length, 1);
    const zygote = parents.get(inits[0]!)!;
    assert.ok(zygotePids().includes(zygote), "the run's init is a zygote's child");
    // bubblewrap's outer process, stopped: the zygote's sandbox does not end, nor does the host
    // hear of the death (its helper waits on that process), so only the kernel can end the run.
    const outer = parents.get(parents.get(zygote)!)!;
    assert.match(readFileSync(`/proc/${outer}/cmdline`, 'utf8').split('\0')[0]!, /bwrap$/);
    process.kill(outer, 'SIGSTOP');
    let gone: number[] = [];
    try {
      assert.ok(sigkill(zygote));
      // Generous: the kernel ends them as the zygote exits; without that they lived on (80 s).
      const alive = () => [...named(), ...inits.filter((pid) => processParents().has(pid))];
      for (let waited = 0; waited < 30_000 && alive().length > 0; waited += 20) await new Promise((resolve) => setTimeout(resolve, 20));
      gone = alive();
    } finally {
      process.kill(outer, 'SIGCONT');
    }
    assert.deepEqual(gone, [], "the run's processes and its init are gone");
    const outcome = await held;
    assert.deepEqual(outcome.ok ? outcome : outcome.error, {
      type: 'SandboxError',
      message: 'the sandbox stopped before the function finished',
      stderr: '',
      platform: true,
    });
    for (let index = 0; index < 3; index++) assert.equal(resultOf(await py(`result = ${index}`, { entry: 'script' })), index);
    const before = sandbox.zygoteStats()!.runs;
    await warmUp();
    assert.ok(sandbox.zygoteStats()!.runs > before, 'the zygote was replaced');
  });

  it('runs whose code had begun when their zygote died are reported as platform failures and never run again', async () => {
    await warmUp();
    const marker = `mcpw${crypto.randomBytes(4).toString('hex')}`;
    const calls = new Map<string, number>();
    // One tells the host it has begun (a bridge call); the other says nothing on fd 3, only renames
    // its process, which the test sees in /proc. Then both wait to be killed.
    const viaBridge = sandbox.run({
      language: 'python',
      code: 'import _mcpworks_bridge, time\n_mcpworks_bridge.call({"mark": "begun"})\ntime.sleep(20)\nresult = "ran to its end"\n',
      input: {},
      limits,
      entry: 'script',
      warm: WARM,
      bridge: async (message: unknown) => {
        const mark = String((message as { mark?: unknown }).mark);
        calls.set(mark, (calls.get(mark) ?? 0) + 1);
        return { ok: true, result: null };
      },
    });
    const silent = py(
      `import time\nopen("/proc/self/comm", "w").write(${JSON.stringify(marker)})\ntime.sleep(20)\nresult = "ran to its end"\n`,
      {
        entry: 'script',
      },
    );
    const named = () =>
      [...processParents().keys()].filter((pid) => {
        try {
          return readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === marker;
        } catch {
          return false;
        }
      });
    for (let waited = 0; waited < 30_000 && !(calls.get('begun') === 1 && named().length === 1); waited += 20)
      await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(calls.get('begun'), 1);
    assert.equal(named().length, 1, 'the silent run has begun');
    assert.ok(killZygotesWithChildren() > 0);
    for (const outcome of [await viaBridge, await silent]) {
      assert.deepEqual(outcome.ok ? outcome : outcome.error, {
        type: 'SandboxError',
        message: 'the sandbox stopped before the function finished',
        stderr: '',
        platform: true,
      });
    }
    assert.equal(calls.get('begun'), 1, 'never run again');
    assert.deepEqual(named(), [], 'nor the silent one');
  });

  it("a child whose set-up fails says which step (on its zygote's control socket, then on its channel), the host logs it, and the run still gets its real result", async () => {
    // The zygote library built for this test alone, with one call failing as a real host could make
    // it fail: P1's unmount of the host's directories (reported on the zygote's control socket, P1
    // has no channel yet), or the worker's setrlimit, as under a hard limit below the run's (EPERM:
    // a child has no capabilities left; reported on the run's channel). Production builds
    // (scripts/setup.d/sandbox.sh) compile the source as it is.
    const source = path.join(packageRoot(), 'src', 'sandbox', 'native', 'mcpworks-zygote-child.c');
    const cases = [
      { step: 'umount', header: 'sys/mount.h', failing: 'umount2(target, flags)' },
      { step: 'setrlimit', header: 'sys/resource.h', failing: 'setrlimit(resource, value)' },
    ];
    for (const { step, header, failing: call } of cases) {
      const dir = mkdtempSync(path.join(tmpdir(), 'zygote-setup-fails-'));
      const lines: string[] = [];
      let failing: BubblewrapSandbox | null = null;
      try {
        writeFileSync(
          path.join(dir, 'failing.c'),
          `#define _GNU_SOURCE\n#include <errno.h>\n#include <${header}>\n#define ${call} (errno = EPERM, -1)\n#include ${JSON.stringify(source)}\n`,
        );
        const library = path.join(dir, 'failing.so');
        execFileSync('gcc', ['-O2', '-shared', '-fPIC', '-o', library, path.join(dir, 'failing.c')]);
        chmodSync(dir, 0o755);
        chmodSync(library, 0o755);
        failing = createBubblewrapSandbox({
          network: false,
          pool: false,
          zygote: true,
          paths: { zygoteLibrary: library },
          log: (line) => lines.push(line),
        });
        const warm = { group: `zygote-setup-fails-${step}`, imports: [] };
        // Once the zygote is up, each run is given a child first (spares fail alike), whose failure
        // sends it the ordinary way, once: every run gets its own result.
        const reported = () => lines.filter((line) => line.includes('set-up failed at'));
        for (let index = 0; index < 200 && (failing.zygoteStats()!.runs < 2 || reported().length === 0); index++) {
          const outcome = await failing.run({ language: 'python', code: `result = ${index}`, input: {}, limits, entry: 'script', warm });
          assert.equal(resultOf(outcome), index);
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
        assert.ok(failing.zygoteStats()!.runs >= 2, 'runs were given zygote children');
        const reports = reported();
        assert.ok(reports.length > 0, `the failure is logged: ${JSON.stringify(lines.slice(-3))}`);
        const expected = new RegExp(
          `^zygote .*: a forked child's set-up failed at ${step} \\(EPERM\\); its run, if it had one, takes the ordinary path$`,
        );
        for (const line of reports) assert.match(line, expected);
        // No token, no path, no environment: the step's word and the errno's name only.
        assert.ok(
          lines.every((line) => !/[0-9a-f]{32}/.test(line)),
          'no token in the log',
        );
      } finally {
        await failing?.close();
        rmSync(dir, { recursive: true, force: true });
      }
    }
  });

  it('a child whose zygote ended before its PR_SET_PDEATHSIG took hold gives up at once (else it and its sandbox outlive the zygote)', async () => {
    // The zygote library built for this test alone: P1 names itself, then waits until its zygote is
    // gone before it asks for the signal, the race the prctl alone loses (a parent already dead
    // sends nothing). Orphaned, P1 is bubblewrap's init's, which ends only once it has no children:
    // a P1 that went on would keep the dead zygote's sandbox, and so the server's view of it, alive.
    const source = path.join(packageRoot(), 'src', 'sandbox', 'native', 'mcpworks-zygote-child.c');
    const marker = `mcpwh${crypto.randomBytes(4).toString('hex')}`;
    const dir = mkdtempSync(path.join(tmpdir(), 'zygote-orphan-'));
    const lines: string[] = [];
    let held: BubblewrapSandbox | null = null;
    try {
      writeFileSync(
        path.join(dir, 'held.c'),
        [
          '#define _GNU_SOURCE',
          '#include <signal.h>',
          '#include <sys/prctl.h>',
          '#include <sys/types.h>',
          '#include <time.h>',
          'static pid_t parent_in_proc(void);',
          'static int held_pdeathsig(void) {',
          `  prctl(PR_SET_NAME, "${marker}", 0, 0, 0);`,
          '  pid_t zygote = parent_in_proc();',
          '  struct timespec pause = {0, 10000000};',
          '  while (parent_in_proc() == zygote) nanosleep(&pause, NULL);',
          '  return prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);',
          '}',
          '#define prctl(option, ...) ((option) == PR_SET_PDEATHSIG ? held_pdeathsig() : prctl(option, __VA_ARGS__))',
          `#include ${JSON.stringify(source)}`,
          '',
        ].join('\n'),
      );
      const library = path.join(dir, 'held.so');
      execFileSync('gcc', ['-O2', '-shared', '-fPIC', '-o', library, path.join(dir, 'held.c')]);
      chmodSync(dir, 0o755);
      chmodSync(library, 0o755);
      held = createBubblewrapSandbox({
        network: false,
        pool: false,
        zygote: true,
        paths: { zygoteLibrary: library },
        log: (line) => lines.push(line),
      });
      const warm = { group: 'zygote-orphan', imports: [] };
      // Its zygote starts (this run takes the ordinary path meanwhile) and forks its spares, held.
      assert.equal(resultOf(await held.run({ language: 'python', code: 'result = 0', input: {}, limits, entry: 'script', warm })), 0);
      const named = () =>
        [...processParents().keys()].filter((pid) => {
          try {
            return readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === marker;
          } catch {
            return false;
          }
        });
      for (let waited = 0; waited < 30_000 && named().length === 0; waited += 20) await new Promise((resolve) => setTimeout(resolve, 20));
      const children = named();
      assert.ok(children.length > 0, 'held children are up');
      const parents = processParents();
      const zygotes = [...new Set(children.map((pid) => parents.get(pid)!))];
      assert.equal(zygotes.length, 1);
      assert.ok(zygotePids().includes(zygotes[0]!), "the held children are a zygote's");
      // bubblewrap's outer process, stopped (as in the test above): it would end the zygote's whole
      // sandbox once the zygote ends, and so hide what the children do on their own.
      const outer = parents.get(parents.get(zygotes[0]!)!)!;
      assert.match(readFileSync(`/proc/${outer}/cmdline`, 'utf8').split('\0')[0]!, /bwrap$/);
      process.kill(outer, 'SIGSTOP');
      const alive = () => named().filter((pid) => children.includes(pid));
      const reports = () => lines.filter((line) => line.includes('set-up failed at'));
      let left: number[] = [];
      try {
        assert.ok(sigkill(zygotes[0]!));
        // Generous: each gives up as it reads its new parent; a P1 that went on would wait for a run.
        // Its report is read meanwhile: the server cannot see the zygote end (and forget its children) yet.
        for (let waited = 0; waited < 30_000 && (alive().length > 0 || reports().length === 0); waited += 20)
          await new Promise((resolve) => setTimeout(resolve, 20));
        left = alive();
      } finally {
        process.kill(outer, 'SIGCONT');
      }
      assert.deepEqual(left, [], 'every child of the dead zygote is gone');
      // The step, and the check's own errno: not whatever an earlier call of the zygote's left.
      assert.ok(reports().length > 0, 'the children reported why');
      for (const line of reports()) assert.match(line, /: a forked child's set-up failed at zygote_gone \(ESRCH\);/);
      // So its sandbox ends and the server sees the zygote's end.
      const ended = () => lines.some((line) => /^zygote .* stopped: ended unexpectedly/.test(line));
      for (let waited = 0; waited < 30_000 && !ended(); waited += 20) await new Promise((resolve) => setTimeout(resolve, 20));
      assert.ok(ended(), `the server saw the zygote end: ${JSON.stringify(lines.slice(-3))}`);
    } finally {
      await held?.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('MCPWORKS_ZYGOTE=off turns it off', async () => {
    assert.equal(zygoteFromEnvironment('off'), false);
    assert.equal(zygoteFromEnvironment(undefined), true);
    const plain = createBubblewrapSandbox({ network: false, pool: false, zygote: false });
    try {
      const outcome = await plain.run({ language: 'python', code: 'result = 3', input: {}, limits, entry: 'script', warm: WARM });
      assert.equal(resultOf(outcome), 3);
      assert.equal(plain.zygoteStats(), null);
    } finally {
      await plain.close();
    }
  });
});
