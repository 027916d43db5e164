//! Loading: bytes -> a checked, compiled, pre-instantiated plugin.
//!
//! Everything a plugin could get wrong is found here, at load, never at call time:
//! not a component, a disabled proposal, an unknown world, a missing export, an import
//! the host does not provide.

use super::bindings::{agent, connector, tool, v0_1};
use super::cache::FileIdent;
use super::{Engine, ErrorCode, Failure};
use crate::capabilities::HostState;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, InstancePre};

/// The contract's package and the versions of it this host speaks: 0.2 (current) and
/// 0.1 (frozen in `wit/archive/0.1.0/`).
const PACKAGE: &str = "corral:plugin";
const VERSION_PREFIXES: [&str; 2] = ["0.2.", "0.1."];

/// Which version of the contract a component's world export is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contract {
    V0_1,
    V0_2,
}

impl Contract {
    fn of(version: &str) -> Option<Contract> {
        if version.starts_with("0.2.") {
            Some(Contract::V0_2)
        } else if version.starts_with("0.1.") {
            Some(Contract::V0_1)
        } else {
            None
        }
    }
}

/// Which plugin world a component implements, told by what it exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum World {
    /// Exports `corral:plugin/agent`.
    #[serde(rename = "agent-plugin")]
    Agent,
    /// Exports `corral:plugin/tool`.
    #[serde(rename = "tool-plugin")]
    Tool,
    /// Exports `corral:plugin/connector`.
    #[serde(rename = "connector-plugin")]
    Connector,
}

impl World {
    /// The WIT world name.
    pub fn as_str(self) -> &'static str {
        match self {
            World::Agent => "agent-plugin",
            World::Tool => "tool-plugin",
            World::Connector => "connector-plugin",
        }
    }

    fn from_interface(name: &str) -> Option<World> {
        match name {
            "agent" => Some(World::Agent),
            "tool" => Some(World::Tool),
            "connector" => Some(World::Connector),
            _ => None,
        }
    }
}

/// Interfaces a plugin may import: the contract's own, and WASI 0.2 (wasi:http included:
/// each request is checked against the plugin's grants when it is made).
fn import_allowed(name: &str) -> bool {
    let Some((path, version)) = name.split_once('@') else {
        return false;
    };
    match path.split_once('/') {
        Some((PACKAGE, "host" | "types")) => {
            VERSION_PREFIXES.iter().any(|p| version.starts_with(p))
        }
        // Language models came with 0.2.
        Some((PACKAGE, "model")) => version.starts_with("0.2."),
        Some((
            "wasi:io" | "wasi:clocks" | "wasi:random" | "wasi:cli" | "wasi:filesystem"
            | "wasi:sockets" | "wasi:http",
            _,
        )) => version.starts_with("0.2."),
        _ => false,
    }
}

pub(super) enum WorldPre {
    Agent(agent::AgentPluginPre<HostState>),
    Tool(tool::ToolPluginPre<HostState>),
    Connector(connector::ConnectorPluginPre<HostState>),
    /// The same worlds, built against corral:plugin@0.1.0.
    AgentV0_1(v0_1::agent::AgentPluginPre<HostState>),
    ToolV0_1(v0_1::tool::ToolPluginPre<HostState>),
    ConnectorV0_1(v0_1::connector::ConnectorPluginPre<HostState>),
}

/// A loaded plugin: checked, compiled, and ready to instantiate many times.
pub struct Plugin {
    /// `sha256:<hex>` of the component bytes.
    pub digest: String,
    /// The world it implements.
    pub world: World,
    /// Size of the component in bytes.
    pub size: usize,
    /// Interfaces it imports.
    pub imports: Vec<String>,
    /// Interfaces it exports.
    pub exports: Vec<String>,
    /// Whether it imports `wasi:filesystem/preopens`, its only way to any directory:
    /// a plugin that does not gets no scratch directory.
    pub(super) filesystem: bool,
    pub(super) pre: WorldPre,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("digest", &self.digest)
            .field("world", &self.world)
            .field("size", &self.size)
            .finish()
    }
}

/// The chain of a wasmtime error as one line.
pub(super) fn describe_error(e: &wasmtime::Error) -> String {
    let parts: Vec<String> = e.chain().map(|c| c.to_string()).collect();
    parts.join(": ")
}

/// `sha256:<hex>`.
fn digest(digest_hex: &str) -> String {
    format!("sha256:{digest_hex}")
}

/// The queue of the host's own loads (pipeline files, `corral call`).
const HOST_QUEUE: &str = "";

/// Refuses the first import the host does not provide, naming it.
fn check_imports(imports: &[String]) -> Result<(), Failure> {
    match imports.iter().find(|n| !import_allowed(n)) {
        Some(bad) => Err(Failure::invalid_component(format!(
            "imports `{bad}`, which this host does not provide (a plugin may import \
             {PACKAGE}/host@0.2 or @0.1, {PACKAGE}/model@0.2, and WASI 0.2: io, clocks, random, \
             cli, filesystem, sockets, http)"
        ))),
        None => Ok(()),
    }
}

/// The one world a component's exports (name, whether an instance) implement.
fn world_of(exports: &[(String, bool)]) -> Result<(World, Contract), Failure> {
    let worlds: Vec<(World, Contract)> = exports
        .iter()
        .filter(|(_, instance)| *instance)
        .filter_map(|(name, _)| {
            let (path, version) = name.split_once('@')?;
            let contract = Contract::of(version)?;
            let world = World::from_interface(path.strip_prefix("corral:plugin/")?)?;
            Some((world, contract))
        })
        .collect();
    match worlds.as_slice() {
        [world] => Ok(*world),
        [] => Err(Failure::invalid_component(format!(
            "exports none of corral:plugin/agent, tool or connector @0.2 or @0.1 (it exports: {})",
            if exports.is_empty() {
                "nothing".to_string()
            } else {
                exports
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ))),
        _ => Err(Failure::invalid_component(
            "exports more than one of corral:plugin/agent, tool and connector; \
             a plugin implements exactly one world",
        )),
    }
}

/// Reads the component's own import and export sections (not those of the modules and
/// components nested in it) without compiling or validating anything, and refuses an
/// unknown import or a missing world at once. Compiling checks everything again.
fn precheck(bytes: &[u8]) -> Result<(), Failure> {
    use wasmtime::wasmparser::{ComponentExternalKind, Parser, Payload};
    let malformed = |e: wasmtime::wasmparser::BinaryReaderError| {
        Failure::invalid_component(format!("malformed component: {e}"))
    };
    let mut depth = 0usize;
    let mut imports = Vec::new();
    let mut exports = Vec::new();
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(malformed)? {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 0 => {
                for import in reader {
                    imports.push(import.map_err(malformed)?.name.name.to_string());
                }
            }
            Payload::ComponentExportSection(reader) if depth == 0 => {
                for export in reader {
                    let export = export.map_err(malformed)?;
                    let instance = export.kind == ComponentExternalKind::Instance;
                    exports.push((export.name.name.to_string(), instance));
                }
            }
            _ => {}
        }
    }
    check_imports(&imports)?;
    world_of(&exports).map(|_| ())
}

/// What the first bytes say about a binary, before wasmtime sees it.
fn check_header(bytes: &[u8]) -> Result<(), Failure> {
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', _, _, 1, 0]) => Ok(()),
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => Err(Failure::invalid_component(
            "this is a core WebAssembly module, not a component: build it for \
             wasm32-wasip2 (or wrap it with `wasm-tools component new`)",
        )),
        Some([0, b'a', b's', b'm', ..]) => Err(Failure::invalid_component(
            "unsupported WebAssembly binary version or layer",
        )),
        _ => Err(Failure::invalid_component(
            "not a WebAssembly binary (it does not start with \\0asm)",
        )),
    }
}

impl Engine {
    /// Loads a plugin from a file. The digest of a file's bytes is computed once: an
    /// unchanged file (same inode, size and times, see `cache::FileIdent`) is known by
    /// its digest without being read again, in this process and, with a compiled-code
    /// cache, in later ones.
    pub async fn load_file(&self, path: &std::path::Path) -> Result<Arc<Plugin>, Failure> {
        let max = self.config().max_component_bytes;
        let unreadable = |e: std::io::Error| {
            Failure::invalid_component(format!("cannot read {}: {e}", path.display()))
        };
        // A FIFO is "not a file" below, as before this opened it.
        let file = super::cache::open_nonblocking(path).map_err(unreadable)?;
        let meta = file.metadata().map_err(unreadable)?;
        if !meta.is_file() {
            return Err(Failure::invalid_component(format!(
                "{} is not a file",
                path.display()
            )));
        }
        if meta.len() > max as u64 {
            return Err(Failure::invalid_component(format!(
                "{} is {} bytes, more than the {max}-byte limit for components",
                path.display(),
                meta.len()
            )));
        }
        let size = usize::try_from(meta.len()).unwrap_or(usize::MAX);
        let key = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let ident = FileIdent::of(&meta);
        if let Some(ident) = &ident
            && let Some(digest_hex) = self.known_digest(&key, ident)
        {
            let known = match self.cached(&digest(&digest_hex)) {
                Some(plugin) => Some(Ok(plugin)),
                None => self.load_cached(&digest_hex, size),
            };
            if let Some(result) = known {
                return result;
            }
        }
        let mut bytes = Vec::with_capacity(size);
        let mut file = tokio::fs::File::from_std(file);
        tokio::io::AsyncReadExt::read_to_end(&mut file, &mut bytes)
            .await
            .map_err(unreadable)?;
        if bytes.len() > max {
            return Err(Failure::invalid_component(format!(
                "{} is more than the {max}-byte limit for components",
                path.display()
            )));
        }
        check_header(&bytes)?;
        let digest_hex = hex::encode(Sha256::digest(&bytes));
        // Remembered only if the file did not change while it was read.
        let after = file.metadata().await.ok().and_then(|m| FileIdent::of(&m));
        if let Some(ident) = ident.filter(|i| after.as_ref() == Some(i)) {
            self.remember_digest(key, ident, &digest_hex);
        }
        self.load_digested(bytes, digest_hex, HOST_QUEUE).await
    }

    /// Loads a plugin from component bytes: checks, compiles (or reuses the compiled
    /// cache), and pre-instantiates it. Loading the same bytes again is a cache hit.
    /// Compiles queue for the host's own turn; see [`Engine::load_as`].
    pub async fn load(&self, bytes: Vec<u8>) -> Result<Arc<Plugin>, Failure> {
        self.load_as(bytes, HOST_QUEUE).await
    }

    /// [`Engine::load`] for a tenant: the world and imports are read from the binary and
    /// checked before anything is compiled; compiling takes one of the engine's compile
    /// slots (at most one per tenant, tenants served in turn) and is answered with
    /// `COMPILE_TIMEOUT` after `EngineConfig::compile_timeout`. A compile that outlives
    /// its caller finishes in the background, holding its slot until it ends, and its
    /// result is cached: loading the same bytes later is a cache hit.
    pub async fn load_as(&self, bytes: Vec<u8>, tenant: &str) -> Result<Arc<Plugin>, Failure> {
        let max = self.config().max_component_bytes;
        if bytes.len() > max {
            return Err(Failure::invalid_component(format!(
                "component is {} bytes, more than the {max}-byte limit",
                bytes.len()
            )));
        }
        check_header(&bytes)?;
        let digest_hex = hex::encode(Sha256::digest(&bytes));
        self.load_digested(bytes, digest_hex, tenant).await
    }

    /// A loaded plugin by digest (`sha256:<hex>`), if this engine has it in memory:
    /// callers that know a plugin's digest (a registry records it at registration) can
    /// skip fetching and hashing its bytes.
    pub fn loaded(&self, digest: &str) -> Option<Arc<Plugin>> {
        self.cached(digest)
    }

    /// The digest recorded for an unchanged file, in memory or in the cache directory.
    fn known_digest(&self, path: &std::path::Path, ident: &FileIdent) -> Option<String> {
        if let Some(digest_hex) = self.file_digest(path, ident) {
            return Some(digest_hex);
        }
        let digest_hex = self.inner.cache.as_ref()?.file_digest(path, ident)?;
        self.remember_file(path.to_path_buf(), *ident, &digest_hex);
        Some(digest_hex)
    }

    fn remember_digest(&self, path: std::path::PathBuf, ident: FileIdent, digest_hex: &str) {
        if let Some(cache) = &self.inner.cache {
            cache.record_file(&path, &ident, digest_hex);
        }
        self.remember_file(path, ident, digest_hex);
    }

    /// A plugin from the compiled-code cache's fast path, checked and pre-instantiated,
    /// without a compile slot: `None` when the cache cannot answer at once.
    fn load_cached(&self, digest_hex: &str, size: usize) -> Option<Result<Arc<Plugin>, Failure>> {
        let component = self
            .inner
            .cache
            .as_ref()?
            .get_mapped(self.wasmtime(), digest_hex)?;
        Some(self.prepare(&component, digest_hex, size).map(|plugin| {
            let plugin = Arc::new(plugin);
            self.remember(plugin.clone());
            plugin
        }))
    }

    async fn load_digested(
        &self,
        bytes: Vec<u8>,
        digest_hex: String,
        tenant: &str,
    ) -> Result<Arc<Plugin>, Failure> {
        if let Some(plugin) = self.cached(&digest(&digest_hex)) {
            return Ok(plugin);
        }
        if let Some(result) = self.load_cached(&digest_hex, bytes.len()) {
            return result;
        }
        // What the binary says it imports and exports, before a slot or a compile.
        precheck(&bytes)?;
        let slot = self.inner.compile_slots.acquire(tenant).await;
        if let Some(plugin) = self.cached(&digest(&digest_hex)) {
            // Compiled by someone else while this one waited.
            return Ok(plugin);
        }
        // Compiling is CPU-bound and can take seconds: keep it off the async workers.
        let engine = self.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::task::spawn_blocking(move || {
            let result = engine.compile(&bytes, digest_hex).map(Arc::new);
            if let Ok(plugin) = &result {
                engine.remember(plugin.clone());
            }
            // The slot is given back when the compile really ends, waited for or not.
            drop(slot);
            let _ = tx.send(result);
        });
        let limit = self.config().compile_timeout;
        match tokio::time::timeout(limit, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Failure::invalid_component("the compiler task failed")),
            Err(_) => Err(Failure::new(
                ErrorCode::CompileTimeout,
                format!(
                    "compiling the component took longer than {limit:?}; it goes on in \
                     the background, and loading the same bytes once it is done is answered \
                     from the cache"
                ),
            )),
        }
    }

    fn compile(&self, bytes: &[u8], digest_hex: String) -> Result<Plugin, Failure> {
        let wasmtime = self.wasmtime();
        let cache = self.inner.cache.as_ref();
        let component = match cache.and_then(|c| c.get(wasmtime, &digest_hex)) {
            Some(component) => component,
            None => {
                self.inner.compiles.fetch_add(1, Ordering::Relaxed);
                let component = Component::from_binary(wasmtime, bytes)
                    .map_err(|e| Failure::invalid_component(describe_error(&e)))?;
                if let Some(cache) = cache {
                    cache.put(&digest_hex, &component);
                }
                component
            }
        };
        self.prepare(&component, &digest_hex, bytes.len())
    }

    /// Checks a compiled component's imports and world and pre-instantiates it.
    fn prepare(
        &self,
        component: &Component,
        digest_hex: &str,
        size: usize,
    ) -> Result<Plugin, Failure> {
        let wasmtime = self.wasmtime();
        let ty = component.component_type();

        let imports: Vec<String> = ty.imports(wasmtime).map(|(n, _)| n.to_string()).collect();
        check_imports(&imports)?;

        let exports: Vec<(String, bool)> = ty
            .exports(wasmtime)
            .map(|(name, item)| {
                let instance = matches!(item.ty, ComponentItem::ComponentInstance(_));
                (name.to_string(), instance)
            })
            .collect();
        let (world, contract) = world_of(&exports)?;
        let exports: Vec<String> = exports.into_iter().map(|(name, _)| name).collect();

        let pre: InstancePre<HostState> = self
            .inner
            .linker
            .instantiate_pre(component)
            .map_err(|e| Failure::invalid_component(describe_error(&e)))?;
        let missing = |e: wasmtime::Error| {
            Failure::invalid_component(format!(
                "does not implement the {} world: {}",
                world.as_str(),
                describe_error(&e)
            ))
        };
        let pre = match (world, contract) {
            (World::Agent, Contract::V0_2) => {
                WorldPre::Agent(agent::AgentPluginPre::new(pre).map_err(missing)?)
            }
            (World::Tool, Contract::V0_2) => {
                WorldPre::Tool(tool::ToolPluginPre::new(pre).map_err(missing)?)
            }
            (World::Connector, Contract::V0_2) => {
                WorldPre::Connector(connector::ConnectorPluginPre::new(pre).map_err(missing)?)
            }
            (World::Agent, Contract::V0_1) => {
                WorldPre::AgentV0_1(v0_1::agent::AgentPluginPre::new(pre).map_err(missing)?)
            }
            (World::Tool, Contract::V0_1) => {
                WorldPre::ToolV0_1(v0_1::tool::ToolPluginPre::new(pre).map_err(missing)?)
            }
            (World::Connector, Contract::V0_1) => WorldPre::ConnectorV0_1(
                v0_1::connector::ConnectorPluginPre::new(pre).map_err(missing)?,
            ),
        };
        Ok(Plugin {
            digest: digest(digest_hex),
            world,
            size,
            filesystem: imports
                .iter()
                .any(|name| name.starts_with("wasi:filesystem/preopens@")),
            imports,
            exports,
            pre,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imports_outside_the_contract_and_wasi_02_are_refused() {
        assert!(import_allowed("corral:plugin/host@0.1.0"));
        assert!(import_allowed("wasi:cli/environment@0.2.6"));
        assert!(import_allowed("corral:plugin/host@0.2.0"));
        assert!(import_allowed("corral:plugin/model@0.2.0"));
        assert!(!import_allowed("corral:plugin/model@0.1.0"));
        assert!(!import_allowed("corral:plugin/host@0.3.0"));
        // wasi:http is linked; each request is checked against the plugin's grants.
        assert!(import_allowed("wasi:http/outgoing-handler@0.2.0"));
        assert!(!import_allowed("wasi:http/outgoing-handler@0.3.0"));
        assert!(!import_allowed("wasi:keyvalue/store@0.2.0"));
        assert!(!import_allowed("evil:escape/door@1.0.0"));
        assert!(!import_allowed("wasi:cli/environment"));
        assert!(!import_allowed("wasi:cli/environment@0.3.0"));
    }

    #[test]
    fn headers_are_told_apart() {
        assert!(check_header(b"\0asm\x0d\0\x01\0rest").is_ok());
        let core = check_header(b"\0asm\x01\0\0\0").unwrap_err();
        assert!(core.message.contains("core WebAssembly module"));
        let text = check_header(b"127.0.0.1 localhost").unwrap_err();
        assert!(text.message.contains("not a WebAssembly binary"));
        assert!(check_header(b"\0as").is_err());
    }
}
