//! Metric 2, call: one `echo` `agent.run` end to end in the engine (no database), against bare
//! wasmtime's instantiate + typed call, for a small input and a payload sweep of 1 KiB,
//! 64 KiB and 1 MiB of JSON. Echo parses its input and serialises it back, so the
//! guest's own work grows with the payload on both sides; Corral adds its checks of
//! the input and output JSON, its log capture and its sandbox set-up.

use super::{Metric, Rows};
use crate::Ctx;
use crate::bare::{self, Bare, Interruption};
use crate::harness::{Plan, Row, Unit, side_by_side};
use corral::engine::{Call, Invocation, Output};
use serde_json::{Value, json};
use std::fmt::Write;
use std::time::Instant;

/// The metric.
pub const METRIC: Metric = Metric {
    name: "call",
    rows: &["call", "call_p99", "call_1KiB", "call_64KiB", "call_1MiB"],
    more_rows: super::no_more_rows,
    run: run_boxed,
};

fn run_boxed(ctx: &Ctx) -> Rows<'_> {
    Box::pin(run(ctx))
}

const PLUGIN: &str = "echo";

/// A small input, like a pipeline step's typical hand-over.
const SMALL: &str = r#"{"text":"hello","n":[1,2,3],"nested":{"ok":true}}"#;

async fn run(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let bytes = ctx.plugin_bytes(PLUGIN)?;
    let engine = ctx.corral(None)?;
    let plugin = engine.load(bytes.clone()).await?;
    let bare = Bare::new(&ctx.config, Interruption::CORRAL)?;
    let pre = bare.load_agent(&bytes)?;

    let cases: [(&str, String, Unit, Plan); 4] = [
        (
            "call",
            SMALL.to_string(),
            Unit::Micros,
            ctx.pick(Plan::new(8, 100, 30), Plan::new(30, 300, 100)),
        ),
        (
            "call_1KiB",
            payload(1 << 10),
            Unit::Micros,
            ctx.pick(Plan::new(8, 100, 30), Plan::new(30, 300, 100)),
        ),
        (
            "call_64KiB",
            payload(64 << 10),
            Unit::Micros,
            ctx.pick(Plan::new(8, 20, 5), Plan::new(30, 60, 20)),
        ),
        (
            "call_1MiB",
            payload(1 << 20),
            Unit::Millis,
            ctx.pick(Plan::new(6, 3, 2), Plan::new(25, 6, 4)),
        ),
    ];

    let mut rows = Vec::new();
    for (name, input, unit, plan) in cases {
        // Both sides must echo the input (same JSON value) before anything is timed.
        let expected: Value = serde_json::from_str(&input)?;
        let corral_out = match engine
            .invoke(&plugin, run_call(&input), Invocation::default())
            .await
            .result?
        {
            Output::Json(text) => text,
            other => anyhow::bail!("run returned {other:?}"),
        };
        let bare_out = bare::run_once(&bare, &pre, &input).await?;
        for out in [&corral_out, &bare_out] {
            anyhow::ensure!(
                serde_json::from_str::<Value>(out)? == expected,
                "{name}: echo did not return its input"
            );
        }

        let samples = side_by_side(2, plan, async |i| {
            Ok(if i == 0 {
                // The call owns its input: copy it before the clock starts.
                let call = run_call(&input);
                let t = Instant::now();
                let outcome = engine.invoke(&plugin, call, Invocation::default()).await;
                let took = t.elapsed();
                outcome.result?;
                took
            } else {
                let t = Instant::now();
                bare::run_once(&bare, &pre, &input).await?;
                t.elapsed()
            })
        })
        .await?;
        let [corral, baseline] = samples.as_slice() else {
            anyhow::bail!("expected two contenders");
        };
        let params = json!({
            "plugin": PLUGIN,
            "input_bytes": input.len(),
            "rounds": plan.rounds,
            "iterations": plan.iters,
            "warmup": plan.warmup,
            "corral": "Engine::invoke(Call::Run) with default Limits, end to end (no database)",
            "baseline": "bare wasmtime, same config and linker: Store + instantiate_async + call_run, drop",
        });
        rows.push(Row::cost(
            name,
            unit,
            corral.median(),
            baseline.median(),
            params.clone(),
        ));
        if name == "call" {
            rows.push(Row::cost(
                "call_p99",
                unit,
                corral.p99(),
                baseline.p99(),
                params,
            ));
        }
    }
    Ok(rows)
}

fn run_call(input: &str) -> Call {
    Call::Run {
        ctx: bare::corral_context(),
        input: input.to_string(),
    }
}

/// A JSON document of exactly `size` bytes: an array of small records (what pipelines
/// hand each other), padded with one string to the exact size.
pub fn payload(size: usize) -> String {
    let mut s = String::with_capacity(size);
    s.push_str(r#"{"records":["#);
    let mut i = 0u64;
    // Leave room for the closing `],"pad":""}` (11 bytes) and the longest record.
    while s.len() + 128 < size {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(
            s,
            r#"{{"id":{i},"name":"item-{i:06}","active":{},"score":{}.25,"tags":["alpha","beta"]}}"#,
            i.is_multiple_of(2),
            i % 1000
        );
        i += 1;
    }
    s.push_str(r#"],"pad":""#);
    while s.len() + 2 < size {
        s.push('x');
    }
    s.push_str(r#""}"#);
    s
}

#[cfg(test)]
mod tests {
    use super::payload;

    #[test]
    fn payloads_are_json_of_the_exact_size() {
        for size in [1 << 10, 64 << 10, 1 << 20] {
            let p = payload(size);
            assert_eq!(p.len(), size);
            assert!(serde_json::from_str::<serde_json::Value>(&p).is_ok());
        }
    }
}
