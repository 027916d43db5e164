//! Crash recovery and the `corral run` CLI contract, with real processes.

use crate::util::*;
use serde_json::Value;
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
