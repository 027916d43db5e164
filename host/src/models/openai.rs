//! The OpenAI-style chat completions protocol (`POST {base_url}/chat/completions`), as
//! OpenAI, vLLM, llama.cpp's server, Ollama and many hosted services speak it.

// Only serde_json::Value is indexed here, and reading `value[key]` or `value[n]` never
// panics (a missing key, index or a value of another type reads as null).
#![allow(clippy::indexing_slicing)]
use super::wire::{self, SseReader};
use super::{
    ChatRequest, ChatResponse, DeltaSink, FinishReason, Message, ModelError, Role, ToolCall, Usage,
};
use serde_json::{Value, json};

const NAME: &str = "openai";

pub use super::wire::Endpoint;

/// The request body for `request` (whose `max_tokens` the caller has resolved).
pub fn body(model: &str, request: &ChatRequest, stream: bool) -> Result<Value, ModelError> {
    let messages: Vec<Value> = request.messages.iter().map(message).collect();
    let mut body = json!({ "model": model, "messages": messages });
    let obj = body
        .as_object_mut()
        .ok_or_else(|| ModelError::InvalidRequest("request body".into()))?;
    if let Some(max) = request.max_tokens {
        obj.insert("max_tokens".into(), json!(max));
    }
    if let Some(t) = request.temperature {
        obj.insert("temperature".into(), json!(t));
    }
    if !request.stop.is_empty() {
        obj.insert("stop".into(), json!(request.stop));
    }
    if !request.tools.is_empty() {
        let mut tools = Vec::with_capacity(request.tools.len());
        for t in &request.tools {
            let parameters =
                wire::json_value(&format!("tool `{}` parameters", t.name), &t.parameters)?;
            tools.push(json!({
                "type": "function",
                "function": {"name": t.name, "description": t.description, "parameters": parameters},
            }));
        }
        obj.insert("tools".into(), Value::Array(tools));
    }
    if let Some(schema) = &request.response_schema {
        let schema = wire::json_value("the response schema", schema)?;
        obj.insert(
            "response_format".into(),
            json!({"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}),
        );
    }
    if stream {
        obj.insert("stream".into(), json!(true));
        obj.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Ok(body)
}

fn message(m: &Message) -> Value {
    let role = match m.role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    };
    let mut v = json!({"role": role, "content": m.content});
    if let Some(obj) = v.as_object_mut() {
        if m.role == Role::Assistant && !m.tool_calls.is_empty() {
            let calls: Vec<Value> = m
                .tool_calls
                .iter()
                .map(|c| {
                    json!({"id": c.id, "type": "function",
                           "function": {"name": c.name, "arguments": c.arguments}})
                })
                .collect();
            obj.insert("tool_calls".into(), Value::Array(calls));
            if m.content.is_empty() {
                obj.insert("content".into(), Value::Null);
            }
        }
        if let Some(id) = &m.tool_call_id {
            obj.insert("tool_call_id".into(), json!(id));
        }
    }
    v
}

fn finish(reason: Option<&str>) -> FinishReason {
    match reason {
        Some("stop") | None => FinishReason::Stop,
        Some("length") => FinishReason::Length,
        Some("tool_calls") | Some("function_call") => FinishReason::ToolCalls,
        Some("content_filter") => FinishReason::ContentFilter,
        Some(_) => FinishReason::Other,
    }
}

fn usage(v: &Value) -> Usage {
    Usage {
        input_tokens: v["prompt_tokens"].as_u64().unwrap_or(0),
        output_tokens: v["completion_tokens"].as_u64().unwrap_or(0),
    }
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
    let url = format!("{}/chat/completions", ep.base_url.trim_end_matches('/'));
    let mut req = client.post(url).json(&body);
    if let Some(key) = ep.key {
        req = req.bearer_auth(key);
    }
    wire::exchange(NAME, ep, req, deltas, read_stream, parse_response).await
}

/// A non-streamed answer.
pub fn parse_response(body: &[u8]) -> Result<ChatResponse, ModelError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ModelError::Transient(format!("{NAME}: the answer is not JSON: {e}")))?;
    let choice = &v["choices"][0];
    if choice.is_null() {
        return Err(ModelError::Transient(format!(
            "{NAME}: the answer has no choices"
        )));
    }
    let msg = &choice["message"];
    let mut tool_calls = Vec::new();
    if let Some(calls) = msg["tool_calls"].as_array() {
        for c in calls.iter().take(wire::MAX_TOOL_CALLS) {
            tool_calls.push(ToolCall {
                id: str_of(&c["id"]).to_string(),
                name: str_of(&c["function"]["name"]).to_string(),
                arguments: str_of(&c["function"]["arguments"]).to_string(),
            });
        }
    }
    let content = str_of(&msg["content"]);
    if content.len() > wire::MAX_CONTENT {
        return Err(ModelError::Transient(format!(
            "{NAME}: the answer is too long"
        )));
    }
    Ok(ChatResponse {
        content: content.to_string(),
        tool_calls,
        finish_reason: finish(choice["finish_reason"].as_str()),
        usage: usage(&v["usage"]),
        cached: false,
    })
}

async fn read_stream(
    resp: reqwest_tls::Response,
    deltas: DeltaSink<'_>,
) -> Result<ChatResponse, ModelError> {
    let mut sse = SseReader::new(NAME, resp);
    let mut content = String::new();
    let mut calls: Vec<ToolCall> = Vec::new();
    let mut reason: Option<String> = None;
    let mut used = Usage::default();
    let mut finished = false;
    while let Some(data) = sse.next_data().await? {
        if data.trim() == "[DONE]" {
            finished = true;
            break;
        }
        let v: Value = serde_json::from_str(&data).map_err(|e| {
            ModelError::Transient(format!("{NAME}: a streamed chunk is not JSON: {e}"))
        })?;
        if let Some(err) = v.get("error") {
            return Err(ModelError::Transient(format!(
                "{NAME}: the stream failed: {}",
                crate::capabilities::log::neutralise(&err.to_string(), 300)
            )));
        }
        if v["usage"].is_object() {
            used = usage(&v["usage"]);
        }
        let Some(choice) = v["choices"].get(0) else {
            continue;
        };
        let delta = &choice["delta"];
        if let Some(text) = delta["content"].as_str()
            && !text.is_empty()
        {
            wire::append_bounded(NAME, &mut content, text)?;
            deltas(text);
        }
        if let Some(tcs) = delta["tool_calls"].as_array() {
            for tc in tcs {
                let idx = tc["index"]
                    .as_u64()
                    .and_then(|i| usize::try_from(i).ok())
                    .unwrap_or(calls.len().saturating_sub(1));
                if idx >= wire::MAX_TOOL_CALLS {
                    continue;
                }
                while calls.len() <= idx {
                    calls.push(ToolCall {
                        id: String::new(),
                        name: String::new(),
                        arguments: String::new(),
                    });
                }
                let Some(call) = calls.get_mut(idx) else {
                    continue;
                };
                if let Some(id) = tc["id"].as_str() {
                    call.id = id.chars().take(256).collect();
                }
                if let Some(name) = tc["function"]["name"].as_str() {
                    wire::append_bounded(NAME, &mut call.name, name)?;
                }
                if let Some(args) = tc["function"]["arguments"].as_str() {
                    wire::append_bounded(NAME, &mut call.arguments, args)?;
                }
            }
        }
        if let Some(r) = choice["finish_reason"].as_str() {
            reason = Some(r.to_string());
        }
    }
    if !finished && reason.is_none() {
        return Err(ModelError::Transient(format!(
            "{NAME}: the stream ended before the answer did"
        )));
    }
    Ok(ChatResponse {
        content,
        tool_calls: calls,
        finish_reason: finish(reason.as_deref()),
        usage: used,
        cached: false,
    })
}
