//! Schedules and their fires. A fire claims its slot in the transaction that queues its
//! run (see [`Store::fire_schedule`]): the schedule's cursor moves forward only, guarded on
//! being older than the slot, so of any number of hosts on one database exactly one
//! handles each slot, and a crash leaves the slot either handled with its run or not at all.

use super::writer::Arg::{Int, OptInt, OptText, Text};
use super::writer::Stmt;
use super::{Backend, Event, NewRun, Result, RunRecord, Store, StoreError, new_id, now_ms};
use serde::Serialize;
use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;

/// Fires kept per schedule (older ones are dropped as new ones are recorded).
pub const FIRES_KEPT: i64 = 100;
/// Longest reason stored with a fire.
const MAX_REASON_CHARS: usize = 2_000;

/// A schedule row.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct ScheduleRecord {
    /// Id (`sch_...`).
    pub id: String,
    /// Owner.
    #[serde(skip)]
    pub tenant_id: String,
    /// The stored pipeline it was made from, if it was given by id.
    pub pipeline_id: Option<String>,
    /// The pipeline's name.
    pub pipeline_name: String,
    /// The pipeline as JSON (a snapshot taken when the schedule was made).
    #[serde(skip)]
    pub spec: String,
    /// Each run's input.
    #[schemars(schema_with = "crate::api::doc::any_json")]
    pub input: Value,
    /// The cron expression (5 fields, or 6 with seconds first).
    pub cron: String,
    /// The IANA time zone the expression is read in (e.g. `Europe/Paris`, `UTC`).
    pub timezone: String,
    /// What a fire does while the schedule's previous run is still active.
    #[schemars(extend("enum" = ["skip", "queue", "cancel_previous"]))]
    pub overlap: String,
    /// What becomes of slots missed while no scheduler ran.
    #[schemars(extend("enum" = ["none", "latest", "all"]))]
    pub catch_up: String,
    /// Unix ms.
    pub created_at: i64,
    /// The latest slot handled (unix ms; the creation time until the first fire).
    pub last_fire_at: i64,
    /// The next slot (unix ms); `null` when the expression never fires again.
    pub next_fire_at: Option<i64>,
    /// The run of the latest fire that started one.
    pub last_run_id: Option<String>,
}

const COLUMNS: &str = "id, tenant_id, pipeline_id, pipeline_name, spec, input, cron, timezone, \
     overlap, catch_up, created_at, last_fire_at, next_fire_at, last_run_id";

impl ScheduleRecord {
    fn from_row(r: &AnyRow) -> Result<ScheduleRecord> {
        let input: String = r.try_get("input")?;
        Ok(ScheduleRecord {
            id: r.try_get("id")?,
            tenant_id: r.try_get("tenant_id")?,
            pipeline_id: r.try_get("pipeline_id")?,
            pipeline_name: r.try_get("pipeline_name")?,
            spec: r.try_get("spec")?,
            input: serde_json::from_str(&input)
                .map_err(|e| StoreError::Corrupt(format!("schedule input: {e}")))?,
            cron: r.try_get("cron")?,
            timezone: r.try_get("timezone")?,
            overlap: r.try_get("overlap")?,
            catch_up: r.try_get("catch_up")?,
            created_at: r.try_get("created_at")?,
            last_fire_at: r.try_get("last_fire_at")?,
            next_fire_at: r.try_get("next_fire_at")?,
            last_run_id: r.try_get("last_run_id")?,
        })
    }
}

/// A schedule to create (checked by the caller).
#[derive(Debug, Clone)]
pub struct NewSchedule {
    /// The stored pipeline it comes from, if any.
    pub pipeline_id: Option<String>,
    /// The pipeline's name.
    pub pipeline_name: String,
    /// The pipeline as JSON.
    pub spec: String,
    /// Each run's input, JSON.
    pub input: String,
    /// The cron expression.
    pub cron: String,
    /// The IANA time zone.
    pub timezone: String,
    /// `skip`, `queue` or `cancel_previous`.
    pub overlap: String,
    /// `none`, `latest` or `all`.
    pub catch_up: String,
    /// The first slot after now (`None`: never).
    pub next_fire_at: Option<i64>,
    /// Now, as the caller computed `next_fire_at` from it (unix ms).
    pub now: i64,
}

/// What became of one slot of a schedule.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct FireRecord {
    /// The slot (unix ms).
    pub fire_at: i64,
    /// `started` (a run was queued), `skipped` (the previous run was still active),
    /// `missed` (no scheduler ran at the time and `catch_up` let it go) or `failed` (the
    /// run could not be queued: see `reason`).
    #[schemars(extend("enum" = ["started", "skipped", "missed", "failed"]))]
    pub status: String,
    /// The run it started.
    pub run_id: Option<String>,
    /// Why it was skipped, missed or failed.
    pub reason: Option<String>,
    /// When it was handled (unix ms).
    pub handled_at: i64,
}

impl FireRecord {
    fn from_row(r: &AnyRow) -> Result<FireRecord> {
        Ok(FireRecord {
            fire_at: r.try_get("fire_at")?,
            status: r.try_get("status")?,
            run_id: r.try_get("run_id")?,
            reason: r.try_get("reason")?,
            handled_at: r.try_get("handled_at")?,
        })
    }
}

/// The statements that claim `fire_at` of `schedule`: the cursor moves to it (guarded on
/// being older: another host that handled the slot first makes this match nothing), and
/// the slot's row is inserted (guarded too: its key is the claim). Old rows are pruned.
fn claim_stmts(
    schedule: &ScheduleRecord,
    fire_at: i64,
    next_fire_at: Option<i64>,
    status: &str,
    run_id: Option<&str>,
    reason: Option<&str>,
) -> Vec<Stmt> {
    let now = now_ms();
    vec![
        Stmt::new(
            "UPDATE schedules SET last_fire_at = $2, next_fire_at = $3, \
             last_run_id = COALESCE($4, last_run_id) \
             WHERE id = $1 AND last_fire_at < $2",
            vec![
                Text(schedule.id.clone()),
                Int(fire_at),
                OptInt(next_fire_at),
                OptText(run_id.map(str::to_string)),
            ],
        )
        .guarded(),
        Stmt::new(
            "INSERT INTO schedule_fires (schedule_id, fire_at, tenant_id, status, run_id, \
             reason, handled_at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
            vec![
                Text(schedule.id.clone()),
                Int(fire_at),
                Text(schedule.tenant_id.clone()),
                Text(status.to_string()),
                OptText(run_id.map(str::to_string)),
                OptText(reason.map(str::to_string)),
                Int(now),
            ],
        )
        .guarded(),
        Stmt::new(
            "DELETE FROM schedule_fires WHERE schedule_id = $1 AND fire_at < \
             (SELECT f.fire_at FROM schedule_fires f WHERE f.schedule_id = $1 \
              ORDER BY f.fire_at DESC LIMIT 1 OFFSET $2)",
            vec![Text(schedule.id.clone()), Int(FIRES_KEPT - 1)],
        ),
    ]
}

impl Store {
    /// Creates a schedule, unless the tenant already has `max_per_tenant` of them (`None`,
    /// nothing written). The count and the insert are one statement, and on Postgres the
    /// tenant's row is locked first, so concurrent creations never overshoot the cap.
    pub async fn create_schedule(
        &self,
        tenant_id: &str,
        new: &NewSchedule,
        max_per_tenant: i64,
    ) -> Result<Option<ScheduleRecord>> {
        let id = new_id("sch");
        let mut stmts = Vec::with_capacity(2);
        if self.backend == Backend::Postgres {
            stmts.push(Stmt::new(
                "SELECT id FROM tenants WHERE id = $1 FOR NO KEY UPDATE",
                vec![Text(tenant_id.to_string())],
            ));
        }
        stmts.push(
            Stmt::new(
                "INSERT INTO schedules (id, tenant_id, pipeline_id, pipeline_name, spec, input, \
                 cron, timezone, overlap, catch_up, created_at, last_fire_at, next_fire_at) \
                 SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, $12 \
                 WHERE (SELECT COUNT(*) FROM schedules WHERE tenant_id = $2) < $13",
                vec![
                    Text(id.clone()),
                    Text(tenant_id.to_string()),
                    OptText(new.pipeline_id.clone()),
                    Text(new.pipeline_name.clone()),
                    Text(new.spec.clone()),
                    Text(new.input.clone()),
                    Text(new.cron.clone()),
                    Text(new.timezone.clone()),
                    Text(new.overlap.clone()),
                    Text(new.catch_up.clone()),
                    Int(new.now),
                    OptInt(new.next_fire_at),
                    Int(max_per_tenant.max(0)),
                ],
            )
            .guarded(),
        );
        if self.writer.write(stmts).await?.is_none() {
            return Ok(None);
        }
        self.schedule(tenant_id, &id).await
    }

    /// A schedule of the tenant (another tenant's: `None`, like a missing one).
    pub async fn schedule(&self, tenant_id: &str, id: &str) -> Result<Option<ScheduleRecord>> {
        let q = format!("SELECT {COLUMNS} FROM schedules WHERE id = $1 AND tenant_id = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(q))
            .bind(id)
            .bind(tenant_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(ScheduleRecord::from_row).transpose()
    }

    /// The tenant's schedules, oldest first.
    pub async fn schedules(&self, tenant_id: &str) -> Result<Vec<ScheduleRecord>> {
        let q =
            format!("SELECT {COLUMNS} FROM schedules WHERE tenant_id = $1 ORDER BY created_at, id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(q))
            .bind(tenant_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(ScheduleRecord::from_row).collect()
    }

    /// Deletes a schedule of the tenant and its fires (its runs stay, still naming it);
    /// returns whether it existed. A fire racing the delete is refused by its guard.
    pub async fn delete_schedule(&self, tenant_id: &str, id: &str) -> Result<bool> {
        let stmts = vec![
            Stmt::new(
                "DELETE FROM schedules WHERE id = $1 AND tenant_id = $2",
                vec![Text(id.to_string()), Text(tenant_id.to_string())],
            )
            .guarded(),
            Stmt::new(
                "DELETE FROM schedule_fires WHERE schedule_id = $1 AND tenant_id = $2",
                vec![Text(id.to_string()), Text(tenant_id.to_string())],
            ),
        ];
        Ok(self.writer.write(stmts).await?.is_some())
    }

    /// Schedules (of every tenant) with a slot due at `now`, the most overdue first.
    pub async fn due_schedules(&self, now: i64, limit: i64) -> Result<Vec<ScheduleRecord>> {
        let q = format!(
            "SELECT {COLUMNS} FROM schedules WHERE next_fire_at IS NOT NULL \
             AND next_fire_at <= $1 ORDER BY next_fire_at, id LIMIT $2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(q))
            .bind(now)
            .bind(limit.clamp(1, 10_000))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(ScheduleRecord::from_row).collect()
    }

    /// A schedule's latest fires, newest first (at most `limit`).
    pub async fn schedule_fires(&self, schedule_id: &str, limit: i64) -> Result<Vec<FireRecord>> {
        let rows = sqlx::query(
            "SELECT fire_at, status, run_id, reason, handled_at FROM schedule_fires \
             WHERE schedule_id = $1 ORDER BY fire_at DESC LIMIT $2",
        )
        .bind(schedule_id)
        .bind(limit.clamp(1, FIRES_KEPT))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(FireRecord::from_row).collect()
    }

    /// The schedule's runs that have not ended (any state but succeeded, failed and
    /// cancelled), oldest first.
    pub async fn active_schedule_runs(&self, schedule_id: &str) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT id FROM runs WHERE schedule_id = $1 \
             AND status NOT IN ('succeeded', 'failed', 'cancelled') ORDER BY queue_seq",
        )
        .bind(schedule_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }

    /// Records a slot that started no run (`skipped`, `missed` or `failed`, with why),
    /// moving the cursor to it. `false`: another host handled the slot first (or the
    /// schedule is gone), and nothing was written.
    pub async fn record_fire(
        &self,
        schedule: &ScheduleRecord,
        fire_at: i64,
        next_fire_at: Option<i64>,
        status: &str,
        reason: &str,
    ) -> Result<bool> {
        // Host-made text, but it may quote names a tenant chose: stored capped.
        let reason: String = reason.chars().take(MAX_REASON_CHARS).collect();
        let stmts = claim_stmts(schedule, fire_at, next_fire_at, status, None, Some(&reason));
        Ok(self.writer.write(stmts).await?.is_some())
    }

    /// Queues `new` as the run of `schedule`'s slot `fire_at`, in one transaction with the
    /// slot's claim (see [`claim_stmts`]) and, with `cancel_previous`, a cancel request
    /// for the schedule's other runs still queued, running or waiting (made durable with
    /// the fire; the caller then cancels them as `corral cancel` does). `None`: nothing
    /// was written, because another host handled the slot first (or the schedule is
    /// gone), or the tenant's queue is full: [`Store::schedule_cursor`] tells which.
    #[allow(clippy::too_many_arguments)]
    pub async fn fire_schedule(
        &self,
        schedule: &ScheduleRecord,
        fire_at: i64,
        next_fire_at: Option<i64>,
        new: &NewRun,
        max_queued: Option<i64>,
        plugin_ids: &[String],
        cancel_previous: bool,
    ) -> Result<Option<(RunRecord, Event)>> {
        let run_id = new_id("run");
        let before = claim_stmts(
            schedule,
            fire_at,
            next_fire_at,
            "started",
            Some(&run_id),
            None,
        );
        let mut after = vec![Stmt::new(
            "UPDATE runs SET schedule_id = $2, scheduled_for = $3 WHERE id = $1",
            vec![
                Text(run_id.clone()),
                Text(schedule.id.clone()),
                Int(fire_at),
            ],
        )];
        if cancel_previous {
            after.push(Stmt::new(
                "UPDATE runs SET cancel_requested = 1, updated_at = $3 WHERE schedule_id = $1 \
                 AND id <> $2 AND status IN ('queued', 'running', 'waiting', 'paused')",
                vec![
                    Text(schedule.id.clone()),
                    Text(run_id.clone()),
                    Int(now_ms()),
                ],
            ));
        }
        let created = self
            .create_run_with(run_id, new, max_queued, plugin_ids, before, after)
            .await?;
        Ok(created.map(|(mut run, event)| {
            run.schedule_id = Some(schedule.id.clone());
            run.scheduled_for = Some(fire_at);
            (run, event)
        }))
    }

    /// A schedule's cursor (`last_fire_at`) now, or `None` when it is gone.
    pub async fn schedule_cursor(&self, id: &str) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT last_fire_at FROM schedules WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => Some(r.try_get("last_fire_at")?),
            None => None,
        })
    }

    /// Sets a schedule's next slot while its cursor is still `cursor` (a due schedule
    /// whose expression had no slot up to now: its next one was computed anew).
    pub async fn set_next_fire(
        &self,
        id: &str,
        cursor: i64,
        next_fire_at: Option<i64>,
    ) -> Result<()> {
        let stmt = Stmt::new(
            "UPDATE schedules SET next_fire_at = $3 \
             WHERE id = $1 AND last_fire_at = $2",
            vec![Text(id.to_string()), Int(cursor), OptInt(next_fire_at)],
        );
        self.writer.write(vec![stmt]).await?;
        Ok(())
    }
}
