"""corral_sdk under plain CPython, against small fakes of the generated bindings.

Run from sdk/python: ``python3 -m unittest discover -s tests``
"""

import enum
import importlib
import json
import os
import sys
import types
import unittest
from dataclasses import dataclass, field
from typing import List, Literal, Optional, TypedDict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclass(frozen=True)
class _Err(Exception):
    value: object


@dataclass
class _Variant:
    value: str


class _Level(enum.Enum):
    TRACE = 0
    DEBUG = 1
    INFO = 2
    WARN = 3
    ERROR = 4


@dataclass
class _Record:
    def __init__(self, **kw):
        self.__dict__.update(kw)


class _Ctx:
    def __init__(self, config="{}", feedback=None):
        self.run_id, self.step, self.attempt = "r1", "s1", 2
        self.config, self.feedback = config, feedback


class Fakes(unittest.TestCase):
    """Installs fake `wit_world` / `componentize_py_types` modules."""

    def setUp(self):
        self.calls = []
        self.host_errors = {}
        names = ["componentize_py_types", "wit_world", "wit_world.imports",
                 "wit_world.imports.host", "wit_world.imports.types", "wit_world.exports",
                 "wit_world.exports.agent", "wit_world.exports.tool",
                 "wit_world.exports.connector"]
        m = {n: types.ModuleType(n) for n in names}
        m["componentize_py_types"].Err = _Err
        t = m["wit_world.imports.types"]
        t.Level = _Level
        for v in ["Transient", "Permanent", "InvalidInput"]:
            setattr(t, f"PluginError_{v}", type(f"PluginError_{v}", (_Variant,), {}))
        self.wit = t
        host = m["wit_world.imports.host"]

        def rec(name, result=None):
            def f(*args):
                self.calls.append((name, *args))
                if name in self.host_errors:
                    raise _Err(self.host_errors[name])
                return result(*args) if callable(result) else result
            return f

        host.log = rec("log")
        host.progress = rec("progress")
        host.call_tool = rec("call_tool", lambda n, a: json.dumps({"tool": n, "args": json.loads(a)}))
        host.put_artifact = rec("put_artifact", "art_1")
        host.ask = rec("ask", '{"approved": true}')
        host.state_get = rec("state_get", lambda k: b'{"x": 1}' if k == "k" else None)
        host.state_set = rec("state_set")
        m["wit_world.imports"].host = host
        m["wit_world.imports"].types = t
        m["wit_world.exports.agent"].Info = _Record
        m["wit_world.exports.tool"].Spec = _Record
        m["wit_world.exports.connector"].Info = _Record
        m["wit_world.exports.connector"].Page = _Record
        self.saved = {k: sys.modules.get(k) for k in names}
        sys.modules.update(m)
        import corral_sdk
        self.sdk = importlib.reload(corral_sdk)

    def tearDown(self):
        for k, v in self.saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v

    def module(self):
        """A fresh module for a plugin defined inside a test."""
        mod = types.ModuleType(f"plugin_{id(self)}")
        sys.modules[mod.__name__] = mod
        self.addCleanup(sys.modules.pop, mod.__name__, None)
        return mod


@dataclass
class Address:
    city: str


@dataclass
class Person:
    """A person to greet."""

    name: str = field(metadata={"description": "Who to greet."})
    age: int = 0
    tags: List[str] = field(default_factory=list)
    address: Optional[Address] = None
    mood: Literal["happy", "sad"] = "happy"


class Opts(TypedDict, total=False):
    top: int


class Schemas(Fakes):
    def test_dataclass_schema(self):
        s = self.sdk.schema_of(Person)
        self.assertEqual(s["type"], "object")
        self.assertEqual(s["required"], ["name"])
        self.assertEqual(s["properties"]["name"], {"type": "string", "description": "Who to greet."})
        self.assertEqual(s["properties"]["age"], {"type": "integer", "default": 0})
        self.assertEqual(s["properties"]["tags"], {"type": "array", "items": {"type": "string"}})
        self.assertEqual(s["properties"]["mood"]["enum"], ["happy", "sad"])
        self.assertEqual(s["properties"]["address"]["anyOf"][1], {"type": "null"})
        self.assertEqual(s["description"], "A person to greet.")

    def test_typeddict_schema(self):
        self.assertEqual(self.sdk.schema_of(Opts)["required"], [])

    def test_decode_builds_dataclasses_and_names_bad_fields(self):
        p = self.sdk.decode(Person, {"name": "Ada", "address": {"city": "London"}, "age": 3.0})
        self.assertEqual(p, Person(name="Ada", age=3, address=Address("London")))
        for value, message in [
            ({}, 'missing required field "name"'),
            ({"name": 5}, '"name" must be a string, got an integer'),
            ({"name": "a", "tags": ["x", 1]}, '"tags[1]" must be a string'),
            ({"name": "a", "address": {}}, '"address.city"'),
            ({"name": "a", "mood": "meh"}, '"mood" must be one of'),
            ({"name": "a", "age": True}, '"age" must be an integer, got a boolean'),
            ([], "the input must be an object, got an array"),
        ]:
            with self.assertRaises(self.sdk.InvalidInput) as e:
                self.sdk.decode(Person, value)
            self.assertIn(message, e.exception.message)


class Agents(Fakes):
    def define(self):
        sdk, mod = self.sdk, self.module()

        def greet(ctx: sdk.Context, input: Person) -> dict:
            sdk.progress(150, "half")
            sdk.info(f"hi {input.name} {ctx.attempt} {ctx.config}")
            if input.name == "boom":
                raise RuntimeError("kaboom")
            if input.name == "again":
                raise sdk.Transient("later", detail={"n": 1})
            return {"greeting": f"Hello, {input.name}", "person": input}

        greet.__module__ = mod.__name__
        sdk.agent(name="greet", version="1.0.0", description="Greets.")(greet)
        return mod.Agent()

    def test_describe_comes_from_the_code_and_does_not_call_the_host(self):
        info = self.define().describe()
        self.assertEqual((info.name, info.version, info.description), ("greet", "1.0.0", "Greets."))
        schema = json.loads(info.input_schema)
        self.assertEqual(schema["required"], ["name"])
        self.assertIn("$schema", schema)
        self.assertEqual(json.loads(info.output_schema)["type"], "object")
        self.assertEqual(self.calls, [])

    def test_run_decodes_input_and_encodes_output(self):
        out = json.loads(self.define().run(_Ctx('{"a": 1}'), '{"name": "Ada"}'))
        self.assertEqual(out["greeting"], "Hello, Ada")
        self.assertEqual(out["person"]["tags"], [])
        self.assertIn(("progress", 100, "half"), self.calls)
        self.assertIn(("log", _Level.INFO, "hi Ada 2 {'a': 1}"), self.calls)

    def test_errors_map_to_the_wit_variants(self):
        a = self.define()
        with self.assertRaises(_Err) as e:
            a.run(_Ctx(), '{"nme": "x"}')
        self.assertIsInstance(e.exception.value, self.wit.PluginError_InvalidInput)
        self.assertIn('"name"', e.exception.value.value)
        with self.assertRaises(_Err) as e:
            a.run(_Ctx(), "not json")
        self.assertIsInstance(e.exception.value, self.wit.PluginError_InvalidInput)
        with self.assertRaises(_Err) as e:
            a.run(_Ctx(), '{"name": "again"}')
        self.assertIsInstance(e.exception.value, self.wit.PluginError_Transient)
        self.assertEqual(json.loads(e.exception.value.value), {"message": "later", "detail": {"n": 1}})
        with self.assertRaises(_Err) as e:
            a.run(_Ctx(), '{"name": "boom"}')
        self.assertIsInstance(e.exception.value, self.wit.PluginError_Permanent)
        self.assertEqual(e.exception.value.value, "internal error: RuntimeError: kaboom")
        logged = [c for c in self.calls if c[0] == "log" and c[1] is _Level.ERROR]
        self.assertIn("Traceback", logged[0][2])

    def test_bad_config_is_permanent(self):
        with self.assertRaises(_Err) as e:
            self.define().run(_Ctx("{"), '{"name": "Ada"}')
        self.assertIsInstance(e.exception.value, self.wit.PluginError_Permanent)


class Tools(Fakes):
    def test_keyword_tools(self):
        sdk, mod = self.sdk, self.module()

        def shout(text: str, times: int = 1) -> dict:
            """Upper-cases text.

            More detail."""
            return {"text": text.upper() * times}

        shout.__module__ = mod.__name__
        sdk.tool(shout)
        t = mod.Tool()
        spec = [s for s in t.list_tools() if s.name == "shout"][0]
        self.assertEqual(spec.description, "Upper-cases text.")
        schema = json.loads(spec.input_schema)
        self.assertEqual(schema["required"], ["text"])
        self.assertEqual(schema["properties"]["times"], {"type": "integer", "default": 1})
        self.assertEqual(json.loads(t.call("shout", '{"text": "a", "times": 2}')), {"text": "AA"})
        with self.assertRaises(_Err) as e:
            t.call("nope", "{}")
        self.assertIsInstance(e.exception.value, self.wit.PluginError_InvalidInput)
        with self.assertRaises(_Err) as e:
            t.call("shout", '{"times": 2}')
        self.assertIn('missing required argument "text"', e.exception.value.value)


class Connectors(Fakes):
    def test_pull_and_default_refusals(self):
        sdk, mod = self.sdk, self.module()

        class Numbers:
            def pull(self, query, cursor):
                start = int(cursor or 0)
                return sdk.Page(items=[{"n": start}], next_cursor=None if start else "1")

        Numbers.__module__ = mod.__name__
        sdk.connector(name="numbers", version="0.1.0", description="Counts.")(Numbers)
        c = mod.Connector()
        self.assertEqual(c.describe().name, "numbers")
        page = c.pull("{}", None)
        self.assertEqual((page.items, page.next_cursor), (['{"n": 0}'], "1"))
        with self.assertRaises(_Err) as e:
            c.push(["{}"])
        self.assertIn("does not support push", e.exception.value.value)


class HostFunctions(Fakes):
    def test_host_functions(self):
        sdk = self.sdk
        self.assertEqual(sdk.call_tool("t", {"a": 1}), {"tool": "t", "args": {"a": 1}})
        self.assertEqual(sdk.put_artifact("r.json", {"ok": True}), "art_1")
        self.assertEqual(self.calls[-1], ("put_artifact", "r.json", "application/json", b'{"ok": true}'))

        @dataclass
        class Answer:
            approved: bool

        self.assertEqual(sdk.ask("ok?", Answer), Answer(True))
        self.assertEqual(json.loads(self.calls[-1][2])["required"], ["approved"])
        self.assertEqual(sdk.state.get_json("k"), {"x": 1})
        self.assertIsNone(sdk.state.get_json("missing"))
        sdk.state.set_json("k", [1])
        self.assertEqual(self.calls[-1], ("state_set", "k", b"[1]"))

    def test_host_errors_become_exceptions(self):
        self.host_errors["call_tool"] = self.wit.PluginError_Permanent("not granted: tool t")
        with self.assertRaises(self.sdk.Permanent) as e:
            self.sdk.call_tool("t")
        self.assertEqual(e.exception.message, "not granted: tool t")


class _Role(enum.Enum):
    SYSTEM = 0
    USER = 1
    ASSISTANT = 2
    TOOL = 3


class _Finish(enum.Enum):
    STOP = 0
    LENGTH = 1
    TOOL_CALLS = 2
    CONTENT_FILTER = 3
    OTHER = 4


class Models(Fakes):
    """`model(alias).chat(...)` against a fake `wit_world.imports.model`."""

    def setUp(self):
        super().setUp()
        m = types.ModuleType("wit_world.imports.model")
        m.Role, m.FinishReason = _Role, _Finish
        for name in ["ToolCall", "Message", "ToolDefinition", "ChatRequest"]:
            setattr(m, name, _Record)
        self.requests = []
        self.reply = _Record(
            content="", finish_reason=_Finish.TOOL_CALLS, cached=False,
            tool_calls=[_Record(id="c1", name="word-count", arguments='{"text": "a b"}')],
            usage=_Record(input_tokens=12, output_tokens=3),
        )

        def chat(alias, request):
            self.requests.append((alias, request))
            if isinstance(self.reply, Exception):
                raise self.reply
            return self.reply

        m.chat = chat
        self.sdk._wit_model = m

    def test_chat_converts_the_request_and_the_answer(self):
        sdk = self.sdk
        r = sdk.model("fast").chat(
            [{"role": "system", "content": "be brief"}, {"role": "user", "content": "count"}],
            tools=[{"name": "word-count", "description": "counts", "parameters": {"type": "object"}}],
            max_tokens=64, temperature=0,
        )
        alias, req = self.requests[-1]
        self.assertEqual(alias, "fast")
        self.assertEqual([m.role for m in req.messages], [_Role.SYSTEM, _Role.USER])
        self.assertEqual(json.loads(req.tools[0].parameters), {"type": "object"})
        self.assertEqual((req.max_tokens, req.temperature, req.stop), (64, 0.0, []))
        self.assertEqual(r.finish_reason, "tool-calls")
        self.assertEqual(r.usage, sdk.Usage(12, 3))
        call = r.tool_calls[0]
        self.assertEqual(call.parse_arguments(), {"text": "a b"})
        history = [r.message(), {"role": "tool", "content": "2", "tool_call_id": call.id}]
        sdk.model("fast").chat(history)
        _, req = self.requests[-1]
        self.assertEqual(req.messages[0].tool_calls[0].name, "word-count")
        self.assertEqual(req.messages[1].tool_call_id, "c1")

    def test_errors_become_exceptions(self):
        self.reply = _Err(self.wit.PluginError_Permanent("not granted: model `x`"))
        with self.assertRaises(self.sdk.Permanent) as e:
            self.sdk.model("x").chat([{"role": "user", "content": "hi"}])
        self.assertIn("not granted", e.exception.message)
        with self.assertRaises(self.sdk.InvalidInput):
            self.sdk.model("x").chat([{"role": "robot", "content": "hi"}])


if __name__ == "__main__":
    unittest.main()
