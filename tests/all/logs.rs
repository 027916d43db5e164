//! What `corral serve` logs, read as an operator reads it: stderr redirected to a file (so
//! never a terminal), in text and in JSON.

use crate::util::*;
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A `corral serve` whose stderr goes to a file.
struct LoggedServer {
    child: std::process::Child,
    url: String,
    log: PathBuf,
}

impl LoggedServer {
    fn start(data: &Path, args: &[&str], envs: &[(&str, &str)]) -> LoggedServer {
        let log = unique(data.join("serve.log"));
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_corral"));
        cmd.args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .env("CORRAL_DATA_DIR", data)
            .env_remove("CORRAL_DATABASE_URL")
            .env_remove("CORRAL_LOG_FORMAT")
            .env_remove("RUST_LOG")
            .env_remove("NO_COLOR")
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut url = String::new();
        for line in lines.by_ref() {
            if let Some(u) = line.unwrap().trim().strip_prefix("corral listening on ") {
                url = u.to_string();
                break;
            }
        }
        assert!(
            !url.is_empty(),
            "the server did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::spawn(move || for _ in lines {});
        LoggedServer { child, url, log }
    }

    /// Stops it (SIGTERM, so every line is written) and returns what it logged.
    fn stop(mut self) -> String {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        std::fs::read_to_string(&self.log).unwrap()
    }
}

impl Drop for LoggedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `path`, or `path` with a number when it exists (a restart logs to a new file).
fn unique(path: PathBuf) -> PathBuf {
    let mut candidate = path.clone();
    let mut n = 1;
    while candidate.exists() {
        candidate = path.with_extension(format!("{n}.log"));
        n += 1;
    }
    candidate
}

/// `corral ARGS` offline on `data`: its stdout, trimmed.
fn offline(data: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(args)
        .env("CORRAL_DATA_DIR", data)
        .env_remove("CORRAL_DATABASE_URL")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn http() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

async fn call(
    url: &str,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut r = http().request(method, format!("{url}{path}"));
    if !token.is_empty() {
        r = r.bearer_auth(token);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    status_and_body(r.send().await.unwrap()).await
}

async fn upload(url: &str, token: &str, plugin: &str) -> String {
    let resp = http()
        .post(format!("{url}/v1/plugins"))
        .bearer_auth(token)
        .header("content-type", "application/wasm")
        .body(std::fs::read(plugin_path(plugin)).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let body: Value = resp.json().await.unwrap();
    format!(
        "{}@{}",
        body["name"].as_str().unwrap(),
        body["version"].as_str().unwrap()
    )
}

/// Polls a run until its status is one of `want`.
async fn wait_for(url: &str, token: &str, run: &str, want: &[&str]) -> Value {
    let mut last = Value::Null;
    for _ in 0..600 {
        let (status, body) = call(url, Method::GET, &format!("/v1/runs/{run}"), token, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if want.iter().any(|w| body["run"]["status"] == *w) {
            return body;
        }
        last = body;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("run {run} never reached {want:?}: {last}");
}

/// The JSON lines with `message`, and each of `fields` equal to its value.
fn lines_with<'a>(lines: &'a [Value], message: &str, fields: &[(&str, Value)]) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|l| l["message"] == message && fields.iter().all(|(k, v)| &l[*k] == v))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_have_one_line_per_request_run_and_step_transitions_and_auth_failures_never_a_token()
 {
    let data = tempfile::tempdir().unwrap();
    // Tenants made offline: the server prints no token, and these are the only ones used.
    let admin = offline(data.path(), &["tenant", "create", "acme"]);
    let viewer = offline(
        data.path(),
        &["token", "create", "--tenant", "acme", "--role", "viewer"],
    );
    let tenant_list = offline(data.path(), &["tenant", "list"]);
    let tenant = tenant_list
        .lines()
        .find(|l| l.contains("acme"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();
    let bad_token = "crl_0123456789abcdef-not-a-token";
    let secret_query = "s3cr3t-in-a-query";

    let server = LoggedServer::start(data.path(), &["--log-format", "json"], &[]);
    let url = server.url.clone();
    assert_eq!(
        call(&url, Method::GET, "/healthz", "", None).await.0,
        StatusCode::OK
    );
    let (status, _) = call(&url, Method::GET, "/v1/runs/run_missing0001", &admin, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(
        &url,
        Method::GET,
        &format!("/v1/runs?cursor={secret_query}"),
        &admin,
        None,
    )
    .await;
    assert!(status.is_client_error(), "{status}");
    let (status, _) = call(
        &url,
        Method::GET,
        &format!("/no/such/route?key={secret_query}"),
        "",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // The role message says "an operator".
    let (status, body) = call(&url, Method::POST, "/v1/runs", &viewer, Some(json!({}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body.to_string().contains("needs an operator token"),
        "{body}"
    );

    // Runs: a step that fails once then succeeds, a step that waits for an answer, and a
    // run that fails for good.
    let flaky = upload(&url, &admin, "flaky").await;
    let (status, body) = call(
        &url,
        Method::POST,
        "/v1/runs",
        &admin,
        Some(json!({"pipeline": {"name": "logged", "defaults": {"backoff": "10ms", "max_attempts": 3}, "steps": [
            {"name": "wobbly", "plugin": flaky, "config": {"fail_until_attempt": 2}},
            {"name": "approve", "plugin": flaky, "config": {"ask": "ship it?"}},
        ]}, "input": {}})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let ok_run = body["run_id"].as_str().unwrap().to_string();
    wait_for(&url, &admin, &ok_run, &["waiting"]).await;
    let (status, body) = call(
        &url,
        Method::POST,
        &format!("/v1/runs/{ok_run}/input"),
        &admin,
        Some(json!({"approved": true})),
    )
    .await;
    assert!(status.is_success(), "{status} {body}");
    wait_for(&url, &admin, &ok_run, &["succeeded"]).await;
    let (status, body) = call(
        &url,
        Method::POST,
        "/v1/runs",
        &admin,
        Some(json!({"pipeline": {"name": "doomed", "steps": [
            {"name": "boom", "plugin": flaky, "config": {"fail_until_attempt": 9, "kind": "permanent"}},
        ]}, "input": {}})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let failed_run = body["run_id"].as_str().unwrap().to_string();
    wait_for(&url, &admin, &failed_run, &["failed"]).await;

    // Bad tokens until the address is throttled (20 a minute by default): 401s, then 429.
    let mut last = StatusCode::OK;
    for _ in 0..25 {
        last = call(&url, Method::GET, "/v1/runs", bad_token, None).await.0;
        if last == StatusCode::TOO_MANY_REQUESTS {
            break;
        }
    }
    assert_eq!(last, StatusCode::TOO_MANY_REQUESTS);
    // A valid token from the same address still works, and is logged with its tenant.
    assert_eq!(
        call(&url, Method::GET, "/v1/runs", &admin, None).await.0,
        StatusCode::OK
    );

    let log = server.stop();
    assert!(
        !log.contains("\x1b["),
        "ANSI escapes in a redirected log:\n{log}"
    );
    for secret in [admin.as_str(), viewer.as_str(), bad_token, secret_query] {
        assert!(!log.contains(secret), "`{secret}` is in the log:\n{log}");
    }
    assert!(
        !log.contains("run_missing0001"),
        "a raw path is in the log:\n{log}"
    );
    // Every line is one JSON object (no banner: tenants existed).
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let hint = lines_with(
        &lines,
        "no token is printed: the database has tenants already; to get an admin token, run (offline, with the same --data-dir or --database-url): corral token create --tenant acme --role admin",
        &[],
    );
    assert_eq!(hint.len(), 1, "{log}");

    // Requests: method, the route's template, status, latency, tenant when authenticated.
    let requests = lines_with(&lines, "request", &[]);
    for r in &requests {
        assert!(r["method"].is_string() && r["route"].is_string(), "{r}");
        assert!(r["status"].is_u64() && r["latency_ms"].is_number(), "{r}");
        assert_eq!(r["client"], "127.0.0.1", "{r}");
        assert_eq!(
            r["level"],
            if r["status"] == 429 { "WARN" } else { "INFO" },
            "{r}"
        );
    }
    let one = |route: &str, status: u64| {
        requests
            .iter()
            .filter(|r| r["route"] == route && r["status"] == status)
            .count()
    };
    assert_eq!(one("/healthz", 200), 1, "{log}");
    assert_eq!(one("/v1/runs/{id}", 404), 1, "{log}");
    assert_eq!(one("(unmatched)", 404), 1, "{log}");
    assert_eq!(one("/v1/plugins", 201), 1, "{log}");
    assert_eq!(one("/v1/runs/{id}/input", 202), 1, "{log}");
    assert!(
        one("/v1/runs", 401) >= 1 && one("/v1/runs", 429) == 1,
        "{log}"
    );
    let not_found = lines_with(
        &lines,
        "request",
        &[("route", json!("/v1/runs/{id}")), ("status", json!(404))],
    );
    assert_eq!(not_found[0]["tenant"], tenant.as_str(), "{log}");
    assert_eq!(not_found[0]["method"], "GET");
    assert!(
        lines_with(&lines, "request", &[("route", json!("/healthz"))])[0]
            .get("tenant")
            .is_none()
    );
    let refused = lines_with(&lines, "request", &[("status", json!(401))]);
    assert!(refused.iter().all(|r| r.get("tenant").is_none()), "{log}");

    // Auth failures: the reason and the client's address, 401s then the 429.
    let failures = lines_with(&lines, "authentication failure", &[("status", json!(401))]);
    assert!(failures.len() >= 20, "{log}");
    assert!(
        failures
            .iter()
            .all(|f| f["reason"] == "token unknown or revoked"
                && f["client"] == "127.0.0.1"
                && f["level"] == "WARN")
    );
    let throttled = lines_with(
        &lines,
        "authentication failure from a throttled address",
        &[("status", json!(429))],
    );
    assert_eq!(throttled.len(), 1, "{log}");
    assert_eq!(throttled[0]["client"], "127.0.0.1");

    // The run's transitions, each with run_id and tenant.
    let of_run = |message: &str, run: &str| {
        lines_with(
            &lines,
            message,
            &[("run_id", json!(run)), ("tenant", json!(tenant))],
        )
    };
    assert_eq!(of_run("run queued", &ok_run).len(), 1, "{log}");
    assert!(!of_run("run running", &ok_run).is_empty(), "{log}");
    let started: Vec<(String, u64)> = of_run("step started", &ok_run)
        .iter()
        .map(|l| {
            (
                l["step"].as_str().unwrap().to_string(),
                l["attempt"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(
        started.contains(&("wobbly".into(), 1)) && started.contains(&("wobbly".into(), 2)),
        "{started:?}"
    );
    assert!(started.iter().any(|(s, _)| s == "approve"), "{started:?}");
    let failed_attempt = lines_with(
        &lines,
        "step finished",
        &[
            ("run_id", json!(ok_run)),
            ("step", json!("wobbly")),
            ("attempt", json!(1)),
        ],
    );
    assert_eq!(failed_attempt.len(), 1, "{log}");
    assert_eq!(failed_attempt[0]["status"], "failed");
    assert_eq!(failed_attempt[0]["code"], "PLUGIN_ERROR");
    assert_eq!(failed_attempt[0]["will_retry"], true);
    let retry = lines_with(
        &lines,
        "step retrying",
        &[("run_id", json!(ok_run)), ("step", json!("wobbly"))],
    );
    assert_eq!(retry.len(), 1, "{log}");
    assert_eq!(retry[0]["attempt"], 2);
    assert_eq!(retry[0]["backoff_ms"], 10);
    let succeeded = lines_with(
        &lines,
        "step finished",
        &[
            ("run_id", json!(ok_run)),
            ("step", json!("wobbly")),
            ("attempt", json!(2)),
            ("status", json!("succeeded")),
        ],
    );
    assert_eq!(succeeded.len(), 1, "{log}");
    assert!(succeeded[0]["fuel"].as_u64().unwrap() > 0);
    let waiting = lines_with(
        &lines,
        "run waiting for input",
        &[
            ("run_id", json!(ok_run)),
            ("step", json!("approve")),
            ("tenant", json!(tenant)),
        ],
    );
    assert_eq!(waiting.len(), 1, "{log}");
    assert_eq!(of_run("run answered", &ok_run).len(), 1, "{log}");
    let end = of_run("run finished", &ok_run);
    assert_eq!(end.len(), 1, "{log}");
    assert_eq!(end[0]["status"], "succeeded");
    assert_eq!(end[0]["level"], "INFO");
    let end = of_run("run finished", &failed_run);
    assert_eq!(end.len(), 1, "{log}");
    assert_eq!(end[0]["status"], "failed");
    assert_eq!(end[0]["code"], "PLUGIN_ERROR");
    assert_eq!(end[0]["level"], "WARN");
    let boom = lines_with(
        &lines,
        "step finished",
        &[("run_id", json!(failed_run)), ("step", json!("boom"))],
    );
    assert_eq!(boom.len(), 1, "a permanent failure is not retried: {log}");
    assert_eq!(boom[0]["will_retry"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_are_plain_when_redirected_and_rust_log_overrides_the_default_level() {
    let data = tempfile::tempdir().unwrap();
    let admin = offline(data.path(), &["tenant", "create", "acme"]);
    let server = LoggedServer::start(data.path(), &[], &[]);
    let url = server.url.clone();
    assert_eq!(
        call(&url, Method::GET, "/v1/runs", &admin, None).await.0,
        StatusCode::OK
    );
    assert_eq!(
        call(&url, Method::GET, "/v1/runs/run_nope", &admin, None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    let log = server.stop();
    assert!(
        !log.contains("\x1b["),
        "ANSI escapes in a redirected log:\n{log}"
    );
    assert!(!log.contains(&admin));
    let requests: Vec<&str> = log.lines().filter(|l| l.contains(" request ")).collect();
    assert_eq!(requests.len(), 2, "{log}");
    assert!(
        requests.iter().all(|l| l.contains("INFO")
            && l.contains("method=GET")
            && l.contains("latency_ms=")
            && l.contains("tenant=ten_")),
        "{log}"
    );
    assert!(
        requests
            .iter()
            .any(|l| l.contains("route=/v1/runs/{id} status=404")),
        "{log}"
    );
    assert!(!log.contains("run_nope"), "{log}");
    // The same lines with the global flag before the command, and CORRAL_LOG_FORMAT.
    let server = LoggedServer::start(data.path(), &[], &[("CORRAL_LOG_FORMAT", "json")]);
    assert_eq!(
        call(&server.url, Method::GET, "/healthz", "", None).await.0,
        StatusCode::OK
    );
    let log = server.stop();
    assert!(
        log.lines()
            .all(|l| serde_json::from_str::<Value>(l).is_ok()),
        "{log}"
    );
    assert!(log.contains(r#""route":"/healthz""#), "{log}");

    // RUST_LOG wins over the default: at warn, no request lines.
    let server = LoggedServer::start(data.path(), &[], &[("RUST_LOG", "warn")]);
    assert_eq!(
        call(&server.url, Method::GET, "/v1/runs", &admin, None)
            .await
            .0,
        StatusCode::OK
    );
    let log = server.stop();
    assert!(!log.contains("request"), "{log}");

    // Other commands stay quiet by default: a whole run on the embedded database logs nothing.
    let pipeline = data.path().join("p.toml");
    std::fs::write(
        &pipeline,
        format!(
            "name = \"quiet\"\n[[steps]]\nname = \"say\"\nplugin = {:?}\n",
            plugin_path("echo").display().to_string()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(["--log-format", "json", "run", "-o", "jsonl"])
        .arg(&pipeline)
        .env("CORRAL_DATA_DIR", data.path())
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("step started") && !stderr.contains("INFO"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_with_only_the_local_tenant_creates_default_and_prints_its_admin_token_once() {
    let data = tempfile::tempdir().unwrap();
    // The embedded commands' tenant, as `corral run` (or `./x demo`) leaves it.
    offline(data.path(), &["secret", "list", "--tenant", "local"]);
    assert!(offline(data.path(), &["tenant", "list"]).contains("local"));

    let server = LoggedServer::start(data.path(), &[], &[]);
    let url = server.url.clone();
    let log = std::fs::read_to_string(&server.log).unwrap();
    let token = log
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("crl_"))
        .unwrap_or_else(|| panic!("no token printed:\n{log}"))
        .to_string();
    assert!(
        log.contains("created tenant `default` and its admin token")
            && log.contains("shown only this once"),
        "{log}"
    );
    assert!(
        log.contains("Authorization: Bearer <token>") && log.contains(&format!("{url}/")),
        "it says how to use it: {log}"
    );
    let (status, body) = call(&url, Method::GET, "/v1/tokens", &token, None).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "an admin token of `default`: {body}"
    );
    let log = server.stop();
    assert_eq!(
        log.matches(&token).count(),
        1,
        "printed once, never logged:\n{log}"
    );
    assert!(!log.contains("\x1b["), "{log}");
    let tenants = offline(data.path(), &["tenant", "list"]);
    assert!(
        tenants.contains("default") && tenants.contains("local"),
        "{tenants}"
    );

    // The next start prints no token, and says how to get one.
    let server = LoggedServer::start(data.path(), &[], &[]);
    let log = server.stop();
    assert!(!log.contains("crl_"), "{log}");
    assert!(
        log.contains("no token is printed")
            && log.contains("corral token create --tenant default --role admin"),
        "{log}"
    );
}
