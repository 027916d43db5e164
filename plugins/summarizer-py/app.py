# corral-world: agent-plugin
"""`summarizer-py`: a Corral agent written in Python.

Built into a WebAssembly component by componentize-py (see README.md), against
the same WIT contract (`corral:plugin/agent-plugin`) as the Rust plugins.

componentize-py generates the `wit_world` package (the bindings) at build
time; the export is the class named `Agent` in this module, which implements
`wit_world.exports.Agent`. All the actual work lives in `summarize.py`, a
plain-Python module with no bindings, so it can be unit tested with CPython.
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.agent import Context, Info
from wit_world.imports import host
from wit_world.imports.types import (
    Level,
    PluginError_InvalidInput,
    PluginError_Permanent,
)

import summarize


class Agent(exports.Agent):
    def describe(self) -> Info:
        # Must be cheap and must not call the host.
        return Info(
            name=summarize.NAME,
            version=summarize.VERSION,
            description=summarize.DESCRIPTION,
            input_schema=json.dumps(summarize.INPUT_SCHEMA),
            output_schema=json.dumps(summarize.OUTPUT_SCHEMA),
        )

    def run(self, ctx: Context, input: str) -> str:
        host.progress(0, "parsing input")
        try:
            default = summarize.config_sentences(ctx.config)
            text, n = summarize.parse_input(input, default)
            host.progress(50, "scoring sentences")
            result = summarize.summarize(text, n)
        except summarize.InvalidInput as e:
            raise Err(PluginError_InvalidInput(str(e)))
        except summarize.BadConfig as e:
            raise Err(PluginError_Permanent(str(e)))
        except Exception as e:
            # A bug here would fail the same way on retry: report it rather
            # than trap, so the host sees a clean `permanent` error.
            raise Err(PluginError_Permanent(f"internal error: {type(e).__name__}: {e}"))
        host.log(
            Level.INFO,
            f"summarizer-py: step {ctx.step} attempt {ctx.attempt}: kept "
            f"{len(result['sentences'])} of {result['sentence_count']} sentences "
            f"({result['word_count']} words)",
        )
        host.progress(100, "done")
        return summarize.to_json(result)
