//! A tool plugin's own manifest applies to its calls: its `[[grants.http]]` rules, the
//! secrets it may put in their headers and its limits, both when a pipeline step calls
//! it (`host.call-tool`) and when an MCP client does (`tools/call`, through
//! `Runner::call_tool_run`). Deny by default: a tool without a manifest reaches nothing.
//! Grants a tool call cannot use (`tools`, `models`) are refused at load. The tool is a
//! real component (`http-tool`), the far side a real HTTP server on loopback.

use crate::util::*;
use corral::runs::pipeline;
use corral::runs::{RunError, Runner, RunnerConfig};
use corral::store::{Event, Store};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

/// What the test server saw: the path and `authorization` header of every request.
type Seen = Arc<Mutex<Vec<(String, String)>>>;

/// A loopback server: `/api/echo` answers with the request's `authorization` header,
/// anything else `ok`.
async fn server() -> (u16, Seen) {
    use axum::http::{HeaderMap, Uri};
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap| {
        let log = log.clone();
        async move {
            let auth = headers
                .get("authorization")
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .unwrap_or_default();
            log.lock()
                .unwrap()
                .push((uri.path().to_string(), auth.clone()));
            if uri.path() == "/api/echo" {
                format!("you sent: {auth}")
            } else {
                "ok".to_string()
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, seen)
}

const VALUE: &str = "t00l-s3cr3t-5e1d7c";

/// The tool's manifest: GET on 127.0.0.1:`port` under `/api/`, `API_TOKEN` for it.
fn tool_manifest(port: u16) -> String {
    format!(
        "[[grants.http]]\nhost = \"127.0.0.1\"\nport = {port}\nmethods = [\"GET\"]\n\
         path_prefix = \"/api/\"\n[grants.secrets]\nAPI_TOKEN = [\"127.0.0.1\"]\n"
    )
}

struct Env {
    runner: Runner,
    tenant: String,
    other_tenant: String,
    dir: tempfile::TempDir,
    _db: tempfile::TempDir,
}

async fn env() -> Env {
    let db = tempfile::tempdir().unwrap();
    let store = Store::open_in_dir(db.path()).await.unwrap();
    let tenant = store.ensure_tenant("tools").await.unwrap();
    let other_tenant = store.ensure_tenant("others").await.unwrap();
    let runner = Runner::new(engine(), store, RunnerConfig::default());
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(plugin_path("flaky"), dir.path().join("agent.wasm")).unwrap();
    std::fs::write(
        dir.path().join("agent.corral.toml"),
        "[grants]\ntools = [\"web\"]\n",
    )
    .unwrap();
    std::fs::copy(plugin_path("http_tool"), dir.path().join("web.wasm")).unwrap();
    Env {
        runner,
        tenant,
        other_tenant,
        dir,
        _db: db,
    }
}

impl Env {
    /// Sets the tool's manifest file (`None`: removes it).
    fn set_manifest(&self, manifest: Option<&str>) {
        let file = self.dir.path().join("web.corral.toml");
        match manifest {
            Some(text) => std::fs::write(file, text).unwrap(),
            None => {
                let _ = std::fs::remove_file(file);
            }
        }
    }

    /// A pipeline whose one step calls `web/fetch` with `arguments`.
    fn pipeline(&self, arguments: &Value) -> pipeline::Pipeline {
        let config = json!({"call_tool": {"name": "fetch", "arguments": arguments}});
        pipeline::parse_json(
            &json!({
                "name": "tool-grants",
                "tools": {"web": "web.wasm"},
                "defaults": {"max_attempts": 1},
                "steps": [{"name": "agent", "plugin": "agent.wasm", "tools": ["web"],
                           "config": config}]
            })
            .to_string(),
            Some(self.dir.path()),
        )
        .unwrap()
    }

    /// Runs the pipeline as `tenant`: the tool's result (or the step's `tool_error`) and
    /// the run's events.
    async fn run_as(&self, tenant: &str, arguments: Value) -> (Value, Vec<Event>) {
        let p = self.pipeline(&arguments);
        let run = self.runner.submit(tenant, &p, None, "{}").await.unwrap();
        self.runner.execute(&run.id).await.unwrap();
        let events = self
            .runner
            .store()
            .events_after(&run.id, 0, 10_000)
            .await
            .unwrap();
        let record = self.runner.store().run(&run.id).await.unwrap().unwrap();
        assert_eq!(record.status, "succeeded", "{events:#?}");
        let output: Value = serde_json::from_str(record.output.as_deref().unwrap()).unwrap();
        (output, events)
    }

    async fn run(&self, arguments: Value) -> (Value, Vec<Event>) {
        self.run_as(&self.tenant, arguments).await
    }

    /// Registers `http-tool` for the tenant (as an upload does), with `manifest` (JSON).
    async fn register(&self, manifest: Option<Value>) -> corral::store::PluginRecord {
        let bytes = std::fs::read(plugin_path("http_tool")).unwrap();
        let plugin = self.runner.engine().load(bytes.clone()).await.unwrap();
        let tools = match self.runner.engine().describe(&plugin).await.result.unwrap() {
            corral::engine::Output::Tools(t) => t,
            other => panic!("{other:?}"),
        };
        let record = self
            .runner
            .store()
            .insert_plugin(
                &self.tenant,
                "http-tool",
                "0.1.0",
                &plugin.digest,
                "tool-plugin",
                &json!({ "tools": tools }),
                &bytes,
            )
            .await
            .unwrap()
            .unwrap();
        if let Some(m) = manifest {
            // What `PUT /v1/plugins/{id}/manifest` stores: a checked manifest.
            corral::runs::manifest::Manifest::from_json(&m).unwrap();
            assert!(
                self.runner
                    .store()
                    .set_plugin_manifest(&self.tenant, &record.id, &m)
                    .await
                    .unwrap()
            );
        }
        self.runner
            .store()
            .plugin(&self.tenant, &record.id)
            .await
            .unwrap()
            .unwrap()
    }
}

fn url(port: u16, path: &str) -> String {
    format!("http://127.0.0.1:{port}{path}")
}

/// Everything a client of the run can see, as text.
fn visible(output: &Value, events: &[Event]) -> String {
    format!("{output}{events:?}")
}

/// SBX-09 for tools: called from a step, a tool reaches the host its manifest grants and
/// is refused one it does not (another port, another path), the call still returning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sbx_09_a_steps_tool_call_reaches_its_granted_host_and_no_other() {
    let (port, seen) = server().await;
    let (other_port, other_seen) = server().await;
    let env = env().await;
    env.set_manifest(Some(&tool_manifest(port)));

    let (out, _) = env.run(json!({"url": url(port, "/api/items")})).await;
    assert_eq!(out["tool_result"]["status"], 200, "{out}");
    assert_eq!(out["tool_result"]["body"], "ok", "{out}");
    assert_eq!(seen.lock().unwrap().len(), 1);

    for target in [url(other_port, "/api/items"), url(port, "/private")] {
        let (out, _) = env.run(json!({ "url": target })).await;
        let error = out["tool_result"]["error"].as_str().unwrap_or_default();
        assert!(error.contains("HttpRequestDenied"), "{target}: {out}");
    }
    assert_eq!(seen.lock().unwrap().len(), 1, "nothing more was sent");
    assert!(other_seen.lock().unwrap().is_empty());
}

/// SBX-10 for tools: a `${secret:NAME}` header the tool's manifest grants for the host
/// reaches the server with the calling tenant's value, but the tool sees it redacted and
/// no event holds it; another tenant's secret never resolves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sbx_10_a_tools_secret_header_reaches_the_server_but_not_the_tool() {
    let (port, seen) = server().await;
    let env = env().await;
    env.set_manifest(Some(&tool_manifest(port)));
    env.runner
        .store()
        .put_secret(&env.tenant, "API_TOKEN", VALUE)
        .await
        .unwrap();
    let args = json!({"url": url(port, "/api/echo"),
                      "headers": [["authorization", "Bearer ${secret:API_TOKEN}"]]});

    let (out, events) = env.run(args.clone()).await;
    assert_eq!(
        seen.lock().unwrap().clone(),
        vec![("/api/echo".to_string(), format!("Bearer {VALUE}"))]
    );
    assert_eq!(out["tool_result"]["status"], 200, "{out}");
    assert_eq!(out["tool_result"]["body"], "you sent: Bearer [redacted]");
    assert!(!visible(&out, &events).contains(VALUE));

    // The same call from a run of a tenant without that secret: refused, nothing sent.
    let (out, events) = env.run_as(&env.other_tenant, args).await;
    let error = out["tool_result"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("HttpRequestDenied"), "{out}");
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "the other tenant's call was not sent"
    );
    assert!(!visible(&out, &events).contains(VALUE));
}

/// An MCP `tools/call` (a tool call run of a registered plugin) gets the manifest set on
/// the plugin: its granted host with the tenant's secret, and no other host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sbx_09_an_mcp_tool_call_gets_its_registered_plugins_manifest() {
    let (port, seen) = server().await;
    let env = env().await;
    env.runner
        .store()
        .put_secret(&env.tenant, "API_TOKEN", VALUE)
        .await
        .unwrap();
    let manifest = json!({
        "grants": {
            "http": [{"host": "127.0.0.1", "port": port, "methods": ["GET"],
                      "path_prefix": "/api/"}],
            "secrets": {"API_TOKEN": ["127.0.0.1"]}
        }
    });
    let record = env.register(Some(manifest)).await;
    let call = |arguments: Value| {
        let env = &env;
        let record = &record;
        async move {
            let done = env
                .runner
                .call_tool_run(&env.tenant, record, "fetch", &arguments.to_string())
                .await
                .unwrap();
            let text = done.result.unwrap_or_else(|e| panic!("{e:?}"));
            let events = env
                .runner
                .store()
                .events_after(&done.run_id, 0, 10_000)
                .await
                .unwrap();
            (serde_json::from_str::<Value>(&text).unwrap(), events)
        }
    };

    let (out, events) = call(json!({"url": url(port, "/api/echo"),
                                    "headers": [["authorization", "Bearer ${secret:API_TOKEN}"]]}))
    .await;
    assert_eq!(out["status"], 200, "{out}");
    assert_eq!(out["body"], "you sent: Bearer [redacted]");
    assert_eq!(
        seen.lock().unwrap().clone(),
        vec![("/api/echo".to_string(), format!("Bearer {VALUE}"))]
    );
    assert!(!visible(&out, &events).contains(VALUE));

    let (out, _) = call(json!({"url": url(port, "/private")})).await;
    let error = out["error"].as_str().unwrap_or_default();
    assert!(error.contains("HttpRequestDenied"), "{out}");
    assert_eq!(seen.lock().unwrap().len(), 1);
}

/// Deny by default: a tool without a manifest still runs (from a step and over MCP),
/// and reaches nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_without_a_manifest_runs_and_reaches_nothing() {
    let (port, seen) = server().await;
    let env = env().await;
    env.set_manifest(None);
    let (out, _) = env.run(json!({"url": url(port, "/api/items")})).await;
    let error = out["tool_result"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("HttpRequestDenied"), "{out}");

    let record = env.register(None).await;
    let done = env
        .runner
        .call_tool_run(
            &env.tenant,
            &record,
            "fetch",
            &json!({"url": url(port, "/api/items")}).to_string(),
        )
        .await
        .unwrap();
    let out: Value = serde_json::from_str(&done.result.unwrap()).unwrap();
    assert!(
        out["error"]
            .as_str()
            .unwrap_or_default()
            .contains("HttpRequestDenied"),
        "{out}"
    );
    assert!(seen.lock().unwrap().is_empty());
}

/// A tool manifest granting `tools` or `models` (which a tool call cannot use) is refused
/// when the pipeline is loaded, naming the `[tools]` entry, the grant and the file; and
/// when an MCP client calls a registered tool with such a manifest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_manifests_granting_tools_or_models_are_refused_at_load() {
    let env = env().await;
    let file = env.dir.path().join("web.corral.toml");
    for (text, grant, why) in [
        (
            "[grants]\ntools = [\"web\"]\n",
            "grants.tools",
            "cannot call tools",
        ),
        (
            "[grants]\nmodels = [\"fast\"]\n",
            "grants.models",
            "cannot use models",
        ),
    ] {
        env.set_manifest(Some(text));
        let p = env.pipeline(&json!({"url": "http://127.0.0.1:1/"}));
        let e = env
            .runner
            .submit(&env.tenant, &p, None, "{}")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("tools.web"), "{e}");
        assert!(e.contains(grant) && e.contains(why), "{e}");
        assert!(e.contains(&file.display().to_string()), "{e}");
    }
    // A malformed one names its field too.
    env.set_manifest(Some("[limits]\nhttp_requests = \"many\"\n"));
    let p = env.pipeline(&json!({"url": "http://127.0.0.1:1/"}));
    let e = env
        .runner
        .submit(&env.tenant, &p, None, "{}")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("tools.web") && e.contains("limits.http_requests"),
        "{e}"
    );

    let record = env
        .register(Some(json!({"grants": {"models": ["fast"]}})))
        .await;
    let e = env
        .runner
        .call_tool_run(
            &env.tenant,
            &record,
            "fetch",
            "{\"url\": \"http://127.0.0.1:1/\"}",
        )
        .await
        .unwrap_err();
    assert!(matches!(e, RunError::InvalidPipeline(_)), "{e:?}");
    let e = e.to_string();
    assert!(
        e.contains("grants.models") && e.contains("http-tool@0.1.0"),
        "{e}"
    );
}
