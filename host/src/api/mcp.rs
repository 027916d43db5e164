//! The Model Context Protocol: a tenant's sandboxed tools and stored pipelines, served to
//! MCP clients (IDE agents, chat apps) over streamable HTTP at `POST /mcp` on `corral
//! serve`, and over stdin/stdout by `corral mcp --stdio`. The protocol is the `rmcp`
//! crate's; this module maps it onto Corral:
//!
//! - `tools/list`: every tool of the tenant's tool plugins (as `GET /v1/tools` lists them),
//!   and each stored pipeline as a tool `pipeline.<name>`.
//! - `tools/call` on a tool: one call in a fresh sandbox, recorded as a short run (see
//!   `runs::tool_run`), its fuel charged to the tenant.
//! - `tools/call` on a pipeline: a durable run, answered as an MCP task (the Tasks
//!   extension) whose id is the run id; `tasks/get` reads the run from the database, so
//!   any node answers and a task survives a restart. A step's `ask` is the task's input
//!   request; `tasks/update` answers it; `tasks/cancel` cancels the run.
//!
//! Stateless: nothing is kept between requests; each request names its tenant by its
//! bearer token (HTTP) or is the local tenant (stdio).

use super::Role;
use crate::runs::{RunError, Runner};
use crate::store::RunRecord;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CancelTaskParams, ContentBlock,
    CreateTaskResult, DetailedTask, ErrorCode, GetTaskParams, GetTaskResult, Implementation,
    InputRequest, InputRequests, JsonObject, ListToolsResult, PaginatedRequestParams,
    ServerCapabilities, ServerConfig, Task, TaskPayload, TaskStatus, Tool, UpdateTaskParams,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// The prefix of a pipeline's tool name.
pub const PIPELINE_PREFIX: &str = "pipeline.";
/// How often a client should poll a task.
pub const POLL_INTERVAL_MS: u64 = 500;
/// How long a pipeline call without the Tasks extension waits for its run to end.
pub const UNTASKED_WAIT: Duration = Duration::from_secs(120);
/// The property an answer goes in when a question's schema is not an MCP form schema.
const WRAPPED: &str = "answer";

/// Who a request acts for.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The tenant.
    pub tenant_id: String,
    /// What it may do.
    pub role: Role,
}

/// The MCP server of one request (HTTP) or one process (stdio).
#[derive(Clone)]
pub struct McpServer {
    runner: Runner,
    /// The fixed principal of a local (stdio) server; `None`: each request's caller, from
    /// the HTTP request's extensions (set by the `/mcp` route's authentication).
    local: Option<Principal>,
    /// Queued runs per tenant before a pipeline call is refused.
    max_queued: Option<i64>,
}

impl std::fmt::Debug for McpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpServer")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

fn forbidden(needed: Role, role: Role) -> McpError {
    McpError::new(
        ErrorCode::INVALID_REQUEST,
        format!(
            "FORBIDDEN: this needs a token with the {} role; yours is {}",
            needed.as_str(),
            role.as_str()
        ),
        Some(json!({"code": "FORBIDDEN"})),
    )
}

fn not_found(task_id: &str) -> McpError {
    McpError::invalid_params(
        format!(
            "RUN_NOT_FOUND: no task `{}`",
            crate::capabilities::log::neutralise(task_id, 80)
        ),
        Some(json!({"code": "RUN_NOT_FOUND"})),
    )
}

fn internal(e: impl std::fmt::Display) -> McpError {
    tracing::warn!("mcp request failed: {e}");
    McpError::internal_error("the server could not answer; try again", None)
}

/// A refused run request as a JSON-RPC error.
fn run_error(e: RunError, task_id: &str) -> McpError {
    let code = e.code();
    match e {
        RunError::NotFound(_) => not_found(task_id),
        RunError::Store(e) => internal(e),
        e => McpError::invalid_params(e.to_string(), Some(json!({"code": code}))),
    }
}

/// Unix milliseconds as RFC 3339.
fn timestamp(ms: i64) -> String {
    let at = std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(at).to_string()
}

/// A JSON value as MCP structured content, which must be an object: an object as it
/// is, anything else as `{"result": value}`.
fn structured(value: Value) -> Value {
    match value {
        Value::Object(_) => value,
        other => json!({"result": other}),
    }
}

/// A tool's or a run's output as a successful `CallToolResult`.
fn output_result(output: &str) -> CallToolResult {
    let value: Value = serde_json::from_str(output).unwrap_or(Value::String(output.into()));
    let mut result = CallToolResult::success(vec![ContentBlock::text(output.to_string())]);
    result.structured_content = Some(structured(value));
    result
}

/// A failure as a `CallToolResult` with `isError`, the Corral code first in its text.
fn error_result(code: &str, message: &str) -> CallToolResult {
    let mut result = CallToolResult::error(vec![ContentBlock::text(format!("{code}: {message}"))]);
    result.structured_content = Some(json!({"code": code, "message": message}));
    result
}

fn object_schema(schema: &Value) -> Arc<JsonObject> {
    Arc::new(match schema {
        Value::Object(o) => o.clone(),
        _ => JsonObject::new(),
    })
}

/// The id of a run's question in `inputRequests`: stable for the question, new for each
/// question (a step that asks again, a re-run after a feedback loop).
fn question_key(q: &crate::store::Question) -> String {
    format!("q{}.{}.{}", q.step_idx, q.generation, q.question_no)
}

/// A question's answer schema as an MCP form schema: as it is when it is one (an object
/// of primitive properties), else wrapped as `{"answer": string}` holding the answer's
/// JSON text. `true` when wrapped.
fn form_schema(schema: Option<&str>) -> (Value, bool) {
    let parsed: Option<Value> = schema.and_then(|s| serde_json::from_str(s).ok());
    if let Some(schema) = &parsed
        && serde_json::from_value::<rmcp::model::ElicitationSchema>(schema.clone()).is_ok()
    {
        return (schema.clone(), false);
    }
    let description = match &parsed {
        Some(s) => format!("The answer as JSON, matching this JSON Schema: {s}"),
        None => "The answer as JSON (or plain text).".to_string(),
    };
    (
        json!({
            "type": "object",
            "properties": {WRAPPED: {"type": "string", "description": description}},
            "required": [WRAPPED],
        }),
        true,
    )
}

impl McpServer {
    /// The server of `/mcp`: each request's tenant and role come from its token.
    pub fn http(runner: Runner, max_queued: i64) -> McpServer {
        McpServer {
            runner,
            local: None,
            max_queued: Some(max_queued),
        }
    }

    /// A local server acting as `tenant_id` with every role (`corral mcp --stdio`).
    pub fn local(runner: Runner, tenant_id: String) -> McpServer {
        McpServer {
            runner,
            local: Some(Principal {
                tenant_id,
                role: Role::Admin,
            }),
            max_queued: None,
        }
    }

    /// Who the request acts for, if at least `needed`.
    fn caller(
        &self,
        ctx: &RequestContext<RoleServer>,
        needed: Role,
    ) -> Result<Principal, McpError> {
        let principal = match &self.local {
            Some(p) => p.clone(),
            None => {
                let caller = ctx
                    .extensions
                    .get::<http::request::Parts>()
                    .and_then(|parts| parts.extensions.get::<super::auth::Caller>())
                    .ok_or_else(|| {
                        // The route authenticates before rmcp sees the request; a request
                        // without a caller never got here through it.
                        McpError::invalid_request("UNAUTHORIZED: no caller", None)
                    })?;
                Principal {
                    tenant_id: caller.tenant_id.clone(),
                    role: caller.role,
                }
            }
        };
        if principal.role < needed {
            return Err(forbidden(needed, principal.role));
        }
        Ok(principal)
    }

    async fn tools(&self, tenant_id: &str) -> Result<Vec<Tool>, McpError> {
        let store = self.runner.store();
        let plugins = store.plugins(tenant_id).await.map_err(internal)?;
        let mut seen = std::collections::HashSet::new();
        let mut tools = Vec::new();
        for entry in super::handlers::tool_entries(&plugins) {
            // One tool per name: the first plugin that has it (as `tools/call` finds it).
            if !seen.insert(entry.name.clone()) {
                continue;
            }
            let mut tool = Tool::default();
            tool.name = entry.name.into();
            tool.description = Some(entry.description.into());
            tool.input_schema = object_schema(&entry.input_schema);
            tools.push(tool);
        }
        for p in store.pipelines(tenant_id).await.map_err(internal)? {
            let name = format!("{PIPELINE_PREFIX}{}", p.name);
            if !seen.insert(name.clone()) {
                continue;
            }
            let about = p
                .spec
                .get("description")
                .and_then(Value::as_str)
                .map(|d| format!(" {d}"))
                .unwrap_or_default();
            let mut tool = Tool::default();
            tool.name = name.into();
            tool.description = Some(
                format!(
                    "Starts a durable Corral run of the pipeline `{}` (the arguments are the \
                     run's input) and answers as a task: poll it, answer its questions, cancel \
                     it.{about}",
                    p.name
                )
                .into(),
            );
            tool.input_schema = object_schema(&json!({"type": "object"}));
            tools.push(tool);
        }
        Ok(tools)
    }

    /// The arguments as JSON text, within the run input cap.
    fn arguments(&self, request: &CallToolRequestParams) -> Result<String, McpError> {
        let text = Value::Object(request.arguments.clone().unwrap_or_default()).to_string();
        let max = self.runner.inner.config.max_input_bytes;
        if text.len() > max {
            return Err(McpError::invalid_params(
                format!(
                    "INVALID_INPUT: the arguments are {} bytes, more than the {max}-byte limit",
                    text.len()
                ),
                Some(json!({"code": "INVALID_INPUT", "limit": max})),
            ));
        }
        Ok(text)
    }

    async fn call_plugin_tool(
        &self,
        tenant_id: &str,
        name: &str,
        arguments: &str,
    ) -> Result<CallToolResult, McpError> {
        let plugins = self
            .runner
            .store()
            .plugins(tenant_id)
            .await
            .map_err(internal)?;
        let Some((_, plugin)) = super::handlers::tools_of(&plugins).find(|(t, _)| t.name == name)
        else {
            return Err(McpError::invalid_params(
                format!(
                    "unknown tool `{}` (tools/list names them)",
                    crate::capabilities::log::neutralise(name, 80)
                ),
                Some(json!({"code": "TOOL_NOT_FOUND"})),
            ));
        };
        let plugin = plugin.clone();
        match self
            .runner
            .call_tool_run(tenant_id, &plugin, name, arguments)
            .await
        {
            Ok(run) => {
                let mut result = match &run.result {
                    Ok(output) => output_result(output),
                    Err((code, message)) => error_result(code, message),
                };
                let mut meta = JsonObject::new();
                meta.insert("corral/run_id".into(), json!(run.run_id));
                result.meta = Some(rmcp::model::MetaObject(meta));
                Ok(result)
            }
            Err(RunError::Store(e)) => Err(internal(e)),
            Err(e) => Ok(error_result(e.code(), &e.to_string())),
        }
    }

    /// Starts a run of the tenant's stored pipeline `name`.
    async fn start_pipeline(
        &self,
        tenant_id: &str,
        name: &str,
        input: &str,
    ) -> Result<RunRecord, McpError> {
        let store = self.runner.store();
        let record = store
            .pipelines(tenant_id)
            .await
            .map_err(internal)?
            .into_iter()
            .find(|p| p.name == name)
            .ok_or_else(|| {
                McpError::invalid_params(
                    format!(
                        "unknown tool `{PIPELINE_PREFIX}{}` (tools/list names them)",
                        crate::capabilities::log::neutralise(name, 80)
                    ),
                    Some(json!({"code": "PIPELINE_NOT_FOUND"})),
                )
            })?;
        let p = super::handlers::parse_pipeline(&record.spec).map_err(|e| {
            McpError::invalid_params(e.message.clone(), Some(json!({"code": e.code})))
        })?;
        self.runner
            .submit_capped(tenant_id, &p, Some(record.id), input, self.max_queued)
            .await
            .map_err(|e| run_error(e, ""))
    }

    /// A pipeline call without the Tasks extension: waits (at most [`UNTASKED_WAIT`]) for
    /// the run to end. A run that asks a question is cancelled (the client cannot answer
    /// without tasks); one still running after the wait goes on, and the answer names it.
    async fn wait_for_run(
        &self,
        tenant_id: &str,
        run_id: &str,
    ) -> Result<CallToolResult, McpError> {
        let deadline = tokio::time::Instant::now() + UNTASKED_WAIT;
        // The run's events wake the wait; only its end or a question needs a fresh look
        // at the run (the stream ends after its final event).
        let mut events = self
            .runner
            .subscribe(tenant_id, run_id, 0)
            .await
            .map_err(|e| run_error(e, run_id))?;
        loop {
            let run = self
                .runner
                .store()
                .run_for_tenant(tenant_id, run_id)
                .await
                .map_err(internal)?
                .ok_or_else(|| not_found(run_id))?;
            match run.status.as_str() {
                "succeeded" => return Ok(output_result(run.output.as_deref().unwrap_or("null"))),
                "failed" | "cancelled" => {
                    let code = run.error_code.as_deref().unwrap_or("CANCELLED");
                    let message = run.error_message.as_deref().unwrap_or("cancelled");
                    return Ok(error_result(code, &format!("run {run_id}: {message}")));
                }
                "waiting" => {
                    if let Err(e) = self.runner.cancel(tenant_id, run_id).await {
                        tracing::warn!("cancelling run {run_id} that asked without tasks: {e}");
                    }
                    return Ok(error_result(
                        "INPUT_REQUIRED",
                        &format!(
                            "run {run_id} asks a question, which needs the MCP Tasks extension \
                             (io.modelcontextprotocol/tasks) to answer; the run was cancelled. \
                             Call again declaring the tasks capability."
                        ),
                    ));
                }
                _ if tokio::time::Instant::now() >= deadline => {
                    return Ok(error_result(
                        "STILL_RUNNING",
                        &format!(
                            "run {run_id} is still running after {}s; it goes on (follow it \
                             with GET /v1/runs/{run_id}, or call with the MCP Tasks extension)",
                            UNTASKED_WAIT.as_secs()
                        ),
                    ));
                }
                _ => loop {
                    match tokio::time::timeout_at(deadline, events.recv()).await {
                        Ok(Some(e)) if !e.is_final() && e.kind != "input_required" => continue,
                        Ok(Some(_)) | Err(_) => break,
                        // The stream ended (after the final event): read the run again,
                        // without waiting on a closed stream.
                        Ok(None) => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            break;
                        }
                    }
                },
            }
        }
    }

    /// The task a run is.
    async fn task_of(&self, run: &RunRecord) -> Result<DetailedTask, McpError> {
        let updated = run.finished_at.or(run.started_at).unwrap_or(run.created_at);
        let task = Task::new(
            run.id.clone(),
            TaskStatus::Working,
            timestamp(run.created_at),
            timestamp(updated),
        )
        .with_poll_interval_ms(POLL_INTERVAL_MS);
        let payload = match run.status.as_str() {
            "succeeded" => {
                let result = output_result(run.output.as_deref().unwrap_or("null"));
                let result = match serde_json::to_value(&result).map_err(internal)? {
                    Value::Object(o) => o,
                    _ => JsonObject::new(),
                };
                TaskPayload::Completed { result }
            }
            "failed" => {
                let code = run.error_code.clone().unwrap_or_else(|| "FAILED".into());
                let message = run.error_message.clone().unwrap_or_default();
                let error = json!({
                    "code": ErrorCode::INTERNAL_ERROR.0,
                    "message": format!("{code}: {message}"),
                    "data": {"code": code, "message": message},
                });
                TaskPayload::Failed {
                    error: match error {
                        Value::Object(o) => o,
                        _ => JsonObject::new(),
                    },
                }
            }
            "cancelled" => TaskPayload::Cancelled,
            "waiting" => match self
                .runner
                .store()
                .open_question(&run.id)
                .await
                .map_err(internal)?
            {
                Some(q) => {
                    let (schema, _) = form_schema(q.schema.as_deref());
                    let request: InputRequest = serde_json::from_value(json!({
                        "method": "elicitation/create",
                        "params": {"mode": "form", "message": q.question, "requestedSchema": schema},
                    }))
                    .map_err(internal)?;
                    let mut input_requests = InputRequests::new();
                    input_requests.insert(question_key(&q), request);
                    TaskPayload::InputRequired { input_requests }
                }
                // Answered a moment ago: the step is going on.
                None => TaskPayload::Working,
            },
            _ => TaskPayload::Working,
        };
        Ok(DetailedTask::new(task, payload))
    }

    async fn own_run(&self, tenant_id: &str, task_id: &str) -> Result<RunRecord, McpError> {
        self.runner
            .store()
            .run_for_tenant(tenant_id, task_id)
            .await
            .map_err(internal)?
            .ok_or_else(|| not_found(task_id))
    }
}

impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tasks()
                .build(),
        )
        .with_server_info(Implementation::new("corral", env!("CARGO_PKG_VERSION")))
        .with_instructions(
            "Corral's sandboxed WebAssembly tools, and its pipelines as `pipeline.<name>` \
             tools that run durably as tasks.",
        )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let caller = self.caller(&ctx, Role::Viewer)?;
        Ok(ListToolsResult::with_all_items(
            self.tools(&caller.tenant_id).await?,
        ))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let caller = self.caller(&ctx, Role::Operator)?;
        let arguments = self.arguments(&request)?;
        let Some(pipeline) = request.name.strip_prefix(PIPELINE_PREFIX) else {
            return self
                .call_plugin_tool(&caller.tenant_id, &request.name, &arguments)
                .await
                .map(CallToolResponse::Complete);
        };
        let tasks = ctx
            .client_capabilities()
            .is_some_and(|c| c.supports_tasks());
        let run = self
            .start_pipeline(&caller.tenant_id, pipeline, &arguments)
            .await?;
        if !tasks {
            return self
                .wait_for_run(&caller.tenant_id, &run.id)
                .await
                .map(CallToolResponse::Complete);
        }
        let task = Task::new(
            run.id.clone(),
            TaskStatus::Working,
            timestamp(run.created_at),
            timestamp(run.created_at),
        )
        .with_poll_interval_ms(POLL_INTERVAL_MS);
        Ok(CallToolResponse::Task(CreateTaskResult::new(task)))
    }

    async fn get_task(
        &self,
        request: GetTaskParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, McpError> {
        let caller = self.caller(&ctx, Role::Viewer)?;
        let run = self.own_run(&caller.tenant_id, &request.task_id).await?;
        Ok(GetTaskResult::new(self.task_of(&run).await?))
    }

    async fn update_task(
        &self,
        request: UpdateTaskParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        let caller = self.caller(&ctx, Role::Operator)?;
        let tenant = &caller.tenant_id;
        let run_id = &request.task_id;
        self.own_run(tenant, run_id).await?;
        let question = self
            .runner
            .store()
            .open_question(run_id)
            .await
            .map_err(internal)?;
        for (key, response) in &request.input_responses {
            let Some(q) = question.as_ref().filter(|q| &question_key(q) == key) else {
                return Err(McpError::invalid_params(
                    format!(
                        "NOT_WAITING: no outstanding input request `{}` on task `{run_id}`",
                        crate::capabilities::log::neutralise(key, 80)
                    ),
                    Some(json!({"code": "NOT_WAITING"})),
                ));
            };
            let result: rmcp::model::ElicitResult = serde_json::from_value(response.clone())
                .map_err(|e| {
                    McpError::invalid_params(format!("inputResponses.{key}: {e}"), None)
                })?;
            match result.action {
                rmcp::model::ElicitationAction::Accept => {
                    let content = result.content.unwrap_or(Value::Null);
                    let answer = match form_schema(q.schema.as_deref()) {
                        (_, true) => match content.get(WRAPPED) {
                            Some(Value::String(text)) => serde_json::from_str(text)
                                .unwrap_or_else(|_| Value::String(text.clone())),
                            Some(other) => other.clone(),
                            None => content,
                        },
                        (_, false) => content,
                    };
                    self.runner
                        .answer(tenant, run_id, &answer.to_string())
                        .await
                        .map_err(|e| run_error(e, run_id))?;
                }
                // Declining a question ends the run: a step that asked cannot go on
                // without its answer.
                _ => self
                    .runner
                    .cancel(tenant, run_id)
                    .await
                    .map_err(|e| run_error(e, run_id))?,
            }
        }
        Ok(())
    }

    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        let caller = self.caller(&ctx, Role::Operator)?;
        self.runner
            .cancel(&caller.tenant_id, &request.task_id)
            .await
            .map_err(|e| run_error(e, &request.task_id))
    }
}
