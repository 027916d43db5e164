"""{{name}}: a Corral agent (one step of a pipeline), in Python."""

from dataclasses import dataclass

import corral_sdk as corral


@dataclass
class Input:
    name: str = "world"


@dataclass
class Output:
    greeting: str


@corral.agent(name="{{name}}", version="0.1.0", description="Greets whoever it is given.")
def run(ctx: corral.Context, input: Input) -> Output:
    if not input.name.strip():
        raise corral.InvalidInput('"name" is empty')
    corral.progress(50, "greeting")
    corral.info(f"greeting {input.name} (attempt {ctx.attempt})")
    return Output(greeting=f"Hello, {input.name}!")
