//! # corral-sdk: write Corral plugins in Rust
//!
//! A Corral plugin is a WebAssembly component that implements one of the worlds in
//! Corral's WIT contract (`wit/` in the Corral repository): an **agent** (a pipeline
//! step), a **tool** (functions agents can call) or a **connector** (records in and out
//! of an outside system). This crate hides the component plumbing: you implement a plain
//! trait with serde types of your choosing and call one export macro.
//!
//! A complete agent (this is `plugins/echo` in the Corral repository, minus comments):
//!
//! ```no_run
//! use corral_sdk::{Agent, Context, Info, Result};
//! use serde_json::Value;
//!
//! struct Echo;
//!
//! impl Agent for Echo {
//!     type Input = Value;
//!     type Output = Value;
//!
//!     fn info() -> Info {
//!         Info::new("echo", env!("CARGO_PKG_VERSION"), "Returns its input unchanged.")
//!     }
//!
//!     fn run(ctx: Context, input: Value) -> Result<Value> {
//!         corral_sdk::progress(50, "echoing");
//!         corral_sdk::info(&format!("step {} attempt {}", ctx.step, ctx.attempt));
//!         corral_sdk::progress(100, "done");
//!         Ok(input)
//!     }
//! }
//!
//! corral_sdk::export_agent!(Echo);
//! ```
//!
//! With `crate-type = ["cdylib"]` in its `Cargo.toml`,
//! `cargo build --release --target wasm32-wasip2` turns the crate into a component that
//! `corral call target/wasm32-wasip2/release/echo.wasm --input '{"hi":1}'` runs.
//! No `cargo component`, no `unsafe`, no generated code to check in.
//!
//! Inputs and outputs are any `serde` types: the host hands the agent JSON text, the SDK
//! deserializes it into `Agent::Input` (a parse failure becomes
//! [`Error::InvalidInput`] naming the problem) and serializes `Agent::Output` back.
//!
//! ## What a plugin may do
//! Everything a plugin reaches goes through the host and is deny-by-default: logging and
//! progress always work; [`call_tool`], [`put_artifact`], [`ask`], [`state`] and
//! [`model()`] (language models, see [`mod@model`]) work when
//! the host grants them and otherwise fail with [`Error::Permanent`] naming the missing
//! grant. Plugins have no network, no environment variables and no files outside the
//! scratch directory `/work`, which is empty at the start of each call and private to it.
#![deny(missing_docs)]

// The generated bindings name this crate by its absolute path, from inside and outside.
extern crate self as corral_sdk;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

#[doc(hidden)]
#[allow(missing_docs, unsafe_code, clippy::all)]
pub mod __bindings {
    //! Generated bindings for the three plugin worlds. The host and types interfaces are
    //! generated once (with the agent world) and shared by the other two.
    pub use wit_bindgen;

    pub mod agent {
        wit_bindgen::generate!({
            path: "../wit",
            world: "agent-plugin",
            pub_export_macro: true,
            export_macro_name: "__export_agent_world",
            default_bindings_module: "::corral_sdk::__bindings::agent",
            runtime_path: "::corral_sdk::__bindings::wit_bindgen::rt",
        });
    }

    pub mod tool {
        wit_bindgen::generate!({
            path: "../wit",
            world: "tool-plugin",
            pub_export_macro: true,
            export_macro_name: "__export_tool_world",
            default_bindings_module: "::corral_sdk::__bindings::tool",
            runtime_path: "::corral_sdk::__bindings::wit_bindgen::rt",
            with: {
                "corral:plugin/types@0.2.0": super::agent::corral::plugin::types,
                "corral:plugin/host@0.2.0": super::agent::corral::plugin::host,
                "corral:plugin/model@0.2.0": super::agent::corral::plugin::model,
            },
        });
    }

    pub mod connector {
        wit_bindgen::generate!({
            path: "../wit",
            world: "connector-plugin",
            pub_export_macro: true,
            export_macro_name: "__export_connector_world",
            default_bindings_module: "::corral_sdk::__bindings::connector",
            runtime_path: "::corral_sdk::__bindings::wit_bindgen::rt",
            with: {
                "corral:plugin/types@0.2.0": super::agent::corral::plugin::types,
                "corral:plugin/host@0.2.0": super::agent::corral::plugin::host,
                "corral:plugin/model@0.2.0": super::agent::corral::plugin::model,
            },
        });
    }

    pub use agent::corral::plugin::host;
    pub use agent::corral::plugin::model;
    pub use agent::corral::plugin::types;
}

use __bindings::host as wit_host;
use __bindings::types as wit_types;

/// The result type of every plugin function.
pub type Result<T> = std::result::Result<T, Error>;

/// Why a plugin call failed. The variant decides what the host does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// May succeed if tried again (a timeout, a rate limit): the host retries the step
    /// with backoff, up to its `max_attempts`.
    Transient(String),
    /// Will fail again on retry: never retried. A step with a feedback loop sends it back
    /// to an earlier step.
    Permanent(String),
    /// The input or arguments were not acceptable: never retried.
    InvalidInput(String),
}

impl Error {
    /// A failure worth retrying.
    pub fn transient(message: impl Into<String>) -> Self {
        Error::Transient(message.into())
    }

    /// A failure not worth retrying.
    pub fn permanent(message: impl Into<String>) -> Self {
        Error::Permanent(message.into())
    }

    /// The input was not acceptable.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Error::InvalidInput(message.into())
    }

    /// Attaches structured detail to the failure (e.g. failing test cases), for a
    /// feedback loop: the step this failure is sent back to receives it as
    /// `ctx.feedback.detail`. On the wire the message becomes a JSON object
    /// `{"message": ..., "detail": ...}`, which the host unpacks.
    pub fn with_detail(self, detail: Value) -> Self {
        let wrap = |m: String| serde_json::json!({ "message": m, "detail": detail }).to_string();
        match self {
            Error::Transient(m) => Error::Transient(wrap(m)),
            Error::Permanent(m) => Error::Permanent(wrap(m)),
            Error::InvalidInput(m) => Error::InvalidInput(wrap(m)),
        }
    }

    /// The failure's message, whatever its kind.
    pub fn message(&self) -> &str {
        match self {
            Error::Transient(m) | Error::Permanent(m) | Error::InvalidInput(m) => m,
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Error::Transient(_) => "transient",
            Error::Permanent(_) => "permanent",
            Error::InvalidInput(_) => "invalid input",
        };
        write!(f, "{kind}: {}", self.message())
    }
}

impl std::error::Error for Error {}

impl From<wit_types::PluginError> for Error {
    fn from(e: wit_types::PluginError) -> Self {
        match e {
            wit_types::PluginError::Transient(m) => Error::Transient(m),
            wit_types::PluginError::Permanent(m) => Error::Permanent(m),
            wit_types::PluginError::InvalidInput(m) => Error::InvalidInput(m),
        }
    }
}

impl From<Error> for wit_types::PluginError {
    fn from(e: Error) -> Self {
        match e {
            Error::Transient(m) => wit_types::PluginError::Transient(m),
            Error::Permanent(m) => wit_types::PluginError::Permanent(m),
            Error::InvalidInput(m) => wit_types::PluginError::InvalidInput(m),
        }
    }
}

/// What the host tells an agent about the call it is making.
#[derive(Debug, Clone)]
pub struct Context {
    /// The id of the run this call belongs to.
    pub run_id: String,
    /// The name of the pipeline step being executed.
    pub step: String,
    /// 1 for the first attempt of this step, 2 for the first retry, ...
    pub attempt: u32,
    /// The step's `config` from the pipeline (`{}` when none was given).
    pub config: Value,
    /// Set when a later step sent its failure back to this one (a feedback loop).
    pub feedback: Option<Value>,
}

impl Context {
    /// Deserializes the step's `config` into a type of your choosing.
    /// A mismatch is an [`Error::InvalidInput`] naming the problem.
    pub fn config<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_value(self.config.clone())
            .map_err(|e| Error::invalid_input(format!("step config: {e}")))
    }
}

/// What an agent says about itself.
#[derive(Debug, Clone, Default)]
pub struct Info {
    /// A short machine-friendly name, e.g. `csv-extract`.
    pub name: String,
    /// A semantic version, e.g. `1.2.0`.
    pub version: String,
    /// One or two sentences for people.
    pub description: String,
    /// An optional JSON Schema for the input.
    pub input_schema: Option<Value>,
    /// An optional JSON Schema for the output.
    pub output_schema: Option<Value>,
}

impl Info {
    /// Name, version and description; schemas can be added with the builder methods.
    pub fn new(
        name: impl Into<String>,
        version: impl Into<String>,
        description: impl Into<String>,
    ) -> Self {
        Info {
            name: name.into(),
            version: version.into(),
            description: description.into(),
            input_schema: None,
            output_schema: None,
        }
    }

    /// Declares the JSON Schema the input follows.
    pub fn input_schema(mut self, schema: Value) -> Self {
        self.input_schema = Some(schema);
        self
    }

    /// Declares the JSON Schema the output follows.
    pub fn output_schema(mut self, schema: Value) -> Self {
        self.output_schema = Some(schema);
        self
    }
}

/// An agent: one step of a pipeline. Export it with [`export_agent!`].
pub trait Agent {
    /// The input type, deserialized from the previous step's JSON output.
    type Input: DeserializeOwned;
    /// The output type, serialized to JSON for the next step.
    type Output: Serialize;

    /// Describes the agent. Must be cheap and must not call the host.
    fn info() -> Info;

    /// Does the agent's work.
    fn run(ctx: Context, input: Self::Input) -> Result<Self::Output>;
}

/// One tool, in the Model Context Protocol's shape.
#[derive(Debug, Clone)]
pub struct ToolSpec {
    /// The tool's name, unique within the plugin.
    pub name: String,
    /// What the tool does.
    pub description: String,
    /// A JSON Schema (an object schema) for the arguments.
    pub input_schema: Value,
}

impl ToolSpec {
    /// A tool spec from its parts.
    pub fn new(
        name: impl Into<String>,
        description: impl Into<String>,
        input_schema: Value,
    ) -> Self {
        ToolSpec {
            name: name.into(),
            description: description.into(),
            input_schema,
        }
    }
}

/// A tool plugin: a set of functions agents can call. Export it with [`export_tools!`].
pub trait Tools {
    /// The tools this plugin provides.
    fn tools() -> Vec<ToolSpec>;

    /// Calls the tool `name`. The host has already checked `arguments` against the
    /// tool's schema; use [`parse_arguments`] to turn them into a typed struct.
    fn call(name: &str, arguments: Value) -> Result<Value>;
}

/// Deserializes tool arguments into a type, mapping a mismatch to [`Error::InvalidInput`].
pub fn parse_arguments<T: DeserializeOwned>(arguments: Value) -> Result<T> {
    serde_json::from_value(arguments).map_err(|e| Error::invalid_input(format!("arguments: {e}")))
}

/// What a connector says about itself.
#[derive(Debug, Clone)]
pub struct ConnectorInfo {
    /// A short machine-friendly name.
    pub name: String,
    /// A semantic version.
    pub version: String,
    /// One or two sentences for people.
    pub description: String,
}

/// One page of records read by a connector.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// The records.
    pub items: Vec<Value>,
    /// Where the next page starts; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// A verified webhook delivery.
#[derive(Debug, Clone)]
pub struct WebhookRequest {
    /// Header names (lower case) and values.
    pub headers: Vec<(String, String)>,
    /// The raw body.
    pub body: Vec<u8>,
}

/// A connector plugin. Export it with [`export_connector!`]. `push` and
/// `handle_webhook` default to refusing, for connectors that only read.
pub trait Connector {
    /// Describes the connector.
    fn info() -> ConnectorInfo;

    /// Reads one page of records.
    fn pull(query: Value, cursor: Option<String>) -> Result<Page>;

    /// Writes records and returns how many were accepted.
    fn push(items: Vec<Value>) -> Result<u32> {
        let _ = items;
        Err(Error::permanent("this connector does not support push"))
    }

    /// Turns a verified webhook delivery into records.
    fn handle_webhook(request: WebhookRequest) -> Result<Vec<Value>> {
        let _ = request;
        Err(Error::permanent("this connector does not handle webhooks"))
    }
}

// ---- host functions ----

/// The severity of a log line.
pub use wit_types::Level;

/// Writes a log line to the run's log.
pub fn log(level: Level, message: &str) {
    wit_host::log(level, message);
}

/// Logs at `debug` level.
pub fn debug(message: &str) {
    log(Level::Debug, message);
}

/// Logs at `info` level.
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// Logs at `warn` level.
pub fn warn(message: &str) {
    log(Level::Warn, message);
}

/// Logs at `error` level.
pub fn error(message: &str) {
    log(Level::Error, message);
}

/// Reports progress of the current step, 0 to 100.
pub fn progress(percent: u8, label: &str) {
    wit_host::progress(percent.min(100), label);
}

/// Calls a tool granted to this step and deserializes its result.
pub fn call_tool<A: Serialize, R: DeserializeOwned>(name: &str, arguments: &A) -> Result<R> {
    let args = serde_json::to_string(arguments)
        .map_err(|e| Error::invalid_input(format!("tool arguments: {e}")))?;
    let out = wit_host::call_tool(name, &args)?;
    serde_json::from_str(&out).map_err(|e| Error::permanent(format!("tool {name} result: {e}")))
}

/// Stores an artifact for the run and returns its id.
pub fn put_artifact(name: &str, media_type: &str, content: &[u8]) -> Result<String> {
    Ok(wit_host::put_artifact(name, media_type, content)?)
}

/// Asks a person a question and waits for an answer that matches `answer_schema`.
pub fn ask<R: DeserializeOwned>(question: &str, answer_schema: Option<&Value>) -> Result<R> {
    let schema = answer_schema.map(Value::to_string);
    let answer = wit_host::ask(question, schema.as_deref())?;
    serde_json::from_str(&answer).map_err(|e| Error::permanent(format!("answer: {e}")))
}

/// Waits until webhook `name` (of this tenant) receives a delivery, and returns
/// `{"items": [...], "webhook": {"id", "name", "deliveries"}}`: the connector's items.
/// The wait is durable like [`ask`]'s (the step's clock pauses, and the run survives
/// restarts).
pub fn wait_for_webhook<R: DeserializeOwned>(name: &str) -> Result<R> {
    ask(&format!("webhook:{name}"), None)
}

/// The config of a connector step (a connector's exports take none: the host hands it
/// over under the reserved state key `corral.config`).
pub fn connector_config<T: DeserializeOwned>() -> Result<T> {
    match wit_host::state_get("corral.config") {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| Error::invalid_input(format!("the step's config: {e}"))),
        None => Err(Error::permanent(
            "no step config: a connector gets one when it runs as a pipeline step",
        )),
    }
}

#[cfg(feature = "http")]
pub mod http;

pub mod model;

/// The model the operator maps to `alias` (`fast`, `smart`), for [`model::Model::chat`].
/// See [`mod@model`] for grants, budgets, the cache and the bounds of a request.
pub fn model(alias: &str) -> model::Model {
    model::Model::new(alias)
}

/// Per-run state shared by all steps of a run.
pub mod state {
    use super::{Error, Result, wit_host};
    use serde::Serialize;
    use serde::de::DeserializeOwned;

    /// Reads raw bytes; `None` if the key is unset.
    pub fn get(key: &str) -> Option<Vec<u8>> {
        wit_host::state_get(key)
    }

    /// Writes raw bytes.
    pub fn set(key: &str, value: &[u8]) -> Result<()> {
        Ok(wit_host::state_set(key, value)?)
    }

    /// Reads and deserializes a JSON value; `Ok(None)` if the key is unset.
    pub fn get_json<T: DeserializeOwned>(key: &str) -> Result<Option<T>> {
        match get(key) {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::permanent(format!("state {key}: {e}"))),
        }
    }

    /// Serializes a value as JSON and writes it.
    pub fn set_json<T: Serialize>(key: &str, value: &T) -> Result<()> {
        let bytes = serde_json::to_vec(value)
            .map_err(|e| Error::invalid_input(format!("state {key}: {e}")))?;
        set(key, &bytes)
    }
}

// ---- glue used by the export macros; not part of the public API ----

#[doc(hidden)]
pub mod __private {
    use super::*;
    use crate::__bindings::{agent, connector, tool};

    type AgentInfo = agent::exports::corral::plugin::agent::Info;
    type AgentContext = agent::exports::corral::plugin::agent::Context;
    type WitError = wit_types::PluginError;

    pub fn describe<A: Agent>() -> AgentInfo {
        let info = A::info();
        AgentInfo {
            name: info.name,
            version: info.version,
            description: info.description,
            input_schema: info.input_schema.map(|v| v.to_string()),
            output_schema: info.output_schema.map(|v| v.to_string()),
        }
    }

    fn parse_json(what: &str, text: &str) -> Result<Value> {
        serde_json::from_str(text).map_err(|e| Error::invalid_input(format!("{what}: {e}")))
    }

    pub fn run<A: Agent>(
        ctx: AgentContext,
        input: String,
    ) -> std::result::Result<String, WitError> {
        let go = || -> Result<String> {
            let context = Context {
                run_id: ctx.run_id,
                step: ctx.step,
                attempt: ctx.attempt,
                config: parse_json("config", &ctx.config)?,
                feedback: ctx
                    .feedback
                    .as_deref()
                    .map(|f| parse_json("feedback", f))
                    .transpose()?,
            };
            let input: A::Input = serde_json::from_str(&input)
                .map_err(|e| Error::invalid_input(format!("input: {e}")))?;
            let output = A::run(context, input)?;
            serde_json::to_string(&output).map_err(|e| Error::permanent(format!("output: {e}")))
        };
        go().map_err(Into::into)
    }

    pub fn list_tools<T: Tools>() -> Vec<tool::exports::corral::plugin::tool::Spec> {
        T::tools()
            .into_iter()
            .map(|s| tool::exports::corral::plugin::tool::Spec {
                name: s.name,
                description: s.description,
                input_schema: s.input_schema.to_string(),
            })
            .collect()
    }

    pub fn call_tool<T: Tools>(
        name: String,
        arguments: String,
    ) -> std::result::Result<String, WitError> {
        let go = || -> Result<String> {
            let args = parse_json("arguments", &arguments)?;
            let out = T::call(&name, args)?;
            serde_json::to_string(&out).map_err(|e| Error::permanent(format!("result: {e}")))
        };
        go().map_err(Into::into)
    }

    type CInfo = connector::exports::corral::plugin::connector::Info;
    type CPage = connector::exports::corral::plugin::connector::Page;
    type CWebhook = connector::exports::corral::plugin::connector::WebhookRequest;

    pub fn connector_describe<C: Connector>() -> CInfo {
        let i = C::info();
        CInfo {
            name: i.name,
            version: i.version,
            description: i.description,
        }
    }

    fn to_json_strings(items: Vec<Value>) -> Vec<String> {
        items.into_iter().map(|v| v.to_string()).collect()
    }

    pub fn pull<C: Connector>(
        query: String,
        cursor: Option<String>,
    ) -> std::result::Result<CPage, WitError> {
        let go = || -> Result<CPage> {
            let page = C::pull(parse_json("query", &query)?, cursor)?;
            Ok(CPage {
                items: to_json_strings(page.items),
                next_cursor: page.next_cursor,
            })
        };
        go().map_err(Into::into)
    }

    pub fn push<C: Connector>(items: Vec<String>) -> std::result::Result<u32, WitError> {
        let go = || -> Result<u32> {
            let values = items
                .iter()
                .map(|s| parse_json("item", s))
                .collect::<Result<Vec<_>>>()?;
            C::push(values)
        };
        go().map_err(Into::into)
    }

    pub fn handle_webhook<C: Connector>(
        req: CWebhook,
    ) -> std::result::Result<Vec<String>, WitError> {
        C::handle_webhook(WebhookRequest {
            headers: req.headers,
            body: req.body,
        })
        .map(to_json_strings)
        .map_err(Into::into)
    }
}

/// Exports a type implementing [`Agent`] as this component's agent.
#[macro_export]
macro_rules! export_agent {
    ($agent:ty) => {
        #[doc(hidden)]
        pub struct __CorralAgentExport;

        impl $crate::__bindings::agent::exports::corral::plugin::agent::Guest for __CorralAgentExport {
            fn describe() -> $crate::__bindings::agent::exports::corral::plugin::agent::Info {
                $crate::__private::describe::<$agent>()
            }
            fn run(
                ctx: $crate::__bindings::agent::exports::corral::plugin::agent::Context,
                input: ::std::string::String,
            ) -> ::std::result::Result<::std::string::String, $crate::__bindings::types::PluginError> {
                $crate::__private::run::<$agent>(ctx, input)
            }
        }

        $crate::__bindings::agent::__export_agent_world!(
            __CorralAgentExport with_types_in $crate::__bindings::agent
        );
    };
}

/// Exports a type implementing [`Tools`] as this component's tool set.
#[macro_export]
macro_rules! export_tools {
    ($tools:ty) => {
        #[doc(hidden)]
        pub struct __CorralToolExport;

        impl $crate::__bindings::tool::exports::corral::plugin::tool::Guest for __CorralToolExport {
            fn list_tools() -> ::std::vec::Vec<$crate::__bindings::tool::exports::corral::plugin::tool::Spec> {
                $crate::__private::list_tools::<$tools>()
            }
            fn call(
                name: ::std::string::String,
                arguments: ::std::string::String,
            ) -> ::std::result::Result<::std::string::String, $crate::__bindings::types::PluginError> {
                $crate::__private::call_tool::<$tools>(name, arguments)
            }
        }

        $crate::__bindings::tool::__export_tool_world!(
            __CorralToolExport with_types_in $crate::__bindings::tool
        );
    };
}

/// Exports a type implementing [`Connector`] as this component's connector.
#[macro_export]
macro_rules! export_connector {
    ($connector:ty) => {
        #[doc(hidden)]
        pub struct __CorralConnectorExport;

        impl $crate::__bindings::connector::exports::corral::plugin::connector::Guest
            for __CorralConnectorExport
        {
            fn describe() -> $crate::__bindings::connector::exports::corral::plugin::connector::Info {
                $crate::__private::connector_describe::<$connector>()
            }
            fn pull(
                query: ::std::string::String,
                cursor: ::std::option::Option<::std::string::String>,
            ) -> ::std::result::Result<
                $crate::__bindings::connector::exports::corral::plugin::connector::Page,
                $crate::__bindings::types::PluginError,
            > {
                $crate::__private::pull::<$connector>(query, cursor)
            }
            fn push(
                items: ::std::vec::Vec<::std::string::String>,
            ) -> ::std::result::Result<u32, $crate::__bindings::types::PluginError> {
                $crate::__private::push::<$connector>(items)
            }
            fn handle_webhook(
                request: $crate::__bindings::connector::exports::corral::plugin::connector::WebhookRequest,
            ) -> ::std::result::Result<
                ::std::vec::Vec<::std::string::String>,
                $crate::__bindings::types::PluginError,
            > {
                $crate::__private::handle_webhook::<$connector>(request)
            }
        }

        $crate::__bindings::connector::__export_connector_world!(
            __CorralConnectorExport with_types_in $crate::__bindings::connector
        );
    };
}
