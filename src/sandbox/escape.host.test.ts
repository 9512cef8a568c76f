// The escape suite: each attempt runs in the real bubblewrap sandbox and must be contained. The
// README's security section lists every attempt with what it gets; keep the two in step. The pool
// and the Python zygote are on, as by default, so most TypeScript attempts run in pre-started
// sandboxes and most Python ones in children of a zygote; escape-cold.host.test.ts repeats the suite
// with both off.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { networkInterfaces, tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { sandboxLimitsFor, type SandboxOutcome, type SandboxRequest } from '../core/sandbox.js';
import { limitsFor } from '../core/tiers.js';
import { createBubblewrapSandbox, type BubblewrapSandbox } from './bubblewrap.js';
import { cpuSharesFor } from './host/cgroup.js';
import { packageRoot, procMasks } from './host.js';
import { zygoteRunsActive } from '../test-support/processes.js';
import { cpuGroupOf, instanceCpuGroup, serverSide } from '../test-support/cpu-groups.js';
import { escapeSuiteSettings } from '../test-support/escape-settings.js';

const pro = sandboxLimitsFor(limitsFor('pro'));
/** Every Python attempt asks for a warm fork-server, as the run endpoint's requests do. */
const WARM = { group: 'escape-suite', imports: ['numpy'] };
const PLATFORM_SECRET = `platform-secret-${process.pid}-d41d8cd98f00`;
let sandbox: BubblewrapSandbox;
let dataDir: string;
let server: Server;
let serverPort: number;

before(async () => {
  // What a server process holds that a function must never see.
  process.env.MCPWORKS_ESCAPE_TEST_SECRET = PLATFORM_SECRET;
  dataDir = mkdtempSync(join(tmpdir(), 'mcpworks-escape-data-'));
  writeFileSync(join(dataDir, 'platform.db'), PLATFORM_SECRET);
  // A server's switches (escape-cold.host.test.ts turns the pool and the zygote off).
  sandbox = createBubblewrapSandbox({ ...escapeSuiteSettings, network: false });
  // The first warm run starts the zygote; the attempts then run in its children.
  await sandbox.run({ language: 'python', code: 'result = 1', input: {}, limits: pro, entry: 'script', warm: WARM });
  for (
    let waited = 0;
    waited < 30_000 && !sandbox.zygoteStats()?.zygotes.some((zygote) => zygote.state === 'ready' && zygote.spares > 0);
    waited += 50
  ) {
    if (sandbox.zygoteStats() === null) break;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  server = createServer((socket) => socket.end('server secret\n'));
  await new Promise<void>((resolve) => server.listen(0, '0.0.0.0', resolve));
  serverPort = (server.address() as { port: number }).port;
});

after(async () => {
  delete process.env.MCPWORKS_ESCAPE_TEST_SECRET;
  rmSync(dataDir, { recursive: true, force: true });
  await sandbox.close();
  await new Promise((resolve) => server.close(resolve));
});

function py(code: string, input: unknown = {}, extra: Partial<SandboxRequest> = {}): Promise<SandboxOutcome> {
  return sandbox.run({ language: 'python', code, input, limits: pro, warm: WARM, ...extra });
}

function ts(code: string, input: unknown = {}, extra: Partial<SandboxRequest> = {}): Promise<SandboxOutcome> {
  return sandbox.run({ language: 'typescript', code, input, limits: pro, ...extra });
}

function resultOf(outcome: SandboxOutcome): any {
  assert.equal(outcome.ok, true, `expected success, got ${JSON.stringify(outcome)}`);
  return (outcome as { result: unknown }).result;
}

/** Runs `attempt` (Python expression) and returns the exception class name, or 'no error'. */
const tryBlock = `
import errno, os
def attempt(fn):
    try:
        value = fn()
        return "no error: " + repr(value)[:200]
    except BaseException as error:
        code = getattr(error, "errno", None)
        return type(error).__name__ + (" " + errno.errorcode.get(code, str(code)) if code else "")
`;

const libc = `
import ctypes, ctypes.util
libc = ctypes.CDLL(None, use_errno=True)
def sys_call(number, *args):
    ctypes.set_errno(0)
    rc = libc.syscall(number, *[ctypes.c_long(a) for a in args])
    return rc, errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
`;

/** What a group's weight file reads for `weight` (v2 units): v1 cpu.shares, v2 cpu.weight. */
/** What the runs' CPU group reads and must read: cpu.idle 1 where idle was asked for and the kernel has it, else the weight. */
function weightReads(dir: string, settings: { cpuWeight: number; cpuIdle: boolean }): [actual: string, expected: string] {
  if (settings.cpuIdle && existsSync(join(dir, 'cpu.idle')))
    return [`idle ${readFileSync(join(dir, 'cpu.idle'), 'utf8').trim()}`, 'idle 1'];
  const v1 = existsSync(join(dir, 'cpu.shares'));
  return [
    readFileSync(join(dir, v1 ? 'cpu.shares' : 'cpu.weight'), 'utf8').trim(),
    String(v1 ? cpuSharesFor(settings.cpuWeight) : settings.cpuWeight),
  ];
}

/** True when `pid` is `ancestor` or below it. */
function descendsFrom(pid: number, ancestor: number): boolean {
  for (let current = pid, hops = 0; current > 1 && hops < 64; hops++) {
    if (current === ancestor) return true;
    try {
      current = Number(/^PPid:\s*(\d+)$/m.exec(readFileSync(`/proc/${current}/status`, 'utf8'))?.[1] ?? 0);
    } catch {
      return false;
    }
  }
  return false;
}

function hostAddress(): string | undefined {
  for (const entries of Object.values(networkInterfaces())) {
    for (const entry of entries ?? []) if (entry.family === 'IPv4' && !entry.internal) return entry.address;
  }
  return undefined;
}

describe('escape suite', () => {
  it('read /etc/shadow → not there', async () => {
    const result = resultOf(await py(`${tryBlock}\nresult = attempt(lambda: open("/etc/shadow").read())\n`));
    assert.equal(result, 'FileNotFoundError ENOENT');
  });

  it("read the server's data dir and source tree → not mounted", async () => {
    const code = `${tryBlock}\nresult = [attempt(lambda: open(input_data["db"]).read()), os.path.exists(input_data["dir"]), os.path.exists(input_data["root"]), sorted(os.listdir("/"))]\n`;
    const [read, dirSeen, rootSeen, top] = resultOf(
      await py(code, { db: join(dataDir, 'platform.db'), dir: dataDir, root: packageRoot() }),
    );
    assert.equal(read, 'FileNotFoundError ENOENT');
    assert.equal(dirSeen, false);
    assert.equal(rootSeen, false);
    assert.deepEqual(top, ['bin', 'dev', 'etc', 'function', 'lib', 'lib64', 'proc', 'sandbox', 'sbin', 'tmp', 'usr']);
  });

  it('/proc/1/environ, /proc/self/environ and os.environ → no platform secret, only own env', async () => {
    const code = `${tryBlock}
import glob
seen = {"environ": dict(os.environ)}
for path in ["/proc/1/environ", "/proc/self/environ"] + glob.glob("/proc/[0-9]*/environ"):
    try:
        seen[path] = open(path, "rb").read().decode("utf-8", "replace")
    except OSError as error:
        seen[path] = type(error).__name__
result = seen
`;
    const seen = resultOf(await py(code, {}, { env: { OWN_TOKEN: 'own-token-value-123' } }));
    const everything = JSON.stringify(seen);
    assert.ok(!everything.includes(PLATFORM_SECRET), everything);
    assert.ok(!everything.includes('MCPWORKS_ESCAPE_TEST_SECRET'));
    assert.equal(seen.environ.OWN_TOKEN, 'own-token-value-123');
    // The function's own secret is set by the runner, not in any process's initial environment.
    assert.ok(!seen['/proc/self/environ'].includes('own-token-value-123'));
    const js = resultOf(
      await ts(
        'import { readFileSync } from "node:fs";\nexport default () => JSON.stringify(process.env) + readFileSync("/proc/1/environ", "utf8");\n',
      ),
    );
    assert.ok(!js.includes(PLATFORM_SECRET));
  });

  it("another function's env, held by a parallel run → invisible", async () => {
    const holder = py('import time\ntime.sleep(1.5)\nresult = "held"\n', {}, { env: { OTHER_SECRET: 'other-function-secret-456' } });
    await zygoteRunsActive(sandbox, 1, 400);
    const code = `${tryBlock}
import glob
found = []
for path in glob.glob("/proc/*/environ") + glob.glob("/proc/*/cmdline"):
    try:
        if b"other-function-secret-456" in open(path, "rb").read():
            found.append(path)
    except OSError:
        pass
result = {"found": found, "env": "OTHER_SECRET" in os.environ}
`;
    assert.deepEqual(resultOf(await py(code)), { found: [], env: false });
    assert.equal(resultOf(await holder), 'held');
  });

  it("another execution's tmp files → each run has its own /tmp", async () => {
    const writer = py(
      'import time\nopen("/tmp/private.txt", "w").write("mine")\ntime.sleep(1.2)\nresult = open("/tmp/private.txt").read()\n',
    );
    await zygoteRunsActive(sandbox, 1, 400);
    const reader = resultOf(await py(`${tryBlock}\nresult = [os.listdir("/tmp"), attempt(lambda: open("/tmp/private.txt").read())]\n`));
    assert.deepEqual(reader, [[], 'FileNotFoundError ENOENT']);
    assert.equal(resultOf(await writer), 'mine');
  });

  it('a file or global left by an earlier run of the same function → gone', async () => {
    const code = `import builtins, os
def main(input_data):
    seen = {"file": os.path.exists("/tmp/left.txt"), "global": hasattr(builtins, "left_behind")}
    open("/tmp/left.txt", "w").write("x")
    builtins.left_behind = True
    return seen
`;
    assert.deepEqual(resultOf(await py(code)), { file: false, global: false });
    assert.deepEqual(resultOf(await py(code)), { file: false, global: false });
    const js =
      'import { existsSync, writeFileSync } from "node:fs";\nexport default () => {\n  const seen = { file: existsSync("/tmp/left.txt"), global: "leftBehind" in globalThis };\n  writeFileSync("/tmp/left.txt", "x");\n  (globalThis as any).leftBehind = true;\n  return seen;\n};\n';
    assert.deepEqual(resultOf(await ts(js)), { file: false, global: false });
    assert.deepEqual(resultOf(await ts(js)), { file: false, global: false });
  });

  it('while a run holds an env secret, no host /proc/*/cmdline or environ shows it', async () => {
    const secret = `argv-probe-secret-${Date.now()}`;
    const running = py('import time\ntime.sleep(2)\nresult = len(__import__("os").environ["PROBE"])\n', {}, { env: { PROBE: secret } });
    let settled = false;
    running.then(
      () => (settled = true),
      () => (settled = true),
    );
    const hits = new Set<string>();
    // From when the run is in its sandbox until it ends, not a fixed window, and no count of scans
    // that assumes a pace: a loaded machine scans /proc slowly.
    await zygoteRunsActive(sandbox, 1, 150);
    // In progress: its zygote child is active (where zygotes are off: its answer has not come).
    const inProgress = () => (sandbox.zygoteStats()?.zygotes.reduce((sum, zygote) => sum + zygote.active, 0) ?? (settled ? 0 : 1)) > 0;
    let scans = 0;
    while (!settled) {
      const began = inProgress();
      for (const pid of readdirSync('/proc').filter((name) => /^\d+$/.test(name))) {
        for (const file of ['cmdline', 'environ']) {
          try {
            if (readFileSync(`/proc/${pid}/${file}`).includes(secret)) hits.add(`${pid}/${file}`);
          } catch {
            // the process ended between listing and reading
          }
        }
      }
      // A whole scan while the run held the secret.
      if (began && inProgress()) scans++;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    assert.equal(resultOf(await running), secret.length);
    assert.ok(scans >= 1, 'at least one whole scan of /proc while the run was in progress');
    assert.deepEqual([...hits], []);
  });

  it('write outside /tmp → read-only everywhere else', async () => {
    const code = `${tryBlock}\nresult = [attempt(lambda: open(p, "w").write("x")) for p in ["/usr/evil", "/etc/passwd", "/evil", "/function/evil", "/sandbox/runner.py", "/proc/sys/kernel/hostname"]]\n`;
    const results: string[] = resultOf(await py(code));
    for (const result of results)
      assert.match(result, /^(OSError EROFS|PermissionError EACCES|PermissionError EPERM)$/, results.join(', '));
  });

  it('fork bomb → stopped at the process limit, nothing survives the run', async () => {
    // The comm name marks this run's processes, so the host-side check ignores concurrent runs.
    const marker = `bomb${process.pid % 100000}`;
    const counting = `import os, time
open("/proc/self/comm", "w").write(input_data["marker"])
children = 0
error = None
while children < 1000:
    try:
        if os.fork() == 0:
            time.sleep(30)
            os._exit(0)
        children += 1
    except OSError as failure:
        error = type(failure).__name__
        break
result = {"children": children, "error": error}
`;
    const counted = resultOf(await py(counting, { marker }));
    assert.ok(counted.children < pro.maxProcesses, JSON.stringify(counted));
    assert.equal(counted.error, 'BlockingIOError');
    const bomb = await py(
      'import os\nopen("/proc/self/comm", "w").write(input_data["marker"])\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n',
      { marker },
      { limits: { ...pro, timeoutSeconds: 2 } },
    );
    assert.equal(bomb.ok, false);
    assert.equal((bomb as { error: { type: string } }).error.type, 'TimeoutError', JSON.stringify(bomb).slice(0, 2000));
    // Every process of both runs is gone (not even a zombie) once the run has answered.
    const leftovers = readdirSync('/proc').filter((pid) => {
      try {
        return /^\d+$/.test(pid) && readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === marker;
      } catch {
        return false;
      }
    });
    assert.deepEqual(leftovers, []);
    // The instance's CPU group had the default weight for the reap, and has its low one again.
    const group = instanceCpuGroup();
    if (group !== null) assert.deepEqual(...weightReads(group, escapeSuiteSettings));
  });

  it("code spinning on the CPU → its run is in its server's own CPU group beside the server, idle or at the runs' weight (MCPWORKS_SANDBOX_CPU_WEIGHT); the zygote is not", async (t) => {
    const group = instanceCpuGroup();
    if (group === null) return t.skip('no cpu controller of ours on this host');
    assert.equal(dirname(group), serverSide());
    // cgroup v2: one hierarchy, so a run is in a run group inside the instance's, and so is a zygote.
    const v2 = !existsSync(join(group, 'cpu.shares'));
    // Each run names itself once it listens for the host's SIGUSR2, then spins until it comes
    // (bounded): the host looks at it meanwhile.
    const python = `import signal, time
go = []
signal.signal(signal.SIGUSR2, lambda *_: go.append(1))
open("/proc/self/comm", "w").write(input_data["marker"])
end = time.time() + 60
while not go and time.time() < end:
    pass
result = bool(go)
`;
    const typescript = `export default async function main(input: { marker: string }) {
  const fs = await import('node:fs');
  let go = false;
  process.on('SIGUSR2', () => (go = true));
  fs.writeFileSync('/proc/self/comm', input.marker);
  const end = Date.now() + 60_000;
  while (!go && Date.now() < end) await new Promise((resolve) => setImmediate(resolve));
  return go;
}
`;
    for (const [language, run] of [
      ['python', (marker: string) => py(python, { marker })],
      ['typescript', (marker: string) => ts(typescript, { marker })],
    ] as const) {
      // A name of each run's own: the other's processes may still be exiting.
      const marker = `cpu${language[0]}${process.pid % 100000}`;
      let settled = false;
      const running = run(marker).finally(() => (settled = true));
      let pid: number | undefined;
      while (pid === undefined && !settled) {
        pid = readdirSync('/proc')
          .filter((name) => /^\d+$/.test(name))
          .map(Number)
          .find((candidate) => {
            try {
              return readFileSync(`/proc/${candidate}/comm`, 'utf8').trim() === marker;
            } catch {
              return false;
            }
          });
        if (pid === undefined) await new Promise((resolve) => setTimeout(resolve, 20));
      }
      assert.ok(pid !== undefined, `${language}: the run was seen on the host`);
      const runGroup = cpuGroupOf(pid);
      // Python: the zygote (if this suite has one) that forked the run stays at the server's weight.
      // Not every process whose command line names zygote.py (its helper and bubblewrap do), nor
      // its children (each PID 1 of a namespace of its own; a spare joins the low-weight group as
      // it comes up, so one seen mid-start would move under the test): the interpreter itself, in
      // bubblewrap's PID namespace (two NSpid levels), started by bubblewrap.
      const zygotes: string[] = readdirSync('/proc')
        .filter((name) => /^\d+$/.test(name) && descendsFrom(Number(name), process.pid))
        .filter((name): boolean => {
          try {
            const argv = readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0');
            const status = readFileSync(`/proc/${name}/status`, 'utf8');
            const nspid = /^NSpid:\s*(.*)$/m.exec(status)?.[1] ?? '';
            // Its short-lived fork that enters each child's PID namespace is its own child.
            const parent = readFileSync(`/proc/${/^PPid:\s*(\d+)$/m.exec(status)?.[1]}/cmdline`, 'utf8').split('\0')[0];
            return (
              argv[0] === '/usr/bin/python3' &&
              argv.some((arg) => arg.endsWith('zygote.py')) &&
              nspid.trim().split(/\s+/).length === 2 &&
              parent !== '/usr/bin/python3'
            );
          } catch {
            return false;
          }
        });
      process.kill(pid, 'SIGUSR2');
      assert.equal(resultOf(await running), true, language);
      if (v2) assert.ok(runGroup?.startsWith(`${group}/`), `${language}: ${runGroup}`);
      else assert.equal(runGroup, group, language);
      assert.deepEqual(...weightReads(group, escapeSuiteSettings), language);
      if (language === 'python' && !v2 && sandbox.zygoteStats()?.zygotes.length) {
        assert.ok(zygotes.length > 0, 'the zygote runs outside the low-weight group');
        for (const zygote of zygotes) assert.equal(cpuGroupOf(Number(zygote)), dirname(group!), `zygote process ${zygote}`);
      }
    }
  });

  it("a run's first statement → already in its instance's CPU group (the move is awaited before its code is sent)", async (t) => {
    const group = instanceCpuGroup();
    if (group === null) return t.skip('no cpu controller of ours on this host');
    // cgroup v2: a run is born in its group inside the instance's; nothing moves it.
    if (!existsSync(join(group, 'cpu.shares'))) return t.skip('cgroup v2: no move to check');
    // Its own cgroup namespace is rooted at the server's CPU group (the zygote's too): the
    // instance's group shows as one level below its root.
    const expected = `/${basename(group)}`;
    const python =
      'result = [line.split(":", 2)[2] for line in open("/proc/self/cgroup").read().splitlines() if "cpu" in line.split(":")[1].split(",")]\n';
    const typescript = `export default async function main() {
  return (await import('node:fs')).readFileSync('/proc/self/cgroup', 'utf8').split('\\n').filter((line) => line.split(':')[1]?.split(',').includes('cpu')).map((line) => line.split(':').slice(2).join(':'));
}
`;
    // More Python runs at once than the zygote has spares: some take a child forked for them,
    // which is moved only once it is up, right before its request is sent.
    const spares = sandbox.zygoteStats()?.zygotes.find((zygote) => zygote.owner === 'group:escape-suite')?.spares ?? 0;
    const runs = await Promise.all([
      ...Array.from({ length: Math.min(spares + 3, 12) }, () => py(python, {}, { entry: 'script' })),
      ...Array.from({ length: 3 }, () => ts(typescript)),
    ]);
    for (const [index, outcome] of runs.entries()) assert.deepEqual(resultOf(outcome), [expected], `run ${index}`);
  });

  it('fill the disk → the private tmpfs fills, the host disk does not', async () => {
    const code = `${tryBlock}
def fill(where="/tmp"):
    index = 0
    while True:
        with open(f"{where}/fill-{index}", "wb") as handle:
            for _ in range(16):
                handle.write(b"\\0" * (1 << 20))
        index += 1
big = attempt(lambda: open("/tmp/one-big-file", "wb").write(b"\\0" * (80 << 20)))
os.remove("/tmp/one-big-file") if os.path.exists("/tmp/one-big-file") else None
result = [big, attempt(fill), attempt(lambda: fill("/dev/shm"))]
`;
    const [big, fill, shm] = resultOf(await py(code));
    assert.equal(big, 'OSError EFBIG');
    assert.equal(fill, 'OSError ENOSPC');
    assert.equal(shm, 'OSError ENOSPC');
  });

  it('ptrace → denied by seccomp', async () => {
    const code = `${tryBlock}${libc}\nPTRACE_ATTACH = 16\nresult = [sys_call(101, 0, 0, 0, 0), sys_call(101, PTRACE_ATTACH, 1, 0, 0)]\n`;
    assert.deepEqual(resultOf(await py(code)), [
      [-1, 'EPERM'],
      [-1, 'EPERM'],
    ]);
  });

  it("socket to the server's port and to 169.254.169.254 → no network at all", async () => {
    const code = `${tryBlock}
import socket
def connect(host, port):
    with socket.create_connection((host, port), timeout=2) as s:
        return s.recv(100)
result = [attempt(lambda: connect(h, p)) for h, p in input_data["targets"]]
`;
    const targets: Array<[string, number]> = [
      ['127.0.0.1', serverPort],
      ['169.254.169.254', 80],
    ];
    const address = hostAddress();
    if (address) targets.push([address, serverPort]);
    const results: string[] = resultOf(await py(code, { targets }));
    assert.equal(results[0], 'ConnectionRefusedError ECONNREFUSED');
    for (const result of results.slice(1)) assert.equal(result, 'OSError ENETUNREACH');
    const js =
      'export default async function main(input: { port: number }) {\n  try { await fetch(`http://127.0.0.1:${input.port}/`); return "reached"; } catch (e: any) { return String(e.cause?.code); }\n}\n';
    assert.equal(resultOf(await ts(js, { port: serverPort })), 'ECONNREFUSED');
  });

  it('list host processes → only the sandbox itself', async () => {
    const code = 'import os\nresult = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())\n';
    const pids: number[] = resultOf(await py(code));
    assert.ok(pids.length <= 3, JSON.stringify(pids));
    assert.ok(pids.every((pid) => pid <= 3));
  });

  it('mount, unshare, setns, keyctl, bpf, perf_event_open, reboot, module loading → denied', async () => {
    const code = `${tryBlock}${libc}
result = {
    "mount": sys_call(165, 0, 0, 0, 0, 0),
    "umount2": sys_call(166, 0, 0),
    "unshare_user": sys_call(272, 0x10000000),
    "unshare_mount": sys_call(272, 0x00020000),
    "setns": sys_call(308, 0, 0),
    "keyctl": sys_call(250, 0, 0, 0, 0, 0),
    "bpf": sys_call(321, 0, 0, 0),
    "perf_event_open": sys_call(298, 0, 0, 0, 0, 0),
    "reboot": sys_call(169, 0, 0, 0, 0),
    "init_module": sys_call(175, 0, 0, 0),
    "kexec_load": sys_call(246, 0, 0, 0, 0),
    "swapon": sys_call(167, 0, 0),
    "clone_newuser": sys_call(56, 0x10000000 | 17, 0, 0, 0, 0),
}
`;
    const results: Record<string, [number, string]> = resultOf(await py(code));
    for (const [name, [rc, error]] of Object.entries(results)) assert.deepEqual([name, rc, error], [name, -1, 'EPERM']);
  });

  it('sockets of other address families (AF_VSOCK, AF_PACKET, AF_ALG, netlink beyond routing), io_uring → refused by seccomp', async () => {
    // Python's own calls; the TypeScript sandbox runs the same probe through python3 inside it.
    const probe = `${tryBlock}${libc}
import socket
result = {
    "vsock": attempt(lambda: socket.socket(40, socket.SOCK_STREAM)),
    "vsock_high_bits": sys_call(41, 40 | (1 << 32), 1, 0),
    "vsock_pair": sys_call(53, 40, 1, 0, 0),
    "packet": attempt(lambda: socket.socket(17, socket.SOCK_DGRAM)),
    "alg": attempt(lambda: socket.socket(38, socket.SOCK_SEQPACKET)),
    "netlink_generic": attempt(lambda: socket.socket(16, socket.SOCK_RAW, 16)),
    "io_uring_setup": sys_call(425, 8, 0),
    "io_uring_enter": sys_call(426, 0, 0, 0, 0, 0, 0),
    "io_uring_register": sys_call(427, 0, 0, 0, 0),
    "allowed": [attempt(lambda: socket.socket(family, kind, proto).close()) for family, kind, proto in ((1, 1, 0), (2, 1, 0), (10, 2, 0), (16, 3, 0))],
    "pair": attempt(lambda: [s.close() for s in socket.socketpair()]),
    "interfaces": attempt(lambda: socket.if_nameindex()),
}
`;
    const expected = {
      vsock: 'OSError EAFNOSUPPORT',
      vsock_high_bits: [-1, 'EAFNOSUPPORT'],
      vsock_pair: [-1, 'EAFNOSUPPORT'],
      packet: 'OSError EAFNOSUPPORT',
      alg: 'OSError EAFNOSUPPORT',
      netlink_generic: 'OSError EPROTONOSUPPORT',
      io_uring_setup: [-1, 'ENOSYS'],
      io_uring_enter: [-1, 'ENOSYS'],
      io_uring_register: [-1, 'ENOSYS'],
      allowed: ['no error: None', 'no error: None', 'no error: None', 'no error: None'],
      pair: 'no error: [None, None]',
      interfaces: "no error: [(1, 'lo')]",
    };
    assert.deepEqual(resultOf(await py(probe)), expected);
    const js = `import { execFileSync } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { networkInterfaces } from "node:os";
export default async function main(input: { probe: string }) {
  // Node's own I/O still works without io_uring, and so does its interface list (routing netlink).
  await writeFile("/tmp/x", "written");
  return { python: JSON.parse(execFileSync("/usr/bin/python3", ["-c", input.probe + "\\nimport json; print(json.dumps(result))"]).toString()),
    read: await readFile("/tmp/x", "utf8"), interfaces: Object.keys(networkInterfaces()) };
}
`;
    assert.deepEqual(resultOf(await ts(js, { probe })), { python: expected, read: 'written', interfaces: ['lo'] });
  });

  it('/proc files that tell about the host (config.gz, boot id, keys, timers, interrupts, pressure, ...) → empty', async () => {
    const masks = procMasks();
    // Whichever of these this kernel has is masked (Debian's own kernel has no config.gz, and PSI
    // may be off); every kernel has the last three, so the suite never checks an empty list.
    for (const name of ['config.gz', 'keys', 'timer_list', 'interrupts', 'sys/kernel/random/boot_id', 'cmdline'])
      if (existsSync(`/proc/${name}`)) assert.ok(masks.files.includes(name), name);
    for (const name of ['pressure', 'acpi']) if (existsSync(`/proc/${name}`)) assert.ok(masks.dirs.includes(name), name);
    for (const name of ['interrupts', 'sys/kernel/random/boot_id', 'cmdline']) assert.ok(masks.files.includes(name), name);
    const code = `${tryBlock}
result = {"files": {name: attempt(lambda: open("/proc/" + name, "rb").read()) for name in input_data["files"]},
          "dirs": {name: os.listdir("/proc/" + name) for name in input_data["dirs"]},
          "write": attempt(lambda: open("/proc/keys", "w").write("x")),
          "cpuinfo": len(open("/proc/cpuinfo").read()) > 0, "meminfo": len(open("/proc/meminfo").read()) > 0}
`;
    const expected = {
      files: Object.fromEntries(masks.files.map((name) => [name, "no error: b''"])),
      dirs: Object.fromEntries(masks.dirs.map((name) => [name, []])),
      write: 'OSError EROFS',
      cpuinfo: true,
      meminfo: true,
    };
    assert.deepEqual(resultOf(await py(code, masks)), expected);
    const js =
      'import { readFileSync, readdirSync } from "node:fs";\nexport default (input: { files: string[]; dirs: string[] }) => ({ files: input.files.map((name) => readFileSync("/proc/" + name, "utf8")), dirs: input.dirs.map((name) => readdirSync("/proc/" + name)) });\n';
    assert.deepEqual(resultOf(await ts(js, masks)), { files: masks.files.map(() => ''), dirs: masks.dirs.map(() => []) });
  });

  it('/proc/self/mountinfo → no server pid, data or cache path', async () => {
    const packageDir = join(dataDir, 'cache', 'packages', 'abc');
    mkdirSync(packageDir, { recursive: true });
    writeFileSync(join(packageDir, 'module.py'), 'VALUE = 7\n');
    // Reachable by the sandbox user, as a server's cache directory is.
    chmodSync(dataDir, 0o711);
    const mounts = [{ source: packageDir, target: '/opt/mcpworks' }];
    const check = (mountinfo: string) => {
      assert.ok(!mountinfo.includes(dataDir), mountinfo);
      assert.ok(!mountinfo.includes(`-${process.pid}-`), mountinfo);
      // Every host path it names is a system directory or the server's runtime directory (a random name).
      const roots = mountinfo
        .trim()
        .split('\n')
        .map((line) => line.split(' ')[3]!);
      for (const root of roots)
        assert.match(
          root,
          /^\/(usr|etc|newroot|dev|null|zero|full|random|urandom|tmp\/mcpworks-sandbox-[A-Za-z0-9]{6}\/[a-z]+)?(\/|$)/,
          root,
        );
    };
    const code =
      'def main(input_data):\n    import sys\n    sys.path.insert(0, "/opt/mcpworks")\n    import module\n    return [module.VALUE, open("/proc/self/mountinfo").read()]\n';
    const [value, mountinfo] = resultOf(await py(code, {}, { mounts }));
    assert.equal(value, 7);
    check(mountinfo);
    const js =
      'import { readFileSync } from "node:fs";\nexport default () => [readFileSync("/opt/mcpworks/module.py", "utf8"), readFileSync("/proc/self/mountinfo", "utf8")];\n';
    const [source, jsMountinfo] = resultOf(await ts(js, {}, { mounts }));
    assert.equal(source, 'VALUE = 7\n');
    check(jsMountinfo);
  });

  it('a per-user kernel limit (every inotify instance) held by one run → another run in flight still gets its own', async () => {
    const limit = Number(readFileSync('/proc/sys/fs/inotify/max_user_instances', 'utf8'));
    // Another namespace, with its own zygote ready (where zygotes are on).
    const otherWarm = { group: 'escape-other', imports: [] };
    resultOf(await py('result = 1', {}, { warm: otherWarm }));
    const otherReady = () =>
      sandbox
        .zygoteStats()!
        .zygotes.some((zygote) => zygote.owner === 'group:escape-other' && zygote.state === 'ready' && zygote.spares > 0);
    for (let waited = 0; waited < 30_000 && sandbox.zygoteStats() && !otherReady(); waited += 50) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const zygoteRuns = sandbox.zygoteStats()?.runs ?? 0;
    const holder = py(`import ctypes, time
libc = ctypes.CDLL(None, use_errno=True)
held = []
while len(held) < 1000:
    fd = libc.inotify_init1(0)
    if fd < 0:
        break
    held.append(fd)
failure = ctypes.get_errno()
time.sleep(2)
result = [len(held), failure]
`);
    // Its zygote child runs, then time for its few lines to take every instance.
    await zygoteRunsActive(sandbox, 1, 0);
    await new Promise((resolve) => setTimeout(resolve, 700));
    // Another namespace's Python run (in its own zygote's child, unless zygotes are off) and a TypeScript run.
    const other = await py(
      'import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nfd = libc.inotify_init1(0)\nresult = "ok" if fd >= 0 else ctypes.get_errno()\n',
      {},
      { warm: otherWarm },
    );
    if (sandbox.zygoteStats()) assert.equal(sandbox.zygoteStats()!.runs, zygoteRuns + 2, 'both Python runs ran in zygote children');
    const js = await ts(
      'import { watch } from "node:fs";\nexport default () => { const watcher = watch("/tmp"); watcher.close(); return "ok"; };\n',
    );
    assert.deepEqual(resultOf(await holder), [limit, 24], 'the holder reaches the whole per-user limit itself (EMFILE)');
    assert.equal(resultOf(other), 'ok');
    assert.equal(resultOf(js), 'ok');
  });

  it('a 32-bit system call (int 0x80), which would dodge the rules → the process is killed', async () => {
    const code = `import ctypes, mmap
# mov eax, 20 (getpid on i386); int 0x80; ret
machine = b"\\xb8\\x14\\x00\\x00\\x00\\xcd\\x80\\xc3"
page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
page.write(machine)
address = ctypes.addressof(ctypes.c_char.from_buffer(page))
print("calling", flush=True)
result = ctypes.CFUNCTYPE(ctypes.c_int)(address)()
`;
    const outcome = await py(code);
    assert.equal(outcome.ok, false, JSON.stringify(outcome));
    const failure = outcome as { error: { type: string; message: string }; stdout: string };
    assert.equal(failure.stdout, 'calling\n');
    assert.equal(failure.error.type, 'ProcessExitError');
    // A kernel without 32-bit emulation (CONFIG_IA32_EMULATION off, or ia32_emulation=0) faults on
    // int 0x80 before seccomp sees it: the same code outside any sandbox shows which kernel this is.
    const host = spawnSync('/usr/bin/python3', ['-c', code], { stdio: 'ignore' });
    assert.match(failure.error.message, host.signal === 'SIGSEGV' ? /signal 11/ : /forbids \(SIGSYS\)/);
  });

  it('raise privileges → no capabilities, no_new_privs, setuid fails, seccomp on', async () => {
    const code = `${tryBlock}
import subprocess
status = dict(line.split(":\\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\\t" in line)
su = subprocess.run(["/usr/bin/su", "-c", "id -u"], capture_output=True, text=True, stdin=subprocess.DEVNULL)
result = {
    "setuid": attempt(lambda: os.setuid(0)),
    "CapEff": status["CapEff"].strip(), "CapPrm": status["CapPrm"].strip(), "CapBnd": status["CapBnd"].strip(),
    "NoNewPrivs": status["NoNewPrivs"].strip(), "Seccomp": status["Seccomp"].strip(),
    "uid": os.getuid(), "su_stdout": su.stdout.strip(),
}
`;
    const result = resultOf(await py(code));
    // uid 0 is not even mapped in the function's user namespace.
    assert.match(result.setuid, /^(PermissionError EPERM|OSError EINVAL)$/);
    assert.equal(result.CapEff, '0000000000000000');
    assert.equal(result.CapPrm, '0000000000000000');
    assert.equal(result.CapBnd, '0000000000000000');
    assert.equal(result.NoNewPrivs, '1');
    assert.equal(result.Seccomp, '2');
    assert.equal(result.uid, 1000);
    assert.notEqual(result.su_stdout, '0');
  });

  it('no host file descriptor reaches the function', async () => {
    const fds = resultOf(await py('import os\nresult = sorted(os.listdir("/proc/self/fd"), key=int)\n'));
    // 0-2 stdio, 3 the answer channel, then in a sandbox of its own 4 the reopened stdin (/dev/null:
    // the request came on stdin; a zygote child's stdin is /dev/null already), and the listing itself.
    assert.deepEqual(fds, sandbox.zygoteStats() ? ['0', '1', '2', '3', '4'] : ['0', '1', '2', '3', '4', '5']);
    // Every descriptor of every process the run can see: its own, and PID 1 (bubblewrap's init, or
    // in a zygote child the run's undumpable init, whose fds stay closed to it). The lists must not
    // be empty, so the check checks something in every configuration (pool, zygote, cold).
    const probe = `import os
seen, closed = [], []
for pid in sorted((p for p in os.listdir("/proc") if p.isdigit()), key=int):
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except PermissionError:
        closed.append(int(pid))
        continue
    for fd in fds:
        try:
            seen.append([int(pid), os.readlink(f"/proc/{pid}/fd/{fd}")])
        except FileNotFoundError:
            pass
result = {"self": os.getpid(), "seen": seen, "closed": closed}
`;
    const { self, seen, closed } = resultOf(await py(probe)) as { self: number; seen: Array<[number, string]>; closed: number[] };
    // All of its own but the first listing's (closed by then).
    assert.ok(
      seen.filter(([pid]) => pid === self).length >= fds.length - 1,
      `the run's own descriptors were read: ${JSON.stringify(seen)}`,
    );
    assert.ok(seen.some(([pid]) => pid === 1) || closed.includes(1), 'PID 1 was looked at');
    for (const [pid, target] of seen) assert.match(target, /^(\/dev\/null|pipe:|socket:|anon_inode:)/, `pid ${pid}`);
    // The same from Node (a pre-started sandbox).
    const nodeTargets: string[] = resultOf(
      await ts(
        'import { readdirSync, readlinkSync } from "node:fs";\nexport default () => readdirSync("/proc/self/fd").flatMap((fd) => { try { return [readlinkSync(`/proc/self/fd/${fd}`)]; } catch { return []; } });\n',
      ),
    );
    assert.ok(nodeTargets.length >= 3, JSON.stringify(nodeTargets));
    for (const target of nodeTargets) assert.match(target, /^(\/dev\/null|pipe:|socket:|anon_inode:)/, JSON.stringify(nodeTargets));
  });

  it("from Node, import('node:child_process') and process.binding reach only the sandbox", async () => {
    const code = `export default async function main(input: { db: string }) {
  const { execSync } = await import('node:child_process');
  const run = (command: string) => { try { return execSync(command, { stdio: ['ignore', 'pipe', 'pipe'] }).toString().trim(); } catch (e: any) { return 'failed: ' + String(e.stderr).trim(); } };
  const binding = (process as any).binding('spawn_sync');
  const raw = binding.spawn({ file: '/bin/sh', args: ['/bin/sh', '-c', 'cat /etc/shadow ' + input.db + ' 2>&1; ls /proc | grep -c "^[0-9]"'], envPairs: [],
    stdio: [{ type: 'pipe', readable: true, writable: false }, { type: 'pipe', readable: false, writable: true }, { type: 'pipe', readable: false, writable: true }] });
  return {
    shadow: run('cat /etc/shadow'),
    db: run('cat ' + input.db),
    id: run('id -u'),
    processes: Number(run('ls /proc | grep -c "^[0-9]"')),
    binding: String(raw.output[1]),
  };
}
`;
    const result = resultOf(await ts(code, { db: join(dataDir, 'platform.db') }));
    assert.match(result.shadow, /^failed: .*No such file/);
    assert.match(result.db, /^failed: .*No such file/);
    assert.equal(result.id, '1000');
    assert.ok(result.processes <= 6, JSON.stringify(result));
    assert.ok(!result.binding.includes(PLATFORM_SECRET));
    assert.match(result.binding, /No such file/);
  });

  it('two executions in parallel do not interfere', async () => {
    const code =
      'import os, time\ndef main(input_data):\n    path = "/tmp/value"\n    open(path, "w").write(str(input_data["n"]))\n    time.sleep(0.3)\n    return {"n": int(open(path).read()), "env": os.environ["RUN"]}\n';
    const runs = await Promise.all([1, 2, 3, 4, 5, 6].map((n) => py(code, { n }, { env: { RUN: `run-${n}` } })));
    runs.forEach((outcome, index) => assert.deepEqual(resultOf(outcome), { n: index + 1, env: `run-${index + 1}` }));
  });

  it('the attempts above ran in pre-started sandboxes and zygote children, unless switched off', () => {
    const stats = sandbox.poolStats();
    const zygotes = sandbox.zygoteStats();
    if (!escapeSuiteSettings.pool) assert.equal(stats, null);
    else assert.ok(stats !== null && stats.hits >= 3, JSON.stringify(stats));
    if (!escapeSuiteSettings.zygote) assert.equal(zygotes, null);
    else assert.ok(zygotes !== null && zygotes.runs >= 20, `Python attempts should run in zygote children: ${JSON.stringify(zygotes)}`);
  });
});
