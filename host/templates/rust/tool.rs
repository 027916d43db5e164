//! {{name}}: a Corral tool plugin (functions agents call through `call_tool`).

use corral_sdk::{Error, Result, ToolSpec, Tools};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
struct GreetArgs {
    name: String,
}

struct Plugin;

impl Tools for Plugin {
    fn tools() -> Vec<ToolSpec> {
        vec![ToolSpec::new(
            "greet",
            "Returns a greeting for `name`.",
            json!({
                "type": "object",
                "properties": {"name": {"type": "string", "minLength": 1}},
                "required": ["name"],
            }),
        )]
    }

    fn call(name: &str, arguments: Value) -> Result<Value> {
        match name {
            "greet" => {
                let args: GreetArgs = corral_sdk::parse_arguments(arguments)?;
                Ok(json!({"greeting": format!("Hello, {}!", args.name)}))
            }
            other => Err(Error::invalid_input(format!("no tool named {other}"))),
        }
    }
}

corral_sdk::export_tools!(Plugin);
