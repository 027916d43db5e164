//! What the providers share: one HTTP client, bounded reads of a response body and of a
//! server-sent event stream, and the mapping of HTTP failures to [`ModelError`].

use super::{ChatResponse, DeltaSink, ModelError};
use std::time::Duration;

/// Where and how to reach one model.
pub struct Endpoint<'a> {
    pub base_url: &'a str,
    pub model: &'a str,
    pub key: Option<&'a str>,
    pub stream: bool,
    pub limits: CallLimits,
}

/// Sends `req` and reads the answer within the call's timeout: with `read_stream` when
/// `ep.stream` asked for a stream and the server streams, else as one JSON body with
/// `parse` (a server that ignores `stream` and answers with one body is read as such; its
/// text reaches `deltas` in one piece).
pub async fn exchange<'d, S, F>(
    provider: &str,
    ep: &Endpoint<'_>,
    req: reqwest_tls::RequestBuilder,
    deltas: DeltaSink<'d>,
    read_stream: S,
    parse: fn(&[u8]) -> Result<ChatResponse, ModelError>,
) -> Result<ChatResponse, ModelError>
where
    S: FnOnce(reqwest_tls::Response, DeltaSink<'d>) -> F,
    F: std::future::Future<Output = Result<ChatResponse, ModelError>>,
{
    let resp = send(provider, req, ep.limits, ep.key).await?;
    let streamed = ep.stream && !is_json(&resp);
    let work = async {
        if streamed {
            read_stream(resp, deltas).await
        } else {
            let body = read_body(provider, resp).await?;
            let answer = parse(&body)?;
            if !answer.content.is_empty() {
                deltas(&answer.content);
            }
            Ok(answer)
        }
    };
    tokio::time::timeout(ep.limits.timeout, work)
        .await
        .map_err(|_| ModelError::Transient(format!("{provider}: timed out reading the answer")))?
}

/// Largest response body read from a provider (a non-streamed answer or an error).
pub const MAX_RESPONSE_BYTES: usize = 4 << 20;
/// Longest line of a streamed answer (one SSE `data:` line).
pub const MAX_STREAM_LINE: usize = 1 << 20;
/// Most bytes of a whole streamed answer (all lines together).
pub const MAX_STREAM_BYTES: usize = 16 << 20;
/// Longest answer text or tool-call arguments kept from a provider.
pub const MAX_CONTENT: usize = 4 << 20;
/// Most tool calls kept from one answer.
pub const MAX_TOOL_CALLS: usize = 64;
/// How much of a provider's error body is quoted in the error.
const ERROR_EXCERPT: usize = 300;

/// Limits of one call to a provider.
#[derive(Debug, Clone, Copy)]
pub struct CallLimits {
    /// The whole call, from sending to the last byte of the answer.
    pub timeout: Duration,
}

/// The HTTP client for every provider: HTTP or HTTPS (rustls with ring, verified against
/// the system's trusted roots and the webpki roots), no proxies from the environment, no
/// redirects (a provider that redirects is misconfigured; following it could carry the key
/// elsewhere).
pub fn client() -> Result<reqwest_tls::Client, ModelError> {
    reqwest_tls::Client::builder()
        .use_rustls_tls()
        .connect_timeout(Duration::from_secs(10))
        .redirect(reqwest_tls::redirect::Policy::none())
        .no_proxy()
        .build()
        .map_err(|e| ModelError::Permanent(format!("cannot build the HTTP client: {e}")))
}

/// Removes `secret` from text that could quote it (a provider's error body).
pub fn redact(text: &str, secret: Option<&str>) -> String {
    match secret {
        Some(s) if s.len() >= 4 => text.replace(s, "[redacted]"),
        _ => text.to_string(),
    }
}

/// The error for a transport failure (connect, timeout, a dropped body).
pub fn transport_error(provider: &str, e: &reqwest_tls::Error) -> ModelError {
    let what = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "could not connect".to_string()
    } else {
        // reqwest's Display of the source chain says what went wrong; URLs carry no key.
        let mut text = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        text
    };
    if e.is_builder() {
        ModelError::Permanent(format!("{provider}: {what}"))
    } else {
        ModelError::Transient(format!("{provider}: {what}"))
    }
}

/// The error for a non-2xx answer: 408, 409, 429 and 5xx may pass; other 4xx will not.
pub fn status_error(
    provider: &str,
    status: reqwest_tls::StatusCode,
    body: &[u8],
    secret: Option<&str>,
) -> ModelError {
    let text = String::from_utf8_lossy(body);
    let excerpt = crate::capabilities::log::neutralise(&redact(&text, secret), ERROR_EXCERPT);
    let message = format!("{provider} answered HTTP {}: {excerpt}", status.as_u16());
    if status.is_server_error() || matches!(status.as_u16(), 408 | 409 | 429) {
        ModelError::Transient(message)
    } else {
        ModelError::Permanent(message)
    }
}

/// Reads a whole body, up to [`MAX_RESPONSE_BYTES`].
pub async fn read_body(
    provider: &str,
    mut resp: reqwest_tls::Response,
) -> Result<Vec<u8>, ModelError> {
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| transport_error(provider, &e))?
    {
        if body.len().saturating_add(chunk.len()) > MAX_RESPONSE_BYTES {
            return Err(ModelError::Transient(format!(
                "{provider}: the answer is larger than {MAX_RESPONSE_BYTES} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Sends a request under the call's timeout and answers the response if it is a 2xx;
/// otherwise reads (a bounded part of) the error body and maps the status.
pub async fn send(
    provider: &str,
    req: reqwest_tls::RequestBuilder,
    limits: CallLimits,
    secret: Option<&str>,
) -> Result<reqwest_tls::Response, ModelError> {
    let resp = req
        .timeout(limits.timeout)
        .send()
        .await
        .map_err(|e| transport_error(provider, &e))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let body = read_body(provider, resp).await.unwrap_or_default();
    Err(status_error(provider, status, &body, secret))
}

/// The `data:` payloads of a server-sent event stream, one at a time, each line bounded
/// by [`MAX_STREAM_LINE`] and the stream by [`MAX_STREAM_BYTES`]. `event:`, `id:`,
/// comments and blank lines are skipped (both protocols repeat the event's type in its
/// data).
pub struct SseReader {
    resp: reqwest_tls::Response,
    provider: String,
    buf: Vec<u8>,
    read: usize,
    done: bool,
}

impl SseReader {
    /// Reads `resp`'s body as an event stream.
    pub fn new(provider: &str, resp: reqwest_tls::Response) -> Self {
        SseReader {
            resp,
            provider: provider.to_string(),
            buf: Vec::new(),
            read: 0,
            done: false,
        }
    }

    /// The next `data:` payload; `None` at the end of the body.
    pub async fn next_data(&mut self) -> Result<Option<String>, ModelError> {
        loop {
            if let Some(line) = self.take_line() {
                let line = line?;
                if let Some(data) = line.strip_prefix("data:") {
                    return Ok(Some(data.strip_prefix(' ').unwrap_or(data).to_string()));
                }
                continue;
            }
            if self.done {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                // A last line without its newline.
                self.buf.push(b'\n');
                continue;
            }
            match self
                .resp
                .chunk()
                .await
                .map_err(|e| transport_error(&self.provider, &e))?
            {
                Some(chunk) => {
                    self.read = self.read.saturating_add(chunk.len());
                    if self.read > MAX_STREAM_BYTES {
                        return Err(ModelError::Transient(format!(
                            "{}: the streamed answer is larger than {MAX_STREAM_BYTES} bytes",
                            self.provider
                        )));
                    }
                    self.buf.extend_from_slice(&chunk);
                }
                None => self.done = true,
            }
        }
    }

    fn take_line(&mut self) -> Option<Result<String, ModelError>> {
        match self.buf.iter().position(|b| *b == b'\n') {
            Some(end) => {
                if end > MAX_STREAM_LINE {
                    return Some(Err(self.line_too_long()));
                }
                let mut line: Vec<u8> = self.buf.drain(..=end).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                Some(Ok(String::from_utf8_lossy(&line).into_owned()))
            }
            None if self.buf.len() > MAX_STREAM_LINE => Some(Err(self.line_too_long())),
            None => None,
        }
    }

    fn line_too_long(&self) -> ModelError {
        ModelError::Transient(format!(
            "{}: a streamed line is longer than {MAX_STREAM_LINE} bytes",
            self.provider
        ))
    }
}

/// Appends `more` to `text`, refusing past [`MAX_CONTENT`].
pub fn append_bounded(provider: &str, text: &mut String, more: &str) -> Result<(), ModelError> {
    if text.len().saturating_add(more.len()) > MAX_CONTENT {
        return Err(ModelError::Transient(format!(
            "{provider}: the answer is longer than {MAX_CONTENT} bytes"
        )));
    }
    text.push_str(more);
    Ok(())
}

/// Parses a JSON text the plugin gave (a schema, tool parameters, tool-call arguments).
pub fn json_value(what: &str, text: &str) -> Result<serde_json::Value, ModelError> {
    serde_json::from_str(text)
        .map_err(|e| ModelError::InvalidRequest(format!("{what} is not valid JSON: {e}")))
}

/// Whether a response says its body is JSON (not an event stream).
pub fn is_json(resp: &reqwest_tls::Response) -> bool {
    resp.headers()
        .get(reqwest_tls::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        })
}
