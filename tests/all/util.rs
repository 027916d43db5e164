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
        token_with(self.data.path(), &[], tenant, role)
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

/// A fresh Postgres schema on CORRAL_TEST_POSTGRES_URL, or `None` (said on stderr) when
/// it is not set and a Postgres variant is therefore not run.
pub async fn test_postgres() -> Option<String> {
    match std::env::var("CORRAL_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(crate::runs::postgres_schema(&url).await),
        _ => {
            eprintln!("CORRAL_TEST_POSTGRES_URL is not set: Postgres variant not run");
            None
        }
    }
}

/// Server settings for SQLite (none: the data dir's file), or for a fresh Postgres schema
/// (`None` when Postgres is not configured: the variant is skipped).
pub async fn database_envs(postgres: bool) -> Option<Vec<(&'static str, String)>> {
    if !postgres {
        return Some(vec![]);
    }
    Some(vec![("CORRAL_DATABASE_URL", test_postgres().await?)])
}

/// Starts a server with `envs` (from [`database_envs`]) and `more`.
pub fn start_with(envs: &[(&'static str, String)], more: &[(&str, &str)]) -> Server {
    let mut all: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    all.extend_from_slice(more);
    Server::start(&all)
}

/// A token for `tenant` (created if missing) with `role`, made offline by `corral` on
/// `data` with these settings on top of none from the environment (`envs` from
/// [`database_envs`], or empty for the data dir's SQLite file).
pub fn token_with(data: &Path, envs: &[(&str, String)], tenant: &str, role: &str) -> String {
    let run = |args: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_corral"));
        cmd.args(args)
            .env("CORRAL_DATA_DIR", data)
            .env_remove("CORRAL_DATABASE_URL");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
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

/// [`token_with`] on `server`'s data directory.
pub fn token(server: &Server, envs: &[(&str, String)], tenant: &str, role: &str) -> String {
    token_with(server.data.path(), envs, tenant, role)
}

/// The `corral` binary on client data directory `data`, with no database, server, token
/// or log settings from the environment.
pub fn corral(data: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_corral"));
    cmd.env("CORRAL_DATA_DIR", data)
        .env_remove("CORRAL_DATABASE_URL")
        .env_remove("CORRAL_SERVER")
        .env_remove("CORRAL_TOKEN")
        .env_remove("RUST_LOG");
    cmd
}

/// Runs `cmd`: its exit code (-1 when killed by a signal), stdout and stderr.
pub fn output_of(cmd: &mut std::process::Command) -> (i32, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Reads a spawned child's piped stdout and stderr to the end and waits for it, for at
/// most `limit` (a bound for a stuck child, not a timing assertion): `(stdout, stderr,
/// status)`; panics saying `what` ran too long.
pub async fn child_output(
    mut child: tokio::process::Child,
    limit: Duration,
    what: &str,
) -> (String, String, std::process::ExitStatus) {
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let read = async {
        use tokio::io::AsyncReadExt;
        let (mut out, mut err) = (String::new(), String::new());
        let _ = tokio::join!(
            stdout.read_to_string(&mut out),
            stderr.read_to_string(&mut err)
        );
        (out, err, child.wait().await.unwrap())
    };
    tokio::time::timeout(limit, read)
        .await
        .unwrap_or_else(|_| panic!("{what} ran for more than {}s", limit.as_secs()))
}

/// The database the servers of a test share: SQLite in a server's data directory, or
/// Postgres at this URL (a schema of its own).
pub enum Db {
    Sqlite,
    Postgres(String),
}

/// A database for in-process runners: a SQLite file in this directory, or Postgres at
/// this URL (a schema of its own).
pub enum StoreDb {
    Sqlite(tempfile::TempDir),
    Postgres(String),
}

impl StoreDb {
    /// SQLite in a fresh directory.
    pub fn sqlite() -> StoreDb {
        StoreDb::Sqlite(tempfile::tempdir().unwrap())
    }

    pub async fn store(&self) -> corral::store::Store {
        match self {
            StoreDb::Sqlite(dir) => corral::store::Store::open_in_dir(dir.path()).await.unwrap(),
            StoreDb::Postgres(url) => corral::store::Store::open(url).await.unwrap(),
        }
    }
}

/// Makes test `$name(db)` two tests, `$name::sqlite` and `$name::postgres` (run when
/// CORRAL_TEST_POSTGRES_URL is set, on a schema of its own; said on stderr otherwise).
/// `db` is `$sqlite`, or `$postgres(url)`; without them a [`Db`].
macro_rules! on_both_dbs {
    ($name:ident) => {
        $crate::util::on_both_dbs!($name, $crate::util::Db::Sqlite, $crate::util::Db::Postgres);
    };
    ($name:ident, $sqlite:expr, $postgres:expr) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(url) = $crate::util::test_postgres().await {
                    super::$name($postgres(url)).await
                }
            }
        }
    };
}
pub(crate) use on_both_dbs;

/// [`on_both_dbs!`] for a test taking a [`StoreDb`] (`Db` where it is imported as such).
macro_rules! both {
    ($name:ident) => {
        $crate::util::on_both_dbs!(
            $name,
            $crate::util::StoreDb::sqlite(),
            $crate::util::StoreDb::Postgres
        );
    };
}
pub(crate) use both;

/// A `corral serve` that can be killed with SIGKILL and started again on the same
/// database and data directory (so its compiled-code cache survives), with the admin
/// token of its first start.
pub struct ServerHost {
    pub data: std::sync::Arc<tempfile::TempDir>,
    /// The Postgres URL, or `None` for the data dir's SQLite file.
    pub db: Option<String>,
    envs: Vec<(String, String)>,
    server: Option<Server>,
    pub url: String,
    pub token: String,
    pub http: reqwest::Client,
}

impl ServerHost {
    /// Starts a host on `db` with `envs`.
    pub fn start(db: &Db, envs: &[(&str, &str)]) -> ServerHost {
        let mut envs: Vec<(String, String)> = envs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let db = match db {
            Db::Sqlite => None,
            Db::Postgres(url) => {
                envs.push(("CORRAL_DATABASE_URL".into(), url.clone()));
                Some(url.clone())
            }
        };
        let mut host = ServerHost {
            data: std::sync::Arc::new(tempfile::tempdir().unwrap()),
            db,
            envs,
            server: None,
            url: String::new(),
            token: String::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
        };
        host.boot();
        host
    }

    /// Starts the server (again, after [`ServerHost::kill`]).
    pub fn boot(&mut self) {
        let envs: Vec<(&str, &str)> = self
            .envs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let server = Server::start_in(self.data.clone(), &envs);
        if self.token.is_empty() {
            self.token = server.admin_token.clone();
            assert!(!self.token.is_empty(), "no admin token on first start");
        }
        self.url = server.url.clone();
        self.server = Some(server);
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(server) = self.server.take() {
            server.kill();
        }
    }

    /// `kill -9`, then a fresh start on the same database.
    pub fn restart(&mut self) {
        self.kill();
        self.boot();
    }

    /// The database, opened by this test process as another node would.
    pub async fn store(&self) -> corral::store::Store {
        match &self.db {
            None => corral::store::Store::open_in_dir(self.data.path())
                .await
                .unwrap(),
            Some(url) => corral::store::Store::open(url).await.unwrap(),
        }
    }

    /// `POST path` with the admin token and `body` as JSON (none: no body).
    pub async fn post(
        &self,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        let mut r = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        status_and_body(r.send().await.unwrap()).await
    }

    /// `GET path` with the admin token.
    pub async fn get(&self, path: &str) -> (reqwest::StatusCode, serde_json::Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.token);
        status_and_body(r.send().await.unwrap()).await
    }

    /// Uploads built plugin `name` (expecting 201); its plugin id.
    pub async fn upload(&self, name: &str) -> String {
        let resp = self
            .http
            .post(format!("{}/v1/plugins", self.url))
            .bearer_auth(&self.token)
            .header("content-type", "application/wasm")
            .body(std::fs::read(plugin_path(name)).unwrap())
            .send()
            .await
            .unwrap();
        let (status, body) = status_and_body(resp).await;
        assert_eq!(
            status,
            reqwest::StatusCode::CREATED,
            "uploading {name}: {body}"
        );
        body["id"].as_str().unwrap().to_string()
    }
}

impl Drop for ServerHost {
    fn drop(&mut self) {
        self.kill();
    }
}
