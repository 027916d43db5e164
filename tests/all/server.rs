//! `corral serve` over real HTTP on loopback, read with a real SSE client.

use crate::util::*;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

struct Api {
    http: Client,
    url: String,
}

impl Api {
    fn new(server: &Server) -> Api {
        Api {
            http: Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            url: server.url.clone(),
        }
    }

    fn req(&self, method: Method, path: &str, token: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.url));
        if token.is_empty() {
            r
        } else {
            r.bearer_auth(token)
        }
    }

    async fn json(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut r = self.req(method, path, token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        status_and_body(r.send().await.unwrap()).await
    }

    async fn upload(&self, token: &str, plugin: &str) -> Value {
        let bytes = std::fs::read(plugin_path(plugin)).unwrap();
        let resp = self
            .req(Method::POST, "/v1/plugins", token)
            .header("content-type", "application/wasm")
            .body(bytes)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
        resp.json().await.unwrap()
    }

    /// Starts a run of `steps` (name, plugin name@version, config) and returns its id.
    async fn run(&self, token: &str, steps: Value, input: Value) -> String {
        let (status, body) = self
            .json(Method::POST, "/v1/runs", token, Some(json!({"pipeline": {"name": "t", "defaults": {"backoff": "10ms"}, "steps": steps}, "input": input})))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["status"], "queued");
        body["run_id"].as_str().unwrap().to_string()
    }

    /// Reads a run's SSE stream to its end (or `max` events), with an optional Last-Event-ID.
    async fn stream(
        &self,
        token: &str,
        run: &str,
        last: Option<i64>,
        max: usize,
    ) -> Vec<(Option<String>, Value)> {
        let mut r = self.req(Method::GET, &format!("/v1/runs/{run}/events"), token);
        if let Some(last) = last {
            r = r.header("Last-Event-ID", last.to_string());
        }
        let resp = r.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        assert_eq!(resp.headers()["cache-control"], "no-cache");
        assert_eq!(resp.headers()["x-accel-buffering"], "no");
        let mut events = resp.bytes_stream().eventsource();
        let mut out = Vec::new();
        while let Some(e) = tokio::time::timeout(Duration::from_secs(60), events.next())
            .await
            .unwrap()
        {
            let e = e.unwrap();
            let id = (!e.id.is_empty()).then(|| e.id.clone());
            out.push((id, serde_json::from_str(&e.data).unwrap()));
            if out.len() >= max {
                break;
            }
        }
        out
    }
}

fn seqs(events: &[(Option<String>, Value)]) -> Vec<i64> {
    events
        .iter()
        .filter(|(_, e)| e["type"] != "heartbeat")
        .map(|(id, e)| {
            assert_eq!(
                id.as_deref(),
                Some(e["seq"].to_string().as_str()),
                "id is the seq"
            );
            e["seq"].as_i64().unwrap()
        })
        .collect()
}

fn agent(name: &str, plugin: &str, config: Value) -> Value {
    json!({"name": name, "plugin": plugin, "config": config})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_run_flow_over_the_api() {
    let server = Server::start(&[]);
    let api = Api::new(&server);
    let admin = server.admin_token.clone();
    let echo = api.upload(&admin, "echo").await;
    assert_eq!(echo["name"], "echo");
    assert_eq!(echo["world"], "agent-plugin");
    assert!(echo["digest"].as_str().unwrap().starts_with("sha256:"));
    let flaky = api.upload(&admin, "flaky").await;

    // A stored pipeline naming plugins by name@version and by id.
    let (status, p) = api
        .json(
            Method::POST,
            "/v1/pipelines",
            &admin,
            Some(json!({"name": "two", "steps": [
                agent("first", "echo@0.1.0", json!({})),
                agent("second", flaky["id"].as_str().unwrap(), json!({"artifact": true})),
            ]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{p}");
    let (status, body) = api
        .json(
            Method::POST,
            "/v1/runs",
            &admin,
            Some(json!({"pipeline": p["id"], "input": {"hello": "api"}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let run = body["run_id"].as_str().unwrap().to_string();

    let events = api.stream(&admin, &run, None, 10_000).await;
    let seqs = seqs(&events);
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
    let last = &events.last().unwrap().1;
    assert_eq!(last["payload"]["all_done"], true);
    assert_eq!(last["payload"]["status"], "succeeded");

    let (status, detail) = api
        .json(Method::GET, &format!("/v1/runs/{run}"), &admin, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(detail["run"]["status"], "succeeded");
    assert_eq!(detail["steps"].as_array().unwrap().len(), 2);
    assert_eq!(detail["output"]["input"], json!({"hello": "api"}));
    let (_, arts) = api
        .json(
            Method::GET,
            &format!("/v1/runs/{run}/artifacts"),
            &admin,
            None,
        )
        .await;
    let art = arts["artifacts"][0]["id"].as_str().unwrap().to_string();
    let resp = api
        .req(Method::GET, &format!("/v1/artifacts/{art}"), &admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"hello": "api"}));
    let (_, list) = api
        .json(
            Method::GET,
            "/v1/runs?status=succeeded&limit=10",
            &admin,
            None,
        )
        .await;
    assert_eq!(list["runs"][0]["id"], run.as_str());

    // A plugin in use by a finished run can be deleted; the pipeline too.
    let (status, _) = api
        .json(
            Method::DELETE,
            &format!("/v1/pipelines/{}", p["id"].as_str().unwrap()),
            &admin,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_01_replay_from_last_event_id_also_across_a_server_restart() {
    let server = Server::start(&[]);
    let api = Api::new(&server);
    let admin = server.admin_token.clone();
    api.upload(&admin, "flaky").await;
    let run = api
        .run(
            &admin,
            json!([
                agent("a", "flaky@0.1.0", json!({"fail_until_attempt": 2})),
                agent("b", "flaky@0.1.0", json!({}))
            ]),
            json!({}),
        )
        .await;
    let all = api.stream(&admin, &run, None, 10_000).await;
    // Count events by seq: a heartbeat may arrive among them on a slow machine.
    let n = *seqs(&all).last().unwrap();
    assert!(n > 6);
    // Drop after event 3, reconnect with Last-Event-ID 3: exactly 4..=n, in order.
    let rest = api.stream(&admin, &run, Some(3), 10_000).await;
    assert_eq!(seqs(&rest), (4..=n).collect::<Vec<_>>());
    // The query-parameter form works too.
    let resp = api
        .req(
            Method::GET,
            &format!("/v1/runs/{run}/events?last_event_id={}", n - 1),
            &admin,
        )
        .send()
        .await
        .unwrap();
    let text = resp.text().await.unwrap();
    assert!(
        text.contains(&format!("id: {n}")) && !text.contains(&format!("id: {}\n", n - 1)),
        "{text}"
    );

    // Restart the server on the same database: the log is still there, from any point.
    let data = server.stop();
    let server = Server::start_in(data, &[]);
    let api = Api::new(&server);
    let rest = api.stream(&admin, &run, Some(5), 10_000).await;
    assert_eq!(seqs(&rest), (6..=n).collect::<Vec<_>>());
    assert_eq!(rest.last().unwrap().1, all.last().unwrap().1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_02_bad_or_foreign_last_event_ids_are_refused() {
    let server = Server::start(&[]);
    let api = Api::new(&server);
    let admin = server.admin_token.clone();
    api.upload(&admin, "echo").await;
    let run = api
        .run(
            &admin,
            json!([agent("a", "echo@0.1.0", json!({}))]),
            json!({}),
        )
        .await;
    api.stream(&admin, &run, None, 10_000).await;
    for bad in ["garbage", "-1", "99999", "1; drop table"] {
        let resp = api
            .req(Method::GET, &format!("/v1/runs/{run}/events"), &admin)
            .header("Last-Event-ID", bad)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{bad}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "INVALID_LAST_EVENT_ID");
    }
    let (status, body) = api
        .json(Method::GET, "/v1/runs/run_0000/events", &admin, None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "RUN_NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_03_heartbeats_flow_and_answers_resume_a_waiting_run() {
    let server = Server::start(&[("CORRAL_HEARTBEAT_SECS", "1")]);
    let api = Api::new(&server);
    let admin = server.admin_token.clone();
    api.upload(&admin, "flaky").await;
    let run = api
        .run(
            &admin,
            json!([agent("gate", "flaky@0.1.0", json!({"ask": "Ship?"}))]),
            json!({}),
        )
        .await;
    let resp = api
        .req(Method::GET, &format!("/v1/runs/{run}/events"), &admin)
        .send()
        .await
        .unwrap();
    let mut stream = resp.bytes_stream().eventsource();
    let (mut asked, mut heartbeats) = (false, 0);
    while heartbeats < 2 {
        let e = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_str(&e.data).unwrap();
        if v["type"] == "input_required" {
            asked = true;
        }
        if v["type"] == "heartbeat" {
            heartbeats += 1;
        }
    }
    assert!(asked);
    // A wrong answer is refused with the reason; a right one resumes the run.
    let resp = api
        .req(Method::POST, &format!("/v1/runs/{run}/input"), &admin)
        .json(&json!({"approved": "maybe"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "INVALID_ANSWER");
    let resp = api
        .req(Method::POST, &format!("/v1/runs/{run}/input"), &admin)
        .json(&json!({"approved": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let mut last = Value::Null;
    while let Some(e) = tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .unwrap()
    {
        last = serde_json::from_str(&e.unwrap().data).unwrap();
    }
    assert_eq!(
        last["payload"]["status"], "succeeded",
        "the stream closes after the final event"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_04_streams_close_after_the_final_event_on_failure_and_cancel() {
    let server = Server::start(&[]);
    let api = Api::new(&server);
    let admin = server.admin_token.clone();
    api.upload(&admin, "flaky").await;
    let failing = api
        .run(
            &admin,
            json!([agent(
                "x",
                "flaky@0.1.0",
                json!({"fail_until_attempt": 9, "kind": "permanent"})
            )]),
            json!({}),
        )
        .await;
    let events = api.stream(&admin, &failing, None, 10_000).await;
    assert_eq!(events.last().unwrap().1["payload"]["status"], "failed");

    let spinning = api
        .run(
            &admin,
            json!([agent("x", "flaky@0.1.0", json!({"sleep_ms": 60000}))]),
            json!({}),
        )
        .await;
    let (api2, admin2, id) = (Api::new(&server), admin.clone(), spinning.clone());
    let reader = tokio::spawn(async move { api2.stream(&admin2, &id, None, 10_000).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, _) = api
        .json(
            Method::POST,
            &format!("/v1/runs/{spinning}/cancel"),
            &admin,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let events = reader.await.unwrap();
    assert_eq!(events.last().unwrap().1["payload"]["status"], "cancelled");
    // Cancelling a finished run: 409, nothing changes.
    let (status, body) = api
        .json(
            Method::POST,
            &format!("/v1/runs/{spinning}/cancel"),
            &admin,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "ALREADY_FINISHED");
    // Reconnecting to a finished run replays and closes again.
    let again = api.stream(&admin, &spinning, None, 10_000).await;
    assert_eq!(again.len(), events.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_codes_401_403_404_413_422_and_429() {
    let server = Server::start(&[("CORRAL_MAX_STREAMS_PER_TENANT", "2")]);
    let api = Api::new(&server);
    let admin = server.admin_token.clone();
    // 401: no token, a bad token.
    let (status, body) = api.json(Method::GET, "/v1/runs", "", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "UNAUTHORIZED");
    // 404: unknown ids, with the stable code.
    let (status, body) = api
        .json(Method::GET, "/v1/runs/run_ffff", &admin, None)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("RUN_NOT_FOUND"))
    );
    // 422: bytes that are not a component.
    let resp = api
        .req(Method::POST, "/v1/plugins", &admin)
        .header("content-type", "application/wasm")
        .body(b"\0asmgarbage".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["code"],
        "INVALID_COMPONENT"
    );
    // 413: a JSON body over the cap; an upload declared over its cap is refused before
    // its bytes are read (we never send them).
    let big = json!({"pipeline": "x", "input": "a".repeat(2 << 20)});
    let resp = send_refused_early(|| api.req(Method::POST, "/v1/runs", &admin).json(&big)).await;
    let (status, body) = status_and_body(resp).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    let raw = raw_request(&server.url, &format!(
        "POST /v1/plugins HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {admin}\r\nContent-Type: application/wasm\r\nContent-Length: 2000000000\r\n\r\n"
    )).await;
    assert!(raw.starts_with("HTTP/1.1 413"), "{raw}");
    // MAL-07: unknown fields are refused naming the field.
    let (status, body) = api
        .json(
            Method::POST,
            "/v1/runs",
            &admin,
            Some(json!({"pipeline": "x", "input": {}, "priority": 9})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("priority"),
        "{body}"
    );
    // SSE-06: the per-tenant stream cap.
    api.upload(&admin, "flaky").await;
    let run = api
        .run(
            &admin,
            json!([agent("gate", "flaky@0.1.0", json!({"ask": "?"}))]),
            json!({}),
        )
        .await;
    let open1 = api
        .req(Method::GET, &format!("/v1/runs/{run}/events"), &admin)
        .send()
        .await
        .unwrap();
    let open2 = api
        .req(Method::GET, &format!("/v1/runs/{run}/events"), &admin)
        .send()
        .await
        .unwrap();
    let third = api
        .req(Method::GET, &format!("/v1/runs/{run}/events"), &admin)
        .send()
        .await
        .unwrap();
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(third.headers().contains_key("retry-after"));
    drop((open1, open2));
    // API-04: repeated bad tokens from one address end in 429.
    let mut last = StatusCode::OK;
    for _ in 0..30 {
        last = api.json(Method::GET, "/v1/runs", "crl_wrong", None).await.0;
    }
    assert_eq!(last, StatusCode::TOO_MANY_REQUESTS);
}

/// Sends raw bytes and returns what the server answers first.
async fn raw_request(url: &str, head: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.trim_start_matches("http://");
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    sock.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(30), sock.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_scheme_is_case_insensitive_and_other_schemes_are_refused() {
    let server = Server::start(&[]);
    let api = Api::new(&server);
    let viewer = server.token("default", "viewer");
    for (value, want) in [
        (format!("Bearer {viewer}"), StatusCode::OK),
        (format!("bearer {viewer}"), StatusCode::OK),
        (format!("BEARER  {viewer}"), StatusCode::OK),
        (format!("Basic {viewer}"), StatusCode::UNAUTHORIZED),
        (viewer.clone(), StatusCode::UNAUTHORIZED),
    ] {
        let response = api
            .req(Method::GET, "/v1/runs", "")
            .header("authorization", &value)
            .send()
            .await
            .unwrap();
        let status = response.status();
        assert_eq!(
            status,
            want,
            "Authorization: {}",
            value.replace(&viewer, "<token>")
        );
        if status == StatusCode::UNAUTHORIZED {
            let challenge = response.headers().get("www-authenticate");
            assert!(
                challenge.is_some_and(|v| v.to_str().unwrap().starts_with("Bearer")),
                "401 without a Bearer challenge: {challenge:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_09_bad_tokens_from_an_address_never_lock_out_a_valid_token_from_it() {
    let server = Server::start(&[]);
    let api = Api::new(&server);
    let admin = server.admin_token.clone();
    // Far past the throttle (20 a minute), from the same loopback address.
    let mut last = StatusCode::OK;
    for _ in 0..25 {
        last = api.json(Method::GET, "/v1/runs", "crl_wrong", None).await.0;
    }
    assert_eq!(last, StatusCode::TOO_MANY_REQUESTS);
    // Bad tokens (and none at all) from the throttled address: 429 with Retry-After.
    for token in ["crl_wrong", ""] {
        let resp = api
            .req(Method::GET, "/v1/runs", token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(resp.headers().contains_key("retry-after"));
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "TOO_MANY_AUTH_FAILURES");
    }
    // The valid token from the same address is accepted, on every try.
    for _ in 0..3 {
        let (status, body) = api.json(Method::GET, "/v1/runs", &admin, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_07_a_viewer_token_is_refused_on_every_mutating_route() {
    let server = Server::start(&[]);
    let api = Api::new(&server);
    let viewer = server.token("default", "viewer");
    for route in corral::api::ROUTES {
        let Some(role) = route.role else { continue };
        if role == corral::api::Role::Viewer {
            continue;
        }
        let path = route.path.replace("{id}", "x_0000");
        let (status, body) = api
            .json(
                corral::api::method_of(route).as_str().parse().unwrap(),
                &path,
                &viewer,
                Some(json!({})),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "{} {path}: {body}",
            route.method
        );
        assert_eq!(body["error"]["code"], "FORBIDDEN");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_01_tenant_b_gets_404_on_every_route_with_tenant_a_ids() {
    let server = Server::start(&[]);
    let api = Api::new(&server);
    let a = server.admin_token.clone();
    let b = server.token("tenant-b", "admin");
    // Tenant A's objects: a plugin, a pipeline, a finished run with an artifact, a token.
    let plugin = api.upload(&a, "flaky").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, p) = api.json(Method::POST, "/v1/pipelines", &a, Some(json!({"name": "p", "steps": [agent("s", "flaky@0.1.0", json!({"artifact": true}))]}))).await;
    let pipeline = p["id"].as_str().unwrap().to_string();
    let run = api
        .run(
            &a,
            json!([agent("s", "flaky@0.1.0", json!({"artifact": true}))]),
            json!({}),
        )
        .await;
    api.stream(&a, &run, None, 10_000).await;
    let (_, arts) = api
        .json(Method::GET, &format!("/v1/runs/{run}/artifacts"), &a, None)
        .await;
    let artifact = arts["artifacts"][0]["id"].as_str().unwrap().to_string();
    let (_, tok) = api
        .json(
            Method::POST,
            "/v1/tokens",
            &a,
            Some(json!({"role": "viewer"})),
        )
        .await;
    let token = tok["id"].as_str().unwrap().to_string();
    api.upload(&a, "http_json").await;
    api.json(
        Method::PUT,
        "/v1/secrets/WH",
        &a,
        Some(json!({"value": "k"})),
    )
    .await;
    let (_, hook) = api
        .json(
            Method::POST,
            "/v1/webhooks",
            &a,
            Some(json!({"name": "h", "plugin": "http-json@0.1.0", "signing_secrets": ["WH"]})),
        )
        .await;
    let webhook = hook["id"].as_str().unwrap().to_string();
    let (_, sched) = api
        .json(
            Method::POST,
            "/v1/schedules",
            &a,
            Some(json!({"pipeline": pipeline, "cron": "@yearly"})),
        )
        .await;
    let schedule = sched["id"].as_str().unwrap().to_string();

    // Every route taking an id, from the route table (the same one /openapi.json lists).
    let (_, doc) = api.json(Method::GET, "/openapi.json", "", None).await;
    let mut checked = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        if !path.contains("{id}") {
            continue;
        }
        let id = match path.split('/').nth(2).unwrap() {
            "plugins" => &plugin,
            "pipelines" => &pipeline,
            "runs" => &run,
            "artifacts" => &artifact,
            "tokens" => &token,
            "webhooks" => &webhook,
            "schedules" => &schedule,
            other => panic!("a new resource `{other}`: add it to this matrix"),
        };
        for method in ops.as_object().unwrap().keys() {
            let m: Method = method.to_uppercase().parse().unwrap();
            if m == Method::POST && path == "/v1/webhooks/{id}" {
                // Deliveries take no token: the signature is the credential (api_05).
                continue;
            }
            let theirs = api
                .json(
                    m.clone(),
                    &path.replace("{id}", id),
                    &b,
                    Some(json!({"approved": true})),
                )
                .await;
            let missing = api
                .json(
                    m.clone(),
                    &path.replace("{id}", "x_0000ffff"),
                    &b,
                    Some(json!({"approved": true})),
                )
                .await;
            assert_eq!(
                theirs.0,
                StatusCode::NOT_FOUND,
                "{method} {path}: {}",
                theirs.1
            );
            assert_eq!(theirs.0, missing.0, "{method} {path}");
            assert_eq!(
                theirs.1["error"]["code"], missing.1["error"]["code"],
                "{method} {path}"
            );
            let keys = |v: &Value| {
                v["error"]
                    .as_object()
                    .map(|o| o.keys().cloned().collect::<Vec<_>>())
            };
            assert_eq!(keys(&theirs.1), keys(&missing.1), "same body shape");
            checked += 1;
        }
    }
    assert!(checked >= 10, "{checked} routes checked");
    // Nothing of A's was touched.
    assert_eq!(
        api.json(Method::GET, &format!("/v1/plugins/{plugin}"), &a, None)
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        api.json(Method::GET, &format!("/v1/pipelines/{pipeline}"), &a, None)
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        api.json(Method::GET, &format!("/v1/runs/{run}"), &a, None)
            .await
            .1["run"]["status"],
        "succeeded"
    );
    // B's listings do not show A's objects.
    let (_, runs) = api.json(Method::GET, "/v1/runs", &b, None).await;
    assert_eq!(runs["runs"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_07_revoking_a_token_closes_its_open_stream() {
    let server = Server::start(&[]);
    let api = Api::new(&server);
    let admin = server.admin_token.clone();
    api.upload(&admin, "flaky").await;
    let run = api
        .run(
            &admin,
            json!([agent("gate", "flaky@0.1.0", json!({"ask": "?"}))]),
            json!({}),
        )
        .await;
    let (_, tok) = api
        .json(
            Method::POST,
            "/v1/tokens",
            &admin,
            Some(json!({"role": "viewer", "name": "watcher"})),
        )
        .await;
    let (viewer, viewer_id) = (
        tok["token"].as_str().unwrap().to_string(),
        tok["id"].as_str().unwrap().to_string(),
    );
    let resp = api
        .req(Method::GET, &format!("/v1/runs/{run}/events"), &viewer)
        .send()
        .await
        .unwrap();
    let mut stream = resp.bytes_stream().eventsource();
    stream.next().await.unwrap().unwrap();
    let (status, _) = api
        .json(
            Method::DELETE,
            &format!("/v1/tokens/{viewer_id}"),
            &admin,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let started = std::time::Instant::now();
    loop {
        match tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .unwrap()
        {
            None | Some(Err(_)) => break,
            Some(Ok(_)) => continue,
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // And the token no longer works anywhere.
    assert_eq!(
        api.json(Method::GET, "/v1/runs", &viewer, None).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_05_a_slow_subscriber_does_not_slow_the_run() {
    let server = Server::start(&[]);
    let api = Api::new(&server);
    let admin = server.admin_token.clone();
    api.upload(&admin, "stdout_flood").await;
    // ~1000 log events, far more than a client's buffer.
    let run = api
        .run(
            &admin,
            json!([agent("flood", "stdout-flood@0.1.0", json!({}))]),
            json!({"bytes": 10000, "line": 10, "stderr": false}),
        )
        .await;
    // A subscriber that connects and then reads nothing.
    let stalled = api
        .req(Method::GET, &format!("/v1/runs/{run}/events"), &admin)
        .send()
        .await
        .unwrap();
    // The run still finishes.
    let mut status = Value::Null;
    for _ in 0..600 {
        let (_, d) = api
            .json(Method::GET, &format!("/v1/runs/{run}"), &admin, None)
            .await;
        status = d["run"]["status"].clone();
        if status == "succeeded" || status == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, "succeeded");
    // Now the slow client reads: it catches up from the log, every event once, in order.
    let mut events = stalled.bytes_stream().eventsource();
    let mut got = Vec::new();
    while let Some(e) = tokio::time::timeout(Duration::from_secs(60), events.next())
        .await
        .unwrap()
    {
        let v: Value = serde_json::from_str(&e.unwrap().data).unwrap();
        got.push(v["seq"].as_i64().unwrap());
    }
    assert!(got.len() > 500, "{}", got.len());
    assert_eq!(got, (1..=got.len() as i64).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_lists_every_route_and_health_and_metrics_need_no_token() {
    let server = Server::start(&[]);
    let api = Api::new(&server);
    let (status, doc) = api.json(Method::GET, "/openapi.json", "", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    for route in corral::api::ROUTES {
        let op = &doc["paths"][route.path][route.method.to_lowercase()];
        assert!(op.is_object(), "{} {} missing", route.method, route.path);
        assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()));
        assert!(op["operationId"].is_string());
        for p in op["parameters"].as_array().into_iter().flatten() {
            if p["in"] != "path" {
                continue;
            }
            assert!(
                route
                    .path
                    .contains(&format!("{{{}}}", p["name"].as_str().unwrap()))
            );
        }
    }
    // A real OpenAPI validator (installed into the project's .venv by `cargo xtask test`).
    let validator = root().join(".venv/bin/openapi-spec-validator");
    assert!(
        validator.exists(),
        "{} is missing: run `cargo xtask test`",
        validator.display()
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let out = std::process::Command::new(&validator)
        .arg(file.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openapi.json is not valid OpenAPI: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let ops: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_object().unwrap().len())
        .sum();
    assert_eq!(ops, corral::api::ROUTES.len(), "and nothing else");
    assert_eq!(
        api.json(Method::GET, "/healthz", "", None).await.0,
        StatusCode::OK
    );
    assert_eq!(
        api.json(Method::GET, "/readyz", "", None).await.0,
        StatusCode::OK
    );
    let metrics = api
        .req(Method::GET, "/metrics", "")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "corral_queue_depth",
        "corral_open_streams",
        "corral_step_duration_seconds_bucket",
        "corral_plugin_load_seconds_count",
        "corral_fuel_used_total",
        "corral_tenants_fuel_used",
        "corral_tenants_tokens_used",
        "corral_tenants_model_cost",
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }
    // API-10: endpoints that need no token name no tenant.
    assert!(
        !metrics.contains("tenant="),
        "/metrics leaks tenant labels:\n{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dur_01_sse_01_kill_9_of_the_server_mid_run_then_resume_the_stream_after_restart() {
    let env = [("CORRAL_LEASE_MS", "1000")];
    let server = Server::start(&env);
    let api = Api::new(&server);
    let admin = server.admin_token.clone();
    api.upload(&admin, "flaky").await;
    let run = api
        .run(
            &admin,
            json!([
                agent("slow", "flaky@0.1.0", json!({"sleep_ms": 3000})),
                agent("after", "flaky@0.1.0", json!({}))
            ]),
            json!({}),
        )
        .await;
    // Read until the slow step has started, remembering the last id seen.
    let resp = api
        .req(Method::GET, &format!("/v1/runs/{run}/events"), &admin)
        .send()
        .await
        .unwrap();
    let mut stream = resp.bytes_stream().eventsource();
    let mut seen = Vec::new();
    loop {
        let e = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_str(&e.data).unwrap();
        seen.push(v["seq"].as_i64().unwrap());
        if v["type"] == "running" && v["payload"]["step_id"] == "slow" {
            break;
        }
    }
    drop(stream);
    let data = server.kill();
    let server = Server::start_in(data, &env);
    let api = Api::new(&server);
    // The client reconnects with its Last-Event-ID: everything after it, exactly once.
    let last = *seen.last().unwrap();
    let rest = api.stream(&admin, &run, Some(last), 10_000).await;
    let rest_seqs = seqs(&rest);
    assert_eq!(
        rest_seqs,
        (last + 1..=last + rest_seqs.len() as i64).collect::<Vec<_>>()
    );
    let final_event = &rest.last().unwrap().1;
    assert_eq!(final_event["payload"]["status"], "succeeded", "{rest:#?}");
    assert!(
        rest.iter()
            .any(|(_, e)| e["payload"]["error_code"] == "HOST_CRASH")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_a_finished_run_at_its_final_event_answers_204() {
    let server = Server::start(&[]);
    let api = Api::new(&server);
    let admin = server.admin_token.clone();
    api.upload(&admin, "echo").await;
    let run = api
        .run(
            &admin,
            json!([agent("a", "echo@0.1.0", json!({}))]),
            json!({}),
        )
        .await;
    let all = api.stream(&admin, &run, None, 10_000).await;
    let last = all.last().unwrap().1["seq"].as_i64().unwrap();
    let (_, detail) = api
        .json(Method::GET, &format!("/v1/runs/{run}"), &admin, None)
        .await;
    assert_eq!(detail["run"]["last_seq"], last);
    // SSE-08: nothing will follow the final event, so the answer tells a browser's
    // EventSource to stop reconnecting.
    let resp = api
        .req(Method::GET, &format!("/v1/runs/{run}/events"), &admin)
        .header("Last-Event-ID", last.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert!(resp.bytes().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_running_steps_finish_or_leaves_them_for_recovery_and_no_run_is_lost() {
    let env = [
        ("CORRAL_LEASE_MS", "1000"),
        ("CORRAL_SHUTDOWN_GRACE_SECS", "1"),
    ];
    let server = Server::start(&env);
    let api = Api::new(&server);
    let admin = server.admin_token.clone();
    api.upload(&admin, "flaky").await;
    // One step that finishes within the grace period, one that outlasts it.
    let quick = api
        .run(
            &admin,
            json!([agent("q", "flaky@0.1.0", json!({"sleep_ms": 300}))]),
            json!({}),
        )
        .await;
    let slow = api
        .run(
            &admin,
            json!([agent("s", "flaky@0.1.0", json!({"sleep_ms": 4000}))]),
            json!({}),
        )
        .await;
    for run in [&quick, &slow] {
        let r = api
            .req(Method::GET, &format!("/v1/runs/{run}/events"), &admin)
            .send()
            .await
            .unwrap();
        let mut s = r.bytes_stream().eventsource();
        loop {
            let e = s.next().await.unwrap().unwrap();
            if e.data.contains("\"started\"") {
                break;
            }
        }
    }
    let data = server.stop(); // SIGTERM
    let server = Server::start_in(data, &env);
    let api = Api::new(&server);
    for run in [&quick, &slow] {
        let events = api.stream(&admin, run, None, 10_000).await;
        let got = seqs(&events);
        assert_eq!(got, (1..=got.len() as i64).collect::<Vec<_>>());
        assert_eq!(
            events.last().unwrap().1["payload"]["status"],
            "succeeded",
            "{run}: {events:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_tools_lists_tool_plugins_in_the_mcp_shape() {
    let server = Server::start(&[]);
    let api = Api::new(&server);
    let admin = server.admin_token.clone();
    // Tool plugins do not describe themselves: their name and version come with the upload.
    let resp = api
        .req(
            Method::POST,
            "/v1/plugins?name=text-tools&version=0.1.0",
            &admin,
        )
        .header("content-type", "application/wasm")
        .body(std::fs::read(plugin_path("text_tools")).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    api.upload(&admin, "echo").await;
    let (status, body) = api.json(Method::GET, "/v1/tools", &admin, None).await;
    assert_eq!(status, StatusCode::OK);
    let tools = body["tools"].as_array().unwrap();
    assert!(tools.len() >= 2, "{body}");
    for t in tools {
        assert!(t["name"].is_string() && t["description"].is_string(), "{t}");
        assert_eq!(t["inputSchema"]["type"], "object", "{t}");
        assert_eq!(t["plugin"], "text-tools@0.1.0");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mal_06_guest_text_cannot_inject_sse_events_or_ids() {
    let server = Server::start(&[]);
    let api = Api::new(&server);
    let admin = server.admin_token.clone();
    api.upload(&admin, "flaky").await;
    let evil = "line one\r\n\r\nid: 999\ndata: {\"type\":\"forged\"}\n\n\u{0}\u{1b}[2J";
    let run = api
        .run(
            &admin,
            json!([agent("x", "flaky@0.1.0", json!({"log": evil}))]),
            json!({}),
        )
        .await;
    let resp = api
        .req(Method::GET, &format!("/v1/runs/{run}/events"), &admin)
        .send()
        .await
        .unwrap();
    let raw = resp.text().await.unwrap();
    // Every frame is one id line and one data line of JSON from the host.
    for frame in raw.split("\n\n").filter(|f| !f.is_empty()) {
        // The host's own `retry: 3000` (the first frame) aside.
        let lines: Vec<&str> = frame.lines().filter(|l| *l != "retry: 3000").collect();
        assert_eq!(lines.len(), 2, "one id and one data line: {frame:?}");
        assert!(
            lines[0].starts_with("id: ") && lines[1].starts_with("data: {"),
            "{frame:?}"
        );
        let event: Value = serde_json::from_str(&lines[1]["data: ".len()..]).unwrap();
        assert_ne!(event["type"], "forged");
        assert_ne!(lines[0], "id: 999");
    }
    assert!(
        !raw.contains('\u{1b}') && !raw.contains('\u{0}'),
        "control characters are escaped"
    );
    let logs: Vec<Value> = raw
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter(|e| e["type"] == "log")
        .collect();
    assert!(!logs.is_empty());
    assert!(
        logs.iter().any(|e| e["payload"]["message"]
            .as_str()
            .unwrap()
            .contains("id: 999")),
        "the text arrives as data: {logs:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn res_11_a_tenant_over_its_queue_cap_gets_429_and_others_are_unaffected() {
    let server = Server::start(&[
        ("CORRAL_MAX_QUEUED_PER_TENANT", "2"),
        ("CORRAL_MAX_CONCURRENT_RUNS", "1"),
    ]);
    let api = Api::new(&server);
    let a = server.admin_token.clone();
    let b = server.token("tenant-b", "operator");
    api.upload(&a, "flaky").await;
    api.upload(&b, "flaky").await;
    let slow = json!([agent("s", "flaky@0.1.0", json!({"sleep_ms": 20000}))]);
    let running = api.run(&a, slow.clone(), json!({})).await;
    // Wait until the first run occupies the only slot, so the next ones stay queued.
    for _ in 0..200 {
        let (_, d) = api
            .json(Method::GET, &format!("/v1/runs/{running}"), &a, None)
            .await;
        if d["run"]["status"] == "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    api.run(&a, slow.clone(), json!({})).await;
    api.run(&a, slow.clone(), json!({})).await;
    let resp = api
        .req(Method::POST, "/v1/runs", &a)
        .json(&json!({"pipeline": {"name": "t", "steps": slow}, "input": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().contains_key("retry-after"));
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["code"],
        "TOO_MANY_QUEUED_RUNS"
    );
    // Tenant B's queue is its own.
    api.run(&b, json!([agent("q", "flaky@0.1.0", json!({}))]), json!({}))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_managed_by_admins_per_tenant_and_never_returned_or_stored_in_clear() {
    const VALUE: &str = "api-secret-9d2e61f0";
    let server = Server::start(&[]);
    let api = Api::new(&server);
    let a = server.admin_token.clone();
    let b = server.token("other", "admin");
    let viewer = server.token("default", "viewer");
    let path = "/v1/secrets/API_TOKEN";
    let (status, body) = api
        .json(Method::PUT, path, &a, Some(json!({"value": VALUE})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _) = api
        .json(Method::PUT, path, &a, Some(json!({"value": "second"})))
        .await;
    assert_eq!(status, StatusCode::OK, "replaced");
    let (status, list) = api.json(Method::GET, "/v1/secrets", &a, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["secrets"][0]["name"], "API_TOKEN");
    assert!(!list.to_string().contains("second") && list["secrets"][0].get("value").is_none());
    // Bad names and values, other roles and other tenants.
    let (status, _) = api
        .json(
            Method::PUT,
            "/v1/secrets/bad%20name",
            &a,
            Some(json!({"value": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = api
        .json(Method::PUT, path, &a, Some(json!({"value": ""})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = api.json(Method::GET, "/v1/secrets", &viewer, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, theirs) = api.json(Method::GET, "/v1/secrets", &b, None).await;
    assert_eq!(theirs["secrets"], json!([]));
    let (status, _) = api.json(Method::DELETE, path, &b, None).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "another tenant's secret is not there"
    );
    // The CLI, offline on the same database: value from stdin, never printed.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(["secret", "set", "--tenant", "default", "CLI_TOKEN"])
        .env("CORRAL_DATA_DIR", server.data.path())
        .env_remove("CORRAL_DATABASE_URL")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "{VALUE}").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!printed.contains(VALUE));
    let (_, list) = api.json(Method::GET, "/v1/secrets", &a, None).await;
    let names: Vec<&str> = list["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["API_TOKEN", "CLI_TOKEN"]);
    let (status, _) = api.json(Method::DELETE, path, &a, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = api.json(Method::DELETE, path, &a, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Sealed at rest: the value is in no file of the data directory.
    let data = server.stop();
    for entry in std::fs::read_dir(data.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes.windows(VALUE.len()).any(|w| w == VALUE.as_bytes()),
                "{} holds the secret in clear",
                path.display()
            );
        }
    }
}

/// A Standard Webhooks delivery: (id, timestamp, signature) headers for `body`.
async fn deliver(
    api: &Api,
    hook: &str,
    id: &str,
    timestamp: i64,
    signature: &str,
    body: &str,
) -> (StatusCode, Value) {
    let resp = api
        .http
        .post(format!("{}/v1/webhooks/{hook}", api.url))
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A server with `http-json` and `echo` uploaded, signing secrets OLD and NEW, a pipeline
/// echoing its input, and a webhook signed by both (a rotation) starting it.
async fn webhook_setup(debounce: Option<&str>) -> (Server, Api, String, String) {
    let server = Server::start(&[]);
    let api = Api::new(&server);
    let a = server.admin_token.clone();
    api.upload(&a, "http_json").await;
    api.upload(&a, "echo").await;
    for (name, value) in [
        ("OLD", "whsec_b2xkLWtleS1vbGQta2V5LW9sZC1rZXk="),
        ("NEW", "whsec_bmV3LWtleS1uZXcta2V5LW5ldy1rZXk="),
    ] {
        let (status, _) = api
            .json(
                Method::PUT,
                &format!("/v1/secrets/{name}"),
                &a,
                Some(json!({"value": value})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let (_, p) = api
        .json(
            Method::POST,
            "/v1/pipelines",
            &a,
            Some(json!({"name": "on-delivery", "steps": [agent("echo", "echo@0.1.0", json!({}))]})),
        )
        .await;
    let mut body = json!({"name": "orders", "plugin": "http-json@0.1.0",
        "signing_secrets": ["NEW", "OLD"], "pipeline": p["id"]});
    if let Some(d) = debounce {
        body["debounce"] = json!(d);
    }
    let (status, hook) = api.json(Method::POST, "/v1/webhooks", &a, Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{hook}");
    assert_eq!(
        hook["url"],
        format!("/v1/webhooks/{}", hook["id"].as_str().unwrap())
    );
    let id = hook["id"].as_str().unwrap().to_string();
    (server, api, a, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_05_webhook_signatures_windows_replays_and_rotation_then_a_run_streams_over_sse() {
    use corral::runs::webhooks::sign;
    let (server, api, admin, hook) = webhook_setup(None).await;
    const NEW: &str = "whsec_bmV3LWtleS1uZXcta2V5LW5ldy1rZXk=";
    const OLD: &str = "whsec_b2xkLWtleS1vbGQta2V5LW9sZC1rZXk=";
    let body = r#"{"items": [{"order": 1}, {"order": 2}]}"#;
    let now = now_secs();

    // Bad body (signed for another), bad key, stale and future timestamps, no headers.
    let sig = sign(NEW, "msg_1", now, b"{}");
    assert_eq!(
        deliver(&api, &hook, "msg_1", now, &sig, body).await.0,
        StatusCode::UNAUTHORIZED
    );
    let sig = sign("whsec_d3Jvbmcta2V5", "msg_1", now, body.as_bytes());
    assert_eq!(
        deliver(&api, &hook, "msg_1", now, &sig, body).await.0,
        StatusCode::UNAUTHORIZED
    );
    for ts in [now - 301, now + 301] {
        let sig = sign(NEW, "msg_1", ts, body.as_bytes());
        let (status, err) = deliver(&api, &hook, "msg_1", ts, &sig, body).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{err}");
        assert!(err["error"]["message"].as_str().unwrap().contains("300 s"));
    }
    let resp = api
        .http
        .post(format!("{}/v1/webhooks/{hook}", api.url))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let sig = sign(NEW, "msg_1", now, body.as_bytes());
    assert_eq!(
        deliver(&api, "whk_0000", "msg_1", now, &sig, body).await.0,
        StatusCode::NOT_FOUND
    );

    // A good delivery starts the pipeline; its events stream over SSE.
    let (status, accepted) = deliver(&api, &hook, "msg_1", now, &sig, body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    assert_eq!(accepted["items"], 2);
    let run = accepted["run_id"].as_str().unwrap().to_string();
    let events = api.stream(&admin, &run, None, 10_000).await;
    let last = &events.last().unwrap().1;
    assert_eq!(last["payload"]["status"], "succeeded", "{events:#?}");
    let (_, record) = api
        .json(Method::GET, &format!("/v1/runs/{run}"), &admin, None)
        .await;
    let output = &record["output"];
    assert_eq!(output["items"], json!([{"order": 1}, {"order": 2}]));
    assert_eq!(output["webhook"]["deliveries"], json!(["msg_1"]));

    // The same delivery again is a replay, even correctly signed.
    assert_eq!(
        deliver(&api, &hook, "msg_1", now, &sig, body).await.0,
        StatusCode::CONFLICT
    );
    // During a rotation the old key still signs; a signature list may carry both.
    let old = sign(OLD, "msg_2", now, body.as_bytes());
    assert_eq!(
        deliver(&api, &hook, "msg_2", now, &old, body).await.0,
        StatusCode::ACCEPTED
    );
    let both = format!(
        "{} {}",
        sign("whsec_eHh4", "msg_3", now, body.as_bytes()),
        sign(NEW, "msg_3", now, body.as_bytes())
    );
    assert_eq!(
        deliver(&api, &hook, "msg_3", now, &both, body).await.0,
        StatusCode::ACCEPTED
    );
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_deliveries_within_the_debounce_window_become_one_run() {
    use corral::runs::webhooks::sign;
    // A window long enough that three deliveries fit in it on a loaded machine.
    let (_server, api, admin, hook) = webhook_setup(Some("5s")).await;
    const NEW: &str = "whsec_bmV3LWtleS1uZXcta2V5LW5ldy1rZXk=";
    let now = now_secs();
    let mut batches = Vec::new();
    for i in 0..3 {
        let body = format!(r#"{{"items": [{{"n": {i}}}]}}"#);
        let id = format!("msg_{i}");
        let sig = sign(NEW, &id, now, body.as_bytes());
        let (status, accepted) = deliver(&api, &hook, &id, now, &sig, &body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
        assert!(accepted["run_id"].is_null());
        batches.push(accepted["batch_id"].as_str().unwrap().to_string());
    }
    assert!(
        batches.iter().all(|b| b == &batches[0]),
        "one batch: {batches:?}"
    );
    // After the window, exactly one run holds all three deliveries' items.
    let mut runs = Value::Null;
    for _ in 0..600 {
        let (_, list) = api.json(Method::GET, "/v1/runs", &admin, None).await;
        if list["runs"].as_array().is_some_and(|r| !r.is_empty()) {
            runs = list["runs"].clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let runs = runs.as_array().expect("a run started after the window");
    assert_eq!(runs.len(), 1);
    let run = runs[0]["id"].as_str().unwrap();
    api.stream(&admin, run, None, 10_000).await;
    let (_, record) = api
        .json(Method::GET, &format!("/v1/runs/{run}"), &admin, None)
        .await;
    let output = &record["output"];
    assert_eq!(output["items"], json!([{"n": 0}, {"n": 1}, {"n": 2}]));
    assert_eq!(
        output["webhook"]["deliveries"],
        json!(["msg_0", "msg_1", "msg_2"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_plugins_get_their_grants_from_a_manifest_set_over_the_api() {
    // A JSON API on loopback for the connector to reach.
    let app = axum::Router::new().route(
        "/items",
        axum::routing::get(|| async { axum::Json(json!({"items": [{"a": 1}, {"a": 2}]})) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let server = Server::start(&[]);
    let api = Api::new(&server);
    let a = server.admin_token.clone();
    let plugin = api.upload(&a, "http_json").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let steps = json!([{"name": "pull", "plugin": "http-json@0.1.0", "connector": "pull",
        "max_attempts": 1, "config": {"url": format!("http://127.0.0.1:{port}/items")}}]);

    // Without a manifest the plugin reaches nothing.
    let run = api.run(&a, steps.clone(), json!({})).await;
    let events = api.stream(&a, &run, None, 10_000).await;
    let last = &events.last().unwrap().1;
    assert_eq!(last["payload"]["status"], "failed", "{events:#?}");
    assert!(
        events
            .iter()
            .any(|(_, e)| e["type"] == "http" && e["payload"]["outcome"] == "denied")
    );

    // A bad manifest is refused naming the field; a good one grants the API.
    let path = format!("/v1/plugins/{plugin}/manifest");
    let (status, err) = api
        .json(
            Method::PUT,
            &path,
            &a,
            Some(json!({"grants": {"http": [{"host": "*"}]}})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("grants.http[0]"),
        "{err}"
    );
    let manifest = json!({"grants": {"http": [{"host": "127.0.0.1", "port": port}]}});
    let (status, _) = api
        .json(Method::PUT, &path, &a, Some(manifest.clone()))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, shown) = api
        .json(Method::GET, &format!("/v1/plugins/{plugin}"), &a, None)
        .await;
    assert_eq!(shown["manifest"], manifest, "{shown}");
    let run = api.run(&a, steps, json!({})).await;
    let events = api.stream(&a, &run, None, 10_000).await;
    let last = &events.last().unwrap().1;
    assert_eq!(last["payload"]["status"], "succeeded", "{events:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_delivery_wakes_a_run_waiting_for_it() {
    use corral::runs::webhooks::sign;
    const NEW: &str = "whsec_bmV3LWtleS1uZXcta2V5LW5ldy1rZXk=";
    let (_server, api, admin, _) = webhook_setup(None).await;
    api.upload(&admin, "flaky").await;
    let (status, hook) = api
        .json(
            Method::POST,
            "/v1/webhooks",
            &admin,
            Some(
                json!({"name": "signals", "plugin": "http-json@0.1.0", "signing_secrets": ["NEW"]}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{hook}");
    let hook = hook["id"].as_str().unwrap().to_string();
    let run = api
        .run(
            &admin,
            json!([agent(
                "wait",
                "flaky@0.1.0",
                json!({"wait_for_webhook": "signals"})
            )]),
            json!({}),
        )
        .await;
    let mut status = Value::Null;
    for _ in 0..600 {
        let (_, r) = api
            .json(Method::GET, &format!("/v1/runs/{run}"), &admin, None)
            .await;
        status = r["run"]["status"].clone();
        if status == "waiting" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, "waiting");
    let body = r#"{"items": [{"signal": "go"}]}"#;
    let now = now_secs();
    let sig = sign(NEW, "sig_1", now, body.as_bytes());
    let (status, accepted) = deliver(&api, &hook, "sig_1", now, &sig, body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    assert_eq!(accepted["woken"], json!([run]));
    assert!(
        accepted["run_id"].is_null(),
        "this webhook starts no pipeline"
    );
    let events = api.stream(&admin, &run, None, 10_000).await;
    assert_eq!(events.last().unwrap().1["payload"]["status"], "succeeded");
    let (_, record) = api
        .json(Method::GET, &format!("/v1/runs/{run}"), &admin, None)
        .await;
    assert_eq!(
        record["output"]["delivery"]["items"],
        json!([{"signal": "go"}])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn res_19_an_upload_importing_what_the_host_lacks_is_refused_naming_it() {
    let server = Server::start(&[]);
    let api = Api::new(&server);
    let component = wat::parse_str(
        r#"(component
             (import "evil:escape/door@1.0.0" (instance))
             (instance $i)
             (export "corral:plugin/agent@0.1.0" (instance $i)))"#,
    )
    .unwrap();
    let resp = api
        .req(Method::POST, "/v1/plugins", &server.admin_token)
        .header("content-type", "application/wasm")
        .body(component)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = resp.json::<Value>().await.unwrap();
    assert_eq!(body["error"]["code"], "INVALID_COMPONENT", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("evil:escape/door@1.0.0"), "{body}");
}

/// An error answer in the documented shape: JSON `{"error": {"code", "message"}}`.
async fn assert_json_error(resp: reqwest::Response, want: StatusCode, what: &str) -> Value {
    let status = resp.status();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    let text = resp.text().await.unwrap();
    assert_eq!(status, want, "{what}: {text}");
    assert_eq!(
        content_type.as_deref(),
        Some("application/json"),
        "{what}: {text}"
    );
    let body: Value = serde_json::from_str(&text).unwrap();
    assert!(body["error"]["code"].is_string(), "{what}: {body}");
    assert!(body["error"]["message"].is_string(), "{what}: {body}");
    body
}

async fn mal_09_nul_and_control_characters(postgres: bool) {
    let Some(envs) = database_envs(postgres).await else {
        return;
    };
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = Server::start(&envs);
    let api = Api::new(&server);
    let admin = server.admin_token.clone();
    api.upload(&admin, "echo").await;
    for (method, path) in [
        (Method::GET, "/v1/runs/%00"),
        (Method::GET, "/v1/runs/run_%00x/artifacts"),
        (Method::POST, "/v1/runs/%01/cancel"),
        (Method::GET, "/v1/plugins/%00"),
        (Method::DELETE, "/v1/plugins/%7F"),
        (Method::GET, "/v1/pipelines/%00"),
        (Method::GET, "/v1/artifacts/%1b"),
        (Method::GET, "/v1/runs/%00/events"),
        (Method::DELETE, "/v1/tokens/%00"),
        (Method::DELETE, "/v1/secrets/%00"),
        (Method::DELETE, "/v1/webhooks/%00"),
        (Method::GET, "/v1/runs?status=%00"),
        (Method::GET, "/v1/runs?cursor=1.%00"),
        (Method::GET, "/v1/runs/%FF"),
    ] {
        let resp = api.req(method.clone(), path, &admin).send().await.unwrap();
        let status = resp.status();
        assert!(
            status == StatusCode::BAD_REQUEST || status == StatusCode::NOT_FOUND,
            "{method} {path}: {status}"
        );
        assert_json_error(resp, status, &format!("{method} {path}")).await;
    }
    // An upload named with a NUL is refused before anything is stored.
    let resp = api
        .req(Method::POST, "/v1/plugins?name=%00&version=1.0.0", &admin)
        .header("content-type", "application/wasm")
        // Refused before the body is read: the server then closes the connection.
        .header("connection", "close")
        .body(std::fs::read(plugin_path("echo")).unwrap())
        .send()
        .await
        .unwrap();
    assert_json_error(resp, StatusCode::BAD_REQUEST, "upload named NUL").await;
    // Text in JSON bodies that a database cannot store is never a 500 (Postgres refuses
    // NUL in text; SQLite stores it).
    let pipeline = json!({"name": "nul\u{0}name", "steps": [agent("a", "echo@0.1.0", json!({}))]});
    for (path, body) in [
        ("/v1/pipelines", pipeline.clone()),
        (
            "/v1/runs",
            json!({"pipeline": pipeline, "input": {"text": "a\u{0}b"}}),
        ),
    ] {
        let resp = api
            .req(Method::POST, path, &admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        if status.is_success() {
            continue;
        }
        assert_json_error(resp, StatusCode::BAD_REQUEST, path).await;
    }
    let (status, _) = api.json(Method::GET, "/v1/runs", &admin, None).await;
    assert_eq!(status, StatusCode::OK, "the server is intact");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mal_09_nul_and_control_characters_in_ids_and_queries_answer_json_4xx_on_sqlite() {
    mal_09_nul_and_control_characters(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mal_09_nul_and_control_characters_in_ids_and_queries_answer_json_4xx_on_postgres() {
    mal_09_nul_and_control_characters(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extractor_rejections_answer_in_the_json_error_shape() {
    let server = Server::start(&[]);
    let api = Api::new(&server);
    let admin = server.admin_token.clone();
    // Query strings: a bad value, an unknown key. The message names the parameter.
    for (path, names) in [
        ("/v1/runs?limit=abc", "limit"),
        ("/v1/runs?bogus=1", "bogus"),
        ("/v1/runs?limit=", "limit"),
    ] {
        let resp = api.req(Method::GET, path, &admin).send().await.unwrap();
        let body = assert_json_error(resp, StatusCode::BAD_REQUEST, path).await;
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(names), "{path}: {message}");
    }
    // JSON bodies: not JSON, the wrong content type, a missing body.
    let resp = api
        .req(Method::POST, "/v1/runs", &admin)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_json_error(resp, StatusCode::BAD_REQUEST, "bad JSON").await;
    let resp = api
        .req(Method::POST, "/v1/runs", &admin)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_json_error(resp, StatusCode::UNSUPPORTED_MEDIA_TYPE, "text/plain body").await;
    // A body over the cap that did not declare its length (chunked), on the route that
    // reads raw bytes: 413 in our shape too.
    // Refused before the body is all read: the server then closes the connection.
    let resp = send_refused_early(|| {
        let chunks =
            futures::stream::iter((0..20).map(|_| Ok::<_, std::io::Error>(vec![b'x'; 128 << 10])));
        api.req(Method::POST, "/v1/webhooks/whk_nope", "")
            .header("content-type", "application/json")
            .header("connection", "close")
            .body(reqwest::Body::wrap_stream(chunks))
    })
    .await;
    assert_json_error(resp, StatusCode::PAYLOAD_TOO_LARGE, "chunked webhook body").await;
    // A method the route does not take.
    let resp = api
        .req(Method::PUT, "/v1/runs", &admin)
        .send()
        .await
        .unwrap();
    assert_json_error(resp, StatusCode::METHOD_NOT_ALLOWED, "PUT /v1/runs").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_put_without_a_secrets_key_answers_503_secrets_disabled() {
    // A database by URL and no key: secrets are disabled (the data-dir default makes a key).
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("db.sqlite").display());
    let server = Server::start(&[("CORRAL_DATABASE_URL", url.as_str())]);
    let api = Api::new(&server);
    let admin = server.admin_token.clone();
    let resp = api
        .req(Method::PUT, "/v1/secrets/API_TOKEN", &admin)
        .json(&json!({"value": "s3cr3t"}))
        .send()
        .await
        .unwrap();
    let body = assert_json_error(resp, StatusCode::SERVICE_UNAVAILABLE, "PUT secret").await;
    assert_eq!(body["error"]["code"], "SECRETS_DISABLED");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("CORRAL_SECRETS_KEY") && message.contains("secrets_key"),
        "{message}"
    );
}

#[test]
fn a_server_without_a_secrets_key_says_so_at_start_up() {
    use std::io::{BufRead, Read};
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("db.sqlite").display());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", &url])
        .env("CORRAL_DATA_DIR", dir.path())
        .env_remove("CORRAL_SECRETS_KEY")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    for line in stdout.lines() {
        if line.unwrap().contains("corral listening on") {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(
        log.contains("WARN") && log.contains("secrets are disabled"),
        "{log}"
    );
    assert!(
        log.contains("CORRAL_SECRETS_KEY") && log.contains("secrets_key"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mal_07_stored_pipelines_are_checked_like_runs_and_errors_name_the_field() {
    let server = Server::start(&[]);
    let api = Api::new(&server);
    let admin = server.admin_token.clone();
    api.upload(&admin, "echo").await;
    // A [tools] entry naming a plugin the tenant does not have: refused by both routes.
    let pipeline = json!({
        "name": "t",
        "tools": {"text": "missing-tools@9.9.9"},
        "steps": [agent("a", "echo@0.1.0", json!({}))],
    });
    for (path, body) in [
        ("/v1/pipelines", pipeline.clone()),
        ("/v1/runs", json!({"pipeline": pipeline, "input": {}})),
    ] {
        let resp = api
            .req(Method::POST, path, &admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        let body = assert_json_error(resp, StatusCode::BAD_REQUEST, path).await;
        assert_eq!(body["error"]["code"], "INVALID_PIPELINE", "{path}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("missing-tools"), "{path}: {message}");
    }
    let (status, body) = api.json(Method::GET, "/v1/pipelines", &admin, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["pipelines"], json!([]), "nothing was stored");
    // A huge number where a small one belongs: the message names the field.
    let huge = json!({"name": "t", "defaults": {"max_attempts": 1e30},
                      "steps": [agent("a", "echo@0.1.0", json!({}))]});
    let resp = api
        .req(Method::POST, "/v1/pipelines", &admin)
        .json(&huge)
        .send()
        .await
        .unwrap();
    let body = assert_json_error(resp, StatusCode::BAD_REQUEST, "huge").await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("max_attempts"), "{message}");
    // And in a manifest set over the API.
    let plugins = api.json(Method::GET, "/v1/plugins", &admin, None).await.1;
    let id = plugins["plugins"][0]["id"].as_str().unwrap().to_string();
    let resp = api
        .req(Method::PUT, &format!("/v1/plugins/{id}/manifest"), &admin)
        .json(&json!({"limits": {"http_requests": 1e30}}))
        .send()
        .await
        .unwrap();
    let body = assert_json_error(resp, StatusCode::BAD_REQUEST, "manifest").await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("limits.http_requests"), "{message}");
}

/// A raw TCP connection to the server from loopback address `from` (127.0.0.0/8 is all
/// loopback), so that tests can act as several client addresses.
async fn connect_from(url: &str, from: [u8; 4]) -> tokio::net::TcpStream {
    let addr: std::net::SocketAddr = url.trim_start_matches("http://").parse().unwrap();
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(std::net::SocketAddr::from((from, 0))).unwrap();
    sock.connect(addr).await.unwrap()
}

/// Reads until the server closes the connection (EOF or reset), up to `limit`: what it
/// sent, or `None` when it was still open.
async fn read_until_closed(
    read: &mut (impl tokio::io::AsyncRead + Unpin),
    limit: Duration,
) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let result = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    result
        .ok()
        .map(|()| String::from_utf8_lossy(&got).into_owned())
}

/// Writes `bytes` one at a time, `every` apart, until done or the server closes.
fn trickle(
    mut write: tokio::net::tcp::OwnedWriteHalf,
    bytes: Vec<u8>,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    use tokio::io::AsyncWriteExt;
    tokio::spawn(async move {
        for b in bytes {
            if write.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(every).await;
        }
        // Then hold the connection open without sending more.
        tokio::time::sleep(Duration::from_secs(600)).await;
        drop(write);
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn res_18_slow_headers_slow_bodies_and_idle_connections_are_closed_and_the_server_stays_responsive()
 {
    use tokio::io::AsyncWriteExt;
    let server = Server::start(&[
        ("CORRAL_HEADER_READ_TIMEOUT_SECS", "2"),
        ("CORRAL_BODY_READ_TIMEOUT_SECS", "3"),
        ("CORRAL_IDLE_TIMEOUT_SECS", "4"),
        ("CORRAL_HEARTBEAT_SECS", "1"),
    ]);
    let api = Api::new(&server);
    let admin = server.admin_token.clone();
    let limit = Duration::from_secs(60);
    // Many connections trickling their headers a byte every 300 ms, from two addresses.
    let head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ".repeat(4);
    let mut slow = Vec::new();
    for i in 0..100u8 {
        let sock = connect_from(&server.url, [127, 0, 0, 2 + i % 2]).await;
        let (read, write) = sock.into_split();
        slow.push((
            read,
            trickle(write, head.clone(), Duration::from_millis(300)),
        ));
    }
    // Connections that never send a byte.
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(connect_from(&server.url, [127, 0, 0, 4]).await);
    }
    // A body trickled a byte every 300 ms, after complete headers.
    let sock = connect_from(&server.url, [127, 0, 0, 5]).await;
    let (mut body_read, body_write) = sock.into_split();
    let mut request = format!(
        "POST /v1/runs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {admin}\r\n\
         Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
    )
    .into_bytes();
    let head_len = request.len();
    request.extend(std::iter::repeat_n(b' ', 1000));
    let body_writer = {
        let mut write = body_write;
        write.write_all(&request[..head_len]).await.unwrap();
        trickle(
            write,
            request[head_len..].to_vec(),
            Duration::from_millis(300),
        )
    };
    // A kept-alive connection that made one request and then waits.
    let mut idle = connect_from(&server.url, [127, 0, 0, 6]).await;
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let idle_since = std::time::Instant::now();
    // A healthy SSE stream, open longer than the idle timeout.
    let stream = api
        .req(Method::GET, "/v1/events", &admin)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    let stream_opened = std::time::Instant::now();
    let mut events = stream.bytes_stream().eventsource();

    // With all of that open, normal requests are answered.
    for _ in 0..3 {
        let (status, _) = api.json(Method::GET, "/healthz", "", None).await;
        assert_eq!(status, StatusCode::OK);
        let (status, body) = api.json(Method::GET, "/v1/runs", &admin, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    // Slow headers and silent connections are closed without an answer worth having.
    for (mut read, writer) in slow {
        assert!(
            read_until_closed(&mut read, limit).await.is_some(),
            "a connection trickling its headers was not closed"
        );
        writer.abort();
    }
    for mut sock in silent {
        assert!(
            read_until_closed(&mut sock, limit).await.is_some(),
            "a silent connection was not closed"
        );
    }
    // The trickled body: refused in the JSON shape, and the connection closed.
    let answer = read_until_closed(&mut body_read, limit)
        .await
        .expect("a connection trickling its body was not closed");
    body_writer.abort();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("did not arrive within"), "{answer}");
    // The idle keep-alive connection: answered, then closed after the idle timeout (not
    // after the shorter header timeout).
    let answer = read_until_closed(&mut idle, limit)
        .await
        .expect("an idle kept-alive connection was not closed");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        idle_since.elapsed() >= Duration::from_millis(3500),
        "closed after {:?}, before the idle timeout",
        idle_since.elapsed()
    );
    // The SSE stream outlived them all: heartbeats still arrive at twice the idle timeout.
    loop {
        let event = tokio::time::timeout(limit, events.next())
            .await
            .expect("the stream went silent")
            .expect("the stream was closed")
            .unwrap();
        if event.data.contains("heartbeat") && stream_opened.elapsed() > Duration::from_secs(8) {
            break;
        }
    }
    let (status, _) = api.json(Method::GET, "/healthz", "", None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn res_18_one_address_gets_a_capped_number_of_connections() {
    use tokio::io::AsyncWriteExt;
    let server = Server::start(&[
        ("CORRAL_MAX_CONNECTIONS_PER_ADDRESS", "4"),
        ("CORRAL_HEADER_READ_TIMEOUT_SECS", "300"),
        ("CORRAL_IDLE_TIMEOUT_SECS", "300"),
    ]);
    let api = Api::new(&server);
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(connect_from(&server.url, [127, 0, 0, 7]).await);
    }
    // The fifth from that address is closed at once, long before any timeout.
    let mut extra = connect_from(&server.url, [127, 0, 0, 7]).await;
    let _ = extra
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let answer = read_until_closed(&mut extra, Duration::from_secs(60))
        .await
        .expect("the connection over the cap was left open");
    assert!(answer.is_empty(), "it was served: {answer}");
    // The four held ones are still served, and other addresses are unaffected.
    let mut first = held.remove(0);
    first
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut first, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let (status, _) = api.json(Method::GET, "/healthz", "", None).await;
    assert_eq!(status, StatusCode::OK);
    // Closed connections give their places back.
    drop(held);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut sock = connect_from(&server.url, [127, 0, 0, 7]).await;
        let _ = sock
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await;
        let answer = read_until_closed(&mut sock, Duration::from_secs(60))
            .await
            .unwrap();
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the places never came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
