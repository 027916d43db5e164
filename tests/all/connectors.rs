//! Connector steps (`connector = "pull" | "push"`) with the example connectors,
//! `http-json` and `github-issues`, against a real HTTP API on loopback started by the
//! test. Their token is a tenant secret the host fills in; the connectors never hold it.

use crate::util::*;
use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use corral::runs::pipeline;
use corral::runs::{Runner, RunnerConfig};
use corral::store::{Event, Store};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

const TOKEN: &str = "tok-5b0e2c8d";

/// What the API received: pushed item batches and created issues.
#[derive(Default)]
struct Api {
    pushed: Mutex<Vec<Value>>,
    issues: Mutex<Vec<Value>>,
}

type Shared = Arc<Api>;

fn authorized(headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .is_some_and(|v| v.as_bytes() == format!("Bearer {TOKEN}").as_bytes())
}

/// `GET /items` pages 5 orders, 2 per page (cursor = next index); `POST /items` takes
/// batches; `/repos/o/r/issues` lists 3 issues and a pull request, 2 per page, and creates
/// issues. Everything needs the token.
async fn api() -> (u16, Shared) {
    let state: Shared = Arc::default();
    let orders: Vec<Value> = (1..=5)
        .map(|i| json!({"Order ID": format!("{i}"), "Quantity": format!("{i}"), "Unit Price": "2.50"}))
        .collect();
    let items = get(
        move |headers: HeaderMap, Query(q): Query<HashMap<String, String>>| {
            let orders = orders.clone();
            async move {
                if !authorized(&headers) {
                    return Err(StatusCode::UNAUTHORIZED);
                }
                let from: usize = q.get("cursor").and_then(|c| c.parse().ok()).unwrap_or(0);
                let page: Vec<Value> = orders.iter().skip(from).take(2).cloned().collect();
                let next = (from + 2 < orders.len()).then(|| (from + 2).to_string());
                Ok(Json(json!({"items": page, "next": next})))
            }
        },
    )
    .post(
        |State(s): State<Shared>, headers: HeaderMap, Json(batch): Json<Vec<Value>>| async move {
            if !authorized(&headers) {
                return Err(StatusCode::UNAUTHORIZED);
            }
            let n = batch.len();
            s.pushed.lock().unwrap().extend(batch);
            Ok(Json(json!({"accepted": n})))
        },
    );
    let issues = get(
        |headers: HeaderMap, Query(q): Query<HashMap<String, String>>| async move {
            if !authorized(&headers) {
                return Err(StatusCode::UNAUTHORIZED);
            }
            let all = [
                json!({"number": 1, "title": "first", "state": "open", "body": "a", "labels": [{"name": "bug"}]}),
                json!({"number": 2, "title": "a PR", "state": "open", "pull_request": {}}),
                json!({"number": 3, "title": "third", "state": "open", "body": null, "labels": []}),
            ];
            let per: usize = q["per_page"].parse().unwrap();
            let page: usize = q["page"].parse().unwrap();
            assert_eq!(q["state"], "open");
            let listed: Vec<Value> = all.iter().skip((page - 1) * per).take(per).cloned().collect();
            Ok(Json(Value::Array(listed)))
        },
    )
    .post(
        |State(s): State<Shared>, headers: HeaderMap, Json(issue): Json<Value>| async move {
            if !authorized(&headers) {
                return Err(StatusCode::UNAUTHORIZED);
            }
            s.issues.lock().unwrap().push(issue);
            Ok((StatusCode::CREATED, Json(json!({"number": 99}))))
        },
    );
    let app = axum::Router::new()
        .route("/items", items)
        .route("/repos/o/r/issues", issues)
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, state)
}

struct Env {
    runner: Runner,
    tenant: String,
    dir: tempfile::TempDir,
    _db: tempfile::TempDir,
}

/// A runner on SQLite with the API token as a secret, and `plugins` copied into a
/// directory, each granted the API (and the token for it) by its manifest.
async fn env(port: u16, plugins: &[&str]) -> Env {
    let db = tempfile::tempdir().unwrap();
    let store = Store::open_in_dir(db.path()).await.unwrap();
    let tenant = store.ensure_tenant("connectors").await.unwrap();
    store.put_secret(&tenant, "API_TOKEN", TOKEN).await.unwrap();
    let runner = Runner::new(engine(), store, RunnerConfig::default());
    let dir = tempfile::tempdir().unwrap();
    for name in plugins {
        std::fs::copy(plugin_path(name), dir.path().join(format!("{name}.wasm"))).unwrap();
        std::fs::write(
            dir.path().join(format!("{name}.corral.toml")),
            format!(
                "[[grants.http]]\nhost = \"127.0.0.1\"\nport = {port}\nmethods = [\"GET\", \"POST\"]\n\
                 [grants.secrets]\nAPI_TOKEN = [\"127.0.0.1\"]\n"
            ),
        )
        .unwrap();
    }
    Env {
        runner,
        tenant,
        dir,
        _db: db,
    }
}

impl Env {
    async fn run(&self, toml: &str) -> (Value, Vec<Event>) {
        let p = pipeline::parse_toml(toml, self.dir.path()).unwrap();
        let run = self
            .runner
            .submit(&self.tenant, &p, None, "{}")
            .await
            .unwrap();
        self.runner.execute(&run.id).await.unwrap();
        let events = self
            .runner
            .store()
            .events_after(&run.id, 0, 10_000)
            .await
            .unwrap();
        let record = self.runner.store().run(&run.id).await.unwrap().unwrap();
        assert_eq!(record.status, "succeeded", "{events:#?}");
        let steps = self.runner.store().steps(&run.id).await.unwrap();
        let outputs: Vec<Value> = steps
            .iter()
            .map(|s| serde_json::from_str(s.output.as_deref().unwrap()).unwrap())
            .collect();
        (Value::Array(outputs), events)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_json_pulls_every_page_and_pushes_transformed_items_back() {
    let (port, api) = api().await;
    let env = env(port, &["http_json", "transform"]).await;
    let url = format!("http://127.0.0.1:{port}/items");
    let toml = format!(
        r#"name = "etl-over-http"
[[steps]]
name = "pull"
plugin = "http_json.wasm"
connector = "pull"
config = {{ url = "{url}", token_secret = "API_TOKEN" }}
[[steps]]
name = "transform"
plugin = "transform.wasm"
config = {{ derive = [ {{ name = "total", op = "mul", args = ["quantity", "unit_price"], round = 2 }} ] }}
[[steps]]
name = "push"
plugin = "http_json.wasm"
connector = "push"
config = {{ url = "{url}", token_secret = "API_TOKEN", batch_size = 2 }}
"#
    );
    let (outputs, events) = env.run(&toml).await;
    assert_eq!(outputs[0]["pages"], 3);
    assert_eq!(outputs[0]["complete"], true);
    assert_eq!(outputs[0]["items"].as_array().unwrap().len(), 5);
    assert_eq!(outputs[2], json!({"pushed": 5, "offered": 5}));
    let pushed = api.pushed.lock().unwrap().clone();
    assert_eq!(pushed.len(), 5);
    assert_eq!(pushed[4]["order_id"], 5);
    assert_eq!(pushed[4]["total"], 12.5);
    // Three pages and three batches, each an http event; the token is nowhere in them.
    let http: Vec<&Event> = events.iter().filter(|e| e.kind == "http").collect();
    assert_eq!(http.len(), 6, "{http:#?}");
    assert!(!format!("{events:?}").contains(TOKEN));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_step_stops_at_its_page_limit() {
    let (port, _api) = api().await;
    let env = env(port, &["http_json"]).await;
    let toml = format!(
        "name = \"limited\"\n[[steps]]\nname = \"pull\"\nplugin = \"http_json.wasm\"\n\
         connector = \"pull\"\nmax_pages = 2\n\
         config = {{ url = \"http://127.0.0.1:{port}/items\", token_secret = \"API_TOKEN\" }}\n"
    );
    let (outputs, _) = env.run(&toml).await;
    assert_eq!(outputs[0]["pages"], 2);
    assert_eq!(outputs[0]["complete"], false);
    assert_eq!(outputs[0]["items"].as_array().unwrap().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_issues_pulls_issues_without_pull_requests_and_creates_issues() {
    let (port, api) = api().await;
    let env = env(port, &["github_issues"]).await;
    let config = format!(
        "{{ api = \"http://127.0.0.1:{port}\", repo = \"o/r\", per_page = 2, token_secret = \"API_TOKEN\" }}"
    );
    let toml = format!(
        "name = \"issues\"\n\
         [[steps]]\nname = \"pull\"\nplugin = \"github_issues.wasm\"\nconnector = \"pull\"\nconfig = {config}\n\
         [[steps]]\nname = \"push\"\nplugin = \"github_issues.wasm\"\nconnector = \"push\"\nconfig = {config}\n"
    );
    let (outputs, _) = env.run(&toml).await;
    let titles: Vec<&str> = outputs[0]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["first", "third"]);
    assert_eq!(outputs[0]["items"][0]["labels"], json!(["bug"]));
    assert_eq!(outputs[1]["pushed"], 2);
    let created = api.issues.lock().unwrap().clone();
    assert_eq!(created[1]["title"], "third");
}

#[tokio::test]
async fn connector_and_agent_steps_must_use_the_right_kind_of_plugin() {
    let env = env(1, &["http_json", "echo"]).await;
    let registry: Option<&dyn corral::runs::pipeline::Registry> = None;
    for (toml, needle) in [
        (
            "name = \"x\"\n[[steps]]\nname = \"a\"\nplugin = \"http_json.wasm\"\n",
            "connector = \\\"pull\\\"",
        ),
        (
            "name = \"x\"\n[[steps]]\nname = \"a\"\nplugin = \"echo.wasm\"\nconnector = \"pull\"\n",
            "not a connector-plugin",
        ),
    ] {
        let p = pipeline::parse_toml(toml, env.dir.path()).unwrap();
        let e = p
            .load_plugins(env.runner.engine(), registry)
            .await
            .unwrap_err();
        let text = format!("{e:?}");
        assert!(text.contains(needle), "{needle} in {text}");
    }
    let e = pipeline::parse_toml(
        "name = \"x\"\n[[steps]]\nname = \"a\"\nplugin = \"echo.wasm\"\nconnector = \"fetch\"\n",
        env.dir.path(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("use \"pull\" or \"push\""), "{e}");
    let e = pipeline::parse_toml(
        "name = \"x\"\n[[steps]]\nname = \"a\"\nplugin = \"echo.wasm\"\ninput_from = \"b\"\n",
        env.dir.path(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("not an earlier step"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_etl_http_example_pulls_transforms_validates_and_pushes_back() {
    let (port, api) = api().await;
    let env = env(port, &[]).await;
    // The example as shipped, pointed at this test's API instead of 127.0.0.1:8787, with
    // its components and http-json's manifest beside it.
    let live = |text: String| text.replace("127.0.0.1:8787", &format!("127.0.0.1:{port}"));
    let text =
        live(std::fs::read_to_string(root().join("examples/etl-http/pipeline.toml")).unwrap())
            .replace("../../target/plugins/", "");
    let manifest = std::fs::read_to_string(root().join("plugins/http-json/corral.toml"))
        .unwrap()
        .replace("port = 8787", &format!("port = {port}"));
    std::fs::write(env.dir.path().join("http_json.corral.toml"), manifest).unwrap();
    for name in ["http_json", "transform", "validate"] {
        std::fs::copy(
            plugin_path(name),
            env.dir.path().join(format!("{name}.wasm")),
        )
        .unwrap();
    }
    let (outputs, _) = env.run(&text).await;
    assert_eq!(outputs[2]["ok"], true, "{}", outputs[2]);
    assert_eq!(outputs[3], json!({"pushed": 5, "offered": 5}));
    let pushed = api.pushed.lock().unwrap().clone();
    assert_eq!(pushed[0]["total"], 2.5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_08_a_connector_url_pointing_at_metadata_or_private_ranges_is_refused() {
    let (port, _api) = api().await;
    let env = env(port, &["http_json"]).await;
    // The manifest grants 127.0.0.1:PORT only; tenants control connector URLs, so every
    // other address, however it is written, is refused in the host's HTTP layer.
    for url in [
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://10.0.0.7/items".to_string(),
        format!("http://[::ffff:127.0.0.1]:{port}/items"),
        format!("http://localhost:{port}/items"),
    ] {
        let toml = format!(
            "name = \"x\"\n[[steps]]\nname = \"pull\"\nplugin = \"http_json.wasm\"\n\
             connector = \"pull\"\nmax_attempts = 1\nconfig = {{ url = \"{url}\" }}\n"
        );
        let p = pipeline::parse_toml(&toml, env.dir.path()).unwrap();
        let run = env
            .runner
            .submit(&env.tenant, &p, None, "{}")
            .await
            .unwrap();
        env.runner.execute(&run.id).await.unwrap();
        let record = env.runner.store().run(&run.id).await.unwrap().unwrap();
        assert_eq!(record.status, "failed", "{url}");
        let message = record.error_message.unwrap_or_default();
        assert!(message.contains("refused"), "{url}: {message}");
        let events = env
            .runner
            .store()
            .events_after(&run.id, 0, 1000)
            .await
            .unwrap();
        assert!(
            events
                .iter()
                .any(|e| e.kind == "http" && e.payload["outcome"] == "denied"),
            "{url}"
        );
    }
}
