# The generated `functions` package of MCPWorks code mode. This file is static: everything about
# the namespace (names, descriptions, schemas, code) is read from _catalog.json and _code/ as data,
# so nothing a user writes is ever spliced into source code.
import json as _json
import os as _os
import sys as _sys
import types as _types

_HERE = _os.path.dirname(__file__)
with open(_os.path.join(_HERE, "_catalog.json"), encoding="utf-8") as _file:
    _CATALOG = _json.load(_file)

__doc__ = _CATALOG["doc"]["python"]


class FunctionError(Exception):
    """A function called from code mode failed; `error_type` names what went wrong."""

    def __init__(self, error_type, message):
        super().__init__(message)
        self.error_type = error_type


class InputValidationError(FunctionError, ValueError):
    """The arguments do not match the function's input_schema."""


def _bridge(message):
    # Provided by the sandbox runner: a blocking request/answer channel to the host.
    import _mcpworks_bridge
    return _mcpworks_bridge.call(message)


# Each function's code compiled once per run: a call still runs it in a fresh module.
_compiled = {}


def _run_local(entry, arguments):
    code = _compiled.get(entry["file"])
    if code is None:
        path = _os.path.join(_HERE, "_code", entry["file"])
        with open(path, encoding="utf-8") as source:
            code = _compiled[entry["file"]] = compile(source.read(), entry["display"], "exec", dont_inherit=True)
    module = _types.ModuleType(entry["module"])
    module.__file__ = entry["display"]
    module.input_data = arguments
    # The runner's own contract (main(input_data), else result, else output; sys.exit() is success).
    import _mcpworks_bridge
    return _mcpworks_bridge.run_function(code, module.__dict__)


_ANNOTATIONS = {"str": str, "int": int, "float": float, "bool": bool, "list": list, "dict": dict, "None": None}
_KEYWORDS = frozenset(("False", "None", "True", "and", "as", "assert", "async", "await", "break", "class", "continue", "def", "del", "elif", "else", "except", "finally", "for", "from", "global", "if", "import", "in", "is", "lambda", "nonlocal", "not", "or", "pass", "raise", "return", "try", "while", "with", "yield"))


def _signature_template():
    pass


def _signature_stub(entry):
    # A do-nothing function whose parameters are the input schema's properties, set as the
    # wrapper's __wrapped__: inspect.signature() and help() show them, and nothing imports
    # inspect up front (its import costs more than the rest of this package). The names are data
    # given to a code object, never source text.
    usable = [p for p in entry["parameters"] if p["name"].isidentifier() and p["name"] not in _KEYWORDS]
    names = [p["name"] for p in usable]
    # No properties, or some that cannot be keyword names: the wrapper takes them as **kwargs.
    rest = not entry["parameters"] or len(usable) < len(entry["parameters"])
    template = _signature_template.__code__
    code = template.replace(
        co_argcount=0,
        co_posonlyargcount=0,
        co_kwonlyargcount=len(names),
        co_nlocals=len(names) + (1 if rest else 0),
        co_varnames=tuple(names + (["kwargs"] if rest and "kwargs" not in names else ["_kwargs"] if rest else [])),
        co_flags=template.co_flags | (0x08 if rest else 0),
        co_name=entry["identifier"],
    )
    stub = _types.FunctionType(code, {}, entry["identifier"])
    stub.__kwdefaults__ = {p["name"]: p["default"] if "default" in p else None for p in usable if not p["required"]} or None
    annotations = {p["name"]: _ANNOTATIONS.get(p["annotation"], p["annotation"]) for p in usable}
    annotations["return"] = _ANNOTATIONS.get(entry["returns"], entry["returns"])
    stub.__annotations__ = annotations
    return stub


def _wrapper(entry):
    def call(*args, **kwargs):
        if args:
            if len(args) == 1 and isinstance(args[0], dict) and not kwargs:
                kwargs = dict(args[0])
            else:
                raise TypeError(f"{entry['identifier']}() takes keyword arguments (or one dict)")
        try:
            answer = _bridge({"op": "call", "service": entry["service"], "function": entry["name"], "input": kwargs})
        except (TypeError, ValueError, RecursionError) as error:
            # One rule in both languages: an input that is not JSON (NaN, a set...) is a SerializationError.
            raise FunctionError("SerializationError", f"the input of {entry['service']}.{entry['name']} is not JSON-serialisable: {error}") from None
        if not answer.get("ok"):
            error_class = InputValidationError if answer.get("error_type") == "SchemaError" else FunctionError
            raise error_class(answer.get("error_type", "Error"), answer.get("error", "the function failed"))
        if "result" in answer:
            return answer["result"]
        produced = _run_local(entry, kwargs)
        if answer.get("check"):
            # The function has an output_schema: the host checks the result, as it does in tool mode.
            try:
                verdict = _bridge({"op": "result", "service": entry["service"], "function": entry["name"], "result": produced})
            except (TypeError, ValueError, RecursionError) as error:
                raise FunctionError("SerializationError", f"the result of {entry['service']}.{entry['name']} is not JSON-serialisable: {error}") from None
            if not verdict.get("ok"):
                raise FunctionError(verdict.get("error_type", "Error"), verdict.get("error", "the result was refused"))
        return produced

    call.__name__ = entry["identifier"]
    call.__qualname__ = entry["identifier"]
    call.__module__ = "functions." + entry["serviceIdentifier"]
    call.__doc__ = entry["pythonSignature"] + ("\n\n" + entry["description"] if entry["description"] else "")
    call.__wrapped__ = _signature_stub(entry)
    return call


_services = {}
_ambiguous = set(_CATALOG["ambiguous"])
_by_identifier = {}
for _entry in _CATALOG["functions"]:
    _service = _services.get(_entry["serviceIdentifier"])
    if _service is None:
        _service = _types.ModuleType("functions." + _entry["serviceIdentifier"])
        _service.__doc__ = f'Functions of service "{_entry["service"]}".'
        _service.__all__ = []
        _services[_entry["serviceIdentifier"]] = _service
        _sys.modules[_service.__name__] = _service
        globals()[_entry["serviceIdentifier"]] = _service
    _function = _wrapper(_entry)
    setattr(_service, _entry["identifier"], _function)
    _service.__all__.append(_entry["identifier"])
    if _entry["identifier"] not in _ambiguous:
        globals()[_entry["identifier"]] = _function
        _by_identifier[_entry["identifier"]] = _entry

__all__ = sorted(list(_services) + list(_by_identifier))


class FunctionNotFoundError(ImportError):
    """No function or service of that name in this namespace; the message lists the available ones."""


class _FunctionNotFoundAttribute(AttributeError):
    """The same error for attribute access (functions.x, getattr, hasattr): an AttributeError, so hasattr() answers False."""


# Reported (and printed) under one name, whichever way the name was looked up.
_FunctionNotFoundAttribute.__name__ = _FunctionNotFoundAttribute.__qualname__ = "FunctionNotFoundError"


def _importing():
    # `from functions import x` calls the module's __getattr__ from the importing frame's
    # IMPORT_FROM: Python would replace an AttributeError there by a bare "cannot import name".
    import opcode
    frame = _sys._getframe(1)
    while frame is not None and frame.f_code.co_filename == __file__:
        frame = frame.f_back
    return frame is not None and frame.f_lasti >= 0 and frame.f_code.co_code[frame.f_lasti] == opcode.opmap["IMPORT_FROM"]


def _not_found(name, where, names):
    # Private names stay plain AttributeErrors, so that probes (__path__, _repr_html_, ...) behave as usual.
    if name.startswith("_"):
        return AttributeError(f"module '{where}' has no attribute '{name}'")
    import difflib
    nearest = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    nearest += [n for n in names if n not in nearest and len(name) >= 4 and (name in n or n in name)][: 3 - len(nearest)]
    listed = sorted(names)
    shown = ", ".join(listed[:50]) + (f", ... ({len(listed)} in all)" if len(listed) > 50 else "")
    mean = f" Did you mean {' or '.join(repr(n) for n in nearest)}?" if nearest else ""
    available = f" Available in {where}: {shown}." if listed else " This namespace has no functions yet."
    message = f"{where} has no function or service '{name}'.{mean}{available} print(functions.__doc__) lists them with their signatures."
    if not _importing():
        return _FunctionNotFoundAttribute(message, name=name)
    error = FunctionNotFoundError(message)
    error.name = where
    return error


def __getattr__(name):
    if name in _ambiguous:
        where = ", ".join(f"functions.{e['serviceIdentifier']}.{name}" for e in _CATALOG["functions"] if e["identifier"] == name)
        message = f"'{name}' exists in several services; import it from one of: {where}"
        raise ImportError(message) if _importing() else AttributeError(message, name=name)
    raise _not_found(name, "functions", list(_services) + list(_by_identifier) + sorted(_ambiguous))


def _service_getattr(service):
    def __getattr__(name):
        raise _not_found(name, service.__name__, list(service.__all__))

    return __getattr__


for _service in _services.values():
    _service.__getattr__ = _service_getattr(_service)
