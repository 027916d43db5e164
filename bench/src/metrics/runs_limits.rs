//! Metric 8, the run layer's limits: what the database can commit at all, and what a
//! real durable-workflow peer does, each measured side by side with Corral's runs (the
//! Corral side of metric 6, `runs::corral_batch`: the scheduler at `max_concurrent_runs`
//! c, c clients that each submit a one-step `echo` run and wait for its final event).
//!
//! - `runs_{db}_limit` (c8) and `runs_{db}_limit_c1`: the **physical limit**, single-row
//!   commits per second: c clients, each inserting one small row in its own transaction
//!   (one autocommitted `INSERT`) and waiting for the commit before the next. The native
//!   sqlx driver, with the durability of Corral's store: SQLite with the PRAGMAs of
//!   Corral's pool (WAL, `synchronous = NORMAL`, `busy_timeout`, foreign keys) and writes
//!   serialized in process as its store does; Postgres with the server's defaults
//!   (`synchronous_commit = on`: every commit waits for its WAL flush). A run that needed
//!   one commit of its own could go no faster, so `ratio` (limit / Corral) is how many
//!   such commits one of Corral's runs costs.
//! - `runs_{db}_limit_batched` (c8): the same rows with **group commit**: the c8 clients
//!   each keep [`WINDOW`] rows in flight; a committer takes every pending row (up to
//!   [`MAX_GROUP`]) into one multi-row `INSERT`, one transaction, and answers each client
//!   once it is committed ([`committers`]: one on SQLite, its one writer; four on
//!   Postgres, whose WAL flushes overlap). Rows per second: the ceiling for a run layer
//!   that carries many runs' transitions in one transaction. `params` also give the same
//!   with one row in flight per client (at most 8 rows per commit).
//! - `runs_postgres_c8_dbos` and `runs_postgres_c1_dbos`: the **peer**, DBOS (Python,
//!   durable workflows on Postgres, `dbos.rs`) running a one-step no-op workflow on the
//!   same Postgres server, in a fresh database of its own, started and awaited by c
//!   client threads. Full mode only; absent, with a note, when its venv cannot be made
//!   (no PyPI, no `python3`).
//!
//! Every `corral` figure is Corral's runs/s at that concurrency, measured in the same
//! rounds as the baselines (metric 6's own rows come from other rounds). Batch sizes
//! follow each contender's rate (from a warm-up batch), so that every batch takes about
//! the same time.

use super::{Metric, Rows, runs};
use crate::Ctx;
use crate::db::{FreshDb, Kind, with_two};
use crate::harness::{Plan, Row, Samples, ms, side_by_side};
use crate::raw::{self, Pool};
use serde_json::{Value, json};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

mod dbos;

/// The metric.
pub const METRIC: Metric = Metric {
    name: "runs_limits",
    rows: &[
        "runs_sqlite_limit",
        "runs_sqlite_limit_c1",
        "runs_sqlite_limit_batched",
    ],
    more_rows,
    run: run_boxed,
};

fn more_rows(ctx: &Ctx) -> Vec<String> {
    match ctx.postgres {
        // The DBOS rows are not promised: they are absent when the peer is skipped, and
        // reported without a number when it fails.
        Some(_) => ["limit", "limit_c1", "limit_batched"]
            .iter()
            .map(|s| format!("runs_postgres_{s}"))
            .collect(),
        None => Vec::new(),
    }
}

fn run_boxed(ctx: &Ctx) -> Rows<'_> {
    Box::pin(run(ctx))
}

/// The higher concurrency (metric 6's, `RunnerConfig::default().max_concurrent_runs`).
const C: usize = 8;

/// Rows each client keeps in flight in the group-commit row (8 clients: up to 64).
const WINDOW: usize = 8;

/// The most rows one group commit carries.
const MAX_GROUP: usize = 64;

/// Group commits in flight at once: SQLite has one writer (more committers only make
/// smaller groups queue for it), Postgres overlaps several transactions' WAL flushes
/// (4 committers made about twice the rows/s of 1 here, 2026-12-02).
fn committers(kind: Kind) -> usize {
    match kind {
        Kind::Sqlite => 1,
        Kind::Postgres => 4,
    }
}

/// The payload of every row: a run's input, about the size of a small event.
const PAYLOAD: &str = raw::INPUT;

async fn run(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let mut rows = measure(ctx, Kind::Sqlite, &mut dbos::Peer::NoPostgres).await?;
    let Some(server) = &ctx.postgres else {
        eprintln!(
            "   note: {} is not set: runs_postgres_limit* and runs_postgres_c8_dbos skipped",
            crate::db::POSTGRES_ENV
        );
        return Ok(rows);
    };
    let mut peer = dbos::Peer::start(ctx, server).await;
    if let Some(note) = peer.note() {
        eprintln!("   note: {note}");
    }
    let measured = measure(ctx, Kind::Postgres, &mut peer).await;
    let stopped = peer.stop().await;
    rows.extend(measured?);
    if let Err(e) = stopped {
        eprintln!("   note: stopping DBOS: {e:#}");
    }
    Ok(rows)
}

async fn measure(ctx: &Ctx, kind: Kind, peer: &mut dbos::Peer) -> anyhow::Result<Vec<Row>> {
    with_two(
        kind,
        &ctx.work,
        ctx.postgres.as_deref(),
        async |corral_db, limit_db| {
            let limit = Limit::open(limit_db).await?;
            // The raw writer `with_setups` opens on `limit_db` stays idle; the limit rows
            // go to a table of their own next to its tables.
            let rows = runs::with_setups(ctx, corral_db, limit_db, &[1, C], async |c, setup| {
                compare(ctx, kind, c, setup, &limit, peer).await
            })
            .await;
            limit.close().await;
            rows
        },
    )
    .await
}

/// One contender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    /// Corral's runs.
    Corral,
    /// One row per transaction, each client waiting for its commit.
    Single,
    /// Group commit, each client keeping `window` rows in flight, `committers`
    /// transactions at a time.
    Group { window: usize, committers: usize },
    /// DBOS workflows.
    Dbos,
}

impl Who {
    /// Items (runs, rows, workflows) of the warm-up batch that sizes the timed ones, and
    /// the least a timed batch has (enough to keep `c` clients busy past the ramp).
    fn probe_and_least(self, ctx: &Ctx, c: usize) -> (usize, usize) {
        match self {
            Who::Corral | Who::Dbos => ((2 * c).max(8), ctx.pick(4, 8) * c),
            Who::Single => (64, 64),
            Who::Group { .. } => (256, 256),
        }
    }
}

/// What one batch of a contender measured.
#[derive(Debug, Default)]
struct Took {
    wall: Duration,
    /// Per item (DBOS only: start -> result).
    latencies: Vec<Duration>,
    /// Transactions (group commit only).
    commits: usize,
}

/// Per contender, across the timed batches: items, commits, latencies.
#[derive(Debug, Default, Clone)]
struct Tally {
    items: usize,
    commits: usize,
    latency: Samples,
}

async fn compare(
    ctx: &Ctx,
    kind: Kind,
    c: usize,
    setup: &Arc<runs::Setup>,
    limit: &Limit,
    peer: &mut dbos::Peer,
) -> anyhow::Result<Vec<Row>> {
    let mut who = vec![Who::Corral, Who::Single];
    if c > 1 {
        let committers = committers(kind);
        who.extend([
            Who::Group {
                window: WINDOW,
                committers,
            },
            Who::Group {
                window: 1,
                committers,
            },
        ]);
    }
    if peer.ready() {
        who.push(Who::Dbos);
    }
    // A failed DBOS batch does not stop the other contenders: its row says why instead.
    let mut peer_error: Option<String> = None;
    let mut one = async |w: Who, m: usize| -> anyhow::Result<Took> {
        match w {
            Who::Corral => Ok(Took {
                wall: runs::corral_batch(setup, c, m).await?,
                ..Took::default()
            }),
            Who::Single => limit.single(c, m).await,
            Who::Group { window, committers } => limit.group(c, window, committers, m).await,
            Who::Dbos => {
                if peer_error.is_some() {
                    return Ok(Took::default());
                }
                match peer.batch(c, m).await {
                    Ok(took) => Ok(took),
                    Err(e) => {
                        peer_error = Some(format!("{e:#}"));
                        Ok(Took::default())
                    }
                }
            }
        }
    };

    // Sizes: a warm-up batch of each gives its rate; a timed batch then takes about
    // `target` (the slow contenders get few items, the raw commits many).
    let target = ctx.pick(0.05, 0.2);
    let mut sizes = Vec::with_capacity(who.len());
    for &w in &who {
        let (probe, least) = w.probe_and_least(ctx, c);
        one(w, probe).await?;
        let took = one(w, probe).await?;
        let rate = probe as f64 / took.wall.as_secs_f64().max(1e-6);
        sizes.push(((rate * target) as usize).clamp(least, 200_000));
    }

    let rounds = ctx.pick(3, 10);
    let mut tallies = vec![Tally::default(); who.len()];
    let samples = side_by_side(who.len(), Plan::new(rounds, 1, 0), async |i| {
        let (w, m) = who
            .get(i)
            .zip(sizes.get(i))
            .ok_or_else(|| anyhow::anyhow!("no contender {i}"))?;
        let took = one(*w, *m).await?;
        if let Some(t) = tallies.get_mut(i) {
            t.items += m;
            t.commits += took.commits;
            if !took.latencies.is_empty() {
                t.latency.push_batch(&took.latencies);
            }
        }
        Ok(took.wall)
    })
    .await?;

    let at = |w: Who| who.iter().position(|&x| x == w);
    let rate = |w: Who| {
        let i = at(w)?;
        let d = samples.get(i)?.median()?;
        Some(*sizes.get(i)? as f64 / d.as_secs_f64())
    };
    let size = |w: Who| at(w).and_then(|i| sizes.get(i).copied());
    let per_commit = |w: Who| {
        let t = tallies.get(at(w)?)?;
        (t.commits > 0).then(|| t.items as f64 / t.commits as f64)
    };
    let corral = rate(Who::Corral);
    let db = kind.label();
    let base = json!({
        "database": db,
        "concurrency": c,
        "rounds": rounds,
        "corral": format!("Corral's runs/s at c{c}: metric runs' Corral side (Runner::work with max_concurrent_runs {c}; {c} clients each Runner::submit, Runner::subscribe, wait for the final event), one-step echo, measured in this metric's rounds side by side with the baselines"),
        "corral_runs_per_batch": size(Who::Corral),
        "durability": limit.durability,
        "row": format!("INSERT INTO limit_rows (payload) VALUES (...): an integer primary key and {} bytes of JSON text, native sqlx pool", PAYLOAD.len()),
        "dbos_peer": peer.describe(),
    });
    let with = |extra: Value| {
        let mut p = base.clone();
        if let (Some(p), Value::Object(extra)) = (p.as_object_mut(), extra) {
            p.extend(extra);
        }
        p
    };

    let mut rows = vec![Row::rate(
        if c == 1 {
            format!("runs_{db}_limit_c1")
        } else {
            format!("runs_{db}_limit")
        },
        corral,
        rate(Who::Single),
        with(json!({
            "baseline": format!("physical limit: single-row commits/s, {c} client(s), each one autocommitted INSERT and wait for its commit"),
            "rows_per_batch": size(Who::Single),
            "ratio_means": "single-row commits the database makes in the time of one Corral run",
        })),
    )];
    if c > 1 {
        let committers = committers(kind);
        let w = Who::Group {
            window: WINDOW,
            committers,
        };
        let w1 = Who::Group {
            window: 1,
            committers,
        };
        rows.push(Row::rate(
            format!("runs_{db}_limit_batched"),
            corral,
            rate(w),
            with(json!({
                "baseline": format!("physical limit with group commit: rows/s, {c} clients each keeping {WINDOW} rows in flight; {committers} committer(s) sharing one queue, each taking every pending row (up to {MAX_GROUP}) into one multi-row INSERT (one transaction) and answering each client after the commit"),
                "committers": committers,
                "rows_per_batch": size(w),
                "rows_per_commit_mean": per_commit(w).and_then(round2),
                "window_1_rows_per_s": rate(w1).and_then(round2),
                "window_1_rows_per_commit_mean": per_commit(w1).and_then(round2),
                "window_1": format!("the same with one row in flight per client (at most {c} rows per commit)"),
                "ratio_means": "rows a group-committing writer makes durable in the time of one Corral run",
            })),
        ));
    }
    if kind == Kind::Postgres {
        if let Some(error) = peer_error.or_else(|| peer.failure()) {
            rows.push(Row::missing(format!("runs_postgres_c{c}_dbos"), &error));
        } else if let Some(i) = at(Who::Dbos) {
            let lat = tallies.get(i).map(|t| &t.latency);
            rows.push(Row::rate(
                format!("runs_postgres_c{c}_dbos"),
                corral,
                rate(Who::Dbos),
                with(json!({
                    "baseline": format!("DBOS workflows/s: a @DBOS.workflow() calling one @DBOS.step() that returns its input, {c} Python client thread(s) each DBOS.start_workflow + handle.get_result, then the next (bench/peers/dbos_noop.py), on the same Postgres server, DBOS's default durability"),
                    "workflows_per_batch": size(Who::Dbos),
                    "dbos_p50_ms": lat.and_then(|l| ms(l.median())),
                    "dbos_p99_ms": lat.and_then(|l| ms(l.p99())),
                    "ratio_means": "above 1: DBOS completes more workflows per second than Corral completes runs",
                })),
            ));
        }
    }
    Ok(rows)
}

/// Runs `c` clients until `m` items are done, each claiming up to `step` at a time and
/// handing them to `work`. Returns the wall time, or the first error.
async fn clients<F, Fut>(c: usize, m: usize, step: usize, work: F) -> anyhow::Result<Duration>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..c {
        let (work, next) = (work.clone(), next.clone());
        tasks.spawn(async move {
            loop {
                let from = next.fetch_add(step, Ordering::Relaxed);
                let k = step.min(m.saturating_sub(from));
                if k == 0 {
                    return anyhow::Ok(());
                }
                work(k).await?;
            }
        });
    }
    drop(work);
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(started.elapsed())
}

fn round2(v: f64) -> Option<f64> {
    v.is_finite().then(|| (v * 100.0).round() / 100.0)
}

/// The limit rows' table on a fresh database, and a native pool on it.
#[derive(Clone)]
struct Limit {
    pool: Pool,
    /// SQLite has one writer: writes queue in process, as in Corral's store.
    write: Arc<tokio::sync::Mutex<()>>,
    /// The settings that make a commit durable, for `params`.
    durability: Value,
}

impl Limit {
    async fn open(db: &FreshDb) -> anyhow::Result<Limit> {
        // No ping on acquire (Corral's SQLite pool skips it too): a limit has no extra
        // round trips.
        let pool = raw::native_pool(db, false).await?;
        let durability = match &pool {
            Pool::Sqlite(p) => {
                sqlx::query(
                    "CREATE TABLE limit_rows (id INTEGER PRIMARY KEY, payload TEXT NOT NULL)",
                )
                .execute(p)
                .await?;
                json!(format!(
                    "SQLite: {} (as Corral's store), writes serialized in process",
                    raw::SQLITE_PRAGMAS
                ))
            }
            Pool::Postgres(p) => {
                sqlx::query(
                    "CREATE TABLE limit_rows (id BIGSERIAL PRIMARY KEY, payload TEXT NOT NULL)",
                )
                .execute(p)
                .await?;
                let mut settings = serde_json::Map::new();
                for name in [
                    "synchronous_commit",
                    "fsync",
                    "wal_sync_method",
                    "commit_delay",
                ] {
                    let v: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SHOW {name}")))
                        .fetch_one(p)
                        .await?;
                    settings.insert(name.into(), json!(v));
                }
                json!({ "postgres": "server defaults", "settings": settings })
            }
        };
        Ok(Limit {
            pool,
            write: Arc::new(tokio::sync::Mutex::new(())),
            durability,
        })
    }

    /// `n` rows in one statement: one transaction, committed before it returns.
    async fn insert(&self, n: usize) -> anyhow::Result<()> {
        let values: Vec<String> = (1..=n).map(|i| format!("(${i})")).collect();
        let sql = format!(
            "INSERT INTO limit_rows (payload) VALUES {}",
            values.join(", ")
        );
        match &self.pool {
            Pool::Sqlite(p) => {
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                for _ in 0..n {
                    q = q.bind(PAYLOAD);
                }
                let _w = self.write.lock().await;
                q.execute(p).await?;
            }
            Pool::Postgres(p) => {
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                for _ in 0..n {
                    q = q.bind(PAYLOAD);
                }
                q.execute(p).await?;
            }
        }
        Ok(())
    }

    /// `m` single-row commits by `c` clients.
    async fn single(&self, c: usize, m: usize) -> anyhow::Result<Took> {
        let limit = self.clone();
        let wall = clients(c, m, 1, move |_| {
            let limit = limit.clone();
            async move { limit.insert(1).await }
        })
        .await?;
        Ok(Took {
            wall,
            commits: m,
            ..Took::default()
        })
    }

    /// `m` rows by `c` clients through `committers` group committers sharing one queue,
    /// each client with `window` rows in flight. A committer takes every pending row (up
    /// to [`MAX_GROUP`]) and commits them in one statement while the next collects.
    async fn group(
        &self,
        c: usize,
        window: usize,
        committers: usize,
        m: usize,
    ) -> anyhow::Result<Took> {
        type Reply = oneshot::Sender<Result<(), String>>;
        let (tx, rx) = mpsc::channel::<Reply>(c * window);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let mut committing = tokio::task::JoinSet::new();
        for _ in 0..committers.max(1) {
            let (limit, rx) = (self.clone(), rx.clone());
            committing.spawn(async move {
                let mut commits = 0usize;
                let mut group = Vec::with_capacity(MAX_GROUP);
                loop {
                    {
                        let mut rx = rx.lock().await;
                        let Some(first) = rx.recv().await else {
                            return commits;
                        };
                        group.push(first);
                        while group.len() < MAX_GROUP {
                            match rx.try_recv() {
                                Ok(more) => group.push(more),
                                Err(_) => break,
                            }
                        }
                    }
                    let done = limit
                        .insert(group.len())
                        .await
                        .map_err(|e| format!("{e:#}"));
                    commits += 1;
                    for reply in group.drain(..) {
                        // A client that gave up is not waiting for the answer.
                        let _ = reply.send(done.clone());
                    }
                }
            });
        }
        // The clients hold the only senders: once they are done, the committers stop.
        let wall = clients(c, m, window, move |k| {
            let tx = tx.clone();
            async move {
                let mut waits = Vec::with_capacity(k);
                for _ in 0..k {
                    let (reply, wait) = oneshot::channel();
                    tx.send(reply)
                        .await
                        .map_err(|_| anyhow::anyhow!("the committers stopped"))?;
                    waits.push(wait);
                }
                for wait in waits {
                    wait.await?.map_err(anyhow::Error::msg)?;
                }
                Ok(())
            }
        })
        .await;
        let mut commits = 0;
        while let Some(done) = committing.join_next().await {
            commits += done?;
        }
        Ok(Took {
            wall: wall?,
            commits,
            ..Took::default()
        })
    }

    async fn close(&self) {
        match &self.pool {
            Pool::Sqlite(p) => p.close().await,
            Pool::Postgres(p) => p.close().await,
        }
    }
}
