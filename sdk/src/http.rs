//! Outbound HTTP for plugins (feature `http`): a small blocking client over `wasi:http`.
//!
//! The host checks every request against the plugin's manifest (`[[grants.http]]`) and
//! refuses what is not granted; the step's log then says which grant is missing. Secrets
//! are never in the plugin: put a placeholder in a header and the host substitutes it for
//! the hosts the manifest allows, e.g.
//!
//! ```no_run
//! # fn main() -> corral_sdk::Result<()> {
//! let resp = corral_sdk::http::request(
//!     "GET",
//!     "https://api.github.com/repos/o/r/issues",
//!     &[("authorization", "Bearer ${secret:GITHUB_TOKEN}")],
//!     None,
//! )?;
//! let issues: serde_json::Value = resp.json()?;
//! # Ok(()) }
//! ```

use crate::{Error, Result};
use serde::de::DeserializeOwned;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme,
};
use wasip2::io::streams::StreamError;

/// Largest response body read, in bytes (the host has its own, per-step budget too).
const MAX_BODY: usize = 64 << 20;

/// A response: status, headers (names in lower case) and the whole body.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header pairs.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body)
            .map_err(|e| Error::permanent(format!("the response is not the JSON expected: {e}")))
    }

    /// `Ok(self)` for a 2xx status; otherwise an error (transient for 429 and 5xx).
    pub fn error_for_status(self) -> Result<Response> {
        match self.status {
            200..=299 => Ok(self),
            429 | 500..=599 => Err(Error::transient(format!(
                "the server answered {}: {}",
                self.status,
                preview(&self.text())
            ))),
            s => Err(Error::permanent(format!(
                "the server answered {s}: {}",
                preview(&self.text())
            ))),
        }
    }
}

fn preview(text: &str) -> String {
    text.chars().take(200).collect()
}

/// `GET url`.
pub fn get(url: &str) -> Result<Response> {
    request("GET", url, &[], None)
}

fn split_url(url: &str) -> Result<(Scheme, String, String)> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| Error::invalid_input(format!("`{url}` is not an absolute http(s) URL")))?;
    let scheme = match scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => {
            return Err(Error::invalid_input(format!(
                "scheme `{other}` is not http(s)"
            )));
        }
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (rest.get(..i).unwrap_or(""), rest.get(i..).unwrap_or("/")),
        None => (rest, "/"),
    };
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    Ok((scheme, authority.to_string(), path))
}

fn method(m: &str) -> Method {
    match m {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "PATCH" => Method::Patch,
        "OPTIONS" => Method::Options,
        other => Method::Other(other.to_string()),
    }
}

fn failed(e: &ErrorCode) -> Error {
    match e {
        ErrorCode::HttpRequestDenied | ErrorCode::DestinationIpProhibited => Error::permanent(
            format!("the host refused the request ({e:?}); the step's log names the missing grant"),
        ),
        ErrorCode::ConnectionLimitReached | ErrorCode::HttpResponseBodySize(_) => {
            Error::permanent(format!("a limit of the step was reached: {e:?}"))
        }
        other => Error::transient(format!("the request failed: {other:?}")),
    }
}

/// Writes the request body (in the 4 KiB pieces WASI streams take) and finishes it.
fn send_body(outgoing: OutgoingBody, body: Option<&[u8]>) -> Result<()> {
    if let Some(bytes) = body {
        let stream = outgoing
            .write()
            .map_err(|()| Error::permanent("the request body stream was already taken"))?;
        for chunk in bytes.chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|e| Error::transient(format!("sending the body: {e:?}")))?;
        }
        drop(stream);
    }
    OutgoingBody::finish(outgoing, None)
        .map_err(|e| Error::transient(format!("sending the body: {e:?}")))
}

/// Sends one request and reads the whole response.
pub fn request(
    method_name: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Response> {
    let (scheme, authority, path) = split_url(url)?;
    let mut entries: Vec<(String, Vec<u8>)> = headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.as_bytes().to_vec()))
        .collect();
    // A known length, so servers that do not read chunked bodies get the whole body.
    if let Some(bytes) = body
        && !entries.iter().any(|(k, _)| k == "content-length")
    {
        entries.push((
            "content-length".into(),
            bytes.len().to_string().into_bytes(),
        ));
    }
    let fields = Fields::from_list(&entries)
        .map_err(|e| Error::invalid_input(format!("request headers: {e:?}")))?;
    let req = OutgoingRequest::new(fields);
    let bad = |what: &str| Error::invalid_input(format!("invalid {what} in `{url}`"));
    req.set_method(&method(method_name))
        .map_err(|()| bad("method"))?;
    req.set_scheme(Some(&scheme)).map_err(|()| bad("scheme"))?;
    req.set_authority(Some(&authority))
        .map_err(|()| bad("host"))?;
    req.set_path_with_query(Some(&path))
        .map_err(|()| bad("path"))?;
    let outgoing = req
        .body()
        .map_err(|()| Error::permanent("the request body was already taken"))?;
    let future = outgoing_handler::handle(req, None).map_err(|e| failed(&e))?;
    let wait = || loop {
        match future.get() {
            Some(result) => break result,
            None => future.subscribe().block(),
        }
    };
    let sent = send_body(outgoing, body);
    let response = wait();
    // A refused request closes its body stream: report the refusal, not the write.
    if let (Err(write), Ok(Ok(_))) = (&sent, &response) {
        return Err(write.clone());
    }
    if let (Err(write), Err(())) = (sent, &response) {
        return Err(write);
    }
    let response = response
        .map_err(|()| Error::permanent("the response was already taken"))?
        .map_err(|e| failed(&e))?;
    let status = response.status();
    let headers = response
        .headers()
        .entries()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
        .collect();
    let incoming = response
        .consume()
        .map_err(|()| Error::permanent("the response body was already taken"))?;
    let stream = incoming
        .stream()
        .map_err(|()| Error::permanent("the response body stream was already taken"))?;
    let mut bytes = Vec::new();
    let outcome = loop {
        match stream.blocking_read(64 << 10) {
            Ok(chunk) => {
                bytes.extend_from_slice(&chunk);
                if bytes.len() > MAX_BODY {
                    break Err(Error::permanent("the response body is larger than 64 MiB"));
                }
            }
            Err(StreamError::Closed) => break Ok(()),
            Err(StreamError::LastOperationFailed(e)) => {
                break Err(Error::transient(format!(
                    "reading the response: {}",
                    e.to_debug_string()
                )));
            }
        }
    };
    drop(stream);
    let _ = IncomingBody::finish(incoming);
    outcome?;
    Ok(Response {
        status,
        headers,
        body: bytes,
    })
}
