//! What a guest can reach: one module per host interface. Everything is deny-by-default;
//! a capability a plugin was not granted answers `permanent("not granted: ...")`.

pub mod http;
pub mod log;
pub mod model;
pub mod scratch;

use crate::engine::bindings::{host, types};
use crate::engine::limits::Limiter;
use log::{Level, LogBuffer, Source};
use std::sync::{Arc, Mutex, PoisonError};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Services a run gives its steps: tools, artifacts, human input and per-run state.
/// The engine alone (`corral call`) has none of them; the run lifecycle provides them.
#[async_trait::async_trait]
pub trait RunServices: Send + Sync {
    /// Calls a tool granted to the step.
    async fn call_tool(&self, name: &str, arguments: &str) -> Result<String, types::PluginError>;
    /// Stores an artifact and returns its id.
    async fn put_artifact(
        &self,
        name: &str,
        media_type: &str,
        content: &[u8],
    ) -> Result<String, types::PluginError>;
    /// Asks a person and waits for the answer.
    async fn ask(&self, question: &str, schema: Option<&str>)
    -> Result<String, types::PluginError>;
    /// Reads per-run state.
    async fn state_get(&self, key: &str) -> Option<Vec<u8>>;
    /// Writes per-run state.
    async fn state_set(&self, key: &str, value: &[u8]) -> Result<(), types::PluginError>;
    /// The value of the tenant's secret `name`, for the host to put into an outbound
    /// request (never handed to the guest). Grants are checked before this is asked.
    async fn secret(&self, name: &str) -> Option<String> {
        let _ = name;
        None
    }
    /// Sends a chat request to the model behind `alias` (`corral:plugin/model`), after
    /// checking the step's model grants and token budgets; streams the answer's text to
    /// `deltas`. Without a run (or a model gateway) every alias is not granted.
    async fn model(
        &self,
        alias: &str,
        request: &crate::models::ChatRequest,
        deltas: crate::models::DeltaSink<'_>,
    ) -> Result<crate::models::ChatResponse, types::PluginError> {
        let _ = (request, deltas);
        Err(not_granted(&format!("model `{alias}`")))
    }
}

/// A host file or directory a plugin may read, at `/work/in/<name>` (read-only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileGrant {
    /// The host path (canonical).
    pub host: std::path::PathBuf,
    /// Its name under `/work/in`.
    pub name: String,
    /// Whether it is a directory (else a regular file).
    pub dir: bool,
}

/// Why the host stopped a guest from the outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupt {
    /// The wall-clock deadline passed.
    Deadline,
    /// Someone cancelled the invocation.
    Cancelled,
}

/// The data of one Store: everything one invocation's guest can touch, and nothing more.
pub struct HostState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: Limiter,
    pub(crate) log: Arc<Mutex<LogBuffer>>,
    pub(crate) services: Option<Arc<dyn RunServices>>,
    pub(crate) interrupt: Option<Interrupt>,
    pub(crate) deadline: crate::engine::Deadline,
    pub(crate) cancel: tokio_util::sync::CancellationToken,
    pub(crate) http_ctx: wasmtime_wasi_http::WasiHttpCtx,
    pub(crate) http: http::HttpHooks,
    /// What the guest may still write under its preopened directories.
    pub(crate) scratch: Arc<scratch::ScratchQuota>,
}

impl wasmtime_wasi_http::WasiHttpView for HostState {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        wasmtime_wasi_http::WasiHttpCtxView {
            ctx: &mut self.http_ctx,
            table: &mut self.table,
            hooks: &mut self.http,
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl HostState {
    /// `wasi:filesystem/types` under the scratch-disk quota.
    pub(crate) fn scratch_fs(&mut self) -> scratch::ScratchFs<'_> {
        scratch::ScratchFs::new(
            wasmtime_wasi::filesystem::WasiFilesystemCtxView {
                ctx: self.wasi.filesystem(),
                table: &mut self.table,
            },
            &self.scratch,
        )
    }

    fn log_buffer(&self) -> std::sync::MutexGuard<'_, LogBuffer> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn services(&self, what: &str) -> Result<Arc<dyn RunServices>, types::PluginError> {
        self.services.clone().ok_or_else(|| not_granted(what))
    }
}

/// The refusal for a capability the plugin does not hold.
pub fn not_granted(what: &str) -> types::PluginError {
    types::PluginError::Permanent(format!(
        "not granted: {what} is not available to this plugin here (it needs a run that grants it)"
    ))
}

impl From<types::Level> for Level {
    fn from(l: types::Level) -> Self {
        match l {
            types::Level::Trace => Level::Trace,
            types::Level::Debug => Level::Debug,
            types::Level::Info => Level::Info,
            types::Level::Warn => Level::Warn,
            types::Level::Error => Level::Error,
        }
    }
}

impl types::Host for HostState {}

impl host::Host for HostState {
    async fn log(&mut self, level: types::Level, message: String) -> wasmtime::Result<()> {
        self.log_buffer().push(level.into(), Source::Log, &message);
        Ok(())
    }

    async fn progress(&mut self, percent: u8, label: String) -> wasmtime::Result<()> {
        self.log_buffer().progress(percent, &label);
        Ok(())
    }

    async fn call_tool(
        &mut self,
        name: String,
        arguments: String,
    ) -> wasmtime::Result<Result<String, types::PluginError>> {
        Ok(match self.services("call-tool") {
            Ok(s) => s.call_tool(&name, &arguments).await,
            Err(e) => Err(e),
        })
    }

    async fn put_artifact(
        &mut self,
        name: String,
        media_type: String,
        content: Vec<u8>,
    ) -> wasmtime::Result<Result<String, types::PluginError>> {
        Ok(match self.services("put-artifact") {
            Ok(s) => s.put_artifact(&name, &media_type, &content).await,
            Err(e) => Err(e),
        })
    }

    async fn ask(
        &mut self,
        question: String,
        answer_schema: Option<String>,
    ) -> wasmtime::Result<Result<String, types::PluginError>> {
        Ok(match self.services("ask") {
            Ok(s) => s.ask(&question, answer_schema.as_deref()).await,
            Err(e) => Err(e),
        })
    }

    async fn state_get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(match &self.services {
            Some(s) => s.state_get(&key).await,
            None => None,
        })
    }

    async fn state_set(
        &mut self,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), types::PluginError>> {
        Ok(match self.services("state-set") {
            Ok(s) => s.state_set(&key, &value).await,
            Err(e) => Err(e),
        })
    }
}

/// The 0.1.0 `host` interface: the same functions, the same behaviour.
impl crate::engine::bindings::v0_1::host::Host for HostState {
    async fn log(&mut self, level: types::Level, message: String) -> wasmtime::Result<()> {
        host::Host::log(self, level, message).await
    }

    async fn progress(&mut self, percent: u8, label: String) -> wasmtime::Result<()> {
        host::Host::progress(self, percent, label).await
    }

    async fn call_tool(
        &mut self,
        name: String,
        arguments: String,
    ) -> wasmtime::Result<Result<String, types::PluginError>> {
        host::Host::call_tool(self, name, arguments).await
    }

    async fn put_artifact(
        &mut self,
        name: String,
        media_type: String,
        content: Vec<u8>,
    ) -> wasmtime::Result<Result<String, types::PluginError>> {
        host::Host::put_artifact(self, name, media_type, content).await
    }

    async fn ask(
        &mut self,
        question: String,
        answer_schema: Option<String>,
    ) -> wasmtime::Result<Result<String, types::PluginError>> {
        host::Host::ask(self, question, answer_schema).await
    }

    async fn state_get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        host::Host::state_get(self, key).await
    }

    async fn state_set(
        &mut self,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), types::PluginError>> {
        host::Host::state_set(self, key, value).await
    }
}
