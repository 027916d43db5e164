//! Metric 1, instantiate: Corral's whole per-invocation set-up plus instantiation of `echo`
//! from its cached pre-instantiated component, against bare wasmtime instantiating the
//! same component with a minimal Store. Both make the cheapest call there is
//! (`agent.describe`), so the difference is Corral's per-call work; a third contender,
//! bare instantiation without any call, shows what the call itself costs, and a fourth,
//! Corral with its scratch root on tmpfs (/dev/shm, when there is one), shows what the
//! scratch directory's filesystem costs.

use super::{Metric, Rows};
use crate::Ctx;
use crate::bare::{Bare, Interruption, Wt};
use crate::harness::{Plan, Row, Unit, side_by_side, us};
use corral::engine::{Call, Invocation, Output};
use serde_json::json;
use std::path::Path;
use std::time::Instant;

/// The metric.
pub const METRIC: Metric = Metric {
    name: "instantiate",
    rows: &["instantiate", "instantiate_p99", "instantiate_rate"],
    more_rows: super::no_more_rows,
    run: run_boxed,
};

fn run_boxed(ctx: &Ctx) -> Rows<'_> {
    Box::pin(run(ctx))
}

const PLUGIN: &str = "echo";

async fn run(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let plan = ctx.pick(Plan::new(8, 100, 50), Plan::new(40, 300, 200));
    let bytes = ctx.plugin_bytes(PLUGIN)?;
    let engine = ctx.corral(None)?;
    let plugin = engine.load(bytes.clone()).await?;
    let bare = Bare::new(&ctx.config, Interruption::CORRAL)?;
    let pre = bare.load_agent(&bytes)?;
    // Corral again, with its scratch directories on tmpfs.
    let shm = Path::new("/dev/shm");
    let tmpfs = match shm.is_dir() {
        true => {
            let dir = tempfile::Builder::new()
                .prefix("corral-bench-")
                .tempdir_in(shm)?;
            let engine = ctx.corral_in(None, dir.path().join("scratch"))?;
            let plugin = engine.load(bytes.clone()).await?;
            Some((dir, engine, plugin))
        }
        false => None,
    };
    let contenders = if tmpfs.is_some() { 4 } else { 3 };

    let samples = side_by_side(contenders, plan, async |i| {
        Ok(match i {
            0 | 3 => {
                let (engine, plugin) = match (&tmpfs, i) {
                    (Some((_, e, p)), 3) => (e, p),
                    _ => (&engine, &plugin),
                };
                let how = Invocation::default();
                let t = Instant::now();
                let outcome = engine.invoke(plugin, Call::Describe, how).await;
                let took = t.elapsed();
                match outcome.result? {
                    Output::AgentInfo(_) => took,
                    other => anyhow::bail!("describe returned {other:?}"),
                }
            }
            1 => {
                let t = Instant::now();
                let mut store = bare.store()?;
                let agent = pre
                    .instantiate_async(&mut store)
                    .await
                    .wt("instantiating")?;
                agent
                    .corral_plugin_agent()
                    .call_describe(&mut store)
                    .await
                    .wt("describe")?;
                drop(store);
                t.elapsed()
            }
            _ => {
                // 2: bare instantiation alone.
                let t = Instant::now();
                let mut store = bare.store()?;
                pre.instantiate_async(&mut store)
                    .await
                    .wt("instantiating")?;
                drop(store);
                t.elapsed()
            }
        })
    })
    .await?;
    let [corral, baseline, bare_only, rest @ ..] = samples.as_slice() else {
        anyhow::bail!("expected three contenders or more");
    };
    let on_tmpfs = rest.first();

    let params = json!({
        "plugin": PLUGIN,
        "rounds": plan.rounds,
        "iterations": plan.iters,
        "warmup": plan.warmup,
        "corral": "Engine::invoke(Call::Describe) with default Limits: WASI context with captured stdio (echo imports no wasi:filesystem, so no scratch dir), limiter, fuel, deadline, instantiate, describe, drop",
        "baseline": "bare wasmtime, same config and linker: Store (no limits) + InstancePre::instantiate_async + describe, drop",
        "bare_instantiate_only_us": us(bare_only.median()),
        "bare_instantiate_only_p99_us": us(bare_only.p99()),
        "scratch_root": ctx.scratch_root,
        "corral_scratch_on_tmpfs_us": us(on_tmpfs.and_then(|s| s.median())),
        "corral_scratch_on_tmpfs_p99_us": us(on_tmpfs.and_then(|s| s.p99())),
        "corral_scratch_on_tmpfs_per_s": on_tmpfs.and_then(|s| s.rate()).map(f64::round),
    });
    Ok(vec![
        Row::cost(
            "instantiate",
            Unit::Micros,
            corral.median(),
            baseline.median(),
            params.clone(),
        ),
        Row::cost(
            "instantiate_p99",
            Unit::Micros,
            corral.p99(),
            baseline.p99(),
            params.clone(),
        ),
        Row::rate("instantiate_rate", corral.rate(), baseline.rate(), params),
    ])
}
