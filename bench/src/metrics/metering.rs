//! Metric 3, metering: a CPU-bound guest under Corral (always fuel + epoch) against bare
//! wasmtime with no interruption, epochs only, fuel only, and both. The figure is
//! Corral against the same settings (`metering`); the other rows show how much of
//! Corral's time is the price of metering itself, which is wasmtime's code, not ours.
//!
//! The guest is the `spin-loop` fixture with a fixed iteration count: a tight loop with
//! no host calls. Its loop body is tiny, so the per-iteration fuel accounting weighs as
//! much as it ever can: a worst case for metering (and it changes nothing for the
//! headline row, where both sides meter). A guest doing real work (hashing, nbody) would
//! make the metering rows smaller; adding one is a fixture plus a `Guest` entry here.

use super::{Metric, Rows};
use crate::Ctx;
use crate::bare::{self, Bare, Interruption};
use crate::harness::{Plan, Row, Unit, ms, side_by_side};
use corral::engine::{Call, Invocation, Limits, Output};
use serde_json::json;
use std::time::Instant;

/// The metric.
pub const METRIC: Metric = Metric {
    name: "metering",
    rows: &[
        "metering",
        "metering_vs_fuel_only",
        "metering_vs_epoch_only",
        "metering_vs_none",
    ],
    more_rows: super::no_more_rows,
    run: run_boxed,
};

fn run_boxed(ctx: &Ctx) -> Rows<'_> {
    Box::pin(run(ctx))
}

/// A CPU-bound guest and how much work to ask of it.
struct Guest {
    /// target/plugins/<plugin>.wasm.
    plugin: &'static str,
    /// The input field that sets the amount of work.
    field: &'static str,
    /// That amount in quick and in full mode (roughly 25 and 90 ms unmetered here).
    quick: u64,
    full: u64,
}

/// tests/fixtures/spin-loop: `{"iterations": n}`.
const SPIN_LOOP: Guest = Guest {
    plugin: "spin_loop",
    field: "iterations",
    quick: 40_000_000,
    full: 150_000_000,
};

/// The guest measured.
const GUEST: Guest = SPIN_LOOP;

/// Bare contenders after Corral (contender 0), in row order, then a second fuel+epoch
/// engine: how far two identically configured engines differ in one process says how
/// much of a ratio is code and data placement rather than anything Corral does.
const BARE: [Interruption; 5] = [
    Interruption {
        fuel: true,
        epoch: true,
    },
    Interruption {
        fuel: true,
        epoch: false,
    },
    Interruption {
        fuel: false,
        epoch: true,
    },
    Interruption {
        fuel: false,
        epoch: false,
    },
    Interruption {
        fuel: true,
        epoch: true,
    },
];

async fn run(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let work = ctx.pick(GUEST.quick, GUEST.full);
    let plan = ctx.pick(Plan::new(5, 2, 1), Plan::new(20, 3, 1));
    let input = format!(r#"{{"{}":{work}}}"#, GUEST.field);

    let bytes = ctx.plugin_bytes(GUEST.plugin)?;
    let engine = ctx.corral(None)?;
    let plugin = engine.load(bytes.clone()).await?;
    // Unmetered (fuel is still counted, from u64::MAX, as the bare fuel contenders do),
    // and a deadline no run comes near.
    let limits = Limits {
        fuel: None,
        ..Limits::default()
    };
    let mut bares = Vec::new();
    for interruption in BARE {
        let b = Bare::new(&ctx.config, interruption)?;
        let pre = b.load_agent(&bytes)?;
        bares.push((b, pre));
    }
    // Every contender must return what bare wasmtime does.
    let expected = match bares.first() {
        Some((b, pre)) => bare::run_once(b, pre, &input).await?,
        None => anyhow::bail!("no bare contender"),
    };

    let samples = side_by_side(1 + bares.len(), plan, async |i| {
        let (took, out) = match i.checked_sub(1).and_then(|j| bares.get(j)) {
            None => {
                let call = Call::Run {
                    ctx: bare::corral_context(),
                    input: input.clone(),
                };
                let how = Invocation {
                    limits: limits.clone(),
                    ..Invocation::default()
                };
                let t = Instant::now();
                let outcome = engine.invoke(&plugin, call, how).await;
                let took = t.elapsed();
                match outcome.result? {
                    Output::Json(text) => (took, text),
                    other => anyhow::bail!("run returned {other:?}"),
                }
            }
            Some((b, pre)) => {
                let t = Instant::now();
                let out = bare::run_once(b, pre, &input).await?;
                (t.elapsed(), out)
            }
        };
        anyhow::ensure!(
            out == expected,
            "{} returned {out}, not {expected}",
            GUEST.plugin
        );
        Ok(took)
    })
    .await?;

    let Some((corral, rest)) = samples.split_first() else {
        anyhow::bail!("no samples");
    };
    let median_of = |k: usize| rest.get(k).and_then(|s| s.median());
    let none = median_of(3);
    let share = |k: usize| match (median_of(k), none) {
        (Some(a), Some(b)) if !b.is_zero() => Some(a.as_secs_f64() / b.as_secs_f64()),
        _ => None,
    };
    let params = json!({
        "plugin": GUEST.plugin,
        "input": input,
        "rounds": plan.rounds,
        "calls_per_round": plan.iters,
        "corral": "Engine::invoke(Call::Run), Limits { fuel: None (u64::MAX), .. }: fuel + epoch with Corral's deadline callback",
        "bare_ms": {
            "fuel+epoch": ms(median_of(0)),
            "fuel only": ms(median_of(1)),
            "epoch only": ms(median_of(2)),
            "none": ms(median_of(3)),
            "fuel+epoch, second engine": ms(median_of(4)),
        },
        "same_settings_spread": match (median_of(0), median_of(4)) {
            (Some(a), Some(b)) if !a.is_zero() && !b.is_zero() => {
                Some(a.max(b).as_secs_f64() / a.min(b).as_secs_f64())
            }
            _ => None,
        },
        "wasmtime_cost_vs_none": {
            "fuel+epoch": share(0),
            "fuel only": share(1),
            "epoch only": share(2),
        },
        "corral_ns_per_unit_of_work": corral.median().map(|d| d.as_secs_f64() * 1e9 / work as f64),
    });
    let names = [
        "metering",
        "metering_vs_fuel_only",
        "metering_vs_epoch_only",
        "metering_vs_none",
    ];
    Ok(names
        .iter()
        .enumerate()
        .map(|(k, name)| {
            let mut p = params.clone();
            if let Some(obj) = p.as_object_mut() {
                obj.insert(
                    "baseline".into(),
                    json!(format!(
                        "bare wasmtime, {}: Store + instantiate_async + call_run",
                        BARE.get(k).map_or("?", |b| b.label())
                    )),
                );
            }
            Row::cost(*name, Unit::Millis, corral.median(), median_of(k), p)
        })
        .collect())
}
