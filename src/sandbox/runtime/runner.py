# Runs one Python function inside the sandbox. Started as `python3 -I -S runner.py`:
# the request (code, input, env) arrives as JSON on stdin so that env values never sit in argv
# or in the process's initial environment. Fd 3 is a socket to the host carrying one JSON line
# per message: {"ready":true} once the runner waits for its request (a pooled sandbox may wait
# long before its run), {"started":true} once it has read it, then the final answer, and in
# code mode bridge requests (each answered by one line). stdin is read to its end: one sandbox,
# one request.
import _json
import os
import sys

USER_FILE = "main.py"
_source = ""


# The C half of the json module, without json itself: importing json pulls in re and enum, which
# alone costs about a third of Python's start-up.
class _ScanContext:
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo = {}

    @staticmethod
    def parse_constant(name):
        raise ValueError(f"{name} is not JSON")


_scan = _json.make_scanner(_ScanContext)


def _loads(text):
    value, end = _scan(text, 0)
    if text[end:].strip():
        raise ValueError("extra data after JSON")
    return value


def _not_json(value):
    raise TypeError(f"Object of type {value.__class__.__name__} is not JSON serializable")


def _dumps(value):
    # Same output as json.dumps(value, allow_nan=False, ensure_ascii=False, separators=(",", ":")).
    return "".join(_json.make_encoder({}, _not_json, _json.encode_basestring, None, ":", ",", False, False, False)(value, 0))


def _trimmed_traceback(error):
    # Only frames of the user's file: the runner and library internals would show sandbox paths.
    import linecache
    import traceback
    linecache.cache[USER_FILE] = (len(_source), None, _source.splitlines(True), USER_FILE)
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename == USER_FILE]
    lines = ["Traceback (most recent call last):\n"] if frames else []
    lines += traceback.format_list(frames)
    lines += traceback.format_exception_only(type(error), error)
    return "".join(lines)


def _failure(kind, message, trace=""):
    return _dumps({"ok": False, "type": kind, "message": message, "traceback": trace})


def _run_contract(code, namespace, script):
    # The Python contract, in one place: main(input_data)'s value, else `result`, else `output`.
    # The generated `functions` package runs same-language functions through this too.
    produced = None
    try:
        exec(code, namespace)
        entry = None if script else namespace.get("main")
        if callable(entry):
            argcount = getattr(getattr(entry, "__code__", None), "co_argcount", 1)
            produced = entry(namespace["input_data"]) if argcount else entry()
            if hasattr(produced, "__await__"):
                import asyncio
                produced = asyncio.run(produced)
    except SystemExit as stop:
        # sys.exit() / sys.exit(0) ends the code early but successfully, as it would a script.
        if stop.code not in (None, 0):
            raise
    if produced is None:
        produced = namespace.get("result")
    if produced is None:
        produced = namespace.get("output")
    return produced


def _install_bridge(writer, reader):
    bridge = type(sys)("_mcpworks_bridge")

    def call(message):
        writer.write(_dumps({"bridge": message}) + "\n")
        writer.flush()
        line = reader.readline()
        if not line:
            raise RuntimeError("the MCPWorks bridge closed")
        return _loads(line)

    bridge.call = call
    bridge.run_function = lambda code, namespace: _run_contract(code, namespace, False)
    sys.modules["_mcpworks_bridge"] = bridge


def _acked(read_request, writer):
    """read_request, its request acked on fd 3 once read (STARTED_LINE in wire/messages.ts), before
    anything of the run's own: a sandbox gone without the ack never ran the code, so the host runs
    it elsewhere; one that sent it, never."""
    def read():
        received = read_request()
        if received:
            writer.write('{"started":true}\n')
            writer.flush()
        return received
    return read


def _read_request():
    # "pooled": this sandbox was started ahead of its run, and the wait for the request is free
    # time; spend it loading what reporting an error needs (nothing the user's code chose: that is
    # only known later). A cold start reads its request at once.
    if sys.argv[1:] == ["pooled"]:
        import linecache  # noqa: F401
        import traceback  # noqa: F401
    return sys.stdin.buffer.read()


def prepare():
    """What every run starts with, before its request: the answer's writer on fd 3, line-buffered
    stdout and stderr, help(). A zygote makes them once, before it forks (nothing written yet, so
    no run's bytes are in them): a worker that made its own would pay for every object in page
    faults. Returns the writer."""
    # backslashreplace: a lone surrogate in a result becomes a \udcxx JSON escape, not a crash.
    # closefd=False: in a zygote, fd 3 is its control socket, which this object must never close.
    writer = os.fdopen(3, "w", encoding="utf-8", errors="backslashreplace", closefd=False)
    sys.stdout.reconfigure(line_buffering=True)
    sys.stderr.reconfigure(line_buffering=True)
    # -S skips site.py and with it the help() builtin: give it back. pydoc writes plain text to
    # stdout (not a terminal), and an interactive help() reads /dev/null and ends.
    import builtins
    import _sitebuiltins
    builtins.help = _sitebuiltins._Helper()
    return writer


def serve(read_request, bridge_reader=None, writer=None):
    """One run: announce readiness on fd 3, read the request, run the code, answer on fd 3.
    A zygote's worker calls this with its channel as both the request and the bridge reader, the
    writer its zygote prepared, and stdin already /dev/null."""
    global _source
    if writer is None:
        writer = prepare()
        # The request came on stdin: the code reads /dev/null instead.
        reopen_stdin = True
    else:
        reopen_stdin = False
    # -S skips site.py for start-up speed; the allow-listed packages live here.
    if "/usr/lib/python3/dist-packages" not in sys.path:
        sys.path.append("/usr/lib/python3/dist-packages")
    writer.write('{"ready":true}\n')
    writer.flush()
    read_request = _acked(read_request, writer)
    request = _loads(read_request().decode("utf-8"))
    if reopen_stdin:
        sys.stdin.close()
        sys.stdin = open(os.devnull, "r")
    for name, value in request["env"].items():
        os.environ[name] = value
    # /sandbox/python: the `mcpworks` module (agent state through the bridge), first so nothing shadows it.
    sys.path[0:0] = ["/sandbox/python", *request["libraryPaths"]]
    if request["bridge"]:
        _install_bridge(writer, bridge_reader or os.fdopen(os.dup(3), "r", encoding="utf-8"))
    sys.argv = [USER_FILE]
    max_result = request["maxResultBytes"]
    script = request["entry"] == "script"
    _source = request["code"]

    answered = False

    def flush_output():
        # The code may have closed, replaced (even with None) or left non-blocking its streams: the
        # runner's own flushes never raise, or the run would end in the runner's traceback.
        for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass

    def answer(payload):
        nonlocal answered
        answered = True
        # The host ends the run at its answer: a last stderr line without its newline goes first,
        # and so does what the real stdout holds if the code replaced sys.stdout.
        flush_output()
        writer.write(payload + "\n")
        writer.flush()

    try:
        code = compile(_source, USER_FILE, "exec", dont_inherit=True)
    except SyntaxError as error:
        import traceback
        detail = "".join(traceback.format_exception_only(type(error), error))
        answer(_failure("SyntaxError", f"{error.msg} (line {error.lineno})", detail))
        return

    # A fresh __main__ module, so pickle, dataclasses and `if __name__ == "__main__"` behave as in a script.
    module = type(sys)("__main__")
    module.__file__ = USER_FILE
    module.input_data = request["input"]
    sys.modules["__main__"] = module
    namespace = module.__dict__
    del request

    def deliver(produced):
        try:
            encoded = _dumps(produced)
        except (TypeError, ValueError, RecursionError) as error:
            answer(_failure("SerializationError", f"the result is not JSON-serialisable: {error}"))
            return
        if len(encoded.encode("utf-8", "backslashreplace")) > max_result:
            answer(_failure("OutputSizeError", f"the result is larger than {max_result} bytes"))
            return
        answer('{"ok":true,"result":' + encoded + "}")

    # One exit rule in both languages: status 0 (sys.exit(), os._exit(0), process.exit(0)) ends the
    # code early but successfully with what it assigned to `result` (else `output`); any other
    # status is a ProcessExitError that names it.
    real_exit = os._exit
    runner_pid = os.getpid()

    def user_exit(status):
        if os.getpid() != runner_pid:  # a child the code forked: its exit is its own
            real_exit(status)
        if not answered:
            if status == 0:
                deliver(namespace.get("result") if namespace.get("result") is not None else namespace.get("output"))
            else:
                answer(_failure("ProcessExitError", f"the code exited with status {status} (os._exit({status}))"))
        flush_output()
        real_exit(0)

    os._exit = user_exit
    try:
        produced = _run_contract(code, namespace, script)
    except SystemExit as stop:  # a status other than 0 (see _run_contract)
        status = stop.code if isinstance(stop.code, int) else 1
        said = f": {stop.code}" if not isinstance(stop.code, int) else ""
        answer(_failure("ProcessExitError", f"the code exited with status {status} (sys.exit){said}", _trimmed_traceback(stop)))
        return
    except BaseException as error:  # the user's own exception, including KeyboardInterrupt
        # Some exceptions carry no text (MemoryError(), StopIteration()); the class name still says what happened.
        answer(_failure(type(error).__name__, str(error) or type(error).__name__, _trimmed_traceback(error)))
        return
    finally:
        os._exit = real_exit
    deliver(produced)


if __name__ == "__main__":
    serve(_read_request)
    # Skip interpreter teardown of everything the function loaded: the answer is already sent.
    for _stream in (sys.stdout, sys.stderr):
        try:
            _stream.flush()
        except Exception:  # noqa: BLE001 (a stream the code closed or replaced)
            pass
    os._exit(0)
