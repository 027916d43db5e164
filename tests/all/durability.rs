//! Crash recovery and the `corral run` CLI contract, with real processes.

use crate::util::*;
use corral::store::{Event, Store};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

fn corral(data: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_corral"));
    cmd.env("CORRAL_DATA_DIR", data)
        .env("CORRAL_LEASE_MS", "1000")
        .env_remove("CORRAL_DATABASE_URL")
        .env_remove("RUST_LOG");
    cmd
}

fn pipeline_file(dir: &std::path::Path, body: &str) -> std::path::PathBuf {
    let plugins = root().join("target/plugins");
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, body.replace("PLUGINS", plugins.to_str().unwrap())).unwrap();
    path
}

fn events_of(data: &std::path::Path, run_id: &str) -> Vec<Value> {
    let out = corral(data).args(["events", run_id]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn dur_01_kill_9_mid_run_is_recovered_with_contiguous_seq() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let pipeline = pipeline_file(
        dir.path(),
        r#"name = "crashy"
[[steps]]
name = "first"
plugin = "PLUGINS/echo.wasm"
[[steps]]
name = "slow"
plugin = "PLUGINS/flaky.wasm"
config = { sleep_ms = 3000 }
[[steps]]
name = "last"
plugin = "PLUGINS/echo.wasm"
"#,
    );
    let mut child = corral(&data)
        .arg("run")
        .arg(&pipeline)
        .args(["--output", "jsonl", "--input", r#"{"x":1}"#])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Read until the slow step is running, then kill -9 the process.
    let mut run_id = String::new();
    let mut seen = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let event: Value = serde_json::from_str(&line.unwrap()).unwrap();
        run_id = event["run_id"].as_str().unwrap().to_string();
        seen.push(event.clone());
        if event["type"] == "running" && event["payload"]["step_id"] == "slow" {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(!run_id.is_empty());

    // The run is stuck as "running" under a dead host until its lease expires.
    std::thread::sleep(Duration::from_millis(1500));
    let out = corral(&data)
        .args(["worker", "--until-idle"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("recovered 1 run"));
    // --until-idle says what it executed and how each run ended.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("executed 1 run(s): 1 succeeded\n") && stdout.contains(&run_id),
        "{stdout}"
    );

    let events = events_of(&data, &run_id);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(
            e["seq"],
            i as i64 + 1,
            "seq must stay contiguous: {events:#?}"
        );
    }
    // What the client saw before the crash is a prefix of the log.
    assert_eq!(&events[..seen.len()], &seen[..]);
    let finals: Vec<_> = events
        .iter()
        .filter(|e| e["payload"]["all_done"] == true)
        .collect();
    assert_eq!(finals.len(), 1);
    assert_eq!(finals[0]["payload"]["status"], "succeeded");
    let crash = events
        .iter()
        .find(|e| e["type"] == "error" && e["payload"]["error_code"] == "HOST_CRASH")
        .expect("the interrupted attempt is recorded");
    assert_eq!(crash["payload"]["will_retry"], true);
    let restarted = events
        .iter()
        .rfind(|e| {
            e["type"] == "running"
                && e["payload"]["step_id"] == "slow"
                && e["payload"]["progress_label"] == "started"
        })
        .unwrap();
    assert_eq!(
        restarted["payload"]["attempt"], 2,
        "re-queued with attempt + 1"
    );
    // The first step is not run again.
    let first_runs = events
        .iter()
        .filter(|e| e["type"] == "complete" && e["payload"]["step_id"] == "first")
        .count();
    assert_eq!(first_runs, 1);
}

#[test]
fn a_failing_pipeline_exits_1_and_its_last_jsonl_line_is_the_final_event() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = pipeline_file(
        dir.path(),
        r#"name = "fails"
[[steps]]
name = "nope"
plugin = "PLUGINS/flaky.wasm"
config = { fail_until_attempt = 9, kind = "permanent" }
"#,
    );
    let out = corral(&dir.path().join("data"))
        .arg("run")
        .arg(&pipeline)
        .args(["--output", "jsonl"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let last: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["type"], "complete");
    assert_eq!(last["payload"]["status"], "failed");
    assert_eq!(last["payload"]["all_done"], true);
    assert_eq!(last["payload"]["error"], true);
}

#[test]
fn a_bad_pipeline_file_exits_2_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = pipeline_file(
        dir.path(),
        "name = \"bad\"\n[[steps]]\nname = \"a\"\nplugin = \"PLUGINS/echo.wasm\"\non_failure = { send_back_to = \"zzz\" }\n",
    );
    let out = corral(&dir.path().join("data"))
        .arg("run")
        .arg(&pipeline)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("steps[0].on_failure.send_back_to"), "{err}");
}

#[test]
fn a_missing_plugin_file_or_grant_exits_2_naming_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let run = |body: &str| {
        let pipeline = pipeline_file(dir.path(), body);
        let out = corral(&dir.path().join("data"))
            .arg("run")
            .arg(&pipeline)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        (pipeline.display().to_string(), err)
    };
    let (file, err) = run(
        "name = \"p\"\n[[steps]]\nname = \"a\"\nplugin = \"PLUGINS/echo.wasm\"\n\
         [[steps]]\nname = \"b\"\nplugin = \"nope/x.wasm\"\n",
    );
    assert!(
        err.starts_with(&format!(
            "INVALID_PIPELINE: {file}:7: steps[1].plugin: step `b` (`x.wasm`): INVALID_COMPONENT: cannot read"
        )),
        "{err}"
    );
    // echo's manifest grants no tools.
    let (file, err) = run("name = \"p\"\n[tools]\nt = \"PLUGINS/text_tools.wasm\"\n\
         [[steps]]\nname = \"a\"\nplugin = \"PLUGINS/echo.wasm\"\ntools = [\"t\"]\n");
    assert!(
        err.starts_with(&format!("INVALID_PIPELINE: {file}:7: steps[0].tools[0]: ")),
        "{err}"
    );
    assert!(err.contains("missing grant `tools = [\"t\"]`"), "{err}");
}

#[test]
fn runs_list_show_answer_and_cancel_work_from_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let pipeline = pipeline_file(
        dir.path(),
        "name = \"asks\"\n[[steps]]\nname = \"gate\"\nplugin = \"PLUGINS/flaky.wasm\"\nconfig = { ask = \"Proceed?\" }\n",
    );
    let mut child = corral(&data)
        .arg("run")
        .arg(&pipeline)
        .args(["--output", "jsonl"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut run_id = String::new();
    for line in lines.by_ref() {
        let event: Value = serde_json::from_str(&line.unwrap()).unwrap();
        run_id = event["run_id"].as_str().unwrap().to_string();
        if event["type"] == "input_required" {
            break;
        }
    }
    let list = corral(&data).args(["runs", "list"]).output().unwrap();
    assert!(String::from_utf8_lossy(&list.stdout).contains(&run_id));
    // A wrong answer is refused with the reason; the right one resumes the run.
    let bad = corral(&data)
        .args(["answer", &run_id, r#"{"approved": 1}"#])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("INVALID_ANSWER"));
    let good = corral(&data)
        .args(["answer", &run_id, r#"{"approved": true}"#])
        .output()
        .unwrap();
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    let rest: Vec<Value> = lines
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    assert_eq!(rest.last().unwrap()["payload"]["status"], "succeeded");
    assert!(child.wait().unwrap().success());
    let show = corral(&data)
        .args(["runs", "show", &run_id, "--json"])
        .output()
        .unwrap();
    let doc: Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(doc["run"]["status"], "succeeded");
    // Cancelling a finished run is refused.
    let cancel = corral(&data).args(["cancel", &run_id]).output().unwrap();
    assert_eq!(cancel.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&cancel.stderr).contains("ALREADY_FINISHED"));
}

#[test]
fn ctrl_c_cancels_an_embedded_run_cleanly_and_exits_130() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let pipeline = pipeline_file(
        dir.path(),
        "name = \"long\"\n[[steps]]\nname = \"wait\"\nplugin = \"PLUGINS/flaky.wasm\"\nconfig = { sleep_ms = 60000 }\n",
    );
    let mut child = corral(&data)
        .arg("run")
        .arg(&pipeline)
        .args(["--output", "jsonl"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut run_id = String::new();
    for line in lines.by_ref() {
        let event: Value = serde_json::from_str(&line.unwrap()).unwrap();
        run_id = event["run_id"].as_str().unwrap().to_string();
        if event["type"] == "running" {
            break;
        }
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let rest: Vec<Value> = lines
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    assert_eq!(child.wait().unwrap().code(), Some(130));
    assert!(rest.iter().any(|e| e["type"] == "cancelled"));
    assert_eq!(rest.last().unwrap()["payload"]["status"], "cancelled");
    let events = events_of(&data, &run_id);
    assert_eq!(
        events
            .iter()
            .filter(|e| e["payload"]["all_done"] == true)
            .count(),
        1
    );
}

// ---- `corral serve` killed and restarted on SQLite or Postgres (DUR-08/09/10) ----

/// One `corral serve` host that can be killed with SIGKILL and started again on the same
/// database (and data directory, so its compiled-code cache survives).
type Host = ServerHost;

impl Host {
    /// Submits a run of `flaky` steps, one per config; `(status, body)`.
    async fn submit(
        &self,
        plugin: &str,
        defaults: Value,
        configs: &[Value],
    ) -> (StatusCode, Value) {
        let steps: Vec<Value> = configs
            .iter()
            .enumerate()
            .map(|(i, c)| json!({"name": format!("s{i}"), "plugin": plugin, "config": c}))
            .collect();
        self.post(
            "/v1/runs",
            Some(
                json!({"pipeline": {"name": "chaos", "defaults": defaults, "steps": steps},
                        "input": {"n": 1}}),
            ),
        )
        .await
    }
}

/// A run's log is well formed: seq 1..n without gap or duplicate, exactly one final event,
/// and it is the last one; it agrees with the run's status, and a cancelled run has exactly
/// one `cancelled` event. Returns the final status.
fn assert_one_end(run: &corral::store::RunRecord, events: &[Event]) -> String {
    let ctx = || format!("run {} ({}): {events:#?}", run.id, run.status);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as i64 + 1, "seq not contiguous from 1: {}", ctx());
        assert_eq!(
            e.tenant_id,
            run.tenant_id,
            "another tenant's event: {}",
            ctx()
        );
    }
    assert_eq!(
        events.iter().filter(|e| e.is_final()).count(),
        1,
        "exactly one final event: {}",
        ctx()
    );
    let last = events.last().unwrap();
    assert!(last.is_final(), "nothing after the final event: {}", ctx());
    assert!(run.is_terminal(), "{}", ctx());
    assert_eq!(last.payload["status"], run.status.as_str(), "{}", ctx());
    let cancelled = events.iter().filter(|e| e.kind == "cancelled").count();
    assert_eq!(
        cancelled,
        usize::from(run.status == "cancelled"),
        "one cancelled event iff cancelled: {}",
        ctx()
    );
    run.status.clone()
}

/// Waits (bounded) until `pred` holds for the run's events.
async fn wait_events(store: &Store, id: &str, what: &str, pred: impl Fn(&[Event]) -> bool) {
    for _ in 0..1200 {
        let events = store.events_after(id, 0, 10_000).await.unwrap();
        if pred(&events) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "run {id}: no {what}: {:#?}",
        store.events_after(id, 0, 10_000).await.unwrap()
    );
}

/// Runs that are queued with a cancel request: the scheduler never claims them, so each
/// one is a run that would never end.
async fn stuck_cancelled(store: &Store, ids: &[String]) -> Vec<String> {
    let mut stuck = Vec::new();
    for id in ids {
        let run = store.run(id).await.unwrap().unwrap();
        if run.status == "queued" && run.cancel_requested {
            stuck.push(id.clone());
        }
    }
    stuck
}

/// Another node's API: a runner in this test process on the same database.
async fn other_node(store: Store) -> corral::runs::Runner {
    corral::runs::Runner::new(
        crate::util::engine(),
        store,
        corral::runs::RunnerConfig {
            lease: Duration::from_millis(LEASE_MS),
            ..corral::runs::RunnerConfig::default()
        },
    )
}

const LEASE_MS: u64 = 3000;

on_both_dbs!(dur_09_cancel_while_the_host_is_down_ends_the_run_cancelled_after_recovery);
async fn dur_09_cancel_while_the_host_is_down_ends_the_run_cancelled_after_recovery(db: Db) {
    let lease = LEASE_MS.to_string();
    let mut host = Host::start(&db, &[("CORRAL_LEASE_MS", &lease)]);
    let flaky = host.upload("flaky").await;
    let store = host.store().await;
    let long = json!({"timeout": "120s", "backoff": "1h", "max_attempts": 10});
    // Running (a long sleep), waiting (for an answer), in retry backoff (an hour long),
    // and one more running run whose cancel lands only after the lease has expired.
    let cases = [
        (json!({"sleep_ms": 60_000}), "running"),
        (json!({"ask": "ok?"}), "input_required"),
        (json!({"fail_until_attempt": 9}), "retrying"),
        (json!({"sleep_ms": 60_000}), "running"),
    ];
    let mut ids = Vec::new();
    for (config, _) in &cases {
        let (status, body) = host
            .submit(&flaky, long.clone(), &[json!({}), config.clone()])
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        ids.push(body["run_id"].as_str().unwrap().to_string());
    }
    for (id, (_, kind)) in ids.iter().zip(&cases) {
        wait_events(&store, id, kind, |events| {
            events
                .iter()
                .any(|e| e.kind == *kind && e.payload["step_id"] == "s1")
        })
        .await;
    }
    host.kill();

    // The host is down; another node takes the cancels (202 over its API).
    let node = other_node(store.clone()).await;
    let tenant = store.ensure_tenant("default").await.unwrap();
    for id in &ids[..3] {
        node.cancel(&tenant, id).await.unwrap();
    }
    // After the dead host's lease expired, a cancel ends the run at once.
    tokio::time::sleep(Duration::from_millis(LEASE_MS + 500)).await;
    node.cancel(&tenant, &ids[3]).await.unwrap();
    let late = store.run(&ids[3]).await.unwrap().unwrap().status;

    // The host comes back; its recovery must end the other three cancelled, not queue them
    // again (the scheduler never claims a run with a cancel request: stuck forever).
    host.restart();
    for id in &ids {
        for _ in 0..600 {
            if store.run(id).await.unwrap().unwrap().is_terminal() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(stuck_cancelled(&store, &ids).await, Vec::<String>::new());
    assert_eq!(
        late, "cancelled",
        "a cancel after the lease expired ends the run at once"
    );
    for id in &ids {
        let run = store.run(id).await.unwrap().unwrap();
        let events = store.events_after(id, 0, 10_000).await.unwrap();
        assert_eq!(assert_one_end(&run, &events), "cancelled", "{events:#?}");
        let steps = store.steps(id).await.unwrap();
        assert_eq!(steps[0].status, "succeeded");
        assert_eq!(steps[1].status, "cancelled", "{steps:?}");
        let attempts = store.attempts(id).await.unwrap();
        assert!(
            attempts.iter().all(|a| a.status != "running"),
            "no attempt is left running: {attempts:?}"
        );
    }
}

on_both_dbs!(dur_10_the_queued_run_cap_is_exact_under_concurrent_submissions);
async fn dur_10_the_queued_run_cap_is_exact_under_concurrent_submissions(db: Db) {
    const CAP: usize = 10;
    const SUBMITTERS: usize = 24;
    let cap = CAP.to_string();
    let host = Host::start(
        &db,
        &[
            ("CORRAL_MAX_QUEUED_PER_TENANT", &cap),
            ("CORRAL_MAX_CONCURRENT_RUNS", "1"),
        ],
    );
    let flaky = host.upload("flaky").await;
    let store = host.store().await;
    // One long run takes the only slot, so nothing else leaves the queue meanwhile.
    let (status, body) = host
        .submit(
            &flaky,
            json!({"timeout": "120s"}),
            &[json!({"sleep_ms": 90_000})],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let blocker = body["run_id"].as_str().unwrap().to_string();
    wait_events(&store, &blocker, "running", |events| {
        events.iter().any(|e| e.kind == "running")
    })
    .await;

    let host = std::sync::Arc::new(host);
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(SUBMITTERS));
    let mut tasks = Vec::new();
    for _ in 0..SUBMITTERS {
        let (host, flaky, start) = (host.clone(), flaky.clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            host.submit(&flaky, json!({}), &[json!({})]).await
        }));
    }
    let mut accepted = 0;
    let mut refused = 0;
    for t in tasks {
        let (status, body) = t.await.unwrap();
        match status {
            StatusCode::CREATED => accepted += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert_eq!(body["error"]["code"], "TOO_MANY_QUEUED_RUNS", "{body}");
                refused += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    let tenant = store.ensure_tenant("default").await.unwrap();
    let queued = store.queued_count(&tenant).await.unwrap();
    assert_eq!(
        (accepted, refused, queued),
        (CAP, SUBMITTERS - CAP, CAP as i64),
        "exactly the cap is admitted"
    );
    // Full: one more is refused with the documented shape and a Retry-After.
    let resp = host
        .http
        .post(format!("{}/v1/runs", host.url))
        .bearer_auth(&host.token)
        .json(&json!({"pipeline": {"name": "x", "steps": [{"name": "a", "plugin": flaky}]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().contains_key("retry-after"));
}

/// A soak knob from the environment, else its default.
fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A random pipeline of `flaky` steps: succeeds, fails for good, retries transient errors
/// or traps (and succeeds, or runs out of attempts), waits for an answer, or runs slowly.
fn random_pipeline(rng: &mut impl rand::Rng) -> (Value, Vec<Value>) {
    let quick = json!({"backoff": "150ms", "backoff_max": "1s", "max_attempts": 4});
    match rng.random_range(0..7) {
        0 => (quick, vec![json!({}), json!({})]),
        1 => (
            quick,
            vec![
                json!({}),
                json!({"fail_until_attempt": 9, "kind": "permanent"}),
            ],
        ),
        2 => (quick, vec![json!({"fail_until_attempt": 3})]),
        3 => (
            quick,
            vec![json!({"fail_until_attempt": 2, "kind": "trap"}), json!({})],
        ),
        4 => (
            json!({"backoff": "100ms", "max_attempts": 2}),
            vec![json!({"fail_until_attempt": 5})],
        ),
        5 => (quick, vec![json!({"ask": "go on?"}), json!({})]),
        _ => (
            quick,
            vec![json!({"sleep_ms": rng.random_range(300..2500)}), json!({})],
        ),
    }
}

on_both_dbs!(dur_08_soak_kills_cancels_and_answers_leave_every_run_ended_once);
async fn dur_08_soak_kills_cancels_and_answers_leave_every_run_ended_once(db: Db) {
    use rand::{Rng, SeedableRng};
    let seed = knob("CORRAL_SOAK_SEED", rand::random::<u32>().into());
    let rounds = knob("CORRAL_SOAK_ROUNDS", 5);
    let per_round = knob("CORRAL_SOAK_RUNS", 10);
    eprintln!(
        "DUR-08 soak: seed {seed}, {rounds} kills, {per_round} runs each \
         (CORRAL_SOAK_SEED / CORRAL_SOAK_ROUNDS / CORRAL_SOAK_RUNS to replay or lengthen)"
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    const LEASE: u64 = 1500;
    let lease = LEASE.to_string();
    let mut host = Host::start(
        &db,
        &[
            ("CORRAL_LEASE_MS", &lease),
            ("CORRAL_MAX_CONCURRENT_RUNS", "4"),
        ],
    );
    let flaky = host.upload("flaky").await;
    let store = host.store().await;
    let tenant = store.ensure_tenant("default").await.unwrap();
    let node = other_node(store.clone()).await;
    let mut ids: Vec<String> = Vec::new();
    let ok_or_conflict = |what: &str, status: StatusCode, body: &Value| {
        assert!(
            status == StatusCode::ACCEPTED || status == StatusCode::CONFLICT,
            "{what}: {status} {body}"
        );
    };

    for _ in 0..rounds {
        for _ in 0..per_round {
            let (defaults, configs) = random_pipeline(&mut rng);
            let (status, body) = host.submit(&flaky, defaults, &configs).await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
            ids.push(body["run_id"].as_str().unwrap().to_string());
        }
        // Cancels and answers at random moments, then kill -9 at a random moment.
        for _ in 0..rng.random_range(2..8) {
            tokio::time::sleep(Duration::from_millis(rng.random_range(50..700))).await;
            let id = ids[rng.random_range(0..ids.len())].clone();
            let action = rng.random_range(0..3);
            if action == 0 {
                let (status, body) = host.post(&format!("/v1/runs/{id}/cancel"), None).await;
                ok_or_conflict("cancel", status, &body);
            } else if action == 1 && store.open_question(&id).await.unwrap().is_some() {
                let answer = json!({"approved": rng.random_bool(0.7)});
                let (status, body) = host
                    .post(&format!("/v1/runs/{id}/input"), Some(answer))
                    .await;
                ok_or_conflict("answer", status, &body);
            }
        }
        host.kill();
        // While the host is down, another node cancels a run or two that are still live.
        let mut live = Vec::new();
        for id in &ids {
            if !store.run(id).await.unwrap().unwrap().is_terminal() {
                live.push(id.clone());
            }
        }
        for _ in 0..rng.random_range(1..3) {
            let pool = if live.is_empty() { &ids } else { &live };
            let id = pool[rng.random_range(0..pool.len())].clone();
            match node.cancel(&tenant, &id).await {
                Ok(()) | Err(corral::runs::RunError::AlreadyFinished(..)) => {}
                Err(e) => panic!("cancel {id} while the host is down: {e}"),
            }
        }
        // Sometimes the host stays down past its lease, sometimes it is back at once.
        if rng.random_bool(0.5) {
            tokio::time::sleep(Duration::from_millis(LEASE + 200)).await;
        }
        host.restart();
    }

    // Settle: answer whatever waits until every run has ended (bounded, generously).
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    loop {
        let mut live = Vec::new();
        for id in &ids {
            let run = store.run(id).await.unwrap().unwrap();
            if run.is_terminal() {
                continue;
            }
            if run.status == "waiting" && store.open_question(id).await.unwrap().is_some() {
                let (status, body) = host
                    .post(
                        &format!("/v1/runs/{id}/input"),
                        Some(json!({"approved": true})),
                    )
                    .await;
                ok_or_conflict("answer", status, &body);
            }
            live.push((id.clone(), run.status, run.cancel_requested));
        }
        if live.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "seed {seed}: runs that never ended: {live:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let mut by_status = std::collections::BTreeMap::<String, usize>::new();
    for id in &ids {
        let run = store.run(id).await.unwrap().unwrap();
        let events = store.events_after(id, 0, 10_000).await.unwrap();
        *by_status.entry(assert_one_end(&run, &events)).or_default() += 1;
    }
    assert_eq!(stuck_cancelled(&store, &ids).await, Vec::<String>::new());
    eprintln!(
        "DUR-08 soak (seed {seed}): {} runs, {by_status:?}",
        ids.len()
    );
}

on_both_dbs!(dur_08_nothing_is_recorded_after_a_runs_final_event);
async fn dur_08_nothing_is_recorded_after_a_runs_final_event(db: Db) {
    use corral::store::{Change, NewRun};
    let dir = tempfile::tempdir().unwrap();
    let store = match &db {
        Db::Sqlite => Store::open_in_dir(dir.path()).await.unwrap(),
        Db::Postgres(url) => Store::open(url).await.unwrap(),
    };
    let tenant = store.ensure_tenant("late").await.unwrap();
    let (run, _) = store
        .create_run(&NewRun {
            tenant_id: tenant,
            pipeline_id: None,
            pipeline_name: "p".into(),
            spec: "{}".into(),
            input: "{}".into(),
            steps: vec![("a".into(), "flaky".into())],
        })
        .await
        .unwrap();
    let r = run.as_ref();
    let finish = |status: &'static str| Change::RunFinish {
        status,
        output: None,
        error_code: None,
        error_message: None,
    };
    let end = json!({"all_done": true, "status": "failed"});
    let ended = store
        .commit(&r, &[finish("failed")], Some(("complete", end)))
        .await
        .unwrap();
    assert!(ended.is_some());
    // Late writers: a guest's log line, a paused host's step result, a second end.
    let late_log = store
        .commit(&r, &[], Some(("log", json!({"message": "late"}))))
        .await
        .unwrap();
    let late_step = store
        .commit(
            &r,
            &[Change::StepSucceeded {
                idx: 0,
                output: "{}".into(),
            }],
            Some(("complete", json!({"step_id": "a"}))),
        )
        .await
        .unwrap();
    let second_end = store
        .commit(
            &r,
            &[finish("succeeded")],
            Some(("complete", json!({"all_done": true, "status": "succeeded"}))),
        )
        .await
        .unwrap();
    assert!(late_log.is_none() && late_step.is_none() && second_end.is_none());
    let events = store.events_after(&run.id, 0, 100).await.unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["queued", "complete"]);
    let run = store.run(&run.id).await.unwrap().unwrap();
    assert_one_end(&run, &events);
    assert_ne!(store.steps(&run.id).await.unwrap()[0].status, "succeeded");
}

on_both_dbs!(dur_09_nodes_recovering_one_run_at_once_take_it_over_once);
async fn dur_09_nodes_recovering_one_run_at_once_take_it_over_once(db: Db) {
    use corral::store::{Change, NewRun};
    let dir = tempfile::tempdir().unwrap();
    let open = || async {
        match &db {
            Db::Sqlite => Store::open_in_dir(dir.path()).await.unwrap(),
            Db::Postgres(url) => Store::open(url).await.unwrap(),
        }
    };
    let store = open().await;
    let tenant = store.ensure_tenant("nodes").await.unwrap();
    let spec = r#"{"name":"p","steps":[{"name":"a","plugin":"/nowhere/flaky.wasm"}]}"#;
    let mut ids = Vec::new();
    // Two runs under a host that died mid-step; the second was cancelled meanwhile.
    for cancel in [false, true] {
        let (run, _) = store
            .create_run(&NewRun {
                tenant_id: tenant.clone(),
                pipeline_id: None,
                pipeline_name: "p".into(),
                spec: spec.into(),
                input: "{}".into(),
                steps: vec![("a".into(), "flaky".into())],
            })
            .await
            .unwrap();
        store
            .claim_run(&run.id, "host_dead", Duration::from_millis(1))
            .await
            .unwrap()
            .unwrap();
        let started = store
            .commit(
                &run.as_ref(),
                &[Change::StepStart {
                    idx: 0,
                    generation: 0,
                    attempt: 1,
                    feedback: None,
                }],
                Some(("running", json!({"step_id": "a", "attempt": 1}))),
            )
            .await
            .unwrap();
        assert!(started.is_some());
        if cancel {
            store.request_cancel(&run.id).await.unwrap();
        }
        ids.push(run.id);
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    // Three nodes (each its own pool) recover at the same moment.
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(other_node(open().await).await);
    }
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(nodes.len()));
    let tasks: Vec<_> = nodes
        .into_iter()
        .map(|node| {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                node.recover().await.unwrap()
            })
        })
        .collect();
    let mut taken = 0;
    for t in tasks {
        taken += t.await.unwrap();
    }
    let crashes = |events: &[Event]| {
        events
            .iter()
            .filter(|e| e.kind == "error" && e.payload["error_code"] == "HOST_CRASH")
            .count()
    };
    let requeued = store.events_after(&ids[0], 0, 100).await.unwrap();
    assert_eq!(crashes(&requeued), 1, "{requeued:#?}");
    assert_eq!(store.run(&ids[0]).await.unwrap().unwrap().status, "queued");
    let cancelled = store.events_after(&ids[1], 0, 100).await.unwrap();
    assert_eq!(crashes(&cancelled), 1, "{cancelled:#?}");
    let run = store.run(&ids[1]).await.unwrap().unwrap();
    assert_eq!(assert_one_end(&run, &cancelled), "cancelled");
    let attempts = store.attempts(&ids[1]).await.unwrap();
    assert_eq!(attempts[0].status, "crashed");
    assert_eq!(taken, 2, "each run is taken over by exactly one node");
}
