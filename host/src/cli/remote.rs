//! `--server URL --token T`: the run and plugin commands against a Corral server, over its
//! HTTP API, instead of the local database. `http://` or `https://` (rustls with the ring
//! provider; the system's trusted roots, plus `--ca-cert FILE` for a private CA).
//!
//! The client turns the API's `{"error": {"code", "message"}}` answers into refusals,
//! uploads a pipeline's local plugin files named by their content (`STEM@sha-<12 hex>`, so
//! running the same pipeline again uploads nothing), and reads a run's SSE stream itself:
//! heartbeats are skipped and a dropped connection is resumed with `Last-Event-ID`, so each
//! event arrives once and in order.

use crate::runs::pipeline::{Pipeline, PluginRef};
use crate::store::Event;
use bytes::Bytes;
use clap::Args;
use futures::StreamExt;
use futures::stream::BoxStream;
use reqwest_tls::header::{ACCEPT, CONTENT_TYPE};
use reqwest_tls::{Method, RequestBuilder, Response, StatusCode, Url};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// The exit code of a command whose server cannot be reached.
pub(super) const EXIT_UNREACHABLE: u8 = 3;

/// How long a plain request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a plugin upload may take (the server compiles the component before answering).
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(600);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// An event stream with no bytes for this long (the server sends a heartbeat after 15 to 22 s
/// of silence) is taken as a dead connection and resumed.
const STREAM_STALL: Duration = Duration::from_secs(45);
/// Without `--follow`: the replay is over once no event has come for this long.
const SNAPSHOT_QUIET: Duration = Duration::from_millis(1500);
/// Reconnections in a row, without a frame in between, before giving up on a stream.
const MAX_RECONNECTS: u32 = 8;
/// The first reconnection delay; doubles each time, up to [`RECONNECT_MAX`].
const RECONNECT_BASE: Duration = Duration::from_millis(250);
/// The longest reconnection delay.
const RECONNECT_MAX: Duration = Duration::from_secs(5);
/// The longest SSE line accepted.
const MAX_SSE_LINE: usize = 16 << 20;
/// The most runs the server lists per page.
const MAX_PAGE: i64 = 1000;

/// What one pipeline's uploads have done: the files uploaded, and the server's plugin list
/// once read.
#[derive(Default)]
struct Uploads {
    done: HashMap<PathBuf, PluginRef>,
    known: Option<Vec<Value>>,
}

/// `--server` and `--token`, on every command that can work against a server.
#[derive(Debug, Clone, Args)]
pub(super) struct ServerArgs {
    /// Work against the Corral server at this URL (e.g. `http://127.0.0.1:8080`, or
    /// `https://corral.example` behind a TLS proxy) instead of the local database.
    #[arg(long, env = "CORRAL_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// The API token for --server (sent as `Authorization: Bearer TOKEN`).
    #[arg(
        long,
        env = "CORRAL_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// For an https --server: also trust the CA certificates in this PEM file (a private
    /// CA, or a self-signed server certificate), besides the system's trusted roots.
    #[arg(long, env = "CORRAL_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
}

impl ServerArgs {
    /// The client for `--server`, or `None` to work embedded.
    pub(super) fn client(&self) -> Result<Option<Client>, RemoteError> {
        let Some(server) = self
            .server
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        else {
            return Ok(None);
        };
        let Some(token) = self
            .token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
        else {
            return Err(RemoteError::refused(
                401,
                "UNAUTHORIZED",
                "--server needs a token: pass --token or set CORRAL_TOKEN",
            ));
        };
        Client::new(server, token, self.ca_cert.as_deref()).map(Some)
    }
}

/// Why a remote command did not happen.
#[derive(Debug)]
pub(super) enum RemoteError {
    /// Refused, by the server (with its HTTP status) or before asking it (status 400).
    Refused {
        /// HTTP status.
        status: u16,
        /// Stable code, e.g. `RUN_NOT_FOUND`.
        code: String,
        /// What went wrong.
        message: String,
    },
    /// The server answered something that is not the API, or the exchange broke midway.
    Transport(String),
    /// The server could not be reached: connection refused, no such host, a TLS failure
    /// (an untrusted certificate), a timeout.
    Unreachable(String),
}

impl RemoteError {
    fn refused(status: u16, code: &str, message: impl Into<String>) -> Self {
        RemoteError::Refused {
            status,
            code: code.to_string(),
            message: message.into(),
        }
    }

    /// The refusal's code.
    pub(super) fn code(&self) -> Option<&str> {
        match self {
            RemoteError::Refused { code, .. } => Some(code),
            RemoteError::Transport(_) | RemoteError::Unreachable(_) => None,
        }
    }

    /// Prints the error and returns the exit code: a refusal prints `CODE: message` and
    /// exits 2 for the caller's mistakes (4xx), 1 for the server's (5xx); a server that
    /// cannot be reached exits 3; any other transport failure exits 1.
    pub(super) fn report(&self) -> ExitCode {
        match self {
            RemoteError::Refused { status, .. } => {
                eprintln!("{self}");
                ExitCode::from(if *status < 500 { 2 } else { 1 })
            }
            RemoteError::Transport(_) => {
                eprintln!("error: {self}");
                ExitCode::from(1)
            }
            RemoteError::Unreachable(_) => {
                eprintln!("error: {self}");
                ExitCode::from(EXIT_UNREACHABLE)
            }
        }
    }

    /// The error answer of a failed request, in the API's shape when it has it.
    async fn from_response(response: Response) -> RemoteError {
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let parsed = serde_json::from_str::<Value>(&text).ok().and_then(|v| {
            let error = v.get("error")?;
            let code = error.get("code")?.as_str()?.to_string();
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            Some((code, message))
        });
        let (code, message) = parsed.unwrap_or_else(|| {
            let text: String = text.trim().chars().take(200).collect();
            let message = if text.is_empty() {
                status.canonical_reason().unwrap_or("no reason").to_string()
            } else {
                text
            };
            (format!("HTTP_{}", status.as_u16()), message)
        });
        RemoteError::Refused {
            status: status.as_u16(),
            code,
            message,
        }
    }
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemoteError::Refused { code, message, .. } => write!(f, "{code}: {message}"),
            RemoteError::Transport(message) | RemoteError::Unreachable(message) => {
                f.write_str(message)
            }
        }
    }
}

impl std::error::Error for RemoteError {}

/// An error with its causes, which is where reqwest says what actually went wrong.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Whether a TLS handshake failed because the server's certificate is not trusted
/// (unknown issuer, expired, wrong name...): rustls says so in the error chain.
fn untrusted_certificate(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(cause) = next {
        let rustls_error = cause.downcast_ref::<rustls::Error>().or_else(|| {
            cause
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if matches!(
            rustls_error,
            Some(rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented)
        ) {
            return true;
        }
        next = cause.source();
    }
    chain(e).contains("invalid peer certificate")
}

/// The certificates of a `--ca-cert` PEM file.
fn ca_certificates(path: &Path) -> Result<Vec<reqwest_tls::Certificate>, RemoteError> {
    let invalid = |why: String| {
        RemoteError::refused(400, "INVALID_CA_CERT", format!("{}: {why}", path.display()))
    };
    let meta = std::fs::metadata(path).map_err(|e| invalid(e.to_string()))?;
    if meta.len() > 4 << 20 {
        return Err(invalid("larger than 4 MiB".into()));
    }
    let pem = std::fs::read(path).map_err(|e| invalid(e.to_string()))?;
    let certs = reqwest_tls::Certificate::from_pem_bundle(&pem)
        .map_err(|e| invalid(format!("not PEM certificates: {}", chain(&e))))?;
    if certs.is_empty() {
        return Err(invalid(
            "no certificate in it (expected -----BEGIN CERTIFICATE----- blocks)".into(),
        ));
    }
    Ok(certs)
}

/// A client of one server, with one token.
#[derive(Debug, Clone)]
pub(super) struct Client {
    http: reqwest_tls::Client,
    base: Url,
    token: String,
}

impl Client {
    fn new(server: &str, token: &str, ca_cert: Option<&Path>) -> Result<Client, RemoteError> {
        let text = if server.contains("://") {
            server.to_string()
        } else {
            format!("http://{server}")
        };
        let invalid = |why: String| RemoteError::refused(400, "INVALID_SERVER", why);
        let mut base =
            Url::parse(&text).map_err(|e| invalid(format!("`{server}` is not a URL: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(invalid(format!(
                "`{server}`: only http:// and https:// servers are supported"
            )));
        }
        if base.host_str().is_none_or(str::is_empty) {
            return Err(invalid(format!("`{server}` has no host")));
        }
        base.set_query(None);
        base.set_fragment(None);
        // rustls on ring (as the rest of the host), the system's roots and webpki-roots.
        let mut builder = reqwest_tls::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .no_proxy()
            .user_agent(concat!("corral/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = ca_cert {
            for cert in ca_certificates(path)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(|e| {
            RemoteError::Transport(format!("cannot make an HTTP client: {}", chain(&e)))
        })?;
        Ok(Client {
            http,
            base,
            token: token.to_string(),
        })
    }

    /// The server's URL, as given.
    pub(super) fn server(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// The URL of an API path, each segment percent-encoded (a run id cannot reach
    /// another route).
    fn url(&self, segments: &[&str]) -> Result<Url, RemoteError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| RemoteError::Transport(format!("`{}` cannot be a base URL", self.base)))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    fn request(&self, method: Method, segments: &[&str]) -> Result<RequestBuilder, RemoteError> {
        Ok(self
            .http
            .request(method, self.url(segments)?)
            .bearer_auth(&self.token))
    }

    fn transport(&self, e: &reqwest_tls::Error) -> RemoteError {
        let text = chain(e);
        if untrusted_certificate(e) {
            return RemoteError::Unreachable(format!(
                "cannot talk to {}: the server's TLS certificate is not trusted \
                 (for a private CA, pass --ca-cert FILE): {text}",
                self.server()
            ));
        }
        if e.is_connect() || e.is_timeout() {
            return RemoteError::Unreachable(format!("cannot talk to {}: {text}", self.server()));
        }
        RemoteError::Transport(format!("cannot talk to {}: {text}", self.server()))
    }

    /// Sends a request: a success answer, or the refusal in the answer.
    async fn send(
        &self,
        request: RequestBuilder,
        timeout: Duration,
    ) -> Result<Response, RemoteError> {
        let response = request
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| self.transport(&e))?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(RemoteError::from_response(response).await)
        }
    }

    /// Sends a request and reads its JSON answer.
    async fn json(&self, request: RequestBuilder) -> Result<Value, RemoteError> {
        let response = self.send(request, REQUEST_TIMEOUT).await?;
        response.json::<Value>().await.map_err(|e| {
            RemoteError::Transport(format!(
                "{} answered something that is not JSON: {}",
                self.server(),
                chain(&e)
            ))
        })
    }

    fn unexpected(&self, what: &str) -> RemoteError {
        RemoteError::Transport(format!(
            "{} answered without {what}: is it a Corral server?",
            self.server()
        ))
    }

    /// An array field of an answer.
    fn array(&self, doc: &Value, key: &str) -> Result<Vec<Value>, RemoteError> {
        doc.get(key)
            .and_then(Value::as_array)
            .cloned()
            .ok_or_else(|| self.unexpected(&format!("`{key}`")))
    }

    // ---- plugins ----

    /// `GET /v1/plugins`.
    pub(super) async fn plugins(&self) -> Result<Vec<Value>, RemoteError> {
        let doc = self
            .json(self.request(Method::GET, &["v1", "plugins"])?)
            .await?;
        self.array(&doc, "plugins")
    }

    /// `POST /v1/plugins?name=&version=` with the component's bytes (without a name or a
    /// version, the server takes what the plugin says about itself): the new plugin's
    /// `{id, name, version, digest, world}`.
    pub(super) async fn upload(
        &self,
        name: Option<&str>,
        version: Option<&str>,
        bytes: Vec<u8>,
    ) -> Result<Value, RemoteError> {
        let mut query = Vec::new();
        if let Some(name) = name {
            query.push(("name", name));
        }
        if let Some(version) = version {
            query.push(("version", version));
        }
        let request = self
            .request(Method::POST, &["v1", "plugins"])?
            .query(&query)
            .header(CONTENT_TYPE, "application/wasm")
            .body(bytes);
        let response = self.send(request, UPLOAD_TIMEOUT).await?;
        response.json::<Value>().await.map_err(|e| {
            RemoteError::Transport(format!(
                "{} answered something that is not JSON: {}",
                self.server(),
                chain(&e)
            ))
        })
    }

    /// `PUT /v1/plugins/{id}/manifest` (admin only).
    pub(super) async fn set_manifest(
        &self,
        plugin_id: &str,
        manifest: &Value,
    ) -> Result<(), RemoteError> {
        let request = self
            .request(Method::PUT, &["v1", "plugins", plugin_id, "manifest"])?
            .json(manifest);
        self.send(request, REQUEST_TIMEOUT).await.map(drop)
    }

    /// Gives the plugin `plugin_id` (as registered: `found`) the manifest beside its local
    /// file, unless it has exactly that one already.
    async fn sync_manifest(&self, path: &Path, found: &Value) -> Result<(), RemoteError> {
        let Some(manifest) = local_manifest(path)? else {
            return Ok(());
        };
        if found.get("manifest") == Some(&manifest) {
            return Ok(());
        }
        let id = found
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| self.unexpected("a plugin `id`"))?;
        self.set_manifest(id, &manifest).await
    }

    /// Makes sure the server has the plugin file at `path`, as `STEM@sha-<12 hex>`, and
    /// returns that reference. `known` caches the server's plugin list.
    async fn ensure_plugin(
        &self,
        path: &Path,
        known: &mut Option<Vec<Value>>,
    ) -> Result<PluginRef, RemoteError> {
        let bytes = tokio::fs::read(path).await.map_err(|e| {
            RemoteError::refused(
                400,
                "INVALID_COMPONENT",
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        let hex = hex::encode(Sha256::digest(&bytes));
        let digest = format!("sha256:{hex}");
        let name = plugin_name(path);
        let version = format!("sha-{}", hex.get(..12).unwrap_or(&hex));
        let named = PluginRef::Named {
            name: name.clone(),
            version: version.clone(),
        };
        if known.is_none() {
            *known = Some(self.plugins().await?);
        }
        if let Some(found) = find_plugin(known.as_deref().unwrap_or_default(), &name, &version) {
            check_digest(found, &named, &digest)?;
            self.sync_manifest(path, found).await?;
            return Ok(named);
        }
        match self.upload(Some(&name), Some(&version), bytes).await {
            Ok(created) => {
                self.sync_manifest(path, &created).await?;
                Ok(named)
            }
            // Uploaded by someone else since we looked: the same bytes are as good.
            Err(e) if e.code() == Some("PLUGIN_EXISTS") => {
                let plugins = self.plugins().await?;
                let found = find_plugin(&plugins, &name, &version).ok_or(e)?;
                check_digest(found, &named, &digest)?;
                self.sync_manifest(path, found).await?;
                *known = Some(plugins);
                Ok(named)
            }
            Err(e) => Err(e),
        }
    }

    /// The pipeline as the API's inline JSON form: each local plugin file (of a step or
    /// of the `[tools]` table) uploaded once and its path replaced by `name@version`.
    pub(super) async fn inline_pipeline(&self, written: &Pipeline) -> Result<Value, RemoteError> {
        let mut pipeline = written.clone();
        let mut uploads = Uploads::default();
        for (name, plugin) in pipeline.tools.iter_mut() {
            if let PluginRef::Path(path) = plugin {
                let path = path.clone();
                let field = format!("tools.{name}");
                let what = format!("tool `{name}`");
                *plugin = self
                    .upload_local(written, &path, &field, &what, &mut uploads)
                    .await?;
            }
        }
        for (i, step) in pipeline.steps.iter_mut().enumerate() {
            if let PluginRef::Path(path) = &step.plugin {
                let path = path.clone();
                let field = format!("steps[{i}].plugin");
                let what = format!("step `{}`", step.name);
                step.plugin = self
                    .upload_local(written, &path, &field, &what, &mut uploads)
                    .await?;
            }
        }
        serde_json::to_value(&pipeline)
            .map_err(|e| RemoteError::refused(400, "INVALID_PIPELINE", e.to_string()))
    }

    /// Uploads the plugin file at `path` once per pipeline; a file that is not a usable
    /// plugin is a bad pipeline (naming `field`), as embedded.
    async fn upload_local(
        &self,
        written: &Pipeline,
        path: &Path,
        field: &str,
        what: &str,
        uploads: &mut Uploads,
    ) -> Result<PluginRef, RemoteError> {
        if let Some(named) = uploads.done.get(path) {
            return Ok(named.clone());
        }
        let named = self
            .ensure_plugin(path, &mut uploads.known)
            .await
            .map_err(|e| match e {
                RemoteError::Refused {
                    status,
                    code,
                    message,
                } if matches!(code.as_str(), "INVALID_COMPONENT" | "BODY_TOO_LARGE") => {
                    let file = path.file_name().map_or_else(
                        || path.display().to_string(),
                        |n| n.to_string_lossy().into_owned(),
                    );
                    RemoteError::Refused {
                        status,
                        code: "INVALID_PIPELINE".into(),
                        message: written
                            .field_error(field, format!("{what} (`{file}`): {code}: {message}"))
                            .to_string(),
                    }
                }
                other => other,
            })?;
        uploads.done.insert(path.to_path_buf(), named.clone());
        Ok(named)
    }

    // ---- runs ----

    /// `POST /v1/runs` with an inline pipeline; the new run's id.
    pub(super) async fn submit(
        &self,
        pipeline: Value,
        input: Value,
    ) -> Result<String, RemoteError> {
        let request = self
            .request(Method::POST, &["v1", "runs"])?
            .json(&json!({"pipeline": pipeline, "input": input}));
        let doc = self.json(request).await?;
        doc.get("run_id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| self.unexpected("`run_id`"))
    }

    /// Up to `limit` runs, newest first, following `next_cursor` past the server's page size.
    pub(super) async fn list_runs(
        &self,
        status: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Value>, RemoteError> {
        let mut runs = Vec::new();
        let mut remaining = limit;
        let mut cursor: Option<String> = None;
        loop {
            let mut query = vec![("limit", remaining.min(MAX_PAGE).to_string())];
            if let Some(status) = status {
                query.push(("status", status.to_string()));
            }
            if let Some(cursor) = &cursor {
                query.push(("cursor", cursor.clone()));
            }
            let page = self
                .json(self.request(Method::GET, &["v1", "runs"])?.query(&query))
                .await?;
            let got = self.array(&page, "runs")?;
            if got.is_empty() {
                break;
            }
            remaining = remaining.saturating_sub(i64::try_from(got.len()).unwrap_or(i64::MAX));
            runs.extend(got);
            cursor = page
                .get("next_cursor")
                .and_then(Value::as_str)
                .map(str::to_string);
            if remaining <= 0 || cursor.is_none() {
                break;
            }
        }
        Ok(runs)
    }

    /// `GET /v1/runs/{id}`: `{run, output, steps, attempts}`.
    pub(super) async fn run(&self, run_id: &str) -> Result<Value, RemoteError> {
        self.json(self.request(Method::GET, &["v1", "runs", run_id])?)
            .await
    }

    /// `GET /v1/runs/{id}/artifacts`.
    pub(super) async fn artifacts(&self, run_id: &str) -> Result<Vec<Value>, RemoteError> {
        let doc = self
            .json(self.request(Method::GET, &["v1", "runs", run_id, "artifacts"])?)
            .await?;
        self.array(&doc, "artifacts")
    }

    /// `GET /v1/artifacts/{id}`: the content.
    pub(super) async fn artifact(&self, artifact_id: &str) -> Result<Bytes, RemoteError> {
        let response = self
            .send(
                self.request(Method::GET, &["v1", "artifacts", artifact_id])?,
                UPLOAD_TIMEOUT,
            )
            .await?;
        response.bytes().await.map_err(|e| self.transport(&e))
    }

    /// `POST /v1/runs/{id}/cancel`.
    pub(super) async fn cancel(&self, run_id: &str) -> Result<(), RemoteError> {
        let request = self.request(Method::POST, &["v1", "runs", run_id, "cancel"])?;
        self.send(request, REQUEST_TIMEOUT).await.map(drop)
    }

    /// `POST /v1/runs/{id}/pause` (`?now=true` with `now`): the run's status after the
    /// request (`paused`, or `running`/`waiting` while the pause is pending).
    pub(super) async fn pause(&self, run_id: &str, now: bool) -> Result<String, RemoteError> {
        let mut request = self.request(Method::POST, &["v1", "runs", run_id, "pause"])?;
        if now {
            request = request.query(&[("now", "true")]);
        }
        let body = self.json(request).await?;
        Ok(body
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("paused")
            .to_string())
    }

    /// `POST /v1/runs/{id}/resume`.
    pub(super) async fn resume(&self, run_id: &str) -> Result<(), RemoteError> {
        let request = self.request(Method::POST, &["v1", "runs", run_id, "resume"])?;
        self.send(request, REQUEST_TIMEOUT).await.map(drop)
    }

    /// `POST /v1/runs/{id}/restart`: `{run_id, status, from_step, attempt, restarts, seq}`.
    pub(super) async fn restart(&self, run_id: &str, body: &Value) -> Result<Value, RemoteError> {
        let request = self
            .request(Method::POST, &["v1", "runs", run_id, "restart"])?
            .json(body);
        self.json(request).await
    }

    /// `POST /v1/runs/{id}/input` with the answer's JSON text.
    pub(super) async fn answer(&self, run_id: &str, answer: &str) -> Result<(), RemoteError> {
        let request = self
            .request(Method::POST, &["v1", "runs", run_id, "input"])?
            .header(CONTENT_TYPE, "application/json")
            .body(answer.to_string());
        self.send(request, REQUEST_TIMEOUT).await.map(drop)
    }

    // ---- schedules ----

    /// `POST /v1/schedules`: the new schedule.
    pub(super) async fn create_schedule(&self, body: &Value) -> Result<Value, RemoteError> {
        let request = self.request(Method::POST, &["v1", "schedules"])?.json(body);
        self.json(request).await
    }

    /// `GET /v1/schedules`.
    pub(super) async fn schedules(&self) -> Result<Vec<Value>, RemoteError> {
        let doc = self
            .json(self.request(Method::GET, &["v1", "schedules"])?)
            .await?;
        self.array(&doc, "schedules")
    }

    /// `GET /v1/schedules/{id}`: `{schedule, fires}`.
    pub(super) async fn schedule(&self, id: &str) -> Result<Value, RemoteError> {
        self.json(self.request(Method::GET, &["v1", "schedules", id])?)
            .await
    }

    /// `DELETE /v1/schedules/{id}`.
    pub(super) async fn delete_schedule(&self, id: &str) -> Result<(), RemoteError> {
        let request = self.request(Method::DELETE, &["v1", "schedules", id])?;
        self.send(request, REQUEST_TIMEOUT).await.map(drop)
    }

    /// A run's events after seq `after`. With `snapshot`, the stream ends once the events
    /// logged so far are read (it has been quiet a moment); otherwise at the final event.
    pub(super) fn events(&self, run_id: &str, after: i64, snapshot: bool) -> EventStream {
        EventStream {
            client: self.clone(),
            run_id: run_id.to_string(),
            last: after.max(0),
            quiet_stop: snapshot.then_some(SNAPSHOT_QUIET),
            quiet_since: tokio::time::Instant::now(),
            body: None,
            parser: SseParser::default(),
            frames: VecDeque::new(),
            failures: 0,
            done: false,
            after_final: false,
        }
    }
}

/// The permission manifest beside a local plugin file (`NAME.corral.toml`), as the API's
/// JSON, or `None` when there is none.
fn local_manifest(plugin: &Path) -> Result<Option<Value>, RemoteError> {
    let Some(path) = crate::runs::manifest::path_for(&PluginRef::Path(plugin.to_path_buf())) else {
        return Ok(None);
    };
    if !path.exists() {
        return Ok(None);
    }
    read_manifest(&path).map(Some)
}

/// A manifest file (TOML) as the API's JSON form, checked as `corral run` checks it.
pub(super) fn read_manifest(path: &Path) -> Result<Value, RemoteError> {
    let invalid = |why: String| {
        RemoteError::refused(
            400,
            "INVALID_MANIFEST",
            format!("{}: {why}", path.display()),
        )
    };
    let meta = std::fs::metadata(path).map_err(|e| invalid(e.to_string()))?;
    if meta.len() > 64 << 10 {
        return Err(invalid("larger than 64 KiB".into()));
    }
    let text = std::fs::read_to_string(path).map_err(|e| invalid(e.to_string()))?;
    let doc: Value = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    crate::runs::manifest::Manifest::from_json(&doc).map_err(invalid)?;
    Ok(doc)
}

/// A plugin file's name on the server: its stem, in the characters names may use.
fn plugin_name(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+') {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if name.is_empty() {
        "plugin".into()
    } else {
        name
    }
}

fn find_plugin<'a>(plugins: &'a [Value], name: &str, version: &str) -> Option<&'a Value> {
    plugins.iter().find(|p| {
        p.get("name").and_then(Value::as_str) == Some(name)
            && p.get("version").and_then(Value::as_str) == Some(version)
    })
}

/// A registered `name@version` is only reused when it holds exactly the file's bytes.
fn check_digest(found: &Value, named: &PluginRef, digest: &str) -> Result<(), RemoteError> {
    let theirs = found.get("digest").and_then(Value::as_str).unwrap_or("?");
    if theirs == digest {
        Ok(())
    } else {
        Err(RemoteError::refused(
            409,
            "PLUGIN_EXISTS",
            format!(
                "plugin {named} on the server is {theirs}, not the local file's {digest}; \
                 delete it or rename the file"
            ),
        ))
    }
}

// ---- events ----

/// A run's events from `GET /v1/runs/{id}/events`, resumed after dropped connections.
pub(super) struct EventStream {
    client: Client,
    run_id: String,
    /// The seq of the last event delivered: where a new connection resumes.
    last: i64,
    /// End once no event has come for this long (a snapshot rather than a follow).
    quiet_stop: Option<Duration>,
    /// When the last event came (or the stream was opened): heartbeats do not count.
    quiet_since: tokio::time::Instant,
    body: Option<BoxStream<'static, reqwest_tls::Result<Bytes>>>,
    parser: SseParser,
    /// The data of complete SSE events not delivered yet.
    frames: VecDeque<String>,
    /// Connection failures in a row, with no frame in between.
    failures: u32,
    done: bool,
    /// The latest event delivered was a final event.
    after_final: bool,
}

impl EventStream {
    /// The next event, or `None` after the run's final event (or, for a snapshot, once the
    /// events logged so far are read). Each event once, in order.
    pub(super) async fn next(&mut self) -> Result<Option<Event>, RemoteError> {
        loop {
            if self.done {
                return Ok(None);
            }
            while let Some(data) = self.frames.pop_front() {
                if let Some(event) = self.accept(&data)? {
                    return Ok(Some(event));
                }
            }
            let Some(body) = self.body.as_mut() else {
                self.connect().await?;
                continue;
            };
            let wait = match self.quiet_stop {
                Some(quiet) => (self.quiet_since + quiet)
                    .saturating_duration_since(tokio::time::Instant::now())
                    .min(STREAM_STALL),
                None => STREAM_STALL,
            };
            match tokio::time::timeout(wait, body.next()).await {
                Ok(Some(Ok(chunk))) => match self.parser.push(&chunk) {
                    Ok(frames) => {
                        if frames.is_empty() {
                            continue;
                        }
                        // Any frame, heartbeats included, shows the connection is good.
                        self.failures = 0;
                        self.frames.extend(frames);
                    }
                    Err(why) => return Err(RemoteError::Transport(why)),
                },
                Err(_quiet) if self.quiet_stop.is_some() => {
                    self.done = true;
                    self.body = None;
                }
                Ok(Some(Err(e))) => {
                    let why = format!("the event stream broke: {}", chain(&e));
                    self.reconnect_after(RemoteError::Transport(why)).await?;
                }
                Ok(None) if self.after_final => {
                    self.done = true;
                    self.body = None;
                }
                Ok(None) => {
                    let why = "the server closed the event stream before the run's final event";
                    self.reconnect_after(RemoteError::Transport(why.into()))
                        .await?;
                }
                Err(_stalled) => {
                    let why = format!(
                        "the event stream was silent for {}s",
                        STREAM_STALL.as_secs()
                    );
                    self.reconnect_after(RemoteError::Transport(why)).await?;
                }
            }
        }
    }

    /// One SSE event's data: the event to deliver, or `None` for a heartbeat, another
    /// control message, or an event already delivered (a resumed stream may repeat).
    fn accept(&mut self, data: &str) -> Result<Option<Event>, RemoteError> {
        let value: Value = serde_json::from_str(data).map_err(|e| {
            RemoteError::Transport(format!("the server sent an event that is not JSON: {e}"))
        })?;
        if value.get("type").and_then(Value::as_str) == Some("heartbeat")
            || value.get("seq").is_none()
        {
            return Ok(None);
        }
        let event: Event = serde_json::from_value(value).map_err(|e| {
            RemoteError::Transport(format!("the server sent an event of an unknown shape: {e}"))
        })?;
        if event.seq <= self.last {
            return Ok(None);
        }
        self.last = event.seq;
        self.quiet_since = tokio::time::Instant::now();
        // A restarted run has a final event per segment, and the server ends the stream
        // after the latest: a stream that ends right after a final event is done.
        self.after_final = event.is_final();
        Ok(Some(event))
    }

    /// Opens the stream after the last event delivered, retrying transient failures.
    async fn connect(&mut self) -> Result<(), RemoteError> {
        loop {
            let mut request = self
                .client
                .request(Method::GET, &["v1", "runs", &self.run_id, "events"])?
                .header(ACCEPT, "text/event-stream");
            if self.last > 0 {
                request = request.header("Last-Event-ID", self.last.to_string());
            }
            let error = match tokio::time::timeout(STREAM_STALL, request.send()).await {
                // The server has nothing after `Last-Event-ID`: the run's final event was
                // read already.
                Ok(Ok(response)) if response.status() == StatusCode::NO_CONTENT => {
                    self.done = true;
                    self.body = None;
                    return Ok(());
                }
                Ok(Ok(response)) if response.status().is_success() => {
                    self.body = Some(response.bytes_stream().boxed());
                    self.parser = SseParser::default();
                    self.quiet_since = tokio::time::Instant::now();
                    return Ok(());
                }
                Ok(Ok(response)) => {
                    let status = response.status();
                    let error = RemoteError::from_response(response).await;
                    if !(status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS) {
                        return Err(error);
                    }
                    error
                }
                Ok(Err(e)) => self.client.transport(&e),
                Err(_) => RemoteError::Unreachable(format!(
                    "{} did not answer within {}s",
                    self.client.server(),
                    STREAM_STALL.as_secs()
                )),
            };
            self.reconnect_after(error).await?;
        }
    }

    /// Drops the connection and waits before the next one; gives up with `error` after
    /// [`MAX_RECONNECTS`] failures in a row.
    async fn reconnect_after(&mut self, error: RemoteError) -> Result<(), RemoteError> {
        self.body = None;
        self.parser = SseParser::default();
        self.failures = self.failures.saturating_add(1);
        if self.failures > MAX_RECONNECTS {
            return Err(match error {
                RemoteError::Transport(why) => RemoteError::Transport(format!(
                    "{why} (gave up on run {} after event {}, {MAX_RECONNECTS} reconnections)",
                    self.run_id, self.last
                )),
                refused => refused,
            });
        }
        let delay = RECONNECT_BASE
            .checked_mul(1 << self.failures.saturating_sub(1).min(8))
            .unwrap_or(RECONNECT_MAX)
            .min(RECONNECT_MAX);
        tokio::time::sleep(delay).await;
        Ok(())
    }
}

/// A server-sent-events parser: bytes in, the `data` of each complete event out. Lines
/// end with LF, CRLF or CR; `data:` lines are joined with LF; comments, `id:`, `event:` and
/// `retry:` are ignored (each event's JSON carries its seq).
#[derive(Debug, Default)]
struct SseParser {
    line: Vec<u8>,
    data: Option<String>,
    /// The last byte was a CR: an LF right after it ends nothing more.
    after_cr: bool,
}

impl SseParser {
    fn push(&mut self, chunk: &[u8]) -> Result<Vec<String>, String> {
        let mut frames = Vec::new();
        for &byte in chunk {
            if std::mem::take(&mut self.after_cr) && byte == b'\n' {
                continue;
            }
            match byte {
                b'\r' => {
                    self.after_cr = true;
                    self.end_line(&mut frames);
                }
                b'\n' => self.end_line(&mut frames),
                _ => {
                    if self.line.len() >= MAX_SSE_LINE {
                        return Err(format!(
                            "the server sent an event line longer than {MAX_SSE_LINE} bytes"
                        ));
                    }
                    self.line.push(byte);
                }
            }
        }
        Ok(frames)
    }

    fn end_line(&mut self, frames: &mut Vec<String>) {
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            if let Some(data) = self.data.take().filter(|d| !d.is_empty()) {
                frames.push(data);
            }
            return;
        }
        let line = String::from_utf8_lossy(&line);
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (&*line, ""),
        };
        if field == "data" {
            match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            }
        }
    }
}
