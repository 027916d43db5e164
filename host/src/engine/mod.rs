//! The sandboxed component engine: one wasmtime `Engine` for the process, plugins loaded
//! and checked once and cached by content digest, and a fresh `Store` per invocation.

pub mod bindings;
mod cache;
pub mod compile;
pub mod deadline;
pub mod failure;
mod invoke;
pub mod json;
pub mod limits;
mod load;

pub use deadline::Deadline;
pub use failure::{ErrorCode, Failure, Retry};
pub use invoke::{
    AgentInfo, Call, ConnectorInfo, Invocation, Outcome, Output, RunContext, ToolSpec,
};
pub use limits::Limits;
pub use load::{Plugin, World};

use crate::capabilities::HostState;
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use wasmtime::component::Linker;
use wasmtime::{InstanceAllocationStrategy, PoolingAllocationConfig};

/// Host-wide settings of the engine. Per-invocation budgets are [`Limits`].
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Where compiled components are cached (keyed by digest and engine settings).
    /// `None` compiles every load.
    pub cache_dir: Option<PathBuf>,
    /// Where each invocation's fresh scratch directory (`/work`) is created.
    pub scratch_root: PathBuf,
    /// Largest component accepted, in bytes.
    pub max_component_bytes: usize,
    /// Hard cap on any invocation's linear memory (`Limits::memory_bytes` is clamped to it).
    pub max_memory_bytes: usize,
    /// How many invocations can be live at once (pooling allocator slots).
    pub max_concurrent: u32,
    /// The wasm call stack, in bytes: deeper recursion traps with `STACK_OVERFLOW`.
    pub max_wasm_stack: usize,
    /// How often the epoch advances: the granularity of deadlines, cancellation and
    /// fair yielding between CPU-bound guests.
    pub epoch_tick: Duration,
    /// How many loaded plugins to keep in memory.
    pub plugin_cache_entries: usize,
    /// How guests' outbound requests resolve host names (with operator overrides).
    pub http_resolver: crate::capabilities::http::Resolver,
    /// Components compiled at once, in all (at most one per tenant at a time; waiting
    /// tenants are served in turn).
    pub compile_slots: usize,
    /// How long a load waits for its compile before answering `COMPILE_TIMEOUT` (the
    /// compile itself cannot be interrupted: it finishes in the background).
    pub compile_timeout: Duration,
    /// Hard cap on the bytes any invocation may write under `/work`
    /// (`Limits::scratch_bytes` is clamped to it).
    pub max_scratch_bytes: u64,
    /// Hard cap on the files and directories any invocation may create
    /// (`Limits::scratch_entries` is clamped to it).
    pub max_scratch_entries: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            cache_dir: None,
            scratch_root: std::env::temp_dir().join("corral-scratch"),
            max_component_bytes: 256 << 20,
            max_memory_bytes: 4 << 30,
            max_concurrent: 64,
            max_wasm_stack: 1 << 20,
            epoch_tick: Duration::from_millis(10),
            plugin_cache_entries: 256,
            http_resolver: crate::capabilities::http::Resolver::default(),
            compile_slots: 2,
            compile_timeout: Duration::from_secs(120),
            max_scratch_bytes: 1 << 30,
            max_scratch_entries: 100_000,
        }
    }
}

/// The engine: cheap to clone, shared by every invocation in the process.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    wasmtime: wasmtime::Engine,
    linker: Linker<HostState>,
    config: EngineConfig,
    cache: Option<cache::DiskCache>,
    /// Invocations' scratch directories (`/work`).
    scratch: crate::capabilities::scratch::ScratchPool,
    loaded: Mutex<LoadedPlugins>,
    /// Digests of plugin files read so far, by absolute path, with the identity of the
    /// file they were computed from.
    file_digests: Mutex<HashMap<PathBuf, (cache::FileIdent, String)>>,
    ticker_stop: Arc<AtomicBool>,
    compile_slots: Arc<compile::CompileSlots>,
    /// Components compiled (not loaded from a cache) so far.
    compiles: AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

/// Loaded plugins by digest, oldest evicted first.
#[derive(Default)]
struct LoadedPlugins {
    by_digest: HashMap<String, Arc<Plugin>>,
    order: VecDeque<String>,
}

impl Engine {
    /// Builds the engine: wasmtime settings, the linker with every host interface, the
    /// compiled-code cache and the epoch ticker thread.
    pub fn new(config: EngineConfig) -> anyhow::Result<Self> {
        let wasmtime = wasmtime::Engine::new(&wasmtime_config(&config)?)
            .map_err(|e| anyhow::anyhow!("configuring wasmtime: {e}"))?;
        let linker = build_linker(&wasmtime)?;
        let cache = match &config.cache_dir {
            Some(dir) => Some(cache::DiskCache::open(dir, &wasmtime)?),
            None => None,
        };
        std::fs::create_dir_all(&config.scratch_root).map_err(|e| {
            anyhow::anyhow!(
                "creating scratch root {}: {e}",
                config.scratch_root.display()
            )
        })?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        spawn_epoch_ticker(wasmtime.weak(), config.epoch_tick, ticker_stop.clone())?;
        Ok(Engine {
            inner: Arc::new(Inner {
                wasmtime,
                linker,
                cache,
                scratch: crate::capabilities::scratch::ScratchPool::new(
                    &config.scratch_root,
                    usize::try_from(config.max_concurrent).unwrap_or(usize::MAX),
                ),
                loaded: Mutex::new(LoadedPlugins::default()),
                file_digests: Mutex::new(HashMap::new()),
                ticker_stop,
                compile_slots: compile::CompileSlots::new(config.compile_slots),
                compiles: AtomicU64::new(0),
                config,
            }),
        })
    }

    /// The engine's settings.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// How many components this engine has compiled (not counting cache hits).
    pub fn compile_count(&self) -> u64 {
        self.inner.compiles.load(Ordering::Relaxed)
    }

    /// The engine's compile slots.
    pub fn compile_slots(&self) -> &compile::CompileSlots {
        &self.inner.compile_slots
    }

    pub(crate) fn wasmtime(&self) -> &wasmtime::Engine {
        &self.inner.wasmtime
    }

    fn cached(&self, digest: &str) -> Option<Arc<Plugin>> {
        let loaded = self
            .inner
            .loaded
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        loaded.by_digest.get(digest).cloned()
    }

    fn file_digest(&self, path: &std::path::Path, ident: &cache::FileIdent) -> Option<String> {
        let files = self
            .inner
            .file_digests
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        files
            .get(path)
            .filter(|(known, _)| known == ident)
            .map(|(_, digest_hex)| digest_hex.clone())
    }

    fn remember_file(&self, path: PathBuf, ident: cache::FileIdent, digest_hex: &str) {
        let mut files = self
            .inner
            .file_digests
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Bounded like the loaded plugins; forgetting only costs one more read and hash.
        if files.len() >= self.inner.config.plugin_cache_entries.max(1)
            && !files.contains_key(&path)
        {
            files.clear();
        }
        files.insert(path, (ident, digest_hex.to_string()));
    }

    fn remember(&self, plugin: Arc<Plugin>) {
        let mut loaded = self
            .inner
            .loaded
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if loaded.by_digest.contains_key(&plugin.digest) {
            return;
        }
        while loaded.order.len() >= self.inner.config.plugin_cache_entries.max(1) {
            match loaded.order.pop_front() {
                Some(old) => {
                    loaded.by_digest.remove(&old);
                }
                None => break,
            }
        }
        loaded.order.push_back(plugin.digest.clone());
        loaded.by_digest.insert(plugin.digest.clone(), plugin);
    }
}

/// wasmtime settings: async, fuel, epochs, pooling, Cranelift, and every proposal we
/// don't use turned off so components that need one are rejected at load. Public so the
/// benchmarks' bare-wasmtime baseline runs on exactly these settings.
pub fn wasmtime_config(config: &EngineConfig) -> anyhow::Result<wasmtime::Config> {
    let mut pool = PoolingAllocationConfig::new();
    let slots = config.max_concurrent.max(1);
    pool.total_component_instances(slots)
        .total_core_instances(slots.saturating_mul(32))
        .total_memories(slots.saturating_mul(4))
        .total_tables(slots.saturating_mul(16))
        .total_stacks(slots)
        .max_core_instances_per_component(64)
        .max_memories_per_component(8)
        .max_tables_per_component(32)
        .table_elements(200_000)
        .max_memory_size(config.max_memory_bytes);

    let mut cfg = wasmtime::Config::new();
    cfg.consume_fuel(true)
        .epoch_interruption(true)
        .max_wasm_stack(config.max_wasm_stack)
        // The fiber stack must hold the wasm stack plus host frames.
        .async_stack_size(config.max_wasm_stack.saturating_add(2 << 20))
        .wasm_component_model(true)
        // Threads, GC (and with it function references and exceptions) and
        // component-model async are not compiled into this host at all (see the
        // wasmtime features in Cargo.toml); the rest are switched off here.
        .wasm_shared_everything_threads(false)
        .wasm_memory64(false)
        .wasm_stack_switching(false)
        .wasm_custom_page_sizes(false)
        .wasm_wide_arithmetic(false)
        .wasm_component_model_gc(false)
        .concurrency_support(false)
        .cranelift_opt_level(wasmtime::OptLevel::Speed)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Ok(cfg)
}

/// The one linker: Corral's `host` and `model` interfaces (0.2.0, and 0.1.0's `host`)
/// plus WASI 0.2. Sockets are linked so
/// that language runtimes which import them still load, but the WASI context of
/// every Store denies every address and name lookup.
fn build_linker(engine: &wasmtime::Engine) -> anyhow::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)
        .map_err(|e| anyhow::anyhow!("linking WASI: {e}"))?;
    // wasi:filesystem/types again, over the stock one: the same implementation, charged
    // to the invocation's scratch-disk quota (capabilities::scratch).
    crate::capabilities::scratch::add_to_linker(&mut linker, HostState::scratch_fs)
        .map_err(|e| anyhow::anyhow!("linking the scratch-disk quota: {e}"))?;
    // wasi:http is linked for every plugin; each request is checked against the plugin's
    // grants when it is made (capabilities::http), and refused without one.
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
        .map_err(|e| anyhow::anyhow!("linking wasi:http: {e}"))?;
    bindings::agent::AgentPlugin::add_to_linker::<_, wasmtime::component::HasSelf<HostState>>(
        &mut linker,
        |state| state,
    )
    .map_err(|e| anyhow::anyhow!("linking corral:plugin/host and model @0.2.0: {e}"))?;
    // Components built against the frozen 0.1.0 contract keep running: its `host` is
    // linked beside 0.2.0's (the two are not semver-compatible, so both are needed).
    bindings::v0_1::host::add_to_linker::<_, wasmtime::component::HasSelf<HostState>>(
        &mut linker,
        |state| state,
    )
    .map_err(|e| anyhow::anyhow!("linking corral:plugin/host@0.1.0: {e}"))?;
    Ok(linker)
}

fn spawn_epoch_ticker(
    engine: wasmtime::EngineWeak,
    tick: Duration,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("corral-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(tick);
                match engine.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        })
        .map_err(|e| anyhow::anyhow!("starting the epoch ticker: {e}"))?;
    Ok(())
}
