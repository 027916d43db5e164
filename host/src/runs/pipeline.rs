//! Pipelines as data: the TOML (or JSON) document that names a run's steps, the plugin
//! each step runs, its config, tools, feedback loop and budgets.
//!
//! ```toml
//! name = "etl-demo"
//! description = "optional text"
//! [defaults]                  # all optional; these are the defaults
//! fuel = 2_000_000_000        # per step attempt
//! timeout = "30s"             # per step attempt, wall clock
//! memory = "64MiB"            # or a number of bytes
//! max_attempts = 3
//! backoff = "1s"              # first retry delay; doubles each retry
//! backoff_max = "60s"         # cap on the delay
//! [budget]                    # whole run; absent = unlimited fuel, timeout "1h"
//! fuel = 10_000_000_000
//! timeout = "10m"
//! [[steps]]
//! name = "extract"
//! plugin = "../target/plugins/csv_extract.wasm"  # relative to the file, or `name@version`
//! config = { delimiter = "," }                   # any table, handed to the agent as JSON
//! fuel = 1_000_000_000                           # per-step overrides of any [defaults] key
//! tools = ["text-tools"]                         # tools this step may call (from [tools])
//! on_failure = { send_back_to = "developer", max_loops = 3 }
//! http = ["api.example.com"]                     # keep only these of its manifest's hosts
//! input_from = "extract"                         # an earlier step's output as input
//! [[steps]]
//! name = "fetch"
//! plugin = "../target/plugins/http_json.wasm"    # a connector-plugin
//! connector = "pull"                             # or "push"; config is the pull query
//! max_pages = 100                                # pull only; also max_items = 10000
//! ```
//!
//! TOML and JSON share one serde model (unknown keys are errors everywhere) and one
//! validation pass, so both formats accept exactly the same pipelines. Every error names
//! the offending field by path (`steps[2].on_failure.send_back_to`, `defaults.memory`)
//! and, for TOML, the line it is on.
//!
//! A [`Pipeline`] serializes to the JSON form of the same document (defaults already
//! merged into each step, durations as humantime strings such as `"1m 30s"`, memory in
//! bytes), which [`parse_json`] reads back unchanged.

use crate::engine::limits::{DEFAULT_FUEL, parse_duration, parse_size};
use crate::engine::{Engine, Limits, Plugin, World};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;
use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Largest pipeline document accepted, in bytes (TOML or JSON), checked before parsing.
pub const MAX_DOCUMENT_BYTES: usize = 1 << 20;
/// Most steps a pipeline may have.
pub const MAX_STEPS: usize = 64;
/// Most tools one step may list.
pub const MAX_TOOLS: usize = 64;
/// Most attempts per step (`max_attempts`).
pub const MAX_ATTEMPTS: u32 = 20;
/// Most feedback loops per step (`on_failure.max_loops`).
pub const MAX_LOOPS: u32 = 20;
/// Most fuel per step attempt.
pub const MAX_STEP_FUEL: u64 = 10_000_000_000_000;
/// Longest per-attempt timeout.
pub const MAX_STEP_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// Least linear memory a step may be given, in bytes (1 MiB).
pub const MIN_STEP_MEMORY: u64 = 1 << 20;
/// Most linear memory a step may be given, in bytes (4 GiB).
pub const MAX_STEP_MEMORY: u64 = 4 << 30;
/// Longest `backoff` and `backoff_max`.
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// Longest whole-run timeout (`budget.timeout`): 7 days.
pub const MAX_RUN_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);
/// The whole-run timeout when `[budget]` does not set one.
pub const DEFAULT_RUN_TIMEOUT: Duration = Duration::from_secs(3600);
/// `on_failure.max_loops` when not set.
pub const DEFAULT_MAX_LOOPS: u32 = 3;

/// A validated pipeline: every step has its defaults merged in and its plugin resolved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pipeline {
    /// The pipeline's name (non-empty).
    pub name: String,
    /// Free text for people.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Budgets for the whole run.
    pub budget: RunBudget,
    /// Tool plugins available to the steps, by the name steps use in their `tools` list.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub tools: std::collections::BTreeMap<String, PluginRef>,
    /// The steps, in execution order (1 to [`MAX_STEPS`]).
    pub steps: Vec<Step>,
}

/// Budgets for a whole run, across all steps, attempts and loops.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunBudget {
    /// Total fuel; `None` means unlimited (each attempt is still metered).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    /// Wall-clock limit for the run (default 1h). Serialized as a humantime string.
    #[serde(serialize_with = "serialize_duration")]
    pub timeout: Duration,
}

impl Default for RunBudget {
    fn default() -> Self {
        RunBudget {
            fuel: None,
            timeout: DEFAULT_RUN_TIMEOUT,
        }
    }
}

/// One step: an agent plugin, its config, and its budgets with `[defaults]` merged in.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    /// Unique within the pipeline; matches `^[a-z0-9][a-z0-9_-]{0,62}$`.
    pub name: String,
    /// The plugin the step runs.
    pub plugin: PluginRef,
    /// Handed to the agent as its config. Always a JSON object (default `{}`).
    pub config: Value,
    /// Names of the tools this step may call (non-empty, distinct, at most [`MAX_TOOLS`]).
    pub tools: Vec<String>,
    /// Where to send the work back to when this step fails, if anywhere.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<FeedbackLoop>,
    /// The hosts of its plugin's `[[grants.http]]` rules this step keeps (`None`: all of
    /// them; empty: none). A step can only narrow what the manifest grants.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<Vec<String>>,
    /// The earlier step whose output is this step's input (default: the previous step).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_from: Option<String>,
    /// For a connector step: `pull` (its config is the query; pages are read until the
    /// connector says done or a limit, and the items are the step's output) or `push`
    /// (the step's input items are written). `None` for an agent step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connector: Option<ConnectorMode>,
    /// Most pages a pull step reads.
    pub max_pages: u32,
    /// Most items a pull step collects.
    pub max_items: u32,
    /// Fuel per attempt.
    pub fuel: u64,
    /// Wall-clock limit per attempt. Serialized as a humantime string.
    #[serde(serialize_with = "serialize_duration")]
    pub timeout: Duration,
    /// Linear memory per attempt, in bytes.
    pub memory: usize,
    /// Attempts before the step fails (1 = no retries).
    pub max_attempts: u32,
    /// Delay before the first retry; doubles each retry. Serialized as a humantime string.
    #[serde(serialize_with = "serialize_duration")]
    pub backoff: Duration,
    /// Cap on the retry delay. Serialized as a humantime string.
    #[serde(serialize_with = "serialize_duration")]
    pub backoff_max: Duration,
}

impl Step {
    /// The engine budgets for one attempt of this step: its fuel, timeout and memory,
    /// with every other limit at its default.
    pub fn limits(&self) -> Limits {
        Limits {
            fuel: Some(self.fuel),
            timeout: self.timeout,
            memory_bytes: self.memory,
            ..Limits::default()
        }
    }

    /// The delay before retry number `retry` (1 = the first retry, after attempt 1):
    /// `backoff * 2^(retry-1)`, capped at `backoff_max`. Retry 0 has no delay.
    pub fn retry_delay(&self, retry: u32) -> Duration {
        if retry == 0 {
            return Duration::ZERO;
        }
        2u32.checked_pow(retry.saturating_sub(1))
            .and_then(|factor| self.backoff.checked_mul(factor))
            .unwrap_or(self.backoff_max)
            .min(self.backoff_max)
    }
}

/// What a connector step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnectorMode {
    /// Read pages of items from the outside system.
    Pull,
    /// Write the step's input items to the outside system.
    Push,
}

/// Default page cap of a pull step.
pub const DEFAULT_MAX_PAGES: u32 = 100;
/// Default item cap of a pull step.
pub const DEFAULT_MAX_ITEMS: u32 = 10_000;

/// Where a step's plugin comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginRef {
    /// A component file: absolute, resolved against the pipeline file's directory
    /// (and canonicalized when the file exists).
    Path(PathBuf),
    /// A plugin registered with a server, by its id (`plg_...`).
    Id(String),
    /// A plugin registered with a server, written `name@version`.
    Named {
        /// The registered name.
        name: String,
        /// The registered version.
        version: String,
    },
}

impl fmt::Display for PluginRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PluginRef::Path(path) => write!(f, "{}", path.display()),
            PluginRef::Id(id) => f.write_str(id),
            PluginRef::Named { name, version } => write!(f, "{name}@{version}"),
        }
    }
}

/// Serialized as the string a pipeline document uses: the path, or `name@version`.
impl Serialize for PluginRef {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            PluginRef::Path(path) => match path.to_str() {
                Some(text) => serializer.serialize_str(text),
                None => Err(serde::ser::Error::custom(format!(
                    "plugin path {} is not valid UTF-8",
                    path.display()
                ))),
            },
            PluginRef::Id(id) => serializer.serialize_str(id),
            PluginRef::Named { name, version } => {
                serializer.collect_str(&format_args!("{name}@{version}"))
            }
        }
    }
}

/// A feedback loop: when the step fails, the run goes back to an earlier step (with the
/// failure as feedback) and continues from there, at most `max_loops` times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FeedbackLoop {
    /// The name of an earlier step.
    pub send_back_to: String,
    /// How many times the loop may be taken (1 to [`MAX_LOOPS`], default 3).
    pub max_loops: u32,
}

/// Why a pipeline was refused. `Display` reads like a compiler diagnostic:
/// `[file:][line: ]field: message`, e.g.
/// `pipeline.toml:23: steps[0].colour: unknown field `colour`, expected one of ...`.
/// TOML syntax errors have no field and keep toml's own located message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PipelineError {
    /// The pipeline file, when the pipeline came from [`load_file`].
    pub file: Option<PathBuf>,
    /// The offending field as a path, e.g. `steps[2].on_failure.send_back_to`.
    pub field: Option<String>,
    /// The 1-based line in the TOML document, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl PipelineError {
    /// An error about the document as a whole.
    fn document(message: impl Into<String>) -> Self {
        PipelineError {
            file: None,
            field: None,
            line: None,
            message: message.into(),
        }
    }

    /// An error about one field, without a line.
    fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        PipelineError {
            file: None,
            field: Some(field.into()),
            line: None,
            message: message.into(),
        }
    }

    fn in_file(mut self, file: &Path) -> Self {
        self.file = Some(file.to_path_buf());
        self
    }
}

impl fmt::Display for PipelineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A syntax error's message already says where it is; a field error gets its line.
        let line = self.line.filter(|_| self.field.is_some());
        match (&self.file, line) {
            (Some(file), Some(line)) => write!(f, "{}:{line}: ", file.display())?,
            (Some(file), None) => write!(f, "{}: ", file.display())?,
            (None, Some(line)) => write!(f, "line {line}: ")?,
            (None, None) => {}
        }
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Parses a TOML pipeline. Relative plugin paths are resolved against `base_dir`
/// (itself made absolute against the current directory if it is relative).
pub fn parse_toml(text: &str, base_dir: &Path) -> Result<Pipeline, PipelineError> {
    check_size(text)?;
    let root = toml::de::DeTable::parse(text).map_err(|e| {
        let lines = LineIndex::new(text);
        PipelineError {
            file: None,
            field: None,
            line: e.span().map(|s| lines.line(s.start)),
            message: e.to_string().trim_end().to_string(),
        }
    })?;
    let mut converter = TomlConverter {
        index: LineIndex::new(text),
        lines: HashMap::new(),
    };
    let value = converter.table(root.get_ref(), "")?;
    build(&value, Some(base_dir), &converter.lines)
}

/// Parses a JSON pipeline (the same structure as the TOML form). With `base_dir`
/// `None` (pipelines submitted over the API) plugins must be `name@version`: file paths
/// are refused.
pub fn parse_json(text: &str, base_dir: Option<&Path>) -> Result<Pipeline, PipelineError> {
    check_size(text)?;
    let value: Value = serde_json::from_str(text).map_err(|e| PipelineError {
        file: None,
        field: None,
        line: Some(e.line()),
        message: format!("invalid JSON: {e}"),
    })?;
    build(&value, base_dir, &HashMap::new())
}

/// A registered plugin reference (`name@version` or `plg_...`), as the API takes them;
/// file paths are refused.
pub fn registered_plugin(text: &str) -> Result<PluginRef, String> {
    let lines = HashMap::new();
    Validator {
        lines: &lines,
        base_dir: None,
    }
    .plugin(text)
}

/// Reads and parses a pipeline file: JSON if its extension is `.json`, TOML otherwise.
/// Plugin paths are resolved against the file's directory; every error names the file.
pub fn load_file(path: &Path) -> Result<Pipeline, PipelineError> {
    let text = read_limited(path).map_err(|e| e.in_file(path))?;
    let base = path.parent().unwrap_or(Path::new(""));
    let is_json = path
        .extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("json"));
    let parsed = if is_json {
        parse_json(&text, Some(base))
    } else {
        parse_toml(&text, base)
    };
    parsed.map_err(|e| e.in_file(path))
}

fn read_limited(path: &Path) -> Result<String, PipelineError> {
    let cannot =
        |e: std::io::Error| PipelineError::document(format!("cannot read the pipeline file: {e}"));
    let meta = std::fs::metadata(path).map_err(cannot)?;
    if !meta.is_file() {
        return Err(PipelineError::document("is not a file"));
    }
    let file = std::fs::File::open(path).map_err(cannot)?;
    let mut text = String::new();
    let limit = u64::try_from(MAX_DOCUMENT_BYTES).unwrap_or(u64::MAX);
    file.take(limit.saturating_add(1))
        .read_to_string(&mut text)
        .map_err(cannot)?;
    check_size(&text)?;
    Ok(text)
}

fn check_size(text: &str) -> Result<(), PipelineError> {
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(PipelineError::document(format!(
            "the document is more than {MAX_DOCUMENT_BYTES} bytes (1 MiB), the limit for pipelines"
        )));
    }
    Ok(())
}

/// A tool plugin a step may call, loaded, with the tools it provides.
#[derive(Debug, Clone)]
pub struct LoadedTool {
    /// The pipeline's name for it.
    pub name: String,
    /// The plugin.
    pub plugin: Arc<Plugin>,
    /// Its tools, as it listed them.
    pub specs: Vec<crate::engine::ToolSpec>,
}

/// Where registered plugins (`name@version`, `plg_...`) come from: a server's registry.
#[async_trait::async_trait]
pub trait Registry: Send + Sync {
    /// The component bytes of a registered plugin, or why there are none.
    async fn fetch(&self, plugin: &PluginRef) -> Result<Vec<u8>, String>;
    /// Loads a registered plugin with `engine` (the outer error: why the registry has
    /// none). A registry that records digests skips fetching and hashing the bytes of
    /// a plugin the engine already holds.
    async fn load(
        &self,
        plugin: &PluginRef,
        engine: &Engine,
    ) -> Result<Result<Arc<Plugin>, crate::engine::Failure>, String> {
        let bytes = self.fetch(plugin).await?;
        Ok(engine.load(bytes).await)
    }
    /// A registered plugin's permission manifest (none: it is granted nothing).
    async fn manifest(&self, plugin: &PluginRef) -> Result<super::manifest::Manifest, String> {
        let _ = plugin;
        Ok(super::manifest::Manifest::default())
    }
}

impl Pipeline {
    /// Every step's plugin manifest, read and checked (in step order): the file beside a
    /// component file, or what the registry holds for a registered plugin.
    pub async fn manifests(
        &self,
        registry: Option<&dyn Registry>,
    ) -> Result<Vec<super::manifest::Manifest>, PipelineError> {
        let mut out = Vec::with_capacity(self.steps.len());
        for (i, step) in self.steps.iter().enumerate() {
            let manifest = match (&step.plugin, registry) {
                (PluginRef::Path(_), _) | (_, None) => super::manifest::for_plugin(&step.plugin),
                (registered, Some(registry)) => registry.manifest(registered).await,
            };
            let manifest =
                manifest.map_err(|e| PipelineError::field(format!("steps[{i}].plugin"), e))?;
            for (j, host) in step.http.iter().flatten().enumerate() {
                if !manifest.grants.http.iter().any(|r| &r.host == host) {
                    let granted: Vec<&str> = manifest
                        .grants
                        .http
                        .iter()
                        .map(|r| r.host.as_str())
                        .collect();
                    return Err(PipelineError::field(
                        format!("steps[{i}].http[{j}]"),
                        format!(
                            "step `{}` may not reach `{host}`: its plugin's manifest grants no \
                             such host (missing grant: [[grants.http]] host = \"{host}\"; it \
                             grants: {})",
                            step.name,
                            if granted.is_empty() {
                                "none".to_string()
                            } else {
                                granted.join(", ")
                            }
                        ),
                    ));
                }
            }
            out.push(manifest);
        }
        Ok(out)
    }

    /// Loads the `[tools]` plugins (each must be a tool plugin that lists its tools) and
    /// checks every step's grants against its plugin's manifest (`manifests`, in step
    /// order, from [`Pipeline::manifests`]): a step may only list tools it is granted.
    pub async fn load_tools(
        &self,
        engine: &Engine,
        registry: Option<&dyn Registry>,
        manifests: &[super::manifest::Manifest],
    ) -> Result<std::collections::BTreeMap<String, LoadedTool>, PipelineError> {
        for (i, (step, manifest)) in self.steps.iter().zip(manifests).enumerate() {
            for (j, tool) in step.tools.iter().enumerate() {
                if !manifest.grants.tools.contains(tool) {
                    let granted = if manifest.grants.tools.is_empty() {
                        "none".to_string()
                    } else {
                        manifest.grants.tools.join(", ")
                    };
                    let place = super::manifest::path_for(&step.plugin)
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|| "its manifest".into());
                    return Err(PipelineError::field(
                        format!("steps[{i}].tools[{j}]"),
                        format!(
                            "step `{}` may not call `{tool}`: its plugin is not granted that tool \
                             (missing grant `tools = [\"{tool}\"]` in {place}; it grants: {granted})",
                            step.name
                        ),
                    ));
                }
            }
        }
        let mut tools = std::collections::BTreeMap::new();
        for (name, plugin_ref) in &self.tools {
            let field = format!("tools.{name}");
            let loaded = match (plugin_ref, registry) {
                (PluginRef::Path(path), _) => engine.load_file(path).await,
                (registered, Some(registry)) => match registry.load(registered, engine).await {
                    Ok(loaded) => loaded,
                    Err(why) => return Err(PipelineError::field(field, why)),
                },
                (_, None) => {
                    return Err(PipelineError::field(
                        field,
                        "registered plugins need a server with a plugin registry; use a path",
                    ));
                }
            };
            let plugin = loaded.map_err(|f| PipelineError::field(&field, f.to_string()))?;
            if plugin.world != World::Tool {
                return Err(PipelineError::field(
                    field,
                    format!(
                        "`{plugin_ref}` is a {}, not a tool-plugin",
                        plugin.world.as_str()
                    ),
                ));
            }
            let specs = match engine.describe(&plugin).await.result {
                Ok(crate::engine::Output::Tools(specs)) => specs,
                Ok(_) => Vec::new(),
                Err(f) => {
                    return Err(PipelineError::field(
                        field,
                        format!("listing its tools failed: {f}"),
                    ));
                }
            };
            tools.insert(
                name.clone(),
                LoadedTool {
                    name: name.clone(),
                    plugin,
                    specs,
                },
            );
        }
        Ok(tools)
    }

    /// Loads every step's plugin with the engine, one per step, in order, so that a bad
    /// pipeline fails before anything runs: a file that is not a loadable component, a
    /// plugin that is not an agent, or a registered plugin the registry does not have.
    pub async fn load_plugins(
        &self,
        engine: &Engine,
        registry: Option<&dyn Registry>,
    ) -> Result<Vec<Arc<Plugin>>, PipelineError> {
        let mut plugins = Vec::with_capacity(self.steps.len());
        for (i, step) in self.steps.iter().enumerate() {
            let field = format!("steps[{i}].plugin");
            let loaded = match (&step.plugin, registry) {
                (PluginRef::Path(path), _) => engine.load_file(path).await,
                (registered, Some(registry)) => match registry.load(registered, engine).await {
                    Ok(loaded) => loaded,
                    Err(why) => {
                        return Err(PipelineError::field(
                            field,
                            format!("step `{}`: {why}", step.name),
                        ));
                    }
                },
                (_, None) => {
                    return Err(PipelineError::field(
                        field,
                        "registered plugins (`name@version`) need a server with a plugin \
                         registry; use a path",
                    ));
                }
            };
            let file_name = match &step.plugin {
                PluginRef::Path(path) => path.file_name().map_or_else(
                    || path.display().to_string(),
                    |n| n.to_string_lossy().into(),
                ),
                other => other.to_string(),
            };
            let plugin = loaded.map_err(|failure| {
                PipelineError::field(
                    &field,
                    format!("step `{}` (`{file_name}`): {failure}", step.name),
                )
            })?;
            match (step.connector, plugin.world) {
                (None, World::Agent) | (Some(_), World::Connector) => {}
                (None, World::Connector) => {
                    return Err(PipelineError::field(
                        field,
                        format!(
                            "step `{}`: `{file_name}` is a connector-plugin: say what the step \
                             does with it, `connector = \"pull\"` or `connector = \"push\"`",
                            step.name
                        ),
                    ));
                }
                (None, world) => {
                    return Err(PipelineError::field(
                        field,
                        format!(
                            "step `{}`: steps must be agents or connectors; `{file_name}` is a {}",
                            step.name,
                            world.as_str()
                        ),
                    ));
                }
                (Some(_), world) => {
                    return Err(PipelineError::field(
                        field,
                        format!(
                            "step `{}` has `connector` set, but `{file_name}` is a {}, not a \
                             connector-plugin",
                            step.name,
                            world.as_str()
                        ),
                    ));
                }
            }
            plugins.push(plugin);
        }
        Ok(plugins)
    }
}

fn serialize_duration<S: Serializer>(
    duration: &Duration,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_duration(*duration))
}

// ---------------------------------------------------------------------------------------
// The raw model, shared by TOML and JSON. Every field is optional here so that missing
// ones are reported by validation, with their path, rather than by serde.

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a pipeline table")]
struct RawPipeline {
    name: Option<String>,
    description: Option<String>,
    defaults: Option<RawLimits>,
    budget: Option<RawBudget>,
    tools: Option<Value>,
    steps: Option<Capped<RawStep, MAX_STEPS>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table of step defaults")]
struct RawLimits {
    fuel: Option<u64>,
    timeout: Option<Dur>,
    memory: Option<Size>,
    max_attempts: Option<u32>,
    backoff: Option<Dur>,
    backoff_max: Option<Dur>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a budget table")]
struct RawBudget {
    fuel: Option<u64>,
    timeout: Option<Dur>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a step table")]
struct RawStep {
    name: Option<String>,
    plugin: Option<String>,
    config: Option<Value>,
    tools: Option<Capped<String, MAX_TOOLS>>,
    on_failure: Option<RawFeedback>,
    input_from: Option<String>,
    http: Option<Capped<String, MAX_TOOLS>>,
    connector: Option<String>,
    max_pages: Option<u32>,
    max_items: Option<u32>,
    fuel: Option<u64>,
    timeout: Option<Dur>,
    memory: Option<Size>,
    max_attempts: Option<u32>,
    backoff: Option<Dur>,
    backoff_max: Option<Dur>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table like { send_back_to = \"step\", max_loops = 3 }"
)]
struct RawFeedback {
    send_back_to: Option<String>,
    max_loops: Option<u32>,
}

/// A list refused as soon as it has more than `N` entries.
struct Capped<T, const N: usize>(Vec<T>);

impl<'de, T: Deserialize<'de>, const N: usize> Deserialize<'de> for Capped<T, N> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CappedVisitor<T, const N: usize>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>, const N: usize> Visitor<'de> for CappedVisitor<T, N> {
            type Value = Capped<T, N>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a list of at most {N} entries")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::new();
                loop {
                    if items.len() >= N {
                        if seq.next_element::<de::IgnoredAny>()?.is_some() {
                            return Err(de::Error::custom(format_args!(
                                "has more than {N} entries (the limit is {N})"
                            )));
                        }
                        break;
                    }
                    match seq.next_element()? {
                        Some(item) => items.push(item),
                        None => break,
                    }
                }
                Ok(Capped(items))
            }
        }

        deserializer.deserialize_seq(CappedVisitor(PhantomData))
    }
}

/// A duration written as a string, e.g. `"30s"` or `"1m 30s"`.
struct Dur(Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurVisitor;

        impl Visitor<'_> for DurVisitor {
            type Value = Dur;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"30s\", \"250ms\" or \"1h30m\"")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Dur, E> {
                parse_duration(v).map(Dur).map_err(E::custom)
            }
        }

        deserializer.deserialize_str(DurVisitor)
    }
}

/// A size written as a string (`"64MiB"`) or a number of bytes.
struct Size(usize);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;

        impl Visitor<'_> for SizeVisitor {
            type Value = Size;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"64MiB\", or a number of bytes")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                parse_size(v).map(Size).map_err(E::custom)
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                usize::try_from(v)
                    .map(Size)
                    .map_err(|_| E::custom(format!("{v} bytes is too large")))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(format!("a size cannot be negative (got {v})"))),
                }
            }
        }

        deserializer.deserialize_any(SizeVisitor)
    }
}

// ---------------------------------------------------------------------------------------
// A serde deserializer over a JSON value that knows where it is, so that every serde
// error (unknown field, wrong type, bad duration) names its field path.

#[derive(Debug)]
struct DeError {
    path: Option<String>,
    message: String,
}

impl DeError {
    /// Attributes the error to `path`, unless a deeper node already claimed it.
    fn at(mut self, path: &str) -> Self {
        if self.path.is_none() {
            self.path = Some(path.to_string());
        }
        self
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            path: None,
            message: msg.to_string(),
        }
    }
}

/// `parent.key`, quoting keys that are not plain identifiers.
fn child_path(parent: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if plain {
        key.to_string()
    } else {
        format!("{key:?}")
    };
    if parent.is_empty() {
        key
    } else {
        format!("{parent}.{key}")
    }
}

struct Node<'a> {
    value: &'a Value,
    path: String,
}

impl<'de> de::Deserializer<'de> for Node<'de> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let Node { value, path } = self;
        let result = match value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    visitor.visit_u64(u)
                } else if let Some(i) = n.as_i64() {
                    visitor.visit_i64(i)
                } else if let Some(f) = n.as_f64() {
                    visitor.visit_f64(f)
                } else {
                    Err(de::Error::custom("unsupported number"))
                }
            }
            Value::String(s) => visitor.visit_borrowed_str(s),
            Value::Array(items) => visitor.visit_seq(NodeSeq {
                items: items.iter().enumerate(),
                path: &path,
            }),
            Value::Object(map) => visitor.visit_map(NodeMap {
                entries: map.iter(),
                pending: None,
                path: &path,
            }),
        };
        result.map_err(|e| e.at(&path))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.value {
            Value::Null => visitor
                .visit_none::<DeError>()
                .map_err(|e| e.at(&self.path)),
            _ => {
                let path = self.path.clone();
                visitor.visit_some(self).map_err(|e| e.at(&path))
            }
        }
    }

    /// Structs are tables only: serde's derive would also take a list of the fields'
    /// values, which no pipeline author means.
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match self.value {
            Value::Object(_) => self.deserialize_any(visitor),
            other => Err(
                <DeError as de::Error>::invalid_type(unexpected(other), &visitor).at(&self.path),
            ),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf unit unit_struct seq tuple tuple_struct map enum identifier
    }
}

/// What serde's "invalid type" errors call a JSON value.
fn unexpected(value: &Value) -> de::Unexpected<'_> {
    match value {
        Value::Null => de::Unexpected::Unit,
        Value::Bool(b) => de::Unexpected::Bool(*b),
        Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => de::Unexpected::Unsigned(u),
            (None, Some(i), _) => de::Unexpected::Signed(i),
            (None, None, Some(f)) => de::Unexpected::Float(f),
            (None, None, None) => de::Unexpected::Other("number"),
        },
        Value::String(s) => de::Unexpected::Str(s),
        Value::Array(_) => de::Unexpected::Seq,
        Value::Object(_) => de::Unexpected::Map,
    }
}

struct NodeSeq<'a, 'p> {
    items: std::iter::Enumerate<std::slice::Iter<'a, Value>>,
    path: &'p str,
}

impl<'de> SeqAccess<'de> for NodeSeq<'de, '_> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.items.next() {
            Some((i, value)) => seed
                .deserialize(Node {
                    value,
                    path: format!("{}[{i}]", self.path),
                })
                .map(Some),
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct NodeMap<'a, 'p> {
    entries: serde_json::map::Iter<'a>,
    pending: Option<(&'a Value, String)>,
    path: &'p str,
}

impl<'de> MapAccess<'de> for NodeMap<'de, '_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        match self.entries.next() {
            Some((key, value)) => {
                let path = child_path(self.path, key);
                let key = de::value::BorrowedStrDeserializer::<'de, DeError>::new(key);
                let key = seed.deserialize(key).map_err(|e| e.at(&path))?;
                self.pending = Some((value, path));
                Ok(Some(key))
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        match self.pending.take() {
            Some((value, path)) => seed.deserialize(Node { value, path }),
            None => Err(de::Error::custom(
                "a map value was requested before its key",
            )),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

// ---------------------------------------------------------------------------------------
// TOML -> JSON value, remembering the line of every field for error messages.

/// Line numbers of a TOML document's fields, by field path.
type Lines = HashMap<String, usize>;

/// The line of `path`, or of its nearest enclosing field that has one.
fn line_of(lines: &Lines, path: &str) -> Option<usize> {
    let mut path = path;
    loop {
        if let Some(line) = lines.get(path) {
            return Some(*line);
        }
        let cut = path.rfind(['.', '['])?;
        path = path.get(..cut)?;
    }
}

/// Byte offset -> 1-based line.
struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i.saturating_add(1)))
            .collect();
        LineIndex { starts }
    }

    fn line(&self, offset: usize) -> usize {
        self.starts.partition_point(|&start| start <= offset).max(1)
    }
}

struct TomlConverter {
    index: LineIndex,
    lines: Lines,
}

impl TomlConverter {
    fn table(&mut self, table: &toml::de::DeTable<'_>, path: &str) -> Result<Value, PipelineError> {
        let mut map = serde_json::Map::new();
        for (key, value) in table.iter() {
            let child = child_path(path, key.get_ref());
            self.lines
                .insert(child.clone(), self.index.line(key.span().start));
            let converted = self.value(value.get_ref(), &child)?;
            map.insert(key.get_ref().to_string(), converted);
        }
        Ok(Value::Object(map))
    }

    fn value(&mut self, value: &toml::de::DeValue<'_>, path: &str) -> Result<Value, PipelineError> {
        use toml::de::DeValue;
        let error = |lines: &Lines, message: &str| PipelineError {
            file: None,
            field: Some(path.to_string()),
            line: line_of(lines, path),
            message: message.to_string(),
        };
        Ok(match value {
            DeValue::String(s) => Value::String(s.to_string()),
            DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) => Value::from(n),
                Err(_) => match u64::from_str_radix(i.as_str(), i.radix()) {
                    Ok(n) => Value::from(n),
                    Err(_) => return Err(error(&self.lines, "integer out of range")),
                },
            },
            DeValue::Float(f) => {
                let number = f
                    .as_str()
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64);
                match number {
                    Some(n) => Value::Number(n),
                    None => {
                        return Err(error(
                            &self.lines,
                            "only finite floats are supported (not inf or nan)",
                        ));
                    }
                }
            }
            DeValue::Boolean(b) => Value::Bool(*b),
            DeValue::Datetime(d) => Value::String(d.to_string()),
            DeValue::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let child = format!("{path}[{i}]");
                    self.lines
                        .insert(child.clone(), self.index.line(item.span().start));
                    out.push(self.value(item.get_ref(), &child)?);
                }
                Value::Array(out)
            }
            DeValue::Table(table) => self.table(table, path)?,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Validation: raw model -> Pipeline.

/// Turns a JSON value (parsed from JSON, or converted from TOML) into a pipeline.
fn build(value: &Value, base_dir: Option<&Path>, lines: &Lines) -> Result<Pipeline, PipelineError> {
    let raw = RawPipeline::deserialize(Node {
        value,
        path: String::new(),
    })
    .map_err(|e| {
        let field = e.path.filter(|p| !p.is_empty());
        PipelineError {
            file: None,
            line: field.as_deref().and_then(|p| line_of(lines, p)),
            field,
            message: e.message,
        }
    })?;
    Validator { lines, base_dir }.pipeline(raw)
}

struct Validator<'a> {
    lines: &'a Lines,
    base_dir: Option<&'a Path>,
}

/// Per-attempt budgets, before or after merging.
#[derive(Clone, Copy)]
struct StepLimits {
    fuel: u64,
    timeout: Duration,
    memory: usize,
    max_attempts: u32,
    backoff: Duration,
    backoff_max: Duration,
}

impl Default for StepLimits {
    fn default() -> Self {
        StepLimits {
            fuel: DEFAULT_FUEL,
            timeout: Duration::from_secs(30),
            memory: 64 << 20,
            max_attempts: 3,
            backoff: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
        }
    }
}

fn human(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

/// A step name: `^[a-z0-9][a-z0-9_-]{0,62}$`.
fn valid_step_name(name: &str) -> bool {
    match name.as_bytes().split_first() {
        Some((first, rest)) => {
            (first.is_ascii_lowercase() || first.is_ascii_digit())
                && rest.len() <= 62
                && rest.iter().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-'
                })
        }
        None => false,
    }
}

fn backticked(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Validator<'_> {
    fn err(&self, field: &str, message: impl Into<String>) -> PipelineError {
        PipelineError {
            file: None,
            field: Some(field.to_string()),
            line: line_of(self.lines, field),
            message: message.into(),
        }
    }

    fn pipeline(&self, raw: RawPipeline) -> Result<Pipeline, PipelineError> {
        let name = match raw.name {
            None => return Err(self.err("name", "is required: give the pipeline a name")),
            Some(name) if name.trim().is_empty() => {
                return Err(self.err("name", "must not be empty"));
            }
            Some(name) => name,
        };
        let defaults = self.limits(
            &raw.defaults.unwrap_or_default(),
            StepLimits::default(),
            "defaults",
        )?;
        let budget = self.budget(raw.budget)?;

        let raw_steps = raw.steps.map(|s| s.0).unwrap_or_default();
        if raw_steps.is_empty() {
            return Err(self.err(
                "steps",
                "a pipeline needs at least one step (add a [[steps]] table)",
            ));
        }
        if raw_steps.len() > MAX_STEPS {
            return Err(self.err(
                "steps",
                format!("has {} steps; the limit is {MAX_STEPS}", raw_steps.len()),
            ));
        }

        // Names first: feedback loops refer to them.
        let mut names: Vec<&str> = Vec::with_capacity(raw_steps.len());
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, step) in raw_steps.iter().enumerate() {
            let field = format!("steps[{i}].name");
            let name = step
                .name
                .as_deref()
                .ok_or_else(|| self.err(&field, "is required"))?;
            if !valid_step_name(name) {
                return Err(self.err(
                    &field,
                    format!(
                        "`{name}` is not a valid step name: use 1 to 63 of a-z, 0-9, `_` and \
                         `-`, starting with a letter or digit"
                    ),
                ));
            }
            if let Some(first) = seen.insert(name, i) {
                return Err(self.err(
                    &field,
                    format!(
                        "`{name}` is already the name of steps[{first}]; step names must be unique"
                    ),
                ));
            }
            names.push(name);
        }

        let mut steps = Vec::with_capacity(raw_steps.len());
        for (i, raw_step) in raw_steps.iter().enumerate() {
            steps.push(self.step(i, raw_step, &names, defaults)?);
        }
        let tools = self.tools(raw.tools.as_ref())?;
        for (i, step) in steps.iter().enumerate() {
            for (j, tool) in step.tools.iter().enumerate() {
                if !tools.contains_key(tool) {
                    let known: Vec<&str> = tools.keys().map(String::as_str).collect();
                    return Err(self.err(
                        &format!("steps[{i}].tools[{j}]"),
                        format!(
                            "`{tool}` is not in the pipeline's [tools] table (it has: {})",
                            if known.is_empty() {
                                "none".to_string()
                            } else {
                                known.join(", ")
                            }
                        ),
                    ));
                }
            }
        }
        Ok(Pipeline {
            name,
            description: raw.description,
            budget,
            tools,
            steps,
        })
    }

    /// The `[tools]` table: tool names (like step names) to plugin references.
    fn tools(
        &self,
        raw: Option<&Value>,
    ) -> Result<std::collections::BTreeMap<String, PluginRef>, PipelineError> {
        let mut tools = std::collections::BTreeMap::new();
        let Some(raw) = raw else { return Ok(tools) };
        let Value::Object(table) = raw else {
            return Err(self.err("tools", "must be a table of tool name = plugin"));
        };
        if table.len() > MAX_TOOLS {
            return Err(self.err("tools", format!("has more than {MAX_TOOLS} tools")));
        }
        for (name, plugin) in table {
            let field = format!("tools.{name}");
            if !valid_step_name(name) {
                return Err(self.err(&field, "tool names use 1 to 63 of a-z, 0-9, `_` and `-`"));
            }
            let Value::String(text) = plugin else {
                return Err(self.err(&field, "must be a plugin: a path, `name@version` or an id"));
            };
            let plugin = self.plugin(text).map_err(|m| self.err(&field, m))?;
            tools.insert(name.clone(), plugin);
        }
        Ok(tools)
    }

    fn budget(&self, raw: Option<RawBudget>) -> Result<RunBudget, PipelineError> {
        let Some(raw) = raw else {
            return Ok(RunBudget::default());
        };
        if raw.fuel == Some(0) {
            return Err(self.err(
                "budget.fuel",
                "must be at least 1 (leave it out for unlimited fuel)",
            ));
        }
        let timeout = raw.timeout.map_or(DEFAULT_RUN_TIMEOUT, |d| d.0);
        if timeout.is_zero() {
            return Err(self.err("budget.timeout", "must be more than 0"));
        }
        if timeout > MAX_RUN_TIMEOUT {
            return Err(self.err(
                "budget.timeout",
                format!(
                    "must be at most {} (got {})",
                    human(MAX_RUN_TIMEOUT),
                    human(timeout)
                ),
            ));
        }
        Ok(RunBudget {
            fuel: raw.fuel,
            timeout,
        })
    }

    /// Checks the keys `raw` sets (as `prefix.key`) and lays them over `base`.
    fn limits(
        &self,
        raw: &RawLimits,
        base: StepLimits,
        prefix: &str,
    ) -> Result<StepLimits, PipelineError> {
        let field = |key: &str| format!("{prefix}.{key}");
        let mut out = base;
        if let Some(fuel) = raw.fuel {
            if fuel == 0 {
                return Err(self.err(&field("fuel"), "must be at least 1"));
            }
            if fuel > MAX_STEP_FUEL {
                return Err(self.err(
                    &field("fuel"),
                    format!("must be at most {MAX_STEP_FUEL} (got {fuel})"),
                ));
            }
            out.fuel = fuel;
        }
        if let Some(Dur(timeout)) = raw.timeout {
            if timeout.is_zero() {
                return Err(self.err(&field("timeout"), "must be more than 0"));
            }
            if timeout > MAX_STEP_TIMEOUT {
                return Err(self.err(
                    &field("timeout"),
                    format!(
                        "must be at most {} (got {})",
                        human(MAX_STEP_TIMEOUT),
                        human(timeout)
                    ),
                ));
            }
            out.timeout = timeout;
        }
        if let Some(Size(memory)) = raw.memory {
            let bytes = u64::try_from(memory).unwrap_or(u64::MAX);
            if bytes < MIN_STEP_MEMORY {
                return Err(self.err(
                    &field("memory"),
                    format!("must be at least 1MiB (got {memory} bytes)"),
                ));
            }
            if bytes > MAX_STEP_MEMORY {
                return Err(self.err(
                    &field("memory"),
                    format!("must be at most 4GiB (got {memory} bytes)"),
                ));
            }
            out.memory = memory;
        }
        if let Some(attempts) = raw.max_attempts {
            if attempts == 0 {
                return Err(self.err(
                    &field("max_attempts"),
                    "must be at least 1 (1 means no retries)",
                ));
            }
            if attempts > MAX_ATTEMPTS {
                return Err(self.err(
                    &field("max_attempts"),
                    format!("must be at most {MAX_ATTEMPTS} (got {attempts})"),
                ));
            }
            out.max_attempts = attempts;
        }
        for (key, value, slot) in [
            ("backoff", &raw.backoff, &mut out.backoff),
            ("backoff_max", &raw.backoff_max, &mut out.backoff_max),
        ] {
            if let Some(Dur(delay)) = value {
                if *delay > MAX_BACKOFF {
                    return Err(self.err(
                        &field(key),
                        format!(
                            "must be at most {} (got {})",
                            human(MAX_BACKOFF),
                            human(*delay)
                        ),
                    ));
                }
                *slot = *delay;
            }
        }
        Ok(out)
    }

    fn step(
        &self,
        i: usize,
        raw: &RawStep,
        names: &[&str],
        defaults: StepLimits,
    ) -> Result<Step, PipelineError> {
        let prefix = format!("steps[{i}]");
        let field = |key: &str| format!("{prefix}.{key}");
        let name = names.get(i).copied().unwrap_or_default().to_string();

        let plugin = match raw.plugin.as_deref() {
            None => {
                return Err(self.err(
                    &field("plugin"),
                    "is required: a path to a .wasm component or `name@version`",
                ));
            }
            Some(text) => self
                .plugin(text)
                .map_err(|m| self.err(&field("plugin"), m))?,
        };

        let config = match &raw.config {
            None => Value::Object(serde_json::Map::new()),
            Some(config @ Value::Object(_)) => config.clone(),
            Some(other) => {
                return Err(self.err(
                    &field("config"),
                    format!(
                        "must be a table (an object in JSON), not {}",
                        json_type(other)
                    ),
                ));
            }
        };

        let tools: Vec<String> = raw.tools.as_ref().map(|t| t.0.clone()).unwrap_or_default();
        for (j, tool) in tools.iter().enumerate() {
            let tool_field = format!("{prefix}.tools[{j}]");
            if tool.trim().is_empty() {
                return Err(self.err(&tool_field, "a tool name must not be empty"));
            }
            if let Some(first) = tools.iter().position(|t| t == tool).filter(|&k| k < j) {
                return Err(self.err(
                    &tool_field,
                    format!("`{tool}` is listed twice (also tools[{first}])"),
                ));
            }
        }

        let on_failure = match &raw.on_failure {
            None => None,
            Some(feedback) => Some(self.feedback(i, &prefix, feedback, names)?),
        };

        let input_from = match raw.input_from.as_deref() {
            None => None,
            Some(from) => {
                let earlier = names.get(..i).unwrap_or_default();
                if !earlier.contains(&from) {
                    return Err(self.err(
                        &field("input_from"),
                        format!(
                            "`{from}` is not an earlier step (earlier steps: {})",
                            if earlier.is_empty() {
                                "none".to_string()
                            } else {
                                backticked(earlier)
                            }
                        ),
                    ));
                }
                Some(from.to_string())
            }
        };

        let connector = match raw.connector.as_deref() {
            None => None,
            Some("pull") => Some(ConnectorMode::Pull),
            Some("push") => Some(ConnectorMode::Push),
            Some(other) => {
                return Err(self.err(
                    &field("connector"),
                    format!("`{other}` is not a connector action: use \"pull\" or \"push\""),
                ));
            }
        };
        if connector.is_some() && !tools.is_empty() {
            return Err(self.err(
                &field("tools"),
                "connector steps cannot call tools (only agents can)",
            ));
        }
        if connector != Some(ConnectorMode::Pull)
            && (raw.max_pages.is_some_and(|n| n != DEFAULT_MAX_PAGES)
                || raw.max_items.is_some_and(|n| n != DEFAULT_MAX_ITEMS))
        {
            return Err(self.err(
                &field("max_pages"),
                "max_pages and max_items are for `connector = \"pull\"` steps",
            ));
        }
        let max_pages = raw.max_pages.unwrap_or(DEFAULT_MAX_PAGES);
        let max_items = raw.max_items.unwrap_or(DEFAULT_MAX_ITEMS);
        if max_pages == 0 || max_pages > 100_000 || max_items == 0 || max_items > 1_000_000 {
            return Err(self.err(
                &field("max_pages"),
                "max_pages must be 1 to 100000 and max_items 1 to 1000000",
            ));
        }

        let overrides = RawLimits {
            fuel: raw.fuel,
            timeout: raw.timeout.as_ref().map(|d| Dur(d.0)),
            memory: raw.memory.as_ref().map(|s| Size(s.0)),
            max_attempts: raw.max_attempts,
            backoff: raw.backoff.as_ref().map(|d| Dur(d.0)),
            backoff_max: raw.backoff_max.as_ref().map(|d| Dur(d.0)),
        };
        let limits = self.limits(&overrides, defaults, &prefix)?;

        Ok(Step {
            name,
            plugin,
            config,
            tools,
            on_failure,
            http: raw.http.as_ref().map(|h| h.0.clone()),
            input_from,
            connector,
            max_pages,
            max_items,
            fuel: limits.fuel,
            timeout: limits.timeout,
            memory: limits.memory,
            max_attempts: limits.max_attempts,
            backoff: limits.backoff,
            backoff_max: limits.backoff_max,
        })
    }

    fn feedback(
        &self,
        i: usize,
        prefix: &str,
        raw: &RawFeedback,
        names: &[&str],
    ) -> Result<FeedbackLoop, PipelineError> {
        let field = format!("{prefix}.on_failure.send_back_to");
        let earlier = names.get(..i).unwrap_or_default();
        let earlier_text = if earlier.is_empty() {
            "there are no earlier steps, so the first step cannot have a feedback loop".to_string()
        } else {
            format!("earlier steps: {}", backticked(earlier))
        };
        let target = raw.send_back_to.as_deref().ok_or_else(|| {
            self.err(
                &field,
                format!("is required: the name of an earlier step ({earlier_text})"),
            )
        })?;
        match names.iter().position(|n| *n == target) {
            Some(k) if k < i => {}
            Some(k) if k == i => {
                return Err(self.err(
                    &field,
                    format!(
                        "a step cannot send work back to itself (use max_attempts to retry it); \
                         {earlier_text}"
                    ),
                ));
            }
            Some(k) => {
                return Err(self.err(
                    &field,
                    format!(
                        "`{target}` is a later step (steps[{k}]); work can only be sent back \
                         to an earlier step; {earlier_text}"
                    ),
                ));
            }
            None => {
                return Err(self.err(
                    &field,
                    format!("no step is named `{target}`; {earlier_text}"),
                ));
            }
        }
        let max_loops = raw.max_loops.unwrap_or(DEFAULT_MAX_LOOPS);
        if max_loops == 0 || max_loops > MAX_LOOPS {
            return Err(self.err(
                &format!("{prefix}.on_failure.max_loops"),
                format!("must be between 1 and {MAX_LOOPS} (got {max_loops})"),
            ));
        }
        Ok(FeedbackLoop {
            send_back_to: target.to_string(),
            max_loops,
        })
    }

    /// A plugin reference: `name@version`, or a path resolved against the base directory.
    fn plugin(&self, text: &str) -> Result<PluginRef, String> {
        if text.trim().is_empty() {
            return Err(
                "must not be empty: give a path to a .wasm component or `name@version`".into(),
            );
        }
        if let Some(hex) = text.strip_prefix("plg_")
            && !hex.is_empty()
            && hex.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Ok(PluginRef::Id(text.to_string()));
        }
        let path_like = text.contains('/')
            || text.contains('\\')
            || text.ends_with(".wasm")
            || !text.contains('@');
        if !path_like {
            let (name, version) = text.split_once('@').unwrap_or((text, ""));
            if name.trim().is_empty() {
                return Err(format!("`{text}`: the plugin name before `@` is empty"));
            }
            if version.trim().is_empty() {
                return Err(format!("`{text}`: the version after `@` is empty"));
            }
            if version.contains('@') || text.chars().any(char::is_whitespace) {
                return Err(format!(
                    "`{text}` is not `name@version` (one `@`, no spaces)"
                ));
            }
            return Ok(PluginRef::Named {
                name: name.to_string(),
                version: version.to_string(),
            });
        }
        let Some(base) = self.base_dir else {
            return Err(format!(
                "`{text}` is a file path, but this pipeline has no directory to resolve it \
                 against (it was not loaded from a file): name a registered plugin as \
                 `name@version` instead"
            ));
        };
        let path = Path::new(text);
        let joined = if path.is_absolute() {
            path.to_path_buf()
        } else {
            absolute_dir(base)?.join(path)
        };
        let resolved = std::fs::canonicalize(&joined).unwrap_or(joined);
        if resolved.to_str().is_none() {
            return Err(format!(
                "`{text}` resolves to {}, which is not valid UTF-8",
                resolved.display()
            ));
        }
        Ok(PluginRef::Path(resolved))
    }
}

/// `dir` made absolute against the current directory (an empty `dir` is the current one).
fn absolute_dir(dir: &Path) -> Result<PathBuf, String> {
    let result = if dir.as_os_str().is_empty() {
        std::env::current_dir()
    } else {
        std::path::absolute(dir)
    };
    result.map_err(|e| format!("cannot resolve the directory {}: {e}", dir.display()))
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "a table",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    fn plugins_dir() -> PathBuf {
        host_dir().join("../target/plugins")
    }

    /// What `resolve` makes of an existing or missing file.
    fn resolved(path: PathBuf) -> PathBuf {
        std::fs::canonicalize(&path).unwrap_or(path)
    }

    fn toml(text: &str) -> Result<Pipeline, PipelineError> {
        parse_toml(text, Path::new("/pipelines"))
    }

    /// A minimal pipeline with `extra` appended to its only step.
    fn one_step(extra: &str) -> String {
        format!("name = \"p\"\n[[steps]]\nname = \"a\"\nplugin = \"a.wasm\"\n{extra}\n")
    }

    /// A minimal pipeline with `table` (e.g. a `[defaults]` table) before its only step,
    /// and `extra` appended to the step.
    fn with_table(table: &str, extra: &str) -> String {
        format!("name = \"p\"\n{table}\n[[steps]]\nname = \"a\"\nplugin = \"a.wasm\"\n{extra}\n")
    }

    /// Asserts that `result` failed on `field` with a message containing `phrase`.
    #[track_caller]
    #[test]
    fn step_tools_must_be_declared_in_the_tools_table() {
        assert_fails(
            toml(&one_step("tools = [\"search\"]")),
            "steps[0].tools[0]",
            "`search` is not in the pipeline's [tools] table (it has: none)",
        );
        assert_fails(
            toml(
                "name = \"p\"\n[tools]\nBad_Name = \"x.wasm\"\n[[steps]]\nname = \"a\"\nplugin = \"a.wasm\"\n",
            ),
            "tools.Bad_Name",
            "tool names use",
        );
        let p = toml(
            "name = \"p\"\n[tools]\nsearch = \"search@1.0.0\"\n[[steps]]\nname = \"a\"\nplugin = \"a.wasm\"\ntools = [\"search\"]\n",
        )
        .unwrap();
        assert_eq!(
            p.tools.get("search"),
            Some(&PluginRef::Named {
                name: "search".into(),
                version: "1.0.0".into()
            })
        );
    }

    fn assert_fails(result: Result<Pipeline, PipelineError>, field: &str, phrase: &str) {
        let error = result.unwrap_err();
        let text = error.to_string();
        assert_eq!(error.field.as_deref(), Some(field), "{text}");
        assert!(text.contains(&format!("{field}: ")), "{text}");
        assert!(text.contains(phrase), "expected {phrase:?} in {text:?}");
    }

    #[test]
    fn the_etl_example_parses() {
        let file = host_dir().join("../examples/etl/pipeline.toml");
        let pipeline = load_file(&file).unwrap();
        assert_eq!(pipeline.name, "etl-demo");
        assert!(pipeline.description.as_deref().unwrap().contains("CSV"));
        assert_eq!(
            pipeline.budget,
            RunBudget {
                fuel: Some(10_000_000_000),
                timeout: Duration::from_secs(600)
            }
        );
        let names: Vec<&str> = pipeline.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["extract", "transform", "validate"]);
        for (step, file) in
            pipeline
                .steps
                .iter()
                .zip(["csv_extract.wasm", "transform.wasm", "validate.wasm"])
        {
            let expected = resolved(
                host_dir()
                    .join("../examples/etl/../../target/plugins")
                    .join(file),
            );
            assert_eq!(step.plugin, PluginRef::Path(expected));
            let PluginRef::Path(path) = &step.plugin else {
                unreachable!()
            };
            assert!(path.is_absolute());
            assert_eq!(step.fuel, 2_000_000_000);
            assert_eq!(step.timeout, Duration::from_secs(30));
            assert_eq!(step.memory, 64 << 20);
            assert_eq!(step.max_attempts, 3);
            assert_eq!(step.backoff, Duration::from_secs(1));
            assert_eq!(step.backoff_max, Duration::from_secs(60));
            assert!(step.tools.is_empty());
            assert_eq!(step.on_failure, None);
        }
        let extract = &pipeline.steps[0];
        assert_eq!(extract.config, serde_json::json!({ "delimiter": "," }));
        assert_eq!(
            pipeline.steps[2].config["rules"][0],
            serde_json::json!({ "column": "order_id", "required": true, "unique": true })
        );
    }

    #[test]
    fn defaults_and_per_step_overrides_merge() {
        let text = r#"
            name = "p"
            [tools]
            text-tools = "/abs/text_tools.wasm"
            search = "search@1.0.0"
            [defaults]
            fuel = 5_000
            timeout = "5s"
            memory = "32MiB"
            max_attempts = 5
            backoff = "100ms"
            backoff_max = "2s"
            [[steps]]
            name = "a"
            plugin = "plugins/a.wasm"
            [[steps]]
            name = "b"
            plugin = "/abs/b.wasm"
            fuel = 7
            timeout = "1m30s"
            memory = 2097152
            max_attempts = 1
            backoff = "0s"
            backoff_max = "1h"
            tools = ["text-tools", "search"]
            on_failure = { send_back_to = "a" }
        "#;
        let p = toml(text).unwrap();
        assert_eq!(p.budget, RunBudget::default());
        assert_eq!(p.budget.timeout, Duration::from_secs(3600));
        let [a, b] = p.steps.as_slice() else {
            panic!("two steps")
        };
        assert_eq!(
            a.plugin,
            PluginRef::Path(PathBuf::from("/pipelines/plugins/a.wasm"))
        );
        assert_eq!(
            (
                a.fuel,
                a.timeout,
                a.memory,
                a.max_attempts,
                a.backoff,
                a.backoff_max
            ),
            (
                5_000,
                Duration::from_secs(5),
                32 << 20,
                5,
                Duration::from_millis(100),
                Duration::from_secs(2)
            )
        );
        assert_eq!(a.config, serde_json::json!({}));
        assert_eq!(b.plugin, PluginRef::Path(PathBuf::from("/abs/b.wasm")));
        assert_eq!(
            (
                b.fuel,
                b.timeout,
                b.memory,
                b.max_attempts,
                b.backoff,
                b.backoff_max
            ),
            (
                7,
                Duration::from_secs(90),
                2 << 20,
                1,
                Duration::ZERO,
                Duration::from_secs(3600)
            )
        );
        assert_eq!(b.tools, ["text-tools", "search"]);
        assert_eq!(
            b.on_failure,
            Some(FeedbackLoop {
                send_back_to: "a".into(),
                max_loops: 3
            })
        );
        let limits = b.limits();
        assert_eq!(limits.fuel, Some(7));
        assert_eq!(limits.memory_bytes, 2 << 20);
        assert_eq!(limits.timeout, Duration::from_secs(90));
    }

    #[test]
    fn retry_delays_double_up_to_the_cap() {
        let mut step = toml(&one_step("backoff = \"1s\"\nbackoff_max = \"5s\""))
            .unwrap()
            .steps
            .remove(0);
        let delays: Vec<u64> = (0..6).map(|r| step.retry_delay(r).as_secs()).collect();
        assert_eq!(delays, [0, 1, 2, 4, 5, 5]);
        assert_eq!(step.retry_delay(u32::MAX), Duration::from_secs(5));
        step.backoff = Duration::ZERO;
        assert_eq!(step.retry_delay(3), Duration::ZERO);
    }

    #[test]
    fn named_plugins_parse() {
        let p = toml(&one_step("").replace("a.wasm", "csv-extract@1.2.0")).unwrap();
        assert_eq!(
            p.steps[0].plugin,
            PluginRef::Named {
                name: "csv-extract".into(),
                version: "1.2.0".into()
            }
        );
        assert_eq!(p.steps[0].plugin.to_string(), "csv-extract@1.2.0");
    }

    #[test]
    fn unknown_keys_are_errors_with_their_path_and_line() {
        let e = toml("name = \"p\"\ncolour = 1\n").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("colour"));
        assert_eq!(e.line, Some(2));
        assert!(
            e.to_string()
                .starts_with("line 2: colour: unknown field `colour`"),
            "{e}"
        );

        let text = one_step("colour = \"red\"");
        let e = toml(&text).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("steps[0].colour"));
        assert_eq!(e.line, Some(5), "{e}");
        assert!(e.to_string().contains("expected one of"), "{e}");

        assert_fails(
            toml(&with_table("[defaults]\nfule = 1", "")),
            "defaults.fule",
            "unknown field `fule`",
        );
        assert_fails(
            toml(&with_table("[budget]\ntime = \"1s\"", "")),
            "budget.time",
            "unknown field",
        );
        assert_fails(
            toml(&format!(
                "{}[[steps]]\nname = \"b\"\nplugin = \"b.wasm\"\non_failure = {{ send_back_to = \"a\", loops = 2 }}\n",
                one_step("")
            )),
            "steps[1].on_failure.loops",
            "unknown field `loops`",
        );
        assert_fails(
            parse_json(
                r#"{"name":"p","steps":[{"name":"a","plugin":"a@1","colour":1}]}"#,
                None,
            ),
            "steps[0].colour",
            "unknown field",
        );
    }

    #[test]
    fn toml_syntax_errors_keep_their_location() {
        let e = toml("name = \"p\"\n[[steps]\n").unwrap_err();
        assert_eq!(e.field, None);
        assert_eq!(e.line, Some(2));
        assert!(e.to_string().contains("TOML parse error at line 2"), "{e}");
    }

    #[test]
    fn missing_or_empty_names_and_steps_are_errors() {
        assert_fails(
            toml("[[steps]]\nname = \"a\"\nplugin = \"a.wasm\"\n"),
            "name",
            "required",
        );
        assert_fails(
            toml(&one_step("").replace("\"p\"", "\" \"")),
            "name",
            "empty",
        );
        assert_fails(toml("name = \"p\"\n"), "steps", "at least one step");
        assert_fails(
            parse_json(r#"{"name":"p","steps":[]}"#, None),
            "steps",
            "at least one step",
        );
        assert_fails(
            toml("name = \"p\"\n[[steps]]\nplugin = \"a.wasm\"\n"),
            "steps[0].name",
            "required",
        );
        assert_fails(
            toml("name = \"p\"\n[[steps]]\nname = \"a\"\n"),
            "steps[0].plugin",
            "required",
        );
        assert_fails(
            toml("name = 5\n"),
            "name",
            "invalid type: integer `5`, expected a string",
        );
        assert_fails(
            toml("name = \"p\"\nsteps = 3\n"),
            "steps",
            "expected a list",
        );
        assert_fails(
            toml("name = \"p\"\nsteps = [1]\n"),
            "steps[0]",
            "expected a step table",
        );
    }

    #[test]
    fn more_than_64_steps_are_refused() {
        let mut text = String::from("name = \"p\"\n");
        for i in 0..65 {
            text.push_str(&format!(
                "[[steps]]\nname = \"s{i}\"\nplugin = \"a.wasm\"\n"
            ));
        }
        assert_fails(toml(&text), "steps", "more than 64");
        let steps: Vec<String> = (0..100_000)
            .map(|i| format!(r#"{{"name":"s{i}","plugin":"a@1"}}"#))
            .collect();
        let json = format!(r#"{{"name":"p","steps":[{}]}}"#, steps.join(","));
        assert!(json.len() < MAX_DOCUMENT_BYTES * 4);
        let e = parse_json(&json, None).unwrap_err();
        assert!(e.to_string().contains("1 MiB"), "{e}");
        let steps: Vec<String> = (0..65)
            .map(|i| format!(r#"{{"name":"s{i}","plugin":"a@1"}}"#))
            .collect();
        let json = format!(r#"{{"name":"p","steps":[{}]}}"#, steps.join(","));
        assert_fails(parse_json(&json, None), "steps", "more than 64");
        // 64 is fine.
        let steps: Vec<String> = (0..64)
            .map(|i| format!(r#"{{"name":"s{i}","plugin":"a@1"}}"#))
            .collect();
        let json = format!(r#"{{"name":"p","steps":[{}]}}"#, steps.join(","));
        assert_eq!(parse_json(&json, None).unwrap().steps.len(), 64);
    }

    #[test]
    fn documents_over_1_mib_are_refused_before_parsing() {
        let big = format!("name = \"p\"\n#{}\n", "x".repeat(MAX_DOCUMENT_BYTES));
        let e = toml(&big).unwrap_err();
        assert!(e.to_string().contains("1 MiB"), "{e}");
        let big = format!("{{\"name\":\"{}\"}}", "x".repeat(MAX_DOCUMENT_BYTES));
        assert!(
            parse_json(&big, None)
                .unwrap_err()
                .to_string()
                .contains("1 MiB")
        );
    }

    #[test]
    fn step_names_must_be_valid_and_unique() {
        let two = |a: &str, b: &str| {
            format!(
                "name = \"p\"\n[[steps]]\nname = \"{a}\"\nplugin = \"a.wasm\"\n[[steps]]\nname = \"{b}\"\nplugin = \"b.wasm\"\n"
            )
        };
        assert_fails(
            toml(&two("a", "a")),
            "steps[1].name",
            "already the name of steps[0]",
        );
        for bad in ["Extract", "-a", "_a", "a b", "a.b", "", "é"] {
            assert_fails(
                toml(&two("ok", bad)),
                "steps[1].name",
                "not a valid step name",
            );
        }
        let long = "a".repeat(64);
        assert_fails(
            toml(&two("ok", &long)),
            "steps[1].name",
            "not a valid step name",
        );
        assert!(toml(&two("0-a_b", &"a".repeat(63))).is_ok());
    }

    #[test]
    fn feedback_loops_must_go_back_to_an_earlier_step() {
        let three = |on_failure: &str| {
            format!(
                "name = \"p\"\n\
                 [[steps]]\nname = \"planner\"\nplugin = \"a.wasm\"\n\
                 [[steps]]\nname = \"developer\"\nplugin = \"a.wasm\"\n\
                 [[steps]]\nname = \"tester\"\nplugin = \"a.wasm\"\non_failure = {on_failure}\n\
                 [[steps]]\nname = \"approver\"\nplugin = \"a.wasm\"\n"
            )
        };
        let ok = toml(&three("{ send_back_to = \"developer\", max_loops = 20 }")).unwrap();
        assert_eq!(
            ok.steps[2].on_failure,
            Some(FeedbackLoop {
                send_back_to: "developer".into(),
                max_loops: 20
            })
        );
        let field = "steps[2].on_failure.send_back_to";
        let e = toml(&three("{ send_back_to = \"approver\" }")).unwrap_err();
        assert_eq!(e.line, Some(11), "{e}");
        let text = e.to_string();
        assert!(
            text.contains(field) && text.contains("later step"),
            "{text}"
        );
        assert!(
            text.contains("earlier steps: `planner`, `developer`"),
            "{text}"
        );
        assert_fails(
            toml(&three("{ send_back_to = \"tester\" }")),
            field,
            "itself",
        );
        assert_fails(
            toml(&three("{ send_back_to = \"qa\" }")),
            field,
            "no step is named `qa`; earlier steps: `planner`, `developer`",
        );
        assert_fails(toml(&three("{ max_loops = 2 }")), field, "required");
        assert_fails(
            toml(&one_step("on_failure = { send_back_to = \"a\" }")),
            "steps[0].on_failure.send_back_to",
            "no earlier steps",
        );
        let loops = "steps[2].on_failure.max_loops";
        assert_fails(
            toml(&three("{ send_back_to = \"planner\", max_loops = 0 }")),
            loops,
            "between 1 and 20",
        );
        assert_fails(
            toml(&three("{ send_back_to = \"planner\", max_loops = 21 }")),
            loops,
            "got 21",
        );
        assert_fails(
            toml(&three("\"planner\"")),
            "steps[2].on_failure",
            "expected a table",
        );
    }

    #[test]
    fn limits_are_range_checked_where_they_are_written() {
        let cases = [
            ("max_attempts = 0", "max_attempts", "at least 1"),
            ("max_attempts = 21", "max_attempts", "at most 20"),
            ("max_attempts = -1", "max_attempts", "invalid value"),
            ("fuel = 0", "fuel", "at least 1"),
            (
                "fuel = 10_000_000_000_001",
                "fuel",
                "at most 10000000000000",
            ),
            ("fuel = -5", "fuel", "invalid value: integer `-5`"),
            ("fuel = \"lots\"", "fuel", "invalid type"),
            ("timeout = \"0s\"", "timeout", "more than 0"),
            ("timeout = \"25h\"", "timeout", "at most 1day"),
            ("timeout = \"soon\"", "timeout", "`soon` is not a duration"),
            ("timeout = 30", "timeout", "expected a duration"),
            ("memory = \"1000KB\"", "memory", "at least 1MiB"),
            ("memory = \"5GiB\"", "memory", "at most 4GiB"),
            ("memory = \"lots\"", "memory", "`lots` is not a size"),
            ("memory = -1", "memory", "negative"),
            ("backoff = \"2h\"", "backoff", "at most 1h"),
            ("backoff_max = \"61m\"", "backoff_max", "at most 1h"),
        ];
        for (line, key, phrase) in cases {
            assert_fails(toml(&one_step(line)), &format!("steps[0].{key}"), phrase);
            assert_fails(
                toml(&with_table(&format!("[defaults]\n{line}"), "")),
                &format!("defaults.{key}"),
                phrase,
            );
        }
        // A good override does not hide a bad default.
        assert_fails(
            toml(&with_table(
                "[defaults]\nmemory = \"1KiB\"",
                "memory = \"8MiB\"",
            )),
            "defaults.memory",
            "at least 1MiB",
        );
        assert!(
            toml(&one_step(
                "memory = \"4GiB\"\nfuel = 10_000_000_000_000\ntimeout = \"24h\""
            ))
            .is_ok()
        );
    }

    #[test]
    fn run_budgets_are_checked() {
        assert_fails(
            toml(&with_table("[budget]\ntimeout = \"0s\"", "")),
            "budget.timeout",
            "more than 0",
        );
        assert_fails(
            toml(&with_table("[budget]\nfuel = 0", "")),
            "budget.fuel",
            "at least 1",
        );
        assert_fails(
            toml(&with_table("[budget]\ntimeout = \"8days\"", "")),
            "budget.timeout",
            "at most 7days",
        );
        let p = toml(&with_table("[budget]\nfuel = 9", "")).unwrap();
        assert_eq!(
            p.budget,
            RunBudget {
                fuel: Some(9),
                timeout: Duration::from_secs(3600)
            }
        );
    }

    #[test]
    fn negative_fuel_in_json_names_the_field() {
        let json = r#"{"name":"p","steps":[{"name":"a","plugin":"a@1","fuel":-1}]}"#;
        assert_fails(
            parse_json(json, None),
            "steps[0].fuel",
            "invalid value: integer `-1`",
        );
        let json = r#"{"name":"p","budget":{"fuel":-1},"steps":[{"name":"a","plugin":"a@1"}]}"#;
        assert_fails(parse_json(json, None), "budget.fuel", "invalid value");
        let json = r#"{"name":"p","steps":[{"name":"a","plugin":"a@1","fuel":1.5}]}"#;
        assert_fails(parse_json(json, None), "steps[0].fuel", "invalid type");
    }

    #[test]
    fn configs_plugins_and_tools_are_checked() {
        assert_fails(
            toml(&one_step("config = 3")),
            "steps[0].config",
            "must be a table",
        );
        assert_fails(
            toml(&one_step("config = [1]")),
            "steps[0].config",
            "not an array",
        );
        assert_fails(
            parse_json(
                r#"{"name":"p","steps":[{"name":"a","plugin":"a@1","config":"x"}]}"#,
                None,
            ),
            "steps[0].config",
            "must be a table",
        );
        let plugin = |p: &str| {
            toml(&format!(
                "name = \"p\"\n[[steps]]\nname = \"a\"\nplugin = \"{p}\"\n"
            ))
        };
        assert_fails(plugin(""), "steps[0].plugin", "must not be empty");
        assert_fails(plugin("  "), "steps[0].plugin", "must not be empty");
        assert_fails(
            plugin("@1.0"),
            "steps[0].plugin",
            "name before `@` is empty",
        );
        assert_fails(
            plugin("echo@"),
            "steps[0].plugin",
            "version after `@` is empty",
        );
        assert_fails(plugin("echo@1@2"), "steps[0].plugin", "not `name@version`");
        assert_fails(
            toml("name = \"p\"\n[[steps]]\nname = \"a\"\nplugin = 3\n"),
            "steps[0].plugin",
            "invalid type: integer `3`, expected a string",
        );
        assert_fails(
            toml(&one_step("tools = [\"a\", \"\"]")),
            "steps[0].tools[1]",
            "must not be empty",
        );
        assert_fails(
            toml(&one_step("tools = [\"a\", \"b\", \"a\"]")),
            "steps[0].tools[2]",
            "`a` is listed twice (also tools[0])",
        );
        assert_fails(
            toml(&one_step("tools = [\"a\", 2]")),
            "steps[0].tools[1]",
            "invalid type",
        );
        let tools: Vec<String> = (0..65).map(|i| format!("\"t{i}\"")).collect();
        let json = format!(
            r#"{{"name":"p","steps":[{{"name":"a","plugin":"a@1","tools":[{}]}}]}}"#,
            tools.join(",")
        );
        assert_fails(parse_json(&json, None), "steps[0].tools", "more than 64");
    }

    #[test]
    fn path_plugins_need_a_base_directory() {
        let json = r#"{"name":"p","steps":[{"name":"a","plugin":"x/a.wasm"}]}"#;
        assert_fails(parse_json(json, None), "steps[0].plugin", "`name@version`");
        let json = r#"{"name":"p","steps":[{"name":"a","plugin":"/abs/a.wasm"}]}"#;
        assert_fails(parse_json(json, None), "steps[0].plugin", "is a file path");
        let p = parse_json(json, Some(Path::new("/elsewhere"))).unwrap();
        assert_eq!(
            p.steps[0].plugin,
            PluginRef::Path(PathBuf::from("/abs/a.wasm"))
        );
    }

    #[test]
    fn invalid_json_is_reported_with_its_line() {
        let e = parse_json("{\n\"name\": }", None).unwrap_err();
        assert_eq!(e.line, Some(2));
        assert!(e.to_string().contains("invalid JSON"), "{e}");
        let e = parse_json("[1]", None).unwrap_err();
        assert_eq!(e.field, None);
        assert!(e.to_string().contains("expected a pipeline table"), "{e}");
    }

    #[test]
    fn toml_and_json_give_the_same_pipeline() {
        let text = r#"
            name = "same"
            description = "both ways"
            [tools]
            text-tools = "text-tools@0.1.0"
            [defaults]
            memory = "16MiB"
            backoff_max = "10s"
            [budget]
            fuel = 1_000_000
            [[steps]]
            name = "first"
            plugin = "plugins/first.wasm"
            config = { n = 1, x = 1.5, list = ["a", true], nested = { deep = -3 } }
            [[steps]]
            name = "second"
            plugin = "second@0.1.0"
            tools = ["text-tools"]
            timeout = "1m"
            on_failure = { send_back_to = "first", max_loops = 2 }
        "#;
        let json = r#"{
            "name": "same",
            "description": "both ways",
            "tools": { "text-tools": "text-tools@0.1.0" },
            "defaults": { "memory": 16777216, "backoff_max": "10s" },
            "budget": { "fuel": 1000000 },
            "steps": [
                { "name": "first", "plugin": "plugins/first.wasm",
                  "config": { "n": 1, "x": 1.5, "list": ["a", true], "nested": { "deep": -3 } } },
                { "name": "second", "plugin": "second@0.1.0", "tools": ["text-tools"],
                  "timeout": "60s", "on_failure": { "send_back_to": "first", "max_loops": 2 } }
            ]
        }"#;
        let base = Path::new("/pipelines");
        let from_toml = parse_toml(text, base).unwrap();
        let from_json = parse_json(json, Some(base)).unwrap();
        assert_eq!(from_toml, from_json);
        assert_eq!(from_toml.steps[0].memory, 16 << 20);
    }

    #[test]
    fn pipelines_round_trip_through_json() {
        let text = r#"
            name = "rt"
            [tools]
            t = "t@1"
            [budget]
            timeout = "1h 2m 3s 4ms"
            [[steps]]
            name = "a"
            plugin = "a.wasm"
            timeout = "1500ms"
            backoff = "0s"
            config = { k = "v" }
            [[steps]]
            name = "b"
            plugin = "b@2"
            tools = ["t"]
            on_failure = { send_back_to = "a" }
        "#;
        let pipeline = toml(text).unwrap();
        let json = serde_json::to_string_pretty(&pipeline).unwrap();
        assert!(json.contains(r#""timeout": "1s 500ms""#), "{json}");
        assert!(json.contains(r#""plugin": "b@2""#), "{json}");
        let back = parse_json(&json, Some(Path::new("/somewhere/else"))).unwrap();
        assert_eq!(back, pipeline);

        // Named-only pipelines round-trip without a base directory (the API case).
        let named = toml(&one_step("").replace("a.wasm", "a@1")).unwrap();
        let json = serde_json::to_string(&named).unwrap();
        assert!(
            !json.contains("description") && !json.contains("on_failure"),
            "{json}"
        );
        assert_eq!(parse_json(&json, None).unwrap(), named);
    }

    #[test]
    fn file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.toml");
        let e = load_file(&missing).unwrap_err();
        assert_eq!(e.file.as_deref(), Some(missing.as_path()));
        assert!(
            e.to_string().starts_with(&missing.display().to_string()),
            "{e}"
        );
        assert!(e.to_string().contains("cannot read"), "{e}");

        let file = dir.path().join("p.toml");
        std::fs::write(&file, one_step("colour = 1")).unwrap();
        let e = load_file(&file).unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("{}:5: steps[0].colour: ", file.display())),
            "{e}"
        );

        std::fs::write(&file, one_step("")).unwrap();
        let p = load_file(&file).unwrap();
        let dir_real = std::fs::canonicalize(dir.path()).unwrap();
        assert_eq!(
            p.steps[0].plugin,
            PluginRef::Path(resolved(dir_real.join("a.wasm")))
        );

        let json = dir.path().join("p.json");
        std::fs::write(
            &json,
            r#"{"name":"p","steps":[{"name":"a","plugin":"a.wasm"}]}"#,
        )
        .unwrap();
        assert_eq!(load_file(&json).unwrap().steps[0].plugin, p.steps[0].plugin);

        assert!(
            load_file(dir.path())
                .unwrap_err()
                .to_string()
                .contains("not a file")
        );
    }

    #[tokio::test]
    async fn plugins_load_before_anything_runs() {
        let scratch = tempfile::tempdir().unwrap();
        let engine = Engine::new(crate::engine::EngineConfig {
            scratch_root: scratch.path().to_path_buf(),
            max_concurrent: 4,
            ..Default::default()
        })
        .unwrap();
        let plugins = plugins_dir();
        let echo = plugins.join("echo.wasm");
        let text_tools = plugins.join("text_tools.wasm");
        let garbage = scratch.path().join("garbage.wasm");
        std::fs::write(&garbage, b"this is not wasm at all").unwrap();
        let pipeline = |plugins: &[&Path]| {
            let mut text = String::from("name = \"p\"\n");
            for (i, plugin) in plugins.iter().enumerate() {
                text.push_str(&format!(
                    "[[steps]]\nname = \"s{i}\"\nplugin = {:?}\n",
                    plugin.display().to_string()
                ));
            }
            parse_toml(&text, scratch.path()).unwrap()
        };

        let loaded = pipeline(&[&echo, &echo])
            .load_plugins(&engine, None)
            .await
            .unwrap();
        assert_eq!(loaded.len(), 2);
        assert!(loaded.iter().all(|p| p.world == World::Agent));

        let e = pipeline(&[&echo, &text_tools])
            .load_plugins(&engine, None)
            .await
            .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("steps[1].plugin"));
        assert!(
            e.to_string().contains(
                "step `s1`: steps must be agents or connectors; `text_tools.wasm` is a tool-plugin"
            ),
            "{e}"
        );

        let e = pipeline(&[&garbage])
            .load_plugins(&engine, None)
            .await
            .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("steps[0].plugin"));
        assert!(e.to_string().contains("step `s0`"), "{e}");
        assert!(
            e.to_string()
                .contains("INVALID_COMPONENT: not a WebAssembly binary"),
            "{e}"
        );

        let missing = scratch.path().join("missing.wasm");
        let e = pipeline(&[&echo, &missing])
            .load_plugins(&engine, None)
            .await
            .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("steps[1].plugin"));
        assert!(
            e.to_string().contains("INVALID_COMPONENT: cannot read"),
            "{e}"
        );

        let named = parse_json(
            r#"{"name":"p","steps":[{"name":"a","plugin":"echo@1.0"}]}"#,
            None,
        )
        .unwrap();
        let e = named.load_plugins(&engine, None).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "steps[0].plugin: registered plugins (`name@version`) need a server with a plugin \
             registry; use a path"
        );
    }
}
