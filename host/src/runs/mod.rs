//! Runs: pipelines as data, the durable run lifecycle, and the scheduler.
//!
//! A run moves `queued -> running -> (waiting) -> succeeded | failed | cancelled`; each
//! transition is committed with its event before the event is published. The executor
//! (`executor.rs`) drives one run through its steps; the [`Runner`] owns the scheduler,
//! crash recovery, cancellation and answers.

mod executor;
mod guest_events;
pub mod manifest;
pub mod pipeline;
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
    /// The answer does not match the question's schema.
    #[error("INVALID_ANSWER: {0}")]
    InvalidAnswer(String),
    /// The pipeline or its plugins are not usable.
    #[error("INVALID_PIPELINE: {0}")]
    InvalidPipeline(String),
    /// The input is not acceptable.
    #[error("INVALID_INPUT: {0}")]
    InvalidInput(String),
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
            RunError::InvalidAnswer(_) => "INVALID_ANSWER",
            RunError::InvalidPipeline(_) => "INVALID_PIPELINE",
            RunError::InvalidInput(_) => "INVALID_INPUT",
            RunError::TooManyQueued(_) => "TOO_MANY_QUEUED_RUNS",
            RunError::Store(_) => "STORE_ERROR",
        }
    }
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
    /// Model tokens this process has charged to the run (for its `[budget] tokens`).
    pub(crate) tokens: Arc<std::sync::atomic::AtomicU64>,
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
        let steps = pipeline
            .steps
            .iter()
            .map(|s| (s.name.clone(), executor::agent_type(s)))
            .collect();
        let new = NewRun {
            tenant_id: tenant_id.to_string(),
            pipeline_id,
            pipeline_name: pipeline.name.clone(),
            spec,
            input: input.to_string(),
            steps,
        };
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

    /// Cancels a queued, running, waiting or retrying run. A finished run is refused with
    /// `ALREADY_FINISHED` and left unchanged.
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
            return Ok(());
        }
        match status.as_str() {
            // Nobody is executing it, and with the flag set nobody will claim it: end it
            // here (guarded, so it still ends exactly once whoever else tries).
            "queued" => {
                if executor::finish_cancelled(self, &run.as_ref(), None, run.fuel_used).await? {
                    tracing::info!(
                        run_id = %run_id,
                        tenant = %tenant_id,
                        status = "cancelled",
                        code = "CANCELLED",
                        note = "cancelled while queued",
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

    /// Finishes queued runs that have a cancel request as cancelled (the scheduler never
    /// claims them). A cancel normally ends a queued run itself; this covers a canceller
    /// that died between setting the flag and ending the run.
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
                    note = "cancelled while queued",
                    "run finished"
                );
                n += 1;
            }
        }
        Ok(n)
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
    /// event, in the same transaction. Returns how many runs were taken over.
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

/// `HOST_CRASH`: the code of a step interrupted by its host dying.
pub const HOST_CRASH: &str = "HOST_CRASH";

/// The code string of an engine failure, for events.
pub(crate) fn code_str(code: ErrorCode) -> &'static str {
    code.as_str()
}
