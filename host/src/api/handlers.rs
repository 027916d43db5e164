//! REST handlers. The tenant always comes from the token; an object of another tenant
//! answers exactly like a missing one.

use super::AppState;
use super::auth::{Admin, Caller, Operator, Role};
use super::error::{ApiError, from_rejection};
use super::extract::{Path, Query};
use super::types::*;
use crate::engine::{Output, World};
use crate::runs::pipeline;
use crate::store::PipelineRecord;
use crate::store::PluginRecord;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::time::Instant;

/// A JSON body whose problems (syntax, unknown fields, size) answer in our error shape.
pub(super) struct Body<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            // A body that parses but does not fit (unknown or missing fields, wrong types)
            // is a 400 naming the field, like every other bad request.
            Err(e) if e.status() == StatusCode::UNPROCESSABLE_ENTITY => {
                Err(from_rejection(StatusCode::BAD_REQUEST, e.body_text()))
            }
            Err(e) => Err(from_rejection(e.status(), e.body_text())),
        }
    }
}

/// Raw body bytes within the route's cap, as our error on overflow.
pub(super) async fn bytes(req: Request) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, &())
        .await
        .map_err(|e| from_rejection(e.status(), e.body_text()))
}

pub(super) async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such route")
}

pub(super) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        "this route does not take that method (see /openapi.json)",
    )
}

pub(super) async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

pub(super) async fn readyz(State(state): State<AppState>) -> Result<Json<Ready>, ApiError> {
    match state.runner.store().ping().await {
        Ok(()) => Ok(Json(Ready { status: "ready" })),
        Err(e) => {
            tracing::warn!("readiness check failed: {e}");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "NOT_READY",
                "the database is not reachable",
            ))
        }
    }
}

pub(super) async fn metrics(State(state): State<AppState>) -> Response {
    let open_streams: usize = state
        .streams
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .values()
        .sum();
    let runs = state.runner.store().run_counts().await.unwrap_or_default();
    let fuel = state.runner.store().tenants().await.unwrap_or_default();
    let text = super::metrics::render(&runs, &fuel, open_streams);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

pub(super) async fn openapi() -> Json<OpenApiDocument> {
    Json(OpenApiDocument(super::openapi()))
}

// ---- plugins ----

fn valid_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'+'))
}

pub(super) async fn upload_plugin(
    State(state): State<AppState>,
    Operator(caller): Operator,
    Query(q): Query<UploadQuery>,
    headers: HeaderMap,
    req: Request,
) -> Result<Reply<PluginCreated>, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !matches!(
        content_type,
        "application/wasm" | "application/octet-stream"
    ) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "upload the component's bytes as application/wasm",
        ));
    }
    // An existing name@version is refused before the body is read or compiled.
    if let (Some(name), Some(version)) = (&q.name, &q.version)
        && state
            .runner
            .store()
            .plugin_named(&caller.tenant_id, name, version)
            .await?
            .is_some()
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "PLUGIN_EXISTS",
            format!("plugin {name}@{version} already exists; upload a new version"),
        ));
    }
    let body = bytes(req).await?;
    // Compiling is CPU-heavy: the engine's compile slots, shared fairly between tenants
    // (one at a time per tenant), with a time limit the request sees.
    let started = Instant::now();
    let engine = state.runner.engine();
    let plugin = engine
        .load_as(body.to_vec(), &caller.tenant_id)
        .await
        .map_err(|f| match f.code {
            crate::engine::ErrorCode::CompileTimeout => {
                let mut e = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "COMPILE_TIMEOUT",
                    f.message,
                );
                e.retry_after = Some(30);
                e
            }
            _ => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "INVALID_COMPONENT",
                f.message,
            ),
        })?;
    crate::metrics::global()
        .plugin_load
        .observe(started.elapsed());
    let described = engine.describe(&plugin).await;
    let (info, said_name, said_version) = match described.result {
        Ok(Output::AgentInfo(i)) => (json!(i), Some(i.name), Some(i.version)),
        Ok(Output::ConnectorInfo(i)) => (json!(i), Some(i.name), Some(i.version)),
        Ok(Output::Tools(t)) => (json!({"tools": t}), None, None),
        Ok(_) => (Value::Null, None, None),
        Err(f) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "INVALID_COMPONENT",
                format!("describing the plugin failed: {f}"),
            ));
        }
    };
    let name = q.name.or(said_name).unwrap_or_default();
    let version = q.version.or(said_version).unwrap_or_else(|| "0.0.0".into());
    if !valid_label(&name) || !valid_label(&version) {
        return Err(ApiError::bad_request(format!(
            "name `{name}` and version `{version}` must be 1-64 of [A-Za-z0-9._+-] \
             (pass ?name=&version= for plugins that do not describe themselves)"
        )));
    }
    let record = state
        .runner
        .store()
        .insert_plugin(
            &caller.tenant_id,
            &name,
            &version,
            &plugin.digest,
            plugin.world.as_str(),
            &info,
            &body,
        )
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                "PLUGIN_EXISTS",
                format!("plugin {name}@{version} already exists; upload a new version"),
            )
        })?;
    Ok(Reply::created(PluginCreated {
        id: record.id,
        name: record.name,
        version: record.version,
        digest: record.digest,
        world: record.world,
    }))
}

pub(super) async fn list_plugins(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<PluginList>, ApiError> {
    let plugins = state.runner.store().plugins(&caller.tenant_id).await?;
    Ok(Json(PluginList { plugins }))
}

pub(super) async fn list_tools(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<ToolList>, ApiError> {
    let plugins = state.runner.store().plugins(&caller.tenant_id).await?;
    Ok(Json(ToolList {
        tools: tool_entries(&plugins),
    }))
}

/// Every tool of the tool plugins among `plugins`, as `GET /v1/tools` and MCP's
/// `tools/list` show them, with the plugin record each comes from.
pub(super) fn tool_entries(plugins: &[PluginRecord]) -> Vec<ToolEntry> {
    tools_of(plugins).map(|(entry, _)| entry).collect()
}

/// [`tool_entries`], each with its plugin.
pub(super) fn tools_of(
    plugins: &[PluginRecord],
) -> impl Iterator<Item = (ToolEntry, &PluginRecord)> {
    plugins
        .iter()
        .filter(|p| p.world == World::Tool.as_str())
        .flat_map(|p| {
            let specs = p
                .info
                .get("tools")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            // Stored by the upload from the plugin's checked `list-tools`, so each parses.
            specs.into_iter().filter_map(move |spec| {
                let spec: StoredTool = serde_json::from_value(spec).ok()?;
                Some((
                    ToolEntry {
                        name: spec.name,
                        description: spec.description,
                        input_schema: spec.input_schema,
                        plugin: format!("{}@{}", p.name, p.version),
                    },
                    p,
                ))
            })
        })
}

pub(super) async fn get_plugin(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<PluginRecord>, ApiError> {
    let plugin = state
        .runner
        .store()
        .plugin(&caller.tenant_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("PLUGIN_NOT_FOUND", "plugin", &id))?;
    Ok(Json(plugin))
}

pub(super) async fn delete_plugin(
    State(state): State<AppState>,
    Operator(caller): Operator,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    match state
        .runner
        .store()
        .delete_plugin(&caller.tenant_id, &id)
        .await?
    {
        None => Err(ApiError::not_found("PLUGIN_NOT_FOUND", "plugin", &id)),
        Some(false) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "PLUGIN_IN_USE",
            format!("plugin `{id}` is used by a run that has not finished"),
        )),
        Some(true) => Ok(StatusCode::NO_CONTENT),
    }
}

// ---- pipelines ----

async fn check_pipeline(
    state: &AppState,
    tenant_id: &str,
    doc: &Value,
) -> Result<pipeline::Pipeline, ApiError> {
    let p = parse_pipeline(doc)?;
    state.runner.check_pipeline(tenant_id, &p).await?;
    Ok(p)
}

/// A pipeline document (a request's JSON) as a pipeline, or 400 `INVALID_PIPELINE`.
pub(super) fn parse_pipeline(doc: &Value) -> Result<pipeline::Pipeline, ApiError> {
    pipeline::parse_json(&doc.to_string(), None).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_PIPELINE",
            format!("pipeline: {e}"),
        )
    })
}

pub(super) async fn create_pipeline(
    State(state): State<AppState>,
    Operator(caller): Operator,
    Body(PipelineBody(doc)): Body<PipelineBody>,
) -> Result<Reply<PipelineCreated>, ApiError> {
    let p = check_pipeline(&state, &caller.tenant_id, &doc).await?;
    let record = state
        .runner
        .store()
        .insert_pipeline(&caller.tenant_id, &p.name, &doc)
        .await?;
    Ok(Reply::created(PipelineCreated {
        id: record.id,
        name: record.name,
    }))
}

pub(super) async fn list_pipelines(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<PipelineList>, ApiError> {
    let pipelines = state.runner.store().pipelines(&caller.tenant_id).await?;
    Ok(Json(PipelineList { pipelines }))
}

pub(super) async fn get_pipeline(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<PipelineRecord>, ApiError> {
    let p = state
        .runner
        .store()
        .pipeline(&caller.tenant_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("PIPELINE_NOT_FOUND", "pipeline", &id))?;
    Ok(Json(p))
}

pub(super) async fn delete_pipeline(
    State(state): State<AppState>,
    Operator(caller): Operator,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let found = state
        .runner
        .store()
        .delete_pipeline(&caller.tenant_id, &id)
        .await?;
    ApiError::deleted(found, "PIPELINE_NOT_FOUND", "pipeline", &id)
}

// ---- runs ----

pub(super) async fn create_run(
    State(state): State<AppState>,
    Operator(caller): Operator,
    Body(new): Body<NewRun>,
) -> Result<Reply<RunCreated>, ApiError> {
    let store = state.runner.store();
    // A cheap early refusal; the exact check is the one made with the insert.
    let queued = store.queued_count(&caller.tenant_id).await?;
    if queued >= state.config.max_queued_per_tenant {
        return Err(ApiError::too_many(
            "TOO_MANY_QUEUED_RUNS",
            format!("this tenant already has {queued} queued runs; wait for some to start"),
            5,
        ));
    }
    let (doc, pipeline_id) = match &new.pipeline {
        Value::String(id) => {
            let record = store
                .pipeline(&caller.tenant_id, id)
                .await?
                .ok_or_else(|| ApiError::not_found("PIPELINE_NOT_FOUND", "pipeline", id))?;
            (record.spec, Some(record.id))
        }
        Value::Object(_) => (new.pipeline.clone(), None),
        _ => {
            return Err(ApiError::bad_request(
                "pipeline: give a pipeline id or an inline pipeline object",
            ));
        }
    };
    // Checked by `submit` with the same `Runner::check_pipeline` as `POST /v1/pipelines`.
    let p = parse_pipeline(&doc)?;
    let run = state
        .runner
        .submit_capped(
            &caller.tenant_id,
            &p,
            pipeline_id,
            &new.input.to_string(),
            Some(state.config.max_queued_per_tenant),
        )
        .await?;
    Ok(Reply::created(RunCreated {
        run_id: run.id,
        status: run.status,
    }))
}

pub(super) async fn list_runs(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListRuns>,
) -> Result<Json<RunList>, ApiError> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit: between 1 and 1000"));
    }
    if let Some(s) = &q.status
        && !crate::store::RUN_STATUSES.contains(&s.as_str())
    {
        return Err(ApiError::bad_request(format!(
            "status: unknown status `{s}`"
        )));
    }
    let before = match &q.cursor {
        None => None,
        Some(c) => {
            let (ts, id) = c
                .split_once('.')
                .and_then(|(ts, id)| Some((ts.parse::<i64>().ok()?, id.to_string())))
                .ok_or_else(|| {
                    ApiError::bad_request("cursor: use the next_cursor of a previous page")
                })?;
            Some((ts, id))
        }
    };
    let runs = state
        .runner
        .store()
        .list_runs(&caller.tenant_id, q.status.as_deref(), limit, before)
        .await?;
    let next = (i64::try_from(runs.len()).unwrap_or(0) == limit)
        .then(|| runs.last().map(|r| format!("{}.{}", r.created_at, r.id)))
        .flatten();
    Ok(Json(RunList {
        runs,
        next_cursor: next,
    }))
}

async fn own_run(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<crate::store::RunRecord, ApiError> {
    state
        .runner
        .store()
        .run_for_tenant(&caller.tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("RUN_NOT_FOUND", "run", id))
}

pub(super) async fn get_run(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<RunDetail>, ApiError> {
    let run = own_run(&state, &caller, &id).await?;
    let store = state.runner.store();
    let steps = store.steps(&id).await?;
    let attempts = store.attempts(&id).await?;
    let output: Option<Value> = run
        .output
        .as_deref()
        .and_then(|o| serde_json::from_str(o).ok());
    Ok(Json(RunDetail {
        run,
        output,
        steps,
        attempts,
    }))
}

pub(super) async fn cancel_run(
    State(state): State<AppState>,
    Operator(caller): Operator,
    Path(id): Path<String>,
) -> Result<Reply<CancelRequested>, ApiError> {
    state.runner.cancel(&caller.tenant_id, &id).await?;
    Ok(Reply::accepted(CancelRequested {
        run_id: id,
        cancel_requested: true,
    }))
}

pub(super) async fn pause_run(
    State(state): State<AppState>,
    Operator(caller): Operator,
    Path(id): Path<String>,
    Query(q): Query<PauseQuery>,
) -> Result<Reply<PauseRequested>, ApiError> {
    let now = q.now.unwrap_or(false);
    let done = state.runner.pause(&caller.tenant_id, &id, now).await?;
    Ok(Reply::accepted(PauseRequested {
        run_id: id,
        status: done.status,
        pause_requested: true,
    }))
}

pub(super) async fn resume_run(
    State(state): State<AppState>,
    Operator(caller): Operator,
    Path(id): Path<String>,
) -> Result<Reply<Resumed>, ApiError> {
    state.runner.resume(&caller.tenant_id, &id).await?;
    Ok(Reply::accepted(Resumed {
        run_id: id,
        status: "queued".into(),
    }))
}

pub(super) async fn restart_run(
    State(state): State<AppState>,
    Operator(caller): Operator,
    Path(id): Path<String>,
    req: Request,
) -> Result<Reply<RunRestarted>, ApiError> {
    // Another tenant's run answers 404 whatever the body (API-01), so the run comes first.
    let body = bytes(req).await?;
    own_run(&state, &caller, &id).await?;
    let req: RestartRun = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the restart body: {e}")))?;
    let restart = crate::runs::Restart {
        from_step: req.from_step,
        feedback: req.feedback.as_ref().map(Value::to_string),
        reason: req.reason,
    };
    let restarted = state
        .runner
        .restart(
            &caller.tenant_id,
            &id,
            &restart,
            Some(state.config.max_queued_per_tenant),
        )
        .await?;
    Ok(Reply::accepted(RunRestarted {
        run_id: restarted.run.id,
        // What the restart did; a worker may have started the run since.
        status: "queued".into(),
        from_step: restarted.step,
        attempt: restarted.attempt,
        restarts: restarted.run.restarts,
        seq: restarted.seq,
    }))
}

pub(super) async fn answer_run(
    State(state): State<AppState>,
    Operator(caller): Operator,
    Path(id): Path<String>,
    req: Request,
) -> Result<Reply<Answered>, ApiError> {
    let body = bytes(req).await?;
    let text =
        std::str::from_utf8(&body).map_err(|_| ApiError::bad_request("the answer is not UTF-8"))?;
    own_run(&state, &caller, &id).await?;
    state.runner.answer(&caller.tenant_id, &id, text).await?;
    Ok(Reply::accepted(Answered {
        run_id: id,
        answered: true,
    }))
}

pub(super) async fn list_artifacts(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ArtifactList>, ApiError> {
    own_run(&state, &caller, &id).await?;
    let artifacts = state.runner.store().artifacts(&id).await?;
    Ok(Json(ArtifactList { artifacts }))
}

/// A guest-chosen media type, reduced to `type/subtype` characters.
fn safe_media_type(m: &str) -> String {
    let ok = m.split_once('/').is_some_and(|(a, b)| {
        !a.is_empty()
            && !b.is_empty()
            && m.bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'/' | b'.' | b'+' | b'-'))
    });
    if ok {
        m.to_string()
    } else {
        "application/octet-stream".into()
    }
}

pub(super) async fn get_artifact(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (record, content) = state
        .runner
        .store()
        .artifact_content(&caller.tenant_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("ARTIFACT_NOT_FOUND", "artifact", &id))?;
    let mut response = content.into_response();
    let headers = response.headers_mut();
    let media = HeaderValue::from_str(&safe_media_type(&record.media_type))
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    headers.insert(header::CONTENT_TYPE, media);
    // Plugin-made content is downloaded, never rendered in the API's origin.
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    if let Ok(v) = HeaderValue::from_str(&record.digest) {
        headers.insert(header::ETAG, v);
    }
    Ok(response)
}

// ---- tokens ----

pub(super) async fn create_token(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Body(new): Body<NewToken>,
) -> Result<Reply<TokenCreated>, ApiError> {
    let role = Role::parse(&new.role)
        .ok_or_else(|| ApiError::bad_request("role: one of admin, operator, viewer"))?;
    if new.name.len() > 128 {
        return Err(ApiError::bad_request("name: at most 128 bytes"));
    }
    let (record, secret) = state
        .runner
        .store()
        .create_token(&caller.tenant_id, role.as_str(), &new.name)
        .await?;
    Ok(Reply::created(TokenCreated {
        id: record.id,
        role: record.role,
        name: record.name,
        token: secret,
    }))
}

pub(super) async fn list_tokens(
    State(state): State<AppState>,
    Admin(caller): Admin,
) -> Result<Json<TokenList>, ApiError> {
    let tokens = state.runner.store().tokens(&caller.tenant_id).await?;
    Ok(Json(TokenList { tokens }))
}

pub(super) async fn revoke_token(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let found = state
        .runner
        .store()
        .revoke_token(&caller.tenant_id, &id)
        .await?;
    ApiError::deleted(found, "TOKEN_NOT_FOUND", "token", &id)
}

fn checked_secret_name(name: &str) -> Result<(), ApiError> {
    crate::secrets::check_name(name).map_err(ApiError::bad_request)
}

/// `PUT /v1/secrets/{name}`: creates or replaces a secret. The value is sealed before it
/// is stored and is never returned by any route.
pub(super) async fn put_secret(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(name): Path<String>,
    Body(new): Body<NewSecret>,
) -> Result<Reply<SecretStored>, ApiError> {
    checked_secret_name(&name)?;
    if new.value.is_empty() || new.value.len() > crate::secrets::MAX_VALUE {
        return Err(ApiError::bad_request(format!(
            "value: 1 to {} bytes",
            crate::secrets::MAX_VALUE
        )));
    }
    let created = state
        .runner
        .store()
        .put_secret(&caller.tenant_id, &name, &new.value)
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(Reply::new(status, SecretStored { name, created }))
}

/// `GET /v1/secrets`: names and times, never values.
pub(super) async fn list_secrets(
    State(state): State<AppState>,
    Admin(caller): Admin,
) -> Result<Json<SecretList>, ApiError> {
    let secrets = state.runner.store().secrets(&caller.tenant_id).await?;
    Ok(Json(SecretList { secrets }))
}

/// `DELETE /v1/secrets/{name}`.
pub(super) async fn delete_secret(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    checked_secret_name(&name)?;
    let found = state
        .runner
        .store()
        .delete_secret(&caller.tenant_id, &name)
        .await?;
    ApiError::deleted(found, "SECRET_NOT_FOUND", "secret", &name)
}

/// `PUT /v1/plugins/{id}/manifest`: a registered plugin's permission manifest (the JSON
/// form of `NAME.corral.toml`). Checked now, and again whenever a pipeline using the
/// plugin is loaded; it replaces any earlier one.
pub(super) async fn put_plugin_manifest(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(id): Path<String>,
    Body(ManifestBody(doc)): Body<ManifestBody>,
) -> Result<Json<ManifestSet>, ApiError> {
    // Another tenant's plugin is not there, whatever the body says.
    if state
        .runner
        .store()
        .plugin(&caller.tenant_id, &id)
        .await?
        .is_none()
    {
        return Err(ApiError::not_found("PLUGIN_NOT_FOUND", "plugin", &id));
    }
    crate::runs::manifest::Manifest::from_json(&doc)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "INVALID_MANIFEST", e))?;
    if !state
        .runner
        .store()
        .set_plugin_manifest(&caller.tenant_id, &id, &doc)
        .await?
    {
        return Err(ApiError::not_found("PLUGIN_NOT_FOUND", "plugin", &id));
    }
    Ok(Json(ManifestSet { id, manifest: doc }))
}
