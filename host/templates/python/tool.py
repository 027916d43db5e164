"""{{name}}: a Corral tool plugin (functions agents call through `call_tool`), in Python."""

import corral_sdk as corral


@corral.tool
def greet(name: str) -> dict:
    """Returns a greeting for `name`."""
    if not name.strip():
        raise corral.InvalidInput('"name" is empty')
    return {"greeting": f"Hello, {name}!"}
