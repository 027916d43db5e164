//! `/openapi.json`: typed from the server's own types, complete, and true of the live
//! server (real answers validate against their schemas; schemathesis finds no 5xx and no
//! response that breaks the document).

use crate::util::*;
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

async fn document(server: &Server) -> Value {
    client()
        .get(format!("{}/openapi.json", server.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Every `$ref` in `v`.
fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, x) in map {
                if k == "$ref"
                    && let Some(r) = x.as_str()
                {
                    out.push(r.to_string());
                }
                refs(x, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

fn is_empty_schema(s: &Value) -> bool {
    s == &json!({}) || s == &json!(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_lists_exactly_the_routes_with_typed_bodies() {
    let server = Server::start(&[]);
    let doc = document(&server).await;
    assert_eq!(doc["openapi"], "3.1.0");

    // Exactly the routes of ROUTES, with their methods.
    let listed: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect();
    let routes: BTreeSet<(String, String)> = corral::api::ROUTES
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_string()))
        .collect();
    assert_eq!(listed, routes);

    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let name = format!("{method} {path}");
            // No empty request or response schema.
            for content in op["requestBody"]["content"]
                .as_object()
                .into_iter()
                .flatten()
            {
                assert!(!is_empty_schema(&content.1["schema"]), "{name} request");
            }
            let responses = op["responses"].as_object().unwrap();
            assert!(!responses.is_empty(), "{name}");
            for (status, answer) in responses {
                let code: u16 = status.parse().unwrap();
                let content = answer["content"].as_object();
                if code == 204 {
                    assert!(content.is_none(), "{name} {status} has a body");
                    continue;
                }
                let content = content.unwrap_or_else(|| panic!("{name} {status}: no content"));
                for (media, c) in content {
                    assert!(!is_empty_schema(&c["schema"]), "{name} {status} {media}");
                }
                if code >= 400 {
                    assert_eq!(
                        content["application/json"]["schema"]["$ref"], "#/components/schemas/Error",
                        "{name} {status}"
                    );
                }
            }
            // Path parameters are listed, typed.
            for param in path
                .split('/')
                .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            {
                let p = op["parameters"]
                    .as_array()
                    .and_then(|ps| ps.iter().find(|p| p["name"] == param))
                    .unwrap_or_else(|| panic!("{name}: no parameter {param}"));
                assert_eq!(p["in"], "path");
                assert_eq!(p["schema"]["type"], "string");
            }
        }
    }

    // Every $ref resolves.
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(all.len() > 50, "{}", all.len());
    for r in &all {
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{r} is external"));
        assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
    }

    // Query parameters, with their types.
    let param = |method: &str, path: &str, name: &str| -> Value {
        doc["paths"][path][method]["parameters"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == name).cloned())
            .unwrap_or_else(|| panic!("{method} {path}: no parameter {name}"))
    };
    assert_eq!(
        param("get", "/v1/runs", "status")["schema"]["type"],
        "string"
    );
    assert!(
        param("get", "/v1/runs", "status")["schema"]["enum"]
            .as_array()
            .unwrap()
            .contains(&json!("waiting"))
    );
    assert_eq!(
        param("get", "/v1/runs", "limit")["schema"]["type"],
        "integer"
    );
    assert_eq!(param("get", "/v1/runs", "limit")["schema"]["maximum"], 1000);
    assert_eq!(param("get", "/v1/runs", "cursor")["in"], "query");
    assert_eq!(param("post", "/v1/plugins", "name")["in"], "query");
    assert_eq!(param("post", "/v1/plugins", "version")["in"], "query");
    assert_eq!(
        param("get", "/v1/runs/{id}/events", "last_event_id")["in"],
        "query"
    );
    assert_eq!(
        param("get", "/v1/runs/{id}/events", "Last-Event-ID")["in"],
        "header"
    );

    // Media types.
    let content = |method: &str, path: &str, status: &str| -> Vec<String> {
        doc["paths"][path][method]["responses"][status]["content"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };
    assert_eq!(
        content("get", "/metrics", "200"),
        ["text/plain; version=0.0.4"]
    );
    assert_eq!(
        content("get", "/v1/runs/{id}/events", "200"),
        ["text/event-stream"]
    );
    assert_eq!(content("get", "/v1/events", "200"), ["text/event-stream"]);
    assert!(
        content("get", "/v1/artifacts/{id}", "200").contains(&"application/octet-stream".into())
    );
    assert!(
        doc["paths"]["/v1/plugins"]["post"]["requestBody"]["content"]["application/wasm"]
            .is_object()
    );
    // Real statuses.
    let statuses = |method: &str, path: &str| -> BTreeSet<String> {
        doc["paths"][path][method]["responses"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };
    for s in [
        "400", "401", "403", "409", "413", "415", "422", "429", "503",
    ] {
        assert!(statuses("post", "/v1/plugins").contains(s), "upload {s}");
    }
    for s in ["400", "413", "415"] {
        assert!(
            statuses("post", "/v1/pipelines").contains(s),
            "pipelines {s}"
        );
    }
    assert!(statuses("put", "/v1/secrets/{name}").contains("503"));
    assert!(statuses("put", "/v1/secrets/{name}").contains("200"));
    assert!(statuses("get", "/v1/runs/{id}/events").contains("204"));
    assert!(statuses("post", "/v1/runs/{id}/input").contains("422"));
    assert!(!statuses("get", "/healthz").contains("401"));

    // Typed bodies: the schemas come from the Rust types.
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        doc["paths"]["/v1/runs"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
            ["$ref"],
        "#/components/schemas/RunList"
    );
    assert!(schemas["RunRecord"]["properties"]["status"]["enum"].is_array());
    assert!(
        schemas["RunRecord"]["properties"].get("spec").is_none(),
        "skipped field"
    );
    assert_eq!(schemas["Error"]["required"], json!(["error"]));
    assert_eq!(
        schemas["Pipeline"]["additionalProperties"],
        json!(false),
        "unknown keys are refused"
    );
}

/// The schema of an answer, as a schema document that resolves the document's `$ref`s.
fn answer_schema(doc: &Value, method: &str, path: &str, status: u16) -> Option<Value> {
    let schema =
        doc["paths"][path][method]["responses"][status.to_string()]["content"]["application/json"]
            ["schema"]
            .clone();
    if schema.is_null() {
        return None;
    }
    let mut root = json!({"$schema": "https://json-schema.org/draft/2020-12/schema",
                          "components": doc["components"].clone()});
    root["allOf"] = json!([schema]);
    Some(root)
}

/// Checks a live answer against the document: its status is listed for the operation,
/// and a JSON body fits the schema.
async fn check(
    doc: &Value,
    method: Method,
    template: &str,
    resp: reqwest::Response,
) -> (StatusCode, Value) {
    let status = resp.status();
    let m = method.as_str().to_lowercase();
    let responses = &doc["paths"][template][&m]["responses"];
    assert!(
        responses[status.as_str()].is_object(),
        "{method} {template} answered {status}, which the document does not list"
    );
    let media = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    let (status, body) = status_and_body(resp).await;
    if status == StatusCode::NO_CONTENT {
        return (status, body);
    }
    let listed: Vec<&String> = responses[status.as_str()]["content"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    let media = media.unwrap_or_default();
    assert!(
        listed
            .iter()
            .any(|l| l.as_str() == "*/*" || media.split(';').next() == l.split(';').next()),
        "{method} {template} {status}: content-type {media} not in {listed:?}"
    );
    if let Some(schema) = answer_schema(doc, &m, template, status.as_u16()) {
        let validator = jsonschema::validator_for(&schema).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&body)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {template} {status}: {errors:?}\n{body}"
        );
    }
    (status, body)
}

/// Objects of every kind, made through the API: (plugin, pipeline, run, artifact, webhook).
struct Seeded {
    plugin: String,
    pipeline: String,
    run: String,
    artifact: String,
    webhook: String,
    schedule: String,
}

async fn seed(server: &Server, doc: &Value, checked: &mut usize) -> Seeded {
    let http = client();
    let url = &server.url;
    let token = &server.admin_token;
    macro_rules! call {
        ($method:expr, $template:expr, $path:expr, $build:expr) => {{
            let r = $build(
                http.request($method, format!("{url}{}", $path))
                    .bearer_auth(token),
            );
            *checked += 1;
            check(doc, $method, $template, r.send().await.unwrap()).await
        }};
    }
    let upload = |name: &'static str| {
        move |r: reqwest::RequestBuilder| {
            r.header("content-type", "application/wasm")
                .body(std::fs::read(plugin_path(name)).unwrap())
        }
    };
    let (status, flaky) = call!(Method::POST, "/v1/plugins", "/v1/plugins", upload("flaky"));
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = call!(Method::POST, "/v1/plugins", "/v1/plugins", upload("flaky"));
    assert_eq!(status, StatusCode::CONFLICT);
    call!(
        Method::POST,
        "/v1/plugins",
        "/v1/plugins",
        upload("http_json")
    );
    let (status, _) = call!(
        Method::POST,
        "/v1/plugins",
        "/v1/plugins",
        |r: reqwest::RequestBuilder| r.header("content-type", "text/plain").body("x")
    );
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (status, _) = call!(
        Method::POST,
        "/v1/plugins",
        "/v1/plugins",
        |r: reqwest::RequestBuilder| r.header("content-type", "application/wasm").body("x")
    );
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let plugin = flaky["id"].as_str().unwrap().to_string();
    call!(Method::GET, "/v1/plugins", "/v1/plugins", |r| r);
    call!(Method::GET, "/v1/tools", "/v1/tools", |r| r);
    call!(
        Method::GET,
        "/v1/plugins/{id}",
        format!("/v1/plugins/{plugin}"),
        |r| r
    );
    let steps = json!([{"name": "s", "plugin": "flaky@0.1.0", "config": {"artifact": true}}]);
    let (status, p) = call!(
        Method::POST,
        "/v1/pipelines",
        "/v1/pipelines",
        |r: reqwest::RequestBuilder| r.json(&json!({"name": "p", "steps": steps}))
    );
    assert_eq!(status, StatusCode::CREATED, "{p}");
    let pipeline = p["id"].as_str().unwrap().to_string();
    let (status, _) = call!(
        Method::POST,
        "/v1/pipelines",
        "/v1/pipelines",
        |r: reqwest::RequestBuilder| r.body("{}")
    );
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    call!(Method::GET, "/v1/pipelines", "/v1/pipelines", |r| r);
    call!(
        Method::GET,
        "/v1/pipelines/{id}",
        format!("/v1/pipelines/{pipeline}"),
        |r| r
    );
    let (status, run) = call!(
        Method::POST,
        "/v1/runs",
        "/v1/runs",
        |r: reqwest::RequestBuilder| r.json(&json!({"pipeline": pipeline, "input": {"a": 1}}))
    );
    assert_eq!(status, StatusCode::CREATED, "{run}");
    let run = run["run_id"].as_str().unwrap().to_string();
    let mut finished = false;
    for _ in 0..600 {
        let (_, d) = call!(
            Method::GET,
            "/v1/runs/{id}",
            format!("/v1/runs/{run}"),
            |r| r
        );
        if d["run"]["status"] == "succeeded" {
            finished = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(finished);
    call!(
        Method::GET,
        "/v1/runs",
        "/v1/runs?limit=1&status=succeeded",
        |r| r
    );
    let (status, _) = call!(Method::GET, "/v1/runs", "/v1/runs?limit=0", |r| r);
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = call!(
        Method::POST,
        "/v1/runs/{id}/cancel",
        format!("/v1/runs/{run}/cancel"),
        |r| r
    );
    assert_eq!(status, StatusCode::CONFLICT);
    let (_, arts) = call!(
        Method::GET,
        "/v1/runs/{id}/artifacts",
        format!("/v1/runs/{run}/artifacts"),
        |r| r
    );
    let artifact = arts["artifacts"][0]["id"].as_str().unwrap().to_string();
    call!(
        Method::GET,
        "/v1/artifacts/{id}",
        format!("/v1/artifacts/{artifact}"),
        |r| r
    );
    let (status, _) = call!(Method::GET, "/v1/runs/{id}", "/v1/runs/x_0000", |r| r);
    assert_eq!(status, StatusCode::NOT_FOUND);
    call!(
        Method::POST,
        "/v1/tokens",
        "/v1/tokens",
        |r: reqwest::RequestBuilder| r.json(&json!({"role": "viewer", "name": "v"}))
    );
    call!(Method::GET, "/v1/tokens", "/v1/tokens", |r| r);
    let (status, _) = call!(
        Method::PUT,
        "/v1/secrets/{name}",
        "/v1/secrets/WH",
        |r: reqwest::RequestBuilder| r.json(&json!({"value": "k"}))
    );
    assert_eq!(status, StatusCode::CREATED);
    call!(Method::GET, "/v1/secrets", "/v1/secrets", |r| r);
    let (status, hook) = call!(
        Method::POST,
        "/v1/webhooks",
        "/v1/webhooks",
        |r: reqwest::RequestBuilder| r
            .json(&json!({"name": "h", "plugin": "http-json@0.1.0", "signing_secrets": ["WH"]}))
    );
    assert_eq!(status, StatusCode::CREATED, "{hook}");
    let webhook = hook["id"].as_str().unwrap().to_string();
    call!(Method::GET, "/v1/webhooks", "/v1/webhooks", |r| r);
    let (status, _) = call!(
        Method::PUT,
        "/v1/plugins/{id}/manifest",
        format!("/v1/plugins/{plugin}/manifest"),
        |r: reqwest::RequestBuilder| r.json(&json!({"grants": {"tools": []}}))
    );
    assert_eq!(status, StatusCode::OK);
    call!(
        Method::GET,
        "/v1/plugins/{id}",
        format!("/v1/plugins/{plugin}"),
        |r| r
    );
    let (status, schedule) = call!(
        Method::POST,
        "/v1/schedules",
        "/v1/schedules",
        |r: reqwest::RequestBuilder| r.json(&json!({"pipeline": pipeline, "cron": "@yearly"}))
    );
    assert_eq!(status, StatusCode::CREATED, "{schedule}");
    let schedule = schedule["id"].as_str().unwrap().to_string();
    let (status, _) = call!(
        Method::POST,
        "/v1/schedules",
        "/v1/schedules",
        |r: reqwest::RequestBuilder| r.json(&json!({"pipeline": pipeline, "cron": "never"}))
    );
    assert_eq!(status, StatusCode::BAD_REQUEST);
    call!(Method::GET, "/v1/schedules", "/v1/schedules", |r| r);
    call!(
        Method::GET,
        "/v1/schedules/{id}",
        format!("/v1/schedules/{schedule}"),
        |r| r
    );
    Seeded {
        plugin,
        pipeline,
        run,
        artifact,
        webhook,
        schedule,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_answers_fit_their_documented_schemas() {
    let server = Server::start(&[]);
    let doc = document(&server).await;
    let mut checked = 0;
    seed(&server, &doc, &mut checked).await;
    let http = client();
    // Public routes and the session routes.
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let resp = http
            .get(format!("{}{path}", server.url))
            .send()
            .await
            .unwrap();
        check(&doc, Method::GET, path, resp).await;
    }
    let resp = http
        .post(format!("{}/v1/session", server.url))
        .json(&json!({"token": server.admin_token}))
        .send()
        .await
        .unwrap();
    let (status, session) = check(&doc, Method::POST, "/v1/session", resp).await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    let resp = http
        .post(format!("{}/v1/session", server.url))
        .json(&json!({"token": "crl_nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        check(&doc, Method::POST, "/v1/session", resp).await.0,
        StatusCode::UNAUTHORIZED
    );
    let resp = http
        .get(format!("{}/v1/runs", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        check(&doc, Method::GET, "/v1/runs", resp).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert!(checked > 25, "{checked}");
}

/// schemathesis (installed into the project's `.venv` by `cargo xtask test`) against a
/// live server with objects of every kind: no 5xx, and every answer's status, content
/// type and body as the document says. `CORRAL_SKIP_SCHEMATHESIS=1` skips it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_answer_off_the_document() {
    if std::env::var("CORRAL_SKIP_SCHEMATHESIS").is_ok_and(|v| v == "1") {
        eprintln!("CORRAL_SKIP_SCHEMATHESIS=1: schemathesis not run");
        return;
    }
    let st = root().join(".venv/bin/schemathesis");
    assert!(
        st.exists(),
        "{} is missing: run `cargo xtask test` (or set CORRAL_SKIP_SCHEMATHESIS=1)",
        st.display()
    );
    let server = Server::start(&[]);
    let doc = document(&server).await;
    let mut checked = 0;
    let s = seed(&server, &doc, &mut checked).await;
    // Real ids for the path parameters, so the operations reach past their 404s. Token ids
    // stay generated: revoking the token the run uses would leave only 401s to test.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("schemathesis.toml");
    let mut toml = String::new();
    for (prefix, name, value) in [
        ("/v1/plugins/", "id", &s.plugin),
        ("/v1/pipelines/", "id", &s.pipeline),
        ("/v1/runs/", "id", &s.run),
        ("/v1/artifacts/", "id", &s.artifact),
        ("/v1/webhooks/", "id", &s.webhook),
        ("/v1/schedules/", "id", &s.schedule),
        ("/v1/secrets/", "name", &"WH".to_string()),
    ] {
        toml.push_str(&format!(
            "[[operations]]\ninclude-path-regex = \"^{prefix}\"\nparameters = {{ \"path.{name}\" = \"{value}\" }}\n\n"
        ));
    }
    std::fs::write(&config, toml).unwrap();
    let report = root().join("target/schemathesis");
    // A longer hunt: CORRAL_SCHEMATHESIS_EXAMPLES=500.
    let examples = std::env::var("CORRAL_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "30".into());
    let child = tokio::process::Command::new(&st)
        .arg("--config-file")
        .arg(&config)
        .args(["run", &format!("{}/openapi.json", server.url)])
        .args([
            "--header",
            &format!("Authorization: Bearer {}", server.admin_token),
        ])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_schema_conformance",
            // The tenant stream is live only: it never ends by itself.
            "--exclude-path",
            "/v1/events",
            "--max-examples",
            &examples,
            "--request-timeout",
            "20",
            "--workers",
            "1",
            "--seed",
            "1",
            "--no-color",
            "--report",
            "junit",
            "--report-dir",
        ])
        .arg(&report)
        .env("SCHEMATHESIS_TELEMETRY", "false")
        // Its cache goes beside the config, not into the source tree.
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Bounded: a run this size takes well under a minute; the limit is for a stuck one.
    let (out, err, status) = child_output(child, Duration::from_secs(300), "schemathesis").await;
    assert!(
        status.success(),
        "schemathesis found problems:\n{out}\n{err}"
    );
    assert!(out.contains("passed"), "{out}");
}
