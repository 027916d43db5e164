//! One invocation: a fresh Store with its limits, one call into the guest, and a typed
//! outcome, whatever the guest does.

use super::bindings::{agent, connector, types, v0_1};
use super::failure::{ErrorCode, Failure};
use super::json;
use super::limits::{Limiter, Limits};
use super::load::{WorldPre, describe_error};
use super::{Engine, Plugin, World};
use crate::capabilities::log::{LogBuffer, LogLine, Observer, Source};
use crate::capabilities::{HostState, Interrupt, RunServices};
use serde::Serialize;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use wasmtime::component::ResourceTable;
use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

/// What the host tells an agent about a call (the WIT `context` record).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunContext {
    /// The run id.
    pub run_id: String,
    /// The step name.
    pub step: String,
    /// 1-based attempt number.
    pub attempt: u32,
    /// The step's config as JSON text (`{}` when none).
    pub config: String,
    /// A later step's failure, sent back in a feedback loop.
    pub feedback: Option<String>,
}

/// Which export to call.
#[derive(Debug, Clone)]
pub enum Call {
    /// `agent.describe`.
    Describe,
    /// `agent.run`.
    Run {
        /// The call's context.
        ctx: RunContext,
        /// JSON input.
        input: String,
    },
    /// `tool.list-tools`.
    ListTools,
    /// `tool.call`.
    CallTool {
        /// Tool name.
        name: String,
        /// JSON arguments.
        arguments: String,
    },
    /// `connector.describe`.
    ConnectorDescribe,
    /// `connector.pull`.
    Pull {
        /// JSON query.
        query: String,
        /// Where to continue.
        cursor: Option<String>,
    },
    /// `connector.push`.
    Push {
        /// JSON items.
        items: Vec<String>,
    },
    /// `connector.handle-webhook`.
    Webhook {
        /// Header pairs.
        headers: Vec<(String, String)>,
        /// Raw body.
        body: Vec<u8>,
    },
}

impl Call {
    fn world(&self) -> World {
        match self {
            Call::Describe | Call::Run { .. } => World::Agent,
            Call::ListTools | Call::CallTool { .. } => World::Tool,
            Call::ConnectorDescribe
            | Call::Pull { .. }
            | Call::Push { .. }
            | Call::Webhook { .. } => World::Connector,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Call::Describe => "agent.describe",
            Call::Run { .. } => "agent.run",
            Call::ListTools => "tool.list-tools",
            Call::CallTool { .. } => "tool.call",
            Call::ConnectorDescribe => "connector.describe",
            Call::Pull { .. } => "connector.pull",
            Call::Push { .. } => "connector.push",
            Call::Webhook { .. } => "connector.handle-webhook",
        }
    }
}

/// An agent's self-description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentInfo {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Description.
    pub description: String,
    /// Input JSON Schema, if declared (as parsed JSON).
    pub input_schema: Option<serde_json::Value>,
    /// Output JSON Schema, if declared.
    pub output_schema: Option<serde_json::Value>,
}

/// A tool's spec, in the Model Context Protocol's shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ToolSpec {
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// JSON Schema of the arguments.
    #[serde(rename = "inputSchema")]
    pub input_schema: serde_json::Value,
}

/// A connector's self-description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnectorInfo {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Description.
    pub description: String,
}

/// What a successful call returned, checked and bounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// JSON text (`run`, `tool.call`).
    Json(String),
    /// `agent.describe`.
    AgentInfo(AgentInfo),
    /// `tool.list-tools`.
    Tools(Vec<ToolSpec>),
    /// `connector.describe`.
    ConnectorInfo(ConnectorInfo),
    /// `connector.pull`.
    Page {
        /// JSON items.
        items: Vec<String>,
        /// Next cursor.
        next_cursor: Option<String>,
    },
    /// `connector.push`: items accepted.
    Count(u32),
    /// `connector.handle-webhook`: JSON items.
    Items(Vec<String>),
}

/// Everything an invocation produced.
#[derive(Debug)]
pub struct Outcome {
    /// The output, or why there is none.
    pub result: Result<Output, Failure>,
    /// Fuel consumed.
    pub fuel_used: u64,
    /// Wall-clock time from Store creation to the end of the call.
    pub duration: Duration,
    /// Captured log lines (host.log, stdout, stderr).
    pub logs: Vec<LogLine>,
    /// Whether lines were dropped for the log budget.
    pub logs_truncated: bool,
}

/// How to make one call: limits, and the hooks the caller keeps.
#[derive(Clone, Default)]
pub struct Invocation {
    /// Budgets.
    pub limits: Limits,
    /// Receives logs and progress live.
    pub observer: Option<Observer>,
    /// Run services (tools, artifacts, ask, state); `None` denies them.
    pub services: Option<Arc<dyn RunServices>>,
    /// Cancels the call from outside.
    pub cancel: CancellationToken,
    /// The wall clock, when the caller shares it (to pause it while a person is asked);
    /// otherwise one is started from `limits.timeout` when the call begins.
    pub deadline: Option<super::Deadline>,
    /// What the plugin may reach over HTTP; `None` refuses every request.
    pub http: Option<Arc<crate::capabilities::http::HttpPolicy>>,
    /// Host files and directories it may read, under `/work/in` (read-only).
    pub files: Vec<crate::capabilities::FileGrant>,
}

impl std::fmt::Debug for Invocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invocation")
            .field("limits", &self.limits)
            .finish()
    }
}

/// Fuel set when the caller asked for none: effectively unmetered, still bounded by the
/// deadline.
const UNMETERED: u64 = u64::MAX;

/// How often (in fuel) a running guest writes its fuel counter back and yields: the
/// precision of the fuel charged to a guest stopped by its deadline or a cancel
/// (about a millisecond of a tight loop).
pub const FUEL_SYNC_INTERVAL: u64 = 10_000_000;

impl Engine {
    /// Asks a plugin what it is: an agent's or connector's info, a tool plugin's specs.
    /// Describing must be cheap, so it runs under a small budget that keeps a hostile
    /// `describe` in check.
    pub async fn describe(&self, plugin: &Plugin) -> Outcome {
        let call = match plugin.world {
            World::Agent => Call::Describe,
            World::Tool => Call::ListTools,
            World::Connector => Call::ConnectorDescribe,
        };
        let how = Invocation {
            limits: Limits {
                fuel: Some(1_000_000_000),
                timeout: Duration::from_secs(10),
                ..Limits::default()
            },
            ..Invocation::default()
        };
        self.invoke(plugin, call, how).await
    }

    /// Calls one export of `plugin` in a fresh sandbox and always returns an outcome.
    pub async fn invoke(&self, plugin: &Plugin, call: Call, how: Invocation) -> Outcome {
        let started = Instant::now();
        let limits = &how.limits;
        let log = Arc::new(Mutex::new(LogBuffer::new(
            limits.max_log_bytes,
            how.observer.clone(),
        )));
        let finish = |result: Result<Output, Failure>, fuel_used: u64| {
            let (logs, logs_truncated) =
                log.lock().unwrap_or_else(PoisonError::into_inner).finish();
            Outcome {
                result: result.map_err(Failure::bounded),
                fuel_used,
                duration: started.elapsed(),
                logs,
                logs_truncated,
            }
        };

        if call.world() != plugin.world {
            let msg = format!(
                "{} is not available: the plugin is a {}",
                call.name(),
                plugin.world.as_str()
            );
            return finish(Err(Failure::invalid_input(msg)), 0);
        }
        if let Err(f) = check_call_input(&call, limits) {
            return finish(Err(f), 0);
        }

        // A private, empty scratch directory no other guest has touched, for a plugin
        // that can open it: without `wasi:filesystem/preopens` a guest has no way to any
        // directory, so it gets none (and no granted files, which it could not read).
        let scratch = match plugin
            .filesystem
            .then(|| self.inner.scratch.take())
            .transpose()
        {
            Ok(dir) => dir,
            Err(e) => {
                tracing::error!("cannot create scratch dir: {e}");
                let f = Failure::new(
                    ErrorCode::ResourceLimit,
                    "host could not create a scratch directory",
                );
                return finish(Err(f), 0);
            }
        };

        let deadline = how
            .deadline
            .clone()
            .unwrap_or_else(|| super::Deadline::after(limits.timeout));
        // Granted files are linked (or copied) into a private directory the guest sees,
        // read-only, as /work/in; granted directories are mapped beside them.
        let files = if plugin.filesystem {
            &how.files[..]
        } else {
            &[]
        };
        let inputs = match stage_inputs(files, &self.config().scratch_root) {
            Ok(dir) => dir,
            Err(e) => {
                tracing::error!("cannot stage granted files: {e}");
                let f = Failure::new(
                    ErrorCode::ResourceLimit,
                    format!("host could not provide the granted files: {e}"),
                );
                return finish(Err(f), 0);
            }
        };
        let mut store = match self.new_store(
            &how,
            &log,
            scratch.as_ref().map(|d| d.path()),
            inputs.as_ref().map(|d| d.path()),
            deadline.clone(),
        ) {
            Ok(store) => store,
            Err(e) => {
                tracing::error!("cannot set up a store: {e}");
                let f = Failure::new(
                    ErrorCode::ResourceLimit,
                    "host could not set up the sandbox",
                );
                return finish(Err(f), 0);
            }
        };
        let initial_fuel = limits.fuel.unwrap_or(UNMETERED);

        let result = {
            let call_future = call_guest(&plugin.pre, &mut store, call);
            tokio::pin!(call_future);
            tokio::select! {
                biased;
                r = &mut call_future => r,
                _ = deadline.wait() => Err(Stopped::Deadline),
                _ = how.cancel.cancelled() => Err(Stopped::Cancelled),
            }
        };

        let fuel_used = initial_fuel.saturating_sub(store.get_fuel().unwrap_or(initial_fuel));
        let result = match result {
            Ok(output) => check_output(output, limits),
            Err(Stopped::Deadline) => Err(deadline_failure(limits)),
            Err(Stopped::Cancelled) => Err(Failure::new(ErrorCode::Cancelled, "cancelled")),
            // A guest that hit the memory cap and then gave up failed because of the
            // cap, whatever it said: report it so (retrying would not help).
            Err(Stopped::Guest(e)) if store.data().limiter.memory_refused => Err(Failure::new(
                ErrorCode::MemoryLimit,
                format!(
                    "the plugin hit its memory limit of {} bytes and failed: {}",
                    limits.memory_bytes, e.message
                ),
            )),
            Err(Stopped::Guest(e)) => Err(e),
            Err(Stopped::Wasm(e)) => Err(classify(&e, store.data(), limits)),
        };
        let touched = store.data().scratch.touched();
        drop(store);
        // Removing a directory can wait on the disk (a synchronous TRIM on filesystems
        // mounted with `discard`: milliseconds, measured by the benchmarks), so it happens
        // off the call path. The directory is private and the guest is gone: nothing can
        // use it in between.
        let scratch = scratch.and_then(|dir| self.inner.scratch.give_back(dir, touched));
        if scratch.is_some() || inputs.is_some() {
            tokio::task::spawn_blocking(move || drop((scratch, inputs)));
        }
        finish(result, fuel_used)
    }

    fn new_store(
        &self,
        how: &Invocation,
        log: &Arc<Mutex<LogBuffer>>,
        scratch: Option<&std::path::Path>,
        inputs: Option<&std::path::Path>,
        deadline: super::Deadline,
    ) -> anyhow::Result<Store<HostState>> {
        let limits = &how.limits;
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(crate::capabilities::log::CapturedStream::new(
            log.clone(),
            Source::Stdout,
        ))
        .stderr(crate::capabilities::log::CapturedStream::new(
            log.clone(),
            Source::Stderr,
        ))
        // No env, no args, no inherited stdio; stdin is empty.
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }))
        .max_random_size(1 << 20);
        if let Some(scratch) = scratch {
            wasi.preopened_dir(scratch, "/work", FsPerms::ReadWrite)
                .map_err(|e| anyhow::anyhow!("preopening scratch dir: {e}"))?;
        }
        if let Some(inputs) = inputs {
            wasi.preopened_dir(inputs, "/work/in", FsPerms::ReadOnly)
                .map_err(|e| anyhow::anyhow!("preopening granted files: {e}"))?;
        }
        for grant in how.files.iter().filter(|g| g.dir && scratch.is_some()) {
            wasi.preopened_dir(
                &grant.host,
                format!("/work/in/{}", grant.name),
                FsPerms::ReadOnly,
            )
            .map_err(|e| anyhow::anyhow!("preopening {}: {e}", grant.host.display()))?;
        }
        let mut memory = Limits::clone(limits);
        memory.memory_bytes = memory.memory_bytes.min(self.config().max_memory_bytes);
        let mut table = ResourceTable::new();
        table.set_max_capacity(limits.max_handles);
        let state = HostState {
            wasi: wasi.build(),
            table,
            limiter: Limiter::new(&memory),
            log: log.clone(),
            services: how.services.clone(),
            interrupt: None,
            deadline,
            cancel: how.cancel.clone(),
            http_ctx: wasmtime_wasi_http::WasiHttpCtx::new(),
            http: crate::capabilities::http::HttpHooks::new(
                how.http.clone(),
                how.services.clone(),
                log.clone(),
                how.observer.clone(),
            ),
            scratch: crate::capabilities::scratch::ScratchQuota::new(
                limits.scratch_bytes.min(self.config().max_scratch_bytes),
                limits
                    .scratch_entries
                    .min(self.config().max_scratch_entries),
            ),
        };
        let mut store = Store::new(self.wasmtime(), state);
        store.limiter(|s| &mut s.limiter);
        // Compiled code keeps its fuel counter in a register and writes it back to the
        // store only at calls; a guest stopped by its deadline or a cancel inside a tight
        // loop would be charged only up to its last call. Yielding every
        // FUEL_SYNC_INTERVAL units writes the counter back that often, so what a stopped
        // guest is charged is exact to within one interval.
        store
            .fuel_async_yield_interval(Some(FUEL_SYNC_INTERVAL))
            .map_err(|e| anyhow::anyhow!("setting the fuel yield interval: {e}"))?;
        store
            .set_fuel(limits.fuel.unwrap_or(UNMETERED))
            .map_err(|e| anyhow::anyhow!("setting fuel: {e}"))?;
        store.set_hostcall_fuel(limits.max_transfer_bytes);
        store.set_max_component_handles(limits.max_handles);
        // Every epoch tick: stop the guest if its deadline passed or it was cancelled,
        // otherwise yield to the executor so other guests and the event stream run.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|mut hook| {
            let state = hook.data_mut();
            if state.cancel.is_cancelled() {
                state.interrupt = Some(Interrupt::Cancelled);
                return Ok(UpdateDeadline::Interrupt);
            }
            if state.deadline.expired() {
                state.interrupt = Some(Interrupt::Deadline);
                return Ok(UpdateDeadline::Interrupt);
            }
            Ok(UpdateDeadline::Yield(1))
        });
        Ok(store)
    }
}

/// The directory seen as `/work/in`: granted files hard-linked (or copied) into it, and
/// an empty entry per granted directory (mapped over it by its own preopen). `None`
/// without grants.
fn stage_inputs(
    files: &[crate::capabilities::FileGrant],
    root: &std::path::Path,
) -> std::io::Result<Option<tempfile::TempDir>> {
    if files.is_empty() {
        return Ok(None);
    }
    let dir = tempfile::Builder::new().prefix("in-").tempdir_in(root)?;
    for grant in files {
        let target = dir.path().join(&grant.name);
        if grant.dir {
            std::fs::create_dir(&target)?;
        } else if std::fs::hard_link(&grant.host, &target).is_err() {
            std::fs::copy(&grant.host, &target)?;
        }
    }
    Ok(Some(dir))
}

enum Stopped {
    Deadline,
    Cancelled,
    /// The guest answered with a `plugin-error`.
    Guest(Failure),
    Wasm(wasmtime::Error),
}

impl From<wasmtime::Error> for Stopped {
    fn from(e: wasmtime::Error) -> Self {
        Stopped::Wasm(e)
    }
}

fn deadline_failure(limits: &Limits) -> Failure {
    Failure::new(
        ErrorCode::DeadlineExceeded,
        format!(
            "the plugin ran past its {:?} wall-clock limit",
            limits.timeout
        ),
    )
}

fn guest_error(e: types::PluginError) -> Stopped {
    Stopped::Guest(match e {
        types::PluginError::Transient(m) => Failure::transient(m),
        types::PluginError::Permanent(m) => Failure::new(ErrorCode::PluginError, m),
        types::PluginError::InvalidInput(m) => Failure::invalid_input(m),
    })
}

/// An agent world's calls; `$m` is the generated module of its contract version.
macro_rules! call_agent {
    ($pre:expr, $store:expr, $call:expr, $($m:ident)::+) => {{
        let store = $store;
        let plugin = $pre.instantiate_async(&mut *store).await?;
        let guest = plugin.corral_plugin_agent();
        match $call {
            Call::Describe => {
                let info = guest.call_describe(&mut *store).await?;
                Ok(Output::AgentInfo(AgentInfo {
                    name: info.name,
                    version: info.version,
                    description: info.description,
                    input_schema: parse_schema(info.input_schema)?,
                    output_schema: parse_schema(info.output_schema)?,
                }))
            }
            Call::Run { ctx, input } => {
                let ctx = $($m)::+::exports::corral::plugin::agent::Context {
                    run_id: ctx.run_id,
                    step: ctx.step,
                    attempt: ctx.attempt,
                    config: ctx.config,
                    feedback: ctx.feedback,
                };
                let out = guest.call_run(&mut *store, &ctx, &input).await?;
                out.map(Output::Json).map_err(guest_error)
            }
            _ => Err(wrong_world()),
        }
    }};
}

/// A tool world's calls.
macro_rules! call_tool {
    ($pre:expr, $store:expr, $call:expr) => {{
        let store = $store;
        let plugin = $pre.instantiate_async(&mut *store).await?;
        let guest = plugin.corral_plugin_tool();
        match $call {
            Call::ListTools => {
                let specs = guest.call_list_tools(&mut *store).await?;
                let mut tools = Vec::with_capacity(specs.len());
                for s in specs {
                    let schema = serde_json::from_str(&s.input_schema).map_err(|e| {
                        Stopped::Guest(Failure::new(
                            ErrorCode::PluginError,
                            format!("tool `{}` has an invalid input schema: {e}", s.name),
                        ))
                    })?;
                    tools.push(ToolSpec {
                        name: s.name,
                        description: s.description,
                        input_schema: schema,
                    });
                }
                Ok(Output::Tools(tools))
            }
            Call::CallTool { name, arguments } => {
                let out = guest.call_call(&mut *store, &name, &arguments).await?;
                out.map(Output::Json).map_err(guest_error)
            }
            _ => Err(wrong_world()),
        }
    }};
}

/// A connector world's calls; `$m` is the generated module of its contract version.
macro_rules! call_connector {
    ($pre:expr, $store:expr, $call:expr, $($m:ident)::+) => {{
        let store = $store;
        let plugin = $pre.instantiate_async(&mut *store).await?;
        let guest = plugin.corral_plugin_connector();
        match $call {
            Call::ConnectorDescribe => {
                let i = guest.call_describe(&mut *store).await?;
                Ok(Output::ConnectorInfo(ConnectorInfo {
                    name: i.name,
                    version: i.version,
                    description: i.description,
                }))
            }
            Call::Pull { query, cursor } => {
                let page = guest
                    .call_pull(&mut *store, &query, cursor.as_deref())
                    .await?
                    .map_err(guest_error)?;
                Ok(Output::Page {
                    items: page.items,
                    next_cursor: page.next_cursor,
                })
            }
            Call::Push { items } => {
                let n = guest.call_push(&mut *store, &items).await?;
                n.map(Output::Count).map_err(guest_error)
            }
            Call::Webhook { headers, body } => {
                let req = $($m)::+::exports::corral::plugin::connector::WebhookRequest {
                    headers,
                    body,
                };
                let items = guest.call_handle_webhook(&mut *store, &req).await?;
                items.map(Output::Items).map_err(guest_error)
            }
            _ => Err(wrong_world()),
        }
    }};
}

async fn call_guest(
    pre: &WorldPre,
    store: &mut Store<HostState>,
    call: Call,
) -> Result<Output, Stopped> {
    // The same calls for both contract versions: their exports are the same, in
    // different generated modules.
    match pre {
        WorldPre::Agent(pre) => call_agent!(pre, store, call, agent),
        WorldPre::AgentV0_1(pre) => call_agent!(pre, store, call, v0_1::agent),
        WorldPre::Tool(pre) => call_tool!(pre, store, call),
        WorldPre::ToolV0_1(pre) => call_tool!(pre, store, call),
        WorldPre::Connector(pre) => call_connector!(pre, store, call, connector),
        WorldPre::ConnectorV0_1(pre) => call_connector!(pre, store, call, v0_1::connector),
    }
}

fn wrong_world() -> Stopped {
    // `invoke` checks the world before calling; this is unreachable in practice.
    Stopped::Guest(Failure::invalid_input(
        "call does not match the plugin's world",
    ))
}

fn parse_schema(schema: Option<String>) -> Result<Option<serde_json::Value>, Stopped> {
    schema
        .map(|s| {
            serde_json::from_str(&s).map_err(|e| {
                Stopped::Guest(Failure::new(
                    ErrorCode::PluginError,
                    format!("the plugin's schema is not valid JSON: {e}"),
                ))
            })
        })
        .transpose()
}

/// Inputs are checked before a Store exists: bad input never reaches the guest.
fn check_call_input(call: &Call, limits: &Limits) -> Result<(), Failure> {
    let max = limits.max_input_bytes;
    match call {
        Call::Run { ctx, input } => {
            json::check_input("input", input, max)?;
            json::check_input("step config", &ctx.config, max)?;
            if let Some(f) = &ctx.feedback {
                json::check_input("feedback", f, max)?;
            }
            Ok(())
        }
        Call::CallTool { arguments, .. } => json::check_input("arguments", arguments, max),
        Call::Pull { query, .. } => json::check_input("query", query, max),
        Call::Push { items } => {
            let total: usize = items.iter().map(String::len).sum();
            if total > max {
                return Err(Failure::invalid_input(format!(
                    "items total {total} bytes, more than the limit of {max}"
                )));
            }
            items
                .iter()
                .try_for_each(|item| json::check_input("item", item, max))
        }
        Call::Webhook { body, .. } if body.len() > max => Err(Failure::invalid_input(format!(
            "webhook body is {} bytes, more than the limit of {max}",
            body.len()
        ))),
        _ => Ok(()),
    }
}

/// Outputs are JSON-checked and size-capped; the total of a list counts, so many
/// small items cannot add up to more than one big one.
fn check_output(output: Output, limits: &Limits) -> Result<Output, Failure> {
    let max = limits.max_output_bytes;
    let too_large = |n: usize| {
        Failure::new(
            ErrorCode::OutputTooLarge,
            format!("the plugin returned {n} bytes, more than the output limit of {max}"),
        )
    };
    let check = |what: &str, text: &str| -> Result<(), Failure> {
        if text.len() > max {
            return Err(too_large(text.len()));
        }
        // wit/types.wit: a `json` value that fails the boundary check (not JSON, nested
        // deeper than 128) never reaches the other side; for output that is
        // `INVALID_INPUT`, as for input. `PLUGIN_ERROR` is the plugin's own error.
        json::check(what, text, max).map_err(|m| {
            Failure::invalid_input(format!(
                "the plugin's {what} failed the JSON boundary check: {m}"
            ))
        })
    };
    match &output {
        Output::Json(text) => check("output", text)?,
        Output::Page { items, .. } | Output::Items(items) => {
            let total: usize = items.iter().map(String::len).sum();
            if total > max {
                return Err(too_large(total));
            }
            for item in items {
                check("item", item)?;
            }
        }
        _ => {}
    }
    Ok(output)
}

/// Turns a wasmtime error into the failure it stands for.
fn classify(e: &wasmtime::Error, state: &HostState, limits: &Limits) -> Failure {
    tracing::debug!("guest failed: {}", describe_error(e));
    // The root cause reads best ("wasm `unreachable` instruction executed"); wasmtime's
    // outer layers are a backtrace header.
    let detail = e.root_cause().to_string();
    if let Some(trap) = e.downcast_ref::<Trap>() {
        match trap {
            Trap::OutOfFuel => {
                return Failure::new(
                    ErrorCode::BudgetExhausted,
                    format!(
                        "the plugin used its whole fuel budget of {}",
                        limits.fuel.unwrap_or(UNMETERED)
                    ),
                );
            }
            Trap::StackOverflow => {
                return Failure::new(
                    ErrorCode::StackOverflow,
                    "the plugin exhausted the wasm call stack (unbounded recursion?)",
                );
            }
            Trap::Interrupt => {
                return match state.interrupt {
                    Some(Interrupt::Cancelled) => Failure::new(ErrorCode::Cancelled, "cancelled"),
                    _ => deadline_failure(limits),
                };
            }
            _ => {}
        }
    }
    if state.limiter.memory_refused {
        return Failure::new(
            ErrorCode::MemoryLimit,
            format!(
                "the plugin needed more than its {} bytes of memory ({})",
                limits.memory_bytes,
                guest_message(state).unwrap_or(detail)
            ),
        );
    }
    if state.limiter.table_refused {
        return Failure::new(
            ErrorCode::ResourceLimit,
            format!(
                "the plugin grew a table past {} elements",
                limits.table_elements
            ),
        );
    }
    if detail.contains("too much data is being copied") {
        return Failure::new(
            ErrorCode::OutputTooLarge,
            format!(
                "the plugin tried to hand the host more than {} bytes in one call",
                limits.max_transfer_bytes
            ),
        );
    }
    if detail.contains("handle limit exceeded") || detail.contains("table has no free keys") {
        return Failure::new(
            ErrorCode::ResourceLimit,
            format!(
                "the plugin held more than {} handles at once ({detail})",
                limits.max_handles
            ),
        );
    }
    if detail.contains("resource limit exceeded") || detail.contains("maximum concurrent") {
        return Failure::new(ErrorCode::ResourceLimit, detail);
    }
    if let Some(quota) = state.scratch.refusal() {
        return Failure::new(
            ErrorCode::ResourceLimit,
            format!(
                "the plugin failed after a write was refused ({quota}): {}",
                guest_message(state).unwrap_or(detail)
            ),
        );
    }
    let message = match guest_message(state) {
        Some(said) => format!("{said} ({})", first_line(&detail)),
        None => detail,
    };
    Failure::new(ErrorCode::Trap, message)
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

/// What a trapping guest last said on stderr: for a Rust panic, the panic message.
fn guest_message(state: &HostState) -> Option<String> {
    let log = state.log.lock().unwrap_or_else(PoisonError::into_inner);
    let tail = log.stderr_tail(8);
    if let Some(i) = tail.iter().position(|l| l.contains("panicked at")) {
        let message: Vec<&str> = tail
            .iter()
            .skip(i + 1)
            .map(String::as_str)
            .take_while(|l| !l.starts_with("note: run with"))
            .collect();
        if !message.is_empty() {
            return Some(message.join(" "));
        }
    }
    tail.into_iter().rev().find(|l| !l.trim().is_empty())
}
