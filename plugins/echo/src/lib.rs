//! `echo`: the smallest useful agent. It returns its input unchanged, reports progress,
//! and logs which step and attempt it is. Handy for checking a pipeline's wiring.

use corral_sdk::{Agent, Context, Info, Result};
use serde_json::Value;

struct Echo;

impl Agent for Echo {
    type Input = Value;
    type Output = Value;

    fn info() -> Info {
        Info::new(
            "echo",
            env!("CARGO_PKG_VERSION"),
            "Returns its input unchanged and reports progress.",
        )
    }

    fn run(ctx: Context, input: Value) -> Result<Value> {
        corral_sdk::progress(0, "starting");
        corral_sdk::info(&format!("echo: step {} attempt {}", ctx.step, ctx.attempt));
        corral_sdk::progress(100, "done");
        Ok(input)
    }
}

corral_sdk::export_agent!(Echo);
