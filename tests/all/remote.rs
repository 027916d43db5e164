//! The run commands with `--server URL --token T`: the real `corral` binary against a real
//! `corral serve`, with a fresh client data directory to show no local database is used.

use crate::util::*;
use serde_json::{Value, json};
use std::io::{BufRead, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A server and a client of it.
struct Remote {
    server: Server,
    token: String,
    /// The client's own data directory: it must stay without a database.
    client_data: tempfile::TempDir,
    /// Pipeline files.
    files: tempfile::TempDir,
}

impl Remote {
    fn start(envs: &[(&str, &str)]) -> Remote {
        let server = Server::start(envs);
        Remote {
            token: server.admin_token.clone(),
            server,
            client_data: tempfile::tempdir().unwrap(),
            files: tempfile::tempdir().unwrap(),
        }
    }

    /// `corral ARGS --server URL --token TOKEN`.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = corral(self.client_data.path());
        cmd.args(args)
            .args(["--server", &self.server.url, "--token", &self.token]);
        cmd
    }

    fn run(&self, args: &[&str]) -> (i32, String, String) {
        output_of(&mut self.cmd(args))
    }

    /// Writes a pipeline file and returns its path.
    fn pipeline(&self, file: &str, text: &str) -> String {
        let path = self.files.path().join(file);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    /// `GET path` on the API as the admin.
    fn get(&self, path: &str) -> Value {
        let url = format!("{}{path}", self.server.url);
        let token = self.token.clone();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let resp = reqwest::Client::new()
                    .get(url)
                    .bearer_auth(token)
                    .send()
                    .await
                    .unwrap();
                assert!(resp.status().is_success(), "{}", resp.status());
                resp.json::<Value>().await.unwrap()
            })
    }

    fn assert_no_local_database(&self) {
        assert!(
            !self.client_data.path().join("corral.db").exists(),
            "the client made a local database"
        );
    }
}

fn two_step_pipeline() -> String {
    format!(
        r#"
name = "remote-two-steps"
[defaults]
backoff = "10ms"
[[steps]]
name = "first"
plugin = "{}"
[[steps]]
name = "second"
plugin = "{}"
config = {{ fail_until_attempt = 2 }}
"#,
        plugin_path("echo").display(),
        plugin_path("flaky").display()
    )
}

fn ask_pipeline() -> String {
    format!(
        r#"
name = "remote-ask"
[[steps]]
name = "approve"
plugin = "{}"
config = {{ ask = "ship it?" }}
"#,
        plugin_path("flaky").display()
    )
}

fn jsonl(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Events are numbered 1..=n without a gap or a repeat, and the last is the final one.
fn assert_complete_stream(events: &[Value], status: &str) {
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    let expected: Vec<i64> = (1..=i64::try_from(events.len()).unwrap()).collect();
    assert_eq!(seqs, expected, "{events:#?}");
    let last = events.last().unwrap();
    assert_eq!(last["type"], "complete", "{last}");
    assert_eq!(last["payload"]["all_done"], true, "{last}");
    assert_eq!(last["payload"]["status"], status, "{last}");
}

/// A child `corral` whose output lines arrive on a channel, so a test can wait for one.
struct Live {
    child: std::process::Child,
    lines: mpsc::Receiver<(bool, String)>,
    stdout: Vec<String>,
    stderr: Vec<String>,
}

impl Live {
    fn spawn(cmd: &mut Command) -> Live {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        for (is_err, pipe) in [
            (false, Box::new(out) as Box<dyn Read + Send>),
            (true, Box::new(err)),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if tx.send((is_err, line)).is_err() {
                        break;
                    }
                }
            });
        }
        Live {
            child,
            lines,
            stdout: vec![],
            stderr: vec![],
        }
    }

    /// Waits (at most 60 s) for a line (stdout or stderr) that `matches`, and returns it.
    fn wait_for(&mut self, matches: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (is_err, line) = self.lines.recv_timeout(left).unwrap_or_else(|_| {
                panic!(
                    "no such line in time; stdout: {:#?}, stderr: {:#?}",
                    self.stdout, self.stderr
                )
            });
            if is_err {
                self.stderr.push(line.clone());
            } else {
                self.stdout.push(line.clone());
            }
            if matches(&line) {
                return line;
            }
        }
    }

    /// Waits (at most 60 s) for the exit; the exit code and every stdout and stderr line.
    fn finish(mut self) -> (i32, Vec<String>, Vec<String>) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "corral did not exit in time");
            std::thread::sleep(Duration::from_millis(50));
        };
        // The pipes close with the process: drain what is left.
        while let Ok((is_err, line)) = self.lines.recv_timeout(Duration::from_secs(5)) {
            if is_err {
                self.stderr.push(line);
            } else {
                self.stdout.push(line);
            }
        }
        (
            status.code().unwrap_or(-1),
            std::mem::take(&mut self.stdout),
            std::mem::take(&mut self.stderr),
        )
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn run_over_a_server_streams_every_event_and_uploads_each_plugin_once() {
    let remote = Remote::start(&[]);
    let file = remote.pipeline("two.toml", &two_step_pipeline());

    let (code, out, err) = remote.run(&["run", &file, "-o", "jsonl", "-i", r#"{"n": 1}"#]);
    assert_eq!(code, 0, "{err}\n{out}");
    let events = jsonl(&out);
    assert_complete_stream(&events, "succeeded");
    let run_id = events[0]["run_id"].as_str().unwrap().to_string();
    assert!(events.iter().all(|e| e["run_id"] == run_id.as_str()));
    // The first attempt of `second` failed transiently and was retried.
    assert!(
        events.iter().any(|e| e["type"] == "error"
            && e["payload"]["step_id"] == "second"
            && e["payload"]["will_retry"] == true),
        "{out}"
    );
    remote.assert_no_local_database();

    // Again, in the human view: nothing is uploaded a second time.
    let (code, out2, err2) = remote.run(&["run", &file]);
    assert_eq!(code, 0, "{err2}\n{out2}");
    assert!(err2.contains("pipeline `remote-two-steps`"), "{err2}");
    assert!(out2.contains(" succeeded · fuel "), "{out2}");
    // The human view ends with the run's output (`{}`: the default input, echoed).
    let (_, after) = out2.split_once(" succeeded · fuel ").unwrap();
    let shown: Value = serde_json::from_str(after.split_once('\n').unwrap().1).unwrap();
    assert!(shown.is_object(), "{out2}");
    let plugins = remote.get("/v1/plugins");
    let plugins = plugins["plugins"].as_array().unwrap();
    let mut names: Vec<String> = plugins
        .iter()
        .map(|p| format!("{}@{}", p["name"].as_str().unwrap(), p["version"]))
        .collect();
    names.sort();
    assert_eq!(plugins.len(), 2, "{names:?}");
    for (plugin, stem) in plugins.iter().zip(["echo", "flaky"]) {
        let version = plugin["version"].as_str().unwrap();
        assert!(
            version.starts_with("sha-") && version.len() == 16,
            "{version}"
        );
        let digest = plugin["digest"].as_str().unwrap();
        assert_eq!(&digest["sha256:".len()..][..12], &version[4..], "{plugin}");
        assert!(names.iter().any(|n| n.starts_with(stem)), "{names:?}");
    }

    // runs list: both runs, newest first, as JSON lines and as text.
    let (code, out, err) = remote.run(&["runs", "list", "--json"]);
    assert_eq!(code, 0, "{err}");
    let runs = jsonl(&out);
    assert_eq!(runs.len(), 2, "{out}");
    assert!(runs.iter().all(|r| r["status"] == "succeeded"), "{out}");
    assert_eq!(runs[1]["id"], run_id.as_str());
    let (code, out, _) = remote.run(&["runs", "list", "--limit", "1"]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.contains("succeeded") && out.contains("remote-two-steps") && !out.contains(&run_id),
        "{out}"
    );
    let (code, out, _) = remote.run(&["runs", "list", "--status", "failed"]);
    assert_eq!((code, out.as_str()), (0, ""));

    // runs show, as text and as JSON.
    let (code, out, err) = remote.run(&["runs", "show", &run_id]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("run {run_id} (remote-two-steps) succeeded")),
        "{out}"
    );
    assert!(
        out.contains("step first") && out.contains("step second"),
        "{out}"
    );
    assert!(out.contains("attempts 2"), "{out}");
    assert!(
        out.contains("  queued   20") && out.contains("  finished 20") && out.contains(" took "),
        "{out}"
    );
    assert!(out.contains("tokens 0"), "{out}");
    assert!(out.contains("output:\n{"), "{out}");
    let (code, out, err) = remote.run(&["runs", "show", &run_id, "--json"]);
    assert_eq!(code, 0, "{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["run"]["status"], "succeeded");
    assert_eq!(doc["steps"].as_array().unwrap().len(), 2);
    assert_eq!(doc["attempts"].as_array().unwrap().len(), 3);
    assert!(doc["artifacts"].is_array());
    // The output (the last step's), timings, fuel and tokens per step.
    assert_eq!(doc["output"]["input"]["n"], 1, "{doc:#}");
    assert_eq!(doc["output"]["attempt"], 2, "{doc:#}");
    assert!(doc["run"]["duration_ms"].is_i64(), "{doc:#}");
    for step in doc["steps"].as_array().unwrap() {
        assert!(step["duration_ms"].is_i64(), "{step}");
        assert!(step["fuel_used"].as_i64().unwrap() > 0, "{step}");
        assert_eq!(step["tokens_used"], 0, "{step}");
    }

    // Offline, the server's tenant is seen only with --tenant (same database file).
    let server_data = remote.server.data.path();
    let (code, out, err) =
        output_of(corral(server_data).args(["runs", "list", "--json", "--tenant", "default"]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(jsonl(&out).len(), 2, "{out}");
    let (code, out, err) = output_of(corral(server_data).args(["runs", "list", "--json"]));
    assert_eq!((code, out.as_str()), (0, ""), "{err}");
    let (code, out, err) = output_of(
        corral(server_data).args(["runs", "show", &run_id, "--json", "--tenant", "default"]),
    );
    assert_eq!(code, 0, "{err}");
    let offline: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(offline["output"], doc["output"]);
    assert_eq!(offline["steps"], doc["steps"]);

    // events: the same lines `run -o jsonl` printed, with and without --follow.
    let (code, first_run_events, _) = remote.run(&["events", &run_id]);
    assert_eq!(code, 0);
    assert_eq!(jsonl(&first_run_events), events);
    let (code, out, _) = remote.run(&["events", &run_id, "--follow"]);
    assert_eq!(code, 0);
    assert_eq!(out, first_run_events);
    let (code, out, _) = remote.run(&["events", &run_id, "--after", "2"]);
    assert_eq!(code, 0);
    assert_eq!(jsonl(&out), events[2..].to_vec());

    // A finished run cannot be cancelled; an unknown one is not found.
    let (code, _, err) = remote.run(&["cancel", &run_id]);
    assert_eq!(code, 2, "{err}");
    assert!(err.starts_with("ALREADY_FINISHED: "), "{err}");
    for args in [
        &["runs", "show", "run_nope"][..],
        &["events", "run_nope"],
        &["events", "run_nope", "--follow"],
    ] {
        let (code, _, err) = remote.run(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.starts_with("RUN_NOT_FOUND: "), "{args:?}: {err}");
    }
    remote.assert_no_local_database();
}

#[test]
fn answer_resumes_and_cancel_or_ctrl_c_end_runs_over_a_server() {
    let remote = Remote::start(&[]);
    let file = remote.pipeline("ask.toml", &ask_pipeline());

    // A run that asks, followed as JSON lines.
    let mut asked = Live::spawn(&mut remote.cmd(&["run", &file, "-o", "jsonl"]));
    let line = asked.wait_for(|l| l.contains(r#""type":"input_required""#));
    let event: Value = serde_json::from_str(&line).unwrap();
    let run_id = event["run_id"].as_str().unwrap().to_string();

    // `events` without --follow prints what happened so far and ends while the run waits.
    let started = Instant::now();
    let (code, out, err) = remote.run(&["events", &run_id]);
    assert_eq!(code, 0, "{err}");
    assert!(started.elapsed() < Duration::from_secs(20));
    let so_far = jsonl(&out);
    assert!(
        so_far.iter().any(|e| e["type"] == "input_required"),
        "{out}"
    );
    assert!(
        so_far.iter().all(|e| e["payload"]["all_done"] != true),
        "{out}"
    );

    // A wrong answer is refused and changes nothing; the right one resumes the run.
    let (code, _, err) = remote.run(&["answer", &run_id, r#"{"approved": "yes"}"#]);
    assert_eq!(code, 2, "{err}");
    assert!(err.starts_with("INVALID_ANSWER: "), "{err}");
    let (code, _, err) = remote.run(&["answer", &run_id, r#"{"approved": true}"#]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains(&format!("answered run {run_id}")), "{err}");
    let (code, stdout, stderr) = asked.finish();
    assert_eq!(code, 0, "{stderr:?}");
    let events = jsonl(&stdout.join("\n"));
    assert_complete_stream(&events, "succeeded");
    let (code, _, err) = remote.run(&["answer", &run_id, r#"{"approved": true}"#]);
    assert_eq!(code, 2, "{err}");
    assert!(err.starts_with("ALREADY_FINISHED: "), "{err}");

    // `corral cancel` ends a waiting run; its `run` (human view) exits 130.
    let mut human = Live::spawn(&mut remote.cmd(&["run", &file]));
    let header = human.wait_for(|l| l.starts_with("run "));
    let run_id = header
        .strip_prefix("run ")
        .and_then(|l| l.split(':').next())
        .unwrap()
        .to_string();
    let hint = human.wait_for(|l| l.contains("answer with:"));
    assert!(
        hint.contains(&format!(
            "corral answer {run_id} '<JSON>' --server {}",
            remote.server.url
        )),
        "{hint}"
    );
    let (code, _, err) = remote.run(&["cancel", &run_id]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains(&format!("cancel requested for run {run_id}")));
    let (code, stdout, stderr) = human.finish();
    assert_eq!(code, 130, "{stdout:?} {stderr:?}");
    assert!(
        stdout
            .iter()
            .any(|l| l.starts_with(&format!("run {run_id} cancelled · fuel "))),
        "{stdout:?}"
    );

    // Ctrl-C on `run --server` cancels the run on the server and still shows its end.
    let mut interrupted = Live::spawn(&mut remote.cmd(&["run", &file, "-o", "jsonl"]));
    let line = interrupted.wait_for(|l| l.contains(r#""type":"input_required""#));
    let run_id = serde_json::from_str::<Value>(&line).unwrap()["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    let status = Command::new("kill")
        .args(["-INT", &interrupted.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let (code, stdout, stderr) = interrupted.finish();
    assert_eq!(code, 130, "{stderr:?}");
    assert_complete_stream(&jsonl(&stdout.join("\n")), "cancelled");
    let doc = remote.get(&format!("/v1/runs/{run_id}"));
    assert_eq!(doc["run"]["status"], "cancelled");
    remote.assert_no_local_database();
}

#[test]
fn bad_tokens_servers_and_roles_are_refused() {
    let remote = Remote::start(&[]);
    let file = remote.pipeline("two.toml", &two_step_pipeline());
    let url = remote.server.url.clone();
    let data = remote.client_data.path();

    // A bad token.
    for args in [&["runs", "list"][..], &["run", &file], &["cancel", "run_x"]] {
        let (code, _, err) = output_of(corral(data).args(args).args([
            "--server",
            &url,
            "--token",
            "crl_not_a_real_token",
        ]));
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.starts_with("UNAUTHORIZED: "), "{args:?}: {err}");
    }
    // No token at all.
    let (code, _, err) = output_of(corral(data).args(["runs", "list", "--server", &url]));
    assert_eq!(code, 2, "{err}");
    assert!(err.starts_with("UNAUTHORIZED: "), "{err}");
    // Only http and https are spoken.
    let (code, _, err) = output_of(corral(data).args([
        "runs",
        "list",
        "--server",
        "ftp://127.0.0.1:1",
        "--token",
        "t",
    ]));
    assert_eq!(code, 2, "{err}");
    assert!(err.starts_with("INVALID_SERVER: "), "{err}");
    // Nobody listening: the server cannot be reached, exit 3 (every --server command).
    for args in [
        &["runs", "list"][..],
        &["run", &file],
        &["events", "run_x", "--follow"],
        &["plugin", "list"],
    ] {
        let (code, _, err) = output_of(corral(data).args(args).args([
            "--server",
            "http://127.0.0.1:1",
            "--token",
            "t",
        ]));
        assert_eq!(code, 3, "{args:?}: {err}");
        assert!(
            err.starts_with("error: cannot talk to http://127.0.0.1:1"),
            "{args:?}: {err}"
        );
    }
    // --tenant is for the local database.
    let (code, _, err) = remote.run(&["runs", "list", "--tenant", "default"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--tenant is for the local database"), "{err}");

    // A viewer may look but not run.
    let viewer = remote.server.token("default", "viewer");
    let (code, _, err) = output_of(
        corral(data)
            .args(["run", &file])
            .args(["--server", &url, "--token", &viewer]),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.starts_with("FORBIDDEN: "), "{err}");

    // CORRAL_SERVER and CORRAL_TOKEN work like the flags.
    let (code, out, err) = output_of(
        corral(data)
            .args(["run", &file, "-o", "jsonl"])
            .env("CORRAL_SERVER", &url)
            .env("CORRAL_TOKEN", &remote.token),
    );
    assert_eq!(code, 0, "{err}");
    assert_complete_stream(&jsonl(&out), "succeeded");
    let (code, out, err) = output_of(
        corral(data)
            .args(["runs", "list", "--json"])
            .env("CORRAL_SERVER", &url)
            .env("CORRAL_TOKEN", &viewer),
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(jsonl(&out).len(), 1, "{out}");

    // A pipeline that is not valid is refused before anything is uploaded; so is a
    // file that is not a plugin, as embedded runs refuse it.
    let bad = remote.pipeline("bad.toml", "name = \"x\"\n[[steps]]\nname = \"Bad Name\"\n");
    let (code, _, err) = remote.run(&["run", &bad]);
    assert_eq!(code, 2, "{err}");
    assert!(err.starts_with("INVALID_PIPELINE: "), "{err}");
    let not_wasm = remote.pipeline(
        "not-wasm.toml",
        &format!("name = \"x\"\n[[steps]]\nname = \"a\"\nplugin = \"{bad}\"\n"),
    );
    let (code, _, err) = remote.run(&["run", &not_wasm]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.starts_with(&format!(
            "INVALID_PIPELINE: {not_wasm}:4: steps[0].plugin: step `a` (`bad.toml`): INVALID_COMPONENT: "
        )),
        "{err}"
    );
    remote.assert_no_local_database();
}

/// One SSE event for the fake server.
fn sse_event(seq: i64, kind: &str, payload: Value, newline: &str) -> String {
    let data = json!({"type": kind, "run_id": "run_fake", "seq": seq,
                      "ts": "2026-01-01T00:00:00Z", "payload": payload});
    format!("id: {seq}{newline}data: {data}{newline}{newline}")
}

/// Reads a request head (up to the blank line).
fn read_head(stream: &mut std::net::TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).unwrap() == 0 {
            break;
        }
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

#[test]
fn events_follow_resumes_a_dropped_stream_without_losing_or_repeating_an_event() {
    // A fake server: the first stream breaks in the middle of event 3; the second (which
    // must resume after event 2) repeats event 2, sends a comment and a heartbeat, then
    // the rest with CRLF line ends.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (heads_tx, heads) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let head = read_head(&mut stream);
            let _ = heads_tx.send(head.clone());
            let path = head.split(' ').nth(1).unwrap_or_default().to_string();
            if path == "/v1/runs/run_fake" {
                let doc = json!({"run": {"id": "run_fake", "status": "running"},
                                 "output": null, "steps": [], "attempts": []})
                .to_string();
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{doc}",
                    doc.len()
                );
                continue;
            }
            let running = json!({"step_id": "a", "attempt": 1});
            let mut body = String::new();
            if !head.to_ascii_lowercase().contains("last-event-id:") {
                body.push_str(&sse_event(1, "queued", json!({}), "\n"));
                body.push_str(&sse_event(2, "running", running, "\n"));
                body.push_str("id: 3\ndata: {\"type\":\"log\",\"run_id\":\"run_f");
            } else {
                body.push_str(&sse_event(2, "running", running, "\n"));
                body.push_str(": a comment\n\ndata: {\"type\":\"heartbeat\"}\n\n");
                let log = json!({"step_id": "a", "level": "info", "message": "hi"});
                body.push_str(&sse_event(3, "log", log, "\r\n"));
                let done = json!({"all_done": true, "status": "succeeded", "fuel_used": 7});
                body.push_str(&sse_event(4, "complete", done, "\r\n"));
            }
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                 connection: close\r\n\r\n{body}"
            );
        }
    });
    let data = tempfile::tempdir().unwrap();
    let (code, out, err) = output_of(corral(data.path()).args([
        "events",
        "run_fake",
        "--follow",
        "--server",
        &url,
        "--token",
        "secret-token",
    ]));
    assert_eq!(code, 0, "{err}");
    let events = jsonl(&out);
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3, 4], "{out}");
    assert_eq!(events[2]["payload"]["message"], "hi");
    let heads: Vec<String> = heads.try_iter().collect();
    assert_eq!(heads.len(), 3, "{heads:#?}");
    assert!(
        heads.iter().all(|h| h
            .to_ascii_lowercase()
            .contains("authorization: bearer secret-token")),
        "{heads:#?}"
    );
    let last_ids: Vec<Option<String>> = heads[1..]
        .iter()
        .map(|h| {
            h.lines().find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("last-event-id:")
                    .map(|v| v.trim().to_string())
            })
        })
        .collect();
    assert_eq!(last_ids, [None, Some("2".to_string())]);
}

#[test]
fn heartbeats_are_skipped_and_events_without_follow_ends_during_a_quiet_run() {
    // Heartbeats every second, while a step sleeps for four.
    let remote = Remote::start(&[("CORRAL_HEARTBEAT_SECS", "1")]);
    let file = remote.pipeline(
        "sleepy.toml",
        &format!(
            "name = \"sleepy\"\n[[steps]]\nname = \"nap\"\nplugin = \"{}\"\n\
             config = {{ sleep_ms = 4000 }}\n",
            plugin_path("flaky").display()
        ),
    );
    let mut run = Live::spawn(&mut remote.cmd(&["run", &file, "-o", "jsonl"]));
    let line = run.wait_for(|l| l.contains(r#""progress_label":"started""#));
    let run_id = serde_json::from_str::<Value>(&line).unwrap()["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    let follow = Live::spawn(&mut remote.cmd(&["events", &run_id, "--follow"]));
    // Heartbeats keep coming, yet the snapshot ends once no event has come for a moment:
    // before the run ends (the stream itself only closes after the final event).
    let (code, out, err) = remote.run(&["events", &run_id]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("heartbeat"), "{out}");
    assert!(
        jsonl(&out).iter().all(|e| e["payload"]["all_done"] != true),
        "{out}"
    );

    let (code, stdout, stderr) = run.finish();
    assert_eq!(code, 0, "{stderr:?}");
    let all = stdout.join("\n");
    assert!(!all.contains("heartbeat"), "{all}");
    assert_complete_stream(&jsonl(&all), "succeeded");
    let (code, followed, stderr) = follow.finish();
    assert_eq!(code, 0, "{stderr:?}");
    assert_eq!(followed, stdout);
}

#[test]
fn events_follow_stops_when_the_server_answers_204_after_the_final_event() {
    // A fake server: the run looks unfinished, and the stream after event 4 answers 204
    // (what a server says when the final event was read already).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (heads_tx, heads) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let head = read_head(&mut stream);
            let _ = heads_tx.send(head.clone());
            if head.starts_with("GET /v1/runs/run_fake ") {
                let doc = json!({"run": {"id": "run_fake", "status": "running"},
                                 "output": null, "steps": [], "attempts": []})
                .to_string();
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{doc}",
                    doc.len()
                );
            } else {
                let _ = write!(
                    stream,
                    "HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n"
                );
            }
        }
    });
    let data = tempfile::tempdir().unwrap();
    let (code, out, err) = output_of(corral(data.path()).args([
        "events", "run_fake", "--follow", "--after", "4", "--server", &url, "--token", "t",
    ]));
    assert_eq!((code, out.as_str()), (0, ""), "{err}");
    let heads: Vec<String> = heads.try_iter().collect();
    assert_eq!(heads.len(), 2, "no reconnection after the 204: {heads:#?}");
    assert!(
        heads[1].to_ascii_lowercase().contains("last-event-id: 4"),
        "{heads:#?}"
    );
}

/// A TLS-terminating proxy on loopback in front of `backend` (`http://127.0.0.1:PORT`),
/// serving a certificate for 127.0.0.1 issued by a CA made here: its URL and the CA's PEM.
fn tls_proxy(backend: &str) -> (String, String) {
    use std::sync::Arc;
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "corral test CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(leaf_key.serialize_der());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![leaf.der().clone()], key.into())
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let backend = backend.strip_prefix("http://").unwrap().to_string();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, backend) = (acceptor.clone(), backend.clone());
                tokio::spawn(async move {
                    // A client that does not trust the certificate ends the handshake.
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Ok(mut upstream) = tokio::net::TcpStream::connect(&backend).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
                });
            }
        });
    });
    (url, ca_cert.pem())
}

#[test]
fn https_servers_are_trusted_with_ca_cert_and_an_untrusted_certificate_exits_3() {
    let remote = Remote::start(&[]);
    let (url, ca_pem) = tls_proxy(&remote.server.url);
    let ca = remote.files.path().join("ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    let file = remote.pipeline("two.toml", &two_step_pipeline());
    let https = |args: &[&str], ca: Option<&Path>| {
        let mut cmd = corral(remote.client_data.path());
        cmd.args(args)
            .args(["--server", &url, "--token", &remote.token]);
        if let Some(ca) = ca {
            cmd.arg("--ca-cert").arg(ca);
        }
        output_of(&mut cmd)
    };

    // A run over https, -o json: one object on stdout, the output in --output-file too.
    let out_file = remote.files.path().join("out.json");
    let (code, out, err) = https(
        &[
            "run",
            &file,
            "-o",
            "json",
            "-i",
            r#"{"n": 7}"#,
            "--output-file",
            out_file.to_str().unwrap(),
        ],
        Some(&ca),
    );
    assert_eq!(code, 0, "{err}\n{out}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    assert_eq!(doc["pipeline"], "remote-two-steps");
    assert_eq!(doc["output"]["input"]["n"], 7, "{doc:#}");
    assert_eq!(doc["error"], Value::Null);
    assert!(doc["fuel_used"].as_i64().unwrap() > 0, "{doc:#}");
    assert_eq!(doc["tokens_used"], 0);
    assert!(doc["finished_at"].as_str().unwrap().starts_with("20"));
    let steps = doc["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2, "{doc:#}");
    assert_eq!(steps[1]["name"], "second");
    assert_eq!(steps[1]["attempts"], 2);
    assert!(steps[1]["duration_ms"].is_i64(), "{doc:#}");
    assert_eq!(doc["artifacts"], json!([]));
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(&out_file).unwrap()).unwrap();
    assert_eq!(written, doc["output"]);
    let run_id = doc["run_id"].as_str().unwrap();

    // The other commands over https.
    let (code, out, err) = https(&["runs", "list", "--json"], Some(&ca));
    assert_eq!(code, 0, "{err}");
    assert_eq!(jsonl(&out).len(), 1, "{out}");
    let (code, out, err) = https(&["runs", "show", run_id], Some(&ca));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("succeeded"), "{out}");
    let (code, out, err) = https(&["events", run_id, "--follow"], Some(&ca));
    assert_eq!(code, 0, "{err}");
    assert_complete_stream(&jsonl(&out), "succeeded");
    let (code, out, err) = https(&["plugin", "list", "--json"], Some(&ca));
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["plugins"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // CORRAL_CA_CERT works like the flag.
    let (code, _, err) = output_of(
        corral(remote.client_data.path())
            .args(["runs", "list", "--server", &url, "--token", &remote.token])
            .env("CORRAL_CA_CERT", &ca),
    );
    assert_eq!(code, 0, "{err}");

    // Without the CA the certificate is not trusted: the server cannot be reached, exit 3.
    for args in [&["runs", "list"][..], &["run", &file]] {
        let (code, _, err) = https(args, None);
        assert_eq!(code, 3, "{args:?}: {err}");
        assert!(
            err.contains("certificate is not trusted") && err.contains("--ca-cert"),
            "{args:?}: {err}"
        );
    }
    // A --ca-cert that holds no certificate is bad input, exit 2.
    let (code, _, err) = https(&["runs", "list"], Some(Path::new(&file)));
    assert_eq!(code, 2, "{err}");
    assert!(err.starts_with("INVALID_CA_CERT: "), "{err}");
    remote.assert_no_local_database();
}

#[test]
fn plugin_upload_and_list_and_run_sends_the_manifest_beside_a_plugin_file() {
    let remote = Remote::start(&[]);
    let echo = plugin_path("echo").display().to_string();
    let flaky = plugin_path("flaky").display().to_string();

    // Named by what the plugin says about itself.
    let (code, out, err) = remote.run(&["plugin", "upload", &echo]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("uploaded plugin echo@"), "{out}");
    // Named by the flags, with a manifest; --json prints the server's answer.
    let manifest = remote.files.path().join("grants.toml");
    std::fs::write(&manifest, "[limits]\nhttp_requests = 5\n").unwrap();
    let (code, out, err) = remote.run(&[
        "plugin",
        "upload",
        &flaky,
        "--name",
        "flaky",
        "--version",
        "9.9.9",
        "--manifest",
        manifest.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let created: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(created["name"], "flaky");
    assert_eq!(created["version"], "9.9.9");
    assert!(
        created["id"].as_str().unwrap().starts_with("plg_"),
        "{created}"
    );
    assert_eq!(created["manifest"]["limits"]["http_requests"], 5);
    // The same name@version again is refused (exit 2); so is a bad manifest, before
    // anything is uploaded, and a file that is not a plugin.
    let (code, _, err) = remote.run(&[
        "plugin",
        "upload",
        &flaky,
        "--name",
        "flaky",
        "--version",
        "9.9.9",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.starts_with("PLUGIN_EXISTS: "), "{err}");
    std::fs::write(&manifest, "[limits]\nhttp_requests = \"many\"\n").unwrap();
    let (code, _, err) = remote.run(&[
        "plugin",
        "upload",
        &flaky,
        "--name",
        "other",
        "--manifest",
        manifest.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.starts_with("INVALID_MANIFEST: "), "{err}");
    let (code, _, err) = remote.run(&[
        "plugin",
        "upload",
        manifest.to_str().unwrap(),
        "--name",
        "x",
        "--version",
        "1",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.starts_with("INVALID_COMPONENT: "), "{err}");

    // list: a table, or JSON.
    let (code, out, err) = remote.run(&["plugin", "list"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].starts_with("ID ") && lines[0].contains("PLUGIN"),
        "{out}"
    );
    let flaky_row = lines.iter().find(|l| l.contains("flaky@9.9.9")).unwrap();
    assert!(
        flaky_row.contains("agent-plugin") && flaky_row.contains(" yes "),
        "{out}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("echo@") && l.contains(" no ")),
        "{out}"
    );
    let (code, out, err) = remote.run(&["plugin", "list", "--json"]);
    assert_eq!(code, 0, "{err}");
    let plugins = serde_json::from_str::<Value>(&out).unwrap()["plugins"].clone();
    assert_eq!(plugins.as_array().unwrap().len(), 2, "{plugins:#}");

    // `run --server` uploads the manifest beside a local plugin file with it.
    std::fs::copy(
        plugin_path("echo"),
        remote.files.path().join("granted.wasm"),
    )
    .unwrap();
    std::fs::write(
        remote.files.path().join("granted.corral.toml"),
        "[limits]\nhttp_requests = 3\n",
    )
    .unwrap();
    let file = remote.pipeline(
        "granted.toml",
        &format!(
            "name = \"granted\"\n[[steps]]\nname = \"a\"\nplugin = \"{}\"\n",
            remote.files.path().join("granted.wasm").display()
        ),
    );
    let (code, out, err) = remote.run(&["run", &file, "-o", "jsonl"]);
    assert_eq!(code, 0, "{err}");
    assert_complete_stream(&jsonl(&out), "succeeded");
    let listed = remote.get("/v1/plugins");
    let granted = listed["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "granted")
        .unwrap()
        .clone();
    assert_eq!(
        granted["manifest"]["limits"]["http_requests"], 3,
        "{granted}"
    );

    // A viewer may list but not upload; without --server there is nothing to work on.
    let viewer = remote.server.token("default", "viewer");
    let (code, _, err) = output_of(corral(remote.client_data.path()).args([
        "plugin",
        "upload",
        &echo,
        "--name",
        "v",
        "--server",
        &remote.server.url,
        "--token",
        &viewer,
    ]));
    assert_eq!(code, 2, "{err}");
    assert!(err.starts_with("FORBIDDEN: "), "{err}");
    let (code, _, err) = output_of(corral(remote.client_data.path()).args(["plugin", "list"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--server"), "{err}");
    remote.assert_no_local_database();
}
