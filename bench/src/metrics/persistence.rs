//! Metric 5, persistence: what the database work of one run costs. Corral's side is
//! every write the runner makes for one run of the one-step `echo` pipeline, through
//! `corral::store::Store` with the same `Change` lists and event payloads as
//! host/src/runs/executor.rs: `create_run` (+ `link_run_plugins`), `claim_run`, the
//! step's start with its `running` event, the guest's progress and log events (one
//! commit each), the attempt's end with its fuel, the step's `complete`, and the run's
//! final `complete`. The payloads come from a real run of the pipeline made first, and
//! the rows a replay leaves are checked against that run's.
//!
//! The baseline (`raw.rs`) writes the same rows in the same transactions with sqlx's
//! native driver and the same durability settings, in a second fresh database, and is
//! checked the same way. Reads the runner makes between writes (`steps`, `run` for the
//! fuel total) are not in either side.
//!
//! SQLite always; Postgres when `CORRAL_TEST_POSTGRES_URL` is set, in fresh schemas that
//! are dropped afterwards.

use super::{Metric, Rows};
use crate::Ctx;
use crate::db::{FreshDb, Kind, with_two};
use crate::harness::{Plan, Row, Unit, side_by_side, us};
use crate::raw::{self, RawDb, Template};
use corral::runs::{Runner, RunnerConfig};
use corral::store::{Change, NewRun, Store};
use serde_json::json;
use std::time::{Duration, Instant};

/// The metric.
pub const METRIC: Metric = Metric {
    name: "persistence",
    rows: &["persistence_sqlite"],
    more_rows,
    run: run_boxed,
};

fn more_rows(ctx: &Ctx) -> Vec<String> {
    match ctx.postgres {
        Some(_) => vec!["persistence_postgres".into()],
        None => Vec::new(),
    }
}

fn run_boxed(ctx: &Ctx) -> Rows<'_> {
    Box::pin(run(ctx))
}

/// The lease the runner takes (`RunnerConfig::default`).
const LEASE: Duration = Duration::from_secs(15);

async fn run(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let mut rows = vec![measure(ctx, Kind::Sqlite).await?];
    match &ctx.postgres {
        Some(_) => rows.push(measure(ctx, Kind::Postgres).await?),
        None => eprintln!(
            "   note: {} is not set: persistence_postgres skipped",
            crate::db::POSTGRES_ENV
        ),
    }
    Ok(rows)
}

async fn measure(ctx: &Ctx, kind: Kind) -> anyhow::Result<Row> {
    with_two(
        kind,
        &ctx.work,
        ctx.postgres.as_deref(),
        async |corral_db, raw_db| measure_on(ctx, corral_db, raw_db).await,
    )
    .await
}

/// A store with one tenant, the template of a real run made on it, and its id.
pub async fn store_with_template(
    ctx: &Ctx,
    db: &FreshDb,
) -> anyhow::Result<(Store, String, Template, String)> {
    let store = Store::open(&db.url).await?;
    let tenant = store.ensure_tenant("bench").await?;
    let engine = ctx.corral(Some(ctx.cache.join("corral")))?;
    let runner = Runner::new(engine, store.clone(), RunnerConfig::default());
    let pipeline = raw::pipeline(&ctx.plugins)?;
    let run = runner.submit(&tenant, &pipeline, None, raw::INPUT).await?;
    runner.execute(&run.id).await?;
    let template = Template::from_run(&store, &run.id).await?;
    Ok((store, tenant, template, run.id))
}

async fn measure_on(ctx: &Ctx, corral_db: &FreshDb, raw_db: &FreshDb) -> anyhow::Result<Row> {
    let kind = corral_db.kind;
    let plan = match kind {
        // Many short rounds: disk and server load from elsewhere comes in bursts.
        Kind::Sqlite => ctx.pick(Plan::new(12, 6, 5), Plan::new(40, 15, 20)),
        Kind::Postgres => ctx.pick(Plan::new(10, 4, 3), Plan::new(30, 10, 10)),
    };
    let (store, tenant, template, real) = store_with_template(ctx, corral_db).await?;
    let raw = RawDb::open(raw_db).await?;
    let raw_store = Store::open(&raw_db.url).await?;

    // Both writers must leave the rows the real run left.
    let expected = raw::snapshot(&store, &real).await?;
    let owner = corral::store::new_id("host");
    let replayed = corral_run(&store, &tenant, &owner, &template).await?;
    anyhow::ensure!(
        raw::snapshot(&store, &replayed).await? == expected,
        "Corral's replay did not write what the real run wrote:\n{}\n{}",
        raw::snapshot(&store, &replayed).await?,
        expected
    );
    let fuel_before = raw_store.tenant_fuel(&raw.tenant_id).await?;
    let raw_run = raw.whole_run(&template).await?;
    anyhow::ensure!(
        raw::snapshot(&raw_store, &raw_run).await? == expected,
        "the raw baseline did not write what the real run wrote:\n{}\n{}",
        raw::snapshot(&raw_store, &raw_run).await?,
        expected
    );
    anyhow::ensure!(
        raw_store.tenant_fuel(&raw.tenant_id).await? - fuel_before == template.fuel,
        "the raw baseline did not add the fuel to its tenant"
    );
    drop(raw_store);

    let samples = side_by_side(2, plan, async |i| {
        Ok(if i == 0 {
            let t = Instant::now();
            corral_run(&store, &tenant, &owner, &template).await?;
            t.elapsed()
        } else {
            let t = Instant::now();
            raw.whole_run(&template).await?;
            t.elapsed()
        })
    })
    .await?;
    raw.close().await;
    drop(store);
    let [corral, baseline] = samples.as_slice() else {
        anyhow::bail!("expected two contenders");
    };
    let (corral_stmts, raw_stmts) = raw::statements(&template);
    let durability = match kind {
        Kind::Sqlite => {
            "WAL, synchronous = NORMAL, busy_timeout 10 s, foreign keys (Corral's PRAGMAs), 4 connections, writes serialized in process"
        }
        Kind::Postgres => "server defaults (synchronous_commit), 16 connections",
    };
    Ok(Row::cost(
        format!("persistence_{}", kind.label()),
        Unit::Micros,
        corral.median(),
        baseline.median(),
        json!({
            "database": kind.label(),
            "where": corral_db.location(),
            "durability": durability,
            "rounds": plan.rounds,
            "iterations": plan.iters,
            "warmup": plan.warmup,
            "runs_in_each_database": 2 + plan.warmup + plan.rounds * plan.iters,
            "transactions_per_run": template.transactions(),
            "events_per_run": template.events(),
            "statements_per_run": {"corral": corral_stmts, "baseline": raw_stmts},
            "corral_p99_us": us(corral.p99()),
            "baseline_p99_us": us(baseline.p99()),
            "corral": "corral::store::Store: create_run_linked, claim_run, then commit_many() with the executor's Change lists and events (payloads from a real run of the echo pipeline): step start, the guest's events in one, the step's and the run's end in one; each a member of the store's group commit",
            "baseline": "sqlx native driver, same tables and durability, same rows in the same transactions, fewest statements (no read-back, RETURNING, guards or sub-selects)",
            "not_included": "the runner's reads between writes (steps, run fuel total) and event publication",
        }),
    ))
}

/// Every write the runner makes for one successful run of the template's pipeline, in
/// order, through the store (host/src/runs/{mod,executor}.rs). Returns the run id.
pub async fn corral_run(
    store: &Store,
    tenant: &str,
    owner: &str,
    t: &Template,
) -> anyhow::Result<String> {
    // Runner::submit: the run, its steps, its `queued` event and its plugin links.
    let (run, _queued) = store
        .create_run_linked(
            &NewRun {
                tenant_id: tenant.to_string(),
                pipeline_id: None,
                pipeline_name: t.pipeline_name.clone(),
                spec: t.spec.clone(),
                input: t.input.clone(),
                steps: vec![(t.step.clone(), t.agent.clone())],
            },
            None,
            &[],
        )
        .await?
        .ok_or_else(|| anyhow::anyhow!("an uncapped run was refused"))?;
    // Runner::work claims it (one statement, the run as claimed comes back).
    let run = store
        .claim_run(&run.id, owner, LEASE)
        .await?
        .ok_or_else(|| anyhow::anyhow!("could not claim {}", run.id))?;
    let run_ref = run.as_ref();
    let commit = async |changes: &[Change], events: &[(&str, serde_json::Value)]| match store
        .commit_many(&run_ref, changes, events)
        .await?
    {
        Some(_) => Ok(()),
        None => Err(anyhow::anyhow!("a guarded change matched no row")),
    };
    // Walk::run_step: the attempt starts.
    commit(
        &[
            Change::RunStatus {
                from: &["running", "waiting"],
                to: "running",
            },
            Change::StepStart {
                idx: 0,
                generation: 0,
                attempt: 1,
                feedback: None,
            },
        ],
        &[("running", t.started.clone())],
    )
    .await?;
    // The guest events' committer: what has queued up, in one transaction.
    let guest: Vec<(&str, serde_json::Value)> = t
        .guest
        .iter()
        .map(|(kind, payload)| (kind.as_str(), payload.clone()))
        .collect();
    commit(&[], &guest).await?;
    // The last step's end and the run's end, one transition (executor::finish).
    commit(
        &[
            Change::AddFuel {
                step_idx: 0,
                fuel: t.fuel,
            },
            Change::AttemptEnd {
                idx: 0,
                generation: 0,
                attempt: 1,
                status: "succeeded",
                fuel: t.fuel,
                error_code: None,
                error_message: None,
            },
            Change::StepSucceeded {
                idx: 0,
                output: t.output.clone(),
            },
            Change::RunFinish {
                status: "succeeded",
                output: Some(t.output.clone()),
                error_code: None,
                error_message: None,
            },
            Change::SkipRemaining,
        ],
        &[
            ("complete", t.step_done.clone()),
            ("complete", t.finished_for(&run.id)),
        ],
    )
    .await?;
    Ok(run.id)
}
