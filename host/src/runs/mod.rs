//! Runs: pipelines as data, the durable run lifecycle, and the scheduler.
//!
//! A run moves `queued -> running -> (waiting) -> succeeded | failed | cancelled`, and
//! `running | waiting | queued -> paused -> queued` when it is paused and resumed; each
//! transition is committed with its event before the event is published. A restart
//! ([`Runner::restart`]) takes an ended (or paused) run back to `queued` for a new
//! segment, which ends in exactly one terminal state of its own. The executor
//! (`executor.rs`) drives one run through its steps; the [`Runner`] owns the scheduler,
//! crash recovery, cancellation, pauses and answers.

mod executor;
mod guest_events;
pub mod manifest;
pub mod pipeline;
pub mod schedules;
mod services;
mod tool_run;
pub mod webhooks;

pub use tool_run::{TOOL_CALL_FUEL, TOOL_CALL_TIMEOUT, ToolCallRun, stored_specs};

use crate::engine::{Engine, ErrorCode, json};
use crate::events::Bus;
use crate::store::{Change, Event, NewRun, RunRecord, Store, StoreError};
use pipeline::Pipeline;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

/// Why a run request was refused. `code` values are stable.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No such run (or another tenant's).
    #[error("RUN_NOT_FOUND: no run `{0}`")]
    NotFound(String),
    /// The run has ended; nothing changed.
    #[error("ALREADY_FINISHED: run `{0}` has already finished ({1})")]
    AlreadyFinished(String, String),
    /// The run is not waiting for input.
    #[error("NOT_WAITING: run `{0}` is not waiting for input")]
    NotWaiting(String),
    /// The run is not paused (resume); the second field is its status.
    #[error("NOT_PAUSED: run `{0}` is not paused (it is {1})")]
    NotPaused(String, String),
    /// The answer does not match the question's schema.
    #[error("INVALID_ANSWER: {0}")]
    InvalidAnswer(String),
    /// The pipeline or its plugins are not usable.
    #[error("INVALID_PIPELINE: {0}")]
    InvalidPipeline(String),
    /// The input is not acceptable.
    #[error("INVALID_INPUT: {0}")]
    InvalidInput(String),
    /// The run is still queued, running or waiting: only an ended run can be restarted.
    #[error(
        "RUN_ACTIVE: run `{0}` is {1}; only an ended (succeeded, failed, cancelled) or paused run can be restarted"
    )]
    StillActive(String, String),
    /// The run's pipeline has no step of that name.
    #[error("UNKNOWN_STEP: run `{0}` has no step `{1}` (its steps: {2})")]
    UnknownStep(String, String, String),
    /// A step before the one to restart from has not succeeded, so it has no output to reuse.
    #[error(
        "STEP_NOT_REACHED: step `{0}` cannot be restarted: step `{1}` before it has not succeeded (restart from `{1}` or earlier)"
    )]
    StepNotReached(String, String),
    /// The restart's feedback or reason is not acceptable.
    #[error("INVALID_FEEDBACK: {0}")]
    InvalidFeedback(String),
    /// The run was restarted as often as a run may be.
    #[error(
        "RESTART_LIMIT: run `{0}` was restarted {1} times, as often as a run may be; start a new run"
    )]
    RestartLimit(String, i64),
    /// The tenant has as many queued runs as it may; nothing was queued.
    #[error(
        "TOO_MANY_QUEUED_RUNS: this tenant already has {0} queued runs; wait for some to start"
    )]
    TooManyQueued(i64),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RunError {
    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            RunError::NotFound(_) => "RUN_NOT_FOUND",
            RunError::AlreadyFinished(..) => "ALREADY_FINISHED",
            RunError::NotWaiting(_) => "NOT_WAITING",
            RunError::NotPaused(..) => "NOT_PAUSED",
            RunError::InvalidAnswer(_) => "INVALID_ANSWER",
            RunError::InvalidPipeline(_) => "INVALID_PIPELINE",
            RunError::InvalidInput(_) => "INVALID_INPUT",
            RunError::TooManyQueued(_) => "TOO_MANY_QUEUED_RUNS",
            RunError::StillActive(..) => "RUN_ACTIVE",
            RunError::UnknownStep(..) => "UNKNOWN_STEP",
            RunError::StepNotReached(..) => "STEP_NOT_REACHED",
            RunError::InvalidFeedback(_) => "INVALID_FEEDBACK",
            RunError::RestartLimit(..) => "RESTART_LIMIT",
            RunError::Store(_) => "STORE_ERROR",
        }
    }
}

/// Largest feedback a restart accepts (JSON text; the answers' and run inputs' checks of
/// depth apply too).
pub const MAX_FEEDBACK_BYTES: usize = 64 << 10;
/// Feedback up to this size is carried whole in the `restarted` event; larger feedback is
/// left out of it (the event says how large it was) and read from the run's steps.
pub const EVENT_FEEDBACK_BYTES: usize = 8 << 10;
/// Longest reason a restart accepts, in characters.
pub const MAX_REASON_CHARS: usize = 1000;
/// Most restarts of one run: each keeps the replaced outputs and attempts as history, so
/// a client restarting in a loop must not grow a run's record without end.
pub const MAX_RESTARTS: i64 = 100;

/// A restart of an ended run from one of its steps (see [`Runner::restart`]).
#[derive(Debug, Clone, Default)]
pub struct Restart {
    /// The step the run goes on from.
    pub from_step: String,
    /// A person's feedback for that step (JSON text), which it gets as `ctx.feedback`.
    pub feedback: Option<String>,
    /// Why, for the `restarted` event (free text).
    pub reason: Option<String>,
}

/// A run queued again by [`Runner::restart`].
#[derive(Debug, Clone)]
pub struct Restarted {
    /// The run, as queued again.
    pub run: RunRecord,
    /// The step it goes on from.
    pub step: String,
    /// The attempt number that step's next attempt gets.
    pub attempt: i64,
    /// The seq of the `restarted` event (a client following the run resumes after
    /// `seq - 1`).
    pub seq: i64,
}

/// Scheduler settings.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Runs executed at once.
    pub max_concurrent_runs: usize,
    /// How long a host's claim on a run lasts without renewal. After a crash, another
    /// host (or this one restarted) recovers the run once the lease has expired.
    pub lease: Duration,
    /// Largest run input accepted.
    pub max_input_bytes: usize,
    /// Largest artifact a step may store.
    pub max_artifact_bytes: usize,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig {
            max_concurrent_runs: 8,
            lease: Duration::from_secs(15),
            max_input_bytes: 16 << 20,
            max_artifact_bytes: 16 << 20,
        }
    }
}

/// Runs pipelines: submits, schedules, executes, recovers, cancels and answers.
#[derive(Clone)]
pub struct Runner {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) engine: Engine,
    pub(crate) store: Store,
    pub(crate) bus: Bus,
    pub(crate) config: RunnerConfig,
    /// This host's identity in run leases.
    pub(crate) owner: String,
    /// Runs executing in this process.
    pub(crate) live: Mutex<HashMap<String, Live>>,
    wake: Notify,
    /// The operator's models (`corral:plugin/model`), when any are configured.
    pub(crate) models: std::sync::OnceLock<Arc<dyn crate::models::ModelGateway>>,
    /// Where [`Runner::work`] reports the id of each run it claims (see [`Runner::claims`]).
    claims: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedSender<String>>>,
}

/// Handles to a run executing in this process.
#[derive(Clone)]
pub(crate) struct Live {
    pub(crate) cancel: CancellationToken,
    pub(crate) answered: Arc<Notify>,
    /// The run's fuel total as committed (from its claim, plus every charge since), so
    /// budgets and the final event need no read of the run.
    pub(crate) fuel: Arc<std::sync::atomic::AtomicI64>,
    /// The run's model tokens as committed (from its claim, plus every charge since), for
    /// its `[budget] tokens`.
    pub(crate) tokens: Arc<std::sync::atomic::AtomicU64>,
    /// A pause was requested: the run pauses before its next step attempt.
    pub(crate) pause: CancellationToken,
    /// Stops the current step attempt without cancelling the run (a child of `cancel`):
    /// a pause with `now`, or a pause of a run waiting for input. The attempt runs again
    /// on resume.
    pub(crate) interrupt: CancellationToken,
}

impl Live {
    /// Asks the executing run to pause: after its current attempt, or interrupting it.
    pub(crate) fn request_pause(&self, now: bool) {
        self.pause.cancel();
        if now {
            self.interrupt.cancel();
        }
    }
}

/// What a pause request did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PauseRequested {
    /// The run's status now: `paused` when it has paused already (it was queued, or
    /// paused before), else `running` or `waiting` (it pauses once its current attempt
    /// ends, or within moments with `now`).
    pub status: String,
}

impl Runner {
    /// A runner over an engine and a store.
    pub fn new(engine: Engine, store: Store, config: RunnerConfig) -> Runner {
        // The bus also carries what other processes commit to this store.
        let bus = Bus::watching(store.clone());
        Runner {
            inner: Arc::new(Inner {
                engine,
                store,
                bus,
                config,
                owner: crate::store::new_id("host"),
                live: Mutex::new(HashMap::new()),
                wake: Notify::new(),
                models: std::sync::OnceLock::new(),
                claims: std::sync::Mutex::new(None),
            }),
        }
    }

    /// The id of every run [`Runner::work`] claims from now on (`corral worker
    /// --until-idle` reports what it executed). One receiver at a time: a new call replaces
    /// the previous one. Unbounded: for a `work` that ends, not for a server's.
    pub fn claims(&self) -> tokio::sync::mpsc::UnboundedReceiver<String> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        *self
            .inner
            .claims
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(tx);
        rx
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Gives the runner its model gateway (once; a second call changes nothing and
    /// answers false).
    pub fn set_models(&self, gateway: Arc<dyn crate::models::ModelGateway>) -> bool {
        self.inner.models.set(gateway).is_ok()
    }

    /// The model aliases configured for `tenant_id` (none without a gateway).
    pub fn model_aliases(&self, tenant_id: &str) -> Vec<String> {
        self.models()
            .map(|g| g.aliases(tenant_id))
            .unwrap_or_default()
    }

    /// The model gateway, if one was set.
    pub fn models(&self) -> Option<&Arc<dyn crate::models::ModelGateway>> {
        self.inner.models.get()
    }

    /// The event bus.
    pub fn bus(&self) -> &Bus {
        &self.inner.bus
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// Commits `changes` with `event` and publishes the event. `Ok(false)`: a guard failed
    /// (the state had moved on) and nothing was written.
    pub(crate) async fn commit(
        &self,
        run: &crate::store::RunRef,
        changes: &[Change],
        event: Option<(&str, serde_json::Value)>,
    ) -> Result<bool, StoreError> {
        match self.inner.store.commit(run, changes, event).await? {
            None => Ok(false),
            Some(event) => {
                if let Some(event) = event {
                    self.inner.bus.publish(event);
                }
                Ok(true)
            }
        }
    }

    /// Commits `changes` with several events in one transaction, then publishes them.
    pub(crate) async fn commit_many(
        &self,
        run: &crate::store::RunRef,
        changes: &[Change],
        events: &[(&str, serde_json::Value)],
    ) -> Result<bool, StoreError> {
        match self.inner.store.commit_many(run, changes, events).await? {
            None => Ok(false),
            Some(written) => {
                for event in written {
                    self.inner.bus.publish(event);
                }
                Ok(true)
            }
        }
    }

    /// Appends `events` to a run's log in one transaction, then publishes them (none if
    /// the run has ended meanwhile).
    pub(crate) async fn commit_events(
        &self,
        run: &crate::store::RunRef,
        events: &[(&str, serde_json::Value)],
    ) -> Result<(), StoreError> {
        if !events.is_empty() {
            self.commit_many(run, &[], events).await?;
        }
        Ok(())
    }

    /// Checks a pipeline (its plugins load and are agents) and the input, then queues a run.
    pub async fn submit(
        &self,
        tenant_id: &str,
        pipeline: &Pipeline,
        pipeline_id: Option<String>,
        input: &str,
    ) -> Result<RunRecord, RunError> {
        self.submit_capped(tenant_id, pipeline, pipeline_id, input, None)
            .await
    }

    /// [`Runner::submit`], refused with `TOO_MANY_QUEUED_RUNS` when the tenant already has
    /// `max_queued` queued runs. The check and the insert are atomic, so the cap is exact
    /// under any number of concurrent submissions.
    pub async fn submit_capped(
        &self,
        tenant_id: &str,
        pipeline: &Pipeline,
        pipeline_id: Option<String>,
        input: &str,
        max_queued: Option<i64>,
    ) -> Result<RunRecord, RunError> {
        json::check("input", input, self.inner.config.max_input_bytes)
            .map_err(RunError::InvalidInput)?;
        // Load every plugin now, so a bad pipeline fails before anything is queued.
        let registry = self.check_pipeline(tenant_id, pipeline).await?;
        let spec = serde_json::to_string(pipeline)
            .map_err(|e| RunError::InvalidPipeline(format!("cannot store pipeline: {e}")))?;
        let new = new_run(tenant_id, pipeline_id, pipeline, spec, input);
        let created = self
            .inner
            .store
            .create_run_linked(&new, max_queued, &registry.used())
            .await?;
        let Some((run, event)) = created else {
            tracing::warn!(
                tenant = %tenant_id,
                max_queued = max_queued.unwrap_or(0),
                "run refused: the tenant's queue is full (429)"
            );
            return Err(RunError::TooManyQueued(max_queued.unwrap_or(0)));
        };
        tracing::info!(
            run_id = %run.id,
            tenant = %tenant_id,
            pipeline = %run.pipeline_name,
            "run queued"
        );
        self.inner.bus.publish(event);
        self.inner.wake.notify_one();
        Ok(run)
    }

    /// Checks `pipeline` for `tenant_id` exactly as a submission is checked: every plugin,
    /// manifest and tool loads. `POST /v1/pipelines` and `POST /v1/runs` share it, so a
    /// stored pipeline is one that could run. Returns the registry it resolved against.
    pub async fn check_pipeline(
        &self,
        tenant_id: &str,
        pipeline: &Pipeline,
    ) -> Result<StoreRegistry, RunError> {
        let registry = StoreRegistry::new(self.inner.store.clone(), tenant_id);
        pipeline
            .load_plugins(&self.inner.engine, Some(&registry))
            .await
            .map_err(|e| RunError::InvalidPipeline(e.to_string()))?;
        let manifests = pipeline
            .manifests(Some(&registry))
            .await
            .map_err(|e| RunError::InvalidPipeline(e.to_string()))?;
        pipeline
            .load_tools(&self.inner.engine, Some(&registry), &manifests)
            .await
            .map_err(|e| RunError::InvalidPipeline(e.to_string()))?;
        pipeline
            .check_models(&manifests, &self.model_aliases(tenant_id))
            .map_err(|e| RunError::InvalidPipeline(e.to_string()))?;
        Ok(registry)
    }

    /// Follows a run's events after `after` (0 = all), ending after its final event.
    pub async fn subscribe(
        &self,
        tenant_id: &str,
        run_id: &str,
        after: i64,
    ) -> Result<tokio::sync::mpsc::Receiver<Event>, RunError> {
        self.own_run(tenant_id, run_id).await?;
        Ok(crate::events::subscribe(
            self.inner.store.clone(),
            &self.inner.bus,
            run_id.to_string(),
            after,
        ))
    }

    /// Cancels a queued, running, waiting, retrying or paused run. A finished run is
    /// refused with `ALREADY_FINISHED` and left unchanged.
    pub async fn cancel(&self, tenant_id: &str, run_id: &str) -> Result<(), RunError> {
        let store = &self.inner.store;
        let run = self.own_run(tenant_id, run_id).await?;
        if run.is_terminal() {
            return Err(RunError::AlreadyFinished(run.id, run.status));
        }
        let status = store.request_cancel(run_id).await?.unwrap_or_default();
        tracing::info!(run_id = %run_id, tenant = %tenant_id, status = %status, "run cancel requested");
        if let Some(live) = self.live(run_id) {
            live.cancel.cancel();
            // A run that paused has let go of its execution here (which may not have
            // left yet): it is ended below.
            if status != "paused" {
                return Ok(());
            }
        }
        match status.as_str() {
            // Nobody is executing it, and with the flag set nobody will claim or resume
            // it: end it here (guarded, so it still ends exactly once whoever else tries).
            "queued" | "paused" => {
                if executor::finish_cancelled(self, &run.as_ref(), None, run.fuel_used).await? {
                    tracing::info!(
                        run_id = %run_id,
                        tenant = %tenant_id,
                        status = "cancelled",
                        code = "CANCELLED",
                        note = if status == "paused" { "cancelled while paused" } else { "cancelled while queued" },
                        "run finished"
                    );
                }
                Ok(())
            }
            s if crate::store::TERMINAL.contains(&s) => {
                Err(RunError::AlreadyFinished(run.id, status))
            }
            // Running or waiting in another process: it polls the flag and stops within a
            // second. If that host is gone (its lease expired), nobody polls: end it here,
            // as recovery would. Before the lease expires, recovery will (it finishes a run
            // with a cancel request as cancelled, never re-queues it).
            _ => {
                if let Some(now) = store.run(run_id).await?
                    && now.is_orphaned(crate::store::now_ms())
                    && let Err(e) = executor::recover_run(self, &now).await
                {
                    // The flag is set: the recovery loop finishes it.
                    tracing::warn!("ending cancelled run {run_id} failed (will retry): {e}");
                }
                Ok(())
            }
        }
    }

    /// Restarts an ended run (one of [`crate::store::RESTARTABLE`]) from step
    /// `req.from_step`: the same run is queued again and goes on from that step, reusing
    /// the outputs of the steps before it (never running them again). The step gets the
    /// feedback as `ctx.feedback` and the next attempt number; it and the steps after it
    /// start a new generation, and the outputs they had stay readable on their attempts.
    /// The change and its `restarted` event are one transaction guarded on the run still
    /// being ended, so two restarts racing queue it once. Spent fuel, tokens and cost keep
    /// adding up (the run's fuel budget covers every segment); the wall-clock budget starts
    /// again, as it does when a run is recovered.
    pub async fn restart(
        &self,
        tenant_id: &str,
        run_id: &str,
        req: &Restart,
        max_queued: Option<i64>,
    ) -> Result<Restarted, RunError> {
        let store = &self.inner.store;
        let run = self.own_run(tenant_id, run_id).await?;
        if !crate::store::RESTARTABLE.contains(&run.status.as_str()) {
            return Err(RunError::StillActive(run.id, run.status));
        }
        if run.restarts >= MAX_RESTARTS {
            return Err(RunError::RestartLimit(run.id, run.restarts));
        }
        let feedback = match req.feedback.as_deref() {
            None => None,
            Some(text) => {
                json::check("feedback", text, MAX_FEEDBACK_BYTES)
                    .map_err(RunError::InvalidFeedback)?;
                let value: serde_json::Value = serde_json::from_str(text)
                    .map_err(|e| RunError::InvalidFeedback(format!("feedback: {e}")))?;
                (!value.is_null()).then(|| value.to_string())
            }
        };
        let reason = req
            .reason
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty());
        if let Some(r) = reason {
            if r.chars().count() > MAX_REASON_CHARS {
                return Err(RunError::InvalidFeedback(format!(
                    "reason: at most {MAX_REASON_CHARS} characters"
                )));
            }
            if r.contains('\0') {
                return Err(RunError::InvalidFeedback("reason: contains NUL".into()));
            }
        }
        let steps = store.steps(run_id).await?;
        let Some(step) = steps.iter().find(|s| s.name == req.from_step) else {
            let names: Vec<String> = steps.iter().map(|s| format!("`{}`", s.name)).collect();
            return Err(RunError::UnknownStep(
                run.id,
                crate::capabilities::log::neutralise(&req.from_step, 100),
                names.join(", "),
            ));
        };
        if let Some(before) = steps
            .iter()
            .take_while(|s| s.idx < step.idx)
            .find(|s| s.status != "succeeded")
        {
            return Err(RunError::StepNotReached(
                step.name.clone(),
                before.name.clone(),
            ));
        }
        // Its plugins must still load (one may have been deleted since the run ended);
        // the run is linked to them again, so none can be deleted while it is live.
        let pipeline = pipeline::parse_json(&run.spec, Some(std::path::Path::new("/")))
            .map_err(|e| RunError::InvalidPipeline(e.to_string()))?;
        let registry = self.check_pipeline(tenant_id, &pipeline).await?;
        let attempt = step.attempts + 1;
        let mut payload = serde_json::json!({
            "step_id": step.name,
            "agent_type": step.plugin,
            "attempt": attempt,
            "restart": run.restarts + 1,
            "previous_status": run.status,
            "previous_error_code": run.error_code,
            "reason": reason,
            "feedback": null,
        });
        if let (Some(obj), Some(text)) = (payload.as_object_mut(), &feedback) {
            if text.len() <= EVENT_FEEDBACK_BYTES {
                obj.insert(
                    "feedback".into(),
                    serde_json::from_str(text).unwrap_or_default(),
                );
            } else {
                obj.insert(
                    "feedback_omitted_bytes".into(),
                    serde_json::json!(text.len()),
                );
            }
        }
        let changes = [
            crate::store::Change::RunRestart {
                idx: step.idx,
                feedback: feedback.clone(),
                max_queued,
                queue_seq: crate::store::order_stamp(),
            },
            crate::store::Change::LinkPlugins(registry.used()),
        ];
        let written = store
            .commit_many(&run.as_ref(), &changes, &[("restarted", payload)])
            .await?;
        let Some(event) = written.and_then(|mut events| events.pop()) else {
            // The guard failed: another restart (or, for a capped tenant, a full queue).
            return Err(match store.run(run_id).await? {
                Some(now) if crate::store::RESTARTABLE.contains(&now.status.as_str()) => {
                    RunError::TooManyQueued(max_queued.unwrap_or(0))
                }
                Some(now) => RunError::StillActive(now.id, now.status),
                None => RunError::NotFound(run_id.to_string()),
            });
        };
        let seq = event.seq;
        self.inner.bus.publish(event);
        self.inner.wake.notify_one();
        tracing::info!(
            run_id = %run_id,
            tenant = %tenant_id,
            step = %step.name,
            attempt,
            previous_status = %run.status,
            "run restarted"
        );
        let run = store
            .run(run_id)
            .await?
            .ok_or_else(|| RunError::NotFound(run_id.to_string()))?;
        Ok(Restarted {
            run,
            step: step.name.clone(),
            attempt,
            seq,
        })
    }

    /// Finishes queued and paused runs that have a cancel request as cancelled (the
    /// scheduler never claims them). A cancel normally ends such a run itself; this covers
    /// a canceller that died between setting the flag and ending the run, and a cancel
    /// that raced the run's pause.
    pub async fn finish_cancel_requested(&self) -> Result<usize, RunError> {
        let runs = self.inner.store.cancel_requested_queued(100).await?;
        let mut n = 0;
        for run in &runs {
            if executor::finish_cancelled(self, &run.as_ref(), None, run.fuel_used).await? {
                tracing::info!(
                    run_id = %run.id,
                    tenant = %run.tenant_id,
                    status = "cancelled",
                    code = "CANCELLED",
                    note = "cancelled while queued or paused",
                    "run finished"
                );
                n += 1;
            }
        }
        Ok(n)
    }

    /// Pauses a run. A queued run pauses at once, before it starts. A running run pauses
    /// once its current step attempt ends (it commits `paused` before its next one), or
    /// with `now` at once: the attempt is interrupted and runs again, under the same
    /// attempt number, when the run is resumed (at-least-once, as after a crash). A run
    /// waiting for input pauses at once either way (its step re-runs on resume; an answer
    /// given meanwhile is recorded and replayed). A paused run holds no worker slot and no
    /// lease, and crash recovery leaves it alone. Pausing a paused run changes nothing; a
    /// finished run is refused with `ALREADY_FINISHED`.
    pub async fn pause(
        &self,
        tenant_id: &str,
        run_id: &str,
        now: bool,
    ) -> Result<PauseRequested, RunError> {
        let store = &self.inner.store;
        let run = self.own_run(tenant_id, run_id).await?;
        if run.is_terminal() {
            return Err(RunError::AlreadyFinished(run.id, run.status));
        }
        if run.status == "paused" {
            return Ok(PauseRequested { status: run.status });
        }
        let mode = if now {
            crate::store::PAUSE_NOW
        } else {
            crate::store::PAUSE_AFTER_ATTEMPT
        };
        let status = store.request_pause(run_id, mode).await?.unwrap_or_default();
        tracing::info!(run_id = %run_id, tenant = %tenant_id, status = %status, now, "run pause requested");
        if status == "queued" {
            // Not started (or queued again): it pauses here, unless a scheduler claimed it
            // meanwhile; then its executor sees the request before its first step.
            let paused = self
                .commit(
                    &run.as_ref(),
                    &[Change::RunPause {
                        from: &["queued"],
                        active_ms: 0,
                    }],
                    Some(("paused", json_paused(run_id, None, None))),
                )
                .await?;
            if paused {
                tracing::info!(run_id = %run_id, tenant = %tenant_id, note = "paused while queued", "run paused");
                return Ok(PauseRequested {
                    status: "paused".into(),
                });
            }
        }
        if let Some(live) = self.live(run_id) {
            // Waiting for a person holds a worker slot for as long as nobody answers: a
            // pause does not wait for that.
            live.request_pause(now || status == "waiting");
        } else if let Some(fresh) = store.run(run_id).await?
            && fresh.is_orphaned(crate::store::now_ms())
            && let Err(e) = executor::recover_run(self, &fresh).await
        {
            // Its host is gone: recovery pauses it (the request is stored).
            tracing::warn!("pausing orphaned run {run_id} failed (recovery will): {e}");
        }
        let status = store.run(run_id).await?.map(|r| r.status).unwrap_or(status);
        if crate::store::TERMINAL.contains(&status.as_str()) {
            return Err(RunError::AlreadyFinished(run_id.to_string(), status));
        }
        Ok(PauseRequested { status })
    }

    /// Resumes a paused run: it is queued again and continues, on any node, with the step
    /// after the last one that succeeded (or the attempt a pause interrupted). A run that
    /// is not paused is refused with `NOT_PAUSED` (`ALREADY_FINISHED` when it has ended).
    pub async fn resume(&self, tenant_id: &str, run_id: &str) -> Result<(), RunError> {
        let run = self.own_run(tenant_id, run_id).await?;
        if run.is_terminal() {
            return Err(RunError::AlreadyFinished(run.id, run.status));
        }
        if run.status != "paused" {
            return Err(RunError::NotPaused(run.id, run.status));
        }
        let resumed = self
            .commit(
                &run.as_ref(),
                &[Change::RunResume],
                Some(("resumed", serde_json::json!({"run_id": run_id}))),
            )
            .await?;
        if !resumed {
            // Resumed, cancelled or ended meanwhile.
            let now = self.own_run(tenant_id, run_id).await?;
            return Err(if now.is_terminal() {
                RunError::AlreadyFinished(now.id, now.status)
            } else {
                RunError::NotPaused(now.id, now.status)
            });
        }
        tracing::info!(run_id = %run_id, tenant = %tenant_id, "run resumed");
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Answers the question a waiting run asked. The answer is validated against the
    /// question's schema; a wrong one is refused with the reason and changes nothing.
    pub async fn answer(
        &self,
        tenant_id: &str,
        run_id: &str,
        answer: &str,
    ) -> Result<(), RunError> {
        let store = &self.inner.store;
        let run = self.own_run(tenant_id, run_id).await?;
        if run.is_terminal() {
            return Err(RunError::AlreadyFinished(run.id, run.status));
        }
        let question = store
            .open_question(run_id)
            .await?
            .ok_or_else(|| RunError::NotWaiting(run_id.to_string()))?;
        json::check("answer", answer, 1 << 20).map_err(RunError::InvalidAnswer)?;
        let value: serde_json::Value =
            serde_json::from_str(answer).map_err(|e| RunError::InvalidAnswer(e.to_string()))?;
        if let Some(schema) = &question.schema {
            validate_against(schema, &value).map_err(RunError::InvalidAnswer)?;
        }
        if !store.answer(&question, answer).await? {
            return Err(RunError::NotWaiting(run_id.to_string()));
        }
        tracing::info!(run_id = %run_id, tenant = %tenant_id, "run answered");
        if let Some(live) = self.live(run_id) {
            live.answered.notify_waiters();
        }
        Ok(())
    }

    /// How many runs this process is executing.
    pub fn live_runs(&self) -> usize {
        self.inner
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// The tenant's run, or `RUN_NOT_FOUND` (also for another tenant's run).
    async fn own_run(&self, tenant_id: &str, run_id: &str) -> Result<RunRecord, RunError> {
        self.inner
            .store
            .run_for_tenant(tenant_id, run_id)
            .await?
            .ok_or_else(|| RunError::NotFound(run_id.to_string()))
    }

    pub(crate) fn live(&self, run_id: &str) -> Option<Live> {
        self.inner
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(run_id)
            .cloned()
    }

    /// Recovers runs whose host died (their lease expired): a run that was running is
    /// queued again with the interrupted attempt marked crashed (its step gets attempt + 1),
    /// or fails `HOST_CRASH` when the step is out of attempts. Waiting runs are queued
    /// too: their step re-runs and answers already given are replayed. A run with a cancel
    /// request (made while its host was down) ends `cancelled` instead, with its final
    /// event, in the same transaction; one with a pause request ends `paused` where it
    /// would be queued again. Paused runs have no host and are never taken over. Returns
    /// how many runs were taken over.
    pub async fn recover(&self) -> Result<usize, RunError> {
        let orphans = self.inner.store.orphaned_runs().await?;
        let mut n = 0;
        for run in orphans {
            if self.live(&run.id).is_some() {
                continue;
            }
            // One run that cannot be recovered must not hold up the others.
            match executor::recover_run(self, &run).await {
                Ok(true) => n += 1,
                Ok(false) => {}
                Err(e) => tracing::warn!("recovering run {} failed (will retry): {e}", run.id),
            }
        }
        if let Err(e) = self.finish_cancel_requested().await {
            tracing::warn!("finishing cancelled queued runs failed (will retry): {e}");
        }
        if n > 0 {
            self.inner.wake.notify_one();
        }
        Ok(n)
    }

    /// Runs one specific queued run in this task, to its end (used by `corral run`).
    pub async fn execute(&self, run_id: &str) -> Result<(), RunError> {
        let _lease = self.spawn_lease_renewal();
        let store = &self.inner.store;
        let run = store
            .claim_run(run_id, &self.inner.owner, self.inner.config.lease)
            .await?;
        match run {
            Some(run) => {
                executor::execute(self.clone(), run).await;
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// The scheduler: claims queued runs (fair across tenants, FIFO within one) and executes
    /// up to `max_concurrent_runs` at once. With `until_idle`, returns once the queue is empty
    /// and nothing is executing; otherwise runs until `stop` is cancelled.
    pub async fn work(&self, until_idle: bool, stop: CancellationToken) -> Result<(), RunError> {
        let _lease = self.spawn_lease_renewal();
        let slots = Arc::new(Semaphore::new(self.inner.config.max_concurrent_runs.max(1)));
        let max = self.inner.config.max_concurrent_runs.max(1);
        let mut last_sweep: Option<std::time::Instant> = None;
        loop {
            if stop.is_cancelled() {
                return Ok(());
            }
            // Queued runs with a cancel request are never claimed: end them (cheap, and
            // at most once a second).
            if last_sweep.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                last_sweep = Some(std::time::Instant::now());
                if let Err(e) = self.finish_cancel_requested().await {
                    tracing::warn!("finishing cancelled queued runs failed (will retry): {e}");
                }
            }
            let permit = tokio::select! {
                p = slots.clone().acquire_owned() => p.map_err(|_| RunError::InvalidInput("scheduler closed".into()))?,
                _ = stop.cancelled() => return Ok(()),
            };
            // Every free slot at once: one claim statement for all of them.
            let mut permits = vec![permit];
            while let Ok(p) = slots.clone().try_acquire_owned() {
                permits.push(p);
            }
            match self
                .inner
                .store
                .claim_runs(&self.inner.owner, self.inner.config.lease, permits.len())
                .await
            {
                Ok(runs) if !runs.is_empty() => {
                    for run in runs {
                        let Some(permit) = permits.pop() else { break };
                        if let Some(tx) = &*self
                            .inner
                            .claims
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                        {
                            let _ = tx.send(run.id.clone());
                        }
                        let runner = self.clone();
                        tokio::spawn(async move {
                            executor::execute(runner, run).await;
                            drop(permit);
                        });
                    }
                }
                Ok(_) => {
                    drop(permits);
                    if until_idle && slots.available_permits() == max {
                        return Ok(());
                    }
                    tokio::select! {
                        _ = self.inner.wake.notified() => {}
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                        _ = stop.cancelled() => return Ok(()),
                    }
                }
                Err(e) => {
                    drop(permits);
                    tracing::warn!("claiming a run failed (will retry): {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Renews this host's leases until the returned guard drops.
    fn spawn_lease_renewal(&self) -> LeaseGuard {
        let runner = self.clone();
        let every = self.inner.config.lease / 3;
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let ids: Vec<String> = runner
                    .inner
                    .live
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .keys()
                    .cloned()
                    .collect();
                if let Err(e) = runner
                    .inner
                    .store
                    .renew_leases(&runner.inner.owner, runner.inner.config.lease, &ids)
                    .await
                {
                    tracing::warn!("renewing run leases failed: {e}");
                }
            }
        });
        LeaseGuard(task)
    }
}

struct LeaseGuard(tokio::task::JoinHandle<()>);

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A tenant's registered plugins, for pipelines that name them (`name@version`, `plg_...`).
pub struct StoreRegistry {
    store: Store,
    tenant_id: String,
    used: Mutex<Vec<String>>,
}

impl StoreRegistry {
    /// Counts a registered plugin as used by the run.
    fn note_used(&self, id: String) {
        self.used
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(id);
    }

    /// A registered plugin's component bytes, counted as used by the run.
    async fn fetch_record(
        &self,
        plugin: &pipeline::PluginRef,
        record: crate::store::PluginRecord,
    ) -> Result<Vec<u8>, String> {
        let bytes = self
            .store
            .plugin_bytes(&self.tenant_id, &record.id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("the component of plugin `{plugin}` is missing"))?;
        self.note_used(record.id);
        Ok(bytes)
    }

    /// The registry of `tenant_id`.
    pub fn new(store: Store, tenant_id: &str) -> Self {
        StoreRegistry {
            store,
            tenant_id: tenant_id.to_string(),
            used: Mutex::new(Vec::new()),
        }
    }

    /// Ids of the plugins fetched so far.
    pub fn used(&self) -> Vec<String> {
        self.used
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl StoreRegistry {
    /// The tenant's record of a registered plugin.
    async fn record(
        &self,
        plugin: &pipeline::PluginRef,
    ) -> Result<crate::store::PluginRecord, String> {
        match plugin {
            pipeline::PluginRef::Id(id) => self.store.plugin(&self.tenant_id, id).await,
            pipeline::PluginRef::Named { name, version } => {
                self.store
                    .plugin_named(&self.tenant_id, name, version)
                    .await
            }
            pipeline::PluginRef::Path(path) => {
                return Err(format!(
                    "`{}` is a path, not a registered plugin",
                    path.display()
                ));
            }
        }
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no registered plugin `{plugin}`"))
    }
}

#[async_trait::async_trait]
impl pipeline::Registry for StoreRegistry {
    async fn manifest(&self, plugin: &pipeline::PluginRef) -> Result<manifest::Manifest, String> {
        if let pipeline::PluginRef::Path(_) = plugin {
            return manifest::for_plugin(plugin);
        }
        let record = self.record(plugin).await?;
        match &record.manifest {
            None => Ok(manifest::Manifest::default()),
            Some(value) => manifest::Manifest::from_json(value)
                .map_err(|e| format!("the manifest of `{plugin}`: {e}")),
        }
    }

    async fn load(
        &self,
        plugin: &pipeline::PluginRef,
        engine: &crate::engine::Engine,
    ) -> Result<Result<Arc<crate::engine::Plugin>, crate::engine::Failure>, String> {
        let record = self.record(plugin).await?;
        // The digest was taken from these bytes at registration (blobs are keyed by it).
        if let Some(loaded) = engine.loaded(&record.digest) {
            self.note_used(record.id);
            return Ok(Ok(loaded));
        }
        let bytes = self.fetch_record(plugin, record).await?;
        Ok(engine.load(bytes).await)
    }

    async fn fetch(&self, plugin: &pipeline::PluginRef) -> Result<Vec<u8>, String> {
        let record = self.record(plugin).await?;
        self.fetch_record(plugin, record).await
    }
}

/// Validates `value` against the JSON Schema text `schema`, naming the first problem.
pub fn validate_against(schema: &str, value: &serde_json::Value) -> Result<(), String> {
    let schema: serde_json::Value = serde_json::from_str(schema)
        .map_err(|e| format!("the question's schema is not JSON: {e}"))?;
    let validator = jsonschema::validator_for(&schema)
        .map_err(|e| format!("the question's schema is not a valid JSON Schema: {e}"))?;
    match validator.iter_errors(value).next() {
        None => Ok(()),
        Some(e) => {
            let path = e.instance_path().to_string();
            Err(if path.is_empty() {
                format!("the answer does not match the schema: {e}")
            } else {
                format!("the answer does not match the schema at {path}: {e}")
            })
        }
    }
}

/// The payload of a `paused` event: the step the run stopped before (or whose attempt
/// was interrupted, with that attempt's number).
pub(crate) fn json_paused(
    run_id: &str,
    step: Option<&str>,
    interrupted_attempt: Option<i64>,
) -> serde_json::Value {
    serde_json::json!({
        "run_id": run_id,
        "step_id": step,
        "interrupted": interrupted_attempt.is_some(),
        "attempt": interrupted_attempt,
    })
}

/// `HOST_CRASH`: the code of a step interrupted by its host dying.
pub const HOST_CRASH: &str = "HOST_CRASH";

/// The code string of an engine failure, for events.
pub(crate) fn code_str(code: ErrorCode) -> &'static str {
    code.as_str()
}

/// The run to queue for a pipeline (its spec: the pipeline's JSON snapshot) and input:
/// its steps in order, each with its agent type.
fn new_run(
    tenant_id: &str,
    pipeline_id: Option<String>,
    pipeline: &pipeline::Pipeline,
    spec: String,
    input: &str,
) -> NewRun {
    NewRun {
        tenant_id: tenant_id.to_string(),
        pipeline_id,
        pipeline_name: pipeline.name.clone(),
        spec,
        input: input.to_string(),
        steps: pipeline
            .steps
            .iter()
            .map(|s| (s.name.clone(), executor::agent_type(s)))
            .collect(),
    }
}
