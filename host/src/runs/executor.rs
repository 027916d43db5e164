//! Drives one run through its steps: attempts, retries with backoff, feedback loops,
//! budgets, cancellation, and the events of each transition.

use super::guest_events::GuestEvents;
use super::pipeline::{ConnectorMode, Pipeline, Step};
use super::services::StepServices;
use super::{HOST_CRASH, Live, RunError, Runner, code_str};
use crate::engine::{
    Call, Deadline, ErrorCode, Failure, Invocation, Limits, Outcome, Output, Plugin, Retry,
    RunContext,
};
use crate::store::{Change, RunRecord, RunRef, StepRecord, StoreError};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Longest `output_preview` in a step's `complete` event.
const PREVIEW: usize = 200;

/// The `agent_type` of a step in events: its plugin's file stem or registered name.
pub(crate) fn agent_type(step: &Step) -> String {
    match &step.plugin {
        super::pipeline::PluginRef::Path(path) => path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("plugin")
            .to_string(),
        super::pipeline::PluginRef::Named { name, .. } => name.clone(),
        super::pipeline::PluginRef::Id(id) => id.clone(),
    }
}

/// Why the run stopped before its last step succeeded.
enum Stop {
    Failed {
        code: String,
        message: String,
    },
    Cancelled,
    /// A pause took effect: the run commits `paused` and this host lets it go.
    Paused(Paused),
}

/// A pause that took effect, to commit with the run's `paused` state.
struct Paused {
    /// The step the run stopped before, or whose attempt was interrupted.
    step: Option<String>,
    /// The interrupted attempt (its end, `interrupted`, is in `charge`).
    interrupted: Option<(i64, i64)>,
    /// The interrupted attempt's fuel and end, and its step queued again.
    charge: Vec<Change>,
    /// Wall clock executed since the run was claimed.
    active_ms: i64,
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        Stop::Failed {
            code: "STORE_ERROR".into(),
            message: e.to_string(),
        }
    }
}

/// Executes a claimed run to its end. Never panics; every path ends the run exactly once.
pub(crate) async fn execute(runner: Runner, run: RunRecord) {
    let cancel = CancellationToken::new();
    let live = Live {
        interrupt: cancel.child_token(),
        cancel: cancel.clone(),
        answered: Arc::new(tokio::sync::Notify::new()),
        fuel: Arc::new(AtomicI64::new(run.fuel_used)),
        // From the claim too: a run recovered after a crash keeps counting its
        // `[budget] tokens` from what it had already spent.
        tokens: Arc::new(std::sync::atomic::AtomicU64::new(
            u64::try_from(run.tokens_used).unwrap_or(0),
        )),
        pause: CancellationToken::new(),
    };
    runner
        .inner
        .live
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(run.id.clone(), live.clone());
    // A cancel requested before the claim (it raced it) stops the run before it starts,
    // and a pause requested then pauses it before its first step.
    if run.cancel_requested {
        cancel.cancel();
    }
    if run.pause_requested {
        live.request_pause(false);
    }
    // Cancels and pauses requested from another process arrive through the store.
    let watcher = spawn_request_watcher(runner.clone(), run.id.clone(), live.clone());
    tracing::info!(
        run_id = %run.id,
        tenant = %run.tenant_id,
        pipeline = %run.pipeline_name,
        resumed = run.next_seq > 2,
        "run running"
    );
    let started = Instant::now();

    let run_ref = run.as_ref();
    // The last step's success, committed with the run's end (one transaction for both).
    let mut last_step = Transition::default();
    let result = drive(&runner, &run, &live, &mut last_step).await;
    let fuel = live.fuel.load(Ordering::Relaxed);
    let tokens = live.tokens.load(Ordering::Relaxed);
    // The end is retried while the database is unreachable: giving up would leave the run
    // live under this host, whose lease keeps being renewed.
    let ended = retry_end(&run.id, |tries| {
        let (runner, run, run_ref, last_step, result) =
            (&runner, &run, &run_ref, &last_step, &result);
        async move {
            match result {
                Ok(output) => {
                    finish(
                        runner,
                        run_ref,
                        last_step,
                        "succeeded",
                        Some(output.clone()),
                        None,
                        (fuel, tokens),
                    )
                    .await
                }
                Err(Stop::Cancelled) => finish_cancelled(runner, run_ref, None, fuel).await,
                Err(Stop::Paused(paused)) => pause_run(runner, run, paused, fuel, tries == 1).await,
                Err(Stop::Failed { code, message }) => {
                    finish(
                        runner,
                        run_ref,
                        &Transition::default(),
                        "failed",
                        None,
                        Some((code.clone(), message.clone())),
                        (fuel, tokens),
                    )
                    .await
                }
            }
        }
    })
    .await;
    match ended {
        Some((true, _)) => log_end(&run, &result, fuel, started),
        // The run had ended meanwhile (its lease lapsed and another host ended it): the
        // last attempt used its fuel all the same. Not after a failed try, which may have
        // committed it with the end.
        Some((false, 1)) => last_step.charge_alone(&runner, &run_ref).await,
        Some((false, _)) | None => {}
    }
    watcher.abort();
    runner
        .inner
        .live
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&run.id);
}

/// Records the end of a run with `end`, retried while the database is unreachable (8
/// tries, backing off from 250 ms to 10 s; each failure is logged): what the try that went
/// through answered and its number (1 for the first), or `None` when every try failed.
pub(super) async fn retry_end<T, F: Future<Output = Result<T, StoreError>>>(
    run_id: &str,
    mut end: impl FnMut(u32) -> F,
) -> Option<(T, u32)> {
    let mut delay = Duration::from_millis(250);
    for tries in 1..=8 {
        match end(tries).await {
            Ok(answer) => return Some((answer, tries)),
            Err(e) if tries < 8 => {
                tracing::warn!("could not record the end of run {run_id} (will retry): {e}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
            Err(e) => tracing::error!("could not record the end of run {run_id}: {e}"),
        }
    }
    None
}

/// Polls the run's cancel and pause requests (made by any process) and signals them to
/// its execution here. A pause of a run that is waiting for input interrupts the wait.
fn spawn_request_watcher(
    runner: Runner,
    run_id: String,
    live: Live,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let Ok(Some(asked)) = runner.store().run_requests(&run_id).await else {
                continue;
            };
            if asked.cancel {
                live.cancel.cancel();
                return;
            }
            if asked.pause > 0 {
                live.request_pause(
                    asked.pause >= crate::store::PAUSE_NOW || asked.status == "waiting",
                );
            }
        }
    })
}

/// Commits a pause that took effect: the interrupted attempt's end (if any) and the run
/// `paused` with its event, in one transaction, guarded on the run being live with no
/// cancel request. A cancel that landed first ends the run cancelled instead. `Ok(false)`:
/// the run had ended meanwhile (another host took it over).
async fn pause_run(
    runner: &Runner,
    run: &RunRecord,
    paused: &Paused,
    fuel: i64,
    first_try: bool,
) -> Result<bool, StoreError> {
    let run_ref = run.as_ref();
    let mut changes = paused.charge.clone();
    changes.push(Change::RunPause {
        from: &["running", "waiting"],
        active_ms: paused.active_ms,
    });
    let event = (
        "paused",
        super::json_paused(
            &run.id,
            paused.step.as_deref(),
            paused.interrupted.map(|(_, attempt)| attempt),
        ),
    );
    if runner.commit_many(&run_ref, &changes, &[event]).await? {
        tracing::info!(
            run_id = %run.id,
            tenant = %run.tenant_id,
            step = paused.step.as_deref().map(tracing::field::display),
            interrupted = paused.interrupted.is_some(),
            fuel,
            "run paused"
        );
        return Ok(true);
    }
    // Refused: cancelled, or ended by someone else. A cancel wins over the pause, with
    // the interrupted attempt's end in the same transaction.
    let cancel_requested = runner
        .store()
        .run(&run.id)
        .await?
        .is_some_and(|r| r.cancel_requested && !r.is_terminal());
    let mut changes: Vec<Change> = paused
        .charge
        .iter()
        .filter(|c| !matches!(c, Change::StepInterrupted { .. }))
        .cloned()
        .collect();
    if !cancel_requested {
        // The interrupted attempt used its fuel all the same (not after a failed try,
        // which may have committed it).
        if first_try && !changes.is_empty() {
            runner.commit(&run_ref, &changes, None).await?;
        }
        return Ok(false);
    }
    if let Some((idx, _)) = paused.interrupted {
        changes.push(Change::StepFailed {
            idx,
            status: "cancelled",
            error_code: code_str(ErrorCode::Cancelled).into(),
            error_message: "cancelled while it was pausing".into(),
        });
    }
    let ended = finish_cancelled_with(
        runner,
        &run_ref,
        &changes,
        Vec::new(),
        paused.step.as_deref(),
        fuel,
    )
    .await?;
    if ended {
        tracing::info!(
            run_id = %run.id,
            tenant = %run.tenant_id,
            status = "cancelled",
            code = "CANCELLED",
            note = "cancelled while it was pausing",
            "run finished"
        );
    }
    Ok(ended)
}

/// The payload of a run's final `complete` event.
fn final_payload(run: &RunRef, status: &str, error: Option<&(String, String)>, fuel: i64) -> Value {
    let mut payload = json!({
        "run_id": run.id,
        "all_done": true,
        "status": status,
        "error": error.is_some() || status != "succeeded",
        "fuel_used": fuel,
    });
    if let (Some(obj), Some((code, message))) = (payload.as_object_mut(), error) {
        obj.insert("error_code".into(), json!(code));
        obj.insert("message".into(), json!(message));
    }
    payload
}

/// The run's terminal state, logged once it is committed.
fn log_end(run: &RunRecord, result: &Result<String, Stop>, fuel: i64, started: Instant) {
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let (run_id, tenant) = (
        tracing::field::display(&run.id),
        tracing::field::display(&run.tenant_id),
    );
    match result {
        Ok(_) => tracing::info!(
            run_id,
            tenant,
            status = "succeeded",
            fuel,
            duration_ms,
            "run finished"
        ),
        Err(Stop::Cancelled) => tracing::info!(
            run_id,
            tenant,
            status = "cancelled",
            code = "CANCELLED",
            fuel,
            duration_ms,
            "run finished"
        ),
        // `pause_run` logged it (or the cancel that won over it).
        Err(Stop::Paused(_)) => {}
        Err(Stop::Failed { code, message }) => tracing::warn!(
            run_id,
            tenant,
            status = "failed",
            code = %code,
            error = %crate::capabilities::log::neutralise(message, 500),
            fuel,
            duration_ms,
            "run finished"
        ),
    }
}

/// The terminal status change of a run (guarded: only a live run can end).
fn run_finish(
    status: &'static str,
    output: Option<String>,
    error: Option<&(String, String)>,
) -> [Change; 2] {
    [
        Change::RunFinish {
            status,
            output,
            error_code: error.map(|(c, _)| c.clone()),
            error_message: error.map(|(_, m)| m.clone()),
        },
        Change::SkipRemaining,
    ]
}

/// Changes and events not committed yet, to go with the next transition.
#[derive(Default)]
struct Transition {
    /// The attempt's fuel and end: recorded even when the transition is refused.
    charge: Vec<Change>,
    changes: Vec<Change>,
    events: Vec<(&'static str, Value)>,
}

impl Transition {
    /// Commits this transition, `changes` and `events` after its own, in one transaction.
    /// `false`: refused (the run has ended meanwhile), nothing of it is written; the
    /// caller then records the charge with [`Transition::charge_alone`].
    async fn commit_with(
        &self,
        runner: &Runner,
        run: &RunRef,
        changes: &[Change],
        events: Vec<(&'static str, Value)>,
    ) -> Result<bool, StoreError> {
        let all: Vec<Change> = self
            .charge
            .iter()
            .chain(&self.changes)
            .chain(changes)
            .cloned()
            .collect();
        let mut all_events = self.events.clone();
        all_events.extend(events);
        runner.commit_many(run, &all, &all_events).await
    }

    /// Commits only the charge (after the transition was refused).
    async fn charge_alone(&self, runner: &Runner, run: &RunRef) {
        if self.charge.is_empty() {
            return;
        }
        if let Err(e) = runner.commit(run, &self.charge, None).await {
            tracing::warn!("could not charge the fuel of run {}: {e}", run.id);
        }
    }
}

/// The run's final `complete` event, with the terminal status change (guarded: a run
/// that already ended is left alone, so there is exactly one final event), after
/// `before` in the same transaction.
async fn finish(
    runner: &Runner,
    run: &RunRef,
    before: &Transition,
    status: &'static str,
    output: Option<String>,
    error: Option<(String, String)>,
    (fuel, tokens): (i64, u64),
) -> Result<bool, StoreError> {
    let mut payload = final_payload(run, status, error.as_ref(), fuel);
    // The run's model tokens, all of them (a recovered run's count starts from its claim).
    if let Some(obj) = payload.as_object_mut() {
        obj.insert("tokens_used".into(), json!(tokens));
    }
    let complete = ("complete", payload);
    before
        .commit_with(
            runner,
            run,
            &run_finish(status, output, error.as_ref()),
            vec![complete],
        )
        .await
}

/// Ends a run as cancelled: the `cancelled` event and the final `complete`, with the
/// terminal status change, in one transaction. Guarded: a run that already ended (a
/// second cancel, or a cancel racing completion or recovery) is left alone and `false`
/// is returned, so there is never a `cancelled` event without its final event, nor one
/// after it.
pub(crate) async fn finish_cancelled(
    runner: &Runner,
    run: &RunRef,
    step: Option<&str>,
    fuel: i64,
) -> Result<bool, StoreError> {
    finish_cancelled_with(runner, run, &[], Vec::new(), step, fuel).await
}

/// [`finish_cancelled`] with `guards_and_changes` applied first and `events_before` the
/// `cancelled` event, all in the same transaction.
async fn finish_cancelled_with(
    runner: &Runner,
    run: &RunRef,
    guards_and_changes: &[Change],
    mut events: Vec<(&str, Value)>,
    step: Option<&str>,
    fuel: i64,
) -> Result<bool, StoreError> {
    let mut changes = guards_and_changes.to_vec();
    changes.extend(run_finish("cancelled", None, None));
    events.push(("cancelled", json!({"run_id": run.id, "step_id": step})));
    events.push(("complete", final_payload(run, "cancelled", None, fuel)));
    runner.commit_many(run, &changes, &events).await
}

/// The state the executor keeps while it walks the steps.
struct Walk<'a> {
    runner: &'a Runner,
    run: &'a RunRecord,
    run_ref: RunRef,
    pipeline: Pipeline,
    plugins: Vec<Arc<Plugin>>,
    tools: std::collections::BTreeMap<String, super::pipeline::LoadedTool>,
    manifests: Vec<super::manifest::Manifest>,
    /// The model aliases each step may use.
    models: Vec<Vec<String>>,
    steps: Vec<StepRecord>,
    live: &'a Live,
    /// When this host started walking the steps.
    started: Instant,
    /// Wall clock the run executed before its latest pause (a paused run's time budget
    /// does not tick).
    before: Duration,
    /// Where the last step's success goes, uncommitted, for the run's end to commit.
    last_step: &'a mut Transition,
}

async fn drive(
    runner: &Runner,
    run: &RunRecord,
    live: &Live,
    last_step: &mut Transition,
) -> Result<String, Stop> {
    if live.cancel.is_cancelled() {
        return Err(Stop::Cancelled);
    }
    if live.pause.is_cancelled() {
        return Err(Stop::Paused(Paused {
            step: None,
            interrupted: None,
            charge: Vec::new(),
            active_ms: 0,
        }));
    }
    let pipeline = super::pipeline::parse_json(&run.spec, Some(std::path::Path::new("/")))
        .map_err(|e| Stop::Failed {
            code: "INVALID_PIPELINE".into(),
            message: e.to_string(),
        })?;
    let registry = super::StoreRegistry::new(runner.store().clone(), &run.tenant_id);
    // Plugins could have changed (or gone) since the run was queued: load them again.
    let unloadable = |e: super::pipeline::PipelineError| Stop::Failed {
        code: "INVALID_COMPONENT".into(),
        message: e.to_string(),
    };
    let plugins = pipeline
        .load_plugins(runner.engine(), Some(&registry))
        .await
        .map_err(unloadable)?;
    let manifests = pipeline
        .manifests(Some(&registry))
        .await
        .map_err(unloadable)?;
    let tools = pipeline
        .load_tools(runner.engine(), Some(&registry), &manifests)
        .await
        .map_err(unloadable)?;
    let models = pipeline
        .check_models(&manifests, &runner.model_aliases(&run.tenant_id))
        .map_err(|e| Stop::Failed {
            code: "INVALID_PIPELINE".into(),
            message: e.to_string(),
        })?;
    // A run whose only event is `queued` has never started a step (each start writes its
    // `running` event): its steps are as submitted, no need to read them.
    let steps = if run.next_seq == 2 {
        pristine_steps(&pipeline)
    } else {
        runner.store().steps(&run.id).await?
    };
    let mut walk = Walk {
        last_step,
        manifests,
        models,
        runner,
        run,
        run_ref: run.as_ref(),
        pipeline,
        plugins,
        tools,
        steps,
        live,
        started: Instant::now(),
        before: Duration::from_millis(u64::try_from(run.active_ms).unwrap_or(0)),
    };
    walk.walk().await
}

/// The step rows `create_run` writes for `pipeline`.
fn pristine_steps(pipeline: &Pipeline) -> Vec<StepRecord> {
    pipeline
        .steps
        .iter()
        .enumerate()
        .map(|(idx, step)| StepRecord {
            idx: to_i64(idx),
            name: step.name.clone(),
            plugin: agent_type(step),
            status: "queued".into(),
            attempts: 0,
            loops: 0,
            restarts: 0,
            attempt_base: 0,
            loop_base: 0,
            feedback: None,
            output: None,
            fuel_used: 0,
            tokens_used: 0,
            cost_micros: 0,
            error_code: None,
            error_message: None,
            started_at: None,
            finished_at: None,
        })
        .collect()
}

impl Walk<'_> {
    /// Logs a step attempt that ended without failing (`succeeded`, or `interrupted` by a
    /// pause); a failed one is logged with its error where it is handled.
    fn log_step_finished(&self, step: &str, attempt: i64, fuel: i64, status: &str) {
        tracing::info!(
            run_id = %self.run.id,
            tenant = %self.run.tenant_id,
            step = %step,
            attempt,
            fuel,
            status,
            "step finished"
        );
    }

    /// Wall clock the run has used of its `[budget] timeout`: what it executed before its
    /// latest pause and since this host claimed it. Time spent paused is not counted.
    fn elapsed(&self) -> Duration {
        self.before.saturating_add(self.started.elapsed())
    }

    /// The pause of a run stopping before step `step` (or interrupting `charge`'s attempt).
    fn paused(&self, step: &str, interrupted: Option<(i64, i64)>, charge: Vec<Change>) -> Stop {
        Stop::Paused(Paused {
            step: Some(step.to_string()),
            interrupted,
            charge,
            active_ms: i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX),
        })
    }

    /// The input of step `idx`: the stored output of the step it names in `input_from`,
    /// else of the previous step; the run's input for the first step.
    fn input_of(&self, idx: usize) -> String {
        let from = self
            .pipeline
            .steps
            .get(idx)
            .and_then(|s| s.input_from.as_ref())
            .and_then(|name| self.pipeline.steps.iter().position(|s| &s.name == name));
        from.or_else(|| idx.checked_sub(1))
            .and_then(|prev| self.steps.get(prev))
            .and_then(|s| s.output.clone())
            .unwrap_or_else(|| self.run.input.clone())
    }

    async fn walk(&mut self) -> Result<String, Stop> {
        // Resume where a previous host left off: the first step that has not succeeded.
        let mut idx = self
            .steps
            .iter()
            .position(|s| s.status != "succeeded")
            .unwrap_or(self.steps.len());
        let mut feedback: Option<Value> = None;
        let mut last_output = self.input_of(idx);
        while let Some(step) = self.pipeline.steps.get(idx).cloned() {
            let input = self.input_of(idx);
            match self.run_step(idx, &step, &input, feedback.take()).await? {
                Ok(output) => {
                    if let Some(s) = self.steps.get_mut(idx) {
                        s.output = Some(output.clone());
                        s.status = "succeeded".into();
                    }
                    last_output = output;
                    idx += 1;
                }
                Err(failure) => {
                    // A plugin error in a step with a feedback loop goes back to an earlier step.
                    let target = step.on_failure.as_ref().and_then(|fl| {
                        let record = self.steps.get(idx);
                        let loops = record.map(|s| s.loops).unwrap_or(0);
                        // Loops since the latest restart: each segment gets `max_loops`.
                        let looped = loops - record.map(|s| s.loop_base).unwrap_or(0);
                        let target = self
                            .pipeline
                            .steps
                            .iter()
                            .position(|s| s.name == fl.send_back_to)?;
                        (failure.code == ErrorCode::PluginError
                            && looped < i64::from(fl.max_loops)
                            && target < idx)
                            .then_some((target, loops + 1))
                    });
                    let Some((target, generation)) = target else {
                        return Err(Stop::Failed {
                            code: code_str(failure.code).into(),
                            message: format!(
                                "step `{}` failed: {}",
                                step.name,
                                split_detail(&failure.message).0
                            ),
                        });
                    };
                    let (message, detail) = split_detail(&failure.message);
                    let target_name = self
                        .pipeline
                        .steps
                        .get(target)
                        .map(|s| s.name.clone())
                        .unwrap_or_default();
                    feedback = Some(json!({
                        "from_step": step.name,
                        "error_code": code_str(failure.code),
                        "message": message,
                        "detail": detail,
                        "loop": generation,
                    }));
                    self.runner
                        .commit(
                            &self.run_ref,
                            &[Change::Loop {
                                idx: to_i64(target),
                            }],
                            Some((
                                "retrying",
                                json!({
                                    "step_id": target_name,
                                    "reason": "feedback",
                                    "from_step": step.name,
                                    "loop": generation,
                                    "message": message,
                                }),
                            )),
                        )
                        .await?;
                    tracing::info!(
                        run_id = %self.run.id,
                        tenant = %self.run.tenant_id,
                        step = %target_name,
                        from_step = %step.name,
                        code = code_str(failure.code),
                        generation,
                        "step sent back"
                    );
                    self.steps = self.runner.store().steps(&self.run.id).await?;
                    idx = target;
                }
            }
        }
        Ok(last_output)
    }

    /// Runs one step's attempts: retries transient failures and traps with exponential
    /// backoff. `Ok(Err(failure))` is a step that failed for good (the caller decides
    /// between a feedback loop and failing the run); `Err(stop)` ends the run now.
    async fn run_step(
        &mut self,
        idx: usize,
        step: &Step,
        input: &str,
        feedback: Option<Value>,
    ) -> Result<Result<String, Failure>, Stop> {
        let plugin = self.plugins.get(idx).cloned().ok_or_else(|| Stop::Failed {
            code: "INVALID_PIPELINE".into(),
            message: format!("no plugin for step {idx}"),
        })?;
        let agent = agent_type(step);
        let record = self.steps.get(idx).cloned();
        let generation = record.as_ref().map(|s| s.loops).unwrap_or(0);
        let mut attempt = record.as_ref().map(|s| s.attempts).unwrap_or(0);
        // After a restart the attempt numbers go on, and the step has its `max_attempts`
        // again from there.
        let attempt_base = record.as_ref().map(|s| s.attempt_base).unwrap_or(0);
        // A feedback loop's feedback, else the person's from the restart of this step
        // (stored, so it survives a host restart).
        let feedback = feedback.or_else(|| {
            record
                .as_ref()
                .and_then(|s| s.feedback.as_deref())
                .and_then(|text| serde_json::from_str::<Value>(text).ok())
        });
        let feedback_text = feedback.as_ref().map(Value::to_string);
        let mut delay = step.backoff;
        // A feedback loop's feedback lives only in this execution: a step given one is
        // neither paused before its attempts nor interrupted; the run pauses after it.
        let pausable = feedback.is_none();
        loop {
            if self.live.cancel.is_cancelled() {
                return Err(Stop::Cancelled);
            }
            if pausable && self.live.pause.is_cancelled() {
                return Err(self.paused(&step.name, None, Vec::new()));
            }
            attempt += 1;
            let limits = self.attempt_limits(step)?;
            self.runner
                .commit(
                    &self.run_ref,
                    &[
                        Change::RunStatus {
                            from: &["running", "waiting"],
                            to: "running",
                        },
                        Change::StepStart {
                            idx: to_i64(idx),
                            generation,
                            attempt,
                            feedback: feedback_text.clone(),
                        },
                    ],
                    Some((
                        "running",
                        json!({
                            "step_id": step.name,
                            "agent_type": agent,
                            "progress_pct": 0,
                            "progress_label": "started",
                            "attempt": attempt,
                        }),
                    )),
                )
                .await
                .map_err(Stop::from)
                .and_then(|ok| if ok { Ok(()) } else { Err(Stop::Cancelled) })?;
            tracing::info!(
                run_id = %self.run.id,
                tenant = %self.run.tenant_id,
                step = %step.name,
                attempt,
                plugin = %agent,
                "step started"
            );

            let outcome = self
                .invoke(
                    idx,
                    step,
                    &agent,
                    &plugin,
                    input,
                    &feedback,
                    attempt,
                    generation,
                    limits.clone(),
                )
                .await?;
            let fuel = i64::try_from(outcome.0).unwrap_or(i64::MAX);
            let (mut result, artifact_id) = (outcome.1, outcome.2);
            let (tokens, tokens_exhausted) = outcome.3;
            // Interrupted by a pause (not a cancel): the attempt's end is committed with
            // the pause, and the same attempt runs again on resume.
            if pausable
                && matches!(&result, Err(f) if f.code == ErrorCode::Cancelled)
                && !self.live.cancel.is_cancelled()
                && self.live.interrupt.is_cancelled()
            {
                self.log_step_finished(&step.name, attempt, fuel, "interrupted");
                self.live.fuel.fetch_add(fuel, Ordering::Relaxed);
                let mut charge = attempt_end_changes(
                    (to_i64(idx), generation, attempt),
                    fuel,
                    "interrupted",
                    Some((
                        "PAUSED".into(),
                        "interrupted by a pause; the attempt runs again on resume".into(),
                    )),
                )
                .to_vec();
                charge.push(Change::StepInterrupted {
                    idx: to_i64(idx),
                    attempt,
                });
                return Err(self.paused(&step.name, Some((to_i64(idx), attempt)), charge));
            }
            // A model call refused for, or charged past, a token budget fails the
            // attempt with BUDGET_EXHAUSTED, whatever the guest made of it.
            if tokens_exhausted && !matches!(&result, Err(f) if f.code == ErrorCode::Cancelled) {
                result = Err(Failure::new(
                    ErrorCode::BudgetExhausted,
                    format!(
                        "the step's or the run's token budget is spent ({tokens} tokens used by this attempt)"
                    ),
                ));
            }
            let (status, error) = match &result {
                Ok(_) => ("succeeded", None),
                Err(f) => (
                    "failed",
                    Some((code_str(f.code).to_string(), f.message.clone())),
                ),
            };
            let attempt_end =
                attempt_end_changes((to_i64(idx), generation, attempt), fuel, status, error);
            let failure = match result {
                Ok(output) => {
                    self.log_step_finished(&step.name, attempt, fuel, "succeeded");
                    // The attempt's end, the step's success and its event: one transition,
                    // and for the last step it goes with the run's end.
                    let done = Transition {
                        charge: attempt_end.to_vec(),
                        changes: vec![Change::StepSucceeded {
                            idx: to_i64(idx),
                            output: output.clone(),
                        }],
                        events: vec![(
                            "complete",
                            json!({
                                "step_id": step.name,
                                "agent_type": agent,
                                "fuel_used": fuel,
                                "tokens_used": tokens,
                                "artifact_id": artifact_id,
                                "output_preview": preview(&output),
                                "attempt": attempt,
                            }),
                        )],
                    };
                    if idx + 1 >= self.pipeline.steps.len() {
                        *self.last_step = done;
                    } else if !done
                        .commit_with(self.runner, &self.run_ref, &[], Vec::new())
                        .await?
                    {
                        done.charge_alone(self.runner, &self.run_ref).await;
                    }
                    self.live.fuel.fetch_add(fuel, Ordering::Relaxed);
                    return Ok(Ok(output));
                }
                Err(f) => {
                    self.runner
                        .commit(&self.run_ref, &attempt_end, None)
                        .await?;
                    self.live.fuel.fetch_add(fuel, Ordering::Relaxed);
                    f
                }
            };
            if failure.code == ErrorCode::Cancelled || self.live.cancel.is_cancelled() {
                self.commit_step_end(idx, "cancelled", &failure).await?;
                return Err(Stop::Cancelled);
            }
            let retryable = matches!(
                (failure.code, failure.retry),
                (ErrorCode::PluginError, Retry::Transient) | (ErrorCode::Trap, _)
            );
            let will_retry =
                retryable && attempt.saturating_sub(attempt_base) < i64::from(step.max_attempts);
            let (message, detail) = split_detail(&failure.message);
            tracing::warn!(
                run_id = %self.run.id,
                tenant = %self.run.tenant_id,
                step = %step.name,
                attempt,
                fuel,
                status = "failed",
                code = code_str(failure.code),
                error = %crate::capabilities::log::neutralise(&message, 500),
                will_retry,
                "step finished"
            );
            self.runner
                .commit(
                    &self.run_ref,
                    &[],
                    Some((
                        "error",
                        json!({
                            "step_id": step.name,
                            "agent_type": agent,
                            "error_code": code_str(failure.code),
                            "message": message,
                            "detail": detail,
                            "attempt": attempt,
                            "will_retry": will_retry,
                        }),
                    )),
                )
                .await?;
            // The run's own budget ran out: the run fails, whatever the step would do.
            if let Some(stop) = self.run_budget_spent(&failure).await? {
                self.commit_step_end(idx, "failed", &failure).await?;
                return Err(stop);
            }
            if !will_retry {
                self.commit_step_end(idx, "failed", &failure).await?;
                return Ok(Err(failure));
            }
            self.runner
                .commit(
                    &self.run_ref,
                    &[Change::StepStatus {
                        idx: to_i64(idx),
                        from: None,
                        to: "retrying",
                    }],
                    Some((
                        "retrying",
                        json!({
                            "step_id": step.name,
                            "agent_type": agent,
                            "attempt": attempt + 1,
                            "delay_ms": u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                            "reason": "retry",
                            "error_code": code_str(failure.code),
                        }),
                    )),
                )
                .await?;
            tracing::info!(
                run_id = %self.run.id,
                tenant = %self.run.tenant_id,
                step = %step.name,
                attempt = attempt + 1,
                backoff_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                code = code_str(failure.code),
                "step retrying"
            );
            // A pause in the backoff takes effect at once; on resume the retry is not
            // delayed again.
            let paused = async {
                if pausable {
                    self.live.pause.cancelled().await;
                } else {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.live.cancel.cancelled() => {
                    let cancelled = Failure::new(ErrorCode::Cancelled, "cancelled during retry backoff");
                    self.commit_step_end(idx, "cancelled", &cancelled).await?;
                    return Err(Stop::Cancelled);
                }
                _ = paused => {
                    return Err(self.paused(&step.name, None, Vec::new()));
                }
            }
            delay = (delay * 2).min(step.backoff_max);
        }
    }

    async fn commit_step_end(
        &self,
        idx: usize,
        status: &'static str,
        f: &Failure,
    ) -> Result<(), Stop> {
        self.runner
            .commit(
                &self.run_ref,
                &[Change::StepFailed {
                    idx: to_i64(idx),
                    status,
                    error_code: code_str(f.code).into(),
                    error_message: f.message.clone(),
                }],
                None,
            )
            .await?;
        Ok(())
    }

    /// Per-attempt limits: the step's own, narrowed to what is left of the run's budget.
    fn attempt_limits(&self, step: &Step) -> Result<Limits, Stop> {
        let mut limits = Limits {
            fuel: Some(step.fuel),
            timeout: step.timeout,
            memory_bytes: step.memory,
            ..Limits::default()
        };
        let elapsed = self.elapsed();
        let left = self.pipeline.budget.timeout.saturating_sub(elapsed);
        if left.is_zero() {
            return Err(Stop::Failed {
                code: code_str(ErrorCode::DeadlineExceeded).into(),
                message: format!(
                    "the run used its whole {:?} time budget",
                    self.pipeline.budget.timeout
                ),
            });
        }
        limits.timeout = limits.timeout.min(left);
        Ok(limits)
    }

    /// Whether the run's fuel or time budget is spent; if so, the run stops here.
    async fn run_budget_spent(&self, failure: &Failure) -> Result<Option<Stop>, Stop> {
        if let Some(budget) = self.pipeline.budget.fuel {
            let used = self.live.fuel.load(Ordering::Relaxed);
            if u64::try_from(used).unwrap_or(0) >= budget {
                return Ok(Some(Stop::Failed {
                    code: code_str(ErrorCode::BudgetExhausted).into(),
                    message: format!("the run used its whole fuel budget of {budget}"),
                }));
            }
        }
        if failure.code == ErrorCode::DeadlineExceeded
            && self.elapsed() >= self.pipeline.budget.timeout
        {
            return Ok(Some(Stop::Failed {
                code: code_str(ErrorCode::DeadlineExceeded).into(),
                message: format!(
                    "the run used its whole {:?} time budget",
                    self.pipeline.budget.timeout
                ),
            }));
        }
        Ok(None)
    }

    /// One attempt in the engine; guest logs and progress become events as they happen.
    #[allow(clippy::too_many_arguments)]
    async fn invoke(
        &self,
        idx: usize,
        step: &Step,
        agent: &str,
        plugin: &Plugin,
        input: &str,
        feedback: &Option<Value>,
        attempt: i64,
        generation: i64,
        mut limits: Limits,
    ) -> Result<(u64, Result<String, Failure>, Option<String>, (u64, bool)), Stop> {
        // The run's fuel budget narrows the attempt's.
        if let Some(budget) = self.pipeline.budget.fuel {
            let used = u64::try_from(self.live.fuel.load(Ordering::Relaxed)).unwrap_or(0);
            let left = budget.saturating_sub(used);
            if left == 0 {
                return Err(Stop::Failed {
                    code: code_str(ErrorCode::BudgetExhausted).into(),
                    message: format!("the run used its whole fuel budget of {budget}"),
                });
            }
            limits.fuel = limits.fuel.map(|f| f.min(left));
        }
        // The scratch-disk quota its plugin's manifest asks for.
        if let Some(manifest) = self.manifests.get(idx) {
            manifest.apply_scratch_limits(&mut limits);
        }
        let deadline = Deadline::after(limits.timeout);
        // The step's tools: only those it lists (its plugin's grants were checked at load).
        let granted = step
            .tools
            .iter()
            .filter_map(|name| self.tools.get(name).cloned())
            .collect();
        let services = StepServices::new(
            self.runner.clone(),
            self.run_ref.clone(),
            step.name.clone(),
            to_i64(idx),
            generation,
            deadline.clone(),
            self.live.clone(),
            super::services::ToolGrant {
                tools: granted,
                fuel: step.fuel,
                timeout: step.timeout,
                run_budget: self.pipeline.budget.fuel,
                models: self.models.get(idx).cloned().unwrap_or_default(),
                tokens: step.tokens,
                run_tokens: self.pipeline.budget.tokens,
            },
        );
        // The guest's events, in its order; the services flush them before each event
        // of their own.
        let (events, committer) = GuestEvents::start(
            self.runner.clone(),
            self.run_ref.clone(),
            step.name.clone(),
            agent.to_string(),
            attempt,
        );
        let services = services.with_guest_events(events.clone());
        let services = Arc::new(match step.connector {
            Some(_) => services.with_config(step.config.to_string()),
            None => services,
        });
        let how = Invocation {
            limits,
            observer: Some(events.observer()),
            services: Some(services.clone()),
            // A pause interrupts the attempt through `interrupt` (a child of `cancel`),
            // except one carrying a feedback loop's feedback (see `run_step`).
            cancel: if feedback.is_some() {
                self.live.cancel.child_token()
            } else {
                self.live.interrupt.child_token()
            },
            deadline: Some(deadline),
            http: self.manifests.get(idx).and_then(|m| {
                m.http_policy_for(
                    step.http.as_deref(),
                    &self.runner.engine().config().http_resolver,
                )
                .map(Arc::new)
            }),
            files: self
                .manifests
                .get(idx)
                .map(|m| m.grants.resolved_files.clone())
                .unwrap_or_default(),
        };
        let (fuel_used, result) = match step.connector {
            None => {
                let call = Call::Run {
                    ctx: RunContext {
                        run_id: self.run.id.clone(),
                        step: step.name.clone(),
                        attempt: u32::try_from(attempt).unwrap_or(u32::MAX),
                        config: step.config.to_string(),
                        feedback: feedback.as_ref().map(Value::to_string),
                    },
                    input: input.to_string(),
                };
                let outcome = self.engine_call(plugin, call, how).await;
                let result = outcome.result.and_then(|output| match output {
                    Output::Json(text) => Ok(text),
                    other => Err(unexpected(&other)),
                });
                (outcome.fuel_used, result)
            }
            Some(ConnectorMode::Pull) => self.pull(plugin, step, how).await,
            Some(ConnectorMode::Push) => match push_items(input) {
                Err(f) => (0, Err(f)),
                Ok(items) => {
                    let count = items.len();
                    let outcome = self.engine_call(plugin, Call::Push { items }, how).await;
                    let result = outcome.result.and_then(|output| match output {
                        Output::Count(n) => Ok(json!({"pushed": n, "offered": count}).to_string()),
                        other => Err(unexpected(&other)),
                    });
                    (outcome.fuel_used, result)
                }
            },
        };
        // The invocations are over: settle the tool calls they made, end the queue and
        // wait until every event the guest reported is committed, so they come before
        // this attempt's outcome.
        services.finish_tool_calls().await;
        events.close();
        if let Err(e) = committer.await {
            tracing::warn!("guest event committer failed: {e}");
        }
        Ok((
            fuel_used,
            result,
            services.last_artifact(),
            (services.tokens_used(), services.tokens_exhausted()),
        ))
    }

    /// One invocation, counted in the metrics.
    async fn engine_call(&self, plugin: &Plugin, call: Call, how: Invocation) -> Outcome {
        let outcome = self.runner.engine().invoke(plugin, call, how).await;
        let metrics = crate::metrics::global();
        metrics.step_duration.observe(outcome.duration);
        metrics
            .fuel_used
            .fetch_add(outcome.fuel_used, std::sync::atomic::Ordering::Relaxed);
        outcome
    }

    /// A pull step: pages until the connector has no next cursor or a limit is reached;
    /// every page is a fresh sandbox under what is left of the attempt's fuel and time.
    /// The output is `{"items": [...], "pages": n, "complete": bool}`.
    async fn pull(
        &self,
        plugin: &Plugin,
        step: &Step,
        how: Invocation,
    ) -> (u64, Result<String, Failure>) {
        let query = step.config.to_string();
        let mut cursor: Option<String> = None;
        let mut items: Vec<Value> = Vec::new();
        let mut fuel_used = 0u64;
        let mut pages = 0u32;
        let mut seen_cursors = std::collections::HashSet::new();
        loop {
            let mut page_how = how.clone();
            if let Some(fuel) = page_how.limits.fuel {
                let left = fuel.saturating_sub(fuel_used);
                if left == 0 {
                    return (
                        fuel_used,
                        Err(Failure::new(
                            ErrorCode::BudgetExhausted,
                            format!("the step's fuel ran out after {pages} pages"),
                        )),
                    );
                }
                page_how.limits.fuel = Some(left);
            }
            let call = Call::Pull {
                query: query.clone(),
                cursor: cursor.clone(),
            };
            let outcome = self.engine_call(plugin, call, page_how).await;
            fuel_used = fuel_used.saturating_add(outcome.fuel_used);
            pages += 1;
            let (page, next) = match outcome.result {
                Ok(Output::Page { items, next_cursor }) => (items, next_cursor),
                Ok(other) => return (fuel_used, Err(unexpected(&other))),
                Err(f) => return (fuel_used, Err(f)),
            };
            for text in page {
                if items.len() >= step.max_items as usize {
                    break;
                }
                match serde_json::from_str::<Value>(&text) {
                    Ok(v) => items.push(v),
                    Err(e) => {
                        return (
                            fuel_used,
                            Err(Failure::invalid_input(format!(
                                "page {pages} has an item that is not JSON: {e}"
                            ))),
                        );
                    }
                }
            }
            let complete = next.is_none();
            let limited = items.len() >= step.max_items as usize || pages >= step.max_pages;
            if complete || limited {
                let output = json!({"items": items, "pages": pages, "complete": complete});
                return (fuel_used, Ok(output.to_string()));
            }
            // A connector that hands back a cursor it already gave would page forever.
            if let Some(c) = &next
                && !seen_cursors.insert(c.clone())
            {
                return (
                    fuel_used,
                    Err(Failure::new(
                        ErrorCode::PluginError,
                        format!(
                            "the connector returned cursor `{}` twice: it would never finish",
                            c.chars().take(64).collect::<String>()
                        ),
                    )),
                );
            }
            cursor = next;
        }
    }
}

fn unexpected(output: &Output) -> Failure {
    Failure::new(
        ErrorCode::PluginError,
        format!("unexpected output {output:?}"),
    )
}

/// The items a push step writes: its input if that is a JSON array, or the `items` of an
/// object (what a pull step outputs).
fn push_items(input: &str) -> Result<Vec<String>, Failure> {
    let value: Value = serde_json::from_str(input)
        .map_err(|e| Failure::invalid_input(format!("the push step's input is not JSON: {e}")))?;
    let items = match value {
        Value::Array(items) => items,
        Value::Object(mut map) => match map.remove("items").or_else(|| map.remove("records")) {
            Some(Value::Array(items)) => items,
            _ => {
                return Err(Failure::invalid_input(
                    "a push step's input must be a JSON array of items, or an object with an \
                     `items` (what a pull step outputs) or `records` array",
                ));
            }
        },
        _ => {
            return Err(Failure::invalid_input(
                "a push step's input must be a JSON array of items, or an object with an `items` array",
            ));
        }
    };
    Ok(items.iter().map(Value::to_string).collect())
}

/// A plugin error whose message is `{"message": ..., "detail": ...}` (the SDK's
/// `with_detail`) is unpacked; anything else is a plain message.
fn split_detail(message: &str) -> (String, Value) {
    if let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(message)
        && let Some(Value::String(m)) = obj.get("message")
    {
        return (m.clone(), obj.get("detail").cloned().unwrap_or(Value::Null));
    }
    (message.to_string(), Value::Null)
}

fn preview(output: &str) -> String {
    if output.len() <= PREVIEW {
        return output.to_string();
    }
    let mut end = PREVIEW;
    while !output.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", output.get(..end).unwrap_or_default())
}

/// The end of a step attempt (`(step idx, generation, attempt)`): its fuel charged to the
/// step, and the attempt's status with its error (code, message) when it has one.
fn attempt_end_changes(
    (idx, generation, attempt): (i64, i64, i64),
    fuel: i64,
    status: &'static str,
    error: Option<(String, String)>,
) -> [Change; 2] {
    let (error_code, error_message) = error.unzip();
    [
        Change::AddFuel {
            step_idx: idx,
            fuel,
        },
        Change::AttemptEnd {
            idx,
            generation,
            attempt,
            status,
            fuel,
            error_code,
            error_message,
        },
    ]
}

fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Crash recovery for one orphaned run (see [`Runner::recover`]). Every outcome is one
/// transaction guarded on the run still being orphaned (live under the host that died,
/// whose lease has expired), so a host that renewed in time, or another recoverer that got
/// there first, makes it a no-op; and on no cancel having been requested when it re-queues,
/// so a cancel that lands meanwhile is seen on the next pass. `Ok(true)`: this call took
/// the run over.
pub(crate) async fn recover_run(runner: &Runner, orphan: &RunRecord) -> Result<bool, RunError> {
    let now = crate::store::now_ms();
    let mut run = orphan.clone();
    // A lost guard means the run moved on; look again (a cancel may have landed).
    for _ in 0..3 {
        // Never a run this process is executing (its lease renewal may merely be late).
        if !run.is_orphaned(now) || runner.live(&run.id).is_some() {
            return Ok(false);
        }
        if recover_once(runner, &run).await? {
            return Ok(true);
        }
        match runner.store().run(&run.id).await? {
            Some(fresh) => run = fresh,
            None => return Ok(false),
        }
    }
    Ok(false)
}

async fn recover_once(runner: &Runner, run: &RunRecord) -> Result<bool, RunError> {
    let run_ref = run.as_ref();
    let orphaned = Change::RunOrphaned {
        owner: run.owner.clone(),
    };
    let steps = runner.store().steps(&run.id).await?;
    let interrupted = steps
        .iter()
        .find(|s| matches!(s.status.as_str(), "running" | "waiting" | "retrying"));
    let message = "the host running this step stopped unexpectedly";
    // The interrupted attempt is recorded as crashed whatever happens next.
    let crashed = |step: &StepRecord, will_retry: bool| {
        (
            Change::AttemptEnd {
                idx: step.idx,
                generation: step.loops,
                attempt: step.attempts,
                status: "crashed",
                fuel: 0,
                error_code: Some(HOST_CRASH.into()),
                error_message: Some(message.into()),
            },
            (
                "error",
                json!({
                    "step_id": step.name,
                    "agent_type": step.plugin,
                    "error_code": HOST_CRASH,
                    "message": message,
                    "attempt": step.attempts,
                    "will_retry": will_retry,
                }),
            ),
        )
    };

    // Cancelled while its host was down: it ends here, never back in the queue (where the
    // scheduler would skip it for good).
    if run.cancel_requested {
        let mut changes = vec![orphaned];
        let mut events = Vec::new();
        if let Some(step) = interrupted {
            let (attempt_end, error) = crashed(step, false);
            changes.push(attempt_end);
            changes.push(Change::StepFailed {
                idx: step.idx,
                status: "cancelled",
                error_code: code_str(ErrorCode::Cancelled).into(),
                error_message: "cancelled while its host was down".into(),
            });
            events.push(error);
        }
        let step = interrupted.map(|s| s.name.as_str());
        let ended =
            finish_cancelled_with(runner, &run_ref, &changes, events, step, run.fuel_used).await?;
        if ended {
            tracing::info!(
                run_id = %run.id,
                tenant = %run.tenant_id,
                step = step.map(tracing::field::display),
                status = "cancelled",
                code = "CANCELLED",
                note = "cancelled while its host was down",
                "run finished"
            );
        }
        return Ok(ended);
    }

    // A pause requested before (or while) its host died: the run ends up paused where it
    // would otherwise be queued again, so the pause is never lost.
    let back = |step: Option<&str>| -> (Change, Option<(&'static str, Value)>) {
        if run.pause_requested {
            (
                Change::RunPause {
                    from: &["running", "waiting"],
                    active_ms: 0,
                },
                Some(("paused", super::json_paused(&run.id, step, None))),
            )
        } else {
            (Change::RunRequeue, None)
        }
    };
    let Some(step) = interrupted else {
        // Claimed but no step started: just queue it again (or pause it).
        let (back, paused) = back(None);
        let requeued = runner.commit(&run_ref, &[orphaned, back], paused).await?;
        if requeued {
            tracing::info!(
                run_id = %run.id,
                tenant = %run.tenant_id,
                note = "its host stopped before a step started",
                "{}",
                if run.pause_requested { "run paused" } else { "run queued again" }
            );
        }
        return Ok(requeued);
    };
    // A spec that no longer parses cannot be retried: the step gets no more attempts.
    let max_attempts = super::pipeline::parse_json(&run.spec, Some(std::path::Path::new("/")))
        .ok()
        .and_then(|p| {
            p.steps
                .get(usize::try_from(step.idx).unwrap_or(usize::MAX))
                .map(|s| i64::from(s.max_attempts))
        })
        .unwrap_or(1);
    let was_waiting = step.status == "waiting";
    // A step that was waiting for a person did not fail: it re-runs and its answers replay.
    let out_of_attempts =
        !was_waiting && step.attempts.saturating_sub(step.attempt_base) >= max_attempts;
    let (attempt_end, error) = crashed(step, !out_of_attempts);
    let committed = if out_of_attempts {
        let failure = (
            HOST_CRASH.to_string(),
            format!("step `{}`: {message}", step.name),
        );
        let mut changes = vec![
            orphaned,
            attempt_end,
            Change::StepFailed {
                idx: step.idx,
                status: "failed",
                error_code: HOST_CRASH.into(),
                error_message: message.into(),
            },
        ];
        changes.extend(run_finish("failed", None, Some(&failure)));
        let complete = (
            "complete",
            final_payload(&run_ref, "failed", Some(&failure), run.fuel_used),
        );
        runner
            .commit_many(&run_ref, &changes, &[error, complete])
            .await?
    } else {
        let (back, paused) = back(Some(&step.name));
        let events: Vec<(&str, Value)> = std::iter::once(error).chain(paused).collect();
        runner
            .commit_many(
                &run_ref,
                &[
                    orphaned,
                    attempt_end,
                    Change::StepStatus {
                        idx: step.idx,
                        from: None,
                        to: "queued",
                    },
                    back,
                ],
                &events,
            )
            .await?
    };
    if committed && out_of_attempts {
        tracing::warn!(
            run_id = %run.id,
            tenant = %run.tenant_id,
            step = %step.name,
            attempt = step.attempts,
            status = "failed",
            code = HOST_CRASH,
            note = "its host stopped and the step is out of attempts",
            "run finished"
        );
    } else if committed && run.pause_requested {
        tracing::info!(
            run_id = %run.id,
            tenant = %run.tenant_id,
            step = %step.name,
            attempt = step.attempts,
            code = HOST_CRASH,
            note = "its host stopped during the step; it gets another attempt on resume",
            "run paused"
        );
    } else if committed {
        tracing::info!(
            run_id = %run.id,
            tenant = %run.tenant_id,
            step = %step.name,
            attempt = step.attempts,
            code = HOST_CRASH,
            note = "its host stopped during the step; it gets another attempt",
            "run queued again"
        );
    }
    Ok(committed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detail_is_unpacked_from_sdk_errors() {
        let (m, d) = split_detail(r#"{"message":"2 of 5 failed","detail":{"failures":[1]}}"#);
        assert_eq!(m, "2 of 5 failed");
        assert_eq!(d, json!({"failures": [1]}));
        let (m, d) = split_detail("plain words");
        assert_eq!((m.as_str(), d), ("plain words", Value::Null));
    }

    #[test]
    fn previews_cut_on_char_boundaries() {
        let long = "é".repeat(300);
        let p = preview(&long);
        assert!(p.ends_with('…') && p.len() <= PREVIEW + 3);
    }
}
