//! Pipelines as data: the TOML (or JSON) document that names a run's steps, the plugin
//! each step runs, its config, tools, feedback loop and budgets.
//!
//! ```toml
//! name = "etl-demo"
//! description = "optional text"
//! [defaults]                  # all optional; these are the defaults
//! fuel = 2_000_000_000        # per step attempt
//! tokens = 20_000             # model tokens per step attempt (absent: unlimited)
//! timeout = "30s"             # per step attempt, wall clock
//! memory = "64MiB"            # or a number of bytes
//! max_attempts = 3
//! backoff = "1s"              # first retry delay; doubles each retry
//! backoff_max = "60s"         # cap on the delay
//! [budget]                    # whole run; absent = unlimited fuel, timeout "1h"
//! fuel = 10_000_000_000
//! tokens = 100_000            # model tokens for the whole run (absent: unlimited)
//! timeout = "10m"
//! [[steps]]
//! name = "extract"
//! plugin = "../target/plugins/csv_extract.wasm"  # relative to the file, or `name@version`
//! config = { delimiter = "," }                   # any table, handed to the agent as JSON
//! fuel = 1_000_000_000                           # per-step overrides of any [defaults] key
//! tools = ["text-tools"]                         # tools this step may call (from [tools])
//! on_failure = { send_back_to = "developer", max_loops = 3 }
//! http = ["api.example.com"]                     # keep only these of its manifest's hosts
//! models = ["fast"]                              # keep only these of its model grants
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
//! and, for TOML, the line it is on; so do the errors found when its plugins are loaded
//! and their grants checked.
//!
//! A [`Pipeline`] serializes to the JSON form of the same document (defaults already
//! merged into each step, durations as humantime strings such as `"1m 30s"`, memory in
//! bytes), which [`parse_json`] reads back unchanged.
//!
//! The parts, in the order a document goes through them: `parse` (the entry points:
//! size limit, TOML or JSON, then the raw model through `serde_path_to_error`),
//! `toml_spans` (TOML to the JSON model, remembering each field's line), `raw` (the serde
//! model both formats share), `validate` (raw model to [`Pipeline`]), `location` (field
//! paths, lines, and the errors that carry them) and `load` (loading plugins and checking
//! grants, whose errors still point at the pipeline's text).

mod load;
mod location;
mod parse;
mod raw;
mod schema;
mod toml_spans;
mod validate;

pub use load::{LoadedTool, Registry, tool_manifest};
pub use parse::{load_file, parse_json, parse_toml, registered_plugin};
pub use schema::PipelineDocument;

use crate::engine::Limits;
use location::Origin;
use serde::{Serialize, Serializer};
use serde_json::Value;
use std::fmt;
use std::path::{Path, PathBuf};
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
    /// Where it was written, so that errors found after parsing (a plugin file that does
    /// not load, a missing grant) still name the file and line. Not part of the document.
    #[serde(skip)]
    origin: Origin,
}

impl Pipeline {
    /// An error about `field` (e.g. `steps[0].plugin`), naming the pipeline's file and the
    /// field's line when the pipeline was read from one.
    pub fn field_error(&self, field: &str, message: impl Into<String>) -> PipelineError {
        self.origin.error(field, message)
    }
}

/// Budgets for a whole run, across all steps, attempts and loops.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunBudget {
    /// Total fuel; `None` means unlimited (each attempt is still metered).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    /// Total model tokens (input plus output, every call of every step); `None`:
    /// unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    /// Wall-clock limit for the run (default 1h). Serialized as a humantime string.
    #[serde(serialize_with = "serialize_duration")]
    pub timeout: Duration,
}

impl Default for RunBudget {
    fn default() -> Self {
        RunBudget {
            fuel: None,
            tokens: None,
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
    /// The model aliases of its plugin's `[grants] models` this step keeps (`None`: all
    /// of them). A step can only narrow what the manifest grants.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
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
    /// Model tokens per attempt (input plus output); `None`: unlimited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
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

/// Why a pipeline was refused. `Display` reads like a compiler diagnostic,
/// `file:line: field: message`, e.g.
/// `pipeline.toml:23: steps[0].colour: unknown field `colour`, expected one of ...`
/// (without a file: `line 23: steps[0].colour: ...`). Syntax errors have no field and
/// keep the parser's own located message.
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

    fn in_file(mut self, file: &Path) -> Self {
        self.file = Some(file.to_path_buf());
        self
    }
}

impl fmt::Display for PipelineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.line) {
            (Some(file), Some(line)) => write!(f, "{}:{line}: ", file.display())?,
            (Some(file), None) => write!(f, "{}: ", file.display())?,
            // Without a file, a syntax error's message already says where it is.
            (None, Some(line)) if self.field.is_some() => write!(f, "line {line}: ")?,
            (None, _) => {}
        }
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)
    }
}

fn serialize_duration<S: Serializer>(
    duration: &Duration,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_duration(*duration))
}

#[cfg(test)]
pub(super) mod testing {
    //! Helpers for this module's tests.
    use super::*;

    pub(super) fn host_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    pub(super) fn plugins_dir() -> PathBuf {
        host_dir().join("../target/plugins")
    }

    /// What `resolve` makes of an existing or missing file.
    pub(super) fn resolved(path: PathBuf) -> PathBuf {
        std::fs::canonicalize(&path).unwrap_or(path)
    }

    pub(super) fn toml(text: &str) -> Result<Pipeline, PipelineError> {
        parse_toml(text, Path::new("/pipelines"))
    }

    /// A minimal pipeline with `extra` appended to its only step.
    pub(super) fn one_step(extra: &str) -> String {
        format!("name = \"p\"\n[[steps]]\nname = \"a\"\nplugin = \"a.wasm\"\n{extra}\n")
    }

    /// A minimal pipeline with `table` (e.g. a `[defaults]` table) before its only step,
    /// and `extra` appended to the step.
    pub(super) fn with_table(table: &str, extra: &str) -> String {
        format!("name = \"p\"\n{table}\n[[steps]]\nname = \"a\"\nplugin = \"a.wasm\"\n{extra}\n")
    }

    /// Asserts that `result` failed on `field` with a message containing `phrase`.
    #[track_caller]
    pub(super) fn assert_fails(result: Result<Pipeline, PipelineError>, field: &str, phrase: &str) {
        let error = result.unwrap_err();
        let text = error.to_string();
        assert_eq!(error.field.as_deref(), Some(field), "{text}");
        assert!(text.contains(&format!("{field}: ")), "{text}");
        assert!(text.contains(phrase), "expected {phrase:?} in {text:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

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
}
