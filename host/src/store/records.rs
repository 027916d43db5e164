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
         created_at, started_at, finished_at, schedule_id, scheduled_for"
    };
}

/// Run statuses that end a run.
pub const TERMINAL: &[&str] = &["succeeded", "failed", "cancelled"];
/// Run statuses of a live run.
pub const LIVE: &[&str] = &["queued", "running", "waiting"];

/// One event of a run's log. Its JSON is the wire format clients see.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Event {
    /// `queued`, `running`, `complete`, `error`, `retrying`, `log`, `artifact`,
    /// `input_required`, `cancelled`.
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
    /// `queued`, `running`, `waiting`, `succeeded`, `failed`, `cancelled`.
    #[schemars(extend("enum" = ["queued", "running", "waiting", "succeeded", "failed", "cancelled"]))]
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
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub started_at: Option<i64>,
    /// Unix ms.
    pub finished_at: Option<i64>,
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
            created_at: r.try_get("created_at")?,
            started_at: r.try_get("started_at")?,
            finished_at: r.try_get("finished_at")?,
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
    /// takes such runs over, except those the recovering process is executing itself.
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
    /// Attempts made in the current generation.
    pub attempts: i64,
    /// The generation: how many feedback loops re-ran this step.
    pub loops: i64,
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
    /// `running`, `succeeded`, `failed`, `crashed`.
    #[schemars(extend("enum" = ["running", "succeeded", "failed", "crashed"]))]
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
        /// `succeeded`, `failed` or `crashed`.
        status: &'static str,
        /// Fuel used by the attempt.
        fuel: i64,
        /// Failure code.
        error_code: Option<String>,
        /// Failure message.
        error_message: Option<String>,
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
                     WHERE id = $1 AND status IN ('queued', 'running', 'waiting') \
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
                 WHERE id = $1 AND status IN ('queued', 'running', 'waiting')"
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
            } => vec![
                Stmt::new(
                    "INSERT INTO attempts (run_id, step_idx, generation, attempt, status, started_at) \
                     VALUES ($1, $2, $3, $4, 'running', $5)",
                    vec![id(), Int(*idx), Int(*generation), Int(*attempt), Int(now)],
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
                "UPDATE attempts SET status = $5, fuel_used = $6, error_code = $7, \
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
                 attempts = 0, loops = loops + 1 WHERE run_id = $1 AND idx >= $2"
                    .into(),
                vec![id(), Int(*idx)],
            ),
            Change::SkipRemaining => one(
                "UPDATE steps SET status = 'skipped' WHERE run_id = $1 AND status = 'queued'"
                    .into(),
                vec![id()],
            ),
        }
    }
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
