//! Language models through the host (`corral:plugin/model`, new in contract 0.2.0).
//!
//! A plugin names a model by an alias (`fast`, `smart`) that the operator maps to a real
//! provider and key; the plugin never sees keys or endpoints and needs no network grant.
//! The alias must be granted in the plugin's `corral.toml` (`[grants] models = ["fast"]`,
//! a pipeline step can narrow it); otherwise, and outside a run that provides models
//! (`corral call` with no model configured), [`Model::chat`] fails with
//! [`Error::Permanent`](crate::Error::Permanent) saying `not granted: model `ALIAS``.
//!
//! ```no_run
//! use corral_sdk::model::{Message, ToolDef};
//! use serde_json::json;
//!
//! # fn main() -> corral_sdk::Result<()> {
//! let mut messages = vec![
//!     Message::system("You count words. Use the tool."),
//!     Message::user("How many words in 'a b c'?"),
//! ];
//! let fast = corral_sdk::model("fast")
//!     .tool(ToolDef::new("word-count", "Counts words", json!({"type": "object"})))
//!     .max_tokens(256)
//!     .temperature(0.0);
//! let reply = fast.chat(&messages)?;
//! messages.push(reply.message());
//! for call in &reply.tool_calls {
//!     let args: serde_json::Value = call.parse_arguments()?;
//!     let result: serde_json::Value = corral_sdk::call_tool(&call.name, &args)?;
//!     messages.push(Message::tool_result(&call.id, result.to_string()));
//! }
//! # Ok(()) }
//! ```
//!
//! Every call is checked against the step's and the run's token budget before it is
//! sent: one whose prompt plus `max_tokens` cannot fit is refused with `BUDGET_EXHAUSTED`
//! and costs nothing. Requests with temperature 0 may be answered from the host's cache
//! ([`Response::cached`], no tokens used). The host refuses a request outside its bounds
//! with [`Error::InvalidInput`](crate::Error::InvalidInput) before sending anything: at
//! most 256 messages, 1 MiB of text in all, 64 tools (names of ASCII letters, digits,
//! `_` and `-`, 1-64 bytes), 64 KiB per schema, 4 stop sequences, temperature 0 to 2
//! (see `wit/model.wit` for the full list).

use crate::{Error, Result};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::__bindings::model as wit;

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Instructions from the plugin author.
    System,
    /// The user's words, or the agent's task.
    User,
    /// The model's earlier answers, tool calls included.
    Assistant,
    /// A tool's result.
    Tool,
}

/// The model asking for a tool to be called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    /// The provider's id for the call; answer with [`Message::tool_result`] carrying it.
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// The arguments as the model wrote them (not checked by the host).
    pub arguments: String,
}

impl ToolCall {
    /// The arguments as a typed value; text that is not that type's JSON is an
    /// [`Error::InvalidInput`] naming the tool.
    pub fn parse_arguments<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_str(&self.arguments).map_err(|e| {
            Error::invalid_input(format!(
                "the model's arguments for `{}` are not valid: {e}",
                self.name
            ))
        })
    }
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Who wrote it.
    pub role: Role,
    /// Its text.
    pub content: String,
    /// An assistant message's tool calls.
    pub tool_calls: Vec<ToolCall>,
    /// A tool message: the id of the call it answers.
    pub tool_call_id: Option<String>,
}

impl Message {
    fn new(role: Role, content: impl Into<String>) -> Self {
        Message {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }

    /// A system message (instructions).
    pub fn system(content: impl Into<String>) -> Self {
        Message::new(Role::System, content)
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Message::new(Role::User, content)
    }

    /// An assistant message (an earlier answer).
    pub fn assistant(content: impl Into<String>) -> Self {
        Message::new(Role::Assistant, content)
    }

    /// A tool's result, answering the call with id `call_id`.
    pub fn tool_result(call_id: impl Into<String>, content: impl Into<String>) -> Self {
        Message {
            tool_call_id: Some(call_id.into()),
            ..Message::new(Role::Tool, content)
        }
    }
}

/// A function the model may ask to call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolDef {
    /// The name the model will use (ASCII letters, digits, `_` and `-`).
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// A JSON Schema (an object schema) for the arguments.
    pub parameters: Value,
}

impl ToolDef {
    /// A tool definition from its parts.
    pub fn new(name: impl Into<String>, description: impl Into<String>, parameters: Value) -> Self {
        ToolDef {
            name: name.into(),
            description: description.into(),
            parameters,
        }
    }
}

impl From<&crate::ToolSpec> for ToolDef {
    /// A Corral tool's spec (as `list-tools` gives it) offered to a model.
    fn from(spec: &crate::ToolSpec) -> Self {
        ToolDef::new(&spec.name, &spec.description, spec.input_schema.clone())
    }
}

/// Why the model stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// It finished its answer (or wrote a stop sequence).
    Stop,
    /// It ran into `max_tokens`.
    Length,
    /// It wants tools called.
    ToolCalls,
    /// The provider filtered the answer.
    ContentFilter,
    /// Anything else.
    Other,
}

/// Tokens one call used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Answer tokens.
    pub output_tokens: u64,
}

/// A model's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The answer's text.
    pub content: String,
    /// Tools the model wants called (empty when it is done).
    pub tool_calls: Vec<ToolCall>,
    /// Why it stopped.
    pub finish_reason: FinishReason,
    /// Tokens used (zero for a cached answer).
    pub usage: Usage,
    /// Whether the answer came from the host's cache.
    pub cached: bool,
}

impl Response {
    /// The answer as an assistant message, tool calls included, to append to the
    /// conversation before the tool results.
    pub fn message(&self) -> Message {
        Message {
            tool_calls: self.tool_calls.clone(),
            ..Message::assistant(self.content.clone())
        }
    }

    /// The answer's content as a typed value (for requests with a response schema).
    pub fn parse_content<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_str(&self.content)
            .map_err(|e| Error::permanent(format!("the model's answer is not valid: {e}")))
    }
}

/// A model alias with the options of the requests made through it. Made by
/// [`crate::model`]; the builder methods set options, [`Model::chat`] sends.
#[derive(Debug, Clone)]
pub struct Model {
    alias: String,
    tools: Vec<ToolDef>,
    max_tokens: Option<u32>,
    temperature: Option<f32>,
    stop: Vec<String>,
    response_schema: Option<Value>,
}

impl Model {
    pub(crate) fn new(alias: &str) -> Self {
        Model {
            alias: alias.to_string(),
            tools: Vec::new(),
            max_tokens: None,
            temperature: None,
            stop: Vec::new(),
            response_schema: None,
        }
    }

    /// Offers a function to the model.
    pub fn tool(mut self, tool: ToolDef) -> Self {
        self.tools.push(tool);
        self
    }

    /// Offers functions to the model.
    pub fn tools(mut self, tools: impl IntoIterator<Item = ToolDef>) -> Self {
        self.tools.extend(tools);
        self
    }

    /// The most tokens an answer may have (default: the operator's for the alias).
    pub fn max_tokens(mut self, n: u32) -> Self {
        self.max_tokens = Some(n);
        self
    }

    /// Sampling temperature, 0 to 2; 0 makes requests cacheable.
    pub fn temperature(mut self, t: f32) -> Self {
        self.temperature = Some(t);
        self
    }

    /// A sequence that ends the answer.
    pub fn stop(mut self, sequence: impl Into<String>) -> Self {
        self.stop.push(sequence.into());
        self
    }

    /// A JSON Schema the answer's content must follow (structured output).
    pub fn response_schema(mut self, schema: Value) -> Self {
        self.response_schema = Some(schema);
        self
    }

    /// Sends the conversation and waits for the whole answer.
    pub fn chat(&self, messages: &[Message]) -> Result<Response> {
        let request = wit::ChatRequest {
            messages: messages.iter().map(message_out).collect(),
            tools: self
                .tools
                .iter()
                .map(|t| wit::ToolDefinition {
                    name: t.name.clone(),
                    description: t.description.clone(),
                    parameters: t.parameters.to_string(),
                })
                .collect(),
            max_tokens: self.max_tokens,
            temperature: self.temperature,
            stop: self.stop.clone(),
            response_schema: self.response_schema.as_ref().map(Value::to_string),
        };
        let r = wit::chat(&self.alias, &request)?;
        Ok(Response {
            content: r.content,
            tool_calls: r.tool_calls.into_iter().map(call_in).collect(),
            finish_reason: match r.finish_reason {
                wit::FinishReason::Stop => FinishReason::Stop,
                wit::FinishReason::Length => FinishReason::Length,
                wit::FinishReason::ToolCalls => FinishReason::ToolCalls,
                wit::FinishReason::ContentFilter => FinishReason::ContentFilter,
                wit::FinishReason::Other => FinishReason::Other,
            },
            usage: Usage {
                input_tokens: r.usage.input_tokens,
                output_tokens: r.usage.output_tokens,
            },
            cached: r.cached,
        })
    }
}

fn call_in(c: wit::ToolCall) -> ToolCall {
    ToolCall {
        id: c.id,
        name: c.name,
        arguments: c.arguments,
    }
}

fn message_out(m: &Message) -> wit::Message {
    wit::Message {
        role: match m.role {
            Role::System => wit::Role::System,
            Role::User => wit::Role::User,
            Role::Assistant => wit::Role::Assistant,
            Role::Tool => wit::Role::Tool,
        },
        content: m.content.clone(),
        tool_calls: m
            .tool_calls
            .iter()
            .map(|c| wit::ToolCall {
                id: c.id.clone(),
                name: c.name.clone(),
                arguments: c.arguments.clone(),
            })
            .collect(),
        tool_call_id: m.tool_call_id.clone(),
    }
}
