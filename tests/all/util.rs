//! Shared test helpers.

use corral::engine::{
    Call, Engine, EngineConfig, Invocation, Limits, Outcome, Output, Plugin, RunContext,
};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A built plugin or fixture; fails with instructions when plugins are not built.
pub fn plugin_path(name: &str) -> PathBuf {
    let path = root().join("target/plugins").join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask build-plugins` (or `cargo xtask test`)",
        path.display()
    );
    path
}

/// A compiled-code cache shared by all tests, so each component compiles once per run.
pub fn cache_dir() -> PathBuf {
    root().join("target/test-data/cache")
}

/// An engine with test-sized settings and its own scratch root.
pub fn engine_with_scratch(scratch_root: &Path) -> Engine {
    Engine::new(EngineConfig {
        cache_dir: Some(cache_dir()),
        scratch_root: scratch_root.to_path_buf(),
        max_concurrent: 16,
        ..EngineConfig::default()
    })
    .unwrap()
}

/// One engine for the whole test binary, as a host process would have.
pub fn engine() -> Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let scratch =
                std::env::temp_dir().join(format!("corral-test-scratch-{}", std::process::id()));
            engine_with_scratch(&scratch)
        })
        .clone()
}

pub async fn load(engine: &Engine, name: &str) -> Arc<Plugin> {
    engine
        .load_file(&plugin_path(name))
        .await
        .unwrap_or_else(|f| panic!("loading {name}: {f}"))
}

pub fn run_call(input: &str) -> Call {
    Call::Run {
        ctx: RunContext {
            run_id: "test-run".into(),
            step: "test-step".into(),
            attempt: 1,
            config: "{}".into(),
            feedback: None,
        },
        input: input.into(),
    }
}

pub fn limits() -> Limits {
    Limits {
        fuel: Some(5_000_000_000),
        timeout: Duration::from_secs(60),
        ..Limits::default()
    }
}

/// Runs an agent fixture with `input` under `limits`.
pub async fn run_agent(engine: &Engine, name: &str, input: &str, limits: Limits) -> Outcome {
    let plugin = load(engine, name).await;
    engine
        .invoke(
            &plugin,
            run_call(input),
            Invocation {
                limits,
                ..Invocation::default()
            },
        )
        .await
}

/// The JSON output of a successful agent run.
pub fn json_output(outcome: &Outcome) -> serde_json::Value {
    match &outcome.result {
        Ok(Output::Json(text)) => serde_json::from_str(text).unwrap(),
        other => panic!(
            "expected JSON output, got {other:?} (logs: {:?})",
            outcome.logs
        ),
    }
}

/// After a hostile case the same engine must still run `echo` correctly.
pub async fn assert_echo_still_works(engine: &Engine) {
    let outcome = run_agent(engine, "echo", r#"{"still":"alive"}"#, limits()).await;
    assert_eq!(json_output(&outcome), serde_json::json!({"still": "alive"}));
}

/// A real `corral serve` on 127.0.0.1:0 with its own data directory.
pub struct Server {
    child: std::process::Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The admin token of tenant `default` (printed on first start; empty after a restart).
    pub admin_token: String,
    /// The data directory (kept across restarts).
    pub data: std::sync::Arc<tempfile::TempDir>,
}

impl Server {
    /// Starts a server on a fresh data directory.
    pub fn start(envs: &[(&str, &str)]) -> Server {
        Server::start_in(std::sync::Arc::new(tempfile::tempdir().unwrap()), envs)
    }

    /// Starts a server on `data` (a restart when it was used before).
    pub fn start_in(data: std::sync::Arc<tempfile::TempDir>, envs: &[(&str, &str)]) -> Server {
        Server::start_at(data, "127.0.0.1:0", envs)
    }

    /// Starts a server on `data` listening on `listen` (e.g. the address a stopped server
    /// had, so a client sees a restart at the same URL).
    pub fn start_at(
        data: std::sync::Arc<tempfile::TempDir>,
        listen: &str,
        envs: &[(&str, &str)],
    ) -> Server {
        use std::io::BufRead;
        // stdout and stderr on one pipe, in the order they were written: the first start's
        // admin token (stderr) comes before the listening line (stdout).
        let (reader, writer) = std::io::pipe().unwrap();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_corral"));
        cmd.args(["serve", "--listen", listen])
            .env("CORRAL_DATA_DIR", data.path())
            .env_remove("CORRAL_DATABASE_URL")
            .env_remove("CORRAL_LOG_FORMAT")
            .env_remove("RUST_LOG")
            .stdout(writer.try_clone().unwrap())
            .stderr(writer);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        // The parent's copies of the write end go with `cmd`, so the pipe ends with the child.
        drop(cmd);
        let mut lines = std::io::BufReader::new(reader).lines();
        let (mut url, mut admin_token) = (String::new(), String::new());
        for line in lines.by_ref() {
            let line = line.unwrap();
            let trimmed = line.trim();
            if trimmed.starts_with("crl_") {
                admin_token = trimmed.to_string();
            }
            if let Some(u) = trimmed.strip_prefix("corral listening on ") {
                url = u.to_string();
                break;
            }
        }
        assert!(!url.is_empty(), "the server did not start");
        // Keep draining the output so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server {
            child,
            url,
            admin_token,
            data,
        }
    }

    /// Stops the server gracefully (SIGTERM) and waits for it.
    pub fn stop(mut self) -> std::sync::Arc<tempfile::TempDir> {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        self.data.clone()
    }

    /// Kills the server with SIGKILL.
    pub fn kill(mut self) -> std::sync::Arc<tempfile::TempDir> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.data.clone()
    }

    /// Creates a token for `tenant` (created if missing) with `role`, offline.
    pub fn token(&self, tenant: &str, role: &str) -> String {
        let run = |args: &[&str]| {
            std::process::Command::new(env!("CARGO_BIN_EXE_corral"))
                .args(args)
                .env("CORRAL_DATA_DIR", self.data.path())
                .env_remove("CORRAL_DATABASE_URL")
                .output()
                .unwrap()
        };
        let _ = run(&["tenant", "create", tenant]);
        let out = run(&["token", "create", "--tenant", tenant, "--role", role]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response's status and body: its JSON, or the text as a JSON string if it is not JSON.
pub async fn status_and_body(resp: reqwest::Response) -> (reqwest::StatusCode, serde_json::Value) {
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

/// Sends a request the server refuses before reading all of its body and then closes:
/// the client may lose that race and fail writing the rest (broken pipe) before it reads
/// the answer, so it tries a few times until it reads one.
pub async fn send_refused_early(make: impl Fn() -> reqwest::RequestBuilder) -> reqwest::Response {
    for _ in 0..10 {
        if let Ok(resp) = make().send().await {
            return resp;
        }
    }
    panic!("no answer to a request refused before its body was read, in 10 tries");
}
