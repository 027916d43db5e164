//! Language models, reached by plugins through the host (`corral:plugin/model`).
//!
//! A plugin names a model by an alias (`fast`, `smart`) that the operator maps to a real
//! provider, model and key; the plugin never sees keys or endpoints. This module holds the
//! provider-neutral request and response the guest-facing interface converts to and from,
//! and the [`ModelGateway`] seam between the run lifecycle (grants, token budgets, events)
//! and the providers (protocols, keys, cache).

use std::fmt;

mod anthropic;
pub mod cache;
pub mod config;
pub mod gateway;
pub mod local;
mod openai;
pub mod wire;

pub use config::{ModelConfig, ModelsConfig, Provider};
pub use gateway::{HttpGateway, KeySource, StaticKeys};

/// Who wrote a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Instructions from the plugin author.
    System,
    /// The user's (or the agent's task's) words.
    User,
    /// The model's earlier answers, tool calls included.
    Assistant,
    /// A tool's result, answering the assistant's tool call `tool_call_id`.
    Tool,
}

/// A function the model may ask to call.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ToolDefinition {
    /// The tool's name, as the model will use it in a [`ToolCall`].
    pub name: String,
    /// What the tool does, for the model.
    pub description: String,
    /// A JSON Schema (as JSON text) for the call's arguments.
    pub parameters: String,
}

/// The model asking for a tool to be called.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ToolCall {
    /// The provider's id for the call, echoed back in the [`Role::Tool`] message.
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// The arguments, as JSON text (as the model wrote them: not validated).
    pub arguments: String,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Message {
    /// Who wrote it.
    pub role: Role,
    /// Its text (may be empty for an assistant message that only calls tools).
    pub content: String,
    /// An assistant message's tool calls.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// A tool message: the id of the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

/// A chat request, as a plugin makes it (the alias travels beside it).
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct ChatRequest {
    /// The conversation so far, oldest first.
    pub messages: Vec<Message>,
    /// Functions the model may call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolDefinition>,
    /// The most tokens the answer may have; `None`: the host's default for the alias.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Sampling temperature; `None`: the provider's default. `Some(0.0)` makes the request
    /// cacheable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Sequences that end the answer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    /// A JSON Schema (JSON text) the answer's content must follow (structured output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_schema: Option<String>,
}

/// Why the model stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// It finished its answer (or hit a stop sequence).
    Stop,
    /// It ran into `max_tokens`.
    Length,
    /// It wants tools called.
    ToolCalls,
    /// The provider filtered the answer.
    ContentFilter,
    /// Anything else the provider said.
    Other,
}

/// Tokens a call used, as the provider reported them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Answer tokens.
    pub output_tokens: u64,
}

impl Usage {
    /// Input plus output.
    pub fn total(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
}

/// A model's answer.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ChatResponse {
    /// The answer's text.
    pub content: String,
    /// Tools the model wants called.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// Why it stopped.
    pub finish_reason: FinishReason,
    /// Tokens used (zero for a cache hit: nothing was sent).
    pub usage: Usage,
    /// Whether the answer came from the host's cache.
    #[serde(default)]
    pub cached: bool,
}

/// Why a model call failed, before or at the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelError {
    /// The alias is not configured (for this tenant).
    UnknownAlias(String),
    /// The request cannot be sent as it is (too large, bad schema, a role the provider
    /// refuses). Not worth retrying.
    InvalidRequest(String),
    /// The provider failed in a way that may pass (timeout, 429, 5xx, a dropped stream).
    Transient(String),
    /// The provider refused in a way that will not pass (401, 400, a missing key).
    Permanent(String),
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelError::UnknownAlias(a) => write!(f, "no model is configured for alias `{a}`"),
            ModelError::InvalidRequest(m) | ModelError::Transient(m) | ModelError::Permanent(m) => {
                f.write_str(m)
            }
        }
    }
}

impl std::error::Error for ModelError {}

/// What a [`ModelGateway`] knows of the call it is making, beyond the request.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    /// The tenant whose key, cache and prices apply.
    pub tenant: String,
    /// The run, when the call comes from one (for logs; never sent to the provider).
    pub run_id: Option<String>,
}

/// Receives the answer's text as it streams in, piece by piece (a provider that does not
/// stream calls it once, or never). The caller throttles what it forwards to clients.
pub type DeltaSink<'a> = &'a (dyn Fn(&str) + Send + Sync);

/// What the run lifecycle may say of an alias in events and metrics (never its key or
/// endpoint).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModelInfo {
    /// `openai` or `anthropic`.
    pub provider: String,
    /// The provider's model name.
    pub model: String,
    /// Whether the operator lets the prompt text into events.
    pub log_prompts: bool,
    /// Price of a million input tokens.
    pub input_price_per_million: Option<f64>,
    /// Price of a million output tokens.
    pub output_price_per_million: Option<f64>,
}

impl ModelInfo {
    /// The cost of `usage` at these prices (`None` without prices).
    pub fn cost(&self, usage: &Usage) -> Option<f64> {
        if self.input_price_per_million.is_none() && self.output_price_per_million.is_none() {
            return None;
        }
        let i = self.input_price_per_million.unwrap_or(0.0);
        let o = self.output_price_per_million.unwrap_or(0.0);
        #[allow(clippy::cast_precision_loss)] // token counts far below 2^52
        Some((usage.input_tokens as f64 * i + usage.output_tokens as f64 * o) / 1_000_000.0)
    }
}

/// The providers behind the aliases: the operator's configuration, keys, protocols and
/// the response cache. The run lifecycle checks grants and budgets before it calls this,
/// and charges [`ChatResponse::usage`] after.
#[async_trait::async_trait]
pub trait ModelGateway: Send + Sync {
    /// The aliases configured for `tenant`.
    fn aliases(&self, tenant: &str) -> Vec<String>;
    /// The answer-token cap used when a request gives no `max_tokens`.
    fn default_max_tokens(&self, tenant: &str, alias: &str) -> Option<u32>;
    /// What events may say of `alias` (provider, model, prices); `None`: not configured.
    fn describe(&self, tenant: &str, alias: &str) -> Option<ModelInfo> {
        let _ = (tenant, alias);
        None
    }
    /// Sends `request` to the model behind `alias`, streaming text to `deltas`.
    async fn complete(
        &self,
        ctx: &CallContext,
        alias: &str,
        request: &ChatRequest,
        deltas: DeltaSink<'_>,
    ) -> Result<ChatResponse, ModelError>;
}
