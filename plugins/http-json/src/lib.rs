//! `http-json`: a connector for JSON HTTP APIs.
//!
//! **pull** (the step's config is the query):
//! `{"url": "http://api/items", "token_secret": "API_TOKEN", "items_field": "items",
//!   "next_field": "next", "cursor_param": "cursor"}`. Each page is `GET url` (plus
//! `?cursor=...` after the first); the items are the body's `items_field` (or the body,
//! if it is an array) and the next cursor is its `next_field` (none or null: done).
//!
//! **push** (config from the step): `{"url": "http://api/items", "token_secret": ...,
//! "batch_size": 100}`. Items are `POST`ed as JSON arrays of up to `batch_size`; the
//! count accepted is the body's `accepted` if it has one, else the batch size.
//!
//! **webhooks**: the delivery's JSON body becomes the items (an array, an object's
//! `items`, or the object itself).
//!
//! The token never enters the plugin: it sends `Authorization: Bearer
//! ${secret:NAME}` and the host fills it in for the hosts its manifest allows.

use corral_sdk::http::{self, Response};
use corral_sdk::{Connector, ConnectorInfo, Error, Page, Result, WebhookRequest};
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PullQuery {
    url: String,
    #[serde(default)]
    token_secret: Option<String>,
    #[serde(default = "items_field")]
    items_field: String,
    #[serde(default = "next_field")]
    next_field: String,
    #[serde(default = "cursor_param")]
    cursor_param: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PushConfig {
    url: String,
    #[serde(default)]
    token_secret: Option<String>,
    #[serde(default = "batch_size")]
    batch_size: usize,
}

fn items_field() -> String {
    "items".into()
}
fn next_field() -> String {
    "next".into()
}
fn cursor_param() -> String {
    "cursor".into()
}
fn batch_size() -> usize {
    100
}

fn auth(token_secret: &Option<String>) -> Option<String> {
    token_secret
        .as_ref()
        .map(|name| format!("Bearer ${{secret:{name}}}"))
}

fn send(method: &str, url: &str, token: &Option<String>, body: Option<&[u8]>) -> Result<Response> {
    let auth = auth(token);
    let mut headers = vec![("accept", "application/json")];
    if body.is_some() {
        headers.push(("content-type", "application/json"));
    }
    if let Some(a) = &auth {
        headers.push(("authorization", a.as_str()));
    }
    http::request(method, url, &headers, body)?.error_for_status()
}

/// Percent-encodes a query value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn items_of(body: Value, field: &str) -> Result<Vec<Value>> {
    match body {
        Value::Array(items) => Ok(items),
        Value::Object(mut map) => match map.remove(field) {
            Some(Value::Array(items)) => Ok(items),
            _ => Err(Error::permanent(format!(
                "the response has no `{field}` array"
            ))),
        },
        _ => Err(Error::permanent(
            "the response is not a JSON object or array",
        )),
    }
}

struct HttpJson;

impl Connector for HttpJson {
    fn info() -> ConnectorInfo {
        ConnectorInfo {
            name: "http-json".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Pulls pages of JSON items from an HTTP API and pushes items back.".into(),
        }
    }

    fn pull(query: Value, cursor: Option<String>) -> Result<Page> {
        let q: PullQuery = serde_json::from_value(query)
            .map_err(|e| Error::invalid_input(format!("query: {e}")))?;
        let url = match &cursor {
            None => q.url.clone(),
            Some(c) => {
                let sep = if q.url.contains('?') { '&' } else { '?' };
                format!("{}{sep}{}={}", q.url, q.cursor_param, encode(c))
            }
        };
        let body: Value = send("GET", &url, &q.token_secret, None)?.json()?;
        let next = match &body {
            Value::Object(map) => match map.get(&q.next_field) {
                Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            },
            _ => None,
        };
        let items = items_of(body, &q.items_field)?;
        corral_sdk::info(&format!("http-json: {} items from {}", items.len(), q.url));
        Ok(Page {
            items,
            next_cursor: next,
        })
    }

    fn push(items: Vec<Value>) -> Result<u32> {
        let c: PushConfig = corral_sdk::connector_config()?;
        let mut accepted = 0u32;
        for batch in items.chunks(c.batch_size.clamp(1, 10_000)) {
            let body = serde_json::to_vec(batch)
                .map_err(|e| Error::permanent(format!("cannot encode items: {e}")))?;
            let resp = send("POST", &c.url, &c.token_secret, Some(&body))?;
            let n = resp
                .json::<Value>()
                .ok()
                .and_then(|v| v.get("accepted").and_then(Value::as_u64))
                .unwrap_or(batch.len() as u64);
            accepted = accepted.saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
        }
        Ok(accepted)
    }

    fn handle_webhook(request: WebhookRequest) -> Result<Vec<Value>> {
        let body: Value = serde_json::from_slice(&request.body)
            .map_err(|e| Error::invalid_input(format!("the delivery is not JSON: {e}")))?;
        Ok(match body {
            Value::Array(items) => items,
            Value::Object(mut map) => match map.remove("items") {
                Some(Value::Array(items)) => items,
                Some(other) => vec![other],
                None => vec![Value::Object(map)],
            },
            other => vec![other],
        })
    }
}

corral_sdk::export_connector!(HttpJson);
