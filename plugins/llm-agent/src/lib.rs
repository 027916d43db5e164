//! `llm-agent`: an agent that thinks with a language model and acts with Corral tools.
//!
//! It sends the task to the model behind an alias (`corral:plugin/model`), offers it the
//! tools the step config lists, calls each tool the model asks for through
//! `host.call-tool`, hands the results back, and loops until the model answers without
//! calling a tool, or `max_steps` model calls have been made.
//!
//! Input: a string (the task), or `{"task": "..."}`, or any other JSON (sent as its text).
//! Step config (every field optional):
//! - `model`: the alias, default `fast` (it must be granted: `corral.toml`'s
//!   `[grants] models`);
//! - `system`: the system prompt;
//! - `tools`: the Corral tools to offer, each `{"tool": "text/word_count",
//!   "description": "...", "parameters": {JSON Schema}}` (a bare `"text/word_count"`
//!   offers it with an open object schema); the model sees the name with `/` as `__`;
//! - `max_steps`: model calls at most, 1 to 32, default 8;
//! - `max_tokens`, `temperature`: passed to every call.
//!
//! Output: `{"answer", "steps", "tool_calls": [{"tool", "arguments", "ok"}], "usage":
//! {"input_tokens", "output_tokens"}, "cached_steps"}`. A tool that fails with
//! `permanent` or `invalid-input` (or a call the model got wrong: an unknown tool,
//! arguments that are not JSON) is told to the model as the tool's result, so it can try
//! again; a `transient` failure fails the step (the run retries it). Reaching `max_steps`
//! while the model still calls tools is a `permanent` error.

use corral_sdk::model::{FinishReason, Message, ToolDef};
use corral_sdk::{Agent, Context, Error, Info, Result};
use serde::Deserialize;
use serde_json::{Value, json};

const DEFAULT_SYSTEM: &str = "You are a careful assistant. Use the tools when they help; \
     when you have the answer, reply with it and call no tool.";
const MAX_STEPS: u32 = 32;

#[derive(Deserialize)]
#[serde(untagged)]
enum ToolConfig {
    Name(String),
    Full {
        tool: String,
        #[serde(default)]
        description: String,
        #[serde(default)]
        parameters: Option<Value>,
    },
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    model: String,
    system: Option<String>,
    tools: Vec<ToolConfig>,
    max_steps: u32,
    max_tokens: Option<u32>,
    temperature: Option<f32>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            model: "fast".into(),
            system: None,
            tools: Vec::new(),
            max_steps: 8,
            max_tokens: None,
            temperature: None,
        }
    }
}

/// A Corral tool name as the model sees it (`text/word_count` -> `text__word_count`):
/// model tool names allow only letters, digits, `_` and `-`.
fn model_name(tool: &str) -> String {
    tool.replace('/', "__")
}

fn task_text(input: &Value) -> String {
    match input {
        Value::String(s) => s.clone(),
        Value::Object(o) => match o.get("task") {
            Some(Value::String(s)) => s.clone(),
            _ => input.to_string(),
        },
        _ => input.to_string(),
    }
}

struct LlmAgent;

impl Agent for LlmAgent {
    type Input = Value;
    type Output = Value;

    fn info() -> Info {
        Info::new(
            "llm-agent",
            env!("CARGO_PKG_VERSION"),
            "Asks a language model, calls the Corral tools it asks for, and loops until it answers.",
        )
    }

    fn run(ctx: Context, input: Value) -> Result<Value> {
        let config: Config = ctx.config()?;
        if config.max_steps == 0 || config.max_steps > MAX_STEPS {
            return Err(Error::invalid_input(format!(
                "max_steps is {}; it must be 1 to {MAX_STEPS}",
                config.max_steps
            )));
        }
        // (model-facing name, Corral tool name)
        let mut names: Vec<(String, String)> = Vec::new();
        let mut defs = Vec::new();
        for t in &config.tools {
            let (tool, description, parameters) = match t {
                ToolConfig::Name(n) => (n.clone(), String::new(), None),
                ToolConfig::Full {
                    tool,
                    description,
                    parameters,
                } => (tool.clone(), description.clone(), parameters.clone()),
            };
            let name = model_name(&tool);
            let parameters = parameters.unwrap_or_else(|| json!({"type": "object"}));
            defs.push(ToolDef::new(&name, description, parameters));
            names.push((name, tool));
        }

        let mut model = corral_sdk::model(&config.model).tools(defs);
        if let Some(n) = config.max_tokens {
            model = model.max_tokens(n);
        }
        if let Some(t) = config.temperature {
            model = model.temperature(t);
        }

        let mut messages = vec![
            Message::system(config.system.as_deref().unwrap_or(DEFAULT_SYSTEM)),
            Message::user(task_text(&input)),
        ];
        let mut calls = Vec::new();
        let (mut input_tokens, mut output_tokens, mut cached_steps) = (0u64, 0u64, 0u32);
        for step in 1..=config.max_steps {
            corral_sdk::progress(
                u8::try_from(step * 100 / (config.max_steps + 1)).unwrap_or(99),
                &format!("model call {step}"),
            );
            let reply = model.chat(&messages)?;
            input_tokens = input_tokens.saturating_add(reply.usage.input_tokens);
            output_tokens = output_tokens.saturating_add(reply.usage.output_tokens);
            cached_steps += u32::from(reply.cached);
            if reply.tool_calls.is_empty() {
                if reply.finish_reason == FinishReason::Length {
                    corral_sdk::warn("llm-agent: the answer was cut at max_tokens");
                }
                corral_sdk::progress(100, "answered");
                return Ok(json!({
                    "answer": reply.content,
                    "steps": step,
                    "tool_calls": calls,
                    "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
                    "cached_steps": cached_steps,
                }));
            }
            messages.push(reply.message());
            for call in &reply.tool_calls {
                let tool = names.iter().find(|(n, _)| *n == call.name).map(|(_, t)| t);
                let outcome: Result<Value> = match (tool, call.parse_arguments::<Value>()) {
                    (None, _) => Err(Error::invalid_input(format!(
                        "there is no tool `{}`",
                        call.name
                    ))),
                    (Some(_), Err(e)) => Err(e),
                    (Some(tool), Ok(args)) => corral_sdk::call_tool(tool, &args),
                };
                corral_sdk::info(&format!(
                    "llm-agent: step {step} called `{}`: {}",
                    call.name,
                    if outcome.is_ok() { "ok" } else { "failed" }
                ));
                let result = match outcome {
                    Ok(v) => {
                        calls.push(json!({"tool": tool, "arguments": call.arguments, "ok": true}));
                        v.to_string()
                    }
                    Err(Error::Transient(m)) => return Err(Error::Transient(m)),
                    Err(e) => {
                        calls.push(
                            json!({"tool": call.name, "arguments": call.arguments, "ok": false}),
                        );
                        json!({"error": e.message()}).to_string()
                    }
                };
                messages.push(Message::tool_result(&call.id, result));
            }
        }
        Err(Error::permanent(format!(
            "the model was still calling tools after {} model calls (max_steps)",
            config.max_steps
        )))
    }
}

corral_sdk::export_agent!(LlmAgent);
