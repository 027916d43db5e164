//! Restart from a step with a person's feedback (issue 15, DUR-21 onward), against real
//! `corral serve` processes on SQLite and Postgres, real wasmtime and the `flaky` fixture
//! (which outputs `{input, attempt, feedback}` as its context gave them).

use crate::util::*;
use corral::store::Event;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

/// Generous: a loaded 2-core machine never comes near it.
const LEASE_MS: &str = "3000";

/// A [`ServerHost`] on this file's lease, speaking JSON with its admin token.
struct Host(ServerHost);

impl std::ops::Deref for Host {
    type Target = ServerHost;
    fn deref(&self) -> &ServerHost {
        &self.0
    }
}

impl std::ops::DerefMut for Host {
    fn deref_mut(&mut self) -> &mut ServerHost {
        &mut self.0
    }
}

impl Host {
    fn start(db: &Db) -> Host {
        Host(ServerHost::start(db, &[("CORRAL_LEASE_MS", LEASE_MS)]))
    }

    /// `kill -9`, then a fresh start on the same database.
    fn crash_and_restart(&mut self) {
        self.0.restart();
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.0.post(path, Some(body)).await
    }

    async fn upload_flaky(&self) -> String {
        self.upload("flaky").await
    }

    /// Starts a run of `flaky` steps `s0, s1, ...`, one per config; its id.
    async fn submit(&self, plugin: &str, configs: &[Value]) -> String {
        let steps: Vec<Value> = configs
            .iter()
            .enumerate()
            .map(|(i, c)| json!({"name": format!("s{i}"), "plugin": plugin, "config": c}))
            .collect();
        let (status, body) = self
            .post(
                "/v1/runs",
                json!({"pipeline": {"name": "restartable", "defaults": {"backoff": "10ms"},
                                    "steps": steps},
                       "input": {"n": 1}}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["run_id"].as_str().unwrap().to_string()
    }

    /// `GET /v1/runs/{id}` once the run has ended its segment number `restarts + 1`.
    async fn ended(&self, id: &str, restarts: i64) -> Value {
        let mut doc = Value::Null;
        for _ in 0..1200 {
            let (status, body) = self.get(&format!("/v1/runs/{id}")).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            let st = body["run"]["status"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if body["run"]["restarts"] == restarts
                && ["succeeded", "failed", "cancelled"].contains(&st.as_str())
            {
                return body;
            }
            doc = body;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("run {id} did not end (restarts {restarts}): {doc:#}");
    }

    /// Waits until the run has status `status`.
    async fn reaches(&self, id: &str, status: &str) -> Value {
        let mut doc = Value::Null;
        for _ in 0..1200 {
            let (_, body) = self.get(&format!("/v1/runs/{id}")).await;
            if body["run"]["status"] == status {
                return body;
            }
            doc = body;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("run {id} never {status}: {doc:#}");
    }

    async fn restart(&self, id: &str, body: Value) -> (StatusCode, Value) {
        self.post(&format!("/v1/runs/{id}/restart"), body).await
    }
}

/// The attempts of step `idx` in a run document.
fn attempts_of(doc: &Value, idx: i64) -> Vec<Value> {
    doc["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["step_idx"] == idx)
        .cloned()
        .collect()
}

/// A restarted run's log is one coherent stream: seq 1..n without gap or duplicate, one
/// final event per segment (`segments` in all), the last event final, and each
/// `restarted` event right after a final event. Returns the final events.
fn assert_segments(events: &[Event], segments: usize) -> Vec<Event> {
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as i64 + 1, "seq not contiguous: {events:#?}");
    }
    let finals: Vec<Event> = events.iter().filter(|e| e.is_final()).cloned().collect();
    assert_eq!(
        finals.len(),
        segments,
        "one final event per segment: {events:#?}"
    );
    assert!(events.last().unwrap().is_final(), "{events:#?}");
    let restarted: Vec<&Event> = events.iter().filter(|e| e.kind == "restarted").collect();
    assert_eq!(restarted.len(), segments - 1, "{events:#?}");
    for r in restarted {
        let before = &events[(r.seq - 2) as usize];
        assert!(
            before.is_final(),
            "a restart follows a final event: {events:#?}"
        );
    }
    finals
}

on_both_dbs!(dur_21_restart_from_a_middle_step_feeds_it_and_reuses_the_steps_before);
async fn dur_21_restart_from_a_middle_step_feeds_it_and_reuses_the_steps_before(db: Db) {
    let host = Host::start(&db);
    let flaky = host.upload_flaky().await;
    // Each step counts its executions in run state (which a restart keeps).
    let id = host
        .submit(
            &flaky,
            &[
                json!({"count_key": "c0"}),
                json!({"count_key": "c1"}),
                json!({"count_key": "c2"}),
            ],
        )
        .await;
    let first = host.ended(&id, 0).await;
    assert_eq!(first["run"]["status"], "succeeded", "{first:#}");
    let old_s2 = first["output"].clone();
    let old_s1 = old_s2["input"].clone();
    let old_s0 = old_s1["input"].clone();
    assert_eq!(old_s1["attempt"], 1);
    assert_eq!(old_s1["feedback"], Value::Null);
    let fuel_before = first["run"]["fuel_used"].as_i64().unwrap();
    let last_seq = first["run"]["last_seq"].as_i64().unwrap();

    let feedback = json!({"note": "shorter, please", "score": 3});
    let (status, body) = host
        .restart(
            &id,
            json!({"from_step": "s1", "feedback": feedback, "reason": "too long"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["run_id"], id.as_str());
    assert_eq!(body["status"], "queued");
    assert_eq!(body["from_step"], "s1");
    assert_eq!(body["attempt"], 2);
    assert_eq!(body["restarts"], 1);
    assert_eq!(body["seq"], last_seq + 1);

    let doc = host.ended(&id, 1).await;
    assert_eq!(doc["run"]["status"], "succeeded", "{doc:#}");
    let s2 = &doc["output"];
    let s1 = &s2["input"];
    // The restarted step got the feedback and its next attempt number.
    assert_eq!(s1["feedback"], feedback, "{doc:#}");
    assert_eq!(s1["attempt"], 2, "{doc:#}");
    assert_eq!(s1["count"], 2, "s1 ran once more");
    // The step before it was not run again: its output is the one it had.
    assert_eq!(s1["input"], old_s0, "s0's output reused");
    assert_eq!(attempts_of(&doc, 0).len(), 1, "s0 ran once: {doc:#}");
    // The steps after it ran again, without the feedback, their attempts going on.
    assert_eq!(s2["attempt"], 2);
    assert_eq!(s2["feedback"], Value::Null);
    assert_eq!(s2["count"], 2);

    // The earlier outputs stay readable, on the attempts that made them.
    let a1 = attempts_of(&doc, 1);
    assert_eq!(a1.len(), 2, "{a1:#?}");
    assert_eq!(
        (&a1[0]["generation"], &a1[0]["attempt"]),
        (&json!(0), &json!(1))
    );
    assert_eq!(a1[0]["output"], old_s1, "s1's earlier output is history");
    assert_eq!(a1[0]["feedback"], Value::Null);
    assert_eq!(
        (&a1[1]["generation"], &a1[1]["attempt"]),
        (&json!(1), &json!(2))
    );
    assert_eq!(
        a1[1]["feedback"], feedback,
        "the attempt records its feedback"
    );
    assert_eq!(
        a1[1]["output"],
        Value::Null,
        "the current output is the step's"
    );
    let a2 = attempts_of(&doc, 2);
    assert_eq!(a2.len(), 2);
    assert_eq!(a2[0]["output"], old_s2, "s2's earlier output is history");
    let steps = doc["steps"].as_array().unwrap();
    assert_eq!(steps[0]["restarts"], 0);
    assert_eq!(steps[1]["restarts"], 1);
    assert_eq!(steps[1]["feedback"], feedback);
    assert_eq!(steps[2]["restarts"], 1);
    assert_eq!(steps[2]["feedback"], Value::Null);
    // Spent fuel keeps adding up.
    assert!(doc["run"]["fuel_used"].as_i64().unwrap() > fuel_before);

    // One coherent stream: the restart continues it after the first final event.
    let store = host.store().await;
    let events = store.events_after(&id, 0, 10_000).await.unwrap();
    let finals = assert_segments(&events, 2);
    assert!(finals.iter().all(|f| f.payload["status"] == "succeeded"));
    let restarted = events.iter().find(|e| e.kind == "restarted").unwrap();
    assert_eq!(restarted.seq, last_seq + 1);
    assert_eq!(restarted.payload["step_id"], "s1");
    assert_eq!(restarted.payload["feedback"], feedback);
    assert_eq!(restarted.payload["reason"], "too long");
    assert_eq!(restarted.payload["attempt"], 2);
    assert_eq!(restarted.payload["previous_status"], "succeeded");
    // s0 started once in the whole log; s1 and s2 twice.
    let starts = |step: &str| {
        events
            .iter()
            .filter(|e| e.kind == "running" && e.payload["step_id"] == step)
            .filter(|e| e.payload["progress_label"] == "started")
            .count()
    };
    assert_eq!((starts("s0"), starts("s1"), starts("s2")), (1, 2, 2));
}

on_both_dbs!(dur_22_a_failed_run_restarted_from_its_failed_step_succeeds_in_the_second_segment);
async fn dur_22_a_failed_run_restarted_from_its_failed_step_succeeds_in_the_second_segment(db: Db) {
    let host = Host::start(&db);
    let flaky = host.upload_flaky().await;
    // s1 fails for good on attempt 1 (permanent: no retry) and works from attempt 2.
    let id = host
        .submit(
            &flaky,
            &[
                json!({}),
                json!({"fail_until_attempt": 2, "kind": "permanent"}),
                json!({}),
            ],
        )
        .await;
    let first = host.ended(&id, 0).await;
    assert_eq!(first["run"]["status"], "failed", "{first:#}");
    assert_eq!(first["run"]["error_code"], "PLUGIN_ERROR");
    assert_eq!(first["steps"][2]["status"], "skipped");

    let (status, body) = host
        .restart(
            &id,
            json!({"from_step": "s1", "feedback": "fixed the config"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["attempt"], 2);

    let doc = host.ended(&id, 1).await;
    assert_eq!(doc["run"]["status"], "succeeded", "{doc:#}");
    assert_eq!(
        doc["run"]["error_code"],
        Value::Null,
        "the old failure is cleared"
    );
    assert_eq!(doc["output"]["attempt"], 1, "s2 runs for the first time");
    assert_eq!(doc["output"]["input"]["attempt"], 2);
    assert_eq!(doc["output"]["input"]["feedback"], "fixed the config");
    let a1 = attempts_of(&doc, 1);
    assert_eq!(a1.len(), 2, "{a1:#?}");
    assert_eq!(a1[0]["status"], "failed");
    assert_eq!(a1[0]["error_code"], "PLUGIN_ERROR");
    assert_eq!(a1[1]["status"], "succeeded");
    assert_eq!(attempts_of(&doc, 0).len(), 1, "s0 is not run again");

    let events = host
        .store()
        .await
        .events_after(&id, 0, 10_000)
        .await
        .unwrap();
    let finals = assert_segments(&events, 2);
    assert_eq!(finals[0].payload["status"], "failed");
    assert_eq!(finals[1].payload["status"], "succeeded");
    let restarted = events.iter().find(|e| e.kind == "restarted").unwrap();
    assert_eq!(restarted.payload["previous_status"], "failed");
    assert_eq!(restarted.payload["previous_error_code"], "PLUGIN_ERROR");
}

on_both_dbs!(dur_23_restarting_a_live_run_is_409_and_a_restart_asks_its_question_again);
async fn dur_23_restarting_a_live_run_is_409_and_a_restart_asks_its_question_again(db: Db) {
    let host = Host::start(&db);
    let flaky = host.upload_flaky().await;
    let id = host
        .submit(&flaky, &[json!({"ask": "ship it?"}), json!({})])
        .await;
    let waiting = host.reaches(&id, "waiting").await;
    let (status, body) = host.restart(&id, json!({"from_step": "s0"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "RUN_ACTIVE");
    // Nothing changed: no event was added.
    let (_, now) = host.get(&format!("/v1/runs/{id}")).await;
    assert_eq!(now["run"]["last_seq"], waiting["run"]["last_seq"]);
    assert_eq!(now["run"]["restarts"], 0);

    let (status, body) = host
        .post(&format!("/v1/runs/{id}/input"), json!({"approved": true}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let done = host.ended(&id, 0).await;
    assert_eq!(done["run"]["status"], "succeeded");

    // The restarted step is a new generation: the earlier answer is not replayed, the
    // person is asked again.
    let (status, body) = host
        .restart(
            &id,
            json!({"from_step": "s0", "feedback": {"ask": "again"}}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    host.reaches(&id, "waiting").await;
    let (status, body) = host.restart(&id, json!({"from_step": "s0"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, _) = host.post(&format!("/v1/runs/{id}/cancel"), json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let doc = host.ended(&id, 1).await;
    assert_eq!(doc["run"]["status"], "cancelled");
    let events = host
        .store()
        .await
        .events_after(&id, 0, 10_000)
        .await
        .unwrap();
    let finals = assert_segments(&events, 2);
    assert_eq!(finals[1].payload["status"], "cancelled");
    assert_eq!(
        events.iter().filter(|e| e.kind == "input_required").count(),
        2,
        "asked once per segment"
    );
    // A cancelled run can be restarted too.
    let (status, body) = host.restart(&id, json!({"from_step": "s0"})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["restarts"], 2);
    host.reaches(&id, "waiting").await;
    host.post(&format!("/v1/runs/{id}/cancel"), json!({})).await;
    host.ended(&id, 2).await;
}

on_both_dbs!(dur_24_an_unknown_step_a_step_not_reached_and_oversized_feedback_are_refused);
async fn dur_24_an_unknown_step_a_step_not_reached_and_oversized_feedback_are_refused(db: Db) {
    let host = Host::start(&db);
    let flaky = host.upload_flaky().await;
    let id = host
        .submit(
            &flaky,
            &[
                json!({}),
                json!({"fail_until_attempt": 9, "kind": "permanent"}),
                json!({}),
            ],
        )
        .await;
    let before = host.ended(&id, 0).await;
    assert_eq!(before["run"]["status"], "failed");
    let cases = [
        (
            json!({"from_step": "nope"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "UNKNOWN_STEP",
        ),
        (
            json!({"from_step": "s\u{0}1\r\n"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "UNKNOWN_STEP",
        ),
        // s1 failed: s2 has no input to start from.
        (
            json!({"from_step": "s2"}),
            StatusCode::CONFLICT,
            "STEP_NOT_REACHED",
        ),
        (
            json!({"from_step": "s1", "feedback": "x".repeat(70 << 10)}),
            StatusCode::BAD_REQUEST,
            "INVALID_FEEDBACK",
        ),
        (
            json!({"from_step": "s1", "reason": "r".repeat(1001)}),
            StatusCode::BAD_REQUEST,
            "INVALID_FEEDBACK",
        ),
        (
            json!({"from_step": "s1", "surprise": 1}),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (json!({}), StatusCode::BAD_REQUEST, "INVALID_REQUEST"),
    ];
    for (body, want, code) in cases {
        let (status, answer) = host.restart(&id, body.clone()).await;
        assert_eq!(status, want, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{body}: {answer}");
    }
    let (status, answer) = host
        .restart("run_does_not_exist", json!({"from_step": "s0"}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    assert_eq!(answer["error"]["code"], "RUN_NOT_FOUND");
    // Refusals change nothing.
    let (_, after) = host.get(&format!("/v1/runs/{id}")).await;
    assert_eq!(after["run"]["status"], "failed");
    assert_eq!(after["run"]["last_seq"], before["run"]["last_seq"]);
    assert_eq!(after["run"]["restarts"], 0);
}

on_both_dbs!(dur_25_a_restarted_run_survives_a_kill_9_of_its_host_with_its_feedback);
async fn dur_25_a_restarted_run_survives_a_kill_9_of_its_host_with_its_feedback(db: Db) {
    let mut host = Host::start(&db);
    let flaky = host.upload_flaky().await;
    let id = host
        .submit(
            &flaky,
            &[
                json!({"count_key": "c0"}),
                json!({"sleep_ms": 1500}),
                json!({}),
            ],
        )
        .await;
    assert_eq!(host.ended(&id, 0).await["run"]["status"], "succeeded");
    let feedback = json!({"note": "survive this"});
    let (status, body) = host
        .restart(&id, json!({"from_step": "s1", "feedback": feedback}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    // Killed while the restarted run is queued or in its sleeping step: after the restart
    // (and the dead host's lease) it goes on, and the feedback is still there.
    host.crash_and_restart();
    let doc = host.ended(&id, 1).await;
    assert_eq!(doc["run"]["status"], "succeeded", "{doc:#}");
    let s1 = &doc["output"]["input"];
    assert_eq!(s1["feedback"], feedback, "{doc:#}");
    assert!(s1["attempt"].as_i64().unwrap() >= 2, "{doc:#}");
    assert_eq!(s1["input"]["count"], 1, "s0 is not run again");
    assert_eq!(attempts_of(&doc, 0).len(), 1);
    let events = host
        .store()
        .await
        .events_after(&id, 0, 10_000)
        .await
        .unwrap();
    assert_segments(&events, 2);
}

/// The frames of a run's SSE stream after `last` (None: from the start), to its end:
/// `None` when the server answered 204 (nothing will follow).
async fn sse(host: &Host, id: &str, last: Option<i64>) -> Option<Vec<Value>> {
    let mut r = host
        .http
        .get(format!("{}/v1/runs/{id}/events", host.url))
        .bearer_auth(&host.token);
    if let Some(last) = last {
        r = r.header("Last-Event-ID", last.to_string());
    }
    let resp = r.send().await.unwrap();
    if resp.status() == StatusCode::NO_CONTENT {
        return None;
    }
    assert_eq!(resp.status(), StatusCode::OK);
    let mut stream = resp.bytes_stream().eventsource();
    let mut out = Vec::new();
    while let Some(frame) = tokio::time::timeout(Duration::from_secs(60), stream.next())
        .await
        .unwrap()
    {
        let v: Value = serde_json::from_str(&frame.unwrap().data).unwrap();
        if v["type"] != "heartbeat" {
            out.push(v);
        }
    }
    Some(out)
}

on_both_dbs!(dur_26_a_restarted_runs_stream_reopens_and_a_replay_reads_every_segment);
async fn dur_26_a_restarted_runs_stream_reopens_and_a_replay_reads_every_segment(db: Db) {
    let host = Host::start(&db);
    let flaky = host.upload_flaky().await;
    let id = host.submit(&flaky, &[json!({}), json!({})]).await;
    let first = host.ended(&id, 0).await;
    let n = first["run"]["last_seq"].as_i64().unwrap();
    // The first segment's stream closes after its final event, and says so (204).
    let all = sse(&host, &id, None).await.unwrap();
    assert_eq!(all.last().unwrap()["seq"], n);
    assert!(sse(&host, &id, Some(n)).await.is_none());

    let (status, body) = host.restart(&id, json!({"from_step": "s1"})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    // Resuming after the old final event continues the same stream, higher seqs on,
    // and closes after the new final event.
    let rest = sse(&host, &id, Some(n)).await.expect("the stream reopens");
    assert_eq!(rest[0]["seq"], n + 1);
    assert_eq!(rest[0]["type"], "restarted");
    let m = rest.last().unwrap()["seq"].as_i64().unwrap();
    assert!(rest.last().unwrap()["payload"]["all_done"] == true);
    let seqs: Vec<i64> = rest.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (n + 1..=m).collect::<Vec<_>>());
    // A replay from the start reads through the first final event to the last one.
    let replay = sse(&host, &id, None).await.unwrap();
    let seqs: Vec<i64> = replay.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=m).collect::<Vec<_>>());
    assert_eq!(
        replay
            .iter()
            .filter(|e| e["payload"]["all_done"] == true)
            .count(),
        2
    );
    assert!(sse(&host, &id, Some(m)).await.is_none());
}

/// A two-step pipeline (`draft`, `review`, both flaky) named `name`, run to its end with
/// `corral run` on a fresh data directory: the temp dir, the data dir and the run id.
fn local_two_step_run(name: &str) -> (tempfile::TempDir, std::path::PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let plugins = root().join("target/plugins");
    let pipeline = dir.path().join("pipeline.toml");
    std::fs::write(
        &pipeline,
        format!(
            "name = \"{name}\"\n[[steps]]\nname = \"draft\"\nplugin = \"{p}/flaky.wasm\"\n\
             [[steps]]\nname = \"review\"\nplugin = \"{p}/flaky.wasm\"\n",
            p = plugins.display()
        ),
    )
    .unwrap();
    let (code, stdout, stderr) = output_of(
        corral(&data)
            .arg("run")
            .arg(&pipeline)
            .args(["-o", "jsonl"]),
    );
    assert_eq!(code, 0, "{stderr}");
    let first: Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    let run_id = first["run_id"].as_str().unwrap().to_string();
    (dir, data, run_id)
}

#[test]
fn dur_27_corral_restart_runs_locally_from_a_step_with_feedback() {
    let (dir, data, run_id) = local_two_step_run("local");

    let (code, stdout, stderr) = output_of(corral(&data).args([
        "restart",
        &run_id,
        "--from",
        "draft",
        "--feedback",
        r#"{"tone": "friendlier"}"#,
        "--json",
    ]));
    assert_eq!(code, 0, "{stderr}");
    let answer: Value = serde_json::from_str(stderr.lines().next().unwrap()).unwrap();
    assert_eq!(answer["from_step"], "draft", "{stderr}");
    let out: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(out["input"]["feedback"], json!({"tone": "friendlier"}));
    assert_eq!(out["input"]["attempt"], 2);
    assert_eq!(out["attempt"], 2);

    let file = dir.path().join("feedback.json");
    std::fs::write(&file, r#"["once more"]"#).unwrap();
    let (code, stdout, stderr) = output_of(
        corral(&data)
            .args([
                "restart",
                &run_id,
                "--from",
                "review",
                "--json",
                "--feedback-file",
            ])
            .arg(&file),
    );
    assert_eq!(code, 0, "{stderr}");
    let out: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(out["feedback"], json!(["once more"]));
    assert_eq!(out["attempt"], 3);
    assert_eq!(out["input"]["attempt"], 2, "draft is reused");

    let (code, _, stderr) = output_of(corral(&data).args(["restart", &run_id, "--from", "nope"]));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("UNKNOWN_STEP"), "{stderr}");
    let (code, _, stderr) = output_of(corral(&data).args([
        "restart",
        &run_id,
        "--from",
        "draft",
        "--feedback",
        "{not json",
    ]));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("INVALID_FEEDBACK"), "{stderr}");
}

on_both_dbs!(dur_28_corral_restart_with_server_restarts_and_follows_the_run);
async fn dur_28_corral_restart_with_server_restarts_and_follows_the_run(db: Db) {
    let host = Host::start(&db);
    let flaky = host.upload_flaky().await;
    let id = host.submit(&flaky, &[json!({}), json!({})]).await;
    host.ended(&id, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fb.json");
    std::fs::write(&file, r#"{"from": "a file"}"#).unwrap();
    let (url, token, rid, path) = (
        host.url.clone(),
        host.token.clone(),
        id.clone(),
        file.clone(),
    );
    let data = dir.path().join("cli");
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || {
        output_of(
            corral(&data)
                .args(["restart", &rid, "--from", "s1", "--json", "--server", &url])
                .arg("--token")
                .arg(&token)
                .arg("--feedback-file")
                .arg(&path),
        )
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{stderr}");
    let out: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(out["feedback"], json!({"from": "a file"}));
    assert_eq!(out["attempt"], 2);
    // Every event it printed came after the restart.
    let seqs: Vec<i64> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|e| e["seq"].as_i64())
        .collect();
    assert!(!seqs.is_empty(), "{stderr}");
    let restarted_seq = host
        .store()
        .await
        .events_after(&id, 0, 10_000)
        .await
        .unwrap();
    let r = restarted_seq
        .iter()
        .find(|e| e.kind == "restarted")
        .unwrap();
    assert_eq!(seqs[0], r.seq, "{stderr}");

    // A run still going is refused with exit 2.
    let live = host.submit(&flaky, &[json!({"ask": "wait"})]).await;
    host.reaches(&live, "waiting").await;
    let (url, token) = (host.url.clone(), host.token.clone());
    let data = dir.path().join("cli");
    let (code, _, stderr) = tokio::task::spawn_blocking(move || {
        output_of(corral(&data).args([
            "restart", &live, "--from", "s0", "--server", &url, "--token", &token,
        ]))
    })
    .await
    .unwrap();
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("RUN_ACTIVE"), "{stderr}");
}

on_both_dbs!(dur_29_racing_restarts_queue_the_run_once_and_large_feedback_stays_out_of_the_event);
async fn dur_29_racing_restarts_queue_the_run_once_and_large_feedback_stays_out_of_the_event(
    db: Db,
) {
    let host = Host::start(&db);
    let flaky = host.upload_flaky().await;
    let id = host.submit(&flaky, &[json!({}), json!({})]).await;
    host.ended(&id, 0).await;
    // 10 KiB of feedback: accepted (the cap is 64 KiB), stored whole, left out of the event.
    let big = "f".repeat(10 << 10);
    let body = json!({"from_step": "s1", "feedback": big});
    let (a, b, c) = tokio::join!(
        host.restart(&id, body.clone()),
        host.restart(&id, body.clone()),
        host.restart(&id, body.clone())
    );
    let mut statuses = vec![a.0, b.0, c.0];
    statuses.sort();
    assert_eq!(
        statuses,
        [
            StatusCode::ACCEPTED,
            StatusCode::CONFLICT,
            StatusCode::CONFLICT
        ],
        "{a:?} {b:?} {c:?}"
    );
    for (status, answer) in [a, b, c] {
        if status == StatusCode::CONFLICT {
            assert_eq!(answer["error"]["code"], "RUN_ACTIVE", "{answer}");
        }
    }
    let doc = host.ended(&id, 1).await;
    assert_eq!(doc["run"]["status"], "succeeded");
    assert_eq!(doc["output"]["feedback"], big.as_str());
    let events = host
        .store()
        .await
        .events_after(&id, 0, 10_000)
        .await
        .unwrap();
    assert_segments(&events, 2);
    let restarted = events.iter().find(|e| e.kind == "restarted").unwrap();
    assert_eq!(restarted.payload["feedback"], Value::Null);
    assert_eq!(restarted.payload["feedback_omitted_bytes"], big.len() + 2);
}

on_both_dbs!(dur_30_a_paused_run_restarted_from_a_step_goes_on_from_there_with_feedback);
/// DUR-30: a paused run can be restarted from a step (issue 15 item 2 names finished, failed
/// and paused runs): it is no longer paused, the steps before it are reused, and the step
/// gets the feedback; the log has the `paused` and the `restarted` events and one final
/// event.
async fn dur_30_a_paused_run_restarted_from_a_step_goes_on_from_there_with_feedback(db: Db) {
    let host = Host::start(&db);
    let flaky = host.upload_flaky().await;
    let id = host
        .submit(&flaky, &[json!({"sleep_ms": 3000}), json!({}), json!({})])
        .await;
    // The run is `running` once claimed, before s0 starts: wait for s0 itself, so the
    // pause lets s0 finish and stops before s1.
    for _ in 0..1200 {
        let (_, doc) = host.get(&format!("/v1/runs/{id}")).await;
        if doc["steps"][0]["status"] == "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = host.post(&format!("/v1/runs/{id}/pause"), json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let paused = host.reaches(&id, "paused").await;
    assert_eq!(paused["steps"][0]["status"], "succeeded", "{paused:#}");

    let (status, body) = host
        .restart(
            &id,
            json!({"from_step": "s1", "feedback": {"note": "go on"}}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let doc = host.ended(&id, 1).await;
    assert_eq!(doc["run"]["status"], "succeeded", "{doc:#}");
    assert_eq!(doc["run"]["paused_at"], Value::Null, "{doc:#}");
    assert_eq!(attempts_of(&doc, 0).len(), 1, "s0 is not run again");
    let s1 = attempts_of(&doc, 1);
    assert_eq!(s1.len(), 1, "{s1:#?}");
    assert_eq!(s1[0]["feedback"], json!({"note": "go on"}), "{s1:#?}");

    let events = host
        .store()
        .await
        .events_after(&id, 0, 10_000)
        .await
        .unwrap();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as i64 + 1, "seq not contiguous: {events:#?}");
    }
    assert_eq!(events.iter().filter(|e| e.is_final()).count(), 1);
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    let p = kinds.iter().position(|k| *k == "paused").unwrap();
    let r = kinds.iter().position(|k| *k == "restarted").unwrap();
    assert!(p < r, "{kinds:?}");
    assert_eq!(events[r].payload["previous_status"], "paused");
}

on_both_dbs!(dur_39_a_run_restarted_as_often_as_a_run_may_be_is_refused_restart_limit);
/// Each restart keeps the replaced attempts as history, so a client restarting one run in
/// a loop is stopped at `MAX_RESTARTS` (100) with 409 `RESTART_LIMIT`, and the refusal
/// changes nothing. (The count is set in the database: 100 real restarts would only
/// take time.)
async fn dur_39_a_run_restarted_as_often_as_a_run_may_be_is_refused_restart_limit(db: Db) {
    let host = Host::start(&db);
    let flaky = host.upload_flaky().await;
    let id = host.submit(&flaky, &[json!({})]).await;
    let done = host.ended(&id, 0).await;
    assert_eq!(done["run"]["status"], "succeeded", "{done:#}");
    let url = match &host.db {
        None => format!("sqlite://{}/corral.db", host.data.path().display()),
        Some(url) => url.clone(),
    };
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    let set = |n: i64| {
        sqlx::query("UPDATE runs SET restarts = $1 WHERE id = $2")
            .bind(n)
            .bind(id.clone())
            .execute(&pool)
    };
    set(99).await.unwrap();
    let (status, body) = host.restart(&id, json!({"from_step": "s0"})).await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "the 100th restart is allowed: {body}"
    );
    let doc = host.ended(&id, 100).await;
    assert_eq!(doc["run"]["status"], "succeeded", "{doc:#}");
    let (status, body) = host.restart(&id, json!({"from_step": "s0"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "RESTART_LIMIT", "{body}");
    let (_, after) = host.get(&format!("/v1/runs/{id}")).await;
    assert_eq!(after["run"]["status"], "succeeded");
    assert_eq!(after["run"]["restarts"], 100);
    assert_eq!(after["run"]["last_seq"], doc["run"]["last_seq"]);
    pool.close().await;
}

/// `corral restart` for people: what the restart did on a line, the steps it runs again
/// as they go (on stderr), then the run's end and its output; `--detach --json` prints the
/// restart's answer as JSON on stdout.
#[test]
fn corral_restart_says_what_it_did_for_people_and_in_json() {
    let (_dir, data, run_id) = local_two_step_run("people");

    let (code, stdout, stderr) = output_of(corral(&data).args([
        "restart",
        &run_id,
        "--from",
        "review",
        "--feedback",
        r#"{"note": "shorter"}"#,
    ]));
    assert_eq!(code, 0, "{stderr}");
    let mut lines = stdout.lines();
    assert_eq!(
        lines.next(),
        Some(format!("{run_id} restarted from step review (attempt 2); status queued").as_str()),
        "{stdout}"
    );
    let end = lines.next().unwrap_or_default();
    assert!(
        end.starts_with(&format!("run {run_id} succeeded · fuel ")),
        "{stdout}"
    );
    let output: Value = serde_json::from_str(&lines.collect::<Vec<_>>().join("\n")).unwrap();
    assert_eq!(output["feedback"], json!({"note": "shorter"}), "{stdout}");
    assert_eq!(output["attempt"], 2, "{stdout}");
    // The live view shows the step it runs again, not the one it reused; no event JSON.
    assert!(stderr.contains("review started (attempt 2)"), "{stderr}");
    assert!(!stderr.contains("draft"), "{stderr}");
    assert!(!stderr.contains("\"seq\""), "{stderr}");

    let (code, stdout, stderr) = output_of(
        corral(&data).args(["restart", &run_id, "--from", "draft", "--detach", "--json"]),
    );
    assert_eq!(code, 0, "{stderr}");
    let answer: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(answer["run_id"], run_id.as_str(), "{stdout}");
    assert_eq!(answer["status"], "queued", "{stdout}");
    assert_eq!(answer["from_step"], "draft", "{stdout}");
    assert_eq!(answer["attempt"], 2, "{stdout}");
    assert_eq!(answer["restarts"], 2, "{stdout}");
    assert!(answer["seq"].as_i64().unwrap() > 1, "{stdout}");
    // Queued, not followed: a second restart is refused while it waits for a worker.
    let (code, stdout, stderr) =
        output_of(corral(&data).args(["restart", &run_id, "--from", "draft", "--detach"]));
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stderr.contains("RUN_ACTIVE"), "{stderr}");
}
