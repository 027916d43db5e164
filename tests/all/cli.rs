//! The `corral` binary as a user runs it: exit codes, messages and JSON shapes.

use crate::util::*;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn corral() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_corral"));
    // Share the compiled-code cache with the other tests; never touch the user's data dir.
    cmd.env("CORRAL_DATA_DIR", root().join("target/test-data"))
        .env_remove("RUST_LOG");
    cmd
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().unwrap();
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

#[test]
fn inspect_echo_reports_the_agent_world_as_json() {
    let (code, out, err) = run(corral()
        .args(["plugin", "inspect", "--json"])
        .arg(plugin_path("echo")));
    assert_eq!(code, 0, "{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["world"], "agent-plugin");
    assert_eq!(doc["info"]["name"], "echo");
    assert!(doc["digest"].as_str().unwrap().starts_with("sha256:"));
    assert!(
        doc["imports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i == "corral:plugin/host@0.2.0")
    );
    assert_eq!(
        doc["exports"],
        serde_json::json!(["corral:plugin/agent@0.2.0"])
    );
    assert_eq!(
        doc["grants"]["tools"],
        serde_json::json!([]),
        "no manifest, no grants"
    );
    assert_eq!(doc["grants"]["http"], serde_json::json!([]));
    assert_eq!(doc["grants"]["secrets"], serde_json::json!({}));
    assert_eq!(doc["grants"]["limits"]["http_requests"], 64);
    // A plugin with a manifest beside it shows what it is granted.
    let (_, out, _) = run(corral()
        .args(["plugin", "inspect", "--json"])
        .arg(plugin_path("researcher")));
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["grants"]["tools"], serde_json::json!(["text"]));
    // And its egress grants: endpoints, and which hosts may receive which secret.
    let (_, out, _) = run(corral()
        .args(["plugin", "inspect", "--json"])
        .arg(plugin_path("http_json")));
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["grants"]["http"][0]["host"], "127.0.0.1");
    assert_eq!(doc["grants"]["http"][0]["port"], 8787);
    assert_eq!(
        doc["grants"]["secrets"]["API_TOKEN"],
        serde_json::json!(["127.0.0.1"])
    );
}

#[test]
fn inspect_text_tools_lists_each_tool_with_its_schema() {
    let (code, out, err) = run(corral()
        .args(["plugin", "inspect", "--json"])
        .arg(plugin_path("text_tools")));
    assert_eq!(code, 0, "{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["world"], "tool-plugin");
    let tools = doc["tools"].as_array().unwrap();
    assert!(tools.len() >= 2, "{doc:#}");
    for tool in tools {
        assert!(
            tool["name"].is_string() && tool["description"].is_string(),
            "{tool}"
        );
        assert_eq!(tool["inputSchema"]["type"], "object", "{tool}");
    }
    // The human form shows them too.
    let (code, out, _) = run(corral()
        .args(["plugin", "inspect"])
        .arg(plugin_path("text_tools")));
    assert_eq!(code, 0);
    assert!(
        out.contains("tools:") && out.contains("input schema:"),
        "{out}"
    );
}

#[test]
fn inspect_of_a_file_that_is_not_a_plugin_exits_2_with_invalid_component() {
    let (code, out, err) = run(corral().args(["plugin", "inspect", "/etc/hosts"]));
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.starts_with("INVALID_COMPONENT: "), "{err}");
    let (code, out, _) = run(corral().args(["plugin", "inspect", "--json", "/etc/hosts"]));
    assert_eq!(code, 2);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["error_code"], "INVALID_COMPONENT");
}

#[test]
fn call_prints_the_output_and_json_mode_has_the_documented_shape() {
    let (code, out, err) = run(corral()
        .arg("call")
        .arg(plugin_path("echo"))
        .args(["--input", r#"{"a":1}"#]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap(),
        serde_json::json!({"a":1})
    );
    assert!(err.contains("[100%] done"), "progress is shown live: {err}");

    let (code, out, _) = run(corral().arg("call").arg(plugin_path("echo")).args([
        "--input",
        r#"{"a":1}"#,
        "--json",
    ]));
    assert_eq!(code, 0);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["status"], "ok");
    assert_eq!(doc["output"], serde_json::json!({"a": 1}));
    assert!(doc["fuel_used"].as_u64().unwrap() > 0);
    assert!(doc["duration_ms"].is_u64());
    assert_eq!(doc["logs"][0]["level"], "info");
}

#[test]
fn call_reads_input_from_a_file_and_refuses_bad_json_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("in.json");
    std::fs::write(&file, r#"{"from":"file"}"#).unwrap();
    let (code, out, err) = run(corral()
        .arg("call")
        .arg(plugin_path("echo"))
        .arg("--input")
        .arg(format!("@{}", file.display())));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"from\": \"file\""), "{out}");

    let (code, _, err) = run(corral()
        .arg("call")
        .arg(plugin_path("echo"))
        .args(["--input", "{oops"]));
    assert_eq!(code, 2);
    assert!(
        err.starts_with("INVALID_INPUT: input is not valid JSON"),
        "{err}"
    );
}

#[test]
fn call_loop_with_fuel_limit_exits_1_budget_exhausted() {
    let (code, out, err) = run(corral().arg("call").arg(plugin_path("spin_loop")).args([
        "--fuel",
        "100000000",
        "--json",
    ]));
    assert_eq!(code, 1, "{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["status"], "failed");
    assert_eq!(doc["error_code"], "BUDGET_EXHAUSTED");
}

#[test]
fn call_loop_without_fuel_limit_exits_1_deadline_exceeded_in_a_few_seconds() {
    let started = Instant::now();
    let (code, _, err) = run(corral()
        .arg("call")
        .arg(plugin_path("spin_loop"))
        .args(["--timeout", "2s"]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("DEADLINE_EXCEEDED"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
}

/// Peak resident memory of a child, sampled from /proc until it exits.
fn peak_rss_kib(cmd: &mut Command) -> (i32, String, u64) {
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    loop {
        if let Ok(status) = std::fs::read_to_string(&status_path) {
            for line in status.lines() {
                if let Some(v) = line.strip_prefix("VmHWM:") {
                    let kib: u64 = v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
                    peak = peak.max(kib);
                }
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (status.code().unwrap_or(-1), err, peak);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn res_09_millions_of_empty_writes_to_output_streams_do_not_grow_host_memory() {
    // GHSA-5m8g-xhq4-4h93: wasmtime-wasi's AsyncWriteStream queued every empty write, so
    // a guest could grow host memory at almost no fuel. Corral's stdout and stderr are
    // its own bounded log streams and files use wasmtime's file stream, which takes one
    // write at a time; this guards that no stream the guest reaches queues them.
    let (code, err, peak_kib) = peak_rss_kib(
        corral()
            .arg("call")
            .arg(plugin_path("empty_writer"))
            .args(["--timeout", "300s"]),
    );
    assert_eq!(code, 0, "{err}");
    assert!(peak_kib > 0, "no RSS sample taken");
    assert!(peak_kib < 256 * 1024, "peak RSS {peak_kib} KiB");
}

#[test]
fn res_03_memory_grower_fails_memory_limit_and_host_rss_stays_far_below_1_gib() {
    let (code, err, peak_kib) = peak_rss_kib(
        corral()
            .arg("call")
            .arg(plugin_path("memory_hog"))
            .args(["--memory", "64MiB"]),
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("MEMORY_LIMIT"), "{err}");
    assert!(peak_kib > 0, "no RSS sample taken");
    assert!(peak_kib < 512 * 1024, "peak RSS {peak_kib} KiB");
}

#[test]
fn sbx_01_escaper_under_corral_call_reads_nothing_outside_work() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("canary.txt"), "CANARY-cli-91b2").unwrap();
    let (code, out, err) = run(corral()
        .arg("call")
        .arg(plugin_path("escaper"))
        .args(["--json", "--input", r#"{"canary":"canary.txt"}"#])
        .env("CORRAL_SCRATCH_DIR", dir.path()));
    assert_eq!(code, 0, "{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["output"]["leaked"], serde_json::json!([]), "{doc:#}");
    assert!(!out.contains("CANARY-cli-91b2"));
}

#[test]
fn python_agent_runs_under_corral_call_and_returns_its_output() {
    let text = "Corral runs plugins in sandboxes. Sandboxes have budgets. \
                Budgets stop runaway plugins. Plugins can be written in Python. \
                Python plugins use the same contract as Rust plugins.";
    let input = serde_json::json!({"text": text, "sentences": 2}).to_string();
    let (code, out, err) = run(corral()
        .arg("call")
        .arg(plugin_path("summarizer_py"))
        .args([
            "--json",
            "--timeout",
            "120s",
            "--memory",
            "256MiB",
            "--input",
            &input,
        ]));
    assert_eq!(code, 0, "{out}{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["status"], "ok", "{doc:#}");
    assert_eq!(
        doc["output"]["sentences"].as_array().unwrap().len(),
        2,
        "{doc:#}"
    );
    assert!(doc["output"]["word_count"].as_u64().unwrap() > 10);
    assert!(
        doc["logs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["level"] == "info"),
        "{doc:#}"
    );
}

#[test]
fn tool_plugins_are_called_with_tool_and_refuse_without_it() {
    let (code, out, err) = run(corral().arg("call").arg(plugin_path("text_tools")).args([
        "--tool",
        "word_count",
        "--input",
        r#"{"text":"one two three"}"#,
    ]));
    assert_eq!(code, 0, "{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["words"], 3);

    let (code, _, err) = run(corral().arg("call").arg(plugin_path("text_tools")));
    assert_eq!(code, 2);
    assert!(err.contains("--tool"), "{err}");
}

#[test]
fn res_09_huge_buffer_requests_get_what_there_is_and_the_host_stays_small() {
    // read(u64::MAX) on a 10-byte file and on stdin: the host reads what there is.
    let (code, err, peak_kib) = peak_rss_kib(
        corral()
            .arg("call")
            .arg(plugin_path("buffer_asker"))
            .args(["--json", "--input", "{}"]),
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        peak_kib > 0 && peak_kib < 512 * 1024,
        "peak RSS {peak_kib} KiB"
    );
    let (code, out, err) = run(corral()
        .arg("call")
        .arg(plugin_path("buffer_asker"))
        .args(["--json", "--input", "{}"]));
    assert_eq!(code, 0, "{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["output"]["file"], 10, "{doc}");
    assert!(
        doc["output"]["stdin"]
            .as_str()
            .unwrap_or("")
            .contains("Closed"),
        "{doc}"
    );
    // 2^40 random bytes: refused (the guest is stopped), and the host never allocates it.
    let (code, err, peak_kib) = peak_rss_kib(
        corral()
            .arg("call")
            .arg(plugin_path("buffer_asker"))
            .args(["--input", r#"{"random": true}"#]),
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("exceeds limit"), "{err}");
    assert!(
        peak_kib > 0 && peak_kib < 512 * 1024,
        "peak RSS {peak_kib} KiB"
    );
}
