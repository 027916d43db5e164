"""Unit tests for summarizer-py, runnable with plain CPython:

    cd plugins/summarizer-py && python3 -m unittest

`summarize.py` is tested directly. `app.py` is tested against small fakes of
the generated bindings (`wit_world`, `componentize_py_types`), installed in
`sys.modules` only for the duration of those tests.
"""

import enum
import importlib
import json
import sys
import types
import unittest
from dataclasses import dataclass
from typing import Optional

import summarize
from summarize import InvalidInput, BadConfig

TEXT = """\
Rust is a systems programming language. Rust programs are fast and memory safe.
The weather was pleasant yesterday. Memory safety in Rust comes from the borrow
checker, which checks every reference. Many people enjoy walking their dogs.

The borrow checker makes Rust programs safe without a garbage collector.
"""


class SplitSentences(unittest.TestCase):
    def test_basic(self):
        self.assertEqual(
            summarize.split_sentences("One two. Three four! Five six? Seven"),
            ["One two.", "Three four!", "Five six?", "Seven"],
        )

    def test_wrapped_lines_and_paragraphs(self):
        text = "A heading\n\nFirst line\ncontinues here. Second.\n  \nLast"
        self.assertEqual(
            summarize.split_sentences(text),
            ["A heading", "First line continues here.", "Second.", "Last"],
        )

    def test_abbreviations_initials_and_decimals(self):
        text = "Dr. Smith paid 3.5 dollars, e.g. for tea. J. R. R. Tolkien wrote it. Done."
        self.assertEqual(
            summarize.split_sentences(text),
            ["Dr. Smith paid 3.5 dollars, e.g. for tea.", "J. R. R. Tolkien wrote it.", "Done."],
        )

    def test_quotes_close_sentences(self):
        self.assertEqual(
            summarize.split_sentences('He said "stop." Then left.'),
            ['He said "stop."', "Then left."],
        )

    def test_empty(self):
        self.assertEqual(summarize.split_sentences("   \n\n  "), [])


class Words(unittest.TestCase):
    def test_words(self):
        self.assertEqual(
            summarize.words("Don\u2019t PANIC: it's 42_x caf\u00e9!"),
            ["don't", "panic", "it's", "42", "x", "caf\u00e9"],
        )

    def test_content_words(self):
        self.assertEqual(
            summarize.content_words(["the", "borrow", "checker", "is", "42"]),
            ["borrow", "checker"],
        )


class Summarize(unittest.TestCase):
    def test_picks_topical_sentences_in_original_order(self):
        out = summarize.summarize(TEXT, 3)
        self.assertEqual(out["sentence_count"], 6)
        self.assertEqual(len(out["sentences"]), 3)
        for s in out["sentences"]:
            self.assertIn("Rust", s)
        self.assertNotIn("weather", out["summary"])
        self.assertNotIn("dogs", out["summary"])
        # Original order is kept.
        positions = [TEXT.replace("\n", " ").find(s[:20]) for s in out["sentences"]]
        self.assertEqual(positions, sorted(positions))
        self.assertEqual(out["summary"], " ".join(out["sentences"]))

    def test_top_words(self):
        out = summarize.summarize(TEXT, 1)
        self.assertEqual(len(out["top_words"]), 5)
        self.assertEqual(out["top_words"][0], {"word": "rust", "count": 4})
        counts = [w["count"] for w in out["top_words"]]
        self.assertEqual(counts, sorted(counts, reverse=True))
        for w in out["top_words"]:
            self.assertNotIn(w["word"], summarize.STOPWORDS)

    def test_word_count_counts_all_words(self):
        out = summarize.summarize("The cat sat. The dog ran.", 1)
        self.assertEqual(out["word_count"], 6)
        self.assertEqual(out["sentence_count"], 2)

    def test_more_sentences_than_text_has(self):
        out = summarize.summarize("Only one sentence here.", 20)
        self.assertEqual(out["sentences"], ["Only one sentence here."])
        self.assertEqual(out["summary"], "Only one sentence here.")

    def test_ties_go_to_earlier_sentence(self):
        out = summarize.summarize("Apples grow. Pears grow. Plums grow.", 1)
        self.assertEqual(out["sentences"], ["Apples grow."])

    def test_only_stop_words(self):
        out = summarize.summarize("It is what it is. And so on.", 1)
        self.assertEqual(out["sentences"], ["It is what it is."])
        self.assertEqual(out["top_words"], [])

    def test_no_words(self):
        with self.assertRaisesRegex(InvalidInput, "no words"):
            summarize.summarize("?! ... --", 3)

    def test_output_is_json(self):
        out = json.loads(summarize.run_json(json.dumps({"text": TEXT, "sentences": 2})))
        self.assertEqual(
            set(out), {"summary", "sentences", "word_count", "sentence_count", "top_words"}
        )
        self.assertEqual(len(out["sentences"]), 2)


class ParseInput(unittest.TestCase):
    def check(self, raw, pattern):
        with self.assertRaisesRegex(InvalidInput, pattern):
            summarize.parse_input(raw)

    def test_valid(self):
        self.assertEqual(summarize.parse_input('{"text": "Hi."}'), ("Hi.", 3))
        self.assertEqual(summarize.parse_input('{"text": "Hi.", "sentences": 20}'), ("Hi.", 20))
        self.assertEqual(summarize.parse_input('{"text": "Hi.", "sentences": 2.0}'), ("Hi.", 2))
        self.assertEqual(summarize.parse_input('{"text": "Hi."}', 7), ("Hi.", 7))
        self.assertEqual(summarize.parse_input('{"text": "Hi.", "sentences": 1}', 7), ("Hi.", 1))

    def test_invalid(self):
        self.check("not json", "not valid JSON")
        self.check("", "not valid JSON")
        self.check("[1, 2]", "JSON object")
        self.check('{"txt": "x"}', 'no "text"')
        self.check('{"text": 5}', '"text" must be a string')
        self.check('{"text": ""}', '"text" is empty')
        self.check('{"text": " \\n\\t"}', '"text" is empty')
        self.check('{"text": "x", "sentences": 0}', r'"sentences" must be between 1 and 20, got 0')
        self.check('{"text": "x", "sentences": 21}', r'"sentences" must be between 1 and 20, got 21')
        self.check('{"text": "x", "sentences": -1}', "between 1 and 20")
        self.check('{"text": "x", "sentences": 2.5}', '"sentences" must be an integer')
        self.check('{"text": "x", "sentences": "3"}', '"sentences" must be an integer')
        self.check('{"text": "x", "sentences": true}', '"sentences" must be an integer')


class ConfigSentences(unittest.TestCase):
    def test_valid(self):
        self.assertEqual(summarize.config_sentences("{}"), 3)
        self.assertEqual(summarize.config_sentences(""), 3)
        self.assertEqual(summarize.config_sentences("null"), 3)
        self.assertEqual(summarize.config_sentences('{"other": 1}'), 3)
        self.assertEqual(summarize.config_sentences('{"sentences": 5}'), 5)

    def test_invalid(self):
        for raw, pattern in [
            ("{", "not valid JSON"),
            ("[]", "JSON object"),
            ('{"sentences": 99}', 'config "sentences" must be between 1 and 20'),
            ('{"sentences": "x"}', 'config "sentences" must be an integer'),
        ]:
            with self.assertRaisesRegex(BadConfig, pattern):
                summarize.config_sentences(raw)

    def test_run_json_uses_config_default(self):
        out = json.loads(summarize.run_json(json.dumps({"text": TEXT}), '{"sentences": 1}'))
        self.assertEqual(len(out["sentences"]), 1)


class Schemas(unittest.TestCase):
    def test_schemas_are_json(self):
        for schema in (summarize.INPUT_SCHEMA, summarize.OUTPUT_SCHEMA):
            self.assertEqual(json.loads(json.dumps(schema))["type"], "object")
        self.assertEqual(summarize.INPUT_SCHEMA["required"], ["text"])


# ---------------------------------------------------------------------------
# app.py against fakes of the generated bindings.


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
class _Context:
    run_id: str
    step: str
    attempt: int
    config: str
    feedback: Optional[str]


@dataclass
class _Info:
    name: str
    version: str
    description: str
    input_schema: Optional[str]
    output_schema: Optional[str]


class App(unittest.TestCase):
    def setUp(self):
        self.calls = []
        m = {name: types.ModuleType(name) for name in [
            "componentize_py_types", "wit_world", "wit_world.exports",
            "wit_world.exports.agent", "wit_world.imports",
            "wit_world.imports.host", "wit_world.imports.types",
        ]}
        m["componentize_py_types"].Err = _Err
        m["wit_world"].exports = m["wit_world.exports"]
        m["wit_world.exports"].Agent = object
        m["wit_world.exports.agent"].Context = _Context
        m["wit_world.exports.agent"].Info = _Info
        host = m["wit_world.imports.host"]
        host.log = lambda level, msg: self.calls.append(("log", level, msg))
        host.progress = lambda pct, label: self.calls.append(("progress", pct, label))
        m["wit_world.imports"].host = host
        t = m["wit_world.imports.types"]
        t.Level = _Level
        t.PluginError_InvalidInput = type("PluginError_InvalidInput", (_Variant,), {})
        t.PluginError_Permanent = type("PluginError_Permanent", (_Variant,), {})
        self.types = t
        self.saved = {k: sys.modules.get(k) for k in list(m) + ["app"]}
        sys.modules.update(m)
        sys.modules.pop("app", None)
        self.agent = importlib.import_module("app").Agent()

    def tearDown(self):
        for k, v in self.saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v

    def ctx(self, config="{}"):
        return _Context(run_id="r1", step="summarize", attempt=1, config=config, feedback=None)

    def test_describe(self):
        info = self.agent.describe()
        self.assertEqual(info.name, "summarizer-py")
        self.assertTrue(info.version)
        self.assertEqual(json.loads(info.input_schema)["required"], ["text"])
        self.assertEqual(self.calls, [])  # describe must not call the host

    def test_run(self):
        out = json.loads(self.agent.run(self.ctx('{"sentences": 2}'), json.dumps({"text": TEXT})))
        self.assertEqual(len(out["sentences"]), 2)
        logs = [c for c in self.calls if c[0] == "log"]
        self.assertEqual(len(logs), 1)
        self.assertIs(logs[0][1], _Level.INFO)
        self.assertIn("kept 2 of 6 sentences", logs[0][2])
        self.assertEqual([c[1] for c in self.calls if c[0] == "progress"], [0, 50, 100])

    def test_invalid_input(self):
        with self.assertRaises(_Err) as e:
            self.agent.run(self.ctx(), '{"text": ""}')
        self.assertIsInstance(e.exception.value, self.types.PluginError_InvalidInput)
        self.assertIn('"text" is empty', e.exception.value.value)

    def test_bad_config(self):
        with self.assertRaises(_Err) as e:
            self.agent.run(self.ctx('{"sentences": 0}'), json.dumps({"text": TEXT}))
        self.assertIsInstance(e.exception.value, self.types.PluginError_Permanent)


if __name__ == "__main__":
    unittest.main()
