//! Persistence: one set of queries for SQLite (the embedded default) and Postgres, through
//! sqlx's `Any` driver. Every state transition and the event it produces commit in one
//! transaction; guarded updates (`WHERE status IN (...)`) make "exactly one terminal
//! state" a property of the database, not of the caller's care.

#[macro_use]
mod records;
mod registry;
mod schedules;
mod secrets;
mod sessions;
pub(crate) mod watch;
mod webhooks;
mod writer;
pub use schedules::{FireRecord, NewSchedule, ScheduleRecord};
pub use secrets::SecretInfo;
pub use sessions::{MAX_SESSIONS_PER_TOKEN, SessionRecord};
pub use watch::SESSION_KEY;
pub use webhooks::{DueBatch, NewWebhook, WebhookRecord};

pub use registry::*;

pub use records::*;

use serde_json::Value;
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Row};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Store errors. Database failures are reported without their SQL.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or refused the operation.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Applying migrations failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value could not be decoded.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// Secrets cannot be set or read: the server has no key to seal them with.
    #[error(
        "secrets are disabled: this server has no secrets key; set {} (base64 of 32 random \
         bytes) or `secrets_key` in the config file",
        crate::secrets::KEY_ENV
    )]
    SecretsDisabled,
    /// The URL names no supported database.
    #[error("unsupported database URL `{0}` (use sqlite://PATH or postgres://...)")]
    UnsupportedUrl(String),
}

impl StoreError {
    /// Whether the database refused text it cannot store: a NUL character, or bytes that
    /// are not UTF-8 (Postgres SQLSTATE 22021 and 22P05). That is the client's input, never
    /// a server fault.
    pub fn is_unstorable_text(&self) -> bool {
        let StoreError::Database(e) = self else {
            return false;
        };
        if let Some(db) = e.as_database_error()
            && db
                .code()
                .is_some_and(|c| matches!(c.as_ref(), "22021" | "22P05"))
        {
            return true;
        }
        let text = e.to_string();
        text.contains("invalid byte sequence for encoding")
            || text.contains("unsupported Unicode escape sequence")
    }
}

/// A result with a [`StoreError`].
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Which database is behind the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite (WAL mode, one file).
    Sqlite,
    /// Postgres.
    Postgres,
}

/// The store: a connection pool and the queries.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// SQLite has one writer: serializing writes in-process avoids busy retries.
    write_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// Group commit of the run lifecycle's writes (takes `write_lock` for each group).
    writer: writer::Writer,
    /// Seals and opens tenant secrets; `None` when no key is configured.
    sealer: Option<std::sync::Arc<crate::secrets::Sealer>>,
    /// Where the database is, for the one connection that watches it for other
    /// processes' commits (`events::watch`).
    url: watch::DbUrl,
}

/// The scheduler's candidates, best first: queued runs of the tenant with the fewest runs
/// executing, then of the one that least recently had a run claimed, each tenant's oldest
/// first. A tenant's k-th queued run counts as if k - 1 more of its runs were executing, so
/// claiming several at once takes them round-robin across tenants, as claiming one at a
/// time would. Its per-tenant subqueries are index lookups (migration 0006), never a scan
/// of history. `$5`: how many.
const CLAIM_CANDIDATES: &str = "SELECT c.id FROM (SELECT q.id AS id, q.queue_seq AS queue_seq, \
     (SELECT COUNT(*) FROM runs r WHERE r.tenant_id = q.tenant_id \
      AND r.status IN ('running', 'waiting')) \
     + ROW_NUMBER() OVER (PARTITION BY q.tenant_id ORDER BY q.queue_seq, q.id) AS load, \
     (SELECT COALESCE(MAX(r.claim_seq), 0) FROM runs r WHERE r.tenant_id = q.tenant_id) \
     AS last_claim \
     FROM runs q WHERE q.status = 'queued' AND q.cancel_requested = 0) c \
     ORDER BY c.load, c.last_claim, c.queue_seq, c.id LIMIT $5";

/// Claims the queued runs `which` selects (`$1` owner, `$2` lease end, `$3` now, `$4`
/// claim stamp, `$5` for `which`), guarded on each still being queued with no cancel
/// request, and returns them as claimed.
fn claim_sql(which: &str) -> String {
    format!(
        "UPDATE runs SET status = 'running', owner = $1, lease_until = $2, \
         started_at = COALESCE(started_at, $3), updated_at = $3, claim_seq = $4 \
         WHERE id IN ({which}) AND status = 'queued' AND cancel_requested = 0 RETURNING {}",
        run_columns!()
    )
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A strictly increasing stamp for ordering (unix microseconds, bumped past the previous
/// stamp this process handed out), so two runs queued or claimed within one clock tick still
/// have a defined order. Across processes the clocks order them, which is all "first" means
/// there.
pub fn order_stamp() -> i64 {
    use std::sync::atomic::{AtomicI64, Ordering};
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(last.saturating_add(1));
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

/// RFC 3339 timestamp with milliseconds, UTC.
pub fn rfc3339_now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// A random id with a readable prefix: 128 random bits, hex.
pub fn new_id(prefix: &str) -> String {
    let bits: u128 = rand::random();
    format!("{prefix}_{bits:032x}")
}

/// `sqlite://PATH` as `--help` documents it: sqlx opens such a URL read-write but will
/// not create the file ("code: 14"), so a URL without its own `mode=` gets `mode=rwc`.
fn sqlite_create_if_missing(url: &str, backend: Backend) -> String {
    if backend != Backend::Sqlite || url.contains("mode=") || url.contains(":memory:") {
        return url.to_string();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}mode=rwc")
}

impl Store {
    /// Opens (creating if needed) the SQLite database in `dir` (`corral.db`).
    pub async fn open_in_dir(dir: &Path) -> Result<Store> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Corrupt(format!("cannot create data dir {}: {e}", dir.display()))
        })?;
        let url = format!("sqlite://{}?mode=rwc", dir.join("corral.db").display());
        let store = Store::open(&url).await?;
        if store.sealer.is_some() {
            return Ok(store);
        }
        // Embedded default: a key kept beside the database, created on first use.
        let sealer = crate::secrets::Sealer::from_key_file(&dir.join("secrets.key"))
            .map_err(StoreError::Corrupt)?;
        Ok(store.with_sealer(sealer))
    }

    /// Opens a database by URL (`sqlite://PATH` or `postgres://...`) and applies
    /// migrations. A SQLite file that does not exist yet is created (unless the URL names
    /// its own `mode=`).
    pub async fn open(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl(redact_url(url)));
        };
        let options = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 4 } else { 16 })
            .acquire_timeout(Duration::from_secs(30));
        let options = if backend == Backend::Sqlite {
            // A local file has no connection to lose: skip the ping sqlx makes on every
            // acquire (a round trip to the connection's worker thread; see BENCHMARKS.md).
            // `temp_store = MEMORY`: a group commit's per-run savepoints keep the pages they
            // may roll back in memory instead of a temporary file (nothing durable is
            // there; the WAL and `synchronous` are unchanged).
            options
                .test_before_acquire(false)
                .after_connect(|conn, _meta| {
                    Box::pin(async move {
                        use sqlx::Executor;
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 10000; \
                         PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
                         PRAGMA temp_store = MEMORY;",
                        )
                        .await?;
                        Ok(())
                    })
                })
        } else {
            options
        };
        let url = sqlite_create_if_missing(url, backend);
        let pool = options.connect(&url).await?;
        let url = watch::DbUrl::new(&url);
        match backend {
            Backend::Sqlite => sqlx::migrate!("../migrations/sqlite").run(&pool).await?,
            Backend::Postgres => sqlx::migrate!("../migrations/postgres").run(&pool).await?,
        }
        let sealer = crate::secrets::Sealer::from_env()
            .map_err(StoreError::Corrupt)?
            .map(std::sync::Arc::new);
        let write_lock = std::sync::Arc::new(tokio::sync::Mutex::new(()));
        Ok(Store {
            writer: writer::Writer::new(pool.clone(), backend, write_lock.clone()),
            pool,
            backend,
            write_lock,
            sealer,
            url,
        })
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn write_guard(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match self.backend {
            Backend::Sqlite => Some(self.write_lock.lock().await),
            Backend::Postgres => None,
        }
    }

    // ---- tenants ----

    /// The tenant named `name`, created if missing.
    pub async fn ensure_tenant(&self, name: &str) -> Result<String> {
        if let Some(row) = sqlx::query("SELECT id FROM tenants WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
        {
            return Ok(row.try_get("id")?);
        }
        let _w = self.write_guard().await;
        let id = new_id("ten");
        sqlx::query(
            "INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(&id)
        .bind(name)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        let row = sqlx::query("SELECT id FROM tenants WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("id")?)
    }

    /// Total fuel a tenant's runs have used.
    pub async fn tenant_fuel(&self, tenant_id: &str) -> Result<i64> {
        let row = sqlx::query("SELECT fuel_used FROM tenants WHERE id = $1")
            .bind(tenant_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("fuel_used")?)
    }

    // ---- runs ----

    /// Creates a queued run with its steps and its `queued` event (seq 1), atomically.
    pub async fn create_run(&self, new: &NewRun) -> Result<(RunRecord, Event)> {
        self.create_run_capped(new, None)
            .await?
            .ok_or_else(|| StoreError::Corrupt("an uncapped run was refused".into()))
    }

    /// Like [`Store::create_run`], but only while the tenant has fewer than `max_queued`
    /// queued runs; `None` (nothing written) when it has that many already. The count and
    /// the insert are one statement, and on Postgres the tenant's row is locked first, so
    /// concurrent submissions (from any number of hosts) never overshoot the cap: under
    /// READ COMMITTED two transactions would otherwise both count `cap - 1` and both insert.
    pub async fn create_run_capped(
        &self,
        new: &NewRun,
        max_queued: Option<i64>,
    ) -> Result<Option<(RunRecord, Event)>> {
        self.create_run_linked(new, max_queued, &[]).await
    }

    /// [`Store::create_run_capped`] that also records the registered plugins the run uses
    /// (`plugin_ids`, see [`Store::link_run_plugins`]), in the same transaction. Returns once
    /// the run is committed (it is then never lost); the record is built from what was
    /// written, not read back.
    pub async fn create_run_linked(
        &self,
        new: &NewRun,
        max_queued: Option<i64>,
        plugin_ids: &[String],
    ) -> Result<Option<(RunRecord, Event)>> {
        self.insert_run(
            new_id("run"),
            new,
            max_queued,
            plugin_ids,
            None,
            Vec::new(),
            Vec::new(),
        )
        .await
    }

    /// [`Store::create_run_linked`] for the run `id`, with `before` and `after` in the same
    /// transaction (around the run's own statements; a guarded one that matches no row
    /// refuses the run too). A schedule's fire claims its slot this way.
    pub(crate) async fn create_run_with(
        &self,
        id: String,
        new: &NewRun,
        max_queued: Option<i64>,
        plugin_ids: &[String],
        before: Vec<writer::Stmt>,
        after: Vec<writer::Stmt>,
    ) -> Result<Option<(RunRecord, Event)>> {
        self.insert_run(id, new, max_queued, plugin_ids, None, before, after)
            .await
    }

    /// Creates a run already claimed by `owner` (status `running`, under a lease of
    /// `lease`), for work this host does itself at once and no scheduler may take: an MCP
    /// tool call recorded as a short run. If the host dies, recovery ends it like any
    /// other run whose host died.
    pub async fn create_run_claimed(
        &self,
        new: &NewRun,
        plugin_ids: &[String],
        owner: &str,
        lease: Duration,
    ) -> Result<(RunRecord, Event)> {
        self.insert_run(
            new_id("run"),
            new,
            None,
            plugin_ids,
            Some((owner, lease)),
            Vec::new(),
            Vec::new(),
        )
        .await?
        .ok_or_else(|| StoreError::Corrupt("an uncapped run was refused".into()))
    }

    /// The run `id`'s insert: its row (claimed by `claim`'s owner, or queued), steps,
    /// `queued` event and plugin links, with `before` and `after` around them, as one
    /// transaction.
    #[allow(clippy::too_many_arguments)]
    async fn insert_run(
        &self,
        id: String,
        new: &NewRun,
        max_queued: Option<i64>,
        plugin_ids: &[String],
        claim: Option<(&str, Duration)>,
        before: Vec<writer::Stmt>,
        after: Vec<writer::Stmt>,
    ) -> Result<Option<(RunRecord, Event)>> {
        use writer::Arg::{Int, OptInt, OptText, Text};
        let now = now_ms();
        let lease_until = claim.map(|(_, lease)| {
            now.saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX))
        });
        let claim_seq = claim.map(|_| order_stamp());
        let mut stmts = Vec::with_capacity(5 + before.len() + after.len());
        if max_queued.is_some() && self.backend == Backend::Postgres {
            // Serializes this tenant's capped submissions; each statement after it sees
            // what the previous holder committed. (Under READ COMMITTED two transactions
            // would otherwise both count `cap - 1` and both insert.) SQLite takes its write
            // lock when the insert starts, so its count cannot go stale before the insert.
            stmts.push(writer::Stmt::new(
                "SELECT id FROM tenants WHERE id = $1 FOR NO KEY UPDATE",
                vec![Text(new.tenant_id.clone())],
            ));
        }
        stmts.extend(before);
        // The count and the insert are one statement; the `queued` event is seq 1.
        stmts.push(
            writer::Stmt::new(
                "INSERT INTO runs (id, tenant_id, pipeline_id, pipeline_name, spec, input, \
                 status, next_seq, queue_seq, created_at, updated_at, owner, lease_until, \
                 started_at, claim_seq) \
                 SELECT $1, $2, $3, $4, $5, $6, $10, 2, $7, $8, $8, $11, $12, $13, $14 \
                 WHERE $9 < 0 OR (SELECT COUNT(*) FROM runs \
                                  WHERE tenant_id = $2 AND status = 'queued') < $9",
                vec![
                    Text(id.clone()),
                    Text(new.tenant_id.clone()),
                    OptText(new.pipeline_id.clone()),
                    Text(new.pipeline_name.clone()),
                    Text(new.spec.clone()),
                    Text(new.input.clone()),
                    Int(order_stamp()),
                    Int(now),
                    Int(max_queued.map_or(-1, |n| n.max(0))),
                    Text(if claim.is_some() { "running" } else { "queued" }.into()),
                    OptText(claim.map(|(owner, _)| owner.to_string())),
                    OptInt(lease_until),
                    OptInt(claim.map(|_| now)),
                    OptInt(claim_seq),
                ],
            )
            .guarded(),
        );
        if !new.steps.is_empty() {
            let mut sql =
                String::from("INSERT INTO steps (run_id, idx, name, plugin, status) VALUES ");
            let mut args = vec![Text(id.clone())];
            for (idx, (name, plugin)) in new.steps.iter().enumerate() {
                let n = args.len();
                if idx > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!(
                    "($1, ${}, ${}, ${}, 'queued')",
                    n + 1,
                    n + 2,
                    n + 3
                ));
                args.push(Int(i64::try_from(idx).unwrap_or(i64::MAX)));
                args.push(Text(name.clone()));
                args.push(Text(plugin.clone()));
            }
            stmts.push(writer::Stmt::new(sql, args));
        }
        let steps: Vec<Value> = new
            .steps
            .iter()
            .map(|(name, plugin)| serde_json::json!({"step_id": name, "agent_type": plugin}))
            .collect();
        let payload = serde_json::json!({
            "pipeline": new.pipeline_name,
            "steps": steps,
        });
        let ts = rfc3339_now();
        let (payload, payload_text) = bounded_payload(&payload);
        stmts.push(writer::Stmt::new(
            "INSERT INTO events (run_id, seq, tenant_id, type, ts, payload) \
             VALUES ($1, 1, $2, 'queued', $3, $4)",
            vec![
                Text(id.clone()),
                Text(new.tenant_id.clone()),
                Text(ts.clone()),
                Text(payload_text),
            ],
        ));
        if let Some(link) = link_stmt(&id, plugin_ids) {
            stmts.push(link);
        }
        stmts.extend(after);
        if self.writer.write(stmts).await?.is_none() {
            return Ok(None);
        }
        let run = RunRecord {
            id: id.clone(),
            tenant_id: new.tenant_id.clone(),
            pipeline_id: new.pipeline_id.clone(),
            pipeline_name: new.pipeline_name.clone(),
            spec: new.spec.clone(),
            input: new.input.clone(),
            output: None,
            status: if claim.is_some() { "running" } else { "queued" }.into(),
            error_code: None,
            error_message: None,
            fuel_used: 0,
            tokens_used: 0,
            cost_micros: 0,
            next_seq: 2,
            last_seq: 1,
            cancel_requested: false,
            owner: claim.map(|(owner, _)| owner.to_string()),
            lease_until,
            claim_seq,
            restarts: 0,
            created_at: now,
            started_at: claim.map(|_| now),
            finished_at: None,
            pause_requested: false,
            pause_now: false,
            paused_at: None,
            active_ms: 0,
            schedule_id: None,
            scheduled_for: None,
        };
        let event = Event {
            kind: "queued".into(),
            run_id: id,
            seq: 1,
            ts,
            payload: payload.into_owned(),
            tenant_id: new.tenant_id.clone(),
        };
        Ok(Some((run, event)))
    }

    /// A run by id (any tenant: callers that serve tenants use [`Store::run_for_tenant`]).
    pub async fn run(&self, id: &str) -> Result<Option<RunRecord>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            run_columns!(),
            " FROM runs WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| RunRecord::from_row(&r)).transpose()
    }

    /// A run by id, only if it belongs to `tenant_id` (otherwise: not found).
    pub async fn run_for_tenant(&self, tenant_id: &str, id: &str) -> Result<Option<RunRecord>> {
        Ok(self.run(id).await?.filter(|r| r.tenant_id == tenant_id))
    }

    /// Runs of a tenant, newest first; `before` is the `created_at`/id cursor of the
    /// last page's final run.
    pub async fn list_runs(
        &self,
        tenant_id: &str,
        status: Option<&str>,
        limit: i64,
        before: Option<(i64, String)>,
    ) -> Result<Vec<RunRecord>> {
        let (before_ts, before_id) = before.unwrap_or((i64::MAX, String::new()));
        let rows = sqlx::query(concat!(
            "SELECT ",
            run_columns!(),
            " FROM runs WHERE tenant_id = $1 AND ($2 = '' OR status = $2) \
             AND (created_at < $3 OR (created_at = $3 AND id < $4)) \
             ORDER BY created_at DESC, id DESC LIMIT $5"
        ))
        .bind(tenant_id)
        .bind(status.unwrap_or(""))
        .bind(before_ts)
        .bind(if before_id.is_empty() {
            "~"
        } else {
            before_id.as_str()
        })
        .bind(limit.clamp(1, 1000))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(RunRecord::from_row).collect()
    }

    /// The steps of a run, in order.
    pub async fn steps(&self, run_id: &str) -> Result<Vec<StepRecord>> {
        let rows = sqlx::query(
            "SELECT run_id, idx, name, plugin, status, attempts, loops, restarts, attempt_base, \
             loop_base, feedback, output, fuel_used, tokens_used, cost_micros, error_code, \
             error_message, started_at, finished_at FROM steps WHERE run_id = $1 ORDER BY idx",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(StepRecord::from_row).collect()
    }

    /// Every attempt of every step of a run.
    pub async fn attempts(&self, run_id: &str) -> Result<Vec<AttemptRecord>> {
        let rows = sqlx::query(
            "SELECT run_id, step_idx, generation, attempt, status, fuel_used, error_code, \
             error_message, started_at, finished_at, feedback, output FROM attempts \
             WHERE run_id = $1 ORDER BY step_idx, generation, attempt",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(AttemptRecord::from_row).collect()
    }

    /// Claims the next queued run for `owner`: from the tenant with the fewest runs executing,
    /// then the one that least recently started a run (round-robin across tenants), its
    /// oldest queued run (FIFO within a tenant). `None` when nothing is queued.
    pub async fn claim_next_run(&self, owner: &str, lease: Duration) -> Result<Option<RunRecord>> {
        Ok(self.claim_runs(owner, lease, 1).await?.pop())
    }

    /// Claims up to `n` queued runs for `owner` in one statement: the runs
    /// [`Store::claim_next_run`] would claim one by one (returned in no particular order).
    /// Guarded per run: a run another claimer took first is left out.
    pub async fn claim_runs(
        &self,
        owner: &str,
        lease: Duration,
        n: usize,
    ) -> Result<Vec<RunRecord>> {
        let sql = claim_sql(&format!("SELECT id FROM ({CLAIM_CANDIDATES}) AS chosen"));
        let n = i64::try_from(n.clamp(1, 1000)).unwrap_or(1);
        self.claim_with(sql, owner, lease, writer::Arg::Int(n))
            .await
    }

    /// Claims one specific queued run for `owner` (guarded on `queued`).
    pub async fn claim_run(
        &self,
        id: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<RunRecord>> {
        let sql = claim_sql("$5");
        Ok(self
            .claim_with(sql, owner, lease, writer::Arg::Text(id.to_string()))
            .await?
            .pop())
    }

    async fn claim_with(
        &self,
        sql: String,
        owner: &str,
        lease: Duration,
        which: writer::Arg,
    ) -> Result<Vec<RunRecord>> {
        use writer::Arg::{Int, Text};
        let now = now_ms();
        let until = now.saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX));
        let stmt = writer::Stmt::new(
            sql,
            vec![
                Text(owner.to_string()),
                Int(until),
                Int(now),
                Int(order_stamp()),
                which,
            ],
        );
        let done = self.writer.write(vec![stmt]).await?.unwrap_or_default();
        done.iter()
            .flat_map(|d| &d.rows)
            .map(RunRecord::from_row)
            .collect()
    }

    /// Extends the lease of the runs `owner` holds and is executing (`ids`). A run this
    /// host holds but no longer executes (its end could not be recorded) is not renewed,
    /// so recovery takes it over once the lease runs out.
    pub async fn renew_leases(&self, owner: &str, lease: Duration, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let _w = self.write_guard().await;
        let until = now_ms().saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX));
        for chunk in ids.chunks(500) {
            // Placeholders only ($3, $4, ...): the ids are bound, never spliced.
            let list = (0..chunk.len())
                .map(|i| format!("${}", i + 3))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "UPDATE runs SET lease_until = $2 WHERE owner = $1 \
                 AND status IN ('running', 'waiting') AND id IN ({list})"
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(owner)
                .bind(until);
            for id in chunk {
                q = q.bind(id);
            }
            q.execute(&self.pool).await?;
        }
        Ok(())
    }

    /// Runs that were running or waiting under a lease that has expired: their host is
    /// gone, or is the caller and no longer executes them (leases are renewed only for runs
    /// a host executes). Candidates for crash recovery; the caller skips the runs it is
    /// executing itself.
    pub async fn orphaned_runs(&self) -> Result<Vec<RunRecord>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            run_columns!(),
            " FROM runs WHERE status IN ('running', 'waiting') \
             AND (lease_until IS NULL OR lease_until < $1)"
        ))
        .bind(now_ms())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(RunRecord::from_row).collect()
    }

    /// Queued or paused runs with a cancel request (at most `limit`): nobody executes
    /// them, so whoever finds one finishes it as cancelled. Normally the cancel that set
    /// the flag does that at once; this is for a canceller that died before it could.
    pub async fn cancel_requested_queued(&self, limit: i64) -> Result<Vec<RunRecord>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            run_columns!(),
            " FROM runs WHERE status IN ('queued', 'paused') AND cancel_requested = 1 \
             ORDER BY queue_seq LIMIT $1"
        ))
        .bind(limit.clamp(1, 10_000))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(RunRecord::from_row).collect()
    }

    /// Applies `changes` and appends `event` in one transaction. If any guarded change
    /// matches no row (the state moved on), or the event would come after the run's final
    /// event (the run has ended and this is not the transition that ends it), nothing is
    /// written and `None` is returned.
    pub async fn commit(
        &self,
        run: &RunRef,
        changes: &[Change],
        event: Option<(&str, Value)>,
    ) -> Result<Option<Option<Event>>> {
        let events: Vec<(&str, Value)> = event.into_iter().collect();
        Ok(self
            .commit_many(run, changes, &events)
            .await?
            .map(|mut written| written.pop()))
    }

    /// Like [`Store::commit`] with any number of events, appended in order in the same
    /// transaction (a terminal transition and its `cancelled` + final `complete` events,
    /// so no crash or racing writer can leave one without the other). The transaction is
    /// shared with other runs' concurrent commits (group commit) but all-or-nothing for
    /// this one: a refusal here writes nothing of it and leaves the others alone.
    pub async fn commit_many(
        &self,
        run: &RunRef,
        changes: &[Change],
        events: &[(&str, Value)],
    ) -> Result<Option<Vec<Event>>> {
        let now = now_ms();
        let mut stmts: Vec<writer::Stmt> = changes.iter().flat_map(|c| c.stmts(run, now)).collect();
        if stmts.is_empty() && events.is_empty() {
            return Ok(Some(Vec::new()));
        }
        let ending = changes
            .iter()
            .any(|c| matches!(c, Change::RunFinish { .. }));
        let append = Append::new(run, events, ending);
        // The run's status change and the events' numbering touch the same row: when the
        // transition has one run guard, they are one statement, put first (the other
        // changes neither read nor write what it does), so a refusal has written nothing.
        let mut guards = changes.iter().enumerate().filter(|(_, c)| c.guards_run());
        let merged = match (guards.next(), guards.next()) {
            (Some((i, guard)), None) => guard.with_bump(run, now, &append).map(|m| (i, m)),
            _ => None,
        };
        let at = match merged {
            Some((i, merged)) => {
                stmts = std::iter::once(merged)
                    .chain(
                        changes
                            .iter()
                            .enumerate()
                            .filter(|(j, _)| *j != i)
                            .flat_map(|(_, c)| c.stmts(run, now)),
                    )
                    .collect();
                stmts.extend(append.insert());
                0
            }
            _ => {
                let at = stmts.len();
                stmts.extend(append.bump());
                stmts.extend(append.insert());
                at
            }
        };
        match self.writer.write(stmts).await? {
            None => Ok(None),
            Some(done) => append.events(done.get(at)).map(Some),
        }
    }

    /// Events of a run with `seq > after`, in order, at most `limit`.
    pub async fn events_after(&self, run_id: &str, after: i64, limit: i64) -> Result<Vec<Event>> {
        let rows = sqlx::query(
            "SELECT run_id, seq, tenant_id, type, ts, payload FROM events \
             WHERE run_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(run_id)
        .bind(after)
        .bind(limit.clamp(1, 10_000))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Event::from_row).collect()
    }

    /// A run's status (`None`: no such run), as a request just left it.
    async fn run_status(&self, run_id: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT status FROM runs WHERE id = $1")
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| r.try_get("status").map_err(StoreError::from))
            .transpose()
    }

    /// Marks a run for cancellation. Returns the run's status at that moment (a finished
    /// run is left untouched).
    pub async fn request_cancel(&self, run_id: &str) -> Result<Option<String>> {
        let _w = self.write_guard().await;
        sqlx::query(
            "UPDATE runs SET cancel_requested = 1, updated_at = $2 \
             WHERE id = $1 AND status IN ('queued', 'running', 'waiting', 'paused')",
        )
        .bind(run_id)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        self.run_status(run_id).await
    }

    /// Asks a live, unpaused run to pause: [`PAUSE_AFTER_ATTEMPT`] or [`PAUSE_NOW`] (a
    /// request never weakens: `now` stays `now`). Returns the run's status at that moment
    /// (a finished or paused run is left untouched).
    pub async fn request_pause(&self, run_id: &str, mode: i64) -> Result<Option<String>> {
        let _w = self.write_guard().await;
        sqlx::query(
            "UPDATE runs SET pause_requested = CASE WHEN pause_requested > $2 \
             THEN pause_requested ELSE $2 END, updated_at = $3 \
             WHERE id = $1 AND status IN ('queued', 'running', 'waiting')",
        )
        .bind(run_id)
        .bind(mode)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        self.run_status(run_id).await
    }

    /// A run's cancel and pause requests and its status (polled by the executor, so
    /// requests made in another process take effect too); `None`: no such run.
    pub async fn run_requests(&self, run_id: &str) -> Result<Option<RunRequests>> {
        let row =
            sqlx::query("SELECT cancel_requested, pause_requested, status FROM runs WHERE id = $1")
                .bind(run_id)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| {
            Ok(RunRequests {
                cancel: r.try_get::<i64, _>("cancel_requested")? != 0,
                pause: r.try_get("pause_requested")?,
                status: r.try_get("status")?,
            })
        })
        .transpose()
    }

    /// Whether cancellation was requested for a run (polled by the executor, so a cancel
    /// from another process takes effect too).
    pub async fn cancel_requested(&self, run_id: &str) -> Result<bool> {
        let row = sqlx::query("SELECT cancel_requested FROM runs WHERE id = $1")
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => r.try_get::<i64, _>("cancel_requested")? != 0,
            None => false,
        })
    }

    // ---- human input ----

    /// Records a question (idempotent) and returns the stored answer, if one was given.
    /// A different question text at the same position starts over.
    pub async fn ask(&self, q: &Question) -> Result<Option<String>> {
        let existing = sqlx::query(
            "SELECT question, answer FROM answers WHERE run_id = $1 AND step_idx = $2 \
             AND generation = $3 AND question_no = $4",
        )
        .bind(&q.run_id)
        .bind(q.step_idx)
        .bind(q.generation)
        .bind(q.question_no)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = existing {
            let text: String = row.try_get("question")?;
            if text == q.question {
                return Ok(row.try_get("answer")?);
            }
        }
        let _w = self.write_guard().await;
        sqlx::query(
            "INSERT INTO answers (run_id, step_idx, generation, question_no, question, schema, asked_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (run_id, step_idx, generation, question_no) \
             DO UPDATE SET question = $5, schema = $6, answer = NULL, answered_at = NULL",
        )
        .bind(&q.run_id)
        .bind(q.step_idx)
        .bind(q.generation)
        .bind(q.question_no)
        .bind(&q.question)
        .bind(q.schema.as_deref())
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(None)
    }

    /// The recorded answer of a step's `call_no`-th model call (1-based, per step and
    /// loop generation), if one was recorded for the same request (`request_hash`).
    pub async fn model_call(
        &self,
        run_id: &str,
        step_idx: i64,
        generation: i64,
        call_no: i64,
        request_hash: &str,
    ) -> Result<Option<String>> {
        let row = sqlx::query(
            "SELECT request_hash, response FROM model_calls WHERE run_id = $1 AND step_idx = $2 \
             AND generation = $3 AND call_no = $4",
        )
        .bind(run_id)
        .bind(step_idx)
        .bind(generation)
        .bind(call_no)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let hash: String = row.try_get("request_hash")?;
        if hash != request_hash {
            return Ok(None);
        }
        Ok(Some(row.try_get("response")?))
    }

    /// Records (or replaces) a step's `call_no`-th model call.
    pub async fn record_model_call(
        &self,
        run_id: &str,
        (step_idx, generation, call_no): (i64, i64, i64),
        request_hash: &str,
        response: &str,
    ) -> Result<()> {
        let _w = self.write_guard().await;
        sqlx::query(
            "INSERT INTO model_calls (run_id, step_idx, generation, call_no, request_hash, \
             response, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (run_id, step_idx, generation, call_no) \
             DO UPDATE SET request_hash = $5, response = $6, created_at = $7",
        )
        .bind(run_id)
        .bind(step_idx)
        .bind(generation)
        .bind(call_no)
        .bind(request_hash)
        .bind(response)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The open question of a run (asked, not yet answered), if any.
    pub async fn open_question(&self, run_id: &str) -> Result<Option<Question>> {
        let row = sqlx::query(
            "SELECT run_id, step_idx, generation, question_no, question, schema FROM answers \
             WHERE run_id = $1 AND answer IS NULL ORDER BY asked_at DESC LIMIT 1",
        )
        .bind(run_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Question::from_row(&r)).transpose()
    }

    /// Stores the answer to an open question; `false` if it was answered already.
    pub async fn answer(&self, q: &Question, answer: &str) -> Result<bool> {
        let _w = self.write_guard().await;
        let done = sqlx::query(
            "UPDATE answers SET answer = $5, answered_at = $6 WHERE run_id = $1 AND step_idx = $2 \
             AND generation = $3 AND question_no = $4 AND answer IS NULL",
        )
        .bind(&q.run_id)
        .bind(q.step_idx)
        .bind(q.generation)
        .bind(q.question_no)
        .bind(answer)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The stored answer to a question, if given.
    pub async fn answer_of(&self, q: &Question) -> Result<Option<String>> {
        let row = sqlx::query(
            "SELECT answer FROM answers WHERE run_id = $1 AND step_idx = $2 AND generation = $3 \
             AND question_no = $4",
        )
        .bind(&q.run_id)
        .bind(q.step_idx)
        .bind(q.generation)
        .bind(q.question_no)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(r) => r.try_get("answer")?,
            None => None,
        })
    }

    // ---- per-run state and artifacts ----

    /// Reads a state value.
    pub async fn state_get(&self, run_id: &str, key: &str) -> Result<Option<Vec<u8>>> {
        let row = sqlx::query("SELECT value FROM run_state WHERE run_id = $1 AND key = $2")
            .bind(run_id)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => Some(r.try_get("value")?),
            None => None,
        })
    }

    /// Writes a state value within `caps` (the run's key count and total value bytes).
    pub async fn state_set(
        &self,
        run_id: &str,
        key: &str,
        value: &[u8],
        caps: StateCaps,
    ) -> Result<StateWrite> {
        let _w = self.write_guard().await;
        let mut tx = self.pool.begin().await?;
        // The other keys of the run: with the write guard (SQLite) and the run's single
        // executor, nothing else writes this run's state in between.
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, COALESCE(SUM(LENGTH(value)), 0) AS bytes \
             FROM run_state WHERE run_id = $1 AND key <> $2",
        )
        .bind(run_id)
        .bind(key)
        .fetch_one(&mut *tx)
        .await?;
        let count: i64 = row.try_get("n")?;
        let bytes: i64 = row.try_get("bytes")?;
        if count >= caps.keys {
            return Ok(StateWrite::TooManyKeys);
        }
        let len = i64::try_from(value.len()).unwrap_or(i64::MAX);
        if bytes.saturating_add(len) > caps.bytes {
            return Ok(StateWrite::TooManyBytes);
        }
        sqlx::query(
            "INSERT INTO run_state (run_id, key, value) VALUES ($1, $2, $3) \
             ON CONFLICT (run_id, key) DO UPDATE SET value = $3",
        )
        .bind(run_id)
        .bind(key)
        .bind(value)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(StateWrite::Stored)
    }

    /// Stores an artifact (content-addressed: equal contents share one blob) and its
    /// `artifact` event, atomically.
    pub async fn put_artifact(
        &self,
        run: &RunRef,
        new: &NewArtifact<'_>,
    ) -> Result<(ArtifactRecord, Event)> {
        use sha2::{Digest, Sha256};
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(new.content)));
        let id = new_id("art");
        let size = i64::try_from(new.content.len()).unwrap_or(i64::MAX);
        let now = now_ms();
        use writer::Arg::{Int, Text};
        let mut stmts = vec![
            writer::Stmt::new(
                "INSERT INTO blobs (digest, size, content) VALUES ($1, $2, $3) \
                 ON CONFLICT (digest) DO NOTHING",
                vec![
                    Text(digest.clone()),
                    Int(size),
                    writer::Arg::Bytes(new.content.to_vec()),
                ],
            ),
            writer::Stmt::new(
                "INSERT INTO artifacts (id, run_id, tenant_id, step, name, media_type, size, \
                 digest, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                vec![
                    Text(id.clone()),
                    Text(run.id.clone()),
                    Text(run.tenant_id.clone()),
                    Text(new.step.into()),
                    Text(new.name.into()),
                    Text(new.media_type.into()),
                    Int(size),
                    Text(digest.clone()),
                    Int(now),
                ],
            ),
        ];
        let record = ArtifactRecord {
            id,
            run_id: run.id.clone(),
            step: new.step.to_string(),
            name: new.name.to_string(),
            media_type: new.media_type.to_string(),
            size,
            digest,
            created_at: now,
        };
        let payload = serde_json::json!({
            "step_id": record.step,
            "artifact_id": record.id,
            "name": record.name,
            "media_type": record.media_type,
            "size": record.size,
            "digest": record.digest,
        });
        let events = [("artifact", payload)];
        let append = Append::new(run, &events, false);
        let at = stmts.len();
        stmts.extend(append.bump());
        stmts.extend(append.insert());
        let done = self.writer.write(stmts).await?.ok_or_else(|| {
            StoreError::Corrupt(format!(
                "run {} has already ended: nothing more is recorded for it",
                run.id
            ))
        })?;
        let event = append
            .events(done.get(at))?
            .pop()
            .ok_or_else(|| StoreError::Corrupt("the artifact event was not written".into()))?;
        Ok((record, event))
    }

    /// The artifacts of a run.
    pub async fn artifacts(&self, run_id: &str) -> Result<Vec<ArtifactRecord>> {
        let rows = sqlx::query(
            "SELECT id, run_id, step, name, media_type, size, digest, created_at FROM artifacts \
             WHERE run_id = $1 ORDER BY created_at, id",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(ArtifactRecord::from_row).collect()
    }

    /// An artifact's record and content, if it belongs to `tenant_id`.
    pub async fn artifact_content(
        &self,
        tenant_id: &str,
        artifact_id: &str,
    ) -> Result<Option<(ArtifactRecord, Vec<u8>)>> {
        let row = sqlx::query(
            "SELECT a.id AS id, a.run_id AS run_id, a.step AS step, a.name AS name, \
             a.media_type AS media_type, a.size AS size, a.digest AS digest, \
             a.created_at AS created_at, b.content AS content \
             FROM artifacts a JOIN blobs b ON b.digest = a.digest \
             WHERE a.id = $1 AND a.tenant_id = $2",
        )
        .bind(artifact_id)
        .bind(tenant_id)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(r) => Ok(Some((ArtifactRecord::from_row(&r)?, r.try_get("content")?))),
            None => Ok(None),
        }
    }
}

/// The statements that append a member's events to its run's log, and the events they
/// write: the run's `next_seq` moves past them in one update (guarded: unless this member
/// ends the run, nothing is ever written after a run's final event, whoever writes late,
/// e.g. a paused host whose lease was taken over, or a guest event racing the end), and
/// one insert writes them all, numbered from the run's row.
struct Append {
    run: RunRef,
    /// (type, ts, payload) of each event, payloads already bounded.
    events: Vec<(String, String, Value, String)>,
    ending: bool,
}

impl Append {
    fn new(run: &RunRef, events: &[(&str, Value)], ending: bool) -> Append {
        let ts = rfc3339_now();
        Append {
            run: run.clone(),
            events: events
                .iter()
                .map(|(kind, payload)| {
                    let (payload, text) = bounded_payload(payload);
                    (kind.to_string(), ts.clone(), payload.into_owned(), text)
                })
                .collect(),
            ending,
        }
    }

    /// How many events, as a bound value.
    fn count(&self) -> i64 {
        i64::try_from(self.events.len()).unwrap_or(i64::MAX)
    }

    /// The guarded move of the run's `next_seq` past the events (returns the new value).
    fn bump(&self) -> Option<writer::Stmt> {
        use writer::Arg::{Int, Text};
        if self.events.is_empty() {
            return None;
        }
        let sql = if self.ending {
            "UPDATE runs SET next_seq = next_seq + $2 WHERE id = $1 RETURNING next_seq"
        } else {
            "UPDATE runs SET next_seq = next_seq + $2 WHERE id = $1 \
             AND status NOT IN ('succeeded', 'failed', 'cancelled') RETURNING next_seq"
        };
        Some(writer::Stmt::new(sql, vec![Text(self.run.id.clone()), Int(self.count())]).guarded())
    }

    /// The insert of the events, numbered from the run's (already moved) `next_seq`.
    fn insert(&self) -> Option<writer::Stmt> {
        use writer::Arg::{Int, Text};
        if self.events.is_empty() {
            return None;
        }
        let mut sql = String::from(
            "INSERT INTO events (run_id, seq, tenant_id, type, ts, payload) \
             SELECT $1, r.next_seq - $3 + v.column1, $2, v.column2, v.column3, v.column4 \
             FROM runs r, (VALUES ",
        );
        let mut args = vec![
            Text(self.run.id.clone()),
            Text(self.run.tenant_id.clone()),
            Int(self.count()),
        ];
        for (i, (kind, ts, _, text)) in self.events.iter().enumerate() {
            let n = args.len();
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("(${}, ${}, ${}, ${})", n + 1, n + 2, n + 3, n + 4));
            args.push(Int(i64::try_from(i).unwrap_or(i64::MAX)));
            args.push(Text(kind.clone()));
            args.push(Text(ts.clone()));
            args.push(Text(text.clone()));
        }
        sql.push_str(") AS v WHERE r.id = $1");
        Some(writer::Stmt::new(sql, args))
    }

    /// The events written, numbered from what the bump returned (`done`).
    fn events(self, done: Option<&writer::Done>) -> Result<Vec<Event>> {
        if self.events.is_empty() {
            return Ok(Vec::new());
        }
        let after: i64 = done
            .and_then(|d| d.rows.first())
            .ok_or_else(|| StoreError::Corrupt("the event numbering returned nothing".into()))?
            .try_get("next_seq")?;
        let first = after - i64::try_from(self.events.len()).unwrap_or(i64::MAX);
        Ok(self
            .events
            .into_iter()
            .zip(first..)
            .map(|((kind, ts, payload, _), seq)| Event {
                kind,
                run_id: self.run.id.clone(),
                seq,
                ts,
                payload,
                tenant_id: self.run.tenant_id.clone(),
            })
            .collect())
    }
}

/// The insert linking a run to the registered plugins it uses, if any.
fn link_stmt(run_id: &str, plugin_ids: &[String]) -> Option<writer::Stmt> {
    if plugin_ids.is_empty() {
        return None;
    }
    let mut sql = String::from("INSERT INTO run_plugins (run_id, plugin_id) VALUES ");
    let mut args = vec![writer::Arg::Text(run_id.to_string())];
    for (i, id) in plugin_ids.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!("($1, ${})", i + 2));
        args.push(writer::Arg::Text(id.clone()));
    }
    sql.push_str(" ON CONFLICT DO NOTHING");
    Some(writer::Stmt::new(sql, args))
}

/// The caps on one run's state, checked when a value is written.
#[derive(Debug, Clone, Copy)]
pub struct StateCaps {
    /// Most keys.
    pub keys: i64,
    /// Most bytes of values, all keys together.
    pub bytes: i64,
}

/// What a state write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateWrite {
    /// The value is stored.
    Stored,
    /// Refused: the run holds the most keys it may.
    TooManyKeys,
    /// Refused: the run's values would exceed their total cap.
    TooManyBytes,
}

/// The largest event payload stored, as JSON text. Everything a guest can put into an
/// event is capped well below this at its source; this is the last line.
pub const MAX_EVENT_BYTES: usize = 64 << 10;
/// Strings in an over-size payload are cut to this many bytes.
const CUT_STRING: usize = 1 << 10;

/// `payload` and its JSON text, or when that is over [`MAX_EVENT_BYTES`] a copy with every
/// long string cut and `"truncated": true`; if even that is too big, only its short fields.
/// The text is what gets stored: each payload is serialized once.
fn bounded_payload(payload: &Value) -> (std::borrow::Cow<'_, Value>, String) {
    let text = payload.to_string();
    if text.len() <= MAX_EVENT_BYTES {
        return (std::borrow::Cow::Borrowed(payload), text);
    }
    fn cut(value: &mut Value) {
        match value {
            Value::String(text) if text.len() > CUT_STRING => {
                let mut end = CUT_STRING;
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                text.truncate(end);
                text.push_str("… (cut)");
            }
            Value::Array(items) => items.iter_mut().for_each(cut),
            Value::Object(map) => map.values_mut().for_each(cut),
            _ => {}
        }
    }
    let mut smaller = payload.clone();
    cut(&mut smaller);
    if smaller.to_string().len() > MAX_EVENT_BYTES {
        // Many fields or a long array: keep the scalars and short strings at the top
        // (32 of at most ~1 KiB each stay well under the cap).
        smaller = match smaller {
            Value::Object(map) => Value::Object(
                map.into_iter()
                    .filter(|(_, v)| !v.is_array() && !v.is_object())
                    .take(32)
                    .collect(),
            ),
            _ => Value::Object(serde_json::Map::new()),
        };
    }
    if let Value::Object(map) = &mut smaller {
        map.insert("truncated".into(), Value::Bool(true));
    } else {
        smaller = serde_json::json!({"value": smaller, "truncated": true});
    }
    let text = smaller.to_string();
    (std::borrow::Cow::Owned(smaller), text)
}

/// Hides a password in a database URL before it reaches a message.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = url.get(scheme + 3..at).unwrap_or_default();
            // Only a password is hidden; a URL without one is shown as it is.
            let Some((user, _password)) = creds.split_once(':') else {
                return url.to_string();
            };
            format!(
                "{}{user}:***{}",
                url.get(..scheme + 3).unwrap_or_default(),
                url.get(at..).unwrap_or_default()
            )
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn res_17_an_event_payload_is_bounded_before_it_is_stored() {
        let small = serde_json::json!({"step_id": "a", "message": "hello"});
        assert_eq!(*bounded_payload(&small).0, small);
        let big = serde_json::json!({"step_id": "a", "message": "é".repeat(100_000)});
        let (cut, _) = bounded_payload(&big);
        assert!(cut.to_string().len() <= MAX_EVENT_BYTES);
        assert_eq!(cut["step_id"], "a");
        assert_eq!(cut["truncated"], true);
        assert!(cut["message"].as_str().unwrap().starts_with("éé"));
        let wide = serde_json::json!({"step_id": "a", "items": vec!["x".repeat(900); 1000]});
        let (cut, _) = bounded_payload(&wide);
        assert!(cut.to_string().len() <= MAX_EVENT_BYTES);
        assert_eq!(cut["step_id"], "a");
        assert_eq!(cut["truncated"], true);
    }

    #[test]
    fn urls_lose_their_password_and_nothing_else() {
        assert_eq!(
            redact_url("postgres://corral:s3cret@db:5432/corral"),
            "postgres://corral:***@db:5432/corral"
        );
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1:5432/test"),
            "postgres://postgres@127.0.0.1:5432/test"
        );
        assert_eq!(redact_url("sqlite:///tmp/x.db"), "sqlite:///tmp/x.db");
    }

    #[tokio::test]
    async fn a_sqlite_url_naming_a_file_that_does_not_exist_yet_creates_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fresh.db");
        let store = Store::open(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        assert!(path.exists());
        drop(store);
        assert_eq!(
            sqlite_create_if_missing("sqlite:///x.db?mode=ro", Backend::Sqlite),
            "sqlite:///x.db?mode=ro"
        );
        assert_eq!(
            sqlite_create_if_missing("sqlite:///x.db?cache=shared", Backend::Sqlite),
            "sqlite:///x.db?cache=shared&mode=rwc"
        );
    }

    #[tokio::test]
    async fn the_claim_query_looks_tenants_up_by_index_and_never_scans_their_history() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_in_dir(dir.path()).await.unwrap();
        let plan = sqlx::query(sqlx::AssertSqlSafe(format!(
            "EXPLAIN QUERY PLAN {CLAIM_CANDIDATES}"
        )))
        .fetch_all(&store.pool)
        .await
        .unwrap();
        let steps: Vec<String> = plan
            .iter()
            .map(|r| r.try_get::<String, _>("detail").unwrap())
            .collect();
        let text = steps.join("\n");
        // Scans of the query's own subqueries go over the queued runs the index found;
        // a scan of a table would read history.
        let table_scan = |s: &&String| {
            s.starts_with("SCAN") && !s.starts_with("SCAN (subquery") && s.as_str() != "SCAN c"
        };
        assert!(
            !steps.iter().any(|s| table_scan(&s)),
            "a full scan in the claim query's plan:\n{text}"
        );
        assert!(text.contains("runs_by_tenant_status"), "{text}");
        assert!(text.contains("runs_by_tenant_claim"), "{text}");
    }
}
