//! The HTTP API: REST under `/v1`, SSE streams, health, metrics and the OpenAPI document.
//!
//! Every route is one row of [`ROUTES`]. The router is built from the table, and so is
//! `/openapi.json`, so the document always lists exactly the routes that exist; the
//! cross-tenant tests walk the same table.
//!
//! One route is not in the table: `POST /mcp`, the Model Context Protocol endpoint (see
//! [`mcp`]). It speaks JSON-RPC, not REST, so it is not in `/openapi.json`; it takes the
//! same bearer tokens, roles, throttling and body cap as the REST routes.

mod auth;
pub mod cors;
pub(crate) mod doc;
pub mod error;
mod extract;
mod handlers;
mod logging;
pub mod mcp;
pub mod metrics;
pub mod server;
mod session;
mod sse;
mod types;
mod ui;
mod webhooks;

pub use auth::Role;

use crate::runs::Runner;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::Method;
use axum::routing::MethodRouter;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Server limits.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Largest JSON request body.
    pub max_body_bytes: usize,
    /// Largest plugin upload (refused with 413 before it is buffered).
    pub max_upload_bytes: usize,
    /// Open SSE streams per tenant.
    pub max_streams_per_tenant: usize,
    /// Queued runs per tenant before submissions get 429.
    pub max_queued_per_tenant: i64,
    /// Silence after which a stream sends a heartbeat.
    pub heartbeat: Duration,
    /// Bad-token requests per client address per minute before 429.
    pub max_auth_failures: u32,
    /// How long a browser session lives (it dies with its token before that).
    pub session_ttl: Duration,
    /// Mark session cookies `Secure` always (else only when `X-Forwarded-Proto: https`).
    pub cookie_secure: bool,
    /// Origins allowed to call the API from a browser with credentials (CORS), each
    /// `scheme://host[:port]` as [`cors::normalize_origin`] gives it. Empty: same-origin only.
    pub cors_origins: Vec<String>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            max_body_bytes: 1 << 20,
            max_upload_bytes: 128 << 20,
            max_streams_per_tenant: 100,
            max_queued_per_tenant: 1_000,
            heartbeat: Duration::from_secs(15),
            max_auth_failures: 20,
            session_ttl: Duration::from_secs(43_200),
            cookie_secure: false,
            cors_origins: Vec::new(),
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub(crate) runner: Runner,
    pub(crate) config: Arc<ApiConfig>,
    pub(crate) streams: Arc<Mutex<HashMap<String, usize>>>,
    pub(crate) auth_failures: Arc<auth::AuthFailures>,
    /// Cancelled when the server shuts down: open streams close so shutdown can finish.
    pub(crate) shutdown: tokio_util::sync::CancellationToken,
}

impl AppState {
    /// State for a runner and limits.
    pub fn new(runner: Runner, config: ApiConfig) -> Self {
        AppState {
            runner,
            auth_failures: Arc::new(auth::AuthFailures::new(
                config.max_auth_failures,
                Duration::from_secs(60),
            )),
            streams: Arc::new(Mutex::new(HashMap::new())),
            config: Arc::new(config),
            shutdown: tokio_util::sync::CancellationToken::new(),
        }
    }
}

/// What a route's body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No body.
    None,
    /// A JSON document.
    Json,
    /// Raw component bytes (`application/wasm`).
    Wasm,
}

/// One route of the API.
#[derive(Clone, Copy)]
pub struct Route {
    /// HTTP method.
    pub method: &'static str,
    /// Path, with `{id}` parameters.
    pub path: &'static str,
    /// One line for the OpenAPI document.
    pub summary: &'static str,
    /// The least role that may call it; `None` for public routes.
    pub role: Option<Role>,
    /// Its request body.
    pub body: BodyKind,
    /// Whether it answers with a `text/event-stream`.
    pub stream: bool,
    /// Success status.
    pub ok: u16,
    /// Statuses it sends besides `ok` and those every route of its kind sends (401, 403
    /// and 429 with a token; 400 and 404 with a path parameter; 400 and 413 with a body;
    /// 415 with a JSON body; 500 under `/v1`).
    pub also: &'static [u16],
    /// The schema of a JSON body the handler reads as raw bytes (a `Body<T>` argument
    /// says its own).
    request: Option<doc::SchemaFn>,
    /// The media types of a success body that is not JSON.
    media: &'static [&'static str],
    /// Header parameters: name and description.
    headers: &'static [(&'static str, &'static str)],
    /// The handler, and what its signature says for the document.
    handler: fn() -> (MethodRouter<AppState>, doc::OpDoc),
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("method", &self.method)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

const fn route(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    role: Option<Role>,
    body: BodyKind,
    ok: u16,
    handler: fn() -> (MethodRouter<AppState>, doc::OpDoc),
) -> Route {
    Route {
        method,
        path,
        summary,
        role,
        body,
        stream: false,
        ok,
        also: &[],
        request: None,
        media: &[],
        headers: &[],
        handler,
    }
}

const fn stream(
    path: &'static str,
    summary: &'static str,
    handler: fn() -> (MethodRouter<AppState>, doc::OpDoc),
) -> Route {
    Route {
        stream: true,
        media: &["text/event-stream"],
        ..route(
            "GET",
            path,
            summary,
            Some(Role::Viewer),
            BodyKind::None,
            200,
            handler,
        )
    }
}

impl Route {
    /// With more statuses (see [`Route::also`]).
    const fn also(self, also: &'static [u16]) -> Route {
        Route { also, ..self }
    }

    /// With the schema of a JSON body its handler reads raw.
    const fn request(self, request: doc::SchemaFn) -> Route {
        Route {
            request: Some(request),
            ..self
        }
    }

    /// With a success body of these media types (not JSON).
    const fn media(self, media: &'static [&'static str]) -> Route {
        Route { media, ..self }
    }

    /// With header parameters.
    const fn headers(self, headers: &'static [(&'static str, &'static str)]) -> Route {
        Route { headers, ..self }
    }
}

use BodyKind::{Json as J, None as N, Wasm as W};
use Role::{Admin as A, Operator as O, Viewer as V};
use doc::op;

/// Every route. The router and `/openapi.json` are both built from this table.
pub const ROUTES: &[Route] = &[
    route(
        "GET",
        "/healthz",
        "Liveness: the process answers.",
        None,
        N,
        200,
        op!(get, handlers::healthz),
    ),
    route(
        "GET",
        "/readyz",
        "Readiness: the database is reachable.",
        None,
        N,
        200,
        op!(get, handlers::readyz),
    )
    .also(&[503]),
    route(
        "GET",
        "/metrics",
        "Prometheus metrics (text exposition format 0.0.4).",
        None,
        N,
        200,
        op!(get, handlers::metrics),
    )
    .media(&["text/plain; version=0.0.4"]),
    route(
        "GET",
        "/openapi.json",
        "This document.",
        None,
        N,
        200,
        op!(get, handlers::openapi),
    ),
    route(
        "POST",
        "/v1/session",
        "Log in a browser: a token for an HttpOnly, SameSite=Strict session cookie.",
        None,
        J,
        201,
        op!(post, session::login),
    ),
    route(
        "GET",
        "/v1/session",
        "The session of the cookie.",
        Some(V),
        N,
        200,
        op!(get, session::current),
    ),
    route(
        "DELETE",
        "/v1/session",
        "Log out: deletes the session and clears its cookie (needs X-CSRF-Token).",
        Some(V),
        N,
        204,
        op!(delete, session::logout),
    ),
    route(
        "POST",
        "/v1/plugins",
        "Upload a plugin (raw component bytes, application/wasm).",
        Some(O),
        W,
        201,
        op!(post, handlers::upload_plugin),
    )
    // 415: not application/wasm; 422: not a component; 503: COMPILE_TIMEOUT.
    .also(&[409, 415, 422, 503]),
    route(
        "GET",
        "/v1/plugins",
        "List plugins.",
        Some(V),
        N,
        200,
        op!(get, handlers::list_plugins),
    ),
    route(
        "GET",
        "/v1/tools",
        "The tools of the tenant's tool plugins, in the Model Context Protocol's shape.",
        Some(V),
        N,
        200,
        op!(get, handlers::list_tools),
    ),
    route(
        "GET",
        "/v1/plugins/{id}",
        "Get a plugin.",
        Some(V),
        N,
        200,
        op!(get, handlers::get_plugin),
    ),
    route(
        "DELETE",
        "/v1/plugins/{id}",
        "Delete a plugin (refused while a run uses it).",
        Some(O),
        N,
        204,
        op!(delete, handlers::delete_plugin),
    )
    .also(&[409]),
    route(
        "POST",
        "/v1/pipelines",
        "Store a pipeline (the JSON form of a pipeline file; plugins by name@version or id).",
        Some(O),
        J,
        201,
        op!(post, handlers::create_pipeline),
    ),
    route(
        "GET",
        "/v1/pipelines",
        "List pipelines.",
        Some(V),
        N,
        200,
        op!(get, handlers::list_pipelines),
    ),
    route(
        "GET",
        "/v1/pipelines/{id}",
        "Get a pipeline.",
        Some(V),
        N,
        200,
        op!(get, handlers::get_pipeline),
    ),
    route(
        "DELETE",
        "/v1/pipelines/{id}",
        "Delete a pipeline.",
        Some(O),
        N,
        204,
        op!(delete, handlers::delete_pipeline),
    ),
    route(
        "POST",
        "/v1/runs",
        "Start a run of a stored or inline pipeline.",
        Some(O),
        J,
        201,
        op!(post, handlers::create_run),
    )
    // 404: no stored pipeline of that id.
    .also(&[404]),
    route(
        "GET",
        "/v1/runs",
        "List runs, newest first, a page at a time.",
        Some(V),
        N,
        200,
        op!(get, handlers::list_runs),
    ),
    route(
        "GET",
        "/v1/runs/{id}",
        "Get a run with its steps, attempts, fuel and timings.",
        Some(V),
        N,
        200,
        op!(get, handlers::get_run),
    ),
    route(
        "POST",
        "/v1/runs/{id}/cancel",
        "Cancel a run.",
        Some(O),
        N,
        202,
        op!(post, handlers::cancel_run),
    )
    .also(&[409]),
    route(
        "POST",
        "/v1/runs/{id}/input",
        "Answer the run's open question (the body is the answer JSON).",
        Some(O),
        J,
        202,
        op!(post, handlers::answer_run),
    )
    .request(doc::schema_of::<types::AnswerBody>)
    // 409: the run is not waiting; 422: the answer does not fit the question's schema.
    .also(&[409, 422]),
    route(
        "GET",
        "/v1/runs/{id}/artifacts",
        "List a run's artifacts.",
        Some(V),
        N,
        200,
        op!(get, handlers::list_artifacts),
    ),
    route(
        "GET",
        "/v1/artifacts/{id}",
        "Download an artifact (as its stored media type, or application/octet-stream).",
        Some(V),
        N,
        200,
        op!(get, handlers::get_artifact),
    )
    .media(&["application/octet-stream", "*/*"]),
    stream(
        "/v1/runs/{id}/events",
        "A run's events as SSE: replay (after Last-Event-ID) then live; closes after the final \
         event. 204 when the client already has the final event.",
        op!(get, sse::run_events),
    )
    .headers(&[(
        "Last-Event-ID",
        "Resume after this event (its `seq`); wins over `last_event_id`.",
    )])
    .also(&[204]),
    stream(
        "/v1/events",
        "Live events of every run of the tenant, as SSE. A `{\"type\":\"resync\"}` frame (with \
         `missed` when the client fell behind) says events may be missing: re-read those runs' streams.",
        op!(get, sse::tenant_events),
    )
    // 400: a Last-Event-ID (this stream is live only).
    .also(&[400]),
    route(
        "POST",
        "/v1/tokens",
        "Create a token. The secret is shown once.",
        Some(A),
        J,
        201,
        op!(post, handlers::create_token),
    ),
    route(
        "GET",
        "/v1/tokens",
        "List the tenant's tokens (never their secrets).",
        Some(A),
        N,
        200,
        op!(get, handlers::list_tokens),
    ),
    route(
        "DELETE",
        "/v1/tokens/{id}",
        "Revoke a token (effective at once, open streams included).",
        Some(A),
        N,
        204,
        op!(delete, handlers::revoke_token),
    ),
    route(
        "PUT",
        "/v1/plugins/{id}/manifest",
        "Set a registered plugin's permission manifest.",
        Some(A),
        J,
        200,
        op!(put, handlers::put_plugin_manifest),
    ),
    route(
        "PUT",
        "/v1/secrets/{name}",
        "Create (201) or replace (200) a secret. Sealed at rest, never returned.",
        Some(A),
        J,
        201,
        op!(put, handlers::put_secret),
    )
    // 503: SECRETS_DISABLED (the server has no secrets key).
    .also(&[200, 503]),
    route(
        "GET",
        "/v1/secrets",
        "List the tenant's secrets: names and times, never values.",
        Some(A),
        N,
        200,
        op!(get, handlers::list_secrets),
    ),
    route(
        "DELETE",
        "/v1/secrets/{name}",
        "Delete a secret.",
        Some(A),
        N,
        204,
        op!(delete, handlers::delete_secret),
    ),
    route(
        "POST",
        "/v1/webhooks",
        "Register a webhook for a connector plugin.",
        Some(A),
        J,
        201,
        op!(post, webhooks::create_webhook),
    )
    .also(&[409]),
    route(
        "GET",
        "/v1/webhooks",
        "List the tenant's webhooks.",
        Some(A),
        N,
        200,
        op!(get, webhooks::list_webhooks),
    ),
    route(
        "DELETE",
        "/v1/webhooks/{id}",
        "Delete a webhook.",
        Some(A),
        N,
        204,
        op!(delete, webhooks::delete_webhook),
    ),
    route(
        "POST",
        "/v1/webhooks/{id}",
        "Deliver to a webhook (no token: Standard Webhooks signature, 300 s window, replays refused).",
        None,
        J,
        202,
        op!(post, webhooks::deliver),
    )
    .request(doc::schema_of::<types::DeliveryBody>)
    // 401: bad signature; 409: a replay; 422: the connector failed; 429: too many queued
    // runs; 503: SECRETS_DISABLED.
    .also(&[401, 409, 422, 429, 503]),
];

/// The router for `state`, built from [`ROUTES`].
pub fn router(state: AppState) -> Router {
    let mut by_path: BTreeMap<&str, MethodRouter<AppState>> = BTreeMap::new();
    for r in ROUTES {
        let (mut method_router, _) = (r.handler)();
        // Every body is capped; uploads have their own, larger cap. A declared length over
        // the cap is refused before a byte is read; an undeclared one is cut at the cap.
        let cap = match r.body {
            BodyKind::Wasm => state.config.max_upload_bytes,
            _ => state.config.max_body_bytes,
        };
        method_router = method_router.layer(DefaultBodyLimit::max(cap)).layer(
            axum::middleware::from_fn_with_state(cap, refuse_declared_oversize),
        );
        let merged = match by_path.remove(r.path) {
            Some(existing) => existing.merge(method_router),
            None => method_router,
        };
        by_path.insert(r.path, merged);
    }
    let mut router = Router::new();
    for (path, method_router) in by_path {
        router = router.route(path, method_router);
    }
    router
        .merge(mcp_router(&state))
        .merge(ui::router())
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(axum::middleware::from_fn(metrics::track))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            cors::cors,
        ))
        .layer(axum::middleware::from_fn(logging::log_requests))
        .with_state(state)
}

/// `/mcp`: rmcp's streamable HTTP service, stateless (no sessions: any node answers any
/// request), behind the REST API's authentication and body cap.
fn mcp_router(state: &AppState) -> Router<AppState> {
    use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
    use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
    let server = mcp::McpServer::http(state.runner.clone(), state.config.max_queued_per_tenant);
    let cap = state.config.max_body_bytes;
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        // Callers are named by their bearer token (cookies are not taken here), so a
        // rebound DNS name gains a page nothing: the Host check is not needed, and would
        // refuse every deployment not reached as localhost.
        .disable_allowed_hosts()
        .with_max_request_body_bytes(cap)
        .with_cancellation_token(state.shutdown.child_token());
    let service = StreamableHttpService::new(
        move || Ok(server.clone()),
        Arc::new(NeverSessionManager::default()),
        config,
    );
    Router::new()
        .route_service("/mcp", service)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            mcp_auth,
        ))
        .layer(axum::middleware::from_fn_with_state(
            cap,
            refuse_declared_oversize,
        ))
}

/// The caller of an `/mcp` request, from its bearer token exactly as for the REST API
/// (same lookup, same bad-token throttle), put in the request's extensions for the MCP
/// handler. A session cookie is not a credential here.
async fn mcp_auth(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::extract::FromRequestParts;
    use axum::response::IntoResponse;
    let (mut parts, body) = req.into_parts();
    parts.headers.remove(axum::http::header::COOKIE);
    match auth::Caller::from_request_parts(&mut parts, &state).await {
        Ok(caller) => {
            parts.extensions.insert(caller);
            next.run(axum::extract::Request::from_parts(parts, body))
                .await
        }
        Err(e) => e.into_response(),
    }
}

async fn refuse_declared_oversize(
    axum::extract::State(cap): axum::extract::State<usize>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > cap as u64) {
        return error::from_rejection(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than the {cap}-byte limit of this route"),
        )
        .into_response();
    }
    next.run(req).await
}

/// The OpenAPI 3.1 document, generated from [`ROUTES`] and the Rust types their handlers
/// take and answer (see [`doc`]). Built once.
pub fn openapi() -> Value {
    static DOC: std::sync::LazyLock<Value> = std::sync::LazyLock::new(build_openapi);
    DOC.clone()
}

/// Why each status is sent, for the document.
fn status_text(code: u16) -> &'static str {
    match code {
        200 => "OK.",
        201 => "Created.",
        202 => "Accepted.",
        204 => "No content.",
        400 => "The request is malformed: see the error's code and message.",
        401 => "No valid credential (token, session or signature).",
        403 => "The credential may not do this (role, origin or CSRF token).",
        404 => "No such object in the caller's tenant.",
        409 => "Conflicts with the object's state.",
        413 => "The body is larger than this route's limit.",
        415 => "The body's Content-Type is not one this route takes.",
        422 => "Well-formed, but refused (see the error's code).",
        429 => {
            "Too many requests, queued runs, open streams or bad credentials: retry after Retry-After seconds."
        }
        500 => "An internal error (logged by the server).",
        503 => "Not available now (see the error's code).",
        _ => "See the error's code.",
    }
}

/// The statuses a route sends besides its success status.
fn statuses(r: &Route, op: &doc::OpDoc) -> std::collections::BTreeSet<u16> {
    let mut codes: std::collections::BTreeSet<u16> = r.also.iter().copied().collect();
    if r.role.is_some() || r.path == "/v1/session" {
        codes.extend([401, 403, 429]);
    }
    if r.path.contains('{') {
        // A path parameter with a control character is a 400.
        codes.extend([400, 404]);
    }
    if r.body != BodyKind::None {
        codes.extend([400, 413]);
    }
    if op.request.is_some() {
        codes.insert(415);
    }
    if op.query.is_some() {
        codes.insert(400);
    }
    if r.path.starts_with("/v1/") {
        codes.insert(500);
    }
    codes.remove(&r.ok);
    codes
}

fn build_openapi() -> Value {
    let (mut requests, mut responses) = doc::generators();
    let error = responses.subschema_for::<types::ErrorBody>();
    let mut paths = serde_json::Map::new();
    for r in ROUTES {
        let (_, op) = (r.handler)();
        let mut params: Vec<Value> = r
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| {
                json!({"name": name, "in": "path", "required": true,
                       "schema": {"type": "string", "minLength": 1}})
            })
            .collect();
        if let Some(query) = op.query {
            params.extend(doc::query_parameters(&query(&mut requests)));
        }
        for (name, description) in r.headers {
            params.push(json!({"name": name, "in": "header", "required": false,
                               "description": description, "schema": {"type": "string"}}));
        }
        // The success body: JSON of the handler's return type, or the row's media types.
        let ok_content = match op.answer {
            doc::Answer::Json(schema) => {
                Some(json!({"application/json": {"schema": schema(&mut responses)}}))
            }
            doc::Answer::Empty => None,
            doc::Answer::Raw => Some(Value::Object(
                r.media
                    .iter()
                    .map(|m| {
                        let schema = if r.stream {
                            types::sse_event_schema(&mut responses).to_value()
                        } else if m.starts_with("text/") {
                            json!({"type": "string"})
                        } else if *m == "*/*" {
                            json!({"description": "The bytes, as their stored media type."})
                        } else {
                            json!({"type": "string", "format": "binary"})
                        };
                        ((*m).to_string(), json!({"schema": schema}))
                    })
                    .collect(),
            )),
        };
        let mut answers = serde_json::Map::new();
        let success = |code: u16| match (&ok_content, code) {
            (Some(content), c) if c != 204 => {
                json!({"description": status_text(c), "content": content})
            }
            _ => json!({"description": status_text(code)}),
        };
        answers.insert(r.ok.to_string(), success(r.ok));
        for code in statuses(r, &op) {
            let answer = if code < 300 {
                success(code)
            } else {
                let mut a = json!({"description": status_text(code),
                                   "content": {"application/json": {"schema": error}}});
                let header = match code {
                    401 => Some(("WWW-Authenticate", "The scheme to use (`Bearer`).", true)),
                    429 => Some(("Retry-After", "Seconds to wait before retrying.", true)),
                    503 => Some(("Retry-After", "Seconds to wait before retrying.", false)),
                    _ => None,
                };
                if let (Some((name, description, required)), Some(obj)) =
                    (header, a.as_object_mut())
                {
                    obj.insert(
                        "headers".into(),
                        json!({name: {"description": description, "required": required,
                                      "schema": {"type": code_header_type(code)}}}),
                    );
                }
                a
            };
            answers.insert(code.to_string(), answer);
        }
        let mut operation = json!({
            "summary": r.summary,
            "operationId": format!("{}_{}", r.method.to_lowercase(), r.path.trim_start_matches('/').replace(['/', '{', '}', '.'], "_")),
            "responses": answers,
        });
        let request = op.request.or(r.request);
        if let Some(obj) = operation.as_object_mut() {
            if !params.is_empty() {
                obj.insert("parameters".into(), Value::Array(params));
            }
            match r.role {
                Some(_) if op.session => {
                    obj.insert("security".into(), json!([{"session": []}]));
                }
                Some(role) => {
                    obj.insert("security".into(), json!([{"bearer": []}, {"session": []}]));
                    obj.insert("x-corral-role".into(), json!(role.as_str()));
                }
                None => {
                    obj.insert("security".into(), json!([]));
                }
            }
            match (r.body, request) {
                (BodyKind::Json, Some(schema)) => {
                    obj.insert(
                        "requestBody".into(),
                        json!({"required": r.request.is_none(),
                               "content": {"application/json": {"schema": schema(&mut requests)}}}),
                    );
                }
                (BodyKind::Wasm, _) => {
                    obj.insert(
                        "requestBody".into(),
                        json!({"required": true, "content": {
                            "application/wasm": {"schema": {"type": "string", "format": "binary"}},
                            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                        }}),
                    );
                }
                _ => {}
            }
        }
        let entry = paths.entry(r.path.to_string()).or_insert_with(|| json!({}));
        if let Some(obj) = entry.as_object_mut() {
            obj.insert(r.method.to_lowercase(), operation);
        }
    }
    let (schemas, conflicts) = doc::merge_definitions(&mut requests, &mut responses);
    if !conflicts.is_empty() {
        tracing::error!("openapi: schemas defined twice, differently: {conflicts:?}");
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Corral API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Run pipelines of sandboxed WebAssembly plugins and follow them live. \
                            Every error is {\"error\": {\"code\", \"message\"}} (the Error schema). \
                            The schemas are generated from the server's own types.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": "corral_session",
                    "description": "From POST /v1/session. Requests other than GET, HEAD and \
                                    OPTIONS must also send X-CSRF-Token."},
            },
            "schemas": schemas,
        }
    })
}

/// The type of the header a status carries (`Retry-After` is seconds).
fn code_header_type(code: u16) -> &'static str {
    if code == 401 { "string" } else { "integer" }
}

/// The method of a route as an axum `Method`.
pub fn method_of(r: &Route) -> Method {
    Method::from_bytes(r.method.as_bytes()).unwrap_or(Method::GET)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each row agrees with its handler's signature: the body kind with a `Body<T>`
    /// argument (or the row's own request schema), the role with the caller extractor,
    /// the success status with the answer type.
    #[test]
    fn every_row_agrees_with_its_handler() {
        for r in ROUTES {
            let (_, op) = (r.handler)();
            let name = format!("{} {}", r.method, r.path);
            match r.body {
                BodyKind::Json => assert!(
                    op.request.is_some() != r.request.is_some(),
                    "{name}: a JSON body needs one schema, from Body<T> or the row"
                ),
                BodyKind::Wasm | BodyKind::None => assert!(
                    op.request.is_none() && r.request.is_none(),
                    "{name}: no JSON body"
                ),
            }
            assert_eq!(op.role, r.role, "{name}: the row's role is the extractor's");
            match op.answer {
                doc::Answer::Json(_) => assert!(r.media.is_empty(), "{name}"),
                doc::Answer::Empty => assert_eq!(r.ok, 204, "{name}"),
                doc::Answer::Raw => assert!(!r.media.is_empty(), "{name}: say its media"),
            }
        }
    }

    #[test]
    fn the_document_defines_each_schema_once() {
        let (mut requests, mut responses) = doc::generators();
        for r in ROUTES {
            let (_, op) = (r.handler)();
            if let Some(f) = op.request.or(r.request) {
                f(&mut requests);
            }
            if let Some(f) = op.query {
                f(&mut requests);
            }
            if let doc::Answer::Json(f) = op.answer {
                f(&mut responses);
            }
        }
        responses.subschema_for::<types::ErrorBody>();
        types::sse_event_schema(&mut responses);
        let (schemas, conflicts) = doc::merge_definitions(&mut requests, &mut responses);
        assert!(conflicts.is_empty(), "{conflicts:?}");
        assert!(schemas.contains_key("Error") && schemas.contains_key("RunRecord"));
    }
}
