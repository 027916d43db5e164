"""corral_sdk: write Corral plugins in Python.

A Corral plugin is a WebAssembly component built against Corral's WIT contract
(``wit/``); componentize-py turns a Python module into one. This package hides
the generated bindings: decorate a plain function and the SDK does the rest.

A complete agent::

    from dataclasses import dataclass
    import corral_sdk as corral

    @dataclass
    class Input:
        name: str

    @corral.agent(name="hello", version="0.1.0", description="Greets whoever it is given.")
    def hello(ctx: corral.Context, input: Input) -> dict:
        corral.progress(50, "greeting")
        corral.info(f"greeting {input.name} (attempt {ctx.attempt})")
        return {"greeting": f"Hello, {input.name}!"}

Build it with ``componentize-py -d wit -w agent-plugin componentize app -o hello.wasm``
(with this package and ``wit/`` beside ``app.py``), then
``corral call hello.wasm --input '{"name": "Ada"}'``.

What the SDK covers:

- ``@agent``, ``@tool`` and ``@connector`` register the component's export
  (they bind ``Agent``, ``Tool`` or ``Connector`` in your module, the name
  componentize-py exports) and build ``describe()`` / ``list-tools()`` from
  the code: the input and output type annotations become JSON Schemas
  (dataclasses, TypedDicts, ``str``/``int``/``float``/``bool``, ``list[T]``,
  ``dict[str, T]``, ``Optional``/``Union``, ``Literal``, ``Enum``, ``Any``).
- Typed input: the JSON input is checked against the annotation and turned
  into it (a dataclass is constructed); a mismatch is answered with
  ``invalid-input`` naming the field, before your code runs. Outputs may be
  dataclasses, dicts, lists or plain values.
- Errors are exceptions: raise ``Transient``, ``Permanent`` or
  ``InvalidInput`` (optionally with ``detail=`` for a feedback loop); any
  other exception becomes ``permanent("internal error: ...")`` and its
  traceback is logged, so the plugin never traps on a bug.
- Host functions: ``log``/``debug``/``info``/``warn``/``error``,
  ``progress``, ``call_tool``, ``put_artifact``, ``ask``, ``wait_for_webhook``,
  ``state`` (``get``/``set``/``get_json``/``set_json``) and
  ``connector_config``. Host errors come back as the exceptions above.
- Language models through the host (contract 0.2.0): ``model("fast").chat(
  messages, tools=..., max_tokens=..., temperature=..., stop=...,
  response_schema=...)`` returns a ``ChatResponse`` (``content``,
  ``tool_calls``, ``finish_reason``, ``usage``, ``cached``). The alias must be
  granted (``[grants] models = ["fast"]`` in ``corral.toml``); otherwise the
  call raises ``Permanent("not granted: model `fast` ...")``. A request over
  the host's bounds (256 messages, 1 MiB of text, 64 tools, 64 KiB a schema,
  4 stop sequences, temperature 0 to 2) raises ``InvalidInput`` and nothing is
  sent; one that cannot fit the token budget is refused with
  ``BUDGET_EXHAUSTED``. See ``wit/model.wit``.

Not covered: outbound HTTP (the Rust SDK's ``http`` feature; componentize-py
would need the ``wasi:http`` bindings).

Plain CPython can import this module (the bindings are imported only when a
host function is called), so plugin logic can be unit tested without a build.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import sys
import traceback
import types as _pytypes
import typing
from typing import Any, Callable, Optional

__all__ = [
    "Context",
    "PluginError",
    "Transient",
    "Permanent",
    "InvalidInput",
    "Page",
    "WebhookRequest",
    "agent",
    "tool",
    "connector",
    "schema_of",
    "decode",
    "encode",
    "log",
    "trace",
    "debug",
    "info",
    "warn",
    "error",
    "progress",
    "call_tool",
    "put_artifact",
    "ask",
    "wait_for_webhook",
    "connector_config",
    "state",
    "model",
    "Model",
    "ChatResponse",
    "ToolCall",
    "Usage",
]

__version__ = "0.1.0"

# The bindings componentize-py generates. They must be imported when the app is (at build
# time, before the snapshot): modules first imported at run time are not found. Under
# plain CPython there are none, and only the host functions are unavailable.
try:
    from componentize_py_types import Err as _Err
    from wit_world.imports import host as _wit_host
    from wit_world.imports import types as _wit
except ImportError:  # plain CPython
    _Err = _wit_host = _wit = None
try:
    from wit_world.imports import model as _wit_model
except ImportError:  # plain CPython, or bindings of a contract without models
    _wit_model = None


def _bindings_missing(*_args, **_kwargs):
    raise RuntimeError("corral_sdk: no bindings here (run inside a component built by componentize-py)")


def _export_type(module: str, name: str):
    """A record type of the world's export, imported now (at build time)."""
    import importlib

    try:
        return getattr(importlib.import_module(module), name)
    except ImportError:  # plain CPython: a stand-in with the same fields
        return _pytypes.SimpleNamespace

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


# ---------------------------------------------------------------------------
# Errors


class PluginError(Exception):
    """A failure the plugin reports to the host. Raise one of its subclasses.

    ``code`` is the WIT variant (``transient``, ``permanent``,
    ``invalid-input``); ``message`` the text the host shows. ``detail`` is
    structured data for a feedback loop: the step the failure is sent back to
    receives it as ``ctx.feedback["detail"]``.
    """

    code = "permanent"

    def __init__(self, message: str, detail: Any = None):
        super().__init__(message)
        self.message = str(message)
        self.detail = detail

    def wire_message(self) -> str:
        """The message as it crosses the boundary (JSON when there is detail)."""
        if self.detail is None:
            return self.message
        return json.dumps({"message": self.message, "detail": self.detail})


class Transient(PluginError):
    """May succeed if tried again: the host retries the step with backoff."""

    code = "transient"


class Permanent(PluginError):
    """Will fail again on retry: never retried."""

    code = "permanent"


class InvalidInput(PluginError):
    """The input or arguments were not acceptable: never retried."""

    code = "invalid-input"


def _to_wit_error(e: PluginError):
    if _wit is None:
        return e
    cls = {
        "transient": _wit.PluginError_Transient,
        "invalid-input": _wit.PluginError_InvalidInput,
    }.get(e.code, _wit.PluginError_Permanent)
    return _Err(cls(e.wire_message()))


def _from_wit_error(err: Any) -> PluginError:
    """Turns a binding's ``Err(PluginError_*)`` into our exception."""
    value = getattr(err, "value", err)
    message = str(getattr(value, "value", value))
    name = type(value).__name__
    if name.endswith("Transient"):
        return Transient(message)
    if name.endswith("InvalidInput"):
        return InvalidInput(message)
    return Permanent(message)


def _host_call(fn: Callable, *args):
    """Calls a host function, turning its error into a ``PluginError``."""
    try:
        return fn(*args)
    except Exception as e:
        if _Err is None or not isinstance(e, _Err):
            raise
        raise _from_wit_error(e) from None


def _guard(body: Callable[[], Any]) -> Any:
    """Runs an export's body: ``PluginError`` becomes the WIT error, any other
    exception ``permanent("internal error: ...")`` (logged with its traceback)."""
    try:
        return body()
    except PluginError as e:
        raise _to_wit_error(e) from None
    except Exception as e:  # noqa: BLE001 - a bug must not trap the guest
        try:
            error(traceback.format_exc())
        except Exception:  # noqa: BLE001
            pass
        raise _to_wit_error(Permanent(f"internal error: {type(e).__name__}: {e}")) from None


# ---------------------------------------------------------------------------
# Types -> JSON Schema, JSON -> types


_NONE = type(None)


def _is_typeddict(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, dict) and hasattr(tp, "__total__")


def _hints(tp: Any) -> dict:
    try:
        return typing.get_type_hints(tp)
    except Exception:  # noqa: BLE001 - unresolvable forward references
        return dict(getattr(tp, "__annotations__", {}))


def _field_description(f: dataclasses.Field) -> Optional[str]:
    return f.metadata.get("description") if f.metadata else None


def schema_of(tp: Any) -> dict:
    """A JSON Schema for a Python type annotation."""
    if tp is Any or tp is object:
        return {}
    if tp is None or tp is _NONE:
        return {"type": "null"}
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        return {"type": "integer"}
    if tp is float:
        return {"type": "number"}
    if tp is str:
        return {"type": "string"}
    if tp is bytes:
        return {"type": "string"}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return {"enum": [m.value for m in tp]}
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        hints = _hints(tp)
        props, required = {}, []
        for f in dataclasses.fields(tp):
            s = dict(schema_of(hints.get(f.name, Any)))
            desc = _field_description(f)
            if desc:
                s["description"] = desc
            if f.default is not dataclasses.MISSING and _jsonable(f.default):
                s["default"] = encode(f.default)
            props[f.name] = s
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                required.append(f.name)
        out = {"type": "object", "properties": props, "required": required}
        if tp.__doc__ and not tp.__doc__.startswith(tp.__name__ + "("):
            out["description"] = tp.__doc__.strip()
        return out
    if _is_typeddict(tp):
        hints = _hints(tp)
        req = getattr(tp, "__required_keys__", set(hints) if tp.__total__ else set())
        return {
            "type": "object",
            "properties": {k: schema_of(v) for k, v in hints.items()},
            "required": [k for k in hints if k in req],
        }
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Literal:
        return {"enum": list(args)}
    if origin in (typing.Union, _pytypes.UnionType):
        return {"anyOf": [schema_of(a) for a in args]}
    if origin in (list, tuple, set, frozenset) or tp in (list, tuple, set, frozenset):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return {"type": "array", "prefixItems": [schema_of(a) for a in args],
                    "minItems": len(args), "maxItems": len(args)}
        item = args[0] if args else Any
        return {"type": "array", "items": schema_of(item)}
    if origin is dict or tp is dict:
        value = args[1] if len(args) == 2 else Any
        return {"type": "object", "additionalProperties": schema_of(value)}
    if origin is typing.Annotated:
        return schema_of(args[0])
    return {}


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(encode(value))
        return True
    except (TypeError, ValueError):
        return False


def _where(path: str) -> str:
    return f'"{path}"' if path else "the input"


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number", _NONE: "null"}.get(type(value), type(value).__name__)


def decode(tp: Any, value: Any, path: str = "") -> Any:
    """Checks the JSON ``value`` against the annotation ``tp`` and converts it.

    Raises ``InvalidInput`` naming the first field that does not fit.
    """
    def bad(expected: str):
        return InvalidInput(f"{_where(path)} must be {expected}, got {_type_name(value)}")

    if tp is Any or tp is object:
        return value
    if tp is None or tp is _NONE:
        if value is not None:
            raise bad("null")
        return None
    if tp is bool:
        if not isinstance(value, bool):
            raise bad("a boolean")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("an integer")
        if isinstance(value, float):
            if not value.is_integer():
                raise bad("an integer")
            return int(value)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if tp is bytes:
        if not isinstance(value, str):
            raise bad("a string")
        return value.encode()
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            raise InvalidInput(
                f"{_where(path)} must be one of {[m.value for m in tp]}, got {json.dumps(value)}"
            ) from None
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            raise bad("an object")
        hints = _hints(tp)
        kwargs = {}
        for f in dataclasses.fields(tp):
            if not f.init:
                continue
            sub = f"{path}.{f.name}" if path else f.name
            if f.name in value:
                kwargs[f.name] = decode(hints.get(f.name, Any), value[f.name], sub)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise InvalidInput(f'missing required field "{sub}"')
        return tp(**kwargs)
    if _is_typeddict(tp):
        if not isinstance(value, dict):
            raise bad("an object")
        hints = _hints(tp)
        req = getattr(tp, "__required_keys__", set(hints) if tp.__total__ else set())
        out = dict(value)
        for k, sub_tp in hints.items():
            sub = f"{path}.{k}" if path else k
            if k in value:
                out[k] = decode(sub_tp, value[k], sub)
            elif k in req:
                raise InvalidInput(f'missing required field "{sub}"')
        return out
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        return decode(args[0], value, path)
    if origin is typing.Literal:
        if not any(a == value and type(a) is type(value) for a in args):
            raise InvalidInput(f"{_where(path)} must be one of {list(args)}, got {json.dumps(value)}")
        return value
    if origin in (typing.Union, _pytypes.UnionType):
        errors = []
        for a in args:
            try:
                return decode(a, value, path)
            except InvalidInput as e:
                errors.append(e.message)
        raise InvalidInput(errors[0] if len(errors) == 1 else
                           f"{_where(path)} fits none of its types ({'; '.join(errors)})")
    if origin in (list, tuple, set, frozenset) or tp in (list, tuple, set, frozenset):
        if not isinstance(value, list):
            raise bad("an array")
        kind = origin or tp
        if kind is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise InvalidInput(f"{_where(path)} must have {len(args)} items, got {len(value)}")
            return tuple(decode(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        items = [decode(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return items if kind is list else kind(items)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise bad("an object")
        vt = args[1] if len(args) == 2 else Any
        return {k: decode(vt, v, f"{path}.{k}" if path else k) for k, v in value.items()}
    return value


def encode(value: Any) -> Any:
    """Turns an output (dataclasses, enums, tuples, nested) into plain JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return encode(value.value)
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [encode(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def _dumps(value: Any, what: str) -> str:
    try:
        return json.dumps(encode(value), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise Permanent(f"{what} is not JSON: {e}") from None


def _loads(text: Optional[str], what: str, error=InvalidInput) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as e:
        raise error(f"{what} is not valid JSON: {e}") from None


def _with_dialect(schema: dict) -> dict:
    return {"$schema": SCHEMA_DIALECT, **schema}


# ---------------------------------------------------------------------------
# Agents


@dataclasses.dataclass
class Context:
    """What the host tells an agent about the call it is making."""

    run_id: str
    step: str
    attempt: int
    #: The step's ``config`` table from the pipeline (``{}`` when none).
    config: Any
    #: Set when a later step sent its failure back to this one.
    feedback: Optional[Any] = None

    def config_as(self, tp: Any) -> Any:
        """The step config as a typed value (``Permanent`` if it does not fit:
        bad configuration fails the same way on every retry)."""
        try:
            return decode(tp, self.config, "config")
        except InvalidInput as e:
            raise Permanent(f"step config: {e.message}") from None


def _caller_module(fn: Any):
    return sys.modules.get(getattr(fn, "__module__", ""), None)


def _bind_export(fn: Any, export_name: str, cls: type) -> None:
    module = _caller_module(fn)
    if module is not None:
        setattr(module, export_name, cls)


def _params(fn: Callable) -> list:
    import inspect

    return list(inspect.signature(fn).parameters.values())


def agent(name: str, version: str, description: str, *,
          input_schema: Optional[dict] = None, output_schema: Optional[dict] = None):
    """Declares the function ``fn(ctx, input)`` as this component's agent.

    The annotation of ``input`` decides how the JSON input is checked and
    converted (leave it off, or use ``Any``, for raw JSON) and becomes
    ``describe()``'s input schema; the return annotation its output schema.
    Pass ``input_schema=``/``output_schema=`` to override them.
    """

    def wrap(fn: Callable) -> Callable:
        hints = _hints(fn)
        params = _params(fn)
        if len(params) != 2:
            raise TypeError(f"@agent function {fn.__name__} must take (ctx, input)")
        in_tp = hints.get(params[1].name, Any)
        out_tp = hints.get("return", Any)
        in_schema = input_schema if input_schema is not None else schema_of(in_tp)
        out_schema = output_schema if output_schema is not None else schema_of(out_tp)
        meta = (name, version, description,
                json.dumps(_with_dialect(in_schema)) if in_schema else None,
                json.dumps(_with_dialect(out_schema)) if out_schema else None)

        Info = _export_type("wit_world.exports.agent", "Info")

        class Agent:
            def describe(self):
                return Info(name=meta[0], version=meta[1], description=meta[2],
                            input_schema=meta[3], output_schema=meta[4])

            def run(self, ctx, input: str) -> str:
                def body():
                    context = Context(
                        run_id=ctx.run_id,
                        step=ctx.step,
                        attempt=ctx.attempt,
                        config=_loads(ctx.config, "the step config", Permanent) or {},
                        feedback=_loads(ctx.feedback, "the feedback", Permanent),
                    )
                    value = decode(in_tp, _loads(input, "the input"))
                    return _dumps(fn(context, value), "the output")

                return _guard(body)

        Agent.__qualname__ = f"Agent[{name}]"
        _bind_export(fn, "Agent", Agent)
        fn.__corral_export__ = Agent
        return fn

    return wrap


# ---------------------------------------------------------------------------
# Tools


@dataclasses.dataclass
class _ToolEntry:
    name: str
    description: str
    schema: dict
    call: Callable[[Any], Any]


_TOOLS: dict = {}


def _tool_from_params(fn: Callable, hints: dict):
    """Arguments from keyword parameters: ``def f(text: str, top: int = 5)``."""
    import inspect

    props, required, kinds = {}, [], {}
    for p in _params(fn):
        tp = hints.get(p.name, Any)
        kinds[p.name] = tp
        s = dict(schema_of(tp))
        if p.default is inspect.Parameter.empty:
            required.append(p.name)
        elif _jsonable(p.default):
            s["default"] = encode(p.default)
        props[p.name] = s
    schema = {"type": "object", "properties": props, "required": required}

    def call(args: dict):
        kwargs = {}
        for k, tp in kinds.items():
            if k in args:
                kwargs[k] = decode(tp, args[k], k)
            elif k in required:
                raise InvalidInput(f'missing required argument "{k}"')
        return fn(**kwargs)

    return schema, call


def tool(fn: Optional[Callable] = None, *, name: Optional[str] = None,
         description: Optional[str] = None, input_schema: Optional[dict] = None):
    """Declares a function as one of this component's tools.

    Either one parameter annotated with a dataclass or TypedDict (the
    arguments object), or plain keyword parameters (each an argument). The
    tool's name defaults to the function's, its description to the first
    paragraph of its docstring.
    """

    def wrap(fn: Callable) -> Callable:
        hints = _hints(fn)
        params = _params(fn)
        tool_name = name or fn.__name__
        desc = description or (fn.__doc__ or "").strip().split("\n\n")[0].strip()
        single = hints.get(params[0].name) if len(params) == 1 else None
        if single is not None and (dataclasses.is_dataclass(single) or _is_typeddict(single)):
            schema = schema_of(single)

            def call(args, _tp=single):
                return fn(decode(_tp, args))
        else:
            schema, call = _tool_from_params(fn, hints)
        if input_schema is not None:
            schema = input_schema
        _TOOLS[tool_name] = _ToolEntry(tool_name, desc, schema, call)

        Spec = _export_type("wit_world.exports.tool", "Spec")

        class Tool:
            def list_tools(self):
                return [Spec(name=t.name, description=t.description,
                             input_schema=json.dumps(_with_dialect(t.schema)))
                        for t in _TOOLS.values()]

            def call(self, name: str, arguments: str) -> str:
                def body():
                    entry = _TOOLS.get(name)
                    if entry is None:
                        raise InvalidInput(f"no tool named {json.dumps(name)}")
                    args = _loads(arguments, "the arguments")
                    if not isinstance(args, dict):
                        raise InvalidInput("the arguments must be a JSON object")
                    return _dumps(entry.call(args), "the result")

                return _guard(body)

        _bind_export(fn, "Tool", Tool)
        fn.__corral_export__ = Tool
        return fn

    if fn is not None:
        return wrap(fn)
    return wrap


# ---------------------------------------------------------------------------
# Connectors


@dataclasses.dataclass
class Page:
    """One page of records read by a connector."""

    items: list
    #: Where the next page starts; ``None`` on the last page.
    next_cursor: Optional[str] = None


@dataclasses.dataclass
class WebhookRequest:
    """A webhook delivery whose signature the host has already verified."""

    headers: list
    body: bytes

    def header(self, name: str) -> Optional[str]:
        """The first value of header ``name`` (case-insensitive)."""
        name = name.lower()
        return next((v for k, v in self.headers if k == name), None)

    def json(self) -> Any:
        """The body as JSON (``InvalidInput`` if it is not)."""
        return _loads(self.body.decode("utf-8", "replace"), "the webhook body")


def connector(name: str, version: str, description: str):
    """Declares a class as this component's connector.

    The class has ``pull(self, query, cursor) -> Page`` and, optionally,
    ``push(self, items) -> int`` and ``handle_webhook(self, request) ->
    list``; a missing one refuses with ``permanent``. ``query`` and ``items``
    are plain JSON values.
    """

    def wrap(cls: type) -> type:
        impl = cls()

        Info = _export_type("wit_world.exports.connector", "Info")
        WitPage = _export_type("wit_world.exports.connector", "Page")

        class Connector:
            def describe(self):
                return Info(name=name, version=version, description=description)

            def pull(self, query: str, cursor: Optional[str]):
                def body():
                    page = impl.pull(_loads(query, "the query"), cursor)
                    if not isinstance(page, Page):
                        page = Page(items=list(page))
                    return WitPage(items=[_dumps(i, "an item") for i in page.items],
                                   next_cursor=page.next_cursor)

                return _guard(body)

            def push(self, items: list) -> int:
                def body():
                    if not hasattr(impl, "push"):
                        raise Permanent("this connector does not support push")
                    values = [_loads(i, "an item") for i in items]
                    return int(impl.push(values))

                return _guard(body)

            def handle_webhook(self, request) -> list:
                def body():
                    if not hasattr(impl, "handle_webhook"):
                        raise Permanent("this connector does not handle webhooks")
                    req = WebhookRequest(headers=list(request.headers), body=bytes(request.body))
                    return [_dumps(i, "an item") for i in impl.handle_webhook(req)]

                return _guard(body)

        _bind_export(cls, "Connector", Connector)
        cls.__corral_export__ = Connector
        return cls

    return wrap


# ---------------------------------------------------------------------------
# Host functions


def _host():
    if _wit_host is None:
        _bindings_missing()
    return _wit_host


def log(level: str, message: str) -> None:
    """Writes a log line: ``level`` is trace, debug, info, warn or error."""
    host = _host()
    lv = getattr(_wit.Level, str(level).upper(), _wit.Level.INFO)
    host.log(lv, str(message))


def trace(message: str) -> None:
    log("trace", message)


def debug(message: str) -> None:
    log("debug", message)


def info(message: str) -> None:
    log("info", message)


def warn(message: str) -> None:
    log("warn", message)


def error(message: str) -> None:
    log("error", message)


def progress(percent: int, label: str = "") -> None:
    """Reports how far the current step has come, 0 to 100."""
    _host().progress(max(0, min(100, int(percent))), str(label))


def call_tool(name: str, arguments: Any = None) -> Any:
    """Calls a tool granted to this step and returns its JSON result."""
    args = _dumps(arguments if arguments is not None else {}, "the tool arguments")
    out = _host_call(_host().call_tool, name, args)
    return _loads(out, f"tool {name}'s result", Permanent)


def put_artifact(name: str, content: Any, media_type: Optional[str] = None) -> str:
    """Stores an artifact for the run and returns its id.

    ``content`` is bytes, text (UTF-8) or any JSON value (stored as
    ``application/json``); ``media_type`` defaults accordingly.
    """
    if isinstance(content, (bytes, bytearray)):
        data, default = bytes(content), "application/octet-stream"
    elif isinstance(content, str):
        data, default = content.encode(), "text/plain; charset=utf-8"
    else:
        data, default = _dumps(content, "the artifact").encode(), "application/json"
    return _host_call(_host().put_artifact, name, media_type or default, data)


def ask(question: str, answer_schema: Any = None) -> Any:
    """Asks a person a question and waits for the answer.

    ``answer_schema`` is a JSON Schema dict or a type (a dataclass is
    returned as that dataclass).
    """
    tp = None
    if answer_schema is not None and not isinstance(answer_schema, dict):
        tp, answer_schema = answer_schema, schema_of(answer_schema)
    schema = json.dumps(answer_schema) if answer_schema is not None else None
    answer = _loads(_host_call(_host().ask, question, schema), "the answer", Permanent)
    if tp is not None:
        try:
            return decode(tp, answer, "answer")
        except InvalidInput as e:
            raise Permanent(e.message) from None
    return answer


def wait_for_webhook(name: str) -> Any:
    """Waits until webhook ``name`` receives a delivery; returns
    ``{"items": [...], "webhook": {...}}`` (a durable wait, like ``ask``)."""
    return ask(f"webhook:{name}")


def connector_config(tp: Any = Any) -> Any:
    """The config of a connector step (handed over in the run state)."""
    raw = _host().state_get("corral.config")
    if raw is None:
        raise Permanent("no step config: a connector gets one when it runs as a pipeline step")
    value = _loads(bytes(raw).decode("utf-8", "replace"), "the step's config")
    return decode(tp, value, "config")


class _State:
    """Per-run state shared by all steps of a run: ``corral.state``."""

    def get(self, key: str) -> Optional[bytes]:
        value = _host().state_get(key)
        return None if value is None else bytes(value)

    def set(self, key: str, value: bytes) -> None:
        _host_call(_host().state_set, key, bytes(value))

    def get_json(self, key: str, default: Any = None) -> Any:
        raw = self.get(key)
        if raw is None:
            return default
        return _loads(raw.decode("utf-8", "replace"), f"state {key}", Permanent)

    def set_json(self, key: str, value: Any) -> None:
        self.set(key, _dumps(value, f"state {key}").encode())


state = _State()


# ---------------------------------------------------------------------------
# Language models (corral:plugin/model)


@dataclasses.dataclass
class ToolCall:
    """The model asking for a tool to be called. ``arguments`` is the text the
    model wrote (meant to be a JSON object, not checked by the host)."""

    id: str
    name: str
    arguments: str

    def parse_arguments(self) -> Any:
        """The arguments as JSON; text that is not JSON raises ``InvalidInput``."""
        return _loads(self.arguments, f"the model's arguments for {self.name}")


@dataclasses.dataclass
class Usage:
    """Tokens one call used, as the provider reported them."""

    input_tokens: int = 0
    output_tokens: int = 0


@dataclasses.dataclass
class ChatResponse:
    """A model's answer. ``finish_reason`` is ``stop``, ``length``,
    ``tool-calls``, ``content-filter`` or ``other``; ``cached`` says it came
    from the host's cache (and cost no tokens)."""

    content: str
    tool_calls: list
    finish_reason: str
    usage: Usage
    cached: bool = False

    def message(self) -> dict:
        """The answer as an assistant message, to append to the conversation
        before the tool results."""
        return {"role": "assistant", "content": self.content, "tool_calls": list(self.tool_calls)}


_ROLES = ("system", "user", "assistant", "tool")


def _field(value: Any, name: str, default: Any = None) -> Any:
    if isinstance(value, dict):
        return value.get(name, default)
    return getattr(value, name, default)


def _wit_message(m: Any, i: int):
    role = str(_field(m, "role", "user"))
    if role not in _ROLES:
        raise InvalidInput(f"message {i}: role must be one of {', '.join(_ROLES)}, not {role!r}")
    calls = [
        _wit_model.ToolCall(
            id=str(_field(c, "id", "")),
            name=str(_field(c, "name", "")),
            arguments=(lambda a: a if isinstance(a, str) else _dumps(a, "tool-call arguments"))(
                _field(c, "arguments", "{}")
            ),
        )
        for c in (_field(m, "tool_calls") or [])
    ]
    call_id = _field(m, "tool_call_id")
    return _wit_model.Message(
        role=getattr(_wit_model.Role, role.upper()),
        content=str(_field(m, "content", "") or ""),
        tool_calls=calls,
        tool_call_id=None if call_id is None else str(call_id),
    )


def _wit_tool(t: Any):
    params = _field(t, "parameters") or {"type": "object"}
    return _wit_model.ToolDefinition(
        name=str(_field(t, "name", "")),
        description=str(_field(t, "description", "") or ""),
        parameters=params if isinstance(params, str) else _dumps(params, "tool parameters"),
    )


class Model:
    """A model alias (``fast``, ``smart``) the operator maps to a provider;
    made by ``model(alias)``."""

    def __init__(self, alias: str):
        self.alias = str(alias)

    def chat(self, messages: list, *, tools: Optional[list] = None,
             max_tokens: Optional[int] = None, temperature: Optional[float] = None,
             stop: Optional[list] = None, response_schema: Any = None) -> ChatResponse:
        """Sends the conversation and waits for the whole answer.

        ``messages`` are dicts (or objects) with ``role`` (system, user,
        assistant, tool), ``content``, and for an assistant message
        ``tool_calls`` (``ToolCall``s or dicts), for a tool message
        ``tool_call_id``. ``tools`` are dicts with ``name``, ``description``
        and ``parameters`` (a JSON Schema dict). Host errors raise
        ``Transient``, ``Permanent`` or ``InvalidInput``.
        """
        if _wit_model is None:
            _bindings_missing()
        schema = response_schema
        if schema is not None and not isinstance(schema, str):
            schema = _dumps(schema, "the response schema")
        request = _wit_model.ChatRequest(
            messages=[_wit_message(m, i) for i, m in enumerate(messages)],
            tools=[_wit_tool(t) for t in (tools or [])],
            max_tokens=None if max_tokens is None else int(max_tokens),
            temperature=None if temperature is None else float(temperature),
            stop=[str(s) for s in (stop or [])],
            response_schema=schema,
        )
        r = _host_call(_wit_model.chat, self.alias, request)
        reason = getattr(r.finish_reason, "name", str(r.finish_reason))
        return ChatResponse(
            content=r.content,
            tool_calls=[ToolCall(c.id, c.name, c.arguments) for c in r.tool_calls],
            finish_reason=str(reason).lower().replace("_", "-"),
            usage=Usage(r.usage.input_tokens, r.usage.output_tokens),
            cached=bool(r.cached),
        )


def model(alias: str) -> Model:
    """The model the operator maps to ``alias``: ``model("fast").chat(messages)``."""
    return Model(alias)
