# The Python fork-server ("zygote") of one namespace and sandbox shape. It runs inside its own
# bubblewrap sandbox (user, PID, mount, IPC, UTS and network namespaces, read-only root, no
# network), pre-imports the allow-listed packages the namespace's functions declare, and then only
# forks. It never runs user code and never sees a request: the host sends each run's request, env
# values included, straight to the forked child over that child's own connection.
#
# Started as `python3 -I -S -B zygote.py CONFIG_JSON` with:
#   fd 3  the control socket to the host. Host -> zygote: fork requests, fixed-size records
#         "F TOKEN ID run-CGROUP\n" (32, 16 and 16 hex digits). Zygote -> host: JSON lines,
#         {"ready": true} once imported, {"exited": ID, "status": N} per child, and a child's own
#         {"setupFailed": STEP, "errno": N, "child": ID} when a step of its set-up failed before it
#         had its channel (after, the same line without the id goes on its channel).
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
#
# Once imported, the zygote runs no more Python: its request loop and P1 are C
# (native/mcpworks-zygote-child.c, /sandbox/zygote-child.so), and only each worker returns here,
# from inside that call, to run its function. Python code a child ran would be copy-on-write page
# faults, object by object, in every run. Each worker pays the faults its run would pay while it
# waits, before its request exists: a rehearsal of the runner's path over fixed platform code
# (_rehearse), of which the run sees nothing.
import ctypes
import json
import os
import socket
import sys

SETUP_FAILED = 111
# First uses that libraries initialise lazily (caches, dispatch tables, deferred imports): done
# once here, they are not repeated, page fault by page fault, in every child. Fixed code, no input.
WARM_UP = {
    "numpy": "import numpy as np\na = np.arange(16, dtype=float)\n(a * 2 + 1).sum(); a.mean(); a.reshape(4, 4).T @ a.reshape(4, 4); np.array([1, 2]).tolist()",
    "pandas": "import pandas as pd\nf = pd.DataFrame({'x': range(4), 'y': [0.5, 1.5, 2.5, 3.5], 's': list('abcd')})\n"
    "int(f['x'].sum()); f.describe(); f.groupby('s').sum(); f.to_dict(orient='records'); f.sort_values('y'); pd.Series([1, 2]).tolist()",
}
# The rehearsal each worker runs before it reads its request (see _rehearse): fixed platform code
# and input, a request as the host would send it. Never a tenant's code or data. No env: setting
# and unsetting one cost every run ~20 page faults, and os.environ is left as it was.
REHEARSAL = {
    "code": "def main(input_data):\n    print('rehearsal')\n    return {'greeting': 'hello ' + input_data['name'], 'n': len(input_data)}\n",
    "input": {"name": "rehearsal"},
    "env": {},
    "libraryPaths": [],
    "bridge": False,
    "maxResultBytes": 1 << 20,
    "entry": "main",
}
# What each worker's rehearsal runs again of the allow-listed packages (see _rehearse): the first
# uses most functions make (build a frame or an array, reduce it). Not all of WARM_UP: that, again
# in every worker, cost ~9 ms and 1,500 page faults, more than the pandas run it spared.
REHEARSE = {
    "numpy": "import numpy as np\na = np.arange(16, dtype=float)\n(a * 2 + 1).sum(); a.mean(); np.array([1, 2]).tolist()",
    "pandas": "import pandas as pd\nf = pd.DataFrame({'x': range(4), 'y': [0.5, 1.5, 2.5, 3.5]})\n"
    "int(f['x'].sum() + f['y'].sum())",
}
# Encoded here, once: encoding it in each worker was ~80 page faults of its own.
REHEARSAL_REQUEST = json.dumps(REHEARSAL).encode()
STDLIB_WARM = ("json", "re", "types", "datetime", "collections", "functools", "itertools", "math", "random", "base64", "hashlib", "typing", "dataclasses")

native = ctypes.PyDLL("/sandbox/zygote-child.so", use_errno=True)
libc = ctypes.CDLL(None, use_errno=True)
PR_SET_CHILD_SUBREAPER = 36
native.mcpw_configure.argtypes = (ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_ulonglong), ctypes.c_size_t)
native.mcpw_serve.argtypes = (ctypes.c_int, ctypes.POINTER(ctypes.c_int))
pythonapi = ctypes.pythonapi
# Looked up here, once: a lookup in each worker would be work (and pages) of its own.
after_fork_child = pythonapi.PyOS_AfterFork_Child


def _reseed():
    # Every child starts from the same pre-import memory, random generators included. (`random`
    # reseeds itself: its os.register_at_fork hook runs in after_fork_child.)
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:
        numpy_random.seed()


def _read_request(clock):
    """The run's two lines on fd 3: its CPU-time and wall-clock limits (applied here, before any of
    its code: the wall clock is handed to P1 on `clock`, then closed), then the request. Read
    unbuffered: the host sends nothing else before the run answers or calls the bridge, and the fd
    table stays a cold run's (the bridge opens its own reader)."""
    import resource
    import runner
    data = b""
    while data.count(b"\n") < 2:
        chunk = os.read(3, 1 << 16)
        if not chunk:
            break
        data += chunk
    head, _, request = data.partition(b"\n")
    limits = runner._loads(head.decode())  # the C scanner: json.loads's Python would be page faults
    os.write(clock, str(int(limits["wallMs"])).encode())
    os.close(clock)
    seconds = int(limits["cpuSeconds"])
    resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds + 1))
    return request


def _rehearse(runner, imports, sink):
    """One run of fixed platform code through runner.serve, its answer to a sink (never the
    channel), and a short first use of the namespace's packages (REHEARSE): the copy-on-write and first-touch page faults a
    run pays (compile, a fresh __main__, print, the call, the encoder, the libraries' first uses)
    paid while the worker waits, before its request exists. Then nothing of it is left for the run:
    sys.path, stdout, stderr and __main__ as before, its objects collected. (sys.argv and os.environ:
    serve sets the one again, and the rehearsal sets no env.) `sink` is a text writer the zygote
    made over memory: the channel's kind of writer, never fd 1, 2 or 3."""
    import gc
    path, main_module, stdout, stderr = sys.path[:], sys.modules["__main__"], sys.stdout, sys.stderr
    sys.stdout = sys.stderr = sink
    try:
        runner.serve(lambda: REHEARSAL_REQUEST, writer=sink)
        for name in imports:
            if name in REHEARSE:
                exec(REHEARSE[name], {})
    except BaseException:  # noqa: BLE001 - a rehearsal that failed only leaves its faults to the run
        pass
    finally:
        sys.stdout, sys.stderr = stdout, stderr
        sys.path[:] = path
        sys.modules["__main__"] = main_module
        # Its lines and print dropped too: the run can reach the sink through its frames.
        sink.flush()
        sink.buffer.seek(0)
        sink.buffer.truncate()
        # The rehearsal's module, function and input are a reference cycle: gone before the run.
        gc.collect()


def _worker(clock, writer, imports, sink):
    """P2: the run itself, through runner.py's code. Never returns. Its rlimits, session, dumpable
    flag and signal dispositions were set in C (zygote-child.c) before it returned here: Python
    code here is copy-on-write page faults in every run."""
    try:
        # Forked (by P1) inside the C call: what os.fork does for a child, done here.
        after_fork_child()
        import runner
        _rehearse(runner, imports, sink)
        # After the rehearsal, so nothing it drew is the run's.
        _reseed()
        # Its stdin is /dev/null already (P1 pointed fd 0 there): the zygote's sys.stdin reads it.
        runner.serve(lambda: _read_request(clock), writer=writer)
    except BaseException:  # noqa: BLE001
        os._exit(SETUP_FAILED)
    # Answered: a stream the code closed or replaced is no set-up failure.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001
            pass
    os._exit(0)


def main():
    import resource  # noqa: F401  the worker sets its CPU limit with it
    config = json.loads(sys.argv[1])
    chunks = []
    while True:
        chunk = os.read(4, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(4)
    seccomp = b"".join(chunks)
    masks = "".join(f"f {name}\n" for name in config["procMasks"]["files"]) + "".join(f"d {name}\n" for name in config["procMasks"]["dirs"])
    import resource
    # The worker's rlimits (zygote-child.c sets them in each worker, in C): RLIMIT_ number, soft, hard.
    limits = [value for name, (soft, hard) in config["rlimits"].items() for value in (getattr(resource, "RLIMIT_" + name.upper()), soft, hard)]
    limit_array = (ctypes.c_ulonglong * max(1, len(limits)))(*limits)
    if native.mcpw_configure(masks.encode(), config["tmpfsBytes"], seccomp, len(seccomp), limit_array, len(limits) // 3) != 0:
        raise OSError(ctypes.get_errno(), "zygote-child.so: configure")
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "subreaper")
    sys.path.append("/usr/lib/python3/dist-packages")
    sys.path.insert(0, "/sandbox")
    import linecache  # noqa: F401  what reporting a failure needs, as a pooled runner loads it
    import _sitebuiltins  # noqa: F401  runner.serve gives help() back with it
    import traceback  # noqa: F401
    import runner
    # Standard-library modules most runs load (code mode's `functions` package needs json), then
    # the allow-listed packages the namespace's functions declare.
    for name in STDLIB_WARM + tuple(config["imports"]):
        try:
            __import__(name)
            if name in WARM_UP:
                exec(WARM_UP[name], {})
        except BaseException:  # noqa: BLE001 - the run imports it again and reports the error itself
            pass
    # Code mode's `functions` package (the platform's loader over the catalog's JSON: no function's
    # code runs), from the run's library paths, which the runner puts on sys.path again per run.
    preload = config.get("preload")
    if preload:
        sys.path[0:0] = preload["paths"]
        try:
            __import__(preload["module"])
        except BaseException:  # noqa: BLE001 - the run imports it again and reports the error itself
            for name in [n for n in sys.modules if n == preload["module"] or n.startswith(preload["module"] + ".")]:
                del sys.modules[name]
        del sys.path[0 : len(preload["paths"])]
    # Each run's answer writer and line-buffered stdio (see runner.prepare): fd 3 here is the control
    # socket, never written through this writer; in each worker it is the run's channel.
    writer = runner.prepare()
    # The worker's rehearsal writes here (see _rehearse), made once as the writer was.
    import io
    sink = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="backslashreplace")
    # What the imports left is never collected in a child: without this, a child's first garbage
    # collection walks (and so copies, page by page) every object the zygote holds.
    import gc
    gc.collect()
    gc.freeze()
    control = socket.socket(fileno=3)
    control.setblocking(True)
    control.sendall(b'{"ready": true}\n')
    sys.stdout.flush()
    sys.stderr.flush()
    # From here the zygote runs no Python: its loop (reading fork requests, reporting exits) and
    # each child's set-up are in C, and only each worker returns here (see zygote-child.c).
    clock = ctypes.c_int(-1)
    pythonapi.PyOS_BeforeFork()
    if native.mcpw_serve(control.fileno(), ctypes.byref(clock)) == 0:
        _worker(clock.value, writer, tuple(config["imports"]), sink)
    pythonapi.PyOS_AfterFork_Parent()


if __name__ == "__main__":
    main()
