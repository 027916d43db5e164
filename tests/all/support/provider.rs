//! A language-model provider on loopback speaking both real protocols (OpenAI-style chat
//! completions and Anthropic messages), streaming and not, recording every request.
//!
//! What it answers depends on the last user message:
//! - contains `CALL_TOOL`: a tool call of the first tool offered, arguments `{"text":"x"}`
//!   (when no tool result is in the conversation yet);
//! - contains `STATUS_<code>`: that HTTP status with an error body;
//! - contains `HANG`: (OpenAI-style only) no answer for 60 s, for a caller stopped mid-call;
//! - otherwise: `echo: <the last user message>`.
//!
//! Usage: input tokens are the request body's bytes / 4 (rounded up); output tokens are
//! the answer's words.

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

/// A request the provider received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
}

/// The running provider.
pub struct FakeProvider {
    pub base_url: String,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    _task: tokio::task::JoinHandle<()>,
}

impl FakeProvider {
    /// Starts it on 127.0.0.1, an ephemeral port.
    pub async fn start() -> FakeProvider {
        let requests: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let app = Router::new()
            .route("/v1/chat/completions", post(openai))
            .route("/v1/messages", post(anthropic))
            .with_state(requests.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeProvider {
            base_url: format!("http://{addr}"),
            requests,
            _task: task,
        }
    }

    /// The OpenAI-style base URL (`…/v1`).
    pub fn openai_url(&self) -> String {
        format!("{}/v1", self.base_url)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

struct Plan {
    text: String,
    tool: Option<String>,
    status: Option<u16>,
    input_tokens: u64,
    output_tokens: u64,
}

fn last_user(messages: &[Value]) -> String {
    messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .map(|m| match &m["content"] {
            Value::String(s) => s.clone(),
            Value::Array(blocks) => blocks
                .iter()
                .filter_map(|b| b["text"].as_str())
                .collect::<Vec<_>>()
                .join(""),
            _ => String::new(),
        })
        .unwrap_or_default()
}

fn plan(body: &Value, raw_len: usize, tool_names: Vec<String>, answered: bool) -> Plan {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let user = last_user(&messages);
    let status = user
        .split("STATUS_")
        .nth(1)
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok());
    let tool = (user.contains("CALL_TOOL") && !answered)
        .then(|| tool_names.first().cloned())
        .flatten();
    let text = if tool.is_some() {
        String::new()
    } else {
        format!("echo: {user}")
    };
    let output_tokens = text.split_whitespace().count() as u64 + u64::from(tool.is_some());
    Plan {
        text,
        tool,
        status,
        input_tokens: raw_len.div_ceil(4) as u64,
        output_tokens,
    }
}

fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, w) in text.split(' ').enumerate() {
        out.push(if i == 0 {
            w.to_string()
        } else {
            format!(" {w}")
        });
    }
    out
}

fn sse(events: Vec<(Option<&str>, String)>) -> Response {
    let mut text = String::new();
    for (event, data) in events {
        if let Some(e) = event {
            text.push_str(&format!("event: {e}\n"));
        }
        text.push_str(&format!("data: {data}\n\n"));
    }
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from(text))
        .unwrap()
}

fn record(state: &Mutex<Vec<Recorded>>, path: &str, headers: &HeaderMap, body: &Value) {
    state.lock().unwrap().push(Recorded {
        path: path.into(),
        headers: headers.clone(),
        body: body.clone(),
    });
}

async fn openai(
    State(state): State<Arc<Mutex<Vec<Recorded>>>>,
    headers: HeaderMap,
    raw: String,
) -> Response {
    let body: Value = serde_json::from_str(&raw).unwrap_or(Value::Null);
    record(&state, "/v1/chat/completions", &headers, &body);
    let tools: Vec<String> = body["tools"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(|t| t["function"]["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let answered = body["messages"]
        .as_array()
        .is_some_and(|m| m.iter().any(|m| m["role"] == "tool"));
    let p = plan(&body, raw.len(), tools, answered);
    if last_user(body["messages"].as_array().map_or(&[][..], Vec::as_slice)).contains("HANG") {
        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
    }
    if let Some(code) = p.status {
        return (
            StatusCode::from_u16(code).unwrap(),
            axum::Json(
                json!({"error": {"message": format!("status {code} as asked"), "type": "test"}}),
            ),
        )
            .into_response();
    }
    let usage = json!({"prompt_tokens": p.input_tokens, "completion_tokens": p.output_tokens,
                       "total_tokens": p.input_tokens + p.output_tokens});
    let finish = if p.tool.is_some() {
        "tool_calls"
    } else {
        "stop"
    };
    if body["stream"] == true {
        let mut events = Vec::new();
        let chunk = |delta: Value, finish: Value| {
            json!({"id": "c1", "object": "chat.completion.chunk",
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            .to_string()
        };
        events.push((
            None,
            chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        ));
        for w in words(&p.text) {
            if !p.text.is_empty() {
                events.push((None, chunk(json!({"content": w}), Value::Null)));
            }
        }
        if let Some(tool) = &p.tool {
            events.push((
                None,
                chunk(
                    json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                "function": {"name": tool, "arguments": ""}}]}),
                    Value::Null,
                ),
            ));
            for part in ["{\"text\":", "\"x\"}"] {
                events.push((
                    None,
                    chunk(
                        json!({"tool_calls": [{"index": 0, "function": {"arguments": part}}]}),
                        Value::Null,
                    ),
                ));
            }
        }
        events.push((None, chunk(json!({}), json!(finish))));
        if body["stream_options"]["include_usage"] == true {
            events.push((
                None,
                json!({"id": "c1", "choices": [], "usage": usage}).to_string(),
            ));
        }
        events.push((None, "[DONE]".into()));
        return sse(events);
    }
    let tool_calls = p.tool.as_ref().map(|t| {
        json!([{"id": "call_1", "type": "function", "function": {"name": t, "arguments": "{\"text\":\"x\"}"}}])
    });
    let mut message = json!({"role": "assistant", "content": if p.text.is_empty() { Value::Null } else { json!(p.text) }});
    if let Some(tc) = tool_calls {
        message["tool_calls"] = tc;
    }
    axum::Json(json!({"id": "c1", "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage}))
    .into_response()
}

async fn anthropic(
    State(state): State<Arc<Mutex<Vec<Recorded>>>>,
    headers: HeaderMap,
    raw: String,
) -> Response {
    let body: Value = serde_json::from_str(&raw).unwrap_or(Value::Null);
    record(&state, "/v1/messages", &headers, &body);
    if headers.get("anthropic-version").is_none() || body["max_tokens"].as_u64().is_none() {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(
                json!({"type": "error", "error": {"type": "invalid_request_error",
                "message": "anthropic-version and max_tokens are required"}}),
            ),
        )
            .into_response();
    }
    let tools: Vec<String> = body["tools"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(|t| t["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let answered = body["messages"].as_array().is_some_and(|m| {
        m.iter().any(|m| {
            m["content"]
                .as_array()
                .is_some_and(|b| b.iter().any(|b| b["type"] == "tool_result"))
        })
    });
    let p = plan(&body, raw.len(), tools, answered);
    if let Some(code) = p.status {
        return (
            StatusCode::from_u16(code).unwrap(),
            axum::Json(json!({"type": "error", "error": {"type": "api_error", "message": format!("status {code} as asked")}})),
        )
            .into_response();
    }
    let stop = if p.tool.is_some() {
        "tool_use"
    } else {
        "end_turn"
    };
    if body["stream"] == true {
        let mut events: Vec<(Option<&str>, String)> = Vec::new();
        events.push((
            Some("message_start"),
            json!({"type": "message_start", "message": {"id": "m1",
            "type": "message", "role": "assistant", "content": [], "model": body["model"],
            "usage": {"input_tokens": p.input_tokens, "output_tokens": 1}}})
            .to_string(),
        ));
        events.push((Some("ping"), json!({"type": "ping"}).to_string()));
        if let Some(tool) = &p.tool {
            events.push((
                Some("content_block_start"),
                json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "tool_use", "id": "toolu_1", "name": tool, "input": {}}})
                .to_string(),
            ));
            for part in ["{\"text\":", "\"x\"}"] {
                events.push((
                    Some("content_block_delta"),
                    json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "input_json_delta", "partial_json": part}})
                    .to_string(),
                ));
            }
        } else {
            events.push((
                Some("content_block_start"),
                json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}})
                .to_string(),
            ));
            for w in words(&p.text) {
                events.push((
                    Some("content_block_delta"),
                    json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": w}})
                    .to_string(),
                ));
            }
        }
        events.push((
            Some("content_block_stop"),
            json!({"type": "content_block_stop", "index": 0}).to_string(),
        ));
        events.push((
            Some("message_delta"),
            json!({"type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": null},
            "usage": {"output_tokens": p.output_tokens}})
            .to_string(),
        ));
        events.push((
            Some("message_stop"),
            json!({"type": "message_stop"}).to_string(),
        ));
        return sse(events);
    }
    let content = match &p.tool {
        Some(tool) => {
            json!([{"type": "tool_use", "id": "toolu_1", "name": tool, "input": {"text": "x"}}])
        }
        None => json!([{"type": "text", "text": p.text}]),
    };
    axum::Json(
        json!({"id": "m1", "type": "message", "role": "assistant", "model": body["model"],
        "content": content, "stop_reason": stop,
        "usage": {"input_tokens": p.input_tokens, "output_tokens": p.output_tokens}}),
    )
    .into_response()
}
