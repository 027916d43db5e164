//! Raw sqlx: the database baseline of the run-layer metrics.
//!
//! The same tables as Corral (its own migrations create them), written through sqlx's
//! native SQLite and Postgres drivers (Corral goes through sqlx's `Any` driver) with the
//! same durability: SQLite with the PRAGMAs of Corral's pool (WAL, `synchronous =
//! NORMAL`, `busy_timeout`, foreign keys), 4 connections and writes serialized in
//! process, as Corral's store does; Postgres with the server's defaults and 16
//! connections. A run writes the same rows, in the same transactions, as Corral's runner
//! does for a run of the bench pipeline; the writer knows ids and sequence numbers, so
//! it needs no read-back, no `RETURNING`, no guard and no sub-select: the fewest
//! statements that leave the same rows.

use crate::db::{FreshDb, Kind};
use anyhow::{Context as _, Result};
use corral::store::{Event, Store, new_id, now_ms, order_stamp, rfc3339_now};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// The pipeline every run-layer metric runs: one step, `echo`.
pub const PIPELINE: &str = r#"name = "bench"
[[steps]]
name = "echo"
plugin = "echo.wasm"
"#;

/// The input of every run (as `call`'s small input).
pub const INPUT: &str = r#"{"text":"hello","n":[1,2,3],"nested":{"ok":true}}"#;

/// The bench pipeline, with `echo` from `plugins`.
pub fn pipeline(plugins: &std::path::Path) -> Result<corral::runs::pipeline::Pipeline> {
    Ok(corral::runs::pipeline::parse_toml(PIPELINE, plugins)?)
}

/// What one successful run of the bench pipeline writes, taken from a real run.
#[derive(Debug, Clone)]
pub struct Template {
    /// `runs.pipeline_name`.
    pub pipeline_name: String,
    /// `runs.spec`.
    pub spec: String,
    /// `runs.input`.
    pub input: String,
    /// The step's and the run's output.
    pub output: String,
    /// The step's name.
    pub step: String,
    /// The step's `plugin` column (its agent type).
    pub agent: String,
    /// Fuel of its one attempt.
    pub fuel: i64,
    /// The `queued` event's payload (written by `create_run`).
    pub queued: Value,
    /// The step's `running` event (attempt started).
    pub started: Value,
    /// The guest's own events during the attempt (progress and logs), each committed on
    /// its own: (type, payload).
    pub guest: Vec<(String, Value)>,
    /// The step's `complete` event.
    pub step_done: Value,
    /// The run's final `complete` event (its `run_id` is replaced per run).
    pub finished: Value,
}

impl Template {
    /// The writes of the finished, successful one-step run `run_id` in `store`.
    pub async fn from_run(store: &Store, run_id: &str) -> Result<Template> {
        let run = store
            .run(run_id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no run {run_id}"))?;
        anyhow::ensure!(
            run.status == "succeeded",
            "the template run {run_id} {}: {:?}",
            run.status,
            run.error_message
        );
        let steps = store.steps(run_id).await?;
        let [step] = steps.as_slice() else {
            anyhow::bail!("the template run has {} steps, not 1", steps.len());
        };
        let attempts = store.attempts(run_id).await?;
        anyhow::ensure!(
            attempts.len() == 1,
            "the template run made several attempts"
        );
        let events = store.events_after(run_id, 0, 10_000).await?;
        let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
        let bad = || anyhow::anyhow!("unexpected events {kinds:?}");
        let (first, rest) = events.split_first().ok_or_else(bad)?;
        let (finished, rest) = rest.split_last().ok_or_else(bad)?;
        let (started, rest) = rest.split_first().ok_or_else(bad)?;
        let (step_done, guest) = rest.split_last().ok_or_else(bad)?;
        anyhow::ensure!(
            first.kind == "queued"
                && started.kind == "running"
                && step_done.kind == "complete"
                && finished.is_final(),
            "unexpected events {kinds:?}"
        );
        Ok(Template {
            pipeline_name: run.pipeline_name.clone(),
            spec: run.spec.clone(),
            input: run.input.clone(),
            output: run
                .output
                .clone()
                .ok_or_else(|| anyhow::anyhow!("the template run has no output"))?,
            step: step.name.clone(),
            agent: step.plugin.clone(),
            fuel: step.fuel_used,
            queued: first.payload.clone(),
            started: started.payload.clone(),
            guest: guest
                .iter()
                .map(|e| (e.kind.clone(), e.payload.clone()))
                .collect(),
            step_done: step_done.payload.clone(),
            finished: finished.payload.clone(),
        })
    }

    /// Events one run writes.
    pub fn events(&self) -> usize {
        4 + self.guest.len()
    }

    /// Transactions one run commits: create, claim (one autocommitted statement), the
    /// step's start, the guest's events (in one), the step's and the run's end.
    pub fn transactions(&self) -> usize {
        4 + usize::from(!self.guest.is_empty())
    }

    /// The final event's payload for run `run_id`.
    pub fn finished_for(&self, run_id: &str) -> Value {
        let mut payload = self.finished.clone();
        if let Some(obj) = payload.as_object_mut() {
            obj.insert("run_id".into(), json!(run_id));
        }
        payload
    }
}

/// One bound value.
enum Arg<'a> {
    Text(&'a str),
    Int(i64),
}

/// One statement.
struct Stmt<'a> {
    sql: &'static str,
    args: Vec<Arg<'a>>,
}

fn stmt<'a>(sql: &'static str, args: Vec<Arg<'a>>) -> Stmt<'a> {
    Stmt { sql, args }
}

use Arg::{Int, Text};

/// A native sqlx pool.
#[derive(Clone)]
pub enum Pool {
    /// On SQLite.
    Sqlite(sqlx::SqlitePool),
    /// On Postgres.
    Postgres(sqlx::PgPool),
}

/// A native pool on `db` with the sizes of Corral's store and its SQLite PRAGMAs;
/// `ping`: whether sqlx pings a connection on every acquire (Corral's SQLite pool
/// does not).
pub async fn native_pool(db: &FreshDb, ping: bool) -> Result<Pool> {
    Ok(match db.kind {
        Kind::Sqlite => Pool::Sqlite(
            sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(4)
                .test_before_acquire(ping)
                .acquire_timeout(Duration::from_secs(30))
                .after_connect(|conn, _meta| {
                    Box::pin(async move {
                        use sqlx::Executor;
                        conn.execute(SQLITE_PRAGMAS).await?;
                        Ok(())
                    })
                })
                .connect(&db.url)
                .await?,
        ),
        Kind::Postgres => Pool::Postgres(
            sqlx::postgres::PgPoolOptions::new()
                .max_connections(16)
                .test_before_acquire(ping)
                .acquire_timeout(Duration::from_secs(30))
                .connect(&db.url)
                .await?,
        ),
    })
}

/// A run the raw writer is in the middle of.
#[derive(Debug, Clone)]
pub struct RawRun {
    /// Its id.
    pub id: String,
    /// The seq its next event gets.
    pub next_seq: i64,
}

/// The raw writer on one database (clones share its pool).
#[derive(Clone)]
pub struct RawDb {
    pool: Pool,
    /// Its one tenant.
    pub tenant_id: String,
    owner: String,
    /// SQLite has one writer: as in Corral's store, writes queue in process rather than
    /// retry on `SQLITE_BUSY`.
    write: Arc<tokio::sync::Mutex<()>>,
}

/// The PRAGMAs Corral's SQLite pool runs on every connection (host/src/store/mod.rs).
pub const SQLITE_PRAGMAS: &str = "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 10000; \
                                  PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
                                  PRAGMA temp_store = MEMORY;";

impl RawDb {
    /// Opens `db`: Corral's migrations create the tables, then a native pool with the
    /// same settings as Corral's, and a tenant.
    pub async fn open(db: &FreshDb) -> Result<RawDb> {
        // Only for the schema: the same tables and indexes as Corral's.
        drop(Store::open(&db.url).await?);
        // The same ping policy as Corral's store: none on SQLite, sqlx's check on Postgres.
        let pool = native_pool(db, matches!(db.kind, Kind::Postgres)).await?;
        let raw = RawDb {
            pool,
            tenant_id: new_id("ten"),
            owner: new_id("host"),
            write: Arc::new(tokio::sync::Mutex::new(())),
        };
        raw.transaction(&[stmt(
            "INSERT INTO tenants (id, name, created_at) VALUES ($1, 'bench', $2)",
            vec![Text(&raw.tenant_id), Int(now_ms())],
        )])
        .await
        .context("creating the tenant")?;
        Ok(raw)
    }

    /// Runs `stmts` in one transaction (one statement alone: autocommitted).
    async fn transaction(&self, stmts: &[Stmt<'_>]) -> Result<()> {
        macro_rules! bound {
            ($s:expr) => {{
                let mut q = sqlx::query($s.sql);
                for a in &$s.args {
                    q = match a {
                        Text(t) => q.bind(*t),
                        Int(i) => q.bind(*i),
                    };
                }
                q
            }};
        }
        macro_rules! run {
            ($pool:expr) => {{
                if let [one] = stmts {
                    bound!(one).execute($pool).await?;
                } else {
                    let mut tx = $pool.begin().await?;
                    for s in stmts {
                        bound!(s).execute(&mut *tx).await?;
                    }
                    tx.commit().await?;
                }
            }};
        }
        match &self.pool {
            Pool::Sqlite(p) => {
                let _w = self.write.lock().await;
                run!(p)
            }
            // No in-process write queue on Postgres (as in Corral's store).
            Pool::Postgres(p) => run!(p),
        }
        Ok(())
    }

    /// The run's `next_seq` past the event being written.
    fn bump<'a>(&'a self, run: &'a RawRun) -> Stmt<'a> {
        stmt(
            "UPDATE runs SET next_seq = $2 WHERE id = $1",
            vec![Text(&run.id), Int(run.next_seq + 1)],
        )
    }

    /// The insert of the run's next event.
    fn insert_event<'a>(
        &'a self,
        run: &'a RawRun,
        kind: &'a str,
        ts: &'a str,
        payload: &'a str,
    ) -> Stmt<'a> {
        stmt(
            "INSERT INTO events (run_id, seq, tenant_id, type, ts, payload) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            vec![
                Text(&run.id),
                Int(run.next_seq),
                Text(&self.tenant_id),
                Text(kind),
                Text(ts),
                Text(payload),
            ],
        )
    }

    /// Creates a queued run with its step and `queued` event (one transaction).
    pub async fn create_run(&self, t: &Template) -> Result<RawRun> {
        let id = new_id("run");
        let now = now_ms();
        let ts = rfc3339_now();
        let payload = t.queued.to_string();
        self.transaction(&[
            stmt(
                "INSERT INTO runs (id, tenant_id, pipeline_name, spec, input, status, next_seq, \
                 queue_seq, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, 'queued', 2, $6, $7, $7)",
                vec![
                    Text(&id),
                    Text(&self.tenant_id),
                    Text(&t.pipeline_name),
                    Text(&t.spec),
                    Text(&t.input),
                    Int(order_stamp()),
                    Int(now),
                ],
            ),
            stmt(
                "INSERT INTO steps (run_id, idx, name, plugin, status) \
                 VALUES ($1, 0, $2, $3, 'queued')",
                vec![Text(&id), Text(&t.step), Text(&t.agent)],
            ),
            stmt(
                "INSERT INTO events (run_id, seq, tenant_id, type, ts, payload) \
                 VALUES ($1, 1, $2, 'queued', $3, $4)",
                vec![Text(&id), Text(&self.tenant_id), Text(&ts), Text(&payload)],
            ),
        ])
        .await?;
        Ok(RawRun { id, next_seq: 2 })
    }

    /// Claims the run (one autocommitted update).
    pub async fn claim(&self, run: &RawRun) -> Result<()> {
        let now = now_ms();
        self.transaction(&[stmt(
            "UPDATE runs SET status = 'running', owner = $2, lease_until = $3, \
             started_at = $4, updated_at = $4, claim_seq = $5 WHERE id = $1",
            vec![
                Text(&run.id),
                Text(&self.owner),
                Int(now + 15_000),
                Int(now),
                Int(order_stamp()),
            ],
        )])
        .await
    }

    /// The step's attempt starts, with its `running` event.
    pub async fn step_start(&self, run: &mut RawRun, t: &Template) -> Result<()> {
        let now = now_ms();
        let ts = rfc3339_now();
        let payload = t.started.to_string();
        {
            // The status change and the seq bump touch the same row: one statement.
            self.transaction(&[
                stmt(
                    "UPDATE runs SET status = 'running', updated_at = $2, next_seq = $3 \
                     WHERE id = $1",
                    vec![Text(&run.id), Int(now), Int(run.next_seq + 1)],
                ),
                stmt(
                    "INSERT INTO attempts (run_id, step_idx, generation, attempt, status, \
                     started_at) VALUES ($1, 0, 0, 1, 'running', $2)",
                    vec![Text(&run.id), Int(now)],
                ),
                stmt(
                    "UPDATE steps SET status = 'running', attempts = 1, started_at = $2 \
                     WHERE run_id = $1 AND idx = 0",
                    vec![Text(&run.id), Int(now)],
                ),
                self.insert_event(run, "running", &ts, &payload),
            ])
            .await?;
        }
        run.next_seq += 1;
        Ok(())
    }

    /// The guest's events (what its committer has queued up): one transaction.
    pub async fn guest_events(&self, run: &mut RawRun, t: &Template) -> Result<()> {
        if t.guest.is_empty() {
            return Ok(());
        }
        let ts = rfc3339_now();
        let payloads: Vec<String> = t.guest.iter().map(|(_, p)| p.to_string()).collect();
        let n = i64::try_from(t.guest.len()).unwrap_or(i64::MAX);
        // The run as each event finds it; the bump moves it past the last one.
        let at: Vec<RawRun> = (0..n)
            .map(|i| RawRun {
                id: run.id.clone(),
                next_seq: run.next_seq + i,
            })
            .collect();
        let mut stmts = Vec::with_capacity(at.len() + 1);
        stmts.extend(at.last().map(|last| self.bump(last)));
        for ((r, (kind, _)), payload) in at.iter().zip(&t.guest).zip(&payloads) {
            stmts.push(self.insert_event(r, kind, &ts, payload));
        }
        self.transaction(&stmts).await?;
        run.next_seq += n;
        Ok(())
    }

    /// One event on its own (a guest's log or progress line).
    pub async fn append(&self, run: &mut RawRun, kind: &str, payload: &str) -> Result<i64> {
        let ts = rfc3339_now();
        self.transaction(&[self.bump(run), self.insert_event(run, kind, &ts, payload)])
            .await?;
        run.next_seq += 1;
        Ok(run.next_seq - 1)
    }

    /// The run ends with its output and its final `complete` event.
    pub async fn finish(&self, run: &mut RawRun, output: &str, payload: &Value) -> Result<i64> {
        let now = now_ms();
        let ts = rfc3339_now();
        let payload = payload.to_string();
        {
            // The end and the seq bump touch the same row: one statement.
            self.transaction(&[
                stmt(
                    "UPDATE runs SET status = 'succeeded', output = $2, finished_at = $3, \
                     updated_at = $3, owner = NULL, lease_until = NULL, next_seq = $4 \
                     WHERE id = $1",
                    vec![Text(&run.id), Text(output), Int(now), Int(run.next_seq + 1)],
                ),
                self.insert_event(run, "complete", &ts, &payload),
            ])
            .await?;
        }
        run.next_seq += 1;
        Ok(run.next_seq - 1)
    }

    /// The attempt's end with its fuel, the step's `complete`, the run's end with its
    /// output and its final `complete`: one transaction, as the runner commits them.
    pub async fn end_run(&self, run: &mut RawRun, t: &Template) -> Result<()> {
        let now = now_ms();
        let ts = rfc3339_now();
        let step_done = t.step_done.to_string();
        let finished = t.finished_for(&run.id).to_string();
        let second = RawRun {
            id: run.id.clone(),
            next_seq: run.next_seq + 1,
        };
        self.transaction(&[
            stmt(
                "UPDATE steps SET fuel_used = fuel_used + $2, status = 'succeeded', \
                 output = $3, finished_at = $4 WHERE run_id = $1 AND idx = 0",
                vec![Text(&run.id), Int(t.fuel), Text(&t.output), Int(now)],
            ),
            stmt(
                "UPDATE tenants SET fuel_used = fuel_used + $2 WHERE id = $1",
                vec![Text(&self.tenant_id), Int(t.fuel)],
            ),
            stmt(
                "UPDATE attempts SET status = 'succeeded', fuel_used = $2, finished_at = $3 \
                 WHERE run_id = $1 AND step_idx = 0 AND generation = 0 AND attempt = 1",
                vec![Text(&run.id), Int(t.fuel), Int(now)],
            ),
            // The end, the fuel and the seq bump touch the same row: one statement.
            stmt(
                "UPDATE runs SET status = 'succeeded', output = $2, finished_at = $3, \
                 updated_at = $3, owner = NULL, lease_until = NULL, next_seq = $4, \
                 fuel_used = fuel_used + $5 WHERE id = $1",
                vec![
                    Text(&run.id),
                    Text(&t.output),
                    Int(now),
                    Int(run.next_seq + 2),
                    Int(t.fuel),
                ],
            ),
            self.insert_event(run, "complete", &ts, &step_done),
            self.insert_event(&second, "complete", &ts, &finished),
        ])
        .await?;
        run.next_seq += 2;
        Ok(())
    }

    /// Before the plugin runs: create, claim, start the step.
    pub async fn run_before(&self, t: &Template) -> Result<RawRun> {
        let mut run = self.create_run(t).await?;
        self.claim(&run).await?;
        self.step_start(&mut run, t).await?;
        Ok(run)
    }

    /// After the plugin ran: its events, then the step's and the run's end.
    pub async fn run_after(&self, run: &mut RawRun, t: &Template) -> Result<()> {
        self.guest_events(run, t).await?;
        self.end_run(run, t).await
    }

    /// Every write of one run, in order.
    pub async fn whole_run(&self, t: &Template) -> Result<String> {
        let mut run = self.run_before(t).await?;
        self.run_after(&mut run, t).await?;
        Ok(run.id)
    }

    /// Closes the pool.
    pub async fn close(&self) {
        match &self.pool {
            Pool::Sqlite(p) => p.close().await,
            Pool::Postgres(p) => p.close().await,
        }
    }
}

/// Statements per run: Corral's (counted from host/src/store for the bench pipeline; a
/// multi-row insert is one) and the raw writer's, for `params`.
pub fn statements(t: &Template) -> (usize, usize) {
    let guest = usize::from(!t.guest.is_empty());
    // create_run 3; claim 1 (RETURNING the run); step start: status guard, attempt insert,
    // step update, seq bump, event insert (5); guest events: bump + one insert (2); the
    // end: fuel 3, attempt 1, step 1, run end 1, skip 1, bump 1, events insert 1 (9).
    let corral = 3 + 1 + 5 + 2 * guest + 9;
    // create 3; claim 1; step start 4; guest events: bump + one insert each; the end 6.
    let raw = 3 + 1 + 4 + guest * (1 + t.guest.len()) + 6;
    (corral, raw)
}

/// A run's rows without ids and clock times, to check that two writers wrote the same.
pub async fn snapshot(store: &Store, run_id: &str) -> Result<Value> {
    let run = store
        .run(run_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no run {run_id}"))?;
    let steps = store.steps(run_id).await?;
    let attempts = store.attempts(run_id).await?;
    let events = store.events_after(run_id, 0, 10_000).await?;
    let normalize = |e: &Event| {
        let payload = e.payload.to_string().replace(run_id, "RUN");
        json!({"seq": e.seq, "type": e.kind, "payload": payload})
    };
    Ok(json!({
        "run": {
            "pipeline_id": run.pipeline_id,
            "pipeline_name": run.pipeline_name,
            "spec": run.spec,
            "input": run.input,
            "output": run.output,
            "status": run.status,
            "error_code": run.error_code,
            "error_message": run.error_message,
            "fuel_used": run.fuel_used,
            "next_seq": run.next_seq,
            "cancel_requested": run.cancel_requested,
            "owner": run.owner,
            "claimed": run.claim_seq.is_some(),
            "started": run.started_at.is_some(),
            "finished": run.finished_at.is_some(),
        },
        "steps": steps.iter().map(|s| json!({
            "idx": s.idx, "name": s.name, "plugin": s.plugin, "status": s.status,
            "attempts": s.attempts, "loops": s.loops, "output": s.output,
            "fuel_used": s.fuel_used, "error_code": s.error_code,
            "error_message": s.error_message, "started": s.started_at.is_some(),
            "finished": s.finished_at.is_some(),
        })).collect::<Vec<_>>(),
        "attempts": attempts.iter().map(|a| json!({
            "step_idx": a.step_idx, "generation": a.generation, "attempt": a.attempt,
            "status": a.status, "fuel_used": a.fuel_used, "error_code": a.error_code,
            "error_message": a.error_message, "finished": a.finished_at.is_some(),
        })).collect::<Vec<_>>(),
        "events": events.iter().map(normalize).collect::<Vec<_>>(),
    }))
}
