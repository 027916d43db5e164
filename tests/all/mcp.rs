//! The Model Context Protocol endpoint (`POST /mcp` on a real `corral serve`) driven by an
//! independent client, the `rmcp` crate's, over real HTTP on loopback; and `corral mcp
//! --stdio` driven over its stdin/stdout. On SQLite and, when CORRAL_TEST_POSTGRES_URL is
//! set, on Postgres. API-12: the REST API's tenant isolation, roles and size caps.

use crate::util::*;
use reqwest::{Client, Method, StatusCode};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CancelTaskParams, ClientCapabilities,
    ClientConfig, GetTaskParams, Implementation, ProtocolVersion, TaskPayload, TaskStatus,
    UpdateTaskParams,
};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientLifecycleMode, ClientServiceExt};
use serde_json::{Value, json};
use std::time::Duration;

type Mcp = RunningService<RoleClient, ClientConfig>;

/// Long enough never to flake on a loaded machine; a pass takes seconds.
const PATIENCE: Duration = Duration::from_secs(120);

fn client_config() -> ClientConfig {
    ClientConfig::new(
        ClientCapabilities::builder().enable_tasks().build(),
        Implementation::new("corral-tests", "0.1.0"),
    )
}

/// An rmcp client of `url`/mcp with `token`, on the stateless 2026-07-28 revision.
async fn connect(url: &str, token: &str) -> Mcp {
    connect_as(url, token, client_config()).await
}

/// [`connect`] with `config`'s capabilities.
async fn connect_as(url: &str, token: &str, config: ClientConfig) -> Mcp {
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(format!("{url}/mcp")).auth_header(token),
    );
    config
        .serve_with_lifecycle(
            transport,
            ClientLifecycleMode::Discover {
                preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            },
        )
        .await
        .expect("server/discover")
}

fn restart(data: std::sync::Arc<tempfile::TempDir>, envs: &[(&'static str, String)]) -> Server {
    let mut all: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    all.push(("CORRAL_LEASE_MS", "1000"));
    Server::start_in(data, &all)
}

struct Rest {
    http: Client,
    url: String,
}

impl Rest {
    fn new(server: &Server) -> Rest {
        Rest {
            http: Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            url: server.url.clone(),
        }
    }

    async fn json(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        status_and_body(r.send().await.unwrap()).await
    }

    async fn upload(&self, token: &str, plugin: &str, query: &str) {
        let resp = self
            .http
            .post(format!("{}/v1/plugins{query}", self.url))
            .bearer_auth(token)
            .header("content-type", "application/wasm")
            .body(std::fs::read(plugin_path(plugin)).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED, "{plugin}");
    }

    /// The tenant's tools, pipelines `echoes` (echo) and `review` (approver).
    async fn seed(&self, token: &str) {
        self.upload(token, "text_tools", "?name=text-tools&version=0.1.0")
            .await;
        self.upload(token, "echo", "").await;
        self.upload(token, "approver", "").await;
        for (name, plugin) in [("echoes", "echo@0.1.0"), ("review", "approver@0.1.0")] {
            let (status, body) = self
                .json(
                    Method::POST,
                    "/v1/pipelines",
                    token,
                    Some(
                        json!({"name": name, "description": format!("The {name} pipeline."),
                                "steps": [{"name": "only", "plugin": plugin}]}),
                    ),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
        }
    }
}

fn args(v: Value) -> rmcp::model::JsonObject {
    serde_json::from_value(v).unwrap()
}

/// Starts `pipeline.NAME` as a task; its id.
async fn start_task(mcp: &Mcp, name: &str, input: Value) -> String {
    let response = mcp
        .call_tool_once(
            CallToolRequestParams::new(format!("pipeline.{name}")).with_arguments(args(input)),
        )
        .await
        .unwrap();
    match response {
        CallToolResponse::Task(created) => {
            assert_eq!(created.task.status, TaskStatus::Working);
            assert_eq!(created.task.poll_interval_ms, Some(500));
            assert!(
                created.task.task_id.starts_with("run_"),
                "{:?}",
                created.task
            );
            created.task.task_id
        }
        other => panic!("expected a task, got {other:?}"),
    }
}

/// Polls a task until `done` holds for its payload.
async fn poll_until(mcp: &Mcp, task_id: &str, done: impl Fn(&TaskPayload) -> bool) -> TaskPayload {
    let started = std::time::Instant::now();
    loop {
        let got = mcp
            .peer()
            .get_task(GetTaskParams::new(task_id))
            .await
            .unwrap();
        assert_eq!(got.task.task.task_id, task_id);
        if done(&got.task.payload) {
            return got.task.payload;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "task {task_id} still {:?}",
            got.task.payload
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls a task until it asks for input.
async fn poll_until_asking(mcp: &Mcp, task_id: &str) -> TaskPayload {
    poll_until(mcp, task_id, |p| {
        matches!(p, TaskPayload::InputRequired { .. })
    })
    .await
}

/// Polls a task until it is neither working nor asking for input.
async fn poll_until_ended(mcp: &Mcp, task_id: &str) -> TaskPayload {
    poll_until(mcp, task_id, |p| {
        !matches!(p, TaskPayload::Working | TaskPayload::InputRequired { .. })
    })
    .await
}

/// Answers input request `key` of a task with `response` (`tasks/update`).
async fn answer_task(
    mcp: &Mcp,
    task_id: &str,
    key: String,
    response: Value,
) -> Result<(), rmcp::ServiceError> {
    let mut answer = std::collections::BTreeMap::new();
    answer.insert(key, response);
    mcp.peer()
        .update_task(UpdateTaskParams::new(task_id.to_string(), answer))
        .await
}

fn completed(payload: &TaskPayload) -> CallToolResult {
    match payload {
        TaskPayload::Completed { result } => {
            serde_json::from_value(Value::Object(result.clone())).unwrap()
        }
        other => panic!("expected completed, got {other:?}"),
    }
}

/// The one input request of an `input_required` task: its key and request JSON.
fn input_request(payload: &TaskPayload) -> (String, Value) {
    match payload {
        TaskPayload::InputRequired { input_requests } => {
            assert_eq!(input_requests.len(), 1, "{input_requests:?}");
            let (key, request) = input_requests.iter().next().unwrap();
            (key.clone(), serde_json::to_value(request).unwrap())
        }
        other => panic!("expected input_required, got {other:?}"),
    }
}

fn text_of(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

async fn tools_are_listed_and_called(postgres: bool) {
    let Some(envs) = database_envs(postgres).await else {
        return;
    };
    let server = start_with(&envs, &[]);
    let admin = server.admin_token.clone();
    let rest = Rest::new(&server);
    rest.seed(&admin).await;
    let mcp = connect(&server.url, &admin).await;

    // The same tools as GET /v1/tools, and the pipelines.
    let tools = mcp.list_all_tools().await.unwrap();
    let (_, listed) = rest.json(Method::GET, "/v1/tools", &admin, None).await;
    for t in listed["tools"].as_array().unwrap() {
        let mine = tools
            .iter()
            .find(|m| m.name == t["name"].as_str().unwrap())
            .unwrap_or_else(|| panic!("{t} is not listed over MCP"));
        assert_eq!(mine.description.as_deref(), t["description"].as_str());
        assert_eq!(
            Value::Object((*mine.input_schema).clone()),
            t["inputSchema"]
        );
    }
    for name in ["pipeline.echoes", "pipeline.review"] {
        let p = tools.iter().find(|t| t.name == name).unwrap();
        assert!(
            p.description.as_deref().unwrap().contains("durable"),
            "{p:?}"
        );
        assert_eq!(p.input_schema.get("type"), Some(&json!("object")));
    }

    // A tool call: a fresh sandbox, recorded as a short run, its fuel charged.
    let result = mcp
        .call_tool(
            CallToolRequestParams::new("word_count")
                .with_arguments(args(json!({"text": "one two three"}))),
        )
        .await
        .unwrap();
    assert_eq!(result.is_error, Some(false), "{result:?}");
    assert_eq!(
        result.structured_content.as_ref().unwrap()["words"],
        3,
        "{result:?}"
    );
    assert!(text_of(&result).contains("\"words\":3"), "{result:?}");
    let run_id = result.meta.as_ref().unwrap().0["corral/run_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, run) = rest
        .json(Method::GET, &format!("/v1/runs/{run_id}"), &admin, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{run}");
    assert_eq!(run["run"]["status"], "succeeded", "{run}");
    assert!(run["run"]["fuel_used"].as_i64().unwrap() > 0, "{run}");
    let (_, events) = rest
        .json(
            Method::GET,
            &format!("/v1/runs/{run_id}/events"),
            &admin,
            None,
        )
        .await;
    let events = events.as_str().unwrap_or_default().to_string();
    assert!(events.contains("tool_call"), "{events}");

    // Arguments that do not fit the schema: the tool's error, with the Corral code.
    let bad = mcp
        .call_tool(
            CallToolRequestParams::new("word_count").with_arguments(args(json!({"text": 5}))),
        )
        .await
        .unwrap();
    assert_eq!(bad.is_error, Some(true), "{bad:?}");
    assert!(text_of(&bad).starts_with("INVALID_INPUT"), "{bad:?}");

    // An unknown tool is a JSON-RPC error.
    let err = mcp
        .call_tool(CallToolRequestParams::new("no_such_tool"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unknown tool"), "{err}");

    // Without the Tasks extension a pipeline call waits for the run and answers its output.
    let plain = ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("plain", "0.1.0"),
    )
    .serve_with_lifecycle(
        StreamableHttpClientTransport::from_config(
            StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", server.url))
                .auth_header(admin.clone()),
        ),
        ClientLifecycleMode::Discover {
            preferred_versions: vec![ProtocolVersion::V_2026_07_28],
        },
    )
    .await
    .unwrap();
    let out = plain
        .call_tool(
            CallToolRequestParams::new("pipeline.echoes")
                .with_arguments(args(json!({"hello": "world"}))),
        )
        .await
        .unwrap();
    assert_eq!(out.is_error, Some(false), "{out:?}");
    assert_eq!(
        out.structured_content,
        Some(json!({"hello": "world"})),
        "{out:?}"
    );
    plain.cancel().await.unwrap();
    mcp.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_tools_are_listed_and_called_sqlite() {
    tools_are_listed_and_called(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_tools_are_listed_and_called_postgres() {
    tools_are_listed_and_called(true).await;
}

async fn pipelines_are_tasks(postgres: bool) {
    let Some(envs) = database_envs(postgres).await else {
        return;
    };
    let server = start_with(&envs, &[("CORRAL_LEASE_MS", "1000")]);
    let admin = server.admin_token.clone();
    let rest = Rest::new(&server);
    rest.seed(&admin).await;
    let mcp = connect(&server.url, &admin).await;

    // To completion.
    let task = start_task(&mcp, "echoes", json!({"n": 1})).await;
    let done = poll_until(&mcp, &task, |p| !matches!(p, TaskPayload::Working)).await;
    let result = completed(&done);
    assert_eq!(
        result.structured_content,
        Some(json!({"n": 1})),
        "{result:?}"
    );
    assert!(text_of(&result).contains("\"n\":1"), "{result:?}");

    // A step that asks: the question is the task's input request; the answer resumes it.
    let task = start_task(&mcp, "review", json!({"records": [1, 2]})).await;
    let asking = poll_until(&mcp, &task, |p| !matches!(p, TaskPayload::Working)).await;
    let (key, request) = input_request(&asking);
    assert_eq!(request["method"], "elicitation/create", "{request}");
    assert!(
        request["params"]["message"].as_str().unwrap().len() > 3,
        "{request}"
    );
    assert_eq!(
        request["params"]["requestedSchema"]["properties"]["approved"]["type"], "boolean",
        "{request}"
    );
    // An answer that does not fit the question's schema is refused; the task still asks.
    let err = answer_task(
        &mcp,
        &task,
        key.clone(),
        json!({"action": "accept", "content": {"approved": "yes"}}),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("INVALID_ANSWER"), "{err}");
    answer_task(
        &mcp,
        &task,
        key.clone(),
        json!({"action": "accept", "content": {"approved": true, "comment": "ok"}}),
    )
    .await
    .unwrap();
    let done = poll_until_ended(&mcp, &task).await;
    let result = completed(&done);
    assert_eq!(
        result.structured_content.as_ref().unwrap()["approved"],
        true,
        "{result:?}"
    );

    // Declining a question cancels the run.
    let task = start_task(&mcp, "review", json!({})).await;
    let asking = poll_until_asking(&mcp, &task).await;
    let (key, _) = input_request(&asking);
    answer_task(&mcp, &task, key, json!({"action": "decline"}))
        .await
        .unwrap();
    let done = poll_until_ended(&mcp, &task).await;
    assert!(matches!(done, TaskPayload::Cancelled), "{done:?}");

    // tasks/cancel cancels the run, as POST /v1/runs/{id}/cancel does.
    let task = start_task(&mcp, "review", json!({})).await;
    poll_until_asking(&mcp, &task).await;
    mcp.peer()
        .cancel_task(CancelTaskParams::new(task.clone()))
        .await
        .unwrap();
    let done = poll_until_ended(&mcp, &task).await;
    assert!(matches!(done, TaskPayload::Cancelled), "{done:?}");
    let (_, run) = rest
        .json(Method::GET, &format!("/v1/runs/{task}"), &admin, None)
        .await;
    assert_eq!(run["run"]["status"], "cancelled", "{run}");
    // A second cancel: the run has ended.
    let err = mcp
        .peer()
        .cancel_task(CancelTaskParams::new(task.clone()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("ALREADY_FINISHED"), "{err}");

    // A task survives a restart: polled (and answered) through the new process.
    let task = start_task(&mcp, "review", json!({"after": "restart"})).await;
    poll_until_asking(&mcp, &task).await;
    mcp.cancel().await.unwrap();
    let data = server.stop();
    let server = restart(data, &envs);
    let mcp = connect(&server.url, &admin).await;
    let asking = poll_until_asking(&mcp, &task).await;
    let (key, _) = input_request(&asking);
    answer_task(
        &mcp,
        &task,
        key,
        json!({"action": "accept", "content": {"approved": true}}),
    )
    .await
    .unwrap();
    let done = poll_until_ended(&mcp, &task).await;
    assert_eq!(
        completed(&done).structured_content.unwrap()["input"],
        json!({"after": "restart"})
    );
    mcp.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_pipelines_are_tasks_sqlite() {
    pipelines_are_tasks(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_pipelines_are_tasks_postgres() {
    pipelines_are_tasks(true).await;
}

async fn api_12_isolation_roles_and_caps(postgres: bool) {
    let Some(envs) = database_envs(postgres).await else {
        return;
    };
    let server = start_with(&envs, &[("CORRAL_MAX_INPUT_BYTES", "4096")]);
    let admin = server.admin_token.clone();
    let rest = Rest::new(&server);
    rest.seed(&admin).await;
    let mcp = connect(&server.url, &admin).await;
    let task = start_task(&mcp, "review", json!({})).await;
    poll_until_asking(&mcp, &task).await;

    // Another tenant's token: none of the first tenant's tools, pipelines or tasks.
    let other = token(&server, &envs, "other", "admin");
    let theirs = connect(&server.url, &other).await;
    assert!(theirs.list_all_tools().await.unwrap().is_empty());
    let err = theirs
        .peer()
        .get_task(GetTaskParams::new(task.clone()))
        .await
        .unwrap_err();
    let missing = theirs
        .peer()
        .get_task(GetTaskParams::new("run_doesnotexist"))
        .await
        .unwrap_err();
    // Exactly like a task that does not exist, but for the id it names.
    assert_eq!(
        err.to_string().replace(&task, "ID"),
        missing.to_string().replace("run_doesnotexist", "ID")
    );
    assert!(err.to_string().contains("RUN_NOT_FOUND"), "{err}");
    for e in [
        theirs
            .peer()
            .cancel_task(CancelTaskParams::new(task.clone()))
            .await
            .unwrap_err(),
        theirs
            .peer()
            .update_task(UpdateTaskParams::new(task.clone(), Default::default()))
            .await
            .unwrap_err(),
    ] {
        assert!(e.to_string().contains("RUN_NOT_FOUND"), "{e}");
    }
    let err = theirs
        .call_tool(
            CallToolRequestParams::new("word_count").with_arguments(args(json!({"text": "a"}))),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unknown tool"), "{err}");
    let err = theirs
        .call_tool_once(CallToolRequestParams::new("pipeline.review"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unknown tool"), "{err}");
    theirs.cancel().await.unwrap();
    // The first tenant's task is untouched.
    poll_until_asking(&mcp, &task).await;

    // A viewer lists and reads, but calls and cancels nothing.
    let viewer = token(&server, &envs, "default", "viewer");
    let view = connect(&server.url, &viewer).await;
    assert!(!view.list_all_tools().await.unwrap().is_empty());
    view.peer()
        .get_task(GetTaskParams::new(task.clone()))
        .await
        .unwrap();
    let err = view
        .call_tool(
            CallToolRequestParams::new("word_count").with_arguments(args(json!({"text": "a"}))),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("FORBIDDEN"), "{err}");
    let err = view
        .peer()
        .cancel_task(CancelTaskParams::new(task.clone()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("FORBIDDEN"), "{err}");
    view.cancel().await.unwrap();

    // Arguments over the run input cap: invalid params naming the limit; nothing ran.
    let (_, before) = rest.json(Method::GET, "/v1/runs", &admin, None).await;
    let err = mcp
        .call_tool(
            CallToolRequestParams::new("word_count")
                .with_arguments(args(json!({"text": "x".repeat(5000)}))),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("4096-byte limit"), "{err}");
    let err = mcp
        .call_tool_once(
            CallToolRequestParams::new("pipeline.echoes")
                .with_arguments(args(json!({"text": "x".repeat(5000)}))),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("4096-byte limit"), "{err}");
    let (_, after) = rest.json(Method::GET, "/v1/runs", &admin, None).await;
    assert_eq!(
        before["runs"].as_array().unwrap().len(),
        after["runs"].as_array().unwrap().len()
    );
    mcp.cancel().await.unwrap();

    // Over HTTP: no token and a bad token are 401 like the REST API; a body over the
    // REST API's cap is 413 before it is read.
    let http = Client::new();
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}});
    for auth in [None, Some("Bearer crl_not_a_token")] {
        // Refused before its body is read, so the server may close the connection: this
        // request closes it itself, and the next one opens its own.
        let mut r = http
            .post(format!("{}/mcp", server.url))
            .header("accept", "application/json, text/event-stream")
            .header("connection", "close")
            .json(&body);
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        let resp = r.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
        assert!(resp.headers().contains_key("www-authenticate") || auth.is_some());
        let (_, err) = status_and_body(resp).await;
        assert_eq!(err["error"]["code"], "UNAUTHORIZED", "{err}");
    }
    // Refused before the body is all read: the server may close the connection while the
    // client still writes, so a try can fail with a broken pipe.
    let resp = send_refused_early(|| {
        http.post(format!("{}/mcp", server.url))
            .bearer_auth(&admin)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .body(vec![b' '; (1 << 20) + 1])
    })
    .await;
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_12_mcp_isolation_roles_and_caps_sqlite() {
    api_12_isolation_roles_and_caps(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_12_mcp_isolation_roles_and_caps_postgres() {
    api_12_isolation_roles_and_caps(true).await;
}

/// `corral mcp --stdio`: MCP over the child's stdin/stdout, from its data directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_stdio_serves_the_local_tools_and_pipelines() {
    use rmcp::ServiceExt;
    use rmcp::transport::TokioChildProcess;
    // The local tenant's plugins and pipelines, registered through a server on the same
    // data directory (stopped before the stdio server starts).
    let server = Server::start(&[]);
    let local = server.token("local", "admin");
    Rest::new(&server).seed(&local).await;
    let served = server.stop();

    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_corral"));
    cmd.args(["mcp", "--stdio"])
        .env("CORRAL_DATA_DIR", served.path())
        .env_remove("CORRAL_DATABASE_URL")
        .env_remove("RUST_LOG");
    let transport = TokioChildProcess::new(cmd).unwrap();
    let mcp = client_config().serve(transport).await.unwrap();
    let tools = mcp.list_all_tools().await.unwrap();
    assert!(tools.iter().any(|t| t.name == "word_count"), "{tools:?}");
    assert!(
        tools.iter().any(|t| t.name == "pipeline.review"),
        "{tools:?}"
    );
    let result = mcp
        .call_tool(
            CallToolRequestParams::new("word_count").with_arguments(args(json!({"text": "a b"}))),
        )
        .await
        .unwrap();
    assert_eq!(
        result.structured_content.as_ref().unwrap()["words"],
        2,
        "{result:?}"
    );
    let task = start_task(&mcp, "review", json!({})).await;
    let asking = poll_until_asking(&mcp, &task).await;
    let (key, _) = input_request(&asking);
    answer_task(
        &mcp,
        &task,
        key,
        json!({"action": "accept", "content": {"approved": true}}),
    )
    .await
    .unwrap();
    let done = poll_until_ended(&mcp, &task).await;
    assert_eq!(
        completed(&done).structured_content.unwrap()["approved"],
        true
    );
    mcp.cancel().await.unwrap();
}

/// Without the Tasks extension a pipeline call waits for its run and answers its output;
/// a pipeline that asks is cancelled and answered `INPUT_REQUIRED`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_a_pipeline_called_without_tasks_answers_its_output_or_input_required() {
    let Some(envs) = database_envs(false).await else {
        return;
    };
    let server = start_with(&envs, &[]);
    let admin = server.admin_token.clone();
    let rest = Rest::new(&server);
    rest.seed(&admin).await;
    let plain = ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("corral-tests-plain", "0.1.0"),
    );
    let mcp = connect_as(&server.url, &admin, plain).await;
    let done = mcp
        .call_tool(
            CallToolRequestParams::new("pipeline.echoes").with_arguments(args(json!({"n": 2}))),
        )
        .await
        .unwrap();
    assert_ne!(done.is_error, Some(true), "{done:?}");
    assert_eq!(done.structured_content, Some(json!({"n": 2})), "{done:?}");
    let asked = mcp
        .call_tool(
            CallToolRequestParams::new("pipeline.review")
                .with_arguments(args(json!({"records": [1]}))),
        )
        .await
        .unwrap();
    assert_eq!(asked.is_error, Some(true), "{asked:?}");
    assert!(text_of(&asked).starts_with("INPUT_REQUIRED"), "{asked:?}");
    mcp.cancel().await.unwrap();
}

/// A tool call's run cancelled from outside (`POST /v1/runs/{id}/cancel`) stops the tool,
/// answers the MCP client with the tool's error, and ends `cancelled` with a `cancelled`
/// event before its final one, like a pipeline run's cancel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_a_tool_call_cancelled_through_its_run_ends_cancelled() {
    let server = start_with(&[], &[]);
    let admin = server.admin_token.clone();
    let rest = Rest::new(&server);
    rest.upload(&admin, "spin_tool", "?name=spin-tool&version=0.1.0")
        .await;
    let mcp = std::sync::Arc::new(connect(&server.url, &admin).await);
    let call = tokio::spawn({
        let mcp = mcp.clone();
        async move {
            mcp.call_tool(CallToolRequestParams::new("spin").with_arguments(args(json!({}))))
                .await
        }
    });
    // The call's run, once its tool is spinning.
    let started = std::time::Instant::now();
    let run_id = loop {
        assert!(started.elapsed() < PATIENCE, "the tool call never ran");
        let (_, runs) = rest.json(Method::GET, "/v1/runs", &admin, None).await;
        let running = runs["runs"].as_array().and_then(|runs| {
            runs.iter()
                .find(|r| r["status"] == "running")
                .and_then(|r| r["id"].as_str().map(str::to_string))
        });
        if let Some(id) = running {
            break id;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (status, body) = rest
        .json(
            Method::POST,
            &format!("/v1/runs/{run_id}/cancel"),
            &admin,
            None,
        )
        .await;
    assert!(status.is_success(), "{status} {body}");
    let result = tokio::time::timeout(PATIENCE, call)
        .await
        .expect("the cancelled call never answered")
        .unwrap()
        .unwrap();
    assert_eq!(result.is_error, Some(true), "{result:?}");
    assert!(text_of(&result).starts_with("CANCELLED"), "{result:?}");
    let (_, run) = rest
        .json(Method::GET, &format!("/v1/runs/{run_id}"), &admin, None)
        .await;
    assert_eq!(run["run"]["status"], "cancelled", "{run}");
    let (_, events) = rest
        .json(
            Method::GET,
            &format!("/v1/runs/{run_id}/events"),
            &admin,
            None,
        )
        .await;
    let events = events.as_str().unwrap_or_default().to_string();
    let cancelled = events.find("\"type\":\"cancelled\"").expect(&events);
    let last = events.rfind("\"type\":\"complete\"").expect(&events);
    assert!(cancelled < last, "{events}");
    if let Ok(mcp) = std::sync::Arc::try_unwrap(mcp) {
        mcp.cancel().await.unwrap();
    }
}
