//! `corral:plugin/model` (0.2.0): a guest's chat request, bounded and converted to the
//! provider-neutral [`crate::models::ChatRequest`], handed to [`RunServices::model`]
//! (grants, token budgets and providers live there), and the answer converted back.
//!
//! Every bound of `wit/model.wit` is checked here, by counting and measuring the lifted
//! values, before anything is converted, copied or sent: a request outside them is
//! refused with `invalid-input` naming the bound. (Lifting itself is bounded by the
//! guest's memory limit: the guest cannot hand over more than it holds.)

use super::{HostState, RunServices, not_granted};
use crate::engine::bindings::{model, types};
use crate::engine::json;
use crate::models;
use std::sync::Arc;

/// The longest alias.
pub const MAX_ALIAS_BYTES: usize = 64;
/// The most messages in one request.
pub const MAX_MESSAGES: usize = 256;
/// All the text of one request together.
pub const MAX_TEXT_BYTES: usize = 1 << 20;
/// The most tool definitions in one request.
pub const MAX_TOOLS: usize = 64;
/// The longest tool name.
pub const MAX_TOOL_NAME_BYTES: usize = 64;
/// The longest tool description.
pub const MAX_DESCRIPTION_BYTES: usize = 8 << 10;
/// The largest schema (a tool's parameters, the response schema).
pub const MAX_SCHEMA_BYTES: usize = 64 << 10;
/// The most tool calls in one message.
pub const MAX_TOOL_CALLS: usize = 64;
/// The longest tool-call id.
pub const MAX_ID_BYTES: usize = 256;
/// The most stop sequences.
pub const MAX_STOP: usize = 4;
/// The longest stop sequence.
pub const MAX_STOP_BYTES: usize = 256;
/// The highest temperature.
pub const MAX_TEMPERATURE: f32 = 2.0;

/// Why a request is refused, as the guest sees it.
fn invalid(message: String) -> types::PluginError {
    types::PluginError::InvalidInput(format!("model request: {message}"))
}

fn check_len(what: &str, text: &str, min: usize, max: usize) -> Result<(), String> {
    let n = text.len();
    if n < min || n > max {
        return Err(if min == 0 {
            format!("{what} is {n} bytes, more than the limit of {max}")
        } else {
            format!("{what} is {n} bytes; it must be {min} to {max}")
        });
    }
    Ok(())
}

fn check_schema(what: &str, text: &str) -> Result<(), String> {
    json::check(what, text, MAX_SCHEMA_BYTES)?;
    if !text.trim_start().starts_with('{') {
        return Err(format!("{what} is not a JSON object (a schema)"));
    }
    Ok(())
}

fn check_tool_name(what: &str, name: &str) -> Result<(), String> {
    check_len(what, name, 1, MAX_TOOL_NAME_BYTES)?;
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(format!(
            "{what} may hold only ASCII letters, digits, `_` and `-`"
        ));
    }
    Ok(())
}

/// Checks every bound of `wit/model.wit` on the lifted request, counting first and
/// measuring before parsing anything, and copying nothing.
pub fn check_request(alias: &str, req: &model::ChatRequest) -> Result<(), String> {
    check_len("the alias", alias, 1, MAX_ALIAS_BYTES)?;
    let n = req.messages.len();
    if n == 0 || n > MAX_MESSAGES {
        return Err(format!(
            "it has {n} messages; it must have 1 to {MAX_MESSAGES}"
        ));
    }
    if req.tools.len() > MAX_TOOLS {
        return Err(format!(
            "it has {} tools, more than the limit of {MAX_TOOLS}",
            req.tools.len()
        ));
    }
    if req.stop.len() > MAX_STOP {
        return Err(format!(
            "it has {} stop sequences, more than the limit of {MAX_STOP}",
            req.stop.len()
        ));
    }
    for m in &req.messages {
        if m.tool_calls.len() > MAX_TOOL_CALLS {
            return Err(format!(
                "a message has {} tool calls, more than the limit of {MAX_TOOL_CALLS}",
                m.tool_calls.len()
            ));
        }
    }

    // The total text, summed with saturation before anything is parsed.
    let mut total = 0usize;
    let mut add = |n: usize| total = total.saturating_add(n);
    for m in &req.messages {
        add(m.content.len());
        add(m.tool_call_id.as_ref().map_or(0, String::len));
        for c in &m.tool_calls {
            add(c.id.len());
            add(c.name.len());
            add(c.arguments.len());
        }
    }
    for t in &req.tools {
        add(t.name.len());
        add(t.description.len());
        add(t.parameters.len());
    }
    for s in &req.stop {
        add(s.len());
    }
    add(req.response_schema.as_ref().map_or(0, String::len));
    if total > MAX_TEXT_BYTES {
        return Err(format!(
            "its text is {total} bytes in all, more than the limit of {MAX_TEXT_BYTES}"
        ));
    }

    for (i, m) in req.messages.iter().enumerate() {
        let at = |what: &str| format!("message {i}'s {what}");
        match m.role {
            model::Role::Tool => match &m.tool_call_id {
                Some(id) => check_len(&at("tool-call-id"), id, 1, MAX_ID_BYTES)?,
                None => return Err(format!("message {i} has role tool but no tool-call-id")),
            },
            _ if m.tool_call_id.is_some() => {
                return Err(format!(
                    "message {i} has a tool-call-id but its role is not tool"
                ));
            }
            _ => {}
        }
        if !m.tool_calls.is_empty() && m.role != model::Role::Assistant {
            return Err(format!(
                "message {i} has tool calls but its role is not assistant"
            ));
        }
        for c in &m.tool_calls {
            check_len(&at("tool call id"), &c.id, 1, MAX_ID_BYTES)?;
            check_tool_name(&at("tool call name"), &c.name)?;
        }
    }
    for (i, t) in req.tools.iter().enumerate() {
        check_tool_name(&format!("tool {i}'s name"), &t.name)?;
        check_len(
            &format!("tool `{}`'s description", t.name),
            &t.description,
            0,
            MAX_DESCRIPTION_BYTES,
        )?;
        check_schema(&format!("tool `{}`'s parameters", t.name), &t.parameters)?;
        if req.tools.iter().take(i).any(|u| u.name == t.name) {
            return Err(format!("tool `{}` is defined twice", t.name));
        }
    }
    for s in &req.stop {
        check_len("a stop sequence", s, 1, MAX_STOP_BYTES)?;
    }
    if let Some(schema) = &req.response_schema {
        check_schema("the response schema", schema)?;
    }
    if req.max_tokens == Some(0) {
        return Err("max-tokens is 0; it must be at least 1".into());
    }
    if let Some(t) = req.temperature
        && !(t.is_finite() && (0.0..=MAX_TEMPERATURE).contains(&t))
    {
        return Err(format!(
            "temperature is {t}; it must be a number from 0 to {MAX_TEMPERATURE}"
        ));
    }
    Ok(())
}

fn role(r: model::Role) -> models::Role {
    match r {
        model::Role::System => models::Role::System,
        model::Role::User => models::Role::User,
        model::Role::Assistant => models::Role::Assistant,
        model::Role::Tool => models::Role::Tool,
    }
}

fn call_in(c: model::ToolCall) -> models::ToolCall {
    models::ToolCall {
        id: c.id,
        name: c.name,
        arguments: c.arguments,
    }
}

fn call_out(c: models::ToolCall) -> model::ToolCall {
    model::ToolCall {
        id: c.id,
        name: c.name,
        arguments: c.arguments,
    }
}

/// The provider-neutral request: the guest's strings are moved, not copied.
pub fn convert_request(req: model::ChatRequest) -> models::ChatRequest {
    models::ChatRequest {
        messages: req
            .messages
            .into_iter()
            .map(|m| models::Message {
                role: role(m.role),
                content: m.content,
                tool_calls: m.tool_calls.into_iter().map(call_in).collect(),
                tool_call_id: m.tool_call_id,
            })
            .collect(),
        tools: req
            .tools
            .into_iter()
            .map(|t| models::ToolDefinition {
                name: t.name,
                description: t.description,
                parameters: t.parameters,
            })
            .collect(),
        max_tokens: req.max_tokens,
        temperature: req.temperature,
        stop: req.stop,
        response_schema: req.response_schema,
    }
}

/// The guest's response.
pub fn convert_response(r: models::ChatResponse) -> model::ChatResponse {
    model::ChatResponse {
        content: r.content,
        tool_calls: r.tool_calls.into_iter().map(call_out).collect(),
        finish_reason: match r.finish_reason {
            models::FinishReason::Stop => model::FinishReason::Stop,
            models::FinishReason::Length => model::FinishReason::Length,
            models::FinishReason::ToolCalls => model::FinishReason::ToolCalls,
            models::FinishReason::ContentFilter => model::FinishReason::ContentFilter,
            models::FinishReason::Other => model::FinishReason::Other,
        },
        usage: model::Usage {
            input_tokens: r.usage.input_tokens,
            output_tokens: r.usage.output_tokens,
        },
        cached: r.cached,
    }
}

/// One `chat` call: bound, convert, delegate, convert back.
pub async fn chat(
    services: Option<Arc<dyn RunServices>>,
    alias: String,
    request: model::ChatRequest,
) -> Result<model::ChatResponse, types::PluginError> {
    check_request(&alias, &request).map_err(invalid)?;
    let Some(services) = services else {
        return Err(not_granted(&format!("model `{alias}`")));
    };
    let request = convert_request(request);
    // The run lifecycle streams the answer to the run's events itself; the guest gets
    // the whole answer.
    let ignore = |_: &str| {};
    services
        .model(&alias, &request, &ignore)
        .await
        .map(convert_response)
}

impl model::Host for HostState {
    async fn chat(
        &mut self,
        alias: String,
        request: model::ChatRequest,
    ) -> wasmtime::Result<Result<model::ChatResponse, types::PluginError>> {
        Ok(chat(self.services.clone(), alias, request).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: model::Role, content: &str) -> model::Message {
        model::Message {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }

    fn req(messages: Vec<model::Message>) -> model::ChatRequest {
        model::ChatRequest {
            messages,
            tools: Vec::new(),
            max_tokens: None,
            temperature: None,
            stop: Vec::new(),
            response_schema: None,
        }
    }

    fn tool(name: &str, parameters: &str) -> model::ToolDefinition {
        model::ToolDefinition {
            name: name.into(),
            description: "d".into(),
            parameters: parameters.into(),
        }
    }

    #[test]
    fn a_plain_request_passes_and_converts() {
        let mut r = req(vec![msg(model::Role::User, "hi")]);
        r.tools.push(tool("word-count", r#"{"type":"object"}"#));
        r.temperature = Some(0.0);
        assert_eq!(check_request("fast", &r), Ok(()));
        let c = convert_request(r);
        assert_eq!(c.messages.len(), 1);
        assert_eq!(c.messages.first().map(|m| m.role), Some(models::Role::User));
        assert_eq!(c.tools.first().map(|t| t.name.as_str()), Some("word-count"));
    }

    #[test]
    fn res_20_model_request_bounds_checked_before_conversion() {
        let one = || vec![msg(model::Role::User, "hi")];
        let refused = |alias: &str, r: &model::ChatRequest| check_request(alias, r).unwrap_err();
        assert!(refused("", &req(one())).contains("alias"));
        assert!(refused(&"a".repeat(65), &req(one())).contains("alias"));
        assert!(refused("fast", &req(Vec::new())).contains("messages"));
        let many = vec![msg(model::Role::User, "x"); MAX_MESSAGES + 1];
        assert!(refused("fast", &req(many)).contains("257 messages"));
        let big = vec![msg(model::Role::User, &"x".repeat(MAX_TEXT_BYTES + 1))];
        assert!(refused("fast", &req(big)).contains("text"));

        let mut r = req(one());
        r.tools = vec![tool("t", "{}"); MAX_TOOLS + 1];
        assert!(refused("fast", &r).contains("tools"));
        let mut r = req(one());
        r.tools = vec![tool(
            "t",
            &format!("{{\"a\":\"{}\"}}", "x".repeat(MAX_SCHEMA_BYTES)),
        )];
        assert!(refused("fast", &r).contains("parameters"));
        let mut r = req(one());
        r.tools = vec![tool("t", "[1]")];
        assert!(refused("fast", &r).contains("object"));
        let mut r = req(one());
        r.tools = vec![tool("t", &"[".repeat(200))];
        assert!(refused("fast", &r).contains("deeper"));
        let mut r = req(one());
        r.tools = vec![tool("bad name", "{}")];
        assert!(refused("fast", &r).contains("letters"));
        let mut r = req(one());
        r.tools = vec![tool("t", "{}"), tool("t", "{}")];
        assert!(refused("fast", &r).contains("twice"));
        let mut r = req(one());
        r.response_schema = Some("not json".into());
        assert!(refused("fast", &r).contains("response schema"));
        let mut r = req(one());
        r.stop = vec!["s".into(); MAX_STOP + 1];
        assert!(refused("fast", &r).contains("stop"));
        let mut r = req(one());
        r.temperature = Some(f32::NAN);
        assert!(refused("fast", &r).contains("temperature"));
        let mut r = req(one());
        r.max_tokens = Some(0);
        assert!(refused("fast", &r).contains("max-tokens"));

        let mut tool_msg = msg(model::Role::Tool, "42");
        assert!(refused("fast", &req(vec![tool_msg.clone()])).contains("tool-call-id"));
        tool_msg.tool_call_id = Some("c1".into());
        assert_eq!(check_request("fast", &req(vec![tool_msg])), Ok(()));
        let mut user = msg(model::Role::User, "x");
        user.tool_calls.push(model::ToolCall {
            id: "c1".into(),
            name: "t".into(),
            arguments: "{}".into(),
        });
        assert!(refused("fast", &req(vec![user])).contains("not assistant"));
    }
}
