//! Rows as Rust types, and the state changes the run lifecycle makes.

use super::writer::Arg::{Int, OptText, Text};
use super::writer::{Arg, Stmt};
use super::{Result, StoreError};
use serde::Serialize;
use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;
use std::borrow::Cow;

/// The columns of a run row, for `concat!`-built static queries.
macro_rules! run_columns {
    () => {
        "id, tenant_id, pipeline_id, pipeline_name, spec, input, output, status, error_code, \
         error_message, fuel_used, tokens_used, cost_micros, next_seq, cancel_requested, owner, lease_until, claim_seq, \
         restarts, created_at, started_at, finished_at, pause_requested, active_ms, paused_at, \
         schedule_id, scheduled_for"
    };
}

/// Run statuses that end a run.
pub const TERMINAL: &[&str] = &["succeeded", "failed", "cancelled"];
/// Run statuses of a live run (`paused`: live, but nobody executes it until it is resumed).
pub const LIVE: &[&str] = &["queued", "running", "waiting", "paused"];
/// Every run status, for the places that list them (API filters, documents).
pub const RUN_STATUSES: &[&str] = &[
    "queued",
    "running",
    "waiting",
    "paused",
    "succeeded",
    "failed",
    "cancelled",
];

/// `pause_requested`: pause once the current step attempt ends.
pub const PAUSE_AFTER_ATTEMPT: i64 = 1;
/// `pause_requested`: pause now, interrupting the current attempt (re-run on resume).
pub const PAUSE_NOW: i64 = 2;
/// Run statuses a run can be restarted from (`POST /v1/runs/{id}/restart`): the ended
/// ones and `paused`. The restart is one transaction guarded on the run having one of these.
pub const RESTARTABLE: &[&str] = &["succeeded", "failed", "cancelled", "paused"];

/// One event of a run's log. Its JSON is the wire format clients see.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Event {
    /// `queued`, `running`, `complete`, `error`, `retrying`, `log`, `artifact`,
    /// `input_required`, `paused`, `resumed`, `cancelled`, `restarted` (and `tool_call`,
    /// `http`, `model_call`, `model`).
    #[serde(rename = "type")]
    pub kind: String,
    /// The run.
    pub run_id: String,
    /// Strictly increasing per run, from 1.
    pub seq: i64,
    /// RFC 3339 commit time.
    pub ts: String,
    /// Type-specific fields.
    pub payload: Value,
    /// The owning tenant (never sent to clients: the stream is already scoped).
    #[serde(skip)]
    pub tenant_id: String,
}

impl Event {
    pub(super) fn from_row(r: &AnyRow) -> Result<Event> {
        let payload: String = r.try_get("payload")?;
        Ok(Event {
            kind: r.try_get("type")?,
            run_id: r.try_get("run_id")?,
            seq: r.try_get("seq")?,
            ts: r.try_get("ts")?,
            payload: serde_json::from_str(&payload)
                .map_err(|e| StoreError::Corrupt(format!("event payload: {e}")))?,
            tenant_id: r.try_get("tenant_id")?,
        })
    }

    /// Whether this is the run's final event (`complete` with `all_done`).
    pub fn is_final(&self) -> bool {
        self.kind == "complete" && self.payload.get("all_done") == Some(&Value::Bool(true))
    }
}

/// What has been asked of a run, as its executor polls it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRequests {
    /// A cancel was requested.
    pub cancel: bool,
    /// The pause requested: 0, [`PAUSE_AFTER_ATTEMPT`] or [`PAUSE_NOW`].
    pub pause: i64,
    /// The run's status.
    pub status: String,
}

/// What identifies a run in a write: its id and tenant.
#[derive(Debug, Clone)]
pub struct RunRef {
    /// Run id.
    pub id: String,
    /// Tenant id.
    pub tenant_id: String,
}

/// A run to create.
#[derive(Debug, Clone)]
pub struct NewRun {
    /// Owner.
    pub tenant_id: String,
    /// The stored pipeline it came from, if any.
    pub pipeline_id: Option<String>,
    /// The pipeline's name.
    pub pipeline_name: String,
    /// The pipeline as JSON (a snapshot: later edits don't change this run).
    pub spec: String,
    /// Input JSON.
    pub input: String,
    /// (step name, plugin name) in order.
    pub steps: Vec<(String, String)>,
}

/// A run row.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct RunRecord {
    /// Id.
    pub id: String,
    /// Owner.
    pub tenant_id: String,
    /// Stored pipeline id.
    pub pipeline_id: Option<String>,
    /// Pipeline name.
    pub pipeline_name: String,
    /// Pipeline JSON snapshot.
    #[serde(skip)]
    pub spec: String,
    /// Input JSON.
    #[serde(skip)]
    pub input: String,
    /// Output JSON of the last step, when succeeded.
    #[serde(skip)]
    pub output: Option<String>,
    /// `queued`, `running`, `waiting`, `paused`, `succeeded`, `failed`, `cancelled`.
    #[schemars(extend("enum" = ["queued", "running", "waiting", "paused", "succeeded", "failed", "cancelled"]))]
    pub status: String,
    /// Failure code, when failed.
    pub error_code: Option<String>,
    /// Failure message, when failed.
    pub error_message: Option<String>,
    /// Fuel used by all attempts.
    pub fuel_used: i64,
    /// Model tokens (input plus output) used by all attempts.
    pub tokens_used: i64,
    /// What those tokens cost, in millionths of the currency of the operator's model
    /// prices (0 when no prices are configured).
    pub cost_micros: i64,
    /// The seq the next event will get.
    #[serde(skip)]
    pub next_seq: i64,
    /// The seq of the run's latest event (how far a client must read to be current).
    pub last_seq: i64,
    /// Whether cancellation was requested.
    pub cancel_requested: bool,
    /// The host executing it.
    #[serde(skip)]
    pub owner: Option<String>,
    /// Until when (unix ms) the owner's claim holds without renewal.
    #[serde(skip)]
    pub lease_until: Option<i64>,
    /// The scheduler's stamp of its latest claim (orders claims made within one millisecond).
    #[serde(skip)]
    pub claim_seq: Option<i64>,
    /// How many times the run was restarted from a step (0: never).
    pub restarts: i64,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub started_at: Option<i64>,
    /// Unix ms.
    pub finished_at: Option<i64>,
    /// Whether a pause was requested and has not taken effect yet (the run pauses once
    /// its current step attempt ends, or at once with `now`).
    pub pause_requested: bool,
    /// Whether the requested pause interrupts the current attempt (`?now=true`).
    #[serde(skip)]
    pub pause_now: bool,
    /// When the run paused (unix ms), while it is `paused`.
    pub paused_at: Option<i64>,
    /// Wall-clock milliseconds the run executed before its latest pause (its `[budget]
    /// timeout` counts these, never the time it spent paused).
    #[serde(skip)]
    pub active_ms: i64,
    /// The schedule that started it (`sch_...`), if a schedule did.
    pub schedule_id: Option<String>,
    /// The slot (unix ms) its schedule started it for.
    pub scheduled_for: Option<i64>,
}

impl RunRecord {
    pub(super) fn from_row(r: &AnyRow) -> Result<RunRecord> {
        Ok(RunRecord {
            id: r.try_get("id")?,
            tenant_id: r.try_get("tenant_id")?,
            pipeline_id: r.try_get("pipeline_id")?,
            pipeline_name: r.try_get("pipeline_name")?,
            spec: r.try_get("spec")?,
            input: r.try_get("input")?,
            output: r.try_get("output")?,
            status: r.try_get("status")?,
            error_code: r.try_get("error_code")?,
            error_message: r.try_get("error_message")?,
            fuel_used: r.try_get("fuel_used")?,
            tokens_used: r.try_get("tokens_used")?,
            cost_micros: r.try_get("cost_micros")?,
            next_seq: r.try_get("next_seq")?,
            last_seq: r.try_get::<i64, _>("next_seq")? - 1,
            cancel_requested: r.try_get::<i64, _>("cancel_requested")? != 0,
            owner: r.try_get("owner")?,
            lease_until: r.try_get("lease_until")?,
            claim_seq: r.try_get("claim_seq")?,
            restarts: r.try_get("restarts")?,
            created_at: r.try_get("created_at")?,
            started_at: r.try_get("started_at")?,
            finished_at: r.try_get("finished_at")?,
            pause_requested: r.try_get::<i64, _>("pause_requested")? != 0,
            pause_now: r.try_get::<i64, _>("pause_requested")? >= PAUSE_NOW,
            paused_at: r.try_get("paused_at")?,
            active_ms: r.try_get("active_ms")?,
            schedule_id: r.try_get("schedule_id")?,
            scheduled_for: r.try_get("scheduled_for")?,
        })
    }

    /// Whether the run has ended.
    pub fn is_terminal(&self) -> bool {
        TERMINAL.contains(&self.status.as_str())
    }

    /// Whether the run is running or waiting under a lease that expired before `now` (unix
    /// ms): its host is gone (or is this one, and no longer executes it). Crash recovery
    /// takes such runs over, except those the recovering process is executing itself. A
    /// paused run has no host and is never orphaned.
    pub fn is_orphaned(&self, now: i64) -> bool {
        matches!(self.status.as_str(), "running" | "waiting")
            && self.lease_until.is_none_or(|t| t < now)
    }

    /// A reference for writes.
    pub fn as_ref(&self) -> RunRef {
        RunRef {
            id: self.id.clone(),
            tenant_id: self.tenant_id.clone(),
        }
    }
}

/// A step row.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct StepRecord {
    /// Position.
    pub idx: i64,
    /// Step name.
    pub name: String,
    /// Plugin name.
    pub plugin: String,
    /// `queued`, `running`, `waiting`, `retrying`, `succeeded`, `failed`, `cancelled`, `skipped`.
    #[schemars(extend("enum" = ["queued", "running", "waiting", "retrying", "succeeded", "failed", "cancelled", "skipped"]))]
    pub status: String,
    /// The number of its latest attempt (a restart does not reset it: the attempt after a
    /// restart is the next number; a feedback loop starts its generation at 1 again).
    pub attempts: i64,
    /// The generation: how many feedback loops and restarts re-ran this step.
    pub loops: i64,
    /// How many restarts re-ran this step.
    pub restarts: i64,
    /// Attempts made before the latest restart (retries are counted from here).
    #[serde(skip)]
    pub attempt_base: i64,
    /// The generation the latest restart began (feedback loops are counted from here).
    #[serde(skip)]
    pub loop_base: i64,
    /// The feedback the step's attempts get since the restart that gave it (JSON).
    #[schemars(schema_with = "any_json_schema")]
    #[serde(serialize_with = "as_json")]
    pub feedback: Option<String>,
    /// Output JSON, when succeeded.
    #[serde(skip)]
    pub output: Option<String>,
    /// Fuel used by all its attempts.
    pub fuel_used: i64,
    /// Model tokens (input plus output) used by all its attempts.
    pub tokens_used: i64,
    /// What those tokens cost, in millionths of the currency of the operator's model
    /// prices (0 when no prices are configured).
    pub cost_micros: i64,
    /// Failure code.
    pub error_code: Option<String>,
    /// Failure message.
    pub error_message: Option<String>,
    /// Unix ms.
    pub started_at: Option<i64>,
    /// Unix ms.
    pub finished_at: Option<i64>,
}

impl StepRecord {
    pub(super) fn from_row(r: &AnyRow) -> Result<StepRecord> {
        Ok(StepRecord {
            idx: r.try_get("idx")?,
            name: r.try_get("name")?,
            plugin: r.try_get("plugin")?,
            status: r.try_get("status")?,
            attempts: r.try_get("attempts")?,
            loops: r.try_get("loops")?,
            restarts: r.try_get("restarts")?,
            attempt_base: r.try_get("attempt_base")?,
            loop_base: r.try_get("loop_base")?,
            feedback: r.try_get("feedback")?,
            output: r.try_get("output")?,
            fuel_used: r.try_get("fuel_used")?,
            tokens_used: r.try_get("tokens_used")?,
            cost_micros: r.try_get("cost_micros")?,
            error_code: r.try_get("error_code")?,
            error_message: r.try_get("error_message")?,
            started_at: r.try_get("started_at")?,
            finished_at: r.try_get("finished_at")?,
        })
    }
}

/// An attempt row.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct AttemptRecord {
    /// Step position.
    pub step_idx: i64,
    /// Feedback-loop generation.
    pub generation: i64,
    /// 1-based attempt number within the step.
    pub attempt: i64,
    /// `running`, `succeeded`, `failed`, `crashed`, `interrupted` (by a pause with `now`;
    /// the same attempt runs again on resume, and this row then records that run).
    #[schemars(extend("enum" = ["running", "succeeded", "failed", "crashed", "interrupted"]))]
    pub status: String,
    /// Fuel used.
    pub fuel_used: i64,
    /// Failure code.
    pub error_code: Option<String>,
    /// Failure message.
    pub error_message: Option<String>,
    /// Unix ms.
    pub started_at: i64,
    /// Unix ms.
    pub finished_at: Option<i64>,
    /// The feedback the attempt was given (a restart's, or a feedback loop's), if any.
    #[schemars(schema_with = "any_json_schema")]
    #[serde(serialize_with = "as_json")]
    pub feedback: Option<String>,
    /// The output of a succeeded attempt that a restart replaced (history; `null` for the
    /// step's current output, which is the step's, and for attempts that failed).
    #[schemars(schema_with = "any_json_schema")]
    #[serde(serialize_with = "as_json")]
    pub output: Option<String>,
}

/// Stored JSON text serialized as the JSON it holds (`null` for none, and for text that
/// is not JSON, which the host never stores).
pub(crate) fn as_json<S: serde::Serializer>(
    text: &Option<String>,
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    let value: Option<Value> = text.as_deref().and_then(|t| serde_json::from_str(t).ok());
    value.serialize(serializer)
}

/// The schema of any JSON value (or `null`).
pub(crate) fn any_json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({})
}

impl AttemptRecord {
    pub(super) fn from_row(r: &AnyRow) -> Result<AttemptRecord> {
        Ok(AttemptRecord {
            step_idx: r.try_get("step_idx")?,
            generation: r.try_get("generation")?,
            attempt: r.try_get("attempt")?,
            status: r.try_get("status")?,
            fuel_used: r.try_get("fuel_used")?,
            error_code: r.try_get("error_code")?,
            error_message: r.try_get("error_message")?,
            started_at: r.try_get("started_at")?,
            finished_at: r.try_get("finished_at")?,
            feedback: r.try_get("feedback")?,
            output: r.try_get("output")?,
        })
    }
}

/// A question asked by a step (`host.ask`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Question {
    /// Run.
    pub run_id: String,
    /// Step position.
    pub step_idx: i64,
    /// How many feedback loops the step had when it asked (answers replay within one).
    pub generation: i64,
    /// 1 for the step's first question in this generation, 2 for the next, ...
    pub question_no: i64,
    /// The question text.
    pub question: String,
    /// The answer's JSON Schema, if any.
    pub schema: Option<String>,
}

impl Question {
    pub(super) fn from_row(r: &AnyRow) -> Result<Question> {
        Ok(Question {
            run_id: r.try_get("run_id")?,
            step_idx: r.try_get("step_idx")?,
            generation: r.try_get("generation")?,
            question_no: r.try_get("question_no")?,
            question: r.try_get("question")?,
            schema: r.try_get("schema")?,
        })
    }
}

/// An artifact to store.
#[derive(Debug)]
pub struct NewArtifact<'a> {
    /// Step name.
    pub step: &'a str,
    /// File name.
    pub name: &'a str,
    /// MIME type.
    pub media_type: &'a str,
    /// Bytes.
    pub content: &'a [u8],
}

/// An artifact row.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ArtifactRecord {
    /// Id.
    pub id: String,
    /// Run.
    pub run_id: String,
    /// Step name.
    pub step: String,
    /// File name.
    pub name: String,
    /// MIME type.
    pub media_type: String,
    /// Bytes.
    pub size: i64,
    /// `sha256:<hex>` of the content.
    pub digest: String,
    /// Unix ms.
    pub created_at: i64,
}

impl ArtifactRecord {
    pub(super) fn from_row(r: &AnyRow) -> Result<ArtifactRecord> {
        Ok(ArtifactRecord {
            id: r.try_get("id")?,
            run_id: r.try_get("run_id")?,
            step: r.try_get("step")?,
            name: r.try_get("name")?,
            media_type: r.try_get("media_type")?,
            size: r.try_get("size")?,
            digest: r.try_get("digest")?,
            created_at: r.try_get("created_at")?,
        })
    }
}

/// One change within a transition. Guarded changes abort the whole transition when they
/// match no row, which is how "exactly one terminal state" is enforced.
#[derive(Debug, Clone)]
pub enum Change {
    /// Run status `from` one of these `to` another (guarded).
    RunStatus {
        /// Allowed current statuses.
        from: &'static [&'static str],
        /// New status.
        to: &'static str,
    },
    /// Ends the run (guarded: only a live run can end).
    RunFinish {
        /// `succeeded`, `failed` or `cancelled`.
        status: &'static str,
        /// Output JSON, on success.
        output: Option<String>,
        /// Failure code.
        error_code: Option<String>,
        /// Failure message.
        error_message: Option<String>,
    },
    /// Back to the queue after a crash (guarded on `running`/`waiting` and on no cancel
    /// having been requested: a run with a cancel request is finished, never re-queued,
    /// because the scheduler never claims it).
    RunRequeue,
    /// The run pauses (guarded on being in one of `from` with no cancel request: a run
    /// being cancelled ends cancelled instead). It gives up its owner and lease, its pause
    /// request is cleared, and `active_ms` (wall clock executed since its claim) is added to
    /// what its `[budget] timeout` has used.
    RunPause {
        /// Allowed current statuses.
        from: &'static [&'static str],
        /// Milliseconds executed since the run was last claimed.
        active_ms: i64,
    },
    /// A paused run goes back to the queue (guarded on `paused`).
    RunResume,
    /// Guard of crash recovery: the run is still live under `owner` (the host that died)
    /// and that host's lease has expired. A host that renewed in time, or another
    /// recoverer that got there first, makes the whole transition a no-op.
    RunOrphaned {
        /// The owner the recoverer saw (`None`: no owner).
        owner: Option<String>,
    },
    /// Adds fuel to the run and its tenant.
    AddFuel {
        /// Step position.
        step_idx: i64,
        /// Fuel units.
        fuel: i64,
    },
    /// Adds model tokens and their cost to the run, its step and its tenant.
    AddTokens {
        /// Step position.
        step_idx: i64,
        /// Input plus output tokens (negative when a call settles for less than its
        /// reservation).
        tokens: i64,
        /// Their cost in millionths of the price currency.
        cost_micros: i64,
    },
    /// A step attempt starts: the step is `running`, an attempt row is added.
    StepStart {
        /// Step position.
        idx: i64,
        /// Feedback-loop generation of the step.
        generation: i64,
        /// Attempt number within the generation.
        attempt: i64,
        /// The feedback the attempt gets (JSON), recorded on its row.
        feedback: Option<String>,
    },
    /// A step's status changes (guarded when `from` is given).
    StepStatus {
        /// Step position.
        idx: i64,
        /// Allowed current statuses, if guarded.
        from: Option<&'static [&'static str]>,
        /// New status.
        to: &'static str,
    },
    /// An attempt ends.
    AttemptEnd {
        /// Step position.
        idx: i64,
        /// Feedback-loop generation of the step.
        generation: i64,
        /// Attempt number within the generation.
        attempt: i64,
        /// `succeeded`, `failed`, `crashed` or `interrupted`.
        status: &'static str,
        /// Fuel used by the attempt.
        fuel: i64,
        /// Failure code.
        error_code: Option<String>,
        /// Failure message.
        error_message: Option<String>,
    },
    /// A step's attempt was interrupted by a pause: the step is queued again and the same
    /// attempt number runs on resume.
    StepInterrupted {
        /// Step position.
        idx: i64,
        /// The interrupted attempt.
        attempt: i64,
    },
    /// A step succeeded with an output.
    StepSucceeded {
        /// Step position.
        idx: i64,
        /// Output JSON.
        output: String,
    },
    /// A step failed (or was cancelled) for good.
    StepFailed {
        /// Step position.
        idx: i64,
        /// `failed` or `cancelled`.
        status: &'static str,
        /// Code.
        error_code: String,
        /// Message.
        error_message: String,
    },
    /// A feedback loop: this step runs again, and so do the ones after it.
    Loop {
        /// The step sent back to.
        idx: i64,
    },
    /// Steps still queued when a run ends are skipped.
    SkipRemaining,
    /// A restart from step `idx` (guarded: the run's status is one of [`RESTARTABLE`] and
    /// the tenant has fewer than `max_queued` queued runs): the run is queued again with
    /// its end cleared; the output of each step from `idx` on is kept on the attempt that
    /// made it, and those steps start a new generation with their attempt numbers going
    /// on; step `idx` gets `feedback`.
    RunRestart {
        /// The step restarted from.
        idx: i64,
        /// The feedback (JSON) for that step.
        feedback: Option<String>,
        /// The tenant's queued-run cap (`None`: no cap).
        max_queued: Option<i64>,
        /// The queue stamp (see [`super::order_stamp`]).
        queue_seq: i64,
    },
    /// Links the run to the registered plugins it uses (so none can be deleted while it
    /// is live); links it already has are kept.
    LinkPlugins(Vec<String>),
}

impl Change {
    pub(super) fn guarded(&self) -> bool {
        self.guards_run() || matches!(self, Change::StepStatus { from: Some(_), .. })
    }

    /// Whether this change is guarded on the run's row.
    pub(super) fn guards_run(&self) -> bool {
        matches!(
            self,
            Change::RunStatus { .. }
                | Change::RunFinish { .. }
                | Change::RunRequeue
                | Change::RunOrphaned { .. }
                | Change::RunPause { .. }
                | Change::RunResume
                | Change::RunRestart { .. }
        )
    }

    /// This run status change and the numbering of `events` as one guarded statement
    /// returning the run's new `next_seq`, when that is the same as the two in a row:
    /// a status change to a live status (after which the events' own guard, "the run has
    /// not ended", holds), or the run's end (whose events are let through).
    pub(super) fn with_bump(&self, run: &RunRef, now: i64, events: &super::Append) -> Option<Stmt> {
        let k = events.count();
        if k == 0 {
            return None;
        }
        let id = Text(run.id.clone());
        match self {
            Change::RunStatus { from, to } if !TERMINAL.contains(to) => Some(
                Stmt::new(
                    format!(
                        "UPDATE runs SET status = $2, updated_at = $3, next_seq = next_seq + $4 \
                         WHERE id = $1 AND status IN ({}) RETURNING next_seq",
                        in_list(from)
                    ),
                    vec![id, Text((*to).into()), Int(now), Int(k)],
                )
                .guarded(),
            ),
            Change::RunFinish {
                status,
                output,
                error_code,
                error_message,
            } if events.ending => Some(
                Stmt::new(
                    "UPDATE runs SET status = $2, output = $3, error_code = $4, error_message = $5, \
                     finished_at = $6, updated_at = $6, owner = NULL, lease_until = NULL, \
                     next_seq = next_seq + $7 \
                     WHERE id = $1 AND status IN ('queued', 'running', 'waiting', 'paused') \
                     RETURNING next_seq",
                    vec![
                        id,
                        Text((*status).into()),
                        OptText(output.clone()),
                        OptText(error_code.clone()),
                        OptText(error_message.clone()),
                        Int(now),
                        Int(k),
                    ],
                )
                .guarded(),
            ),
            // Not a restart: it is several statements, and its run guard goes first of them
            // (the events' own guard then holds: the run is live again).
            _ => None,
        }
    }

    /// The statements of this change for run `run` at `now` (unix ms); a guarded change is
    /// one guarded statement.
    pub(super) fn stmts(&self, run: &RunRef, now: i64) -> Vec<Stmt> {
        let id = || Text(run.id.clone());
        let opt = |s: &Option<String>| OptText(s.clone());
        let one = |sql: Cow<'static, str>, args: Vec<Arg>| {
            let stmt = Stmt::new(sql, args);
            vec![if self.guarded() { stmt.guarded() } else { stmt }]
        };
        match self {
            Change::RunStatus { from, to } => one(
                format!(
                    "UPDATE runs SET status = $2, updated_at = $3 WHERE id = $1 AND status IN ({})",
                    in_list(from)
                )
                .into(),
                vec![id(), Text((*to).into()), Int(now)],
            ),
            Change::RunFinish {
                status,
                output,
                error_code,
                error_message,
            } => one(
                "UPDATE runs SET status = $2, output = $3, error_code = $4, error_message = $5, \
                 finished_at = $6, updated_at = $6, owner = NULL, lease_until = NULL \
                 WHERE id = $1 AND status IN ('queued', 'running', 'waiting', 'paused')"
                    .into(),
                vec![
                    id(),
                    Text((*status).into()),
                    opt(output),
                    opt(error_code),
                    opt(error_message),
                    Int(now),
                ],
            ),
            Change::RunRequeue => one(
                "UPDATE runs SET status = 'queued', owner = NULL, lease_until = NULL, updated_at = $2 \
                 WHERE id = $1 AND status IN ('running', 'waiting') AND cancel_requested = 0"
                    .into(),
                vec![id(), Int(now)],
            ),
            Change::RunPause { from, active_ms } => one(
                format!(
                    "UPDATE runs SET status = 'paused', owner = NULL, lease_until = NULL, \
                     pause_requested = 0, paused_at = $3, updated_at = $3, \
                     active_ms = active_ms + $2 \
                     WHERE id = $1 AND status IN ({}) AND cancel_requested = 0",
                    in_list(from)
                )
                .into(),
                vec![id(), Int((*active_ms).max(0)), Int(now)],
            ),
            Change::RunResume => one(
                "UPDATE runs SET status = 'queued', paused_at = NULL, pause_requested = 0, \
                 updated_at = $2 WHERE id = $1 AND status = 'paused'"
                    .into(),
                vec![id(), Int(now)],
            ),
            Change::RunOrphaned { owner } => one(
                "UPDATE runs SET updated_at = $3 WHERE id = $1 \
                 AND status IN ('running', 'waiting') AND COALESCE(owner, '') = $2 \
                 AND (lease_until IS NULL OR lease_until < $3)"
                    .into(),
                vec![id(), Text(owner.clone().unwrap_or_default()), Int(now)],
            ),
            // The run, its step and its tenant (the run's, which the reference names).
            Change::AddFuel { step_idx, fuel } => vec![
                Stmt::new(
                    "UPDATE runs SET fuel_used = fuel_used + $2 WHERE id = $1",
                    vec![id(), Int(*fuel)],
                ),
                Stmt::new(
                    "UPDATE steps SET fuel_used = fuel_used + $3 WHERE run_id = $1 AND idx = $2",
                    vec![id(), Int(*step_idx), Int(*fuel)],
                ),
                Stmt::new(
                    "UPDATE tenants SET fuel_used = fuel_used + $2 WHERE id = $1",
                    vec![Text(run.tenant_id.clone()), Int(*fuel)],
                ),
            ],
            Change::AddTokens {
                step_idx,
                tokens,
                cost_micros,
            } => vec![
                Stmt::new(
                    "UPDATE runs SET tokens_used = tokens_used + $2, cost_micros = cost_micros + $3 \
                     WHERE id = $1",
                    vec![id(), Int(*tokens), Int(*cost_micros)],
                ),
                Stmt::new(
                    "UPDATE steps SET tokens_used = tokens_used + $3, cost_micros = cost_micros + $4 \
                     WHERE run_id = $1 AND idx = $2",
                    vec![id(), Int(*step_idx), Int(*tokens), Int(*cost_micros)],
                ),
                Stmt::new(
                    "UPDATE tenants SET tokens_used = tokens_used + $2, cost_micros = cost_micros + $3 \
                     WHERE id = $1",
                    vec![Text(run.tenant_id.clone()), Int(*tokens), Int(*cost_micros)],
                ),
            ],
            Change::StepStart {
                idx,
                generation,
                attempt,
                feedback,
            } => vec![
                Stmt::new(
                    // An attempt a pause interrupted runs again under its own number.
                    "INSERT INTO attempts (run_id, step_idx, generation, attempt, status, \
                     started_at, feedback) VALUES ($1, $2, $3, $4, 'running', $5, $6) \
                     ON CONFLICT (run_id, step_idx, generation, attempt) DO UPDATE \
                     SET status = 'running', started_at = $5, finished_at = NULL, \
                     error_code = NULL, error_message = NULL, feedback = $6",
                    vec![
                        id(),
                        Int(*idx),
                        Int(*generation),
                        Int(*attempt),
                        Int(now),
                        opt(feedback),
                    ],
                ),
                Stmt::new(
                    "UPDATE steps SET status = 'running', attempts = $3, \
                     started_at = COALESCE(started_at, $4), finished_at = NULL \
                     WHERE run_id = $1 AND idx = $2",
                    vec![id(), Int(*idx), Int(*attempt), Int(now)],
                ),
            ],
            Change::StepStatus { idx, from, to } => match from {
                Some(from) => one(
                    format!(
                        "UPDATE steps SET status = $3 WHERE run_id = $1 AND idx = $2 AND status IN ({})",
                        in_list(from)
                    )
                    .into(),
                    vec![id(), Int(*idx), Text((*to).into())],
                ),
                None => one(
                    "UPDATE steps SET status = $3 WHERE run_id = $1 AND idx = $2".into(),
                    vec![id(), Int(*idx), Text((*to).into())],
                ),
            },
            Change::AttemptEnd {
                idx,
                generation,
                attempt,
                status,
                fuel,
                error_code,
                error_message,
            } => one(
                // Added: an attempt interrupted by a pause keeps the fuel it used then.
                "UPDATE attempts SET status = $5, fuel_used = fuel_used + $6, error_code = $7, \
                 error_message = $8, finished_at = $9 \
                 WHERE run_id = $1 AND step_idx = $2 AND generation = $3 AND attempt = $4"
                    .into(),
                vec![
                    id(),
                    Int(*idx),
                    Int(*generation),
                    Int(*attempt),
                    Text((*status).into()),
                    Int(*fuel),
                    opt(error_code),
                    opt(error_message),
                    Int(now),
                ],
            ),
            Change::StepInterrupted { idx, attempt } => one(
                "UPDATE steps SET status = 'queued', attempts = $3 WHERE run_id = $1 AND idx = $2"
                    .into(),
                vec![id(), Int(*idx), Int(attempt.saturating_sub(1).max(0))],
            ),
            Change::StepSucceeded { idx, output } => one(
                "UPDATE steps SET status = 'succeeded', output = $3, error_code = NULL, \
                 error_message = NULL, finished_at = $4 WHERE run_id = $1 AND idx = $2"
                    .into(),
                vec![id(), Int(*idx), Text(output.clone()), Int(now)],
            ),
            Change::StepFailed {
                idx,
                status,
                error_code,
                error_message,
            } => one(
                "UPDATE steps SET status = $3, error_code = $4, error_message = $5, \
                 finished_at = $6 WHERE run_id = $1 AND idx = $2"
                    .into(),
                vec![
                    id(),
                    Int(*idx),
                    Text((*status).into()),
                    Text(error_code.clone()),
                    Text(error_message.clone()),
                    Int(now),
                ],
            ),
            // Every step from the target on runs again as a new generation, so its attempt
            // count restarts and answers given to its previous generation are not replayed.
            Change::Loop { idx } => one(
                "UPDATE steps SET status = 'queued', output = NULL, finished_at = NULL, \
                 attempts = 0, attempt_base = 0, loops = loops + 1 \
                 WHERE run_id = $1 AND idx >= $2"
                    .into(),
                vec![id(), Int(*idx)],
            ),
            Change::SkipRemaining => one(
                "UPDATE steps SET status = 'skipped' WHERE run_id = $1 AND status = 'queued'"
                    .into(),
                vec![id()],
            ),
            Change::LinkPlugins(ids) => super::link_stmt(&run.id, ids).into_iter().collect(),
            Change::RunRestart {
                idx,
                feedback,
                max_queued,
                queue_seq,
            } => vec![
                restart_run_stmt(run, now, *max_queued, *queue_seq).guarded(),
                // The output each step had stays readable, on the attempt that made it (a
                // succeeded step's latest attempt is the one that succeeded).
                Stmt::new(
                    "UPDATE attempts SET output = (SELECT s.output FROM steps s \
                     WHERE s.run_id = attempts.run_id AND s.idx = attempts.step_idx) \
                     WHERE run_id = $1 AND step_idx >= $2 AND status = 'succeeded' \
                     AND EXISTS (SELECT 1 FROM steps s WHERE s.run_id = attempts.run_id \
                     AND s.idx = attempts.step_idx AND s.status = 'succeeded' \
                     AND s.loops = attempts.generation AND s.attempts = attempts.attempt)",
                    vec![id(), Int(*idx)],
                ),
                // A new generation (answers and recorded model calls of the old one are not
                // replayed); attempt numbers go on, retries and loops count from here.
                Stmt::new(
                    "UPDATE steps SET status = 'queued', output = NULL, error_code = NULL, \
                     error_message = NULL, finished_at = NULL, feedback = NULL, \
                     loops = loops + 1, loop_base = loops + 1, restarts = restarts + 1, \
                     attempt_base = attempts WHERE run_id = $1 AND idx >= $2",
                    vec![id(), Int(*idx)],
                ),
                Stmt::new(
                    "UPDATE steps SET feedback = $3 WHERE run_id = $1 AND idx = $2",
                    vec![id(), Int(*idx), opt(feedback)],
                ),
            ],
        }
    }
}

/// The guarded statement that puts an ended run back in the queue for a restart.
fn restart_run_stmt(run: &RunRef, now: i64, max_queued: Option<i64>, queue_seq: i64) -> Stmt {
    let sql = format!(
        "UPDATE runs SET status = 'queued', output = NULL, error_code = NULL, \
         error_message = NULL, finished_at = NULL, cancel_requested = 0, owner = NULL, \
         lease_until = NULL, queue_seq = $3, restarts = restarts + 1, updated_at = $2, \
         pause_requested = 0, paused_at = NULL, active_ms = 0 \
         WHERE id = $1 AND status IN ({}) \
         AND ($4 < 0 OR (SELECT COUNT(*) FROM runs q WHERE q.tenant_id = $5 \
                         AND q.status = 'queued') < $4)",
        in_list(RESTARTABLE)
    );
    let args = vec![
        Text(run.id.clone()),
        Int(now),
        Int(queue_seq),
        Int(max_queued.map_or(-1, |n| n.max(0))),
        Text(run.tenant_id.clone()),
    ];
    Stmt::new(sql, args)
}

/// `'a', 'b'` for an `IN (...)` list. Only ever called with the `&'static` status names
/// of [`Change`], never with user input: that is what makes the `AssertSqlSafe` above true.
fn in_list(items: &[&str]) -> String {
    items
        .iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(", ")
}
