//! Bare wasmtime: the baseline Corral is divided by.
//!
//! Same wasmtime settings as Corral's engine, same imports linked (WASI 0.2, `wasi:http`
//! with every request refused, and `corral:plugin/host` and `model`, with do-nothing host
//! functions), a minimal Store. What is left
//! between a bare figure and Corral's is Corral's own per-call work: its sandbox set-up
//! (scratch directory, WASI context with a preopen and captured stdio, limiter, fuel,
//! deadline), its log capture and its input and output checks.

use anyhow::Result;
use corral::engine::EngineConfig;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use wasmtime::component::{Component, HasSelf, InstancePre, Linker, ResourceTable};
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

/// Generated bindings of the `agent-plugin` world, as the host generates them.
pub mod bindings {
    #![allow(missing_docs, clippy::all)]
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "agent-plugin",
        imports: { default: async | trappable },
        exports: { default: async },
    });
}

use bindings::corral::plugin::{host, types};
pub use bindings::exports::corral::plugin::agent::Context;
pub use bindings::{AgentPlugin, AgentPluginPre};

/// wasmtime's errors are not `std::error::Error`: turn them into `anyhow` ones.
pub trait Wt<T> {
    /// The result, with the error as an `anyhow::Error` that says `what` failed.
    fn wt(self, what: &str) -> Result<T>;
}

impl<T> Wt<T> for wasmtime::Result<T> {
    fn wt(self, what: &str) -> Result<T> {
        self.map_err(|e| anyhow::anyhow!("{what}: {e:?}"))
    }
}

/// Which interruption mechanisms the engine compiles in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interruption {
    /// `Config::consume_fuel`.
    pub fuel: bool,
    /// `Config::epoch_interruption`.
    pub epoch: bool,
}

impl Interruption {
    /// What Corral always runs with.
    pub const CORRAL: Interruption = Interruption {
        fuel: true,
        epoch: true,
    };

    /// A short label.
    pub fn label(self) -> &'static str {
        match (self.fuel, self.epoch) {
            (true, true) => "fuel+epoch",
            (true, false) => "fuel only",
            (false, true) => "epoch only",
            (false, false) => "none",
        }
    }
}

/// Corral's wasmtime settings for `config` (the engine's own `wasmtime_config`, so the
/// baseline is the same wasmtime by construction), with `interruption` instead of
/// fuel+epoch.
pub fn config(
    config: &EngineConfig,
    interruption: Interruption,
) -> anyhow::Result<wasmtime::Config> {
    let mut cfg = corral::engine::wasmtime_config(config)?;
    cfg.consume_fuel(interruption.fuel)
        .epoch_interruption(interruption.epoch);
    Ok(cfg)
}

/// The data of a bare Store: an empty WASI context, a `wasi:http` context that refuses
/// every request, and a resource table.
pub struct BareState {
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    hooks: NoHttp,
}

impl BareState {
    /// A minimal state: WASI with nothing granted (no preopens, no stdio, no env).
    pub fn new() -> Self {
        BareState {
            wasi: WasiCtxBuilder::new().build(),
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            hooks: NoHttp,
        }
    }
}

impl WasiView for BareState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for BareState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// The future `wasi:http` hands back for an outgoing request.
type SendFuture = Box<
    dyn std::future::Future<
            Output = Result<
                (
                    http::Response<wasmtime_wasi_http::WasiBody>,
                    Box<
                        dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>>
                            + Send,
                    >,
                ),
                wasmtime_wasi_http::Error,
            >,
        > + Send,
>;

/// Outbound HTTP in the baseline: linked (Corral links `wasi:http` for every plugin),
/// every request refused.
pub struct NoHttp;

impl WasiHttpHooks for NoHttp {
    fn send_request(
        &mut self,
        _request: http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> SendFuture {
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

fn refused() -> types::PluginError {
    types::PluginError::Permanent("not available in the bare baseline".into())
}

impl types::Host for BareState {}

/// Host functions that do nothing: the baseline pays for the call, not for the work.
impl host::Host for BareState {
    async fn log(&mut self, _level: types::Level, _message: String) -> wasmtime::Result<()> {
        Ok(())
    }

    async fn progress(&mut self, _percent: u8, _label: String) -> wasmtime::Result<()> {
        Ok(())
    }

    async fn call_tool(
        &mut self,
        _name: String,
        _arguments: String,
    ) -> wasmtime::Result<Result<String, types::PluginError>> {
        Ok(Err(refused()))
    }

    async fn put_artifact(
        &mut self,
        _name: String,
        _media_type: String,
        _content: Vec<u8>,
    ) -> wasmtime::Result<Result<String, types::PluginError>> {
        Ok(Err(refused()))
    }

    async fn ask(
        &mut self,
        _question: String,
        _answer_schema: Option<String>,
    ) -> wasmtime::Result<Result<String, types::PluginError>> {
        Ok(Err(refused()))
    }

    async fn state_get(&mut self, _key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(None)
    }

    async fn state_set(
        &mut self,
        _key: String,
        _value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), types::PluginError>> {
        Ok(Err(refused()))
    }
}

/// `corral:plugin/model` (0.2.0), refused like the rest: the benchmarked plugins make no
/// model calls.
impl bindings::corral::plugin::model::Host for BareState {
    async fn chat(
        &mut self,
        _alias: String,
        _request: bindings::corral::plugin::model::ChatRequest,
    ) -> wasmtime::Result<Result<bindings::corral::plugin::model::ChatResponse, types::PluginError>>
    {
        Ok(Err(refused()))
    }
}

/// A bare engine: Corral's settings (with the chosen interruption), a linker with the
/// same imports, and, when epochs are on, a ticker at Corral's tick.
pub struct Bare {
    /// The engine.
    pub engine: wasmtime::Engine,
    /// WASI 0.2 and `corral:plugin/host`.
    pub linker: Linker<BareState>,
    /// What the engine compiles in.
    pub interruption: Interruption,
    stop: Arc<AtomicBool>,
}

impl Drop for Bare {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Bare {
    /// An engine and linker for `config` with `interruption`.
    pub fn new(config: &EngineConfig, interruption: Interruption) -> Result<Bare> {
        let engine = wasmtime::Engine::new(&self::config(config, interruption)?)
            .wt("configuring wasmtime")?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).wt("linking WASI")?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .wt("linking wasi:http")?;
        AgentPlugin::add_to_linker::<_, HasSelf<BareState>>(&mut linker, |s| s)
            .wt("linking corral:plugin/host")?;
        let stop = Arc::new(AtomicBool::new(false));
        if interruption.epoch {
            spawn_ticker(engine.weak(), config.epoch_tick, stop.clone())?;
        }
        Ok(Bare {
            engine,
            linker,
            interruption,
            stop,
        })
    }

    /// Compiles `bytes`.
    pub fn compile(&self, bytes: &[u8]) -> Result<Component> {
        Component::from_binary(&self.engine, bytes).wt("compiling")
    }

    /// Resolves the imports of `component` once, for many instantiations.
    pub fn pre(&self, component: &Component) -> Result<InstancePre<BareState>> {
        self.linker.instantiate_pre(component).wt("linking")
    }

    /// Typed agent exports on top of [`Bare::pre`].
    pub fn agent(&self, component: &Component) -> Result<AgentPluginPre<BareState>> {
        AgentPluginPre::new(self.pre(component)?).wt("agent exports")
    }

    /// Compiles `bytes` and makes an agent ready to instantiate.
    pub fn load_agent(&self, bytes: &[u8]) -> Result<AgentPluginPre<BareState>> {
        self.agent(&self.compile(bytes)?)
    }

    /// The least a Store needs to run under this engine's settings: unlimited fuel if
    /// fuel is on; if epochs are on, a deadline at the next tick that yields to the
    /// executor, as Corral's does (without Corral's cancel and deadline checks).
    pub fn store(&self) -> Result<Store<BareState>> {
        let mut store = Store::new(&self.engine, BareState::new());
        if self.interruption.fuel {
            store.set_fuel(u64::MAX).wt("setting fuel")?;
        }
        if self.interruption.epoch {
            store.set_epoch_deadline(1);
            store.epoch_deadline_callback(|_| Ok(UpdateDeadline::Yield(1)));
        }
        Ok(store)
    }
}

fn spawn_ticker(engine: wasmtime::EngineWeak, tick: Duration, stop: Arc<AtomicBool>) -> Result<()> {
    std::thread::Builder::new()
        .name("bare-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(tick);
                match engine.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        })?;
    Ok(())
}

/// The call context every benchmark sends (Corral's and the bare one are the same).
pub fn context() -> Context {
    Context {
        run_id: "bench".into(),
        step: "bench".into(),
        attempt: 1,
        config: "{}".into(),
        feedback: None,
    }
}

/// Corral's version of [`context`].
pub fn corral_context() -> corral::engine::RunContext {
    corral::engine::RunContext {
        run_id: "bench".into(),
        step: "bench".into(),
        attempt: 1,
        config: "{}".into(),
        feedback: None,
    }
}

/// One bare `agent.run`: fresh Store, instantiate, call, drop. Returns the output.
/// (`&String` because that is what the generated `call_run` takes.)
#[allow(clippy::ptr_arg)]
pub async fn run_once(
    bare: &Bare,
    pre: &AgentPluginPre<BareState>,
    input: &String,
) -> Result<String> {
    let mut store = bare.store()?;
    let agent = pre
        .instantiate_async(&mut store)
        .await
        .wt("instantiating")?;
    let out = agent
        .corral_plugin_agent()
        .call_run(&mut store, &context(), input)
        .await
        .wt("calling run")?;
    out.map_err(|e| anyhow::anyhow!("the guest failed: {e:?}"))
}
