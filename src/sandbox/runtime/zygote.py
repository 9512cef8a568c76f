# The Python fork-server ("zygote") of one namespace and sandbox shape. It runs inside its own
# bubblewrap sandbox (user, PID, mount, IPC, UTS and network namespaces, read-only root, no
# network), pre-imports the allow-listed packages the namespace's functions declare, and then only
# forks. It never runs user code and never sees a request: the host sends each run's request, env
# values included, straight to the forked child over that child's own connection.
#
# Started as `python3 -I -S -B zygote.py CONFIG_JSON` with:
#   fd 3  the control socket to the host. Host -> zygote: fork requests, fixed-size records
#         "F TOKEN ID run-CGROUP\n" (32, 16 and 16 hex digits). Zygote -> host: JSON lines,
#         {"ready": true} once imported, {"exited": ID, "status": N} per child.
#   fd 4  the seccomp-bpf program every child loads before anything of a run happens.
#   /sandbox/zygote/cg-memory, /sandbox/zygote/cg-pids  this zygote's cgroup directories (the host
#         made NAME in each, writable by the sandbox user, before asking for the fork).
#   /sandbox/zygote/sock/host.sock  where children connect their stdout, stderr and channel.
# (Empty mount points in every other sandbox.)
#
# Each fork gives one run a child ("P1") that is PID 1 of a fresh PID namespace, in fresh mount,
# IPC, network and cgroup namespaces, inside the run's own cgroups, with fresh /proc, /tmp and /dev/shm and
# without the host's cgroup or socket mounts. P1 drops every capability, loads seccomp, becomes
# undumpable and forks the worker ("P2") that runs the function through runner.py's own code;
# P1 waits and exits with the worker's status (128+N for signal N, as bubblewrap reports it), or
# with 137 once the run's wall clock (sent with its request) has run out, whatever the host does. So a
# run cannot see, signal or trace another run (nor P1, nor the zygote), share files or IPC with it,
# or inherit anything but the zygote's pre-import state, which no run ever wrote to.
import ctypes
import json
import os
import select
import signal
import socket
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 8, 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
PR_SET_DUMPABLE, PR_SET_SECCOMP, PR_SET_NO_NEW_PRIVS, PR_SET_CHILD_SUBREAPER = 4, 22, 38, 36
PR_CAPBSET_DROP, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 24, 47, 4
SECCOMP_MODE_FILTER = 2
CAP_LAST = 63
HOST_SOCKET = "/sandbox/zygote/sock/host.sock"
HOST_MOUNTS = ("/sandbox/zygote/cg-memory", "/sandbox/zygote/cg-pids", "/sandbox/zygote/sock")
SIOCSIFFLAGS, IFF_UP, IFF_LOOPBACK, IFF_RUNNING = 0x8914, 0x1, 0x8, 0x40
SETUP_FAILED = 111
# P1's status when the run's wall clock ran out: as if killed (SIGKILL), which it then is.
WALL_CLOCK_STATUS = 128 + 9
# A fork request: b"F " + token (32) + b" " + id (16) + b" run-" + cgroup id (16) + b"\n".
RECORD = 73
TOKEN_AT = 2
# First uses that libraries initialise lazily (caches, dispatch tables, deferred imports): done
# once here, they are not repeated, page fault by page fault, in every child. Fixed code, no input.
WARM_UP = {
    "numpy": "import numpy as np\na = np.arange(16, dtype=float)\n(a * 2 + 1).sum(); a.mean(); a.reshape(4, 4).T @ a.reshape(4, 4); np.array([1, 2]).tolist()",
    "pandas": "import pandas as pd\nf = pd.DataFrame({'x': range(4), 'y': [0.5, 1.5, 2.5, 3.5], 's': list('abcd')})\n"
    "int(f['x'].sum()); f.describe(); f.groupby('s').sum(); f.to_dict(orient='records'); f.sort_values('y'); pd.Series([1, 2]).tolist()",
}
STDLIB_WARM = ("json", "re", "types", "datetime", "collections", "functools", "itertools", "math", "random", "base64", "hashlib", "typing", "dataclasses")

libc = ctypes.CDLL(None, use_errno=True)


def _check(result, what):
    if result != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{what}: {os.strerror(error)}")


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _drop_capabilities():
    for cap in range(CAP_LAST + 1):
        libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)  # EINVAL past the kernel's last capability
    libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3: two 32-bit halves
    data = (_CapData * 2)()
    _check(libc.capset(ctypes.byref(header), data), "capset")


def _load_seccomp(program):
    _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    _check(libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0), "seccomp")


def _mount(source, target, fstype, flags, data):
    _check(libc.mount(source, target, fstype, flags, data), f"mount {target.decode()}")


def _loopback_up():
    # A new network namespace has only `lo`, and down; bubblewrap brings it up for its own.
    import fcntl
    import struct
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        fcntl.ioctl(probe, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", IFF_UP | IFF_LOOPBACK | IFF_RUNNING))


def _mask_proc(masks):
    # As bubblewrap.ts does for a cold run: what /proc tells about the host reads empty.
    sealed = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC
    for name in masks["files"]:
        target = f"/proc/{name}".encode()
        _mount(b"/sandbox/empty", target, None, MS_BIND, None)
        _mount(None, target, None, MS_BIND | MS_REMOUNT | sealed, None)
    for name in masks["dirs"]:
        _mount(b"tmpfs", f"/proc/{name}".encode(), b"tmpfs", sealed, b"size=4k,mode=555")


def _connect(token, stream):
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(HOST_SOCKET)
    conn.sendall(f"{token} {stream}\n".encode())
    return conn.detach()


def _reseed():
    # Every child starts from the same pre-import memory, random generators included.
    if "random" in sys.modules:
        sys.modules["random"].seed()
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:
        numpy_random.seed()


def _child(token, cgroup, config, seccomp):
    """P1: runs in the fresh PID namespace. Never returns."""
    status = SETUP_FAILED
    try:
        # Fails (and so does the run's set-up) if a group is missing: never run outside the limits.
        for controller in ("memory", "pids"):
            with open(f"/sandbox/zygote/cg-{controller}/{cgroup}/cgroup.procs", "w") as handle:
                handle.write("0\n")
        # Its cgroup namespace is rooted at the run's group it has just joined (see zygoteBubblewrapArgs).
        _check(libc.unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWNET | CLONE_NEWCGROUP), "unshare")
        _loopback_up()
        _mount(None, b"/", None, MS_REC | MS_PRIVATE, None)
        _mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
        _mask_proc(config["procMasks"])
        _mount(b"tmpfs", b"/tmp", b"tmpfs", MS_NOSUID | MS_NODEV, f"size={config['tmpfsBytes']},mode=1777".encode())
        _mount(b"tmpfs", b"/dev/shm", b"tmpfs", MS_NOSUID | MS_NODEV, f"size={64 * 1024 * 1024},mode=1777".encode())
        out, err, chan = _connect(token, "out"), _connect(token, "err"), _connect(token, "chan")
        for path in HOST_MOUNTS:
            _check(libc.umount2(path.encode(), MNT_DETACH), f"umount {path}")
        null = os.open(os.devnull, os.O_RDWR)
        for source, target in ((null, 0), (out, 1), (err, 2), (chan, 3)):
            os.dup2(source, target)
        os.closerange(4, 65536)
        os.chdir("/tmp")
        _drop_capabilities()
        _load_seccomp(seccomp)
        # Undumpable: the worker (same user) cannot open this process's /proc files or memory.
        _check(libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0), "dumpable")
        # Default dispositions: as PID 1 of its namespace, P1 then ignores every signal its run
        # sends it (Python's own SIGINT handler would let the run end it).
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
            signal.signal(signum, signal.SIG_DFL)
        # The run's wall clock, kept here whatever the host does (stalled, say): the worker writes
        # its limit on this pipe when its request arrives, before any of the run's code; at the
        # deadline P1 exits, and the kernel kills everything left in its PID namespace.
        clock_read, clock_write = os.pipe()
        # SIGCHLD wakes the wait below through this pipe (a run can send P1 only this signal,
        # which at most makes it reap).
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_write, False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(wake_write)
        worker = os.fork()
        if worker == 0:
            signal.set_wakeup_fd(-1)
            for fd in (clock_read, wake_read, wake_write):
                os.close(fd)
            _worker(config, clock_write)
        os.close(clock_write)
        # Only the worker's tree holds the run's streams now: they close when it is done.
        for fd in (1, 2, 3):
            os.dup2(0, fd)
        status = _wait_worker(worker, clock_read, wake_read)
    except BaseException:  # noqa: BLE001 - set-up failed: the host sees status 111
        status = SETUP_FAILED
    os._exit(status)


def _wait_worker(worker, clock_read, wake_read):
    """P1's wait: reaps every process of the run until the worker ends (its status, 128+N for
    signal N) or the run's wall clock runs out (WALL_CLOCK_STATUS)."""
    import time
    deadline = None
    while True:
        while True:
            try:
                pid, wait_status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return SETUP_FAILED
            if pid == 0:
                break
            if pid == worker:
                status = os.waitstatus_to_exitcode(wait_status)
                return 128 - status if status < 0 else status
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            return WALL_CLOCK_STATUS
        watched = [wake_read] if clock_read is None else [wake_read, clock_read]
        readable, _, _ = select.select(watched, [], [], None if deadline is None else deadline - now)
        if wake_read in readable:
            os.read(wake_read, 512)
        if clock_read is not None and clock_read in readable:
            said = os.read(clock_read, 32)
            os.close(clock_read)
            clock_read = None
            if said.strip().isdigit():
                deadline = time.monotonic() + int(said) / 1000


def _read_request(clock):
    """The run's two lines on fd 3: its CPU-time and wall-clock limits (applied here, before any of
    its code: the wall clock is handed to P1 on `clock`, then closed), then the request. Read
    unbuffered: the host sends nothing else before the run answers or calls the bridge, and the fd
    table stays a cold run's (the bridge opens its own reader)."""
    import resource
    data = b""
    while data.count(b"\n") < 2:
        chunk = os.read(3, 1 << 16)
        if not chunk:
            break
        data += chunk
    head, _, request = data.partition(b"\n")
    limits = json.loads(head)
    os.write(clock, str(int(limits["wallMs"])).encode())
    os.close(clock)
    seconds = int(limits["cpuSeconds"])
    resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds + 1))
    return request


def _worker(config, clock):
    """P2: the run itself, through runner.py's code. Never returns."""
    import resource
    try:
        libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)  # its own /proc/self stays its own to read
        os.setsid()
        for name, (soft, hard) in config["rlimits"].items():
            resource.setrlimit(getattr(resource, "RLIMIT_" + name.upper()), (soft, hard))
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a fresh interpreter
        _reseed()
        import runner
        runner.serve(lambda: _read_request(clock))
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # noqa: BLE001
        os._exit(SETUP_FAILED)
    os._exit(0)


def _fork_child(record, cgroup, config, seccomp, state):
    """Starts P1 for the run whose request is in `record`; returns (intermediate pid, read end of
    the pipe P1's pid arrives on)."""
    read_end, write_end = os.pipe()
    try:
        intermediate = os.fork()
    except OSError:
        os.close(read_end)
        os.close(write_end)
        return None
    if intermediate == 0:
        # Entering a new PID namespace is for the children of the caller, and only once per
        # process: so a short-lived intermediate unshares it and forks P1, its first process.
        status = SETUP_FAILED
        try:
            signal.set_wakeup_fd(-1)
            # Its own token, the only one in the zygote's memory (see main): this process's memory
            # becomes the run's.
            token = bytes(memoryview(record)[TOKEN_AT:TOKEN_AT + 32]).decode("ascii")
            ctypes.memset(record, 0, RECORD)
            for value in state.values():
                value.clear()
            os.close(read_end)
            _check(libc.unshare(CLONE_NEWPID), "unshare pid")
            pid = os.fork()
            if pid == 0:
                os.close(write_end)
                _child(token, cgroup, config, seccomp)
            os.write(write_end, str(pid).encode())
            status = 0
        except BaseException:  # noqa: BLE001
            pass
        os._exit(status)
    os.close(write_end)
    return intermediate, read_end


def main():
    import resource  # noqa: F401  the worker sets its limits with it
    config = json.loads(sys.argv[1])
    chunks = []
    while True:
        chunk = os.read(4, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(4)
    seccomp = b"".join(chunks)
    _check(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), "subreaper")
    sys.path.append("/usr/lib/python3/dist-packages")
    sys.path.insert(0, "/sandbox")
    import linecache  # noqa: F401  what reporting a failure needs, as a pooled runner loads it
    import traceback  # noqa: F401
    import runner  # noqa: F401
    # Standard-library modules most runs load (code mode's `functions` package needs json), then
    # the allow-listed packages the namespace's functions declare.
    for name in STDLIB_WARM + tuple(config["imports"]):
        try:
            __import__(name)
            if name in WARM_UP:
                exec(WARM_UP[name], {})
        except BaseException:  # noqa: BLE001 - the run imports it again and reports the error itself
            pass
    # What the imports left is never collected in a child: without this, a child's first garbage
    # collection walks (and so copies, page by page) every object the zygote holds.
    import gc
    gc.collect()
    gc.freeze()
    control = socket.socket(fileno=3)
    control.setblocking(True)
    # A fork request's token is only ever in this buffer, read straight from the socket, one
    # request at a time (the rest wait in the kernel), and zeroed once its child is forked: no
    # child's memory, a copy of the zygote's, holds another child's token. Nothing else is parsed
    # from the token bytes, so no Python object holds them.
    record = ctypes.create_string_buffer(RECORD)
    view = memoryview(record).cast("B")
    have = 0
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    children = {}  # P1 pid -> request id
    pending = {}  # pipe read end -> request id, until the intermediate has said P1's pid
    intermediates = set()
    early = {}  # P1s reaped before their pid arrived (set-up failed at once) -> status
    buffers = {}
    state = {"children": children, "pending": pending, "early": early, "buffers": buffers}

    def send(message):
        control.sendall((json.dumps(message) + "\n").encode())

    def settle(pid, status):
        request_id = children.pop(pid, None)
        if request_id is not None:
            send({"exited": request_id, "status": status})
        elif pid not in intermediates and len(early) < 4096:
            early[pid] = status

    send({"ready": True})
    while True:
        readable, _, _ = select.select([control, wake_read, *pending], [], [])
        if wake_read in readable:
            os.read(wake_read, 512)
            while True:
                try:
                    pid, wait_status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    break
                if pid in intermediates:
                    intermediates.discard(pid)
                    continue
                code = os.waitstatus_to_exitcode(wait_status)
                settle(pid, 128 - code if code < 0 else code)
        for fd in [fd for fd in readable if fd in pending]:
            chunk = os.read(fd, 32)
            if chunk:
                buffers[fd] = buffers.get(fd, b"") + chunk
                continue
            # The intermediate is done: its pipe closed after it wrote P1's pid (or failed to).
            request_id = pending.pop(fd)
            reply = buffers.pop(fd, b"")
            os.close(fd)
            if not reply:
                send({"exited": request_id, "status": SETUP_FAILED})
                continue
            pid = int(reply)
            children[pid] = request_id
            if pid in early:
                settle(pid, early.pop(pid))
        if control not in readable:
            continue
        got = control.recv_into(view[have:], RECORD - have)
        if not got:
            return  # the host is gone: the sandbox ends, and every child with it
        have += got
        if have < RECORD:
            continue
        have = 0
        tail = bytes(view[TOKEN_AT + 32:])  # everything after the token
        fields = tail[1:-1].decode("ascii").split(" ")
        if view[0] != ord("F") or tail[:1] != b" " or tail[-1:] != b"\n" or len(fields) != 2:
            return  # not the host's framing: stop rather than guess
        request_id, cgroup = fields
        sys.stdout.flush()
        sys.stderr.flush()
        # Not waited for: the intermediate and P1 set up in parallel with the next forks.
        started = _fork_child(record, cgroup, config, seccomp, state)
        ctypes.memset(record, 0, RECORD)
        if started is None:
            send({"exited": request_id, "status": SETUP_FAILED})
            continue
        intermediate, read_end = started
        intermediates.add(intermediate)
        pending[read_end] = request_id


if __name__ == "__main__":
    main()
