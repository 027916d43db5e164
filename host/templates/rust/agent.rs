//! {{name}}: a Corral agent (one step of a pipeline).

use corral_sdk::{Agent, Context, Error, Info, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Deserialize)]
struct Input {
    /// Who to greet.
    #[serde(default = "world")]
    name: String,
}

fn world() -> String {
    "world".into()
}

#[derive(Serialize)]
struct Output {
    greeting: String,
}

struct Plugin;

impl Agent for Plugin {
    type Input = Input;
    type Output = Output;

    fn info() -> Info {
        Info::new("{{name}}", env!("CARGO_PKG_VERSION"), "Greets whoever it is given.")
            .input_schema(json!({
                "type": "object",
                "properties": {"name": {"type": "string", "default": "world"}},
            }))
            .output_schema(json!({
                "type": "object",
                "properties": {"greeting": {"type": "string"}},
                "required": ["greeting"],
            }))
    }

    fn run(ctx: Context, input: Input) -> Result<Output> {
        if input.name.trim().is_empty() {
            return Err(Error::invalid_input("\"name\" is empty"));
        }
        corral_sdk::progress(50, "greeting");
        corral_sdk::info(&format!("greeting {} (attempt {})", input.name, ctx.attempt));
        Ok(Output {
            greeting: format!("Hello, {}!", input.name),
        })
    }
}

corral_sdk::export_agent!(Plugin);
