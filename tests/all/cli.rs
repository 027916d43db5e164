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

/// `corral` on a database of its own (the compiled-code cache stays shared).
fn corral_on(db: &std::path::Path) -> Command {
    let mut cmd = corral();
    cmd.env(
        "CORRAL_DATABASE_URL",
        format!("sqlite://{}", db.join("corral.db").display()),
    )
    .env_remove("CORRAL_SERVER")
    .env_remove("CORRAL_TOKEN");
    cmd
}

#[test]
fn run_ends_with_its_output_and_json_mode_is_one_object_with_an_artifact_path_per_step() {
    let dir = tempfile::tempdir().unwrap();
    // Two steps store an artifact of the same name.
    let pipeline = dir.path().join("p.toml");
    std::fs::write(
        &pipeline,
        format!(
            "name = \"two-reports\"\n\
             [[steps]]\nname = \"first\"\nplugin = \"{0}\"\nconfig = {{ artifact_names = [\"report.txt\"] }}\n\
             [[steps]]\nname = \"second\"\nplugin = \"{0}\"\nconfig = {{ artifact_names = [\"report.txt\"] }}\n",
            plugin_path("flaky").display()
        ),
    )
    .unwrap();

    // The human view: progress on stderr; the artifacts' paths, the status line and the
    // output's pretty JSON on stdout.
    let (code, out, err) = run(corral_on(dir.path())
        .arg("run")
        .arg(&pipeline)
        .args(["-i", r#"{"n": 1}"#]));
    assert_eq!(code, 0, "{err}");
    let paths: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("artifact "))
        .map(|l| l.rsplit_once(": ").unwrap().1)
        .collect();
    assert_eq!(paths.len(), 2, "{out}");
    assert_ne!(paths[0], paths[1], "{out}");
    assert!(paths[0].ends_with("/first/report.txt"), "{out}");
    assert!(paths[1].ends_with("/second/report.txt"), "{out}");
    for path in &paths {
        assert_eq!(std::fs::read(path).unwrap(), b"x");
    }
    let (_, after) = out.split_once(" succeeded · fuel ").unwrap();
    let output: serde_json::Value =
        serde_json::from_str(after.split_once('\n').unwrap().1).unwrap();
    assert_eq!(output["input"]["input"]["n"], 1, "{out}");

    // -o json: one object on stdout, nothing else there; --output-file gets the output.
    let out_file = dir.path().join("out.json");
    let (code, out, err) = run(corral_on(dir.path())
        .arg("run")
        .arg(&pipeline)
        .args(["-o", "json", "-i", r#"{"n": 2}"#, "--output-file"])
        .arg(&out_file));
    assert_eq!(code, 0, "{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    assert!(doc["run_id"].as_str().unwrap().starts_with("run_"));
    assert_eq!(doc["output"]["input"]["input"]["n"], 2, "{doc:#}");
    assert_eq!(doc["error"], serde_json::Value::Null);
    assert_eq!(doc["steps"].as_array().unwrap().len(), 2);
    assert_eq!(doc["steps"][0]["status"], "succeeded");
    assert_eq!(doc["steps"][0]["tokens_used"], 0);
    let artifacts = doc["artifacts"].as_array().unwrap();
    assert_eq!(artifacts.len(), 2, "{doc:#}");
    assert_eq!(artifacts[0]["name"], "report.txt");
    assert_ne!(artifacts[0]["path"], artifacts[1]["path"]);
    for a in artifacts {
        assert_eq!(std::fs::read(a["path"].as_str().unwrap()).unwrap(), b"x");
    }
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out_file).unwrap()).unwrap();
    assert_eq!(written, doc["output"]);
    let run_id = doc["run_id"].as_str().unwrap();

    // runs show: the output, timings, fuel and tokens per step.
    let (code, out, err) = run(corral_on(dir.path()).args(["runs", "show", run_id, "--json"]));
    assert_eq!(code, 0, "{err}");
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["output"], doc["output"]);
    assert!(shown["run"]["duration_ms"].is_i64(), "{shown:#}");
    for step in shown["steps"].as_array().unwrap() {
        assert!(step["duration_ms"].is_i64(), "{step}");
        assert!(step["started_at"].is_i64(), "{step}");
        assert_eq!(step["tokens_used"], 0, "{step}");
    }
    let (code, out, err) = run(corral_on(dir.path()).args(["runs", "show", run_id]));
    assert_eq!(code, 0, "{err}");
    for needle in [
        "  queued   20",
        "  started  20",
        "  finished 20",
        "fuel ",
        " tokens 0",
        "step first",
        "step second",
        "output:\n{",
        "first/report.txt",
    ] {
        assert!(out.contains(needle), "{needle}: {out}");
    }
}

#[test]
fn offline_commands_take_tenant_and_every_exit_code_is_documented() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = dir.path().join("p.toml");
    std::fs::write(
        &pipeline,
        format!(
            "name = \"one\"\n[[steps]]\nname = \"a\"\nplugin = \"{}\"\n",
            plugin_path("echo").display()
        ),
    )
    .unwrap();
    // An unknown tenant is bad input (exit 2), on every offline command.
    for args in [
        &["runs", "list"][..],
        &["runs", "show", "run_x"],
        &["events", "run_x"],
        &["answer", "run_x", "{}"],
        &["cancel", "run_x"],
    ] {
        let (code, _, err) = run(corral_on(dir.path()).args(args).args(["--tenant", "acme"]));
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.starts_with("TENANT_NOT_FOUND: "), "{args:?}: {err}");
    }
    let (code, _, err) = run(corral_on(dir.path())
        .arg("run")
        .arg(&pipeline)
        .args(["--tenant", "acme"]));
    assert_eq!(code, 2, "{err}");
    // Once the tenant exists, its runs are its own.
    let (code, _, err) = run(corral_on(dir.path()).args(["tenant", "create", "acme"]));
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run(corral_on(dir.path())
        .arg("run")
        .arg(&pipeline)
        .args(["--tenant", "acme", "-o", "json"]));
    assert_eq!(code, 0, "{err}");
    let run_id = serde_json::from_str::<serde_json::Value>(&out).unwrap()["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, out, _) = run(corral_on(dir.path()).args(["runs", "list", "--tenant", "acme"]));
    assert_eq!(code, 0);
    assert!(out.contains(&run_id), "{out}");
    let (code, out, _) = run(corral_on(dir.path()).args(["runs", "list"]));
    assert_eq!(
        (code, out.as_str()),
        (0, ""),
        "local does not see acme's run"
    );
    let (code, _, err) = run(corral_on(dir.path()).args(["runs", "show", &run_id]));
    assert_eq!(code, 2, "{err}");
    assert!(err.starts_with("RUN_NOT_FOUND"), "{err}");
    let (code, out, _) = run(corral_on(dir.path()).args(["events", &run_id, "--tenant", "acme"]));
    assert_eq!(code, 0);
    assert!(out.lines().count() > 2, "{out}");

    // Exit 1: a run that fails.
    let failing = dir.path().join("fail.toml");
    std::fs::write(
        &failing,
        format!(
            "name = \"fails\"\n[[steps]]\nname = \"a\"\nplugin = \"{}\"\n\
             config = {{ fail_until_attempt = 99, kind = \"permanent\" }}\n",
            plugin_path("flaky").display()
        ),
    )
    .unwrap();
    let (code, out, err) = run(corral_on(dir.path())
        .arg("run")
        .arg(&failing)
        .args(["-o", "json"]));
    assert_eq!(code, 1, "{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["status"], "failed");
    assert_eq!(doc["output"], serde_json::Value::Null);
    assert!(doc["error"]["code"].is_string(), "{doc:#}");
    // Exit 2: bad usage (clap) and bad input; exit 3: a server nobody answers at.
    let (code, _, _) = run(corral().args(["runs", "list", "--no-such-flag"]));
    assert_eq!(code, 2);
    let (code, _, err) = run(corral_on(dir.path())
        .arg("run")
        .arg(&pipeline)
        .args(["-i", "{oops"]));
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = run(corral().args([
        "runs",
        "show",
        "run_x",
        "--server",
        "http://127.0.0.1:1",
        "--token",
        "t",
    ]));
    assert_eq!(code, 3, "{err}");
    // The table is in --help.
    let (code, out, _) = run(corral().arg("--help"));
    assert_eq!(code, 0);
    assert!(out.contains("Exit codes:"), "{out}");
    for line in ["  0 ", "  1 ", "  2 ", "  3 ", "  130 "] {
        assert!(out.contains(line), "{line}: {out}");
    }
}

#[test]
fn serve_config_errors_exit_2_naming_the_file_or_flag_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("corral.toml");
    let serve = |args: &[&str], file: Option<&str>| {
        let mut cmd = corral();
        cmd.env("CORRAL_DATA_DIR", dir.path())
            .env_remove("CORRAL_DATABASE_URL")
            .env_remove("CORRAL_SECRETS_KEY")
            .env_remove("CORRAL_CONFIG")
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args);
        if let Some(text) = file {
            std::fs::write(&config, text).unwrap();
            cmd.arg("--config").arg(&config);
        }
        run(&mut cmd)
    };
    let file = config.display().to_string();
    for (text, field) in [
        ("max_concurrent_runs = \"eight\"\n", "max_concurrent_runs"),
        ("listen = \"127.0.0.1:0\"\nno_such_key = 1\n", "no_such_key"),
        ("secrets_key = \"not base64!\"\n", "secrets_key"),
        ("cors_origins = [\"app.example\"]\n", "cors_origins"),
        ("log_format = \"xml\"\n", "log_format"),
        ("database_url = \"mysql://db\"\n", "database_url"),
    ] {
        let (code, _, err) = serve(&[], Some(text));
        assert_eq!(code, 2, "{text}: {err}");
        assert!(err.contains(&file) && err.contains(field), "{text}: {err}");
    }
    let missing = dir.path().join("absent.toml");
    let (code, _, err) = run(corral()
        .env("CORRAL_DATA_DIR", dir.path())
        .args(["serve", "--config"])
        .arg(&missing));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("absent.toml"), "{err}");
    for (args, field) in [
        (&["--listen", "not-an-address"][..], "--listen"),
        (&["--database-url", "mysql://db"][..], "--database-url"),
        (&["--cors-origin", "app.example"][..], "--cors-origin"),
    ] {
        let (code, _, err) = serve(args, None);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(field), "{args:?}: {err}");
    }
    let (code, _, err) = run(corral()
        .env("CORRAL_DATA_DIR", dir.path())
        .env("CORRAL_SECRETS_KEY", "short")
        .args(["serve", "--listen", "127.0.0.1:0"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("CORRAL_SECRETS_KEY"), "{err}");
}

#[test]
fn completions_for_bash_zsh_and_fish_are_printed_and_know_the_subcommands() {
    for shell in ["bash", "zsh", "fish"] {
        let (code, out, err) = run(corral().args(["completions", shell]));
        assert_eq!(code, 0, "{shell}: {err}");
        assert!(out.len() > 500, "{shell}: {out}");
        for word in ["serve", "token", "log-format"] {
            assert!(out.contains(word), "{shell} lacks {word}");
        }
    }
    let (code, _, _) = run(corral().args(["completions", "tcsh"]));
    assert_eq!(code, 2);
}

#[test]
fn scratch_dir_is_a_flag_of_the_commands_that_run_plugins_only() {
    for cmd in ["call", "run", "worker", "serve"] {
        let (code, out, err) = run(corral().args([cmd, "--help"]));
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("--scratch-dir"), "{cmd}: {out}");
    }
    for cmd in [
        &["tenant", "list"][..],
        &["token", "list"],
        &["secret", "list"],
        &["runs", "list"],
    ] {
        let (code, out, err) = run(corral().args(cmd).arg("--help"));
        assert_eq!(code, 0, "{err}");
        assert!(!out.contains("--scratch-dir"), "{cmd:?}: {out}");
        let (code, _, err) = run(corral().args(cmd).args(["--scratch-dir", "/tmp"]));
        assert_eq!(code, 2, "{cmd:?}: {err}");
    }
}

/// `corral run -o jsonl | head -1`: the reader goes away after the first line while the
/// run still has events to print; the command ends quietly (SIGPIPE, as other Unix tools
/// do), with no panic on stderr.
#[test]
fn a_reader_that_goes_away_ends_the_command_quietly() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let pipeline = dir.path().join("p.toml");
    std::fs::write(
        &pipeline,
        format!(
            "name = \"pipe\"\n[[steps]]\nname = \"slow\"\nplugin = \"{}\"\nconfig = {{ sleep_ms = 500 }}\n",
            plugin_path("flaky").display()
        ),
    )
    .unwrap();
    let mut child = corral()
        .env("CORRAL_DATA_DIR", dir.path().join("data"))
        .arg("run")
        .arg(&pipeline)
        .args(["-o", "jsonl"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains("\"queued\""), "{first}");
    // The read end is closed here; the step's events come after it.
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        Some(SIGPIPE),
        "{:?} {stderr}",
        out.status
    );
}

/// SIGPIPE's number on Linux.
const SIGPIPE: i32 = 13;
