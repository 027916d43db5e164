//! What a run gives its steps through `corral:plugin/host`: human input, per-run state
//! and artifacts. Tools arrive with the capabilities issue; until then `call-tool` is
//! refused naming the missing grant.

use super::{Live, Runner};
use crate::capabilities::{RunServices, not_granted};
use crate::engine::Deadline;
use crate::engine::bindings::types::PluginError;
use crate::store::{Change, NewArtifact, Question, RunRef};
use serde_json::json;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// Longest state key.
const MAX_KEY: usize = 256;
/// Largest state value.
pub const MAX_STATE_VALUE: usize = 64 << 10;
/// Most keys in one run's state.
pub const MAX_STATE_KEYS: i64 = 256;
/// Most bytes of values in one run's state, all keys together.
pub const MAX_STATE_BYTES: i64 = 1 << 20;
/// Longest question text and name fields.
const MAX_TEXT: usize = 8 << 10;
/// Largest answer schema (JSON text).
pub const MAX_SCHEMA: usize = 16 << 10;
/// Longest artifact name and media type.
const MAX_NAME: usize = 255;

/// The tools a step attempt may call, and the limits a tool call runs under.
pub(crate) struct ToolGrant {
    pub(crate) tools: Vec<super::pipeline::LoadedTool>,
    pub(crate) fuel: u64,
    pub(crate) timeout: Duration,
    pub(crate) run_budget: Option<u64>,
    /// The model aliases the step may use (checked against the manifest and the
    /// operator's configuration at load).
    pub(crate) models: Vec<String>,
    /// Model tokens per attempt (`None`: unlimited).
    pub(crate) tokens: Option<u64>,
    /// Model tokens for the whole run (`None`: unlimited).
    pub(crate) run_tokens: Option<u64>,
}

/// The fewest answer tokens a clamped call is still sent with; below that the call is
/// refused with `BUDGET_EXHAUSTED`.
pub const MIN_ANSWER_TOKENS: u64 = 16;
/// Most bytes of streamed text in one `model` event.
const MAX_DELTA_EVENT: usize = 16 << 10;
/// Least time between two `model` delta events of one call.
const DELTA_INTERVAL: Duration = Duration::from_millis(300);

/// A call's identity for the per-step record: SHA-256 over the alias, its provider and
/// model, and the request as sent (`max_tokens` resolved).
fn request_hash(
    alias: &str,
    info: &crate::models::ModelInfo,
    request: &crate::models::ChatRequest,
) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for part in [alias, &info.provider, &info.model] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.update(serde_json::to_vec(request).unwrap_or_default());
    hex::encode(h.finalize())
}

/// The prompt-token estimate a call is checked with before it is sent: the request's
/// messages, tools and schema as JSON, in bytes, divided by 4 and rounded up.
pub fn estimate_prompt_tokens(request: &crate::models::ChatRequest) -> u64 {
    let bytes = serde_json::to_vec(&(&request.messages, &request.tools, &request.response_schema))
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    u64::try_from(bytes.div_ceil(4)).unwrap_or(u64::MAX)
}

/// The services of one step attempt.
pub(crate) struct StepServices {
    grant: ToolGrant,
    runner: Runner,
    run: RunRef,
    step: String,
    step_idx: i64,
    generation: i64,
    deadline: Deadline,
    live: Live,
    questions: AtomicI64,
    last_artifact: Mutex<Option<String>>,
    /// A connector step's config, read with `state-get("corral.config")` (the connector
    /// interface's exports take no config).
    config: Option<String>,
    /// The attempt's queued guest events, committed before each event of the services'.
    guest_events: Option<super::guest_events::GuestEvents>,
    /// Model tokens this attempt used (the provider's reported usage).
    tokens_used: std::sync::atomic::AtomicU64,
    /// A model call was refused, or charged past a token budget: the attempt fails with
    /// `BUDGET_EXHAUSTED`.
    tokens_exhausted: std::sync::atomic::AtomicBool,
    /// Model calls this attempt made, for the per-step record.
    model_calls: AtomicI64,
    /// The attempt's tool calls in flight (see [`StepServices::finish_tool_calls`]).
    tool_calls: ToolCalls,
}

/// The tool calls of one attempt. Each runs in a task of its own, so that once a tool
/// has returned, its fuel is settled and its `completed` event committed even when the
/// step that called it is stopped at that moment (its deadline, a cancel or a pause drop
/// the step's future, and with it the host call waiting on the tool).
#[derive(Default)]
struct ToolCalls {
    /// Stops the tools still running when the attempt is over.
    stop: tokio_util::sync::CancellationToken,
    running: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// The reserved state key under which a connector step reads its config.
pub const CONFIG_KEY: &str = "corral.config";

impl StepServices {
    #[allow(clippy::too_many_arguments)] // one call site; each part is a distinct handle
    pub(crate) fn new(
        runner: Runner,
        run: RunRef,
        step: String,
        step_idx: i64,
        generation: i64,
        deadline: Deadline,
        live: Live,
        grant: ToolGrant,
    ) -> Self {
        let stop_tools = live.cancel.child_token();
        StepServices {
            grant,
            runner,
            run,
            step,
            step_idx,
            generation,
            deadline,
            live,
            questions: AtomicI64::new(0),
            last_artifact: Mutex::new(None),
            config: None,
            guest_events: None,
            tokens_used: Default::default(),
            tokens_exhausted: Default::default(),
            model_calls: AtomicI64::new(0),
            tool_calls: ToolCalls {
                stop: stop_tools,
                running: Mutex::default(),
            },
        }
    }

    /// Ends the attempt's tool calls: stops those still running and waits until each has
    /// settled its fuel and committed its `completed` event, so they come before the
    /// attempt's outcome in the run's log and in its fuel total.
    pub(crate) async fn finish_tool_calls(&self) {
        self.tool_calls.stop.cancel();
        let running = std::mem::take(
            &mut *self
                .tool_calls
                .running
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for call in running {
            if let Err(e) = call.await {
                tracing::warn!("a tool call task failed: {e}");
            }
        }
    }

    /// Orders the services' events after the guest's logs and progress.
    pub(crate) fn with_guest_events(mut self, events: super::guest_events::GuestEvents) -> Self {
        self.guest_events = Some(events);
        self
    }

    /// Commits the guest's queued events, so what the services commit next follows them
    /// in the run's log (the order of the guest's calls).
    async fn flush_guest_events(&self) {
        if let Some(events) = &self.guest_events {
            events.flush().await;
        }
    }

    /// Gives a connector step its config (under [`CONFIG_KEY`]).
    pub(crate) fn with_config(mut self, config: String) -> Self {
        self.config = Some(config);
        self
    }

    /// Model tokens this attempt used.
    pub(crate) fn tokens_used(&self) -> u64 {
        self.tokens_used.load(Ordering::Relaxed)
    }

    /// Whether a token budget stopped (or was overrun by) a model call of this attempt.
    pub(crate) fn tokens_exhausted(&self) -> bool {
        self.tokens_exhausted.load(Ordering::Relaxed)
    }

    /// The last artifact this attempt stored, for the step's `complete` event.
    pub(crate) fn last_artifact(&self) -> Option<String> {
        self.last_artifact
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn store_error(e: impl std::fmt::Display) -> PluginError {
        tracing::warn!("run service failed: {e}");
        PluginError::Transient("the host's database is unavailable; try again".into())
    }

    async fn wait_for_answer(&self, q: &Question) -> Result<String, PluginError> {
        let mut pause_seen = false;
        loop {
            let notified = self.live.answered.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(answer) = self
                .runner
                .store()
                .answer_of(q)
                .await
                .map_err(Self::store_error)?
            {
                return Ok(answer);
            }
            // Answers from this process wake us at once; answers written by another
            // process (`corral answer`) are found by polling. A pause does not wait for a
            // person: it interrupts the attempt (the engine drops this call), and the step
            // asks again on resume, where an answer given meanwhile is replayed.
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = async {
                    if pause_seen {
                        std::future::pending::<()>().await;
                    }
                    self.live.pause.cancelled().await;
                } => {
                    pause_seen = true;
                    self.live.interrupt.cancel();
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl RunServices for StepServices {
    async fn secret(&self, name: &str) -> Option<String> {
        tenant_secret(&self.runner, &self.run.tenant_id, name).await
    }

    async fn call_tool(&self, name: &str, arguments: &str) -> Result<String, PluginError> {
        self.call_granted_tool(name, arguments).await
    }

    async fn model(
        &self,
        alias: &str,
        request: &crate::models::ChatRequest,
        deltas: crate::models::DeltaSink<'_>,
    ) -> Result<crate::models::ChatResponse, PluginError> {
        self.call_model(alias, request, deltas).await
    }

    async fn put_artifact(
        &self,
        name: &str,
        media_type: &str,
        content: &[u8],
    ) -> Result<String, PluginError> {
        let max = self.runner.inner.config.max_artifact_bytes;
        if content.len() > max {
            return Err(PluginError::InvalidInput(format!(
                "artifact `{name}` is {} bytes, more than the {max}-byte limit",
                content.len()
            )));
        }
        check_artifact_name(name)?;
        if media_type.is_empty()
            || media_type.len() > MAX_NAME
            || media_type
                .chars()
                .any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(PluginError::InvalidInput(format!(
                "artifact media type must be 1-{MAX_NAME} bytes with no spaces or control \
                 characters, e.g. `text/csv`"
            )));
        }
        self.flush_guest_events().await;
        let (record, event) = self
            .runner
            .store()
            .put_artifact(
                &self.run,
                &NewArtifact {
                    step: &self.step,
                    name,
                    media_type,
                    content,
                },
            )
            .await
            .map_err(Self::store_error)?;
        self.runner.bus().publish(event);
        *self
            .last_artifact
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(record.id.clone());
        Ok(record.id)
    }

    async fn ask(&self, question: &str, schema: Option<&str>) -> Result<String, PluginError> {
        if question.len() > MAX_TEXT {
            return Err(PluginError::InvalidInput(format!(
                "question is longer than {MAX_TEXT} bytes"
            )));
        }
        if let Some(schema) = schema {
            crate::engine::json::check("answer schema", schema, MAX_SCHEMA)
                .map_err(PluginError::InvalidInput)?;
            let value: serde_json::Value = serde_json::from_str(schema)
                .map_err(|e| PluginError::InvalidInput(format!("answer schema: {e}")))?;
            jsonschema::validator_for(&value).map_err(|e| {
                PluginError::InvalidInput(format!("answer schema is not a JSON Schema: {e}"))
            })?;
        }
        let q = Question {
            run_id: self.run.id.clone(),
            step_idx: self.step_idx,
            generation: self.generation,
            question_no: self.questions.fetch_add(1, Ordering::Relaxed) + 1,
            question: crate::capabilities::log::neutralise(question, MAX_TEXT),
            schema: schema.map(str::to_string),
        };
        // Asked before (the step is re-running after a restart)? Replay the answer.
        if let Some(answer) = self
            .runner
            .store()
            .ask(&q)
            .await
            .map_err(Self::store_error)?
        {
            return Ok(answer);
        }
        let schema_json = schema
            .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
            .unwrap_or(serde_json::Value::Null);
        self.flush_guest_events().await;
        self.runner
            .commit(
                &self.run,
                &[
                    Change::StepStatus {
                        idx: self.step_idx,
                        from: Some(&["running"]),
                        to: "waiting",
                    },
                    Change::RunStatus {
                        from: &["running"],
                        to: "waiting",
                    },
                ],
                Some((
                    "input_required",
                    json!({
                        "step_id": self.step,
                        "question": q.question,
                        "answer_schema": schema_json,
                        "question_no": q.question_no,
                    }),
                )),
            )
            .await
            .map_err(Self::store_error)?;
        tracing::info!(run_id = %self.run.id, tenant = %self.run.tenant_id, step = %self.step, question_no = q.question_no, "run waiting for input");
        // Waiting for a person uses neither fuel (the guest is not running) nor the step's
        // wall clock.
        self.deadline.pause();
        let answer = self.wait_for_answer(&q).await;
        self.deadline.resume();
        let answer = answer?;
        self.runner
            .commit(
                &self.run,
                &[
                    Change::StepStatus {
                        idx: self.step_idx,
                        from: Some(&["waiting"]),
                        to: "running",
                    },
                    Change::RunStatus {
                        from: &["waiting"],
                        to: "running",
                    },
                ],
                Some((
                    "running",
                    json!({
                        "step_id": self.step,
                        "progress_label": "answer received",
                        "question_no": q.question_no,
                    }),
                )),
            )
            .await
            .map_err(Self::store_error)?;
        Ok(answer)
    }

    async fn state_get(&self, key: &str) -> Option<Vec<u8>> {
        if key.len() > MAX_KEY {
            return None;
        }
        if key == CONFIG_KEY {
            return self.config.as_ref().map(|c| c.as_bytes().to_vec());
        }
        match self.runner.store().state_get(&self.run.id, key).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!("state-get failed: {e}");
                None
            }
        }
    }

    async fn state_set(&self, key: &str, value: &[u8]) -> Result<(), PluginError> {
        if key.is_empty() || key.len() > MAX_KEY {
            return Err(PluginError::InvalidInput(format!(
                "state keys are 1-{MAX_KEY} bytes"
            )));
        }
        if key.starts_with("corral.") {
            return Err(PluginError::InvalidInput(format!(
                "state key `{key}`: keys starting with `corral.` are reserved for the host"
            )));
        }
        if value.len() > MAX_STATE_VALUE {
            return Err(PluginError::InvalidInput(format!(
                "state values are at most {MAX_STATE_VALUE} bytes (this one is {})",
                value.len()
            )));
        }
        let written = self
            .runner
            .store()
            .state_set(
                &self.run.id,
                key,
                value,
                crate::store::StateCaps {
                    keys: MAX_STATE_KEYS,
                    bytes: MAX_STATE_BYTES,
                },
            )
            .await
            .map_err(Self::store_error)?;
        match written {
            crate::store::StateWrite::Stored => Ok(()),
            crate::store::StateWrite::TooManyKeys => Err(PluginError::Permanent(format!(
                "a run's state holds at most {MAX_STATE_KEYS} keys"
            ))),
            crate::store::StateWrite::TooManyBytes => Err(PluginError::Permanent(format!(
                "a run's state holds at most {MAX_STATE_BYTES} bytes of values in all"
            ))),
        }
    }
}

impl StepServices {
    /// What is left of the attempt's and the run's token budgets (`None`: unlimited).
    fn tokens_left(&self) -> Option<u64> {
        let attempt = self
            .grant
            .tokens
            .map(|t| t.saturating_sub(self.tokens_used.load(Ordering::Relaxed)));
        let run = self
            .grant
            .run_tokens
            .map(|t| t.saturating_sub(self.live.tokens.load(Ordering::Relaxed)));
        match (attempt, run) {
            (Some(a), Some(r)) => Some(a.min(r)),
            (a, r) => a.or(r),
        }
    }

    fn budget_refusal(&self, message: String) -> PluginError {
        self.tokens_exhausted.store(true, Ordering::Relaxed);
        PluginError::Permanent(format!("BUDGET_EXHAUSTED: {message}"))
    }

    /// `model.complete`: a granted alias, under the token budgets (see
    /// [`estimate_prompt_tokens`]; a call that does not fit is clamped to what is left, or
    /// refused when fewer than [`MIN_ANSWER_TOKENS`] answer tokens would be left), charged
    /// with the provider's usage, with an event per call and throttled delta events.
    async fn call_model(
        &self,
        alias: &str,
        request: &crate::models::ChatRequest,
        deltas: crate::models::DeltaSink<'_>,
    ) -> Result<crate::models::ChatResponse, PluginError> {
        if !self.grant.models.iter().any(|a| a == alias) {
            let granted = if self.grant.models.is_empty() {
                "no models".to_string()
            } else {
                self.grant.models.join(", ")
            };
            return Err(not_granted(&format!(
                "model `{}` (this step may use: {granted})",
                crate::capabilities::log::neutralise(alias, 64)
            )));
        }
        let Some(gateway) = self.runner.models().cloned() else {
            return Err(not_granted(&format!("model `{alias}`")));
        };
        let tenant = &self.run.tenant_id;
        let info = gateway.describe(tenant, alias).unwrap_or_default();
        let mut request = request.clone();
        let max_tokens = request
            .max_tokens
            .or_else(|| gateway.default_max_tokens(tenant, alias))
            .unwrap_or(crate::models::config::DEFAULT_MAX_TOKENS);
        // The call as the plugin made it (before any clamp), for the per-step record.
        let request_hash = request_hash(alias, &info, &request);
        let estimate = estimate_prompt_tokens(&request);
        let mut clamped = false;
        if let Some(left) = self.tokens_left() {
            let room = left.saturating_sub(estimate);
            if room < MIN_ANSWER_TOKENS.min(u64::from(max_tokens)) {
                return Err(self.budget_refusal(format!(
                    "model `{alias}`: the prompt (about {estimate} tokens) and an answer do not \
                     fit in the {left} tokens left of the token budget"
                )));
            }
            if room < u64::from(max_tokens) {
                clamped = true;
            }
            request.max_tokens =
                Some(u32::try_from(room.min(u64::from(max_tokens))).unwrap_or(max_tokens));
        } else {
            request.max_tokens = Some(max_tokens);
        }

        self.flush_guest_events().await;
        // The step's n-th call, made before by an earlier attempt with the same request:
        // replay the recorded answer (nothing is sent, nothing charged).
        let call_no = self.model_calls.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(answer) = self.replayed(call_no, &request_hash).await {
            if !answer.content.is_empty() {
                deltas(&answer.content);
            }
            self.commit_event(
                "model_call",
                json!({
                    "step_id": self.step, "alias": alias, "provider": info.provider,
                    "model": info.model, "input_tokens": 0, "output_tokens": 0, "tokens": 0,
                    "cached": answer.cached, "replayed": true, "latency_ms": 0,
                    "max_tokens": request.max_tokens, "clamped": clamped, "status": "ok",
                }),
            )
            .await;
            return Ok(answer);
        }
        // Reserve what the call may use at most (the prompt estimate plus its max-tokens)
        // before anything is sent, in memory and in the database: a call stopped by the
        // step's deadline or a cancel has its future dropped mid-call and never settles, so
        // it stays charged its reservation (the provider may bill it all the same). A call
        // that completes is settled to the provider's reported usage below.
        let reserved = estimate.saturating_add(u64::from(request.max_tokens.unwrap_or(0)));
        self.tokens_used.fetch_add(reserved, Ordering::Relaxed);
        self.live.tokens.fetch_add(reserved, Ordering::Relaxed);
        let reserved_i64 = i64::try_from(reserved).unwrap_or(i64::MAX);
        if let Err(e) = self
            .runner
            .commit(
                &self.run,
                &[Change::AddTokens {
                    step_idx: self.step_idx,
                    tokens: reserved_i64,
                    cost_micros: 0,
                }],
                None,
            )
            .await
        {
            tracing::warn!("could not reserve model tokens: {e}");
        }
        // Deltas gather here; a ticker commits them as `model` events at most every
        // DELTA_INTERVAL, and what is left when the answer is complete goes last.
        let pending = std::sync::Arc::new(Mutex::new(String::new()));
        let sink_pending = pending.clone();
        let sink = move |d: &str| {
            deltas(d);
            let mut p = sink_pending.lock().unwrap_or_else(PoisonError::into_inner);
            if p.len().saturating_add(d.len()) <= MAX_DELTA_EVENT {
                p.push_str(d);
            }
        };
        let ctx = crate::models::CallContext {
            tenant: tenant.clone(),
            run_id: Some(self.run.id.clone()),
        };
        let started = std::time::Instant::now();
        let call = gateway.complete(&ctx, alias, &request, &sink);
        tokio::pin!(call);
        let result = loop {
            tokio::select! {
                r = &mut call => break r,
                _ = tokio::time::sleep(DELTA_INTERVAL) => self.flush_deltas(alias, &pending).await,
            }
        };
        self.flush_deltas(alias, &pending).await;
        let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);

        let usage = result.as_ref().map(|r| r.usage).unwrap_or_default();
        let used = usage.total();
        // Settle the reservation to the reported usage.
        let settle = |counter: &std::sync::atomic::AtomicU64| {
            if used >= reserved {
                counter
                    .fetch_add(used - reserved, Ordering::Relaxed)
                    .saturating_add(used - reserved)
            } else {
                counter
                    .fetch_sub(reserved - used, Ordering::Relaxed)
                    .saturating_sub(reserved - used)
            }
        };
        let step_total = settle(&self.tokens_used);
        let run_total = settle(&self.live.tokens);
        crate::metrics::global().add_model_usage(
            &usage,
            result.as_ref().is_ok_and(|r| r.cached),
            info.cost(&usage),
        );
        let over = self.grant.tokens.is_some_and(|t| step_total > t)
            || self.grant.run_tokens.is_some_and(|t| run_total > t);
        let mut payload = json!({
            "step_id": self.step,
            "alias": alias,
            "provider": info.provider,
            "model": info.model,
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "tokens": used,
            "cached": result.as_ref().is_ok_and(|r| r.cached),
            "latency_ms": latency_ms,
            "max_tokens": request.max_tokens,
            "clamped": clamped,
            "status": if result.is_ok() { "ok" } else { "failed" },
        });
        if let Some(obj) = payload.as_object_mut() {
            if let Some(cost) = info.cost(&usage) {
                obj.insert("cost".into(), json!(cost));
            }
            if let Err(e) = &result {
                obj.insert(
                    "error".into(),
                    json!(crate::capabilities::log::neutralise(&e.to_string(), 300)),
                );
            }
            if info.log_prompts {
                obj.insert(
                    "prompt".into(),
                    json!(crate::capabilities::log::neutralise(
                        &serde_json::to_string(&request.messages).unwrap_or_default(),
                        MAX_DELTA_EVENT
                    )),
                );
            }
        }
        // The tokens are charged to the run, the step and the tenant with the event.
        self.flush_guest_events().await;
        let tokens = i64::try_from(used)
            .unwrap_or(i64::MAX)
            .saturating_sub(reserved_i64);
        #[allow(clippy::cast_possible_truncation)] // saturating float-to-int; costs are small
        let cost_micros = info
            .cost(&usage)
            .map_or(0, |c| (c * 1_000_000.0).round() as i64);
        let charge = [Change::AddTokens {
            step_idx: self.step_idx,
            tokens,
            cost_micros,
        }];
        let changes: &[Change] = if tokens != 0 || cost_micros > 0 {
            &charge
        } else {
            &[]
        };
        if let Err(e) = self
            .runner
            .commit(&self.run, changes, Some(("model_call", payload)))
            .await
        {
            tracing::warn!("could not record a model_call event: {e}");
        }
        let answer = result.map_err(|e| match e {
            crate::models::ModelError::Transient(m) => PluginError::Transient(m),
            crate::models::ModelError::InvalidRequest(m) => PluginError::InvalidInput(m),
            crate::models::ModelError::UnknownAlias(a) => {
                not_granted(&format!("model `{a}` (not configured for this tenant)"))
            }
            crate::models::ModelError::Permanent(m) => PluginError::Permanent(m),
        })?;
        self.record(call_no, &request_hash, &answer).await;
        if over {
            return Err(self.budget_refusal(format!(
                "model `{alias}`: the call used {used} tokens, past the token budget"
            )));
        }
        Ok(answer)
    }

    /// The recorded answer of this step's `call_no`-th call, if the request is the same.
    async fn replayed(
        &self,
        call_no: i64,
        request_hash: &str,
    ) -> Option<crate::models::ChatResponse> {
        let stored = match self
            .runner
            .store()
            .model_call(
                &self.run.id,
                self.step_idx,
                self.generation,
                call_no,
                request_hash,
            )
            .await
        {
            Ok(stored) => stored?,
            Err(e) => {
                tracing::warn!("cannot read a recorded model call: {e}");
                return None;
            }
        };
        let mut answer: crate::models::ChatResponse = serde_json::from_str(&stored).ok()?;
        answer.usage = crate::models::Usage::default();
        Some(answer)
    }

    /// Records this step's `call_no`-th call, for a later attempt to replay.
    async fn record(&self, call_no: i64, request_hash: &str, answer: &crate::models::ChatResponse) {
        let Ok(text) = serde_json::to_string(answer) else {
            return;
        };
        if let Err(e) = self
            .runner
            .store()
            .record_model_call(
                &self.run.id,
                (self.step_idx, self.generation, call_no),
                request_hash,
                &text,
            )
            .await
        {
            tracing::warn!("cannot record a model call: {e}");
        }
    }

    /// Commits the text streamed since the last `model` event, if any.
    async fn flush_deltas(&self, alias: &str, pending: &Mutex<String>) {
        let text = std::mem::take(&mut *pending.lock().unwrap_or_else(PoisonError::into_inner));
        if text.is_empty() {
            return;
        }
        self.commit_event(
            "model",
            json!({"step_id": self.step, "alias": alias, "delta": text}),
        )
        .await;
    }

    /// Commits and publishes an event of the services'.
    async fn commit_event(&self, kind: &'static str, payload: serde_json::Value) {
        self.flush_guest_events().await;
        if let Err(e) = self
            .runner
            .commit(&self.run, &[], Some((kind, payload)))
            .await
        {
            tracing::warn!("could not record a {kind} event: {e}");
        }
    }

    /// `host.call-tool`: a granted tool, arguments checked against its schema before it
    /// runs, in its own fresh sandbox, its fuel charged to the run.
    /// Adds `fuel` (negative to give some back) to the run, the step and the tenant, and to
    /// the run's live total the budget checks read.
    async fn charge_tool_fuel(&self, fuel: i64, what: &str) {
        self.ledger().commit(fuel, what, None).await;
    }

    /// What a tool call needs to record itself after its caller is gone.
    fn ledger(&self) -> ToolLedger {
        ToolLedger {
            runner: self.runner.clone(),
            run: self.run.clone(),
            step: self.step.clone(),
            step_idx: self.step_idx,
            live: self.live.clone(),
            guest_events: self.guest_events.clone(),
        }
    }

    async fn call_granted_tool(&self, name: &str, arguments: &str) -> Result<String, PluginError> {
        self.invoke_granted_tool(name, arguments)
            .await
            .map_err(|(_, e)| e)
    }

    /// [`StepServices::call_granted_tool`], with the Corral error code of a failure beside
    /// the error the guest would see (an MCP tool call shows the code to its client).
    pub(crate) async fn invoke_granted_tool(
        &self,
        name: &str,
        arguments: &str,
    ) -> Result<String, (&'static str, PluginError)> {
        let invalid = |e: PluginError| ("INVALID_INPUT", e);
        let (tool, spec) = self.find_tool(name).map_err(|e| match e {
            PluginError::InvalidInput(_) => invalid(e),
            e => ("NOT_GRANTED", e),
        })?;
        crate::engine::json::check("arguments", arguments, 1 << 20)
            .map_err(|e| invalid(PluginError::InvalidInput(e)))?;
        let args: serde_json::Value = serde_json::from_str(arguments).map_err(|e| {
            invalid(PluginError::InvalidInput(format!(
                "arguments for `{name}`: {e}"
            )))
        })?;
        let qualified = format!("{}/{}", tool.name, spec.name);
        // Bad arguments never reach the tool.
        super::validate_against(&spec.input_schema.to_string(), &args).map_err(|e| {
            invalid(PluginError::InvalidInput(format!(
                "arguments for `{qualified}`: {e}"
            )))
        })?;
        let summary = crate::capabilities::log::neutralise(arguments, 200);
        self.event(json!({"step_id": self.step, "tool": qualified, "phase": "started", "arguments": summary}))
            .await;

        let mut fuel = self.grant.fuel;
        if let Some(budget) = self.grant.run_budget {
            let used = u64::try_from(self.live.fuel.load(Ordering::Relaxed)).unwrap_or(0);
            fuel = fuel.min(budget.saturating_sub(used));
            if fuel == 0 {
                return Err((
                    "BUDGET_EXHAUSTED",
                    PluginError::Permanent("the run's fuel budget is spent".into()),
                ));
            }
        }
        let mut limits = crate::engine::Limits {
            fuel: Some(fuel),
            timeout: self.grant.timeout,
            ..crate::engine::Limits::default()
        };
        // The tool's own manifest (checked at load): its scratch quota, its egress rules
        // with their secrets and http limits, its host files. Nothing without one.
        tool.manifest.apply_scratch_limits(&mut limits);
        let how = crate::engine::Invocation {
            limits,
            // Stopped with the attempt (see `finish_tool_calls`), or by the run's cancel.
            cancel: self.tool_calls.stop.child_token(),
            // The step's own clock: a tool call never outlives the step that made it.
            deadline: Some(self.deadline.clone()),
            http: tool
                .manifest
                .http_policy(&self.runner.engine().config().http_resolver)
                .map(std::sync::Arc::new),
            files: tool.manifest.grants.resolved_files.clone(),
            // Only the calling run's tenant's secrets, for the host to put in the tool's
            // granted requests; every other service is refused.
            services: Some(std::sync::Arc::new(ToolServices {
                runner: self.runner.clone(),
                tenant_id: self.run.tenant_id.clone(),
                tool: qualified.clone(),
            })),
            ..crate::engine::Invocation::default()
        };
        let call = crate::engine::Call::CallTool {
            name: spec.name.clone(),
            arguments: arguments.to_string(),
        };
        // Reserve the call's whole fuel grant before it starts, in memory and in the
        // database. A call that returns is settled to the fuel it used, with its
        // `completed` event, in one commit; one whose settling never happens (the host
        // died mid-call) stays charged its reservation, since what it burnt is unknown and
        // a budget a guest could dodge is no budget.
        let reserved = i64::try_from(fuel).unwrap_or(i64::MAX);
        self.charge_tool_fuel(reserved, "reserve").await;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let runner = self.runner.clone();
        let ledger = self.ledger();
        let plugin = tool.plugin.clone();
        let task = tokio::spawn(async move {
            let outcome = runner.engine().invoke(&plugin, call, how).await;
            let used = i64::try_from(outcome.fuel_used).unwrap_or(i64::MAX);
            let (status, code) = match &outcome.result {
                Ok(_) => ("ok", None),
                Err(f) => ("failed", Some(f.code.as_str())),
            };
            let payload = json!({
                "step_id": ledger.step, "tool": qualified, "phase": "completed", "status": status,
                "error_code": code, "fuel_used": used,
                "duration_ms": u64::try_from(outcome.duration.as_millis()).unwrap_or(u64::MAX),
            });
            ledger
                .commit(used.saturating_sub(reserved), "settle", Some(payload))
                .await;
            // The caller may be gone (its step was stopped); the call is settled anyway.
            let _ = tx.send((outcome, qualified));
        });
        self.tool_calls
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(task);
        let Ok((outcome, qualified)) = rx.await else {
            return Err((
                "PLUGIN_ERROR",
                PluginError::Permanent("the tool call stopped before it returned".into()),
            ));
        };
        match outcome.result {
            Ok(crate::engine::Output::Json(text)) => Ok(text),
            Ok(_) => Err((
                "PLUGIN_ERROR",
                PluginError::Permanent(format!("`{qualified}` returned no JSON")),
            )),
            Err(f) if f.retry == crate::engine::Retry::Transient => Err((
                f.code.as_str(),
                PluginError::Transient(format!("`{qualified}`: {}", f.message)),
            )),
            Err(f) if f.code == crate::engine::ErrorCode::InvalidInput => Err((
                f.code.as_str(),
                PluginError::InvalidInput(format!("`{qualified}`: {}", f.message)),
            )),
            Err(f) => Err((
                f.code.as_str(),
                PluginError::Permanent(format!("`{qualified}` failed: {}: {}", f.code, f.message)),
            )),
        }
    }

    /// A granted tool by `plugin/tool`, or by a tool name only one granted plugin has.
    fn find_tool(
        &self,
        name: &str,
    ) -> Result<(&super::pipeline::LoadedTool, &crate::engine::ToolSpec), PluginError> {
        let (plugin, tool) = match name.split_once('/') {
            Some((p, t)) => (Some(p), t),
            None => (None, name),
        };
        let matches: Vec<_> = self
            .grant
            .tools
            .iter()
            .filter(|t| plugin.is_none_or(|p| p == t.name))
            .flat_map(|t| {
                t.specs
                    .iter()
                    .filter(|s| s.name == tool)
                    .map(move |s| (t, s))
            })
            .collect();
        match matches.as_slice() {
            [one] => Ok(*one),
            [] => {
                let granted: Vec<String> = self
                    .grant
                    .tools
                    .iter()
                    .flat_map(|t| {
                        t.specs
                            .iter()
                            .map(move |s| format!("{}/{}", t.name, s.name))
                    })
                    .collect();
                Err(not_granted(&format!(
                    "tool `{name}` (this step may call: {})",
                    if granted.is_empty() {
                        "no tools".to_string()
                    } else {
                        granted.join(", ")
                    }
                )))
            }
            _ => Err(PluginError::InvalidInput(format!(
                "tool `{name}` is ambiguous: name it as plugin/tool"
            ))),
        }
    }

    /// Commits and publishes a `tool_call` event.
    async fn event(&self, payload: serde_json::Value) {
        self.ledger().commit(0, "record", Some(payload)).await;
    }
}

/// The value of `tenant`'s secret `name`, for the host to put in a granted request;
/// `None` when it has none or the database fails (logged).
async fn tenant_secret(runner: &Runner, tenant: &str, name: &str) -> Option<String> {
    match runner.store().secret_value(tenant, name).await {
        Ok(value) => value,
        Err(e) => {
            tracing::warn!(secret = name, tenant, "cannot read a secret: {e}");
            None
        }
    }
}

/// The services of one tool call: the secrets of the calling run's tenant, read by the
/// host for the requests the tool's manifest grants them to (the guest never sees a
/// value), and nothing else. A tool call has no tools, artifacts, questions, state or
/// models of its own; each is refused naming what is missing.
struct ToolServices {
    runner: Runner,
    tenant_id: String,
    /// `plugin/tool`, for the refusals.
    tool: String,
}

impl ToolServices {
    fn refuse(&self, what: &str) -> PluginError {
        not_granted(&format!("{what} (in a call of tool `{}`)", self.tool))
    }
}

#[async_trait::async_trait]
impl RunServices for ToolServices {
    async fn secret(&self, name: &str) -> Option<String> {
        tenant_secret(&self.runner, &self.tenant_id, name).await
    }

    async fn call_tool(&self, name: &str, _arguments: &str) -> Result<String, PluginError> {
        Err(self.refuse(&format!("tool `{name}`")))
    }

    async fn put_artifact(
        &self,
        _name: &str,
        _media_type: &str,
        _content: &[u8],
    ) -> Result<String, PluginError> {
        Err(self.refuse("put-artifact"))
    }

    async fn ask(&self, _question: &str, _schema: Option<&str>) -> Result<String, PluginError> {
        Err(self.refuse("ask"))
    }

    async fn state_get(&self, _key: &str) -> Option<Vec<u8>> {
        None
    }

    async fn state_set(&self, _key: &str, _value: &[u8]) -> Result<(), PluginError> {
        Err(self.refuse("state-set"))
    }

    async fn model(
        &self,
        alias: &str,
        _request: &crate::models::ChatRequest,
        _deltas: crate::models::DeltaSink<'_>,
    ) -> Result<crate::models::ChatResponse, PluginError> {
        Err(self.refuse(&format!("model `{alias}`")))
    }
}

/// Where a tool call records its fuel and its `tool_call` events.
struct ToolLedger {
    runner: Runner,
    run: RunRef,
    step: String,
    step_idx: i64,
    live: Live,
    guest_events: Option<super::guest_events::GuestEvents>,
}

impl ToolLedger {
    /// Adds `fuel` to the run, its step and its tenant (and to the run's live total) and
    /// commits `event` as a `tool_call` event after the guest's queued events, in one
    /// commit.
    async fn commit(&self, fuel: i64, what: &str, event: Option<serde_json::Value>) {
        if fuel == 0 && event.is_none() {
            return;
        }
        if event.is_some()
            && let Some(events) = &self.guest_events
        {
            events.flush().await;
        }
        let changes: &[Change] = &[Change::AddFuel {
            step_idx: self.step_idx,
            fuel,
        }];
        let changes = if fuel == 0 { &[] } else { changes };
        match self
            .runner
            .commit(&self.run, changes, event.map(|e| ("tool_call", e)))
            .await
        {
            Ok(_) => {
                self.live.fuel.fetch_add(fuel, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!("could not {what} a tool call: {e}"),
        }
    }
}

/// An artifact name is a plain file name: 1-255 bytes, no `/` or `\\`, not `.` or `..`,
/// no control characters (NUL included). It is refused, never rewritten, so the name a
/// plugin chose is the name every client sees.
fn check_artifact_name(name: &str) -> Result<(), PluginError> {
    let problem = if name.is_empty() || name.len() > MAX_NAME {
        Some(format!("must be 1-{MAX_NAME} bytes"))
    } else if name.contains(['/', '\\']) {
        Some("must not contain `/` or `\\`".to_string())
    } else if name == "." || name == ".." {
        Some("must not be `.` or `..`".to_string())
    } else if name.chars().any(char::is_control) {
        Some("must not contain control characters".to_string())
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(p) => Err(PluginError::InvalidInput(format!(
            "artifact name {:?} {p}: use a plain file name such as `report.csv`",
            crate::capabilities::log::neutralise(name, 64)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::check_artifact_name;

    /// An OpenAI-style provider on loopback that always reports 50 input and 10 output
    /// tokens, and counts the calls it got.
    async fn provider() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = calls.clone();
        let app = axum::Router::new().route(
            "/v1/chat/completions",
            axum::routing::post(move |body: axum::Json<serde_json::Value>| {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async move {
                    axum::Json(serde_json::json!({
                        "choices": [{"index": 0, "finish_reason": "stop",
                            "message": {"role": "assistant",
                                "content": format!("max {}", body["max_tokens"])}}],
                        "usage": {"prompt_tokens": 50, "completion_tokens": 10},
                    }))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}/v1"), calls)
    }

    /// RES-20: a step's model calls are granted by alias, estimated and clamped before
    /// they are sent, charged with the provider's usage after, refused with
    /// BUDGET_EXHAUSTED once the budget cannot fit another; the key stays out of the
    /// events and the database.
    #[tokio::test]
    async fn res_20_model_calls_are_granted_budgeted_and_charged() {
        use crate::capabilities::RunServices;
        use crate::models::{ChatRequest, Message, Role};
        let dir = tempfile::tempdir().unwrap();
        let key = "sk-unit-secret-0123456789abcdef";
        let store = crate::store::Store::open_in_dir(dir.path()).await.unwrap();
        let tenant = store.ensure_tenant("t").await.unwrap();
        store.put_secret(&tenant, "llm", key).await.unwrap();
        let engine = crate::engine::Engine::new(crate::engine::EngineConfig {
            scratch_root: dir.path().join("scratch"),
            ..Default::default()
        })
        .unwrap();
        let runner = super::Runner::new(engine, store.clone(), Default::default());
        let (url, calls) = provider().await;
        let mut aliases = std::collections::BTreeMap::new();
        aliases.insert(
            "fast".to_string(),
            toml::from_str::<crate::models::ModelConfig>(&format!(
                "provider = \"openai\"\nbase_url = \"{url}\"\nmodel = \"m\"\n\
                 key_secret = \"llm\"\nmax_tokens = 500\ninput_price_per_million = 1.0\n"
            ))
            .unwrap(),
        );
        let gateway = crate::models::HttpGateway::new(
            crate::models::ModelsConfig {
                aliases,
                ..Default::default()
            },
            std::sync::Arc::new(store.clone()),
        )
        .unwrap();
        assert!(runner.set_models(std::sync::Arc::new(gateway)));
        assert_eq!(runner.model_aliases(&tenant), ["fast"]);
        let (run, _) = store
            .create_run(&crate::store::NewRun {
                tenant_id: tenant.clone(),
                pipeline_id: None,
                pipeline_name: "p".into(),
                spec: "{}".into(),
                input: "{}".into(),
                steps: vec![("a".into(), "x".into())],
            })
            .await
            .unwrap();
        let live = super::Live {
            cancel: Default::default(),
            answered: Default::default(),
            fuel: Default::default(),
            tokens: Default::default(),
            pause: Default::default(),
            interrupt: Default::default(),
        };
        let services = super::StepServices::new(
            runner.clone(),
            run.as_ref(),
            "a".into(),
            0,
            0,
            crate::engine::Deadline::after(std::time::Duration::from_secs(60)),
            live.clone(),
            super::ToolGrant {
                tools: vec![],
                fuel: 1,
                timeout: std::time::Duration::from_secs(1),
                run_budget: None,
                models: vec!["fast".into()],
                tokens: Some(100),
                run_tokens: None,
            },
        );
        let request = ChatRequest {
            messages: vec![Message {
                role: Role::User,
                content: "the prompt text".into(),
                tool_calls: vec![],
                tool_call_id: None,
            }],
            ..Default::default()
        };
        let estimate = super::estimate_prompt_tokens(&request);
        assert!(estimate > 0 && estimate < 30, "{estimate}");

        // Not granted: refused, nothing sent.
        let e = services
            .model("smart", &request, &|_| {})
            .await
            .unwrap_err();
        assert!(format!("{e:?}").contains("not granted"), "{e:?}");
        // 100 tokens left: max_tokens 500 is clamped to what fits after the estimate.
        let got = services.model("fast", &request, &|_| {}).await.unwrap();
        assert_eq!(got.content, format!("max {}", 100 - estimate));
        assert_eq!(services.tokens_used(), 60);
        assert!(!services.tokens_exhausted());
        // 40 left: sent clamped, charged 60, over the budget: BUDGET_EXHAUSTED.
        let e = services.model("fast", &request, &|_| {}).await.unwrap_err();
        assert!(format!("{e:?}").contains("BUDGET_EXHAUSTED"), "{e:?}");
        assert!(services.tokens_exhausted());
        assert_eq!(services.tokens_used(), 120);
        // Nothing left: refused before sending.
        let e = services.model("fast", &request, &|_| {}).await.unwrap_err();
        assert!(format!("{e:?}").contains("BUDGET_EXHAUSTED"), "{e:?}");
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert_eq!(live.tokens.load(std::sync::atomic::Ordering::Relaxed), 120);

        // A later attempt of the step making the same first call gets the recorded answer:
        // nothing sent, nothing charged.
        let again = super::StepServices::new(
            runner.clone(),
            run.as_ref(),
            "a".into(),
            0,
            0,
            crate::engine::Deadline::after(std::time::Duration::from_secs(60)),
            live.clone(),
            super::ToolGrant {
                tools: vec![],
                fuel: 1,
                timeout: std::time::Duration::from_secs(1),
                run_budget: None,
                models: vec!["fast".into()],
                tokens: None,
                run_tokens: None,
            },
        );
        let replayed = again.model("fast", &request, &|_| {}).await.unwrap();
        assert_eq!(replayed.content, got.content);
        assert_eq!(replayed.usage.total(), 0);
        assert_eq!(again.tokens_used(), 0);
        // Its second call differs from the recorded one: sent.
        let mut other = request.clone();
        other.temperature = Some(0.5);
        again.model("fast", &other, &|_| {}).await.unwrap();
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);
        drop(again);

        let events = store.events_after(&run.id, 0, 1000).await.unwrap();
        let model_calls: Vec<_> = events.iter().filter(|e| e.kind == "model_call").collect();
        assert_eq!(model_calls.len(), 4, "{events:?}");
        assert_eq!(model_calls[2].payload["replayed"], true);
        assert_eq!(model_calls[2].payload["tokens"], 0);
        let first = &model_calls[0].payload;
        assert_eq!(first["alias"], "fast");
        assert_eq!(first["provider"], "openai");
        assert_eq!(first["model"], "m");
        assert_eq!(first["tokens"], 60);
        assert_eq!(first["cached"], false);
        assert_eq!(first["clamped"], true);
        assert_eq!(first["cost"], 50.0 / 1e6);
        assert!(events.iter().any(|e| e.kind == "model"), "delta events");
        let all = serde_json::to_string(&events).unwrap();
        assert!(
            !all.contains("the prompt text"),
            "no prompt without log_prompts"
        );
        assert!(!all.contains(key));
        // The database holds the key only sealed.
        drop(services);
        drop(runner);
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                let bytes = std::fs::read(&path).unwrap();
                assert!(
                    !bytes.windows(key.len()).any(|w| w == key.as_bytes()),
                    "{} holds the key in clear",
                    path.display()
                );
            }
        }
    }

    #[test]
    fn res_17_artifact_names_cannot_traverse_or_hold_nul() {
        for bad in [
            "",
            "../x",
            "/etc/x",
            "a/b",
            "a\\b",
            ".",
            "..",
            "x\0y",
            "x\ny",
            &"a".repeat(256),
        ] {
            assert!(check_artifact_name(bad).is_err(), "{bad:?} accepted");
        }
        for good in [
            "report.csv",
            "..x",
            "x..",
            "résumé.pdf",
            "a b.txt",
            &"a".repeat(255),
        ] {
            assert!(check_artifact_name(good).is_ok(), "{good:?} refused");
        }
    }
}
