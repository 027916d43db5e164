//! Metric 6, runs end to end: one-step `echo` runs through the embedded scheduler
//! (`Runner::work`, as `corral serve` runs it) with `max_concurrent_runs` 1 and N, fed by
//! N clients that each submit a run (`Runner::submit`), follow it (`Runner::subscribe`,
//! as the API's SSE stream does) and submit the next once its final event arrives.
//! Reported: runs per second, and submit -> final event latency p50 and p99.
//!
//! The baseline is what such a run costs at the least, done by the same number of
//! clients: the same `Engine::invoke` of `echo` (no database) plus the raw writes of
//! metric 5 (`raw.rs`: the same rows in the same transactions, native sqlx driver, a
//! second fresh database of the same kind), in the order a run makes them. So the ratio
//! is what Corral's run layer (scheduling, claiming, reading back, plugin re-loading,
//! subscriptions, its store's statements) adds to the engine call and the writes that
//! make a run durable.
//!
//! SQLite always; Postgres when `CORRAL_TEST_POSTGRES_URL` is set.

use super::{Metric, Rows};
use crate::Ctx;
use crate::db::{FreshDb, Kind, with_two};
use crate::harness::{Plan, Row, Samples, Unit, side_by_side};
use crate::raw::{self, RawDb, Template};
use corral::engine::{Call, Engine, Invocation, Limits, Output, Plugin};
use corral::runs::pipeline::Pipeline;
use corral::runs::{Runner, RunnerConfig};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The metric.
pub const METRIC: Metric = Metric {
    name: "runs",
    rows: &[
        "runs_sqlite_c1",
        "runs_sqlite_c1_p50",
        "runs_sqlite_c1_p99",
        "runs_sqlite_c8",
        "runs_sqlite_c8_p50",
        "runs_sqlite_c8_p99",
    ],
    more_rows,
    run: run_boxed,
};

fn more_rows(ctx: &Ctx) -> Vec<String> {
    match ctx.postgres {
        Some(_) => row_names(Kind::Postgres),
        None => Vec::new(),
    }
}

fn row_names(kind: Kind) -> Vec<String> {
    let db = kind.label();
    [1, N]
        .iter()
        .flat_map(|c| {
            [
                format!("runs_{db}_c{c}"),
                format!("runs_{db}_c{c}_p50"),
                format!("runs_{db}_c{c}_p99"),
            ]
        })
        .collect()
}

fn run_boxed(ctx: &Ctx) -> Rows<'_> {
    Box::pin(run(ctx))
}

/// The higher concurrency (`RunnerConfig::default().max_concurrent_runs`).
const N: usize = 8;

/// How long one run may take before the metric gives up on it.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

async fn run(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let mut rows = measure(ctx, Kind::Sqlite).await?;
    match &ctx.postgres {
        Some(_) => rows.extend(measure(ctx, Kind::Postgres).await?),
        None => eprintln!(
            "   note: {} is not set: runs_postgres_* skipped",
            crate::db::POSTGRES_ENV
        ),
    }
    Ok(rows)
}

async fn measure(ctx: &Ctx, kind: Kind) -> anyhow::Result<Vec<Row>> {
    with_two(
        kind,
        &ctx.work,
        ctx.postgres.as_deref(),
        async |corral_db, raw_db| {
            with_setups(ctx, corral_db, raw_db, &[1, N], async |c, setup| {
                compare(ctx, kind, c, setup).await
            })
            .await
        },
    )
    .await
}

/// Everything a batch of runs needs, shared by the client tasks.
pub struct Setup {
    runner: Runner,
    tenant: String,
    pipeline: Pipeline,
    engine: Engine,
    plugin: Arc<Plugin>,
    limits: Limits,
    raw: RawDb,
    template: Template,
}

/// Runs per batch, batches (rounds), at concurrency `c`.
fn sizes(ctx: &Ctx, kind: Kind, c: usize) -> (usize, usize) {
    match (kind, c) {
        (Kind::Sqlite, 1) => ctx.pick((20, 4), (60, 12)),
        (Kind::Sqlite, _) => ctx.pick((48, 4), (160, 12)),
        (Kind::Postgres, 1) => ctx.pick((12, 4), (40, 10)),
        (Kind::Postgres, _) => ctx.pick((32, 4), (120, 10)),
    }
}

/// Runs `body(c, setup)` for each concurrency `c` of `concurrencies` while Corral's
/// scheduler works on `corral_db` with `max_concurrent_runs` `c` (the raw writer on
/// `raw_db`), and gathers the rows. Public so that another metric (`runs_limits`) can
/// measure its contenders side by side with Corral's runs ([`corral_batch`]).
pub async fn with_setups(
    ctx: &Ctx,
    corral_db: &FreshDb,
    raw_db: &FreshDb,
    concurrencies: &[usize],
    mut body: impl AsyncFnMut(usize, &Arc<Setup>) -> anyhow::Result<Vec<Row>>,
) -> anyhow::Result<Vec<Row>> {
    let (store, tenant, template, _) =
        super::persistence::store_with_template(ctx, corral_db).await?;
    let engine = ctx.corral(Some(ctx.cache.join("corral")))?;
    let pipeline = raw::pipeline(&ctx.plugins)?;
    let plugin = engine.load_file(&ctx.plugin("echo")).await?;
    let limits = pipeline
        .steps
        .first()
        .map(|s| s.limits())
        .ok_or_else(|| anyhow::anyhow!("the bench pipeline has no step"))?;
    let raw = RawDb::open(raw_db).await?;

    let mut rows = Vec::new();
    for &c in concurrencies {
        let runner = Runner::new(
            engine.clone(),
            store.clone(),
            RunnerConfig {
                max_concurrent_runs: c,
                ..RunnerConfig::default()
            },
        );
        let setup = Arc::new(Setup {
            runner: runner.clone(),
            tenant: tenant.clone(),
            pipeline: pipeline.clone(),
            engine: engine.clone(),
            plugin: plugin.clone(),
            limits: limits.clone(),
            raw: raw.clone(),
            template: template.clone(),
        });
        let stop = CancellationToken::new();
        let worker = {
            let (runner, stop) = (runner.clone(), stop.clone());
            tokio::spawn(async move { runner.work(false, stop).await })
        };
        let result = body(c, &setup).await;
        stop.cancel();
        worker.await??;
        rows.extend(result?);
    }
    raw.close().await;
    Ok(rows)
}

async fn compare(ctx: &Ctx, kind: Kind, c: usize, setup: &Arc<Setup>) -> anyhow::Result<Vec<Row>> {
    let (m, rounds) = sizes(ctx, kind, c);
    // Warm-up: a batch of each, not recorded.
    for i in 0..2 {
        batch(setup, i, c, c.max(4)).await?;
    }
    let mut latency = [Samples::default(), Samples::default()];
    let plan = Plan::new(rounds, 1, 0);
    let samples = side_by_side(2, plan, async |i| {
        let (took, lat) = batch(setup, i, c, m).await?;
        if let Some(s) = latency.get_mut(i) {
            s.push_batch(&lat);
        }
        Ok(took)
    })
    .await?;
    let [corral, baseline] = samples.as_slice() else {
        anyhow::bail!("expected two contenders");
    };
    let [corral_lat, baseline_lat] = &latency;
    let rate = |s: &Samples| s.median().map(|d| m as f64 / d.as_secs_f64());
    let db = kind.label();
    let params = json!({
        "database": db,
        "pipeline": "one step, echo (target/plugins/echo.wasm), small JSON input",
        "concurrency": c,
        "max_concurrent_runs": c,
        "clients": c,
        "runs_per_batch": m,
        "rounds": rounds,
        "corral": "Runner::work (scheduler) + per client: Runner::submit, Runner::subscribe, wait for the final event; runs/s = runs per batch / median batch time",
        "baseline": "per client: Engine::invoke(echo) with the step's limits (no database) + the raw sqlx writes of one run (metric 5's baseline, fresh database of the same kind), in run order",
        "latency": "submit -> final event received (baseline: first write -> last write committed); p50 = median of per-round medians, p99 over all runs",
        "corral_mean_ms": corral_lat.all.iter().sum::<Duration>().as_secs_f64() * 1e3 / corral_lat.all.len().max(1) as f64,
        "baseline_mean_ms": baseline_lat.all.iter().sum::<Duration>().as_secs_f64() * 1e3 / baseline_lat.all.len().max(1) as f64,
    });
    Ok(vec![
        Row::rate(
            format!("runs_{db}_c{c}"),
            rate(corral),
            rate(baseline),
            params.clone(),
        ),
        Row::cost(
            format!("runs_{db}_c{c}_p50"),
            Unit::Millis,
            corral_lat.median(),
            baseline_lat.median(),
            params.clone(),
        ),
        Row::cost(
            format!("runs_{db}_c{c}_p99"),
            Unit::Millis,
            corral_lat.p99(),
            baseline_lat.p99(),
            params,
        ),
    ])
}

/// `m` runs by `c` clients (contender `i`: 0 Corral, 1 the baseline). Returns the
/// batch's wall time and each run's latency.
async fn batch(
    setup: &Arc<Setup>,
    i: usize,
    c: usize,
    m: usize,
) -> anyhow::Result<(Duration, Vec<Duration>)> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..c {
        let (setup, next) = (setup.clone(), next.clone());
        clients.spawn(async move {
            let mut latencies = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < m {
                let t = Instant::now();
                if i == 0 {
                    corral_run(&setup).await?;
                } else {
                    baseline_run(&setup).await?;
                }
                latencies.push(t.elapsed());
            }
            anyhow::Ok(latencies)
        });
    }
    let mut all = Vec::with_capacity(m);
    while let Some(done) = clients.join_next().await {
        all.extend(done??);
    }
    Ok((started.elapsed(), all))
}

/// Corral's side of a batch on its own: `m` runs by `c` clients (`c` as `setup`'s
/// `max_concurrent_runs`, see [`with_setups`]), as this metric measures them. Returns the
/// batch's wall time.
pub async fn corral_batch(setup: &Arc<Setup>, c: usize, m: usize) -> anyhow::Result<Duration> {
    Ok(batch(setup, 0, c, m).await?.0)
}

/// Submits a run and waits for its final event; it must have succeeded.
async fn corral_run(s: &Setup) -> anyhow::Result<()> {
    let run = s
        .runner
        .submit(&s.tenant, &s.pipeline, None, raw::INPUT)
        .await?;
    let mut events = s.runner.subscribe(&s.tenant, &run.id, 0).await?;
    loop {
        let event = tokio::time::timeout(RUN_TIMEOUT, events.recv())
            .await
            .map_err(|_| anyhow::anyhow!("run {} did not end in {RUN_TIMEOUT:?}", run.id))?
            .ok_or_else(|| anyhow::anyhow!("run {}: the stream ended early", run.id))?;
        if event.is_final() {
            anyhow::ensure!(
                event.payload.get("status").and_then(|v| v.as_str()) == Some("succeeded"),
                "run {} ended {}",
                run.id,
                event.payload
            );
            return Ok(());
        }
    }
}

/// The engine call and the raw writes of one run.
async fn baseline_run(s: &Setup) -> anyhow::Result<()> {
    let mut run = s.raw.run_before(&s.template).await?;
    let call = Call::Run {
        ctx: corral::engine::RunContext {
            run_id: run.id.clone(),
            step: s.template.step.clone(),
            attempt: 1,
            config: "{}".into(),
            feedback: None,
        },
        input: raw::INPUT.to_string(),
    };
    let how = Invocation {
        limits: s.limits.clone(),
        ..Invocation::default()
    };
    match s.engine.invoke(&s.plugin, call, how).await.result? {
        Output::Json(_) => {}
        other => anyhow::bail!("echo returned {other:?}"),
    }
    s.raw.run_after(&mut run, &s.template).await?;
    Ok(())
}
