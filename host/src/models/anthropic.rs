//! Anthropic's messages protocol (`POST {base_url}/v1/messages`).
//!
//! The system prompt travels apart from the messages; tool results are `tool_result`
//! blocks of a user message; an assistant's tool calls are `tool_use` blocks. The
//! protocol has no response-format field: a response schema is sent as an instruction
//! appended to the system prompt (the answer is not validated against it by the host).

// Only serde_json::Value is indexed here, and reading `value[key]` or `value[n]` never
// panics (a missing key, index or a value of another type reads as null).
#![allow(clippy::indexing_slicing)]
use super::openai::Endpoint;
use super::wire::{self, SseReader};
use super::{
    ChatRequest, ChatResponse, DeltaSink, FinishReason, ModelError, Role, ToolCall, Usage,
};
use serde_json::{Value, json};

const NAME: &str = "anthropic";
/// The protocol version sent as `anthropic-version`.
pub const VERSION: &str = "2023-06-01";

/// The request body for `request` (whose `max_tokens` the caller has resolved; the
/// protocol requires one).
pub fn body(model: &str, request: &ChatRequest, stream: bool) -> Result<Value, ModelError> {
    let mut system: Vec<&str> = Vec::new();
    let mut messages: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for m in &request.messages {
        let (role, blocks) = match m.role {
            Role::System => {
                system.push(&m.content);
                continue;
            }
            Role::User => ("user", vec![json!({"type": "text", "text": m.content})]),
            Role::Tool => (
                "user",
                vec![json!({
                    "type": "tool_result",
                    "tool_use_id": m.tool_call_id.clone().unwrap_or_default(),
                    "content": m.content,
                })],
            ),
            Role::Assistant => {
                let mut blocks = Vec::new();
                if !m.content.is_empty() {
                    blocks.push(json!({"type": "text", "text": m.content}));
                }
                for c in &m.tool_calls {
                    let input = if c.arguments.trim().is_empty() {
                        json!({})
                    } else {
                        wire::json_value(
                            &format!("tool call `{}` arguments", c.name),
                            &c.arguments,
                        )?
                    };
                    blocks.push(
                        json!({"type": "tool_use", "id": c.id, "name": c.name, "input": input}),
                    );
                }
                ("assistant", blocks)
            }
        };
        // Consecutive messages of one role (several tool results) become one message.
        match messages.last_mut() {
            Some((r, b)) if *r == role => b.extend(blocks),
            _ => messages.push((role, blocks)),
        }
    }
    let schema_note;
    if let Some(schema) = &request.response_schema {
        let schema = wire::json_value("the response schema", schema)?;
        schema_note = format!(
            "Answer with a single JSON value, and nothing else, that follows this JSON Schema: {schema}"
        );
        system.push(&schema_note);
    }
    let messages: Vec<Value> = messages
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect();
    let mut body = json!({
        "model": model,
        "max_tokens": request.max_tokens.unwrap_or(1024),
        "messages": messages,
    });
    let obj = body
        .as_object_mut()
        .ok_or_else(|| ModelError::InvalidRequest("request body".into()))?;
    if !system.is_empty() {
        obj.insert("system".into(), json!(system.join("\n\n")));
    }
    if let Some(t) = request.temperature {
        obj.insert("temperature".into(), json!(t));
    }
    if !request.stop.is_empty() {
        obj.insert("stop_sequences".into(), json!(request.stop));
    }
    if !request.tools.is_empty() {
        let mut tools = Vec::with_capacity(request.tools.len());
        for t in &request.tools {
            let schema = wire::json_value(&format!("tool `{}` parameters", t.name), &t.parameters)?;
            tools.push(
                json!({"name": t.name, "description": t.description, "input_schema": schema}),
            );
        }
        obj.insert("tools".into(), Value::Array(tools));
    }
    if stream {
        obj.insert("stream".into(), json!(true));
    }
    Ok(body)
}

fn finish(reason: Option<&str>) -> FinishReason {
    match reason {
        Some("end_turn") | Some("stop_sequence") | None => FinishReason::Stop,
        Some("max_tokens") => FinishReason::Length,
        Some("tool_use") => FinishReason::ToolCalls,
        Some("refusal") => FinishReason::ContentFilter,
        Some(_) => FinishReason::Other,
    }
}

/// Input tokens include the prompt read from or written to the provider's prompt cache.
fn input_tokens(u: &Value) -> u64 {
    [
        "input_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
    ]
    .iter()
    .map(|k| u[*k].as_u64().unwrap_or(0))
    .fold(0u64, u64::saturating_add)
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// Sends `request` and reads the answer, streaming text to `deltas` when `ep.stream`.
pub async fn complete(
    client: &reqwest_tls::Client,
    ep: &Endpoint<'_>,
    request: &ChatRequest,
    deltas: DeltaSink<'_>,
) -> Result<ChatResponse, ModelError> {
    let body = body(ep.model, request, ep.stream)?;
    let url = format!("{}/v1/messages", ep.base_url.trim_end_matches('/'));
    let mut req = client
        .post(url)
        .header("anthropic-version", VERSION)
        .json(&body);
    if let Some(key) = ep.key {
        req = req.header("x-api-key", key);
    }
    wire::exchange(NAME, ep, req, deltas, read_stream, parse_response).await
}

/// A non-streamed answer.
pub fn parse_response(body: &[u8]) -> Result<ChatResponse, ModelError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ModelError::Transient(format!("{NAME}: the answer is not JSON: {e}")))?;
    let mut content = String::new();
    let mut tool_calls = Vec::new();
    for block in v["content"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
        match block["type"].as_str() {
            Some("text") => wire::append_bounded(NAME, &mut content, str_of(&block["text"]))?,
            Some("tool_use") if tool_calls.len() < wire::MAX_TOOL_CALLS => {
                tool_calls.push(ToolCall {
                    id: str_of(&block["id"]).to_string(),
                    name: str_of(&block["name"]).to_string(),
                    arguments: block["input"].to_string(),
                })
            }
            _ => {}
        }
    }
    Ok(ChatResponse {
        content,
        tool_calls,
        finish_reason: finish(v["stop_reason"].as_str()),
        usage: Usage {
            input_tokens: input_tokens(&v["usage"]),
            output_tokens: v["usage"]["output_tokens"].as_u64().unwrap_or(0),
        },
        cached: false,
    })
}

/// A block of the streamed answer, by its index.
enum Block {
    Text,
    Tool(usize),
    Other,
}

async fn read_stream(
    resp: reqwest_tls::Response,
    deltas: DeltaSink<'_>,
) -> Result<ChatResponse, ModelError> {
    let mut sse = SseReader::new(NAME, resp);
    let mut content = String::new();
    let mut calls: Vec<ToolCall> = Vec::new();
    let mut blocks: Vec<(u64, Block)> = Vec::new();
    let mut reason: Option<String> = None;
    let mut used = Usage::default();
    let mut stopped = false;
    while let Some(data) = sse.next_data().await? {
        let v: Value = serde_json::from_str(&data).map_err(|e| {
            ModelError::Transient(format!("{NAME}: a streamed event is not JSON: {e}"))
        })?;
        match v["type"].as_str() {
            Some("message_start") => {
                let u = &v["message"]["usage"];
                used.input_tokens = input_tokens(u);
                used.output_tokens = u["output_tokens"].as_u64().unwrap_or(0);
            }
            Some("content_block_start") => {
                let idx = v["index"].as_u64().unwrap_or(0);
                let b = &v["content_block"];
                let block = match b["type"].as_str() {
                    Some("text") => {
                        let text = str_of(&b["text"]);
                        if !text.is_empty() {
                            wire::append_bounded(NAME, &mut content, text)?;
                            deltas(text);
                        }
                        Block::Text
                    }
                    Some("tool_use") if calls.len() < wire::MAX_TOOL_CALLS => {
                        calls.push(ToolCall {
                            id: str_of(&b["id"]).chars().take(256).collect(),
                            name: str_of(&b["name"]).chars().take(256).collect(),
                            arguments: String::new(),
                        });
                        Block::Tool(calls.len() - 1)
                    }
                    _ => Block::Other,
                };
                if blocks.len() < 4 * wire::MAX_TOOL_CALLS {
                    blocks.push((idx, block));
                }
            }
            Some("content_block_delta") => {
                let idx = v["index"].as_u64().unwrap_or(0);
                let d = &v["delta"];
                let block = blocks.iter().find(|(i, _)| *i == idx).map(|(_, b)| b);
                match (d["type"].as_str(), block) {
                    (Some("text_delta"), _) => {
                        let text = str_of(&d["text"]);
                        wire::append_bounded(NAME, &mut content, text)?;
                        if !text.is_empty() {
                            deltas(text);
                        }
                    }
                    (Some("input_json_delta"), Some(Block::Tool(i))) => {
                        if let Some(call) = calls.get_mut(*i) {
                            wire::append_bounded(
                                NAME,
                                &mut call.arguments,
                                str_of(&d["partial_json"]),
                            )?;
                        }
                    }
                    _ => {}
                }
            }
            Some("message_delta") => {
                if let Some(r) = v["delta"]["stop_reason"].as_str() {
                    reason = Some(r.to_string());
                }
                let u = &v["usage"];
                if let Some(out) = u["output_tokens"].as_u64() {
                    used.output_tokens = out;
                }
                if u.get("input_tokens").is_some_and(|t| t.is_u64()) {
                    used.input_tokens = input_tokens(u);
                }
            }
            Some("message_stop") => {
                stopped = true;
                break;
            }
            Some("error") => {
                let err = &v["error"];
                let kind = str_of(&err["type"]);
                let message = format!(
                    "{NAME}: the stream failed: {kind}: {}",
                    crate::capabilities::log::neutralise(str_of(&err["message"]), 300)
                );
                return Err(match kind {
                    "invalid_request_error"
                    | "authentication_error"
                    | "permission_error"
                    | "not_found_error" => ModelError::Permanent(message),
                    _ => ModelError::Transient(message),
                });
            }
            _ => {}
        }
    }
    if !stopped {
        return Err(ModelError::Transient(format!(
            "{NAME}: the stream ended before the answer did"
        )));
    }
    // A tool call that streamed no input had none.
    for c in &mut calls {
        if c.arguments.is_empty() {
            c.arguments = "{}".into();
        }
    }
    Ok(ChatResponse {
        content,
        tool_calls: calls,
        finish_reason: finish(reason.as_deref()),
        usage: used,
        cached: false,
    })
}
