# corral-world: agent-plugin
"""hello-py: a Corral agent in Python, on the corral_sdk package (sdk/python)."""

from dataclasses import dataclass

import corral_sdk as corral


@dataclass
class Input:
    name: str
    excited: bool = False


@dataclass
class Output:
    greeting: str


@corral.agent(name="hello-py", version="0.1.0", description="Greets whoever it is given.")
def hello(ctx: corral.Context, input: Input) -> Output:
    if not input.name.strip():
        raise corral.InvalidInput('"name" is empty')
    corral.progress(50, "greeting")
    corral.info(f"greeting {input.name} (step {ctx.step}, attempt {ctx.attempt})")
    return Output(greeting=f"Hello, {input.name}{'!' if input.excited else '.'}")
