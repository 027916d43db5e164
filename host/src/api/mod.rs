//! The HTTP API: REST under `/v1`, SSE streams, health, metrics and the OpenAPI document.
//!
//! Every route is one row of [`ROUTES`]. The router is built from the table, and so is
//! `/openapi.json`, so the document always lists exactly the routes that exist; the
//! cross-tenant tests walk the same table.

mod auth;
pub mod cors;
pub mod error;
mod extract;
mod handlers;
mod logging;
pub mod metrics;
pub mod server;
mod session;
mod sse;
mod ui;
mod webhooks;

pub use auth::Role;

use crate::runs::Runner;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::Method;
use axum::routing::{MethodRouter, delete, get, post, put};
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
#[derive(Debug, Clone, Copy)]
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
    handler: fn() -> MethodRouter<AppState>,
}

const fn route(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    role: Option<Role>,
    body: BodyKind,
    ok: u16,
    handler: fn() -> MethodRouter<AppState>,
) -> Route {
    Route {
        method,
        path,
        summary,
        role,
        body,
        stream: false,
        ok,
        handler,
    }
}

const fn stream(
    path: &'static str,
    summary: &'static str,
    handler: fn() -> MethodRouter<AppState>,
) -> Route {
    Route {
        method: "GET",
        path,
        summary,
        role: Some(Role::Viewer),
        body: BodyKind::None,
        stream: true,
        ok: 200,
        handler,
    }
}

use BodyKind::{Json as J, None as N, Wasm as W};
use Role::{Admin as A, Operator as O, Viewer as V};

/// Every route. The router and `/openapi.json` are both built from this table.
pub const ROUTES: &[Route] = &[
    route(
        "GET",
        "/healthz",
        "Liveness: the process answers.",
        None,
        N,
        200,
        || get(handlers::healthz),
    ),
    route(
        "GET",
        "/readyz",
        "Readiness: the database is reachable.",
        None,
        N,
        200,
        || get(handlers::readyz),
    ),
    route(
        "GET",
        "/metrics",
        "Prometheus metrics.",
        None,
        N,
        200,
        || get(handlers::metrics),
    ),
    route(
        "GET",
        "/openapi.json",
        "This document.",
        None,
        N,
        200,
        || get(handlers::openapi),
    ),
    route(
        "POST",
        "/v1/session",
        "Log in a browser: {token} for an HttpOnly, SameSite=Strict session cookie; answers \
         {tenant, role, token_id, csrf_token, expires_at}.",
        None,
        J,
        201,
        || post(session::login),
    ),
    route(
        "GET",
        "/v1/session",
        "The session of the cookie: {tenant, role, token_id, csrf_token, expires_at}.",
        Some(V),
        N,
        200,
        || get(session::current),
    ),
    route(
        "DELETE",
        "/v1/session",
        "Log out: deletes the session and clears its cookie (needs X-CSRF-Token).",
        Some(V),
        N,
        204,
        || delete(session::logout),
    ),
    route(
        "POST",
        "/v1/plugins",
        "Upload a plugin (raw component bytes, application/wasm). Query: name, version.",
        Some(O),
        W,
        201,
        || post(handlers::upload_plugin),
    ),
    route(
        "GET",
        "/v1/plugins",
        "List plugins.",
        Some(V),
        N,
        200,
        || get(handlers::list_plugins),
    ),
    route(
        "GET",
        "/v1/tools",
        "The tools of the tenant's tool plugins, in the Model Context Protocol's shape.",
        Some(V),
        N,
        200,
        || get(handlers::list_tools),
    ),
    route(
        "GET",
        "/v1/plugins/{id}",
        "Get a plugin.",
        Some(V),
        N,
        200,
        || get(handlers::get_plugin),
    ),
    route(
        "DELETE",
        "/v1/plugins/{id}",
        "Delete a plugin (refused while a run uses it).",
        Some(O),
        N,
        204,
        || delete(handlers::delete_plugin),
    ),
    route(
        "POST",
        "/v1/pipelines",
        "Store a pipeline (the JSON form of a pipeline file; plugins by name@version or id).",
        Some(O),
        J,
        201,
        || post(handlers::create_pipeline),
    ),
    route(
        "GET",
        "/v1/pipelines",
        "List pipelines.",
        Some(V),
        N,
        200,
        || get(handlers::list_pipelines),
    ),
    route(
        "GET",
        "/v1/pipelines/{id}",
        "Get a pipeline.",
        Some(V),
        N,
        200,
        || get(handlers::get_pipeline),
    ),
    route(
        "DELETE",
        "/v1/pipelines/{id}",
        "Delete a pipeline.",
        Some(O),
        N,
        204,
        || delete(handlers::delete_pipeline),
    ),
    route(
        "POST",
        "/v1/runs",
        "Start a run: {pipeline: id or inline pipeline, input}.",
        Some(O),
        J,
        201,
        || post(handlers::create_run),
    ),
    route(
        "GET",
        "/v1/runs",
        "List runs. Query: status, limit, cursor.",
        Some(V),
        N,
        200,
        || get(handlers::list_runs),
    ),
    route(
        "GET",
        "/v1/runs/{id}",
        "Get a run with its steps, attempts, fuel and timings.",
        Some(V),
        N,
        200,
        || get(handlers::get_run),
    ),
    route(
        "POST",
        "/v1/runs/{id}/cancel",
        "Cancel a run.",
        Some(O),
        N,
        202,
        || post(handlers::cancel_run),
    ),
    route(
        "POST",
        "/v1/runs/{id}/input",
        "Answer the run's open question (the body is the answer JSON).",
        Some(O),
        J,
        202,
        || post(handlers::answer_run),
    ),
    route(
        "GET",
        "/v1/runs/{id}/artifacts",
        "List a run's artifacts.",
        Some(V),
        N,
        200,
        || get(handlers::list_artifacts),
    ),
    route(
        "GET",
        "/v1/artifacts/{id}",
        "Download an artifact.",
        Some(V),
        N,
        200,
        || get(handlers::get_artifact),
    ),
    stream(
        "/v1/runs/{id}/events",
        "A run's events as SSE: replay (from Last-Event-ID) then live; closes after the final event.",
        || get(sse::run_events),
    ),
    stream(
        "/v1/events",
        "Live events of every run of the tenant, as SSE. A `{\"type\":\"resync\"}` frame (with \
         `missed` when the client fell behind) says events may be missing: re-read those runs' streams.",
        || get(sse::tenant_events),
    ),
    route(
        "POST",
        "/v1/tokens",
        "Create a token: {role, name}. The secret is shown once.",
        Some(A),
        J,
        201,
        || post(handlers::create_token),
    ),
    route(
        "GET",
        "/v1/tokens",
        "List the tenant's tokens (never their secrets).",
        Some(A),
        N,
        200,
        || get(handlers::list_tokens),
    ),
    route(
        "DELETE",
        "/v1/tokens/{id}",
        "Revoke a token (effective at once, open streams included).",
        Some(A),
        N,
        204,
        || delete(handlers::revoke_token),
    ),
    route(
        "PUT",
        "/v1/plugins/{id}/manifest",
        "Set a registered plugin's permission manifest: {grants: {tools, http, secrets}, limits}.",
        Some(A),
        J,
        200,
        || put(handlers::put_plugin_manifest),
    ),
    route(
        "PUT",
        "/v1/secrets/{name}",
        "Create (201) or replace (200) a secret: {value}. Sealed at rest, never returned.",
        Some(A),
        J,
        201,
        || put(handlers::put_secret),
    ),
    route(
        "GET",
        "/v1/secrets",
        "List the tenant's secrets: names and times, never values.",
        Some(A),
        N,
        200,
        || get(handlers::list_secrets),
    ),
    route(
        "DELETE",
        "/v1/secrets/{name}",
        "Delete a secret.",
        Some(A),
        N,
        204,
        || delete(handlers::delete_secret),
    ),
    route(
        "POST",
        "/v1/webhooks",
        "Register a webhook: {name, plugin (a connector), signing_secrets, pipeline?, debounce?}.",
        Some(A),
        J,
        201,
        || post(webhooks::create_webhook),
    ),
    route(
        "GET",
        "/v1/webhooks",
        "List the tenant's webhooks.",
        Some(A),
        N,
        200,
        || get(webhooks::list_webhooks),
    ),
    route(
        "DELETE",
        "/v1/webhooks/{id}",
        "Delete a webhook.",
        Some(A),
        N,
        204,
        || delete(webhooks::delete_webhook),
    ),
    route(
        "POST",
        "/v1/webhooks/{id}",
        "Deliver to a webhook (no token: Standard Webhooks signature, 300 s window, replays refused).",
        None,
        J,
        202,
        || post(webhooks::deliver),
    ),
];

/// The router for `state`, built from [`ROUTES`].
pub fn router(state: AppState) -> Router {
    let mut by_path: BTreeMap<&str, MethodRouter<AppState>> = BTreeMap::new();
    for r in ROUTES {
        let mut method_router = (r.handler)();
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

/// The OpenAPI 3.1 document, generated from [`ROUTES`].
pub fn openapi() -> Value {
    let mut paths = serde_json::Map::new();
    for r in ROUTES {
        let params: Vec<Value> = r
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let mut op = json!({
            "summary": r.summary,
            "operationId": format!("{}_{}", r.method.to_lowercase(), r.path.trim_start_matches('/').replace(['/', '{', '}', '.'], "_")),
            "responses": responses(r),
        });
        if let Some(obj) = op.as_object_mut() {
            if !params.is_empty() {
                obj.insert("parameters".into(), Value::Array(params));
            }
            match r.role {
                Some(_) if r.path == "/v1/session" => {
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
            match r.body {
                BodyKind::Json => {
                    obj.insert(
                        "requestBody".into(),
                        json!({"required": true, "content": {"application/json": {"schema": {}}}}),
                    );
                }
                BodyKind::Wasm => {
                    obj.insert("requestBody".into(), json!({"required": true, "content": {"application/wasm": {"schema": {"type": "string", "format": "binary"}}}}));
                }
                BodyKind::None => {}
            }
        }
        let entry = paths.entry(r.path.to_string()).or_insert_with(|| json!({}));
        if let Some(obj) = entry.as_object_mut() {
            obj.insert(r.method.to_lowercase(), op);
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Corral API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Run pipelines of sandboxed WebAssembly plugins and follow them live. \
                            Every error is {\"error\": {\"code\", \"message\"}}.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": "corral_session",
                    "description": "From POST /v1/session. Requests other than GET, HEAD and \
                                    OPTIONS must also send X-CSRF-Token."},
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "object", "required": ["code", "message"],
                        "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}
                }
            }
        }
    })
}

fn responses(r: &Route) -> Value {
    let ok_content = if r.stream {
        json!({"text/event-stream": {"schema": {"type": "string"}}})
    } else {
        json!({"application/json": {"schema": {}}})
    };
    let mut responses = serde_json::Map::new();
    let ok = if r.ok == 204 {
        json!({"description": "Done."})
    } else {
        json!({"description": "Success.", "content": ok_content})
    };
    responses.insert(r.ok.to_string(), ok);
    let error = json!({"description": "See the error code.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let mut codes = vec![];
    if r.role.is_some() || r.path == "/v1/session" {
        codes.extend(["401", "403", "429"]);
    }
    if r.path.contains('{') {
        codes.push("404");
    }
    // A path parameter with a control character, or a bad body, is a 400.
    if r.path.contains('{') || r.body != BodyKind::None {
        codes.push("400");
    }
    if r.body != BodyKind::None {
        codes.push("413");
    }
    if r.body == BodyKind::Wasm {
        // 503 COMPILE_TIMEOUT.
        codes.extend(["422", "503"]);
    } else if r.path.starts_with("/v1/secrets") {
        // 503 SECRETS_DISABLED.
        codes.push("503");
    }
    for code in codes {
        responses.insert(code.to_string(), error.clone());
    }
    Value::Object(responses)
}

/// The method of a route as an axum `Method`.
pub fn method_of(r: &Route) -> Method {
    Method::from_bytes(r.method.as_bytes()).unwrap_or(Method::GET)
}
