//! Outbound HTTP from guests through `wasi:http`, under the plugin's manifest: grants,
//! the SSRF guard, limits, `http` events, and secrets that never enter the guest. The
//! guest is a real component (`http-prober`, a normal wasi:http client that follows
//! redirects) and the far side is a real HTTP server on loopback started by the test.

use crate::util::*;
use corral::capabilities::http::Resolver;
use corral::engine::{Engine, EngineConfig};
use corral::runs::pipeline;
use corral::runs::{Runner, RunnerConfig};
use corral::store::{Event, Store};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

/// What the test server saw: method, path and headers of every request.
type Seen = Arc<Mutex<Vec<(String, String, Vec<(String, String)>)>>>;

/// A loopback HTTP server:
/// - `/echo` answers with the request's `authorization` header, in the body and in an
///   `x-echo` response header;
/// - `/redirect?to=URL` answers 302 to URL;
/// - `/big` answers 256 KiB;
/// - anything else answers `ok`.
async fn server() -> (u16, Seen) {
    use axum::http::{HeaderMap, Method, StatusCode, Uri};
    use axum::response::IntoResponse;
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let app = axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap| {
        let log = log.clone();
        async move {
            let pairs = headers
                .iter()
                .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
                .collect();
            log.lock()
                .unwrap()
                .push((method.to_string(), uri.path().to_string(), pairs));
            let auth = headers
                .get("authorization")
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .unwrap_or_default();
            match uri.path() {
                "/echo" => (
                    StatusCode::OK,
                    [("x-echo", auth.clone())],
                    format!("you sent: {auth}"),
                )
                    .into_response(),
                "/redirect" => {
                    let to = uri
                        .query()
                        .and_then(|q| q.strip_prefix("to="))
                        .unwrap_or("/");
                    (StatusCode::FOUND, [("location", to.to_string())], "").into_response()
                }
                "/big" => "x".repeat(256 << 10).into_response(),
                _ => "ok".into_response(),
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, seen)
}

/// An engine whose resolver says `public.example` is 127.0.0.1: a public-looking name
/// that resolves to loopback (what DNS rebinding does).
fn rebinding_engine() -> Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let mut overrides = BTreeMap::new();
            overrides.insert(
                "public.example".to_string(),
                vec!["127.0.0.1".parse().unwrap()],
            );
            Engine::new(EngineConfig {
                cache_dir: Some(cache_dir()),
                scratch_root: std::env::temp_dir()
                    .join(format!("corral-egress-scratch-{}", std::process::id())),
                max_concurrent: 8,
                http_resolver: Resolver::with_overrides(overrides),
                ..EngineConfig::default()
            })
            .unwrap()
        })
        .clone()
}

struct Setup {
    runner: Runner,
    tenant: String,
    dir: tempfile::TempDir,
    db: tempfile::TempDir,
}

/// A runner on SQLite and a one-step pipeline of `http-prober` with `manifest`.
async fn setup(manifest: &str) -> (Setup, pipeline::Pipeline) {
    let (s, p) = setup_step(manifest, "").await;
    (s, p.unwrap())
}

/// Like [`setup`], with `step` (TOML lines) added to the step; the pipeline may not load.
async fn setup_step(
    manifest: &str,
    step: &str,
) -> (Setup, Result<pipeline::Pipeline, pipeline::PipelineError>) {
    let db = tempfile::tempdir().unwrap();
    let store = Store::open_in_dir(db.path()).await.unwrap();
    let tenant = store.ensure_tenant("egress").await.unwrap();
    let runner = Runner::new(rebinding_engine(), store, RunnerConfig::default());
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(plugin_path("http_prober"), dir.path().join("prober.wasm")).unwrap();
    std::fs::write(dir.path().join("prober.corral.toml"), manifest).unwrap();
    let p = pipeline::parse_toml(
        &format!(
            "name = \"egress\"\n[[steps]]\nname = \"probe\"\nplugin = \"prober.wasm\"\n{step}"
        ),
        dir.path(),
    )
    .unwrap();
    // The grants as the runner checks them when the pipeline is submitted.
    let p = p.manifests(None).await.map(|_| p);
    (
        Setup {
            runner,
            tenant,
            dir,
            db,
        },
        p,
    )
}

impl Setup {
    /// Runs the prober with `requests`; returns its results and the run's events.
    async fn probe(&self, p: &pipeline::Pipeline, requests: Value) -> (Vec<Value>, Vec<Event>) {
        let input = json!({ "requests": requests }).to_string();
        let run = self
            .runner
            .submit(&self.tenant, p, None, &input)
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
        let output: Value = serde_json::from_str(record.output.as_deref().unwrap()).unwrap();
        (output["results"].as_array().unwrap().clone(), events)
    }
}

fn http_events(events: &[Event]) -> Vec<&Value> {
    events
        .iter()
        .filter(|e| e.kind == "http")
        .map(|e| &e.payload)
        .collect()
}

fn host_logs(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.kind == "log" && e.payload["source"] == "host")
        .map(|e| e.payload["message"].as_str().unwrap().to_string())
        .collect()
}

fn rule(port: u16) -> String {
    format!(
        "[[grants.http]]\nhost = \"127.0.0.1\"\nport = {port}\nmethods = [\"GET\"]\npath_prefix = \"/api/\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_request_reaches_the_server_and_becomes_an_http_event() {
    let (port, seen) = server().await;
    let (s, p) = setup(&rule(port)).await;
    let (results, events) = s
        .probe(
            &p,
            json!([{"url": format!("http://127.0.0.1:{port}/api/items?q=secret-query")}]),
        )
        .await;
    assert_eq!(results[0]["status"], 200, "{results:?}");
    assert_eq!(results[0]["body"], "ok");
    assert_eq!(seen.lock().unwrap().len(), 1);
    let http = http_events(&events);
    assert_eq!(http.len(), 1, "{events:#?}");
    let e = http[0];
    assert_eq!(e["method"], "GET");
    assert_eq!(e["host"], "127.0.0.1");
    assert_eq!(e["path"], "/api/items", "the query is not recorded");
    assert_eq!(e["status"], 200);
    assert_eq!(e["bytes"], 2);
    assert_eq!(e["outcome"], "ok");
    assert_eq!(e["step_id"], "probe");
    assert!(e.get("headers").is_none() && !e.to_string().contains("secret-query"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ungranted_hosts_ports_methods_and_paths_are_refused_naming_the_missing_grant() {
    let (port, seen) = server().await;
    let (s, p) = setup(&rule(port)).await;
    let (results, events) = s
        .probe(
            &p,
            json!([
                {"url": "http://example.com/api/x"},
                {"url": format!("http://127.0.0.1:{}/api/x", port.wrapping_add(1))},
                {"method": "POST", "url": format!("http://127.0.0.1:{port}/api/x"), "body": "{}"},
                {"url": format!("http://127.0.0.1:{port}/admin")},
                {"url": format!("http://127.0.0.1:{port}/api/../admin")},
            ]),
        )
        .await;
    for r in &results {
        assert!(r["status"].is_null(), "refused: {r}");
        assert!(
            r["error"].as_str().unwrap().contains("HttpRequestDenied"),
            "{r}"
        );
    }
    assert!(
        seen.lock().unwrap().is_empty(),
        "nothing reached the server"
    );
    let logs = host_logs(&events).join("\n");
    for missing in [
        "host = \"example.com\"",
        &format!("port = {}", port.wrapping_add(1)),
        "methods = [\"POST\"]",
        "path `/admin`",
    ] {
        assert!(logs.contains(missing), "`{missing}` in:\n{logs}");
    }
    assert!(logs.contains("missing grant"));
    let http = http_events(&events);
    assert_eq!(http.len(), 5);
    assert!(http.iter().all(|e| e["outcome"] == "denied"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_manifest_every_request_is_refused() {
    let (port, seen) = server().await;
    let (s, p) = setup("").await;
    let (results, events) = s
        .probe(
            &p,
            json!([{"url": format!("http://127.0.0.1:{port}/api/x")}]),
        )
        .await;
    assert!(
        results[0]["error"]
            .as_str()
            .unwrap()
            .contains("HttpRequestDenied")
    );
    assert!(seen.lock().unwrap().is_empty());
    assert!(host_logs(&events).join("\n").contains("no http grants"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sbx_09_private_loopback_and_metadata_addresses_are_refused_unless_named() {
    let (port, seen) = server().await;
    // A rule for a public name that resolves to 127.0.0.1, and one for a metadata IP that
    // is not named by number.
    let manifest = format!(
        "[[grants.http]]\nhost = \"public.example\"\nport = {port}\n\
         [[grants.http]]\nhost = \"*.internal.example\"\n"
    );
    let (s, p) = setup(&manifest).await;
    let (results, events) = s
        .probe(
            &p,
            json!([
                {"url": format!("http://public.example:{port}/")},
                {"url": "http://169.254.169.254/latest/meta-data/"},
                {"url": "http://10.0.0.1/"},
                {"url": "http://[::1]/"},
            ]),
        )
        .await;
    assert!(
        results[0]["error"]
            .as_str()
            .unwrap()
            .contains("DestinationIpProhibited"),
        "a public name resolving to loopback is refused: {:?}",
        results[0]
    );
    for r in &results[1..] {
        assert!(
            r["error"].as_str().unwrap().contains("HttpRequestDenied"),
            "{r}"
        );
    }
    assert!(
        seen.lock().unwrap().is_empty(),
        "nothing reached the server"
    );
    let logs = host_logs(&events).join("\n");
    assert!(logs.contains("resolves to 127.0.0.1"), "{logs}");

    // Naming the address (or allowing private addresses) opens it.
    let manifest = format!(
        "[[grants.http]]\nhost = \"public.example\"\nport = {port}\nallow_private = true\n"
    );
    let (s, p) = setup(&manifest).await;
    let (results, _) = s
        .probe(
            &p,
            json!([{"url": format!("http://public.example:{port}/")}]),
        )
        .await;
    assert_eq!(results[0]["status"], 200, "{results:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sbx_09_a_redirect_to_a_private_address_is_refused() {
    let (port, seen) = server().await;
    let manifest = format!("[[grants.http]]\nhost = \"127.0.0.1\"\nport = {port}\n");
    let (s, p) = setup(&manifest).await;
    let (results, events) = s
        .probe(
            &p,
            json!([{"url": format!("http://127.0.0.1:{port}/redirect?to=http://169.254.169.254/latest/meta-data/"),
                    "follow_redirects": 3}]),
        )
        .await;
    let r = &results[0];
    assert_eq!(
        r["redirects"][0],
        "http://169.254.169.254/latest/meta-data/"
    );
    assert!(
        r["error"].as_str().unwrap().contains("HttpRequestDenied"),
        "{r}"
    );
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "only the first request was sent"
    );
    let http = http_events(&events);
    assert_eq!(http.len(), 2);
    assert_eq!(http[0]["status"], 302);
    assert_eq!(http[1]["outcome"], "denied");
    assert_eq!(http[1]["host"], "169.254.169.254");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_count_and_response_bytes_are_limited_per_step() {
    let (port, seen) = server().await;
    let manifest = format!(
        "[[grants.http]]\nhost = \"127.0.0.1\"\nport = {port}\n\
         [limits]\nhttp_requests = 2\nhttp_response_bytes = 100000\n"
    );
    let (s, p) = setup(&manifest).await;
    let url = format!("http://127.0.0.1:{port}/x");
    let (results, _) = s
        .probe(
            &p,
            json!([{"url": url}, {"url": format!("http://127.0.0.1:{port}/big")}, {"url": url}]),
        )
        .await;
    assert_eq!(results[0]["status"], 200);
    assert!(
        results[1]["error"]
            .as_str()
            .unwrap()
            .contains("reading the response"),
        "256 KiB is over the 100 kB budget: {:?}",
        results[1]
    );
    assert!(
        results[2]["error"]
            .as_str()
            .unwrap()
            .contains("ConnectionLimitReached"),
        "{:?}",
        results[2]
    );
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_reach_only_their_hosts_and_never_appear_in_guest_data_events_logs_or_the_database()
{
    const VALUE: &str = "s3cr3t-7f1c9a2b-token";
    let (port, seen) = server().await;
    let manifest = format!(
        "[[grants.http]]\nhost = \"127.0.0.1\"\nport = {port}\n\
         [[grants.http]]\nhost = \"public.example\"\nport = {port}\nallow_private = true\n\
         [grants.secrets]\nAPI_TOKEN = [\"127.0.0.1\"]\n"
    );
    let (s, p) = setup(&manifest).await;
    s.runner
        .store()
        .put_secret(&s.tenant, "API_TOKEN", VALUE)
        .await
        .unwrap();
    let auth = json!([
        ["authorization", "Bearer ${secret:API_TOKEN}"],
        ["accept-encoding", "gzip"],
        ["range", "bytes=10-14"]
    ]);
    let (results, events) = s
        .probe(
            &p,
            json!([
                {"url": format!("http://127.0.0.1:{port}/echo"), "headers": auth},
                {"url": format!("http://public.example:{port}/echo"), "headers": auth},
                {"url": format!("http://127.0.0.1:{port}/echo"),
                 "headers": [["authorization", "${secret:OTHER}"]]},
            ]),
        )
        .await;
    // The allowed host got the value.
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "only the allowed request was sent: {seen:?}");
    let sent = seen[0]
        .2
        .iter()
        .find(|(k, _)| k == "authorization")
        .unwrap();
    assert_eq!(sent.1, format!("Bearer {VALUE}"));
    let header = |name: &str| {
        seen[0]
            .2
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        header("accept-encoding").as_deref(),
        Some("identity"),
        "no compressed echo"
    );
    assert_eq!(header("range"), None, "no partial echo");
    // The echo came back redacted, in body and header.
    assert_eq!(results[0]["status"], 200);
    assert_eq!(results[0]["body"], "you sent: Bearer [redacted]");
    let echo = results[0]["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h[0] == "x-echo")
        .unwrap();
    assert_eq!(echo[1], "[redacted]");
    // Another host and an ungranted secret are refused, naming why.
    assert!(
        results[1]["error"]
            .as_str()
            .unwrap()
            .contains("HttpRequestDenied")
    );
    assert!(
        results[2]["error"]
            .as_str()
            .unwrap()
            .contains("HttpRequestDenied")
    );
    let logs = host_logs(&events).join("\n");
    assert!(
        logs.contains("may not be sent to `public.example`"),
        "{logs}"
    );
    assert!(logs.contains("secret `OTHER` is not granted"), "{logs}");
    // The value is nowhere the guest or a client can see, nor in the database files.
    let everything = format!("{results:?}{events:?}");
    assert!(!everything.contains(VALUE));
    drop(s.runner);
    for entry in std::fs::read_dir(s.db.path()).unwrap() {
        let path = entry.unwrap().path();
        // The -wal and -shm files may be checkpointed and removed as the pool closes.
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        assert!(
            !bytes.windows(VALUE.len()).any(|w| w == VALUE.as_bytes()),
            "{} holds the secret in clear",
            path.display()
        );
    }
    let _ = &s.dir;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_can_only_narrow_its_plugins_http_grants() {
    let (port, seen) = server().await;
    let manifest = format!(
        "[[grants.http]]\nhost = \"127.0.0.1\"\nport = {port}\n\
         [[grants.http]]\nhost = \"public.example\"\nport = {port}\nallow_private = true\n"
    );
    // Kept: only public.example.
    let (s, p) = setup_step(&manifest, "http = [\"public.example\"]\n").await;
    let p = p.unwrap();
    let (results, _) = s
        .probe(
            &p,
            json!([{"url": format!("http://public.example:{port}/")},
                   {"url": format!("http://127.0.0.1:{port}/")}]),
        )
        .await;
    assert_eq!(results[0]["status"], 200, "{results:?}");
    assert!(
        results[1]["error"]
            .as_str()
            .unwrap()
            .contains("HttpRequestDenied")
    );
    assert_eq!(seen.lock().unwrap().len(), 1);
    // Widening is refused when the pipeline is loaded, naming the missing grant.
    let (_, p) = setup_step(&manifest, "http = [\"api.example.com\"]\n").await;
    let e = p.unwrap_err().to_string();
    assert!(
        e.contains("steps[0].http[0]") && e.contains("missing grant"),
        "{e}"
    );
}
