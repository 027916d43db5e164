//! Schedules: a pipeline started by a cron expression in a time zone.
//!
//! Every `corral serve` (and `corral worker`) runs [`Runner::run_schedules`]: each tick
//! it looks up the schedules with a slot due (by index) and handles their slots in order.
//! A slot is handled exactly once whatever the number of hosts on the database: its fire
//! moves the schedule's cursor to the slot in the transaction that queues the run, guarded
//! on the cursor being older, so a second host's attempt writes nothing (see
//! `store::schedules`). Every time is the host's clock (`store::now_ms`), the same clock
//! the store stamps runs with; slots themselves come from the expression, not a clock, so
//! hosts whose clocks differ a little still agree on which slot is which.
//!
//! A slot more than the grace period old when a scheduler first sees it was missed (no
//! scheduler ran then): `catch_up` decides what becomes of missed slots. Slots within the
//! grace period are fired as usual, each once.

use super::{Runner, pipeline};
use crate::engine::json;
use crate::store::{FireRecord, NewRun, NewSchedule, ScheduleRecord, StoreError, now_ms};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Longest cron expression accepted.
pub const MAX_CRON_BYTES: usize = 128;
/// Longest time zone name accepted.
pub const MAX_TIMEZONE_BYTES: usize = 64;
/// Schedules per tenant.
pub const MAX_SCHEDULES_PER_TENANT: i64 = 100;
/// Slots one schedule fires in one tick at most, for missed slots (`catch_up = "all"`)
/// and again for slots within the grace period: after a long downtime `all` fires the
/// latest this many missed slots and records the older ones as missed, so a year of
/// downtime cannot flood the queue.
pub const MAX_FIRES_PER_TICK: usize = 100;
/// Due schedules handled per tick (the rest wait for the next tick).
const SCHEDULES_PER_TICK: i64 = 100;

/// Why a schedule was refused. `code` values are stable.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// No such schedule (or another tenant's).
    #[error("SCHEDULE_NOT_FOUND: no schedule `{0}`")]
    NotFound(String),
    /// The cron expression does not parse, is too long, or never fires.
    #[error("INVALID_CRON: {0}")]
    InvalidCron(String),
    /// The time zone is not an IANA name.
    #[error("INVALID_TIMEZONE: {0}")]
    InvalidTimezone(String),
    /// The pipeline or its plugins are not usable.
    #[error("INVALID_PIPELINE: {0}")]
    InvalidPipeline(String),
    /// The input is not acceptable.
    #[error("INVALID_INPUT: {0}")]
    InvalidInput(String),
    /// The tenant has as many schedules as it may.
    #[error("TOO_MANY_SCHEDULES: this tenant already has {0} schedules; delete one first")]
    TooMany(i64),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ScheduleError {
    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            ScheduleError::NotFound(_) => "SCHEDULE_NOT_FOUND",
            ScheduleError::InvalidCron(_) => "INVALID_CRON",
            ScheduleError::InvalidTimezone(_) => "INVALID_TIMEZONE",
            ScheduleError::InvalidPipeline(_) => "INVALID_PIPELINE",
            ScheduleError::InvalidInput(_) => "INVALID_INPUT",
            ScheduleError::TooMany(_) => "TOO_MANY_SCHEDULES",
            ScheduleError::Store(_) => "STORE_ERROR",
        }
    }
}

/// What a fire does while the schedule's previous run is still active.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Start nothing; the slot is recorded as `skipped`.
    #[default]
    Skip,
    /// Start the new run anyway.
    Queue,
    /// Cancel the active runs, and start the new one.
    #[value(name = "cancel_previous")]
    CancelPrevious,
}

impl Overlap {
    /// As stored and sent.
    pub fn as_str(self) -> &'static str {
        match self {
            Overlap::Skip => "skip",
            Overlap::Queue => "queue",
            Overlap::CancelPrevious => "cancel_previous",
        }
    }

    fn parse(s: &str) -> Overlap {
        match s {
            "queue" => Overlap::Queue,
            "cancel_previous" => Overlap::CancelPrevious,
            _ => Overlap::Skip,
        }
    }
}

/// What becomes of slots missed while no scheduler ran (a downtime).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// Fire none of them (the latest is recorded as `missed`); the next slot fires.
    #[default]
    None,
    /// Fire the most recent missed slot, once.
    Latest,
    /// Fire each missed slot, oldest first, at most [`MAX_FIRES_PER_TICK`] of them.
    All,
}

impl CatchUp {
    /// As stored and sent.
    pub fn as_str(self) -> &'static str {
        match self {
            CatchUp::None => "none",
            CatchUp::Latest => "latest",
            CatchUp::All => "all",
        }
    }

    fn parse(s: &str) -> CatchUp {
        match s {
            "latest" => CatchUp::Latest,
            "all" => CatchUp::All,
            _ => CatchUp::None,
        }
    }
}

/// A parsed cron expression in its time zone: the slots it names, as unix ms.
#[derive(Debug, Clone)]
pub struct Cron {
    cron: croner::Cron,
    tz: Tz,
}

impl Cron {
    /// Parses `expr` (5 fields, or 6 with seconds first; `@daily` and the like too) in the
    /// IANA time zone `timezone`.
    pub fn parse(expr: &str, timezone: &str) -> Result<Cron, ScheduleError> {
        if expr.len() > MAX_CRON_BYTES {
            return Err(ScheduleError::InvalidCron(format!(
                "the expression is {} bytes, more than {MAX_CRON_BYTES}",
                expr.len()
            )));
        }
        if timezone.len() > MAX_TIMEZONE_BYTES {
            return Err(ScheduleError::InvalidTimezone(format!(
                "the name is longer than {MAX_TIMEZONE_BYTES} bytes"
            )));
        }
        let tz: Tz = timezone.parse().map_err(|_| {
            ScheduleError::InvalidTimezone(format!(
                "`{}` is not an IANA time zone name (e.g. `UTC`, `Europe/Paris`)",
                timezone.escape_debug()
            ))
        })?;
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .build()
            .parse(expr)
            .map_err(|e| ScheduleError::InvalidCron(format!("`{}`: {e}", expr.escape_debug())))?;
        Ok(Cron { cron, tz })
    }

    /// The time zone's canonical name.
    pub fn timezone(&self) -> &'static str {
        self.tz.name()
    }

    fn at(&self, ms: i64) -> Option<DateTime<Tz>> {
        // Slots are whole seconds: a cursor's milliseconds only round it down.
        DateTime::<Utc>::from_timestamp(ms.div_euclid(1000), 0).map(|t| t.with_timezone(&self.tz))
    }

    /// The first slot strictly after `ms`; `None` when there is none (before year 5000).
    pub fn next_after(&self, ms: i64) -> Option<i64> {
        let from = self.at(ms)?;
        self.cron
            .find_next_occurrence(&from, false)
            .ok()
            .map(|t| t.timestamp_millis())
    }

    /// The last slot at or before `ms`.
    pub fn last_at_or_before(&self, ms: i64) -> Option<i64> {
        let from = self.at(ms)?;
        self.cron
            .find_previous_occurrence(&from, true)
            .ok()
            .map(|t| t.timestamp_millis())
    }

    /// Slots in `(after, until]`, oldest first, at most `max`.
    fn slots_between(&self, after: i64, until: i64, max: usize) -> Vec<i64> {
        let mut slots = Vec::new();
        let mut cursor = after;
        while slots.len() < max {
            match self.next_after(cursor) {
                Some(t) if t <= until && t > cursor => {
                    slots.push(t);
                    cursor = t;
                }
                _ => break,
            }
        }
        slots
    }

    /// Slots in `(above, at_or_before]`, newest first, at most `max`.
    fn slots_back(&self, at_or_before: i64, above: i64, max: usize) -> Vec<i64> {
        let mut slots = Vec::new();
        let mut cursor = at_or_before;
        while slots.len() < max {
            match self.last_at_or_before(cursor) {
                Some(t) if t > above && t <= cursor => {
                    slots.push(t);
                    cursor = t - 1;
                }
                _ => break,
            }
        }
        slots
    }
}

/// How the scheduler loop runs.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Time between ticks.
    pub tick: Duration,
    /// A slot older than this when first seen was missed (see [`CatchUp`]).
    pub grace: Duration,
    /// Fires are refused (and recorded `failed`) while the tenant has this many queued runs.
    pub max_queued_per_tenant: Option<i64>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            tick: Duration::from_millis(500),
            grace: Duration::from_secs(60),
            max_queued_per_tenant: Some(1_000),
        }
    }
}

/// A schedule to make: what `POST /v1/schedules` and `corral schedule create` take.
#[derive(Debug, Clone)]
pub struct ScheduleRequest<'a> {
    /// The pipeline (checked like a submission's).
    pub pipeline: &'a pipeline::Pipeline,
    /// The stored pipeline it was given as, if any.
    pub pipeline_id: Option<String>,
    /// Each run's input, JSON.
    pub input: &'a str,
    /// The cron expression.
    pub cron: &'a str,
    /// The IANA time zone.
    pub timezone: &'a str,
    /// While the previous run is active.
    pub overlap: Overlap,
    /// After a downtime.
    pub catch_up: CatchUp,
}

/// One thing to do about one slot.
#[derive(Debug, Clone, PartialEq)]
enum Action {
    /// Start the slot's run.
    Fire(i64),
    /// Record the slot as missed, with why.
    Missed(i64, String),
}

/// What to do about `schedule`'s slots at `now`, oldest first: the missed slots as its
/// `catch_up` says, then those within `grace`.
fn plan(cron: &Cron, schedule: &ScheduleRecord, now: i64, grace: i64) -> Vec<Action> {
    let cursor = schedule.last_fire_at;
    let late = now.saturating_sub(grace);
    let mut actions = Vec::new();
    if cursor < late {
        let missed = cron.slots_back(late, cursor, MAX_FIRES_PER_TICK + 1);
        let more = missed.len() > MAX_FIRES_PER_TICK;
        let count = if more {
            format!("more than {MAX_FIRES_PER_TICK}")
        } else {
            missed.len().to_string()
        };
        match CatchUp::parse(&schedule.catch_up) {
            CatchUp::None => {
                if let Some(&latest) = missed.first() {
                    actions.push(Action::Missed(
                        latest,
                        format!("{count} slot(s) passed while no scheduler ran (catch_up = none)"),
                    ));
                }
            }
            CatchUp::Latest => {
                if let Some(&latest) = missed.first() {
                    actions.push(Action::Fire(latest));
                }
            }
            CatchUp::All => {
                if more && let Some(&dropped) = missed.get(MAX_FIRES_PER_TICK) {
                    actions.push(Action::Missed(
                        dropped,
                        format!(
                            "more than {MAX_FIRES_PER_TICK} slots passed while no scheduler ran: \
                             the latest {MAX_FIRES_PER_TICK} fire, older ones are dropped"
                        ),
                    ));
                }
                actions.extend(
                    missed
                        .iter()
                        .take(MAX_FIRES_PER_TICK)
                        .rev()
                        .map(|&t| Action::Fire(t)),
                );
            }
        }
    }
    actions.extend(
        cron.slots_between(cursor.max(late), now, MAX_FIRES_PER_TICK)
            .into_iter()
            .map(Action::Fire),
    );
    actions
}

impl Runner {
    /// Checks and stores a schedule for `tenant_id`: the expression parses and fires again,
    /// the time zone is known, the input is acceptable run input, the pipeline could run
    /// (as a submission is checked), and the tenant has fewer than
    /// [`MAX_SCHEDULES_PER_TENANT`]. Its first slot is the first after now.
    pub async fn create_schedule(
        &self,
        tenant_id: &str,
        req: &ScheduleRequest<'_>,
    ) -> Result<ScheduleRecord, ScheduleError> {
        let expr = req.cron.trim();
        let cron = Cron::parse(expr, req.timezone)?;
        let now = now_ms();
        let next = cron.next_after(now).ok_or_else(|| {
            ScheduleError::InvalidCron(format!("`{}` names no time after now", expr.escape_debug()))
        })?;
        json::check("input", req.input, self.inner.config.max_input_bytes)
            .map_err(ScheduleError::InvalidInput)?;
        self.check_pipeline(tenant_id, req.pipeline)
            .await
            .map_err(|e| match e {
                super::RunError::Store(e) => ScheduleError::Store(e),
                other => ScheduleError::InvalidPipeline(other.to_string()),
            })?;
        let spec = serde_json::to_string(req.pipeline)
            .map_err(|e| ScheduleError::InvalidPipeline(format!("cannot store pipeline: {e}")))?;
        let new = NewSchedule {
            pipeline_id: req.pipeline_id.clone(),
            pipeline_name: req.pipeline.name.clone(),
            spec,
            input: req.input.to_string(),
            cron: expr.to_string(),
            timezone: cron.timezone().to_string(),
            overlap: req.overlap.as_str().to_string(),
            catch_up: req.catch_up.as_str().to_string(),
            next_fire_at: Some(next),
            now,
        };
        let record = self
            .store()
            .create_schedule(tenant_id, &new, MAX_SCHEDULES_PER_TENANT)
            .await?
            .ok_or(ScheduleError::TooMany(MAX_SCHEDULES_PER_TENANT))?;
        tracing::info!(
            schedule_id = %record.id,
            tenant = %tenant_id,
            pipeline = %record.pipeline_name,
            cron = %record.cron,
            timezone = %record.timezone,
            "schedule created"
        );
        Ok(record)
    }

    /// The tenant's schedule with its latest fires (newest first), or `SCHEDULE_NOT_FOUND`.
    pub async fn schedule(
        &self,
        tenant_id: &str,
        id: &str,
    ) -> Result<(ScheduleRecord, Vec<FireRecord>), ScheduleError> {
        let record = self
            .store()
            .schedule(tenant_id, id)
            .await?
            .ok_or_else(|| ScheduleError::NotFound(id.to_string()))?;
        let fires = self.store().schedule_fires(id, 50).await?;
        Ok((record, fires))
    }

    /// Deletes the tenant's schedule (its runs stay); `SCHEDULE_NOT_FOUND` if there is none.
    pub async fn delete_schedule(&self, tenant_id: &str, id: &str) -> Result<(), ScheduleError> {
        if !self.store().delete_schedule(tenant_id, id).await? {
            return Err(ScheduleError::NotFound(id.to_string()));
        }
        tracing::info!(schedule_id = %id, tenant = %tenant_id, "schedule deleted");
        Ok(())
    }

    /// The scheduler: a tick every `config.tick` until `stop` is cancelled.
    pub async fn run_schedules(&self, config: SchedulerConfig, stop: CancellationToken) {
        loop {
            if let Err(e) = self.fire_due_schedules(&config).await {
                tracing::warn!("firing schedules failed (will retry): {e}");
            }
            tokio::select! {
                _ = tokio::time::sleep(config.tick) => {}
                _ = stop.cancelled() => return,
            }
        }
    }

    /// One tick: handles the slots due now of every schedule that has one. Returns how
    /// many runs it started.
    pub async fn fire_due_schedules(&self, config: &SchedulerConfig) -> Result<usize, StoreError> {
        let now = now_ms();
        let grace = i64::try_from(config.grace.as_millis()).unwrap_or(i64::MAX);
        let due = self.store().due_schedules(now, SCHEDULES_PER_TICK).await?;
        let mut started = 0;
        for schedule in due {
            // One schedule that cannot be handled must not hold up the others.
            match self.handle_schedule(&schedule, now, grace, config).await {
                Ok(n) => started += n,
                Err(e) => tracing::warn!(
                    schedule_id = %schedule.id,
                    tenant = %schedule.tenant_id,
                    "handling a schedule failed (will retry): {e}"
                ),
            }
        }
        Ok(started)
    }

    async fn handle_schedule(
        &self,
        schedule: &ScheduleRecord,
        now: i64,
        grace: i64,
        config: &SchedulerConfig,
    ) -> Result<usize, StoreError> {
        let store = self.store();
        let cron = match Cron::parse(&schedule.cron, &schedule.timezone) {
            Ok(cron) => cron,
            Err(e) => {
                // Checked when it was made: only a change of the time zone database (a
                // zone removed) gets here. Stop looking at it; it is still listed.
                tracing::warn!(schedule_id = %schedule.id, "a schedule no longer parses: {e}");
                store
                    .set_next_fire(&schedule.id, schedule.last_fire_at, None)
                    .await?;
                return Ok(0);
            }
        };
        let actions = plan(&cron, schedule, now, grace);
        if actions.is_empty() {
            // Due by its index, yet no slot has come: its next slot is set anew.
            let next = cron.next_after(schedule.last_fire_at.max(now));
            store
                .set_next_fire(&schedule.id, schedule.last_fire_at, next)
                .await?;
            return Ok(0);
        }
        let mut started = 0;
        for action in actions {
            let (slot, handled) = match action {
                Action::Missed(slot, reason) => {
                    let next = cron.next_after(slot);
                    let done = store
                        .record_fire(schedule, slot, next, "missed", &reason)
                        .await?;
                    if done {
                        tracing::info!(
                            schedule_id = %schedule.id,
                            tenant = %schedule.tenant_id,
                            fire_at = slot,
                            reason = %reason,
                            "schedule slot missed"
                        );
                    }
                    (slot, done)
                }
                Action::Fire(slot) => match self.fire(schedule, &cron, slot, config).await? {
                    Some(run) => {
                        started += usize::from(run);
                        (slot, true)
                    }
                    None => (slot, false),
                },
            };
            if !handled {
                // Another host is handling this schedule's slots (or it was deleted):
                // leave the rest to it.
                tracing::debug!(schedule_id = %schedule.id, fire_at = slot, "slot handled elsewhere");
                break;
            }
        }
        Ok(started)
    }

    /// Fires one slot. `Some(true)`: a run was queued; `Some(false)`: the slot was recorded
    /// without a run (skipped or failed); `None`: another host had handled it.
    async fn fire(
        &self,
        schedule: &ScheduleRecord,
        cron: &Cron,
        slot: i64,
        config: &SchedulerConfig,
    ) -> Result<Option<bool>, StoreError> {
        let store = self.store();
        let next = cron.next_after(slot);
        let overlap = Overlap::parse(&schedule.overlap);
        let active = match overlap {
            Overlap::Queue => Vec::new(),
            Overlap::Skip | Overlap::CancelPrevious => {
                store.active_schedule_runs(&schedule.id).await?
            }
        };
        let record = |status: &'static str, reason: String| async move {
            let done = store
                .record_fire(schedule, slot, next, status, &reason)
                .await?;
            if done {
                tracing::info!(
                    schedule_id = %schedule.id,
                    tenant = %schedule.tenant_id,
                    fire_at = slot,
                    status,
                    reason = %reason,
                    "schedule slot not fired"
                );
            }
            Ok::<_, StoreError>(done.then_some(false))
        };
        if overlap == Overlap::Skip
            && let Some(previous) = active.first()
        {
            return record(
                "skipped",
                format!("run {previous} is still active (overlap = skip)"),
            )
            .await;
        }
        let prepared = match self.prepare_run(schedule).await {
            Ok(prepared) => prepared,
            Err(super::RunError::Store(e)) => return Err(e),
            Err(e) => return record("failed", e.to_string()).await,
        };
        let (new, plugin_ids) = prepared;
        let created = store
            .fire_schedule(
                schedule,
                slot,
                next,
                &new,
                config.max_queued_per_tenant,
                &plugin_ids,
                overlap == Overlap::CancelPrevious,
            )
            .await?;
        let Some((run, event)) = created else {
            return match store.schedule_cursor(&schedule.id).await? {
                Some(cursor) if cursor < slot => {
                    record(
                        "failed",
                        super::RunError::TooManyQueued(config.max_queued_per_tenant.unwrap_or(0))
                            .to_string(),
                    )
                    .await
                }
                _ => Ok(None),
            };
        };
        tracing::info!(
            run_id = %run.id,
            tenant = %run.tenant_id,
            pipeline = %run.pipeline_name,
            schedule_id = %schedule.id,
            fire_at = slot,
            "run queued"
        );
        self.bus().publish(event);
        self.inner.wake.notify_one();
        // The cancel requests are committed with the fire; this ends them now, as
        // `corral cancel` would (a queued one at once, a live one here or elsewhere).
        for previous in active.iter().filter(|id| **id != run.id) {
            if let Err(e) = self.cancel(&schedule.tenant_id, previous).await {
                tracing::debug!(run_id = %previous, "cancelling a schedule's previous run: {e}");
            }
        }
        Ok(Some(true))
    }

    /// The run a schedule's fire queues, checked as a submission is.
    async fn prepare_run(
        &self,
        schedule: &ScheduleRecord,
    ) -> Result<(NewRun, Vec<String>), super::RunError> {
        let pipeline = pipeline::parse_json(&schedule.spec, Some(std::path::Path::new("/")))
            .map_err(|e| super::RunError::InvalidPipeline(e.to_string()))?;
        let registry = self.check_pipeline(&schedule.tenant_id, &pipeline).await?;
        let new = super::new_run(
            &schedule.tenant_id,
            schedule.pipeline_id.clone(),
            &pipeline,
            schedule.spec.clone(),
            &schedule.input.to_string(),
        );
        Ok((new, registry.used()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(cursor: i64, catch_up: &str) -> ScheduleRecord {
        ScheduleRecord {
            id: "sch_x".into(),
            tenant_id: "ten_x".into(),
            pipeline_id: None,
            pipeline_name: "p".into(),
            spec: "{}".into(),
            input: serde_json::json!({}),
            cron: "* * * * * *".into(),
            timezone: "UTC".into(),
            overlap: "queue".into(),
            catch_up: catch_up.into(),
            created_at: cursor,
            last_fire_at: cursor,
            next_fire_at: None,
            last_run_id: None,
        }
    }

    #[test]
    fn expressions_and_zones_are_checked() {
        assert!(Cron::parse("*/2 * * * * *", "UTC").is_ok());
        assert!(Cron::parse("0 9 * * MON-FRI", "Europe/Paris").is_ok());
        assert!(Cron::parse("@daily", "America/New_York").is_ok());
        for bad in ["", "not a cron", "61 * * * *", "* * * * * * * *"] {
            assert!(
                matches!(Cron::parse(bad, "UTC"), Err(ScheduleError::InvalidCron(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            Cron::parse("* * * * *", "Mars/Olympus"),
            Err(ScheduleError::InvalidTimezone(_))
        ));
        assert!(matches!(
            Cron::parse(&"1,".repeat(100), "UTC"),
            Err(ScheduleError::InvalidCron(_))
        ));
    }

    #[test]
    fn slots_follow_the_time_zone() {
        // 09:00 in Paris is 08:00 UTC in winter (2026-01-05 is a Monday).
        let cron = Cron::parse("0 9 * * *", "Europe/Paris").unwrap();
        let jan5 = 1_767_571_200_000; // 2026-01-05T00:00:00Z
        assert_eq!(cron.next_after(jan5), Some(jan5 + 8 * 3_600_000));
        let utc = Cron::parse("0 9 * * *", "UTC").unwrap();
        assert_eq!(utc.next_after(jan5), Some(jan5 + 9 * 3_600_000));
    }

    #[test]
    fn a_fresh_cursor_fires_each_slot_within_the_grace_period() {
        let cron = Cron::parse("*/2 * * * * *", "UTC").unwrap();
        let t0 = 1_767_571_200_000;
        let actions = plan(&cron, &record(t0, "none"), t0 + 5_000, 60_000);
        assert_eq!(
            actions,
            vec![Action::Fire(t0 + 2_000), Action::Fire(t0 + 4_000)]
        );
    }

    #[test]
    fn catch_up_decides_what_becomes_of_missed_slots() {
        let cron = Cron::parse("0 * * * * *", "UTC").unwrap(); // every minute
        let t0 = 1_767_571_200_000;
        let now = t0 + 10 * 60_000 + 30_000; // 10.5 minutes later
        let grace = 10_000;
        let none = plan(&cron, &record(t0, "none"), now, grace);
        assert!(matches!(none.as_slice(), [Action::Missed(t, _)] if *t == t0 + 10 * 60_000));
        let latest = plan(&cron, &record(t0, "latest"), now, grace);
        assert_eq!(latest, vec![Action::Fire(t0 + 10 * 60_000)]);
        let all = plan(&cron, &record(t0, "all"), now, grace);
        assert_eq!(
            all,
            (1..=10)
                .map(|m| Action::Fire(t0 + m * 60_000))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn catch_up_all_is_capped_after_a_long_downtime() {
        let cron = Cron::parse("* * * * *", "UTC").unwrap();
        let t0 = 1_767_571_200_000;
        // A year of minutes; no slot within the grace period.
        let now = t0 + 365 * 86_400_000 + 30_000;
        let all = plan(&cron, &record(t0, "all"), now, 30_000);
        let fires = all.iter().filter(|a| matches!(a, Action::Fire(_))).count();
        assert_eq!(fires, MAX_FIRES_PER_TICK);
        assert!(matches!(all.first(), Some(Action::Missed(..))));
        // Oldest first, ending at the latest missed slot.
        let slots: Vec<i64> = all
            .iter()
            .map(|a| match a {
                Action::Fire(t) | Action::Missed(t, _) => *t,
            })
            .collect();
        assert!(slots.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn an_expression_that_never_fires_has_no_next_slot() {
        let cron = Cron::parse("0 0 0 30 2 *", "UTC").unwrap();
        assert_eq!(cron.next_after(1_767_571_200_000), None);
    }
}
