//! `/mcp` driven by a second, independent client: the official MCP Python SDK (pinned and
//! installed into the project's `.venv` by `./x test`), running
//! `tests/mcp_python/client_checks.py` against a real `corral serve` with a tenant's tool
//! plugin and pipelines: tools/list, a tool call, a pipeline as a task to completion, its
//! input request answered, a cancel, another tenant's token seeing nothing, and oversized
//! arguments refused (API-12). `CORRAL_SKIP_MCP_PYTHON=1` skips it.

use crate::util::*;
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

/// The question the asking pipeline's step puts to a person.
const QUESTION: &str = "Ship the release?";

fn http() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

async fn call(url: &str, token: &str, method: Method, path: &str, body: Option<Value>) -> Value {
    let mut r = http()
        .request(method, format!("{url}{path}"))
        .bearer_auth(token);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let (status, body) = status_and_body(r.send().await.unwrap()).await;
    assert!(status.is_success(), "{path}: {status} {body}");
    body
}

async fn upload(url: &str, token: &str, file: &str, query: &str) {
    let resp = http()
        .post(format!("{url}/v1/plugins{query}"))
        .bearer_auth(token)
        .header("content-type", "application/wasm")
        .body(std::fs::read(plugin_path(file)).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED, "uploading {file}");
}

/// The venv's python, once it can import the SDK; `None` when the test is skipped.
fn python() -> Option<std::path::PathBuf> {
    if std::env::var("CORRAL_SKIP_MCP_PYTHON").is_ok_and(|v| v == "1") {
        eprintln!("CORRAL_SKIP_MCP_PYTHON=1: the MCP Python SDK checks not run");
        return None;
    }
    let python = root().join(".venv/bin/python");
    let has_sdk = std::process::Command::new(&python)
        .args(["-c", "import mcp, mcp_types"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        has_sdk,
        "the MCP Python SDK is missing from {}: run `./x test` (it installs the pinned `mcp` \
         into .venv), or set CORRAL_SKIP_MCP_PYTHON=1",
        python.display()
    );
    Some(python)
}

async fn api_12_the_python_sdk_drives_tools_tasks_and_tenants(postgres: bool) {
    let Some(python) = python() else {
        return;
    };
    let Some(envs) = database_envs(postgres).await else {
        return;
    };
    // A small run-input cap, so oversized arguments fit in a request body (1 MiB cap) and
    // reach the MCP handler's own check.
    let server = start_with(&envs, &[("CORRAL_MAX_INPUT_BYTES", "4096")]);
    let url = server.url.clone();
    // Tenant `acme` has the tool plugin and the pipelines; tenant `other` has nothing.
    let acme = token(&server, &envs, "acme", "operator");
    let acme_admin = token(&server, &envs, "acme", "admin");
    let other = token(&server, &envs, "other", "admin");
    upload(
        &url,
        &acme_admin,
        "text_tools",
        "?name=text-tools&version=0.1.0",
    )
    .await;
    upload(&url, &acme_admin, "echo", "").await;
    upload(&url, &acme_admin, "flaky", "").await;
    for pipeline in [
        json!({"name": "done", "steps": [{"name": "echo", "plugin": "echo@0.1.0", "config": {}}]}),
        json!({"name": "ask", "steps": [{"name": "gate", "plugin": "flaky@0.1.0",
                                          "config": {"ask": QUESTION}}]}),
    ] {
        call(
            &url,
            &acme_admin,
            Method::POST,
            "/v1/pipelines",
            Some(pipeline),
        )
        .await;
    }
    // The names MCP must list are the REST API's.
    let listed = call(&url, &acme, Method::GET, "/v1/tools", None).await;
    let names: Vec<&str> = listed["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"slugify"), "{listed}");

    let child = tokio::process::Command::new(&python)
        .arg(root().join("tests/mcp_python/client_checks.py"))
        .args(["--url", &format!("{url}/mcp")])
        .args(["--token", &acme, "--other-token", &other])
        .args([
            "--tool",
            "slugify",
            "--tool-args",
            r#"{"text": "Hello, MCP World!"}"#,
        ])
        .args(["--tool-expect", r#"{"slug": "hello-mcp-world"}"#])
        // `top` outside 1..=50: the guest refuses it (invalid input), a tool error.
        .args(["--error-tool", "extract_keywords"])
        .args(["--error-args", r#"{"text": "alpha beta", "top": 99}"#])
        .args(["--expect-tools", &names.join(",")])
        .args(["--done-pipeline", "done", "--ask-pipeline", "ask"])
        .args(["--question", QUESTION])
        // Over the run-input cap.
        .args(["--oversize-bytes", "5000"])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Bounded: the checks take seconds; the limit is for a stuck server or client.
    let (out, err, status) =
        child_output(child, Duration::from_secs(240), "the MCP Python SDK checks").await;
    assert!(
        status.success(),
        "the MCP Python SDK checks failed ({status}):\n{out}\n{err}"
    );
    assert!(out.contains("mcp python checks: all"), "{out}\n{err}");
    eprintln!("{out}");
    // Each task was a durable run of the tenant (the cancelled one among them), and
    // nothing it did leaked into the other tenant.
    let ours = call(&url, &acme, Method::GET, "/v1/runs", None).await;
    let statuses: Vec<&str> = ours["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert!(statuses.contains(&"cancelled"), "{ours}");
    assert!(
        statuses.iter().filter(|s| **s == "succeeded").count() >= 4,
        "{ours}"
    );
    let theirs = call(&url, &other, Method::GET, "/v1/runs", None).await;
    assert_eq!(theirs["runs"], json!([]), "{theirs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_12_the_python_sdk_drives_tools_tasks_and_tenants_sqlite() {
    api_12_the_python_sdk_drives_tools_tasks_and_tenants(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_12_the_python_sdk_drives_tools_tasks_and_tenants_postgres() {
    api_12_the_python_sdk_drives_tools_tasks_and_tenants(true).await;
}
